//! Pricing an order: [`price`] prices the requested items with orders' copy of the catalog
//! ([`crate::read_model`]), all or none. No I/O: [`crate::store::place`] reads the products.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::order::{OrderError, OrderItem, RequestedItem};
use crate::read_model::CatalogProduct;

/// The items of an order with their prices, before the order is stored.
#[derive(Debug, PartialEq, Eq)]
pub struct PricedItems {
    pub items: Vec<OrderItem>,
    pub total_cents: i64,
    pub currency: String,
}

/// Prices every item with its product from `catalog`: all products must be known and active,
/// and priced in one currency.
pub fn price(
    items: &[RequestedItem],
    catalog: &HashMap<String, CatalogProduct>,
) -> Result<PricedItems, OrderError> {
    let orderable = |item: &RequestedItem| {
        catalog
            .get(&item.product_id)
            .filter(|product| product.active)
    };

    let mut unavailable: Vec<String> = Vec::new();
    for item in items.iter().filter(|item| orderable(item).is_none()) {
        if !unavailable.contains(&item.product_id) {
            unavailable.push(item.product_id.clone());
        }
    }
    if !unavailable.is_empty() {
        return Err(OrderError::UnavailableProducts(unavailable));
    }

    let products: Vec<&CatalogProduct> = items.iter().filter_map(orderable).collect();
    let currencies: BTreeSet<&str> = products.iter().map(|p| p.currency.as_str()).collect();
    if currencies.len() > 1 {
        let currencies = currencies.into_iter().map(str::to_owned).collect();
        return Err(OrderError::MixedCurrencies(currencies));
    }
    let currency = currencies
        .first()
        .map(|&currency| currency.to_owned())
        .expect("validate() requires at least one item");

    let mut total_cents: i64 = 0;
    let mut priced = Vec::with_capacity(items.len());
    for (item, product) in items.iter().zip(products) {
        total_cents = product
            .price_cents
            .checked_mul(i64::from(item.quantity))
            .and_then(|line_total| total_cents.checked_add(line_total))
            .ok_or_else(|| {
                OrderError::Invalid(BTreeMap::from([(
                    "items".to_owned(),
                    "the order's total is too large".to_owned(),
                )]))
            })?;
        priced.push(OrderItem {
            product_id: item.product_id.clone(),
            quantity: item.quantity,
            unit_price_cents: product.price_cents,
        });
    }
    Ok(PricedItems {
        items: priced,
        total_cents,
        currency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(items: &[(&str, i32)]) -> Vec<RequestedItem> {
        items
            .iter()
            .map(|&(product_id, quantity)| RequestedItem {
                product_id: product_id.to_owned(),
                quantity,
            })
            .collect()
    }

    fn catalog(products: &[(&str, i64, &str, bool)]) -> HashMap<String, CatalogProduct> {
        products
            .iter()
            .map(|&(id, price_cents, currency, active)| {
                let product = CatalogProduct {
                    product_id: id.to_owned(),
                    sku: format!("SKU-{id}"),
                    name: format!("Product {id}"),
                    price_cents,
                    currency: currency.to_owned(),
                    active,
                };
                (id.to_owned(), product)
            })
            .collect()
    }

    #[test]
    fn items_are_priced_from_the_catalog_in_the_clients_order() {
        let catalog = catalog(&[("p-1", 250, "EUR", true), ("p-2", 1000, "EUR", true)]);

        let priced = price(&items(&[("p-2", 1), ("p-1", 3)]), &catalog).unwrap();

        assert_eq!(
            priced,
            PricedItems {
                items: vec![
                    OrderItem {
                        product_id: "p-2".to_owned(),
                        quantity: 1,
                        unit_price_cents: 1000
                    },
                    OrderItem {
                        product_id: "p-1".to_owned(),
                        quantity: 3,
                        unit_price_cents: 250
                    },
                ],
                total_cents: 1750,
                currency: "EUR".to_owned(),
            }
        );
    }

    #[test]
    fn unknown_and_inactive_products_are_listed_once_each() {
        let catalog = catalog(&[("p-1", 250, "EUR", true), ("p-off", 100, "EUR", false)]);
        let items = items(&[("p-off", 1), ("p-1", 1), ("p-missing", 1), ("p-off", 2)]);

        match price(&items, &catalog) {
            Err(OrderError::UnavailableProducts(ids)) => assert_eq!(ids, ["p-off", "p-missing"]),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn one_order_has_one_currency() {
        let catalog = catalog(&[("p-1", 250, "USD", true), ("p-2", 100, "EUR", true)]);

        match price(&items(&[("p-1", 1), ("p-2", 1)]), &catalog) {
            Err(OrderError::MixedCurrencies(currencies)) => assert_eq!(currencies, ["EUR", "USD"]),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_total_beyond_i64_is_refused_rather_than_wrapped() {
        let catalog = catalog(&[("p-1", i64::MAX / 2, "EUR", true)]);

        assert!(matches!(
            price(&items(&[("p-1", 3)]), &catalog),
            Err(OrderError::Invalid(_))
        ));
    }
}

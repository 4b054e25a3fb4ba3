//! `POST /orders` and `GET /orders/{order_id}`, and the `OrderPlaced` event.
//!
//! catalog-cache never runs in these tests. Products reach orders only as events on
//! `catalog-cache.products.v1`, and every order below is priced without catalog-cache being
//! there to answer: that is what "catalog-cache is down, orders still places orders" means.

use chrono::{DateTime, Utc};
use kafka::header;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    CatalogCache, Product, TestApp, confirmation_task, contract_example, order_event,
    order_event_of_type, shape, spawn_app, spawn_app_with_env,
};

fn order_of(items: &[(&Product, i32)]) -> Value {
    json!({
        "customer_id": "c-1042",
        "customer_email": "ada@example.com",
        "items": items
            .iter()
            .map(|(product, quantity)| json!({ "product_id": product.id, "quantity": quantity }))
            .collect::<Vec<_>>(),
    })
}

async fn problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    response.json().await.expect("a problem body")
}

/// catalog-cache is not running (see the module comment), yet the order is placed: priced from
/// orders' own copy of the catalog.
#[tokio::test]
async fn an_order_is_priced_from_the_read_model_while_catalog_cache_is_down() {
    let app = spawn_app().await;
    let catalog = CatalogCache::new().await;
    let cup = Product::new(1250);
    let jug = Product::new(990);
    catalog.seed(&app, &cup).await;
    catalog.seed(&app, &jug).await;

    let response = app.post_order(&order_of(&[(&cup, 2), (&jug, 3)])).await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let mut order: Value = response.json().await.unwrap();
    let order_id: Uuid = serde_json::from_value(order["order_id"].take()).expect("a UUID");
    assert_eq!(location, format!("/orders/{order_id}"));
    assert!(order["created_at"].take().is_string());
    assert!(order["payment_due_at"].take().is_string());
    assert_eq!(
        order,
        json!({
            "order_id": null,
            "status": "pending_payment",
            "items": [
                { "product_id": cup.id, "quantity": 2, "unit_price_cents": 1250 },
                { "product_id": jug.id, "quantity": 3, "unit_price_cents": 990 },
            ],
            "total_cents": 2 * 1250 + 3 * 990,
            "currency": "EUR",
            "created_at": null,
            "payment_due_at": null,
        })
    );
}

#[tokio::test]
async fn a_placed_order_reads_back_as_it_was_returned() {
    let app = spawn_app().await;
    let catalog = CatalogCache::new().await;
    let cup = Product::new(1250);
    catalog.seed(&app, &cup).await;

    let placed: Value = app
        .post_order(&order_of(&[(&cup, 1)]))
        .await
        .json()
        .await
        .unwrap();
    let response = app.get_order(placed["order_id"].as_str().unwrap()).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap(), placed);
}

#[tokio::test]
async fn order_placed_is_published_keyed_by_the_order_id() {
    let app = spawn_app().await;
    let catalog = CatalogCache::new().await;
    let cup = Product::new(1250);
    catalog.seed(&app, &cup).await;

    let response = app.post_order(&order_of(&[(&cup, 2)])).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let order: Value = response.json().await.unwrap();
    let order_id = order["order_id"].as_str().unwrap();

    let message = order_event(order_id).await;

    assert_eq!(message.message_type(), Some("OrderPlaced"));
    assert_eq!(
        message.header_str(header::CORRELATION_ID),
        Some(request_id.as_str())
    );
    let event: Value = serde_json::from_slice(message.payload.as_deref().unwrap()).unwrap();
    assert_eq!(message.message_id(), event["event_id"].as_str());
    assert_eq!(event["entity_type"], "order");
    assert_eq!(event["entity_id"], order_id);
    assert_eq!(event["kind"], "created");
    assert_eq!(event["revision"], 1);
    assert_eq!(event["originated_from"], "orders");
    assert_eq!(event["correlation_id"], request_id);
    assert_eq!(event["schema_version"], 1);
    let mut entity = order.clone();
    entity["customer_id"] = json!("c-1042");
    entity["customer_email"] = json!("ada@example.com");
    assert_eq!(event["payload"]["entity"], entity);
    // Exactly the fields of the documented example, with the same types: the contract that
    // consumers such as report-exporter build on.
    assert_eq!(
        shape(&event),
        shape(&contract_example("orders.orders.v1/order-placed.json"))
    );
}

/// The confirmation is enqueued with the order, through the outbox, for notifications to send;
/// the 201 does not wait for it. notifications does not run here: the test reads the task from
/// the queue as notifications' worker would.
#[tokio::test]
async fn a_placed_order_enqueues_its_confirmation_for_notifications() {
    let app = spawn_app().await;
    let catalog = CatalogCache::new().await;
    let cup = Product::new(1250);
    catalog.seed(&app, &cup).await;

    let response = app.post_order(&order_of(&[(&cup, 2)])).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let order: Value = response.json().await.unwrap();
    let order_id: Uuid = serde_json::from_value(order["order_id"].clone()).unwrap();

    // The contract's task id: one per order, so enqueuing it twice would deliver it once.
    let task_id = Uuid::new_v5(&order_id, b"SendOrderConfirmation");
    let message = confirmation_task(task_id).await;

    assert_eq!(message.message_type(), Some("SendOrderConfirmation"));
    assert_eq!(message.key_str(), Some(task_id.to_string().as_str()));
    assert_eq!(
        message.header_str(header::CORRELATION_ID),
        Some(request_id.as_str())
    );
    let task: Value = serde_json::from_slice(message.payload.as_deref().unwrap()).unwrap();
    assert_eq!(
        task,
        json!({
            "order_id": order_id,
            "customer_email": "ada@example.com",
            "total_cents": 2500,
            "currency": "EUR",
        })
    );
    // Exactly the fields of the documented example, with the same types: what notifications
    // reads.
    assert_eq!(
        shape(&task),
        shape(&contract_example(
            "notifications.tasks.v1/send-order-confirmation.json"
        ))
    );
}

#[tokio::test]
async fn unknown_and_inactive_products_are_refused_by_name() {
    let app = spawn_app().await;
    let catalog = CatalogCache::new().await;
    let cup = Product::new(1250);
    let withdrawn = Product {
        active: false,
        ..Product::new(990)
    };
    let unknown = Product::new(100);
    catalog.seed(&app, &cup).await;
    catalog.seed(&app, &withdrawn).await;

    let response = app
        .post_order(&order_of(&[(&withdrawn, 1), (&cup, 1), (&unknown, 1)]))
        .await;

    let problem = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(
        problem["unavailable_products"],
        json!([withdrawn.id, unknown.id])
    );
}

#[tokio::test]
async fn an_order_has_one_currency() {
    let app = spawn_app().await;
    let catalog = CatalogCache::new().await;
    let cup = Product::new(1250);
    let mug = Product {
        currency: "USD",
        ..Product::new(1400)
    };
    catalog.seed(&app, &cup).await;
    catalog.seed(&app, &mug).await;

    let response = app.post_order(&order_of(&[(&cup, 1), (&mug, 1)])).await;

    let problem = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["currencies"], json!(["EUR", "USD"]));
}

#[tokio::test]
async fn invalid_orders_are_refused_field_by_field() {
    let app = spawn_app().await;

    let cases = [
        (
            json!({ "customer_id": "", "customer_email": "ada@example.com",
                    "items": [{ "product_id": "p-1", "quantity": 1 }] }),
            vec!["customer_id"],
        ),
        (
            json!({ "customer_id": "c-1", "customer_email": "ada.example.com",
                    "items": [{ "product_id": "p-1", "quantity": 1 }] }),
            vec!["customer_email"],
        ),
        (
            json!({ "customer_id": "c-1", "customer_email": "ada@example.com", "items": [] }),
            vec!["items"],
        ),
        (
            json!({ "customer_id": "c-1", "customer_email": "ada@example.com",
                    "items": [{ "product_id": "p-1", "quantity": 1 },
                              { "product_id": "p-2", "quantity": 0 }] }),
            vec!["items[1].quantity"],
        ),
    ];
    for (order, fields) in cases {
        let problem = problem(
            app.post_order(&order).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        let reported: Vec<&str> = problem["errors"]
            .as_object()
            .unwrap_or_else(|| panic!("no errors in {problem}"))
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(reported, fields, "{order}");
    }
}

#[tokio::test]
async fn malformed_json_is_a_400_problem() {
    let app = spawn_app().await;

    let response = app
        .http
        .post_raw("/orders", "application/json", r#"{"customer_id": "c-1","#)
        .await;

    problem(response, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn an_unknown_order_is_404_and_a_malformed_id_400() {
    let app = spawn_app().await;

    problem(
        app.get_order(&Uuid::now_v7().to_string()).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(app.get_order("not-a-uuid").await, StatusCode::BAD_REQUEST).await;
}

/// Places an order of one product and returns it, as the API answered.
async fn placed_order(app: &TestApp) -> Value {
    let catalog = CatalogCache::new().await;
    let cup = Product::new(1250);
    catalog.seed(app, &cup).await;
    let response = app.post_order(&order_of(&[(&cup, 2)])).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_new_order_is_due_for_payment_after_the_payment_timeout() {
    let app = spawn_app_with_env(&[("PAYMENT_TIMEOUT", "90s")], |_| {}).await;

    let order = placed_order(&app).await;

    let created_at: DateTime<Utc> = serde_json::from_value(order["created_at"].clone()).unwrap();
    let due_at: DateTime<Utc> = serde_json::from_value(order["payment_due_at"].clone()).unwrap();
    assert_eq!(due_at - created_at, chrono::Duration::seconds(90));
}

#[tokio::test]
async fn paying_an_order_marks_it_paid_and_publishes_order_paid() {
    let app = spawn_app().await;
    let order = placed_order(&app).await;
    let order_id = order["order_id"].as_str().unwrap();

    let response = app.pay_order(order_id).await;

    assert_eq!(response.status(), StatusCode::OK);
    let paid: Value = response.json().await.unwrap();
    let mut expected = order.clone();
    expected["status"] = json!("paid");
    assert_eq!(paid, expected);
    assert_eq!(
        app.get_order(order_id).await.json::<Value>().await.unwrap(),
        paid
    );

    let message = order_event_of_type(order_id, "OrderPaid").await;
    let event: Value = serde_json::from_slice(message.payload.as_deref().unwrap()).unwrap();
    assert_eq!(event["kind"], "updated");
    assert_eq!(event["revision"], 2);
    assert_eq!(event["payload"]["modified_fields"], json!(["status"]));
    assert_eq!(event["payload"]["entity"]["status"], "paid");
    assert_eq!(
        shape(&event),
        shape(&contract_example("orders.orders.v1/order-paid.json"))
    );
}

/// A client that did not get the answer to its payment may send it again.
#[tokio::test]
async fn paying_twice_answers_the_paid_order_again() {
    let app = spawn_app().await;
    let order = placed_order(&app).await;
    let order_id = order["order_id"].as_str().unwrap();

    let first: Value = app.pay_order(order_id).await.json().await.unwrap();
    let response = app.pay_order(order_id).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap(), first);
}

#[tokio::test]
async fn paying_an_unknown_order_is_404() {
    let app = spawn_app().await;

    problem(
        app.pay_order(&Uuid::now_v7().to_string()).await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

/// `POST /orders` with an `Idempotency-Key`: `(status, body)`.
async fn post_with_key(app: &TestApp, key: &str, order: &Value) -> (StatusCode, Value) {
    let response = app
        .http
        .client
        .post(app.http.url("/orders"))
        .header("Idempotency-Key", key)
        .json(order)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn orders_of(app: &TestApp, customer_id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM orders WHERE customer_id = $1")
        .bind(customer_id)
        .fetch_one(&app.database.pool)
        .await
        .unwrap()
}

/// A client that retries after a timeout, or sends the same request twice at once, places one
/// order; the same key with another request is refused; a key is bounded visible ASCII.
#[tokio::test]
async fn an_idempotency_key_places_one_order_however_often_and_concurrently_it_is_sent() {
    let app = spawn_app().await;
    let catalog = CatalogCache::new().await;
    let cup = Product::new(1250);
    catalog.seed(&app, &cup).await;
    let mut order = order_of(&[(&cup, 2)]);
    order["customer_id"] = json!("c-idempotent");
    let key = Uuid::now_v7().to_string();

    let (status, first) = post_with_key(&app, &key, &order).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, again) = post_with_key(&app, &key, &order).await;
    assert_eq!(status, StatusCode::CREATED, "the first response again");
    assert_eq!(again["order_id"], first["order_id"]);
    assert_eq!(again["total_cents"], first["total_cents"]);
    assert_eq!(orders_of(&app, "c-idempotent").await, 1);

    // Another request under the same key: 422 naming the header; nothing placed.
    let mut other = order.clone();
    other["items"][0]["quantity"] = json!(3);
    let (status, problem) = post_with_key(&app, &key, &other).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["title"], "Idempotency-Key reused");
    assert!(
        problem["errors"]["Idempotency-Key"].is_string(),
        "{problem}"
    );
    assert_eq!(orders_of(&app, "c-idempotent").await, 1);

    // Eight at once with a new key: one order, and every answer is it.
    order["customer_id"] = json!("c-concurrent");
    let key = Uuid::now_v7().to_string();
    let answers =
        futures::future::join_all((0..8).map(|_| post_with_key(&app, &key, &order))).await;
    let ids: std::collections::HashSet<String> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, StatusCode::CREATED, "{body}");
            body["order_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert_eq!(orders_of(&app, "c-concurrent").await, 1);

    for bad in ["", "a key", &"k".repeat(256)] {
        let (status, problem) = post_with_key(&app, bad, &order).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
        assert!(
            problem["errors"]["Idempotency-Key"].is_string(),
            "{problem}"
        );
    }
}

//! The bench as a client of `POST /orders` — orders' own, or a baseline that takes the same
//! request: one order at a time, each timed, what each answered counted.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::progress::Progress;
use crate::report;
use crate::stats::{LatencyHistogram, LatencySummary};

/// Places orders of `items` products each, from a fixed list of products.
#[derive(Debug)]
pub struct OrderClient {
    http: reqwest::Client,
    customer_id: String,
    customer_email: String,
    product_ids: Vec<String>,
    items: usize,
}

/// A batch of `POST /orders`: latency of every request (failed ones too) and what they answered.
#[derive(Debug, Default)]
pub struct Requests {
    pub latency: LatencySummary,
    pub total: usize,
    pub succeeded: usize,
    /// `201`, `503`, `transport error`, … and how often.
    pub outcomes: BTreeMap<String, usize>,
    /// The orders accepted, with when their 201 arrived.
    pub placed: Vec<(Uuid, Instant)>,
}

impl Requests {
    pub fn success_percent(&self) -> f64 {
        report::percent(self.succeeded, self.total)
    }

    /// `2 × 201, 1 × 502`.
    pub fn outcomes(&self) -> String {
        report::outcomes(&self.outcomes)
    }
}

/// The field of an answer to `POST /orders` the bench needs (every side answers with it).
#[derive(Debug, Deserialize)]
struct Placed {
    order_id: Uuid,
}

impl OrderClient {
    /// Sample `i` orders the `items` products from position `i * items` of `product_ids`
    /// (wrapping around), so that consecutive orders touch different rows.
    pub fn new(
        http: reqwest::Client,
        customer_id: String,
        customer_email: String,
        product_ids: Vec<String>,
        items: usize,
    ) -> Self {
        assert!(
            !product_ids.is_empty() && items <= product_ids.len(),
            "an order's items are distinct products"
        );
        Self {
            http,
            customer_id,
            customer_email,
            product_ids,
            items,
        }
    }

    /// `samples` orders to `base_url`, one at a time, after `warm_up` unmeasured ones (which
    /// must succeed). Failures are counted, not errors.
    pub async fn place_orders(
        &self,
        label: &str,
        base_url: &str,
        warm_up: usize,
        samples: usize,
    ) -> anyhow::Result<Requests> {
        let url = format!("{base_url}/orders");
        for i in 0..warm_up {
            let (status, body, _) = self.place_order(&url, i).await;
            anyhow::ensure!(
                status == "201",
                "{label}: a warm-up POST /orders answered {status}: {body}"
            );
        }
        let progress = Progress::start(label, samples);
        let done = progress.counter();
        let mut latency = LatencyHistogram::default();
        let mut requests = Requests {
            total: samples,
            ..Requests::default()
        };
        for i in 0..samples {
            let started = Instant::now();
            let (status, _, placed) = self.place_order(&url, i).await;
            let answered = Instant::now();
            latency.record(answered.duration_since(started));
            if let Some(order_id) = placed {
                requests.succeeded += 1;
                requests.placed.push((order_id, answered));
            }
            *requests.outcomes.entry(status).or_default() += 1;
            done.fetch_add(1, Ordering::Relaxed);
        }
        progress.finish();
        requests.latency = latency.summary();
        Ok(requests)
    }

    /// One `POST /orders`: its status (or `transport error`), its body read to the end, and the
    /// order id when it answered 201.
    async fn place_order(&self, url: &str, sample: usize) -> (String, String, Option<Uuid>) {
        let items: Vec<serde_json::Value> = (0..self.items)
            .map(|k| {
                let product_id =
                    &self.product_ids[(sample * self.items + k) % self.product_ids.len()];
                json!({"product_id": product_id, "quantity": k % 2 + 1})
            })
            .collect();
        let body = json!({
            "customer_id": self.customer_id,
            "customer_email": self.customer_email,
            "items": items,
        });
        match self.http.post(url).json(&body).send().await {
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                let placed = (status == reqwest::StatusCode::CREATED)
                    .then(|| serde_json::from_str::<Placed>(&body).ok())
                    .flatten()
                    .map(|placed| placed.order_id);
                (status.as_u16().to_string(), body, placed)
            }
            Err(error) if error.is_timeout() => {
                ("bench timeout".to_owned(), error.to_string(), None)
            }
            Err(error) => ("transport error".to_owned(), error.to_string(), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_listed_by_status() {
        let requests = Requests {
            total: 3,
            succeeded: 2,
            outcomes: BTreeMap::from([("201".to_owned(), 2), ("502".to_owned(), 1)]),
            ..Requests::default()
        };
        assert_eq!(requests.outcomes(), "2 × 201, 1 × 502");
        assert!((requests.success_percent() - 200.0 / 3.0).abs() < 1e-9);
    }
}

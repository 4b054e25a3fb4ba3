use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use platform::health::ReadinessCheck;

use crate::Producer;

/// Readiness of the broker connection: a metadata request through the service's producer.
///
/// Not critical ([`ReadinessCheck::critical`] is `false`): a broker that is down makes
/// `/health/ready` answer 200 with `"status": "degraded"` and this check's reason, not 503.
/// Every service writes its messages through the outbox, so its requests keep working while the
/// broker is down and the messages follow when it is back; taking every replica out of rotation
/// would turn a broker outage into a full one. librdkafka reconnects by itself, so the check
/// turns green again without restarting the service.
#[derive(Debug, Clone)]
pub struct BrokerCheck {
    producer: Producer,
}

impl BrokerCheck {
    pub fn new(producer: &Producer) -> Self {
        Self {
            producer: producer.clone(),
        }
    }
}

impl ReadinessCheck for BrokerCheck {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        let producer = self.producer.clone();
        Box::pin(async move {
            // fetch_metadata blocks the calling thread.
            tokio::task::spawn_blocking(move || {
                producer.fetch_metadata(Duration::from_millis(1500))
            })
            .await
            .map_err(|e| format!("metadata check did not finish: {e}"))?
            .map_err(|e| e.to_string())
        })
    }

    fn critical(&self) -> bool {
        false
    }
}

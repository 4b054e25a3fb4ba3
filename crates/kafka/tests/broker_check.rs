//! The readiness check reports the broker's state.

use asyncron_kafka::{BrokerCheck, KafkaConfig, Producer};
use platform::health::ReadinessCheck as _;

#[tokio::test]
async fn ready_when_the_broker_answers() {
    let config = KafkaConfig::new(
        test_support::kafka_bootstrap_servers().await,
        "broker-check-test",
    );
    let check = BrokerCheck::new(&Producer::new(&config).unwrap());
    assert_eq!(check.check().await, Ok(()));
}

#[tokio::test]
async fn not_ready_with_a_reason_when_no_broker_answers() {
    // Port 1 on loopback: nothing listens there.
    let config = KafkaConfig::new("127.0.0.1:1", "broker-check-test");
    let check = BrokerCheck::new(&Producer::new(&config).unwrap());
    let reason = check.check().await.expect_err("no broker to answer");
    assert!(!reason.is_empty());
    assert_eq!(check.name(), "kafka");
}

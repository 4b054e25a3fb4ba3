//! The readiness check reports the broker's state.

use std::time::Duration;

use asyncron_kafka::{BrokerCheck, KafkaConfig, Producer};
use axum::http::StatusCode;
use http_body_util::BodyExt as _;
use platform::health::{Health, PostgresCheck, ReadinessCheck as _};
use platform::http::HttpSettings;
use serde_json::Value;
use tower::ServiceExt as _;

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
    assert!(
        !check.critical(),
        "the outbox keeps requests working without the broker"
    );
}

/// `/health/ready` of a service whose readiness is its database and the broker, the way every
/// asyncron service adds them.
async fn readiness(database: sqlx::PgPool, bootstrap_servers: &str) -> (StatusCode, Value) {
    let producer =
        Producer::new(&KafkaConfig::new(bootstrap_servers, "broker-check-test")).unwrap();
    let health = Health::new()
        .with(PostgresCheck(database))
        .with(BrokerCheck::new(&producer));
    let app = platform::http::app(axum::Router::new(), health, &HttpSettings::default());
    let response = app
        .oneshot(
            axum::http::Request::get("/health/ready")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn a_broker_outage_degrades_readiness_and_a_database_outage_fails_it() {
    let db = test_support::TestDatabase::create().await;
    let broker = test_support::kafka_bootstrap_servers().await;

    let (status, body) = readiness(db.pool.clone(), &broker).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready", "{body}");

    // The broker is down (nothing listens on port 1): requests still work through the outbox.
    let (status, body) = readiness(db.pool.clone(), "127.0.0.1:1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["checks"]["postgres"], "ok", "{body}");
    assert_eq!(body["checks"]["kafka"]["status"], "degraded", "{body}");
    assert!(
        !body["checks"]["kafka"]["reason"]
            .as_str()
            .unwrap()
            .is_empty(),
        "{body}"
    );

    // The database is down: nothing can be served.
    let dead_database = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:1/none")
        .unwrap();
    let (status, body) = readiness(dead_database, &broker).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["detail"].as_str().unwrap().starts_with("postgres: "),
        "{body}"
    );
    assert_eq!(body["checks"]["kafka"], "ok", "{body}");
}

//! `task_scheduler::admin::router` against a real PostgreSQL, with `oneshot` requests: listing by
//! state, cancelling, and the problems for bad requests. The bearer-token check around it is
//! platform's, tested there and in the services' API tests.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use task_scheduler::{Schedules, TaskTemplate};
use test_support::TestDatabase;
use tower::ServiceExt as _;
use uuid::Uuid;

#[derive(Serialize, Deserialize)]
struct Remind {
    n: u32,
}

impl task_queue::Task for Remind {
    const NAME: &'static str = "Remind";
}

struct Setup {
    #[allow(dead_code, reason = "kept for its Drop, which removes the database")]
    db: TestDatabase,
    schedules: Schedules,
    router: Router,
}

impl Setup {
    async fn new() -> Self {
        platform::telemetry::init_for_tests();
        let db = TestDatabase::create().await;
        task_scheduler::migrate(&db.pool)
            .await
            .expect("scheduler migrations");
        let schedules = Schedules::new(db.pool.clone());
        Self {
            router: task_scheduler::admin::router(schedules.clone()),
            schedules,
            db,
        }
    }

    /// A one-off an hour or more away, so that nothing fires it during the test.
    async fn schedule(&self, n: u32) -> Uuid {
        let task = TaskTemplate::new("admin-test.tasks", &Remind { n }).expect("template");
        self.schedules
            .schedule_after(
                &format!("remind:{n}"),
                task,
                Duration::from_hours(u64::from(n)),
            )
            .await
            .expect("schedule")
    }

    /// The status and the JSON body (`Null` when there is none) of one request.
    async fn request(&self, method: Method, path: &str) -> (StatusCode, Option<String>, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|value| value.to_str().unwrap().to_owned());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap()
        };
        (status, content_type, json)
    }
}

fn dedup_keys(list: &Value) -> Vec<&str> {
    list.as_array()
        .expect("a JSON array")
        .iter()
        .map(|schedule| schedule["dedup_key"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn schedules_are_listed_soonest_first_and_filtered_by_state() {
    let setup = Setup::new().await;
    let later = setup.schedule(2).await;
    setup.schedule(1).await;
    assert!(setup.schedules.cancel(later).await.unwrap());

    let (status, _, all) = setup.request(Method::GET, "/admin/schedules").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(dedup_keys(&all), ["remind:1", "remind:2"]);
    let first = &all[0];
    assert_eq!(first["state"], "pending");
    assert_eq!(first["task"]["task_name"], "Remind");
    assert_eq!(first["task"]["payload"], serde_json::json!({ "n": 1 }));

    let (_, _, pending) = setup
        .request(Method::GET, "/admin/schedules?state=pending")
        .await;
    assert_eq!(dedup_keys(&pending), ["remind:1"]);
    let (_, _, cancelled) = setup
        .request(Method::GET, "/admin/schedules?state=cancelled&limit=1000")
        .await;
    assert_eq!(dedup_keys(&cancelled), ["remind:2"]);
    assert_eq!(cancelled[0]["id"], later.to_string());
    let (_, _, one) = setup.request(Method::GET, "/admin/schedules?limit=1").await;
    assert_eq!(dedup_keys(&one), ["remind:1"]);
}

#[tokio::test]
async fn a_pending_schedule_is_cancelled_once() {
    let setup = Setup::new().await;
    let id = setup.schedule(1).await;
    let path = format!("/admin/schedules/{id}");

    let (status, _, body) = setup.request(Method::DELETE, &path).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null);

    let (status, content_type, problem) = setup.request(Method::DELETE, &path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    assert_eq!(
        problem["detail"],
        format!(
            "No pending schedule {id}: it does not exist, or it fired or was cancelled already."
        )
    );
    let (_, _, pending) = setup
        .request(Method::GET, "/admin/schedules?state=pending")
        .await;
    assert_eq!(pending, serde_json::json!([]));
}

#[tokio::test]
async fn bad_requests_get_problems() {
    let setup = Setup::new().await;

    for limit in ["0", "1001"] {
        let (status, content_type, problem) = setup
            .request(Method::GET, &format!("/admin/schedules?limit={limit}"))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "limit={limit}");
        assert_eq!(content_type.as_deref(), Some("application/problem+json"));
        assert_eq!(problem["errors"]["limit"], "must be between 1 and 1000");
    }
    for path in [
        "/admin/schedules?state=sleeping",
        "/admin/schedules?limit=many",
        "/admin/schedules/not-a-uuid",
    ] {
        let method = if path.contains('?') {
            Method::GET
        } else {
            Method::DELETE
        };
        let (status, content_type, _) = setup.request(method, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    }
}

//! The admin endpoints answer only requests with `Authorization: Bearer <ADMIN_TOKEN>`.

use reqwest::{Method, StatusCode};
use uuid::Uuid;

use crate::helpers::{ADMIN_TOKEN, problem, spawn_app, spawn_app_with};

fn endpoints() -> [(Method, String); 6] {
    let task_id = Uuid::now_v7();
    [
        (Method::GET, "/admin/dlq".to_owned()),
        (Method::POST, format!("/admin/dlq/{task_id}/replay")),
        (Method::POST, "/admin/dlq/replay-all".to_owned()),
        (Method::DELETE, format!("/admin/dlq/{task_id}")),
        (Method::GET, "/admin/schedules".to_owned()),
        (Method::DELETE, format!("/admin/schedules/{task_id}")),
    ]
}

#[tokio::test]
async fn admin_endpoints_refuse_requests_without_the_admin_token() {
    let app = spawn_app(None).await;

    for (method, path) in endpoints() {
        for token in [None, Some("wrong-token"), Some(&ADMIN_TOKEN[1..])] {
            let response = app.admin(method.clone(), &path, token).await;

            let challenge = response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(challenge.starts_with("Bearer "), "{challenge}");
            assert_eq!(
                challenge.contains(r#"error="invalid_token""#),
                token.is_some(),
                "{method} {path} with {token:?}: {challenge}"
            );
            problem(response, StatusCode::UNAUTHORIZED).await;
        }
        // Basic credentials are no bearer token.
        let response = app
            .http
            .client
            .request(method.clone(), app.http.url(&path))
            .basic_auth("admin", Some(ADMIN_TOKEN))
            .send()
            .await
            .unwrap();
        problem(response, StatusCode::UNAUTHORIZED).await;
    }
}

#[tokio::test]
async fn admin_endpoints_answer_the_admin_token() {
    let app = spawn_app(None).await;

    let answers: Vec<StatusCode> = {
        let mut answers = Vec::new();
        for (method, path) in endpoints() {
            answers.push(app.admin(method, &path, Some(ADMIN_TOKEN)).await.status());
        }
        answers
    };

    // An empty list, no such dead letter, none to replay, no such dead letter; the schedules
    // (the daily digest's), no such schedule.
    assert_eq!(
        answers,
        [
            StatusCode::OK,
            StatusCode::NOT_FOUND,
            StatusCode::OK,
            StatusCode::NOT_FOUND,
            StatusCode::OK,
            StatusCode::NOT_FOUND,
        ]
    );
}

#[tokio::test]
async fn admin_routes_can_be_turned_off() {
    // No ADMIN_TOKEN is needed then.
    let app = spawn_app_with(&[
        ("ADMIN_ROUTES", "false".to_owned()),
        ("ADMIN_TOKEN", String::new()),
    ])
    .await;

    for (method, path) in endpoints() {
        let response = app.admin(method, &path, Some(ADMIN_TOKEN)).await;
        problem(response, StatusCode::NOT_FOUND).await;
    }
}

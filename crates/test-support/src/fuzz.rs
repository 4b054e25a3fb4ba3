//! A seeded generator of hostile requests, for each service's fuzz test: every route with
//! random JSON shapes and values (wrong types, huge, negative and fractional numbers, NUL and
//! other control characters, 10,000-character and non-ASCII strings, deeply nested junk),
//! random path segments, query strings and methods. [`Fuzzer::run`] sends them to the running
//! service and checks the one promise that holds for any input: never a 5xx, and every 4xx is an
//! `application/problem+json` body with its `status` and a `title`.
//!
//! Each run draws a new seed and prints it; `FUZZ_SEED=<n>` replays a run, request for request.
//! Bodies start from a valid example of the route and are mutated, so that most requests get
//! past the JSON parser and exercise the service's own validation.

use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom as _;
use rand::{Rng as _, RngCore as _, SeedableRng as _};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::TestApp;

/// One route of a service, as the fuzzer sees it.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: Method,
    /// The path, with `{name}` for each path parameter.
    pub path: &'static str,
    /// A valid value for each path parameter, which the fuzzer sometimes uses.
    pub params: Vec<(&'static str, String)>,
    /// The query parameters the route reads.
    pub query: &'static [&'static str],
    /// A valid body, for a route that reads one; the fuzzer mutates it.
    pub body: Option<Value>,
    /// The bearer token the route needs, if it is protected; the fuzzer mostly sends it.
    pub token: Option<String>,
}

impl Route {
    pub fn new(method: Method, path: &'static str) -> Self {
        Self {
            method,
            path,
            params: Vec::new(),
            query: &[],
            body: None,
            token: None,
        }
    }

    #[must_use]
    pub fn param(mut self, name: &'static str, valid: impl Into<String>) -> Self {
        self.params.push((name, valid.into()));
        self
    }

    #[must_use]
    pub fn query(mut self, names: &'static [&'static str]) -> Self {
        self.query = names;
        self
    }

    #[must_use]
    pub fn body(mut self, valid: Value) -> Self {
        self.body = Some(valid);
        self
    }

    #[must_use]
    pub fn bearer(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }
}

/// A request as sent, for the failure message.
#[derive(Debug, Clone)]
struct Sent {
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
}

/// The seeded generator; see the module documentation.
#[derive(Debug)]
pub struct Fuzzer {
    rng: StdRng,
    seed: u64,
}

impl Default for Fuzzer {
    fn default() -> Self {
        Self::new()
    }
}

impl Fuzzer {
    /// A generator seeded from `FUZZ_SEED`, or from the OS; the seed is printed.
    pub fn new() -> Self {
        let seed = std::env::var("FUZZ_SEED").ok().map_or_else(
            || rand::rng().next_u64(),
            |seed| seed.parse().expect("FUZZ_SEED must be a number"),
        );
        println!("fuzzing with FUZZ_SEED={seed}");
        Self {
            rng: StdRng::seed_from_u64(seed),
            seed,
        }
    }

    /// Sends `count` random requests to `routes` of `app`, the protected ones mostly with their
    /// token, and panics, naming the request and the seed, at the first 5xx or at a 4xx that is
    /// not a problem.
    pub async fn run(&mut self, app: &TestApp, routes: &[Route], count: usize) {
        for _ in 0..count {
            // Half the requests go to the routes that read a body: they have the most input.
            let with_body: Vec<&Route> = routes.iter().filter(|r| r.body.is_some()).collect();
            let route = if !with_body.is_empty() && self.rng.random_bool(0.5) {
                with_body.choose(&mut self.rng).copied()
            } else {
                routes.choose(&mut self.rng)
            }
            .expect("routes to fuzz");
            let sent = self.request(route);
            let mut request = app
                .client
                .request(sent.method.clone(), app.url(&sent.path))
                .body(sent.body.clone());
            if let Some(content_type) = sent.content_type {
                request = request.header(CONTENT_TYPE, content_type);
            }
            match &route.token {
                Some(token) if self.rng.random_bool(0.9) => request = request.bearer_auth(token),
                _ if self.rng.random_bool(0.1) => {
                    request = request.header("authorization", self.header_value());
                }
                _ => {}
            }
            if self.rng.random_bool(0.1) {
                request = request.header("idempotency-key", self.header_value());
            }
            let response = request.send().await.expect("the request is sent");
            self.check(response, &sent).await;
        }
    }

    async fn check(&self, response: reqwest::Response, sent: &Sent) {
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.bytes().await.unwrap_or_default();
        let what = || {
            format!(
                "FUZZ_SEED={} {} {} (content-type {:?}, body {}) answered {status} {content_type} {}",
                self.seed,
                sent.method,
                truncated(&sent.path),
                sent.content_type,
                truncated(&String::from_utf8_lossy(&sent.body)),
                truncated(&String::from_utf8_lossy(&body)),
            )
        };
        assert!(!status.is_server_error(), "a 5xx: {}", what());
        if status.is_client_error() {
            assert_problem(status, &content_type, &body).unwrap_or_else(|reason| {
                panic!("a 4xx that is not a problem ({reason}): {}", what())
            });
        }
    }

    fn request(&mut self, route: &Route) -> Sent {
        // Mostly the route's own method, sometimes one it may not support.
        let method = if self.rng.random_bool(0.9) {
            route.method.clone()
        } else {
            [
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ]
            .choose(&mut self.rng)
            .expect("methods")
            .clone()
        };
        let mut path = String::new();
        for piece in route.path.split_inclusive(['{', '}']) {
            if let Some(name) = piece.strip_suffix('}') {
                path.push_str(&self.path_segment(route, name));
            } else {
                path.push_str(piece.trim_end_matches('{'));
            }
        }
        if !route.query.is_empty() && self.rng.random_bool(0.7) {
            path.push('?');
            path.push_str(&self.query_string(route.query));
        }
        let (content_type, body) = match &route.body {
            Some(valid) => self.body(valid),
            None if self.rng.random_bool(0.1) => self.body(&json!({})),
            None => (None, Vec::new()),
        };
        Sent {
            method,
            path,
            content_type,
            body,
        }
    }

    fn path_segment(&mut self, route: &Route, name: &str) -> String {
        let valid = route
            .params
            .iter()
            .find(|(param, _)| *param == name)
            .map(|(_, value)| value.clone());
        let segment = match (self.rng.random_range(0..6), valid) {
            (0 | 1, Some(valid)) => valid,
            (0 | 1, None) => uuid::Uuid::now_v7().to_string(),
            (2, _) => self.rng.random::<i64>().to_string(),
            // Bytes that are not UTF-8 once decoded.
            (3, _) => return "%FF%FE%00".to_owned(),
            _ => self.string(),
        };
        percent_encode(&segment)
    }

    fn query_string(&mut self, names: &[&str]) -> String {
        let mut query = String::new();
        for _ in 0..self.rng.random_range(1..=3) {
            let name = if self.rng.random_bool(0.9) {
                (*names.choose(&mut self.rng).expect("query names")).to_owned()
            } else {
                self.string()
            };
            let value = match self.number() {
                // Bytes that are not UTF-8 once decoded.
                _ if self.rng.random_bool(0.1) => "%FF%FE%00".to_owned(),
                Value::Number(number) if self.rng.random_bool(0.4) => {
                    percent_encode(&number.to_string())
                }
                _ => percent_encode(&self.string()),
            };
            if !query.is_empty() {
                query.push('&');
            }
            let _ = write!(query, "{}={value}", percent_encode(&name));
        }
        query
    }

    /// A body: mostly the valid one mutated, sometimes any JSON, sometimes not JSON at all.
    fn body(&mut self, valid: &Value) -> (Option<&'static str>, Vec<u8>) {
        const JSON: Option<&str> = Some("application/json");
        match self.rng.random_range(0..20) {
            0 => (JSON, b"{\"unterminated\": ".to_vec()),
            1 => (Some("text/plain"), json_bytes(valid)),
            2 => (None, json_bytes(valid)),
            3 => (JSON, Vec::new()),
            4 => (JSON, nested(self.rng.random_range(100..3000))),
            5 | 6 => (JSON, json_bytes(&self.value(3))),
            _ => (JSON, json_bytes(&self.mutate(valid))),
        }
    }

    /// `valid` with one or two places changed: a member replaced by junk, removed or joined by
    /// an unknown one, an array emptied or grown. The rest stays valid, so that the request gets
    /// as far as the changed value can take it (to the database, if the service lets it through).
    fn mutate(&mut self, valid: &Value) -> Value {
        let mutated = self.mutate_once(valid);
        if self.rng.random_bool(0.3) {
            self.mutate_once(&mutated)
        } else {
            mutated
        }
    }

    fn mutate_once(&mut self, valid: &Value) -> Value {
        match valid {
            Value::Object(members) if !members.is_empty() => {
                let mut mutated = members.clone();
                let name = members
                    .keys()
                    .nth(self.rng.random_range(0..members.len()))
                    .expect("a member")
                    .clone();
                match self.rng.random_range(0..10) {
                    0 => {
                        mutated.remove(&name);
                    }
                    1 => {
                        mutated.insert(self.string(), self.value(2));
                    }
                    _ => {
                        let value = self.mutate_once(&members[&name]);
                        mutated.insert(name, value);
                    }
                }
                Value::Object(mutated)
            }
            Value::Array(items) if !items.is_empty() => {
                let mut mutated = items.clone();
                match self.rng.random_range(0..10) {
                    0 => mutated.clear(),
                    1 => {
                        let copies = self.rng.random_range(1..300);
                        mutated.extend(std::iter::repeat_n(items[0].clone(), copies));
                    }
                    _ => {
                        let index = self.rng.random_range(0..items.len());
                        mutated[index] = self.mutate_once(&items[index]);
                    }
                }
                Value::Array(mutated)
            }
            // A value of the same type, mostly, and sometimes any other.
            Value::String(_) if self.rng.random_bool(0.7) => Value::String(self.string()),
            Value::Number(_) if self.rng.random_bool(0.7) => self.number(),
            _ => self.value(2),
        }
    }

    /// Any JSON value, nested up to `depth`.
    fn value(&mut self, depth: u32) -> Value {
        match self.rng.random_range(0..if depth == 0 { 4 } else { 6 }) {
            0 => Value::Null,
            1 => Value::Bool(self.rng.random()),
            2 => self.number(),
            3 => Value::String(self.string()),
            4 => Value::Array(
                (0..self.rng.random_range(0..4))
                    .map(|_| self.value(depth - 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..self.rng.random_range(0..4))
                    .map(|_| (self.string(), self.value(depth - 1)))
                    .collect(),
            ),
        }
    }

    /// A number from the edges: zero, negative, fractional, past 32 and 64 bits.
    fn number(&mut self) -> Value {
        match self.rng.random_range(0..12) {
            0 => json!(0),
            1 => json!(-1),
            2 => json!(1),
            3 => json!(i64::MAX),
            4 => json!(i64::MIN),
            5 => json!(u64::MAX),
            6 => json!(1e300),
            7 => json!(-1e300),
            8 => json!(0.5),
            9 => json!(i64::from(i32::MAX) + 1),
            10 => json!(self.rng.random::<i32>()),
            _ => json!(self.rng.random::<f64>() * 1e6 - 5e5),
        }
    }

    /// A string from the edges: empty, blank, NUL and control characters, 10,000 characters,
    /// non-ASCII, quotes and percent signs.
    fn string(&mut self) -> String {
        let samples = [
            "",
            " ",
            "\0",
            "a\0b",
            "line\nbreak",
            "tab\there",
            "esc\u{1b}[31m",
            "del\u{7f}",
            "c1\u{85}",
            "grüße",
            "世界",
            "🎉🎉",
            "\u{202e}rtl",
            "\u{feff}bom",
            "'; DROP TABLE orders; --",
            "%00",
            "../../etc/passwd",
            "a@b",
            "paid",
            "order_confirmation",
        ];
        match self.rng.random_range(0..8) {
            0 => "x".repeat(10_000),
            1 => "é".repeat(self.rng.random_range(30..300)),
            2 => (0..self.rng.random_range(1..40))
                .map(|_| char::from_u32(self.rng.random_range(0..0x3_0000)).unwrap_or('\u{fffd}'))
                .collect(),
            _ => (*samples.choose(&mut self.rng).expect("samples")).to_owned(),
        }
    }

    /// A header value HTTP allows: visible ASCII of any length, or Latin-1 bytes.
    fn header_value(&mut self) -> reqwest::header::HeaderValue {
        let bytes: Vec<u8> = match self.rng.random_range(0..3) {
            0 => vec![b'k'; self.rng.random_range(0..2000)],
            1 => (0..self.rng.random_range(1..50))
                .map(|_| self.rng.random_range(0x80..=0xff_u8))
                .collect(),
            _ => b"key with spaces; \"quotes\"".to_vec(),
        };
        reqwest::header::HeaderValue::from_bytes(&bytes).expect("a valid header value")
    }
}

fn json_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("a Value is JSON")
}

/// The admin routes every service with a database mounts from the crates: the schedules
/// (`task_scheduler::admin`), the dead letters (`dead_letters::admin`) and the parked outbox
/// rows (`outbox::admin`).
/// `admin_token` is their bearer token.
pub fn crate_admin_routes(admin_token: &str) -> Vec<Route> {
    let id = uuid::Uuid::now_v7().to_string();
    vec![
        Route::new(Method::GET, "/admin/schedules")
            .query(&["state", "limit"])
            .bearer(admin_token),
        Route::new(Method::DELETE, "/admin/schedules/{id}")
            .param("id", &id)
            .bearer(admin_token),
        Route::new(Method::GET, "/admin/dead-letters")
            .query(&["consumer", "after", "limit"])
            .bearer(admin_token),
        Route::new(Method::POST, "/admin/dead-letters/replay-all")
            .query(&["consumer"])
            .bearer(admin_token),
        Route::new(Method::GET, "/admin/dead-letters/{id}")
            .param("id", &id)
            .bearer(admin_token),
        Route::new(Method::DELETE, "/admin/dead-letters/{id}")
            .param("id", &id)
            .bearer(admin_token),
        Route::new(Method::POST, "/admin/dead-letters/{id}/replay")
            .param("id", &id)
            .bearer(admin_token),
        Route::new(Method::GET, "/admin/outbox/parked")
            .query(&["limit", "after"])
            .bearer(admin_token),
        Route::new(Method::POST, "/admin/outbox/parked/{id}/retry")
            .param("id", "1")
            .bearer(admin_token),
        Route::new(Method::DELETE, "/admin/outbox/parked/{id}")
            .param("id", "1")
            .bearer(admin_token),
        Route::new(Method::GET, "/health/live"),
        Route::new(Method::GET, "/no/such/route"),
    ]
}

/// Asserts that `response` is a 422 problem whose `errors` name `field`.
pub async fn assert_invalid_field(response: reqwest::Response, field: &str) {
    let status = response.status();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.bytes().await.expect("a body");
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {text}");
    assert_problem(status, &content_type, &body)
        .unwrap_or_else(|reason| panic!("{reason}: {text}"));
    let problem: Value = serde_json::from_slice(&body).expect("JSON");
    assert!(
        problem["errors"][field].is_string(),
        "the problem does not name {field}: {text}"
    );
}

/// `depth` nested arrays: deeper than `serde_json`'s recursion limit.
fn nested(depth: usize) -> Vec<u8> {
    let mut body = "[".repeat(depth).into_bytes();
    body.extend(std::iter::repeat_n(b']', depth));
    body
}

/// Every byte but the unreserved ones (RFC 3986) as `%XX`.
pub fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// Whether a 4xx answer is an RFC 9457 problem: `application/problem+json`, with the response's
/// `status` and a `title`.
pub fn assert_problem(status: StatusCode, content_type: &str, body: &[u8]) -> Result<(), String> {
    if content_type != "application/problem+json" {
        return Err(format!("content-type {content_type:?}"));
    }
    let problem: Value =
        serde_json::from_slice(body).map_err(|err| format!("a body that is not JSON: {err}"))?;
    if problem["status"] != status.as_u16() {
        return Err(format!("`status` {}", problem["status"]));
    }
    if !problem["title"].is_string() {
        return Err("no `title`".to_owned());
    }
    Ok(())
}

fn truncated(text: &str) -> String {
    const SHOWN: usize = 300;
    if text.chars().count() > SHOWN {
        let head: String = text.chars().take(SHOWN).collect();
        format!("{head}… ({} bytes)", text.len())
    } else {
        text.to_owned()
    }
}

//! No Docker engine runs where the tests run, so `docker compose` cannot prove that
//! docker-compose.yml works. This test keeps it consistent with the workspace instead: every
//! service is in it, wired the same way, and every variable it sets is documented.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_norway::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    fs::read_to_string(repo_root().join(relative))
        .unwrap_or_else(|e| panic!("read {relative}: {e}"))
}

fn compose() -> Value {
    let mut compose: Value =
        serde_norway::from_str(&read("docker-compose.yml")).expect("valid YAML");
    compose.apply_merge().expect("merge keys resolve");
    compose
}

fn service_packages() -> BTreeSet<String> {
    fs::read_dir(repo_root().join("services"))
        .expect("services/")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.join("Cargo.toml").exists())
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Variables documented in .env.example, as `NAME=` or `# NAME=` at the start of a line.
fn documented_variables() -> BTreeSet<String> {
    read(".env.example")
        .lines()
        .filter_map(|line| {
            let line = line.trim_start_matches('#').trim();
            let (name, _) = line.split_once('=')?;
            (!name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .then(|| name.to_owned())
        })
        .collect()
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(value, |v, key| &v[*key])
        .as_str()
        .unwrap_or_else(|| panic!("docker-compose.yml has no string at {path:?}"))
}

#[test]
fn every_service_is_in_compose_and_wired_consistently() {
    let compose = compose();
    let init_sql = read("docker/postgres/init.sql");
    for package in service_packages() {
        let service = &compose["services"][package.as_str()];
        assert!(
            service.is_mapping(),
            "services/{package} is missing from docker-compose.yml"
        );
        assert_eq!(
            str_at(service, &["build", "args", "SERVICE"]),
            package,
            "{package}: build arg"
        );

        let addr = str_at(service, &["environment", "HTTP_ADDR"]);
        let port = addr.rsplit(':').next().unwrap();
        let published = service["ports"][0].as_str().expect("a published port");
        assert!(
            published.ends_with(&format!(":{port}:{port}")),
            "{package}: publishes {published}, listens on {addr}"
        );
        let health = service["healthcheck"]["test"]
            .as_sequence()
            .expect("a healthcheck");
        assert!(
            health
                .iter()
                .any(|arg| arg.as_str() == Some(&format!("http://127.0.0.1:{port}/health/ready"))),
            "{package}: the healthcheck must probe /health/ready on {port}"
        );

        let database = str_at(service, &["environment", "DATABASE_URL"])
            .rsplit('/')
            .next()
            .unwrap();
        assert!(
            init_sql.contains(&format!("CREATE DATABASE {database};")),
            "{package}: init.sql lacks {database}"
        );
        assert_eq!(
            str_at(service, &["environment", "KAFKA_BOOTSTRAP_SERVERS"]),
            "kafka:9092"
        );

        for dependency in ["kafka", "postgres"] {
            assert_eq!(
                str_at(service, &["depends_on", dependency, "condition"]),
                "service_healthy",
                "{package} must wait for a healthy {dependency}"
            );
        }
    }
    for infrastructure in ["kafka", "postgres"] {
        assert!(
            compose["services"][infrastructure]["healthcheck"].is_mapping(),
            "{infrastructure} needs a healthcheck"
        );
    }
    assert_eq!(
        compose["services"]["kafka"]["environment"]["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"]
            .as_u64(),
        Some(0),
        "group joins must not wait for more members"
    );
}

#[test]
fn every_variable_compose_sets_for_a_service_is_documented() {
    let compose = compose();
    let documented = documented_variables();
    for package in service_packages() {
        let environment = compose["services"][package.as_str()]["environment"]
            .as_mapping()
            .expect("environment");
        for name in environment.keys().filter_map(Value::as_str) {
            assert!(
                documented.contains(name),
                "{package} sets {name}, which .env.example does not document"
            );
        }
    }
}

#[test]
fn every_common_variable_is_documented() {
    let documented = documented_variables();
    for (name, _) in platform::config::COMMON_VARIABLES {
        assert!(
            documented.contains(*name),
            ".env.example does not document {name}"
        );
    }
}

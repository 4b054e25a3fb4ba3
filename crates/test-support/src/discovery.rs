//! Finds the Kafka broker and the PostgreSQL server the tests run against.
//!
//! The project rule, in order: an address from the environment (CI, docker-compose, a developer's
//! own choice) wins; otherwise containers, when a Docker engine answers; otherwise the local
//! instances. Each answer is found once per test process and cached.

use std::time::Duration;

use testcontainers_modules::{
    kafka::apache,
    postgres::Postgres,
    testcontainers::{ContainerAsync, Image, ImageExt, runners::AsyncRunner},
};
use tokio::{net::TcpStream, sync::OnceCell};

use crate::{database, docker};

/// Marks the containers this crate starts. They outlive the test process (see the README);
/// the label finds them for removal.
const CONTAINER_LABEL: &str = "asyncron.test-support";

/// A Docker engine on the local socket answers within milliseconds; waiting longer only delays
/// every test run on machines without one.
const DOCKER_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// A loopback connect either succeeds or is refused at once; the bound is for firewalled hosts.
const TCP_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// One piece of infrastructure the tests need.
struct Service {
    /// Names the service in the error: "no {what} for tests".
    what: &'static str,
    /// Takes precedence over everything else when set and not empty.
    env_var: &'static str,
    /// Where the local instance listens.
    local_address: &'static str,
    /// What the developer can do when nothing was found.
    hint: &'static str,
}

const KAFKA: Service = Service {
    what: "Kafka broker",
    env_var: "KAFKA_BOOTSTRAP_SERVERS",
    local_address: "127.0.0.1:9092",
    hint: "run `scripts/broker.sh start` or set KAFKA_BOOTSTRAP_SERVERS",
};

const POSTGRES: Service = Service {
    what: "PostgreSQL server",
    env_var: "DATABASE_URL",
    local_address: "127.0.0.1:5432",
    hint: "start PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth) or set DATABASE_URL",
};

/// The local PostgreSQL accepts user `postgres` without a password (trust auth).
const LOCAL_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432";

/// Where a service was found.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// The service's environment variable, with its value.
    Environment(String),
    /// A Docker engine answered: the caller starts a container.
    Docker,
    /// Something listens on the service's local address.
    Local,
}

/// Applies the project rule to the given observations.
///
/// The inputs are parameters, not reads of the process environment, so the rule is testable
/// without a broker, a Docker engine or `std::env::set_var`. The probes are closures so that
/// nothing is probed once an earlier step has decided.
async fn discover(
    service: &Service,
    env_value: Option<String>,
    docker: impl AsyncFnOnce() -> Result<(), String>,
    local_listens: impl AsyncFnOnce(&str) -> bool,
) -> Result<Found, String> {
    if let Some(value) = env_value {
        return Ok(Found::Environment(value));
    }
    let no_docker = match docker().await {
        Ok(()) => return Ok(Found::Docker),
        Err(why) => why,
    };
    if local_listens(service.local_address).await {
        return Ok(Found::Local);
    }
    Err(format!(
        "no {what} for tests: {env_var} is unset, {no_docker}, nothing listens on {local} — {hint}",
        what = service.what,
        env_var = service.env_var,
        local = service.local_address,
        hint = service.hint,
    ))
}

/// The Kafka bootstrap servers for tests, e.g. `127.0.0.1:9092`.
///
/// Found once per test process: `KAFKA_BOOTSTRAP_SERVERS`, else an Apache Kafka container when a
/// Docker engine answers, else the local broker on 127.0.0.1:9092.
///
/// # Panics
/// When none of those is available, with a message naming everything that was tried; or when
/// Docker answered but the container did not start.
pub async fn kafka_bootstrap_servers() -> String {
    static KAFKA_ENDPOINT: OnceCell<Endpoint<apache::Kafka>> = OnceCell::const_new();

    let endpoint = KAFKA_ENDPOINT
        .get_or_init(|| async {
            match discover(&KAFKA, env_value(KAFKA.env_var), docker_engine, listens)
                .await
                .unwrap_or_else(|error| panic!("{error}"))
            {
                Found::Environment(servers) => Endpoint::external(servers),
                Found::Local => Endpoint::external(KAFKA.local_address.to_owned()),
                Found::Docker => {
                    let container = start_container(apache::Kafka::default()).await;
                    let host = container.get_host().await.expect("container host");
                    let port = container
                        .get_host_port_ipv4(apache::KAFKA_PORT)
                        .await
                        .expect("Kafka port mapping");
                    Endpoint::container(format!("{host}:{port}"), container)
                }
            }
        })
        .await;
    endpoint.address.clone()
}

/// The URL of the PostgreSQL server for tests, without a database name, e.g.
/// `postgres://postgres@127.0.0.1:5432`.
///
/// Found once per test process: `DATABASE_URL` (its database name, if any, is dropped), else a
/// PostgreSQL container when a Docker engine answers, else the local server on 127.0.0.1:5432.
///
/// # Panics
/// When none of those is available, with a message naming everything that was tried; or when
/// Docker answered but the container did not start.
pub async fn postgres_server_url() -> String {
    static POSTGRES_ENDPOINT: OnceCell<Endpoint<Postgres>> = OnceCell::const_new();

    let endpoint = POSTGRES_ENDPOINT
        .get_or_init(|| async {
            match discover(
                &POSTGRES,
                env_value(POSTGRES.env_var),
                docker_engine,
                listens,
            )
            .await
            .unwrap_or_else(|error| panic!("{error}"))
            {
                Found::Environment(url) => Endpoint::external(database::without_database(&url)),
                Found::Local => Endpoint::external(LOCAL_POSTGRES_URL.to_owned()),
                Found::Docker => {
                    let container = start_container(Postgres::default()).await;
                    let host = container.get_host().await.expect("container host");
                    let port = container
                        .get_host_port_ipv4(5432)
                        .await
                        .expect("PostgreSQL port mapping");
                    // The image's default user and password.
                    let url = format!("postgres://postgres:postgres@{host}:{port}");
                    Endpoint::container(url, container)
                }
            }
        })
        .await;
    endpoint.address.clone()
}

/// An address the tests use, with the container behind it when this process started one.
struct Endpoint<I: Image> {
    address: String,
    /// Held, never read: the container is removed when dropped, and a static is never dropped,
    /// so it serves every test of the process.
    _container: Option<ContainerAsync<I>>,
}

impl<I: Image> Endpoint<I> {
    fn external(address: String) -> Self {
        Self {
            address,
            _container: None,
        }
    }

    fn container(address: String, container: ContainerAsync<I>) -> Self {
        Self {
            address,
            _container: Some(container),
        }
    }
}

async fn start_container<I: Image>(image: I) -> ContainerAsync<I> {
    let name = image.name().to_owned();
    image
        .with_label(CONTAINER_LABEL, "true")
        .start()
        .await
        .unwrap_or_else(|error| {
            panic!("a Docker engine answered, but the {name} container did not start: {error}")
        })
}

/// The value of `name`, treating an empty value like an unset one: `FOO= cargo test` is a common
/// way to switch a variable off for one run.
fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// Pings the Docker engine once per process; both services share the answer.
async fn docker_engine() -> Result<(), String> {
    static ANSWER: OnceCell<Result<(), String>> = OnceCell::const_new();

    ANSWER
        .get_or_init(|| async {
            let docker_host = std::env::var("DOCKER_HOST").ok();
            let endpoint = docker::Endpoint::from_docker_host(docker_host.as_deref());
            docker::ping(&endpoint, DOCKER_PING_TIMEOUT).await
        })
        .await
        .clone()
}

async fn listens(address: &str) -> bool {
    matches!(
        tokio::time::timeout(TCP_PROBE_TIMEOUT, TcpStream::connect(address)).await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    const NO_DOCKER: &str = "no Docker engine answered at /var/run/docker.sock";

    async fn docker_answers() -> Result<(), String> {
        Ok(())
    }

    async fn docker_absent() -> Result<(), String> {
        Err(NO_DOCKER.to_owned())
    }

    #[tokio::test]
    async fn the_environment_wins_and_nothing_is_probed() {
        let found = discover(
            &KAFKA,
            Some("broker-1:9092,broker-2:9092".to_owned()),
            async || panic!("Docker must not be pinged when the environment decides"),
            async |_: &str| panic!("nothing must be probed when the environment decides"),
        )
        .await;

        assert_eq!(
            found,
            Ok(Found::Environment("broker-1:9092,broker-2:9092".to_owned()))
        );
    }

    #[tokio::test]
    async fn docker_comes_before_the_local_instance() {
        let found = discover(&KAFKA, None, docker_answers, async |_: &str| {
            panic!("the local broker must not be probed when Docker answers")
        })
        .await;

        assert_eq!(found, Ok(Found::Docker));
    }

    #[tokio::test]
    async fn the_local_instance_is_the_last_resort() {
        let mut probed = None;
        let found = discover(&POSTGRES, None, docker_absent, async |address: &str| {
            probed = Some(address.to_owned());
            true
        })
        .await;

        assert_eq!(found, Ok(Found::Local));
        assert_eq!(probed.as_deref(), Some("127.0.0.1:5432"));
    }

    #[tokio::test]
    async fn the_error_names_everything_that_was_tried() {
        let kafka = discover(&KAFKA, None, docker_absent, async |_: &str| false).await;
        assert_eq!(
            kafka,
            Err(
                "no Kafka broker for tests: KAFKA_BOOTSTRAP_SERVERS is unset, \
                 no Docker engine answered at /var/run/docker.sock, \
                 nothing listens on 127.0.0.1:9092 — \
                 run `scripts/broker.sh start` or set KAFKA_BOOTSTRAP_SERVERS"
                    .to_owned()
            )
        );

        let postgres = discover(&POSTGRES, None, docker_absent, async |_: &str| false).await;
        assert_eq!(
            postgres,
            Err("no PostgreSQL server for tests: DATABASE_URL is unset, \
                 no Docker engine answered at /var/run/docker.sock, \
                 nothing listens on 127.0.0.1:5432 — start PostgreSQL on 127.0.0.1:5432 \
                 (user postgres, trust auth) or set DATABASE_URL"
                .to_owned())
        );
    }

    #[tokio::test]
    async fn listens_tells_an_open_port_from_a_closed_one() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        assert!(listens(&address).await);

        drop(listener);
        assert!(!listens(&address).await);
    }
}

//! The broker every scenario but `scheduler` needs: its address and a quick check that it
//! answers, before a scenario starts anything.

use std::net::{TcpStream, ToSocketAddrs as _};
use std::time::Duration;

pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

/// `KAFKA_BOOTSTRAP_SERVERS`, or [`DEFAULT_BOOTSTRAP`].
pub fn bootstrap_from_env() -> String {
    std::env::var("KAFKA_BOOTSTRAP_SERVERS")
        .ok()
        .filter(|servers| !servers.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_BOOTSTRAP.to_owned())
}

/// Fails fast, with what to do, when nothing listens at any of the bootstrap servers (rather
/// than letting librdkafka retry for the length of its timeouts).
pub fn check_broker(bootstrap: &str) -> anyhow::Result<()> {
    let answers = |server: &str| {
        // `host:port`, possibly as `PLAINTEXT://host:port`.
        let address = server.rsplit("://").next().unwrap_or(server);
        address.to_socket_addrs().is_ok_and(|mut addresses| {
            addresses.any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
        })
    };
    let reachable = bootstrap
        .split(',')
        .map(str::trim)
        .filter(|server| !server.is_empty())
        .any(answers);
    anyhow::ensure!(
        reachable,
        "no Kafka broker answers at {bootstrap}. Start the local one with \
         `scripts/broker.sh start`, or set KAFKA_BOOTSTRAP_SERVERS to a running broker \
         (default {DEFAULT_BOOTSTRAP})."
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_broker_is_a_clear_error() {
        // Port 9 (discard) on loopback: nothing listens there on a development machine.
        let error = check_broker("127.0.0.1:9").unwrap_err().to_string();
        assert!(
            error.contains("no Kafka broker answers at 127.0.0.1:9"),
            "{error}"
        );
    }
}

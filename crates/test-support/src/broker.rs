//! A broker of a test's own, for tests that stop and restart it: the shared broker on
//! 127.0.0.1:9092 serves every other test and must never go down.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The local broker's binary and the version the project pins (see `docs/local-kafka.md`).
const NISSHI: &str = "nisshi";

/// A broker answers within a second or two of starting; a busy 2-core machine needs more.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A private in-memory nisshi broker on a free loopback port, killed when dropped.
///
/// It loses every topic, message and committed offset when stopped, like the local broker
/// after `scripts/broker.sh stop` and `start`, and comes back on the same port.
///
/// Outage tests need it and require `nisshi` on `PATH` (`scripts/test.sh` and
/// `scripts/broker.sh start` install it): there is no other way to take a broker down without
/// taking it from every other test. [`PrivateBroker::start`] panics, saying how to install it,
/// when it is missing; such a test is not skipped, because a skipped outage test is an outage
/// nobody checked.
#[derive(Debug)]
pub struct PrivateBroker {
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl PrivateBroker {
    /// Starts a broker on a free port and returns once it accepts connections.
    ///
    /// # Panics
    /// When `nisshi` is not on `PATH`, or the broker does not accept connections within 20 s.
    pub async fn start() -> Self {
        // Port 0 makes the kernel choose; the listener is closed at once so that the broker
        // can bind the port. Another process could take it in between: unlikely enough on
        // loopback, and the start then fails loudly.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let log = std::env::temp_dir().join(format!("asyncron-private-broker-{port}.log"));
        let mut broker = Self {
            port,
            child: None,
            log,
        };
        broker.launch().await;
        broker
    }

    /// `127.0.0.1:<port>`, for `KafkaConfig::new`.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where the broker writes its log, for a failing test's message.
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    /// Kills the broker (SIGKILL: a crash; memory storage loses the same either way) and
    /// returns once its port refuses connections.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        }
        let address = self.address();
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "the private broker on {address} still accepts connections after being killed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the broker again on the same port, empty, and returns once it accepts
    /// connections.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }

    fn address(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    async fn launch(&mut self) {
        let address = self.bootstrap_servers();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|error| panic!("cannot open {}: {error}", self.log.display()));
        let log_err = log.try_clone().expect("a second handle on the broker log");
        let child = Command::new(NISSHI)
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://{address}"),
                "--advertised-listener-url",
                &format!("tcp://{address}"),
                "--storage-engine",
                "memory://nisshi/",
            ])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start `{NISSHI}` for a private broker ({error}). Outage tests need \
                     it on PATH: run `scripts/broker.sh start` once, or `cargo install nisshi \
                     --version 0.6.0 --locked --no-default-features --features dynostore`"
                )
            });
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        let socket = self.address();
        loop {
            if TcpStream::connect_timeout(&socket, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "the private broker on {address} exited with {status}; see {}",
                    self.log.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the private broker on {address} did not accept connections within \
                 {START_TIMEOUT:?}; see {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

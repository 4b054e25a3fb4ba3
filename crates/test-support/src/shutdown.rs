//! The shutdown check every service runs: its real binary, a database that stops answering, a
//! request stuck on it, SIGTERM, and a deadline (`SHUTDOWN_TIMEOUT` + 5 s) for the process to end.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::{TestDatabase, eventually, kafka_bootstrap_servers};

/// The `SHUTDOWN_TIMEOUT` the service under test gets.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// What the check allows on top of `SHUTDOWN_TIMEOUT` (the bound).
pub const SLACK: Duration = Duration::from_secs(5);

/// A TCP proxy that can stop passing bytes, in both directions, on every connection, old and
/// new: a dependency that hangs without closing anything, as one behind a network partition or
/// a frozen VM does. Nothing errors; calls just never return.
#[derive(Debug)]
pub struct StallingProxy {
    address: SocketAddr,
    stalled: Arc<AtomicBool>,
    held: Arc<AtomicU64>,
    accepting: JoinHandle<()>,
}

impl StallingProxy {
    /// Listens on a free local port and forwards each connection to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free local port for the proxy");
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        let stalled = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicU64::new(0));
        let (flag, count) = (stalled.clone(), held.clone());
        let accepting = tokio::spawn(async move {
            // Dropped with this task, which aborts every connection's forwarding.
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let (flag, count) = (flag.clone(), count.clone());
                connections.spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        forward(client_read, server_write, &flag, &count),
                        forward(server_read, client_write, &flag, &count),
                    );
                });
            }
        });
        Self {
            address,
            stalled,
            held,
            accepting,
        }
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// From now on no byte passes.
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    /// How many bytes arrived since the stall and were held back.
    pub fn held_bytes(&self) -> u64 {
        self.held.load(Ordering::SeqCst)
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: &AtomicBool,
    held: &AtomicU64,
) {
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if stalled.load(Ordering::SeqCst) {
            held.fetch_add(read as u64, Ordering::SeqCst);
            // Hold the connection open and silent for good.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// A request that needs the database, sent once the database hangs.
#[derive(Debug, Clone, Copy)]
pub struct StuckRequest<'a> {
    /// A `GET` path of the service that reads the database.
    pub path: &'a str,
    /// The bearer token the path needs, if any.
    pub bearer: Option<&'a str>,
}

/// Runs the service `binary` (`env!("CARGO_BIN_EXE_<service>")`) on a free port with `database`
/// behind a [`StallingProxy`], the test broker and `variables` (tokens, topics and consumer groups
/// of the test's own), waits until it is ready, stalls the database, sends `stuck` (which then
/// hangs), sends SIGTERM, and asserts that the process ends on its own within
/// [`SHUTDOWN_TIMEOUT`] + [`SLACK`].
///
/// # Panics
/// When the service does not become ready, or does not end in time: the check failed.
pub async fn assert_sigterm_ends_in_time(
    binary: &str,
    database: &TestDatabase,
    variables: &[(&str, &str)],
    stuck: StuckRequest<'_>,
) {
    let mut url = reqwest::Url::parse(&database.url).expect("the test database URL parses");
    let target = url
        .socket_addrs(|| Some(5432))
        .expect("the database address resolves")[0];
    let proxy = StallingProxy::start(target).await;
    url.set_ip_host(proxy.address().ip()).expect("an IP host");
    url.set_port(Some(proxy.address().port())).expect("a port");
    let port = free_port().await;

    let mut child = tokio::process::Command::new(binary)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", url.as_str())
        .env("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap_servers().await)
        .env(
            "SHUTDOWN_TIMEOUT",
            format!("{}s", SHUTDOWN_TIMEOUT.as_secs()),
        )
        .env("RUST_LOG", "info,sqlx=warn,rdkafka=warn")
        .envs(variables.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {binary}: {error}"));
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    eventually(Duration::from_mins(1), "the service is ready", || async {
        let ready = client.get(format!("{base}/health/ready")).send().await;
        ready
            .is_ok_and(|response| response.status().is_success())
            .then_some(())
    })
    .await;

    proxy.stall();
    let before = proxy.held_bytes();
    let mut request = client.get(format!("{base}{}", stuck.path));
    if let Some(token) = stuck.bearer {
        request = request.bearer_auth(token);
    }
    let in_flight = tokio::spawn(request.send());
    // The request reached the database (and hangs there) once the proxy holds more bytes.
    eventually(
        Duration::from_secs(10),
        "the request waits on the database",
        || async { (proxy.held_bytes() > before).then_some(()) },
    )
    .await;

    let pid = child.id().expect("the service is running");
    let started = Instant::now();
    let signalled = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .expect("kill runs");
    assert!(signalled.success(), "kill -TERM {pid} failed");
    let ended = tokio::time::timeout(SHUTDOWN_TIMEOUT + SLACK, child.wait()).await;
    let took = started.elapsed();
    in_flight.abort();
    let status = ended
        .unwrap_or_else(|_| {
            panic!(
                "the service still ran {took:?} after SIGTERM with SHUTDOWN_TIMEOUT={SHUTDOWN_TIMEOUT:?}"
            )
        })
        .expect("waiting for the service");
    assert!(
        status.code().is_some(),
        "the service did not exit on its own but by a signal: {status}"
    );
    tracing::info!(?took, %status, "the service stopped after SIGTERM");
}

async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free local port");
    listener.local_addr().expect("an address").port()
}

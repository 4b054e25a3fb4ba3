//! The service processes a scenario starts from the build, and stops however the run ends.
//!
//! The binaries come from the bench's own profile directory: `target/release/` when the bench
//! runs as `cargo run --release` (measuring), `target/debug/` for a debug bench (`--smoke`,
//! which only checks that every scenario still runs). The bench builds nothing itself.
//!
//! A scenario that needs `orders`, `catalog-cache`, `notifications` or `report-exporter` starts
//! its own instances,
//! on ports and databases of its own, so that it can measure in one run what it compares and
//! freeze or reconfigure them without disturbing anything a developer runs with
//! `scripts/up.sh`. A [`Services`] guard stops them (and resumes a frozen one first) whether the
//! run finishes, fails, is interrupted or panics.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use reqwest::StatusCode;
use tokio::task::JoinHandle;

const READY_TIMEOUT: Duration = Duration::from_mins(1);
const READY_POLL: Duration = Duration::from_millis(100);
/// How long a service may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Log lines shown when a service fails to start.
const LOG_TAIL_LINES: usize = 20;

/// The service binaries the scenarios start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    CatalogCache,
    Orders,
    Notifications,
    ReportExporter,
}

impl Binary {
    /// The file in `target/<profile>/`, which is also the Cargo package name.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::CatalogCache => "catalog-cache",
            Self::Orders => "orders",
            Self::Notifications => "notifications",
            Self::ReportExporter => "report-exporter",
        }
    }
}

/// `target/<profile>/`: the directory of the bench's own executable (`deps/`'s parent in tests).
pub fn profile_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("Failed to find the bench's own executable")?;
    let mut dir = exe.parent().context("the executable has no directory")?;
    if dir.ends_with("deps") {
        dir = dir.parent().context("deps/ has no parent")?;
    }
    Ok(dir.to_path_buf())
}

/// `target/`, the parent of [`profile_dir`].
pub fn target_dir() -> anyhow::Result<PathBuf> {
    Ok(profile_dir()?
        .parent()
        .context("the executable is not in a Cargo target directory")?
        .to_path_buf())
}

/// Whether the bench itself is a release build, and so starts the release binaries.
pub fn is_release() -> bool {
    !cfg!(debug_assertions)
}

/// The bench's profile directory ([`profile_dir`]), once it holds every binary in `needed`. The
/// bench builds nothing: the error names the command that does.
pub fn binaries(needed: &[Binary]) -> anyhow::Result<PathBuf> {
    let binaries = profile_dir()?;
    let missing: Vec<&str> = needed
        .iter()
        .map(|binary| binary.file_name())
        .filter(|name| !binaries.join(name).is_file())
        .collect();
    let packages: Vec<String> = needed
        .iter()
        .map(|binary| format!("-p {}", binary.file_name()))
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "{} not found in {}: build the services first with `cargo build{} {}`",
        missing.join(" and "),
        binaries.display(),
        if is_release() { " --release" } else { "" },
        packages.join(" ")
    );
    Ok(binaries)
}

/// What every scenario that starts services shares: the broker, the database server, the
/// binaries, the run's id, its log directory and the services' `ADMIN_TOKEN`.
#[derive(Debug)]
pub struct Run {
    /// The scenario's name, as on the command line.
    pub scenario: &'static str,
    pub bootstrap: String,
    /// `DATABASE_URL`; its database name is replaced by each of the run's own.
    pub database_server: String,
    /// `target/release/` (or `target/debug/`), with the services' binaries.
    pub binaries: PathBuf,
    /// `target/bench/<scenario>-<run id>/`: the services' logs, kept when the run fails.
    pub log_dir: PathBuf,
    pub id: String,
    /// The services' `ADMIN_TOKEN`, made up for the run.
    pub admin_token: String,
}

impl Run {
    /// Fails naming the `cargo build` to run when one of `needed` is not built.
    pub fn new(scenario: &'static str, needed: &[Binary]) -> anyhow::Result<Self> {
        let run_id = run_id();
        Ok(Self {
            scenario,
            bootstrap: crate::broker::bootstrap_from_env(),
            database_server: crate::database::server_from_env(),
            binaries: binaries(needed)?,
            log_dir: target_dir()?
                .join("bench")
                .join(format!("{scenario}-{run_id}")),
            admin_token: token(),
            id: run_id,
        })
    }

    /// The URL of the run's database `database` on the server.
    pub fn database_url(&self, database: &str) -> anyhow::Result<String> {
        crate::database::database_url(&self.database_server, database)
    }

    /// `broker …, PostgreSQL …, run …`: the first line of the run's output and of its notes.
    pub fn describe(&self) -> String {
        format!(
            "broker {}, PostgreSQL {}, run {}",
            self.bootstrap,
            crate::database::redact(&self.database_server),
            self.id
        )
    }

    /// Checks that the broker and PostgreSQL answer and that `ports` are free, then runs
    /// `measure` with a [`Services`] guard. Whatever `measure` returns, and on SIGINT or SIGTERM,
    /// the services are stopped and `databases` dropped; their logs are kept when the run fails
    /// and removed when it succeeds.
    pub async fn measure<T>(
        &self,
        ports: &[u16],
        databases: &[&str],
        measure: impl AsyncFnOnce(&mut Services) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        crate::broker::check_broker(&self.bootstrap)?;
        crate::database::check_postgres(&self.database_server).await?;
        check_ports_free(ports)?;
        eprintln!("{} scenario: {}", self.scenario, self.describe());
        std::fs::create_dir_all(&self.log_dir)
            .with_context(|| format!("Failed to create {}", self.log_dir.display()))?;

        let mut services = Services::new(self.binaries.clone(), self.log_dir.clone());
        let outcome = tokio::select! {
            outcome = measure(&mut services) => outcome,
            signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
        };
        services.stop_all();
        let dropped = crate::database::drop_all(&self.database_server, databases).await;
        let measured = outcome.map_err(|error| {
            anyhow::anyhow!(
                "{error:#}\nThe services' logs (RUST_LOG=warn), if any were started, are kept in {}",
                self.log_dir.display()
            )
        })?;
        dropped?;
        // Kept when the run failed, to read; a finished run has nothing to look at in them.
        if let Err(error) = std::fs::remove_dir_all(&self.log_dir) {
            tracing::warn!(%error, dir = %self.log_dir.display(), "could not remove the logs");
        }
        Ok(measured)
    }
}

/// A run's id: 8 random hex digits, in the names of everything the run creates.
pub fn run_id() -> String {
    let mut run_id = uuid::Uuid::new_v4().simple().to_string();
    run_id.truncate(8);
    run_id
}

/// A bearer token made up for one run (`ADMIN_TOKEN`, `EXPORTS_TOKEN`): 32 random hex digits.
pub fn token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// What every service the bench starts gets: its address and database, the broker, JSON logs
/// at `warn`, and an `ADMIN_TOKEN`. The services refuse to start with their admin routes on
/// (the default, as deployed) and no token; the bench never calls those routes.
pub fn service_env(
    port: u16,
    database_url: String,
    bootstrap: &str,
    admin_token: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("HTTP_ADDR", format!("127.0.0.1:{port}")),
        ("DATABASE_URL", database_url),
        ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.to_owned()),
        ("LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
        ("ADMIN_TOKEN", admin_token.to_owned()),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceId(usize);

#[derive(Debug)]
pub struct Service {
    pub name: &'static str,
    port: u16,
    child: Child,
    pub log: PathBuf,
}

impl Service {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The started services. Dropping it stops them (SIGCONT in case one is frozen, SIGTERM, SIGKILL
/// after [`STOP_TIMEOUT`]), so no process outlives the bench, whether it finishes, fails or
/// panics.
#[derive(Debug)]
pub struct Services {
    /// Where the binaries are (`target/release/` or `target/debug/`).
    binaries: PathBuf,
    /// Where each service's log goes, as `<name>.log`.
    log_dir: PathBuf,
    running: Vec<Service>,
}

impl Services {
    pub fn new(binaries: PathBuf, log_dir: PathBuf) -> Self {
        Self {
            binaries,
            log_dir,
            running: Vec::new(),
        }
    }

    /// Starts `binary` with `env` on top of the bench's own environment; its stdout and stderr
    /// go to `<log_dir>/<name>.log`.
    pub fn spawn(
        &mut self,
        binary: Binary,
        name: &'static str,
        port: u16,
        env: Vec<(&'static str, String)>,
    ) -> anyhow::Result<ServiceId> {
        let log = self.log_dir.join(format!("{name}.log"));
        let file =
            File::create(&log).with_context(|| format!("Failed to create {}", log.display()))?;
        let stderr = file
            .try_clone()
            .with_context(|| format!("Failed to open {}", log.display()))?;
        let program = self.binaries.join(binary.file_name());
        let child = Command::new(&program)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr)
            // A process group of its own: a Ctrl-C in the terminal reaches only the bench,
            // which then stops the services itself (and resumes a frozen one first).
            .process_group(0)
            .spawn()
            .with_context(|| format!("Failed to start {}", program.display()))?;
        self.running.push(Service {
            name,
            port,
            child,
            log,
        });
        Ok(ServiceId(self.running.len() - 1))
    }

    pub fn get(&self, id: ServiceId) -> &Service {
        &self.running[id.0]
    }

    /// The exit status, once the process has exited.
    pub fn exited(&mut self, id: ServiceId) -> Option<ExitStatus> {
        self.running[id.0].child.try_wait().ok().flatten()
    }

    /// SIGSTOP: the process stops where it is; its sockets stay open and connections to it
    /// hang, as with a service stuck in a long pause.
    pub fn freeze(&mut self, id: ServiceId) -> anyhow::Result<()> {
        self.signal(id, "STOP")
    }

    /// SIGCONT after [`Self::freeze`].
    pub fn thaw(&mut self, id: ServiceId) -> anyhow::Result<()> {
        self.signal(id, "CONT")
    }

    fn signal(&mut self, id: ServiceId, signal: &str) -> anyhow::Result<()> {
        // Only a process not yet reaped: its pid cannot have been reused.
        if let Some(status) = self.exited(id) {
            anyhow::bail!("{} has exited ({status})", self.get(id).name);
        }
        send_signal(self.get(id).child.id(), signal)
    }

    /// Stops every service; returns when all have exited.
    pub fn stop_all(&mut self) {
        for service in &mut self.running {
            if matches!(service.child.try_wait(), Ok(None)) {
                let pid = service.child.id();
                // A stopped process acts on SIGTERM only once it runs again.
                for signal in ["CONT", "TERM"] {
                    if let Err(error) = send_signal(pid, signal) {
                        tracing::warn!(error = format!("{error:#}"), service = service.name);
                    }
                }
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for service in &mut self.running {
            loop {
                match service.child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        eprintln!(
                            "{} did not stop within {STOP_TIMEOUT:?} of SIGTERM; killing it",
                            service.name
                        );
                        let _ = service.child.kill();
                        let _ = service.child.wait();
                        break;
                    }
                }
            }
        }
        self.running.clear();
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Polls `GET /health/ready` until it answers 200; fails early, with the end of the service's
/// log, when the process exits.
pub async fn wait_ready(
    services: &mut Services,
    id: ServiceId,
    http: &reqwest::Client,
) -> anyhow::Result<Duration> {
    let url = format!("{}/health/ready", services.get(id).url());
    let started = Instant::now();
    loop {
        if let Some(status) = services.exited(id) {
            let service = services.get(id);
            anyhow::bail!(
                "{} exited ({status}) before it was ready; the end of its log ({}):\n{}",
                service.name,
                service.log.display(),
                log_tail(&service.log)
            );
        }
        let answer = http.get(&url).timeout(READY_POLL * 10).send().await;
        if answer.is_ok_and(|response| response.status() == StatusCode::OK) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > READY_TIMEOUT {
            let service = services.get(id);
            anyhow::bail!(
                "{} was not ready within {READY_TIMEOUT:?} ({url}); the end of its log ({}):\n{}",
                service.name,
                service.log.display(),
                log_tail(&service.log)
            );
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// The last lines of a log, without the backtrace of a service's fatal error (printed when
/// `RUST_BACKTRACE` is set), which would push the error itself out of view.
fn log_tail(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let (text, backtrace) = match text.split_once("\nStack backtrace:") {
                Some((before, _)) => (before, "\n(backtrace left out)"),
                None => (text.as_ref(), ""),
            };
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
            format!("{tail}{backtrace}")
        }
        Err(error) => format!("(cannot read it: {error})"),
    }
}

/// `kill -<signal> <pid>`: the workspace has no signal crate, and the `kill` command is
/// everywhere the services run.
fn send_signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("Failed to run `kill`")?;
    anyhow::ensure!(status.success(), "kill -{signal} {pid} failed ({status})");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM, naming it; the scenario then stops its services and drops its
/// databases instead of leaving them behind.
pub async fn interrupted() -> &'static str {
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    let sigterm = async move {
        match terminate {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        () = sigterm => "SIGTERM",
    }
}

/// Fails fast when one of the scenario's ports is taken: most likely by services of a bench run
/// that was killed with SIGKILL and could not stop them.
pub fn check_ports_free(ports: &[u16]) -> anyhow::Result<()> {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    for &port in ports {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        anyhow::ensure!(
            TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_err(),
            "port {port} is in use; the scenario starts its own services on {}. Left over from \
             a killed run? `ss -ltnp 'sport = :{port}'` shows the process.",
            list.join(", ")
        );
    }
    Ok(())
}

/// An HTTP server in the bench process (a baseline, a stand-in provider) on a free port,
/// stopped when dropped.
#[derive(Debug)]
pub struct Server {
    pub url: String,
    task: JoinHandle<()>,
}

impl Server {
    pub async fn start(router: Router, path: &str) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .context("Failed to bind a port for the bench's own server")?;
        let address = listener
            .local_addr()
            .context("Failed to read the bench server's address")?;
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "a bench server stopped");
            }
        });
        Ok(Self {
            url: format!("http://{address}{path}"),
            task,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The field of catalog-cache's answer to a PUT that the bench needs.
#[derive(Debug, serde::Deserialize)]
struct PutAnswer {
    revision: i64,
}

/// Creates or changes a product at catalog-cache (`PUT /products/{product_id}`, EUR, in stock,
/// active); its new revision.
pub async fn put_product(
    http: &reqwest::Client,
    catalog_url: &str,
    product_id: &str,
    price_cents: usize,
) -> anyhow::Result<i64> {
    let response = http
        .put(format!("{catalog_url}/products/{product_id}"))
        .json(&serde_json::json!({
            "sku": format!("SKU-{product_id}"),
            "name": format!("Bench product {product_id}"),
            "price_cents": price_cents,
            "currency": "EUR",
            "stock": 1_000_000,
            "active": true,
        }))
        .send()
        .await
        .with_context(|| format!("PUT /products/{product_id} failed"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        anyhow::bail!("PUT /products/{product_id} answered {status}: {body}");
    }
    let answer: PutAnswer = response
        .json()
        .await
        .with_context(|| format!("PUT /products/{product_id}: unexpected answer"))?;
    Ok(answer.revision)
}

/// Creates `product_ids` at catalog-cache (prices 100, 110, … cents) and waits, at most
/// `timeout`, until orders' read model (`catalog_products` in `orders_db`) holds them all: orders
/// first joins its consumer group and replays the topic.
pub async fn seed_products(
    http: &reqwest::Client,
    catalog_url: &str,
    product_ids: &[String],
    orders_db: &sqlx::PgPool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let total = product_ids.len();
    let progress = crate::progress::Progress::start("seed: create products", total);
    let created = progress.counter();
    for (i, product_id) in product_ids.iter().enumerate() {
        put_product(http, catalog_url, product_id, 100 + 10 * i).await?;
        created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    progress.finish();

    let progress = crate::progress::Progress::start("seed: orders' read model", total);
    progress.waiting_for("orders joining its consumer group");
    let projected = progress.counter();
    let started = Instant::now();
    loop {
        let count: i64 =
            sqlx::query_scalar("SELECT count(*) FROM catalog_products WHERE product_id = ANY($1)")
                .bind(product_ids)
                .fetch_one(orders_db)
                .await
                .context("Failed to count the products in orders' read model")?;
        let count = usize::try_from(count).unwrap_or(0);
        projected.store(count, std::sync::atomic::Ordering::Relaxed);
        if count == total {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "orders' read model holds {count} of {total} seeded products after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    progress.finish();
    Ok(())
}

//! Servers the benchmark starts itself: `eventfold serve` (from `--eventfold-bin`, when no
//! `--server` is given) and a second nats-server with `sync_interval: always`. Each runs as a
//! child process on a free loopback port with its data in the run's scratch directory, and is
//! killed when its guard is dropped, also after a failure.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// How long a started server may take to accept requests.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A child process, killed (and reaped) on drop.
#[derive(Debug)]
pub struct ChildServer {
    child: Child,
    what: String,
    log: PathBuf,
}

impl ChildServer {
    pub(crate) fn spawn(what: &str, mut cmd: Command, log: PathBuf) -> anyhow::Result<ChildServer> {
        let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone().context("cannot share the log file")?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {what} ({:?})", cmd.get_program()))?;
        Ok(ChildServer {
            child,
            what: what.to_string(),
            log,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error when the process has exited, with the end of its log.
    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self
            .child
            .try_wait()
            .context("cannot poll a child process")?
        {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log
                .lines()
                .filter(|l| !l.trim().is_empty())
                .rev()
                .take(5)
                .collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            anyhow::bail!("{} exited ({status}): {}", self.what, tail.join(" | "));
        }
        Ok(())
    }

    /// Waits until `ready` answers true, failing early when the process exits.
    pub(crate) async fn wait_ready<F, Fut>(&mut self, mut ready: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let start = Instant::now();
        loop {
            self.check_running()?;
            if ready().await {
                return Ok(());
            }
            if start.elapsed() > START_TIMEOUT {
                anyhow::bail!(
                    "{} did not become ready within {START_TIMEOUT:?} (log: {})",
                    self.what,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(l.local_addr()?.port())
}

pub(crate) async fn accepts(port: u16) -> bool {
    tokio::time::timeout(
        Duration::from_millis(500),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .is_ok_and(|r| r.is_ok())
}

/// The `eventfold` binary the benchmarks start: `given` (`--eventfold-bin`), or else the
/// `eventfold` in the directory of this executable, which is where `cargo build --release -p
/// eventfold-cli` puts it beside `eventfold-bench`. An error, saying how to build or name one,
/// when it is not a file.
pub fn eventfold_bin(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(bin) = given {
        anyhow::ensure!(
            bin.is_file(),
            "--eventfold-bin {} is not a file; pass the path of an `eventfold` binary (build one \
             with `cargo build --release -p eventfold-cli`)",
            bin.display()
        );
        return Ok(bin.to_path_buf());
    }
    let exe = std::env::current_exe().context("cannot find the path of this executable")?;
    let dir = exe
        .parent()
        .with_context(|| format!("{} has no parent directory", exe.display()))?;
    let bin = dir.join(format!("eventfold{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        bin.is_file(),
        "{} is missing: without --server the benchmark starts the `eventfold` server next to \
         itself; build it with `cargo build --release -p eventfold-cli` (without --release for a \
         debug eventfold-bench), or pass --eventfold-bin PATH or --server URL",
        bin.display()
    );
    Ok(bin)
}

/// Starts `bin serve` (an `eventfold` binary), its log in `dir`: with `store` `None` on the
/// embedded engine with `fsync` durability and its data in `dir`, with `Some(url)` on the
/// PostgreSQL database at `url` (`--store`); returns the guard and the server's base URL once
/// it answers `/health/ready`.
pub async fn spawn_eventfold(
    bin: &Path,
    dir: &Path,
    store: Option<&str>,
) -> anyhow::Result<(ChildServer, String)> {
    let port = free_port()?;
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"));
    match store {
        None => {
            cmd.arg("--data")
                .arg(dir.join("eventfold-data"))
                .arg("--durability")
                .arg("fsync");
        }
        Some(url) => {
            cmd.arg("--store").arg(url);
        }
    }
    // Settings from the environment (a config file, a token, another durability) would make
    // the measured server differ from the one stated in the table.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("EVENTFOLD_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("EVENTFOLD_LOG", "warn");
    let mut child = ChildServer::spawn("eventfold serve", cmd, dir.join("eventfold-serve.log"))?;
    let url = format!("http://127.0.0.1:{port}");
    let ready_url = format!("{url}/health/ready");
    let http = reqwest::Client::new();
    child
        .wait_ready(|| {
            let r = http
                .get(&ready_url)
                .timeout(Duration::from_millis(500))
                .send();
            async move { r.await.is_ok_and(|r| r.status().is_success()) }
        })
        .await?;
    Ok((child, url))
}

/// Starts `bin` (a nats-server) with JetStream in `dir` and `sync_interval: always` (an fsync
/// before every acknowledgement); returns the guard and its URL once it accepts connections.
pub async fn spawn_nats_always(bin: &Path, dir: &Path) -> anyhow::Result<(ChildServer, String)> {
    anyhow::ensure!(
        bin.exists(),
        "{} is missing (install nats-server, or pass --nats-server-bin)",
        bin.display()
    );
    let port = free_port()?;
    let store = dir.join("nats-always");
    std::fs::create_dir_all(&store)
        .with_context(|| format!("cannot create {}", store.display()))?;
    let config = dir.join("nats-always.conf");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\njetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\n",
            store.display().to_string()
        ),
    )
    .with_context(|| format!("cannot write {}", config.display()))?;
    let mut cmd = Command::new(bin);
    cmd.arg("-c").arg(&config);
    let mut child = ChildServer::spawn(
        &format!("{} -c {}", bin.display(), config.display()),
        cmd,
        dir.join("nats-always.log"),
    )?;
    child.wait_ready(|| accepts(port)).await?;
    Ok((child, format!("nats://127.0.0.1:{port}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eventfold_binary_is_the_given_one_or_says_how_to_build_it() {
        let exe = std::env::current_exe().expect("the test knows its executable");
        assert_eq!(eventfold_bin(Some(&exe)).expect("an existing file"), exe);

        let missing = Path::new("/nonexistent/eventfold");
        let e = format!("{:#}", eventfold_bin(Some(missing)).unwrap_err());
        assert!(e.contains("--eventfold-bin /nonexistent/eventfold"), "{e}");
        assert!(e.contains("cargo build --release -p eventfold-cli"), "{e}");

        // A test executable lives in `target/<profile>/deps`, where cargo never puts binaries.
        let e = format!("{:#}", eventfold_bin(None).unwrap_err());
        assert!(e.contains("cargo build --release -p eventfold-cli"), "{e}");
        assert!(e.contains("is missing"), "{e}");
    }
}

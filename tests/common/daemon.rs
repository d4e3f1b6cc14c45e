//! The real `proplet` binary as a daemon process.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Broker, env};

/// The `proplet` binary with a test environment; killed on drop if still running.
pub struct Daemon(Child);

impl Daemon {
    pub fn start(broker: &Broker, extra: &[(&str, &str)]) -> Daemon {
        Daemon::spawn(broker, extra, Stdio::inherit(), Stdio::null())
    }

    /// Like [`Daemon::start`], with stdout and stderr written to `log`.
    pub fn start_logged(broker: &Broker, extra: &[(&str, &str)], log: &Path) -> Daemon {
        let file = std::fs::File::create(log).expect("log file");
        let out = file.try_clone().expect("clone log file");
        Daemon::spawn(broker, extra, file.into(), out.into())
    }

    /// Like [`Daemon::start`], under a process limit of `nofile` open files (set by
    /// util-linux `prlimit`, as an operator's `LimitNOFILE=` would).
    pub fn start_with_nofile(broker: &Broker, extra: &[(&str, &str)], nofile: u64) -> Daemon {
        Daemon::start_with_prlimit(broker, extra, &format!("--nofile={nofile}:{nofile}"))
    }

    /// Like [`Daemon::start`], under the util-linux `prlimit` option `limit` (such as
    /// `--as=BYTES`, as an operator's `LimitAS=` would set).
    pub fn start_with_prlimit(broker: &Broker, extra: &[(&str, &str)], limit: &str) -> Daemon {
        let mut cmd = Command::new("prlimit");
        cmd.arg(limit).arg("--").arg(env!("CARGO_BIN_EXE_proplet"));
        Daemon::spawn_command(cmd, broker, extra, Stdio::inherit(), Stdio::null())
    }

    fn spawn(broker: &Broker, extra: &[(&str, &str)], stderr: Stdio, stdout: Stdio) -> Daemon {
        let cmd = Command::new(env!("CARGO_BIN_EXE_proplet"));
        Daemon::spawn_command(cmd, broker, extra, stderr, stdout)
    }

    fn spawn_command(
        mut cmd: Command,
        broker: &Broker,
        extra: &[(&str, &str)],
        stderr: Stdio,
        stdout: Stdio,
    ) -> Daemon {
        let child = cmd
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env(broker, extra))
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn proplet");
        Daemon(child)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Resident memory now, in bytes (from /proc).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// Waits (up to 30 s) until the daemon's log satisfies `done`, re-reading it as the daemon
    /// writes; returns it. The daemon must stay up all along.
    pub async fn wait_for_log(
        &mut self,
        log: &std::path::Path,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if done(&text) {
                return text;
            }
            assert!(self.running(), "the proplet exited: {text}");
            assert!(
                std::time::Instant::now() < deadline,
                "the log never showed it within 30 s: {text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the process is still running (it has not exited, by panic or otherwise).
    pub fn running(&mut self) -> bool {
        self.0.try_wait().expect("try_wait").is_none()
    }

    /// Waits for the process to exit; returns its exit code.
    pub async fn wait(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "proplet did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

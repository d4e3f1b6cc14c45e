//! The proplet under measurement: the real binary in a process of its own, read from the
//! outside through /proc, as an operator would.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{Broker, env};

/// A running `proplet`; killed and reaped on drop.
pub struct Proplet(Child);

impl Proplet {
    /// Starts the daemon on `broker` with `extra` settings, logging at the default level
    /// (`info`) into /dev/null.
    pub fn spawn(broker: &Broker, extra: &[(&str, &str)]) -> Proplet {
        let mut settings = vec![("PROPLET_LOG_LEVEL", "info")];
        settings.extend_from_slice(extra);
        let child = Command::new(env!("CARGO_BIN_EXE_proplet"))
            .env_clear()
            .envs(env(broker, &settings))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn proplet");
        Proplet(child)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// User plus system CPU time so far (all threads, in clock ticks of 10 ms).
    pub fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0.id()))
            .expect("/proc/<pid>/stat");
        // Fields after the command name (which may hold spaces) in parentheses.
        let after = &stat[stat.rfind(')').expect("stat format") + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        Duration::from_millis(ticks * 1000 / clock_ticks())
    }

    /// `VmRSS` (resident now) in bytes.
    pub fn rss(&self) -> u64 {
        self.status("VmRSS:")
    }

    /// `VmHWM` (the most ever resident) in bytes.
    pub fn peak_rss(&self) -> u64 {
        self.status("VmHWM:")
    }

    fn status(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))
            .expect("/proc/<pid>/status");
        let line = status.lines().find(|l| l.starts_with(field)).expect(field);
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .expect("a size in kB");
        kib * 1024
    }
}

impl Drop for Proplet {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// `getconf CLK_TCK` (100 on Linux unless the kernel was built otherwise), asked once.
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

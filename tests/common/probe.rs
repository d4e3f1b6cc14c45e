//! Watching the daemon's own `/metrics`, so that a test waits for an event ("two tasks
//! running", "one task ended in timeout") instead of sleeping and hoping.

use std::time::{Duration, Instant};

/// The metrics endpoint of a daemon started with [`Probe::env`].
pub struct Probe {
    addr: String,
}

impl Probe {
    /// A probe on a free loopback port.
    pub fn new() -> Probe {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Probe {
            addr: format!("127.0.0.1:{port}"),
        }
    }

    /// The setting that serves the daemon's metrics where this probe looks.
    pub fn env(&self) -> (&'static str, &str) {
        ("PROPLET_METRICS_ADDR", self.addr.as_str())
    }

    /// GETs `path`: its status and body (status 0 while nothing listens yet).
    pub async fn get(&self, path: &str) -> (u16, String) {
        let url = format!("http://{}{path}", self.addr);
        // reqwest takes the process's default TLS provider, as the daemon's clients do.
        proplet::crypto::install_default();
        match reqwest::get(url).await {
            Ok(resp) => (
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            ),
            Err(_) => (0, String::new()),
        }
    }

    /// Waits (at most 60 s) until the metrics contain `line`.
    pub async fn wait_for(&self, line: &str) {
        let what = format!("a metrics line {line:?}");
        self.wait_until("/metrics", &what, |status, text| {
            status == 200 && text.lines().any(|l| l == line)
        })
        .await;
    }

    /// Waits (at most 60 s) until `/readyz` answers `status`.
    pub async fn wait_ready_status(&self, status: u16) {
        let what = format!("/readyz answering {status}");
        self.wait_until("/readyz", &what, |got, _| got == status)
            .await;
    }

    async fn wait_until(&self, path: &str, what: &str, done: impl Fn(u16, &str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, text) = self.get(path).await;
            if done(status, &text) {
                return;
            }
            assert!(Instant::now() < deadline, "never saw {what}; last:\n{text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

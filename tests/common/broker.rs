//! A real mosquitto on a free loopback port, killed and reaped on drop.

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running mosquitto.
pub struct Broker {
    pub port: u16,
    /// The TLS listener, when started with [`Broker::start_tls`].
    pub tls_port: Option<u16>,
    tls: Option<TlsListener>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// A TLS listener's files and whether it demands client certificates.
pub struct TlsListener {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub require_client_cert: bool,
}

fn mosquitto() -> PathBuf {
    for candidate in [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ] {
        if std::path::Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!(
        "mosquitto is not installed: run `bash scripts/setup.sh` (or `apt-get install mosquitto`); the suite needs a real broker"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Broker {
    /// Starts mosquitto on a free port and waits until it accepts connections.
    pub fn start() -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut broker = Broker {
            port: free_port(),
            tls_port: None,
            tls: None,
            dir,
            child: None,
        };
        broker.spawn();
        broker
    }

    /// Starts mosquitto with a plain listener and a TLS listener.
    pub fn start_tls(tls: TlsListener) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut broker = Broker {
            port: free_port(),
            tls_port: Some(free_port()),
            tls: Some(tls),
            dir,
            child: None,
        };
        broker.spawn();
        broker
    }

    fn config(&self) -> String {
        // Persistence is written only on exit and on SIGUSR1 ([`Broker::save`]): a test's
        // manager saves its session once subscribed, so that after a restart the broker
        // queues what the proplet publishes before the manager is back.
        let mut text = format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 0\nmax_inflight_messages 20\nset_tcp_nodelay true\nmax_queued_messages 0\n",
            self.port,
            self.dir.path().display()
        );
        if let (Some(port), Some(tls)) = (self.tls_port, &self.tls) {
            text += &format!(
                "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
                tls.ca.display(),
                tls.cert.display(),
                tls.key.display(),
                tls.require_client_cert
            );
        }
        text
    }

    fn spawn(&mut self) {
        // Started as root, mosquitto drops to its own user, which must be able to write its
        // persistence file here.
        let open = std::os::unix::fs::PermissionsExt::from_mode(0o777);
        std::fs::set_permissions(self.dir.path(), open).expect("chmod the broker's directory");
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(&conf, self.config()).expect("write mosquitto.conf");
        let log = std::fs::File::create(self.dir.path().join("mosquitto.log")).expect("log file");
        let child = Command::new(mosquitto())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in std::iter::once(self.port).chain(self.tls_port) {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "mosquitto did not start on port {port}: {}",
                    std::fs::read_to_string(self.dir.path().join("mosquitto.log"))
                        .unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Asks the broker to write its sessions to disk (SIGUSR1), so that they survive a
    /// restart, even one after a kill.
    pub fn save(&self) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args(["-USR1", &child.id().to_string()])
                .status()
                .expect("kill");
            assert!(status.success(), "kill -USR1 mosquitto failed");
        }
        let db = self.dir.path().join("mosquitto.db");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !db.exists() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not save its sessions: {}",
                std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `tcp://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// Kills the broker (as a crash would) without restarting it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Stops the broker as an operator would (SIGTERM: mosquitto saves its sessions and
    /// queued messages on the way out), and starts it again on the same port.
    pub fn restart_gracefully(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("kill");
            assert!(status.success(), "kill -TERM mosquitto failed");
            child.wait().ok();
        }
        self.spawn();
    }

    /// A state directory of its own for one test proplet, in the broker's directory, so
    /// removed with it (the proplet creates it; a test that restarts a proplet passes the
    /// same one again).
    pub fn state_dir(&self) -> PathBuf {
        let name = format!("proplet-state-{}", uuid::Uuid::new_v4());
        self.dir.path().join(name)
    }

    /// A private temp directory (`TMPDIR`) for the proplets of this broker's test, in the
    /// broker's directory, so removed with it.
    pub fn tmp_dir(&self) -> PathBuf {
        let tmp = self.dir.path().join("tmp");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&tmp)
            .expect("create the proplets' TMPDIR");
        tmp
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

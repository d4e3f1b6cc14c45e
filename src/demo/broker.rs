//! An embedded MQTT broker (rumqttd) on a free loopback port.

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// Starts rumqttd on `127.0.0.1:<free port>` and returns the port once it accepts
/// connections. The broker runs on its own threads until the process exits (rumqttd has
/// no shutdown call).
pub fn start() -> anyhow::Result<u16> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let text = format!(
        r#"id = 0
[router]
max_connections = 64
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "demo"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 10485760
max_inflight_count = 100
dynamic_filters = true
"#
    );
    let config: rumqttd::Config = toml::from_str(&text).context("embedded broker config")?;
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("demo-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                eprintln!("embedded broker stopped: {e}");
            }
        })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the embedded broker did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    nodelay_on_listener(port)?;
    Ok(port)
}

/// Turns Nagle's algorithm off on the embedded broker's listening socket; on Linux the
/// connections it accepts inherit that. rumqttd 0.20 has no setting for it and leaves it
/// on, so each small MQTT packet it sends waits for the client's delayed acknowledgement
/// (about 40 ms a hop). The socket is found among this process's descriptors as the one
/// listening on `port`.
fn nodelay_on_listener(port: u16) -> anyhow::Result<()> {
    use std::os::fd::BorrowedFd;
    for entry in std::fs::read_dir("/proc/self/fd").context("list open descriptors")? {
        let Some(raw) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // SAFETY: `raw` was open in this process a moment ago and is only borrowed for
        // the calls below. Were it closed meanwhile, they fail with EBADF; were its number
        // reused, the checks below leave anything but a listener on `port` untouched.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        if is_listener_on(fd, port) {
            rustix::net::sockopt::set_tcp_nodelay(fd, true)
                .context("TCP_NODELAY on the embedded broker's listener")?;
            return Ok(());
        }
    }
    anyhow::bail!("the embedded broker's listening socket was not found")
}

fn is_listener_on(fd: std::os::fd::BorrowedFd<'_>, port: u16) -> bool {
    let listening = rustix::net::sockopt::socket_acceptconn(fd).unwrap_or(false);
    let addr = rustix::net::getsockname(fd)
        .ok()
        .and_then(|a| rustix::net::SocketAddrV4::try_from(a).ok());
    listening && addr.is_some_and(|a| a.port() == port)
}

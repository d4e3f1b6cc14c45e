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
    Ok(port)
}

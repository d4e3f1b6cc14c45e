//! Parsers that turn raw setting text into typed values, with operator-friendly errors.

use std::time::Duration;

use url::Url;

/// Where the broker is and whether to speak TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS (`ssl://`, `mqtts://`, `tls://`).
    pub tls: bool,
}

impl std::fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "tcp" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Parses `tcp://`, `mqtt://`, `ssl://`, `mqtts://`, `tls://` URLs and bare `host:port`.
pub fn broker_address(text: &str) -> Result<BrokerAddress, String> {
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("tcp://{text}")
    };
    let url = Url::parse(&with_scheme).map_err(|e| e.to_string())?;
    let tls = match url.scheme() {
        "tcp" | "mqtt" => false,
        "ssl" | "mqtts" | "tls" => true,
        other => {
            return Err(format!(
                "unsupported scheme {other:?} (use tcp, mqtt, ssl or mqtts)"
            ));
        }
    };
    if !url.path().is_empty() && url.path() != "/" {
        return Err("a broker address has no path".into());
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("missing host")?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
    Ok(BrokerAddress { host, port, tls })
}

/// A duration: a bare number is seconds (`10`), otherwise humantime (`10s`, `500ms`, `2m`).
pub fn duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{e} (expected seconds like 10 or a duration like 10s)"))
}

/// A CPU wake-up latency limit: a duration (a bare number is seconds; `0` asks for no
/// wake-up delay at all) of at most what Linux PM QoS takes, `i32::MAX` microseconds.
pub fn cpu_latency(text: &str) -> Result<Duration, String> {
    let limit = duration(text)?;
    match crate::power::pm_qos_micros(limit) {
        Some(_) => Ok(limit),
        None => Err(format!("{text} is longer than {} µs", i32::MAX)),
    }
}

/// `true/false`, `1/0`, `yes/no`, `on/off`, any case.
pub fn boolean(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// A byte size: `1048576`, `512KiB`, `10MiB`, `1GB`.
pub fn bytes(text: &str) -> Result<u64, String> {
    text.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{e} (expected bytes like 1048576 or 10MiB)"))
}

/// An integer within `min..=max`.
pub fn bounded(text: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = text
        .parse()
        .map_err(|_| "expected a whole number".to_owned())?;
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(format!("must be between {min} and {max}"))
    }
}

/// MQTT QoS level.
pub fn qos(text: &str) -> Result<u8, String> {
    bounded(text, 0, 2)
        .map(|q| q as u8)
        .map_err(|_| "must be 0, 1 or 2".into())
}

/// A comma-separated list; blanks dropped.
pub fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addresses() {
        let tcp = |host: &str, port| BrokerAddress {
            host: host.into(),
            port,
            tls: false,
        };
        assert_eq!(
            broker_address("tcp://localhost:1883"),
            Ok(tcp("localhost", 1883))
        );
        assert_eq!(broker_address("mqtt://broker"), Ok(tcp("broker", 1883)));
        assert_eq!(broker_address("localhost:1884"), Ok(tcp("localhost", 1884)));
        assert_eq!(broker_address("127.0.0.1:9"), Ok(tcp("127.0.0.1", 9)));
        assert_eq!(broker_address("[::1]:1883"), Ok(tcp("::1", 1883)));
        let tls = broker_address("ssl://b.example").unwrap();
        assert!(tls.tls && tls.port == 8883);
        assert!(broker_address("mqtts://b:8884").unwrap().tls);
        assert!(broker_address("ws://b:80").is_err());
        assert!(broker_address("tcp://").is_err());
        assert!(broker_address("tcp://b:99999").is_err());
        assert!(broker_address("tcp://b:1883/path").is_err());
        assert_eq!(
            broker_address("[::1]:1883").unwrap().to_string(),
            "tcp://[::1]:1883"
        );
    }

    #[test]
    fn durations_accept_seconds_and_units() {
        assert_eq!(duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("1m"), Ok(Duration::from_secs(60)));
        assert!(duration("ten").is_err());
        assert!(duration("-1").is_err());
    }

    #[test]
    fn booleans_sizes_and_numbers() {
        assert_eq!(boolean("YES"), Ok(true));
        assert_eq!(boolean("off"), Ok(false));
        assert!(boolean("maybe").is_err());
        assert_eq!(bytes("1048576"), Ok(1_048_576));
        assert_eq!(bytes("10MiB"), Ok(10 * 1024 * 1024));
        assert!(bytes("lots").is_err());
        assert_eq!(qos("1"), Ok(1));
        assert!(qos("3").is_err());
        assert!(bounded("0", 1, 5).is_err());
        assert_eq!(list(" a, ,b "), vec!["a", "b"]);
    }
}

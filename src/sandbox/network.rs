//! Network capability: outbound connections to the operator's allow-list only
//! (`PROPLET_NET_ALLOW`); unset means no network at all. Name lookup stays denied, and a
//! guest may not listen.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use wasmtime_wasi::sockets::SocketAddrUse;

/// One `host:port` pattern: an IP (or `*`) and a port (or `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetRule {
    /// `None` matches any address.
    pub ip: Option<IpAddr>,
    /// `None` matches any port.
    pub port: Option<u16>,
}

impl NetRule {
    fn matches(&self, addr: &SocketAddr) -> bool {
        self.ip.is_none_or(|ip| ip == addr.ip()) && self.port.is_none_or(|p| p == addr.port())
    }
}

/// Parses `10.0.0.5:8080,*:443,[::1]:*,localhost:1883,broker.lan:1883`. `localhost` means
/// both loopbacks; other host names are resolved once, here, to the addresses they have at
/// startup (rules are checked against addresses, and guests cannot look names up).
pub fn parse_net_allow(text: &str) -> Result<Vec<NetRule>, String> {
    let mut rules = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (host, port) = item
            .rsplit_once(':')
            .ok_or_else(|| format!("{item:?}: expected host:port"))?;
        let port = match port {
            "*" => None,
            p => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("{item:?}: bad port {p:?}"))?,
            ),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ips: Vec<Option<IpAddr>> = match host {
            "*" => vec![None],
            "localhost" => vec![
                Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ],
            h => match h.parse::<IpAddr>() {
                Ok(ip) => vec![Some(ip)],
                Err(_) => resolve(h).map_err(|e| format!("{item:?}: cannot resolve {h:?}: {e}"))?,
            },
        };
        rules.extend(ips.into_iter().map(|ip| NetRule { ip, port }));
    }
    Ok(rules)
}

fn resolve(host: &str) -> std::io::Result<Vec<Option<IpAddr>>> {
    use std::net::ToSocketAddrs;
    let mut ips: Vec<Option<IpAddr>> = (host, 0).to_socket_addrs()?.map(|a| Some(a.ip())).collect();
    ips.dedup();
    Ok(ips)
}

/// Whether `rules` allow this use of `addr`: outbound TCP connects and UDP traffic to a
/// matching address, and the implicit wildcard binds that go with them; never listening.
pub fn permits(rules: &[NetRule], addr: &SocketAddr, usage: SocketAddrUse) -> bool {
    match usage {
        SocketAddrUse::TcpConnect | SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => {
            rules.iter().any(|r| r.matches(addr))
        }
        SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => {
            !rules.is_empty() && addr.ip().is_unspecified() && addr.port() == 0
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_patterns() {
        let rules = parse_net_allow("10.0.0.5:8080, *:443,[::1]:*,localhost:1883").unwrap();
        assert_eq!(rules.len(), 5);
        assert!(
            parse_net_allow("no-such-host.invalid:80").is_err(),
            "names must resolve"
        );
        assert!(parse_net_allow("10.0.0.1").is_err());
        assert!(parse_net_allow("10.0.0.1:http").is_err());
        assert_eq!(parse_net_allow("").unwrap(), vec![]);
    }

    #[test]
    fn only_matching_outbound_traffic_is_allowed() {
        let rules = parse_net_allow("127.0.0.1:8080,*:443").unwrap();
        assert!(permits(
            &rules,
            &addr("127.0.0.1:8080"),
            SocketAddrUse::TcpConnect
        ));
        assert!(permits(
            &rules,
            &addr("192.0.2.1:443"),
            SocketAddrUse::TcpConnect
        ));
        assert!(!permits(
            &rules,
            &addr("127.0.0.1:8081"),
            SocketAddrUse::TcpConnect
        ));
        assert!(permits(&rules, &addr("0.0.0.0:0"), SocketAddrUse::TcpBind));
        assert!(!permits(
            &rules,
            &addr("0.0.0.0:8080"),
            SocketAddrUse::TcpBind
        ));
        assert!(!permits(
            &rules,
            &addr("127.0.0.1:8080"),
            SocketAddrUse::TcpListen
        ));
        assert!(
            !permits(&[], &addr("0.0.0.0:0"), SocketAddrUse::TcpBind),
            "no rules, no network"
        );
    }
}

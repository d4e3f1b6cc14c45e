//! Outbound HTTP capability (`wasi:http/outgoing-handler`): the operator's allow-list of
//! origins (`PROPLET_HTTP_ALLOW`), what a task asks for (start field `http`), the grant
//! (the request, when the policy covers every origin of it), the address rules every
//! request is checked against after its name is resolved, and the per-task budget.
//!
//! Deny by default: no allow-list, no HTTP; a task that asks for nothing gets nothing. An
//! address outside the public internet (loopback, private, link-local — cloud metadata
//! services included —, shared, multicast, reserved) is refused unless the operator names
//! it: as the IP literal of an allowed origin, or inside a range of
//! `PROPLET_HTTP_ALLOW_PRIVATE`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ipnet::IpNet;
use tokio::sync::Semaphore;

use super::{CapabilityError, Meter};

/// The host part of an origin rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `*`: any host.
    Any,
    /// `*.example.com`: any name below `example.com` (not `example.com` itself).
    Below(String),
    /// One name, lower-case.
    Name(String),
    /// One address, named explicitly.
    Ip(IpAddr),
}

/// One allowed origin: `scheme://host[:port]`, where host may be `*` or `*.suffix` and
/// port may be `*` (no port: the scheme's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Which hosts.
    pub host: HostPattern,
    /// `None` matches any port.
    pub port: Option<u16>,
}

/// The schemes a guest may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    fn parse(text: &str) -> Option<Scheme> {
        match text.to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }

    /// The port a URL without one uses.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        let host = match &self.host {
            HostPattern::Any => "*".to_owned(),
            HostPattern::Below(s) => format!("*.{s}"),
            HostPattern::Name(n) => n.clone(),
            HostPattern::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            HostPattern::Ip(ip) => ip.to_string(),
        };
        match self.port {
            Some(p) => write!(f, "{scheme}://{host}:{p}"),
            None => write!(f, "{scheme}://{host}:*"),
        }
    }
}

impl Origin {
    /// Parses one origin rule.
    pub fn parse(text: &str) -> Result<Origin, String> {
        let bad = |why: &str| format!("{text:?}: {why}");
        let (scheme, rest) = text
            .trim()
            .split_once("://")
            .ok_or_else(|| bad("expected scheme://host[:port]"))?;
        let scheme =
            Scheme::parse(scheme).ok_or_else(|| bad("the scheme must be http or https"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad("an origin has no path, query or user"));
        }
        let (host, port) = split_host_port(rest).ok_or_else(|| bad("bad host or port"))?;
        let port = match port {
            None => Some(scheme.default_port()),
            Some("*") => None,
            Some(p) => Some(p.parse::<u16>().map_err(|_| bad("bad port"))?),
        };
        let host = parse_host_pattern(host).ok_or_else(|| bad("bad host"))?;
        Ok(Origin { scheme, host, port })
    }

    /// Whether this rule allows every request `other` allows.
    pub fn covers(&self, other: &Origin) -> bool {
        let port = self.port.is_none() || self.port == other.port;
        let host = match (&self.host, &other.host) {
            (HostPattern::Any, _) => true,
            (HostPattern::Below(s), HostPattern::Below(o) | HostPattern::Name(o)) => {
                o.ends_with(&format!(".{s}"))
                    || matches!(other.host, HostPattern::Below(_)) && o == s
            }
            (a, b) => a == b,
        };
        self.scheme == other.scheme && port && host
    }

    /// Whether a request to `target` is allowed by this rule.
    pub fn allows(&self, target: &Target) -> bool {
        let host = match (&self.host, &target.host) {
            (HostPattern::Any, _) => true,
            (HostPattern::Below(s), TargetHost::Name(n)) => n.ends_with(&format!(".{s}")),
            (HostPattern::Name(r), TargetHost::Name(n)) => r == n,
            (HostPattern::Ip(r), TargetHost::Ip(ip)) => r == ip,
            _ => false,
        };
        self.scheme == target.scheme && self.port.is_none_or(|p| p == target.port) && host
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(text: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            a => Some((host, Some(a.strip_prefix(':')?))),
        };
    }
    match text.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port))),
        None => Some((text, None)),
    }
}

fn parse_host_pattern(host: &str) -> Option<HostPattern> {
    let host = host.to_ascii_lowercase();
    if host == "*" {
        return Some(HostPattern::Any);
    }
    if let Some(suffix) = host.strip_prefix("*.") {
        return valid_name(suffix).then(|| HostPattern::Below(suffix.to_owned()));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(HostPattern::Ip(ip));
    }
    valid_name(&host).then_some(HostPattern::Name(host))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Parses a comma-separated list of origin rules.
pub fn parse_origins(text: &str) -> Result<Vec<Origin>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Origin::parse)
        .collect()
}

/// Parses a comma-separated list of address ranges (`10.0.0.0/8`, `fd00::/8`, or one
/// address).
pub fn parse_ranges(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{item:?}: expected an address or a CIDR range"))
        })
        .collect()
}

/// Where one request goes, read from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its scheme.
    pub scheme: Scheme,
    /// Its host.
    pub host: TargetHost,
    /// Its port (the scheme's default when the URL has none).
    pub port: u16,
}

/// The host of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetHost {
    /// A name, lower-case, to be resolved.
    Name(String),
    /// An IP literal.
    Ip(IpAddr),
}

impl Target {
    /// Reads a request's scheme, host and port; `None` for anything else than an
    /// absolute http(s) URL with a valid host.
    pub fn of(scheme: &str, host: &str, port: Option<u16>) -> Option<Target> {
        let scheme = Scheme::parse(scheme)?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let host = match bare.parse::<IpAddr>() {
            Ok(ip) => TargetHost::Ip(ip),
            Err(_) => {
                let name = bare.trim_end_matches('.').to_ascii_lowercase();
                valid_name(&name).then_some(TargetHost::Name(name))?
            }
        };
        Some(Target {
            scheme,
            host,
            port: port.unwrap_or(scheme.default_port()),
        })
    }
}

/// Whether `ip` is outside the public internet: loopback, private, link-local (cloud
/// metadata), shared (CGNAT), unspecified, broadcast, multicast, documentation,
/// benchmarking or reserved — looking through IPv4-mapped, NAT64 and 6to4 addresses.
pub fn is_special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => special_v4(v4),
            None => special_v6(v6),
        },
    }
}

fn special_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19))
}

fn special_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
        || first == 0x2001 && ip.segments()[1] == 0x0db8
        || first == 0x0100
}

/// The IPv4 address inside an IPv4-mapped, IPv4-compatible, NAT64 (`64:ff9b::/96`) or
/// 6to4 (`2002::/16`) address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let low = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 => Some(low(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(low(hi, lo)),
        [0x2002, hi, lo, ..] => Some(low(hi, lo)),
        _ => None,
    }
}

/// The per-task HTTP budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Requests a task may make in all.
    pub requests: u64,
    /// Requests a task may have in flight at once; more wait for a slot.
    pub concurrency: usize,
    /// Bytes of request and response bodies a task may move in all.
    pub bytes: u64,
    /// The longest one request may take, from sending to the end of its response body.
    pub timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            requests: 100,
            concurrency: 8,
            bytes: 16 << 20,
            timeout: Duration::from_secs(30),
        }
    }
}

/// The operator's HTTP policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpPolicy {
    /// Origins tasks may be granted (`PROPLET_HTTP_ALLOW`); empty: no HTTP.
    pub allow: Vec<Origin>,
    /// Non-public ranges that allowed names may resolve to (`PROPLET_HTTP_ALLOW_PRIVATE`).
    pub private: Vec<IpNet>,
    /// Per-task budgets.
    pub limits: HttpLimits,
}

impl HttpPolicy {
    /// The grant for a task asking for `requested` origins: all of them, when each is
    /// covered by an operator rule; `None` when it asks for none.
    pub fn grant(&self, requested: &[String]) -> Result<Option<HttpGrant>, CapabilityError> {
        if requested.is_empty() {
            return Ok(None);
        }
        let mut origins = Vec::with_capacity(requested.len());
        for text in requested {
            let origin = Origin::parse(text).map_err(CapabilityError::Invalid)?;
            if !self.allow.iter().any(|rule| rule.covers(&origin)) {
                return Err(CapabilityError::Denied(format!(
                    "HTTP to {origin} is not allowed on this proplet (PROPLET_HTTP_ALLOW)"
                )));
            }
            origins.push(origin);
        }
        Ok(Some(HttpGrant {
            origins: origins.into(),
            private: self.private.clone().into(),
            limits: self.limits,
        }))
    }
}

/// What one task may reach over HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGrant {
    /// The origins granted.
    pub origins: Arc<[Origin]>,
    /// Non-public ranges its names may resolve to.
    pub private: Arc<[IpNet]>,
    /// Its budgets.
    pub limits: HttpLimits,
}

/// Why a request was refused before anything was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The URL is not an absolute http(s) URL.
    #[error("not an http(s) URL with a valid host")]
    Unusable,
    /// No granted origin allows it.
    #[error("{0} is not a granted origin")]
    Origin(String),
    /// It resolves to an address outside the public internet the operator did not name.
    #[error("{0} is not a public address and was not named by the operator")]
    Address(IpAddr),
}

impl HttpGrant {
    /// Checks a request's origin against the grant.
    pub fn check(&self, target: &Target) -> Result<(), Refusal> {
        if self.origins.iter().any(|o| o.allows(target)) {
            return Ok(());
        }
        let host = match &target.host {
            TargetHost::Name(n) => n.clone(),
            TargetHost::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            TargetHost::Ip(ip) => ip.to_string(),
        };
        let scheme = match target.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        Err(Refusal::Origin(format!(
            "{scheme}://{host}:{}",
            target.port
        )))
    }

    /// Checks one address `target` resolved (or is) to: public, or named by the operator.
    pub fn check_address(&self, target: &Target, ip: IpAddr) -> Result<(), Refusal> {
        let literal = matches!(target.host, TargetHost::Ip(lit) if lit == ip
            && self.origins.iter().any(|o| o.host == HostPattern::Ip(ip)));
        if literal {
            return Ok(());
        }
        check_resolved(&self.private, ip)
    }

    /// Checks an address a name resolved to (no literal can name it).
    pub fn check_resolved(&self, ip: IpAddr) -> Result<(), Refusal> {
        check_resolved(&self.private, ip)
    }
}

/// The rule for an address a name resolved to: public, or inside a range of `private` (the
/// operator's `PROPLET_HTTP_ALLOW_PRIVATE`).
pub fn check_resolved(private: &[IpNet], ip: IpAddr) -> Result<(), Refusal> {
    if !is_special(ip) || private.iter().any(|net| net.contains(&ip)) {
        Ok(())
    } else {
        Err(Refusal::Address(ip))
    }
}

/// Why a task's HTTP budget ended it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Exhausted {
    /// It asked for more requests than allowed.
    #[error("more than {0} HTTP requests")]
    Requests(u64),
    /// Its bodies moved more bytes than allowed.
    #[error("more than {0} bytes of HTTP bodies")]
    Bytes(u64),
}

/// One task's HTTP usage against its budget, shared by its in-flight requests.
#[derive(Debug)]
pub struct HttpBudget {
    limits: HttpLimits,
    meter: Arc<Meter>,
    requests: AtomicU64,
    bytes: AtomicU64,
    exhausted: OnceLock<Exhausted>,
    slots: Arc<Semaphore>,
}

impl HttpBudget {
    /// A fresh budget recording into `meter`.
    pub fn new(limits: HttpLimits, meter: Arc<Meter>) -> Self {
        meter.http(0, 0);
        HttpBudget {
            limits,
            meter,
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            exhausted: OnceLock::new(),
            slots: Arc::new(Semaphore::new(limits.concurrency.max(1))),
        }
    }

    /// The budgets.
    pub fn limits(&self) -> HttpLimits {
        self.limits
    }

    /// Counts one more request; past the budget, the task is exhausted.
    pub fn request(&self) -> Result<(), Exhausted> {
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if n > self.limits.requests {
            return Err(self.exhaust(Exhausted::Requests(self.limits.requests)));
        }
        self.meter.http(1, 0);
        Ok(())
    }

    /// Counts `n` bytes of a body; past the budget, the task is exhausted.
    pub fn transfer(&self, n: usize) -> Result<(), Exhausted> {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        let total = self.bytes.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        if total > self.limits.bytes {
            return Err(self.exhaust(Exhausted::Bytes(self.limits.bytes)));
        }
        self.meter.http(0, n);
        Ok(())
    }

    /// The slots that bound requests in flight.
    pub fn slots(&self) -> Arc<Semaphore> {
        self.slots.clone()
    }

    /// What ended the task, once something did.
    pub fn exhausted(&self) -> Option<&Exhausted> {
        self.exhausted.get()
    }

    fn exhaust(&self, why: Exhausted) -> Exhausted {
        // The first reason wins; later ones are the same budget seen again.
        self.exhausted.set(why.clone()).ok();
        why
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(text: &str) -> Origin {
        Origin::parse(text).unwrap()
    }

    fn target(url: &str) -> Target {
        let u = url::Url::parse(url).unwrap();
        Target::of(u.scheme(), u.host_str().unwrap(), u.port()).unwrap()
    }

    fn grant(allow: &str, private: &str) -> HttpGrant {
        HttpGrant {
            origins: parse_origins(allow).unwrap().into(),
            private: parse_ranges(private).unwrap().into(),
            limits: HttpLimits::default(),
        }
    }

    #[test]
    fn origins_parse_with_default_ports_and_patterns() {
        let o = origin("HTTPS://API.Example.com");
        assert_eq!(o.port, Some(443));
        assert_eq!(o.host, HostPattern::Name("api.example.com".into()));
        assert_eq!(origin("http://*.lan:*").port, None);
        assert_eq!(
            origin("http://[::1]:8080").host,
            HostPattern::Ip("::1".parse().unwrap())
        );
        assert_eq!(
            origin("http://10.0.0.1:81/").to_string(),
            "http://10.0.0.1:81"
        );
        for bad in [
            "ftp://x",
            "example.com",
            "http://x/path",
            "http://u@x",
            "http://x:99999",
            "http://ex ample",
            "http://*x.com",
            "http://",
            "http://[::1",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_rule_covers_only_narrower_rules() {
        let wide = origin("https://*.example.com:*");
        assert!(wide.covers(&origin("https://api.example.com")));
        assert!(wide.covers(&origin("https://*.api.example.com:8443")));
        assert!(wide.covers(&origin("https://*.example.com:1")));
        assert!(!wide.covers(&origin("https://example.com")));
        assert!(!wide.covers(&origin("http://api.example.com")));
        assert!(!wide.covers(&origin("https://evil-example.com")));
        assert!(!origin("https://api.example.com").covers(&origin("https://api.example.com:*")));
        assert!(origin("http://*:*").covers(&origin("http://10.0.0.1:80")));
        assert!(!origin("http://*:80").covers(&origin("http://10.0.0.1:*")));
    }

    #[test]
    fn requests_match_scheme_host_and_port() {
        let g = grant("https://*.example.com,http://127.0.0.1:8080", "");
        assert!(g.check(&target("https://api.example.com/x")).is_ok());
        assert!(g.check(&target("https://API.EXAMPLE.COM./x")).is_ok());
        assert!(g.check(&target("https://example.com/")).is_err());
        assert!(g.check(&target("https://api.example.com:8443/")).is_err());
        assert!(g.check(&target("http://api.example.com/")).is_err());
        assert!(
            g.check(&target("https://api.example.com.evil.io/"))
                .is_err()
        );
        assert!(g.check(&target("http://127.0.0.1:8080/")).is_ok());
        assert!(g.check(&target("http://127.0.0.1:8081/")).is_err());
        let err = g.check(&target("http://[::1]:8080/")).unwrap_err();
        assert_eq!(err, Refusal::Origin("http://[::1]:8080".into()));
    }

    #[test]
    fn special_addresses_need_the_operator_to_name_them() {
        let special = [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "198.18.0.1",
            "192.0.0.8",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "::127.0.0.1",
            "fec0::1",
            "2001:db8::1",
        ];
        for ip in special {
            assert!(is_special(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "172.32.0.1",
        ] {
            assert!(!is_special(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn a_literal_origin_names_its_address_but_a_wildcard_does_not() {
        let g = grant("http://127.0.0.1:8080,http://*:*", "10.0.0.0/8");
        let literal = target("http://127.0.0.1:8080/");
        assert!(g.check_address(&literal, literal_ip(&literal)).is_ok());
        let metadata = target("http://169.254.169.254/latest");
        assert!(g.check(&metadata).is_ok());
        assert_eq!(
            g.check_address(&metadata, literal_ip(&metadata)),
            Err(Refusal::Address("169.254.169.254".parse().unwrap()))
        );
        assert!(g.check_resolved("127.0.0.1".parse().unwrap()).is_err());
        assert!(g.check_resolved("10.9.9.9".parse().unwrap()).is_ok());
        assert!(g.check_resolved("93.184.216.34".parse().unwrap()).is_ok());
    }

    fn literal_ip(t: &Target) -> IpAddr {
        match t.host {
            TargetHost::Ip(ip) => ip,
            TargetHost::Name(_) => panic!("not a literal"),
        }
    }

    #[test]
    fn a_request_beyond_policy_is_denied_and_none_gets_nothing() {
        let policy = HttpPolicy {
            allow: parse_origins("https://*.example.com").unwrap(),
            ..HttpPolicy::default()
        };
        assert_eq!(policy.grant(&[]), Ok(None));
        let g = policy
            .grant(&["https://api.example.com".into()])
            .unwrap()
            .unwrap();
        assert_eq!(g.origins.len(), 1);
        assert!(matches!(
            policy.grant(&["https://api.example.com".into(), "https://other.org".into()]),
            Err(CapabilityError::Denied(_))
        ));
        assert!(matches!(
            policy.grant(&["nonsense".into()]),
            Err(CapabilityError::Invalid(_))
        ));
        assert!(matches!(
            HttpPolicy::default().grant(&["https://api.example.com".into()]),
            Err(CapabilityError::Denied(_))
        ));
    }

    #[test]
    fn the_budget_counts_and_ends_the_task_past_a_limit() {
        let meter = Arc::new(Meter::default());
        let limits = HttpLimits {
            requests: 2,
            bytes: 10,
            ..HttpLimits::default()
        };
        let budget = HttpBudget::new(limits, meter.clone());
        assert!(budget.request().is_ok());
        assert!(budget.transfer(10).is_ok());
        assert_eq!(budget.transfer(1), Err(Exhausted::Bytes(10)));
        assert!(budget.request().is_ok());
        assert_eq!(budget.request(), Err(Exhausted::Requests(2)));
        assert_eq!(budget.exhausted(), Some(&Exhausted::Bytes(10)));
        let r = meter.read();
        assert_eq!((r.http_requests, r.http_bytes), (Some(2), Some(10)));
    }

    #[test]
    fn address_ranges_parse() {
        assert_eq!(
            parse_ranges("10.0.0.0/8, 127.0.0.1,fd00::/8")
                .unwrap()
                .len(),
            3
        );
        assert!(parse_ranges("10.0.0.0/33").is_err());
        assert!(parse_ranges("lan").is_err());
    }
}

//! Admission: which binaries a proplet accepts, checked before anything is compiled.
//!
//! The operator says where binaries may come from (`PROPLET_ALLOWED_SOURCES`), whether they
//! must be signed (`PROPLET_REQUIRE_SIGNATURE`) and by whom (`PROPLET_TRUSTED_KEYS`). A task
//! may pin its binary with `"digest":"sha256:<hex>"`. A signature is an ed25519 signature
//! over the digest text `sha256:<hex>` of the binary, sent base64 in the start's
//! `signature` field. Everything is checked offline, on the device.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

use super::CapabilityError;

/// Where a binary comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// Base64 in the start message.
    Inline,
    /// Chunks from the registry proxy.
    Registry,
    /// An HTTP(S) download from this URL.
    Http(&'a url::Url),
}

impl Source<'_> {
    /// `inline`, `registry` or `http` (for logs, traces and metrics).
    pub fn name(&self) -> &'static str {
        match self {
            Source::Inline => "inline",
            Source::Registry => "registry",
            Source::Http(_) => "http",
        }
    }
}

/// One allowed source.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    Inline,
    Registry,
    /// Any `http://` or `https://` URL.
    AnyHttp,
    /// Any `https://` URL.
    AnyHttps,
    /// HTTP(S) from this host; `*.example.com` matches its subdomains.
    Host(String),
}

/// The operator's admission policy.
#[derive(Debug, Clone)]
pub struct Policy {
    sources: Vec<Allowed>,
    /// Whether unsigned binaries are refused.
    pub require_signature: bool,
    trusted: Vec<VerifyingKey>,
}

impl Default for Policy {
    /// Inline, registry and any HTTP(S) source; signatures checked when present.
    fn default() -> Self {
        Policy {
            sources: vec![Allowed::Inline, Allowed::Registry, Allowed::AnyHttp],
            require_signature: false,
            trusted: Vec::new(),
        }
    }
}

impl Policy {
    /// A policy from `PROPLET_ALLOWED_SOURCES` text, the signature switch and the keys.
    pub fn new(
        sources: &str,
        require_signature: bool,
        trusted: Vec<VerifyingKey>,
    ) -> Result<Self, String> {
        if require_signature && trusted.is_empty() {
            return Err("signatures are required but no trusted key is configured".into());
        }
        Ok(Policy {
            sources: parse_sources(sources)?,
            require_signature,
            trusted,
        })
    }

    /// Refuses a source the operator did not allow.
    pub fn check_source(&self, source: Source<'_>) -> Result<(), CapabilityError> {
        if self.sources.iter().any(|a| a.permits(source)) {
            return Ok(());
        }
        let what = match source {
            Source::Inline => "inline binaries are".to_owned(),
            Source::Registry => "registry binaries are".to_owned(),
            Source::Http(url) => format!("downloads from {url} are"),
        };
        Err(CapabilityError::Denied(format!(
            "{what} not allowed on this proplet (PROPLET_ALLOWED_SOURCES)"
        )))
    }

    /// Checks a binary's digest against the task's pin and its signature against the
    /// trusted keys. `digest` is the binary's `sha256:<hex>`.
    pub fn check_binary(
        &self,
        digest: &str,
        pin: Option<&str>,
        signature: Option<&str>,
    ) -> Result<(), CapabilityError> {
        if let Some(pin) = pin
            && !pin.eq_ignore_ascii_case(digest)
        {
            return Err(CapabilityError::Denied(format!(
                "the binary's digest {digest} does not match the pinned {pin}"
            )));
        }
        match signature {
            Some(sig) => self.verify(digest, sig),
            None if self.require_signature => Err(CapabilityError::Denied(
                "the binary is unsigned and this proplet requires signatures".into(),
            )),
            None => Ok(()),
        }
    }

    fn verify(&self, digest: &str, signature: &str) -> Result<(), CapabilityError> {
        let bad = |why: &str| CapabilityError::Denied(format!("bad signature: {why}"));
        let bytes = STANDARD
            .decode(signature.trim())
            .map_err(|_| bad("not base64"))?;
        let sig = Signature::from_slice(&bytes).map_err(|_| bad("not an ed25519 signature"))?;
        if self.trusted.is_empty() {
            return Err(bad("no trusted key is configured (PROPLET_TRUSTED_KEYS)"));
        }
        let trusted = self
            .trusted
            .iter()
            .any(|key| key.verify_strict(digest.as_bytes(), &sig).is_ok());
        if trusted {
            Ok(())
        } else {
            Err(bad("it does not verify with any trusted key"))
        }
    }
}

impl Allowed {
    fn permits(&self, source: Source<'_>) -> bool {
        match (self, source) {
            (Allowed::Inline, Source::Inline) | (Allowed::Registry, Source::Registry) => true,
            (Allowed::AnyHttp, Source::Http(_)) => true,
            (Allowed::AnyHttps, Source::Http(url)) => url.scheme() == "https",
            (Allowed::Host(pattern), Source::Http(url)) => url
                .host_str()
                .is_some_and(|host| host_matches(pattern, host)),
            _ => false,
        }
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(domain) => host.ends_with(&format!(".{domain}")),
        None => host == pattern,
    }
}

/// Parses `inline,registry,https,models.example.com,*.example.org`.
fn parse_sources(text: &str) -> Result<Vec<Allowed>, String> {
    let mut sources = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        sources.push(match item.to_ascii_lowercase().as_str() {
            "inline" => Allowed::Inline,
            "registry" => Allowed::Registry,
            "http" => Allowed::AnyHttp,
            "https" => Allowed::AnyHttps,
            host if is_host_pattern(host) => Allowed::Host(host.to_owned()),
            _ => {
                return Err(format!(
                    "{item:?}: expected inline, registry, http, https or a host name"
                ));
            }
        });
    }
    Ok(sources)
}

fn is_host_pattern(text: &str) -> bool {
    let name = text.strip_prefix("*.").unwrap_or(text);
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Parses trusted public keys: comma-separated base64 (32 raw bytes), each optionally
/// prefixed `ed25519:`, or paths of files holding one such key per line (`#` comments).
pub fn parse_trusted_keys(text: &str) -> Result<Vec<VerifyingKey>, String> {
    let mut keys = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if item.starts_with('/') || item.starts_with('.') {
            let content = std::fs::read_to_string(item)
                .map_err(|e| format!("cannot read key file {item}: {e}"))?;
            let lines = content.lines().map(str::trim);
            for line in lines.filter(|l| !l.is_empty() && !l.starts_with('#')) {
                keys.push(public_key(line).map_err(|e| format!("{item}: {e}"))?);
            }
        } else {
            keys.push(public_key(item)?);
        }
    }
    Ok(keys)
}

/// Decodes one public key: base64 of the 32 raw bytes, optionally prefixed `ed25519:`.
pub fn public_key(text: &str) -> Result<VerifyingKey, String> {
    let raw = decode_key(text)?;
    VerifyingKey::from_bytes(&raw).map_err(|_| format!("{text:?} is not an ed25519 public key"))
}

/// Decodes a secret key file's content (base64 of the 32-byte seed, optionally prefixed).
pub fn secret_key(text: &str) -> Result<SigningKey, String> {
    decode_key(text.trim()).map(|seed| SigningKey::from_bytes(&seed))
}

fn decode_key(text: &str) -> Result<[u8; 32], String> {
    let b64 = text.strip_prefix("ed25519:").unwrap_or(text);
    let bytes = STANDARD
        .decode(b64)
        .map_err(|_| "a key must be base64".to_owned())?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| "a key must be 32 bytes".to_owned())
}

/// The text form of a public key: `ed25519:<base64>`.
pub fn encode_public_key(key: &VerifyingKey) -> String {
    format!("ed25519:{}", STANDARD.encode(key.as_bytes()))
}

/// Signs a digest text (`sha256:<hex>`) and returns the base64 signature.
pub fn sign(key: &SigningKey, digest: &str) -> String {
    use ed25519_dalek::Signer as _;
    STANDARD.encode(key.sign(digest.as_bytes()).to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn sources_are_deny_unless_listed() {
        let p = Policy::new(
            "registry, https, *.example.org, models.local",
            false,
            vec![],
        )
        .expect("policy");
        let url = |u: &str| url::Url::parse(u).expect("url");
        assert!(p.check_source(Source::Inline).is_err());
        assert!(p.check_source(Source::Registry).is_ok());
        assert!(
            p.check_source(Source::Http(&url("https://anywhere.net/x.wasm")))
                .is_ok()
        );
        assert!(
            p.check_source(Source::Http(&url("http://a.example.org/x")))
                .is_ok()
        );
        assert!(
            p.check_source(Source::Http(&url("http://example.org/x")))
                .is_err()
        );
        assert!(
            p.check_source(Source::Http(&url("http://models.local:8080/x")))
                .is_ok()
        );
        assert!(
            p.check_source(Source::Http(&url("http://evil.net/x")))
                .is_err()
        );
        assert!(Policy::new("ftp://x", false, vec![]).is_err());
        assert!(
            Policy::new("", false, vec![]).is_ok_and(|p| p.check_source(Source::Inline).is_err())
        );
    }

    #[test]
    fn a_pinned_digest_must_match() {
        let p = Policy::default();
        assert!(p.check_binary(DIGEST, Some(DIGEST), None).is_ok());
        assert!(
            p.check_binary(
                DIGEST,
                Some(&DIGEST.to_uppercase().replace("SHA256", "sha256")),
                None
            )
            .is_ok()
        );
        let other = DIGEST.replace("00", "11");
        assert!(matches!(
            p.check_binary(DIGEST, Some(&other), None),
            Err(CapabilityError::Denied(_))
        ));
    }

    #[test]
    fn signatures_verify_only_with_a_trusted_key() {
        let trusted = key(1);
        let p = Policy::new("inline", true, vec![trusted.verifying_key()]).expect("policy");
        assert!(p.check_binary(DIGEST, None, None).is_err(), "unsigned");
        assert!(
            p.check_binary(DIGEST, None, Some(&sign(&trusted, DIGEST)))
                .is_ok()
        );
        assert!(
            p.check_binary(DIGEST, None, Some(&sign(&key(2), DIGEST)))
                .is_err()
        );
        let other = DIGEST.replace("00", "11");
        assert!(
            p.check_binary(DIGEST, None, Some(&sign(&trusted, &other)))
                .is_err()
        );
        assert!(p.check_binary(DIGEST, None, Some("%%%")).is_err());
        assert!(p.check_binary(DIGEST, None, Some("AAAA")).is_err());
        assert!(Policy::new("inline", true, vec![]).is_err());
    }

    #[test]
    fn keys_round_trip_through_their_text_form() {
        let k = key(7);
        let text = encode_public_key(&k.verifying_key());
        assert_eq!(public_key(&text), Ok(k.verifying_key()));
        let keys = parse_trusted_keys(&format!(" {text} ,{}", &text[8..])).expect("keys");
        assert_eq!(keys.len(), 2);
        assert!(parse_trusted_keys("bm90IGEga2V5").is_err());
        assert!(parse_trusted_keys("/nonexistent/keys").is_err());
        let seed = STANDARD.encode([7u8; 32]);
        assert_eq!(
            secret_key(&format!("{seed}\n")).map(|s| s.to_bytes()),
            Ok([7u8; 32])
        );
    }
}

//! The one rustls crypto provider (`ring`) behind every TLS connection the proplet makes.
//!
//! The MQTT session passes it explicitly ([`provider`]). The HTTP clients — downloads,
//! `wasi:http` requests and OTLP over HTTP — are built by reqwest and opentelemetry-otlp,
//! which take the process's default provider: [`install_default`] makes `ring` that default
//! before any of them is built. Only `ring` is compiled in, so the binary carries one
//! crypto library, not two.

use std::sync::{Arc, Once};

use rustls::crypto::CryptoProvider;

/// The provider for a rustls configuration built here.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes `ring` the process's default rustls provider, unless a program embedding this
/// library installed one first (then that one stays). Cheap and idempotent: called before
/// every HTTP client is built.
pub fn install_default() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        if CryptoProvider::get_default().is_none()
            && rustls::crypto::ring::default_provider()
                .install_default()
                .is_err()
        {
            // Lost a race with another thread installing one: that provider serves.
            tracing::debug!("a rustls crypto provider was installed concurrently");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_provider_is_ring_once_installed() {
        install_default();
        install_default();
        let installed = CryptoProvider::get_default().expect("a default provider");
        let ring = provider();
        let names = |p: &CryptoProvider| {
            p.cipher_suites
                .iter()
                .map(|s| format!("{:?}", s.suite()))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(installed), names(&ring));
    }
}

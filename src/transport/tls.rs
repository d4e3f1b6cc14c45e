//! The rustls client configuration for a TLS broker, built once at startup so that a bad
//! CA, certificate or key file (or a machine without trusted roots) is a clear startup
//! error rather than a reconnect loop.
//!
//! Server certificates are always verified, names included (an IP address in the broker
//! URL must be in the certificate's IP SANs), against the configured CA or, when none is
//! configured, the system's trusted roots. With a client certificate and key, the proplet
//! authenticates itself (mutual TLS). The crypto provider is always `ring`, passed
//! explicitly ([`crate::crypto::provider`]).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use tracing::{debug, warn};

use super::TransportError;
use crate::config::TlsFiles;

/// The client configuration for `files`: trusting the configured CA, or the system roots
/// when no CA is configured.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TransportError> {
    let roots = match &files.ca_cert {
        Some(ca) => ca_roots(ca)?,
        None => system_roots()?,
    };
    let builder = ClientConfig::builder_with_provider(crate::crypto::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let config = match &files.client {
        Some((cert, key)) => builder
            .with_client_auth_cert(certificates(cert)?, private_key(key)?)
            .map_err(|e| bad(cert, &format!("unusable client certificate or key: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Every certificate in the PEM file `ca`, as trust anchors.
fn ca_roots(ca: &Path) -> Result<RootCertStore, TransportError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca)? {
        roots
            .add(cert)
            .map_err(|e| bad(ca, &format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The system's trusted roots, found as OpenSSL finds them (`SSL_CERT_FILE`,
/// `SSL_CERT_DIR`, then the platform's bundle). Unreadable or unusable entries are skipped
/// with a log line; finding none at all is an error.
fn system_roots() -> Result<RootCertStore, TransportError> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        warn!(error = %e, "skipping system root certificates that cannot be read");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 {
        debug!(
            ignored,
            "skipped system root certificates rustls cannot use"
        );
    }
    if added == 0 {
        return Err(TransportError::Tls(
            "no usable system root certificates; set PROPLET_MQTT_TLS_CA_CERT".into(),
        ));
    }
    debug!(roots = added, "trusting the system root certificates");
    Ok(roots)
}

fn bad(path: &Path, why: &str) -> TransportError {
    TransportError::Tls(format!("{}: {why}", path.display()))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(path, &e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(path, &e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TransportError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| bad(path, &format!("no usable PEM private key: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").expect("write");
        let files = TlsFiles {
            ca_cert: Some(junk.clone()),
            client: None,
        };
        let err = client_config(&files).expect_err("junk").to_string();
        assert!(
            err.contains("junk.pem") && err.contains("no PEM certificate"),
            "{err}"
        );
    }

    #[test]
    fn without_a_ca_the_system_roots_are_trusted() {
        // The test machine has the system CA bundle (the `ca-certificates` package).
        let none = TlsFiles {
            ca_cert: None,
            client: None,
        };
        let roots = system_roots().expect("system roots");
        assert!(!roots.is_empty());
        client_config(&none).expect("a configuration without a CA file");
    }
}

//! The rustls client configuration for a TLS broker, built once at startup so that a bad
//! CA, certificate or key file is a clear startup error rather than a reconnect loop.
//!
//! Server certificates are always verified, names included (an IP address in the broker
//! URL must be in the certificate's IP SANs). With a client certificate and key, the
//! proplet authenticates itself (mutual TLS).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::TransportError;
use crate::config::TlsFiles;

/// The client configuration for `files`; `None` when no CA is configured (the system
/// roots are then used by the MQTT client).
pub fn client_config(files: &TlsFiles) -> Result<Option<Arc<ClientConfig>>, TransportError> {
    let Some(ca) = &files.ca_cert else {
        return Ok(None);
    };
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca)? {
        roots
            .add(cert)
            .map_err(|e| bad(ca, &format!("not a usable CA certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let config = match &files.client {
        Some((cert, key)) => builder
            .with_client_auth_cert(certificates(cert)?, private_key(key)?)
            .map_err(|e| bad(cert, &format!("unusable client certificate or key: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Some(Arc::new(config)))
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
        let none = TlsFiles {
            ca_cert: None,
            client: None,
        };
        assert!(client_config(&none).expect("no CA").is_none());
    }
}

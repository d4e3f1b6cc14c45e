//! Certificates generated at test time: a CA, a broker certificate and a client
//! certificate, written as PEM files into a temp directory.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair};

/// A test PKI on disk.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

struct Authority {
    cert: Certificate,
    key: KeyPair,
}

fn authority(name: &str) -> Authority {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed CA");
    Authority { cert, key }
}

fn issue(ca: &Authority, names: &[&str], cn: &str, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca.cert, &ca.key).expect("signed");
    let cert_path = dir.join(format!("{stem}.crt"));
    let key_path = dir.join(format!("{stem}.key"));
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    (cert_path, key_path)
}

impl Pki {
    /// A CA, a broker certificate for `server_names`, and a client certificate.
    pub fn new(server_names: &[&str]) -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = authority("proplet test CA");
        let ca_path = dir.path().join("ca.crt");
        std::fs::write(&ca_path, ca.cert.pem()).expect("write CA");
        let (server_cert, server_key) = issue(&ca, server_names, "broker", dir.path(), "server");
        let (client_cert, client_key) = issue(&ca, &[], "proplet", dir.path(), "client");
        Pki {
            dir,
            ca: ca_path,
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }
}

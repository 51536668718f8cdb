//! TLS for the listeners: loading a PEM certificate chain and key, or generating a
//! self-signed certificate once under the data directory for local use, into one rustls
//! server configuration (aws-lc-rs as the crypto provider, HTTP/2 and HTTP/1.1 by ALPN).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use feiyun_common::Config;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where `--tls-self-signed` keeps its files, relative to the data directory: the local CA
/// certificate clients trust, and the server certificate and key it signed. The CA's key is
/// never stored, so nothing else can be signed with it.
pub const SELF_SIGNED_DIR: &str = "tls";
pub const SELF_SIGNED_CA: &str = "ca.pem";
const SELF_SIGNED_CERT: &str = "cert.pem";
const SELF_SIGNED_KEY: &str = "key.pem";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("the certificate and key do not form a usable TLS configuration: {0}")]
    Config(String),
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The acceptor for the configured TLS material, and the local CA certificate's path when the
/// certificate was generated (clients need it as their CA bundle).
pub fn acceptor(
    config: &Config,
) -> Result<Option<(tokio_rustls::TlsAcceptor, Option<PathBuf>)>, TlsError> {
    let (cert_path, key_path, generated) = if config.tls_self_signed {
        let (ca, c, k) = self_signed(config)?;
        (c, k, Some(ca))
    } else {
        match (&config.tls_cert, &config.tls_key) {
            (Some(c), Some(k)) => (c.clone(), k.clone(), None),
            _ => return Ok(None),
        }
    };
    let chain = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| read_error(&cert_path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(&cert_path, e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert_path });
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| read_error(&key_path, e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some((
        tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        generated,
    )))
}

fn read_error(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Read {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Generates the certificate on first use and reuses it afterwards, so that a client that
/// trusted it once keeps trusting the region across restarts.
fn self_signed(config: &Config) -> Result<(PathBuf, PathBuf, PathBuf), TlsError> {
    let dir = config.data_dir.join(SELF_SIGNED_DIR);
    let ca = dir.join(SELF_SIGNED_CA);
    let cert = dir.join(SELF_SIGNED_CERT);
    let key = dir.join(SELF_SIGNED_KEY);
    if ca.exists() && cert.exists() && key.exists() {
        return Ok((ca, cert, key));
    }
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    for d in &config.domains {
        names.push(d.clone());
        // Virtual-host addressing puts the bucket name in front of the domain.
        names.push(format!("*.{d}"));
    }
    for addr in std::iter::once(config.listen).chain(config.tls_listen) {
        if !addr.ip().is_unspecified() {
            names.push(addr.ip().to_string());
        }
    }
    names.sort();
    names.dedup();
    let gen_err = |e: rcgen::Error| TlsError::Generate(e.to_string());
    // A CA plus a leaf rather than one self-signed leaf: strict verifiers (OpenSSL's
    // X509_STRICT, webpki) accept a CA certificate as a trust anchor, not an end entity.
    let ca_key = rcgen::KeyPair::generate().map_err(gen_err)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("Feiyun local CA ({})", config.region),
    );
    let ca_cert = ca_params.self_signed(&ca_key).map_err(gen_err)?;
    let leaf_key = rcgen::KeyPair::generate().map_err(gen_err)?;
    let mut leaf_params = rcgen::CertificateParams::new(names).map_err(gen_err)?;
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "feiyun");
    leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca_cert, &ca_key)
        .map_err(gen_err)?;
    std::fs::create_dir_all(&dir)
        .and_then(|()| feiyun_common::durable::sync_dir(&config.data_dir))
        .map_err(|source| TlsError::Write {
            path: dir.clone(),
            source,
        })?;
    write_private(&key, leaf_key.serialize_pem().as_bytes())?;
    write_private(&cert, format!("{}{}", leaf.pem(), ca_cert.pem()).as_bytes())?;
    // Written last: its presence means the set is complete.
    write_private(&ca, ca_cert.pem().as_bytes())?;
    Ok((ca, cert, key))
}

/// Writes through a temporary file and a rename, the file and its directory synced,
/// readable by the owner only.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    feiyun_common::durable::write_file(path, bytes, true).map_err(|source| TlsError::Write {
        path: path.to_owned(),
        source,
    })
}

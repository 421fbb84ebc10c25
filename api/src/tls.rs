//! TLS on the API and between nodes, from PEM files: a site CA, and for a node (or an
//! operator's console) a certificate and key the CA signed. `yinyi ctl certs` makes a set for a
//! test or a small site; a hospital with its own CA names its files in the node config.
//!
//! Every node certificate names [`SERVER_NAME`]; clients check the node they reach against the
//! CA and that name, whatever address they dialled. Nodes present their certificate when they
//! call each other, and the internal (Raft) service refuses a caller without one.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The DNS name in every node certificate, which clients verify.
pub const SERVER_NAME: &str = "yinyi";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0} is not a PEM file")]
    NotPem(PathBuf),
    #[error("a server needs a certificate and a key as well as the CA")]
    NoIdentity,
}

/// The files of one party: the CA it trusts and, for a node or an operator, its own
/// certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// The layout `yinyi ctl certs` writes: `ca.pem`, and `NAME.pem` + `NAME-key.pem` when a
    /// name is given (`node1`, `admin`).
    pub fn in_dir(dir: &Path, name: Option<&str>) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: name.map(|n| dir.join(format!("{n}.pem"))),
            key: name.map(|n| dir.join(format!("{n}-key.pem"))),
        }
    }

    fn identity(&self) -> Result<Option<Identity>, TlsError> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                Ok(Some(Identity::from_pem(read_pem(cert)?, read_pem(key)?)))
            }
            _ => Ok(None),
        }
    }

    /// How a client (or a node calling another) connects: the node must show a certificate
    /// of the CA for [`SERVER_NAME`]; ours is shown when we have one.
    pub fn client(&self) -> Result<ClientTlsConfig, TlsError> {
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read_pem(&self.ca)?))
            .domain_name(SERVER_NAME);
        if let Some(identity) = self.identity()? {
            config = config.identity(identity);
        }
        Ok(config)
    }

    /// How a node serves: its certificate, and the CA its callers' certificates must chain to.
    /// A certificate is optional at the handshake (terminals sign in with credentials); the
    /// internal service requires one.
    pub fn server(&self) -> Result<ServerTlsConfig, TlsError> {
        let identity = self.identity()?.ok_or(TlsError::NoIdentity)?;
        Ok(ServerTlsConfig::new()
            .identity(identity)
            .client_ca_root(Certificate::from_pem(read_pem(&self.ca)?))
            .client_auth_optional(true))
    }
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    if !bytes.windows(10).any(|w| w == b"-----BEGIN") {
        return Err(TlsError::NotPem(path.to_path_buf()));
    }
    Ok(bytes)
}

/// The URI of `addr` (`host:port`, or a URI already) for a plaintext or a TLS channel.
pub fn uri(addr: &str, tls: bool) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else if tls {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_non_pem_files_are_named() {
        let dir = std::env::temp_dir().join(format!("yinyi-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = TlsFiles::in_dir(&dir, Some("node1"));
        let e = files.client().unwrap_err().to_string();
        assert!(e.contains("ca.pem"), "{e}");
        std::fs::write(dir.join("ca.pem"), "not a certificate").unwrap();
        let e = files.client().unwrap_err().to_string();
        assert!(e.contains("is not a PEM file"), "{e}");
        let e = TlsFiles::in_dir(&dir, None)
            .server()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a PEM") || e.contains("certificate and a key"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn uris_follow_the_transport() {
        assert_eq!(uri("127.0.0.1:7101", true), "https://127.0.0.1:7101");
        assert_eq!(uri("127.0.0.1:7101", false), "http://127.0.0.1:7101");
        assert_eq!(uri("http://a:1", true), "http://a:1");
    }
}

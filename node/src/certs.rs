//! `yinyi ctl certs`: a local certificate authority for a test or a small site, and the
//! certificates it signs — one per node (a server and client certificate naming
//! [`yinyi_api::SERVER_NAME`]) and one per operator console (client only; it may call the
//! internal service, so it is kept like a node's key). Terminals do not need certificates:
//! they check the nodes against `ca.pem` and sign in with credentials.
//!
//! Files, in one directory: `ca.pem`, `ca-key.pem`, `NAME.pem`, `NAME-key.pem`. Keys are
//! written readable by the owner only. A hospital with its own CA skips this and names its
//! files in each node's config.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The CA's subject; rebuilt the same way when the CA is loaded to sign more certificates.
const CA_NAME: &str = "yinyi site CA";
const CA_DAYS: i64 = 3650;
const LEAF_DAYS: i64 = 825;

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Serves the API and Raft, and calls other nodes.
    Node,
    /// An operator's console (`yinyi ctl`): a client only.
    Operator,
}

pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

impl Authority {
    /// A new CA (in memory until [`Authority::write`]).
    pub fn create() -> Result<Authority> {
        let key = KeyPair::generate().context("generate the CA key")?;
        let mut params = ca_params();
        validity(&mut params, CA_DAYS);
        let cert = params.self_signed(&key).context("sign the CA")?;
        Ok(Authority {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA in `dir` (`ca.pem`, `ca-key.pem`), to sign more certificates.
    pub fn load(dir: &Path) -> Result<Authority> {
        let cert_pem = std::fs::read_to_string(dir.join("ca.pem"))
            .with_context(|| format!("read {}", dir.join("ca.pem").display()))?;
        let key_pem = std::fs::read_to_string(dir.join("ca-key.pem"))
            .with_context(|| format!("read {}", dir.join("ca-key.pem").display()))?;
        let key = KeyPair::from_pem(&key_pem).context("ca-key.pem is not a private key")?;
        Ok(Authority {
            issuer: Issuer::new(ca_params(), key),
            cert_pem,
            key_pem,
        })
    }

    /// Loads the CA in `dir`, or creates and writes one there.
    /// A site's data key (`data.key`, for sealing holder names and phones) is made beside the
    /// CA when there is none.
    pub fn open_or_create(dir: &Path) -> Result<Authority> {
        if dir.join("ca-key.pem").exists() {
            make_data_key(dir)?;
            return Authority::load(dir);
        }
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let ca = Authority::create()?;
        std::fs::write(dir.join("ca.pem"), &ca.cert_pem)?;
        write_private(&dir.join("ca-key.pem"), &ca.key_pem)?;
        make_data_key(dir)?;
        Ok(ca)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Signs a certificate for `name` and writes `NAME.pem` and `NAME-key.pem` in `dir`. A node
    /// certificate names [`yinyi_api::SERVER_NAME`], `localhost`, 127.0.0.1 and `hosts`.
    pub fn issue(&self, dir: &Path, name: &str, kind: Kind, hosts: &[String]) -> Result<PathBuf> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("certificate name {name:?}: use letters, digits, '-' and '_'");
        }
        let sans = match kind {
            Kind::Node => {
                let mut sans = vec![
                    yinyi_api::SERVER_NAME.to_string(),
                    "localhost".to_string(),
                    "127.0.0.1".to_string(),
                ];
                sans.extend(hosts.iter().cloned());
                sans
            }
            Kind::Operator => Vec::new(),
        };
        let mut params = CertificateParams::new(sans).context("bad host name")?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("yinyi {name}"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match kind {
            Kind::Node => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Kind::Operator => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, LEAF_DAYS);
        let key = KeyPair::generate().context("generate a key")?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("sign {name}"))?;
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, cert.pem())?;
        write_private(&dir.join(format!("{name}-key.pem")), &key.serialize_pem())?;
        Ok(path)
    }
}

/// `yinyi ctl certs`: the CA in `dir` (made when absent), `node1`..`nodeN` and the operator
/// certificates. Existing certificates are kept (said so), so it can be run again to add some.
pub fn make(dir: &Path, nodes: &[String], operators: &[String], hosts: &[String]) -> Result<()> {
    let fresh = !dir.join("ca-key.pem").exists();
    let ca = Authority::open_or_create(dir)?;
    println!(
        "{} {}",
        if fresh { "created CA" } else { "using CA" },
        dir.join("ca.pem").display()
    );
    let wanted = nodes
        .iter()
        .map(|n| (n, Kind::Node))
        .chain(operators.iter().map(|n| (n, Kind::Operator)));
    for (name, kind) in wanted {
        if dir.join(format!("{name}.pem")).exists() {
            println!("kept     {}", dir.join(format!("{name}.pem")).display());
            continue;
        }
        let path = ca.issue(dir, name, kind, hosts)?;
        println!("wrote    {} ({kind:?})", path.display());
    }
    Ok(())
}

/// Writes `data.key` in `dir` (owner-only) unless it is there: the key every node of the site
/// seals holder names and phones with (`--data-key-file`).
pub fn make_data_key(dir: &Path) -> Result<()> {
    let path = dir.join("data.key");
    if !path.exists() {
        write_private(&path, &crate::seal::Sealer::new_key_hex())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loaded_ca_signs_more_certificates_and_keys_are_private() {
        let dir = tempfile::tempdir().unwrap();
        make(dir.path(), &["node1".into()], &["admin".into()], &[]).unwrap();
        // Again, with one more node: the CA is loaded, node1 is kept.
        let before = std::fs::read(dir.path().join("node1.pem")).unwrap();
        make(dir.path(), &["node1".into(), "node2".into()], &[], &[]).unwrap();
        assert_eq!(before, std::fs::read(dir.path().join("node1.pem")).unwrap());
        for f in ["ca.pem", "node1.pem", "node2.pem", "admin.pem"] {
            let text = std::fs::read_to_string(dir.path().join(f)).unwrap();
            assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{f}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("node2-key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "a key readable by others");
        }
        // The files load as TLS configuration.
        let files = yinyi_api::TlsFiles::in_dir(dir.path(), Some("node2"));
        files.server().unwrap();
        files.client().unwrap();
        assert!(
            Authority::load(dir.path())
                .unwrap()
                .issue(dir.path(), "../x", Kind::Node, &[])
                .is_err()
        );
    }
}

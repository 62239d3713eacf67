//! A throw-away PKI for TLS tests: a CA, a server certificate for
//! `localhost` / `127.0.0.1` and client certificates, all ECDSA P-256 /
//! SHA-256 made with rcgen, written as PEM files (keys as PKCS#8) that
//! mosquitto (OpenSSL) and rustls both accept.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate authority with a server certificate, in a temporary
/// directory (removed on drop).
pub struct Pki {
    /// The directory holding every file below.
    pub dir: PathBuf,
    /// The CA certificate (PEM): what clients and servers trust.
    pub ca_cert: PathBuf,
    /// Server certificate (PEM) for `localhost`, `127.0.0.1` and `::1`.
    pub server_cert: PathBuf,
    /// The server certificate's private key (PKCS#8 PEM).
    pub server_key: PathBuf,
    ca: Certificate,
    ca_key: KeyPair,
    _tmp: tempfile::TempDir,
}

/// A client certificate and its key (PEM files).
#[derive(Clone, Debug)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// For [`foreign_client`]: the directory holding the files, removed
    /// when the last clone is dropped.
    _dir: Option<Arc<tempfile::TempDir>>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn base_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "gatewayd tests");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.not_before = date_time_ymd(2024, 1, 1);
    params.not_after = date_time_ymd(2049, 12, 31);
    params
}

fn new_ca(common_name: &str) -> anyhow::Result<(Certificate, KeyPair)> {
    let key = KeyPair::generate().context("generating the CA key")?;
    let mut params = base_params(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).context("self-signing the CA")?;
    Ok((cert, key))
}

fn leaf(
    common_name: &str,
    sans: Vec<SanType>,
    eku: ExtendedKeyUsagePurpose,
    ca: &Certificate,
    ca_key: &KeyPair,
) -> anyhow::Result<(Certificate, KeyPair)> {
    let key = KeyPair::generate().context("generating a key")?;
    let mut params = base_params(common_name);
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, ca, ca_key)
        .with_context(|| format!("signing the certificate for {common_name}"))?;
    Ok((cert, key))
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// A file-name-safe form of a common name.
fn file_stem(common_name: &str) -> String {
    common_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn write_client(
    dir: &Path,
    prefix: &str,
    common_name: &str,
    ca: &Certificate,
    ca_key: &KeyPair,
) -> anyhow::Result<ClientCert> {
    let (cert, key) = leaf(
        common_name,
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
        ca,
        ca_key,
    )?;
    let stem = format!("{prefix}{}", file_stem(common_name));
    let mut n = 0;
    let (cert_path, key_path) = loop {
        let suffix = if n == 0 {
            String::new()
        } else {
            format!("-{n}")
        };
        let c = dir.join(format!("{stem}{suffix}.crt"));
        if !c.exists() {
            break (c, dir.join(format!("{stem}{suffix}.key")));
        }
        n += 1;
    };
    write(&cert_path, &cert.pem())?;
    write(&key_path, &key.serialize_pem())?;
    Ok(ClientCert {
        cert: cert_path,
        key: key_path,
        _dir: None,
    })
}

impl Pki {
    /// A new CA and a server certificate valid for `localhost`, `127.0.0.1`
    /// and `::1`.
    pub fn new() -> anyhow::Result<Pki> {
        let tmp = crate::tempdir("gatewayd-pki-")?;
        let dir = tmp.path().to_path_buf();
        let (ca, ca_key) = new_ca("gatewayd test CA")?;
        let (server, server_key) = leaf(
            "localhost",
            vec![
                SanType::DnsName("localhost".try_into()?),
                SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
            &ca,
            &ca_key,
        )?;
        let ca_cert = dir.join("ca.crt");
        let server_cert = dir.join("server.crt");
        let server_key_path = dir.join("server.key");
        write(&ca_cert, &ca.pem())?;
        write(&server_cert, &server.pem())?;
        write(&server_key_path, &server_key.serialize_pem())?;
        Ok(Pki {
            dir,
            ca_cert,
            server_cert,
            server_key: server_key_path,
            ca,
            ca_key,
            _tmp: tmp,
        })
    }

    /// A client certificate (clientAuth) with this common name, signed by
    /// this CA. Files live in [`Pki::dir`].
    pub fn client(&self, common_name: &str) -> anyhow::Result<ClientCert> {
        write_client(&self.dir, "client-", common_name, &self.ca, &self.ca_key)
    }
}

/// A client certificate with this common name signed by a fresh CA that
/// nobody trusts. Its files live in their own temporary directory, removed
/// when the returned value (and its last clone) is dropped.
pub fn foreign_client(common_name: &str) -> anyhow::Result<ClientCert> {
    let tmp = crate::tempdir("gatewayd-foreign-pki-")?;
    let (ca, ca_key) = new_ca("foreign CA")?;
    write(&tmp.path().join("foreign-ca.crt"), &ca.pem())?;
    let mut client = write_client(tmp.path(), "foreign-", common_name, &ca, &ca_key)?;
    client._dir = Some(Arc::new(tmp));
    Ok(client)
}

//! Cluster PKI: CA, serving certificate, admin client certificate, the join
//! token and the admin kubeconfig. Generated on first start under
//! `<data-dir>/server/tls`, reused afterwards.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};

pub struct Pki {
    pub ca_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    /// PKCS#8 DER of the ECDSA P-256 key that signs service-account tokens.
    pub service_account_key: Vec<u8>,
}

const TEN_YEARS_DAYS: i64 = 3650;
const ONE_YEAR_DAYS: i64 = 365;

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Loads the PKI from `dir`, creating whatever is missing. The serving
/// certificate is re-issued when its SANs no longer cover `sans`.
pub fn ensure(dir: &Path, sans: &[String]) -> Result<Pki> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_cert_path = dir.join("server-ca.crt");
    let ca_key_path = dir.join("server-ca.key");
    let (ca_pem, ca_key) = if ca_cert_path.exists() && ca_key_path.exists() {
        let pem = std::fs::read_to_string(&ca_cert_path)?;
        let key =
            KeyPair::from_pem(&std::fs::read_to_string(&ca_key_path)?).context("parsing CA key")?;
        (pem, key)
    } else {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("skiff-server-ca@{}", chrono::Utc::now().timestamp()),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, TEN_YEARS_DAYS);
        let cert = params.self_signed(&key)?;
        write_private(&ca_key_path, &key.serialize_pem())?;
        std::fs::write(&ca_cert_path, cert.pem())?;
        (cert.pem(), key)
    };
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, &ca_key).context("loading CA certificate")?;

    let serving_cert_path = dir.join("serving-kube-apiserver.crt");
    let serving_key_path = dir.join("serving-kube-apiserver.key");
    let sans_path = dir.join("serving-sans");
    let want_sans = sans.join(",");
    let current_sans = std::fs::read_to_string(&sans_path).unwrap_or_default();
    if !(serving_cert_path.exists() && serving_key_path.exists() && current_sans == want_sans) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kube-apiserver");
        params.distinguished_name = dn;
        params.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(s.clone().try_into()?)),
            })
            .collect::<Result<Vec<_>, rcgen::Error>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut params, ONE_YEAR_DAYS);
        let cert = params.signed_by(&key, &issuer)?;
        write_private(&serving_key_path, &key.serialize_pem())?;
        std::fs::write(&serving_cert_path, cert.pem())?;
        std::fs::write(&sans_path, &want_sans)?;
    }

    let admin_cert_path = dir.join("client-admin.crt");
    let admin_key_path = dir.join("client-admin.key");
    if !(admin_cert_path.exists() && admin_key_path.exists()) {
        let (cert, key) = client_cert(&issuer, "system:admin", &["system:masters"])?;
        write_private(&admin_key_path, &key)?;
        std::fs::write(&admin_cert_path, cert)?;
    }

    let sa_key_path = dir.join("service-account.key");
    if !sa_key_path.exists() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        write_private(&sa_key_path, &key.serialize_pem())?;
    }
    let service_account_key = KeyPair::from_pem(&std::fs::read_to_string(&sa_key_path)?)
        .context("parsing service-account key")?
        .serialize_der();

    Ok(Pki {
        service_account_key,
        ca_pem,
        serving_cert_pem: std::fs::read_to_string(&serving_cert_path)?,
        serving_key_pem: std::fs::read_to_string(&serving_key_path)?,
        admin_cert_pem: std::fs::read_to_string(&admin_cert_path)?,
        admin_key_pem: std::fs::read_to_string(&admin_key_path)?,
    })
}

/// Issues a client certificate: CN = user name, O = groups.
pub fn client_cert(
    issuer: &Issuer<'_, &KeyPair>,
    user: &str,
    groups: &[&str],
) -> Result<(String, String)> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    for g in groups {
        dn.push(DnType::OrganizationName, *g);
    }
    dn.push(DnType::CommonName, user);
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut params, ONE_YEAR_DAYS);
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// SHA-256 of the CA certificate's DER bytes, hex: the hash the k3s-style
/// token carries so a joining node can verify the server's CA.
pub fn ca_hash(ca_pem: &str) -> Result<String> {
    let der = pem_to_der(ca_pem)?;
    Ok(hex::encode(Sha256::digest(&der)))
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>> {
    use base64::Engine;
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("");
    Ok(base64::engine::general_purpose::STANDARD.decode(body)?)
}

/// The join token: `K10<ca hash>::server:<secret>`. Reads
/// `<data-dir>/server/token` when present; otherwise writes one built from
/// `secret` (or a random one).
pub fn ensure_token(path: &Path, ca_pem: &str, secret: Option<&str>) -> Result<String> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        let existing = existing.trim().to_string();
        match secret {
            Some(s)
                if token_secret(&existing) != Some(s)
                    && token_secret(s) != token_secret(&existing) =>
            {
                anyhow::bail!(
                    "--token does not match the token this server was started with ({})",
                    path.display()
                );
            }
            _ => return Ok(existing),
        }
    }
    let secret = match secret {
        Some(s) => token_secret(s).unwrap_or(s).to_string(),
        None => {
            let bytes: [u8; 16] = rand::random();
            hex::encode(bytes)
        }
    };
    let token = format!("K10{}::server:{}", ca_hash(ca_pem)?, secret);
    write_private(path, &format!("{token}\n"))?;
    Ok(token)
}

/// The secret part of a full token (`K10…::server:SECRET`), or the token
/// itself when it is a bare secret.
pub fn token_secret(token: &str) -> Option<&str> {
    match token.rsplit_once("::") {
        Some((_, rest)) => Some(rest.split_once(':').map(|(_, s)| s).unwrap_or(rest)),
        None => Some(token),
    }
}

/// Writes the admin kubeconfig with embedded certificates.
pub fn write_kubeconfig(path: &Path, mode: u32, server: &str, pki: &Pki) -> Result<()> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {}\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\npreferences: {{}}\nusers:\n- name: default\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(&pki.ca_pem),
        server,
        b64(&pki.admin_cert_pem),
        b64(&pki.admin_key_pem)
    );
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

static SERVED_CA: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Records the CA (PEM) the server hands out at `/cacerts`.
pub fn set_served_ca(pem: String) {
    let _ = SERVED_CA.set(pem);
}

pub fn served_ca() -> Option<&'static str> {
    SERVED_CA.get().map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_has_k3s_form_and_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ensure(dir.path(), &["127.0.0.1".into(), "localhost".into()]).unwrap();
        let path = dir.path().join("token");
        let t = ensure_token(&path, &pki.ca_pem, None).unwrap();
        assert!(t.starts_with("K10"));
        let (hash, rest) = t[3..].split_once("::server:").unwrap();
        assert_eq!(hash.len(), 64);
        assert_eq!(hash, ca_hash(&pki.ca_pem).unwrap());
        assert_eq!(rest.len(), 32);
        assert_eq!(ensure_token(&path, &pki.ca_pem, None).unwrap(), t);
        assert!(ensure_token(&path, &pki.ca_pem, Some("other")).is_err());
        // Reopening reuses the CA.
        let again = ensure(dir.path(), &["127.0.0.1".into(), "localhost".into()]).unwrap();
        assert_eq!(again.ca_pem, pki.ca_pem);
        assert_eq!(again.serving_cert_pem, pki.serving_cert_pem);
    }
}

//! `/etc/skiff/registries.yaml` in k3s's format, endpoint resolution
//! (mirrors, rewrites, the default endpoint last), per-endpoint auth and TLS,
//! and credentials from `imagePullSecrets` (dockerconfigjson).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use serde::Deserialize;

use super::reference::ImageRef;

/// Default location, as k3s's `/etc/rancher/k3s/registries.yaml`.
pub const DEFAULT_REGISTRIES_FILE: &str = "/etc/skiff/registries.yaml";

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistriesConfig {
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    #[serde(default)]
    pub configs: BTreeMap<String, RegistryConfig>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    #[serde(default)]
    pub endpoint: Vec<String>,
    /// Regular expression → replacement (`$1` groups) applied to the
    /// repository when pulling from this mirror's endpoints.
    #[serde(default)]
    pub rewrite: BTreeMap<String, String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
pub struct AuthConfig {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// base64 of `username:password`.
    #[serde(default)]
    pub auth: Option<String>,
    /// An OAuth2 refresh token (what `docker login` stores for some registries).
    #[serde(default, alias = "identity_token")]
    pub identitytoken: Option<String>,
    /// A registry bearer token, sent as is (dockerconfigjson `registrytoken`).
    #[serde(default, alias = "registrytoken")]
    pub token: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// Resolved credentials for one registry endpoint.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic {
        username: String,
        password: String,
    },
    /// OAuth2 refresh token, exchanged at the registry's token realm.
    IdentityToken(String),
    /// Bearer token sent directly.
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets, even in debug logs.
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credentials::IdentityToken(_) => write!(f, "IdentityToken(<redacted>)"),
            Credentials::Bearer(_) => write!(f, "Bearer(<redacted>)"),
        }
    }
}

impl AuthConfig {
    pub fn credentials(&self) -> Result<Option<Credentials>> {
        if let Some(t) = self.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credentials::IdentityToken(t.to_string())));
        }
        if let Some(t) = self.token.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credentials::Bearer(t.to_string())));
        }
        if let Some(user) = self.username.as_deref().filter(|u| !u.is_empty()) {
            return Ok(Some(Credentials::Basic {
                username: user.to_string(),
                password: self.password.clone().unwrap_or_default(),
            }));
        }
        if let Some(a) = self.auth.as_deref().filter(|a| !a.is_empty()) {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(a.trim())
                .context("auth is not valid base64")?;
            let s = String::from_utf8(raw).context("auth is not UTF-8")?;
            let (u, p) = s
                .split_once(':')
                .ok_or_else(|| anyhow!("auth must encode username:password"))?;
            return Ok(Some(Credentials::Basic {
                username: u.to_string(),
                password: p.to_string(),
            }));
        }
        Ok(None)
    }
}

impl RegistriesConfig {
    /// Reads the file; a missing file is an empty configuration (as in k3s).
    pub fn load(path: &Path) -> Result<RegistriesConfig> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(RegistriesConfig::default());
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Self::parse(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<RegistriesConfig> {
        if text.trim().is_empty() {
            return Ok(RegistriesConfig::default());
        }
        let cfg: RegistriesConfig = serde_yaml::from_str(text)?;
        for (name, m) in &cfg.mirrors {
            for e in &m.endpoint {
                Endpoint::parse_url(e).with_context(|| format!("mirrors.{name:?}.endpoint"))?;
            }
            for pat in m.rewrite.keys() {
                regex::Regex::new(pat)
                    .with_context(|| format!("mirrors.{name:?}.rewrite: bad pattern {pat:?}"))?;
            }
        }
        for (name, c) in &cfg.configs {
            if let Some(a) = &c.auth {
                a.credentials()
                    .with_context(|| format!("configs.{name:?}.auth"))?;
            }
        }
        Ok(cfg)
    }

    /// The endpoints to try for `image`, in order: the mirror's endpoints
    /// (an exact registry entry, else the `"*"` wildcard), then the registry
    /// itself over https. An endpoint whose host is the registry's own host
    /// takes the place of the default endpoint (so `http://host:port` under
    /// `mirrors."host:port"` makes that registry plain-http, with no https
    /// retry), as k3s does.
    pub fn endpoints(&self, image: &ImageRef) -> Result<Vec<Endpoint>> {
        let registry = image.registry.as_str();
        let default_host = default_host(registry);
        let mirror = self.mirrors.get(registry).or_else(|| self.mirrors.get("*"));
        let mut out = Vec::new();
        let mut default_seen = false;
        if let Some(m) = mirror {
            for e in &m.endpoint {
                let (scheme, host) = Endpoint::parse_url(e)?;
                let is_default = host == registry || host == default_host;
                if is_default {
                    if default_seen {
                        continue;
                    }
                    default_seen = true;
                }
                let repository = if is_default {
                    image.repository.clone()
                } else {
                    rewrite(&m.rewrite, &image.repository)
                };
                out.push(self.endpoint(scheme, host, repository, is_default));
            }
        }
        if !default_seen {
            out.push(self.endpoint(
                Scheme::Https,
                default_host.to_string(),
                image.repository.clone(),
                true,
            ));
        }
        Ok(out)
    }

    fn endpoint(
        &self,
        scheme: Scheme,
        host: String,
        repository: String,
        is_default: bool,
    ) -> Endpoint {
        let config = self.config_for(&host).cloned().unwrap_or_default();
        Endpoint {
            scheme,
            host,
            repository,
            is_default,
            config,
        }
    }

    /// `configs` entry for an endpoint host; Docker Hub's several names are
    /// one registry; `"*"` is the fallback.
    fn config_for(&self, host: &str) -> Option<&RegistryConfig> {
        let aliases: &[&str] = if is_docker_hub(host) {
            &["docker.io", "registry-1.docker.io", "index.docker.io"]
        } else {
            &[]
        };
        self.configs
            .get(host)
            .or_else(|| aliases.iter().find_map(|a| self.configs.get(*a)))
            .or_else(|| self.configs.get("*"))
    }
}

fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "registry-1.docker.io" | "index.docker.io"
    )
}

/// Where the registry itself answers (Docker Hub's API host differs from its name).
fn default_host(registry: &str) -> &str {
    if registry == "docker.io" {
        "registry-1.docker.io"
    } else {
        registry
    }
}

fn rewrite(rules: &BTreeMap<String, String>, repository: &str) -> String {
    // The first pattern (in key order, for determinism) that changes the
    // repository wins, as in k3s's containerd.
    for (pat, rep) in rules {
        if let Ok(re) = regex::Regex::new(pat) {
            let out = re.replace_all(repository, rep.as_str());
            if out != repository {
                return out.into_owned();
            }
        }
    }
    repository.to_string()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

#[derive(Clone, Debug)]
pub struct Endpoint {
    pub scheme: Scheme,
    /// host[:port]
    pub host: String,
    /// Repository to request at this endpoint (after rewrites).
    pub repository: String,
    /// The registry itself rather than a mirror.
    pub is_default: bool,
    pub config: RegistryConfig,
}

impl Endpoint {
    /// `https://host[:port][/v2]` or `http://…`; a bare host means https.
    fn parse_url(url: &str) -> Result<(Scheme, String)> {
        let (scheme, rest) = if let Some(r) = url.strip_prefix("https://") {
            (Scheme::Https, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (Scheme::Http, r)
        } else if url.contains("://") {
            bail!("endpoint {url:?}: only http:// and https:// are supported");
        } else {
            (Scheme::Https, url)
        };
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if host.is_empty() {
            bail!("endpoint {url:?} has no host");
        }
        // The distribution API lives at /v2 on every endpoint the client can
        // address; path prefixes (containerd's `override_path`) are not supported.
        if !matches!(path, "" | "/" | "/v2" | "/v2/") {
            bail!("endpoint {url:?}: path prefixes are not supported");
        }
        Ok((scheme, host.to_string()))
    }

    pub fn url(&self) -> String {
        let s = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{s}://{}", self.host)
    }
}

/// Credentials for `image`'s registry from the data of `kubernetes.io/dockerconfigjson`
/// (`.dockerconfigjson`, `{"auths": {...}}`) or legacy `kubernetes.io/dockercfg`
/// (`.dockercfg`, the bare map) secrets, matched as the kubelet matches them:
/// keys may carry a scheme, a port, a path prefix and `*` globs per DNS label;
/// the most specific matching key wins. Secrets are tried in order.
pub fn credentials_from_docker_config(
    secrets: &[&[u8]],
    image: &ImageRef,
) -> Result<Option<Credentials>> {
    let host = if is_docker_hub(&image.registry) {
        "index.docker.io"
    } else {
        image.registry.as_str()
    };
    let path = format!("/{}", image.repository);
    for data in secrets {
        let v: serde_json::Value =
            serde_json::from_slice(data).context("pull secret is not valid JSON")?;
        let auths = match v.get("auths") {
            Some(a) => a,
            None => &v,
        };
        let Some(map) = auths.as_object() else {
            bail!("pull secret: auths is not an object");
        };
        let mut best: Option<(Specificity, &serde_json::Value)> = None;
        for (key, entry) in map {
            if let Some(score) = key_matches(key, host, &path)
                && best.is_none_or(|(s, _)| score > s)
            {
                best = Some((score, entry));
            }
        }
        if let Some((_, entry)) = best {
            let auth: AuthConfig =
                serde_json::from_value(entry.clone()).context("pull secret entry is malformed")?;
            if let Some(c) = auth.credentials()? {
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

/// How specific a matching key is: longer path prefix first, then fewer
/// globs, then a longer host pattern.
type Specificity = (usize, std::cmp::Reverse<usize>, usize);

/// Specificity of `key` for `host` + `path`, or None when it does not match.
fn key_matches(key: &str, host: &str, path: &str) -> Option<Specificity> {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (khost, kpath) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let khost = if is_docker_hub(khost) {
        "index.docker.io"
    } else {
        khost
    };
    // Docker Hub's legacy key `https://index.docker.io/v1/` carries the
    // API version, not a repository prefix.
    let kpath = if khost == "index.docker.io" && kpath.starts_with("/v1") {
        ""
    } else {
        kpath.trim_end_matches('/')
    };
    let (kh, kport) = split_port(khost);
    let (h, port) = split_port(host);
    if kport != port {
        return None;
    }
    let kl: Vec<&str> = kh.split('.').collect();
    let hl: Vec<&str> = h.split('.').collect();
    if kl.len() != hl.len() {
        return None;
    }
    for (k, h) in kl.iter().zip(&hl) {
        if !glob_match(k, h) {
            return None;
        }
    }
    if !(kpath.is_empty() || path == kpath || path.starts_with(&format!("{kpath}/"))) {
        return None;
    }
    let globs = kh.matches('*').count();
    Some((kpath.len(), std::cmp::Reverse(globs), kh.len()))
}

fn split_port(h: &str) -> (&str, &str) {
    match h.rsplit_once(':') {
        Some((a, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (a, p),
        _ => (h, ""),
    }
}

/// `*` matches any run of characters within one DNS label (dynamic
/// programming, so hostile patterns cannot blow up).
fn glob_match(pat: &str, s: &str) -> bool {
    let (p, s) = (pat.as_bytes(), s.as_bytes());
    // ok[j]: p[..i] matches s[..j]
    let mut ok = vec![false; s.len() + 1];
    ok[0] = true;
    for &c in p {
        if c == b'*' {
            for j in 1..=s.len() {
                ok[j] = ok[j] || ok[j - 1];
            }
        } else {
            for j in (1..=s.len()).rev() {
                ok[j] = ok[j - 1] && s[j - 1].eq_ignore_ascii_case(&c);
            }
            ok[0] = false;
        }
    }
    ok[s.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn parses_k3s_format() {
        let cfg = RegistriesConfig::parse(
            r#"
mirrors:
  docker.io:
    endpoint:
      - "https://mirror.example.com:5000"
      - "http://plain.example.com"
    rewrite:
      "^rancher/(.*)": "mirrorproject/rancher-images/$1"
  "127.0.0.1:5000":
    endpoint: ["http://127.0.0.1:5000"]
  "*":
    endpoint: ["https://wild.example.com"]
configs:
  "mirror.example.com:5000":
    auth: {username: u, password: p}
    tls: {ca_file: /tmp/ca.pem, insecure_skip_verify: false}
  "plain.example.com":
    auth: {auth: "dTpw"}
  docker.io:
    auth: {identitytoken: tok}
"#,
        )
        .unwrap();
        let eps = cfg.endpoints(&r("rancher/k3s:v1")).unwrap();
        assert_eq!(eps.len(), 3);
        assert_eq!(eps[0].url(), "https://mirror.example.com:5000");
        assert_eq!(eps[0].repository, "mirrorproject/rancher-images/k3s");
        assert_eq!(
            eps[0].config.auth.as_ref().unwrap().credentials().unwrap(),
            Some(Credentials::Basic {
                username: "u".into(),
                password: "p".into()
            })
        );
        assert_eq!(eps[1].scheme, Scheme::Http);
        assert_eq!(
            eps[1].config.auth.as_ref().unwrap().credentials().unwrap(),
            Some(Credentials::Basic {
                username: "u".into(),
                password: "p".into()
            })
        );
        assert!(eps[2].is_default);
        assert_eq!(eps[2].url(), "https://registry-1.docker.io");
        assert_eq!(eps[2].repository, "rancher/k3s");
        assert_eq!(
            eps[2].config.auth.as_ref().unwrap().credentials().unwrap(),
            Some(Credentials::IdentityToken("tok".into()))
        );

        // An endpoint naming the registry itself replaces the default.
        let eps = cfg.endpoints(&r("127.0.0.1:5000/test/busybox:1")).unwrap();
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].url(), "http://127.0.0.1:5000");
        assert!(eps[0].is_default);

        // Wildcard mirror, then the registry.
        let eps = cfg.endpoints(&r("quay.io/a/b")).unwrap();
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].host, "wild.example.com");
        assert_eq!(eps[1].url(), "https://quay.io");

        assert!(RegistriesConfig::parse("mirrors: {x: {endpoint: [\"ftp://a\"]}}").is_err());
        assert!(RegistriesConfig::parse("mirrors: {x: {bogus: 1}}").is_err());
        assert!(RegistriesConfig::parse("").unwrap().mirrors.is_empty());
    }

    #[test]
    fn docker_config_matching() {
        let secret = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "aHViOnNlY3JldA=="},
            "*.example.com": {"username": "glob", "password": "g"},
            "reg.example.com/team": {"username": "team", "password": "t"},
            "reg.example.com:5000": {"username": "port", "password": "x"},
            "id.example.org": {"identitytoken": "refresh"}
        }}"#;
        let c = |s: &str| credentials_from_docker_config(&[secret], &r(s)).unwrap();
        assert_eq!(
            c("busybox"),
            Some(Credentials::Basic {
                username: "hub".into(),
                password: "secret".into()
            })
        );
        assert_eq!(
            c("reg.example.com/team/app:1"),
            Some(Credentials::Basic {
                username: "team".into(),
                password: "t".into()
            })
        );
        assert_eq!(
            c("reg.example.com/other/app"),
            Some(Credentials::Basic {
                username: "glob".into(),
                password: "g".into()
            })
        );
        assert_eq!(
            c("reg.example.com:5000/x"),
            Some(Credentials::Basic {
                username: "port".into(),
                password: "x".into()
            })
        );
        assert_eq!(
            c("id.example.org/x"),
            Some(Credentials::IdentityToken("refresh".into()))
        );
        assert_eq!(c("a.b.example.com/x"), None);
        assert_eq!(c("quay.io/x"), None);
        // Legacy .dockercfg: the bare map.
        let legacy = br#"{"quay.io": {"auth": "dTpw"}}"#;
        assert!(
            credentials_from_docker_config(&[legacy], &r("quay.io/x"))
                .unwrap()
                .is_some()
        );
        assert!(credentials_from_docker_config(&[b"nope"], &r("quay.io/x")).is_err());
    }
}

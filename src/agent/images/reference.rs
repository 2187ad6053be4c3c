//! Image references, normalized as containerd (and the Docker CLI) do:
//! `busybox` → `docker.io/library/busybox:latest`; a reference with both a
//! tag and a digest keeps only the digest.

use std::fmt;

use anyhow::{Result, anyhow};

use super::digest::sha256_hex;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Registry host (with port): `docker.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path inside the registry: `library/busybox`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses and normalizes a reference by the distribution grammar
    /// (`[domain/]path[:tag][@digest]`), as Docker's `ParseNormalizedNamed`.
    /// Hand-written: oci-spec's parser compiles a grammar regex that stays
    /// resident (about 7 MiB, most of an idle agent's heap).
    pub fn parse(s: &str) -> Result<ImageRef> {
        let s = s.trim();
        let invalid = |why: &str| anyhow!("invalid image reference {s:?}: {why}");
        if s.is_empty() {
            return Err(invalid("invalid reference format"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                sha256_hex(d).map_err(|e| invalid(&e.to_string()))?;
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(invalid("invalid reference format"));
        }
        // splitDockerDomain: the first component is a registry when it
        // looks like a host (a dot, a port, `localhost`). Docker also takes
        // an uppercase one for a host; it is far likelier a mistyped
        // repository, refused below as upstream refuses uppercase paths.
        let (registry, path) = match name.split_once('/') {
            Some((first, remainder)) if first.contains(['.', ':']) || first == "localhost" => {
                (first, remainder)
            }
            _ => ("docker.io", name),
        };
        if !valid_domain(registry) {
            return Err(invalid("invalid reference format"));
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid("repository name must be lowercase"));
        }
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(invalid("invalid reference format"));
        }
        if registry.len() + 1 + path.len() > 255 {
            return Err(invalid(
                "repository name must not be more than 255 characters",
            ));
        }
        let registry = match registry {
            "index.docker.io" => "docker.io",
            r => r,
        };
        let repository = if registry == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        // ParseDockerRef drops the tag of a reference that also has a digest:
        // the digest alone names the content.
        let tag = match digest {
            Some(_) => None,
            None => Some(tag.unwrap_or("latest").to_string()),
        };
        Ok(ImageRef {
            registry: registry.to_string(),
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask the registry for: the digest when known, else the tag.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The `oci_client` reference that addresses this image at `host` (the
    /// registry itself or a mirror) under `repository` (possibly rewritten).
    pub fn at(&self, repository: &str, mirror_host: Option<&str>) -> oci_client::Reference {
        let mut r = match &self.digest {
            Some(d) => oci_client::Reference::with_digest(
                self.registry.clone(),
                repository.to_string(),
                d.clone(),
            ),
            None => oci_client::Reference::with_tag(
                self.registry.clone(),
                repository.to_string(),
                self.reference().to_string(),
            ),
        };
        if let Some(h) = mirror_host {
            // Requests go to the mirror with `?ns=<registry>`, as containerd
            // sends them, so one mirror can serve several registries.
            r.set_mirror_registry(h.to_string());
        }
        r
    }
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b[1..].iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// `host[:port]`: dot-separated components of letters, digits and inner
/// hyphens, or a bracketed IPv6 address.
fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && !p.contains(']') => (h, Some(p)),
        _ => (d, None),
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return !v6.is_empty() && v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        })
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_containerd() {
        let n = |s: &str| ImageRef::parse(s).unwrap().to_string();
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(n("rancher/k3s"), "docker.io/rancher/k3s:latest");
        assert_eq!(
            n("index.docker.io/library/nginx"),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(n("docker.io/nginx"), "docker.io/library/nginx:latest");
        assert_eq!(n("ghcr.io/a/b/c:v1"), "ghcr.io/a/b/c:v1");
        assert_eq!(n("localhost/foo"), "localhost/foo:latest");
        assert_eq!(
            n("127.0.0.1:5000/test/busybox:1"),
            "127.0.0.1:5000/test/busybox:1"
        );
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            n(&format!("busybox:1@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(
            n("localhost:5000/a_b__c-d--e.f"),
            "localhost:5000/a_b__c-d--e.f:latest"
        );
        assert_eq!(n("[::1]:5000/img:v1.0-rc_1"), "[::1]:5000/img:v1.0-rc_1");
        assert_eq!(
            n("my-registry.example.com/team/app"),
            "my-registry.example.com/team/app:latest"
        );
        for bad in [
            "UPPER/case",
            "busybox/Upper",
            "Busybox",
            "",
            "a b",
            "busybox:",
            "busybox:-x",
            "a//b",
            "a/b/",
            "-a",
            "a..b",
            "a___b",
            "host:port/x",
            "busybox@sha256:123",
            "busybox@md5:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(
            ImageRef::parse("Busybox")
                .unwrap_err()
                .to_string()
                .contains("must be lowercase")
        );
    }
}

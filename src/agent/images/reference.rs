//! Image references, normalized as containerd (and the Docker CLI) do:
//! `busybox` → `docker.io/library/busybox:latest`; a reference with both a
//! tag and a digest keeps only the digest.

use std::fmt;

use anyhow::{Result, anyhow, bail};

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
    pub fn parse(s: &str) -> Result<ImageRef> {
        let s = s.trim();
        let parsed = oci_client::Reference::try_from(s)
            .map_err(|e| anyhow!("invalid image reference {s:?}: {e}"))?;
        // The reference grammar lets an uppercase first component through as
        // a "domain"; when it is not one, it is a repository, and those are
        // lowercase (docker: "repository name must be lowercase").
        if parsed.repository().bytes().any(|b| b.is_ascii_uppercase()) {
            bail!("invalid image reference {s:?}: repository name must be lowercase");
        }
        let digest = parsed.digest().map(str::to_string);
        if let Some(d) = &digest {
            sha256_hex(d).map_err(|e| anyhow!("invalid image reference {s:?}: {e}"))?;
        }
        // ParseDockerRef drops the tag of a reference that also has a digest:
        // the digest alone names the content.
        let tag = if digest.is_some() {
            None
        } else {
            Some(parsed.tag().unwrap_or("latest").to_string())
        };
        Ok(ImageRef {
            registry: parsed.registry().to_string(),
            repository: parsed.repository().to_string(),
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
        assert!(ImageRef::parse("UPPER/case").is_err());
        assert!(ImageRef::parse("").is_err());
        assert!(ImageRef::parse("a b").is_err());
    }
}

//! Host-local IPAM, laid out like CNI's host-local plugin: one file per
//! leased address (named by the address, holding the pod uid) and a
//! `last_reserved_ip` file for round-robin allocation. Everything lives on
//! disk, so a restarted agent sees every live lease.

use std::io::{ErrorKind, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};

/// An IPv4 network in CIDR notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr> {
        let (addr, prefix) = s
            .trim()
            .split_once('/')
            .with_context(|| format!("CIDR {s:?} has no prefix length"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .with_context(|| format!("CIDR {s:?}: bad address"))?;
        let prefix: u8 = prefix
            .parse()
            .with_context(|| format!("CIDR {s:?}: bad prefix length"))?;
        if prefix > 32 {
            bail!("CIDR {s:?}: prefix length above 32");
        }
        let network = Ipv4Addr::from(u32::from(addr) & Self::mask_bits(prefix));
        Ok(Cidr { network, prefix })
    }

    fn mask_bits(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask_bits(self.prefix) == u32::from(self.network)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !Self::mask_bits(self.prefix))
    }

    /// The first host address: the bridge's, and the pods' gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

const LAST_RESERVED: &str = "last_reserved_ip";

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Leases of one pod CIDR in one directory. Callers serialize allocation
/// (the exclusive `link` also guards against a second process).
#[derive(Clone, Debug)]
pub struct Ipam {
    dir: PathBuf,
    cidr: Cidr,
}

impl Ipam {
    pub fn new(dir: &Path, cidr: Cidr) -> Result<Ipam> {
        if cidr.prefix > 30 {
            bail!("pod CIDR {cidr} is too small: it needs room for a gateway and pods");
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Ipam {
            dir: dir.to_path_buf(),
            cidr,
        })
    }

    /// Addresses pods may get: all but network, gateway and broadcast.
    fn range(&self) -> (u32, u32) {
        (
            u32::from(self.cidr.network) + 2,
            u32::from(self.cidr.broadcast()) - 1,
        )
    }

    /// Every lease on disk: (address, uid).
    pub fn leases(&self) -> Result<Vec<(Ipv4Addr, String)>> {
        leases_in(&self.dir)
    }

    /// The address leased to `uid`, if any.
    pub fn lookup(&self, uid: &str) -> Result<Option<Ipv4Addr>> {
        Ok(self
            .leases()?
            .into_iter()
            .filter(|(ip, _)| self.cidr.contains(*ip))
            .find(|(_, owner)| owner == uid)
            .map(|(ip, _)| ip))
    }

    /// Leases a free address to `uid` (or returns the one it already holds),
    /// round-robin from the last allocated so a just-freed address rests.
    pub fn allocate(&self, uid: &str) -> Result<Ipv4Addr> {
        if let Some(ip) = self.lookup(uid)? {
            return Ok(ip);
        }
        let (lo, hi) = self.range();
        let size = hi - lo + 1;
        let last = std::fs::read_to_string(self.dir.join(LAST_RESERVED))
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|ip| (lo..=hi).contains(ip));
        // Start just after the last reservation, or at the range start.
        let start = match last {
            Some(ip) if ip < hi => ip + 1,
            _ => lo,
        };
        for i in 0..size {
            let ip = Ipv4Addr::from(lo + (start - lo + i) % size);
            if self.try_reserve(ip, uid)? {
                write_atomic(&self.dir, LAST_RESERVED, ip.to_string().as_bytes())?;
                return Ok(ip);
            }
        }
        bail!(
            "IP addresses exhausted: all {size} addresses of pod CIDR {} are leased",
            self.cidr
        )
    }

    /// Writes the lease file for `ip` unless it exists. The content is
    /// written to a temporary file first and hard-linked into place, so the
    /// lease appears complete and only once.
    fn try_reserve(&self, ip: Ipv4Addr, uid: &str) -> Result<bool> {
        let path = self.dir.join(ip.to_string());
        if path.exists() {
            return Ok(false);
        }
        let tmp = write_tmp(&self.dir, uid.as_bytes())?;
        let res = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match res {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e).with_context(|| format!("writing lease {}", path.display())),
        }
    }

    /// Drops every lease of `uid`. Idempotent.
    pub fn release(&self, uid: &str) -> Result<()> {
        release_in(&self.dir, uid)
    }
}

/// Leases in `dir`, whatever CIDR they came from (killall needs no config).
pub fn leases_in(dir: &Path) -> Result<Vec<(Ipv4Addr, String)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(ip) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        match std::fs::read_to_string(entry.path()) {
            // host-local puts the interface name on a second line; keep the first.
            Ok(s) => out.push((ip, s.lines().next().unwrap_or("").trim().to_string())),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading lease {ip}")),
        }
    }
    out.sort();
    Ok(out)
}

pub fn release_in(dir: &Path, uid: &str) -> Result<()> {
    for (ip, owner) in leases_in(dir)? {
        if owner == uid {
            match std::fs::remove_file(dir.join(ip.to_string())) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("releasing lease {ip}")),
            }
        }
    }
    Ok(())
}

fn write_tmp(dir: &Path, content: &[u8]) -> Result<PathBuf> {
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    // No fsync: leases must survive an agent restart, not a host crash
    // (which takes the pods and their addresses with it).
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(content)?;
    Ok(tmp)
}

/// Replaces `dir/name` atomically (temporary file + rename).
pub fn write_atomic(dir: &Path, name: &str, content: &[u8]) -> Result<()> {
    let tmp = write_tmp(dir, content)?;
    let dest = dir.join(name);
    std::fs::rename(&tmp, &dest).with_context(|| format!("writing {}", dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_math() {
        let c = Cidr::parse("10.42.3.7/24").unwrap();
        assert_eq!(c.network, Ipv4Addr::new(10, 42, 3, 0));
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 42, 3, 1));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 42, 3, 255));
        assert!(c.contains(Ipv4Addr::new(10, 42, 3, 200)));
        assert!(!c.contains(Ipv4Addr::new(10, 42, 4, 1)));
        assert!(Cidr::parse("10.42.0.0").is_err());
        assert!(Cidr::parse("10.42.0.0/33").is_err());
    }

    #[test]
    fn ipam_round_robin_and_exhaustion() {
        let dir = tempfile::tempdir().unwrap();
        // /29: network .0, gateway .1, broadcast .7 → pods get .2 to .6.
        let ipam = Ipam::new(dir.path(), Cidr::parse("10.9.9.0/29").unwrap()).unwrap();
        let a = ipam.allocate("a").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 9, 9, 2));
        assert_eq!(ipam.allocate("a").unwrap(), a, "same uid, same lease");
        let b = ipam.allocate("b").unwrap();
        assert_eq!(b, Ipv4Addr::new(10, 9, 9, 3));
        ipam.release("a").unwrap();
        // The freed .2 is not reused next.
        assert_eq!(ipam.allocate("c").unwrap(), Ipv4Addr::new(10, 9, 9, 4));
        assert_eq!(ipam.allocate("d").unwrap(), Ipv4Addr::new(10, 9, 9, 5));
        assert_eq!(ipam.allocate("e").unwrap(), Ipv4Addr::new(10, 9, 9, 6));
        // Wraps around to the freed .2.
        assert_eq!(ipam.allocate("f").unwrap(), Ipv4Addr::new(10, 9, 9, 2));
        let err = ipam.allocate("g").unwrap_err().to_string();
        assert!(err.contains("exhausted"), "{err}");
        // A second allocator over the same directory (a restart) sees the leases.
        let again = Ipam::new(dir.path(), Cidr::parse("10.9.9.0/29").unwrap()).unwrap();
        assert_eq!(again.lookup("b").unwrap(), Some(b));
        ipam.release("b").unwrap();
        assert_eq!(again.allocate("g").unwrap(), Ipv4Addr::new(10, 9, 9, 3));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("10.9.9.3")).unwrap(),
            "g"
        );
    }
}

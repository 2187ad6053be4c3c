//! The pod network: per-pod namespaces, bridge + veth, host-local IPAM,
//! masquerade. Netlink through `rtnetlink`; no `ip` processes.
//!
//! All state lives under `state_dir` (namespace mounts in `ns/<uid>/`,
//! leases in `ipam/`, saved sysctls), so teardown and `remove_all` work
//! after an agent restart with nothing kept in memory.

mod ipam;
mod link;
mod netns;
mod nft;
mod sysctl;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use nix::sched::CloneFlags;
use sha2::Digest;

use ipam::{Cidr, Ipam};
use link::Netlink;
use netns::NsFiles;

/// Namespaces and address of one pod.
#[derive(Clone, Debug)]
pub struct Sandbox {
    /// Bind-mounted namespace files the containers join.
    pub netns: PathBuf,
    pub utsns: PathBuf,
    pub ipcns: PathBuf,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

/// Where and how the node's pod network is laid out.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// IPAM leases and namespace mounts (`<state_dir>/ns/<uid>/{net,uts,ipc}`).
    pub state_dir: PathBuf,
    /// Bridge name (default `skiff0`).
    pub bridge: String,
    /// This node's pod range, e.g. `10.42.0.0/24`; the bridge takes its first address.
    pub pod_cidr: String,
    /// The whole cluster's pod range (`10.42.0.0/16`): not masqueraded.
    pub cluster_cidr: String,
    /// nftables table (family ip) holding the masquerade rules (default `skiff-nat`).
    pub nft_table: String,
}

impl NetConfig {
    fn ns_root(&self) -> PathBuf {
        self.state_dir.join("ns")
    }
    fn ipam_dir(&self) -> PathBuf {
        self.state_dir.join("ipam")
    }
}

#[derive(Clone)]
pub struct PodNetwork {
    inner: Arc<Inner>,
}

struct Inner {
    config: NetConfig,
    pod: Cidr,
    ipam: Ipam,
    /// Serializes allocation within this process.
    ipam_lock: Mutex<()>,
    /// One lock per pod uid: setup and teardown of a pod never interleave.
    pod_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Host-side veth name: `veth` + 8 hex chars of sha256(uid), within IFNAMSIZ.
pub fn veth_name(uid: &str) -> String {
    let h = sha2::Sha256::digest(uid.as_bytes());
    format!("veth{}", &hex::encode(h)[..8])
}

/// The uid names a directory: refuse anything that is not one plain component.
fn check_uid(uid: &str) -> Result<()> {
    if uid.is_empty() || uid == "." || uid == ".." || uid.len() > 200 || uid.contains(['/', '\0']) {
        bail!("invalid pod uid {uid:?}");
    }
    Ok(())
}

/// Pod uids with a sandbox directory under `ns_root`.
fn list_sandboxes(ns_root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(ns_root) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    out.sort();
    out
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow!("blocking task failed: {e}"))?
}

/// Removes one sandbox, from what the state dir and the kernel say. The
/// directory goes last so an interrupted teardown is found again.
async fn teardown_at(config: &NetConfig, nl: &Netlink, uid: &str) -> Result<()> {
    // Deleting the host end deletes the peer inside the pod netns.
    link::delete_link(&nl.handle, &veth_name(uid)).await?;
    let files = NsFiles::new(&config.ns_root(), uid);
    let ipam_dir = config.ipam_dir();
    let uid = uid.to_string();
    blocking(move || {
        files.unmount()?;
        ipam::release_in(&ipam_dir, &uid)?;
        files.remove()
    })
    .await
}

impl PodNetwork {
    /// Sets up the bridge, forwarding sysctls and the masquerade table;
    /// re-reads leases so a restarted agent never reuses a live address.
    pub async fn init(config: NetConfig) -> Result<PodNetwork> {
        let pod = Cidr::parse(&config.pod_cidr).context("pod CIDR")?;
        let cluster = Cidr::parse(&config.cluster_cidr).context("cluster CIDR")?;
        for dir in [config.ns_root(), config.ipam_dir()] {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let ipam = Ipam::new(&config.ipam_dir(), pod)?;

        let state_dir = config.state_dir.clone();
        blocking(move || sysctl::apply(&state_dir)).await?;

        let nl = Netlink::new()?;
        link::ensure_bridge(&nl.handle, &config.bridge, pod.gateway(), pod.prefix).await?;
        nft::apply(nft::ruleset(
            &config.nft_table,
            &config.bridge,
            pod,
            cluster,
        ))
        .await?;

        // Leases are read from disk at every allocation; here, drop those
        // whose sandbox directory is gone (setup creates the directory
        // before leasing and teardown removes it last, so they are dead).
        let live = list_sandboxes(&config.ns_root());
        let leases = ipam.leases()?;
        for (ip, uid) in &leases {
            if !live.contains(uid) {
                tracing::info!(%ip, uid, "releasing orphaned lease");
                ipam.release(uid)?;
            }
        }
        tracing::info!(
            bridge = %config.bridge,
            pod_cidr = %pod,
            sandboxes = live.len(),
            leases = leases.len(),
            "pod network ready"
        );
        Ok(PodNetwork {
            inner: Arc::new(Inner {
                config,
                pod,
                ipam,
                ipam_lock: Mutex::new(()),
                pod_locks: Mutex::new(HashMap::new()),
            }),
        })
    }

    fn pod_lock(&self, uid: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .inner
            .pod_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        locks.entry(uid.to_string()).or_default().clone()
    }

    fn sandbox(&self, files: &NsFiles, ip: Ipv4Addr) -> Sandbox {
        Sandbox {
            netns: files.net.clone(),
            utsns: files.uts.clone(),
            ipcns: files.ipc.clone(),
            ip,
            gateway: self.inner.pod.gateway(),
        }
    }

    /// Idempotent: returns the existing sandbox of `uid` when there is one.
    pub async fn setup(&self, uid: &str, hostname: &str) -> Result<Sandbox> {
        check_uid(uid)?;
        let lock = self.pod_lock(uid);
        let _guard = lock.lock().await;
        let cfg = &self.inner.config;
        let pod = self.inner.pod;
        let files = NsFiles::new(&cfg.ns_root(), uid);

        // Directory before lease: every lease then has a sandbox to GC.
        std::fs::create_dir_all(&files.dir)
            .with_context(|| format!("creating {}", files.dir.display()))?;
        let ip = {
            let this = self.clone();
            let uid = uid.to_string();
            blocking(move || {
                let _g = this
                    .inner
                    .ipam_lock
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                this.inner.ipam.allocate(&uid)
            })
            .await?
        };

        let fresh = if files.mounted() {
            false
        } else {
            let (f, h) = (files.clone(), hostname.to_string());
            blocking(move || f.create(&h)).await?;
            true
        };

        let nl = Netlink::new()?;
        let bridge = match link::link_index(&nl.handle, &cfg.bridge).await? {
            Some(i) => i,
            // Someone deleted it since init: put it back.
            None => link::ensure_bridge(&nl.handle, &cfg.bridge, pod.gateway(), pod.prefix).await?,
        };
        let host = veth_name(uid);
        // The host end is attached last, so an attached end means done.
        if !fresh
            && let Some(l) = link::get_link(&nl.handle, &host).await?
            && link::attached_and_up(&l, bridge)
        {
            return Ok(self.sandbox(&files, ip));
        }

        link::delete_link(&nl.handle, &host).await?;
        let netns = std::fs::File::open(&files.net)
            .with_context(|| format!("opening {}", files.net.display()))?;
        let host_index = link::create_veth(&nl.handle, &host, netns.as_raw_fd()).await?;
        drop(netns);
        let (prefix, gateway) = (pod.prefix, pod.gateway());
        netns::netlink_in(&files.net, move |h| {
            link::configure_pod(h, ip, prefix, gateway)
        })
        .await
        .with_context(|| format!("configuring eth0 of pod {uid}"))?;
        link::attach(&nl.handle, host_index, bridge).await?;
        Ok(self.sandbox(&files, ip))
    }

    /// Removes veth, namespace mounts and the address lease. Idempotent.
    pub async fn teardown(&self, uid: &str) -> Result<()> {
        check_uid(uid)?;
        let lock = self.pod_lock(uid);
        let guard = lock.lock().await;
        let nl = Netlink::new()?;
        let res = teardown_at(&self.inner.config, &nl, uid).await;
        drop(guard);
        if res.is_ok() {
            let mut locks = self
                .inner
                .pod_locks
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            // Forget the lock unless another call is waiting on it.
            if locks.get(uid).is_some_and(|l| Arc::strong_count(l) == 2) {
                locks.remove(uid);
            }
        }
        res
    }

    /// Pod uids that have a sandbox on this node.
    pub fn sandboxes(&self) -> Vec<String> {
        list_sandboxes(&self.inner.config.ns_root())
    }
}

/// `skiff killall`: every sandbox, the bridge and the nftables table.
/// Carries on past failures and reports the first.
pub async fn remove_all(config: &NetConfig) -> Result<()> {
    let mut first: Option<anyhow::Error> = None;
    let mut note = |r: Result<()>, what: &str| {
        if let Err(e) = r {
            tracing::warn!(error = %format!("{e:#}"), "{what}");
            first.get_or_insert(e.context(what.to_string()));
        }
    };
    let nl = Netlink::new()?;
    for uid in list_sandboxes(&config.ns_root()) {
        note(teardown_at(config, &nl, &uid).await, "removing sandbox");
    }
    note(
        link::delete_link(&nl.handle, &config.bridge)
            .await
            .map(|_| ()),
        "deleting bridge",
    );
    note(
        nft::apply(nft::delete(&config.nft_table)).await,
        "deleting nftables table",
    );
    let state_dir = config.state_dir.clone();
    note(
        blocking(move || sysctl::restore(&state_dir)).await,
        "restoring sysctls",
    );
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Runs `f` on a fresh thread inside the network namespace `netns`; sockets
/// it opens stay in that namespace (port-forward, exec probes).
pub async fn run_in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    netns::in_ns(netns, CloneFlags::CLONE_NEWNET, move || Ok(f())).await
}

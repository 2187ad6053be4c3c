//! The pod network: per-pod namespaces, bridge + veth, host-local IPAM,
//! masquerade, hostPort DNAT. Netlink through `rtnetlink`; no `ip` processes.
//!
//! All state lives under `state_dir` (namespace mounts in `ns/<uid>/`,
//! leases in `ipam/`, hostPort mappings in `hostports/<uid>.json`, saved
//! sysctls), so teardown and `remove_all` work after an agent restart with
//! nothing kept in memory.

mod ipam;
mod link;
mod netns;
pub(crate) mod nft;
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
use serde::{Deserialize, Serialize};
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
    /// The bridge address, the pod's default route (kept for callers that
    /// report or check it; nothing reads it yet).
    #[allow(dead_code)]
    pub gateway: Ipv4Addr,
}

/// One `ports[].hostPort` of a pod: `host_ip:host_port` → `pod_ip:container_port`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPort {
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// Only traffic to this address (`hostIP`); None = every local address.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
}

/// What `hostports/<uid>.json` holds.
#[derive(Serialize, Deserialize)]
struct PodHostPorts {
    ip: Ipv4Addr,
    ports: Vec<HostPort>,
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
    fn hostports_dir(&self) -> PathBuf {
        self.state_dir.join("hostports")
    }
}

/// Every saved hostPort mapping, as (pod IP, mapping).
fn load_host_ports(config: &NetConfig) -> Vec<(Ipv4Addr, HostPort)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(config.hostports_dir()) else {
        return out;
    };
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for f in files {
        match std::fs::read(&f).map(|b| serde_json::from_slice::<PodHostPorts>(&b)) {
            Ok(Ok(p)) => out.extend(p.ports.into_iter().map(|hp| (p.ip, hp))),
            _ => tracing::warn!(file = %f.display(), "ignoring unreadable hostPort state"),
        }
    }
    out
}

#[derive(Clone)]
pub struct PodNetwork {
    inner: Arc<Inner>,
}

struct Inner {
    config: NetConfig,
    pod: Cidr,
    cluster: Cidr,
    /// Serializes rewrites of the nftables table.
    nft_lock: tokio::sync::Mutex<()>,
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
/// Forgets the pod's hostPort mappings; true if it had any (the table
/// then needs a rewrite).
fn remove_host_ports(config: &NetConfig, uid: &str) -> Result<bool> {
    let hp = config.hostports_dir().join(format!("{uid}.json"));
    match std::fs::remove_file(&hp) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", hp.display())),
    }
}

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
        for dir in [config.ns_root(), config.ipam_dir(), config.hostports_dir()] {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let ipam = Ipam::new(&config.ipam_dir(), pod)?;

        let state_dir = config.state_dir.clone();
        blocking(move || sysctl::apply(&state_dir)).await?;

        let nl = Netlink::new()?;
        link::ensure_bridge(&nl.handle, &config.bridge, pod.gateway(), pod.prefix).await?;
        // Mappings of pods that outlived an agent restart are put back.
        nft::apply(nft::ruleset(
            &config.nft_table,
            &config.bridge,
            pod,
            cluster,
            &load_host_ports(&config),
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
                cluster,
                nft_lock: tokio::sync::Mutex::new(()),
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

    /// Rewrites the table from the saved hostPort mappings.
    async fn apply_rules(&self) -> Result<()> {
        let _g = self.inner.nft_lock.lock().await;
        let cfg = &self.inner.config;
        nft::apply(nft::ruleset(
            &cfg.nft_table,
            &cfg.bridge,
            self.inner.pod,
            self.inner.cluster,
            &load_host_ports(cfg),
        ))
        .await
    }

    /// Makes `ports` the pod's hostPort mappings to `ip` (none: removes
    /// them). Idempotent; undone by `teardown`.
    pub async fn set_host_ports(&self, uid: &str, ip: Ipv4Addr, ports: &[HostPort]) -> Result<()> {
        check_uid(uid)?;
        let cfg = &self.inner.config;
        let dir = cfg.hostports_dir();
        let file = format!("{uid}.json");
        if ports.is_empty() {
            if !dir.join(&file).exists() {
                return Ok(());
            }
            std::fs::remove_file(dir.join(&file))
                .with_context(|| format!("removing {}", dir.join(&file).display()))?;
        } else {
            // A client on the node itself reaches a hostPort through
            // 127.0.0.1: DNATed to the pod, that packet may only leave
            // through the bridge with route_localnet.
            let (state_dir, bridge) = (cfg.state_dir.clone(), cfg.bridge.clone());
            blocking(move || sysctl::enable_route_localnet(&state_dir, &bridge)).await?;
            let state = PodHostPorts {
                ip,
                ports: ports.to_vec(),
            };
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            ipam::write_atomic(&dir, &file, &serde_json::to_vec(&state)?)?;
        }
        self.apply_rules().await
    }

    /// Removes veth, namespace mounts, hostPort rules and the address
    /// lease. Idempotent.
    pub async fn teardown(&self, uid: &str) -> Result<()> {
        check_uid(uid)?;
        let lock = self.pod_lock(uid);
        let guard = lock.lock().await;
        let nl = Netlink::new()?;
        // DNATs first: nothing must reach an address about to be reused.
        let mut res = match remove_host_ports(&self.inner.config, uid) {
            Ok(true) => self.apply_rules().await,
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        let down = teardown_at(&self.inner.config, &nl, uid).await;
        if res.is_ok() {
            res = down;
        }
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
    // Mappings whose sandbox is already gone; the table goes below.
    let _ = std::fs::remove_dir_all(config.hostports_dir());
    let (state_dir, bridge) = (config.state_dir.clone(), config.bridge.clone());
    note(
        blocking(move || sysctl::restore_route_localnet(&state_dir, &bridge)).await,
        "restoring route_localnet",
    );
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

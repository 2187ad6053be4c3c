//! The service proxy: kube-proxy's nftables mode, reduced. Watches Services
//! and EndpointSlices and keeps the node's own table `ip skiff-proxy` in
//! step, one atomic `nft -j -f -` transaction per (debounced) change.
//! See `rules.rs` for the table's layout.

pub(crate) mod model;
mod rules;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use crate::agent::network::nft;
use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

/// The proxy's table (family ip); nothing else writes it.
pub const TABLE: &str = "skiff-proxy";
/// Changes arriving within this window are applied together.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// Stale chains go this long after the sync that stopped using them.
const CLEANUP_DELAY: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub node_name: String,
    pub table: String,
    pub cluster_cidr: (Ipv4Addr, u8),
    /// (cluster DNS service address, this node's DNS server address).
    pub dns: Option<(Ipv4Addr, Ipv4Addr)>,
}

/// Parses `a.b.c.d/len`.
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((Ipv4Addr::from(u32::from(ip) & mask), len))
}

/// The first address of a range: the bridge's (and the node DNS server's).
pub fn first_address(cidr: &str) -> Option<Ipv4Addr> {
    parse_cidr(cidr).map(|(net, _)| Ipv4Addr::from(u32::from(net) + 1))
}

impl ProxyConfig {
    pub fn from_agent(cfg: &crate::agent::AgentConfig, pod_cidr: &str) -> ProxyConfig {
        let dns = cfg
            .cluster_dns
            .parse::<Ipv4Addr>()
            .ok()
            .zip(first_address(pod_cidr));
        ProxyConfig {
            node_name: cfg.node_name.clone(),
            table: TABLE.to_string(),
            cluster_cidr: parse_cidr(&cfg.cluster_cidr)
                .unwrap_or((Ipv4Addr::new(10, 42, 0, 0), 16)),
            dns,
        }
    }
}

/// The cluster's Services and EndpointSlices, watched once per agent and
/// read by both the service proxy and cluster DNS.
#[derive(Clone)]
pub struct ServiceWatch {
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
    changed: tokio::sync::watch::Receiver<()>,
}

impl ServiceWatch {
    pub fn start(client: kube::Client) -> ServiceWatch {
        let (tx, changed) = tokio::sync::watch::channel(());
        let tx = Arc::new(tx);
        ServiceWatch {
            services: watch::<Service>(kube::Api::all(client.clone()), tx.clone()),
            slices: watch::<EndpointSlice>(kube::Api::all(client), tx),
            changed,
        }
    }

    /// Waits for both initial lists; false if a watch ended first.
    pub async fn ready(&self) -> bool {
        self.services.wait_until_ready().await.is_ok()
            && self.slices.wait_until_ready().await.is_ok()
    }

    /// A receiver that sees each change once (bursts coalesce); each
    /// reader takes its own.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<()> {
        let mut rx = self.changed.clone();
        rx.mark_unchanged();
        rx
    }
}

/// Keeps a reflector store of `K` filled; signals `changed` on every change
/// once the initial list is complete.
fn watch<K>(api: kube::Api<K>, changed: Arc<tokio::sync::watch::Sender<()>>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => changed.send_replace(()),
                Err(e) => tracing::debug!("service watch: {e}"),
            }
        }
    });
    reader
}

/// Runs the proxy until the process ends.
pub async fn run(watch: ServiceWatch, cfg: ProxyConfig) {
    let mut changed = watch.changes();
    if !watch.ready().await {
        tracing::error!("service proxy: watches ended before their first list");
        return;
    }
    let (services, slices) = (&watch.services, &watch.slices);
    let mut params = rules::Params {
        table: cfg.table.clone(),
        cluster_cidr: cfg.cluster_cidr,
        dns: cfg.dns,
        existing_sets: BTreeSet::new(),
    };
    // What the table holds: objects a previous agent left are dropped once
    // a sync no longer uses them.
    let mut owned: BTreeSet<String> = existing_objects(&cfg.table).await;
    let mut stale: Vec<String>;
    let mut failures = 0u32;
    loop {
        params.existing_sets = owned
            .iter()
            .filter(|n| n.starts_with("affinity-"))
            .cloned()
            .collect();
        let ports = model::service_ports(&services.state(), &slices.state(), &cfg.node_name);
        let built = rules::build(&params, &ports);
        match apply(built.nft).await {
            Ok(()) => {
                failures = 0;
                let live: BTreeSet<String> = built.chains.union(&built.sets).cloned().collect();
                owned.extend(live.iter().cloned());
                stale = owned.difference(&live).cloned().collect();
                tracing::debug!(ports = ports.len(), stale = stale.len(), "proxy synced");
            }
            Err(e) => {
                failures += 1;
                tracing::warn!("service proxy sync failed: {e:#}");
                // Someone may have changed the table under us: start over
                // from what it holds now.
                owned = existing_objects(&cfg.table).await;
                // Retry with backoff even without a new change.
                let wait = Duration::from_millis(500 * u64::from(failures.min(20)));
                tokio::time::sleep(wait).await;
                continue;
            }
        }
        // Wait for a change; meanwhile, remove what the last sync left stale.
        if !stale.is_empty() {
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(CLEANUP_DELAY) => {
                    let (chains, sets): (Vec<String>, Vec<String>) =
                        stale.iter().cloned().partition(|n| !n.starts_with("affinity-"));
                    match apply(rules::cleanup(&cfg.table, &chains, &sets)).await {
                        Ok(()) => {
                            for n in &stale {
                                owned.remove(n);
                            }
                        }
                        Err(e) => tracing::warn!("service proxy cleanup failed: {e:#}"),
                    }
                    stale.clear();
                    if changed.changed().await.is_err() {
                        return;
                    }
                }
            }
        } else if changed.changed().await.is_err() {
            return;
        }
        tokio::time::sleep(DEBOUNCE).await;
    }
}

/// Names of the per-service chains and sets already in `table`.
async fn existing_objects(table: &str) -> BTreeSet<String> {
    let table = table.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(nft::nft_program())
            .args(["-j", "list", "table", "ip", &table])
            .output()
    })
    .await;
    let Ok(Ok(out)) = out else {
        return BTreeSet::new();
    };
    if !out.status.success() {
        return BTreeSet::new();
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return BTreeSet::new();
    };
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("chain").or_else(|| o.get("set")))
        .filter_map(|c| c["name"].as_str())
        .filter(|n| rules::is_service_object(n))
        .map(String::from)
        .collect()
}

async fn apply(rules: nftables::schema::Nftables<'static>) -> Result<()> {
    nft::apply_json(rules::to_json(&rules).to_string())
        .await
        .context("applying the service proxy's ruleset")
}

/// Deletes the proxy's table (for `skiff killall`).
pub async fn remove_table() -> Result<()> {
    apply(rules::delete_table(TABLE)).await
}

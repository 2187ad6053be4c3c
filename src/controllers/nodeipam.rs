//! Node IPAM (upstream's `nodeipam` controller, range allocator): gives each
//! Node without one a `/24` `podCIDR` out of the cluster CIDR
//! (`--cluster-cidr`, default 10.42.0.0/16; `node-cidr-mask-size`, default
//! 24). Ranges already recorded on Nodes are never handed out again; a
//! deleted Node's range becomes free.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

use super::informer::{Change, Subscription};

pub const DEFAULT_CLUSTER_CIDR: &str = "10.42.0.0/16";

/// `a.b.c.d/n` → (network, prefix length).
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    if len > 32 {
        return None;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((Ipv4Addr::from(u32::from(ip) & mask), len))
}

/// The `index`-th subnet of size `/sub` inside `net/len`.
fn subnet(net: Ipv4Addr, len: u8, sub: u8, index: u32) -> Option<String> {
    if sub < len || sub > 32 {
        return None;
    }
    let count = 1u64 << (sub - len);
    if u64::from(index) >= count {
        return None;
    }
    let base = u32::from(net) + (index << (32 - sub));
    Some(format!("{}/{sub}", Ipv4Addr::from(base)))
}

/// First free range, in order.
fn allocate(cluster: &str, mask: u8, used: &BTreeSet<String>) -> Option<String> {
    let (net, len) = parse_cidr(cluster)?;
    let count = 1u32.checked_shl(u32::from(mask.saturating_sub(len)))?;
    (0..count)
        .filter_map(|i| subnet(net, len, mask, i))
        .find(|c| !used.contains(c))
}

/// Allocates for nodes the shared node informer reports without a range.
/// The subscription is drained at once (a slow subscriber would hold up the
/// shared informer); allocations, each an API write, run one at a time
/// behind it, each re-checked against the store first.
pub async fn run(client: Client, nodes: Subscription<Node>) {
    let cluster = super::arg("cluster-cidr").unwrap_or(DEFAULT_CLUSTER_CIDR);
    let mask: u8 = super::arg("node-cidr-mask-size")
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let api: Api<Node> = Api::all(client);
    let store = nodes.store();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let feed = nodes.changes().for_each(move |change| {
        if let Change::Added(n) | Change::Updated(_, n) = change
            && !has_cidr(&n)
        {
            let _ = tx.send(n.name_any());
        }
        async {}
    });
    let allocate = async {
        while let Some(name) = rx.recv().await {
            if store
                .get(&ObjectRef::new(&name))
                .is_some_and(|n| !has_cidr(&n))
            {
                assign(&api, &store, &name, cluster, mask).await;
            }
        }
    };
    tokio::join!(feed, allocate);
}

fn has_cidr(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .is_some_and(|c| !c.is_empty())
}

async fn assign(api: &Api<Node>, store: &Store<Node>, name: &str, cluster: &str, mask: u8) {
    let used: BTreeSet<String> = store
        .state()
        .iter()
        .filter_map(|n| n.spec.as_ref()?.pod_cidr.clone())
        .collect();
    let Some(cidr) = allocate(cluster, mask, &used) else {
        tracing::warn!(node = name, "no pod CIDR left in {cluster}");
        return;
    };
    let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => tracing::info!(node = name, pod_cidr = %cidr, "allocated pod CIDR"),
        Err(e) => tracing::warn!(node = name, "allocating pod CIDR: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_lowest_free_range() {
        let mut used = BTreeSet::new();
        assert_eq!(allocate("10.42.0.0/16", 24, &used).unwrap(), "10.42.0.0/24");
        used.insert("10.42.0.0/24".to_string());
        used.insert("10.42.2.0/24".to_string());
        assert_eq!(allocate("10.42.0.0/16", 24, &used).unwrap(), "10.42.1.0/24");
        let all: BTreeSet<String> = (0..4).map(|i| format!("10.42.0.{}/26", i * 64)).collect();
        assert_eq!(allocate("10.42.0.0/24", 26, &all), None);
        assert_eq!(
            parse_cidr("10.42.7.9/16").unwrap().0,
            Ipv4Addr::new(10, 42, 0, 0)
        );
    }
}

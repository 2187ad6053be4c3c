//! Pod garbage collection (upstream's `pod-garbage-collector`), every 20 s
//! and when a node is deleted:
//!
//! - terminated pods (Succeeded/Failed) beyond `terminated-pod-gc-threshold`
//!   (12500; 0 disables) are deleted, evicted and oldest first;
//! - pods bound to a node that no longer exists are marked Failed (with a
//!   `DisruptionTarget` condition) and force-deleted, once the node has
//!   been missing for a 40 s quarantine and a fresh read confirms it;
//! - terminating pods that were never scheduled are force-deleted;
//! - terminating pods on a node that is not ready and carries the
//!   `node.kubernetes.io/out-of-service` taint are force-deleted (their
//!   kubelet will not finish them; the operator has declared the node dead).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::informer::{Change, Subscription};

const GC_PERIOD: Duration = Duration::from_secs(20);
/// How long a node must be missing before its pods count as orphaned, so
/// that a node that is only late in our cache is not mistaken for gone.
const QUARANTINE: Duration = Duration::from_secs(40);
const DEFAULT_THRESHOLD: i64 = 12500;
const TAINT_OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

/// Reads the shared pod and node stores; node deletions (from the node
/// subscription) wake a pass early.
pub async fn run(client: Client, pods: Store<Pod>, nodes: Subscription<Node>) {
    let threshold = super::arg("terminated-pod-gc-threshold")
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(DEFAULT_THRESHOLD);
    let node_deleted = Arc::new(Notify::new());
    let node_store = nodes.store();
    let wake = node_deleted.clone();
    let node_deletions = nodes.changes().for_each(move |change| {
        if let Change::Deleted(_) = change {
            wake.notify_one();
        }
        async {}
    });
    let gc = gc_loop(client, node_store, pods, threshold, node_deleted);
    tokio::join!(node_deletions, gc);
}

async fn gc_loop(
    client: Client,
    nodes: Store<Node>,
    pods: Store<Pod>,
    threshold: i64,
    node_deleted: Arc<Notify>,
) {
    if nodes.wait_until_ready().await.is_err() || pods.wait_until_ready().await.is_err() {
        return;
    }
    // Missing node → when we first noticed.
    let mut quarantine: HashMap<String, Instant> = HashMap::new();
    loop {
        gc_terminated(&client, &pods, threshold).await;
        gc_terminating(&client, &pods, &nodes).await;
        gc_orphaned(&client, &pods, &nodes, &mut quarantine).await;
        gc_unscheduled_terminating(&client, &pods).await;
        // Sleep until the next period, the end of a quarantine, or a node
        // deletion.
        let now = Instant::now();
        // (Expired entries stay, so that a failed deletion is retried on
        // the next period without a new quarantine.)
        let wait = quarantine
            .values()
            .map(|t| *t + QUARANTINE)
            .filter(|end| *end > now)
            .map(|end| end - now)
            .min()
            .map_or(GC_PERIOD, |d| d.min(GC_PERIOD))
            .max(Duration::from_millis(200));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = node_deleted.notified() => {}
        }
    }
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn node_name(p: &Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

fn terminal(p: &Pod) -> bool {
    matches!(phase(p), "Succeeded" | "Failed")
}

/// upstream `markFailedAndDeletePodWithCondition`: a pod that is not
/// terminal is first moved to Failed (nobody else will: its kubelet is
/// gone), then deleted with no grace period.
async fn mark_failed_and_delete(client: &Client, pod: &Pod, condition: Option<(&str, &str)>) {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    if !terminal(pod) {
        let mut status = json!({"phase": "Failed"});
        if let Some((reason, message)) = condition {
            status["conditions"] = json!([{"type": "DisruptionTarget", "status": "True",
                "reason": reason, "message": message,
                "lastTransitionTime": Time(k8s_openapi::jiff::Timestamp::now())}]);
        }
        let patch = Patch::Strategic(json!({ "status": status }));
        match api
            .patch_status(&name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return,
            Err(e) => {
                tracing::debug!(namespace = %ns, pod = %name, "pod GC: marking failed: {e}");
                return;
            }
        }
    }
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: pod
            .metadata
            .uid
            .clone()
            .map(|uid| kube::api::Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => tracing::info!(namespace = %ns, pod = %name, "pod garbage-collected"),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => tracing::debug!(namespace = %ns, pod = %name, "pod GC: deleting: {e}"),
    }
}

/// Terminated pods beyond the threshold, evicted ones first, then oldest.
async fn gc_terminated(client: &Client, pods: &Store<Pod>, threshold: i64) {
    if threshold <= 0 {
        return;
    }
    let mut done: Vec<Arc<Pod>> = pods
        .state()
        .into_iter()
        .filter(|p| terminal(p) && p.metadata.deletion_timestamp.is_none())
        .collect();
    let excess = done.len() as i64 - threshold;
    if excess <= 0 {
        return;
    }
    let evicted = |p: &Pod| p.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted");
    done.sort_by(|a, b| {
        evicted(b)
            .cmp(&evicted(a))
            .then_with(|| {
                a.metadata
                    .creation_timestamp
                    .cmp(&b.metadata.creation_timestamp)
            })
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    tracing::info!(
        count = excess,
        threshold,
        "garbage-collecting terminated pods"
    );
    for pod in done.iter().take(excess as usize) {
        mark_failed_and_delete(client, pod, None).await;
    }
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Terminating pods on nodes declared out of service while not ready.
async fn gc_terminating(client: &Client, pods: &Store<Pod>, nodes: &Store<Node>) {
    let out_of_service: HashSet<String> = nodes
        .state()
        .iter()
        .filter(|n| !node_ready(n))
        .filter(|n| {
            n.spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|ts| ts.iter().any(|t| t.key == TAINT_OUT_OF_SERVICE))
        })
        .map(|n| n.name_any())
        .collect();
    if out_of_service.is_empty() {
        return;
    }
    for pod in pods.state() {
        if pod.metadata.deletion_timestamp.is_some() && out_of_service.contains(node_name(&pod)) {
            mark_failed_and_delete(client, &pod, None).await;
        }
    }
}

/// Pods bound to nodes that are gone, after the quarantine.
async fn gc_orphaned(
    client: &Client,
    pods: &Store<Pod>,
    nodes: &Store<Node>,
    quarantine: &mut HashMap<String, Instant>,
) {
    let existing: HashSet<String> = nodes.state().iter().map(|n| n.name_any()).collect();
    let all = pods.state();
    let now = Instant::now();
    let mut missing: HashSet<&str> = HashSet::new();
    for pod in &all {
        let node = node_name(pod);
        if !node.is_empty() && !existing.contains(node) {
            missing.insert(node);
            quarantine.entry(node.to_string()).or_insert(now);
        }
    }
    quarantine.retain(|n, _| missing.contains(n.as_str()));
    let api: Api<Node> = Api::all(client.clone());
    let mut deleted: HashSet<String> = HashSet::new();
    for (node, since) in quarantine.iter() {
        if now.duration_since(*since) < QUARANTINE {
            continue;
        }
        // Our cache could lag; only a fresh read settles it.
        if let Ok(None) = api.get_opt(node).await {
            deleted.insert(node.clone());
        }
    }
    for pod in &all {
        if deleted.contains(node_name(pod)) {
            mark_failed_and_delete(
                client,
                pod,
                Some(("DeletionByPodGC", "PodGC: node no longer exists")),
            )
            .await;
        }
    }
}

/// Terminating pods that never got a node: no kubelet will finish them.
async fn gc_unscheduled_terminating(client: &Client, pods: &Store<Pod>) {
    for pod in pods.state() {
        if pod.metadata.deletion_timestamp.is_some() && node_name(&pod).is_empty() {
            mark_failed_and_delete(client, &pod, None).await;
        }
    }
}

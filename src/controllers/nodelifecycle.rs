//! Node lifecycle, as upstream's `node-lifecycle-controller` and
//! `taint-eviction-controller`:
//!
//! - Health monitoring: a node whose kubelet stopped renewing its Lease
//!   (kube-node-lease/<node>) and posting status for longer than
//!   `node-monitor-grace-period` gets its conditions set to Unknown
//!   (`NodeStatusUnknown`) and the pods on it marked not Ready.
//! - Tainting: Ready=False/Unknown become the `node.kubernetes.io/not-ready`
//!   / `unreachable` taints (NoSchedule at once; NoExecute rate-limited per
//!   zone and withheld when every zone is down, so that a cluster that lost
//!   all its nodes — or a single-node cluster — does not evict everything);
//!   pressure conditions and `spec.unschedulable` become NoSchedule taints.
//! - Taint eviction: pods on a node with NoExecute taints they do not
//!   tolerate are deleted at once; those tolerating them for
//!   `tolerationSeconds` are deleted when that runs out.
//!
//! Controller arguments: `node-monitor-grace-period` (40s),
//! `node-monitor-period` (5s), `node-startup-grace-period` (60s),
//! `node-eviction-rate` (0.1), `secondary-node-eviction-rate` (0.01),
//! `unhealthy-zone-threshold` (0.55), `large-cluster-size-threshold` (50).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

use super::informer::Subscription;

pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
const TAINT_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
const TAINT_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
const TAINT_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";
/// NoSchedule taints this controller owns: it adds and removes them.
const NO_SCHEDULE_KEYS: [&str; 7] = [
    TAINT_NOT_READY,
    TAINT_UNREACHABLE,
    TAINT_UNSCHEDULABLE,
    TAINT_MEMORY_PRESSURE,
    TAINT_DISK_PRESSURE,
    TAINT_PID_PRESSURE,
    TAINT_NETWORK_UNAVAILABLE,
];
/// Conditions the controller sets to Unknown when the kubelet goes silent
/// (NetworkUnavailable belongs to the network plugin).
const KUBELET_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];
const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
const LABEL_REGION: &str = "topology.kubernetes.io/region";
const CONTROLLER_NAME: &str = "node-controller";

#[derive(Clone, Copy, Debug)]
struct Settings {
    grace: Duration,
    period: Duration,
    startup_grace: Duration,
    eviction_rate: f64,
    secondary_rate: f64,
    unhealthy_threshold: f64,
    large_cluster: usize,
}

impl Settings {
    fn from_args() -> Settings {
        let f = |key: &str, default: f64| {
            super::arg(key)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
                .unwrap_or(default)
        };
        Settings {
            grace: super::arg_duration("node-monitor-grace-period", Duration::from_secs(40)),
            period: super::arg_duration("node-monitor-period", Duration::from_secs(5))
                .max(Duration::from_millis(100)),
            startup_grace: super::arg_duration(
                "node-startup-grace-period",
                Duration::from_secs(60),
            ),
            eviction_rate: f("node-eviction-rate", 0.1),
            secondary_rate: f("secondary-node-eviction-rate", 0.01),
            unhealthy_threshold: f("unhealthy-zone-threshold", 0.55),
            large_cluster: f("large-cluster-size-threshold", 50.0) as usize,
        }
    }
}

struct Ctx {
    client: Client,
    recorder: Recorder,
    /// Pods scheduled for taint eviction: pod uid → (node, when first seen
    /// on a tainted node). Upstream times tolerationSeconds from there.
    pending: Mutex<HashMap<String, (String, Instant)>>,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct Error(#[from] kube::Error);

pub async fn run(client: Client, pods: Subscription<Pod>, nodes: Subscription<Node>) {
    let settings = Settings::from_args();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: CONTROLLER_NAME.into(),
            instance: None,
        },
    );
    let (leases, lease_writer) = reflector::store::<Lease>();
    let lease_watch = watcher(
        Api::<Lease>::namespaced(client.clone(), "kube-node-lease"),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(lease_writer)
    .for_each(|_| async {});
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        recorder,
        pending: Mutex::new(HashMap::new()),
    });
    let node_store = nodes.store();
    let controller = Controller::for_shared_stream(nodes.objects(), node_store.clone());
    // Pods wake their node's reconcile: a pod bound to a tainted node may
    // need evicting.
    let taints = controller
        .watches_shared_stream(pods.objects(), |pod| {
            pod.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .filter(|n| !n.is_empty())
                .map(ObjectRef::<Node>::new)
        })
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    tokio::join!(
        lease_watch,
        taints,
        monitor(ctx, node_store, leases, settings)
    );
}

fn error_policy(_: Arc<Node>, err: &Error, _: Arc<Ctx>) -> Action {
    tracing::debug!("node lifecycle: {err}");
    Action::requeue(Duration::from_secs(2))
}

fn now_time() -> Time {
    Time(Timestamp::now())
}

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[])
}

/// Upstream's zone key: region and zone labels.
fn zone_key(node: &Node) -> String {
    let l = node.labels();
    format!(
        "{}:\0:{}",
        l.get(LABEL_REGION).map(String::as_str).unwrap_or(""),
        l.get(LABEL_ZONE).map(String::as_str).unwrap_or("")
    )
}

/// Rewrites the node's taints with `edit` (re-reading on conflict); no
/// write when nothing changes.
async fn edit_taints(
    client: &Client,
    name: &str,
    edit: impl Fn(&mut Vec<Taint>),
) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    for _ in 0..5 {
        let Some(mut node) = api.get_opt(name).await? else {
            return Ok(());
        };
        let before = taints(&node).to_vec();
        let mut after = before.clone();
        edit(&mut after);
        if after == before {
            return Ok(());
        }
        node.spec.get_or_insert_with(Default::default).taints =
            (!after.is_empty()).then_some(after);
        match api.replace(name, &PostParams::default(), &node).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

// ---- health monitoring (upstream monitorNodeHealth) ----

#[derive(Default)]
struct Health {
    /// Last seen lease renewTime and Ready heartbeat, to notice changes.
    lease_renew: Option<Timestamp>,
    heartbeat: Option<Timestamp>,
    /// When this controller last saw the kubelet alive (local clock, as
    /// upstream: remote clocks are not trusted).
    probe: Option<Instant>,
}

/// Per-zone NoExecute tainting limiter (token bucket of one).
struct Limiter {
    tokens: f64,
    last: Instant,
}

impl Limiter {
    fn new() -> Limiter {
        Limiter {
            tokens: 1.0,
            last: Instant::now(),
        }
    }
    fn try_take(&mut self, qps: f64) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * qps).min(1.0);
        self.last = now;
        if qps > 0.0 && self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum ZoneState {
    Normal,
    Partial,
    Full,
}

async fn monitor(ctx: Arc<Ctx>, nodes: Store<Node>, leases: Store<Lease>, s: Settings) {
    if nodes.wait_until_ready().await.is_err() || leases.wait_until_ready().await.is_err() {
        return;
    }
    let mut health: HashMap<String, Health> = HashMap::new();
    let mut limiters: HashMap<String, Limiter> = HashMap::new();
    let mut all_down = false;
    loop {
        let snapshot = nodes.state();
        let names: HashSet<String> = snapshot.iter().map(|n| n.name_any()).collect();
        health.retain(|n, _| names.contains(n));
        ctx.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (n, _)| names.contains(n));
        // Node name → its Ready status after this pass.
        let mut ready: BTreeMap<String, Option<String>> = BTreeMap::new();
        for node in &snapshot {
            let name = node.name_any();
            let lease = leases.get(&ObjectRef::new(&name).within("kube-node-lease"));
            let status = check_health(&ctx, node, lease.as_deref(), &mut health, &s).await;
            ready.insert(name, status);
        }

        // Zone states, as upstream's ComputeZoneState.
        let mut zones: HashMap<String, (usize, usize)> = HashMap::new();
        for node in &snapshot {
            // A node still within its startup grace has no say yet (it
            // would make a starting cluster look entirely down).
            let Some(status) = ready.get(&node.name_any()).cloned().flatten() else {
                continue;
            };
            let z = zones.entry(zone_key(node)).or_default();
            if status == "True" {
                z.0 += 1;
            } else {
                z.1 += 1;
            }
        }
        let state_of = |(ok, bad): (usize, usize)| {
            if ok == 0 && bad > 0 {
                ZoneState::Full
            } else if bad > 2 && bad as f64 / (ok + bad) as f64 >= s.unhealthy_threshold {
                ZoneState::Partial
            } else {
                ZoneState::Normal
            }
        };
        let was_all_down = all_down;
        all_down = !zones.is_empty() && zones.values().all(|z| state_of(*z) == ZoneState::Full);
        if all_down && !was_all_down {
            tracing::warn!(
                "every node is not ready: no NoExecute tainting until one comes back (master disruption mode)"
            );
        } else if was_all_down && !all_down {
            tracing::info!("a node is ready again: leaving master disruption mode");
        }

        for node in &snapshot {
            let name = node.name_any();
            // No Ready condition yet: a node still starting, left alone.
            let Some(status) = ready.get(&name).cloned().flatten() else {
                continue;
            };
            let want = match status.as_str() {
                "True" => None,
                "False" => Some(TAINT_NOT_READY),
                _ => Some(TAINT_UNREACHABLE),
            };
            let current: Vec<&Taint> = taints(node)
                .iter()
                .filter(|t| {
                    t.effect == "NoExecute"
                        && (t.key == TAINT_NOT_READY || t.key == TAINT_UNREACHABLE)
                })
                .collect();
            let result = match want {
                // Ready (or every zone down): lift the NoExecute taints at once.
                Some(_) if all_down => {
                    if current.is_empty() {
                        continue;
                    }
                    edit_taints(&ctx.client, &name, remove_no_execute).await
                }
                None => {
                    if current.is_empty() {
                        continue;
                    }
                    edit_taints(&ctx.client, &name, remove_no_execute).await
                }
                Some(key) => {
                    if current.iter().any(|t| t.key == key) && current.len() == 1 {
                        continue;
                    }
                    // Swapping not-ready ⇄ unreachable is not rate-limited;
                    // tainting a healthy-looking node is.
                    if current.is_empty() {
                        let zone = zone_key(node);
                        let zstate = state_of(zones.get(&zone).copied().unwrap_or_default());
                        let size = zones.get(&zone).map(|z| z.0 + z.1).unwrap_or(0);
                        let qps = match zstate {
                            ZoneState::Normal | ZoneState::Full => s.eviction_rate,
                            ZoneState::Partial if size > s.large_cluster => s.secondary_rate,
                            ZoneState::Partial => 0.0,
                        };
                        if !limiters
                            .entry(zone)
                            .or_insert_with(Limiter::new)
                            .try_take(qps)
                        {
                            continue;
                        }
                    }
                    let key = key.to_string();
                    edit_taints(&ctx.client, &name, move |ts| {
                        remove_no_execute(ts);
                        ts.push(Taint {
                            key: key.clone(),
                            effect: "NoExecute".into(),
                            time_added: Some(now_time()),
                            value: None,
                        });
                    })
                    .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(node = %name, "updating NoExecute taints: {e}");
            }
        }
        tokio::time::sleep(s.period).await;
    }
}

/// Drops the node-health NoExecute taints.
fn remove_no_execute(ts: &mut Vec<Taint>) {
    ts.retain(|t| {
        !(t.effect == "NoExecute" && (t.key == TAINT_NOT_READY || t.key == TAINT_UNREACHABLE))
    })
}

/// Updates what we know of the node's liveness; when it has been silent
/// for longer than the grace period, sets its kubelet conditions to
/// Unknown. Returns its Ready status after that.
async fn check_health(
    ctx: &Ctx,
    node: &Node,
    lease: Option<&Lease>,
    health: &mut HashMap<String, Health>,
    s: &Settings,
) -> Option<String> {
    let name = node.name_any();
    let now = Instant::now();
    let h = health.entry(name.clone()).or_default();
    let renew = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0);
    let ready = condition(node, "Ready");
    let heartbeat = ready
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0);
    if h.probe.is_none() || renew != h.lease_renew || heartbeat != h.heartbeat {
        h.probe = Some(now);
        h.lease_renew = renew;
        h.heartbeat = heartbeat;
    }
    let status = ready.map(|c| c.status.clone());
    // A node whose kubelet never posted a status gets the startup grace.
    let grace = if ready.is_none() {
        s.startup_grace
    } else {
        s.grace
    };
    let silent = h.probe.is_some_and(|p| now.duration_since(p) > grace);
    if !silent {
        if status.as_deref().is_some_and(|s| s != "True") {
            mark_pods_not_ready(ctx, &name).await;
        }
        return status;
    }
    let now_t = now_time();
    let mut changed = Vec::new();
    for type_ in KUBELET_CONDITIONS {
        match condition(node, type_) {
            None => changed.push(json!({"type": type_, "status": "Unknown",
                "reason": "NodeStatusNeverUpdated", "message": "Kubelet never posted node status.",
                "lastHeartbeatTime": node.metadata.creation_timestamp, "lastTransitionTime": now_t})),
            Some(c) if c.status != "Unknown" => changed.push(json!({"type": type_, "status": "Unknown",
                "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status.",
                "lastHeartbeatTime": c.last_heartbeat_time, "lastTransitionTime": now_t})),
            Some(_) => {}
        }
    }
    if !changed.is_empty() {
        let api: Api<Node> = Api::all(ctx.client.clone());
        let patch = Patch::Strategic(json!({"status": {"conditions": changed}}));
        match api
            .patch_status(&name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => {
                tracing::info!(node = %name, "node stopped posting status: conditions set to Unknown");
                if status.as_deref() == Some("True") {
                    publish(
                        ctx,
                        &node.object_ref(&()),
                        EventType::Normal,
                        "NodeNotReady",
                        &format!("Node {name} status is now: NodeNotReady"),
                    )
                    .await;
                }
            }
            Err(e) => {
                tracing::debug!(node = %name, "marking node Unknown: {e}");
                return status;
            }
        }
    }
    mark_pods_not_ready(ctx, &name).await;
    Some("Unknown".into())
}

async fn publish(
    ctx: &Ctx,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note.into()),
        action: reason.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, reference).await {
        tracing::debug!("event {reason}: {e}");
    }
}

/// upstream `MarkPodsNotReady`: the pods of a node that is not ready are
/// not ready either (the kubelet cannot say otherwise).
async fn mark_pods_not_ready(ctx: &Ctx, node: &str) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let Ok(pods) = api
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
    else {
        return;
    };
    for pod in pods {
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
        if ready.is_none_or(|c| c.status == "False") {
            continue;
        }
        let ns = pod.namespace().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = Patch::Strategic(json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "lastTransitionTime": now_time()}]}}));
        match pods
            .patch_status(&pod.name_any(), &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => {
                publish(
                    ctx,
                    &pod.object_ref(&()),
                    EventType::Warning,
                    "NodeNotReady",
                    "Node is not ready",
                )
                .await
            }
            Err(e) => tracing::debug!(pod = %pod.name_any(), "marking pod not ready: {e}"),
        }
    }
}

// ---- per-node reconcile: NoSchedule taints and taint eviction ----

async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = node.name_any();
    sync_no_schedule_taints(&ctx, &node).await?;
    let no_execute: Vec<Taint> = taints(&node)
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .cloned()
        .collect();
    if no_execute.is_empty() {
        cancel_evictions(&ctx, &name, &HashSet::new()).await;
        return Ok(Action::await_change());
    }
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let pods = api
        .list(&ListParams::default().fields(&format!("spec.nodeName={name}")))
        .await?;
    let now = Instant::now();
    let mut next: Option<Duration> = None;
    let mut waiting: HashSet<String> = HashSet::new();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        let due = match min_toleration(&no_execute, &tolerations) {
            // Tolerates every NoExecute taint forever.
            Some(None) => continue,
            // Does not tolerate one of them: evict now.
            None => Duration::ZERO,
            Some(Some(secs)) => {
                let first = {
                    let mut pending = ctx.pending.lock().unwrap_or_else(|e| e.into_inner());
                    pending
                        .entry(uid.clone())
                        .or_insert_with(|| (name.clone(), now))
                        .1
                };
                (first + secs).saturating_duration_since(now)
            }
        };
        if due.is_zero() {
            evict(&ctx, &pod).await;
            ctx.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&uid);
        } else {
            waiting.insert(uid);
            next = Some(next.map_or(due, |n| n.min(due)));
        }
    }
    cancel_evictions(&ctx, &name, &waiting).await;
    Ok(match next {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

/// Forgets scheduled evictions of pods on `node` that are not in `keep`
/// (their taint went away, or they left).
async fn cancel_evictions(ctx: &Ctx, node: &str, keep: &HashSet<String>) {
    let mut pending = ctx.pending.lock().unwrap_or_else(|e| e.into_inner());
    pending.retain(|uid, (n, _)| n != node || keep.contains(uid));
}

/// upstream `ToleratesTaint`.
fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    if t.key
        .as_deref()
        .is_some_and(|k| !k.is_empty() && k != taint.key)
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// For a pod's tolerations against a node's NoExecute taints: None when a
/// taint is not tolerated, Some(None) when all are tolerated forever,
/// Some(Some(d)) when the shortest tolerationSeconds is d.
fn min_toleration(taints: &[Taint], tolerations: &[Toleration]) -> Option<Option<Duration>> {
    let mut used: Vec<&Toleration> = Vec::new();
    for taint in taints {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return None;
        }
        used.extend(matching);
    }
    let mut min: Option<i64> = None;
    for t in used {
        if let Some(secs) = t.toleration_seconds {
            min = Some(min.map_or(secs, |m| m.min(secs)));
        }
    }
    Some(min.map(|s| Duration::from_secs(s.max(0) as u64)))
}

/// Deletes a pod for a NoExecute taint, marking why first (upstream's
/// DisruptionTarget condition).
async fn evict(ctx: &Ctx, pod: &Pod) {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = Patch::Strategic(json!({"status": {"conditions": [{
        "type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
        "message": "Taint manager: deleting due to NoExecute taint",
        "lastTransitionTime": now_time()}]}}));
    if let Err(e) = api
        .patch_status(&name, &PatchParams::default(), &patch)
        .await
    {
        tracing::debug!(pod = %name, "marking pod for taint eviction: {e}");
    }
    let dp = DeleteParams {
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
        Ok(_) => {
            tracing::info!(namespace = %ns, pod = %name, "evicted for a NoExecute taint");
            publish(
                ctx,
                &pod.object_ref(&()),
                EventType::Normal,
                "TaintManagerEviction",
                &format!("Marking for deletion Pod {ns}/{name}"),
            )
            .await;
        }
        Err(e) => tracing::debug!(pod = %name, "taint eviction: {e}"),
    }
}

/// upstream `doNoScheduleTaintingPass`: NoSchedule taints mirror the
/// node's conditions and `spec.unschedulable`.
async fn sync_no_schedule_taints(ctx: &Ctx, node: &Node) -> Result<(), kube::Error> {
    let mut want: Vec<&str> = Vec::new();
    for c in node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
    {
        let key = match (c.type_.as_str(), c.status.as_str()) {
            ("Ready", "False") => TAINT_NOT_READY,
            ("Ready", "Unknown") => TAINT_UNREACHABLE,
            ("MemoryPressure", "True") => TAINT_MEMORY_PRESSURE,
            ("DiskPressure", "True") => TAINT_DISK_PRESSURE,
            ("PIDPressure", "True") => TAINT_PID_PRESSURE,
            ("NetworkUnavailable", "True") => TAINT_NETWORK_UNAVAILABLE,
            _ => continue,
        };
        want.push(key);
    }
    if node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        want.push(TAINT_UNSCHEDULABLE);
    }
    let have: Vec<&str> = taints(node)
        .iter()
        .filter(|t| t.effect == "NoSchedule" && NO_SCHEDULE_KEYS.contains(&t.key.as_str()))
        .map(|t| t.key.as_str())
        .collect();
    let mut a = want.clone();
    let mut b = have.clone();
    a.sort_unstable();
    b.sort_unstable();
    if a == b {
        return Ok(());
    }
    let want: Vec<String> = want.into_iter().map(str::to_string).collect();
    edit_taints(&ctx.client, &node.name_any(), move |ts| {
        ts.retain(|t| !(t.effect == "NoSchedule" && NO_SCHEDULE_KEYS.contains(&t.key.as_str())));
        for key in &want {
            ts.push(Taint {
                key: key.clone(),
                effect: "NoSchedule".into(),
                time_added: None,
                value: None,
            });
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        }
    }

    fn toleration(v: serde_json::Value) -> Toleration {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn toleration_matching_follows_upstream() {
        let t = taint(TAINT_UNREACHABLE, "NoExecute");
        assert!(tolerates(&toleration(json!({"operator": "Exists"})), &t));
        assert!(tolerates(
            &toleration(
                json!({"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute"})
            ),
            &t
        ));
        assert!(!tolerates(
            &toleration(
                json!({"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"})
            ),
            &t
        ));
        assert!(!tolerates(
            &toleration(json!({"key": TAINT_NOT_READY, "operator": "Exists"})),
            &t
        ));
        // Equal (the default operator) compares values; both empty here.
        assert!(tolerates(
            &toleration(json!({"key": TAINT_UNREACHABLE})),
            &t
        ));
        assert!(!tolerates(
            &toleration(json!({"key": TAINT_UNREACHABLE, "value": "x"})),
            &t
        ));
    }

    #[test]
    fn shortest_toleration_decides() {
        let taints = [
            taint(TAINT_UNREACHABLE, "NoExecute"),
            taint(TAINT_NOT_READY, "NoExecute"),
        ];
        let unreachable_2s = toleration(
            json!({"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2}),
        );
        let not_ready_300s = toleration(
            json!({"key": TAINT_NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}),
        );
        let forever = toleration(json!({"operator": "Exists"}));
        assert_eq!(
            min_toleration(&taints, &[unreachable_2s.clone(), not_ready_300s.clone()]),
            Some(Some(Duration::from_secs(2)))
        );
        // One taint untolerated: evict at once.
        assert_eq!(min_toleration(&taints, &[unreachable_2s]), None);
        assert_eq!(
            min_toleration(&taints, std::slice::from_ref(&forever)),
            Some(None)
        );
        assert_eq!(
            min_toleration(&taints, &[forever, not_ready_300s]),
            Some(Some(Duration::from_secs(300)))
        );
        let negative = toleration(json!({"operator": "Exists", "tolerationSeconds": -5}));
        assert_eq!(
            min_toleration(&taints, &[negative]),
            Some(Some(Duration::ZERO))
        );
    }

    #[test]
    fn go_durations() {
        use crate::controllers::parse_go_duration as p;
        assert_eq!(p("40s"), Some(Duration::from_secs(40)));
        assert_eq!(p("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(p("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(p("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(p("0"), Some(Duration::ZERO));
        assert_eq!(p("10"), None);
        assert_eq!(p(""), None);
        assert_eq!(p("5x"), None);
        assert_eq!(p("-5s"), None);
    }
}

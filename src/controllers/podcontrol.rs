//! Pieces shared by the workload controllers that own pods or replica
//! sets (kube-controller-manager's `controller_utils.go` and
//! `controller_ref_manager.go`): the queue an `applier` reads,
//! creation/deletion expectations, label-selector matching, controller
//! references, pod readiness/availability, the ranking used to pick pods to
//! delete, the slow-start batch, and Event publishing.
//!
//! These controllers feed kube-runtime's `applier` (the engine under
//! `Controller`) from informer handlers (`informer.rs`): a handler runs
//! only after the store it reads has applied the change, which keeps "the
//! trigger fired" and "the store has the object" in order — what the
//! expectations below rely on to never double-create.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use tokio::sync::mpsc;

/// Upstream `controller.ExpectationsTimeout`: an expectation that was never
/// observed stops blocking syncs after this long.
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Upstream `burstReplicas`: at most this many pods are created or deleted
/// in one sync.
pub const BURST_REPLICAS: usize = 500;
/// Annotation that orders pods for scale-down (upstream PodDeletionCost).
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// The queue an `applier` reads: object references sent by informer
/// handlers and by anyone else who wants an object reconciled.
pub fn queue<K: Resource<DynamicType = ()> + 'static>() -> (
    mpsc::UnboundedSender<ObjectRef<K>>,
    impl futures::Stream<Item = Result<ObjectRef<K>, Infallible>> + Send + 'static,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(Ok);
    (tx, stream)
}

/// `namespace/name`, the key used for expectations and backoff.
pub fn key_of<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or(""),
        obj.meta().name.as_deref().unwrap_or("")
    )
}

pub fn obj_ref<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectRef<K> {
    let m = obj.meta();
    let r = ObjectRef::new(m.name.as_deref().unwrap_or(""));
    match &m.namespace {
        Some(ns) => r.within(ns),
        None => r,
    }
}

// ---------------------------------------------------------------------------
// Expectations (upstream ControllerExpectations / UIDTrackingControllerExpectations)

#[derive(Default)]
struct Expectation {
    add: i64,
    del: HashSet<String>,
    since: Option<Instant>,
}

/// What a controller has asked the API for and not yet seen in its cache.
/// While an owner's expectations are pending its replicas are not
/// recounted, so a slow watch never makes the controller create or delete
/// the same pods twice.
#[derive(Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, Expectation>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expectation>> {
        // A poisoned lock only means another thread panicked mid-update of
        // plain counters; the data is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when the owner may be synced: nothing pending, or the pending
    /// expectations are older than [`EXPECTATIONS_TIMEOUT`].
    pub fn satisfied(&self, key: &str) -> bool {
        match self.lock().get(key) {
            None => true,
            Some(e) => {
                (e.add <= 0 && e.del.is_empty())
                    || e.since.is_some_and(|t| t.elapsed() > EXPECTATIONS_TIMEOUT)
            }
        }
    }

    pub fn expect_creations(&self, key: &str, n: usize) {
        self.lock().insert(
            key.to_string(),
            Expectation {
                add: n as i64,
                del: HashSet::new(),
                since: Some(Instant::now()),
            },
        );
    }

    pub fn expect_deletions(&self, key: &str, pods: HashSet<String>) {
        self.lock().insert(
            key.to_string(),
            Expectation {
                add: 0,
                del: pods,
                since: Some(Instant::now()),
            },
        );
    }

    pub fn creation_observed(&self, key: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            e.add -= 1;
        }
    }

    pub fn deletion_observed(&self, key: &str, pod_key: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            e.del.remove(pod_key);
        }
    }

    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

// ---------------------------------------------------------------------------
// Per-object retry backoff (what upstream's rate-limited work queue gives).

#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// The delay before the next retry of `key`, doubling per consecutive
    /// failure up to 60 s. A write conflict usually only means the cache
    /// has not caught up with our own previous write yet, so it starts at
    /// 20 ms; other errors at 100 ms.
    pub fn next(&self, key: &str, conflict: bool) -> Duration {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(key.to_string()).or_insert(0);
        *n = (*n + 1).min(20);
        let base: u64 = if conflict { 20 } else { 100 };
        Duration::from_millis(base.saturating_mul(1 << (*n - 1).min(12)))
            .min(Duration::from_secs(60))
    }

    pub fn reset(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// The error policy shared by the controllers: requeue with backoff.
    pub fn action(&self, key: &str, err: &dyn std::fmt::Display, conflict: bool) -> Action {
        let delay = self.next(key, conflict);
        tracing::debug!(%key, ?delay, "sync failed: {err}");
        Action::requeue(delay)
    }
}

pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

// ---------------------------------------------------------------------------
// Label selectors

/// Whether `labels` satisfy a `metav1.LabelSelector`. An empty selector
/// matches everything, as `LabelSelectorAsSelector` does; unknown operators
/// match nothing.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    if let Some(ml) = &sel.match_labels {
        for (k, v) in ml {
            if labels.get(k) != Some(v) {
                return false;
            }
        }
    }
    for req in sel.match_expressions.iter().flatten() {
        let have = labels.get(&req.key);
        let values = req.values.as_deref().unwrap_or(&[]);
        let ok = match req.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

pub fn selector_is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && sel.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

// ---------------------------------------------------------------------------
// Controller references

/// The owner reference with `controller: true`, if any.
pub fn controller_of<K: Resource>(obj: &K) -> Option<&OwnerReference> {
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// `metav1.NewControllerRef`: controller and blockOwnerDeletion set.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Strategic merge patch that adds `owner` as controller of an object
/// (upstream `ownerRefControllerPatch`); the uid pins the patch to the
/// object that was examined.
pub fn adopt_patch(owner_ref: &OwnerReference, obj_uid: &str) -> serde_json::Value {
    serde_json::json!({"metadata": {"ownerReferences": [owner_ref], "uid": obj_uid}})
}

/// Strategic merge patch that removes the owner reference with `owner_uid`.
pub fn release_patch(owner_uid: &str, obj_uid: &str) -> serde_json::Value {
    serde_json::json!({"metadata": {
        "ownerReferences": [{"$patch": "delete", "uid": owner_uid}],
        "uid": obj_uid}})
}

// ---------------------------------------------------------------------------
// Pods

/// Neither finished nor being deleted (upstream `IsPodActive`).
pub fn is_pod_active(pod: &Pod) -> bool {
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("");
    phase != "Succeeded" && phase != "Failed" && pod.metadata.deletion_timestamp.is_none()
}

fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

pub fn is_pod_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// When the pod last became ready, if it is ready.
pub fn pod_ready_since(pod: &Pod) -> Option<Timestamp> {
    ready_condition(pod)
        .filter(|c| c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

/// Ready for at least `min_ready_seconds` (upstream `IsPodAvailable`).
pub fn is_pod_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    if !is_pod_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    match pod_ready_since(pod) {
        Some(t) => available_at(t, min_ready_seconds) < now,
        None => false,
    }
}

/// The instant a pod ready since `t` counts as available.
pub fn available_at(t: Timestamp, min_ready_seconds: i32) -> Timestamp {
    t.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(i64::from(
        min_ready_seconds.max(0),
    )))
    .unwrap_or(t)
}

pub fn pod_key(pod: &Pod) -> String {
    key_of(pod)
}

fn phase_ordinal(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST))
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0)
}

/// floor(log2(now - t)) in nanoseconds, -1 when `t` is not in the past:
/// upstream's LogarithmicScaleDown buckets.
fn log_bucket(t: Option<Timestamp>, now: Timestamp) -> i64 {
    let Some(t) = t else {
        // Zero times sort first (upstream `afterOrZero`).
        return i64::MIN;
    };
    let d = now.duration_since(t).as_nanos();
    if d <= 0 { -1 } else { (d as f64).log2() as i64 }
}

fn max_restarts(pod: &Pod) -> (i32, i32) {
    let Some(st) = pod.status.as_ref() else {
        return (0, 0);
    };
    let regular = st
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0);
    // Restartable init containers are sidecars.
    let sidecars: HashSet<&str> = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| c.name.as_str())
        .collect();
    let sidecar = st
        .init_container_statuses
        .iter()
        .flatten()
        .filter(|c| sidecars.contains(c.name.as_str()))
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0);
    (regular, sidecar)
}

/// Orders `pods` so that the ones to delete first come first, following
/// upstream `ActivePodsWithRanks`: unscheduled < scheduled; Pending <
/// Unknown < Running; not ready < ready; lower deletion cost first; more
/// related pods on the same node first; ready more recently first (in
/// logarithmic buckets); more restarts first; created more recently first
/// (logarithmic buckets); then by UID. `related` are the active pods of all
/// replica sets with the same owner, used for the same-node rank. Sorting
/// by a computed key keeps the order total.
pub fn rank_pods_for_deletion(pods: &mut [Arc<Pod>], related: &[Arc<Pod>]) {
    let now = Timestamp::now();
    let mut on_node: HashMap<String, i64> = HashMap::new();
    for p in related.iter().filter(|p| is_pod_active(p)) {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        *on_node.entry(node).or_default() += 1;
    }
    pods.sort_by_cached_key(|p| {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let ready = is_pod_ready(p);
        let rank = on_node.get(&node).copied().unwrap_or(0);
        let ready_bucket = if ready {
            log_bucket(pod_ready_since(p), now)
        } else {
            0
        };
        let (restarts, sidecar_restarts) = max_restarts(p);
        let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        (
            !node.is_empty(),
            phase_ordinal(p),
            ready,
            deletion_cost(p),
            -rank,
            ready_bucket,
            -restarts,
            -sidecar_restarts,
            log_bucket(created, now),
            p.metadata.uid.clone().unwrap_or_default(),
        )
    });
}

// ---------------------------------------------------------------------------
// Batches and events

/// Runs `count` calls of `f` in batches of 1, 2, 4, ... (upstream
/// `slowStartBatch`): a systematic failure (quota, admission) costs one
/// request instead of `count`. Returns how many succeeded and the first
/// error, after which no further batch is started.
pub async fn slow_start_batch<F, Fut, E>(count: usize, initial: usize, f: F) -> (usize, Option<E>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut remaining = count;
    let mut successes = 0;
    let mut batch = initial.min(remaining);
    while batch > 0 {
        let results = futures::future::join_all((0..batch).map(|_| f())).await;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(()) => successes += 1,
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        if first_err.is_some() {
            return (successes, first_err);
        }
        remaining -= batch;
        batch = (2 * batch).min(remaining);
    }
    (successes, None)
}

/// Publishes Events for one controller through kube-runtime's `Recorder`,
/// in the background so a slow event write never delays a sync. A fresh
/// recorder per Normal event keeps messages that differ ("Created pod: a",
/// "Created pod: b") as separate Events: the recorder's series
/// de-duplication ignores the note and would otherwise keep only the first
/// text. Warnings share one recorder so a repeating failure becomes one
/// Event with a growing count, as upstream's correlator does.
#[derive(Clone)]
pub struct Events {
    client: Client,
    controller: &'static str,
    warnings: Recorder,
}

impl Events {
    pub fn new(client: Client, controller: &'static str) -> Events {
        Events {
            warnings: Recorder::new(client.clone(), reporter(controller)),
            client,
            controller,
        }
    }

    pub fn publish(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let recorder = match type_ {
            EventType::Warning => self.warnings.clone(),
            EventType::Normal => Recorder::new(self.client.clone(), reporter(self.controller)),
        };
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&ev, &regarding).await {
                tracing::debug!("publishing event {}: {e}", ev.reason);
            }
        });
    }
}

fn reporter(controller: &str) -> Reporter {
    Reporter {
        controller: controller.to_string(),
        instance: None,
    }
}

/// The message of an API error as upstream prints it (`pods "x" is
/// forbidden: ...`), or the client error's text.
pub fn error_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

pub fn is_already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

/// Whether a create failed because the namespace is being deleted
/// (upstream `NamespaceTerminatingCause`).
pub fn is_namespace_terminating(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => {
            s.code == 403
                && (s.message.contains("because it is being terminated")
                    || s.message.contains("NamespaceTerminating"))
        }
        _ => false,
    }
}

/// Now, truncated to whole seconds: the precision `metav1.Time` is stored
/// with, so a condition written and read back compares equal.
pub fn now_time() -> Time {
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// Requeue after `d`, but never later than the periodic resync.
pub fn requeue_within(d: Option<Duration>, resync: Duration) -> Action {
    Action::requeue(d.map_or(resync, |d| d.min(resync)))
}

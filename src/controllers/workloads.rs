//! Machinery shared by the Job, CronJob, DaemonSet and StatefulSet
//! controllers: watched stores that know how far they have caught up,
//! write gates (the role of upstream's "expectations"), pod predicates,
//! controller references and adoption, ControllerRevision history and
//! event publishing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{Stream, TryStreamExt};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::informer::{Revision, Subscription, rv_of};

/// Errors of a reconcile pass; the controller retries after a short delay.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// True for an API error with this HTTP code.
pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// How long a write may stay unobserved before the gate opens anyway. The
/// watch normally delivers our own write within milliseconds; this only
/// matters when the object vanished again before the watch saw it.
const GATE_TIMEOUT: Duration = Duration::from_secs(10);

/// A reflector store plus the highest resourceVersion it has applied, and
/// this controller's writes not yet seen in it.
///
/// skiff's resourceVersions are the store's global revision (etcd
/// semantics) and a single watch delivers events in revision order, so a
/// store that has applied an event at revision R reflects every write up to
/// R. That lets a controller wait until the store has seen its own writes
/// before acting on it again, which is what upstream's expectations
/// approximate with counters. The store and its revision may be a shared
/// informer's ([`Watched::shared`]); the pending writes are always the
/// controller's own.
pub struct Watched<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    pub store: Store<K>,
    seen: Arc<AtomicU64>,
    /// Per owner key: the revision of our latest write and when it was made.
    pending: Mutex<HashMap<String, (u64, Instant)>>,
}

/// Starts watching `api` into a store of this controller's own; returns the
/// store and the stream of touched objects that must be polled (as a
/// `Controller` trigger) for the store to fill.
pub fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (
    Arc<Watched<K>>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let mut revision = Revision::default();
    let watched = Arc::new(Watched {
        store,
        seen: revision.applied(),
        pending: Mutex::new(HashMap::new()),
    });
    let stream = watcher(api, config)
        .default_backoff()
        .modify(super::slim_cached::<K>)
        .reflect(writer)
        .inspect_ok(move |ev| revision.observe(ev))
        .touched_objects();
    (watched, stream)
}

impl<K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static> Watched<K> {
    /// A write gate over a shared informer's store; returns it and the
    /// subscription's trigger stream (objects touched, deletions included)
    /// for `Controller::owns_shared_stream`/`watches_shared_stream`.
    pub fn shared(
        sub: Subscription<K>,
    ) -> (Arc<Watched<K>>, impl Stream<Item = Arc<K>> + Send + 'static) {
        let watched = Arc::new(Watched {
            store: sub.store(),
            seen: sub.applied(),
            pending: Mutex::new(HashMap::new()),
        });
        (watched, sub.objects())
    }
}

impl<K: Resource + Clone + 'static> Watched<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    /// Records that we wrote an object on behalf of `owner`; `written` is the
    /// object the API answered with.
    pub fn note_write(&self, owner: &str, written: &ObjectMeta) {
        let rv = rv_of(written);
        if rv == 0 {
            return;
        }
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let e = p.entry(owner.to_string()).or_insert((0, Instant::now()));
        e.0 = e.0.max(rv);
        e.1 = Instant::now();
    }

    /// Records that we deleted an object outright (the API answered with a
    /// Status, not the object): its DELETED event comes after `last`.
    pub fn note_delete(&self, owner: &str, last: &ObjectMeta) {
        let rv = rv_of(last);
        if rv > 0 {
            self.note_write(
                owner,
                &ObjectMeta {
                    resource_version: Some((rv + 1).to_string()),
                    ..Default::default()
                },
            );
        }
    }

    /// Waits until the initial list has filled the store: a reconcile that
    /// read a store still being filled would see children missing and
    /// create them again.
    pub async fn wait_ready(&self) -> Result<()> {
        self.store
            .wait_until_ready()
            .await
            .map_err(|e| Error::Other(format!("watch stopped: {e}")))
    }

    /// True once the store reflects every write noted for `owner`.
    pub fn caught_up(&self, owner: &str) -> bool {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match p.get(owner) {
            None => true,
            Some(&(rv, at)) => {
                if self.seen.load(Ordering::SeqCst) >= rv || at.elapsed() > GATE_TIMEOUT {
                    p.remove(owner);
                    true
                } else {
                    false
                }
            }
        }
    }
}

/// Current time.
pub fn now() -> Timestamp {
    Timestamp::now()
}

pub fn time(t: Timestamp) -> Time {
    Time(t)
}

/// Whole seconds from `a` to `b` (negative when `b` is earlier).
pub fn secs_between(a: Timestamp, b: Timestamp) -> f64 {
    b.duration_since(a).as_secs_f64()
}

/// Duration until `t`, zero if it is past.
pub fn until(t: Timestamp) -> Duration {
    let d = t.duration_since(now()).as_secs_f64();
    if d > 0.0 {
        Duration::from_secs_f64(d)
    } else {
        Duration::ZERO
    }
}

// ---------------------------------------------------------------- pods

pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

pub fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Not finished and not being deleted (upstream `IsPodActive`).
pub fn is_active(pod: &Pod) -> bool {
    !is_terminal(pod) && !is_terminating(pod)
}

fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// Ready for at least `min_ready_seconds` (upstream `IsPodAvailable`).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, at: Timestamp) -> bool {
    let Some(c) = ready_condition(pod).filter(|c| c.status == "True") else {
        return false;
    };
    if min_ready_seconds <= 0 {
        return true;
    }
    match &c.last_transition_time {
        Some(t) => secs_between(t.0, at) >= min_ready_seconds as f64,
        None => false,
    }
}

/// When a not-yet-available ready pod becomes available, if it will.
pub fn available_in(pod: &Pod, min_ready_seconds: i32, at: Timestamp) -> Option<Duration> {
    let c = ready_condition(pod).filter(|c| c.status == "True")?;
    if min_ready_seconds <= 0 {
        return None;
    }
    let t = c.last_transition_time.as_ref()?;
    let left = min_ready_seconds as f64 - secs_between(t.0, at);
    (left > 0.0).then(|| Duration::from_secs_f64(left))
}

pub fn creation(meta: &ObjectMeta) -> Timestamp {
    meta.creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

// ------------------------------------------------- controller references

pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

pub fn is_controlled_by(meta: &ObjectMeta, owner_uid: &str) -> bool {
    controller_of(meta).is_some_and(|r| r.uid == owner_uid)
}

/// A controller reference to `owner` (controller and blockOwnerDeletion set).
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

/// An `ObjectReference` for events and CronJob status.
pub fn object_ref<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    obj.object_ref(&())
}

/// Label selector matching; a selector that cannot be parsed matches
/// nothing, an empty one matches everything.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    if let Some(ml) = &sel.match_labels
        && ml.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return false;
    }
    for e in sel.match_expressions.iter().flatten() {
        let have = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or(&[]);
        let ok = match e.operator.as_str() {
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

pub fn labels_of(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

/// Upstream's `ClaimPods`: the pods in `candidates` that `owner` controls
/// after adopting matching orphans and releasing owned pods whose labels no
/// longer match.
pub async fn claim_pods<K: Resource<DynamicType = ()>>(
    client: &Client,
    owner: &K,
    selector: &LabelSelector,
    candidates: impl IntoIterator<Item = Arc<Pod>>,
    gate: &Watched<Pod>,
    owner_key: &str,
) -> Vec<Arc<Pod>> {
    let owner_uid = owner.meta().uid.clone().unwrap_or_default();
    let deleting = owner.meta().deletion_timestamp.is_some();
    let ns = owner.meta().namespace.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut out = Vec::new();
    for pod in candidates {
        if pod.metadata.namespace.as_deref() != Some(ns.as_str()) {
            continue;
        }
        let matches = selector_matches(selector, &labels_of(&pod.metadata));
        let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
        match controller_of(&pod.metadata) {
            Some(r) if r.uid == owner_uid => {
                if matches || deleting {
                    out.push(pod);
                    continue;
                }
                // Release: the labels were changed away from our selector.
                let patch = json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": owner_uid}], "uid": pod_uid}});
                match api
                    .patch(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Strategic(patch),
                    )
                    .await
                {
                    Ok(p) => gate.note_write(owner_key, &p.metadata),
                    Err(e) if is_status(&e, 404) || is_status(&e, 422) => {}
                    Err(e) => tracing::debug!("releasing pod {}: {e}", pod.name_any()),
                }
            }
            Some(_) => {}
            None => {
                if !matches || deleting || is_terminating(&pod) || selector_is_empty(selector) {
                    continue;
                }
                let patch = json!({"metadata": {"ownerReferences": [controller_ref(owner)], "uid": pod_uid}});
                match api
                    .patch(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Strategic(patch),
                    )
                    .await
                {
                    Ok(p) => {
                        gate.note_write(owner_key, &p.metadata);
                        out.push(Arc::new(p));
                    }
                    Err(e) => tracing::debug!("adopting pod {}: {e}", pod.name_any()),
                }
            }
        }
    }
    out
}

fn selector_is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty())
}

/// Deletes a pod; NotFound counts as done. Returns the API's answer when
/// the pod still exists (graceful deletion).
pub async fn delete_pod(api: &Api<Pod>, name: &str, uid: Option<&str>) -> Result<Option<Pod>> {
    let mut dp = DeleteParams::default();
    if let Some(uid) = uid {
        dp = dp.preconditions(kube::api::Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        });
    }
    match api.delete(name, &dp).await {
        Ok(either) => Ok(either.left()),
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

// ------------------------------------------------ ControllerRevisions

/// FNV-1a, 32 bit: the hash upstream uses for template and revision hashes.
pub fn fnv32a(data: &[u8]) -> u32 {
    data.iter().fold(0x811c9dc5u32, |h, b| {
        (h ^ *b as u32).wrapping_mul(0x01000193)
    })
}

/// FNV-1, 32 bit: `HashControllerRevision` (StatefulSets) uses this one.
pub fn fnv32(data: &[u8]) -> u32 {
    data.iter()
        .fold(0x811c9dc5u32, |h, b| h.wrapping_mul(0x01000193) ^ *b as u32)
}

/// Upstream's `rand.SafeEncodeString`: digits mapped onto consonants and
/// digits that cannot spell words.
pub fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char)
        .collect()
}

/// Hash of `data` with an optional collision count mixed in, encoded as
/// upstream encodes `ComputeHash`/`HashControllerRevision` results.
pub fn hash_with_collisions(data: &[u8], collision_count: Option<i32>) -> String {
    let mut bytes = data.to_vec();
    if let Some(c) = collision_count {
        bytes.extend_from_slice(&(c as u32).to_le_bytes());
    }
    safe_encode(&fnv32a(&bytes).to_string())
}

/// The revision data for a template: a strategic merge patch that replaces
/// `spec.template`, as `kubectl rollout undo` applies it.
pub fn template_patch(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Some(o) = t.as_object_mut() {
        o.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The template stored in a revision's data, if it has one.
pub fn template_from_revision(cr: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = cr.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(o) = t.as_object_mut() {
        o.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// True when a revision's data is `data` (key order does not matter).
pub fn revision_data_equals(cr: &ControllerRevision, data: &Value) -> bool {
    cr.data.as_ref().is_some_and(|d| &d.0 == data)
}

/// The ControllerRevisions in `ns` controlled by the owner with `uid`,
/// oldest revision first.
pub async fn owned_revisions(
    client: &Client,
    ns: &str,
    uid: &str,
) -> Result<Vec<ControllerRevision>> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), ns);
    let mut list: Vec<ControllerRevision> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|cr| is_controlled_by(&cr.metadata, uid))
        .collect();
    list.sort_by(|a, b| {
        a.revision
            .cmp(&b.revision)
            .then_with(|| creation(&a.metadata).cmp(&creation(&b.metadata)))
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    Ok(list)
}

/// Deletes the oldest of `old` (sorted oldest first) so that at most `limit`
/// remain, never one whose name is in `live`. With `live_counts`, live
/// revisions count towards the limit (the DaemonSet's rule); without, only
/// the others do (the StatefulSet's).
pub async fn truncate_history(
    client: &Client,
    ns: &str,
    old: &[ControllerRevision],
    live: &BTreeSet<String>,
    limit: i32,
    live_counts: bool,
) {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), ns);
    let candidates: Vec<&ControllerRevision> = old
        .iter()
        .filter(|cr| !live.contains(&cr.name_any()))
        .collect();
    let total = if live_counts {
        old.len()
    } else {
        candidates.len()
    };
    let excess = total.saturating_sub(limit.max(0) as usize);
    for cr in candidates.into_iter().take(excess) {
        if let Err(e) = api.delete(&cr.name_any(), &DeleteParams::default()).await
            && !is_status(&e, 404)
        {
            tracing::debug!("deleting revision {}: {e}", cr.name_any());
        }
    }
}

/// Sets a revision's number (a rollback makes an old revision current).
pub async fn set_revision_number(
    client: &Client,
    cr: &ControllerRevision,
    revision: i64,
) -> Result<ControllerRevision> {
    let ns = cr.metadata.namespace.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let mut c = cr.clone();
    c.revision = revision;
    Ok(api
        .replace(&cr.name_any(), &PostParams::default(), &c)
        .await?)
}

// --------------------------------------------------------------- events

/// Publishes Events as `component`; failures are logged, never fatal.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    pub fn new(client: Client, component: &str) -> Events {
        Events {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: component.to_string(),
                    instance: None,
                },
            ),
        }
    }

    /// A Normal event about `on`. `related` names the second object the
    /// event is about (the pod created, the Job deleted): the recorder folds
    /// repeats of one reason about the same pair into a series, so events
    /// about different objects must say so to stay distinct.
    pub async fn normal(
        &self,
        on: &ObjectReference,
        related: Option<ObjectReference>,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.publish(on, related, EventType::Normal, reason, action, note)
            .await
    }

    pub async fn warning(
        &self,
        on: &ObjectReference,
        related: Option<ObjectReference>,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.publish(on, related, EventType::Warning, reason, action, note)
            .await
    }

    async fn publish(
        &self,
        on: &ObjectReference,
        related: Option<ObjectReference>,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = KubeEvent {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: related,
        };
        if let Err(e) = self.recorder.publish(&ev, on).await {
            tracing::debug!("publishing event {reason}: {e}");
        }
    }
}

// ------------------------------------------------------- int-or-percent

/// Upstream `GetScaledValueFromIntOrPercent`.
pub fn scaled_value(
    v: Option<&k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    total: i32,
    round_up: bool,
    default: i32,
) -> i32 {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match v {
        None => default,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            match s.strip_suffix('%').and_then(|p| p.parse::<f64>().ok()) {
                Some(p) => {
                    let x = p * total as f64 / 100.0;
                    if round_up {
                        x.ceil() as i32
                    } else {
                        x.floor() as i32
                    }
                }
                None => s.parse().unwrap_or(default),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_encode_matches_upstream_alphabet() {
        // Every digit maps into the consonant/digit alphabet.
        let h = hash_with_collisions(b"abc", None);
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        assert_ne!(h, hash_with_collisions(b"abc", Some(1)));
        // FNV test vectors.
        assert_eq!(fnv32a(b"a"), 0xe40c292c);
        assert_eq!(fnv32(b"a"), 0x050c5d7e);
    }

    #[test]
    fn selectors() {
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]
        }))
        .unwrap();
        let mut l = BTreeMap::new();
        l.insert("app".to_string(), "web".to_string());
        assert!(selector_matches(&sel, &l));
        l.insert("tier".to_string(), "db".to_string());
        assert!(!selector_matches(&sel, &l));
    }

    #[test]
    fn scaled() {
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        let p = IntOrString::String("25%".into());
        assert_eq!(scaled_value(Some(&p), 3, true, 1), 1);
        assert_eq!(scaled_value(Some(&p), 3, false, 1), 0);
        assert_eq!(scaled_value(Some(&IntOrString::Int(2)), 3, true, 1), 2);
    }
}

//! The ReplicaSet controller (upstream `pkg/controller/replicaset`), written
//! once for every kind that keeps N copies of a pod template: apps/v1
//! ReplicaSet here and core/v1 ReplicationController in
//! `replicationcontroller.rs`. Both share one pod informer.
//!
//! A sync: claim the active pods matching the selector (adopt orphans,
//! release pods that stopped matching), create or delete pods until there
//! are `spec.replicas` of them — unless earlier creations/deletions have not
//! been seen in the pod cache yet (expectations) — and write the status.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::CancelableJoinHandle;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

use super::informer::{self, Change, Subscription};
use super::podcontrol::{
    self, BURST_REPLICAS, Backoff, Expectations, controller_of, controller_ref, is_pod_active,
    is_pod_available, is_pod_ready, key_of, selector_matches,
};

/// Periodic resync, a last line of defence against a missed event.
const RESYNC: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("pod cache is gone")]
    CacheGone,
    #[error("{0}")]
    Invalid(String),
}

/// One status condition of a ReplicaSet or ReplicationController (both
/// kinds use the same fields).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

/// The status both kinds share.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplicaStatus {
    pub replicas: i32,
    pub fully_labeled: i32,
    pub ready: i32,
    pub available: i32,
    pub observed_generation: i64,
    pub conditions: Vec<OwnerCondition>,
}

impl ReplicaStatus {
    fn to_json(&self) -> Value {
        json!({
            "replicas": self.replicas,
            "fullyLabeledReplicas": self.fully_labeled,
            "readyReplicas": self.ready,
            "availableReplicas": self.available,
            "observedGeneration": self.observed_generation,
            "conditions": if self.conditions.is_empty() { Value::Null } else { json!(self.conditions) },
        })
    }
}

/// What the generic controller needs from a ReplicaSet-like kind.
pub trait ReplicaOwner:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    /// `reportingController` of its Events.
    const CONTROLLER: &'static str;
    /// The pod selector; `None` selects nothing.
    fn selector(&self) -> Option<LabelSelector>;
    fn template(&self) -> Option<&PodTemplateSpec>;
    fn replicas(&self) -> i32;
    fn min_ready_seconds(&self) -> i32;
    fn current_status(&self) -> ReplicaStatus;
}

impl ReplicaOwner for ReplicaSet {
    const CONTROLLER: &'static str = "replicaset-controller";

    fn selector(&self) -> Option<LabelSelector> {
        self.spec.as_ref().map(|s| s.selector.clone())
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn current_status(&self) -> ReplicaStatus {
        let Some(s) = &self.status else {
            return ReplicaStatus::default();
        };
        ReplicaStatus {
            replicas: s.replicas,
            fully_labeled: s.fully_labeled_replicas.unwrap_or(0),
            ready: s.ready_replicas.unwrap_or(0),
            available: s.available_replicas.unwrap_or(0),
            observed_generation: s.observed_generation.unwrap_or(0),
            conditions: s
                .conditions
                .iter()
                .flatten()
                .map(|c| OwnerCondition {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    last_transition_time: c.last_transition_time.clone(),
                })
                .collect(),
        }
    }
}

/// Runs the ReplicaSet and ReplicationController controllers until
/// cancelled, both on one subscription to the shared pod informer.
pub async fn run(client: Client, pods: Subscription<Pod>) {
    let seen = PodsSeen {
        store: pods.store(),
        applied: pods.applied(),
        handled: tokio::sync::watch::channel(0).0,
    };
    let (rs, rs_run) = Manager::<ReplicaSet>::start(client.clone(), seen.clone());
    let (rc, rc_run) =
        Manager::<k8s_openapi::api::core::v1::ReplicationController>::start(client, seen.clone());
    // Each change reaches the handlers after the shared store applied it.
    let pod_handlers = pods.changes().for_each(|change| {
        rs.on_pod(&change);
        rc.on_pod(&change);
        let rv = informer::rv_of(&change.object().metadata);
        seen.handled.send_modify(|h| *h = (*h).max(rv));
        futures::future::ready(())
    });
    tokio::join!(pod_handlers, rs_run, rc_run);
}

/// The shared pod store, and how far the pod handlers (expectations) have
/// followed it. A sync counts pods only once the handlers have seen every
/// pod the store holds, as upstream waits for its handlers' `HasSynced`:
/// otherwise pods the store already shows could still arrive as
/// "creations observed" and satisfy the expectations of the sync's own
/// creates before those are in the store.
#[derive(Clone)]
pub struct PodsSeen {
    pub store: Store<Pod>,
    applied: Arc<std::sync::atomic::AtomicU64>,
    handled: tokio::sync::watch::Sender<u64>,
}

impl PodsSeen {
    /// Waits until the store is ready and the handlers have caught up
    /// with what it had applied when called.
    async fn caught_up(&self) -> Result<(), Error> {
        self.store
            .wait_until_ready()
            .await
            .map_err(|_| Error::CacheGone)?;
        let target = self.applied.load(std::sync::atomic::Ordering::SeqCst);
        let mut rx = self.handled.subscribe();
        rx.wait_for(|h| *h >= target)
            .await
            .map_err(|_| Error::CacheGone)?;
        Ok(())
    }
}

/// The controller for one ReplicaSet-like kind.
pub struct Manager<K: ReplicaOwner> {
    client: Client,
    owners: Store<K>,
    /// The shared pod store, and whether this controller has seen all of it.
    pods_seen: PodsSeen,
    expectations: Expectations,
    backoff: Backoff,
    trigger: UnboundedSender<ObjectRef<K>>,
    events: podcontrol::Events,
}

impl<K: ReplicaOwner> Manager<K> {
    /// Builds the controller; the returned future runs its owner informer
    /// and its reconcile loop (kube-runtime's `applier`).
    pub fn start(
        client: Client,
        pods_seen: PodsSeen,
    ) -> (Arc<Self>, impl std::future::Future<Output = ()> + Send) {
        let (owners, writer) = reflector::store::<K>();
        let (trigger, queue) = podcontrol::queue::<K>();
        let mgr = Arc::new(Manager {
            client: client.clone(),
            owners: owners.clone(),
            pods_seen,
            expectations: Expectations::default(),
            backoff: Backoff::default(),
            trigger,
            events: podcontrol::Events::new(client.clone(), K::CONTROLLER),
        });
        let m = mgr.clone();
        let informer = informer::run_local(Api::<K>::all(client), writer, move |c| {
            m.on_owner(c);
        });
        let applier = kube::runtime::applier(
            |obj: Arc<K>, ctx: Arc<Manager<K>>| {
                CancelableJoinHandle::spawn(
                    async move { ctx.reconcile(obj).await },
                    &tokio::runtime::Handle::current(),
                )
            },
            |obj: Arc<K>, err: &Error, ctx: Arc<Manager<K>>| {
                ctx.backoff.action(
                    &key_of(obj.as_ref()),
                    err,
                    matches!(err, Error::Kube(e) if podcontrol::is_conflict(e)),
                )
            },
            mgr.clone(),
            owners,
            queue,
            Config::default(),
        )
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(controller = K::CONTROLLER, "reconcile: {e}");
            }
        });
        let run = async move {
            tokio::join!(informer, applier);
        };
        (mgr, run)
    }

    fn enqueue(&self, owner: &K) {
        let _ = self.trigger.send(podcontrol::obj_ref(owner));
    }

    /// The owner a controller reference points at, if it is of our kind
    /// and still the same object (uid).
    fn resolve(&self, ns: &str, r: &OwnerReference) -> Option<Arc<K>> {
        if r.kind != K::kind(&()) {
            return None;
        }
        let owner = self.owners.get(&ObjectRef::new(&r.name).within(ns))?;
        (owner.meta().uid.as_deref() == Some(r.uid.as_str())).then_some(owner)
    }

    /// Owners in the pod's namespace whose selector matches it (candidates
    /// to adopt an orphan).
    fn matching_owners(&self, pod: &Pod) -> Vec<Arc<K>> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if labels.is_empty() {
            return Vec::new();
        }
        self.owners.state_filter(|o| {
            o.meta().namespace.as_deref() == Some(ns)
                && o.selector().is_some_and(|s| {
                    !podcontrol::selector_is_empty(&s) && selector_matches(&s, &labels)
                })
        })
    }

    /// Pod informer handler (upstream addPod/updatePod/deletePod).
    pub fn on_pod(&self, change: &Change<Pod>) {
        match change {
            Change::Added(pod) => {
                if pod.metadata.deletion_timestamp.is_some() {
                    // A pod can show up already being deleted (e.g. after a
                    // restart): it must not count as a creation.
                    self.pod_deleted(pod);
                    return;
                }
                let ns = pod.metadata.namespace.as_deref().unwrap_or("");
                if let Some(r) = controller_of(pod.as_ref()) {
                    if let Some(owner) = self.resolve(ns, r) {
                        self.expectations.creation_observed(&key_of(owner.as_ref()));
                        self.enqueue(&owner);
                    }
                    return;
                }
                for owner in self.matching_owners(pod) {
                    self.enqueue(&owner);
                }
            }
            Change::Updated(old, cur) => {
                if old.metadata.resource_version == cur.metadata.resource_version {
                    return;
                }
                let labels_changed = old.metadata.labels != cur.metadata.labels;
                if cur.metadata.deletion_timestamp.is_some() {
                    // A graceful delete shows up as an update; the pod is
                    // already gone as far as counting replicas goes.
                    self.pod_deleted(cur);
                    if labels_changed {
                        self.pod_deleted(old);
                    }
                    return;
                }
                let ns = cur.metadata.namespace.as_deref().unwrap_or("");
                let cur_ref = controller_of(cur.as_ref());
                let old_ref = controller_of(old.as_ref());
                let ref_changed = cur_ref != old_ref;
                if ref_changed
                    && let Some(r) = old_ref
                    && let Some(owner) = self.resolve(ns, r)
                {
                    self.enqueue(&owner);
                }
                if let Some(r) = cur_ref {
                    if let Some(owner) = self.resolve(ns, r) {
                        self.enqueue(&owner);
                    }
                    return;
                }
                if labels_changed || ref_changed {
                    for owner in self.matching_owners(cur) {
                        self.enqueue(&owner);
                    }
                }
            }
            Change::Deleted(pod) => self.pod_deleted(pod),
        }
    }

    fn pod_deleted(&self, pod: &Pod) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        let Some(r) = controller_of(pod) else { return };
        let Some(owner) = self.resolve(ns, r) else {
            return;
        };
        self.expectations
            .deletion_observed(&key_of(owner.as_ref()), &podcontrol::pod_key(pod));
        self.enqueue(&owner);
    }

    /// Owner informer handler. Status-only updates (our own writes) do not
    /// need a sync.
    pub fn on_owner(&self, change: Change<K>) {
        match change {
            Change::Added(o) => self.enqueue(&o),
            Change::Updated(old, new) => {
                let (a, b) = (old.meta(), new.meta());
                if a.generation != b.generation
                    || a.labels != b.labels
                    || a.annotations != b.annotations
                    || a.owner_references != b.owner_references
                    || a.deletion_timestamp != b.deletion_timestamp
                    || a.uid != b.uid
                {
                    self.enqueue(&new);
                }
            }
            Change::Deleted(o) => self.expectations.forget(&key_of(o.as_ref())),
        }
    }

    /// One sync of one owner (upstream `syncReplicaSet`).
    async fn reconcile(self: Arc<Self>, owner: Arc<K>) -> Result<Action, Error> {
        self.pods_seen.caught_up().await?;
        let key = key_of(owner.as_ref());
        // Read the expectations before the pods: a pod observed in between
        // is then in the list we count.
        let needs_sync = self.expectations.satisfied(&key);
        let ns = owner.namespace().unwrap_or_default();
        let active: Vec<Arc<Pod>> = self.pods_seen.store.state_filter(|p| {
            p.metadata.namespace.as_deref() == Some(ns.as_str()) && is_pod_active(p)
        });
        let pods = self.claim_pods(&owner, active).await?;
        let manage_err = if needs_sync && owner.meta().deletion_timestamp.is_none() {
            self.manage_replicas(&owner, &pods).await.err()
        } else {
            None
        };
        let status = calculate_status(owner.as_ref(), &pods, manage_err.as_ref());
        if status != owner.current_status() {
            let api: Api<K> = Api::namespaced(self.client.clone(), &ns);
            match api
                .patch_status(
                    &owner.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": status.to_json()})),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if podcontrol::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(e) = manage_err {
            return Err(e);
        }
        self.backoff.reset(&key);
        // Come back when the next ready pod becomes available.
        let min_ready = owner.min_ready_seconds();
        let next_available = if min_ready > 0 {
            let now = Timestamp::now();
            pods.iter()
                .filter(|p| is_pod_ready(p) && !is_pod_available(p, min_ready, now))
                .filter_map(|p| podcontrol::pod_ready_since(p))
                .map(|t| podcontrol::available_at(t, min_ready))
                .min()
                .map(|t| {
                    let d = t.duration_since(now).as_millis().max(0) as u64;
                    Duration::from_millis(d + 100)
                })
        } else {
            None
        };
        Ok(podcontrol::requeue_within(next_available, RESYNC))
    }

    /// Upstream `ClaimPods`: keeps the pods we control that still match,
    /// releases those that stopped matching, adopts matching orphans.
    async fn claim_pods(&self, owner: &K, pods: Vec<Arc<Pod>>) -> Result<Vec<Arc<Pod>>, Error> {
        let uid = owner.meta().uid.clone().unwrap_or_default();
        let selector = owner
            .selector()
            .filter(|s| !podcontrol::selector_is_empty(s));
        let ns = owner.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let owner_deleting = owner.meta().deletion_timestamp.is_some();
        let mut claimed = Vec::with_capacity(pods.len());
        let mut can_adopt: Option<bool> = None;
        let empty = BTreeMap::new();
        for pod in pods {
            let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
            let matches = selector
                .as_ref()
                .is_some_and(|s| selector_matches(s, labels));
            let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
            match controller_of(pod.as_ref()) {
                Some(r) if r.uid == uid => {
                    if matches {
                        claimed.push(pod);
                    } else if !owner_deleting {
                        let res = api
                            .patch(
                                &pod.name_any(),
                                &PatchParams::default(),
                                &Patch::Strategic(podcontrol::release_patch(&uid, &pod_uid)),
                            )
                            .await;
                        match res {
                            Ok(_) => {}
                            Err(e) if podcontrol::is_not_found(&e) => {}
                            Err(kube::Error::Api(s)) if s.code == 422 => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                Some(_) => {}
                None => {
                    if !matches || owner_deleting || pod.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    if can_adopt.is_none() {
                        can_adopt = Some(self.owner_still_current(owner).await?);
                    }
                    if can_adopt != Some(true) {
                        continue;
                    }
                    let res = api
                        .patch(
                            &pod.name_any(),
                            &PatchParams::default(),
                            &Patch::Strategic(podcontrol::adopt_patch(
                                &controller_ref(owner),
                                &pod_uid,
                            )),
                        )
                        .await;
                    match res {
                        Ok(p) => {
                            if is_pod_active(&p) {
                                claimed.push(Arc::new(p));
                            }
                        }
                        Err(e) if podcontrol::is_not_found(&e) => {}
                        Err(kube::Error::Api(s)) if s.code == 422 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(claimed)
    }

    /// Upstream `RecheckDeletionTimestamp`: adopt only for an owner that,
    /// read fresh from the API, is the same object and not being deleted.
    async fn owner_still_current(&self, owner: &K) -> Result<bool, Error> {
        let api: Api<K> =
            Api::namespaced(self.client.clone(), &owner.namespace().unwrap_or_default());
        match api.get_opt(&owner.name_any()).await? {
            Some(fresh) => {
                Ok(fresh.meta().uid == owner.meta().uid
                    && fresh.meta().deletion_timestamp.is_none())
            }
            None => Ok(false),
        }
    }

    /// Upstream `manageReplicas`.
    async fn manage_replicas(&self, owner: &K, pods: &[Arc<Pod>]) -> Result<(), Error> {
        let want = owner.replicas().max(0) as usize;
        let key = key_of(owner);
        let ns = owner.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let regarding = owner.object_ref(&());
        if pods.len() < want {
            let Some(template) = owner.template() else {
                return Ok(());
            };
            // Pods the selector would not claim would be created again on
            // every sync. The API server refuses such ReplicaSets; nothing
            // checks ReplicationControllers, so check here.
            let labels = template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            let claimable = owner.selector().is_some_and(|s| {
                !podcontrol::selector_is_empty(&s) && selector_matches(&s, &labels)
            });
            if !claimable {
                return Err(Error::Invalid(
                    "`selector` does not match template `labels`".into(),
                ));
            }
            let n = (want - pods.len()).min(BURST_REPLICAS);
            let pod = pod_from_template(owner, template);
            self.expectations.expect_creations(&key, n);
            let (ok, err) = podcontrol::slow_start_batch(n, 1, || {
                let api = api.clone();
                let pod = pod.clone();
                let regarding = regarding.clone();
                async move {
                    match api.create(&PostParams::default(), &pod).await {
                        Ok(created) => {
                            self.events.publish(
                                regarding,
                                EventType::Normal,
                                "SuccessfulCreate",
                                "Create",
                                format!("Created pod: {}", created.name_any()),
                            );
                            Ok(())
                        }
                        // The namespace is going away; nothing to report.
                        Err(e) if podcontrol::is_namespace_terminating(&e) => Ok(()),
                        Err(e) => {
                            self.events.publish(
                                regarding,
                                EventType::Warning,
                                "FailedCreate",
                                "Create",
                                format!("Error creating: {}", podcontrol::error_message(&e)),
                            );
                            Err(e)
                        }
                    }
                }
            })
            .await;
            // Creations never attempted or failed will never be observed.
            for _ in ok..n {
                self.expectations.creation_observed(&key);
            }
            return match err {
                Some(e) => Err(e.into()),
                None => Ok(()),
            };
        }
        if pods.len() > want {
            let n = (pods.len() - want).min(BURST_REPLICAS);
            let related = self.related_pods(owner);
            let mut ranked: Vec<Arc<Pod>> = pods.to_vec();
            podcontrol::rank_pods_for_deletion(&mut ranked, &related);
            ranked.truncate(n);
            let keys: HashSet<String> = ranked.iter().map(|p| podcontrol::pod_key(p)).collect();
            self.expectations.expect_deletions(&key, keys);
            let key = &key;
            let results = futures::future::join_all(ranked.iter().map(|pod| {
                let api = api.clone();
                let regarding = regarding.clone();
                async move {
                    let name = pod.name_any();
                    match api.delete(&name, &DeleteParams::default()).await {
                        Ok(_) => {
                            self.events.publish(
                                regarding,
                                EventType::Normal,
                                "SuccessfulDelete",
                                "Delete",
                                format!("Deleted pod: {name}"),
                            );
                            Ok(())
                        }
                        Err(e) => {
                            // The deletion will never be observed.
                            self.expectations
                                .deletion_observed(key, &podcontrol::pod_key(pod));
                            if podcontrol::is_not_found(&e) {
                                return Ok(());
                            }
                            self.events.publish(
                                regarding,
                                EventType::Warning,
                                "FailedDelete",
                                "Delete",
                                format!("Error deleting: {}", podcontrol::error_message(&e)),
                            );
                            Err(e)
                        }
                    }
                }
            }))
            .await;
            if let Some(e) = results.into_iter().find_map(Result::err) {
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Upstream `getIndirectlyRelatedPods`: the active pods of every owner
    /// controlled by the same controller (the Deployment's other
    /// ReplicaSets), for the same-node rank when choosing pods to delete.
    fn related_pods(&self, owner: &K) -> Vec<Arc<Pod>> {
        let ns = owner.namespace().unwrap_or_default();
        let mut uids: HashSet<String> = HashSet::new();
        uids.insert(owner.meta().uid.clone().unwrap_or_default());
        if let Some(parent) = controller_of(owner) {
            for o in self.owners.state() {
                if o.meta().namespace.as_deref() == Some(ns.as_str())
                    && controller_of(o.as_ref()).is_some_and(|r| r.uid == parent.uid)
                {
                    uids.insert(o.meta().uid.clone().unwrap_or_default());
                }
            }
        }
        self.pods_seen.store.state_filter(|p| {
            p.metadata.namespace.as_deref() == Some(ns.as_str())
                && is_pod_active(p)
                && controller_of(p).is_some_and(|r| uids.contains(&r.uid))
        })
    }
}

/// Upstream `GetPodFromTemplate`: labels, annotations and finalizers from
/// the template, a controller reference to the owner, and a generated name
/// `<owner>-xxxxx`.
fn pod_from_template<K: ReplicaOwner>(owner: &K, template: &PodTemplateSpec) -> Pod {
    let tm = template.metadata.clone().unwrap_or_default();
    let mut prefix = format!("{}-", owner.name_any());
    // The server appends 5 characters; keep the whole name a valid label.
    if prefix.len() > 58 {
        prefix.truncate(58);
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(prefix),
            namespace: owner.namespace(),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![controller_ref(owner)]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Upstream `calculateStatus` for ReplicaSets.
fn calculate_status<K: ReplicaOwner>(
    owner: &K,
    pods: &[Arc<Pod>],
    manage_err: Option<&Error>,
) -> ReplicaStatus {
    let now = Timestamp::now();
    let template_labels = owner
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let min_ready = owner.min_ready_seconds();
    let mut st = owner.current_status();
    st.replicas = pods.len() as i32;
    st.fully_labeled = 0;
    st.ready = 0;
    st.available = 0;
    for p in pods {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        if template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            st.fully_labeled += 1;
        }
        if is_pod_ready(p) {
            st.ready += 1;
            if is_pod_available(p, min_ready, now) {
                st.available += 1;
            }
        }
    }
    let has_failure = st.conditions.iter().any(|c| c.type_ == "ReplicaFailure");
    match manage_err {
        Some(e) if !has_failure => {
            let diff = pods.len() as i64 - i64::from(owner.replicas());
            let reason = if diff < 0 {
                Some("FailedCreate".to_string())
            } else if diff > 0 {
                Some("FailedDelete".to_string())
            } else {
                None
            };
            st.conditions.push(OwnerCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason,
                message: Some(match e {
                    Error::Kube(k) => podcontrol::error_message(k),
                    other => other.to_string(),
                }),
                last_transition_time: Some(podcontrol::now_time()),
            });
        }
        None if has_failure => st.conditions.retain(|c| c.type_ != "ReplicaFailure"),
        _ => {}
    }
    st.observed_generation = owner.meta().generation.unwrap_or(0);
    st
}

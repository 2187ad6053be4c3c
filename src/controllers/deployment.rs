//! The Deployment controller (upstream `pkg/controller/deployment`): owns
//! one ReplicaSet per pod template, named `<deployment>-<pod-template-hash>`,
//! and moves replicas from the old ones to the new one — RollingUpdate
//! within maxSurge/maxUnavailable, or Recreate — scaling proportionally when
//! the Deployment is resized mid-rollout, keeping `revisionHistoryLimit` old
//! ReplicaSets for `kubectl rollout undo`, and reporting progress through
//! the Progressing/Available conditions and `progressDeadlineSeconds`.
//!
//! Beyond upstream: a Deployment annotated
//! `skiff.io/rollback-on-failure: "true"` whose rollout exceeds its progress
//! deadline is rolled back to the newest revision that was once fully
//! available (the template is restored exactly as `kubectl rollout undo`
//! does), with a `RolledBack` Warning Event. ReplicaSets that completed a
//! rollout carry the label `skiff.io/rollout-complete: "true"` to mark that
//! (a label, because `kubectl rollout undo` copies a ReplicaSet's
//! annotations onto the Deployment).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::CancelableJoinHandle;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc::UnboundedSender;

use super::informer::{self, Change};
use super::podcontrol::{
    self, Backoff, controller_of, controller_ref, key_of, selector_is_empty, selector_matches,
};

const CONTROLLER: &str = "deployment-controller";
const RESYNC: Duration = Duration::from_secs(300);
/// While a Recreate rollout waits for old pods to terminate. This
/// controller does not watch pods, so it looks again after this long.
const RECREATE_POLL: Duration = Duration::from_secs(1);

pub const REVISION: &str = "deployment.kubernetes.io/revision";
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
pub const HASH_LABEL: &str = "pod-template-hash";
pub const ROLLBACK_ON_FAILURE: &str = "skiff.io/rollback-on-failure";
pub const ROLLOUT_COMPLETE: &str = "skiff.io/rollout-complete";
/// Upstream `maxRevHistoryLengthInChars`.
const MAX_REV_HISTORY_CHARS: usize = 2000;

/// Annotations never copied from a Deployment to its ReplicaSets (and kept
/// on the Deployment by a rollback), as upstream's `annotationsToSkip`,
/// plus skiff's own marker.
const SKIP_COPY: [&str; 6] = [
    LAST_APPLIED,
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    ROLLBACK_TO,
];

// Condition types and reasons (upstream deployment util).
const PROGRESSING: &str = "Progressing";
const AVAILABLE: &str = "Available";
const REPLICA_FAILURE: &str = "ReplicaFailure";
const NEW_RS_REASON: &str = "NewReplicaSetCreated";
const FOUND_NEW_RS_REASON: &str = "FoundNewReplicaSet";
const RS_UPDATED_REASON: &str = "ReplicaSetUpdated";
const NEW_RS_AVAILABLE_REASON: &str = "NewReplicaSetAvailable";
const TIMED_OUT_REASON: &str = "ProgressDeadlineExceeded";
const FAILED_RS_CREATE_REASON: &str = "ReplicaSetCreateError";
const PAUSED_REASON: &str = "DeploymentPaused";
const RESUMED_REASON: &str = "DeploymentResumed";
const MIN_AVAILABLE_REASON: &str = "MinimumReplicasAvailable";
const MIN_UNAVAILABLE_REASON: &str = "MinimumReplicasUnavailable";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("replica set cache is gone")]
    CacheGone,
    #[error("hash collision for replica set {0}; collisionCount bumped")]
    Collision(String),
    #[error("{0}")]
    Invalid(String),
}

struct Ctx {
    client: Client,
    deployments: Store<Deployment>,
    replicasets: Store<ReplicaSet>,
    trigger: UnboundedSender<ObjectRef<Deployment>>,
    backoff: Backoff,
    events: podcontrol::Events,
}

/// Runs the Deployment controller until cancelled.
pub async fn run(client: Client) {
    let (deployments, d_writer) = reflector::store::<Deployment>();
    let (replicasets, rs_writer) = reflector::store::<ReplicaSet>();
    let (trigger, queue) = podcontrol::queue::<Deployment>();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        deployments: deployments.clone(),
        replicasets,
        trigger,
        backoff: Backoff::default(),
        events: podcontrol::Events::new(client.clone(), CONTROLLER),
    });
    let c = ctx.clone();
    let d_informer = informer::run_local(
        Api::<Deployment>::all(client.clone()),
        d_writer,
        move |ch| c.on_deployment(ch),
    );
    let c = ctx.clone();
    let rs_informer = informer::run_local(Api::<ReplicaSet>::all(client), rs_writer, move |ch| {
        c.on_replicaset(ch)
    });
    let applier = kube::runtime::applier(
        |d: Arc<Deployment>, ctx: Arc<Ctx>| {
            CancelableJoinHandle::spawn(reconcile(d, ctx), &tokio::runtime::Handle::current())
        },
        |d: Arc<Deployment>, err: &Error, ctx: Arc<Ctx>| {
            ctx.backoff.action(
                &key_of(d.as_ref()),
                err,
                matches!(err, Error::Kube(e) if podcontrol::is_conflict(e)),
            )
        },
        ctx,
        deployments,
        queue,
        Config::default(),
    )
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!(controller = CONTROLLER, "reconcile: {e}");
        }
    });
    tokio::join!(d_informer, rs_informer, applier);
}

impl Ctx {
    fn enqueue(&self, d: &Deployment) {
        let _ = self.trigger.send(podcontrol::obj_ref(d));
    }

    fn resolve(
        &self,
        ns: &str,
        r: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    ) -> Option<Arc<Deployment>> {
        if r.kind != "Deployment" {
            return None;
        }
        let d = self.deployments.get(&ObjectRef::new(&r.name).within(ns))?;
        (d.metadata.uid.as_deref() == Some(r.uid.as_str())).then_some(d)
    }

    /// Deployments whose selector matches an orphaned ReplicaSet.
    fn deployments_for(&self, rs: &ReplicaSet) -> Vec<Arc<Deployment>> {
        let ns = rs.metadata.namespace.as_deref().unwrap_or("");
        let labels = rs.metadata.labels.clone().unwrap_or_default();
        if labels.is_empty() {
            return Vec::new();
        }
        self.deployments.state_filter(|d| {
            d.metadata.namespace.as_deref() == Some(ns)
                && d.spec.as_ref().is_some_and(|s| {
                    !selector_is_empty(&s.selector) && selector_matches(&s.selector, &labels)
                })
        })
    }

    fn on_deployment(&self, change: Change<Deployment>) {
        match change {
            Change::Added(d) => self.enqueue(&d),
            // Every change, our own status writes included, as upstream:
            // some steps (history cleanup) wait for a status written by the
            // previous sync.
            Change::Updated(old, new) => {
                if old.metadata.resource_version != new.metadata.resource_version {
                    self.enqueue(&new);
                }
            }
            Change::Deleted(_) => {}
        }
    }

    /// Upstream add/update/deleteReplicaSet.
    fn on_replicaset(&self, change: Change<ReplicaSet>) {
        match change {
            Change::Added(rs) => {
                let ns = rs.metadata.namespace.as_deref().unwrap_or("");
                if let Some(r) = controller_of(rs.as_ref()) {
                    if let Some(d) = self.resolve(ns, r) {
                        self.enqueue(&d);
                    }
                    return;
                }
                for d in self.deployments_for(&rs) {
                    self.enqueue(&d);
                }
            }
            Change::Updated(old, cur) => {
                if old.metadata.resource_version == cur.metadata.resource_version {
                    return;
                }
                let ns = cur.metadata.namespace.as_deref().unwrap_or("");
                let cur_ref = controller_of(cur.as_ref());
                let old_ref = controller_of(old.as_ref());
                let ref_changed = cur_ref != old_ref;
                if ref_changed
                    && let Some(r) = old_ref
                    && let Some(d) = self.resolve(ns, r)
                {
                    self.enqueue(&d);
                }
                if let Some(r) = cur_ref {
                    if let Some(d) = self.resolve(ns, r) {
                        self.enqueue(&d);
                    }
                    return;
                }
                if ref_changed || old.metadata.labels != cur.metadata.labels {
                    for d in self.deployments_for(&cur) {
                        self.enqueue(&d);
                    }
                }
            }
            Change::Deleted(rs) => {
                let ns = rs.metadata.namespace.as_deref().unwrap_or("");
                if let Some(r) = controller_of(rs.as_ref())
                    && let Some(d) = self.resolve(ns, r)
                {
                    self.enqueue(&d);
                }
            }
        }
    }
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    ctx.replicasets
        .wait_until_ready()
        .await
        .map_err(|_| Error::CacheGone)?;
    let key = key_of(d.as_ref());
    let mut s = Sync {
        ctx: &ctx,
        generation: d.metadata.generation.unwrap_or(0),
        stored: d.status.clone().unwrap_or_default(),
        d: (*d).clone(),
        requeue: None,
    };
    s.sync().await?;
    ctx.backoff.reset(&key);
    Ok(podcontrol::requeue_within(s.requeue, RESYNC))
}

/// The ReplicaSets of one Deployment during a sync: `new` indexes the one
/// whose template matches the Deployment's, if it exists.
#[derive(Default)]
struct Rsets {
    list: Vec<ReplicaSet>,
    new: Option<usize>,
}

impl Rsets {
    fn new_rs(&self) -> Option<&ReplicaSet> {
        self.new.map(|i| &self.list[i])
    }
    fn old_idx(&self) -> Vec<usize> {
        (0..self.list.len())
            .filter(|i| Some(*i) != self.new)
            .collect()
    }
    fn active_old_idx(&self) -> Vec<usize> {
        self.old_idx()
            .into_iter()
            .filter(|&i| spec_replicas(&self.list[i]) > 0)
            .collect()
    }
    fn by_creation(&self, mut idx: Vec<usize>) -> Vec<usize> {
        idx.sort_by_key(|&i| (created(&self.list[i]), self.list[i].name_any()));
        idx
    }
}

/// One sync of one Deployment (upstream `syncDeployment` and friends).
struct Sync<'a> {
    ctx: &'a Ctx,
    /// The generation of the spec this sync works from.
    generation: i64,
    /// The status the API server has.
    stored: DeploymentStatus,
    /// Working copy; `status` may be ahead of `stored`.
    d: Deployment,
    requeue: Option<Duration>,
}

impl Sync<'_> {
    fn ns(&self) -> String {
        self.d.namespace().unwrap_or_default()
    }
    fn name(&self) -> String {
        self.d.name_any()
    }
    fn rs_api(&self) -> Api<ReplicaSet> {
        Api::namespaced(self.ctx.client.clone(), &self.ns())
    }
    fn d_api(&self) -> Api<Deployment> {
        Api::namespaced(self.ctx.client.clone(), &self.ns())
    }
    fn replicas(&self) -> i32 {
        replicas_of(&self.d)
    }
    fn status(&mut self) -> &mut DeploymentStatus {
        self.d.status.get_or_insert_with(Default::default)
    }
    fn requeue_after(&mut self, d: Duration) {
        self.requeue = Some(self.requeue.map_or(d, |r| r.min(d)));
    }

    fn event(&self, type_: EventType, reason: &str, action: &str, note: String) {
        self.ctx
            .events
            .publish(self.d.object_ref(&()), type_, reason, action, note);
    }

    async fn sync(&mut self) -> Result<(), Error> {
        let Some(spec) = self.d.spec.clone() else {
            return Ok(());
        };
        if selector_is_empty(&spec.selector) {
            self.event(
                EventType::Warning,
                "SelectorRequired",
                "Sync",
                "This deployment will select all pods. A non-empty selector is required.".into(),
            );
            if self.stored.observed_generation.unwrap_or(0) < self.generation {
                self.status().observed_generation = Some(self.generation);
                self.write_status().await?;
            }
            return Ok(());
        }
        let mut rsets = Rsets {
            list: self.claim_replica_sets(&spec.selector).await?,
            new: None,
        };
        if self.d.metadata.deletion_timestamp.is_some() {
            self.get_all_rs_and_sync_revision(&mut rsets, false).await?;
            return self.sync_deployment_status(&rsets).await;
        }
        self.check_paused_conditions().await?;
        if spec.paused == Some(true) {
            return self.sync_scale(rsets).await;
        }
        if self.is_scaling_event(&mut rsets).await? {
            return self.sync_scale(rsets).await;
        }
        if is_recreate(&self.d) {
            self.rollout_recreate(rsets).await
        } else {
            self.rollout_rolling(rsets).await
        }
    }

    // -- ReplicaSet ownership ------------------------------------------------

    /// Upstream `getReplicaSetsForDeployment` with `ClaimReplicaSets`.
    async fn claim_replica_sets(
        &mut self,
        selector: &LabelSelector,
    ) -> Result<Vec<ReplicaSet>, Error> {
        let ns = self.ns();
        let uid = self.d.metadata.uid.clone().unwrap_or_default();
        let deleting = self.d.metadata.deletion_timestamp.is_some();
        let api = self.rs_api();
        let candidates = self
            .ctx
            .replicasets
            .state_filter(|rs| rs.metadata.namespace.as_deref() == Some(ns.as_str()));
        let mut claimed = Vec::new();
        let mut can_adopt: Option<bool> = None;
        let empty = BTreeMap::new();
        for rs in candidates {
            let labels = rs.metadata.labels.as_ref().unwrap_or(&empty);
            let matches = selector_matches(selector, labels);
            let rs_uid = rs.metadata.uid.clone().unwrap_or_default();
            match controller_of(rs.as_ref()) {
                Some(r) if r.uid == uid => {
                    if matches {
                        claimed.push((*rs).clone());
                    } else if !deleting {
                        match api
                            .patch(
                                &rs.name_any(),
                                &PatchParams::default(),
                                &Patch::Strategic(podcontrol::release_patch(&uid, &rs_uid)),
                            )
                            .await
                        {
                            Ok(_) => {}
                            Err(e) if podcontrol::is_not_found(&e) => {}
                            Err(kube::Error::Api(s)) if s.code == 422 => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                Some(_) => {}
                None => {
                    if !matches || deleting || rs.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    if can_adopt.is_none() {
                        let fresh = self.d_api().get_opt(&self.name()).await?;
                        can_adopt = Some(fresh.is_some_and(|f| {
                            f.metadata.uid.as_deref() == Some(uid.as_str())
                                && f.metadata.deletion_timestamp.is_none()
                        }));
                    }
                    if can_adopt != Some(true) {
                        continue;
                    }
                    match api
                        .patch(
                            &rs.name_any(),
                            &PatchParams::default(),
                            &Patch::Strategic(podcontrol::adopt_patch(
                                &controller_ref(&self.d),
                                &rs_uid,
                            )),
                        )
                        .await
                    {
                        Ok(adopted) => claimed.push(adopted),
                        Err(e) if podcontrol::is_not_found(&e) => {}
                        Err(kube::Error::Api(s)) if s.code == 422 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(claimed)
    }

    // -- writes --------------------------------------------------------------

    /// Writes the working status if it differs from the stored one.
    async fn write_status(&mut self) -> Result<(), Error> {
        let working = self.d.status.clone().unwrap_or_default();
        if working == self.stored {
            return Ok(());
        }
        let updated = self
            .d_api()
            .replace_status(&self.name(), &PostParams::default(), &self.d)
            .await?;
        self.stored = updated.status.clone().unwrap_or_default();
        self.d.metadata = updated.metadata;
        self.d.status = updated.status;
        Ok(())
    }

    /// Sets the Deployment's revision annotation (a metadata write: the
    /// status subresource does not carry annotations).
    async fn set_deployment_revision(&mut self, revision: &str) -> Result<(), Error> {
        let current = self
            .d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION));
        if current.map(String::as_str) == Some(revision) {
            return Ok(());
        }
        let updated = self
            .d_api()
            .patch(
                &self.name(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {REVISION: revision}}})),
            )
            .await?;
        self.d.metadata = updated.metadata;
        Ok(())
    }

    /// Scales one ReplicaSet and refreshes the replica annotations
    /// (upstream `scaleReplicaSet`); returns whether the size changed.
    async fn scale_rs(
        &mut self,
        rsets: &mut Rsets,
        i: usize,
        new_scale: i32,
        op: &str,
    ) -> Result<bool, Error> {
        let rs = &rsets.list[i];
        let old_scale = spec_replicas(rs);
        let desired = self.replicas();
        let max = desired + max_surge(&self.d);
        let size_needs_update = old_scale != new_scale;
        if !size_needs_update && !replicas_annotations_need_update(rs, desired, max) {
            return Ok(false);
        }
        let mut copy = rs.clone();
        copy.spec.get_or_insert_with(Default::default).replicas = Some(new_scale);
        set_replicas_annotations(&mut copy, desired, max);
        let updated = self
            .rs_api()
            .replace(&copy.name_any(), &PostParams::default(), &copy)
            .await?;
        if size_needs_update {
            self.event(
                EventType::Normal,
                "ScalingReplicaSet",
                "Scale",
                format!(
                    "Scaled {op} replica set {} from {old_scale} to {new_scale}",
                    updated.name_any()
                ),
            );
        }
        rsets.list[i] = updated;
        Ok(size_needs_update)
    }

    async fn scale_rs_and_record(
        &mut self,
        rsets: &mut Rsets,
        i: usize,
        new_scale: i32,
    ) -> Result<bool, Error> {
        let cur = spec_replicas(&rsets.list[i]);
        if cur == new_scale {
            return Ok(false);
        }
        let op = if cur < new_scale { "up" } else { "down" };
        self.scale_rs(rsets, i, new_scale, op).await
    }

    // -- new ReplicaSet and revisions ----------------------------------------

    /// Upstream `getAllReplicaSetsAndSyncRevision`: finds (or, with
    /// `create`, creates) the new ReplicaSet and brings its annotations and
    /// the Deployment's revision up to date.
    async fn get_all_rs_and_sync_revision(
        &mut self,
        rsets: &mut Rsets,
        create: bool,
    ) -> Result<(), Error> {
        let template = self
            .d
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        rsets.new = rsets
            .by_creation((0..rsets.list.len()).collect())
            .into_iter()
            .find(|&i| {
                rsets.list[i]
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| equal_ignore_hash(t, &template))
            });
        let max_old = rsets
            .old_idx()
            .iter()
            .map(|&i| revision_of(&rsets.list[i]))
            .max()
            .unwrap_or(0);
        let new_revision = (max_old + 1).to_string();
        let min_ready = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0);

        if let Some(i) = rsets.new {
            let mut copy = rsets.list[i].clone();
            let annotations_updated =
                set_new_rs_annotations(&self.d, &mut copy, &new_revision, true);
            let spec = copy.spec.get_or_insert_with(Default::default);
            let min_ready_update = spec.min_ready_seconds.unwrap_or(0) != min_ready;
            if annotations_updated || min_ready_update {
                spec.min_ready_seconds = Some(min_ready);
                let updated = self
                    .rs_api()
                    .replace(&copy.name_any(), &PostParams::default(), &copy)
                    .await?;
                rsets.list[i] = updated;
                return Ok(());
            }
            let rev = annotation(&copy, REVISION).unwrap_or_default().to_string();
            self.set_deployment_revision(&rev).await?;
            if has_progress_deadline(&self.d)
                && condition(self.d.status.as_ref(), PROGRESSING).is_none()
            {
                let msg = format!("Found new replica set {:?}", copy.name_any());
                set_condition(
                    self.status(),
                    new_condition(PROGRESSING, "True", FOUND_NEW_RS_REASON, msg),
                );
                self.write_status().await?;
            }
            return Ok(());
        }
        if !create {
            return Ok(());
        }

        let collision = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = pod_template_hash(&template, collision);
        let mut new_template = template.clone();
        new_template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector = self
            .d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let name = format!("{}-{}", self.name(), hash);
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.ns()),
                owner_references: Some(vec![controller_ref(&self.d)]),
                labels: new_template
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.clone()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: Some(min_ready),
                selector,
                template: Some(new_template),
            }),
            status: None,
        };
        let mut all: Vec<&ReplicaSet> = rsets.list.iter().collect();
        all.push(&rs);
        let new_replicas = new_rs_new_replicas(&self.d, &all, &rs);
        rs.spec.get_or_insert_with(Default::default).replicas = Some(new_replicas);
        set_new_rs_annotations(&self.d, &mut rs, &new_revision, false);

        let (created, already_existed) = match self
            .rs_api()
            .create(&PostParams::default(), &rs)
            .await
        {
            Ok(created) => (created, false),
            Err(e) if podcontrol::is_already_exists(&e) => {
                // A slow cache, or a genuine hash collision.
                let existing = self.rs_api().get_opt(&name).await?;
                let ours = existing.as_ref().is_some_and(|x| {
                    controller_of(x)
                        .is_some_and(|r| Some(r.uid.as_str()) == self.d.metadata.uid.as_deref())
                        && x.spec
                            .as_ref()
                            .and_then(|s| s.template.as_ref())
                            .is_some_and(|t| equal_ignore_hash(t, &template))
                });
                match existing {
                    Some(x) if ours => (x, true),
                    _ => {
                        let st = self.status();
                        st.collision_count = Some(st.collision_count.unwrap_or(0) + 1);
                        self.write_status().await?;
                        return Err(Error::Collision(name));
                    }
                }
            }
            Err(e) if podcontrol::is_namespace_terminating(&e) => return Err(e.into()),
            Err(e) => {
                let msg = format!(
                    "Failed to create new replica set {name:?}: {}",
                    podcontrol::error_message(&e)
                );
                if has_progress_deadline(&self.d) {
                    set_condition(
                        self.status(),
                        new_condition(PROGRESSING, "False", FAILED_RS_CREATE_REASON, msg.clone()),
                    );
                    let _ = self.write_status().await;
                }
                self.event(EventType::Warning, FAILED_RS_CREATE_REASON, "Create", msg);
                return Err(e.into());
            }
        };
        if !already_existed && new_replicas > 0 {
            self.event(
                EventType::Normal,
                "ScalingReplicaSet",
                "Scale",
                format!("Scaled up replica set {name} from 0 to {new_replicas}"),
            );
        }
        self.set_deployment_revision(&new_revision).await?;
        if !already_existed && has_progress_deadline(&self.d) {
            let msg = format!("Created new replica set {name:?}");
            set_condition(
                self.status(),
                new_condition(PROGRESSING, "True", NEW_RS_REASON, msg),
            );
            self.write_status().await?;
        }
        rsets.list.push(created);
        rsets.new = Some(rsets.list.len() - 1);
        Ok(())
    }

    // -- scaling (upstream sync.go) -------------------------------------------

    /// Upstream `isScalingEvent`: an active ReplicaSet was sized for a
    /// different Deployment size than the current one.
    async fn is_scaling_event(&mut self, rsets: &mut Rsets) -> Result<bool, Error> {
        self.get_all_rs_and_sync_revision(rsets, false).await?;
        let replicas = self.replicas();
        Ok(rsets
            .list
            .iter()
            .filter(|rs| spec_replicas(rs) > 0)
            .filter_map(|rs| int_annotation(rs, DESIRED_REPLICAS))
            .any(|desired| desired != replicas))
    }

    /// Upstream `sync`: scaling and paused Deployments.
    async fn sync_scale(&mut self, mut rsets: Rsets) -> Result<(), Error> {
        self.get_all_rs_and_sync_revision(&mut rsets, false).await?;
        self.scale(&mut rsets).await?;
        if self.d.spec.as_ref().and_then(|s| s.paused) == Some(true) {
            self.cleanup(&rsets).await?;
        }
        self.sync_deployment_status(&rsets).await
    }

    /// Upstream `scale`: the only active ReplicaSet takes the new size;
    /// otherwise, for rolling updates, the difference is spread across the
    /// active ReplicaSets in proportion to their size.
    async fn scale(&mut self, rsets: &mut Rsets) -> Result<(), Error> {
        let replicas = self.replicas();
        if let Some(i) = find_active_or_latest(rsets) {
            if spec_replicas(&rsets.list[i]) != replicas {
                self.scale_rs_and_record(rsets, i, replicas).await?;
            }
            return Ok(());
        }
        if rsets.new_rs().is_some_and(|n| is_saturated(&self.d, n)) {
            for i in rsets.active_old_idx() {
                self.scale_rs_and_record(rsets, i, 0).await?;
            }
            return Ok(());
        }
        if is_recreate(&self.d) {
            return Ok(());
        }
        let mut active: Vec<usize> = rsets.active_old_idx();
        if let Some(n) = rsets.new
            && spec_replicas(&rsets.list[n]) > 0
        {
            active.push(n);
        }
        let total: i32 = active.iter().map(|&i| spec_replicas(&rsets.list[i])).sum();
        let allowed = if replicas > 0 {
            replicas + max_surge(&self.d)
        } else {
            0
        };
        let to_add = allowed - total;
        let op = match to_add.cmp(&0) {
            std::cmp::Ordering::Greater => {
                // Larger first; among equals the newer scales up first.
                active.sort_by_key(|&i| {
                    (
                        std::cmp::Reverse(spec_replicas(&rsets.list[i])),
                        std::cmp::Reverse(created(&rsets.list[i])),
                    )
                });
                "up"
            }
            std::cmp::Ordering::Less => {
                // Larger first; among equals the older scales down first.
                active.sort_by_key(|&i| {
                    (
                        std::cmp::Reverse(spec_replicas(&rsets.list[i])),
                        created(&rsets.list[i]),
                    )
                });
                "down"
            }
            std::cmp::Ordering::Equal => "",
        };
        let mut added = 0;
        let mut sizes: Vec<i32> = Vec::with_capacity(active.len());
        for &i in &active {
            let rs = &rsets.list[i];
            if to_add != 0 {
                let p = proportion(rs, &self.d, to_add, added);
                sizes.push(spec_replicas(rs) + p);
                added += p;
            } else {
                sizes.push(spec_replicas(rs));
            }
        }
        for (k, &i) in active.iter().enumerate() {
            let mut size = sizes[k];
            // Leftovers go to the largest ReplicaSet.
            if k == 0 && to_add != 0 {
                size = (size + to_add - added).max(0);
            }
            self.scale_rs(rsets, i, size, op).await?;
        }
        Ok(())
    }

    // -- rolling update (upstream rolling.go) ---------------------------------

    async fn rollout_rolling(&mut self, mut rsets: Rsets) -> Result<(), Error> {
        self.get_all_rs_and_sync_revision(&mut rsets, true).await?;
        if self.reconcile_new_rs(&mut rsets).await? {
            return self.sync_rollout_status(&rsets).await;
        }
        if self.reconcile_old_rss(&mut rsets).await? {
            return self.sync_rollout_status(&rsets).await;
        }
        if deployment_complete(&self.d, &self.stored, self.generation) {
            self.cleanup(&rsets).await?;
        }
        self.sync_rollout_status(&rsets).await
    }

    async fn reconcile_new_rs(&mut self, rsets: &mut Rsets) -> Result<bool, Error> {
        let Some(n) = rsets.new else { return Ok(false) };
        let replicas = self.replicas();
        let cur = spec_replicas(&rsets.list[n]);
        if cur == replicas {
            return Ok(false);
        }
        if cur > replicas {
            return self.scale_rs_and_record(rsets, n, replicas).await;
        }
        let all: Vec<&ReplicaSet> = rsets.list.iter().collect();
        let count = new_rs_new_replicas(&self.d, &all, &rsets.list[n]);
        self.scale_rs_and_record(rsets, n, count).await
    }

    /// Upstream `reconcileOldReplicaSets`: scale old ReplicaSets down as far
    /// as availability allows, unhealthy replicas first.
    async fn reconcile_old_rss(&mut self, rsets: &mut Rsets) -> Result<bool, Error> {
        let old = rsets.active_old_idx();
        let old_pods: i32 = old.iter().map(|&i| spec_replicas(&rsets.list[i])).sum();
        if old_pods == 0 {
            return Ok(false);
        }
        let all_pods: i32 = rsets.list.iter().map(spec_replicas).sum();
        let min_available = self.replicas() - max_unavailable(&self.d);
        let new_unavailable = rsets
            .new_rs()
            .map_or(0, |n| spec_replicas(n) - available_replicas(n));
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        let cleaned = self
            .cleanup_unhealthy_replicas(rsets, &old, max_scaled_down)
            .await?;
        let scaled = self.scale_down_old_for_rolling(rsets, &old).await?;
        Ok(cleaned + scaled > 0)
    }

    async fn cleanup_unhealthy_replicas(
        &mut self,
        rsets: &mut Rsets,
        old: &[usize],
        max: i32,
    ) -> Result<i32, Error> {
        let mut total = 0;
        for i in rsets.by_creation(old.to_vec()) {
            if total >= max {
                break;
            }
            let (spec, avail) = (
                spec_replicas(&rsets.list[i]),
                available_replicas(&rsets.list[i]),
            );
            if spec == 0 || spec == avail {
                continue;
            }
            let scaled = (max - total).min(spec - avail);
            let new_count = spec - scaled;
            if new_count > spec {
                return Err(Error::Invalid(format!(
                    "when cleaning up unhealthy replicas, got invalid request to scale down {} {spec} -> {new_count}",
                    rsets.list[i].name_any()
                )));
            }
            self.scale_rs_and_record(rsets, i, new_count).await?;
            total += scaled;
        }
        Ok(total)
    }

    async fn scale_down_old_for_rolling(
        &mut self,
        rsets: &mut Rsets,
        old: &[usize],
    ) -> Result<i32, Error> {
        let min_available = self.replicas() - max_unavailable(&self.d);
        // Unlike upstream, a ReplicaSet never counts for more available
        // pods than it is sized for: right after a scale-down its status
        // may not have caught up, and counting the pods about to go would
        // let a second scale-down dip below minAvailable.
        let available: i32 = rsets
            .list
            .iter()
            .map(|rs| available_replicas(rs).min(spec_replicas(rs)))
            .sum();
        if available <= min_available {
            return Ok(0);
        }
        let target = available - min_available;
        let mut total = 0;
        for i in rsets.by_creation(old.to_vec()) {
            if total >= target {
                break;
            }
            let spec = spec_replicas(&rsets.list[i]);
            if spec == 0 {
                continue;
            }
            let down = spec.min(target - total);
            self.scale_rs_and_record(rsets, i, spec - down).await?;
            total += down;
        }
        Ok(total)
    }

    // -- recreate (upstream recreate.go) --------------------------------------

    async fn rollout_recreate(&mut self, mut rsets: Rsets) -> Result<(), Error> {
        self.get_all_rs_and_sync_revision(&mut rsets, false).await?;
        let mut scaled_down = false;
        for i in rsets.active_old_idx() {
            if self.scale_rs_and_record(&mut rsets, i, 0).await? {
                scaled_down = true;
            }
        }
        if scaled_down {
            return self.sync_rollout_status(&rsets).await;
        }
        if self.old_pods_running(&rsets).await? {
            self.requeue_after(RECREATE_POLL);
            return self.sync_rollout_status(&rsets).await;
        }
        if rsets.new.is_none() {
            self.get_all_rs_and_sync_revision(&mut rsets, true).await?;
        }
        if let Some(n) = rsets.new {
            let replicas = self.replicas();
            self.scale_rs_and_record(&mut rsets, n, replicas).await?;
        }
        if deployment_complete(&self.d, &self.stored, self.generation) {
            self.cleanup(&rsets).await?;
        }
        self.sync_rollout_status(&rsets).await
    }

    /// Upstream `oldPodsRunning`: old ReplicaSets still report pods, or a
    /// pod of an old ReplicaSet has not reached a terminal phase (it may be
    /// terminating).
    async fn old_pods_running(&self, rsets: &Rsets) -> Result<bool, Error> {
        let old = rsets.old_idx();
        if old
            .iter()
            .map(|&i| status_replicas(&rsets.list[i]))
            .sum::<i32>()
            > 0
        {
            return Ok(true);
        }
        let old_uids: Vec<String> = old
            .iter()
            .filter_map(|&i| rsets.list[i].metadata.uid.clone())
            .collect();
        if old_uids.is_empty() {
            return Ok(false);
        }
        let selector = self
            .d
            .spec
            .as_ref()
            .map(|s| selector_string(&s.selector))
            .unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ns());
        let list = pods.list(&ListParams::default().labels(&selector)).await?;
        Ok(list.items.iter().any(|p| {
            controller_of(p).is_some_and(|r| old_uids.contains(&r.uid))
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
        }))
    }

    // -- history ---------------------------------------------------------------

    /// Upstream `cleanupDeployment`: delete the oldest scaled-down old
    /// ReplicaSets beyond `revisionHistoryLimit`.
    async fn cleanup(&mut self, rsets: &Rsets) -> Result<(), Error> {
        let Some(limit) = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .filter(|&l| l != i32::MAX)
        else {
            return Ok(());
        };
        let mut cleanable: Vec<&ReplicaSet> = rsets
            .old_idx()
            .into_iter()
            .map(|i| &rsets.list[i])
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        let diff = cleanable.len() as i64 - i64::from(limit.max(0));
        if diff <= 0 {
            return Ok(());
        }
        cleanable.sort_by_key(|rs| (revision_of(rs), created(rs), rs.name_any()));
        for rs in cleanable.into_iter().take(diff as usize) {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if status_replicas(rs) != 0
                || spec_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            match self
                .rs_api()
                .delete(&rs.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(e) if podcontrol::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    // -- status and conditions (upstream progress.go, sync.go) ----------------

    /// Upstream `checkPausedConditions`.
    async fn check_paused_conditions(&mut self) -> Result<(), Error> {
        if !has_progress_deadline(&self.d) {
            return Ok(());
        }
        let cond = condition(self.d.status.as_ref(), PROGRESSING).cloned();
        if cond.as_ref().and_then(|c| c.reason.as_deref()) == Some(TIMED_OUT_REASON) {
            // A reported lack of progress is not overwritten by pausing.
            return Ok(());
        }
        let paused_cond = cond.as_ref().and_then(|c| c.reason.as_deref()) == Some(PAUSED_REASON);
        let paused = self.d.spec.as_ref().and_then(|s| s.paused) == Some(true);
        if paused && !paused_cond {
            set_condition(
                self.status(),
                new_condition(
                    PROGRESSING,
                    "Unknown",
                    PAUSED_REASON,
                    "Deployment is paused".into(),
                ),
            );
        } else if !paused && paused_cond {
            set_condition(
                self.status(),
                new_condition(
                    PROGRESSING,
                    "Unknown",
                    RESUMED_REASON,
                    "Deployment is resumed".into(),
                ),
            );
        } else {
            return Ok(());
        }
        self.write_status().await
    }

    /// Upstream `calculateStatus`.
    fn calculate_status(&self, rsets: &Rsets) -> DeploymentStatus {
        let all = &rsets.list;
        let available: i32 = all.iter().map(available_replicas).sum();
        let total: i32 = all.iter().map(spec_replicas).sum();
        let mut st = DeploymentStatus {
            observed_generation: nz64(self.generation),
            replicas: nz(all.iter().map(status_replicas).sum()),
            updated_replicas: nz(rsets.new_rs().map_or(0, status_replicas)),
            ready_replicas: nz(all.iter().map(ready_replicas).sum()),
            available_replicas: nz(available),
            unavailable_replicas: nz((total - available).max(0)),
            collision_count: self.d.status.as_ref().and_then(|s| s.collision_count),
            conditions: self.d.status.as_ref().and_then(|s| s.conditions.clone()),
            terminating_replicas: None,
        };
        if available >= self.replicas() - max_unavailable(&self.d) {
            set_condition(
                &mut st,
                new_condition(
                    AVAILABLE,
                    "True",
                    MIN_AVAILABLE_REASON,
                    "Deployment has minimum availability.".into(),
                ),
            );
        } else {
            set_condition(
                &mut st,
                new_condition(
                    AVAILABLE,
                    "False",
                    MIN_UNAVAILABLE_REASON,
                    "Deployment does not have minimum availability.".into(),
                ),
            );
        }
        st
    }

    /// Upstream `syncDeploymentStatus` (no progress estimation).
    async fn sync_deployment_status(&mut self, rsets: &Rsets) -> Result<(), Error> {
        let st = self.calculate_status(rsets);
        self.d.status = Some(st);
        self.write_status().await
    }

    /// Upstream `syncRolloutStatus`, plus skiff's rollback on failure.
    async fn sync_rollout_status(&mut self, rsets: &Rsets) -> Result<(), Error> {
        let mut st = self.calculate_status(rsets);
        let new_rs = rsets.new_rs();
        if !has_progress_deadline(&self.d) {
            remove_condition(&mut st, PROGRESSING);
        }
        let current = condition(self.d.status.as_ref(), PROGRESSING).cloned();
        let complete_before = st.replicas == st.updated_replicas
            && current.as_ref().and_then(|c| c.reason.as_deref()) == Some(NEW_RS_AVAILABLE_REASON);
        if has_progress_deadline(&self.d) && !complete_before {
            let what = match new_rs {
                Some(rs) => format!("ReplicaSet {:?}", rs.name_any()),
                None => format!("Deployment {:?}", self.name()),
            };
            let old = self.d.status.clone().unwrap_or_default();
            if deployment_complete(&self.d, &st, self.generation) {
                set_condition(
                    &mut st,
                    new_condition(
                        PROGRESSING,
                        "True",
                        NEW_RS_AVAILABLE_REASON,
                        format!("{what} has successfully progressed."),
                    ),
                );
            } else if deployment_progressing(&old, &st) {
                let mut c = new_condition(
                    PROGRESSING,
                    "True",
                    RS_UPDATED_REASON,
                    format!("{what} is progressing."),
                );
                if let Some(cur) = &current {
                    if cur.status == "True" {
                        c.last_transition_time = cur.last_transition_time.clone();
                    }
                    remove_condition(&mut st, PROGRESSING);
                }
                set_condition(&mut st, c);
            } else if deployment_timed_out(&self.d, &st) {
                set_condition(
                    &mut st,
                    new_condition(
                        PROGRESSING,
                        "False",
                        TIMED_OUT_REASON,
                        format!("{what} has timed out progressing."),
                    ),
                );
            }
        }
        // The new ReplicaSet's failure first, else any other's.
        let failure = new_rs
            .into_iter()
            .chain(rsets.list.iter())
            .flat_map(|rs| rs.status.iter().flat_map(|s| s.conditions.iter().flatten()))
            .find(|c| c.type_ == REPLICA_FAILURE)
            .map(|c| DeploymentCondition {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_update_time: c.last_transition_time.clone(),
                last_transition_time: c.last_transition_time.clone(),
            });
        match failure {
            Some(c) => set_condition(&mut st, c),
            None => remove_condition(&mut st, REPLICA_FAILURE),
        }

        let complete = deployment_complete(&self.d, &st, self.generation);
        let timed_out = condition(Some(&st), PROGRESSING).and_then(|c| c.reason.as_deref())
            == Some(TIMED_OUT_REASON);
        self.d.status = Some(st.clone());
        self.write_status().await?;

        if let Some(rs) = new_rs
            && complete
            && !rollout_completed(rs)
        {
            self.mark_available(rs).await?;
        }
        if timed_out
            && self
                .d
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ROLLBACK_ON_FAILURE))
                .map(String::as_str)
                == Some("true")
        {
            self.rollback_on_failure(rsets).await?;
        }
        if let Some(after) = self.stuck_requeue(&st) {
            self.requeue_after(after);
        }
        Ok(())
    }

    /// Upstream `requeueStuckDeployment`: when to look again for a
    /// progress-deadline check.
    fn stuck_requeue(&self, st: &DeploymentStatus) -> Option<Duration> {
        let secs = progress_deadline(&self.d)?;
        let cond = condition(Some(st), PROGRESSING)?;
        if deployment_complete(&self.d, st, self.generation)
            || cond.reason.as_deref() == Some(TIMED_OUT_REASON)
        {
            return None;
        }
        let from = cond.last_update_time.as_ref()?.0;
        let deadline = from
            .checked_add(SignedDuration::from_secs(i64::from(secs)))
            .ok()?;
        let after = deadline.duration_since(Timestamp::now());
        // A second more, so the check lands after the deadline.
        let ms = after.as_millis().max(0) as u64 + 1000;
        Some(Duration::from_millis(ms))
    }

    /// Records on the ReplicaSet that its template reached full
    /// availability: the candidates for rolling back to.
    async fn mark_available(&mut self, rs: &ReplicaSet) -> Result<(), Error> {
        let res = self
            .rs_api()
            .patch(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {ROLLOUT_COMPLETE: "true"}}})),
            )
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if podcontrol::is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// skiff's `rollback-on-failure`: restore the newest template that was
    /// once fully available, as `kubectl rollout undo` would.
    async fn rollback_on_failure(&mut self, rsets: &Rsets) -> Result<(), Error> {
        let Some(new_rs) = rsets.new_rs() else {
            return Ok(());
        };
        // The current template was healthy before (e.g. a scale-up that
        // ran out of room): going back would not help.
        if rollout_completed(new_rs) {
            return Ok(());
        }
        let Some(target) = rsets
            .old_idx()
            .into_iter()
            .map(|i| &rsets.list[i])
            .filter(|rs| rs.metadata.deletion_timestamp.is_none() && rollout_completed(rs))
            .max_by_key(|rs| revision_of(rs))
        else {
            return Ok(());
        };
        let Some(mut template) = target.spec.as_ref().and_then(|s| s.template.clone()) else {
            return Ok(());
        };
        if let Some(l) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            l.remove(HASH_LABEL);
        }
        // Work on a fresh read: if the spec moved on since this sync began
        // (someone already acted), leave it to them.
        let Some(mut fresh) = self.d_api().get_opt(&self.name()).await? else {
            return Ok(());
        };
        if fresh.metadata.generation.unwrap_or(0) != self.generation {
            return Ok(());
        }
        // Annotations as `kubectl rollout undo` computes them, keeping the
        // opt-in itself.
        let current = fresh.metadata.annotations.clone().unwrap_or_default();
        let mut annotations: BTreeMap<String, String> = current
            .iter()
            .filter(|(k, _)| SKIP_COPY.contains(&k.as_str()) || k.as_str() == ROLLBACK_ON_FAILURE)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in target.metadata.annotations.iter().flatten() {
            if !SKIP_COPY.contains(&k.as_str()) {
                annotations.insert(k.clone(), v.clone());
            }
        }
        // A full update (with the resourceVersion just read) replaces the
        // template wholesale, as undo's JSON patch does; a conflict retries.
        if let Some(spec) = fresh.spec.as_mut() {
            spec.template = template;
        }
        fresh.metadata.annotations = Some(annotations);
        self.d_api()
            .replace(&self.name(), &PostParams::default(), &fresh)
            .await?;
        let failed_rev = revision_of(new_rs);
        let secs = progress_deadline(&self.d).unwrap_or(0);
        self.event(
            EventType::Warning,
            "RolledBack",
            "Rollback",
            format!(
                "Rollout of revision {failed_rev} exceeded its progress deadline ({secs}s); rolled back to revision {}",
                revision_of(target)
            ),
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Helpers (upstream deployment/util)

fn nz(v: i32) -> Option<i32> {
    (v != 0).then_some(v)
}

fn nz64(v: i64) -> Option<i64> {
    (v != 0).then_some(v)
}

fn replicas_of(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

fn ready_replicas(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

fn available_replicas(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn created(rs: &ReplicaSet) -> Option<Timestamp> {
    rs.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

fn annotation<'a>(rs: &'a ReplicaSet, key: &str) -> Option<&'a str> {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn rollout_completed(rs: &ReplicaSet) -> bool {
    rs.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ROLLOUT_COMPLETE))
        .is_some_and(|v| v == "true")
}

fn int_annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    annotation(rs, key).and_then(|v| v.parse().ok())
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    annotation(rs, REVISION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|&s| s != i32::MAX)
}

fn has_progress_deadline(d: &Deployment) -> bool {
    progress_deadline(d).is_some()
}

/// Upstream `GetScaledValueFromIntOrPercent`.
fn scaled_value(v: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match v {
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let pct = s
                .strip_suffix('%')
                .and_then(|p| p.parse::<i64>().ok())
                .unwrap_or(0);
            let exact = pct as f64 * f64::from(total) / 100.0;
            if round_up {
                exact.ceil() as i32
            } else {
                exact.floor() as i32
            }
        }
        // The API server defaults both to 25%.
        None => scaled_value(Some(&IntOrString::String("25%".into())), total, round_up),
    }
}

/// Upstream `ResolveFenceposts`: surge rounds up, unavailability down,
/// and both zero means one may be unavailable.
fn fenceposts(d: &Deployment) -> (i32, i32) {
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let replicas = replicas_of(d);
    let surge = scaled_value(ru.and_then(|r| r.max_surge.as_ref()), replicas, true);
    let mut unavailable =
        scaled_value(ru.and_then(|r| r.max_unavailable.as_ref()), replicas, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

fn max_surge(d: &Deployment) -> i32 {
    if is_recreate(d) {
        return 0;
    }
    fenceposts(d).0
}

fn max_unavailable(d: &Deployment) -> i32 {
    let replicas = replicas_of(d);
    if is_recreate(d) || replicas == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas)
}

/// Upstream `NewRSNewReplicas`.
fn new_rs_new_replicas(d: &Deployment, all: &[&ReplicaSet], new_rs: &ReplicaSet) -> i32 {
    let replicas = replicas_of(d);
    if is_recreate(d) {
        return replicas;
    }
    let current: i32 = all.iter().map(|rs| spec_replicas(rs)).sum();
    let max_total = replicas + max_surge(d);
    let new_spec = spec_replicas(new_rs);
    if current >= max_total {
        return new_spec;
    }
    let up = (max_total - current).min(replicas - new_spec);
    new_spec + up
}

/// Upstream `IsSaturated`.
fn is_saturated(d: &Deployment, rs: &ReplicaSet) -> bool {
    let replicas = replicas_of(d);
    int_annotation(rs, DESIRED_REPLICAS) == Some(replicas)
        && available_replicas(rs) == replicas
        && spec_replicas(rs) == replicas
}

/// Upstream `FindActiveOrLatest`.
fn find_active_or_latest(rsets: &Rsets) -> Option<usize> {
    if rsets.list.is_empty() {
        return None;
    }
    let mut old = rsets.old_idx();
    old.sort_by_key(|&i| std::cmp::Reverse((created(&rsets.list[i]), rsets.list[i].name_any())));
    let mut active: Vec<usize> = old
        .iter()
        .copied()
        .filter(|&i| spec_replicas(&rsets.list[i]) > 0)
        .collect();
    if let Some(n) = rsets.new
        && spec_replicas(&rsets.list[n]) > 0
    {
        active.push(n);
    }
    match active.len() {
        0 => rsets.new.or_else(|| old.first().copied()),
        1 => Some(active[0]),
        _ => None,
    }
}

/// Upstream `GetProportion` / `getReplicaSetFraction`.
fn proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    let spec = spec_replicas(rs);
    if spec == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = {
        let replicas = replicas_of(d);
        if replicas == 0 {
            -spec
        } else {
            let deployment_replicas = replicas + max_surge(d);
            let annotated = int_annotation(rs, MAX_REPLICAS)
                .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
            if annotated <= 0 {
                0
            } else {
                let size = f64::from(spec) * f64::from(deployment_replicas) / f64::from(annotated);
                size.round() as i32 - spec
            }
        }
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    annotation(rs, DESIRED_REPLICAS) != Some(desired.to_string().as_str())
        || annotation(rs, MAX_REPLICAS) != Some(max.to_string().as_str())
}

fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let a = rs.metadata.annotations.get_or_insert_with(Default::default);
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let v = v.to_string();
        if a.get(k) != Some(&v) {
            a.insert(k.to_string(), v);
            changed = true;
        }
    }
    changed
}

/// Upstream `SetNewReplicaSetAnnotations`: copy the Deployment's
/// annotations, raise the revision (remembering the old one in
/// `revision-history` when a ReplicaSet is reused), and size annotations
/// for a ReplicaSet about to be created.
fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: &str,
    exists: bool,
) -> bool {
    let mut changed = false;
    let a = rs.metadata.annotations.get_or_insert_with(Default::default);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if SKIP_COPY.contains(&k.as_str()) || a.get(k) == Some(v) {
            continue;
        }
        a.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = a.get(REVISION).cloned();
    let old_int = match &old {
        Some(o) => match o.parse::<i64>() {
            Ok(v) => v,
            Err(_) if o.is_empty() => 0,
            Err(_) => return changed,
        },
        None => 0,
    };
    let new_int = new_revision.parse::<i64>().unwrap_or(0);
    if old_int < new_int {
        a.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old {
            let history = a.get(REVISION_HISTORY).cloned().unwrap_or_default();
            if history.is_empty() {
                a.insert(REVISION_HISTORY.into(), old);
            } else {
                let mut revs: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                let mut start = 0;
                while total > MAX_REV_HISTORY_CHARS && start < revs.len() {
                    total -= revs[start].len() + 1;
                    start += 1;
                }
                if total <= MAX_REV_HISTORY_CHARS {
                    revs = revs.split_off(start);
                    revs.push(&old);
                    a.insert(REVISION_HISTORY.into(), revs.join(","));
                }
            }
        }
    }
    if !exists {
        let replicas = replicas_of(d);
        if set_replicas_annotations(rs, replicas, replicas + max_surge(d)) {
            changed = true;
        }
    }
    changed
}

/// Templates equal once the `pod-template-hash` label is ignored (upstream
/// `EqualIgnoreHash`; nil and empty label maps are the same).
fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    fn strip(t: &PodTemplateSpec) -> PodTemplateSpec {
        let mut t = t.clone();
        let m = t.metadata.get_or_insert_with(Default::default);
        if let Some(l) = m.labels.as_mut() {
            l.remove(HASH_LABEL);
        }
        if m.labels.as_ref().is_some_and(BTreeMap::is_empty) {
            m.labels = None;
        }
        if m.annotations.as_ref().is_some_and(BTreeMap::is_empty) {
            m.annotations = None;
        }
        t
    }
    strip(a) == strip(b)
}

/// The `pod-template-hash`: FNV-32a over the template's JSON (and the
/// collision count, little-endian, when set), printed in decimal and
/// safe-encoded, as upstream `ComputeHash` + `rand.SafeEncodeString` (which
/// hash Go's deep-printed struct instead of JSON).
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut write = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    write(&serde_json::to_vec(template).unwrap_or_default());
    if let Some(c) = collision_count {
        write(&(c as u32).to_le_bytes());
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// A label selector in the string form list calls take.
fn selector_string(sel: &LabelSelector) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (k, v) in sel.match_labels.iter().flatten() {
        parts.push(format!("{k}={v}"));
    }
    for r in sel.match_expressions.iter().flatten() {
        let values = r.values.clone().unwrap_or_default().join(",");
        parts.push(match r.operator.as_str() {
            "In" => format!("{} in ({values})", r.key),
            "NotIn" => format!("{} notin ({values})", r.key),
            "Exists" => r.key.clone(),
            _ => format!("!{}", r.key),
        });
    }
    parts.join(",")
}

fn condition<'a>(st: Option<&'a DeploymentStatus>, type_: &str) -> Option<&'a DeploymentCondition> {
    st?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

fn new_condition(type_: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    let now = podcontrol::now_time();
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// Upstream `SetDeploymentCondition`: same status and reason is a no-op; a
/// same-status change keeps the transition time.
fn set_condition(st: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(cur) = condition(Some(st), &c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    remove_condition(st, &c.type_);
    st.conditions.get_or_insert_with(Vec::new).push(c);
}

fn remove_condition(st: &mut DeploymentStatus, type_: &str) {
    if let Some(cs) = st.conditions.as_mut() {
        cs.retain(|c| c.type_ != type_);
        if cs.is_empty() {
            st.conditions = None;
        }
    }
}

/// Upstream `DeploymentComplete`.
fn deployment_complete(d: &Deployment, st: &DeploymentStatus, generation: i64) -> bool {
    let replicas = replicas_of(d);
    st.updated_replicas.unwrap_or(0) == replicas
        && st.replicas.unwrap_or(0) == replicas
        && st.available_replicas.unwrap_or(0) == replicas
        && st.observed_generation.unwrap_or(0) >= generation
}

/// Upstream `DeploymentProgressing`: more updated, ready or available
/// replicas, or fewer old ones.
fn deployment_progressing(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let g = |v: Option<i32>| v.unwrap_or(0);
    let old_old = g(old.replicas) - g(old.updated_replicas);
    let new_old = g(new.replicas) - g(new.updated_replicas);
    g(new.updated_replicas) > g(old.updated_replicas)
        || new_old < old_old
        || g(new.ready_replicas) > g(old.ready_replicas)
        || g(new.available_replicas) > g(old.available_replicas)
}

/// Upstream `DeploymentTimedOut`.
fn deployment_timed_out(d: &Deployment, st: &DeploymentStatus) -> bool {
    let Some(secs) = progress_deadline(d) else {
        return false;
    };
    let Some(c) = condition(Some(st), PROGRESSING) else {
        return false;
    };
    match c.reason.as_deref() {
        Some(NEW_RS_AVAILABLE_REASON) => false,
        Some(TIMED_OUT_REASON) => true,
        _ => c.last_update_time.as_ref().is_some_and(|t| {
            t.0.checked_add(SignedDuration::from_secs(i64::from(secs)))
                .is_ok_and(|deadline| deadline < Timestamp::now())
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_safe_encoded_and_stable() {
        let t: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}
        }))
        .unwrap();
        let h = pod_template_hash(&t, None);
        assert_eq!(h, pod_template_hash(&t, None));
        assert!(
            h.bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
        );
        assert_ne!(h, pod_template_hash(&t, Some(1)));
    }

    #[test]
    fn fenceposts_round_as_upstream() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "d"},
            "spec": {"replicas": 3, "selector": {}, "template": {},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}}
        }))
        .unwrap();
        assert_eq!(fenceposts(&d), (1, 0));
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "d"},
            "spec": {"replicas": 10, "selector": {}, "template": {},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}
        }))
        .unwrap();
        assert_eq!(fenceposts(&d), (0, 1));
    }
}

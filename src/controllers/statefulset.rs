//! The StatefulSet controller (upstream `pkg/controller/statefulset`,
//! v1.33 behaviour): pods `<set>-<ordinal>` with a stable identity
//! (hostname, subdomain = serviceName, pod-name and pod-index labels),
//! PersistentVolumeClaims `<claim>-<set>-<ordinal>` made from the
//! volumeClaimTemplates before the pods, OrderedReady or Parallel pod
//! management, RollingUpdate with a partition or OnDelete, and
//! ControllerRevisions for `currentRevision`/`updateRevision`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::informer::Subscription;
use super::workloads::{self as w, Error, Events, Result, Watched};

pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
pub const REVISION_LABEL: &str = "controller-revision-hash";
const HASH_LABEL: &str = "controller.kubernetes.io/hash";

struct Ctx {
    client: Client,
    sets: Arc<Watched<StatefulSet>>,
    pods: Arc<Watched<Pod>>,
    events: Events,
}

pub async fn run(client: Client, pods: Subscription<Pod>) {
    let (sets, set_stream) = w::watch(
        Api::<StatefulSet>::all(client.clone()),
        watcher::Config::default(),
    );
    let (pods, pod_stream) = Watched::shared(pods);
    let ctx = Arc::new(Ctx {
        events: Events::new(client.clone(), "statefulset-controller"),
        client,
        sets: sets.clone(),
        pods,
    });
    Controller::for_stream(set_stream, sets.store.clone())
        .owns_shared_stream(pod_stream)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(_set: Arc<StatefulSet>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    match err {
        Error::Kube(e) if w::is_status(e, 409) => Action::requeue(Duration::from_millis(200)),
        _ => {
            tracing::debug!("statefulset sync: {err}");
            Action::requeue(Duration::from_secs(1))
        }
    }
}

/// The ordinal in a member pod's name, if it is `<set>-<n>`.
pub fn ordinal_of(set_name: &str, pod_name: &str) -> Option<i32> {
    let rest = pod_name.strip_prefix(set_name)?.strip_prefix('-')?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

fn revision_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(REVISION_LABEL)
        .map(String::as_str)
}

/// Running and Ready (upstream `isRunningAndReady`).
fn running_and_ready(p: &Pod) -> bool {
    w::phase(p) == "Running" && w::is_ready(p)
}

fn running_and_available(p: &Pod, min_ready: i32, now: Timestamp) -> bool {
    w::phase(p) == "Running" && w::is_available(p, min_ready, now)
}

fn healthy(p: &Pod) -> bool {
    running_and_ready(p) && !w::is_terminating(p)
}

fn claim_name(claim: &str, set: &str, ordinal: i32) -> String {
    format!("{claim}-{set}-{ordinal}")
}

/// The claims a member pod uses, as upstream `getPersistentVolumeClaims`
/// makes them from the templates.
fn claims_for(
    set: &StatefulSet,
    spec: &StatefulSetSpec,
    ordinal: i32,
) -> Vec<(String, PersistentVolumeClaim)> {
    let set_name = set.name_any();
    let selector_labels = spec.selector.match_labels.clone().unwrap_or_default();
    spec.volume_claim_templates
        .iter()
        .flatten()
        .map(|t| {
            let template_name = t.metadata.name.clone().unwrap_or_default();
            let mut claim = t.clone();
            claim.metadata.name = Some(claim_name(&template_name, &set_name, ordinal));
            claim.metadata.namespace = set.namespace();
            let mut labels = claim.metadata.labels.clone().unwrap_or_default();
            labels.extend(selector_labels.clone());
            claim.metadata.labels = Some(labels);
            claim.metadata.resource_version = None;
            claim.metadata.uid = None;
            claim.metadata.creation_timestamp = None;
            claim.status = None;
            (template_name, claim)
        })
        .collect()
}

/// Upstream `newStatefulSetPod` + `setPodRevision`.
fn new_pod(
    set: &StatefulSet,
    spec: &StatefulSetSpec,
    template: &PodTemplateSpec,
    revision: &str,
    ordinal: i32,
) -> Pod {
    let name = format!("{}-{ordinal}", set.name_any());
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels.clone().unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), revision.to_string());
    let mut pod_spec = template.spec.clone().unwrap_or_default();
    pod_spec.hostname = Some(name.clone());
    pod_spec.subdomain = spec.service_name.clone().filter(|s| !s.is_empty());
    // updateStorage: claim volumes first, then template volumes not shadowed.
    let claims = claims_for(set, spec, ordinal);
    let mut volumes: Vec<Volume> = claims
        .iter()
        .map(|(template_name, claim)| Volume {
            name: template_name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.metadata.name.clone().unwrap_or_default(),
                read_only: None,
            }),
            ..Default::default()
        })
        .collect();
    for v in pod_spec.volumes.take().unwrap_or_default() {
        if !claims.iter().any(|(n, _)| *n == v.name) {
            volumes.push(v);
        }
    }
    pod_spec.volumes = (!volumes.is_empty()).then_some(volumes);
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: tmeta.annotations.clone(),
            finalizers: tmeta.finalizers.clone(),
            owner_references: Some(vec![w::controller_ref(set)]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

fn retention(spec: &StatefulSetSpec) -> (&str, &str) {
    let p = spec.persistent_volume_claim_retention_policy.as_ref();
    (
        p.and_then(|p| p.when_deleted.as_deref())
            .unwrap_or("Retain"),
        p.and_then(|p| p.when_scaled.as_deref()).unwrap_or("Retain"),
    )
}

/// Creates the claims of a member pod that do not exist yet.
async fn create_missing_claims(
    ctx: &Ctx,
    set: &StatefulSet,
    spec: &StatefulSetSpec,
    ordinal: i32,
) -> Result<()> {
    let ns = set.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let set_ref = w::object_ref(set);
    let pod_name = format!("{}-{ordinal}", set.name_any());
    let (when_deleted, _) = retention(spec);
    for (_, mut claim) in claims_for(set, spec, ordinal) {
        let name = claim.metadata.name.clone().unwrap_or_default();
        match api.get_opt(&name).await? {
            Some(existing) => {
                if existing.metadata.deletion_timestamp.is_some() {
                    return Err(Error::Other(format!(
                        "pvc {name} is being deleted; waiting before creating pod {pod_name}"
                    )));
                }
            }
            None => {
                if when_deleted == "Delete" {
                    // Deleted with the StatefulSet (not its controller).
                    claim.metadata.owner_references = Some(vec![OwnerReference {
                        controller: None,
                        block_owner_deletion: Some(true),
                        ..w::controller_ref(set)
                    }]);
                }
                match api.create(&PostParams::default(), &claim).await {
                    Ok(c) => {
                        ctx.events
                            .normal(
                                &set_ref,
                                Some(w::object_ref(&c)),
                                "SuccessfulCreate",
                                "CreateClaim",
                                format!(
                                    "create Claim {name} Pod {pod_name} in StatefulSet {} success",
                                    set.name_any()
                                ),
                            )
                            .await;
                    }
                    Err(e) if w::is_status(&e, 409) => {}
                    Err(e) => {
                        ctx.events
                            .warning(
                                &set_ref,
                                None,
                                "FailedCreate",
                                "CreateClaim",
                                format!("create Claim {name} for Pod {pod_name} in StatefulSet {} failed error: {e}", set.name_any()),
                            )
                            .await;
                        return Err(e.into());
                    }
                }
            }
        }
    }
    Ok(())
}

/// With `whenScaled: Delete`, a condemned pod's claims are owned by the pod
/// so that they go with it.
async fn own_claims_by_pod(
    ctx: &Ctx,
    set: &StatefulSet,
    spec: &StatefulSetSpec,
    pod: &Pod,
    ordinal: i32,
) {
    let ns = set.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod.name_any(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        controller: None,
        block_owner_deletion: None,
    };
    for (_, claim) in claims_for(set, spec, ordinal) {
        let name = claim.metadata.name.clone().unwrap_or_default();
        let Ok(Some(existing)) = api.get_opt(&name).await else {
            continue;
        };
        if existing
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.uid == owner.uid)
        {
            continue;
        }
        let patch = json!({"metadata": {"ownerReferences": [owner], "uid": existing.metadata.uid}});
        if let Err(e) = api
            .patch(&name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            tracing::debug!("claim {name}: {e}");
        }
    }
}

/// Upstream `getStatefulSetRevisions`: (current, update, collision count).
async fn revisions(
    ctx: &Ctx,
    set: &StatefulSet,
    spec: &StatefulSetSpec,
    history: &[ControllerRevision],
) -> Result<(ControllerRevision, ControllerRevision, i32)> {
    let ns = set.namespace().unwrap_or_default();
    let status = set.status.clone().unwrap_or_default();
    let mut collisions = status.collision_count.unwrap_or(0);
    let data = w::template_patch(&spec.template);
    let next = history.last().map(|c| c.revision).unwrap_or(0) + 1;
    let equal: Vec<&ControllerRevision> = history
        .iter()
        .filter(|c| w::revision_data_equals(c, &data))
        .collect();
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    let update = match (equal.last(), history.last()) {
        (Some(e), Some(last)) if e.metadata.name == last.metadata.name => (*e).clone(),
        // A rollback: the equal old revision becomes the newest.
        (Some(e), _) => w::set_revision_number(&ctx.client, e, next).await?,
        (None, _) => loop {
            let raw = serde_json::to_vec(&data).unwrap_or_default();
            let mut bytes = raw.clone();
            bytes.extend_from_slice(collisions.to_string().as_bytes());
            let hash = w::safe_encode(&w::fnv32(&bytes).to_string());
            let mut labels = spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert(HASH_LABEL.into(), hash.clone());
            let mut prefix = set.name_any();
            prefix.truncate(223);
            let cr = ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(format!("{prefix}-{hash}")),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    annotations: set.metadata.annotations.clone(),
                    owner_references: Some(vec![w::controller_ref(set)]),
                    ..Default::default()
                },
                data: Some(RawExtension(data.clone())),
                revision: next,
            };
            match api.create(&PostParams::default(), &cr).await {
                Ok(c) => break c,
                Err(e) if w::is_status(&e, 409) => {
                    let existing = api.get(&cr.name_any()).await?;
                    if w::revision_data_equals(&existing, &data) {
                        break existing;
                    }
                    collisions += 1;
                }
                Err(e) => return Err(e.into()),
            }
        },
    };
    let current = status
        .current_revision
        .as_ref()
        .and_then(|name| {
            history
                .iter()
                .find(|c| c.metadata.name.as_ref() == Some(name))
        })
        .cloned()
        .unwrap_or_else(|| update.clone());
    Ok((current, update, collisions))
}

async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action> {
    let uid = set.metadata.uid.clone().unwrap_or_default();
    ctx.pods.wait_ready().await?;
    if !ctx.pods.caught_up(&uid) || !ctx.sets.caught_up(&uid) {
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    let set = ctx
        .sets
        .store
        .get(&ObjectRef::from_obj(&*set))
        .unwrap_or(set);
    let Some(spec) = set.spec.clone() else {
        return Ok(Action::await_change());
    };
    let ns = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let set_ref = w::object_ref(&*set);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let now = w::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);

    let candidates = ctx.pods.store.state().into_iter().filter(|p| {
        p.metadata.namespace.as_deref() == Some(ns.as_str())
            && ordinal_of(&name, &p.name_any()).is_some()
            && w::controller_of(&p.metadata).is_none_or(|r| r.uid == uid)
    });
    let pods = w::claim_pods(
        &ctx.client,
        &*set,
        &spec.selector,
        candidates,
        &ctx.pods,
        &uid,
    )
    .await;
    let history = w::owned_revisions(&ctx.client, &ns, &uid).await?;
    let (current_rev, update_rev, collisions) = revisions(&ctx, &set, &spec, &history).await?;
    let current_name = current_rev.name_any();
    let update_name = update_rev.name_any();
    let current_template =
        w::template_from_revision(&current_rev).unwrap_or_else(|| spec.template.clone());
    let update_template = spec.template.clone();

    let start = spec
        .ordinals
        .as_ref()
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0);
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let end = start + replicas; // exclusive
    let mut slots: Vec<Option<Arc<Pod>>> = vec![None; replicas as usize];
    let mut condemned: Vec<(i32, Arc<Pod>)> = Vec::new();
    for p in &pods {
        let Some(ord) = ordinal_of(&name, &p.name_any()) else {
            continue;
        };
        if ord >= start && ord < end {
            slots[(ord - start) as usize] = Some(p.clone());
        } else {
            condemned.push((ord, p.clone()));
        }
    }
    // Highest ordinal first.
    condemned.sort_by_key(|(o, _)| std::cmp::Reverse(*o));
    // The first replica (by ordinal) that is missing or unhealthy, else the
    // lowest unhealthy condemned pod: the one pod scale-down may remove
    // without waiting for it to become healthy.
    let first_unhealthy: Option<String> = slots
        .iter()
        .enumerate()
        .find_map(|(i, s)| match s {
            None => Some(format!("{name}-{}", start + i as i32)),
            Some(p) if !healthy(p) => Some(p.name_any()),
            Some(_) => None,
        })
        .or_else(|| {
            condemned
                .iter()
                .rev()
                .find(|(_, p)| !healthy(p))
                .map(|(_, p)| p.name_any())
        });
    let monotonic = spec.pod_management_policy.as_deref() != Some("Parallel");
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let partition = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition);
    let (_, when_scaled) = retention(&spec);
    let mut requeue: Option<Duration> = None;

    if set.metadata.deletion_timestamp.is_none() {
        let mut blocked = false;
        // Living replicas, in ordinal order.
        for (i, slot) in slots.iter().enumerate() {
            let ord = start + i as i32;
            match slot {
                Some(p) if w::is_terminal(p) => {
                    // Finished pods are replaced under the same name.
                    if !w::is_terminating(p) {
                        if w::phase(p) == "Failed" {
                            ctx.events
                                .warning(
                                    &set_ref,
                                    Some(w::object_ref(&**p)),
                                    "RecreatingFailedPod",
                                    "DeletePod",
                                    format!(
                                        "StatefulSet {ns}/{name} is recreating failed Pod {}",
                                        p.name_any()
                                    ),
                                )
                                .await;
                        }
                        delete_member(&ctx, &set, &pods_api, p).await?;
                    }
                    if monotonic {
                        blocked = true;
                        break;
                    }
                }
                None => {
                    // Pods below the partition keep the current revision.
                    let use_current = rolling
                        && match partition {
                            None => {
                                ord < start
                                    + set
                                        .status
                                        .as_ref()
                                        .and_then(|s| s.current_replicas)
                                        .unwrap_or(0)
                            }
                            Some(part) => ord < start + part,
                        };
                    let (template, revision) = if use_current {
                        (&current_template, &current_name)
                    } else {
                        (&update_template, &update_name)
                    };
                    create_missing_claims(&ctx, &set, &spec, ord).await?;
                    let pod = new_pod(&set, &spec, template, revision, ord);
                    match pods_api.create(&PostParams::default(), &pod).await {
                        Ok(p) => {
                            ctx.pods.note_write(&uid, &p.metadata);
                            ctx.events
                                .normal(
                                    &set_ref,
                                    Some(w::object_ref(&p)),
                                    "SuccessfulCreate",
                                    "CreatePod",
                                    format!(
                                        "create Pod {} in StatefulSet {name} successful",
                                        p.name_any()
                                    ),
                                )
                                .await;
                        }
                        Err(e) if w::is_status(&e, 409) => {
                            // Still terminating under this name: wait for it.
                        }
                        Err(e) => {
                            ctx.events
                                .warning(
                                    &set_ref,
                                    None,
                                    "FailedCreate",
                                    "CreatePod",
                                    format!(
                                        "create Pod {} in StatefulSet {name} failed error: {e}",
                                        pod.name_any()
                                    ),
                                )
                                .await;
                            return Err(e.into());
                        }
                    }
                    if monotonic {
                        blocked = true;
                        break;
                    }
                }
                Some(p) => {
                    if w::phase(p) == "Pending" {
                        create_missing_claims(&ctx, &set, &spec, ord).await?;
                    }
                    if monotonic && (w::is_terminating(p) || !running_and_ready(p)) {
                        blocked = true;
                        break;
                    }
                    if monotonic && !running_and_available(p, min_ready, now) {
                        if let Some(d) = w::available_in(p, min_ready, now) {
                            requeue = Some(d);
                        }
                        blocked = true;
                        break;
                    }
                    fix_identity(&ctx, &uid, &pods_api, p, ord).await;
                }
            }
        }
        // Scale down: highest ordinal first, one at a time when ordered.
        if !blocked {
            for (ord, p) in &condemned {
                if when_scaled == "Delete" {
                    own_claims_by_pod(&ctx, &set, &spec, p, *ord).await;
                }
                if w::is_terminating(p) {
                    if monotonic {
                        blocked = true;
                        break;
                    }
                    continue;
                }
                let is_first_unhealthy = first_unhealthy.as_deref() == Some(p.name_any().as_str());
                if monotonic && !is_first_unhealthy && !running_and_available(p, min_ready, now) {
                    blocked = true;
                    break;
                }
                delete_member(&ctx, &set, &pods_api, p).await?;
                if monotonic {
                    blocked = true;
                    break;
                }
            }
        }
        // Rolling update: the highest ordinal not at the update revision,
        // down to the partition, one at a time.
        if !blocked && rolling {
            let min = partition.unwrap_or(0).max(0);
            for i in (0..slots.len()).rev() {
                if (i as i32) < min {
                    break;
                }
                let Some(p) = &slots[i] else { break };
                if revision_of(p) != Some(update_name.as_str()) && !w::is_terminating(p) {
                    delete_member(&ctx, &set, &pods_api, p).await?;
                    break;
                }
                if !healthy(p) {
                    break;
                }
            }
        }
    }

    // Status from the pods as they were at the start of this pass; our
    // writes trigger the next one.
    let mut status = set.status.clone().unwrap_or_default();
    let (mut count, mut ready, mut available, mut current, mut updated) = (0, 0, 0, 0, 0);
    for p in slots
        .iter()
        .flatten()
        .chain(condemned.iter().map(|(_, p)| p))
    {
        count += 1;
        if running_and_ready(p) {
            ready += 1;
            if running_and_available(p, min_ready, now) {
                available += 1;
            } else if let Some(d) = w::available_in(p, min_ready, now) {
                requeue = Some(requeue.map_or(d, |r| r.min(d)));
            }
        }
        if !w::is_terminating(p) {
            if revision_of(p) == Some(current_name.as_str()) {
                current += 1;
            }
            if revision_of(p) == Some(update_name.as_str()) {
                updated += 1;
            }
        }
    }
    status.observed_generation = set.metadata.generation;
    status.replicas = count;
    status.ready_replicas = (ready > 0).then_some(ready);
    status.available_replicas = Some(available);
    status.current_replicas = (current > 0).then_some(current);
    status.updated_replicas = (updated > 0).then_some(updated);
    status.current_revision = Some(current_name.clone());
    status.update_revision = Some(update_name.clone());
    status.collision_count = Some(collisions);
    // completeRollingUpdate
    if rolling && updated == count && ready == count {
        status.current_replicas = status.updated_replicas;
        status.current_revision = status.update_revision.clone();
    }
    if Some(&status) != set.status.as_ref() {
        let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
        let mut s = (*set).clone();
        s.status = Some(status.clone());
        s.metadata.managed_fields = None;
        let written = api
            .replace_status(&name, &PostParams::default(), &s)
            .await?;
        ctx.sets.note_write(&uid, &written.metadata);
    }

    // truncateHistory: live revisions are current, update and the pods'.
    let mut live: BTreeSet<String> = BTreeSet::new();
    live.insert(status.current_revision.clone().unwrap_or_default());
    live.insert(update_name.clone());
    for p in &pods {
        if let Some(r) = revision_of(p) {
            live.insert(r.to_string());
        }
    }
    let history = w::owned_revisions(&ctx.client, &ns, &uid).await?;
    w::truncate_history(
        &ctx.client,
        &ns,
        &history,
        &live,
        spec.revision_history_limit.unwrap_or(10),
        false,
    )
    .await;

    Ok(match requeue {
        Some(d) => Action::requeue(d.max(Duration::from_millis(10))),
        None => Action::await_change(),
    })
}

async fn delete_member(ctx: &Ctx, set: &StatefulSet, api: &Api<Pod>, p: &Pod) -> Result<()> {
    let uid = set.metadata.uid.clone().unwrap_or_default();
    match w::delete_pod(api, &p.name_any(), p.metadata.uid.as_deref()).await? {
        Some(d) => ctx.pods.note_write(&uid, &d.metadata),
        None => ctx.pods.note_delete(&uid, &p.metadata),
    }
    ctx.events
        .normal(
            &w::object_ref(set),
            Some(w::object_ref(p)),
            "SuccessfulDelete",
            "DeletePod",
            format!(
                "delete Pod {} in StatefulSet {} successful",
                p.name_any(),
                set.name_any()
            ),
        )
        .await;
    Ok(())
}

/// Upstream `identityMatches`/`updateIdentity` for what can still change on
/// a pod: its identity labels.
async fn fix_identity(ctx: &Ctx, owner: &str, api: &Api<Pod>, p: &Pod, ordinal: i32) {
    let labels = p.metadata.labels.clone().unwrap_or_default();
    let name = p.name_any();
    let index = ordinal.to_string();
    if labels.get(POD_NAME_LABEL) == Some(&name) && labels.get(POD_INDEX_LABEL) == Some(&index) {
        return;
    }
    let patch = json!({"metadata": {"labels": {POD_NAME_LABEL: name, POD_INDEX_LABEL: index}}});
    match api
        .patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(u) => ctx.pods.note_write(owner, &u.metadata),
        Err(e) => tracing::debug!("pod {}: {e}", p.name_any()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "webapp-1"), None);
        assert_eq!(ordinal_of("web", "web-"), None);
        assert_eq!(ordinal_of("web-1", "web-1-2"), Some(2));
    }

    #[test]
    fn pods_get_identity_and_claims() {
        let set: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {"serviceName": "nginx", "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}],
                    "volumes": [{"name": "www", "emptyDir": {}}, {"name": "cfg", "emptyDir": {}}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "www"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}
        }))
        .unwrap();
        let spec = set.spec.clone().unwrap();
        let pod = new_pod(&set, &spec, &spec.template, "web-abc", 2);
        let v = serde_json::to_value(&pod).unwrap();
        assert_eq!(v["metadata"]["name"], "web-2");
        assert_eq!(v["metadata"]["labels"][POD_NAME_LABEL], "web-2");
        assert_eq!(v["metadata"]["labels"][POD_INDEX_LABEL], "2");
        assert_eq!(v["metadata"]["labels"][REVISION_LABEL], "web-abc");
        assert_eq!(v["spec"]["hostname"], "web-2");
        assert_eq!(v["spec"]["subdomain"], "nginx");
        assert_eq!(
            v["spec"]["volumes"][0],
            json!({"name": "www", "persistentVolumeClaim": {"claimName": "www-web-2"}})
        );
        assert_eq!(v["spec"]["volumes"][1]["name"], "cfg");
        assert_eq!(v["spec"]["volumes"].as_array().unwrap().len(), 2);
        let claims = claims_for(&set, &spec, 2);
        assert_eq!(claims[0].1.metadata.name.as_deref(), Some("www-web-2"));
        assert_eq!(claims[0].1.metadata.labels.as_ref().unwrap()["app"], "web");
    }
}

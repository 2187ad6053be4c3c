//! The disruption controller (upstream's `disruption-controller`): keeps
//! every PodDisruptionBudget's status current — healthy pods, the pods
//! expected from the owning controllers' scale, how many may be disrupted
//! now, and the `DisruptionAllowed` condition — which the eviction API
//! (`pods/eviction`) consults and spends. Entries the eviction API adds to
//! `status.disruptedPods` are dropped once the pod is gone or being
//! deleted, or after two minutes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use super::informer::Subscription;

/// How long a pod the eviction API let go is assumed to be on its way out
/// (upstream's `DeletionTimeout`).
const DELETION_TIMEOUT: SignedDuration = SignedDuration::from_mins(2);
const CONDITION: &str = "DisruptionAllowed";

struct Ctx {
    client: Client,
    recorder: Recorder,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// The budget could not be computed; written into its status.
    #[error("{0}")]
    Sync(String),
}

pub async fn run(client: Client, pods: Subscription<Pod>) {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "controllermanager".into(),
            instance: None,
        },
    );
    let controller = Controller::new(
        Api::<PodDisruptionBudget>::all(client.clone()),
        watcher::Config::default(),
    );
    let pdbs = controller.store();
    controller
        .watches_shared_stream(pods.objects(), move |pod| budgets_for_pod(&pdbs, &pod))
        .run(reconcile, error_policy, Arc::new(Ctx { client, recorder }))
        .for_each(|_| async {})
        .await;
}

fn error_policy(pdb: Arc<PodDisruptionBudget>, err: &Error, _: Arc<Ctx>) -> Action {
    tracing::debug!(pdb = %pdb.name_any(), "disruption controller: {err}");
    Action::requeue(Duration::from_secs(2))
}

/// The pod's labels matched against a budget's selector; a missing
/// selector selects nothing, an empty one everything (policy/v1).
fn selector(pdb: &PodDisruptionBudget) -> Option<Result<Selector, String>> {
    let sel = pdb.spec.as_ref()?.selector.clone()?;
    Some(Selector::try_from(sel).map_err(|e| e.to_string()))
}

fn budgets_for_pod(
    pdbs: &Store<PodDisruptionBudget>,
    pod: &Pod,
) -> Vec<ObjectRef<PodDisruptionBudget>> {
    let ns = pod.metadata.namespace.as_deref();
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    pdbs.state()
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == ns)
        .filter(|p| matches!(selector(p), Some(Ok(s)) if s.matches(&labels)))
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn controller_of(meta: &kube::api::ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// upstream `GetScaledValueFromIntOrPercent(…, roundUp=true)`.
fn scaled(v: &IntOrString, total: i32) -> Result<i32, String> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| {
                    "invalid value for IntOrString: invalid type: string is not a percentage"
                        .to_string()
                })?;
            Ok(((pct * total as i64 + 99) / 100) as i32)
        }
    }
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if pdb.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    match try_sync(&pdb, &ctx).await {
        Ok(action) => Ok(action),
        // A conflict only means our copy was stale: retry, no fail-safe.
        Err(Error::Kube(kube::Error::Api(e))) if e.code == 409 => {
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Err(Error::Kube(e)) => Err(Error::Kube(e)),
        Err(Error::Sync(msg)) => {
            fail_safe(&pdb, &ctx, &msg).await?;
            Err(Error::Sync(msg))
        }
    }
}

async fn event(ctx: &Ctx, pdb: &PodDisruptionBudget, type_: EventType, reason: &str, note: String) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: reason.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &pdb.object_ref(&())).await {
        tracing::debug!("event {reason}: {e}");
    }
}

async fn try_sync(pdb: &PodDisruptionBudget, ctx: &Ctx) -> Result<Action, Error> {
    let ns = pdb.namespace().unwrap_or_default();
    let pods: Vec<Pod> = match selector(pdb) {
        None => Vec::new(),
        Some(Err(e)) => return Err(Error::Sync(e)),
        Some(Ok(sel)) => {
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
            api.list(&ListParams::default().labels(&sel.to_string()))
                .await?
                .items
        }
    };
    if pods.is_empty() {
        event(
            ctx,
            pdb,
            EventType::Normal,
            "NoPods",
            "No matching pods found".into(),
        )
        .await;
    }
    let (expected, desired) = expected_pod_count(pdb, &pods, ctx).await?;
    let now = Timestamp::now();
    let (disrupted, recheck) = disrupted_pod_map(pdb, &pods, now);
    let healthy = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !disrupted.contains_key(&p.name_any()))
        .filter(|p| pod_ready(p))
        .count() as i32;
    let mut allowed = healthy - desired;
    // Until pods are expected, nothing may be disrupted: a budget whose
    // first pods just appeared must not start out permissive.
    if expected <= 0 || allowed <= 0 {
        allowed = 0;
    }
    let generation = pdb.metadata.generation;
    let old = pdb.status.clone().unwrap_or_default();
    let mut status = PodDisruptionBudgetStatus {
        current_healthy: healthy,
        desired_healthy: desired,
        expected_pods: expected,
        disruptions_allowed: allowed,
        disrupted_pods: (!disrupted.is_empty()).then(|| disrupted.clone()),
        observed_generation: generation,
        conditions: old.conditions.clone(),
    };
    let (cstatus, reason) = if allowed > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    set_condition(&mut status, cstatus, reason, "", generation);
    let same = old.current_healthy == status.current_healthy
        && old.desired_healthy == status.desired_healthy
        && old.expected_pods == status.expected_pods
        && old.disruptions_allowed == status.disruptions_allowed
        && old.disrupted_pods.clone().unwrap_or_default() == disrupted
        && old.observed_generation == status.observed_generation
        && old.conditions == status.conditions;
    if !same {
        let mut new = pdb.clone();
        new.status = Some(status);
        let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &ns);
        api.replace_status(&pdb.name_any(), &PostParams::default(), &new)
            .await?;
    }
    Ok(match recheck {
        Some(at) => Action::requeue(
            at.duration_since(now)
                .try_into()
                .unwrap_or(Duration::from_secs(1))
                .max(Duration::from_millis(100)),
        ),
        None => Action::await_change(),
    })
}

/// upstream `apimeta.SetStatusCondition` for `DisruptionAllowed`: the
/// transition time moves only when the status does.
fn set_condition(
    status: &mut PodDisruptionBudgetStatus,
    cstatus: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    match conditions.iter_mut().find(|c| c.type_ == CONDITION) {
        Some(c) => {
            if c.status != cstatus {
                c.status = cstatus.into();
                c.last_transition_time = Time(Timestamp::now());
            }
            c.reason = reason.into();
            c.message = message.into();
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: CONDITION.into(),
            status: cstatus.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: generation,
            last_transition_time: Time(Timestamp::now()),
        }),
    }
}

/// upstream `failSafe`: when the budget cannot be computed, allow no
/// disruption and say why.
async fn fail_safe(pdb: &PodDisruptionBudget, ctx: &Ctx, msg: &str) -> Result<(), Error> {
    let mut new = pdb.clone();
    let status = new.status.get_or_insert_with(Default::default);
    let observed = status.observed_generation;
    status.disruptions_allowed = 0;
    set_condition(status, "False", "SyncFailed", msg, observed);
    if new.status == pdb.status {
        return Ok(());
    }
    let api: Api<PodDisruptionBudget> =
        Api::namespaced(ctx.client.clone(), &pdb.namespace().unwrap_or_default());
    api.replace_status(&pdb.name_any(), &PostParams::default(), &new)
        .await?;
    Ok(())
}

/// upstream `buildDisruptedPodMap`: keeps the entries for pods still
/// present, not being deleted, and evicted less than two minutes ago;
/// returns them and when the oldest one expires.
fn disrupted_pod_map(
    pdb: &PodDisruptionBudget,
    pods: &[Pod],
    now: Timestamp,
) -> (BTreeMap<String, Time>, Option<Timestamp>) {
    let old = pdb
        .status
        .as_ref()
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    let mut recheck: Option<Timestamp> = None;
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(at) = old.get(&pod.name_any()) else {
            continue;
        };
        let Ok(expires) = at.0.checked_add(DELETION_TIMEOUT) else {
            continue;
        };
        if expires < now {
            tracing::info!(pod = %pod.name_any(), "pod was expected to be deleted by the eviction but was not");
            continue;
        }
        recheck = Some(recheck.map_or(expires, |r| r.min(expires)));
        out.insert(pod.name_any(), at.clone());
    }
    (out, recheck)
}

/// upstream `getExpectedPodCount`: (expected pods, desired healthy).
async fn expected_pod_count(
    pdb: &PodDisruptionBudget,
    pods: &[Pod],
    ctx: &Ctx,
) -> Result<(i32, i32), Error> {
    let spec = pdb.spec.clone().unwrap_or_default();
    if let Some(max) = &spec.max_unavailable {
        let expected = expected_scale(pdb, pods, ctx).await?;
        let max = scaled(max, expected).map_err(Error::Sync)?;
        return Ok((expected, (expected - max).max(0)));
    }
    match &spec.min_available {
        Some(IntOrString::Int(n)) => Ok((pods.len() as i32, *n)),
        Some(v @ IntOrString::String(_)) => {
            let expected = expected_scale(pdb, pods, ctx).await?;
            Ok((expected, scaled(v, expected).map_err(Error::Sync)?))
        }
        None => Ok((0, 0)),
    }
}

/// upstream `getExpectedScale`: the sum of the scales of the controllers
/// owning the pods. Pods without a controller count one each (upstream
/// counts them as zero and warns; a budget over bare pods would then never
/// allow a disruption).
async fn expected_scale(pdb: &PodDisruptionBudget, pods: &[Pod], ctx: &Ctx) -> Result<i32, Error> {
    let ns = pdb.namespace().unwrap_or_default();
    let mut scales: HashMap<String, i32> = HashMap::new();
    let mut unmanaged: Vec<String> = Vec::new();
    // Controller uid (as referenced by a pod) → the uid it resolved to.
    let mut resolved: HashMap<String, String> = HashMap::new();
    for pod in pods {
        let Some(cref) = controller_of(&pod.metadata) else {
            unmanaged.push(pod.name_any());
            continue;
        };
        if resolved.contains_key(&cref.uid) {
            continue;
        }
        match find_scale(ctx, &ns, cref).await? {
            Some((uid, scale)) => {
                resolved.insert(cref.uid.clone(), uid.clone());
                scales.insert(uid, scale);
            }
            None => {
                let msg = format!("found no controllers for pod {:?}", pod.name_any());
                event(ctx, pdb, EventType::Warning, "NoControllers", msg.clone()).await;
                return Err(Error::Sync(msg));
            }
        }
    }
    if !unmanaged.is_empty() {
        tracing::debug!(pdb = %pdb.name_any(), pods = ?unmanaged, "budget selects pods without a controller");
    }
    Ok(scales.values().sum::<i32>() + unmanaged.len() as i32)
}

/// The controller behind a pod's controllerRef and its desired scale: a
/// ReplicaSet's Deployment when it has one, otherwise the owner's `scale`
/// subresource. None when the owner is gone or has no scale.
async fn find_scale(
    ctx: &Ctx,
    ns: &str,
    cref: &OwnerReference,
) -> Result<Option<(String, i32)>, Error> {
    let group = cref
        .api_version
        .split_once('/')
        .map(|(g, _)| g)
        .unwrap_or("");
    if cref.kind == "ReplicaSet" && matches!(group, "apps" | "extensions") {
        let rss: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), ns);
        let Some(rs) = rss.get_opt(&cref.name).await? else {
            return Ok(None);
        };
        if rs.metadata.uid.as_deref() != Some(cref.uid.as_str()) {
            return Ok(None);
        }
        if let Some(dref) = controller_of(&rs.metadata).filter(|d| d.kind == "Deployment") {
            return scale_of(ctx, ns, dref).await;
        }
    }
    scale_of(ctx, ns, cref).await
}

/// Reads `<owner>/scale`; the owner's uid must match the reference.
async fn scale_of(
    ctx: &Ctx,
    ns: &str,
    cref: &OwnerReference,
) -> Result<Option<(String, i32)>, Error> {
    let (group, version) = match cref.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", cref.api_version.as_str()),
    };
    let gvk = GroupVersionKind::gvk(group, version, &cref.kind);
    let Ok((ar, caps)) = kube::discovery::pinned_kind(&ctx.client, &gvk).await else {
        return Ok(None);
    };
    if !caps.supports_operation(kube::discovery::verbs::GET) {
        return Ok(None);
    }
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ar);
    let Some(owner) = api.get_opt(&cref.name).await? else {
        return Ok(None);
    };
    if owner.metadata.uid.as_deref() != Some(cref.uid.as_str()) {
        return Ok(None);
    }
    match api.get_scale(&cref.name).await {
        Ok(scale) => Ok(Some((
            cref.uid.clone(),
            scale.spec.and_then(|s| s.replicas).unwrap_or(0),
        ))),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 405 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled(&IntOrString::Int(2), 10), Ok(2));
        assert_eq!(scaled(&IntOrString::String("25%".into()), 4), Ok(1));
        assert_eq!(scaled(&IntOrString::String("25%".into()), 2), Ok(1));
        assert_eq!(scaled(&IntOrString::String("50%".into()), 5), Ok(3));
        assert_eq!(scaled(&IntOrString::String("0%".into()), 5), Ok(0));
        assert!(scaled(&IntOrString::String("5".into()), 5).is_err());
    }
}

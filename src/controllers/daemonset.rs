//! The DaemonSet controller (upstream `pkg/controller/daemon`, v1.33
//! behaviour): one pod per eligible node, pinned to it with a required
//! node affinity on `metadata.name` for the scheduler to bind; rolling
//! updates with maxUnavailable/maxSurge or OnDelete; ControllerRevisions
//! named `<ds>-<hash>` whose hash labels the pods, so that
//! `kubectl rollout status/history/undo` work.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetSpec, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use super::informer::Subscription;
use super::workloads::{self as w, Error, Events, Result, Watched};

pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";
const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";
/// Upstream's failed-pod backoff: 1 s doubling up to 15 min per node.
const FAILED_POD_BACKOFF: Duration = Duration::from_secs(1);
const MAX_FAILED_POD_BACKOFF: Duration = Duration::from_secs(15 * 60);
const MAX_PODS_PER_SYNC: usize = 500;

struct Ctx {
    client: Client,
    daemonsets: Arc<Watched<DaemonSet>>,
    pods: Arc<Watched<Pod>>,
    nodes: Arc<Watched<Node>>,
    events: Events,
    /// "<ds uid>/<node>" → (current delay, next attempt allowed at).
    failed_backoff: Mutex<HashMap<String, (Duration, Instant)>>,
}

pub async fn run(client: Client, pods: Subscription<Pod>, nodes: Subscription<Node>) {
    let (daemonsets, ds_stream) = w::watch(
        Api::<DaemonSet>::all(client.clone()),
        watcher::Config::default(),
    );
    let (pods, pod_stream) = Watched::shared(pods);
    let (nodes, node_stream) = Watched::shared(nodes);
    let ctx = Arc::new(Ctx {
        events: Events::new(client.clone(), "daemonset-controller"),
        client,
        daemonsets: daemonsets.clone(),
        pods,
        nodes: nodes.clone(),
        failed_backoff: Mutex::new(HashMap::new()),
    });
    // A node change concerns every DaemonSet, but kubelet heartbeats do
    // not: only changes to what placement reads trigger a resync.
    let ds_store = daemonsets.store.clone();
    let fingerprints: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::new());
    let node_mapper = move |node: Arc<Node>| {
        let name = node.name_any();
        let gone = nodes.store.get(&ObjectRef::from_obj(&*node)).is_none();
        let mut fp = fingerprints.lock().unwrap_or_else(|e| e.into_inner());
        let changed = if gone {
            fp.remove(&name).is_some()
        } else {
            let f = node_fingerprint(&node);
            fp.insert(name, f) != Some(f)
        };
        if changed {
            ds_store
                .state()
                .iter()
                .map(|d| ObjectRef::from_obj(&**d))
                .collect()
        } else {
            Vec::new()
        }
    };
    Controller::for_stream(ds_stream, daemonsets.store.clone())
        .owns_shared_stream(pod_stream)
        .watches_shared_stream(node_stream, node_mapper)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn node_fingerprint(node: &Node) -> u64 {
    let spec = node.spec.as_ref();
    let conditions: Vec<(String, String)> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| {
            cs.iter()
                .map(|c| (c.type_.clone(), c.status.clone()))
                .collect()
        })
        .unwrap_or_default();
    let key = serde_json::json!([
        node.metadata.labels,
        spec.and_then(|s| s.taints.as_ref()),
        spec.and_then(|s| s.unschedulable),
        conditions,
    ]);
    w::fnv32a(key.to_string().as_bytes()) as u64
}

fn error_policy(_ds: Arc<DaemonSet>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    match err {
        Error::Kube(e) if w::is_status(e, 409) => Action::requeue(Duration::from_millis(200)),
        _ => {
            tracing::debug!("daemonset sync: {err}");
            Action::requeue(Duration::from_secs(1))
        }
    }
}

// ------------------------------------------------------------ placement

/// Upstream `AddOrUpdateDaemonPodTolerations`: daemons survive node
/// problems and ignore cordoning.
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut wanted = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        wanted.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    let list = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, effect) in wanted {
        let t = Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            value: None,
            toleration_seconds: None,
        };
        // Same key, operator, value and effect: replace (upstream `MatchToleration`).
        match list.iter_mut().find(|x| {
            x.key == t.key
                && x.operator.as_deref().unwrap_or("Equal") == "Exists"
                && x.value.as_deref().unwrap_or("").is_empty()
                && x.effect == t.effect
        }) {
            Some(x) => *x = t,
            None => list.push(t),
        }
    }
}

/// Upstream `ToleratesTaint`.
fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref()
        && !e.is_empty()
        && e != taint.effect
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    let op = t.operator.as_deref().unwrap_or("Equal");
    if key.is_empty() {
        return op == "Exists";
    }
    if key != taint.key {
        return false;
    }
    match op {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

fn untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    effects: &[&str],
) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| effects.contains(&t.effect.as_str()))
        .find(|t| !tolerations.iter().any(|x| tolerates(x, t)))
}

fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or(&[]);
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if req.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        // An empty term matches no objects.
        return false;
    }
    let labels = node.metadata.labels.clone().unwrap_or_default();
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            r.key == "metadata.name" && requirement_matches(r, node.metadata.name.as_deref())
        })
}

/// The pod's required node affinity and node selector (upstream
/// `GetRequiredNodeAffinity(pod).Match(node)`).
pub fn fits_node_affinity(spec: &PodSpec, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    if let Some(sel) = &spec.node_selector
        && sel.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return false;
    }
    match spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        }) {
        None => true,
        Some(ns) => ns.node_selector_terms.iter().any(|t| term_matches(t, node)),
    }
}

/// Upstream `NodeShouldRunDaemonPod`: (should run a pod there, may keep an
/// existing one running).
pub fn node_should_run(ds_spec: &DaemonSetSpec, node: &Node) -> (bool, bool) {
    let mut spec = ds_spec.template.spec.clone().unwrap_or_default();
    add_daemon_tolerations(&mut spec);
    let name = node.name_any();
    if spec
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != name)
    {
        return (false, false);
    }
    if !fits_node_affinity(&spec, node) {
        return (false, false);
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let tolerations = spec.tolerations.clone().unwrap_or_default();
    if untolerated(&taints, &tolerations, &["NoSchedule", "NoExecute"]).is_some() {
        let keep = untolerated(&taints, &tolerations, &["NoExecute"]).is_none();
        return (false, keep);
    }
    (true, true)
}

/// Upstream `ReplaceDaemonSetPodNodeNameNodeAffinity`.
pub fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let selector = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
        }],
    };
    let mut a = affinity.unwrap_or_default();
    let na = a.node_affinity.get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(selector);
    a
}

/// Upstream `GetTargetNodeName`: the bound node, else the pinned one.
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields.iter().flatten().find_map(|f| {
            (f.key == "metadata.name" && f.operator == "In")
                .then(|| f.values.as_ref().filter(|v| v.len() == 1)?.first().cloned())
                .flatten()
        })
    })
}

/// Scheduled first, then oldest, then by name (upstream
/// `podByCreationTimestampAndPhase`).
fn oldest_first(a: &Arc<Pod>, b: &Arc<Pod>) -> std::cmp::Ordering {
    let bound = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some_and(|n| !n.is_empty())
    };
    bound(b)
        .cmp(&bound(a))
        .then_with(|| w::creation(&a.metadata).cmp(&w::creation(&b.metadata)))
        .then_with(|| a.name_any().cmp(&b.name_any()))
}

// ------------------------------------------------------------ history

fn template_generation(ds: &DaemonSet) -> Option<String> {
    ds.metadata
        .annotations
        .as_ref()?
        .get(TEMPLATE_GENERATION_ANNOTATION)
        .cloned()
}

/// Upstream `IsPodUpdated`.
fn is_updated(pod: &Pod, hash: &str, generation: Option<&str>) -> bool {
    let labels = pod.metadata.labels.as_ref();
    let by_gen = generation.is_some_and(|g| {
        labels
            .and_then(|l| l.get(TEMPLATE_GENERATION_LABEL))
            .map(String::as_str)
            == Some(g)
    });
    let by_hash = labels
        .and_then(|l| l.get(REVISION_HASH_LABEL))
        .map(String::as_str)
        == Some(hash);
    by_gen || by_hash
}

/// Upstream `constructHistory`: the revision matching the current template
/// (created, or renumbered as the newest), and the older ones.
async fn construct_history(
    ctx: &Ctx,
    ds: &DaemonSet,
) -> Result<(ControllerRevision, Vec<ControllerRevision>)> {
    let ns = ds.namespace().unwrap_or_default();
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let spec = ds.spec.clone().unwrap_or_default();
    let data = w::template_patch(&spec.template);
    let all = w::owned_revisions(&ctx.client, &ns, &uid).await?;
    let (mut current, old): (Vec<ControllerRevision>, Vec<ControllerRevision>) = all
        .into_iter()
        .partition(|cr| w::revision_data_equals(cr, &data));
    let next = old.iter().map(|c| c.revision).max().unwrap_or(0) + 1;
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    let cur = match current.pop() {
        Some(keep) => {
            // Duplicates (same data) can only come from races: keep the newest.
            for dup in &current {
                let _ = api.delete(&dup.name_any(), &Default::default()).await;
            }
            if keep.revision < next {
                w::set_revision_number(&ctx.client, &keep, next).await?
            } else {
                keep
            }
        }
        None => {
            let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
            let bytes = serde_json::to_vec(&spec.template).unwrap_or_default();
            let hash = w::hash_with_collisions(&bytes, collisions);
            let mut labels = spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert(REVISION_HASH_LABEL.into(), hash.clone());
            let cr = ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(format!("{}-{hash}", ds.name_any())),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    annotations: ds.metadata.annotations.clone(),
                    owner_references: Some(vec![w::controller_ref(ds)]),
                    ..Default::default()
                },
                data: Some(RawExtension(data.clone())),
                revision: next,
            };
            match api.create(&PostParams::default(), &cr).await {
                Ok(c) => c,
                Err(e) if w::is_status(&e, 409) => {
                    let existing = api.get(&cr.name_any()).await?;
                    if w::revision_data_equals(&existing, &data)
                        && w::is_controlled_by(&existing.metadata, &uid)
                    {
                        existing
                    } else {
                        // A hash collision: bump the count so the next
                        // attempt hashes differently.
                        let mut status = ds.status.clone().unwrap_or_default();
                        status.collision_count = Some(collisions.unwrap_or(0) + 1);
                        write_status(ctx, ds, &status).await?;
                        return Err(Error::Other(format!(
                            "hash collision for ControllerRevision {}",
                            cr.name_any()
                        )));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    Ok((cur, old))
}

// ------------------------------------------------------------ reconcile

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action> {
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    ctx.pods.wait_ready().await?;
    ctx.nodes.wait_ready().await?;
    if !ctx.pods.caught_up(&uid) || !ctx.daemonsets.caught_up(&uid) {
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    let ds = ctx
        .daemonsets
        .store
        .get(&ObjectRef::from_obj(&*ds))
        .unwrap_or(ds);
    if ds.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the pods.
        return Ok(Action::await_change());
    }
    let Some(spec) = ds.spec.clone() else {
        return Ok(Action::await_change());
    };
    let ns = ds.namespace().unwrap_or_default();
    let ds_ref = w::object_ref(&*ds);
    let now = w::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let mut requeue: Option<Duration> = None;
    let mut want_requeue = |d: Duration| {
        requeue = Some(requeue.map_or(d, |r: Duration| r.min(d)));
    };

    let candidates = ctx.pods.store.state().into_iter().filter(|p| {
        p.metadata.namespace.as_deref() == Some(ns.as_str())
            && w::controller_of(&p.metadata).is_none_or(|r| r.uid == uid)
    });
    let pods = w::claim_pods(
        &ctx.client,
        &*ds,
        &spec.selector,
        candidates,
        &ctx.pods,
        &uid,
    )
    .await;
    let (cur, old) = construct_history(&ctx, &ds).await?;
    let hash = cur
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_HASH_LABEL))
        .cloned()
        .unwrap_or_default();
    let generation = template_generation(&ds);
    let mut nodes: Vec<Arc<Node>> = ctx.nodes.store.state();
    nodes.sort_by_key(|n| n.name_any());
    let node_names: BTreeSet<String> = nodes.iter().map(|n| n.name_any()).collect();
    let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    let mut to_delete: Vec<Arc<Pod>> = Vec::new();
    for p in &pods {
        // A pod that names no node is ignored, as upstream does.
        if let Some(n) = target_node(p) {
            by_node.entry(n).or_default().push(p.clone());
        }
    }
    for list in by_node.values_mut() {
        list.sort_by(oldest_first);
    }
    let surge =
        matches!(strategy_type(&spec), "RollingUpdate") && max_surge(&spec, nodes.len() as i32) > 0;

    // manage: one pod per node that should run one, none elsewhere.
    let mut to_create: Vec<String> = Vec::new();
    for node in &nodes {
        let name = node.name_any();
        let (should_run, should_continue) = node_should_run(&spec, node);
        let on_node = by_node.get(&name).cloned().unwrap_or_default();
        if should_run && on_node.is_empty() {
            to_create.push(name);
            continue;
        }
        if !should_continue {
            to_delete.extend(on_node.into_iter().filter(|p| !w::is_terminating(p)));
            continue;
        }
        if on_node.is_empty() {
            continue;
        }
        let mut running: Vec<Arc<Pod>> = Vec::new();
        for p in on_node {
            if w::is_terminating(&p) {
                continue;
            }
            if w::phase(&p) == "Failed" {
                let key = format!("{uid}/{name}");
                // Upstream's per-node backoff between killing failed pods.
                let wait = {
                    let mut backoff = ctx.failed_backoff.lock().unwrap_or_else(|e| e.into_inner());
                    let entry = backoff.get(&key).copied();
                    match entry {
                        Some((_, at)) if at > Instant::now() => Some(at - Instant::now()),
                        _ => {
                            let delay = entry
                                .map(|(d, _)| (d * 2).min(MAX_FAILED_POD_BACKOFF))
                                .unwrap_or(FAILED_POD_BACKOFF);
                            backoff.insert(key, (delay, Instant::now() + delay));
                            None
                        }
                    }
                };
                match wait {
                    Some(d) => want_requeue(d),
                    None => {
                        ctx.events
                            .warning(
                                &ds_ref,
                                Some(w::object_ref(&*p)),
                                "FailedDaemonPod",
                                "DeletePod",
                                format!("Found failed daemon pod {ns}/{} on node {name}, will try to kill it", p.name_any()),
                            )
                            .await;
                        to_delete.push(p);
                    }
                }
                continue;
            }
            running.push(p);
        }
        if !surge {
            // Keep the oldest; the rest are excess.
            to_delete.extend(running.into_iter().skip(1));
            continue;
        }
        if running.is_empty() {
            if should_run {
                to_create.push(name);
            }
            continue;
        }
        // Surging: at most one old and one new pod; the old one goes once
        // the new one is available, or if it is not ready anyway.
        let mut oldest_new: Option<Arc<Pod>> = None;
        let mut oldest_old: Option<Arc<Pod>> = None;
        for p in running {
            let new = p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_HASH_LABEL))
                == Some(&hash);
            let slot = if new {
                &mut oldest_new
            } else {
                &mut oldest_old
            };
            if slot.is_none() {
                *slot = Some(p);
            } else {
                to_delete.push(p);
            }
        }
        if let (Some(n), Some(o)) = (&oldest_new, &oldest_old) {
            if !w::is_ready(o) || w::is_available(n, min_ready, now) {
                to_delete.push(o.clone());
            } else if let Some(d) = w::available_in(n, min_ready, now) {
                want_requeue(d);
            }
        }
    }
    // Unbound pods pinned to nodes that no longer exist.
    for (node, list) in &by_node {
        if !node_names.contains(node) {
            to_delete.extend(
                list.iter()
                    .filter(|p| {
                        !w::is_terminating(p)
                            && p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none()
                    })
                    .cloned(),
            );
        }
    }
    let wrote = sync_nodes(
        &ctx,
        &ds,
        &spec,
        &hash,
        generation.as_deref(),
        &to_create,
        &to_delete,
    )
    .await?;

    if !wrote && strategy_type(&spec) == "RollingUpdate" {
        let (delete, create) = rolling_update(&spec, &nodes, &by_node, &hash, now);
        sync_nodes(
            &ctx,
            &ds,
            &spec,
            &hash,
            generation.as_deref(),
            &create,
            &delete,
        )
        .await?;
    }

    // cleanupHistory: live hashes are those of existing pods.
    let live_hashes: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| {
            p.metadata
                .labels
                .as_ref()?
                .get(REVISION_HASH_LABEL)
                .cloned()
        })
        .collect();
    let live: BTreeSet<String> = old
        .iter()
        .filter(|cr| {
            cr.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_HASH_LABEL))
                .is_some_and(|h| live_hashes.contains(h))
        })
        .map(|cr| cr.name_any())
        .collect();
    w::truncate_history(
        &ctx.client,
        &ns,
        &old,
        &live,
        spec.revision_history_limit.unwrap_or(10),
        true,
    )
    .await;

    // Status, from what the store shows now that our writes are out.
    let mut status = ds.status.clone().unwrap_or_default();
    let (mut desired, mut current, mut misscheduled, mut ready, mut available, mut updated) =
        (0, 0, 0, 0, 0, 0);
    for node in &nodes {
        let (should_run, _) = node_should_run(&spec, node);
        let list: Vec<Arc<Pod>> = by_node
            .get(&node.name_any())
            .map(|l| {
                l.iter()
                    .filter(|p| !(w::is_terminating(p) && w::is_terminal(p)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let scheduled = !list.is_empty();
        if should_run {
            desired += 1;
            if let Some(p) = list.first() {
                current += 1;
                if w::is_ready(p) {
                    ready += 1;
                    if w::is_available(p, min_ready, now) {
                        available += 1;
                    } else if let Some(d) = w::available_in(p, min_ready, now) {
                        want_requeue(d);
                    }
                }
                if is_updated(p, &hash, generation.as_deref()) {
                    updated += 1;
                }
            }
        } else if scheduled {
            misscheduled += 1;
        }
    }
    status.desired_number_scheduled = desired;
    status.current_number_scheduled = current;
    status.number_misscheduled = misscheduled;
    status.number_ready = ready;
    status.number_available = (available > 0).then_some(available);
    status.updated_number_scheduled = (updated > 0).then_some(updated);
    status.number_unavailable = (desired - available > 0).then_some(desired - available);
    status.observed_generation = ds.metadata.generation;
    if Some(&status) != ds.status.as_ref() {
        write_status(&ctx, &ds, &status).await?;
    }
    Ok(match requeue {
        Some(d) => Action::requeue(d.max(Duration::from_millis(10))),
        None => Action::await_change(),
    })
}

fn strategy_type(spec: &DaemonSetSpec) -> &str {
    spec.update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
}

fn max_surge(spec: &DaemonSetSpec, desired: i32) -> i32 {
    let ru = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    w::scaled_value(ru.and_then(|r| r.max_surge.as_ref()), desired, true, 0).max(0)
}

fn max_unavailable(spec: &DaemonSetSpec, desired: i32) -> i32 {
    let ru = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let surge = max_surge(spec, desired);
    let unavailable = w::scaled_value(
        ru.and_then(|r| r.max_unavailable.as_ref()),
        desired,
        true,
        1,
    )
    .max(0);
    // Both zero would stall the rollout: treat as one unavailable.
    if surge == 0 && unavailable == 0 {
        1
    } else {
        unavailable
    }
}

/// A node's pod at the current revision and its older one.
type NewAndOld = (Option<Arc<Pod>>, Option<Arc<Pod>>);

/// Upstream `findUpdatedPodsOnNode`: (new, old), None if there are several
/// of either.
fn updated_and_old(pods: &[Arc<Pod>], hash: &str) -> Option<NewAndOld> {
    let mut new = None;
    let mut old = None;
    for p in pods.iter().filter(|p| !w::is_terminating(p)) {
        let is_new = p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVISION_HASH_LABEL))
            .map(String::as_str)
            == Some(hash);
        let slot = if is_new { &mut new } else { &mut old };
        if slot.is_some() {
            return None;
        }
        *slot = Some(p.clone());
    }
    Some((new, old))
}

/// Upstream `rollingUpdate`: which old pods to delete and on which nodes to
/// surge a new pod.
fn rolling_update(
    spec: &DaemonSetSpec,
    nodes: &[Arc<Node>],
    by_node: &BTreeMap<String, Vec<Arc<Pod>>>,
    hash: &str,
    now: k8s_openapi::jiff::Timestamp,
) -> (Vec<Arc<Pod>>, Vec<String>) {
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let desired = nodes.iter().filter(|n| node_should_run(spec, n).0).count() as i32;
    let surge = max_surge(spec, desired);
    let unavailable_max = max_unavailable(spec, desired);
    let mut delete: Vec<Arc<Pod>> = Vec::new();
    if surge == 0 {
        let mut unavailable = 0;
        let mut replace: Vec<Arc<Pod>> = Vec::new();
        let mut candidates: Vec<Arc<Pod>> = Vec::new();
        for pods in by_node.values() {
            let Some((new, old)) = updated_and_old(pods, hash) else {
                unavailable += 1;
                continue;
            };
            match (new, old) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (Some(n), None) => {
                    if !w::is_available(&n, min_ready, now) {
                        unavailable += 1;
                    }
                }
                (None, Some(o)) => {
                    if !w::is_available(&o, min_ready, now) {
                        replace.push(o);
                    } else if unavailable < unavailable_max {
                        candidates.push(o);
                    }
                }
            }
        }
        let remaining = (unavailable_max - unavailable).max(0) as usize;
        delete.extend(replace);
        delete.extend(candidates.into_iter().take(remaining));
        return (delete, Vec::new());
    }
    let mut surging = 0;
    let mut allowed: Vec<String> = Vec::new();
    let mut candidates: Vec<String> = Vec::new();
    for (node_name, pods) in by_node {
        let Some((new, old)) = updated_and_old(pods, hash) else {
            surging += 1;
            continue;
        };
        match (new, old) {
            (_, None) => {}
            (None, Some(o)) => {
                if !w::is_available(&o, min_ready, now) {
                    let runs = nodes
                        .iter()
                        .find(|n| &n.name_any() == node_name)
                        .is_some_and(|n| node_should_run(spec, n).0);
                    if runs {
                        allowed.push(node_name.clone());
                    } else {
                        delete.push(o);
                    }
                } else if surging < surge {
                    candidates.push(node_name.clone());
                }
            }
            (Some(n), Some(o)) => {
                if !w::is_available(&n, min_ready, now) {
                    surging += 1;
                } else {
                    delete.push(o);
                }
            }
        }
    }
    let remaining = (surge - surging).max(0) as usize;
    allowed.extend(candidates.into_iter().take(remaining));
    (delete, allowed)
}

/// Upstream `syncNodes`: creates pods pinned to `create` and deletes
/// `delete`; true if anything was written.
async fn sync_nodes(
    ctx: &Ctx,
    ds: &DaemonSet,
    spec: &DaemonSetSpec,
    hash: &str,
    generation: Option<&str>,
    create: &[String],
    delete: &[Arc<Pod>],
) -> Result<bool> {
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let ns = ds.namespace().unwrap_or_default();
    let ds_ref = w::object_ref(ds);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut wrote = false;
    for node in create.iter().take(MAX_PODS_PER_SYNC) {
        let pod = new_pod(ds, spec, hash, generation, node);
        match api.create(&PostParams::default(), &pod).await {
            Ok(p) => {
                wrote = true;
                ctx.pods.note_write(&uid, &p.metadata);
                ctx.events
                    .normal(
                        &ds_ref,
                        Some(w::object_ref(&p)),
                        "SuccessfulCreate",
                        "CreatePod",
                        format!("Created pod: {}", p.name_any()),
                    )
                    .await;
            }
            Err(e) => {
                ctx.events
                    .warning(
                        &ds_ref,
                        None,
                        "FailedCreate",
                        "CreatePod",
                        format!("Error creating: {e}"),
                    )
                    .await;
                return Err(e.into());
            }
        }
    }
    let mut seen = BTreeSet::new();
    for p in delete.iter().take(MAX_PODS_PER_SYNC) {
        if !seen.insert(p.metadata.uid.clone()) {
            continue;
        }
        wrote = true;
        if let Some(d) = w::delete_pod(&api, &p.name_any(), p.metadata.uid.as_deref()).await? {
            ctx.pods.note_write(&uid, &d.metadata);
        } else {
            ctx.pods.note_delete(&uid, &p.metadata);
        }
        ctx.events
            .normal(
                &ds_ref,
                Some(w::object_ref(&**p)),
                "SuccessfulDelete",
                "DeletePod",
                format!("Deleted pod: {}", p.name_any()),
            )
            .await;
    }
    Ok(wrote)
}

/// A daemon pod for `node` (upstream `CreatePodTemplate` plus the node
/// affinity pin).
fn new_pod(
    ds: &DaemonSet,
    spec: &DaemonSetSpec,
    hash: &str,
    generation: Option<&str>,
    node: &str,
) -> Pod {
    let tmeta = spec.template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels.clone().unwrap_or_default();
    labels.insert(REVISION_HASH_LABEL.into(), hash.to_string());
    if let Some(g) = generation {
        labels.insert(TEMPLATE_GENERATION_LABEL.into(), g.to_string());
    }
    let mut pod_spec = spec.template.spec.clone().unwrap_or_default();
    add_daemon_tolerations(&mut pod_spec);
    pod_spec.affinity = Some(pin_to_node(pod_spec.affinity.take(), node));
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.name_any())),
            namespace: ds.namespace(),
            labels: Some(labels),
            annotations: tmeta.annotations.clone(),
            finalizers: tmeta.finalizers.clone(),
            owner_references: Some(vec![w::controller_ref(ds)]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

async fn write_status(ctx: &Ctx, ds: &DaemonSet, status: &DaemonSetStatus) -> Result<()> {
    let api: Api<DaemonSet> =
        Api::namespaced(ctx.client.clone(), &ds.namespace().unwrap_or_default());
    let mut d = ds.clone();
    d.status = Some(status.clone());
    d.metadata.managed_fields = None;
    let written = api
        .replace_status(&ds.name_any(), &PostParams::default(), &d)
        .await?;
    ctx.daemonsets.note_write(
        ds.metadata.uid.as_deref().unwrap_or_default(),
        &written.metadata,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}}),
        )
        .unwrap()
    }

    fn ds_spec(pod_spec: serde_json::Value) -> DaemonSetSpec {
        serde_json::from_value(json!({"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": pod_spec}})).unwrap()
    }

    #[test]
    fn taints_and_tolerations() {
        let plain = ds_spec(json!({"containers": [{"name": "c", "image": "i"}]}));
        let tainted = node(
            "n",
            json!({}),
            json!([{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]),
        );
        assert_eq!(node_should_run(&plain, &tainted), (false, true));
        let evicting = node(
            "n",
            json!({}),
            json!([{"key": "dedicated", "value": "x", "effect": "NoExecute"}]),
        );
        assert_eq!(node_should_run(&plain, &evicting), (false, false));
        let tolerant = ds_spec(json!({"containers": [{"name": "c", "image": "i"}],
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "x", "effect": "NoSchedule"}]}));
        assert_eq!(node_should_run(&tolerant, &tainted), (true, true));
        // Default daemon tolerations cover cordoned and not-ready nodes.
        let cordoned = node(
            "n",
            json!({}),
            json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]),
        );
        assert_eq!(node_should_run(&plain, &cordoned), (true, true));
        // PreferNoSchedule is not a placement constraint.
        let soft = node(
            "n",
            json!({}),
            json!([{"key": "k", "effect": "PreferNoSchedule"}]),
        );
        assert_eq!(node_should_run(&plain, &soft), (true, true));
    }

    #[test]
    fn selectors_and_affinity() {
        let sel = ds_spec(
            json!({"containers": [{"name": "c", "image": "i"}], "nodeSelector": {"disk": "ssd"}}),
        );
        assert!(!node_should_run(&sel, &node("n", json!({}), json!([]))).0);
        assert!(node_should_run(&sel, &node("n", json!({"disk": "ssd"}), json!([]))).0);
        let aff = ds_spec(
            json!({"containers": [{"name": "c", "image": "i"}], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]},
                                  {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["special"]}]}]}}}}),
        );
        assert!(node_should_run(&aff, &node("x", json!({"zone": "b"}), json!([]))).0);
        assert!(!node_should_run(&aff, &node("x", json!({"zone": "c"}), json!([]))).0);
        assert!(node_should_run(&aff, &node("special", json!({}), json!([]))).0);
    }

    #[test]
    fn pinning_replaces_required_terms() {
        let a: Affinity = serde_json::from_value(json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]},
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {"matchExpressions": [{"key": "k", "operator": "Exists"}]}}]}})).unwrap();
        let pinned = pin_to_node(Some(a), "node-1");
        let v = serde_json::to_value(&pinned).unwrap();
        assert_eq!(
            v["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"],
            json!({"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-1"]}]}]})
        );
        assert!(v["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"].is_array());
        let pod: Pod = serde_json::from_value(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [], "affinity": v}}),
        )
        .unwrap();
        assert_eq!(target_node(&pod).as_deref(), Some("node-1"));
    }

    #[test]
    fn daemon_tolerations() {
        let mut spec: PodSpec = serde_json::from_value(json!({"containers": [], "hostNetwork": true,
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]})).unwrap();
        add_daemon_tolerations(&mut spec);
        let t = spec.tolerations.unwrap();
        assert_eq!(t.len(), 7);
        assert!(t.iter().all(|x| x.toleration_seconds.is_none()));
        assert!(
            t.iter()
                .any(|x| x.key.as_deref() == Some("node.kubernetes.io/network-unavailable"))
        );
    }
}

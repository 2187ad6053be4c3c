//! The Job controller (upstream `pkg/controller/job`, v1.33 behaviour) and
//! the TTL-after-finished controller for Jobs.
//!
//! Pods are created with the `batch.kubernetes.io/job-tracking` finalizer.
//! A finished pod is first recorded in `status.uncountedTerminatedPods`
//! (or, for Indexed Jobs, in `status.completedIndexes`), then its
//! finalizer is removed, then it is moved into `succeeded`/`failed`: a
//! crash between any two steps neither loses nor double-counts a pod.
//! Terminal conditions are preceded by the interim `SuccessCriteriaMet` /
//! `FailureTarget` ones and only set once no pod is terminating, as 1.33
//! does with JobPodReplacementPolicy enabled.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

use super::informer::Subscription;
use super::workloads::{self as w, Error, Events, Result, Watched};

pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
const JOB_CONTROLLER_NAME: &str = "kubernetes.io/job-controller";
/// Upstream `DefaultJobPodFailureBackOff` and `MaxJobPodFailureBackOff`.
const POD_FAILURE_BACKOFF: Duration = Duration::from_secs(10);
const MAX_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(600);
/// Upstream `MaxPodCreateDeletePerSync`.
const MAX_PODS_PER_SYNC: usize = 500;
/// Upstream `MaxUncountedPods`: bounds the size of one status write.
const MAX_UNCOUNTED: usize = 500;

struct Ctx {
    client: Client,
    jobs: Arc<Watched<Job>>,
    pods: Arc<Watched<Pod>>,
    events: Events,
    /// Failure backoff per Job uid (in memory, as upstream's backoff store).
    backoff: Mutex<HashMap<String, BackoffRecord>>,
}

#[derive(Clone, Copy, Default, Debug)]
struct BackoffRecord {
    failures_after_last_success: u32,
    last_failure: Option<Timestamp>,
}

impl BackoffRecord {
    /// Upstream `newBackoffRecord`: fold newly finished pods in.
    fn with(mut self, new_succeeded: &[&Pod], new_failed: &[&Pod]) -> BackoffRecord {
        let mut failed: Vec<Timestamp> = new_failed.iter().map(|p| finished_time(p)).collect();
        failed.sort();
        if new_succeeded.is_empty() {
            if let Some(last) = failed.last() {
                self.failures_after_last_success += failed.len() as u32;
                self.last_failure = Some(*last);
            }
            return self;
        }
        let last_success = new_succeeded
            .iter()
            .map(|p| finished_time(p))
            .max()
            .unwrap_or(Timestamp::UNIX_EPOCH);
        self.failures_after_last_success = 0;
        self.last_failure = None;
        for t in failed.iter().rev() {
            if *t <= last_success {
                break;
            }
            if self.last_failure.is_none() {
                self.last_failure = Some(*t);
            }
            self.failures_after_last_success += 1;
        }
        self
    }

    /// Upstream `getRemainingTime`: 10 s doubled per consecutive failure.
    fn remaining(&self, now: Timestamp) -> Duration {
        let Some(last) = self.last_failure else {
            return Duration::ZERO;
        };
        if self.failures_after_last_success == 0 {
            return Duration::ZERO;
        }
        let mut backoff = POD_FAILURE_BACKOFF;
        for _ in 1..self.failures_after_last_success {
            backoff *= 2;
            if backoff >= MAX_POD_FAILURE_BACKOFF {
                backoff = MAX_POD_FAILURE_BACKOFF;
                break;
            }
        }
        let elapsed = w::secs_between(last, now).max(0.0);
        let left = backoff.as_secs_f64() - elapsed;
        if left > 0.0 {
            Duration::from_secs_f64(left)
        } else {
            Duration::ZERO
        }
    }
}

/// Upstream `getFinishedTime`: last container termination, else the time
/// the pod stopped being ready, else its deletion, else its creation.
fn finished_time(p: &Pod) -> Timestamp {
    let status = p.status.as_ref();
    let from_containers = status
        .into_iter()
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    if let Some(t) = from_containers {
        return t;
    }
    let ready_false = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == "Ready" && c.status == "False")
        })
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0);
    ready_false
        .or_else(|| p.metadata.deletion_timestamp.as_ref().map(|t| t.0))
        .unwrap_or_else(|| w::creation(&p.metadata))
}

pub async fn run(client: Client, pods: Subscription<Pod>) {
    let (jobs, job_stream) = w::watch(Api::<Job>::all(client.clone()), watcher::Config::default());
    let (pods, pod_stream) = Watched::shared(pods);
    // Pods carrying our finalizer whose Job may be gone are checked by the
    // orphan sweeper: a reconcile is never called for a deleted Job.
    let (orphan_tx, orphan_rx) = mpsc::unbounded_channel::<Arc<Pod>>();
    let pod_stream = pod_stream.inspect(move |p| {
        if has_finalizer(p) && (w::is_terminating(p) || w::is_terminal(p) || job_owner(p).is_none())
        {
            let _ = orphan_tx.send(p.clone());
        }
    });
    let ctx = Arc::new(Ctx {
        events: Events::new(client.clone(), "job-controller"),
        client,
        jobs: jobs.clone(),
        pods,
        backoff: Mutex::new(HashMap::new()),
    });
    let controller = Controller::for_stream(job_stream, jobs.store.clone())
        .owns_shared_stream(pod_stream)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));
    tokio::join!(controller, sweep_orphans(ctx, orphan_rx));
}

fn error_policy(_job: Arc<Job>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    match err {
        Error::Kube(e) if w::is_status(e, 409) => Action::requeue(Duration::from_millis(200)),
        _ => {
            tracing::debug!("job sync: {err}");
            Action::requeue(Duration::from_secs(1))
        }
    }
}

fn has_finalizer(p: &Pod) -> bool {
    p.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == TRACKING_FINALIZER))
}

fn job_owner(p: &Pod) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    w::controller_of(&p.metadata).filter(|r| r.kind == "Job" && r.api_version == "batch/v1")
}

/// Removes our finalizer from a pod; true when it is gone (or so is the pod).
async fn remove_finalizer(ctx: &Ctx, pod: &Pod, owner_key: Option<&str>) -> bool {
    let api: Api<Pod> = Api::namespaced(
        ctx.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER]}});
    match api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await
    {
        Ok(p) => {
            if let Some(k) = owner_key {
                ctx.pods.note_write(k, &p.metadata);
            }
            true
        }
        Err(e) if w::is_status(&e, 404) => true,
        Err(e) => {
            tracing::debug!("removing finalizer from pod {}: {e}", pod.name_any());
            false
        }
    }
}

/// Removes the tracking finalizer from pods whose Job no longer exists (or
/// does not own them), as upstream does for orphan pods.
async fn sweep_orphans(ctx: Arc<Ctx>, mut rx: mpsc::UnboundedReceiver<Arc<Pod>>) {
    let mut full_scan = tokio::time::interval(Duration::from_secs(30));
    loop {
        let batch: Vec<Arc<Pod>> = tokio::select! {
            Some(p) = rx.recv() => vec![p],
            _ = full_scan.tick() => {
                // Also forget the backoff of Jobs deleted before finishing.
                let live: HashSet<String> = ctx.jobs.store.state().iter().filter_map(|j| j.metadata.uid.clone()).collect();
                ctx.backoff.lock().unwrap_or_else(|e| e.into_inner()).retain(|uid, _| live.contains(uid));
                ctx.pods.store.state().into_iter().filter(|p| has_finalizer(p)).collect()
            }
        };
        for pod in batch {
            let Some(current) = ctx.pods.store.get(&ObjectRef::from_obj(&*pod)) else {
                continue;
            };
            if !has_finalizer(&current) {
                continue;
            }
            let ns = current.metadata.namespace.clone().unwrap_or_default();
            let orphan = match job_owner(&current) {
                None => true,
                Some(r) => {
                    let in_store = ctx
                        .jobs
                        .store
                        .get(&ObjectRef::new(&r.name).within(&ns))
                        .is_some_and(|j| j.metadata.uid.as_deref() == Some(r.uid.as_str()));
                    if in_store {
                        false
                    } else {
                        // The store may lag behind a just-created Job: ask the API.
                        let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
                        match api.get_opt(&r.name).await {
                            Ok(Some(j)) => j.metadata.uid.as_deref() != Some(r.uid.as_str()),
                            Ok(None) => true,
                            Err(_) => false,
                        }
                    }
                }
            };
            if orphan {
                remove_finalizer(&ctx, &current, None).await;
            }
        }
    }
}

fn condition<'a>(status: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

fn is_finished(status: &JobStatus) -> Option<&JobCondition> {
    condition(status, "Complete").or_else(|| condition(status, "Failed"))
}

fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: status.into(),
        reason: (!reason.is_empty()).then(|| reason.into()),
        message: (!message.is_empty()).then(|| message.into()),
        last_probe_time: Some(w::time(now)),
        last_transition_time: Some(w::time(now)),
    }
}

/// Upstream `ensureJobConditionStatus`: sets a condition, returns whether
/// anything changed. A False condition is not added when absent.
fn ensure_condition(
    status: &mut JobStatus,
    type_: &str,
    cstatus: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    let list = status.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = list.iter_mut().find(|c| c.type_ == type_) {
        if c.status != cstatus
            || c.reason.as_deref().unwrap_or("") != reason
            || c.message.as_deref().unwrap_or("") != message
        {
            *c = new_condition(type_, cstatus, reason, message, now);
            return true;
        }
        return false;
    }
    if cstatus == "False" {
        return false;
    }
    list.push(new_condition(type_, cstatus, reason, message, now));
    true
}

// ------------------------------------------------------- index sets

/// Parses "1,3-5" into indexes below `limit`; invalid parts are skipped.
pub fn parse_indexes(s: &str, limit: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<i32>(), b.parse::<i32>()),
            None => (part.parse::<i32>(), part.parse::<i32>()),
        };
        if let (Ok(a), Ok(b)) = (a, b) {
            for i in a.max(0)..=b.min(limit - 1) {
                out.insert(i);
            }
        }
    }
    out
}

/// Formats indexes as upstream's ordered intervals, e.g. "1,3-5".
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

fn completion_index(p: &Pod) -> Option<i32> {
    p.metadata
        .annotations
        .as_ref()?
        .get(COMPLETION_INDEX)?
        .parse()
        .ok()
        .filter(|i: &i32| *i >= 0)
}

// ------------------------------------------------ pod failure policy

enum PolicyAction {
    FailJob(String),
    Ignore,
    Count,
}

/// Upstream `matchPodFailurePolicy` for a failed pod; None when no rule
/// matches (the failure counts).
fn match_pod_failure_policy(spec: &JobSpec, pod: &Pod) -> Option<PolicyAction> {
    let policy = spec.pod_failure_policy.as_ref()?;
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.name_any();
    let status = pod.status.as_ref();
    for (i, rule) in policy.rules.iter().enumerate() {
        let mut matched: Option<String> = None;
        if let Some(req) = &rule.on_exit_codes {
            let statuses = status.into_iter().flat_map(|s| {
                s.init_container_statuses
                    .iter()
                    .flatten()
                    .chain(s.container_statuses.iter().flatten())
            });
            for cs in statuses {
                if req.container_name.as_ref().is_some_and(|n| n != &cs.name) {
                    continue;
                }
                let Some(t) = cs.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
                    continue;
                };
                // A successful container never matches a rule.
                if t.exit_code == 0 {
                    continue;
                }
                let hit = match req.operator.as_str() {
                    "In" => req.values.contains(&t.exit_code),
                    "NotIn" => !req.values.contains(&t.exit_code),
                    _ => false,
                };
                if hit {
                    matched = Some(format!(
                        "Container {} for pod {ns}/{name} failed with exit code {} matching {} rule at index {i}",
                        cs.name, t.exit_code, rule.action
                    ));
                    break;
                }
            }
        } else if let Some(patterns) = &rule.on_pod_conditions {
            let conds = status.and_then(|s| s.conditions.as_ref());
            for pat in patterns {
                let want = if pat.status.is_empty() {
                    "True"
                } else {
                    pat.status.as_str()
                };
                if conds
                    .into_iter()
                    .flatten()
                    .any(|c| c.type_ == pat.type_ && c.status == want)
                {
                    matched = Some(format!(
                        "Pod {ns}/{name} has condition {} matching {} rule at index {i}",
                        pat.type_, rule.action
                    ));
                    break;
                }
            }
        }
        if let Some(msg) = matched {
            return Some(match rule.action.as_str() {
                "FailJob" => PolicyAction::FailJob(msg),
                "Ignore" => PolicyAction::Ignore,
                // FailIndex needs backoffLimitPerIndex; otherwise it counts.
                _ => PolicyAction::Count,
            });
        }
    }
    None
}

/// Whether a failure counts towards the backoff limit.
fn counts_as_failure(spec: &JobSpec, pod: &Pod) -> bool {
    !matches!(
        match_pod_failure_policy(spec, pod),
        Some(PolicyAction::Ignore)
    )
}

/// Upstream `isPodFailed`.
fn is_pod_failed(spec: &JobSpec, p: &Pod) -> bool {
    if w::phase(p) == "Failed" {
        return true;
    }
    if spec.pod_failure_policy.is_some() || spec.pod_replacement_policy.as_deref() == Some("Failed")
    {
        return false;
    }
    // A deleted pod may never reach Failed (its node is gone): count it.
    w::is_terminating(p) && w::phase(p) != "Succeeded"
}

/// Upstream `pastBackoffLimitOnFailure`: container restarts count as
/// failures when the pods restart in place.
fn past_backoff_limit_on_failure(spec: &JobSpec, pods: &[Arc<Pod>]) -> bool {
    let rp = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref());
    if rp != Some("OnFailure") {
        return false;
    }
    let restarts: i32 = pods
        .iter()
        .filter(|p| matches!(w::phase(p), "Running" | "Pending"))
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .sum();
    let limit = spec.backoff_limit.unwrap_or(6);
    if limit == 0 {
        restarts > 0
    } else {
        restarts >= limit
    }
}

/// Upstream `matchSuccessPolicy`.
fn match_success_policy(spec: &JobSpec, succeeded: &BTreeSet<i32>) -> Option<String> {
    let policy = spec.success_policy.as_ref()?;
    if succeeded.is_empty() {
        return None;
    }
    let completions = spec.completions.unwrap_or(0);
    for (i, rule) in policy.rules.iter().enumerate() {
        if let Some(ix) = &rule.succeeded_indexes {
            let required = parse_indexes(ix, completions);
            if required.is_empty() {
                continue;
            }
            let contained = required.intersection(succeeded).count();
            let ok = match rule.succeeded_count {
                Some(n) => contained >= n.max(0) as usize,
                None => contained == required.len(),
            };
            if ok {
                return Some(format!("Matched rules at index {i}"));
            }
        } else if let Some(n) = rule.succeeded_count
            && succeeded.len() >= n.max(0) as usize
        {
            return Some(format!("Matched rules at index {i}"));
        }
    }
    None
}

/// The order in which active pods are removed: unscheduled, pending, not
/// ready, then the most recently created first (upstream `ActivePods`).
fn removal_order(a: &Arc<Pod>, b: &Arc<Pod>) -> std::cmp::Ordering {
    let key = |p: &Pod| {
        let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
        let phase_rank = match w::phase(p) {
            "Pending" => 0,
            "Unknown" => 1,
            _ => 2,
        };
        (bound, phase_rank, w::is_ready(p))
    };
    key(a)
        .cmp(&key(b))
        .then_with(|| w::creation(&b.metadata).cmp(&w::creation(&a.metadata)))
}

// ---------------------------------------------------------- reconcile

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action> {
    let uid = job.metadata.uid.clone().unwrap_or_default();
    if job
        .spec
        .as_ref()
        .and_then(|s| s.managed_by.as_deref())
        .is_some_and(|m| m != JOB_CONTROLLER_NAME)
    {
        // Another controller owns this Job's status.
        return Ok(Action::await_change());
    }
    ctx.pods.wait_ready().await?;
    // Act only on stores that reflect our own previous writes.
    if !ctx.pods.caught_up(&uid) || !ctx.jobs.caught_up(&uid) {
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    let job = ctx
        .jobs
        .store
        .get(&ObjectRef::from_obj(&*job))
        .unwrap_or(job);
    let ns = job.namespace().unwrap_or_default();
    let Some(spec) = job.spec.clone() else {
        return Ok(Action::await_change());
    };
    let Some(selector) = spec.selector.clone() else {
        return Ok(Action::await_change());
    };
    let candidates = ctx.pods.store.state().into_iter().filter(|p| {
        p.metadata.namespace.as_deref() == Some(ns.as_str())
            && w::controller_of(&p.metadata).is_none_or(|r| r.uid == uid)
    });
    let pods = w::claim_pods(&ctx.client, &*job, &selector, candidates, &ctx.pods, &uid).await;
    let status = job.status.clone().unwrap_or_default();

    if job.metadata.deletion_timestamp.is_some() {
        // The Job is going away: let its pods go too.
        for p in pods.iter().filter(|p| has_finalizer(p)) {
            remove_finalizer(&ctx, p, Some(&uid)).await;
        }
        return Ok(Action::await_change());
    }
    if let Some(done) = is_finished(&status) {
        for p in pods.iter().filter(|p| has_finalizer(p)) {
            remove_finalizer(&ctx, p, Some(&uid)).await;
        }
        ctx.backoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&uid);
        let finished_at = done
            .last_transition_time
            .as_ref()
            .map(|t| t.0)
            .or(status.completion_time.as_ref().map(|t| t.0));
        return ttl_after_finished(&ctx, &job, spec.ttl_seconds_after_finished, finished_at).await;
    }
    sync(&ctx, &job, &spec, status, pods).await
}

/// The TTL-after-finished controller's work for one finished Job.
async fn ttl_after_finished(
    ctx: &Ctx,
    job: &Job,
    ttl: Option<i32>,
    finished_at: Option<Timestamp>,
) -> Result<Action> {
    let (Some(ttl), Some(finished_at)) = (ttl, finished_at) else {
        return Ok(Action::await_change());
    };
    let expire = finished_at + SignedDuration::from_secs(ttl.max(0) as i64);
    let left = w::until(expire);
    if !left.is_zero() {
        return Ok(Action::requeue(left));
    }
    // Re-read: the TTL may have been changed since the cache saw it.
    let ns = job.namespace().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(fresh) = api.get_opt(&job.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let fresh_ttl = fresh
        .spec
        .as_ref()
        .and_then(|s| s.ttl_seconds_after_finished);
    let fresh_status = fresh.status.clone().unwrap_or_default();
    if fresh.metadata.uid != job.metadata.uid
        || fresh_ttl.is_none()
        || is_finished(&fresh_status).is_none()
        || fresh.metadata.deletion_timestamp.is_some()
    {
        return Ok(Action::await_change());
    }
    if fresh_ttl != Some(ttl) {
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    let dp = DeleteParams::foreground().preconditions(Preconditions {
        uid: fresh.metadata.uid.clone(),
        resource_version: None,
    });
    match api.delete(&fresh.name_any(), &dp).await {
        Ok(_) => {
            tracing::info!(job = %fresh.name_any(), namespace = %ns, "deleted finished Job after its TTL")
        }
        Err(e) if w::is_status(&e, 404) || w::is_status(&e, 409) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

/// What a sync decided to finish the Job with.
struct Finish {
    success: bool,
    reason: String,
    message: String,
}

async fn sync(
    ctx: &Ctx,
    job: &Job,
    spec: &JobSpec,
    original: JobStatus,
    pods: Vec<Arc<Pod>>,
) -> Result<Action> {
    let now = w::now();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let ns = job.namespace().unwrap_or_default();
    let job_ref = w::object_ref(job);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut status = original.clone();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let suspended = spec.suspend == Some(true);
    // Upstream `onlyReplaceFailedPods`: terminating pods are not replaced yet.
    let only_failed_replaced = spec.pod_replacement_policy.as_deref() == Some("Failed")
        || spec.pod_failure_policy.is_some();
    let mut requeue: Option<Duration> = None;
    let mut want_requeue = |d: Duration| {
        requeue = Some(requeue.map_or(d, |r: Duration| r.min(d)));
    };

    if status.start_time.is_none() && !suspended {
        status.start_time = Some(w::time(now));
    }
    let uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut uncounted_s: Vec<String> = uncounted.succeeded.unwrap_or_default();
    let mut uncounted_f: Vec<String> = uncounted.failed.unwrap_or_default();
    let limit = completions.unwrap_or(i32::MAX);
    let mut succeeded_indexes = status
        .completed_indexes
        .as_deref()
        .map(|s| parse_indexes(s, limit))
        .unwrap_or_default();

    // Newly finished pods: carrying the finalizer, not yet recorded.
    let new_succeeded: Vec<&Pod> = pods
        .iter()
        .map(|p| &**p)
        .filter(|p| has_finalizer(p) && w::phase(p) == "Succeeded")
        .filter(|p| {
            let uid = p.metadata.uid.clone().unwrap_or_default();
            if indexed {
                completion_index(p).is_some_and(|i| i < limit && !succeeded_indexes.contains(&i))
            } else {
                !uncounted_s.contains(&uid)
            }
        })
        .collect();
    let new_failed: Vec<&Pod> = pods
        .iter()
        .map(|p| &**p)
        .filter(|p| has_finalizer(p) && w::phase(p) != "Succeeded" && is_pod_failed(spec, p))
        .filter(|p| !uncounted_f.contains(&p.metadata.uid.clone().unwrap_or_default()))
        .collect();
    let new_failed_counted = new_failed
        .iter()
        .filter(|p| counts_as_failure(spec, p))
        .count() as i32;
    let succeeded_count = if indexed {
        let mut all = succeeded_indexes.clone();
        all.extend(new_succeeded.iter().filter_map(|p| completion_index(p)));
        all.len() as i32
    } else {
        original.succeeded.unwrap_or(0) + uncounted_s.len() as i32 + new_succeeded.len() as i32
    };
    let failed_count = original.failed.unwrap_or(0) + uncounted_f.len() as i32 + new_failed_counted;
    let backoff = ctx
        .backoff
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&uid)
        .copied()
        .unwrap_or_default()
        .with(
            &new_succeeded,
            &new_failed
                .iter()
                .copied()
                .filter(|p| counts_as_failure(spec, p))
                .collect::<Vec<_>>(),
        );

    let mut active_pods: Vec<Arc<Pod>> = pods.iter().filter(|p| w::is_active(p)).cloned().collect();
    let mut terminating = pods
        .iter()
        .filter(|p| w::is_terminating(p) && !w::is_terminal(p))
        .count() as i32;

    // Decide whether the Job is finishing.
    let mut finish: Option<Finish> = None;
    if let Some(c) = condition(&status, "FailureTarget") {
        finish = Some(Finish {
            success: false,
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
        });
    } else if let Some(c) = condition(&status, "SuccessCriteriaMet") {
        finish = Some(Finish {
            success: true,
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
        });
    } else if let Some(msg) = pods.iter().find_map(|p| {
        if !is_pod_failed(spec, p) {
            return None;
        }
        match match_pod_failure_policy(spec, p) {
            Some(PolicyAction::FailJob(m)) => Some(m),
            _ => None,
        }
    }) {
        finish = Some(Finish {
            success: false,
            reason: "PodFailurePolicy".into(),
            message: msg,
        });
    }
    if finish.is_none() {
        let past_deadline = match (spec.active_deadline_seconds, &status.start_time) {
            (Some(ads), Some(start)) if !suspended => {
                let deadline = start.0 + SignedDuration::from_secs(ads);
                if now >= deadline {
                    true
                } else {
                    want_requeue(w::until(deadline));
                    false
                }
            }
            _ => false,
        };
        if failed_count > backoff_limit || past_backoff_limit_on_failure(spec, &pods) {
            finish = Some(Finish {
                success: false,
                reason: "BackoffLimitExceeded".into(),
                message: "Job has reached the specified backoff limit".into(),
            });
        } else if past_deadline {
            finish = Some(Finish {
                success: false,
                reason: "DeadlineExceeded".into(),
                message: "Job was active longer than specified deadline".into(),
            });
        }
    }
    if finish.is_none() && indexed {
        let mut all = succeeded_indexes.clone();
        all.extend(new_succeeded.iter().filter_map(|p| completion_index(p)));
        if let Some(msg) = match_success_policy(spec, &all) {
            finish = Some(Finish {
                success: true,
                reason: "SuccessPolicy".into(),
                message: msg,
            });
        }
    }

    let mut suspend_changed = false;
    let mut created = 0usize;
    if finish.is_some() {
        // Terminate whatever still runs; the terminal condition waits for them.
        for p in &active_pods {
            match w::delete_pod(&pods_api, &p.name_any(), p.metadata.uid.as_deref()).await? {
                Some(d) => {
                    ctx.pods.note_write(&uid, &d.metadata);
                    terminating += 1;
                }
                None => ctx.pods.note_delete(&uid, &p.metadata),
            }
            ctx.events
                .normal(
                    &job_ref,
                    Some(w::object_ref(&**p)),
                    "SuccessfulDelete",
                    "DeletePod",
                    format!("Deleted pod: {}", p.name_any()),
                )
                .await;
        }
        active_pods.clear();
    } else {
        // manageJob
        let mut active = active_pods.len() as i32;
        let mut to_delete: Vec<Arc<Pod>> = Vec::new();
        if suspended {
            to_delete = active_pods.clone();
        } else {
            if indexed {
                // Duplicate, out-of-range and already succeeded indexes go.
                let mut seen: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
                let mut sorted = active_pods.clone();
                sorted.sort_by(|a, b| removal_order(b, a));
                for p in sorted {
                    match completion_index(&p) {
                        Some(i)
                            if i < limit
                                && !succeeded_indexes.contains(&i)
                                && !new_succeeded
                                    .iter()
                                    .any(|s| completion_index(s) == Some(i))
                                && !seen.contains_key(&i) =>
                        {
                            seen.insert(i, p);
                        }
                        _ => to_delete.push(p),
                    }
                }
                active -= to_delete.len() as i32;
            }
            let want_active = match completions {
                // Work-queue Jobs start nothing new once one pod succeeded.
                None if succeeded_count > 0 => active,
                None => parallelism,
                Some(c) => (c - succeeded_count).min(parallelism).max(0),
            };
            if active > want_active {
                let mut rest: Vec<Arc<Pod>> = active_pods
                    .iter()
                    .filter(|p| !to_delete.iter().any(|d| d.metadata.uid == p.metadata.uid))
                    .cloned()
                    .collect();
                if indexed {
                    // Remove the highest indexes first.
                    rest.sort_by_key(|p| {
                        std::cmp::Reverse(completion_index(p).unwrap_or(i32::MAX))
                    });
                } else {
                    rest.sort_by(removal_order);
                }
                to_delete.extend(rest.into_iter().take((active - want_active) as usize));
            } else if active < want_active && to_delete.is_empty() {
                // One sync either deletes or creates; deletion goes first.
                let remaining = backoff.remaining(now);
                if !remaining.is_zero() {
                    want_requeue(remaining);
                } else {
                    let mut diff = (want_active - active) as usize;
                    if only_failed_replaced {
                        diff = diff.saturating_sub(terminating as usize);
                    }
                    let diff = diff.min(MAX_PODS_PER_SYNC);
                    let indexes: Vec<Option<i32>> = if indexed {
                        let busy: BTreeSet<i32> = pods
                            .iter()
                            .filter(|p| {
                                w::is_active(p)
                                    || (only_failed_replaced
                                        && w::is_terminating(p)
                                        && !w::is_terminal(p))
                            })
                            .filter_map(|p| completion_index(p))
                            .collect();
                        let done: BTreeSet<i32> = succeeded_indexes
                            .iter()
                            .copied()
                            .chain(new_succeeded.iter().filter_map(|p| completion_index(p)))
                            .collect();
                        (0..limit)
                            .filter(|i| !busy.contains(i) && !done.contains(i))
                            .take(diff)
                            .map(Some)
                            .collect()
                    } else {
                        vec![None; diff]
                    };
                    for ix in indexes {
                        let pod = new_pod(job, spec, ix);
                        match pods_api.create(&PostParams::default(), &pod).await {
                            Ok(p) => {
                                ctx.pods.note_write(&uid, &p.metadata);
                                created += 1;
                                ctx.events
                                    .normal(
                                        &job_ref,
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
                                        &job_ref,
                                        None,
                                        "FailedCreate",
                                        "CreatePod",
                                        format!("Error creating: {e}"),
                                    )
                                    .await;
                                if created == 0 {
                                    return Err(e.into());
                                }
                                break;
                            }
                        }
                    }
                }
            }
        }
        for p in &to_delete {
            // Upstream `deleteJobPods`: the finalizer goes first, so that a
            // pod removed by suspension or scale-down is not a failure.
            if has_finalizer(p) && !remove_finalizer(ctx, p, Some(&uid)).await {
                continue;
            }
            match w::delete_pod(&pods_api, &p.name_any(), p.metadata.uid.as_deref()).await? {
                Some(d) => {
                    ctx.pods.note_write(&uid, &d.metadata);
                    terminating += 1;
                }
                None => ctx.pods.note_delete(&uid, &p.metadata),
            }
            ctx.events
                .normal(
                    &job_ref,
                    Some(w::object_ref(&**p)),
                    "SuccessfulDelete",
                    "DeletePod",
                    format!("Deleted pod: {}", p.name_any()),
                )
                .await;
        }
        active_pods.retain(|p| !to_delete.iter().any(|d| d.metadata.uid == p.metadata.uid));
        let active_now = active_pods.len() as i32 + created as i32;

        let complete = match completions {
            None => succeeded_count > 0 && active_now == 0,
            Some(c) => succeeded_count >= c && active_now == 0,
        };
        if complete {
            finish = Some(Finish {
                success: true,
                reason: "CompletionsReached".into(),
                message: "Reached expected number of succeeded pods".into(),
            });
        } else if suspended {
            suspend_changed = ensure_condition(
                &mut status,
                "Suspended",
                "True",
                "JobSuspended",
                "Job suspended",
                now,
            );
        } else if ensure_condition(
            &mut status,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
            now,
        ) {
            suspend_changed = true;
            // A resumed Job's active deadline counts from the resumption.
            status.start_time = Some(w::time(now));
        }
    }

    // trackJobStatusAndRemoveFinalizers: record, then release, then count.
    let failing = finish.as_ref().is_some_and(|f| !f.success);
    let mut to_release: Vec<Arc<Pod>> = Vec::new();
    for p in &pods {
        if !has_finalizer(p) {
            continue;
        }
        if uncounted_s.len() + uncounted_f.len() >= MAX_UNCOUNTED {
            break;
        }
        let considered_failed = is_pod_failed(spec, p);
        let can_release = finish.is_some() || w::phase(p) == "Succeeded" || considered_failed;
        if !can_release {
            continue;
        }
        to_release.push(p.clone());
        let pod_uid = p.metadata.uid.clone().unwrap_or_default();
        if w::phase(p) == "Succeeded" && !uncounted_f.contains(&pod_uid) {
            if indexed {
                if let Some(i) = completion_index(p).filter(|i| *i < limit) {
                    succeeded_indexes.insert(i);
                }
            } else if !uncounted_s.contains(&pod_uid) {
                uncounted_s.push(pod_uid);
            }
        } else if (considered_failed || failing)
            && !uncounted_f.contains(&pod_uid)
            && (!indexed || completion_index(p).is_some_and(|i| i < limit))
            && counts_as_failure(spec, p)
        {
            uncounted_f.push(pod_uid);
        }
    }
    let ready = active_pods.iter().filter(|p| w::is_ready(p)).count() as i32;
    let active_count = active_pods.len() as i32 + created as i32;
    status.active = (active_count > 0).then_some(active_count);
    status.ready = Some(ready);
    status.terminating = Some(terminating);
    if indexed {
        let s = format_indexes(&succeeded_indexes);
        status.completed_indexes = Some(s);
        status.succeeded =
            (!succeeded_indexes.is_empty()).then_some(succeeded_indexes.len() as i32);
    }
    set_uncounted(&mut status, &uncounted_s, &uncounted_f);
    if let Some(f) = &finish {
        let interim = if f.success {
            "SuccessCriteriaMet"
        } else {
            "FailureTarget"
        };
        if condition(&status, interim).is_none() {
            ensure_condition(&mut status, interim, "True", &f.reason, &f.message, now);
        }
    }

    // Step 1: persist what is about to be counted before releasing pods.
    let mut current = job.clone();
    if status != original && !to_release.is_empty() {
        current = write_status(ctx, &current, &status).await?;
    }
    // Step 2: release the pods.
    let mut released: BTreeSet<String> = BTreeSet::new();
    for p in &to_release {
        if remove_finalizer(ctx, p, Some(&uid)).await {
            released.insert(p.metadata.uid.clone().unwrap_or_default());
        }
    }
    // Step 3: move released (or vanished) pods into the counters.
    let still_tracked: BTreeSet<String> = pods
        .iter()
        .filter(|p| has_finalizer(p))
        .filter_map(|p| p.metadata.uid.clone())
        .filter(|u| !released.contains(u))
        .collect();
    let before_s = uncounted_s.len();
    uncounted_s.retain(|u| still_tracked.contains(u));
    let before_f = uncounted_f.len();
    uncounted_f.retain(|u| still_tracked.contains(u));
    if !indexed {
        let s = status.succeeded.unwrap_or(0) + (before_s - uncounted_s.len()) as i32;
        status.succeeded = (s > 0).then_some(s);
    }
    let f = status.failed.unwrap_or(0) + (before_f - uncounted_f.len()) as i32;
    status.failed = (f > 0).then_some(f);
    set_uncounted(&mut status, &uncounted_s, &uncounted_f);

    // enactJobFinished: only once nothing is uncounted or terminating.
    let mut finished_with: Option<JobCondition> = None;
    if let Some(f) = &finish
        && uncounted_s.is_empty()
        && uncounted_f.is_empty()
        && terminating == 0
    {
        let type_ = if f.success { "Complete" } else { "Failed" };
        ensure_condition(&mut status, type_, "True", &f.reason, &f.message, now);
        if f.success {
            status.completion_time = Some(w::time(now));
        }
        finished_with = condition(&status, type_).cloned();
    } else if finish.is_some() {
        // Re-check once the terminating pods are gone.
        want_requeue(Duration::from_secs(1));
    }

    let persisted = current.status.clone().unwrap_or_default();
    if status != persisted {
        write_status(ctx, &current, &status).await?;
    }
    // The status is saved: the backoff record now reflects it.
    ctx.backoff
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(uid.clone(), backoff);
    if suspend_changed {
        if suspended {
            ctx.events
                .normal(
                    &job_ref,
                    None,
                    "Suspended",
                    "Suspend",
                    "Job suspended".into(),
                )
                .await;
        } else {
            ctx.events
                .normal(&job_ref, None, "Resumed", "Resume", "Job resumed".into())
                .await;
        }
    }
    if let Some(c) = finished_with {
        if c.type_ == "Complete" {
            if spec
                .completions
                .is_some_and(|n| status.succeeded.unwrap_or(0) > n)
            {
                ctx.events
                    .warning(
                        &job_ref,
                        None,
                        "TooManySucceededPods",
                        "Complete",
                        "Too many succeeded pods running after completion count reached".into(),
                    )
                    .await;
            }
            ctx.events
                .normal(
                    &job_ref,
                    None,
                    "Completed",
                    "Complete",
                    "Job completed".into(),
                )
                .await;
        } else {
            ctx.events
                .warning(
                    &job_ref,
                    None,
                    c.reason.as_deref().unwrap_or("Failed"),
                    "Fail",
                    c.message.clone().unwrap_or_default(),
                )
                .await;
        }
        if let Some(ttl) = spec.ttl_seconds_after_finished {
            want_requeue(Duration::from_secs(ttl.max(0) as u64));
        }
    }
    Ok(match requeue {
        Some(d) => Action::requeue(d.max(Duration::from_millis(10))),
        None => Action::await_change(),
    })
}

fn set_uncounted(status: &mut JobStatus, s: &[String], f: &[String]) {
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
        succeeded: (!s.is_empty()).then(|| s.to_vec()),
        failed: (!f.is_empty()).then(|| f.to_vec()),
    });
}

/// PUT /status with the resourceVersion we computed from: a concurrent
/// change makes it fail with 409 and the sync runs again.
async fn write_status(ctx: &Ctx, job: &Job, status: &JobStatus) -> Result<Job> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let mut j = job.clone();
    j.status = Some(status.clone());
    j.metadata.managed_fields = None;
    let written = api
        .replace_status(&job.name_any(), &PostParams::default(), &j)
        .await?;
    ctx.jobs.note_write(
        job.metadata.uid.as_deref().unwrap_or_default(),
        &written.metadata,
    );
    Ok(written)
}

/// A pod for the Job from its template (upstream `getPodFromTemplate` plus
/// the Job controller's additions).
fn new_pod(job: &Job, spec: &JobSpec, index: Option<i32>) -> Pod {
    let name = job.name_any();
    let template = &spec.template;
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels.clone().unwrap_or_default();
    let mut annotations = tmeta.annotations.clone().unwrap_or_default();
    let mut finalizers = tmeta.finalizers.clone().unwrap_or_default();
    if !finalizers.iter().any(|f| f == TRACKING_FINALIZER) {
        finalizers.push(TRACKING_FINALIZER.into());
    }
    let mut pod_spec = template.spec.clone().unwrap_or_default();
    let mut generate_name = format!("{name}-");
    if let Some(i) = index {
        annotations.insert(COMPLETION_INDEX.into(), i.to_string());
        labels.insert(COMPLETION_INDEX.into(), i.to_string());
        pod_spec.hostname = Some(format!("{name}-{i}"));
        let suffix = format!("-{i}-");
        let mut prefix = format!("{name}{suffix}");
        // Keep room for the random suffix (upstream `podGenerateNameWithIndex`).
        if prefix.len() > 58 {
            let keep = 58usize.saturating_sub(suffix.len()).min(name.len());
            prefix = format!("{}{suffix}", &name[..keep]);
        }
        generate_name = prefix;
        let env = EnvVar {
            name: COMPLETION_INDEX_ENV.into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                }),
                ..Default::default()
            }),
        };
        for c in pod_spec
            .containers
            .iter_mut()
            .chain(pod_spec.init_containers.iter_mut().flatten())
        {
            let list = c.env.get_or_insert_with(Vec::new);
            if !list.iter().any(|e| e.name == COMPLETION_INDEX_ENV) {
                list.push(env.clone());
            }
        }
    }
    Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.namespace(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: Some(finalizers),
            owner_references: Some(vec![w::controller_ref(job)]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_sets_round_trip() {
        let s = parse_indexes("0,2-4,7", 10);
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), vec![0, 2, 3, 4, 7]);
        assert_eq!(format_indexes(&s), "0,2-4,7");
        assert_eq!(format_indexes(&parse_indexes("5-9", 7)), "5-6");
        assert!(parse_indexes("x,-", 3).is_empty());
    }

    #[test]
    fn backoff_doubles_and_resets() {
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        let p = |secs: i64, phase: &str| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "p", "creationTimestamp": "2020-01-01T00:00:00Z"},
                "status": {"phase": phase, "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 1, "finishedAt": (t0 + SignedDuration::from_secs(secs)).to_string()}}}]}
            }))
            .unwrap()
        };
        let f1 = p(0, "Failed");
        let r = BackoffRecord::default().with(&[], &[&f1]);
        assert_eq!(r.remaining(t0).as_secs(), 10);
        let f2 = p(5, "Failed");
        let r = r.with(&[], &[&f2]);
        assert_eq!(r.remaining(t0 + SignedDuration::from_secs(5)).as_secs(), 20);
        let s = p(6, "Succeeded");
        let r = r.with(&[&s], &[]);
        assert!(r.remaining(t0 + SignedDuration::from_secs(6)).is_zero());
    }
}

//! The HorizontalPodAutoscaler controller (upstream
//! `pkg/controller/podautoscaler`), autoscaling/v2 on resource metrics:
//! every sync period (`horizontal-pod-autoscaler-sync-period`, 15 s) each
//! HPA reads its target's `/scale`, the pods its selector picks and their
//! PodMetrics from `metrics.k8s.io`, and proposes
//! `ceil(current × usage / target)` per metric (CPU or memory, `Resource`
//! or `ContainerResource`, `Utilization` of the requests or
//! `AverageValue`), within the tolerance (0.1), treating unready pods and
//! pods without metrics conservatively as upstream's replica calculator.
//! The largest proposal is stabilised (downscale window
//! `horizontal-pod-autoscaler-downscale-stabilization`, 5 min, or
//! `behavior`'s windows and rate policies), clamped to min/max, written
//! through the scale subresource, and reported in status (conditions
//! AbleToScale / ScalingActive / ScalingLimited, currentMetrics) and
//! Events worded as upstream's.
//!
//! Pods/Object/External metrics need a custom metrics API, which skiff does
//! not serve: such metrics fail as they would without an adapter.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::autoscaling::v2::{
    ContainerResourceMetricStatus, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus, MetricSpec, MetricStatus,
    MetricValueStatus, ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::podcontrol::{self, error_message};
use crate::api::metrics::decimal_quantity;

const CONTROLLER: &str = "horizontal-pod-autoscaler";
const DEFAULT_SYNC_PERIOD: Duration = Duration::from_secs(15);
const DEFAULT_DOWNSCALE_WINDOW: Duration = Duration::from_secs(300);
const DEFAULT_TOLERANCE: f64 = 0.1;
const DEFAULT_CPU_INITIALIZATION: Duration = Duration::from_secs(300);
const DEFAULT_INITIAL_READINESS_DELAY: Duration = Duration::from_secs(30);
/// Upstream's default when an HPA names no metric.
const DEFAULT_CPU_UTILIZATION: i32 = 80;

// Condition types.
const ABLE_TO_SCALE: &str = "AbleToScale";
const SCALING_ACTIVE: &str = "ScalingActive";
const SCALING_LIMITED: &str = "ScalingLimited";

/// Controller-wide settings, from `--kube-controller-manager-arg`.
#[derive(Clone, Debug)]
struct Settings {
    sync_period: Duration,
    downscale_window: Duration,
    tolerance: f64,
    cpu_initialization: Duration,
    initial_readiness_delay: Duration,
}

impl Settings {
    fn from_args() -> Settings {
        let d = |k: &str, def| super::arg_duration(&format!("horizontal-pod-autoscaler-{k}"), def);
        Settings {
            sync_period: d("sync-period", DEFAULT_SYNC_PERIOD).max(Duration::from_millis(100)),
            downscale_window: d("downscale-stabilization", DEFAULT_DOWNSCALE_WINDOW),
            tolerance: super::arg("horizontal-pod-autoscaler-tolerance")
                .and_then(|v| v.parse().ok())
                .unwrap_or(DEFAULT_TOLERANCE),
            cpu_initialization: d("cpu-initialization-period", DEFAULT_CPU_INITIALIZATION),
            initial_readiness_delay: d("initial-readiness-delay", DEFAULT_INITIAL_READINESS_DELAY),
        }
    }
}

// ====================================================== replica calculation

/// Tolerances around a usage ratio of 1 within which nothing changes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerances {
    pub down: f64,
    pub up: f64,
}

impl Tolerances {
    fn within(&self, ratio: f64) -> bool {
        (1.0 - self.down) <= ratio && ratio <= (1.0 + self.up)
    }
}

/// What the calculator needs of a pod.
#[derive(Clone, Debug, Default)]
pub struct PodInfo {
    pub name: String,
    pub phase: String,
    pub deleting: bool,
    /// Ready condition: (status is True, lastTransitionTime).
    pub ready: Option<(bool, Timestamp)>,
    pub start: Option<Timestamp>,
}

/// One pod's usage (milli-units), as `metricsclient.PodMetric`.
#[derive(Clone, Copy, Debug)]
pub struct PodMetric {
    pub value: i64,
    pub timestamp: Timestamp,
    pub window: Duration,
}

#[derive(Debug, Default)]
struct Groups {
    ready: usize,
    unready: HashSet<String>,
    missing: HashSet<String>,
    ignored: HashSet<String>,
}

/// Upstream's `groupPods`: deleted and failed pods are ignored, pending
/// ones unready, pods without metrics missing; for CPU, a pod that is not
/// Ready, or whose sample predates a window after becoming Ready while it
/// is still initialising, is unready.
fn group_pods(
    pods: &[PodInfo],
    metrics: &HashMap<String, PodMetric>,
    cpu: bool,
    now: Timestamp,
    s: &Settings,
) -> Groups {
    let mut g = Groups::default();
    let add = |t: Timestamp, d: Duration| t.checked_add(d).unwrap_or(t);
    for p in pods {
        if p.deleting || p.phase == "Failed" {
            g.ignored.insert(p.name.clone());
            continue;
        }
        if p.phase == "Pending" {
            g.unready.insert(p.name.clone());
            continue;
        }
        let Some(m) = metrics.get(&p.name) else {
            g.missing.insert(p.name.clone());
            continue;
        };
        if cpu {
            let unready = match (p.ready, p.start) {
                (Some((status, transition)), Some(start)) => {
                    if add(start, s.cpu_initialization) > now {
                        !status || m.timestamp < add(transition, m.window)
                    } else {
                        !status && add(start, s.initial_readiness_delay) > transition
                    }
                }
                _ => true,
            };
            if unready {
                g.unready.insert(p.name.clone());
                continue;
            }
        }
        g.ready += 1;
    }
    g
}

/// `GetResourceUtilizationRatio`: (ratio to target, utilization %, average
/// raw usage) over pods that have both a metric and a request.
fn utilization_ratio(
    metrics: &HashMap<String, PodMetric>,
    requests: &HashMap<String, i64>,
    target: i32,
) -> Result<(f64, i32, i64), String> {
    let (mut total, mut requested, mut n) = (0i64, 0i64, 0i64);
    for (pod, m) in metrics {
        if let Some(r) = requests.get(pod) {
            total += m.value;
            requested += r;
            n += 1;
        }
    }
    if requested == 0 {
        return Err("no metrics returned matched known pods".into());
    }
    let utilization = (total * 100 / requested) as i32;
    Ok((
        f64::from(utilization) / f64::from(target),
        utilization,
        total / n,
    ))
}

/// `GetMetricUsageRatio`: (ratio to target, average usage).
fn usage_ratio(metrics: &HashMap<String, PodMetric>, target: i64) -> (f64, i64) {
    let total: i64 = metrics.values().map(|m| m.value).sum();
    let avg = total / (metrics.len().max(1) as i64);
    (avg as f64 / target as f64, avg)
}

/// The target a metric is compared with.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// Percent of the pods' requests.
    Utilization(i32),
    /// Milli-units per pod.
    AverageValue(i64),
}

/// Upstream's `GetResourceReplicas` / `GetRawResourceReplicas` after the
/// metrics were fetched: the proposed replica count, the utilization (%,
/// for Utilization targets) and the average raw usage (milli-units).
#[allow(clippy::too_many_arguments)]
fn replicas_for(
    current: i32,
    target: Target,
    tol: Tolerances,
    mut metrics: HashMap<String, PodMetric>,
    pods: &[PodInfo],
    requests: Option<&HashMap<String, i64>>,
    cpu: bool,
    now: Timestamp,
    s: &Settings,
) -> Result<(i32, Option<i32>, i64), String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let g = group_pods(pods, &metrics, cpu, now, s);
    metrics.retain(|p, _| !g.ignored.contains(p) && !g.unready.contains(p));
    if metrics.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let ratio_of =
        |metrics: &HashMap<String, PodMetric>| -> Result<(f64, Option<i32>, i64), String> {
            match target {
                Target::Utilization(t) => {
                    let (r, u, raw) =
                        utilization_ratio(metrics, requests.unwrap_or(&HashMap::new()), t)?;
                    Ok((r, Some(u), raw))
                }
                Target::AverageValue(t) => {
                    let (r, avg) = usage_ratio(metrics, t);
                    Ok((r, None, avg))
                }
            }
        };
    let (ratio, utilization, raw) = ratio_of(&metrics)?;
    let scale_up_with_unready = !g.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && g.missing.is_empty() {
        if tol.within(ratio) {
            return Ok((current, utilization, raw));
        }
        return Ok(((ratio * g.ready as f64).ceil() as i32, utilization, raw));
    }
    let placeholder = |m: i64| PodMetric {
        value: m,
        timestamp: now,
        window: Duration::ZERO,
    };
    for p in &g.missing {
        // Scale-down: a pod without metrics counts as using its whole
        // request (or the target, when higher); scale-up: as using nothing.
        let v = match target {
            Target::Utilization(t) if ratio < 1.0 => {
                let req = requests.and_then(|r| r.get(p)).copied().unwrap_or(0);
                Some(req * i64::from(t.max(100)) / 100)
            }
            Target::Utilization(_) if ratio > 1.0 => Some(0),
            Target::Utilization(_) => None,
            Target::AverageValue(t) if ratio < 1.0 => Some(t),
            Target::AverageValue(_) => Some(0),
        };
        if let Some(v) = v {
            metrics.insert(p.clone(), placeholder(v));
        }
    }
    if scale_up_with_unready {
        for p in &g.unready {
            metrics.insert(p.clone(), placeholder(0));
        }
    }
    let (new_ratio, _, _) = ratio_of(&metrics)?;
    if tol.within(new_ratio) || (ratio < 1.0 && new_ratio > 1.0) || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok((current, utilization, raw));
    }
    let proposed = (new_ratio * metrics.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && proposed > current) || (new_ratio > 1.0 && proposed < current) {
        return Ok((current, utilization, raw));
    }
    Ok((proposed, utilization, raw))
}

// ===================================================== stabilisation, rates

/// A scaling direction's rules with upstream's defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    pub window: Duration,
    /// "Max", "Min" or "Disabled".
    pub select: String,
    /// (type "Pods"|"Percent", value, period seconds)
    pub policies: Vec<(String, i32, i32)>,
}

impl Rules {
    fn from(r: Option<&HPAScalingRules>, up: bool, downscale_window: Duration) -> Rules {
        let default_policies = if up {
            vec![
                ("Pods".to_string(), 4, 15),
                ("Percent".to_string(), 100, 15),
            ]
        } else {
            vec![("Percent".to_string(), 100, 15)]
        };
        let window = r
            .and_then(|r| r.stabilization_window_seconds)
            .map(|s| Duration::from_secs(s.max(0) as u64))
            .unwrap_or(if up { Duration::ZERO } else { downscale_window });
        Rules {
            window,
            select: r
                .and_then(|r| r.select_policy.clone())
                .unwrap_or_else(|| "Max".into()),
            policies: r
                .and_then(|r| r.policies.as_ref())
                .filter(|p| !p.is_empty())
                .map(|ps| {
                    ps.iter()
                        .map(|p| (p.type_.clone(), p.value, p.period_seconds))
                        .collect()
                })
                .unwrap_or(default_policies),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct ScaleEvent {
    at: Instant,
    change: i32,
}

/// What upstream keeps per HPA in the controller (not in status).
#[derive(Default, Debug)]
pub struct Memory {
    recommendations: Vec<(Instant, i32)>,
    scale_up: Vec<ScaleEvent>,
    scale_down: Vec<ScaleEvent>,
}

/// Without `behavior`: the highest recommendation within the downscale
/// window (`stabilizeRecommendation`); records this one.
fn stabilize(mem: &mut Memory, now: Instant, window: Duration, desired: i32) -> i32 {
    let mut max = desired;
    let mut old = None;
    for (i, (at, r)) in mem.recommendations.iter().enumerate() {
        if now.saturating_duration_since(*at) > window {
            old = Some(i);
        } else if *r > max {
            max = *r;
        }
    }
    match old {
        Some(i) => mem.recommendations[i] = (now, desired),
        None => mem.recommendations.push((now, desired)),
    }
    max
}

/// `convertDesiredReplicasWithRules`: min/max, and no more than
/// max(2×current, 4) in one step.
fn clamp_with_rules(
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
) -> (i32, &'static str, &'static str) {
    let scale_up_limit = (2 * current).max(4);
    if desired < min {
        return (min, TOO_FEW.0, TOO_FEW.1);
    }
    let (maximum, cond, msg) = upper_bound(scale_up_limit, max);
    if desired > maximum {
        return (maximum, cond, msg);
    }
    (desired, WITHIN_RANGE.0, WITHIN_RANGE.1)
}

/// The `ScalingLimited` reasons and messages, as upstream words them.
const SCALE_UP_LIMIT: (&str, &str) = (
    "ScaleUpLimit",
    "the desired replica count is increasing faster than the maximum scale rate",
);
const TOO_MANY: (&str, &str) = (
    "TooManyReplicas",
    "the desired replica count is more than the maximum replica count",
);
const SCALE_DOWN_LIMIT: (&str, &str) = (
    "ScaleDownLimit",
    "the desired replica count is decreasing faster than the maximum scale rate",
);
const TOO_FEW: (&str, &str) = (
    "TooFewReplicas",
    "the desired replica count is less than the minimum replica count",
);
const WITHIN_RANGE: (&str, &str) = (
    "DesiredWithinRange",
    "the desired count is within the acceptable range",
);

/// The tighter of a rate limit and `maxReplicas` upward, with its reason.
fn upper_bound(rate_limit: i32, max: i32) -> (i32, &'static str, &'static str) {
    let (bound, (reason, msg)) = if max > rate_limit {
        (rate_limit, SCALE_UP_LIMIT)
    } else {
        (max, TOO_MANY)
    };
    (bound, reason, msg)
}

/// The tighter of a rate limit and `minReplicas` downward, with its reason.
fn lower_bound(rate_limit: i32, min: i32) -> (i32, &'static str, &'static str) {
    let (bound, (reason, msg)) = if min < rate_limit {
        (rate_limit, SCALE_DOWN_LIMIT)
    } else {
        (min, TOO_FEW)
    };
    (bound, reason, msg)
}

/// `stabilizeRecommendationWithBehaviors`: the recommendation kept within
/// the lowest recent one (scale-up window) and the highest recent one
/// (scale-down window).
fn stabilize_with_behaviors(
    mem: &mut Memory,
    now: Instant,
    current: i32,
    desired: i32,
    up: &Rules,
    down: &Rules,
) -> (i32, &'static str, &'static str) {
    let (mut up_rec, mut down_rec) = (desired, desired);
    let mut old = None;
    for (i, (at, r)) in mem.recommendations.iter().enumerate() {
        let age = now.saturating_duration_since(*at);
        if age < up.window {
            up_rec = up_rec.min(*r);
        }
        if age < down.window {
            down_rec = down_rec.max(*r);
        }
        if age > up.window && age > down.window {
            old = Some(i);
        }
    }
    let recommendation = current.max(up_rec).min(down_rec);
    match old {
        Some(i) => mem.recommendations[i] = (now, desired),
        None => mem.recommendations.push((now, desired)),
    }
    if desired >= current {
        (
            recommendation,
            "ScaleUpStabilized",
            "recent recommendations were lower than current one, applying the lowest recent recommendation",
        )
    } else {
        (
            recommendation,
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest recent recommendation",
        )
    }
}

fn change_in_period(events: &[ScaleEvent], period_s: i32, now: Instant) -> i32 {
    let period = Duration::from_secs(period_s.max(0) as u64);
    events
        .iter()
        .filter(|e| now.saturating_duration_since(e.at) < period)
        .map(|e| e.change)
        .sum()
}

/// `calculateScaleUpLimitWithScalingRules` and its scale-down twin.
fn rate_limit(mem: &Memory, now: Instant, current: i32, rules: &Rules, up: bool) -> i32 {
    if rules.select == "Disabled" {
        return current;
    }
    // For scaling up, Min picks the smallest change (lowest limit); for
    // scaling down, the smallest change is the highest limit.
    let pick_low = (rules.select == "Min") == up;
    let mut result: Option<i32> = None;
    for (kind, value, period) in &rules.policies {
        let added = change_in_period(&mem.scale_up, *period, now);
        let removed = change_in_period(&mem.scale_down, *period, now);
        let start = current - added + removed;
        let proposed = match (kind.as_str(), up) {
            ("Pods", true) => start + value,
            ("Pods", false) => start - value,
            (_, true) => (f64::from(start) * (1.0 + f64::from(*value) / 100.0)).ceil() as i32,
            (_, false) => (f64::from(start) * (1.0 - f64::from(*value) / 100.0)) as i32,
        };
        result = Some(match result {
            None => proposed,
            Some(r) if pick_low => r.min(proposed),
            Some(r) => r.max(proposed),
        });
    }
    result.unwrap_or(current)
}

/// `convertDesiredReplicasWithBehaviorRate`.
#[allow(clippy::too_many_arguments)]
fn clamp_with_behaviors(
    mem: &Memory,
    now: Instant,
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
    up: &Rules,
    down: &Rules,
) -> (i32, &'static str, &'static str) {
    if desired > current {
        let limit = rate_limit(mem, now, current, up, true).max(current);
        let (maximum, reason, msg) = upper_bound(limit, max);
        if desired > maximum {
            return (maximum, reason, msg);
        }
    } else if desired < current {
        let limit = rate_limit(mem, now, current, down, false).min(current);
        let (minimum, reason, msg) = lower_bound(limit, min);
        if desired < minimum {
            return (minimum, reason, msg);
        }
    }
    (desired, WITHIN_RANGE.0, WITHIN_RANGE.1)
}

/// Records a rescale for the rate policies (only kept with `behavior`).
fn store_scale_event(mem: &mut Memory, now: Instant, from: i32, to: i32, longest_period: i32) {
    let keep = Duration::from_secs(longest_period.max(0) as u64);
    let events = if to > from {
        &mut mem.scale_up
    } else {
        &mut mem.scale_down
    };
    events.retain(|e| now.saturating_duration_since(e.at) <= keep);
    events.push(ScaleEvent {
        at: now,
        change: (to - from).abs(),
    });
}

// ============================================================ conditions

fn set_condition(
    conds: &mut Vec<HorizontalPodAutoscalerCondition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
) {
    let status = if status { "True" } else { "False" };
    let i = match conds.iter().position(|c| c.type_ == type_) {
        Some(i) => i,
        None => {
            conds.push(HorizontalPodAutoscalerCondition {
                type_: type_.into(),
                ..Default::default()
            });
            conds.len() - 1
        }
    };
    let c = &mut conds[i];
    if c.status != status {
        c.last_transition_time = Some(Time(Timestamp::now()));
    }
    c.status = status.into();
    c.reason = Some(reason.into());
    c.message = Some(message);
}

// ============================================================ controller

struct Ctl {
    client: Client,
    settings: Settings,
    memory: Mutex<HashMap<String, Memory>>,
    events: podcontrol::Events,
    /// (apiVersion, kind) of scale targets → their REST resource.
    mappings: tokio::sync::Mutex<HashMap<(String, String), ApiResource>>,
}

/// Runs the HPA controller until cancelled.
pub async fn run(client: Client) {
    let settings = Settings::from_args();
    let (store, writer) = reflector::store::<HorizontalPodAutoscaler>();
    let wake = Arc::new(Notify::new());
    let woken = wake.clone();
    // Spec changes (a new generation) are acted on at once, not at the next
    // period; our own status writes are not.
    let mut generations: HashMap<String, i64> = HashMap::new();
    let informer = watcher(
        Api::<HorizontalPodAutoscaler>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .for_each(move |ev| {
        if let Ok(watcher::Event::Apply(h)) = &ev {
            let key = key_of(h);
            let g = h.metadata.generation.unwrap_or(0);
            if generations.insert(key, g) != Some(g) {
                woken.notify_one();
            }
        }
        async {}
    });
    let ctl = Arc::new(Ctl {
        events: podcontrol::Events::new(client.clone(), CONTROLLER),
        client,
        settings,
        memory: Mutex::new(HashMap::new()),
        mappings: Default::default(),
    });
    tokio::join!(informer, ctl.sync_loop(store, wake));
}

fn key_of(h: &HorizontalPodAutoscaler) -> String {
    format!("{}/{}", h.namespace().unwrap_or_default(), h.name_any())
}

impl Ctl {
    async fn sync_loop(self: Arc<Self>, store: Store<HorizontalPodAutoscaler>, wake: Arc<Notify>) {
        if store.wait_until_ready().await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval(self.settings.sync_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = wake.notified() => {}
            }
            let hpas = store.state();
            let live: HashSet<String> = hpas.iter().map(|h| key_of(h)).collect();
            self.memory.lock().unwrap().retain(|k, _| live.contains(k));
            let work = hpas.into_iter().map(|h| {
                let ctl = self.clone();
                async move {
                    if let Err(e) = ctl.reconcile(&h).await {
                        tracing::debug!(controller = CONTROLLER, hpa = %key_of(&h), "{e}");
                    }
                }
            });
            futures::stream::iter(work)
                .buffer_unordered(8)
                .collect::<Vec<()>>()
                .await;
        }
    }

    fn event(&self, hpa: &HorizontalPodAutoscaler, warning: bool, reason: &str, note: String) {
        let t = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        self.events
            .publish(hpa.object_ref(&()), t, reason, reason, note);
    }

    /// The REST resource of the scale target's kind.
    async fn mapping(&self, api_version: &str, kind: &str) -> Result<ApiResource, String> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(ar) = self.mappings.lock().await.get(&key) {
            return Ok(ar.clone());
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (ar, _) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|_| format!("no matches for kind \"{kind}\" in group \"{group}\""))?;
        self.mappings.lock().await.insert(key, ar.clone());
        Ok(ar)
    }

    async fn reconcile(&self, shared: &HorizontalPodAutoscaler) -> Result<(), String> {
        let hpa = shared.clone();
        let original = hpa.status.clone().unwrap_or_default();
        let ns = hpa.namespace().unwrap_or_default();
        let name = hpa.name_any();
        let key = key_of(&hpa);
        let spec = hpa.spec.clone().unwrap_or_default();
        let target = &spec.scale_target_ref;
        let reference = format!("{}/{}/{}", target.kind, ns, target.name);
        let mut status = original.clone();
        let mut conds = status.conditions.take().unwrap_or_default();

        // The target's scale.
        let api_version = target.api_version.clone().unwrap_or_default();
        let scale_target = async {
            let ar = self.mapping(&api_version, &target.kind).await?;
            let api = Api::<DynamicObject>::namespaced_with(self.client.clone(), &ns, &ar);
            let scale = api
                .get_scale(&target.name)
                .await
                .map_err(|e| error_message(&e))?;
            Ok::<_, String>((api, scale))
        }
        .await;
        let (scale_api, mut scale) = match scale_target {
            Ok(t) => t,
            Err(e) => {
                self.event(&hpa, true, "FailedGetScale", e.clone());
                set_condition(
                    &mut conds,
                    ABLE_TO_SCALE,
                    false,
                    "FailedGetScale",
                    format!("the HPA controller was unable to get the target's current scale: {e}"),
                );
                status.conditions = Some(conds);
                self.write_status(&ns, &name, &original, status).await;
                return Err(format!(
                    "failed to query scale subresource for {reference}: {e}"
                ));
            }
        };
        set_condition(
            &mut conds,
            ABLE_TO_SCALE,
            true,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale".into(),
        );
        let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let now = Instant::now();
        {
            // recordInitialRecommendation: a new HPA starts from the
            // current size, so it does not scale down at once.
            let mut memory = self.memory.lock().unwrap();
            let m = memory.entry(key.clone()).or_default();
            if m.recommendations.is_empty() {
                m.recommendations.push((now, current));
            }
        }

        let min = spec.min_replicas.unwrap_or(1);
        let max = spec.max_replicas;
        let mut desired = 0;
        let mut rescale_reason = String::new();
        let mut metric_statuses: Vec<MetricStatus> = Vec::new();
        let mut rescale = true;
        let mut result = Ok(());
        if current == 0 && min != 0 {
            rescale = false;
            set_condition(
                &mut conds,
                SCALING_ACTIVE,
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero".into(),
            );
        } else if current > max {
            rescale_reason = "Current number of replicas above Spec.MaxReplicas".into();
            desired = max;
        } else if current < min {
            rescale_reason = "Current number of replicas below Spec.MinReplicas".into();
            desired = min;
        } else {
            let selector = scale.status.as_ref().and_then(|s| s.selector.clone());
            let proposal = self
                .replicas_for_metrics(&hpa, &spec.metrics, current, selector, &mut conds)
                .await;
            metric_statuses = proposal.statuses;
            if proposal.replicas < 0 {
                status.current_replicas = Some(current);
                status.current_metrics = Some(metric_statuses).filter(|m| !m.is_empty());
                status.conditions = Some(conds);
                let e = proposal.error.unwrap_or_default();
                self.event(&hpa, true, "FailedComputeMetricsReplicas", e.clone());
                self.write_status(&ns, &name, &original, status).await;
                return Err(format!(
                    "failed to compute desired number of replicas based on listed metrics for {reference}: {e}"
                ));
            }
            if let Some(e) = proposal.error {
                result = Err(e);
            }
            let mut metric = String::new();
            if proposal.replicas > desired {
                desired = proposal.replicas;
                metric = proposal.metric;
            }
            if desired > current {
                rescale_reason = format!("{metric} above target");
            }
            if desired < current {
                rescale_reason = "All metrics below target".into();
            }
            desired = self.normalize(&hpa, &key, now, current, desired, min, &mut conds);
            rescale = desired != current;
        }

        if rescale {
            if let Some(s) = scale.spec.as_mut() {
                s.replicas = Some(desired);
            } else {
                scale.spec = Some(k8s_openapi::api::autoscaling::v1::ScaleSpec {
                    replicas: Some(desired),
                });
            }
            if let Err(e) = scale_api
                .replace_scale(&target.name, &PostParams::default(), &scale)
                .await
            {
                let e = error_message(&e);
                self.event(
                    &hpa,
                    true,
                    "FailedRescale",
                    format!("New size: {desired}; reason: {rescale_reason}; error: {e}"),
                );
                set_condition(
                    &mut conds,
                    ABLE_TO_SCALE,
                    false,
                    "FailedUpdateScale",
                    format!("the HPA controller was unable to update the target scale: {e}"),
                );
                status.current_replicas = Some(current);
                status.current_metrics = Some(metric_statuses).filter(|m| !m.is_empty());
                status.conditions = Some(conds);
                self.write_status(&ns, &name, &original, status).await;
                return Err(format!("failed to rescale {reference}: {e}"));
            }
            set_condition(
                &mut conds,
                ABLE_TO_SCALE,
                true,
                "SucceededRescale",
                format!("the HPA controller was able to update the target scale to {desired}"),
            );
            self.event(
                &hpa,
                false,
                "SuccessfulRescale",
                format!("New size: {desired}; reason: {rescale_reason}"),
            );
            if let Some(b) = spec.behavior.as_ref() {
                let longest = |r: Option<&HPAScalingRules>, up| {
                    Rules::from(r, up, self.settings.downscale_window)
                        .policies
                        .iter()
                        .map(|p| p.2)
                        .max()
                        .unwrap_or(0)
                };
                let longest = if desired > current {
                    longest(b.scale_up.as_ref(), true)
                } else {
                    longest(b.scale_down.as_ref(), false)
                };
                if let Some(m) = self.memory.lock().unwrap().get_mut(&key) {
                    store_scale_event(m, now, current, desired, longest);
                }
            }
            tracing::info!(hpa = %key, from = current, to = desired, reason = %rescale_reason, "rescaled");
        } else {
            desired = current;
        }

        status.current_replicas = Some(current);
        status.desired_replicas = desired;
        status.current_metrics = Some(metric_statuses).filter(|m| !m.is_empty());
        status.conditions = Some(conds);
        status.observed_generation = hpa.metadata.generation;
        if rescale {
            status.last_scale_time = Some(Time(Timestamp::now()));
        }
        self.write_status(&ns, &name, &original, status).await;
        result
    }

    /// Stabilisation and limits, with or without `behavior`.
    #[allow(clippy::too_many_arguments)]
    fn normalize(
        &self,
        hpa: &HorizontalPodAutoscaler,
        key: &str,
        now: Instant,
        current: i32,
        desired: i32,
        min: i32,
        conds: &mut Vec<HorizontalPodAutoscalerCondition>,
    ) -> i32 {
        let spec = hpa.spec.clone().unwrap_or_default();
        let mut memory = self.memory.lock().unwrap();
        let mem = memory.entry(key.to_string()).or_default();
        let (stabilized, clamped) = match &spec.behavior {
            None => {
                let st = stabilize(mem, now, self.settings.downscale_window, desired);
                if st != desired {
                    set_condition(
                        conds,
                        ABLE_TO_SCALE,
                        true,
                        "ScaleDownStabilized",
                        "recent recommendations were higher than current one, applying the highest recent recommendation".into(),
                    );
                } else {
                    set_condition(
                        conds,
                        ABLE_TO_SCALE,
                        true,
                        "ReadyForNewScale",
                        "recommended size matches current size".into(),
                    );
                }
                (st, clamp_with_rules(current, st, min, spec.max_replicas))
            }
            Some(b) => {
                let up = Rules::from(b.scale_up.as_ref(), true, self.settings.downscale_window);
                let down =
                    Rules::from(b.scale_down.as_ref(), false, self.settings.downscale_window);
                let (st, reason, msg) =
                    stabilize_with_behaviors(mem, now, current, desired, &up, &down);
                if st != desired {
                    set_condition(conds, ABLE_TO_SCALE, true, reason, msg.into());
                } else {
                    set_condition(
                        conds,
                        ABLE_TO_SCALE,
                        true,
                        "ReadyForNewScale",
                        "recommended size matches current size".into(),
                    );
                }
                (
                    st,
                    clamp_with_behaviors(mem, now, current, st, min, spec.max_replicas, &up, &down),
                )
            }
        };
        let (replicas, reason, msg) = clamped;
        set_condition(
            conds,
            SCALING_LIMITED,
            replicas != stabilized,
            reason,
            msg.into(),
        );
        replicas
    }

    async fn write_status(
        &self,
        ns: &str,
        name: &str,
        original: &HorizontalPodAutoscalerStatus,
        status: HorizontalPodAutoscalerStatus,
    ) {
        if &status == original {
            return;
        }
        let mut v = serde_json::to_value(&status).unwrap_or(Value::Null);
        // A merge patch keeps fields it does not mention: clear them.
        for k in ["currentMetrics", "lastScaleTime", "currentReplicas"] {
            if v.get(k).is_none() {
                v[k] = Value::Null;
            }
        }
        let api = Api::<HorizontalPodAutoscaler>::namespaced(self.client.clone(), ns);
        if let Err(e) = api
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": v})),
            )
            .await
        {
            tracing::debug!(controller = CONTROLLER, hpa = %format!("{ns}/{name}"), "status: {e}");
        }
    }

    /// `computeReplicasForMetrics`: the largest proposal over the metrics.
    async fn replicas_for_metrics(
        &self,
        hpa: &HorizontalPodAutoscaler,
        specs: &Option<Vec<MetricSpec>>,
        current: i32,
        selector: Option<String>,
        conds: &mut Vec<HorizontalPodAutoscalerCondition>,
    ) -> Proposal {
        let mut out = Proposal::default();
        let Some(selector) = selector.filter(|s| !s.is_empty()) else {
            let msg = "selector is required";
            self.event(hpa, true, "SelectorRequired", msg.into());
            set_condition(
                conds,
                SCALING_ACTIVE,
                false,
                "InvalidSelector",
                "the HPA target's scale is missing a selector".into(),
            );
            out.replicas = -1;
            out.error = Some(msg.into());
            return out;
        };
        let default_metrics;
        let specs: &[MetricSpec] = match specs.as_deref() {
            Some(s) if !s.is_empty() => s,
            _ => {
                default_metrics = vec![default_cpu_metric()];
                &default_metrics
            }
        };
        let ns = hpa.namespace().unwrap_or_default();
        let pods = Api::<Pod>::namespaced(self.client.clone(), &ns)
            .list(&ListParams::default().labels(&selector))
            .await
            .map(|l| l.items)
            .map_err(|e| {
                format!(
                    "unable to get pods while calculating replica count: {}",
                    error_message(&e)
                )
            });
        let mut invalid = 0;
        let mut first_error: Option<(String, String, String)> = None;
        let mut replicas = 0;
        for spec in specs {
            match self
                .replicas_for_metric(hpa, spec, current, &selector, &pods)
                .await
            {
                Ok((proposal, name, st)) => {
                    out.statuses.push(st);
                    if replicas == 0 || proposal > replicas {
                        replicas = proposal;
                        out.metric = name;
                    }
                }
                Err((reason, err)) => {
                    if invalid == 0 {
                        self.event(hpa, true, &reason, err.clone());
                        first_error = Some((
                            reason,
                            format!("the HPA was unable to compute the replica count: {err}"),
                            err,
                        ));
                    }
                    invalid += 1;
                }
            }
        }
        if let Some((reason, msg, err)) = first_error {
            out.error = Some(format!(
                "invalid metrics ({invalid} invalid out of {}), first error is: {err}",
                specs.len()
            ));
            if invalid >= specs.len() || replicas < current {
                set_condition(conds, SCALING_ACTIVE, false, &reason, msg);
                out.replicas = -1;
                return out;
            }
        }
        set_condition(
            conds,
            SCALING_ACTIVE,
            true,
            "ValidMetricFound",
            format!(
                "the HPA was able to successfully calculate a replica count from {}",
                out.metric
            ),
        );
        out.replicas = replicas;
        out
    }

    /// One metric's proposal, name and status; or (condition reason, error).
    async fn replicas_for_metric(
        &self,
        hpa: &HorizontalPodAutoscaler,
        spec: &MetricSpec,
        current: i32,
        selector: &str,
        pods: &Result<Vec<Pod>, String>,
    ) -> Result<(i32, String, MetricStatus), (String, String)> {
        let (resource, container, target) = match spec.type_.as_str() {
            "Resource" => {
                let r = spec.resource.as_ref().ok_or_else(|| {
                    (
                        "InvalidMetricSourceType".to_string(),
                        "missing resource metric source".to_string(),
                    )
                })?;
                (r.name.clone(), None, r.target.clone())
            }
            "ContainerResource" => {
                let r = spec.container_resource.as_ref().ok_or_else(|| {
                    (
                        "InvalidMetricSourceType".to_string(),
                        "missing container resource metric source".to_string(),
                    )
                })?;
                (r.name.clone(), Some(r.container.clone()), r.target.clone())
            }
            t @ ("Pods" | "Object" | "External") => {
                return Err((
                    format!("FailedGet{t}Metric"),
                    format!(
                        "failed to get {} metric: unable to get metric: no custom metrics API (custom.metrics.k8s.io/external.metrics.k8s.io) is served",
                        t.to_lowercase()
                    ),
                ));
            }
            other => {
                return Err((
                    "InvalidMetricSourceType".into(),
                    format!("unknown metric source type {other:?}"),
                ));
            }
        };
        let (reason, what) = if container.is_some() {
            ("FailedGetContainerResourceMetric", "container resource")
        } else {
            ("FailedGetResourceMetric", "resource")
        };
        let fail = |e: String| {
            (
                reason.to_string(),
                format!("failed to get {resource} {what} metric value: {e}"),
            )
        };
        let tgt = if let Some(v) = &target.average_value {
            let milli = crate::quantity::quantity_scaled(&v.0, 3)
                .ok_or_else(|| fail(format!("invalid average value {:?}", v.0)))?;
            Target::AverageValue(milli)
        } else if let Some(u) = target.average_utilization {
            Target::Utilization(u)
        } else {
            return Err(fail(
                "invalid resource metric source: neither a utilization target nor a value target was set".into(),
            ));
        };
        let inner = |e: String| match tgt {
            Target::Utilization(_) => fail(format!("failed to get {resource} utilization: {e}")),
            Target::AverageValue(_) => fail(format!("failed to get {resource} usage: {e}")),
        };
        let ns = hpa.namespace().unwrap_or_default();
        let metrics = self
            .pod_metrics(&ns, selector, &resource, container.as_deref())
            .await
            .map_err(|e| {
                inner(format!(
                    "unable to get metrics for resource {resource}: {e}"
                ))
            })?;
        let pods = pods.as_ref().map_err(|e| inner(e.clone()))?;
        let infos: Vec<PodInfo> = pods.iter().map(pod_info).collect();
        let requests = match tgt {
            Target::Utilization(_) => {
                Some(pod_requests(pods, container.as_deref(), &resource).map_err(inner)?)
            }
            Target::AverageValue(_) => None,
        };
        let (replicas, utilization, raw) = replicas_for(
            current,
            tgt,
            self.tolerances(hpa),
            metrics,
            &infos,
            requests.as_ref(),
            resource == "cpu",
            Timestamp::now(),
            &self.settings,
        )
        .map_err(inner)?;
        let current_value = MetricValueStatus {
            average_utilization: utilization,
            average_value: Some(Quantity(decimal_quantity(i128::from(raw), -3))),
            value: None,
        };
        let name = match (tgt, container.is_some()) {
            (Target::Utilization(_), false) => {
                format!("{resource} resource utilization (percentage of request)")
            }
            (Target::Utilization(_), true) => {
                format!("{resource} container resource utilization (percentage of request)")
            }
            (Target::AverageValue(_), false) => format!("{resource} resource"),
            (Target::AverageValue(_), true) => format!("{resource} container resource"),
        };
        let status = match container {
            None => MetricStatus {
                type_: "Resource".into(),
                resource: Some(ResourceMetricStatus {
                    name: resource,
                    current: current_value,
                }),
                ..Default::default()
            },
            Some(c) => MetricStatus {
                type_: "ContainerResource".into(),
                container_resource: Some(ContainerResourceMetricStatus {
                    name: resource,
                    container: c,
                    current: current_value,
                }),
                ..Default::default()
            },
        };
        Ok((replicas, name, status))
    }

    fn tolerances(&self, hpa: &HorizontalPodAutoscaler) -> Tolerances {
        let b = hpa.spec.as_ref().and_then(|s| s.behavior.as_ref());
        let t = |r: Option<&HPAScalingRules>| {
            r.and_then(|r| r.tolerance.as_ref())
                .and_then(|q| crate::quantity::quantity_scaled(&q.0, 3))
                .map(|m| m as f64 / 1000.0)
                .unwrap_or(self.settings.tolerance)
        };
        Tolerances {
            down: t(b.and_then(|b| b.scale_down.as_ref())),
            up: t(b.and_then(|b| b.scale_up.as_ref())),
        }
    }

    /// `GetResourceMetric`: per pod, the sum over its containers (or the
    /// named container) of `resource`, in milli-units.
    async fn pod_metrics(
        &self,
        ns: &str,
        selector: &str,
        resource: &str,
        container: Option<&str>,
    ) -> Result<HashMap<String, PodMetric>, String> {
        let ar = ApiResource {
            group: crate::api::metrics::GROUP.into(),
            version: crate::api::metrics::VERSION.into(),
            api_version: format!(
                "{}/{}",
                crate::api::metrics::GROUP,
                crate::api::metrics::VERSION
            ),
            kind: "PodMetrics".into(),
            plural: "pods".into(),
        };
        let list = Api::<DynamicObject>::namespaced_with(self.client.clone(), ns, &ar)
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| {
                format!(
                    "unable to fetch metrics from resource metrics API: {}",
                    error_message(&e)
                )
            })?;
        if list.items.is_empty() {
            return Err("no metrics returned from resource metrics API".into());
        }
        let mut out = HashMap::new();
        for m in &list.items {
            let name = m.name_any();
            let timestamp = m.data["timestamp"]
                .as_str()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .unwrap_or_else(Timestamp::now);
            let window = m.data["window"]
                .as_str()
                .and_then(super::parse_go_duration)
                .unwrap_or_default();
            let containers = m.data["containers"].as_array().cloned().unwrap_or_default();
            let value = |c: &Value| {
                c.pointer(&format!("/usage/{resource}"))
                    .and_then(Value::as_str)
                    .and_then(|q| crate::quantity::quantity_scaled(q, 3))
            };
            let v = match container {
                Some(want) => {
                    let c = containers
                        .iter()
                        .find(|c| c["name"] == want)
                        .ok_or_else(|| {
                            format!(
                                "failed to get container metrics: container {want} not present in metrics for pod {ns}/{name}"
                            )
                        })?;
                    value(c)
                }
                None if containers.is_empty() => None,
                None => containers.iter().map(value).sum::<Option<i64>>(),
            };
            if let Some(value) = v {
                out.insert(
                    name,
                    PodMetric {
                        value,
                        timestamp,
                        window,
                    },
                );
            }
        }
        Ok(out)
    }
}

/// The result of `computeReplicasForMetrics`: replicas −1 when scaling
/// must not happen.
#[derive(Default)]
struct Proposal {
    replicas: i32,
    metric: String,
    statuses: Vec<MetricStatus>,
    error: Option<String>,
}

fn default_cpu_metric() -> MetricSpec {
    serde_json::from_value(json!({
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": DEFAULT_CPU_UTILIZATION}},
    }))
    .expect("a valid MetricSpec")
}

fn pod_info(p: &Pod) -> PodInfo {
    let st = p.status.clone().unwrap_or_default();
    PodInfo {
        name: p.name_any(),
        phase: st.phase.clone().unwrap_or_default(),
        deleting: p.metadata.deletion_timestamp.is_some(),
        ready: st
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .map(|c| {
                (
                    c.status == "True",
                    c.last_transition_time
                        .as_ref()
                        .map(|t| t.0)
                        .unwrap_or(Timestamp::UNIX_EPOCH),
                )
            }),
        start: st.start_time.map(|t| t.0),
    }
}

/// `calculatePodRequests`: per pod, the requests of its containers (and
/// restartable init containers) for `resource`, milli-units; every counted
/// container must have one.
fn pod_requests(
    pods: &[Pod],
    container: Option<&str>,
    resource: &str,
) -> Result<HashMap<String, i64>, String> {
    let mut out = HashMap::new();
    for p in pods {
        let Some(spec) = p.spec.as_ref() else {
            continue;
        };
        let sidecars = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"));
        let mut sum = 0i64;
        for c in spec.containers.iter().chain(sidecars) {
            if container.is_some_and(|want| want != c.name) {
                continue;
            }
            let req = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(resource))
                .and_then(|q| crate::quantity::quantity_scaled(&q.0, 3));
            match req {
                Some(v) => sum += v,
                None => {
                    return Err(format!(
                        "missing request for {resource} in container {} of Pod {}",
                        c.name,
                        p.name_any()
                    ));
                }
            }
        }
        out.insert(p.name_any(), sum);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            sync_period: DEFAULT_SYNC_PERIOD,
            downscale_window: DEFAULT_DOWNSCALE_WINDOW,
            tolerance: DEFAULT_TOLERANCE,
            cpu_initialization: DEFAULT_CPU_INITIALIZATION,
            initial_readiness_delay: DEFAULT_INITIAL_READINESS_DELAY,
        }
    }

    const TOL: Tolerances = Tolerances { down: 0.1, up: 0.1 };

    fn ts(secs_ago: i64) -> Timestamp {
        Timestamp::now()
            .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(secs_ago))
            .unwrap()
    }

    /// Running pods, Ready for 10 minutes, each with its usage (milli).
    fn running(usage: &[(&str, i64)]) -> (Vec<PodInfo>, HashMap<String, PodMetric>) {
        let pods = usage
            .iter()
            .map(|(n, _)| PodInfo {
                name: n.to_string(),
                phase: "Running".into(),
                ready: Some((true, ts(600))),
                start: Some(ts(610)),
                ..Default::default()
            })
            .collect();
        let metrics = usage
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    PodMetric {
                        value: *v,
                        timestamp: ts(1),
                        window: Duration::from_secs(10),
                    },
                )
            })
            .collect();
        (pods, metrics)
    }

    fn requests(names: &[&str], milli: i64) -> HashMap<String, i64> {
        names.iter().map(|n| (n.to_string(), milli)).collect()
    }

    fn calc(
        current: i32,
        target: Target,
        pods: &[PodInfo],
        metrics: HashMap<String, PodMetric>,
        req: Option<&HashMap<String, i64>>,
    ) -> Result<(i32, Option<i32>, i64), String> {
        replicas_for(
            current,
            target,
            TOL,
            metrics,
            pods,
            req,
            true,
            Timestamp::now(),
            &settings(),
        )
    }

    #[test]
    fn utilization_scales_by_ratio() {
        // Two pods at 900m of 100m requested, target 50%: 900% / 50% = 18 → ceil(18 × 2).
        let (pods, m) = running(&[("a", 900), ("b", 900)]);
        let r = requests(&["a", "b"], 100);
        assert_eq!(
            calc(2, Target::Utilization(50), &pods, m, Some(&r)).unwrap(),
            (36, Some(900), 900)
        );
        // 60% of target 50 → 1.2 → ceil(2.4) = 3.
        let (pods, m) = running(&[("a", 60), ("b", 60)]);
        assert_eq!(
            calc(2, Target::Utilization(50), &pods, m, Some(&r))
                .unwrap()
                .0,
            3
        );
        // Nearly idle: scale down to ceil(0.02 × 3) = 1.
        let (pods, m) = running(&[("a", 1), ("b", 1), ("c", 1)]);
        let r3 = requests(&["a", "b", "c"], 100);
        assert_eq!(
            calc(3, Target::Utilization(50), &pods, m, Some(&r3)).unwrap(),
            (1, Some(1), 1)
        );
    }

    #[test]
    fn tolerance_keeps_current() {
        let r = requests(&["a", "b"], 100);
        // 54% vs 50%: ratio 1.08, within 10%.
        let (pods, m) = running(&[("a", 54), ("b", 54)]);
        assert_eq!(
            calc(2, Target::Utilization(50), &pods, m, Some(&r))
                .unwrap()
                .0,
            2
        );
        // 46%: ratio 0.92, within.
        let (pods, m) = running(&[("a", 46), ("b", 46)]);
        assert_eq!(
            calc(2, Target::Utilization(50), &pods, m, Some(&r))
                .unwrap()
                .0,
            2
        );
        // 56%: ratio 1.12, out → ceil(2.24) = 3.
        let (pods, m) = running(&[("a", 56), ("b", 56)]);
        assert_eq!(
            calc(2, Target::Utilization(50), &pods, m, Some(&r))
                .unwrap()
                .0,
            3
        );
        // Configured per-direction tolerance.
        let (pods, m) = running(&[("a", 56), ("b", 56)]);
        let wide = Tolerances { down: 0.1, up: 0.2 };
        assert_eq!(
            replicas_for(
                2,
                Target::Utilization(50),
                wide,
                m,
                &pods,
                Some(&r),
                true,
                Timestamp::now(),
                &settings()
            )
            .unwrap()
            .0,
            2
        );
    }

    #[test]
    fn average_value_targets() {
        // Memory: 3 pods averaging 200Mi against 100Mi → 6.
        let mi = 1024 * 1024 * 1000;
        let (pods, m) = running(&[("a", 200 * mi), ("b", 100 * mi), ("c", 300 * mi)]);
        let (n, u, raw) = replicas_for(
            3,
            Target::AverageValue(100 * mi),
            TOL,
            m,
            &pods,
            None,
            false,
            Timestamp::now(),
            &settings(),
        )
        .unwrap();
        assert_eq!((n, u, raw), (6, None, 200 * mi));
    }

    #[test]
    fn missing_and_unready_pods_are_conservative() {
        let r = requests(&["a", "b", "c"], 100);
        // Scale-up: a pod without metrics counts as 0 → (200+0)/2 pods = 100% vs 50%: ratio 2 → ceil(2 × 2)...
        let (mut pods, mut m) = running(&[("a", 200), ("b", 0)]);
        m.remove("b");
        assert_eq!(
            calc(2, Target::Utilization(50), &pods, m.clone(), Some(&r))
                .unwrap()
                .0,
            4
        );
        // Scale-down: a pod without metrics counts as its full request:
        // (10 + 100) / 200 = 55% vs 50% → within tolerance, no change.
        let (pods2, mut m2) = running(&[("a", 10), ("b", 0)]);
        m2.remove("b");
        assert_eq!(
            calc(2, Target::Utilization(50), &pods2, m2, Some(&r))
                .unwrap()
                .0,
            2
        );
        // A pending pod on a scale-up counts as 0.
        pods.push(PodInfo {
            name: "c".into(),
            phase: "Pending".into(),
            ..Default::default()
        });
        m.insert(
            "b".into(),
            PodMetric {
                value: 200,
                timestamp: ts(1),
                window: Duration::from_secs(10),
            },
        );
        // (200+200+0)/300 = 133% vs 50% → 2.66 → ceil(2.66 × 3) = 8.
        assert_eq!(
            calc(3, Target::Utilization(50), &pods, m, Some(&r))
                .unwrap()
                .0,
            8
        );
        // A CPU sample taken before a window after readiness is ignored.
        let (mut pods, m) = running(&[("a", 200), ("b", 200)]);
        pods[1].start = Some(ts(20));
        pods[1].ready = Some((true, ts(5)));
        let g = group_pods(&pods, &m, true, Timestamp::now(), &settings());
        assert_eq!((g.ready, g.unready.len()), (1, 1));
        // Deleted pods are ignored; no metrics at all is an error.
        let (mut pods, _) = running(&[("a", 0)]);
        pods[0].deleting = true;
        assert!(calc(1, Target::Utilization(50), &pods, HashMap::new(), Some(&r)).is_err());
    }

    #[test]
    fn stabilization_window_keeps_the_highest_recent() {
        let mut mem = Memory::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(300);
        assert_eq!(stabilize(&mut mem, t0, w, 5), 5);
        // Lower recommendations within the window are held at 5.
        assert_eq!(stabilize(&mut mem, t0 + Duration::from_secs(60), w, 2), 5);
        assert_eq!(stabilize(&mut mem, t0 + Duration::from_secs(200), w, 1), 5);
        // Once 5 is older than the window, the highest remaining (2) wins.
        assert_eq!(stabilize(&mut mem, t0 + Duration::from_secs(301), w, 1), 2);
        assert_eq!(stabilize(&mut mem, t0 + Duration::from_secs(400), w, 1), 1);
        // Scale-ups are never held back.
        assert_eq!(stabilize(&mut mem, t0 + Duration::from_secs(401), w, 7), 7);
    }

    #[test]
    fn min_max_and_scale_up_limit() {
        assert_eq!(clamp_with_rules(2, 3, 1, 10).0, 3);
        assert_eq!(
            clamp_with_rules(2, 0, 1, 10),
            (
                1,
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count"
            )
        );
        assert_eq!(clamp_with_rules(2, 20, 1, 3).0, 3);
        assert_eq!(clamp_with_rules(2, 20, 1, 3).1, "TooManyReplicas");
        // At most max(2 × current, 4) in one step.
        assert_eq!(
            clamp_with_rules(1, 20, 1, 10),
            (
                4,
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate"
            )
        );
        assert_eq!(clamp_with_rules(5, 20, 1, 100).0, 10);
    }

    #[test]
    fn behaviors_windows_and_policies() {
        let w = DEFAULT_DOWNSCALE_WINDOW;
        let up = Rules::from(None, true, w);
        assert_eq!(up.window, Duration::ZERO);
        assert_eq!(up.policies.len(), 2);
        let rules: HPAScalingRules = serde_json::from_value(json!({
            "stabilizationWindowSeconds": 10, "selectPolicy": "Min",
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60},
                         {"type": "Percent", "value": 50, "periodSeconds": 60}],
        }))
        .unwrap();
        let down = Rules::from(Some(&rules), false, w);
        assert_eq!(down.window, Duration::from_secs(10));
        let mut mem = Memory::default();
        let t0 = Instant::now();
        // Scale-down from 10 wanting 2: stabilised by nothing older.
        let (st, _, _) = stabilize_with_behaviors(&mut mem, t0, 10, 2, &up, &down);
        assert_eq!(st, 2);
        // Min of (10-1, 10×0.5) for scaling down = the smallest change: 9.
        let (n, reason, _) = clamp_with_behaviors(&mem, t0, 10, 2, 1, 20, &up, &down);
        assert_eq!((n, reason), (9, "ScaleDownLimit"));
        store_scale_event(&mut mem, t0, 10, 9, 60);
        // Within the period the 1 pod already removed counts: 10-1 → start 10 → 9 again.
        assert_eq!(
            rate_limit(&mem, t0 + Duration::from_secs(5), 9, &down, false),
            9
        );
        // A lower recommendation made 5 s ago holds a scale-down (window 10 s)...
        let (st, reason, _) =
            stabilize_with_behaviors(&mut mem, t0 + Duration::from_secs(5), 9, 1, &up, &down);
        assert_eq!((st, reason), (2, "ScaleDownStabilized"));
        // Default scale-up: max(+4 pods, +100%) in 15 s.
        let (n, reason, _) =
            clamp_with_behaviors(&Memory::default(), t0, 3, 50, 1, 100, &up, &down);
        assert_eq!((n, reason), (7, "ScaleUpLimit"));
        let disabled = Rules {
            select: "Disabled".into(),
            ..up.clone()
        };
        assert_eq!(
            clamp_with_behaviors(&Memory::default(), t0, 3, 50, 1, 100, &disabled, &down).0,
            3
        );
    }

    #[test]
    fn requests_sum_containers_and_sidecars() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {
                "initContainers": [
                    {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}},
                    {"name": "init"},
                ],
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                    {"name": "b", "resources": {"requests": {"cpu": "0.2"}}},
                ],
            },
        }))
        .unwrap();
        let r = pod_requests(std::slice::from_ref(&pod), None, "cpu").unwrap();
        assert_eq!(r["p"], 350);
        assert_eq!(
            pod_requests(std::slice::from_ref(&pod), Some("b"), "cpu").unwrap()["p"],
            200
        );
        assert_eq!(
            pod_requests(std::slice::from_ref(&pod), None, "memory").unwrap_err(),
            "missing request for memory in container b of Pod p"
        );
    }

    #[test]
    fn conditions_keep_transition_times() {
        let mut c = Vec::new();
        set_condition(&mut c, ABLE_TO_SCALE, true, "A", "a".into());
        let t = c[0].last_transition_time.clone();
        set_condition(&mut c, ABLE_TO_SCALE, true, "B", "b".into());
        assert_eq!(c[0].last_transition_time, t);
        assert_eq!(c[0].reason.as_deref(), Some("B"));
        set_condition(&mut c, SCALING_ACTIVE, false, "X", "x".into());
        assert_eq!(c.len(), 2);
    }
}

//! Filter and score plugins of the default profile, in upstream's order and
//! with upstream's failure reasons and score formulas:
//! NodeUnschedulable, TaintToleration, NodeAffinity, NodePorts,
//! NodeResourcesFit, PodTopologySpread, InterPodAffinity (filters);
//! TaintToleration ×3, NodeAffinity ×2, PodTopologySpread ×2,
//! InterPodAffinity ×2, NodeResourcesFit (LeastAllocated) ×1,
//! NodeResourcesBalancedAllocation ×1, ImageLocality ×1 (scores).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::cache::{Cache, NodeEntry};
use super::model::{Labels, PodInfo, SpreadConstraint, Taint, tolerated};
use super::queue::flags;

pub const MAX_NODE_SCORE: i64 = 100;

pub const ERR_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const ERR_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
pub const ERR_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
pub const ERR_SPREAD: &str = "node(s) didn't match pod topology spread constraints";
pub const ERR_SPREAD_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
pub const ERR_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const ERR_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const ERR_EXISTING_ANTI: &str = "node(s) didn't satisfy existing pods anti-affinity rules";

/// PriorityClass values by name, and the global default.
#[derive(Default)]
pub struct Priorities {
    pub classes: HashMap<String, i32>,
    pub global_default: Option<(String, i32)>,
}

impl Priorities {
    /// A pod's priority as the Priority admission plugin would have set it:
    /// from its PriorityClass, else the global default class, else the
    /// pod's own field (skiff's API server defaults it to 0 without
    /// resolving the class, so the class wins when it is known).
    pub fn of(&self, p: &PodInfo) -> i32 {
        if !p.priority_class.is_empty() {
            if let Some(v) = self.classes.get(&p.priority_class) {
                return *v;
            }
            // The two classes kube-apiserver always has.
            match p.priority_class.as_str() {
                "system-node-critical" => return 2_000_001_000,
                "system-cluster-critical" => return 2_000_000_000,
                _ => {}
            }
        } else if p.spec_priority.unwrap_or(0) == 0
            && let Some((_, v)) = &self.global_default
        {
            return *v;
        }
        p.spec_priority.unwrap_or(0)
    }
}

/// What the scheduler reads during one cycle.
pub struct View<'a> {
    pub cache: &'a Cache,
    pub ns_labels: &'a HashMap<String, Labels>,
    pub prio: &'a Priorities,
}

impl View<'_> {
    pub fn ns_fn(&self) -> impl Fn(&str) -> Option<Labels> + '_ {
        |ns: &str| self.ns_labels.get(ns).cloned()
    }
}

/// A filter's verdict on one node.
#[derive(Debug, Clone)]
pub struct Status {
    /// UnschedulableAndUnresolvable: preemption on this node cannot help.
    pub unresolvable: bool,
    pub reasons: Vec<Cow<'static, str>>,
    /// Which queue flag a cluster event must carry to change this.
    pub flag: u32,
}

impl Status {
    fn new(unresolvable: bool, reason: impl Into<Cow<'static, str>>, flag: u32) -> Status {
        Status {
            unresolvable,
            reasons: vec![reason.into()],
            flag,
        }
    }
}

// ------------------------------------------------------------- pre-filter

#[derive(Default)]
pub struct AffinityState {
    /// (topologyKey, value) → existing pods matching *all* required
    /// affinity terms of the incoming pod.
    affinity: HashMap<(String, String), i64>,
    /// (topologyKey, value) → existing pods matching a required
    /// anti-affinity term of the incoming pod.
    anti: HashMap<(String, String), i64>,
    /// (topologyKey, value) → existing pods whose required anti-affinity
    /// selects the incoming pod.
    existing_anti: HashMap<(String, String), i64>,
    self_match_all: bool,
}

pub struct SpreadState {
    pub c: SpreadConstraint,
    pub counts: HashMap<String, i64>,
    pub min: i64,
}

/// Per-pod state computed once per cycle (upstream PreFilter).
pub struct Cycle {
    pub priority: i32,
    pub aff: Option<AffinityState>,
    pub spread: Vec<SpreadState>,
}

fn node_passes_taints_policy(pod: &PodInfo, taints: &[Taint]) -> bool {
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tolerated(&pod.tolerations, t))
}

fn spread_counts_pod(c: &SpreadConstraint, p: &PodInfo, ns: &str) -> bool {
    p.namespace == ns && !p.deleting && c.selector.as_ref().is_some_and(|s| s.matches(&p.labels))
}

/// Counts of pods matching each constraint per topology domain, over the
/// nodes the constraint's inclusion policies admit (upstream
/// `calPreFilterState` / PreScore). `keys` are the topology keys a node
/// must carry to be counted at all.
fn spread_domain_counts(
    v: &View,
    pod: &PodInfo,
    cons: &[SpreadConstraint],
) -> Vec<HashMap<String, i64>> {
    let mut out: Vec<HashMap<String, i64>> = vec![HashMap::new(); cons.len()];
    for n in &v.cache.nodes {
        let labels = &n.spec.labels;
        if !cons.iter().all(|c| labels.contains_key(&c.topology_key)) {
            continue;
        }
        for (i, c) in cons.iter().enumerate() {
            if c.honor_affinity && !pod.node_affinity_matches(&n.spec.name, labels) {
                continue;
            }
            if c.honor_taints && !node_passes_taints_policy(pod, &n.spec.taints) {
                continue;
            }
            let val = &labels[&c.topology_key];
            let cnt = n
                .usage
                .pods
                .iter()
                .filter(|p| spread_counts_pod(c, p, &pod.namespace))
                .count() as i64;
            *out[i].entry(val.clone()).or_insert(0) += cnt;
        }
    }
    out
}

fn min_match(counts: &HashMap<String, i64>, min_domains: i32) -> i64 {
    if (counts.len() as i32) < min_domains {
        return 0;
    }
    counts.values().copied().min().unwrap_or(0)
}

impl Cycle {
    pub fn new(v: &View, pod: &PodInfo) -> Cycle {
        let priority = v.prio.of(pod);
        let ns = v.ns_fn();
        let aff_spec = pod.affinity.as_deref();
        let has_required = aff_spec
            .is_some_and(|a| !a.required_affinity.is_empty() || !a.required_anti.is_empty());
        let aff = if has_required || !v.cache.anti_pods.is_empty() {
            let mut st = AffinityState::default();
            if let Some(a) = aff_spec.filter(|_| has_required) {
                st.self_match_all = a.required_affinity.iter().all(|t| t.matches(pod, &ns));
                for n in &v.cache.nodes {
                    let labels = &n.spec.labels;
                    for p in &n.usage.pods {
                        if p.key == pod.key {
                            continue;
                        }
                        if !a.required_affinity.is_empty()
                            && a.required_affinity.iter().all(|t| t.matches(p, &ns))
                        {
                            for t in &a.required_affinity {
                                if let Some(val) = labels.get(&t.topology_key) {
                                    *st.affinity
                                        .entry((t.topology_key.clone(), val.clone()))
                                        .or_insert(0) += 1;
                                }
                            }
                        }
                        for t in &a.required_anti {
                            if t.matches(p, &ns)
                                && let Some(val) = labels.get(&t.topology_key)
                            {
                                *st.anti
                                    .entry((t.topology_key.clone(), val.clone()))
                                    .or_insert(0) += 1;
                            }
                        }
                    }
                }
            }
            for k in &v.cache.anti_pods {
                let Some(ps) = v.cache.pods.get(k) else {
                    continue;
                };
                if ps.info.key == pod.key {
                    continue;
                }
                let Some(node) = ps.placed.as_deref().and_then(|n| v.cache.node(n)) else {
                    continue;
                };
                for t in ps.info.affinity.iter().flat_map(|a| a.required_anti.iter()) {
                    if t.matches(pod, &ns)
                        && let Some(val) = node.spec.labels.get(&t.topology_key)
                    {
                        *st.existing_anti
                            .entry((t.topology_key.clone(), val.clone()))
                            .or_insert(0) += 1;
                    }
                }
            }
            Some(st)
        } else {
            None
        };
        let hard: Vec<SpreadConstraint> = pod.spread.iter().filter(|c| c.hard).cloned().collect();
        let spread = if hard.is_empty() {
            Vec::new()
        } else {
            let counts = spread_domain_counts(v, pod, &hard);
            hard.into_iter()
                .zip(counts)
                .map(|(c, counts)| {
                    let min = min_match(&counts, c.min_domains);
                    SpreadState { c, counts, min }
                })
                .collect()
        };
        Cycle {
            priority,
            aff,
            spread,
        }
    }
}

// ----------------------------------------------------------------- filter

const UNSCHEDULABLE_TAINT_KEY: &str = "node.kubernetes.io/unschedulable";

/// Runs the filters on one node. `removed` are pods on that node to
/// pretend gone (preemption's dry run).
pub fn filter(
    v: &View,
    pod: &PodInfo,
    cy: &Cycle,
    n: &NodeEntry,
    removed: &[Arc<PodInfo>],
) -> Result<(), Status> {
    let spec = &n.spec;
    if spec.unschedulable {
        let t = Taint {
            key: UNSCHEDULABLE_TAINT_KEY.into(),
            value: String::new(),
            effect: "NoSchedule".into(),
        };
        if !tolerated(&pod.tolerations, &t) {
            return Err(Status::new(true, ERR_UNSCHEDULABLE, flags::NODE));
        }
    }
    for t in &spec.taints {
        if (t.effect == "NoSchedule" || t.effect == "NoExecute") && !tolerated(&pod.tolerations, t)
        {
            return Err(Status::new(
                true,
                format!("node(s) had untolerated taint {{{}: {}}}", t.key, t.value),
                flags::NODE,
            ));
        }
    }
    if !pod.node_affinity_matches(&spec.name, &spec.labels) {
        return Err(Status::new(true, ERR_NODE_AFFINITY, flags::NODE));
    }
    if !pod.host_ports.is_empty() {
        for hp in &pod.host_ports {
            let used = n.usage.ports.iter().filter(|p| p.conflicts(hp)).count();
            let freed = removed
                .iter()
                .flat_map(|r| r.host_ports.iter())
                .filter(|p| p.conflicts(hp))
                .count();
            if used > freed {
                return Err(Status::new(false, ERR_PORTS, flags::RESOURCES));
            }
        }
    }
    fit(v, pod, cy, n, removed)?;
    if !cy.spread.is_empty() {
        spread_filter(pod, cy, n, removed)?;
    }
    if let Some(a) = &cy.aff {
        affinity_filter(v, pod, a, n, removed)?;
    }
    Ok(())
}

fn fit(
    v: &View,
    pod: &PodInfo,
    cy: &Cycle,
    n: &NodeEntry,
    removed: &[Arc<PodInfo>],
) -> Result<(), Status> {
    let u = &n.usage;
    let alloc = &n.spec.allocatable;
    let mut cpu = u.requested.milli_cpu;
    let mut mem = u.requested.memory;
    let mut eph = u.requested.ephemeral;
    let mut count = u.pods.len() as i64;
    for r in removed {
        cpu -= r.requests.milli_cpu;
        mem -= r.requests.memory;
        eph -= r.requests.ephemeral;
        count -= 1;
    }
    // Pods nominated to this node with at least our priority keep their
    // place (upstream runs the filters with nominated pods added).
    let mut nominated: Vec<&PodInfo> = Vec::new();
    if let Some(keys) = v.cache.nominated_on.get(&n.spec.name) {
        for k in keys {
            if *k == pod.key {
                continue;
            }
            if let Some(st) = v.cache.pods.get(k)
                && v.prio.of(&st.info) >= cy.priority
            {
                nominated.push(&st.info);
            }
        }
    }
    for p in &nominated {
        cpu += p.requests.milli_cpu;
        mem += p.requests.memory;
        eph += p.requests.ephemeral;
        count += 1;
    }
    let mut reasons: Vec<Cow<'static, str>> = Vec::new();
    let mut unresolvable = false;
    if count + 1 > n.spec.allowed_pods {
        reasons.push("Too many pods".into());
    }
    let req = &pod.requests;
    if !req.is_zero() {
        if req.milli_cpu > 0 && req.milli_cpu > alloc.milli_cpu - cpu {
            reasons.push("Insufficient cpu".into());
            unresolvable |= req.milli_cpu > alloc.milli_cpu;
        }
        if req.memory > 0 && req.memory > alloc.memory - mem {
            reasons.push("Insufficient memory".into());
            unresolvable |= req.memory > alloc.memory;
        }
        if req.ephemeral > 0 && req.ephemeral > alloc.ephemeral - eph {
            reasons.push("Insufficient ephemeral-storage".into());
            unresolvable |= req.ephemeral > alloc.ephemeral;
        }
        for (name, q) in &req.scalar {
            if *q <= 0 {
                continue;
            }
            let mut used = u.requested.scalar(name);
            for r in removed {
                used -= r.requests.scalar(name);
            }
            for p in &nominated {
                used += p.requests.scalar(name);
            }
            let have = alloc.scalar(name);
            if *q > have - used {
                reasons.push(format!("Insufficient {name}").into());
                unresolvable |= *q > have;
            }
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(Status {
            unresolvable,
            reasons,
            flag: flags::RESOURCES,
        })
    }
}

fn spread_filter(
    pod: &PodInfo,
    cy: &Cycle,
    n: &NodeEntry,
    removed: &[Arc<PodInfo>],
) -> Result<(), Status> {
    for s in &cy.spread {
        let Some(val) = n.spec.labels.get(&s.c.topology_key) else {
            return Err(Status::new(true, ERR_SPREAD_LABEL, flags::NODE));
        };
        let mut count = s.counts.get(val).copied().unwrap_or(0);
        let mut min = s.min;
        let gone = removed
            .iter()
            .filter(|r| spread_counts_pod(&s.c, r, &pod.namespace))
            .count() as i64;
        if gone > 0 && s.counts.contains_key(val) {
            count -= gone;
            if (s.counts.len() as i32) >= s.c.min_domains {
                min = s
                    .counts
                    .iter()
                    .map(|(k, c)| if k == val { count } else { *c })
                    .min()
                    .unwrap_or(0);
            }
        }
        let self_match =
            s.c.selector
                .as_ref()
                .is_some_and(|sel| sel.matches(&pod.labels)) as i64;
        if count + self_match - min > s.c.max_skew as i64 {
            return Err(Status::new(false, ERR_SPREAD, flags::SPREAD));
        }
    }
    Ok(())
}

fn affinity_filter(
    v: &View,
    pod: &PodInfo,
    a: &AffinityState,
    n: &NodeEntry,
    removed: &[Arc<PodInfo>],
) -> Result<(), Status> {
    let labels = &n.spec.labels;
    let ns = v.ns_fn();
    let empty = Vec::new();
    let (req_aff, req_anti) = match pod.affinity.as_deref() {
        Some(s) => (&s.required_affinity, &s.required_anti),
        None => (&empty, &empty),
    };
    if !req_aff.is_empty() {
        let gone = removed
            .iter()
            .filter(|r| req_aff.iter().all(|t| t.matches(r, &ns)))
            .count() as i64;
        let mut pods_exist = true;
        for t in req_aff {
            let Some(val) = labels.get(&t.topology_key) else {
                return Err(Status::new(
                    true,
                    ERR_AFFINITY,
                    flags::POD_AFFINITY | flags::NODE,
                ));
            };
            let c = a
                .affinity
                .get(&(t.topology_key.clone(), val.clone()))
                .copied()
                .unwrap_or(0)
                - gone;
            if c <= 0 {
                pods_exist = false;
            }
        }
        // The first pod of a group that selects itself may go anywhere.
        if !(pods_exist || a.affinity.is_empty() && a.self_match_all) {
            return Err(Status::new(true, ERR_AFFINITY, flags::POD_AFFINITY));
        }
    }
    for t in req_anti {
        if let Some(val) = labels.get(&t.topology_key) {
            let gone = removed.iter().filter(|r| t.matches(r, &ns)).count() as i64;
            let c = a
                .anti
                .get(&(t.topology_key.clone(), val.clone()))
                .copied()
                .unwrap_or(0)
                - gone;
            if c > 0 {
                return Err(Status::new(false, ERR_ANTI_AFFINITY, flags::POD_AFFINITY));
            }
        }
    }
    for ((key, val), c) in &a.existing_anti {
        if labels.get(key) != Some(val) {
            continue;
        }
        let mut c = *c;
        for r in removed {
            for t in r.affinity.iter().flat_map(|x| x.required_anti.iter()) {
                if t.topology_key == *key && t.matches(pod, &ns) {
                    c -= 1;
                }
            }
        }
        if c > 0 {
            return Err(Status::new(false, ERR_EXISTING_ANTI, flags::POD_AFFINITY));
        }
    }
    Ok(())
}

// ------------------------------------------------------------- diagnosis

/// `0/N nodes are available: <count reason, ...>.` (upstream
/// `FitError.Error`, reasons sorted as strings).
pub fn fit_message(num_nodes: usize, statuses: &[Status]) -> String {
    if num_nodes == 0 {
        return "no nodes available to schedule pods".to_string();
    }
    let mut hist: BTreeMap<&str, usize> = BTreeMap::new();
    for s in statuses {
        for r in &s.reasons {
            *hist.entry(r.as_ref()).or_default() += 1;
        }
    }
    let mut parts: Vec<String> = hist.iter().map(|(r, c)| format!("{c} {r}")).collect();
    parts.sort();
    format!("0/{num_nodes} nodes are available: {}.", parts.join(", "))
}

// ----------------------------------------------------------------- score

/// Feasible nodes' total weighted scores (same order as `nodes`).
pub fn score(v: &View, pod: &PodInfo, nodes: &[usize]) -> Vec<i64> {
    let cache = v.cache;
    let mut total = vec![0i64; nodes.len()];

    // NodeResourcesFit (LeastAllocated) and BalancedAllocation, weight 1
    // each; node-local, no normalization.
    for (i, &ni) in nodes.iter().enumerate() {
        let n = &cache.nodes[ni];
        let a = &n.spec.allocatable;
        let least = |req: i64, cap: i64| {
            if cap <= 0 || req > cap {
                0
            } else {
                (cap - req) * MAX_NODE_SCORE / cap
            }
        };
        let cpu_req = n.usage.nonzero_cpu + pod.nonzero_cpu;
        let mem_req = n.usage.nonzero_mem + pod.nonzero_mem;
        let la = (least(cpu_req, a.milli_cpu) + least(mem_req, a.memory)) / 2;
        let frac = |req: i64, cap: i64| {
            if cap <= 0 {
                1.0
            } else {
                (req as f64 / cap as f64).min(1.0)
            }
        };
        let fc = frac(
            n.usage.requested.milli_cpu + pod.requests.milli_cpu,
            a.milli_cpu,
        );
        let fm = frac(n.usage.requested.memory + pod.requests.memory, a.memory);
        let std = (fc - fm).abs() / 2.0;
        let ba = ((1.0 - std) * MAX_NODE_SCORE as f64) as i64;
        total[i] += la + ba;
    }

    // ImageLocality, weight 1.
    let total_nodes = cache.nodes.len().max(1) as f64;
    let spread: Vec<(&str, f64)> = pod
        .images
        .iter()
        .filter_map(|img| {
            cache
                .image_nodes
                .get(img)
                .map(|c| (img.as_str(), *c as f64 / total_nodes))
        })
        .collect();
    if !spread.is_empty() {
        const MB: i64 = 1024 * 1024;
        let min_t = 23 * MB;
        let max_t = 1000 * MB * pod.images.len().max(1) as i64;
        for (i, &ni) in nodes.iter().enumerate() {
            let imgs = &cache.nodes[ni].spec.images;
            let sum: i64 = spread
                .iter()
                .filter_map(|(img, s)| imgs.get(*img).map(|size| (*size as f64 * s) as i64))
                .sum();
            let sum = sum.clamp(min_t, max_t);
            total[i] += MAX_NODE_SCORE * (sum - min_t) / (max_t - min_t);
        }
    }

    // TaintToleration, weight 3: fewer untolerated PreferNoSchedule taints
    // is better. Uniform (all 100) when no node has such taints.
    if cache.prefer_no_schedule_nodes > 0 {
        let raw: Vec<i64> = nodes
            .iter()
            .map(|&ni| {
                cache.nodes[ni]
                    .spec
                    .taints
                    .iter()
                    .filter(|t| t.effect == "PreferNoSchedule")
                    .filter(|t| {
                        !pod.tolerations.iter().any(|tol| {
                            (tol.effect.is_empty() || tol.effect == "PreferNoSchedule")
                                && tol.tolerates(t)
                        })
                    })
                    .count() as i64
            })
            .collect();
        add_normalized(&mut total, &raw, true, 3);
    }

    // NodeAffinity (preferred terms), weight 2.
    if !pod.preferred_terms.is_empty() {
        let raw: Vec<i64> = nodes
            .iter()
            .map(|&ni| {
                let s = &cache.nodes[ni].spec;
                pod.preferred_terms
                    .iter()
                    .filter(|(_, t)| t.matches(&s.name, &s.labels))
                    .map(|(w, _)| *w as i64)
                    .sum()
            })
            .collect();
        add_normalized(&mut total, &raw, false, 2);
    }

    // PodTopologySpread (ScheduleAnyway constraints), weight 2.
    let soft: Vec<SpreadConstraint> = pod.spread.iter().filter(|c| !c.hard).cloned().collect();
    if !soft.is_empty() {
        let counts = spread_domain_counts(v, pod, &soft);
        let weights: Vec<f64> = counts.iter().map(|m| ((m.len() + 2) as f64).ln()).collect();
        let mut raw: Vec<Option<i64>> = Vec::with_capacity(nodes.len());
        for &ni in nodes {
            let labels = &cache.nodes[ni].spec.labels;
            if !soft.iter().all(|c| labels.contains_key(&c.topology_key)) {
                raw.push(None);
                continue;
            }
            let mut s = 0.0;
            for (ci, c) in soft.iter().enumerate() {
                let val = &labels[&c.topology_key];
                let cnt = counts[ci].get(val).copied().unwrap_or(0) as f64;
                s += cnt * weights[ci] + (c.max_skew - 1) as f64;
            }
            raw.push(Some(s.round() as i64));
        }
        let vals: Vec<i64> = raw.iter().flatten().copied().collect();
        let max = vals.iter().copied().max().unwrap_or(0);
        let min = vals.iter().copied().min().unwrap_or(0);
        for (i, r) in raw.iter().enumerate() {
            let s = match r {
                None => 0,
                Some(_) if max == 0 => MAX_NODE_SCORE,
                Some(s) => MAX_NODE_SCORE * (max + min - s) / max,
            };
            total[i] += 2 * s;
        }
    }

    // InterPodAffinity (preferred terms, both directions), weight 2.
    let has_pref = pod
        .affinity
        .as_deref()
        .is_some_and(|a| !a.preferred_affinity.is_empty() || !a.preferred_anti.is_empty());
    if has_pref || !cache.affinity_pods.is_empty() {
        let ns = v.ns_fn();
        let mut topo: HashMap<(String, String), i64> = HashMap::new();
        let mut visit = |p: &PodInfo, labels: &Labels| {
            if p.key == pod.key {
                return;
            }
            let mut add = |key: &str, w: i64| {
                if let Some(val) = labels.get(key) {
                    *topo.entry((key.to_string(), val.clone())).or_insert(0) += w;
                }
            };
            if let Some(a) = pod.affinity.as_deref() {
                for t in &a.preferred_affinity {
                    if t.matches(p, &ns) {
                        add(&t.topology_key, t.weight as i64);
                    }
                }
                for t in &a.preferred_anti {
                    if t.matches(p, &ns) {
                        add(&t.topology_key, -(t.weight as i64));
                    }
                }
            }
            if let Some(a) = p.affinity.as_deref() {
                // hardPodAffinityWeight = 1
                for t in &a.required_affinity {
                    if t.matches(pod, &ns) {
                        add(&t.topology_key, 1);
                    }
                }
                for t in &a.preferred_affinity {
                    if t.matches(pod, &ns) {
                        add(&t.topology_key, t.weight as i64);
                    }
                }
                for t in &a.preferred_anti {
                    if t.matches(pod, &ns) {
                        add(&t.topology_key, -(t.weight as i64));
                    }
                }
            }
        };
        if has_pref {
            for n in &cache.nodes {
                for p in &n.usage.pods {
                    visit(p, &n.spec.labels);
                }
            }
        } else {
            for k in &cache.affinity_pods {
                if let Some(ps) = cache.pods.get(k)
                    && let Some(n) = ps.placed.as_deref().and_then(|n| cache.node(n))
                {
                    visit(&ps.info, &n.spec.labels);
                }
            }
        }
        if !topo.is_empty() {
            let raw: Vec<i64> = nodes
                .iter()
                .map(|&ni| {
                    let labels = &cache.nodes[ni].spec.labels;
                    topo.iter()
                        .filter(|((k, val), _)| labels.get(k) == Some(val))
                        .map(|(_, s)| *s)
                        .sum()
                })
                .collect();
            let max = raw.iter().copied().max().unwrap_or(0);
            let min = raw.iter().copied().min().unwrap_or(0);
            if max > min {
                for (i, r) in raw.iter().enumerate() {
                    total[i] += 2 * (MAX_NODE_SCORE * (r - min) / (max - min));
                }
            }
        }
    }
    total
}

/// Upstream `DefaultNormalizeScore`, then weighted into `total`.
fn add_normalized(total: &mut [i64], raw: &[i64], reverse: bool, weight: i64) {
    let max = raw.iter().copied().max().unwrap_or(0);
    for (t, r) in total.iter_mut().zip(raw) {
        let s = if max == 0 {
            if reverse { MAX_NODE_SCORE } else { 0 }
        } else {
            let s = MAX_NODE_SCORE * r / max;
            if reverse { MAX_NODE_SCORE - s } else { s }
        };
        *t += weight * s;
    }
}

/// How many feasible nodes to look for before scoring (upstream
/// `numFeasibleNodesToFind` with the adaptive percentage).
pub fn num_feasible_to_find(num_nodes: usize) -> usize {
    const MIN_FEASIBLE: usize = 100;
    if num_nodes < MIN_FEASIBLE {
        return num_nodes;
    }
    let pct = (50 - num_nodes as i64 / 125).max(5) as usize;
    (num_nodes * pct / 100).max(MIN_FEASIBLE)
}

/// xorshift64*: tie-breaking among equally scored nodes.
pub fn next_rand(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// The best-scored node, ties broken uniformly at random (upstream
/// `selectHost`'s reservoir sampling).
pub fn select_host(nodes: &[usize], scores: &[i64], rng: &mut u64) -> Option<usize> {
    let mut best: Option<usize> = None;
    let mut best_score = i64::MIN;
    let mut ties = 0u64;
    for (i, &s) in scores.iter().enumerate() {
        if s > best_score {
            best_score = s;
            best = Some(nodes[i]);
            ties = 1;
        } else if s == best_score {
            ties += 1;
            if next_rand(rng).is_multiple_of(ties) {
                best = Some(nodes[i]);
            }
        }
    }
    best
}

//! The scheduler's parsed view of Pods and Nodes. Watch events are turned
//! into these once (off the scheduling loop), so filtering and scoring never
//! touch JSON, quantities as strings or optional-field chains.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Container, Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub type Labels = BTreeMap<String, String>;

/// The label naming a pod's PodGroup (scheduler-plugins coscheduling).
pub const POD_GROUP_LABEL: &str = "scheduling.x-k8s.io/pod-group";
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";

// Upstream's defaults for containers without requests, used only for scoring
// (pkg/scheduler/util: DefaultMilliCPURequest, DefaultMemoryRequest).
const DEFAULT_MILLI_CPU: i64 = 100;
const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

// ------------------------------------------------------------ quantities

use crate::quantity::quantity_scaled;

fn qty_milli(q: &Quantity) -> i64 {
    quantity_scaled(&q.0, 3).unwrap_or(0)
}

fn qty_value(q: &Quantity) -> i64 {
    quantity_scaled(&q.0, 0).unwrap_or(0)
}

// ------------------------------------------------------------- resources

/// Requested or allocatable amounts: CPU in millicores, the rest in units.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral: i64,
    /// Extended resources (e.g. nvidia.com/gpu) and hugepages, sorted by name.
    pub scalar: Vec<(String, i64)>,
}

/// Resource names counted as scalar resources (upstream
/// `IsScalarResourceName`): extended resources, hugepages and attachable
/// volumes; `cpu`, `memory`, `ephemeral-storage` and `pods` are fields.
fn is_scalar(name: &str) -> bool {
    name.starts_with("hugepages-")
        || name.starts_with("attachable-volumes-")
        || (name.contains('/')
            && !name.starts_with("kubernetes.io/")
            && !name.starts_with("requests."))
}

impl Resources {
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Resources {
        let mut r = Resources::default();
        for (name, q) in list {
            match name.as_str() {
                "cpu" => r.milli_cpu = qty_milli(q),
                "memory" => r.memory = qty_value(q),
                "ephemeral-storage" => r.ephemeral = qty_value(q),
                n if is_scalar(n) => r.set_scalar(n, qty_value(q)),
                _ => {}
            }
        }
        r
    }

    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral == 0
            && self.scalar.iter().all(|(_, v)| *v == 0)
    }

    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or(0)
    }

    fn set_scalar(&mut self, name: &str, v: i64) {
        match self.scalar.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => self.scalar[i].1 = v,
            Err(i) => self.scalar.insert(i, (name.to_string(), v)),
        }
    }

    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral += o.ephemeral;
        for (n, v) in &o.scalar {
            let cur = self.scalar(n);
            self.set_scalar(n, cur + v);
        }
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral -= o.ephemeral;
        for (n, v) in &o.scalar {
            let cur = self.scalar(n);
            self.set_scalar(n, cur - v);
        }
    }

    pub fn max_with(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral = self.ephemeral.max(o.ephemeral);
        for (n, v) in &o.scalar {
            let cur = self.scalar(n);
            self.set_scalar(n, cur.max(*v));
        }
    }
}

/// A container's requests; a resource with only a limit requests its limit
/// (the API server's defaulting, applied here in case it did not run).
fn container_requests(c: &Container) -> Resources {
    let Some(res) = &c.resources else {
        return Resources::default();
    };
    let mut list: BTreeMap<String, Quantity> = res.limits.clone().unwrap_or_default();
    if let Some(req) = &res.requests {
        for (k, v) in req {
            list.insert(k.clone(), v.clone());
        }
    }
    Resources::from_list(&list)
}

/// Pod requests by upstream's rule (`resource.PodRequests`): containers are
/// summed; each regular init container runs alone (plus the sidecars started
/// before it), so the pod needs the max of that and the sum; restartable
/// init containers (sidecars) keep running and add to the sum; overhead is
/// added on top. `nonzero` substitutes upstream's scoring defaults for
/// unset cpu/memory.
fn pod_requests(pod: &Pod, nonzero: bool) -> Resources {
    let Some(spec) = &pod.spec else {
        return Resources::default();
    };
    let per = |c: &Container| {
        let mut r = container_requests(c);
        if nonzero {
            let explicit = |name: &str| {
                c.resources.as_ref().is_some_and(|res| {
                    res.requests.as_ref().is_some_and(|m| m.contains_key(name))
                        || res.limits.as_ref().is_some_and(|m| m.contains_key(name))
                })
            };
            if !explicit("cpu") {
                r.milli_cpu = DEFAULT_MILLI_CPU;
            }
            if !explicit("memory") {
                r.memory = DEFAULT_MEMORY;
            }
        }
        r
    };
    let mut reqs = Resources::default();
    for c in &spec.containers {
        reqs.add(&per(c));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let mut r = per(c);
        if c.restart_policy.as_deref() == Some("Always") {
            reqs.add(&r);
            sidecars.add(&r);
            r = sidecars.clone();
        } else {
            r.add(&sidecars);
        }
        init_max.max_with(&r);
    }
    reqs.max_with(&init_max);
    if let Some(overhead) = &spec.overhead {
        reqs.add(&Resources::from_list(overhead));
    }
    reqs
}

// -------------------------------------------------------------- selectors

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "In" => Op::In,
            "NotIn" => Op::NotIn,
            "Exists" => Op::Exists,
            "DoesNotExist" => Op::DoesNotExist,
            "Gt" => Op::Gt,
            "Lt" => Op::Lt,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
    pub values: Vec<String>,
}

impl Requirement {
    fn matches_value(&self, v: Option<&str>) -> bool {
        match self.op {
            Op::In => v.is_some_and(|v| self.values.iter().any(|x| x == v)),
            Op::NotIn => v.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            Op::Exists => v.is_some(),
            Op::DoesNotExist => v.is_none(),
            Op::Gt | Op::Lt => {
                let (Some(v), Some(bound)) = (v, self.values.first()) else {
                    return false;
                };
                match (v.parse::<i64>(), bound.parse::<i64>()) {
                    (Ok(v), Ok(b)) => {
                        if self.op == Op::Gt {
                            v > b
                        } else {
                            v < b
                        }
                    }
                    _ => false,
                }
            }
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_value(labels.get(&self.key).map(String::as_str))
    }
}

/// A metav1.LabelSelector. `None` where a selector is absent means
/// "matches nothing" in affinity terms and spread constraints; an empty
/// selector matches everything.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    pub reqs: Vec<Requirement>,
}

impl Selector {
    /// None for a selector that can never match (an unknown operator is
    /// rejected by validation upstream; here it fails closed).
    pub fn from_label_selector(s: &LabelSelector) -> Option<Selector> {
        let mut reqs = Vec::new();
        for (k, v) in s.match_labels.iter().flatten() {
            reqs.push(Requirement {
                key: k.clone(),
                op: Op::In,
                values: vec![v.clone()],
            });
        }
        for e in s.match_expressions.iter().flatten() {
            let op = Op::parse(&e.operator)?;
            if matches!(op, Op::Gt | Op::Lt) {
                return None;
            }
            reqs.push(Requirement {
                key: e.key.clone(),
                op,
                values: e.values.clone().unwrap_or_default(),
            });
        }
        Some(Selector { reqs })
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.reqs.iter().all(|r| r.matches(labels))
    }
}

/// One nodeSelectorTerm: expressions on labels and fields, ANDed. A term
/// with neither matches no node (upstream).
#[derive(Clone, Debug, Default)]
pub struct NodeTerm {
    pub labels: Vec<Requirement>,
    pub fields: Vec<Requirement>,
    pub invalid: bool,
}

impl NodeTerm {
    fn parse(t: &NodeSelectorTerm) -> NodeTerm {
        let mut term = NodeTerm::default();
        let conv = |e: &NodeSelectorRequirement| {
            Op::parse(&e.operator).map(|op| Requirement {
                key: e.key.clone(),
                op,
                values: e.values.clone().unwrap_or_default(),
            })
        };
        for e in t.match_expressions.iter().flatten() {
            match conv(e) {
                Some(r) => term.labels.push(r),
                None => term.invalid = true,
            }
        }
        for e in t.match_fields.iter().flatten() {
            match conv(e) {
                Some(r) if r.key == "metadata.name" && matches!(r.op, Op::In | Op::NotIn) => {
                    term.fields.push(r)
                }
                _ => term.invalid = true,
            }
        }
        term
    }

    pub fn matches(&self, node_name: &str, labels: &Labels) -> bool {
        if self.invalid || (self.labels.is_empty() && self.fields.is_empty()) {
            return false;
        }
        self.labels.iter().all(|r| r.matches(labels))
            && self.fields.iter().all(|r| r.matches_value(Some(node_name)))
    }
}

// ------------------------------------------------------ taints/tolerations

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: String,
}

#[derive(Clone, Debug)]
pub struct Toleration {
    pub key: String,
    pub exists: bool,
    pub value: String,
    pub effect: String,
}

impl Toleration {
    /// Upstream `Toleration.ToleratesTaint`.
    pub fn tolerates(&self, t: &Taint) -> bool {
        if !self.effect.is_empty() && self.effect != t.effect {
            return false;
        }
        if !self.key.is_empty() && self.key != t.key {
            return false;
        }
        if self.exists {
            return true;
        }
        // An empty key with operator Equal is invalid; it tolerates nothing.
        !self.key.is_empty() && self.value == t.value
    }
}

pub fn tolerated(tols: &[Toleration], t: &Taint) -> bool {
    tols.iter().any(|tol| tol.tolerates(t))
}

// --------------------------------------------------------------- affinity

/// A (anti-)affinity term: which pods it selects and over what topology.
#[derive(Clone, Debug)]
pub struct AffinityTerm {
    /// None: matches no pod (absent labelSelector).
    pub selector: Option<Selector>,
    pub namespaces: Vec<String>,
    /// Some: namespaces whose labels match also count (empty = all).
    pub ns_selector: Option<Selector>,
    pub topology_key: String,
    pub weight: i32,
}

impl AffinityTerm {
    fn parse(t: &PodAffinityTerm, owner: &Pod, weight: i32) -> AffinityTerm {
        let owner_labels = owner.metadata.labels.clone().unwrap_or_default();
        let mut selector = t
            .label_selector
            .as_ref()
            .and_then(Selector::from_label_selector);
        // matchLabelKeys / mismatchLabelKeys (beta, on in 1.33) fold the
        // owner's own label values into the selector.
        if let Some(sel) = selector.as_mut() {
            for k in t.match_label_keys.iter().flatten() {
                if let Some(v) = owner_labels.get(k) {
                    sel.reqs.push(Requirement {
                        key: k.clone(),
                        op: Op::In,
                        values: vec![v.clone()],
                    });
                }
            }
            for k in t.mismatch_label_keys.iter().flatten() {
                if let Some(v) = owner_labels.get(k) {
                    sel.reqs.push(Requirement {
                        key: k.clone(),
                        op: Op::NotIn,
                        values: vec![v.clone()],
                    });
                }
            }
        }
        let ns_selector = t.namespace_selector.as_ref().map(|s| {
            Selector::from_label_selector(s).unwrap_or(Selector {
                // An unparseable namespace selector selects nothing.
                reqs: vec![Requirement {
                    key: String::new(),
                    op: Op::In,
                    values: vec![],
                }],
            })
        });
        let mut namespaces = t.namespaces.clone().unwrap_or_default();
        if namespaces.is_empty() && ns_selector.is_none() {
            namespaces.push(owner.metadata.namespace.clone().unwrap_or_default());
        }
        AffinityTerm {
            selector,
            namespaces,
            ns_selector,
            topology_key: t.topology_key.clone(),
            weight,
        }
    }

    /// Whether `pod` is selected by this term; `ns_labels` looks up a
    /// namespace's labels for namespaceSelector.
    pub fn matches(&self, pod: &PodInfo, ns_labels: &dyn Fn(&str) -> Option<Labels>) -> bool {
        let Some(sel) = &self.selector else {
            return false;
        };
        let ns_ok = self.namespaces.contains(&pod.namespace)
            || self.ns_selector.as_ref().is_some_and(|s| {
                s.reqs.is_empty() || ns_labels(&pod.namespace).is_some_and(|l| s.matches(&l))
            });
        ns_ok && sel.matches(&pod.labels)
    }
}

#[derive(Clone, Debug, Default)]
pub struct PodAffinity {
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<AffinityTerm>,
    pub preferred_anti: Vec<AffinityTerm>,
}

impl PodAffinity {
    pub fn is_empty(&self) -> bool {
        self.required_affinity.is_empty()
            && self.required_anti.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti.is_empty()
    }
}

#[derive(Clone, Debug)]
pub struct SpreadConstraint {
    pub max_skew: i32,
    pub topology_key: String,
    pub hard: bool,
    pub selector: Option<Selector>,
    pub min_domains: i32,
    /// nodeAffinityPolicy Honor (default): only nodes matching the pod's
    /// nodeSelector/required affinity count as domains.
    pub honor_affinity: bool,
    /// nodeTaintsPolicy Honor: nodes with untolerated taints don't count.
    pub honor_taints: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i32,
}

impl HostPort {
    pub fn conflicts(&self, o: &HostPort) -> bool {
        self.port == o.port
            && self.protocol == o.protocol
            && (self.ip == o.ip || self.ip == "0.0.0.0" || o.ip == "0.0.0.0")
    }
}

// -------------------------------------------------------------------- pods

/// What the scheduler needs of a Pod.
#[derive(Debug)]
pub struct PodInfo {
    pub key: Arc<str>,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: Labels,
    pub node_name: Option<String>,
    /// schedulerName is default-scheduler (or unset).
    pub ours: bool,
    pub terminal: bool,
    pub deleting: bool,
    pub gated: bool,
    pub priority_class: String,
    pub spec_priority: Option<i32>,
    pub preempt_never: bool,
    pub requests: Resources,
    pub nonzero_cpu: i64,
    pub nonzero_mem: i64,
    pub host_ports: Vec<HostPort>,
    pub node_selector: Vec<(String, String)>,
    pub required_terms: Option<Vec<NodeTerm>>,
    pub preferred_terms: Vec<(i32, NodeTerm)>,
    pub tolerations: Vec<Toleration>,
    pub affinity: Option<Box<PodAffinity>>,
    pub spread: Vec<SpreadConstraint>,
    pub images: Vec<String>,
    pub nominated_node: Option<String>,
    /// Creation time, ms since the epoch (queue order, group order).
    pub created_ms: i64,
    /// status.startTime (or creation), ms (preemption tie-breaks).
    pub start_ms: i64,
    pub group: Option<String>,
    /// Current PodScheduled condition: (status, reason, message).
    pub scheduled_cond: Option<(String, String, String)>,
    pub disruption_target: bool,
    /// Hash of labels + spec: tells scheduling-relevant updates from
    /// status-only ones.
    pub fingerprint: u64,
}

impl PodInfo {
    pub fn from_pod(pod: &Pod) -> PodInfo {
        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let labels = meta.labels.clone().unwrap_or_default();
        let default_spec = Default::default();
        let spec = pod.spec.as_ref().unwrap_or(&default_spec);
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("");

        let mut fp = std::collections::hash_map::DefaultHasher::new();
        labels.hash(&mut fp);
        if let Ok(bytes) = serde_json::to_vec(spec) {
            bytes.hash(&mut fp);
        }

        let host_network = spec.host_network.unwrap_or(false);
        let mut host_ports = Vec::new();
        let all_containers = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten());
        for c in all_containers.clone() {
            for p in c.ports.iter().flatten() {
                let mut hp = p.host_port.unwrap_or(0);
                if hp <= 0 && host_network {
                    hp = p.container_port;
                }
                if hp <= 0 {
                    continue;
                }
                host_ports.push(HostPort {
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    ip: p
                        .host_ip
                        .clone()
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "0.0.0.0".into()),
                    port: hp,
                });
            }
        }

        let node_aff = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref());
        let required_terms = node_aff
            .and_then(|na| {
                na.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|ns| ns.node_selector_terms.iter().map(NodeTerm::parse).collect());
        let preferred_terms = node_aff
            .and_then(|na| {
                na.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|p| {
                p.iter()
                    .filter(|t| t.weight != 0)
                    .map(|t| (t.weight, NodeTerm::parse(&t.preference)))
                    .collect()
            })
            .unwrap_or_default();

        let mut aff = PodAffinity::default();
        if let Some(a) = spec.affinity.as_ref() {
            if let Some(pa) = &a.pod_affinity {
                for t in pa
                    .required_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                {
                    aff.required_affinity.push(AffinityTerm::parse(t, pod, 1));
                }
                for t in pa
                    .preferred_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                {
                    aff.preferred_affinity.push(AffinityTerm::parse(
                        &t.pod_affinity_term,
                        pod,
                        t.weight,
                    ));
                }
            }
            if let Some(pa) = &a.pod_anti_affinity {
                for t in pa
                    .required_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                {
                    aff.required_anti.push(AffinityTerm::parse(t, pod, 1));
                }
                for t in pa
                    .preferred_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                {
                    aff.preferred_anti.push(AffinityTerm::parse(
                        &t.pod_affinity_term,
                        pod,
                        t.weight,
                    ));
                }
            }
        }

        let spread = spec
            .topology_spread_constraints
            .iter()
            .flatten()
            .map(|c| {
                let mut selector = c
                    .label_selector
                    .as_ref()
                    .and_then(Selector::from_label_selector);
                if let Some(sel) = selector.as_mut() {
                    for k in c.match_label_keys.iter().flatten() {
                        if let Some(v) = labels.get(k) {
                            sel.reqs.push(Requirement {
                                key: k.clone(),
                                op: Op::In,
                                values: vec![v.clone()],
                            });
                        }
                    }
                }
                SpreadConstraint {
                    max_skew: c.max_skew.max(1),
                    topology_key: c.topology_key.clone(),
                    hard: c.when_unsatisfiable != "ScheduleAnyway",
                    selector,
                    min_domains: c.min_domains.unwrap_or(1).max(1),
                    honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                    honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
                }
            })
            .collect();

        let tolerations = spec
            .tolerations
            .iter()
            .flatten()
            .map(|t| Toleration {
                key: t.key.clone().unwrap_or_default(),
                exists: t.operator.as_deref() == Some("Exists"),
                value: t.value.clone().unwrap_or_default(),
                effect: t.effect.clone().unwrap_or_default(),
            })
            .collect();

        let scheduled_cond = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
            .map(|c| {
                (
                    c.status.clone(),
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default(),
                )
            });
        let disruption_target = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "DisruptionTarget" && c.status == "True")
            });

        let nonzero = pod_requests(pod, true);
        let created_ms = meta
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond())
            .unwrap_or(0);
        let start_ms = status
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.as_millisecond())
            .unwrap_or(created_ms);

        PodInfo {
            key: format!("{namespace}/{name}").into(),
            uid: meta.uid.clone().unwrap_or_default(),
            node_name: spec.node_name.clone().filter(|n| !n.is_empty()),
            ours: spec
                .scheduler_name
                .as_deref()
                .is_none_or(|s| s.is_empty() || s == DEFAULT_SCHEDULER),
            terminal: matches!(phase, "Succeeded" | "Failed"),
            deleting: meta.deletion_timestamp.is_some(),
            gated: spec
                .scheduling_gates
                .as_ref()
                .is_some_and(|g| !g.is_empty()),
            priority_class: spec.priority_class_name.clone().unwrap_or_default(),
            spec_priority: spec.priority,
            preempt_never: spec.preemption_policy.as_deref() == Some("Never"),
            requests: pod_requests(pod, false),
            nonzero_cpu: nonzero.milli_cpu,
            nonzero_mem: nonzero.memory,
            host_ports,
            node_selector: spec
                .node_selector
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            required_terms,
            preferred_terms,
            tolerations,
            affinity: if aff.is_empty() {
                None
            } else {
                Some(Box::new(aff))
            },
            spread,
            images: all_containers
                .filter_map(|c| c.image.as_deref())
                .map(normalize_image)
                .collect(),
            nominated_node: status
                .and_then(|s| s.nominated_node_name.clone())
                .filter(|n| !n.is_empty()),
            created_ms,
            start_ms,
            group: labels
                .get(POD_GROUP_LABEL)
                .filter(|g| !g.is_empty())
                .cloned(),
            scheduled_cond,
            disruption_target,
            fingerprint: fp.finish(),
            namespace,
            name,
            labels,
        }
    }

    /// Whether the pod's nodeSelector and required node affinity accept a
    /// node (upstream `RequiredNodeAffinity.Match`).
    pub fn node_affinity_matches(&self, node_name: &str, labels: &Labels) -> bool {
        if !self
            .node_selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            return false;
        }
        match &self.required_terms {
            None => true,
            Some(terms) => terms.iter().any(|t| t.matches(node_name, labels)),
        }
    }

    pub fn has_required_anti(&self) -> bool {
        self.affinity
            .as_ref()
            .is_some_and(|a| !a.required_anti.is_empty())
    }
}

/// Image names as nodes report them: a missing tag means `:latest`, and
/// Docker Hub's implicit prefixes are dropped.
pub fn normalize_image(image: &str) -> String {
    let mut s = image.trim();
    for p in [
        "docker.io/library/",
        "docker.io/",
        "index.docker.io/library/",
    ] {
        if let Some(rest) = s.strip_prefix(p) {
            s = rest;
            break;
        }
    }
    let s = s.strip_prefix("library/").unwrap_or(s);
    let last = s.rsplit('/').next().unwrap_or(s);
    if last.contains(':') || last.contains('@') || s.contains('@') {
        s.to_string()
    } else {
        format!("{s}:latest")
    }
}

// ------------------------------------------------------------------- nodes

/// What the scheduler needs of a Node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub labels: Labels,
    /// spec.taints, plus the not-ready/unreachable NoSchedule taint the node
    /// lifecycle controller would add when the Ready condition is not True
    /// (TaintNodesByCondition), so a NotReady node is filtered even before
    /// that controller acts.
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub allocatable: Resources,
    pub allowed_pods: i64,
    pub images: HashMap<String, i64>,
}

impl NodeSpec {
    pub fn from_node(node: &Node) -> NodeSpec {
        let name = node.metadata.name.clone().unwrap_or_default();
        let spec = node.spec.as_ref();
        let status = node.status.as_ref();
        let mut taints: Vec<Taint> = spec
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .map(|t| Taint {
                key: t.key.clone(),
                value: t.value.clone().unwrap_or_default(),
                effect: t.effect.clone(),
            })
            .collect();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.clone());
        let synth = match ready.as_deref() {
            Some("True") => None,
            Some("False") => Some("node.kubernetes.io/not-ready"),
            // Unknown, or a node that never reported.
            _ => Some("node.kubernetes.io/unreachable"),
        };
        if let Some(key) = synth
            && !taints
                .iter()
                .any(|t| t.key == key && t.effect == "NoSchedule")
        {
            taints.push(Taint {
                key: key.to_string(),
                value: String::new(),
                effect: "NoSchedule".into(),
            });
        }
        let list = status
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
            .cloned()
            .unwrap_or_default();
        let allocatable = Resources::from_list(&list);
        let allowed_pods = list.get("pods").map(qty_value).unwrap_or(0);
        let mut images = HashMap::new();
        for img in status.and_then(|s| s.images.as_ref()).into_iter().flatten() {
            let size = img.size_bytes.unwrap_or(0);
            for n in img.names.iter().flatten() {
                images.insert(normalize_image(n), size);
            }
        }
        NodeSpec {
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints,
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            allocatable,
            allowed_pods,
            images,
            name,
        }
    }

    /// Whether anything the scheduler looks at differs.
    pub fn same_as(&self, o: &NodeSpec) -> bool {
        self.labels == o.labels
            && self.taints == o.taints
            && self.unschedulable == o.unschedulable
            && self.allocatable == o.allocatable
            && self.allowed_pods == o.allowed_pods
            && self.images == o.images
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(quantity_scaled("100m", 3), Some(100));
        assert_eq!(quantity_scaled("1", 3), Some(1000));
        assert_eq!(quantity_scaled("0.5", 3), Some(500));
        assert_eq!(quantity_scaled("1.5Gi", 0), Some(1610612736));
        assert_eq!(quantity_scaled("32Gi", 0), Some(34359738368));
        assert_eq!(quantity_scaled("1k", 0), Some(1000));
        assert_eq!(quantity_scaled("1e3", 0), Some(1000));
        assert_eq!(quantity_scaled("1m", 0), Some(1));
        assert_eq!(quantity_scaled("250M", 0), Some(250_000_000));
        assert_eq!(quantity_scaled("x", 0), None);
        assert_eq!(quantity_scaled("1Qi", 0), None);
    }

    #[test]
    fn images() {
        assert_eq!(normalize_image("nginx"), "nginx:latest");
        assert_eq!(normalize_image("docker.io/library/nginx:1.2"), "nginx:1.2");
        assert_eq!(
            normalize_image("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
    }
}

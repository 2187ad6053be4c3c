//! The scheduler cache (upstream `internal/cache`): every node with the sum
//! of what the pods placed on it request, kept current from watch events
//! and from the scheduler's own decisions. A pod the scheduler has decided
//! to bind is *assumed* on its node at once, before the API has answered,
//! so the next decision already sees it; a failed bind forgets it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::model::{HostPort, NodeSpec, PodInfo, Resources};

/// What the pods placed on a node take from it.
#[derive(Debug, Default)]
pub struct NodeUsage {
    pub requested: Resources,
    pub nonzero_cpu: i64,
    pub nonzero_mem: i64,
    pub pods: Vec<Arc<PodInfo>>,
    pub ports: Vec<HostPort>,
}

impl NodeUsage {
    fn add(&mut self, p: &Arc<PodInfo>) {
        self.requested.add(&p.requests);
        self.nonzero_cpu += p.nonzero_cpu;
        self.nonzero_mem += p.nonzero_mem;
        self.ports.extend(p.host_ports.iter().cloned());
        self.pods.push(p.clone());
    }

    fn remove(&mut self, key: &str) -> bool {
        let Some(i) = self.pods.iter().position(|p| &*p.key == key) else {
            return false;
        };
        let p = self.pods.swap_remove(i);
        self.requested.sub(&p.requests);
        self.nonzero_cpu -= p.nonzero_cpu;
        self.nonzero_mem -= p.nonzero_mem;
        for hp in &p.host_ports {
            if let Some(j) = self.ports.iter().position(|x| x == hp) {
                self.ports.swap_remove(j);
            }
        }
        true
    }

    fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
}

#[derive(Debug)]
pub struct NodeEntry {
    pub spec: NodeSpec,
    pub usage: NodeUsage,
}

#[derive(Debug)]
pub struct PodState {
    pub info: Arc<PodInfo>,
    /// The node whose usage includes this pod (bound or assumed).
    pub placed: Option<String>,
    /// Placed by this scheduler, and the watch has not shown it bound yet.
    pub assumed: bool,
}

/// What an upsert changed, for the queue's cluster events.
#[derive(Debug, Default)]
pub struct PodChange {
    /// The pod was counted on a node before / is now.
    pub was_placed: bool,
    pub now_placed: bool,
    /// The pod is pending: ours to schedule, not placed.
    pub pending: bool,
    /// A pending pod's spec or labels changed (or it is new).
    pub spec_changed: bool,
    pub is_new: bool,
}

#[derive(Default)]
pub struct Cache {
    pub nodes: Vec<NodeEntry>,
    pub node_index: HashMap<String, usize>,
    /// Usage of pods bound to nodes the cache does not know (yet).
    orphan_usage: HashMap<String, NodeUsage>,
    pub pods: HashMap<Arc<str>, PodState>,
    /// (namespace, group) → live member pods.
    pub groups: HashMap<(String, String), HashSet<Arc<str>>>,
    /// Placed pods with required anti-affinity terms.
    pub anti_pods: HashSet<Arc<str>>,
    /// Placed pods with any pod (anti-)affinity terms (scoring).
    pub affinity_pods: HashSet<Arc<str>>,
    /// Image name → how many nodes have it (image locality spread).
    pub image_nodes: HashMap<String, usize>,
    /// Nodes with at least one PreferNoSchedule taint.
    pub prefer_no_schedule_nodes: usize,
    /// Pending pods nominated to a node: pod → node, node → pods.
    pub nominated: HashMap<Arc<str>, String>,
    pub nominated_on: HashMap<String, Vec<Arc<str>>>,
}

impl Cache {
    pub fn node(&self, name: &str) -> Option<&NodeEntry> {
        self.node_index.get(name).map(|&i| &self.nodes[i])
    }

    fn usage_mut(&mut self, node: &str) -> &mut NodeUsage {
        match self.node_index.get(node) {
            Some(&i) => &mut self.nodes[i].usage,
            None => self.orphan_usage.entry(node.to_string()).or_default(),
        }
    }

    fn place(&mut self, info: &Arc<PodInfo>, node: &str) {
        self.usage_mut(node).add(info);
        if info.has_required_anti() {
            self.anti_pods.insert(info.key.clone());
        }
        if info.affinity.is_some() {
            self.affinity_pods.insert(info.key.clone());
        }
    }

    fn unplace(&mut self, key: &str, node: &str) {
        let u = self.usage_mut(node);
        u.remove(key);
        if u.is_empty() && !self.node_index.contains_key(node) {
            self.orphan_usage.remove(node);
        }
        self.anti_pods.remove(key);
        self.affinity_pods.remove(key);
    }

    // ------------------------------------------------------------- nodes

    /// Adds or replaces a node; true if anything the scheduler looks at
    /// changed.
    pub fn upsert_node(&mut self, spec: NodeSpec) -> bool {
        self.count_node_extras(&spec, 1);
        if let Some(&i) = self.node_index.get(&spec.name) {
            let old = std::mem::replace(&mut self.nodes[i].spec, spec);
            self.count_node_extras(&old, -1);
            return !old.same_as(&self.nodes[i].spec);
        }
        let usage = self.orphan_usage.remove(&spec.name).unwrap_or_default();
        self.node_index.insert(spec.name.clone(), self.nodes.len());
        self.nodes.push(NodeEntry { spec, usage });
        true
    }

    pub fn remove_node(&mut self, name: &str) -> bool {
        let Some(i) = self.node_index.remove(name) else {
            return false;
        };
        let entry = self.nodes.swap_remove(i);
        if i < self.nodes.len() {
            let moved = self.nodes[i].spec.name.clone();
            self.node_index.insert(moved, i);
        }
        self.count_node_extras(&entry.spec, -1);
        if !entry.usage.is_empty() {
            self.orphan_usage.insert(name.to_string(), entry.usage);
        }
        true
    }

    fn count_node_extras(&mut self, spec: &NodeSpec, delta: isize) {
        for img in spec.images.keys() {
            let c = self.image_nodes.entry(img.clone()).or_default();
            *c = c.saturating_add_signed(delta);
            if *c == 0 {
                self.image_nodes.remove(img);
            }
        }
        if spec.taints.iter().any(|t| t.effect == "PreferNoSchedule") {
            self.prefer_no_schedule_nodes =
                self.prefer_no_schedule_nodes.saturating_add_signed(delta);
        }
    }

    // -------------------------------------------------------------- pods

    /// Applies a pod from the watch.
    pub fn upsert_pod(&mut self, info: Arc<PodInfo>) -> PodChange {
        let key = info.key.clone();
        let mut change = PodChange::default();
        if let Some(old) = self.pods.get(&key)
            && old.info.uid != info.uid
        {
            // Same name, new object: the old one is gone.
            let old_placed = old.placed.is_some();
            self.remove_pod(&key);
            change.was_placed = old_placed;
        }
        let old = self.pods.remove(&key);
        if let Some(o) = &old {
            change.was_placed |= o.placed.is_some();
            self.set_group(&o.info, false);
        } else {
            change.is_new = true;
        }
        let live = !info.terminal;
        let (mut placed, mut assumed) = match &old {
            Some(o) => (o.placed.clone(), o.assumed),
            None => (None, false),
        };
        if let Some(n) = &placed {
            self.unplace(&key, &n.clone());
        }
        if !live {
            placed = None;
            assumed = false;
        } else if let Some(n) = &info.node_name {
            placed = Some(n.clone());
            assumed = false;
        } else if !assumed {
            placed = None;
        }
        if let Some(n) = &placed {
            self.place(&info, &n.clone());
        }
        change.now_placed = placed.is_some();
        change.pending = live && placed.is_none() && info.ours && !info.deleting;
        change.spec_changed = old
            .as_ref()
            .is_none_or(|o| o.info.fingerprint != info.fingerprint);
        // Nominations only matter for pods still waiting.
        if change.pending && !info.deleting {
            if let Some(n) = &info.nominated_node {
                self.set_nominated(&key, Some(n.clone()));
            }
        } else {
            self.set_nominated(&key, None);
        }
        if live && !info.deleting {
            self.set_group(&info, true);
        }
        self.pods.insert(
            key,
            PodState {
                info,
                placed,
                assumed,
            },
        );
        change
    }

    /// Removes a pod; returns its last state.
    pub fn remove_pod(&mut self, key: &str) -> Option<PodState> {
        let st = self.pods.remove(key)?;
        if let Some(n) = &st.placed {
            self.unplace(key, n);
        }
        self.set_group(&st.info, false);
        self.set_nominated(key, None);
        Some(st)
    }

    fn set_group(&mut self, info: &PodInfo, member: bool) {
        let Some(g) = &info.group else { return };
        let k = (info.namespace.clone(), g.clone());
        if member {
            self.groups.entry(k).or_default().insert(info.key.clone());
        } else if let Some(set) = self.groups.get_mut(&k) {
            set.remove(&info.key);
            if set.is_empty() {
                self.groups.remove(&k);
            }
        }
    }

    /// Counts a pending pod on `node` before the API has bound it.
    pub fn assume(&mut self, key: &str, node: &str) -> bool {
        let Some(st) = self.pods.get_mut(key) else {
            return false;
        };
        if st.placed.is_some() {
            return false;
        }
        st.placed = Some(node.to_string());
        st.assumed = true;
        let info = st.info.clone();
        self.place(&info, node);
        self.set_nominated(key, None);
        true
    }

    /// Undoes [`Cache::assume`] (a failed bind, or a gang that did not fit).
    pub fn forget(&mut self, key: &str) {
        let Some(st) = self.pods.get_mut(key) else {
            return;
        };
        if !st.assumed {
            return;
        }
        st.assumed = false;
        if let Some(n) = st.placed.take() {
            self.unplace(key, &n);
        }
    }

    pub fn set_nominated(&mut self, key: &str, node: Option<String>) {
        if let Some(old) = self.nominated.remove(key)
            && let Some(list) = self.nominated_on.get_mut(&old)
        {
            list.retain(|k| &**k != key);
            if list.is_empty() {
                self.nominated_on.remove(&old);
            }
        }
        if let Some(n) = node {
            let k: Arc<str> = Arc::from(key);
            self.nominated_on
                .entry(n.clone())
                .or_default()
                .push(k.clone());
            self.nominated.insert(k, n);
        }
    }

    /// Pending pods of this scheduler (not placed, not being deleted).
    pub fn is_pending(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|st| {
            st.placed.is_none() && st.info.ours && !st.info.terminal && !st.info.deleting
        })
    }
}

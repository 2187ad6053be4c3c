//! kube-scheduler inside skiff: binds pending pods to nodes through the
//! `pods/binding` subresource.
//!
//! Shape (upstream's, simplified): watchers (kube-runtime) feed a single
//! scheduling loop that owns the cache of nodes and placed pods and the
//! scheduling queue. The loop picks the highest-priority pending pod, runs
//! the filters over the nodes (stopping after upstream's adaptive number of
//! feasible nodes), scores the feasible ones, *assumes* the pod on the
//! winner at once and hands the binding to a task, so many bindings are in
//! flight while the loop moves on. A pod that fits nowhere may preempt
//! lower-priority pods; otherwise it is marked `PodScheduled=False`
//! (`Unschedulable`), gets a `FailedScheduling` event and waits in the queue
//! for a cluster change or its backoff. Pods of a PodGroup (coscheduling)
//! are placed all-or-nothing.

mod actions;
mod cache;
mod framework;
mod model;
mod preemption;
mod queue;

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::events::Recorder;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use actions::Actions;
use cache::Cache;
use framework::{Cycle, Priorities, Status, View, filter, fit_message, num_feasible_to_find};
use model::{Labels, NodeSpec, PodInfo, Selector};
use preemption::Pdb;
use queue::{Queue, flags};

/// Pods scheduled per turn of the loop before it looks at new events.
const BATCH: usize = 256;

/// Messages into the scheduling loop.
pub enum Msg {
    Pod(Update<Arc<PodInfo>>),
    Node(Update<NodeSpec>),
    PriorityClass(Update<(String, i32, bool)>),
    PodGroup(Update<((String, String), i32)>),
    Namespace(Update<(String, Labels)>),
    Pdb(Update<(String, Pdb)>),
    /// A binding finished (err: why it failed).
    Bound {
        key: Arc<str>,
        uid: String,
        err: Option<String>,
    },
}

/// A watched object changed. `Delete` carries the object's key; `Synced`
/// follows the first complete list.
pub enum Update<T> {
    Apply(T),
    Delete(String),
    Synced,
}

/// Runs the scheduler until the process shuts down. Like kube-scheduler it
/// schedules only while it holds the `kube-scheduler` Lease, so servers
/// sharing a datastore do not race each other's bindings.
pub async fn run(client: Client) {
    let identity = format!("{}_{}", hostname(), uuid::Uuid::new_v4());
    crate::controllers::leader::run_while_leader(
        client,
        "kube-scheduler",
        identity.clone(),
        move |c| {
            let id = identity.clone();
            async move { Scheduler::run(c, id).await }
        },
    )
    .await;
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "skiff".into())
}

// ---------------------------------------------------------------- watches

/// Watch retry: 100 ms doubling to 2 s, so a CRD installed later (PodGroup)
/// is picked up within seconds.
struct RetryBackoff(Duration);

impl Iterator for RetryBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let d = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(2));
        Some(d)
    }
}

impl Backoff for RetryBackoff {
    fn reset(&mut self) {
        self.0 = Duration::from_millis(100);
    }
}

/// Forwards a watch into the loop, converting objects off the loop's
/// thread; turns re-lists into deletes of what disappeared.
async fn forward<K, T>(
    api: Api<K>,
    cfg: watcher::Config,
    tx: mpsc::UnboundedSender<Msg>,
    key: impl Fn(&K) -> String,
    conv: impl Fn(&K) -> Option<T>,
    wrap: impl Fn(Update<T>) -> Msg,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut known: HashSet<String> = HashSet::new();
    let mut relist: Option<HashSet<String>> = None;
    let mut synced = false;
    let stream = watch(api, cfg).backoff(RetryBackoff(Duration::from_millis(100)));
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        let sent = match ev {
            Ok(Event::Init) => {
                relist = Some(HashSet::new());
                Ok(())
            }
            Ok(Event::InitApply(o)) | Ok(Event::Apply(o)) => {
                let k = key(&o);
                if let Some(seen) = relist.as_mut() {
                    seen.insert(k.clone());
                }
                match conv(&o) {
                    Some(t) => {
                        known.insert(k);
                        tx.send(wrap(Update::Apply(t)))
                    }
                    None if known.remove(&k) => tx.send(wrap(Update::Delete(k))),
                    None => Ok(()),
                }
            }
            Ok(Event::InitDone) => {
                let mut res = Ok(());
                if let Some(seen) = relist.take() {
                    for k in known.iter().filter(|k| !seen.contains(*k)) {
                        res = res.and(tx.send(wrap(Update::Delete(k.clone()))));
                    }
                    known.retain(|k| seen.contains(k));
                }
                if !synced {
                    synced = true;
                    res = res.and(tx.send(wrap(Update::Synced)));
                }
                res
            }
            Ok(Event::Delete(o)) => {
                let k = key(&o);
                known.remove(&k);
                tx.send(wrap(Update::Delete(k)))
            }
            Err(e) => {
                tracing::debug!("scheduler watch: {e}");
                Ok(())
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

fn ns_name<K: Resource>(o: &K) -> String {
    let m = o.meta();
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or(""),
        m.name.as_deref().unwrap_or("")
    )
}

fn name_of<K: Resource>(o: &K) -> String {
    o.meta().name.clone().unwrap_or_default()
}

/// Aborts the watch tasks when the loop ends (lost leadership, shutdown).
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

fn start_watches(client: &Client, tx: &mpsc::UnboundedSender<Msg>) -> Tasks {
    let mut tasks = Vec::new();
    // Terminal pods release their resources; the API server turns a pod
    // reaching a terminal phase into a DELETED event for this selector.
    let pods: Api<Pod> = Api::all(client.clone());
    tasks.push(tokio::spawn(forward(
        pods,
        watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed"),
        tx.clone(),
        ns_name,
        |p: &Pod| Some(Arc::new(PodInfo::from_pod(p))),
        Msg::Pod,
    )));
    let nodes: Api<Node> = Api::all(client.clone());
    tasks.push(tokio::spawn(forward(
        nodes,
        watcher::Config::default(),
        tx.clone(),
        name_of,
        |n: &Node| Some(NodeSpec::from_node(n)),
        Msg::Node,
    )));
    let pcs: Api<PriorityClass> = Api::all(client.clone());
    tasks.push(tokio::spawn(forward(
        pcs,
        watcher::Config::default(),
        tx.clone(),
        name_of,
        |pc: &PriorityClass| Some((name_of(pc), pc.value, pc.global_default.unwrap_or(false))),
        Msg::PriorityClass,
    )));
    let nss: Api<Namespace> = Api::all(client.clone());
    tasks.push(tokio::spawn(forward(
        nss,
        watcher::Config::default(),
        tx.clone(),
        name_of,
        |n: &Namespace| Some((name_of(n), n.metadata.labels.clone().unwrap_or_default())),
        Msg::Namespace,
    )));
    let pdbs: Api<PodDisruptionBudget> = Api::all(client.clone());
    tasks.push(tokio::spawn(forward(
        pdbs,
        watcher::Config::default(),
        tx.clone(),
        ns_name,
        |p: &PodDisruptionBudget| {
            Some((
                ns_name(p),
                Pdb {
                    namespace: p.metadata.namespace.clone().unwrap_or_default(),
                    selector: p
                        .spec
                        .as_ref()
                        .and_then(|s| s.selector.as_ref())
                        .and_then(Selector::from_label_selector),
                    disruptions_allowed: p
                        .status
                        .as_ref()
                        .map(|s| s.disruptions_allowed)
                        .unwrap_or(0),
                },
            ))
        },
        Msg::Pdb,
    )));
    // PodGroups exist only once the user installs the scheduler-plugins
    // CRD; until then this watch fails and retries.
    let gvk = GroupVersionKind::gvk("scheduling.x-k8s.io", "v1alpha1", "PodGroup");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "podgroups");
    let groups: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    tasks.push(tokio::spawn(forward(
        groups,
        watcher::Config::default(),
        tx.clone(),
        ns_name,
        |g: &DynamicObject| {
            let min = g
                .data
                .pointer("/spec/minMember")
                .and_then(|v| v.as_i64())
                .unwrap_or(1)
                .clamp(0, i32::MAX as i64) as i32;
            Some((
                (g.metadata.namespace.clone().unwrap_or_default(), name_of(g)),
                min,
            ))
        },
        Msg::PodGroup,
    )));
    Tasks(tasks)
}

// --------------------------------------------------------------- the loop

const SYNC_PODS: u8 = 1;
const SYNC_NODES: u8 = 2;
const SYNC_PCS: u8 = 4;
const SYNC_NS: u8 = 8;
const SYNC_PDBS: u8 = 16;
const SYNC_ALL: u8 = 31;

/// A scheduling attempt that found no node.
struct Failure {
    statuses: Vec<(usize, Status)>,
    num_nodes: usize,
    cycle: Option<Cycle>,
}

impl Failure {
    fn message(&self) -> String {
        let s: Vec<Status> = self.statuses.iter().map(|(_, s)| s.clone()).collect();
        fit_message(self.num_nodes, &s)
    }

    fn flags(&self) -> u32 {
        if self.num_nodes == 0 {
            return flags::NODE;
        }
        self.statuses.iter().fold(0, |f, (_, s)| f | s.flag)
    }
}

/// Where the loop's time goes, logged at debug level while it is busy.
struct Stats {
    since: Instant,
    messages: usize,
    attempts: usize,
    handling: Duration,
    scheduling: Duration,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            since: Instant::now(),
            messages: 0,
            attempts: 0,
            handling: Duration::ZERO,
            scheduling: Duration::ZERO,
        }
    }
}

impl Stats {
    fn maybe_log(&mut self) {
        if self.since.elapsed() < Duration::from_secs(5) {
            return;
        }
        if self.attempts > 0 || self.messages > 0 {
            tracing::debug!(
                messages = self.messages,
                attempts = self.attempts,
                handling_ms = self.handling.as_millis() as u64,
                scheduling_ms = self.scheduling.as_millis() as u64,
                "scheduler loop"
            );
        }
        *self = Stats::default();
    }
}

struct Scheduler {
    actions: Actions,
    cache: Cache,
    queue: Queue,
    prio: Priorities,
    pod_groups: HashMap<(String, String), i32>,
    pod_groups_synced: bool,
    namespaces: HashMap<String, Labels>,
    pdbs: HashMap<String, Pdb>,
    synced: u8,
    /// Cluster-event flags gathered since the queue last saw them.
    events: u32,
    next_start: usize,
    rng: u64,
    /// Per pending pod: the FailedScheduling recorder (new when the message
    /// changes, so the event shows the current text) and its message.
    fail_events: HashMap<Arc<str>, (Recorder, String)>,
    /// Per pending pod: the (reason, message, nominated) last written.
    written: HashMap<Arc<str>, (String, String, Option<String>)>,
}

impl Scheduler {
    async fn run(client: Client, identity: String) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _tasks = start_watches(&client, &tx);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15)
            | 1;
        let mut s = Scheduler {
            actions: Actions::new(client, &identity, tx),
            cache: Cache::default(),
            queue: Queue::default(),
            prio: Priorities::default(),
            pod_groups: HashMap::new(),
            pod_groups_synced: false,
            namespaces: HashMap::new(),
            pdbs: HashMap::new(),
            synced: 0,
            events: 0,
            next_start: 0,
            rng: seed,
            fail_events: HashMap::new(),
            written: HashMap::new(),
        };
        tracing::info!("scheduler started");
        let mut stats = Stats::default();
        loop {
            // Take in everything that happened, then act on it.
            let t0 = Instant::now();
            let mut n = 0;
            loop {
                match rx.try_recv() {
                    Ok(m) => s.handle(m),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
                n += 1;
                if n >= 8192 {
                    break;
                }
            }
            let now = Instant::now();
            stats.messages += n;
            stats.handling += now - t0;
            if s.events != 0 {
                s.queue.on_event(s.events, now);
                s.events = 0;
            }
            if s.synced == SYNC_ALL {
                s.queue.flush(now);
                if s.queue.has_active() {
                    for _ in 0..BATCH {
                        let Some(key) = s.queue.pop() else { break };
                        s.schedule(key);
                        stats.attempts += 1;
                    }
                    stats.scheduling += now.elapsed();
                    stats.maybe_log();
                    tokio::task::yield_now().await;
                    continue;
                }
            }
            stats.maybe_log();
            let due = if s.synced == SYNC_ALL {
                s.queue.next_due()
            } else {
                None
            };
            let sleep = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => futures::future::pending::<()>().await,
                }
            };
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => s.handle(m),
                    None => return,
                },
                _ = sleep => {}
            }
        }
    }

    // ------------------------------------------------------------ events

    fn handle(&mut self, m: Msg) {
        match m {
            Msg::Pod(Update::Apply(info)) => self.pod_applied(info),
            Msg::Pod(Update::Delete(key)) => self.pod_deleted(&key),
            Msg::Pod(Update::Synced) => self.synced |= SYNC_PODS,
            Msg::Node(Update::Apply(spec)) => {
                if self.cache.upsert_node(spec) {
                    self.events |= flags::ALL;
                }
            }
            Msg::Node(Update::Delete(name)) => {
                self.cache.remove_node(&name);
            }
            Msg::Node(Update::Synced) => self.synced |= SYNC_NODES,
            Msg::PriorityClass(Update::Apply((name, value, global))) => {
                self.prio.classes.insert(name.clone(), value);
                if global {
                    self.prio.global_default = Some((name, value));
                } else if self
                    .prio
                    .global_default
                    .as_ref()
                    .is_some_and(|(n, _)| *n == name)
                {
                    self.prio.global_default = None;
                }
            }
            Msg::PriorityClass(Update::Delete(name)) => {
                self.prio.classes.remove(&name);
                if self
                    .prio
                    .global_default
                    .as_ref()
                    .is_some_and(|(n, _)| *n == name)
                {
                    self.prio.global_default = None;
                }
            }
            Msg::PriorityClass(Update::Synced) => self.synced |= SYNC_PCS,
            Msg::PodGroup(Update::Apply((k, min))) => {
                if self.pod_groups.insert(k, min) != Some(min) {
                    self.events |= flags::GANG;
                }
            }
            Msg::PodGroup(Update::Delete(key)) => {
                if let Some((ns, name)) = key.split_once('/') {
                    self.pod_groups.remove(&(ns.to_string(), name.to_string()));
                }
            }
            Msg::PodGroup(Update::Synced) => {
                self.pod_groups_synced = true;
                self.events |= flags::GANG;
            }
            Msg::Namespace(Update::Apply((name, labels))) => {
                if self.namespaces.get(&name) != Some(&labels) {
                    self.namespaces.insert(name, labels);
                    self.events |= flags::POD_AFFINITY | flags::SPREAD;
                }
            }
            Msg::Namespace(Update::Delete(name)) => {
                self.namespaces.remove(&name);
            }
            Msg::Namespace(Update::Synced) => self.synced |= SYNC_NS,
            Msg::Pdb(Update::Apply((k, p))) => {
                self.pdbs.insert(k, p);
            }
            Msg::Pdb(Update::Delete(k)) => {
                self.pdbs.remove(&k);
            }
            Msg::Pdb(Update::Synced) => self.synced |= SYNC_PDBS,
            Msg::Bound { key, uid, err } => self.bound(key, uid, err),
        }
    }

    fn pod_applied(&mut self, info: Arc<PodInfo>) {
        let key = info.key.clone();
        let prev_labels_differ = self
            .cache
            .pods
            .get(&key)
            .is_some_and(|st| st.info.labels != info.labels);
        let change = self.cache.upsert_pod(info.clone());
        if change.was_placed && !change.now_placed {
            self.events |= flags::RESOURCES
                | flags::POD_AFFINITY
                | flags::SPREAD
                | flags::PREEMPTION
                | flags::GANG;
        } else if change.now_placed && !change.was_placed {
            self.events |= flags::POD_AFFINITY | flags::SPREAD;
        } else if change.now_placed && (change.spec_changed || prev_labels_differ) {
            self.events |= flags::POD_AFFINITY | flags::SPREAD | flags::RESOURCES;
        }
        if !change.pending {
            self.queue.remove(&key);
            if change.now_placed || info.deleting || info.terminal || !info.ours {
                self.fail_events.remove(&key);
                self.written.remove(&key);
            }
            return;
        }
        if info.gated {
            self.queue.remove(&key);
            self.mark(
                &info,
                "SchedulingGated",
                "Scheduling is blocked due to non-empty scheduling gates",
                None,
            );
            return;
        }
        if !self.queue.contains(&key) {
            self.queue.add(key, self.prio.of(&info), info.created_ms);
            if change.is_new && info.group.is_some() {
                self.events |= flags::GANG;
            }
        } else if change.spec_changed {
            self.queue.activate(&key);
        }
    }

    fn pod_deleted(&mut self, key: &str) {
        if let Some(st) = self.cache.remove_pod(key)
            && st.placed.is_some()
        {
            self.events |= flags::RESOURCES
                | flags::POD_AFFINITY
                | flags::SPREAD
                | flags::PREEMPTION
                | flags::GANG;
        }
        self.queue.remove(key);
        self.fail_events.remove(key);
        self.written.remove(key);
    }

    fn bound(&mut self, key: Arc<str>, uid: String, err: Option<String>) {
        let Some(err) = err else {
            // Success: the watch confirms the assumed placement.
            return;
        };
        let Some(st) = self.cache.pods.get(&key) else {
            return;
        };
        if st.info.uid != uid || !st.assumed {
            return;
        }
        let info = st.info.clone();
        tracing::info!(pod = %key, "binding failed: {err}");
        self.cache.forget(&key);
        self.events |= flags::RESOURCES | flags::POD_AFFINITY | flags::SPREAD;
        if self.cache.is_pending(&key) {
            self.queue
                .add(key.clone(), self.prio.of(&info), info.created_ms);
            self.queue.take(&key);
            self.queue.backoff(&key, Instant::now());
            let rec = self.actions.recorder();
            self.actions.event(
                rec,
                info,
                true,
                "FailedScheduling",
                "Scheduling",
                format!("Binding rejected: {err}"),
            );
        }
    }

    // -------------------------------------------------------- scheduling

    fn schedule(&mut self, key: Arc<str>) {
        let Some(st) = self.cache.pods.get(&key) else {
            self.queue.remove(&key);
            return;
        };
        let info = st.info.clone();
        if !self.cache.is_pending(&key) || info.gated {
            self.queue.remove(&key);
            return;
        }
        if let Some(group) = info.group.clone() {
            self.schedule_gang(&info, &group);
            return;
        }
        match self.find_node(&info) {
            Ok(ni) => self.assume_and_bind(&info, ni),
            Err(f) => self.fail(&info, f),
        }
    }

    /// Filters and scores nodes for `pod`: Ok(node index) or why none fit.
    fn find_node(&mut self, pod: &PodInfo) -> Result<usize, Box<Failure>> {
        let view = View {
            cache: &self.cache,
            ns_labels: &self.namespaces,
            prio: &self.prio,
        };
        let n = view.cache.nodes.len();
        if n == 0 {
            return Err(Box::new(Failure {
                statuses: Vec::new(),
                num_nodes: 0,
                cycle: None,
            }));
        }
        let cy = Cycle::new(&view, pod);
        // A nominated node (from an earlier preemption) is tried first.
        let nominated = view
            .cache
            .nominated
            .get(&pod.key)
            .or(pod.nominated_node.as_ref());
        if let Some(&ni) = nominated.and_then(|nn| view.cache.node_index.get(nn))
            && filter(&view, pod, &cy, &view.cache.nodes[ni], &[]).is_ok()
        {
            return Ok(ni);
        }
        let want = num_feasible_to_find(n);
        let mut feasible: Vec<usize> = Vec::with_capacity(want.min(n));
        let mut statuses = Vec::new();
        let start = self.next_start % n;
        let mut processed = 0;
        for k in 0..n {
            let i = (start + k) % n;
            processed += 1;
            match filter(&view, pod, &cy, &view.cache.nodes[i], &[]) {
                Ok(()) => {
                    feasible.push(i);
                    if feasible.len() >= want {
                        break;
                    }
                }
                Err(s) => statuses.push((i, s)),
            }
        }
        self.next_start = (start + processed) % n;
        match feasible.len() {
            0 => Err(Box::new(Failure {
                statuses,
                num_nodes: n,
                cycle: Some(cy),
            })),
            1 => Ok(feasible[0]),
            _ => {
                let scores = framework::score(&view, pod, &feasible);
                framework::select_host(&feasible, &scores, &mut self.rng).ok_or_else(|| {
                    Box::new(Failure {
                        statuses,
                        num_nodes: n,
                        cycle: Some(cy),
                    })
                })
            }
        }
    }

    fn assume_and_bind(&mut self, info: &Arc<PodInfo>, ni: usize) {
        let node = self.cache.nodes[ni].spec.name.clone();
        self.cache.assume(&info.key, &node);
        self.queue.remove(&info.key);
        self.fail_events.remove(&info.key);
        self.written.remove(&info.key);
        self.actions.bind(info.clone(), node);
    }

    /// No node fits: try preemption, then report.
    fn fail(&mut self, pod: &Arc<PodInfo>, f: Box<Failure>) {
        let mut msg = f.message();
        let mut why = f.flags();
        let mut nominated: Option<Option<String>> = None;
        if let Some(cy) = &f.cycle {
            let pdbs: Vec<Pdb> = self.pdbs.values().cloned().collect();
            let view = View {
                cache: &self.cache,
                ns_labels: &self.namespaces,
                prio: &self.prio,
            };
            match preemption::preempt(&view, pod, cy, &f.statuses, &pdbs, &mut self.rng) {
                Ok(c) => {
                    let node = self.cache.nodes[c.node].spec.name.clone();
                    tracing::info!(pod = %pod.key, %node, victims = c.victims.len(), "preempting");
                    self.actuate_preemption(pod, &node, c.victims, cy.priority);
                    nominated = Some(Some(node));
                    why |= flags::PREEMPTION;
                }
                Err(np) => {
                    msg = format!("{msg} preemption: {}", np.message);
                    if np.clear_nominated
                        && (pod.nominated_node.is_some()
                            || self.cache.nominated.contains_key(&pod.key))
                    {
                        self.cache.set_nominated(&pod.key, None);
                        nominated = Some(None);
                    }
                }
            }
        }
        self.report_unschedulable(pod, &msg, nominated);
        self.queue.unschedulable(&pod.key, why, Instant::now());
    }

    fn actuate_preemption(
        &mut self,
        pod: &Arc<PodInfo>,
        node: &str,
        victims: Vec<Arc<PodInfo>>,
        priority: i32,
    ) {
        self.cache.set_nominated(&pod.key, Some(node.to_string()));
        for v in victims {
            self.actions
                .preempt_victim(v, pod.clone(), node.to_string());
        }
        // Lower-priority pods nominated to this node lose their claim.
        let lower: Vec<Arc<str>> = self
            .cache
            .nominated_on
            .get(node)
            .into_iter()
            .flatten()
            .filter(|k| **k != pod.key)
            .filter(|k| {
                self.cache
                    .pods
                    .get(*k)
                    .is_some_and(|st| self.prio.of(&st.info) < priority)
            })
            .cloned()
            .collect();
        for k in lower {
            self.cache.set_nominated(&k, None);
            if let Some(st) = self.cache.pods.get(&k) {
                self.actions
                    .patch_status(&st.info, serde_json::json!({"nominatedNodeName": null}));
            }
        }
    }

    /// PodScheduled=False/Unschedulable (when it changed) and a
    /// FailedScheduling event (every attempt, aggregated by the recorder).
    fn report_unschedulable(
        &mut self,
        pod: &Arc<PodInfo>,
        msg: &str,
        nominated: Option<Option<String>>,
    ) {
        tracing::debug!(pod = %pod.key, "unschedulable: {msg}");
        self.mark(pod, "Unschedulable", msg, nominated);
        let entry = self.fail_events.entry(pod.key.clone());
        let (rec, _) = match entry {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                if o.get().1 != msg {
                    o.insert((self.actions.recorder(), msg.to_string()));
                }
                o.into_mut()
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert((self.actions.recorder(), msg.to_string()))
            }
        };
        self.actions.event(
            rec.clone(),
            pod.clone(),
            true,
            "FailedScheduling",
            "Scheduling",
            msg.to_string(),
        );
    }

    /// Writes the PodScheduled=False condition unless the pod (or our last
    /// write) already says so.
    fn mark(&mut self, pod: &PodInfo, reason: &str, msg: &str, nominated: Option<Option<String>>) {
        let nominated_now = match &nominated {
            Some(n) => n.clone(),
            None => pod.nominated_node.clone(),
        };
        let desired = (reason.to_string(), msg.to_string(), nominated_now.clone());
        let on_pod = pod
            .scheduled_cond
            .as_ref()
            .is_some_and(|(s, r, m)| s == "False" && r == reason && m == msg)
            && pod.nominated_node == nominated_now;
        if on_pod || self.written.get(&pod.key) == Some(&desired) {
            return;
        }
        self.written.insert(pod.key.clone(), desired);
        let nominated = if pod.nominated_node != nominated_now {
            Some(nominated_now)
        } else {
            nominated
        };
        self.actions.set_unschedulable(pod, reason, msg, nominated);
    }

    // -------------------------------------------------------------- gangs

    /// Places a PodGroup's pending pods all-or-nothing: they are assumed one
    /// by one; if with the group's already placed pods they reach
    /// minMember, all are bound, otherwise every assumption is undone.
    fn schedule_gang(&mut self, first: &Arc<PodInfo>, group: &str) {
        let gk = (first.namespace.clone(), group.to_string());
        let members: Vec<Arc<str>> = self
            .cache
            .groups
            .get(&gk)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let mut pending: Vec<Arc<PodInfo>> = members
            .iter()
            .filter(|k| self.cache.is_pending(k))
            .filter_map(|k| self.cache.pods.get(k).map(|st| st.info.clone()))
            .filter(|p| !p.gated)
            .collect();
        if !pending.iter().any(|p| p.key == first.key) {
            pending.push(first.clone());
        }
        pending.sort_by_key(|p| {
            (
                std::cmp::Reverse(self.prio.of(p)),
                p.created_ms,
                p.key.clone(),
            )
        });
        for p in &pending {
            if !self.queue.contains(&p.key) {
                self.queue.add(p.key.clone(), self.prio.of(p), p.created_ms);
            }
            self.queue.take(&p.key);
        }
        let now = Instant::now();
        let Some(&min) = self.pod_groups.get(&gk) else {
            if !self.pod_groups_synced {
                // The PodGroup watch has not listed yet: wait quietly.
                for p in &pending {
                    self.queue.backoff(&p.key, now);
                }
                return;
            }
            let msg = format!("PodGroup {}/{} not found", gk.0, gk.1);
            for p in &pending {
                self.report_unschedulable(p, &msg, None);
                self.queue.unschedulable(&p.key, flags::GANG, now);
            }
            return;
        };
        let total = members.len().max(pending.len());
        if (total as i64) < min as i64 {
            for p in &pending {
                let msg = format!(
                    "pre-filter pod {} cannot find enough sibling pods, current pods number: {total}, minMember of group: {min}",
                    p.name
                );
                self.report_unschedulable(p, &msg, None);
                self.queue.unschedulable(&p.key, flags::GANG, now);
            }
            return;
        }
        let placed = members
            .iter()
            .filter(|k| {
                self.cache
                    .pods
                    .get(*k)
                    .is_some_and(|st| st.placed.is_some())
            })
            .count();
        let mut assumed: Vec<(Arc<PodInfo>, usize)> = Vec::new();
        let mut failed: Vec<(Arc<PodInfo>, Box<Failure>)> = Vec::new();
        for p in &pending {
            match self.find_node(p) {
                Ok(ni) => {
                    let node = self.cache.nodes[ni].spec.name.clone();
                    self.cache.assume(&p.key, &node);
                    assumed.push((p.clone(), ni));
                }
                Err(f) => failed.push((p.clone(), f)),
            }
        }
        if placed + assumed.len() >= min as usize {
            for (p, ni) in assumed {
                let node = self.cache.nodes[ni].spec.name.clone();
                self.queue.remove(&p.key);
                self.fail_events.remove(&p.key);
                self.written.remove(&p.key);
                self.actions.bind(p, node);
            }
            // The quorum is met; the rest are ordinary pods now.
            for (p, f) in failed {
                let msg = f.message();
                self.report_unschedulable(&p, &msg, None);
                self.queue.unschedulable(&p.key, f.flags(), now);
            }
            return;
        }
        for (p, _) in &assumed {
            self.cache.forget(&p.key);
        }
        let mut why = flags::GANG;
        let mut detail = String::new();
        for (p, f) in &failed {
            why |= f.flags();
            if detail.is_empty() {
                detail = format!(" Pod {}: {}", p.name, f.message());
            }
        }
        let msg = format!(
            "PodGroup {}/{} gets rejected: only {} of its pods can be placed, minMember is {min}; none were bound.{detail}",
            gk.0,
            gk.1,
            placed + assumed.len()
        );
        for p in &pending {
            self.report_unschedulable(p, &msg, None);
            self.queue.unschedulable(&p.key, why, now);
        }
    }
}

//! Informers: one list+watch of a kind applied to a kube-runtime reflector
//! store, turned into add/update/delete notifications, and knowing the
//! highest resourceVersion the store has applied.
//!
//! [`Informer`] is the shared form: `controllers::run` creates one for Pods
//! and one for Nodes, every controller that reads them takes a
//! [`Subscription`] (the shared store plus its own stream of changes), and a
//! single task polls the watch. A cluster's pods are then held once, not
//! once per controller.
//!
//! Why not kube-runtime's `reflect_shared`/`ReflectHandle`: in kube 5.0 it
//! broadcasts only applied objects, never deletions (kube-rs#1590), and a
//! handle whose object was deleted before it was read returns `Pending`
//! without arranging a wake-up. Controllers here must see deletions (a
//! deleted pod is replaced), so the fan-out is ours; the store is kube's
//! (`Writer`/`Store`) and the triggers go into kube's
//! `Controller::owns_shared_stream`/`watches_shared_stream`/
//! `for_shared_stream`.
//!
//! Ordering: an event is applied to the store and counted in the applied
//! revision before any subscriber hears of it, so a handler that reacts to
//! a change always finds the store at least that fresh.

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

/// Changes buffered per subscriber. A full buffer makes the informer wait
/// (backpressure), which delays every subscriber of that kind, so each
/// subscription's stream must be polled continuously: all of them feed a
/// kube-runtime `Controller` (whose scheduler drains its triggers even
/// while reconciles run or the store is not ready) or a loop doing
/// in-memory work. The channel allocates as it fills, so the bound costs
/// nothing while subscribers keep up.
pub const SUBSCRIBER_BUFFER: usize = 1024;

/// One change seen by an informer, after the store applied it.
pub enum Change<K> {
    Added(Arc<K>),
    Updated(Arc<K>, Arc<K>),
    Deleted(Arc<K>),
}

impl<K> Change<K> {
    /// The object as it is now, or as it was when deleted.
    pub fn object(&self) -> &Arc<K> {
        match self {
            Change::Added(o) | Change::Updated(_, o) | Change::Deleted(o) => o,
        }
    }
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Change::Added(o) => Change::Added(o.clone()),
            Change::Updated(old, new) => Change::Updated(old.clone(), new.clone()),
            Change::Deleted(o) => Change::Deleted(o.clone()),
        }
    }
}

/// A resourceVersion as a number (skiff's are the global store revision).
pub fn rv_of(meta: &ObjectMeta) -> u64 {
    meta.resource_version
        .as_deref()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Follows the watcher events a store applies and publishes the highest
/// resourceVersion it reflects.
///
/// skiff's resourceVersions are the store's global revision (etcd
/// semantics) and a single watch delivers events in revision order, so a
/// store that has applied an event at revision R reflects every write up to
/// R. Objects listed during a (re)list only reach the store at `InitDone`.
#[derive(Default)]
pub struct Revision {
    applied: Arc<AtomicU64>,
    init_max: u64,
}

impl Revision {
    /// The published counter, for readers.
    pub fn applied(&self) -> Arc<AtomicU64> {
        self.applied.clone()
    }

    /// Records `ev`, which the store has just applied.
    pub fn observe<K: Resource>(&mut self, ev: &watcher::Event<K>) {
        match ev {
            watcher::Event::Apply(o) | watcher::Event::Delete(o) => {
                self.applied.fetch_max(rv_of(o.meta()), Ordering::SeqCst);
            }
            watcher::Event::Init => self.init_max = 0,
            watcher::Event::InitApply(o) => self.init_max = self.init_max.max(rv_of(o.meta())),
            watcher::Event::InitDone => {
                self.applied.fetch_max(self.init_max, Ordering::SeqCst);
            }
        }
    }
}

/// Applies watcher events to a reflector store and turns them into
/// [`Change`]s. A re-list is diffed against the previous contents, as a
/// client-go informer does: every listed object is reported (as `Updated`
/// with an unchanged resourceVersion when it did not change) and objects
/// that vanished meanwhile as `Deleted`.
pub struct Differ<K: Resource<DynamicType = ()> + Clone + 'static> {
    writer: Writer<K>,
    reader: Store<K>,
    revision: Revision,
    /// During a re-list: each listed key and what the store held for it.
    listed: Vec<(ObjectRef<K>, Option<Arc<K>>)>,
    listed_keys: HashSet<ObjectRef<K>>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Differ<K> {
    pub fn new(writer: Writer<K>) -> Differ<K> {
        Differ {
            reader: writer.as_reader(),
            writer,
            revision: Revision::default(),
            listed: Vec::new(),
            listed_keys: HashSet::new(),
        }
    }

    /// The highest resourceVersion the store has applied.
    pub fn applied(&self) -> Arc<AtomicU64> {
        self.revision.applied()
    }

    /// Applies `ev` to the store and appends the resulting changes to `out`.
    pub fn apply(&mut self, ev: watcher::Event<K>, out: &mut Vec<Change<K>>) {
        // What the store held before, for `Updated` and for re-list diffs.
        let mut old = None;
        let mut gone = Vec::new();
        match &ev {
            watcher::Event::Apply(obj) => old = self.reader.get(&ObjectRef::from_obj(obj)),
            watcher::Event::Delete(_) => {}
            watcher::Event::Init => {
                self.listed.clear();
                self.listed_keys.clear();
            }
            watcher::Event::InitApply(obj) => {
                // The store keeps the pre-list state until InitDone.
                let key = ObjectRef::from_obj(obj);
                self.listed.push((key.clone(), self.reader.get(&key)));
                self.listed_keys.insert(key);
            }
            watcher::Event::InitDone => {
                gone = self
                    .reader
                    .state_filter(|o| !self.listed_keys.contains(&ObjectRef::from_obj(o)));
            }
        }
        self.writer.apply_watcher_event(&ev);
        self.revision.observe(&ev);
        match ev {
            watcher::Event::Apply(obj) => {
                if let Some(new) = self.reader.get(&ObjectRef::from_obj(&obj)) {
                    out.push(match old {
                        Some(old) => Change::Updated(old, new),
                        None => Change::Added(new),
                    });
                }
            }
            watcher::Event::Delete(obj) => out.push(Change::Deleted(Arc::new(obj))),
            watcher::Event::InitDone => {
                for (key, old) in self.listed.drain(..) {
                    let Some(new) = self.reader.get(&key) else {
                        continue;
                    };
                    out.push(match old {
                        Some(old) => Change::Updated(old, new),
                        None => Change::Added(new),
                    });
                }
                out.extend(gone.into_iter().map(Change::Deleted));
                self.listed_keys.clear();
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
        }
    }
}

/// The watch an informer runs: all objects of the kind, trimmed by
/// `slim_cached` before they are stored.
fn watch_stream<K>(
    api: Api<K>,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(super::slim_cached::<K>)
}

/// Applies each watch event to the differ's store and yields the changes
/// it made, one batch per event that changed something. Watch errors are
/// logged; the watcher retries with back-off.
fn change_batches<K>(
    mut differ: Differ<K>,
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
) -> impl Stream<Item = Vec<Change<K>>>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
{
    events.filter_map(move |ev| {
        let mut changes = Vec::new();
        match ev {
            Ok(ev) => differ.apply(ev, &mut changes),
            Err(e) => tracing::debug!(kind = %K::kind(&()), "watch error: {e}"),
        }
        std::future::ready((!changes.is_empty()).then_some(changes))
    })
}

/// Lists and watches `api` into `writer`'s store and calls `on_change` for
/// every add, update and delete once the store reflects it (re-listed
/// objects that did not change are not reported). For kinds only one
/// controller reads; shared kinds use [`Informer`].
pub async fn run_local<K, F>(api: Api<K>, writer: Writer<K>, mut on_change: F)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    F: FnMut(Change<K>),
{
    let batches = change_batches(Differ::new(writer), watch_stream(api));
    futures::pin_mut!(batches);
    while let Some(changes) = batches.next().await {
        for change in changes {
            if let Change::Updated(old, new) = &change
                && old.resource_version() == new.resource_version()
            {
                continue;
            }
            on_change(change);
        }
    }
}

/// One list+watch of a kind shared by several controllers.
pub struct Informer<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    applied: Arc<AtomicU64>,
    /// The watch and writer, taken by [`Informer::run`].
    source: Mutex<Option<(Api<K>, Differ<K>)>>,
    subscribers: Mutex<Vec<mpsc::Sender<Change<K>>>>,
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// An informer over every object `api` lists, each trimmed once by
    /// `slim_cached` before it is stored and shared.
    pub fn new(api: Api<K>) -> Informer<K> {
        let (store, writer) = reflector::store::<K>();
        let differ = Differ::new(writer);
        Informer {
            store,
            applied: differ.applied(),
            source: Mutex::new(Some((api, differ))),
            subscribers: Mutex::new(Vec::new()),
        }
    }

    /// The shared store, for a reader that needs no change notifications.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// A new subscriber. Subscribe before [`Informer::run`] is first polled
    /// to hear of every object (the initial list arrives as `Added`); the
    /// subscription's stream must then be polled continuously (see
    /// [`SUBSCRIBER_BUFFER`]).
    pub fn subscribe(&self) -> Subscription<K> {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        Subscription {
            store: self.store.clone(),
            applied: self.applied.clone(),
            rx,
        }
    }

    /// Runs the watch, applying it to the store and fanning the changes out
    /// to the subscribers, until cancelled. Runs once; later calls return
    /// at once.
    pub async fn run(&self) {
        let Some((api, differ)) = self.source.lock().unwrap_or_else(|e| e.into_inner()).take()
        else {
            return;
        };
        self.pump(differ, watch_stream(api)).await;
    }

    /// Applies `events` to the store and fans the changes out.
    async fn pump(
        &self,
        differ: Differ<K>,
        events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    ) {
        let batches = change_batches(differ, events);
        futures::pin_mut!(batches);
        while let Some(changes) = batches.next().await {
            let subscribers = self
                .subscribers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let mut closed = false;
            for change in changes {
                for tx in &subscribers {
                    closed |= tx.send(change.clone()).await.is_err();
                }
            }
            if closed {
                // A subscriber went away; the store stays maintained for
                // the others' readers.
                self.subscribers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|tx| !tx.is_closed());
            }
        }
    }
}

/// A controller's view of a shared [`Informer`]: the shared store, the
/// revision it has applied, and this subscriber's stream of changes.
pub struct Subscription<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    applied: Arc<AtomicU64>,
    rx: mpsc::Receiver<Change<K>>,
}

impl<K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static> Subscription<K> {
    /// The shared store.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// The highest resourceVersion the shared store has applied.
    pub fn applied(&self) -> Arc<AtomicU64> {
        self.applied.clone()
    }

    /// Every change, in order.
    pub fn changes(self) -> impl Stream<Item = Change<K>> + Send + 'static {
        tokio_stream::wrappers::ReceiverStream::new(self.rx)
    }

    /// The objects touched (added, updated or deleted), in order: the
    /// trigger stream for `Controller::{for,owns,watches}_shared_stream`.
    pub fn objects(self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        self.changes().map(|c| c.object().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn pod(name: &str, rv: u64) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("default".into());
        p.metadata.resource_version = Some(rv.to_string());
        p
    }

    fn names(changes: &[Change<Pod>]) -> Vec<String> {
        changes
            .iter()
            .map(|c| {
                let kind = match c {
                    Change::Added(_) => "add",
                    Change::Updated(old, new)
                        if old.resource_version() == new.resource_version() =>
                    {
                        "same"
                    }
                    Change::Updated(..) => "update",
                    Change::Deleted(_) => "delete",
                };
                format!("{kind} {}", c.object().name_any())
            })
            .collect()
    }

    #[test]
    fn differ_reports_changes_after_the_store_applied_them() {
        let (store, writer) = reflector::store::<Pod>();
        let mut d = Differ::new(writer);
        let applied = d.applied();
        let mut out = Vec::new();
        d.apply(watcher::Event::Init, &mut out);
        d.apply(watcher::Event::InitApply(pod("a", 3)), &mut out);
        d.apply(watcher::Event::InitApply(pod("b", 5)), &mut out);
        assert!(out.is_empty());
        assert_eq!(
            applied.load(Ordering::SeqCst),
            0,
            "not applied before InitDone"
        );
        d.apply(watcher::Event::InitDone, &mut out);
        assert_eq!(names(&out), ["add a", "add b"]);
        assert_eq!(store.len(), 2);
        assert_eq!(applied.load(Ordering::SeqCst), 5);
        out.clear();

        d.apply(watcher::Event::Apply(pod("a", 7)), &mut out);
        d.apply(watcher::Event::Delete(pod("b", 8)), &mut out);
        assert_eq!(names(&out), ["update a", "delete b"]);
        assert_eq!(applied.load(Ordering::SeqCst), 8);
        assert_eq!(store.len(), 1);
        out.clear();

        // A re-list: a unchanged, c new, and nothing else (so a is kept, c
        // added); then another in which a vanished.
        d.apply(watcher::Event::Init, &mut out);
        d.apply(watcher::Event::InitApply(pod("a", 7)), &mut out);
        d.apply(watcher::Event::InitApply(pod("c", 9)), &mut out);
        d.apply(watcher::Event::InitDone, &mut out);
        assert_eq!(names(&out), ["same a", "add c"]);
        out.clear();
        d.apply(watcher::Event::Init, &mut out);
        d.apply(watcher::Event::InitApply(pod("c", 9)), &mut out);
        d.apply(watcher::Event::InitDone, &mut out);
        assert_eq!(names(&out), ["same c", "delete a"]);
        assert_eq!(store.len(), 1);
    }

    #[tokio::test]
    async fn subscribers_see_every_change_after_the_store() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let informer = Informer::<Pod>::new(Api::all(client));
        let first = informer.subscribe();
        let second = informer.subscribe();
        let store = informer.store();
        let (_, differ) = informer.source.lock().unwrap().take().unwrap();
        // More events than a subscriber buffers: the pump waits for both.
        let n = SUBSCRIBER_BUFFER as u64 + 10;
        let mut events = vec![watcher::Event::Init, watcher::Event::InitDone];
        events.extend((1..=n).map(|i| watcher::Event::Apply(pod(&format!("p{i}"), i))));
        events.push(watcher::Event::Delete(pod("p1", n + 1)));
        let events = futures::stream::iter(events.into_iter().map(Ok));
        let pump = informer.pump(differ, events);
        let check = |sub: Subscription<Pod>| {
            let store = store.clone();
            async move {
                let applied = sub.applied();
                let changes = sub.changes().take(n as usize + 1);
                futures::pin_mut!(changes);
                let mut seen = Vec::new();
                while let Some(c) = changes.next().await {
                    // When a change arrives, the store and its revision
                    // already show it (checked while the pump is still
                    // running: the buffer is full most of the time).
                    let p = c.object();
                    let rv: u64 = p.resource_version().unwrap().parse().unwrap();
                    let in_store = store
                        .get(&ObjectRef::new(&p.name_any()).within("default"))
                        .is_some();
                    assert_eq!(
                        in_store,
                        !matches!(c, Change::Deleted(_)),
                        "{}",
                        p.name_any()
                    );
                    assert!(applied.load(Ordering::SeqCst) >= rv);
                    seen.push(c);
                }
                assert!(matches!(&seen[0], Change::Added(p) if p.name_any() == "p1"));
                assert!(matches!(seen.last(), Some(Change::Deleted(p)) if p.name_any() == "p1"));
            }
        };
        tokio::join!(pump, check(first), check(second));
    }
}

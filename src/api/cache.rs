//! The watch cache: every live object in memory, plus a window of recent
//! events, fed by the store's event stream. LIST, GET and WATCH are served
//! from here; only writes go to the store.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::store::{Backend, Event, EventKind, Revision, StoreError};

/// An object as served: serialized with its resourceVersion set, plus the
/// few attributes selectors, the garbage collector and the views read
/// without parsing. The parsed form is not kept: at 10,000s of objects a
/// `serde_json::Value` costs several times the bytes it came from.
#[derive(Debug)]
pub struct Obj {
    pub key: String,
    pub bytes: Bytes,
    pub mod_revision: Revision,
    pub meta: Meta,
}

/// What is read from an object often enough to keep it parsed.
#[derive(Debug, Default)]
pub struct Meta {
    pub api_version: Box<str>,
    pub kind: Box<str>,
    pub name: Box<str>,
    pub namespace: Option<Box<str>>,
    pub uid: Box<str>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    pub finalizers: Vec<Box<str>>,
    /// `metadata.ownerReferences`: each owner's uid and whether the
    /// reference has `blockOwnerDeletion: true`.
    pub owners: Vec<(Box<str>, bool)>,
    pub labels: Option<Map<String, Value>>,
    /// The kind's selectable fields beyond name and namespace
    /// (`spec.nodeName`, `status.phase`, ...), formatted as upstream.
    fields: Vec<(&'static str, Box<str>)>,
}

impl Obj {
    /// The object parsed (a fresh copy the caller may change).
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }

    /// `metadata.name`, when set.
    pub fn name(&self) -> Option<&str> {
        (!self.meta.name.is_empty()).then_some(&*self.meta.name)
    }

    pub fn namespace(&self) -> Option<&str> {
        self.meta.namespace.as_deref()
    }

    /// `metadata.uid`, when set.
    pub fn uid(&self) -> Option<&str> {
        (!self.meta.uid.is_empty()).then_some(&*self.meta.uid)
    }

    /// A selectable field's value as a field selector compares it.
    pub fn field(&self, field: &str) -> &str {
        match field {
            "metadata.name" => &self.meta.name,
            "metadata.namespace" => self.meta.namespace.as_deref().unwrap_or(""),
            f => self
                .meta
                .fields
                .iter()
                .find(|(k, _)| *k == f)
                .map(|(_, v)| &**v)
                .unwrap_or(""),
        }
    }
}

impl Meta {
    fn of(value: &Value) -> Meta {
        let s = |v: Option<&Value>| -> Box<str> { v.and_then(Value::as_str).unwrap_or("").into() };
        let strs = |v: Option<&Value>| -> Vec<Box<str>> {
            v.and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(Box::from).collect())
                .unwrap_or_default()
        };
        let meta = value.get("metadata");
        let field = |k: &str| meta.and_then(|m| m.get(k));
        let kind = s(value.get("kind"));
        Meta {
            api_version: s(value.get("apiVersion")),
            name: s(field("name")),
            namespace: field("namespace").and_then(Value::as_str).map(Box::from),
            uid: s(field("uid")),
            deleting: field("deletionTimestamp").is_some_and(|v| !v.is_null()),
            finalizers: strs(field("finalizers")),
            owners: field("ownerReferences")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|r| {
                            let uid = r.get("uid").and_then(Value::as_str)?;
                            let block = r.get("blockOwnerDeletion") == Some(&Value::Bool(true));
                            Some((Box::from(uid), block))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            labels: field("labels").and_then(Value::as_object).cloned(),
            fields: super::selector::selectable_fields(&kind, value),
            kind,
        }
    }
}

#[derive(Clone, Debug)]
pub struct CacheEvent {
    pub revision: Revision,
    pub key: String,
    /// None when the event deleted the key.
    pub obj: Option<Arc<Obj>>,
    /// The object before the event (for a delete: the deleted object).
    pub prev: Option<Arc<Obj>>,
}

struct Inner {
    objects: BTreeMap<String, Arc<Obj>>,
    history: VecDeque<Arc<CacheEvent>>,
    revision: Revision,
    /// Events after this revision are all in `history`.
    history_from: Revision,
}

pub struct Cache {
    backend: Arc<dyn Backend>,
    inner: RwLock<Inner>,
    /// The newest revision applied; watchers wait on it and then read the
    /// events they have not seen from `history`, so no event is buffered
    /// per watcher and a slow watcher cannot lag out of a channel.
    applied: watch::Sender<Revision>,
}

/// Memory bound for the in-memory event window; older events are read from
/// the store's history.
const HISTORY_LIMIT: usize = 5_000;

/// Events read from the store at a time by a watcher catching up, so a far
/// behind watcher holds a page of old versions, not all of them.
const REPLAY_PAGE: usize = 1_000;

/// Parses stored bytes and stamps the revision as resourceVersion.
pub fn materialize(key: &str, raw: &[u8], mod_revision: Revision) -> Obj {
    let value: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
    materialize_value(key, value, mod_revision)
}

/// [`materialize`] for an object the caller already holds parsed.
pub fn materialize_value(key: &str, mut value: Value, mod_revision: Revision) -> Obj {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(mod_revision.to_string()),
        );
    }
    let bytes = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
    Obj {
        key: key.to_string(),
        meta: Meta::of(&value),
        bytes,
        mod_revision,
    }
}

impl Cache {
    pub async fn open(backend: Arc<dyn Backend>) -> Result<Arc<Cache>, StoreError> {
        let mut rx = backend
            .take_events()
            .ok_or_else(|| StoreError::Backend("event stream already taken".into()))?;
        let snap = backend.snapshot().await?;
        let mut objects = BTreeMap::new();
        for kv in snap.kvs {
            let obj = materialize(&kv.key, &kv.value, kv.mod_revision);
            objects.insert(kv.key.clone(), Arc::new(obj));
        }
        tracing::debug!(
            revision = snap.revision,
            compacted = snap.compacted,
            objects = objects.len(),
            "store loaded"
        );
        let (applied, _) = watch::channel(snap.revision);
        let cache = Arc::new(Cache {
            backend,
            inner: RwLock::new(Inner {
                objects,
                history: VecDeque::new(),
                revision: snap.revision,
                history_from: snap.revision,
            }),
            applied,
        });
        let c = cache.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                c.apply(ev);
            }
        });
        Ok(cache)
    }

    fn apply(&self, ev: Event) {
        let rev = ev.kv.mod_revision;
        if rev <= self.revision() {
            return;
        }
        // Built before the write lock is taken: readers (LIST, GET,
        // watchers) wait on that lock. Only this task applies events.
        let built = (ev.kind == EventKind::Put)
            .then(|| Arc::new(materialize(&ev.kv.key, &ev.kv.value, rev)));
        let mut inner = self.inner.write().unwrap();
        let prev = inner.objects.get(&ev.kv.key).cloned();
        let obj = match built {
            Some(obj) => {
                inner.objects.insert(ev.kv.key.clone(), obj.clone());
                Some(obj)
            }
            None => {
                inner.objects.remove(&ev.kv.key);
                None
            }
        };
        // A delete of something the cache never held (rare): its last value.
        let prev = prev.or_else(|| {
            obj.is_none()
                .then(|| Arc::new(materialize(&ev.kv.key, &ev.kv.value, rev)))
        });
        let ce = Arc::new(CacheEvent {
            revision: rev,
            key: ev.kv.key,
            obj,
            prev,
        });
        inner.history.push_back(ce.clone());
        if inner.history.len() > HISTORY_LIMIT
            && let Some(old) = inner.history.pop_front()
        {
            inner.history_from = old.revision;
        }
        inner.revision = rev;
        drop(inner);
        self.applied.send_replace(rev);
    }

    /// The store dropped history at or below `rev`: forget it here too, so
    /// watches from before it get 410 Expired as they would from the store.
    pub fn compacted(&self, rev: Revision) {
        let mut inner = self.inner.write().unwrap();
        while inner.history.front().is_some_and(|e| e.revision <= rev) {
            inner.history.pop_front();
        }
        if inner.history_from < rev {
            inner.history_from = rev;
        }
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn revision(&self) -> Revision {
        self.inner.read().unwrap().revision
    }

    /// Waits until the cache has applied `rev` (read-your-writes after a write).
    pub async fn wait_for(&self, rev: Revision) {
        let mut rx = self.applied.subscribe();
        let _ = rx.wait_for(|r| *r >= rev).await;
    }

    pub fn get(&self, key: &str) -> Option<Arc<Obj>> {
        self.inner.read().unwrap().objects.get(key).cloned()
    }

    /// Every object whose key starts with `prefix`, in key order, starting
    /// after `start_after` when given; plus the cache revision.
    pub fn list(&self, prefix: &str, start_after: Option<&str>) -> (Vec<Arc<Obj>>, Revision) {
        let inner = self.inner.read().unwrap();
        let lower = match start_after {
            Some(k) if k >= prefix => Bound::Excluded(k.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        let items = inner
            .objects
            .range((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.revision)
    }

    /// A subscription to every event after `from` (exclusive), in order,
    /// with no gap and no duplicate. `Err(Compacted)` when `from` is older
    /// than the store's history.
    pub async fn watch_from(self: &Arc<Self>, from: Revision) -> Result<Subscription, StoreError> {
        let mut sub = Subscription {
            cache: self.clone(),
            applied: self.applied.subscribe(),
            last: from,
            pending: VecDeque::new(),
            replay: true,
        };
        sub.fill().await?;
        Ok(sub)
    }

    /// As [`Cache::watch_from`] the current revision, for a consumer that
    /// only needs to know that something changed: once it falls behind the
    /// in-memory window it gets `Err(Compacted)` (start over) instead of a
    /// replay from the store, which would rebuild every missed event and
    /// keep each replayed object until it caught up.
    pub async fn watch_changes(self: &Arc<Self>) -> Result<Subscription, StoreError> {
        let mut sub = self.watch_from(self.revision()).await?;
        sub.replay = false;
        Ok(sub)
    }

    /// The in-memory events after `from`, or None when `from` is older
    /// than the window.
    fn events_after(&self, from: Revision) -> Option<Vec<Arc<CacheEvent>>> {
        let inner = self.inner.read().unwrap();
        if from < inner.history_from {
            return None;
        }
        let start = inner.history.partition_point(|e| e.revision <= from);
        Some(inner.history.range(start..).cloned().collect())
    }

    /// Events after `from` read from the store's history (a watcher
    /// resuming from before the in-memory window).
    ///
    /// An update's previous version is known from the second version of a
    /// key within one page; carrying versions across pages would keep every
    /// replayed object of a lagging watcher alive until it caught up
    /// (measured: about +30 MiB server RSS in bench_scheduler).
    async fn replay(&self, from: Revision) -> Result<Vec<Arc<CacheEvent>>, StoreError> {
        let evs = self.backend.history(from, REPLAY_PAGE).await?;
        let mut prevs: HashMap<String, Arc<Obj>> = Default::default();
        let mut out = Vec::with_capacity(evs.len());
        for ev in evs {
            let rev = ev.kv.mod_revision;
            let this = Arc::new(materialize(&ev.kv.key, &ev.kv.value, rev));
            // Before the replayed window the previous version is unknown;
            // an update is still an update, so stand in the new version.
            let prev = prevs
                .get(&ev.kv.key)
                .cloned()
                .or_else(|| ev.prev_revision.map(|_| this.clone()));
            let (obj, prev) = match ev.kind {
                EventKind::Put => {
                    prevs.insert(ev.kv.key.clone(), this.clone());
                    (Some(this), prev)
                }
                EventKind::Delete => {
                    prevs.remove(&ev.kv.key);
                    (None, Some(this))
                }
            };
            out.push(Arc::new(CacheEvent {
                revision: rev,
                key: ev.kv.key,
                obj,
                prev,
            }));
        }
        Ok(out)
    }
}

/// A watch on the cache: [`Subscription::recv`] yields each event once, in
/// revision order, reading from the cache's history (or, after falling
/// behind it, from the store's).
pub struct Subscription {
    cache: Arc<Cache>,
    applied: watch::Receiver<Revision>,
    last: Revision,
    pending: VecDeque<Arc<CacheEvent>>,
    /// Whether falling behind the window replays from the store (else
    /// `Err(Compacted)`).
    replay: bool,
}

impl Subscription {
    /// Queues the events after `last` that are available now.
    async fn fill(&mut self) -> Result<(), StoreError> {
        self.applied.borrow_and_update();
        let evs = match self.cache.events_after(self.last) {
            Some(evs) => evs,
            None if self.replay => self.cache.replay(self.last).await?,
            None => {
                return Err(StoreError::Compacted {
                    requested: self.last,
                    compacted: self.cache.inner.read().unwrap().history_from,
                });
            }
        };
        for ev in evs {
            if ev.revision > self.last {
                self.last = ev.revision;
                self.pending.push_back(ev);
            }
        }
        Ok(())
    }

    /// The next event, waiting for one. `Err(Compacted)` when the events
    /// this subscription still needs were compacted away; `Err(Closed)`
    /// when the cache stopped.
    pub async fn recv(&mut self) -> Result<Arc<CacheEvent>, StoreError> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Ok(ev);
            }
            // A replay reads a page at a time: look again before waiting.
            self.fill().await?;
            if let Some(ev) = self.pending.pop_front() {
                return Ok(ev);
            }
            if self.applied.changed().await.is_err() {
                return Err(StoreError::Backend("cache closed".into()));
            }
        }
    }

    /// The next event if one is available without waiting.
    pub async fn try_recv(&mut self) -> Result<Option<Arc<CacheEvent>>, StoreError> {
        if self.pending.is_empty() {
            self.fill().await?;
        }
        Ok(self.pending.pop_front())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Op;

    /// A watcher that reads nothing while more events happen than the
    /// in-memory window holds still gets every event once, in order (the
    /// older ones from the store's history).
    #[tokio::test]
    async fn slow_subscription_catches_up_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> =
            Arc::new(crate::store::sqlite::open(&dir.path().join("db")).unwrap());
        let cache = Cache::open(backend.clone()).await.unwrap();
        let mut sub = cache.watch_from(cache.revision()).await.unwrap();
        // `x` is updated on the second replay page, created on the first.
        let x = |v: &str| {
            Bytes::from(format!(
                r#"{{"kind":"ConfigMap","metadata":{{"name":"x","labels":{{"v":"{v}"}}}}}}"#
            ))
        };
        let x_key = "/registry/core/configmaps/default/x".to_string();
        backend
            .write(Op::Create {
                key: x_key.clone(),
                value: x("1"),
            })
            .await
            .unwrap();
        let n = HISTORY_LIMIT + REPLAY_PAGE + 500;
        let mut last = 0;
        for i in 0..n {
            if i == REPLAY_PAGE {
                backend
                    .write(Op::Update {
                        key: x_key.clone(),
                        value: x("2"),
                        expected: None,
                    })
                    .await
                    .unwrap();
            }
            let value = format!(r#"{{"kind":"ConfigMap","metadata":{{"name":"c{i}"}}}}"#);
            let ev = backend
                .write(Op::Create {
                    key: format!("/registry/core/configmaps/default/c{i}"),
                    value: Bytes::from(value),
                })
                .await
                .unwrap();
            last = ev.kv.mod_revision;
        }
        cache.wait_for(last).await;
        assert!(cache.events_after(0).is_none(), "window should have moved");
        let label = |o: &Obj| o.value()["metadata"]["labels"]["v"].clone();
        let created = sub.recv().await.unwrap();
        assert_eq!(label(created.obj.as_ref().unwrap()), "1");
        let mut seen = 0;
        let mut prev = created.revision;
        let mut updated = false;
        while seen < n {
            let ev = sub.recv().await.unwrap();
            assert!(ev.revision > prev);
            prev = ev.revision;
            if ev.key == x_key {
                // Updated on a later page than it was created: its previous
                // version is not carried across pages (see `replay`).
                assert_eq!(label(ev.obj.as_ref().unwrap()), "2");
                assert!(ev.prev.is_some());
                updated = true;
                continue;
            }
            assert_eq!(
                ev.obj.as_ref().unwrap().name(),
                Some(format!("c{seen}").as_str())
            );
            seen += 1;
        }
        assert!(updated);
        assert_eq!(prev, last);
        assert!(sub.try_recv().await.unwrap().is_none());
    }

    /// A change-only subscription that falls behind the window is told to
    /// start over instead of replaying from the store.
    #[tokio::test]
    async fn change_subscription_is_told_to_start_over() {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> =
            Arc::new(crate::store::sqlite::open(&dir.path().join("db")).unwrap());
        let cache = Cache::open(backend.clone()).await.unwrap();
        let mut sub = cache.watch_changes().await.unwrap();
        let mut last = 0;
        for i in 0..HISTORY_LIMIT + 10 {
            let value = format!(r#"{{"kind":"ConfigMap","metadata":{{"name":"c{i}"}}}}"#);
            let ev = backend
                .write(Op::Create {
                    key: format!("/registry/core/configmaps/default/c{i}"),
                    value: Bytes::from(value),
                })
                .await
                .unwrap();
            last = ev.kv.mod_revision;
        }
        cache.wait_for(last).await;
        assert!(matches!(
            sub.recv().await,
            Err(StoreError::Compacted { .. })
        ));
    }
}

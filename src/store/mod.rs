//! The revisioned key-value store: etcd v3 semantics behind one trait.
//!
//! Every successful write takes the next global revision; that revision is the
//! object's `resourceVersion`. Writes are compare-and-swap on the key's
//! `mod_revision`. History (the event log) is kept from the last compaction on,
//! so a watcher can resume from any revision newer than that.

pub mod sqlite;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

pub type Revision = i64;

/// One live key as the store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the write that created the key (constant until deletion).
    pub create_revision: Revision,
    /// Revision of the last write to the key.
    pub mod_revision: Revision,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// A committed change. For `Delete`, `kv.value` is the value the key held
/// just before deletion and `kv.mod_revision` is the revision of the delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    /// `mod_revision` the key had before this event (None for a creation).
    pub prev_revision: Option<Revision>,
}

/// A single-key write. `expected` is a compare-and-swap on `mod_revision`:
/// `None` = unconditional.
#[derive(Clone, Debug)]
pub enum Op {
    /// Fails with `AlreadyExists` when the key is live.
    Create { key: String, value: Bytes },
    /// Fails with `NotFound` when the key is missing, `Conflict` on a CAS mismatch.
    Update {
        key: String,
        value: Bytes,
        expected: Option<Revision>,
    },
    /// Fails with `NotFound` when the key is missing, `Conflict` on a CAS mismatch.
    Delete {
        key: String,
        expected: Option<Revision>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("key already exists")]
    AlreadyExists,
    #[error("key not found")]
    NotFound,
    #[error("revision mismatch: key is at {current}")]
    Conflict { current: Revision },
    #[error("required revision {requested} has been compacted (compacted at {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    #[error("storage backend error: {0}")]
    Backend(String),
}

/// Everything the store holds when it is opened.
#[derive(Debug)]
pub struct Snapshot {
    pub kvs: Vec<KeyValue>,
    /// Highest revision committed.
    pub revision: Revision,
    /// Revisions at or below this are gone from history.
    pub compacted: Revision,
}

/// A storage backend. Implementations must be safe to call from async code
/// (no blocking I/O on the caller's thread) and must deliver every committed
/// event, in revision order, to the receiver returned by `take_events` *before*
/// the corresponding `write` future resolves.
pub trait Backend: Send + Sync + 'static {
    /// All live keys and the current revision (used once, to fill the watch cache).
    fn snapshot(&self) -> BoxFuture<'static, Result<Snapshot, StoreError>>;
    /// Events with revision > `after`, oldest first, from durable history;
    /// at most `limit`. `Compacted` when `after` < the compacted revision.
    fn history(
        &self,
        after: Revision,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<Event>, StoreError>>;
    /// Apply one write durably (on disk before the future resolves).
    fn write(&self, op: Op) -> BoxFuture<'static, Result<Event, StoreError>>;
    /// Drop history at or below `revision` and reclaim space.
    fn compact(&self, revision: Revision) -> BoxFuture<'static, Result<(), StoreError>>;
    /// The stream of committed events. May be called once; later calls return None.
    fn take_events(&self) -> Option<mpsc::UnboundedReceiver<Event>>;
}

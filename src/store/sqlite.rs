//! SQLite backend: a revisioned KV in one WAL-mode database file.
//!
//! One writer thread owns the write connection and group-commits: it drains
//! every queued request, applies them in one transaction (one fsync), publishes
//! the events, then answers the callers. Reads use a small pool of separate
//! connections on tokio's blocking threads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};
use tokio::sync::{mpsc, oneshot};

use super::{Backend, Event, EventKind, KeyValue, Op, Revision, Snapshot, StoreError};

/// Most requests applied in one transaction.
const MAX_BATCH: usize = 1000;
/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = 4;
const SCHEMA_VERSION: i64 = 1;
const KIND_PUT: i64 = 0;
const KIND_DELETE: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE kv (
    key TEXT PRIMARY KEY,
    create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE TABLE log (
    rev INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    kind INTEGER NOT NULL,
    create_rev INTEGER NOT NULL,
    prev_rev INTEGER,
    value BLOB NOT NULL
);
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta (name, value) VALUES ('revision', 0), ('compacted', 0);
";

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Request {
    Write(Op, Reply<Event>),
    Compact(Revision, Reply<()>),
}

/// The SQLite-backed store. Dropping it stops the writer thread (after the
/// requests already queued) and closes the database.
pub struct SqliteBackend {
    /// `Option` only so `Drop` can close the channel before joining.
    requests: Option<std_mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    readers: Arc<ReadPool>,
    events: Mutex<Option<mpsc::UnboundedReceiver<Event>>>,
    #[cfg_attr(not(test), allow(dead_code))]
    commits: Arc<AtomicU64>,
}

/// Opens (creating if needed) the database at `path` and starts its writer thread.
pub fn open(path: &Path) -> Result<SqliteBackend, StoreError> {
    SqliteBackend::open(path)
}

impl SqliteBackend {
    /// Opens (creating if needed) the database at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<SqliteBackend, StoreError> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Backend(format!("creating {}: {e}", parent.display())))?;
        }
        let mut conn = Connection::open(path).db()?;
        conn.busy_timeout(Duration::from_secs(2)).db()?;
        // Only takes effect on a new file; lets compaction give pages back to the OS.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .db()?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .db()?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "cannot enable WAL mode (journal_mode is {mode})"
            )));
        }
        // FULL: every commit fsyncs the WAL, so an acknowledged write is on disk.
        conn.pragma_update(None, "synchronous", "FULL").db()?;
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .db()?;
        if sync != 2 {
            return Err(StoreError::Backend(format!(
                "cannot set synchronous=FULL (is {sync})"
            )));
        }
        // Bounds the WAL file left behind after checkpoints.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
            .db()?;
        init_schema(&mut conn)?;
        let revision = read_meta(&conn, "revision")?;

        let readers = Arc::new(ReadPool {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        });
        // Fail now rather than on the first read.
        let reader = open_reader(path)?;
        lock(&readers.idle).push(reader);

        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (requests_tx, requests_rx) = std_mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            conn,
            revision,
            events: events_tx,
            commits: commits.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer.run(requests_rx))
            .map_err(|e| StoreError::Backend(format!("spawning writer thread: {e}")))?;
        Ok(SqliteBackend {
            requests: Some(requests_tx),
            writer: Some(handle),
            readers,
            events: Mutex::new(Some(events_rx)),
            commits,
        })
    }

    /// Number of transactions the writer has committed (one per group-committed
    /// batch of writes, plus one per effective compaction).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    fn send(&self, req: Request) -> Result<(), StoreError> {
        self.requests
            .as_ref()
            .ok_or_else(writer_gone)?
            .send(req)
            .map_err(|_| writer_gone())
    }

    fn read<T, F>(&self, f: F) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.readers.clone();
        async move {
            tokio::task::spawn_blocking(move || pool.with(f))
                .await
                .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
        }
        .boxed()
    }
}

impl Drop for SqliteBackend {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish its queue and exit; joining
        // means the file is closed when drop returns, so it can be reopened at once.
        drop(self.requests.take());
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
    }
}

impl Backend for SqliteBackend {
    fn snapshot(&self) -> BoxFuture<'static, Result<Snapshot, StoreError>> {
        self.read(|conn| {
            // One read transaction, so keys and revisions agree.
            let tx = conn.transaction().db()?;
            let revision = read_meta(&tx, "revision")?;
            let compacted = read_meta(&tx, "compacted")?;
            let kvs = {
                let mut stmt = tx
                    .prepare_cached("SELECT key, create_rev, mod_rev, value FROM kv ORDER BY key")
                    .db()?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok(KeyValue {
                            key: r.get(0)?,
                            create_revision: r.get(1)?,
                            mod_revision: r.get(2)?,
                            value: Bytes::from(r.get::<_, Vec<u8>>(3)?),
                        })
                    })
                    .db()?;
                rows.collect::<Result<Vec<_>, _>>().db()?
            };
            Ok(Snapshot {
                kvs,
                revision,
                compacted,
            })
        })
    }

    fn history(
        &self,
        after: Revision,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<Event>, StoreError>> {
        self.read(move |conn| {
            let tx = conn.transaction().db()?;
            let compacted = read_meta(&tx, "compacted")?;
            if after < compacted {
                return Err(StoreError::Compacted {
                    requested: after,
                    compacted,
                });
            }
            let mut stmt = tx
                .prepare_cached(
                    "SELECT rev, key, kind, create_rev, prev_rev, value
                     FROM log WHERE rev > ?1 ORDER BY rev LIMIT ?2",
                )
                .db()?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut rows = stmt.query([after, limit]).db()?;
            let mut events = Vec::new();
            while let Some(r) = rows.next().db()? {
                let kind = match r.get::<_, i64>(2).db()? {
                    KIND_PUT => EventKind::Put,
                    KIND_DELETE => EventKind::Delete,
                    other => {
                        return Err(StoreError::Backend(format!(
                            "corrupt history: unknown event kind {other}"
                        )));
                    }
                };
                events.push(Event {
                    kind,
                    kv: KeyValue {
                        key: r.get(1).db()?,
                        value: Bytes::from(r.get::<_, Vec<u8>>(5).db()?),
                        create_revision: r.get(3).db()?,
                        mod_revision: r.get(0).db()?,
                    },
                    prev_revision: r.get(4).db()?,
                });
            }
            Ok(events)
        })
    }

    fn write(&self, op: Op) -> BoxFuture<'static, Result<Event, StoreError>> {
        // Queued now, not on first poll, so calls are applied in call order.
        let (tx, rx) = oneshot::channel();
        let sent = self.send(Request::Write(op, tx));
        async move {
            sent?;
            rx.await.map_err(|_| writer_gone())?
        }
        .boxed()
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'static, Result<(), StoreError>> {
        let (tx, rx) = oneshot::channel();
        let sent = self.send(Request::Compact(revision, tx));
        async move {
            sent?;
            rx.await.map_err(|_| writer_gone())?
        }
        .boxed()
    }

    fn take_events(&self) -> Option<mpsc::UnboundedReceiver<Event>> {
        lock(&self.events).take()
    }
}

/// State owned by the writer thread.
struct Writer {
    conn: Connection,
    /// Last committed revision.
    revision: Revision,
    events: mpsc::UnboundedSender<Event>,
    commits: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, requests: std_mpsc::Receiver<Request>) {
        let mut batch = Vec::new();
        while let Ok(first) = requests.recv() {
            let mut next = Some(first);
            let mut taken = 0;
            while let Some(req) = next.take() {
                taken += 1;
                match req {
                    Request::Write(op, reply) => batch.push((op, reply)),
                    Request::Compact(rev, reply) => {
                        // Keep request order: earlier writes commit first.
                        self.commit_batch(&mut batch);
                        let _ = reply.send(self.compact(rev));
                    }
                }
                if taken < MAX_BATCH {
                    next = requests.try_recv().ok();
                }
            }
            self.commit_batch(&mut batch);
        }
    }

    fn commit_batch(&mut self, batch: &mut Vec<(Op, Reply<Event>)>) {
        if batch.is_empty() {
            return;
        }
        let batch = std::mem::take(batch);
        match self.apply(&batch) {
            Ok(results) => {
                // Events go out before any caller hears back (trait contract).
                for ev in results.iter().flatten() {
                    let _ = self.events.send(ev.clone());
                }
                for ((_, reply), result) in batch.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                // Nothing committed; per-op outcomes (even conflicts) may have
                // depended on rolled-back writes, so all fail alike.
                tracing::error!(error = %e, "sqlite batch commit failed");
                let msg = e.to_string();
                for (_, reply) in batch {
                    let _ = reply.send(Err(StoreError::Backend(msg.clone())));
                }
            }
        }
    }

    /// Applies the batch in one transaction; per-op failures stay per-op.
    fn apply(
        &mut self,
        batch: &[(Op, Reply<Event>)],
    ) -> Result<Vec<Result<Event, StoreError>>, StoreError> {
        let mut tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .db()?;
        let mut revision = self.revision;
        let mut results = Vec::with_capacity(batch.len());
        for (op, _) in batch {
            let result = apply_op(&mut tx, revision, op);
            if let Ok(ev) = &result {
                revision = ev.kv.mod_revision;
            }
            results.push(result);
        }
        if revision == self.revision {
            // Nothing to write (all ops failed); dropping rolls back, no fsync.
            return Ok(results);
        }
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE name = 'revision'",
            [revision],
        )
        .db()?;
        if let Err(e) = tx.commit() {
            // The transaction is rolled back by now if it did not land; the
            // committed revision tells which, so success is not reported as failure.
            let landed = read_meta(&self.conn, "revision")?;
            if landed != revision {
                self.revision = self.revision.max(landed);
                return Err(StoreError::Backend(e.to_string()));
            }
        }
        self.revision = revision;
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(results)
    }

    fn compact(&mut self, target: Revision) -> Result<(), StoreError> {
        if target > self.revision {
            return Err(StoreError::Backend(format!(
                "cannot compact to future revision {target} (current {})",
                self.revision
            )));
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .db()?;
        if target <= read_meta(&tx, "compacted")? {
            return Ok(());
        }
        tx.execute("DELETE FROM log WHERE rev <= ?1", [target])
            .db()?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE name = 'compacted'",
            [target],
        )
        .db()?;
        tx.commit().db()?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        // The compaction is durable now; failing to reclaim space is not an
        // error for the caller, a later compaction retries.
        if let Err(e) = self.reclaim() {
            tracing::warn!(error = %e, "sqlite space reclamation after compaction failed");
        }
        Ok(())
    }

    fn reclaim(&mut self) -> rusqlite::Result<()> {
        // incremental_vacuum yields one row per freed page and must be stepped
        // to the end (execute_batch would step only once).
        {
            let mut stmt = self.conn.prepare("PRAGMA incremental_vacuum")?;
            let mut rows = stmt.query([])?;
            while rows.next()?.is_some() {}
        }
        let (busy, log, done): (i64, i64, i64) =
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
        if busy != 0 {
            tracing::warn!(
                log,
                done,
                "sqlite WAL checkpoint blocked by readers; WAL not truncated"
            );
        }
        Ok(())
    }
}

/// Applies one op after `last`; writes are inside a savepoint so a failing
/// statement undoes only this op.
fn apply_op(tx: &mut Transaction<'_>, last: Revision, op: &Op) -> Result<Event, StoreError> {
    let rev = last
        .checked_add(1)
        .ok_or_else(|| StoreError::Backend("revision overflow".into()))?;
    let key = match op {
        Op::Create { key, .. } | Op::Update { key, .. } | Op::Delete { key, .. } => key,
    };
    let current: Option<(Revision, Revision)> = tx
        .prepare_cached("SELECT create_rev, mod_rev FROM kv WHERE key = ?1")
        .db()?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .db()?;
    let check = |expected: &Option<Revision>| -> Result<(Revision, Option<Revision>), StoreError> {
        let (create, modified) = current.ok_or(StoreError::NotFound)?;
        match expected {
            Some(e) if *e != modified => Err(StoreError::Conflict { current: modified }),
            _ => Ok((create, Some(modified))),
        }
    };
    // Preconditions first: a refused op writes nothing.
    let (kind, create_revision, prev_revision) = match op {
        Op::Create { .. } if current.is_some() => return Err(StoreError::AlreadyExists),
        Op::Create { .. } => (EventKind::Put, rev, None),
        Op::Update { expected, .. } => {
            let (create, prev) = check(expected)?;
            (EventKind::Put, create, prev)
        }
        Op::Delete { expected, .. } => {
            let (create, prev) = check(expected)?;
            (EventKind::Delete, create, prev)
        }
    };
    let sp = tx.savepoint().db()?;
    let value = match op {
        Op::Create { value, .. } => {
            sp.prepare_cached(
                "INSERT INTO kv (key, create_rev, mod_rev, value) VALUES (?1, ?2, ?2, ?3)",
            )
            .db()?
            .execute(params![key, rev, &value[..]])
            .db()?;
            value.clone()
        }
        Op::Update { value, .. } => {
            sp.prepare_cached("UPDATE kv SET mod_rev = ?2, value = ?3 WHERE key = ?1")
                .db()?
                .execute(params![key, rev, &value[..]])
                .db()?;
            value.clone()
        }
        Op::Delete { .. } => {
            // A delete event carries the last value.
            let old: Vec<u8> = sp
                .prepare_cached("DELETE FROM kv WHERE key = ?1 RETURNING value")
                .db()?
                .query_row([key], |r| r.get(0))
                .db()?;
            Bytes::from(old)
        }
    };
    let kind_code = match kind {
        EventKind::Put => KIND_PUT,
        EventKind::Delete => KIND_DELETE,
    };
    sp.prepare_cached(
        "INSERT INTO log (rev, key, kind, create_rev, prev_rev, value)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .db()?
    .execute(params![
        rev,
        key,
        kind_code,
        create_revision,
        prev_revision,
        &value[..],
    ])
    .db()?;
    sp.commit().db()?;
    Ok(Event {
        kind,
        kv: KeyValue {
            key: key.clone(),
            value,
            create_revision,
            mod_revision: rev,
        },
        prev_revision,
    })
}

fn init_schema(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .db()?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .db()?;
    match version {
        0 => {
            tx.execute_batch(SCHEMA).db()?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .db()?;
            tx.commit().db()
        }
        SCHEMA_VERSION => Ok(()),
        other => Err(StoreError::Backend(format!(
            "unsupported database schema version {other} (expected {SCHEMA_VERSION})"
        ))),
    }
}

fn read_meta(conn: &Connection, name: &str) -> Result<Revision, StoreError> {
    conn.prepare_cached("SELECT value FROM meta WHERE name = ?1")
        .db()?
        .query_row([name], |r| r.get(0))
        .optional()
        .db()?
        .ok_or_else(|| StoreError::Backend(format!("corrupt database: meta '{name}' missing")))
}

/// Read connections, reused across blocking tasks.
struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = lock(&self.idle).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => open_reader(&self.path)?,
        };
        let result = f(&mut conn);
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result
    }
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .db()?;
    conn.busy_timeout(Duration::from_secs(5)).db()?;
    conn.pragma_update(None, "query_only", true).db()?;
    Ok(conn)
}

fn writer_gone() -> StoreError {
    StoreError::Backend("sqlite writer thread has stopped".into())
}

/// Locks ignoring poison: the guarded data stays valid if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `rusqlite::Error` → `StoreError::Backend`, without a crate-wide `From`.
trait DbResult<T> {
    fn db(self) -> Result<T, StoreError>;
}

impl<T> DbResult<T> for rusqlite::Result<T> {
    fn db(self) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::Backend(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::join_all;
    use std::collections::HashSet;

    fn create(key: &str, value: &str) -> Op {
        Op::Create {
            key: key.into(),
            value: Bytes::copy_from_slice(value.as_bytes()),
        }
    }

    fn update(key: &str, value: &str, expected: Option<Revision>) -> Op {
        Op::Update {
            key: key.into(),
            value: Bytes::copy_from_slice(value.as_bytes()),
            expected,
        }
    }

    fn delete(key: &str, expected: Option<Revision>) -> Op {
        Op::Delete {
            key: key.into(),
            expected,
        }
    }

    fn kv(key: &str, value: &str, create_revision: Revision, mod_revision: Revision) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Bytes::copy_from_slice(value.as_bytes()),
            create_revision,
            mod_revision,
        }
    }

    fn put(kv: KeyValue, prev_revision: Option<Revision>) -> Event {
        Event {
            kind: EventKind::Put,
            kv,
            prev_revision,
        }
    }

    fn del(kv: KeyValue, prev_revision: Revision) -> Event {
        Event {
            kind: EventKind::Delete,
            kv,
            prev_revision: Some(prev_revision),
        }
    }

    fn disk_size(path: &Path) -> u64 {
        let len = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        len(path.to_path_buf()) + len(wal_path(path))
    }

    fn wal_path(path: &Path) -> PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push("-wal");
        PathBuf::from(p)
    }

    #[tokio::test]
    async fn create_update_delete_semantics() {
        let dir = tempfile::tempdir().unwrap();
        // Parent directories are created.
        let be = open(&dir.path().join("a/b/db.sqlite")).unwrap();
        let mut events = be.take_events().unwrap();
        assert!(be.take_events().is_none());

        let e1 = be.write(create("a", "1")).await.unwrap();
        assert_eq!(e1, put(kv("a", "1", 1, 1), None));
        // Delivered before the write resolved.
        assert_eq!(events.try_recv().unwrap(), e1);

        assert_eq!(
            be.write(create("a", "x")).await,
            Err(StoreError::AlreadyExists)
        );
        assert_eq!(
            be.write(update("nope", "x", None)).await,
            Err(StoreError::NotFound)
        );
        assert_eq!(
            be.write(update("nope", "x", Some(1))).await,
            Err(StoreError::NotFound)
        );
        assert_eq!(
            be.write(delete("nope", None)).await,
            Err(StoreError::NotFound)
        );

        // Failed ops consume no revision.
        let e2 = be.write(update("a", "2", None)).await.unwrap();
        assert_eq!(e2, put(kv("a", "2", 1, 2), Some(1)));
        let e3 = be.write(delete("a", None)).await.unwrap();
        assert_eq!(e3, del(kv("a", "2", 1, 3), 2));
        assert_eq!(
            be.write(update("a", "x", None)).await,
            Err(StoreError::NotFound)
        );
        assert_eq!(be.write(delete("a", None)).await, Err(StoreError::NotFound));
        // Recreation gets a new create_revision.
        let e4 = be.write(create("a", "3")).await.unwrap();
        assert_eq!(e4, put(kv("a", "3", 4, 4), None));

        for want in [e2, e3, e4] {
            assert_eq!(events.try_recv().unwrap(), want);
        }
        assert!(events.try_recv().is_err());

        let snap = be.snapshot().await.unwrap();
        assert_eq!(snap.kvs, vec![kv("a", "3", 4, 4)]);
        assert_eq!((snap.revision, snap.compacted), (4, 0));
    }

    #[tokio::test]
    async fn cas_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let be = open(&dir.path().join("db")).unwrap();
        be.write(create("k", "1")).await.unwrap();
        assert_eq!(
            be.write(update("k", "x", Some(5))).await,
            Err(StoreError::Conflict { current: 1 })
        );
        assert_eq!(
            be.write(delete("k", Some(0))).await,
            Err(StoreError::Conflict { current: 1 })
        );
        let e = be.write(update("k", "2", Some(1))).await.unwrap();
        assert_eq!(e.kv.mod_revision, 2);
        assert_eq!(
            be.write(update("k", "x", Some(1))).await,
            Err(StoreError::Conflict { current: 2 })
        );
        let e = be.write(delete("k", Some(2))).await.unwrap();
        assert_eq!(e, del(kv("k", "2", 1, 3), 2));
        let snap = be.snapshot().await.unwrap();
        assert!(snap.kvs.is_empty());
        assert_eq!(snap.revision, 3);
    }

    #[tokio::test]
    async fn revisions_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let before = {
            let be = open(&path).unwrap();
            be.write(create("a", "1")).await.unwrap();
            be.write(create("b", "1")).await.unwrap();
            be.write(create("c", "1")).await.unwrap();
            be.write(update("b", "2", Some(2))).await.unwrap();
            be.write(delete("c", None)).await.unwrap();
            be.snapshot().await.unwrap()
        };
        assert_eq!(before.revision, 5);

        let be = open(&path).unwrap();
        let snap = be.snapshot().await.unwrap();
        assert_eq!(snap.kvs, before.kvs);
        assert_eq!(snap.kvs, vec![kv("a", "1", 1, 1), kv("b", "2", 2, 4)]);
        assert_eq!(snap.revision, 5);
        assert_eq!(be.history(0, usize::MAX).await.unwrap().len(), 5);
        let e = be.write(create("c", "2")).await.unwrap();
        assert_eq!(e.kv.create_revision, 6);
        assert_eq!(
            be.write(update("a", "x", Some(2))).await,
            Err(StoreError::Conflict { current: 1 })
        );

        // With all history compacted away, revisions still are not reused.
        be.compact(6).await.unwrap();
        drop(be);
        let be = open(&path).unwrap();
        let snap = be.snapshot().await.unwrap();
        assert_eq!((snap.revision, snap.compacted), (6, 6));
        assert_eq!(
            be.write(delete("a", None)).await.unwrap().kv.mod_revision,
            7
        );
    }

    #[tokio::test]
    async fn history_returns_later_events() {
        let dir = tempfile::tempdir().unwrap();
        let be = open(&dir.path().join("db")).unwrap();
        let mut rx = be.take_events().unwrap();
        be.write(create("a", "1")).await.unwrap();
        be.write(create("b", "1")).await.unwrap();
        be.write(update("a", "2", None)).await.unwrap();
        be.write(delete("b", None)).await.unwrap();
        be.write(create("b", "3")).await.unwrap();

        let all = be.history(0, usize::MAX).await.unwrap();
        let mut streamed = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            streamed.push(ev);
        }
        assert_eq!(all, streamed);
        assert_eq!(
            be.history(2, usize::MAX).await.unwrap(),
            vec![
                put(kv("a", "2", 1, 3), Some(1)),
                del(kv("b", "1", 2, 4), 2),
                put(kv("b", "3", 5, 5), None),
            ]
        );
        assert_eq!(be.history(4, usize::MAX).await.unwrap(), all[4..].to_vec());
        assert!(be.history(5, usize::MAX).await.unwrap().is_empty());
        assert!(be.history(1000, usize::MAX).await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn compaction_drops_history_and_shrinks_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let be = open(&path).unwrap();
        let big = "x".repeat(4096);
        for round in 0..20 {
            let writes = (0..50).map(|i| {
                let key = format!("k{i}");
                if round == 0 {
                    be.write(create(&key, &big))
                } else {
                    be.write(update(&key, &big, None))
                }
            });
            for r in join_all(writes).await {
                r.unwrap();
            }
        }
        let rev = be.snapshot().await.unwrap().revision;
        assert_eq!(rev, 1000);
        let size_before = disk_size(&path);

        be.compact(500).await.unwrap();
        assert_eq!(
            be.history(499, usize::MAX).await,
            Err(StoreError::Compacted {
                requested: 499,
                compacted: 500
            })
        );
        let rest = be.history(500, usize::MAX).await.unwrap();
        assert_eq!(rest.len(), 500);
        assert_eq!(rest[0].kv.mod_revision, 501);
        // Going backwards is a no-op; the future is refused.
        be.compact(100).await.unwrap();
        assert!(matches!(
            be.compact(rev + 1).await,
            Err(StoreError::Backend(_))
        ));

        be.compact(rev).await.unwrap();
        assert!(be.history(rev, usize::MAX).await.unwrap().is_empty());
        assert!(matches!(
            be.history(0, usize::MAX).await,
            Err(StoreError::Compacted {
                compacted: 1000,
                ..
            })
        ));
        assert_eq!(std::fs::metadata(wal_path(&path)).unwrap().len(), 0);
        let size_after = disk_size(&path);
        assert!(
            size_after * 4 < size_before,
            "size {size_before} -> {size_after}"
        );
        let snap = be.snapshot().await.unwrap();
        assert_eq!(
            (snap.kvs.len(), snap.revision, snap.compacted),
            (50, rev, rev)
        );

        drop(be);
        let be = open(&path).unwrap();
        assert!(matches!(
            be.history(999, usize::MAX).await,
            Err(StoreError::Compacted {
                compacted: 1000,
                ..
            })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_get_distinct_ordered_revisions() {
        const TASKS: usize = 8;
        const PER_TASK: usize = 200;
        let dir = tempfile::tempdir().unwrap();
        let be = Arc::new(open(&dir.path().join("db")).unwrap());
        let mut rx = be.take_events().unwrap();
        let tasks = (0..TASKS).map(|t| {
            let be = be.clone();
            tokio::spawn(async move {
                let mut revs = Vec::new();
                for i in 0..PER_TASK {
                    let ev = be.write(create(&format!("t{t}/{i}"), "v")).await.unwrap();
                    revs.push(ev.kv.mod_revision);
                }
                revs
            })
        });
        let mut revs = HashSet::new();
        for r in join_all(tasks).await {
            let r = r.unwrap();
            assert!(r.windows(2).all(|w| w[0] < w[1]));
            revs.extend(r);
        }
        let total = (TASKS * PER_TASK) as Revision;
        assert_eq!(revs, (1..=total).collect::<HashSet<_>>());

        let mut last = 0;
        for _ in 0..total {
            let ev = rx.recv().await.unwrap();
            assert!(ev.kv.mod_revision > last);
            last = ev.kv.mod_revision;
        }
        assert_eq!(last, total);
        assert!(rx.try_recv().is_err());
        assert!(
            be.commits() < total as u64,
            "{} commits for {total} writes",
            be.commits()
        );
    }

    #[tokio::test]
    async fn group_commit_batches_queued_writes() {
        const N: usize = 500;
        let dir = tempfile::tempdir().unwrap();
        let be = open(&dir.path().join("db")).unwrap();
        // Futures queue their request when created, so these pile up while the
        // writer fsyncs.
        let writes: Vec<_> = (0..N)
            .map(|i| be.write(create(&format!("k{i}"), "v")))
            .collect();
        for (i, r) in join_all(writes).await.into_iter().enumerate() {
            // Applied in call order.
            assert_eq!(r.unwrap().kv.mod_revision, i as Revision + 1);
        }
        assert!(
            be.commits() <= (N / 4) as u64,
            "{} commits for {N} writes",
            be.commits()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_cas_has_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let be = Arc::new(open(&dir.path().join("db")).unwrap());
        let rev = be.write(create("k", "0")).await.unwrap().kv.mod_revision;
        let tasks = (0..8).map(|i| {
            let be = be.clone();
            tokio::spawn(async move { be.write(update("k", &i.to_string(), Some(rev))).await })
        });
        let results: Vec<_> = join_all(tasks)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1);
        let won = winners[0].kv.mod_revision;
        assert_eq!(won, rev + 1);
        for r in &results {
            if let Err(e) = r {
                assert_eq!(*e, StoreError::Conflict { current: won });
            }
        }
        let snap = be.snapshot().await.unwrap();
        assert_eq!(snap.kvs[0].value, winners[0].kv.value);
        assert_eq!(snap.revision, won);
    }

    #[tokio::test]
    async fn odd_inputs_do_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let be = open(&dir.path().join("db")).unwrap();
        let big = "y".repeat(1 << 20);
        for key in ["", "nul\0inside", "ünïcødé/🚀", "'; DROP TABLE kv; --"] {
            be.write(create(key, "")).await.unwrap();
        }
        be.write(create("big", &big)).await.unwrap();
        let snap = be.snapshot().await.unwrap();
        let keys: Vec<_> = snap.kvs.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "",
                "'; DROP TABLE kv; --",
                "big",
                "nul\0inside",
                "ünïcødé/🚀"
            ]
        );
        assert_eq!(snap.kvs[2].value.len(), big.len());
        assert!(be.history(Revision::MIN, usize::MAX).await.is_err());
        assert_eq!(be.history(Revision::MAX, usize::MAX).await, Ok(vec![]));
        be.compact(Revision::MIN).await.unwrap();
        assert!(be.compact(Revision::MAX).await.is_err());
        assert_eq!(
            be.write(update("missing", "", Some(Revision::MIN))).await,
            Err(StoreError::NotFound)
        );
    }

    #[tokio::test]
    async fn queued_writes_complete_when_backend_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let be = open(&path).unwrap();
        let writes: Vec<_> = (0..50)
            .map(|i| be.write(create(&format!("k{i}"), "v")))
            .collect();
        drop(be);
        for r in join_all(writes).await {
            r.unwrap();
        }
        let be = open(&path).unwrap();
        assert_eq!(be.snapshot().await.unwrap().revision, 50);
    }

    #[tokio::test]
    async fn failing_statement_fails_only_its_op() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let be = open(&path).unwrap();
        // Makes the log insert (the op's second statement) fail for one key.
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER poison BEFORE INSERT ON log WHEN NEW.key = 'poison'
                 BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
            )
            .unwrap();
        let writes = vec![
            be.write(create("a", "1")),
            be.write(create("poison", "1")),
            be.write(create("b", "1")),
        ];
        let results = join_all(writes).await;
        assert_eq!(results[0].as_ref().unwrap().kv.mod_revision, 1);
        assert!(
            matches!(&results[1], Err(StoreError::Backend(m)) if m.contains("poisoned")),
            "{:?}",
            results[1]
        );
        assert_eq!(results[2].as_ref().unwrap().kv.mod_revision, 2);
        // The op's first statement (the kv insert) was rolled back too.
        let snap = be.snapshot().await.unwrap();
        assert_eq!(snap.kvs, vec![kv("a", "1", 1, 1), kv("b", "1", 2, 2)]);
        assert_eq!(snap.revision, 2);
        assert_eq!(be.history(0, usize::MAX).await.unwrap().len(), 2);
    }
}

//! WATCH: initial state (when asked), then every change after a revision,
//! filtered by selectors, as newline-delimited JSON events.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Response, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::cache::{CacheEvent, Obj};
use super::errors::{ApiError, ApiResult};
use super::handlers::{Filter, crd_columns, view_value};
use super::http::Body;
use super::registry::Registry;
use super::{Api, Ctx, Shape, Target};
use crate::store::{Revision, StoreError};

const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

struct Watcher {
    target: Target,
    filter: Filter,
    shape: Shape,
    columns: Option<Vec<Value>>,
    sent_columns: bool,
    tx: mpsc::Sender<Bytes>,
    prefix: String,
    /// Stored objects are already in the requested version.
    fast: bool,
}

impl Watcher {
    fn encode(&mut self, kind: &str, mut obj: Value, rev: Option<Revision>) -> Bytes {
        if let Some(rev) = rev
            && let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut)
        {
            m.insert("resourceVersion".into(), json!(rev.to_string()));
        }
        let object = if self.shape == Shape::Table && kind != "BOOKMARK" && kind != "ERROR" {
            let include = !self.sent_columns;
            self.sent_columns = true;
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            super::table::table(
                &self.target.info.group,
                &self.target.info.kind,
                &[&obj],
                self.columns.as_deref(),
                chrono::Utc::now(),
                include,
                &rv,
                None,
                None,
            )
        } else {
            obj
        };
        let mut line =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }

    async fn send(&mut self, kind: &str, obj: Value, rev: Option<Revision>) -> bool {
        let b = self.encode(kind, obj, rev);
        self.tx.send(b).await.is_ok()
    }

    /// Sends an object as stored, splicing its cached serialization into
    /// the event line when no conversion or Table is needed (the common
    /// case: no per-watcher clone or re-serialization).
    async fn send_obj(&mut self, kind: &str, o: &Arc<Obj>) -> bool {
        if self.shape == Shape::Object && self.fast {
            let mut line = Vec::with_capacity(o.bytes.len() + 32);
            line.extend_from_slice(b"{\"type\":\"");
            line.extend_from_slice(kind.as_bytes());
            line.extend_from_slice(b"\",\"object\":");
            line.extend_from_slice(&super::handlers::view(&self.target.info, o));
            line.extend_from_slice(b"}\n");
            return self.tx.send(Bytes::from(line)).await.is_ok();
        }
        let v = view_value(&self.target.info, o);
        self.send(kind, v, None).await
    }

    /// Turns one store event into zero or one watch event for this watcher.
    async fn event(&mut self, ev: &CacheEvent) -> bool {
        if !ev.key.starts_with(&self.prefix) {
            return true;
        }
        let info = self.target.info.clone();
        let view = |o: &Arc<Obj>| view_value(&info, o);
        let prev_match = ev.prev.as_ref().map(|p| self.filter.matches_obj(p));
        match &ev.obj {
            Some(o) => {
                let now = self.filter.matches_obj(o);
                match (prev_match, now) {
                    (Some(true), true) => self.send_obj("MODIFIED", o).await,
                    (Some(true), false) => self.send_obj("DELETED", o).await,
                    (_, true) => self.send_obj("ADDED", o).await,
                    _ => true,
                }
            }
            None => {
                if prev_match == Some(true) {
                    let p = ev.prev.as_ref().unwrap();
                    self.send("DELETED", view(p), Some(ev.revision)).await
                } else {
                    true
                }
            }
        }
    }

    async fn bookmark(&mut self, rev: Revision, initial_end: bool) -> bool {
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.target.info.kind, "apiVersion": self.target.info.gv(), "metadata": meta});
        self.send("BOOKMARK", obj, None).await
    }
}

pub async fn watch(
    api: &Arc<Api>,
    reg: &Registry,
    t: &Target,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let filter = Filter::from_query(&t.info, ctx)?;
    let bookmarks = ctx.query.flag("allowWatchBookmarks");
    let send_initial = ctx.query.get("sendInitialEvents").map(|s| s == "true");
    let rv_param = ctx.query.get("resourceVersion").unwrap_or("").to_string();
    let timeout = match ctx
        .query
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(s) => Duration::from_secs(s),
        None => Duration::from_secs(1800 + rand::random_range(0..1800)),
    };
    let (from, initial): (Revision, bool) = match (rv_param.as_str(), send_initial) {
        (_, Some(true)) => (0, true),
        ("" | "0", _) => (0, true),
        (rv, _) => (
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?,
            false,
        ),
    };
    // Initial state and the live subscription, gap-free.
    let (initial_items, start_rev) = if initial {
        let (items, rev) = api.cache.list(&t.prefix(), None);
        (items, rev)
    } else {
        (Vec::new(), from)
    };
    let replay = api.cache.watch_from(start_rev).await;
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut w = Watcher {
        target: t.clone(),
        filter,
        shape: ctx.shape,
        columns: crd_columns(reg, &t.info),
        sent_columns: false,
        tx,
        prefix: t.prefix(),
        fast: !super::convert::needs_conversion(&t.info),
    };
    let api2 = api.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut live = match replay {
            Ok(x) => x,
            Err(e) => {
                let err: ApiError = e.into();
                let _ = w.send("ERROR", err.to_status(), None).await;
                return;
            }
        };
        for o in &initial_items {
            if w.filter.matches_obj(o) && !w.send_obj("ADDED", o).await {
                return;
            }
        }
        if send_initial == Some(true) && bookmarks && !w.bookmark(start_rev, true).await {
            return;
        }
        let mut last = start_rev;
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
        loop {
            tokio::select! {
                r = live.recv() => match r {
                    Ok(ev) => {
                        // The subscription starts at start_rev and never
                        // repeats a revision; `last` is for bookmarks.
                        last = ev.revision;
                        if !w.event(&ev).await { return; }
                    }
                    // Fell behind the store's compacted history.
                    Err(StoreError::Compacted { .. }) => {
                        let err = ApiError::gone(format!("too old resource version: {last} ({})", api2.cache.revision()));
                        let _ = w.send("ERROR", err.to_status(), None).await;
                        return;
                    }
                    Err(_) => return,
                },
                _ = tick.tick() => {
                    if bookmarks && !w.bookmark(last, false).await { return; }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if bookmarks { let _ = w.bookmark(last, false).await; }
                    return;
                }
                _ = w.tx.closed() => return,
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    use futures::StreamExt;
    let body = BodyExt::boxed(StreamBody::new(
        stream.map(|b| Ok::<_, std::io::Error>(Frame::data(b))),
    ));
    // Watch streams are typed application/json even for Tables, as upstream.
    let ct = "application/json";
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, ct)
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .unwrap())
}

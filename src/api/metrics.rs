//! The resource metrics API, `metrics.k8s.io/v1beta1`, served in-process
//! as metrics-server serves it through the aggregator: NodeMetrics
//! (`nodes`) and PodMetrics (`pods`, namespaced), get and list with label
//! (and field) selectors, `timestamp` and `window`, CPU in nanocores and
//! memory (working set) in bytes as canonical quantities. `kubectl top` and
//! the HPA controller read it.
//!
//! Figures come from each Ready node's agent (`/stats/summary` on its
//! kubelet port, reached with `api.kubelet_client`), scraped on demand and
//! kept for [`CACHE_TTL`]; the agent computes CPU rates from its own
//! history, so one scrape is enough.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::auth::{self, Attributes, User};
use super::errors::{ApiError, ApiResult};
use super::http::Body;
use super::selector::{FieldSelector, LabelSelector};
use super::{Api, Query, json_response};

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
const GV: &str = "metrics.k8s.io/v1beta1";
/// How long scraped figures are served before the nodes are asked again
/// (metrics-server scrapes every 15 s).
const CACHE_TTL: Duration = Duration::from_secs(10);
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Nodes scraped at once.
const SCRAPE_CONCURRENCY: usize = 32;
const MAX_SUMMARY_BYTES: usize = 32 * 1024 * 1024;
/// Used when an agent does not say how long its CPU rates cover.
const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Usage {
    nanocores: u64,
    memory: u64,
}

#[derive(Clone, Debug)]
struct Sample {
    timestamp: String,
    window: Duration,
    usage: Usage,
}

#[derive(Clone, Debug)]
struct PodSample {
    uid: String,
    timestamp: String,
    window: Duration,
    containers: Vec<(String, Usage)>,
}

#[derive(Default)]
struct Snapshot {
    nodes: HashMap<String, Sample>,
    /// By (namespace, name).
    pods: HashMap<(String, String), PodSample>,
}

/// The last scrape of every node; the lock also makes concurrent requests
/// share one scrape.
#[derive(Default)]
pub struct MetricsCache {
    last: tokio::sync::Mutex<Option<(Instant, Arc<Snapshot>)>>,
}

// ------------------------------------------------------------- discovery

/// The group's entry in the legacy `/apis` list.
pub fn api_group() -> Value {
    let gv = json!({"groupVersion": GV, "version": VERSION});
    json!({"name": GROUP, "versions": [gv.clone()], "preferredVersion": gv})
}

/// The group's entry in aggregated discovery (`/apis`).
pub fn group_discovery() -> Value {
    let resource = |plural: &str, kind: &str, scope: &str| {
        json!({
            "resource": plural,
            "responseKind": {"group": GROUP, "version": VERSION, "kind": kind},
            "scope": scope,
            "singularResource": "",
            "verbs": ["get", "list"],
        })
    };
    json!({
        "metadata": {"name": GROUP, "creationTimestamp": null},
        "versions": [{
            "version": VERSION,
            "resources": [
                resource("nodes", "NodeMetrics", "Cluster"),
                resource("pods", "PodMetrics", "Namespaced"),
            ],
            "freshness": "Current",
        }],
    })
}

fn resource_list() -> Value {
    let r = |name: &str, namespaced: bool, kind: &str| json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": ["get", "list"]});
    json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GV,
        "resources": [r("nodes", false, "NodeMetrics"), r("pods", true, "PodMetrics")],
    })
}

// --------------------------------------------------------------- serving

/// Serves `/apis/metrics.k8s.io/<rest>`.
pub async fn handle(
    api: &Arc<Api>,
    user: &User,
    method: &Method,
    accept: &str,
    query: &Query,
    rest: &[&str],
) -> ApiResult<Response<Body>> {
    if *method != Method::GET {
        return Err(ApiError::method_not_allowed());
    }
    let (resource, namespace, name) = match rest {
        [] => {
            let mut g = api_group();
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            return Ok(json_response(StatusCode::OK, &g));
        }
        [VERSION] => return Ok(json_response(StatusCode::OK, &resource_list())),
        [VERSION, "nodes"] => ("nodes", None, None),
        [VERSION, "nodes", n] => ("nodes", None, Some(*n)),
        [VERSION, "pods"] => ("pods", None, None),
        [VERSION, "namespaces", ns, "pods"] => ("pods", Some(*ns), None),
        [VERSION, "namespaces", ns, "pods", n] => ("pods", Some(*ns), Some(*n)),
        _ => return Err(ApiError::not_found_path()),
    };
    if query.flag("watch") {
        return Err(ApiError::method_not_allowed());
    }
    let attrs = Attributes {
        verb: if name.is_some() { "get" } else { "list" }.into(),
        group: GROUP.into(),
        resource: resource.into(),
        namespace: namespace.unwrap_or_default().into(),
        name: name.unwrap_or_default().into(),
        ..Default::default()
    };
    if let Err(msg) = auth::authorize(user, &attrs) {
        let res = format!("{resource}.{GROUP}");
        return Err(ApiError::forbidden(match name {
            Some(n) => format!("{res} \"{n}\" is forbidden: {msg}"),
            None => format!("{res} is forbidden: {msg}"),
        }));
    }
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("invalid label selector: {e}")))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?;
    let snap = snapshot(api).await;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let items: Vec<Value> = if resource == "nodes" {
        let key = name.map(|n| format!("/registry/core/nodes/{n}"));
        let (objs, _) = api
            .cache
            .list(key.as_deref().unwrap_or("/registry/core/nodes/"), None);
        objs.iter()
            .filter(|o| key.as_ref().is_none_or(|k| &o.key == k))
            .filter(|o| labels.matches(o.meta.labels.as_ref()))
            .filter(|o| fields.matches_fields(|f| o.field(f)))
            .filter_map(|o| node_metrics(&o.value(), &snap, &now))
            .collect()
    } else {
        let prefix = match namespace {
            Some(ns) => format!("/registry/core/pods/{ns}/"),
            None => "/registry/core/pods/".to_string(),
        };
        let key = name.map(|n| format!("{prefix}{n}"));
        let (objs, _) = api.cache.list(key.as_deref().unwrap_or(&prefix), None);
        objs.iter()
            .filter(|o| key.as_ref().is_none_or(|k| &o.key == k))
            .filter(|o| labels.matches(o.meta.labels.as_ref()))
            .filter(|o| fields.matches_fields(|f| o.field(f)))
            .filter_map(|o| pod_metrics(&o.value(), &snap, &now))
            .collect()
    };
    let kind = if resource == "nodes" {
        "NodeMetrics"
    } else {
        "PodMetrics"
    };
    if let Some(n) = name {
        // metrics-server's NotFound names pods as namespace/name.
        let (res, shown) = match namespace {
            Some(ns) => ("podmetrics", format!("{ns}/{n}")),
            None => ("nodemetrics", n.to_string()),
        };
        let item = items
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::not_found(GROUP, res, &shown))?;
        if wants_table(accept) {
            return Ok(json_response(StatusCode::OK, &table(&[item])));
        }
        return Ok(json_response(StatusCode::OK, &item));
    }
    if wants_table(accept) {
        return Ok(json_response(StatusCode::OK, &table(&items)));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": format!("{kind}List"), "apiVersion": GV, "metadata": {}, "items": items}),
    ))
}

fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

fn metadata(obj: &Value, now: &str) -> Value {
    let mut m = json!({"name": obj.pointer("/metadata/name"), "creationTimestamp": now});
    if let Some(ns) = obj.pointer("/metadata/namespace") {
        m["namespace"] = ns.clone();
    }
    if let Some(l) = obj.pointer("/metadata/labels") {
        m["labels"] = l.clone();
    }
    m
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "cpu": decimal_quantity(i128::from(u.nanocores), -9),
        "memory": binary_quantity(u.memory),
    })
}

fn node_metrics(node: &Value, snap: &Snapshot, now: &str) -> Option<Value> {
    let name = node.pointer("/metadata/name")?.as_str()?;
    let s = snap.nodes.get(name)?;
    Some(json!({
        "kind": "NodeMetrics", "apiVersion": GV,
        "metadata": metadata(node, now),
        "timestamp": s.timestamp,
        "window": go_duration(s.window),
        "usage": usage_json(&s.usage),
    }))
}

fn pod_metrics(pod: &Value, snap: &Snapshot, now: &str) -> Option<Value> {
    let ns = pod.pointer("/metadata/namespace")?.as_str()?;
    let name = pod.pointer("/metadata/name")?.as_str()?;
    let s = snap.pods.get(&(ns.to_string(), name.to_string()))?;
    // A pod recreated under the same name is not the one measured.
    if pod.pointer("/metadata/uid").and_then(Value::as_str) != Some(s.uid.as_str()) {
        return None;
    }
    let containers: Vec<Value> = s
        .containers
        .iter()
        .map(|(c, u)| json!({"name": c, "usage": usage_json(u)}))
        .collect();
    Some(json!({
        "kind": "PodMetrics", "apiVersion": GV,
        "metadata": metadata(pod, now),
        "timestamp": s.timestamp,
        "window": go_duration(s.window),
        "containers": containers,
    }))
}

/// metrics-server's Table: Name, one column per resource, Window.
fn table(items: &[Value]) -> Value {
    let col = |name: &str, format: &str, desc: &str| json!({"name": name, "type": "string", "format": format, "description": desc, "priority": 0});
    let rows: Vec<Value> = items
        .iter()
        .map(|it| {
            let (cpu, mem) = match it.get("usage") {
                Some(u) => (u["cpu"].clone(), u["memory"].clone()),
                None => {
                    // Pods: the sum over containers.
                    let mut total = (0i128, 0i128);
                    for c in it["containers"].as_array().into_iter().flatten() {
                        total.0 += crate::quantity::quantity_scaled(
                            c["usage"]["cpu"].as_str().unwrap_or("0"),
                            9,
                        )
                        .unwrap_or(0) as i128;
                        total.1 += crate::quantity::quantity_scaled(
                            c["usage"]["memory"].as_str().unwrap_or("0"),
                            0,
                        )
                        .unwrap_or(0) as i128;
                    }
                    (
                        json!(decimal_quantity(total.0, -9)),
                        json!(binary_quantity(total.1.max(0) as u64)),
                    )
                }
            };
            json!({
                "cells": [it["metadata"]["name"], cpu, mem, it["window"]],
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                           "metadata": it["metadata"]},
            })
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {},
        "columnDefinitions": [
            col("Name", "name", "Name of the resource"),
            col("cpu", "quantity", ""),
            col("memory", "quantity", ""),
            col("Window", "duration", ""),
        ],
        "rows": rows,
    })
}

// -------------------------------------------------------------- scraping

/// The current figures: the cached scrape, or a new one when it is older
/// than [`CACHE_TTL`].
async fn snapshot(api: &Arc<Api>) -> Arc<Snapshot> {
    let mut last = api.metrics.last.lock().await;
    if let Some((at, s)) = last.as_ref()
        && at.elapsed() < CACHE_TTL
    {
        return s.clone();
    }
    let s = Arc::new(scrape_all(api).await);
    *last = Some((Instant::now(), s.clone()));
    s
}

/// Ready nodes that run an agent (simulated nodes advertise no kubelet port).
fn scrape_targets(api: &Api) -> Vec<(String, SocketAddr)> {
    let (nodes, _) = api.cache.list("/registry/core/nodes/", None);
    nodes
        .iter()
        .filter(|n| {
            let n = n.value();
            let ready = n
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
            let port = n
                .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            ready && port > 0
        })
        .filter_map(|n| {
            let name = n.name()?.to_string();
            let addr = super::proxy::node_address(api, &name).ok()?;
            Some((name, addr))
        })
        .collect()
}

async fn scrape_all(api: &Arc<Api>) -> Snapshot {
    let Some(kubelet) = api.kubelet_client.get() else {
        return Snapshot::default();
    };
    let results: Vec<(String, anyhow::Result<Value>)> = futures::stream::iter(scrape_targets(api))
        .map(|(name, addr)| async move {
            let r = tokio::time::timeout(SCRAPE_TIMEOUT, fetch_summary(kubelet, addr))
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")));
            (name, r)
        })
        .buffer_unordered(SCRAPE_CONCURRENCY)
        .collect()
        .await;
    let mut snap = Snapshot::default();
    for (node, r) in results {
        match r {
            Ok(summary) => add_summary(&mut snap, &node, &summary),
            Err(e) => tracing::info!(%node, "scraping resource metrics: {e:#}"),
        }
    }
    snap
}

async fn fetch_summary(
    kubelet: &super::proxy::KubeletClientConfig,
    addr: SocketAddr,
) -> anyhow::Result<Value> {
    let tls = kubelet.connect(addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get("/stats/summary?only_cpu_and_memory=true")
        .header(header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let resp = send.send_request(req).await?;
    let code = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_SUMMARY_BYTES)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the summary: {e}"))?
        .to_bytes();
    if !code.is_success() {
        anyhow::bail!("{code}: {}", String::from_utf8_lossy(&body));
    }
    Ok(serde_json::from_slice(&body)?)
}

/// (usage, time, window) of a Summary API `cpu` + `memory` pair; None
/// when either is missing (no CPU rate yet).
fn usage_of(stats: &Value) -> Option<(Usage, String, Duration)> {
    let cpu = stats.get("cpu")?;
    let nanocores = cpu.get("usageNanoCores")?.as_u64()?;
    let memory = stats.pointer("/memory/workingSetBytes")?.as_u64()?;
    let time = cpu.get("time")?.as_str()?.to_string();
    let window = cpu
        .get("skiffWindowMillis")
        .and_then(Value::as_u64)
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_WINDOW);
    Some((Usage { nanocores, memory }, time, window))
}

fn add_summary(snap: &mut Snapshot, node: &str, summary: &Value) {
    if let Some(n) = summary.get("node")
        && let Some((usage, timestamp, window)) = usage_of(n)
    {
        snap.nodes.insert(
            node.to_string(),
            Sample {
                timestamp,
                window,
                usage,
            },
        );
    }
    for p in summary
        .get("pods")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let r = &p["podRef"];
        let (Some(ns), Some(name), Some(uid)) = (
            r["namespace"].as_str(),
            r["name"].as_str(),
            r["uid"].as_str(),
        ) else {
            continue;
        };
        let mut containers = Vec::new();
        let mut when = None;
        let mut complete = true;
        for c in p["containers"].as_array().into_iter().flatten() {
            match (c["name"].as_str(), usage_of(c)) {
                (Some(cn), Some((u, t, w))) => {
                    when.get_or_insert((t, w));
                    containers.push((cn.to_string(), u));
                }
                _ => complete = false,
            }
        }
        // As metrics-server: a pod with any container unmeasured is left out.
        let Some((timestamp, window)) = when.filter(|_| complete) else {
            continue;
        };
        snap.pods.insert(
            (ns.to_string(), name.to_string()),
            PodSample {
                uid: uid.to_string(),
                timestamp,
                window,
                containers,
            },
        );
    }
}

// ----------------------------------------------------------- formatting

/// `value` × 10^`scale` as a canonical DecimalSI quantity (`250m`,
/// `123456n`, `2`), as apimachinery's `Quantity.String()`.
pub fn decimal_quantity(value: i128, scale: i32) -> String {
    if value == 0 {
        return "0".into();
    }
    let (mut m, mut e) = (value, scale);
    // Align to a multiple of 3 from below (suffixes step by 10^3).
    while e.rem_euclid(3) != 0 {
        m *= 10;
        e -= 1;
    }
    while m % 1000 == 0 && e < 18 {
        m /= 1000;
        e += 3;
    }
    // Below nano there is no suffix: round up to nano as upstream.
    while e < -9 {
        m = (m + 999).div_euclid(1000);
        e += 3;
    }
    let suffix = match e {
        -9 => "n",
        -6 => "u",
        -3 => "m",
        0 => "",
        3 => "k",
        6 => "M",
        9 => "G",
        12 => "T",
        15 => "P",
        _ => "E",
    };
    format!("{m}{suffix}")
}

/// Bytes as a canonical BinarySI quantity (`51200Ki`, `50Mi`; plain
/// decimal when not a multiple of 1024).
pub fn binary_quantity(bytes: u64) -> String {
    if bytes < 1024 || !bytes.is_multiple_of(1024) {
        return bytes.to_string();
    }
    let mut m = bytes;
    let mut i = 0;
    while m.is_multiple_of(1024) && i < 6 {
        m /= 1024;
        i += 1;
    }
    format!("{m}{}", ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][i])
}

/// Go's `time.Duration.String()` (`10s`, `10.5s`, `1m0.25s`, `500ms`).
pub fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    let frac = |v: u128, unit: u128| {
        let whole = v / unit;
        let rest = v % unit;
        if rest == 0 {
            whole.to_string()
        } else {
            let digits = unit.ilog10() as usize;
            let s = format!("{rest:0digits$}");
            format!("{whole}.{}", s.trim_end_matches('0'))
        }
    };
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", frac(ns, 1_000));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", frac(ns, 1_000_000));
    }
    let secs_ns = ns % 60_000_000_000;
    let mins = ns / 60_000_000_000;
    let mut out = String::new();
    if mins >= 60 {
        out.push_str(&format!("{}h", mins / 60));
    }
    if mins > 0 {
        out.push_str(&format!("{}m", mins % 60));
    }
    out.push_str(&format!("{}s", frac(secs_ns, 1_000_000_000)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_canonical() {
        assert_eq!(decimal_quantity(250_000_000, -9), "250m");
        assert_eq!(decimal_quantity(123_456, -9), "123456n");
        assert_eq!(decimal_quantity(2_000_000_000, -9), "2");
        assert_eq!(decimal_quantity(1_500_000_000, -9), "1500m");
        assert_eq!(decimal_quantity(12_000, -9), "12u");
        assert_eq!(decimal_quantity(0, -9), "0");
        assert_eq!(decimal_quantity(250, -3), "250m");
        assert_eq!(decimal_quantity(52_428_800_000, -3), "52428800");
        assert_eq!(decimal_quantity(2_000_000, 0), "2M");
        assert_eq!(binary_quantity(52_428_800), "50Mi");
        assert_eq!(binary_quantity(123_456 * 1024), "123456Ki");
        assert_eq!(binary_quantity(1536), "1536");
        assert_eq!(binary_quantity(1000), "1000");
        assert_eq!(binary_quantity(0), "0");
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_millis(10_250)), "10.25s");
        assert_eq!(go_duration(Duration::from_millis(60_250)), "1m0.25s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(
            crate::controllers::parse_go_duration(&go_duration(Duration::from_millis(61_005))),
            Some(Duration::from_millis(61_005))
        );
    }

    #[test]
    fn summaries_become_metrics() {
        let summary = json!({
            "node": {"nodeName": "n1",
                "cpu": {"time": "2026-01-01T00:00:00Z", "usageNanoCores": 1_250_000_000u64,
                        "usageCoreNanoSeconds": 9, "skiffWindowMillis": 10_500},
                "memory": {"time": "2026-01-01T00:00:00Z", "workingSetBytes": 1_073_741_824u64}},
            "pods": [
                {"podRef": {"name": "web", "namespace": "default", "uid": "u1"},
                 "containers": [{"name": "c", "cpu": {"time": "2026-01-01T00:00:00Z", "usageNanoCores": 100_000_000u64},
                                 "memory": {"workingSetBytes": 52_428_800u64}}]},
                // No rate yet: left out.
                {"podRef": {"name": "new", "namespace": "default", "uid": "u2"},
                 "containers": [{"name": "c", "cpu": {"time": "2026-01-01T00:00:00Z"},
                                 "memory": {"workingSetBytes": 1}}]},
            ],
        });
        let mut snap = Snapshot::default();
        add_summary(&mut snap, "n1", &summary);
        let node = json!({"metadata": {"name": "n1", "labels": {"a": "b"}}});
        let m = node_metrics(&node, &snap, "now").unwrap();
        assert_eq!(m["usage"], json!({"cpu": "1250m", "memory": "1Gi"}));
        assert_eq!(m["window"], "10.5s");
        assert_eq!(m["metadata"]["labels"], json!({"a": "b"}));
        let pod = json!({"metadata": {"name": "web", "namespace": "default", "uid": "u1"}});
        let m = pod_metrics(&pod, &snap, "now").unwrap();
        assert_eq!(
            m["containers"],
            json!([{"name": "c", "usage": {"cpu": "100m", "memory": "50Mi"}}])
        );
        assert_eq!(m["window"], "10s");
        let other = json!({"metadata": {"name": "web", "namespace": "default", "uid": "u9"}});
        assert!(pod_metrics(&other, &snap, "now").is_none());
        let new = json!({"metadata": {"name": "new", "namespace": "default", "uid": "u2"}});
        assert!(pod_metrics(&new, &snap, "now").is_none());
        let t = table(&[m]);
        assert_eq!(t["rows"][0]["cells"], json!(["web", "100m", "50Mi", "10s"]));
    }
}

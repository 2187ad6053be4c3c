//! Resource usage as the kubelet reports it: `/stats/summary` (JSON, the
//! Summary API) and `/metrics/resource` (Prometheus text, what
//! metrics-server scrapes). The node's figures come from `/proc/stat` and
//! `/proc/meminfo`, pods' and containers' from their cgroups (working set =
//! usage − inactive_file, as cAdvisor computes it).
//!
//! A CPU rate needs two readings: a small per-cgroup history of cumulative
//! CPU time is kept, fed by a background sampler (every 10 s) and by every
//! scrape, and a rate is computed against the newest reading that is at
//! least a few seconds old.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::Pods;
use crate::agent::runtime::spec::cgroup_usage;

/// A pod on this node, as resource metrics need it.
#[derive(Clone, Debug, Default)]
pub struct PodStatsRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// (container name, runtime id) of the running containers.
    pub containers: Vec<(String, String)>,
}

/// How often the background sampler reads every cgroup.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(10);
/// A rate is measured over at least this long when the history allows,
/// so that one scrape right after another does not give a noisy figure.
const MIN_WINDOW: Duration = Duration::from_secs(5);
/// Readings closer together than this are not kept (nor used for a rate).
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Readings older than this are dropped (the newest is always kept).
const MAX_AGE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
struct CpuSample {
    at: Instant,
    cpu_ns: u64,
}

/// The CPU history of the node, pods and containers, by key.
#[derive(Default)]
pub struct Stats {
    history: Mutex<HashMap<String, VecDeque<CpuSample>>>,
}

/// One reading of a cgroup (or of the node).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    /// Cumulative CPU time, core-nanoseconds.
    pub cpu_ns: u64,
    /// CPU rate, nanocores, over `window`; None until two readings exist.
    pub nanocores: Option<u64>,
    pub window: Option<Duration>,
    pub working_set: u64,
    /// Node only: total minus free, and available memory.
    pub usage_bytes: Option<u64>,
    pub available_bytes: Option<u64>,
}

/// A pod's reading and its containers'.
pub struct PodReading {
    pub pod: PodStatsRef,
    pub total: Reading,
    pub containers: Vec<(String, Reading)>,
}

/// Everything read at one instant.
pub struct Snapshot {
    pub time: DateTime<Utc>,
    pub node: Option<Reading>,
    pub pods: Vec<PodReading>,
}

impl Stats {
    pub fn new() -> Arc<Stats> {
        Arc::new(Stats::default())
    }

    /// Reads the node, every pod and container, records the CPU samples,
    /// and forgets the history of cgroups that are gone.
    pub fn collect(&self, pods: &[PodStatsRef]) -> Snapshot {
        let now = Instant::now();
        let time = Utc::now();
        let mut hist = self.history.lock().unwrap();
        let mut seen: Vec<String> = Vec::new();
        let mut reading = |key: String, cpu_ns: u64, working_set: u64| {
            let rate = record(hist.entry(key.clone()).or_default(), now, cpu_ns);
            seen.push(key);
            Reading {
                cpu_ns,
                nanocores: rate.map(|r| r.0),
                window: rate.map(|r| r.1),
                working_set,
                ..Default::default()
            }
        };
        let node = node_usage().map(|(cpu, mem)| {
            let mut r = reading("node".into(), cpu, mem.working_set);
            r.usage_bytes = Some(mem.usage);
            r.available_bytes = Some(mem.available);
            r
        });
        let mut out = Vec::new();
        for p in pods {
            let Some((cgroup, (cpu, mem))) = pod_cgroup(&p.uid) else {
                continue;
            };
            let pod = reading(format!("pod/{}", p.uid), cpu, mem);
            let containers = p
                .containers
                .iter()
                .filter_map(|(name, id)| {
                    let (cpu, mem) = cgroup_usage(&format!("{cgroup}/{id}"))?;
                    Some((name.clone(), reading(format!("ctr/{id}"), cpu, mem)))
                })
                .collect();
            out.push(PodReading {
                pod: p.clone(),
                total: pod,
                containers,
            });
        }
        hist.retain(|k, _| seen.contains(k));
        Snapshot {
            time,
            node,
            pods: out,
        }
    }

    /// Samples every [`SAMPLE_PERIOD`] so a scrape always finds an older
    /// reading to compute rates from.
    pub async fn run_sampler(self: Arc<Self>, pods: Arc<dyn Pods>) {
        let mut tick = tokio::time::interval(SAMPLE_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (stats, pods) = (self.clone(), pods.clone());
            let _ = tokio::task::spawn_blocking(move || {
                stats.collect(&pods.stats_pods());
            })
            .await;
        }
    }
}

/// Records `cpu_ns` read at `now` and returns (nanocores, window) against
/// the newest earlier reading at least [`MIN_WINDOW`] old (else the oldest
/// one at least [`MIN_INTERVAL`] old).
fn record(hist: &mut VecDeque<CpuSample>, now: Instant, cpu_ns: u64) -> Option<(u64, Duration)> {
    if hist.back().is_some_and(|s| s.cpu_ns > cpu_ns) {
        // The counter went back: a new cgroup under the same name.
        hist.clear();
    }
    let age = |s: &CpuSample| now.saturating_duration_since(s.at);
    let base = hist
        .iter()
        .rev()
        .find(|s| age(s) >= MIN_WINDOW)
        .or_else(|| hist.front().filter(|s| age(s) >= MIN_INTERVAL))
        .copied();
    if hist.back().is_none_or(|s| age(s) >= MIN_INTERVAL) {
        hist.push_back(CpuSample { at: now, cpu_ns });
    }
    while hist.len() > 1 && hist.front().is_some_and(|s| age(s) > MAX_AGE) {
        hist.pop_front();
    }
    let base = base?;
    let window = age(&base);
    let rate = (cpu_ns - base.cpu_ns) as u128 * 1_000_000_000 / window.as_nanos().max(1);
    Some((rate as u64, window))
}

/// The pod's cgroup (in whichever QoS branch) and its usage.
fn pod_cgroup(uid: &str) -> Option<(String, (u64, u64))> {
    ["/kubepods", "/kubepods/burstable", "/kubepods/besteffort"]
        .iter()
        .find_map(|parent| {
            let path = format!("{parent}/pod{uid}");
            cgroup_usage(&path).map(|u| (path, u))
        })
}

struct NodeMemory {
    working_set: u64,
    usage: u64,
    available: u64,
}

/// (cumulative CPU core-nanoseconds, memory) of the whole machine.
fn node_usage() -> Option<(u64, NodeMemory)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some((
        parse_proc_stat(&stat, if hz > 0 { hz as u64 } else { 100 })?,
        parse_meminfo(&meminfo)?,
    ))
}

/// Busy time of the `cpu` line (user, nice, system, irq, softirq, steal;
/// not idle or iowait) in nanoseconds.
fn parse_proc_stat(stat: &str, hz: u64) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let field = |i: usize| f.get(i).copied().unwrap_or(0);
    let jiffies = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
    Some(jiffies * (1_000_000_000 / hz))
}

/// Working set as cAdvisor's root cgroup: used (total − free) minus
/// inactive file pages.
fn parse_meminfo(meminfo: &str) -> Option<NodeMemory> {
    let kib = |key: &str| {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let total = kib("MemTotal")? * 1024;
    let free = kib("MemFree")? * 1024;
    let inactive_file = kib("Inactive(file)").unwrap_or(0) * 1024;
    let usage = total.saturating_sub(free);
    Some(NodeMemory {
        working_set: usage.saturating_sub(inactive_file),
        usage,
        available: kib("MemAvailable").map(|k| k * 1024).unwrap_or(free),
    })
}

fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn cpu_json(r: &Reading, time: &str) -> Value {
    let mut v = json!({"time": time, "usageCoreNanoSeconds": r.cpu_ns});
    if let Some(n) = r.nanocores {
        v["usageNanoCores"] = json!(n);
    }
    // Not in the kubelet's Summary API: the interval the rate covers, so
    // the API server can report an honest `window`.
    if let Some(w) = r.window {
        v["skiffWindowMillis"] = json!(w.as_millis() as u64);
    }
    v
}

fn memory_json(r: &Reading, time: &str) -> Value {
    let mut v = json!({"time": time, "workingSetBytes": r.working_set});
    if let Some(u) = r.usage_bytes {
        v["usageBytes"] = json!(u);
    }
    if let Some(a) = r.available_bytes {
        v["availableBytes"] = json!(a);
    }
    v
}

/// The Summary API document (`/stats/summary`), CPU and memory only.
pub fn summary_json(s: &Snapshot, node_name: &str) -> Value {
    let time = rfc3339(&s.time);
    let mut node = json!({"nodeName": node_name});
    if let Some(n) = &s.node {
        node["cpu"] = cpu_json(n, &time);
        node["memory"] = memory_json(n, &time);
    }
    let pods: Vec<Value> = s
        .pods
        .iter()
        .map(|PodReading { pod: p, total: pod, containers }| {
            let cs: Vec<Value> = containers
                .iter()
                .map(|(name, r)| {
                    json!({"name": name, "cpu": cpu_json(r, &time), "memory": memory_json(r, &time)})
                })
                .collect();
            json!({
                "podRef": {"name": p.name, "namespace": p.namespace, "uid": p.uid},
                "containers": cs,
                "cpu": cpu_json(pod, &time),
                "memory": memory_json(pod, &time),
            })
        })
        .collect();
    json!({"node": node, "pods": pods})
}

/// `/metrics/resource` as the kubelet serves it (cumulative CPU seconds
/// and working sets, with millisecond timestamps).
pub fn resource_metrics_text(s: &Snapshot) -> String {
    let ts = s.time.timestamp_millis();
    let secs = |ns: u64| ns as f64 / 1e9;
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} [STABLE] {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{labels} {v} {ts}");
        }
    };
    let node: Vec<&Reading> = s.node.iter().collect();
    family(
        "node_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the node in core-seconds",
        node.iter()
            .map(|r| (String::new(), secs(r.cpu_ns)))
            .collect(),
    );
    family(
        "node_memory_working_set_bytes",
        "gauge",
        "Current working set of the node in bytes",
        node.iter()
            .map(|r| (String::new(), r.working_set as f64))
            .collect(),
    );
    let pod_label = |p: &PodStatsRef| format!("namespace=\"{}\",pod=\"{}\"", p.namespace, p.name);
    let containers = |f: &dyn Fn(&Reading) -> f64| -> Vec<(String, f64)> {
        s.pods
            .iter()
            .flat_map(
                |PodReading {
                     pod: p,
                     containers: cs,
                     ..
                 }| {
                    cs.iter().map(move |(c, r)| {
                        (format!("{{container=\"{c}\",{}}}", pod_label(p)), f(r))
                    })
                },
            )
            .collect()
    };
    family(
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the container in core-seconds",
        containers(&|r| secs(r.cpu_ns)),
    );
    family(
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set of the container in bytes",
        containers(&|r| r.working_set as f64),
    );
    family(
        "pod_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the pod in core-seconds",
        s.pods
            .iter()
            .map(
                |PodReading {
                     pod: p, total: r, ..
                 }| (format!("{{{}}}", pod_label(p)), secs(r.cpu_ns)),
            )
            .collect(),
    );
    family(
        "pod_memory_working_set_bytes",
        "gauge",
        "Current working set of the pod in bytes",
        s.pods
            .iter()
            .map(
                |PodReading {
                     pod: p, total: r, ..
                 }| (format!("{{{}}}", pod_label(p)), r.working_set as f64),
            )
            .collect(),
    );
    let _ = writeln!(
        out,
        "# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics, 0 otherwise\n# TYPE scrape_error gauge\nscrape_error 0"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_need_two_readings_and_a_window() {
        let mut h = VecDeque::new();
        let t0 = Instant::now();
        assert_eq!(record(&mut h, t0, 1_000), None);
        // Too soon after the first reading: no rate, not kept.
        assert_eq!(record(&mut h, t0 + Duration::from_millis(500), 2_000), None);
        assert_eq!(h.len(), 1);
        // 2 s later: the only older reading is used.
        let (r, w) = record(&mut h, t0 + Duration::from_secs(2), 1_000_001_000).unwrap();
        assert_eq!(w, Duration::from_secs(2));
        assert_eq!(r, 500_000_000);
        // 10 s: the newest reading at least 5 s old is t0+2.
        let (r, w) = record(&mut h, t0 + Duration::from_secs(10), 5_000_001_000).unwrap();
        assert_eq!((r, w), (500_000_000, Duration::from_secs(8)));
        // 16 s: t0+10 is the newest reading ≥ 5 s old.
        let (r, w) = record(&mut h, t0 + Duration::from_secs(16), 11_000_001_000).unwrap();
        assert_eq!((r, w), (1_000_000_000, Duration::from_secs(6)));
        // The counter going back starts over.
        assert_eq!(record(&mut h, t0 + Duration::from_secs(30), 10), None);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn proc_parsing() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 1 2 3\n";
        assert_eq!(parse_proc_stat(stat, 100), Some(161 * 10_000_000));
        let mi = "MemTotal:       16000 kB\nMemFree:         4000 kB\nMemAvailable:    9000 kB\nInactive(file):  3000 kB\n";
        let m = parse_meminfo(mi).unwrap();
        assert_eq!(m.usage, 12000 * 1024);
        assert_eq!(m.working_set, 9000 * 1024);
        assert_eq!(m.available, 9000 * 1024);
    }
}

//! The Node object: registration, status (capacity, addresses, conditions,
//! images) and the heartbeat Lease in `kube-node-lease`, as the kubelet
//! keeps them.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::AgentConfig;

/// How often the Lease is renewed (kubelet: 10 s, lease duration 40 s).
const LEASE_RENEW: Duration = Duration::from_secs(10);
/// How often conditions are re-evaluated and posted.
const STATUS_PERIOD: Duration = Duration::from_secs(10);

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

fn kernel_version() -> String {
    read_trim("/proc/sys/kernel/osrelease")
}

/// (total, available) bytes of memory from /proc/meminfo.
pub fn memory() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

/// (total, available) bytes of the filesystem holding `path`.
pub fn disk(path: &std::path::Path) -> (u64, u64) {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return (0, 0);
    };
    // SAFETY: statvfs fills the struct we pass; the path is NUL-terminated.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return (0, 0);
        }
        let f = st.f_frsize;
        (st.f_blocks * f, st.f_bavail * f)
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// A node condition. `previous` is the Node's current condition list: its
/// `lastTransitionTime` is kept while the status stays the same, so the
/// time says when the status last flipped, not when it was last posted.
fn condition(
    previous: &[Value],
    type_: &str,
    ok_status: &str,
    bad: bool,
    reasons: (&str, &str),
    msgs: (&str, &str),
) -> Value {
    let (status, reason, message) = if bad {
        (
            if ok_status == "True" { "False" } else { "True" },
            reasons.1,
            msgs.1,
        )
    } else {
        (ok_status, reasons.0, msgs.0)
    };
    let now = now();
    let transition = previous
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == status)
        .and_then(|c| c["lastTransitionTime"].as_str())
        .map_or_else(|| now.clone(), str::to_string);
    json!({"type": type_, "status": status, "reason": reason, "message": message,
        "lastHeartbeatTime": now, "lastTransitionTime": transition})
}

fn conditions(cfg: &AgentConfig, previous: &[Value]) -> Value {
    let (mem_total, mem_avail) = memory();
    let (disk_total, disk_avail) = disk(&cfg.data_dir);
    // Upstream's default hard eviction thresholds.
    let mem_pressure = mem_total > 0 && mem_avail < 100 * 1024 * 1024;
    let disk_pressure = disk_total > 0 && disk_avail * 10 < disk_total;
    let pid_max: u64 = read_trim("/proc/sys/kernel/pid_max")
        .parse()
        .unwrap_or(32768);
    let pids = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter(|e| {
                e.as_ref().is_ok_and(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
            })
            .count() as u64
        })
        .unwrap_or(0);
    let pid_pressure = pids * 10 > pid_max * 9;
    json!([
        condition(
            previous,
            "MemoryPressure",
            "False",
            mem_pressure,
            ("KubeletHasSufficientMemory", "KubeletHasInsufficientMemory"),
            (
                "kubelet has sufficient memory available",
                "kubelet has insufficient memory available"
            )
        ),
        condition(
            previous,
            "DiskPressure",
            "False",
            disk_pressure,
            ("KubeletHasNoDiskPressure", "KubeletHasDiskPressure"),
            ("kubelet has no disk pressure", "kubelet has disk pressure")
        ),
        condition(
            previous,
            "PIDPressure",
            "False",
            pid_pressure,
            ("KubeletHasSufficientPID", "KubeletHasInsufficientPID"),
            (
                "kubelet has sufficient PID available",
                "kubelet has insufficient PID available"
            )
        ),
        condition(
            previous,
            "Ready",
            "True",
            !NETWORK_READY.load(std::sync::atomic::Ordering::SeqCst),
            ("KubeletReady", "KubeletNotReady"),
            (
                "kubelet is posting ready status",
                "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:the pod network is not set up yet"
            )
        ),
    ])
}

/// Set once the pod network is up: the node is NotReady before, as upstream.
static NETWORK_READY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The pod network is up: post Ready now rather than at the next heartbeat.
pub async fn network_ready(client: &Client, cfg: &AgentConfig) {
    NETWORK_READY.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Err(e) = post_status(client, cfg).await {
        tracing::warn!("{e:#}");
    }
}

/// Upstream's `nodeStatusMaxImages`.
const MAX_IMAGES: usize = 50;

/// The images in the store as the kubelet lists them: one entry per image
/// (config digest) with its repo digests and tags, largest first.
fn images(cfg: &AgentConfig) -> Value {
    let Ok(store) = crate::agent::images::ImageStore::open(&cfg.data_dir) else {
        return json!([]);
    };
    let mut by_id: BTreeMap<String, (Vec<String>, u64)> = BTreeMap::new();
    for img in store.list().unwrap_or_default() {
        let e = by_id.entry(img.config.clone()).or_default();
        let repo_digest = repository(&img.name).map(|repo| {
            let digest = img.index_digest.as_deref().unwrap_or(&img.digest);
            format!("{repo}@{digest}")
        });
        for name in repo_digest.into_iter().chain([img.name.clone()]) {
            if !e.0.contains(&name) {
                e.0.push(name);
            }
        }
        e.1 = e.1.max(img.size);
    }
    let mut list: Vec<(Vec<String>, u64)> = by_id.into_values().collect();
    // Repo digests first, then tags, as upstream prints them.
    for (names, _) in &mut list {
        names.sort_by_key(|n| !n.contains('@'));
    }
    list.sort_by_key(|e| std::cmp::Reverse(e.1));
    list.truncate(MAX_IMAGES);
    Value::Array(
        list.into_iter()
            .map(|(names, size)| json!({"names": names, "sizeBytes": size}))
            .collect(),
    )
}

/// `docker.io/library/busybox` from `docker.io/library/busybox:1.36` (or
/// `…@sha256:…`); None for an unnamed image (a bare digest).
fn repository(name: &str) -> Option<&str> {
    if name.starts_with("sha256:") {
        return None;
    }
    if let Some((repo, _)) = name.split_once('@') {
        return Some(repo);
    }
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    Some(match name[slash..].rfind(':') {
        Some(i) => &name[..slash + i],
        None => name,
    })
}

fn status(cfg: &AgentConfig, previous: &[Value]) -> Value {
    let (mem_total, _) = memory();
    let (disk_total, _) = disk(&cfg.data_dir);
    let capacity = json!({
        "cpu": cpus().to_string(),
        "memory": format!("{}Ki", mem_total / 1024),
        "ephemeral-storage": format!("{}Ki", disk_total / 1024),
        "pods": "110",
        "hugepages-2Mi": "0",
    });
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "addresses": [
            {"type": "InternalIP", "address": cfg.node_ip},
            {"type": "Hostname", "address": cfg.node_name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.streaming_port}},
        "nodeInfo": {
            "machineID": read_trim("/etc/machine-id"),
            "systemUUID": read_trim("/sys/class/dmi/id/product_uuid"),
            "bootID": read_trim("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": kernel_version(),
            "osImage": os_image(),
            "containerRuntimeVersion": format!("skiff://{}", crate::cli::VERSION),
            "kubeletVersion": format!("v1.33.1+skiff-{}", crate::cli::VERSION),
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": crate::agent::images::oci::host_platform().0,
        },
        "conditions": conditions(cfg, previous),
        "images": images(cfg),
    })
}

/// Creates the Node (or adopts an existing one of that name), posts its
/// status, and returns it with the server-assigned fields.
pub async fn register(client: &Client, cfg: &AgentConfig) -> Result<Node> {
    let api: Api<Node> = Api::all(client.clone());
    let mut labels = serde_json::Map::new();
    labels.insert("kubernetes.io/hostname".into(), json!(cfg.node_name));
    labels.insert("kubernetes.io/os".into(), json!("linux"));
    labels.insert(
        "kubernetes.io/arch".into(),
        json!(crate::agent::images::oci::host_platform().0),
    );
    labels.insert("beta.kubernetes.io/os".into(), json!("linux"));
    labels.insert(
        "beta.kubernetes.io/arch".into(),
        json!(crate::agent::images::oci::host_platform().0),
    );
    labels.insert("node.kubernetes.io/instance-type".into(), json!("skiff"));
    if cfg.control_plane {
        labels.insert(
            "node-role.kubernetes.io/control-plane".into(),
            json!("true"),
        );
        labels.insert("node-role.kubernetes.io/master".into(), json!("true"));
    }
    for l in &cfg.labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        labels.insert(k.to_string(), json!(v));
    }
    let taints: Vec<Value> = cfg
        .taints
        .iter()
        .map(|t| parse_taint(t))
        .collect::<Result<_>>()?;
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": cfg.node_name, "labels": labels,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
        "spec": {"taints": taints},
    });
    let node: Node = serde_json::from_value(node)?;
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // Re-registration: labels are merged; taints are left as they are
            // (the kubelet registers its taints on first registration only).
            let patch = json!({"metadata": {"labels": labels}});
            api.patch(
                &cfg.node_name,
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
            .context("updating the Node")?;
        }
        Err(e) => return Err(e).context("registering the Node"),
    }
    // A transient failure here is retried by the heartbeat.
    if let Err(e) = post_status(client, cfg).await {
        tracing::warn!("{e:#}");
    }
    Ok(api.get(&cfg.node_name).await?)
}

/// `key=value:Effect` or `key:Effect`.
fn parse_taint(s: &str) -> Result<Value> {
    let (kv, effect) = s
        .rsplit_once(':')
        .with_context(|| format!("--node-taint {s:?}: expected key=value:Effect"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        anyhow::bail!(
            "--node-taint {s:?}: effect must be NoSchedule, PreferNoSchedule or NoExecute"
        );
    }
    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
    Ok(if v.is_empty() {
        json!({"key": k, "effect": effect})
    } else {
        json!({"key": k, "value": v, "effect": effect})
    })
}

/// Posts Node status as the kubelet does with node leases: computed every
/// 10 s, written when it changed (heartbeat times aside) or when 5 minutes
/// passed since the last write (`nodeStatusReportFrequency`).
#[derive(Default)]
struct StatusReporter {
    /// The status last written.
    last: Option<Value>,
    written_at: Option<tokio::time::Instant>,
}

/// Writes the status now (registration, network up).
async fn post_status(client: &Client, cfg: &AgentConfig) -> Result<()> {
    StatusReporter::default().report(client, cfg).await
}

const STATUS_REPORT_PERIOD: Duration = Duration::from_secs(300);

/// A status without its conditions' heartbeat times, for comparison.
fn without_heartbeats(status: &Value) -> Value {
    let mut s = status.clone();
    if let Some(cs) = s["conditions"].as_array_mut() {
        for c in cs {
            if let Some(c) = c.as_object_mut() {
                c.remove("lastHeartbeatTime");
            }
        }
    }
    s
}

impl StatusReporter {
    async fn report(&mut self, client: &Client, cfg: &AgentConfig) -> Result<()> {
        // The current conditions, for their transition times: ours once we
        // wrote them, else the Node's (read untyped so the times come back
        // exactly as stored).
        let previous: Vec<Value> = match &self.last {
            Some(last) => last["conditions"].as_array().cloned().unwrap_or_default(),
            None => {
                let raw: Api<DynamicObject> =
                    Api::all_with(client.clone(), &ApiResource::erase::<Node>(&()));
                raw.get_opt(&cfg.node_name)
                    .await
                    .context("reading the Node")?
                    .and_then(|n| n.data["status"]["conditions"].as_array().cloned())
                    .unwrap_or_default()
            }
        };
        let st = status(cfg, &previous);
        let unchanged = self
            .last
            .as_ref()
            .is_some_and(|l| without_heartbeats(l) == without_heartbeats(&st));
        let recent = self
            .written_at
            .is_some_and(|t| t.elapsed() < STATUS_REPORT_PERIOD);
        if unchanged && recent {
            return Ok(());
        }
        let api: Api<Node> = Api::all(client.clone());
        api.patch_status(
            &cfg.node_name,
            &PatchParams::default(),
            &Patch::Strategic(json!({ "status": st })),
        )
        .await
        .context("posting Node status")?;
        self.last = Some(st);
        self.written_at = Some(tokio::time::Instant::now());
        Ok(())
    }
}

/// Waits until the node IPAM controller gave the Node a pod CIDR.
pub async fn wait_pod_cidr(client: &Client, name: &str) -> Result<String> {
    let api: Api<Node> = Api::all(client.clone());
    let mut warned = false;
    loop {
        if let Some(c) = api
            .get_opt(name)
            .await?
            .and_then(|n| n.spec?.pod_cidr)
            .filter(|c| !c.is_empty())
        {
            return Ok(c);
        }
        if !warned {
            tracing::info!(node = name, "waiting for a pod CIDR from the server");
            warned = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Renews the Lease and re-posts status, forever.
pub async fn heartbeat(client: Client, cfg: AgentConfig) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let mut last_status = tokio::time::Instant::now();
    let mut reporter = StatusReporter::default();
    loop {
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": cfg.node_name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": cfg.node_name, "leaseDurationSeconds": 40,
                "renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now())}});
        if let Err(e) = leases
            .patch(
                &cfg.node_name,
                &PatchParams::apply("skiff-agent").force(),
                &Patch::Apply(lease),
            )
            .await
        {
            tracing::warn!("renewing the node Lease: {e}");
        }
        if last_status.elapsed() >= STATUS_PERIOD {
            last_status = tokio::time::Instant::now();
            if let Err(e) = reporter.report(&client, &cfg).await {
                // Write again next time.
                reporter.last = None;
                tracing::warn!("{e:#}");
            }
        }
        tokio::time::sleep(LEASE_RENEW).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_of_image_names() {
        assert_eq!(
            repository("docker.io/library/busybox:1.36"),
            Some("docker.io/library/busybox")
        );
        assert_eq!(
            repository("127.0.0.1:5000/app@sha256:ab"),
            Some("127.0.0.1:5000/app")
        );
        assert_eq!(repository("127.0.0.1:5000/app"), Some("127.0.0.1:5000/app"));
        assert_eq!(repository("sha256:ab"), None);
    }

    #[test]
    fn transition_time_kept_while_status_holds() {
        let old = "2020-01-01T00:00:00Z";
        let prev = vec![json!({"type": "Ready", "status": "True", "lastTransitionTime": old})];
        let r = ("KubeletReady", "KubeletNotReady");
        let m = ("ready", "not ready");
        let same = condition(&prev, "Ready", "True", false, r, m);
        assert_eq!(same["lastTransitionTime"], old);
        assert_ne!(same["lastHeartbeatTime"], old);
        let flipped = condition(&prev, "Ready", "True", true, r, m);
        assert_eq!(flipped["status"], "False");
        assert_ne!(flipped["lastTransitionTime"], old);
        let fresh = condition(&[], "Ready", "True", false, r, m);
        assert_eq!(fresh["lastTransitionTime"], fresh["lastHeartbeatTime"]);
    }

    #[test]
    fn heartbeat_times_alone_are_no_change() {
        let at = |hb: &str, ready: &str| {
            json!({"conditions": [{"type": "Ready", "status": ready,
                "lastHeartbeatTime": hb, "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
        };
        let a = at("2026-01-01T00:00:10Z", "True");
        assert_eq!(
            without_heartbeats(&a),
            without_heartbeats(&at("2026-01-01T00:00:20Z", "True"))
        );
        assert_ne!(
            without_heartbeats(&a),
            without_heartbeats(&at("2026-01-01T00:00:20Z", "False"))
        );
    }
}

//! QoS class and the pod's cgroup placement (`/kubepods[/burstable|/besteffort]/pod<uid>`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;

/// The pod's QoS class: the server's `status.qosClass` when set, else
/// computed as upstream (all containers with equal cpu+memory requests and
/// limits → Guaranteed; nothing set → BestEffort; else Burstable).
pub fn qos_class(pod: &Pod) -> String {
    if let Some(q) = pod.status.as_ref().and_then(|s| s.qos_class.clone()) {
        return q;
    }
    let spec = pod.spec.clone().unwrap_or_default();
    let mut any = false;
    let mut guaranteed = true;
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let r = c.resources.clone().unwrap_or_default();
        let req = r.requests.unwrap_or_default();
        let lim = r.limits.unwrap_or_default();
        if !req.is_empty() || !lim.is_empty() {
            any = true;
        }
        for k in ["cpu", "memory"] {
            match (req.get(k), lim.get(k)) {
                (_, None) => guaranteed = false,
                (Some(a), Some(b)) if a != b => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort".into()
    } else if guaranteed {
        "Guaranteed".into()
    } else {
        "Burstable".into()
    }
}

pub fn pod_cgroup(pod: &Pod) -> String {
    let uid = pod.uid().unwrap_or_default();
    match qos_class(pod).as_str() {
        "Guaranteed" => format!("/kubepods/pod{uid}"),
        "BestEffort" => format!("/kubepods/besteffort/pod{uid}"),
        _ => format!("/kubepods/burstable/pod{uid}"),
    }
}

/// Removes the pod-level cgroup in whichever QoS branch it is.
pub fn remove_pod_cgroups(uid: &str) {
    for parent in ["/kubepods", "/kubepods/burstable", "/kubepods/besteffort"] {
        crate::agent::runtime::spec::remove_cgroup(&format!("{parent}/pod{uid}"));
    }
}

/// Pod-level cgroup settings as upstream's `ResourceConfigForPod`: cpu
/// shares from the requests; a memory limit and a cpu quota only when every
/// container declares that limit (the larger of the containers' sum and
/// the largest init container).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PodResources {
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub memory_limit: Option<i64>,
}

const CPU_PERIOD: i64 = 100_000;

/// One container's amounts, in milli-units.
struct Amounts {
    cpu_request: Option<i64>,
    cpu_limit: Option<i64>,
    memory_limit: Option<i64>,
}

fn amounts(cs: &[Container]) -> Vec<Amounts> {
    let milli = |m: &Option<BTreeMap<String, Quantity>>, k: &str| {
        m.as_ref()
            .and_then(|m| m.get(k))
            .and_then(|q| crate::quantity::quantity_scaled(&q.0, 3))
    };
    cs.iter()
        .map(|c| {
            let r = c.resources.clone().unwrap_or_default();
            let cpu_limit = milli(&r.limits, "cpu");
            Amounts {
                // A request defaults to the limit, as the API server defaults it.
                cpu_request: Some(milli(&r.requests, "cpu").or(cpu_limit).unwrap_or(0)),
                cpu_limit,
                memory_limit: milli(&r.limits, "memory"),
            }
        })
        .collect()
}

pub fn pod_resources(pod: &Pod) -> PodResources {
    let spec = pod.spec.clone().unwrap_or_default();
    let regular = amounts(&spec.containers);
    let init = amounts(spec.init_containers.as_deref().unwrap_or(&[]));
    let combine = |f: fn(&Amounts) -> Option<i64>| -> Option<i64> {
        if !regular.iter().chain(init.iter()).all(|a| f(a).is_some()) {
            return None;
        }
        let sum: i64 = regular.iter().filter_map(f).sum();
        let max_init = init.iter().filter_map(f).max().unwrap_or(0);
        Some(sum.max(max_init))
    };
    let cpu_req = combine(|a| a.cpu_request).unwrap_or(0);
    let qos = qos_class(pod);
    if qos == "BestEffort" {
        return PodResources {
            cpu_shares: Some(2),
            ..Default::default()
        };
    }
    PodResources {
        cpu_shares: Some(((cpu_req * 1024) / 1000).max(2) as u64),
        cpu_quota: combine(|a| a.cpu_limit).map(|m| (m * CPU_PERIOD / 1000).max(1000)),
        // Milli-bytes to bytes.
        memory_limit: combine(|a| a.memory_limit).map(|m| m / 1000),
    }
}

/// Creates the pod's cgroup and writes its pod-level limits, before any
/// container starts in it (containers' own limits must fit under them).
pub fn apply_pod_cgroup(pod: &Pod) -> std::io::Result<()> {
    write_pod_cgroup(
        std::path::Path::new("/sys/fs/cgroup"),
        crate::agent::runtime::spec::cgroup_v2(),
        &pod_cgroup(pod),
        &pod_resources(pod),
    )
}

/// `apply_pod_cgroup` under the cgroup filesystem mounted at `root`.
fn write_pod_cgroup(
    root: &std::path::Path,
    v2: bool,
    path: &str,
    res: &PodResources,
) -> std::io::Result<()> {
    let rel = path.trim_start_matches('/');
    let write = |file: std::path::PathBuf, value: String| -> std::io::Result<()> {
        std::fs::write(&file, &value).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("writing {value} to {}: {e}", file.display()),
            )
        })
    };
    if v2 {
        // Every ancestor must delegate cpu and memory to its children.
        let mut dir = root.to_path_buf();
        for part in rel.split('/') {
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), "+cpu +memory");
            dir = dir.join(part);
            if !dir.exists() {
                std::fs::create_dir(&dir)?;
            }
        }
        let _ = std::fs::write(dir.join("cgroup.subtree_control"), "+cpu +memory");
        if let Some(s) = res.cpu_shares {
            // The OCI shares → cgroup v2 weight conversion.
            let weight = 1 + ((s.clamp(2, 262_144) - 2) * 9999) / 262_142;
            write(dir.join("cpu.weight"), weight.to_string())?;
        }
        let quota = res.cpu_quota.map_or("max".to_string(), |q| q.to_string());
        write(dir.join("cpu.max"), format!("{quota} {CPU_PERIOD}"))?;
        let mem = res
            .memory_limit
            .map_or("max".to_string(), |m| m.to_string());
        write(dir.join("memory.max"), mem)?;
        return Ok(());
    }
    let cpu = root.join("cpu").join(rel);
    std::fs::create_dir_all(&cpu)?;
    if let Some(s) = res.cpu_shares {
        write(cpu.join("cpu.shares"), s.to_string())?;
    }
    write(cpu.join("cpu.cfs_period_us"), CPU_PERIOD.to_string())?;
    write(
        cpu.join("cpu.cfs_quota_us"),
        res.cpu_quota.unwrap_or(-1).to_string(),
    )?;
    let mem = root.join("memory").join(rel);
    std::fs::create_dir_all(&mem)?;
    write(
        mem.join("memory.limit_in_bytes"),
        res.memory_limit.unwrap_or(-1).to_string(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    const BURSTABLE: &str = r#"
metadata: {name: p, uid: u1}
spec:
  containers:
  - name: a
    image: x
    resources:
      requests: {cpu: 250m, memory: 32Mi}
      limits: {cpu: 500m, memory: 64Mi}
  - name: b
    image: x
    resources:
      requests: {cpu: 250m, memory: 32Mi}
      limits: {cpu: 500m, memory: 64Mi}
"#;

    fn read(dir: &std::path::Path, file: &str) -> String {
        std::fs::read_to_string(dir.join(file)).unwrap()
    }

    /// The values the kubelet writes: shares from requests (v2: converted
    /// to a weight), a CFS quota and a memory limit from the summed limits.
    #[test]
    fn pod_cgroup_files_v1_and_v2() {
        let p = pod(BURSTABLE);
        let res = pod_resources(&p);
        let path = pod_cgroup(&p);
        assert_eq!(path, "/kubepods/burstable/podu1");

        let v2 = tempfile::tempdir().unwrap();
        write_pod_cgroup(v2.path(), true, &path, &res).unwrap();
        let dir = v2.path().join("kubepods/burstable/podu1");
        // 500m requested → 512 shares → weight 1 + (510 * 9999) / 262142.
        assert_eq!(read(&dir, "cpu.weight"), "20");
        assert_eq!(read(&dir, "cpu.max"), "100000 100000");
        assert_eq!(read(&dir, "memory.max"), (128u64 << 20).to_string());
        // Delegation from the root down.
        for d in ["", "kubepods", "kubepods/burstable"] {
            assert_eq!(
                read(&v2.path().join(d), "cgroup.subtree_control"),
                "+cpu +memory"
            );
        }

        let v1 = tempfile::tempdir().unwrap();
        write_pod_cgroup(v1.path(), false, &path, &res).unwrap();
        let cpu = v1.path().join("cpu/kubepods/burstable/podu1");
        assert_eq!(read(&cpu, "cpu.shares"), "512");
        assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "100000");
        assert_eq!(read(&cpu, "cpu.cfs_period_us"), "100000");
        let mem = v1.path().join("memory/kubepods/burstable/podu1");
        assert_eq!(
            read(&mem, "memory.limit_in_bytes"),
            (128u64 << 20).to_string()
        );
    }

    /// BestEffort: minimal weight, no quota, no memory limit.
    #[test]
    fn best_effort_pod_cgroup_v2() {
        let p = pod("metadata: {name: p, uid: u2}\nspec: {containers: [{name: a, image: x}]}");
        let v2 = tempfile::tempdir().unwrap();
        write_pod_cgroup(v2.path(), true, &pod_cgroup(&p), &pod_resources(&p)).unwrap();
        let dir = v2.path().join("kubepods/besteffort/podu2");
        assert_eq!(read(&dir, "cpu.weight"), "1");
        assert_eq!(read(&dir, "cpu.max"), "max 100000");
        assert_eq!(read(&dir, "memory.max"), "max");
    }
}

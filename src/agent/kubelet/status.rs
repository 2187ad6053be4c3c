//! QoS class and the pod's cgroup placement (`/kubepods[/burstable|/besteffort]/pod<uid>`).

use k8s_openapi::api::core::v1::Pod;
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

//! Starting one container: image (pull policy, pull secrets), command and
//! environment as the kubelet computes them, mounts, cgroup settings and
//! security context, the overlay rootfs and the OCI bundle.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::ResourceExt;
use kube::api::Api;
use serde_json::Value;

use super::volumes::PodVolumes;
use super::{InstanceId, Kubelet};
use crate::agent::AgentConfig;
use crate::agent::images::ImageRecord;
use crate::agent::images::reference::ImageRef;
use crate::agent::images::registries::{RegistriesConfig, credentials_from_docker_config};
use crate::agent::network::Sandbox;
use crate::agent::runtime::spec::{ContainerConfig, MountKind, MountSpec};
use crate::agent::runtime::{ContainerSpec, ContainerStatus};
use crate::quantity;

/// A quantity in milli-units.
fn milli(q: &str) -> Result<i64, ()> {
    quantity::quantity_scaled(q, 3).ok_or(())
}

/// Why a container could not start, with the upstream waiting reason.
#[derive(Debug, Clone)]
pub enum StartError {
    /// `ErrImagePull` (then `ImagePullBackOff`).
    ImagePull(String),
    /// `ErrImageNeverPull`.
    NeverPull(String),
    /// `CreateContainerConfigError`: missing ConfigMap/Secret key, bad user.
    Config(String),
    /// The runtime refused: `StartError` (terminated, exit code 128).
    Run(String),
    /// A volume could not be set up: the pod stays `ContainerCreating`
    /// with `FailedMount` events, retried.
    Mount(String),
}

impl StartError {
    pub fn reason(&self) -> &'static str {
        match self {
            StartError::ImagePull(_) => "ErrImagePull",
            StartError::NeverPull(_) => "ErrImageNeverPull",
            StartError::Config(_) => "CreateContainerConfigError",
            StartError::Run(_) => "StartError",
            StartError::Mount(_) => "ContainerCreating",
        }
    }
    pub fn message(&self) -> &str {
        match self {
            StartError::ImagePull(m)
            | StartError::NeverPull(m)
            | StartError::Config(m)
            | StartError::Run(m)
            | StartError::Mount(m) => m,
        }
    }
}

pub fn instance_dir(cfg: &AgentConfig, id: &str) -> PathBuf {
    cfg.agent_dir().join("ctr").join(id)
}

pub fn log_path(cfg: &AgentConfig, pod: &Pod, name: &str, attempt: u32) -> PathBuf {
    cfg.agent_dir()
        .join("logs")
        .join(format!(
            "{}_{}_{}",
            pod.namespace().unwrap_or_default(),
            pod.name_any(),
            pod.uid().unwrap_or_default()
        ))
        .join(name)
        .join(format!("{attempt}.log"))
}

/// Unmounts the instance's rootfs and removes its bundle (not its log).
pub fn cleanup_instance(cfg: &AgentConfig, id: &str) {
    let dir = instance_dir(cfg, id);
    let rootfs = dir.join("rootfs");
    let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Image present per `imagePullPolicy`, pulled with the pod's pull secrets.
pub async fn ensure_image(
    kl: &Kubelet,
    pod: &Pod,
    c: &Container,
) -> Result<(ImageRecord, bool), StartError> {
    let image = c.image.clone().unwrap_or_default();
    if image.trim().is_empty() {
        return Err(StartError::Config("container image is empty".into()));
    }
    let reference = ImageRef::parse(&image).map_err(|e| StartError::ImagePull(format!("{e:#}")))?;
    let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
        if reference.reference().contains('@') || !image.ends_with(":latest") && image.contains(':')
        {
            "IfNotPresent".into()
        } else {
            "Always".into()
        }
    });
    let present = kl.images.get(&image).ok().flatten();
    match (policy.as_str(), present) {
        ("Never", Some(rec)) | ("IfNotPresent", Some(rec)) => return Ok((rec, false)),
        ("Never", None) => {
            return Err(StartError::NeverPull(format!(
                "Container image \"{image}\" is not present with pull policy of Never"
            )));
        }
        _ => {}
    }
    let lock = kl.pull_lock(&image).await;
    let _guard = lock.lock().await;
    // Someone else may have pulled it while we waited.
    if policy != "Always"
        && let Some(rec) = kl.images.get(&image).ok().flatten()
    {
        return Ok((rec, false));
    }
    let registries = RegistriesConfig::load(&kl.cfg.registries)
        .map_err(|e| StartError::ImagePull(format!("{e:#}")))?;
    let mut opts = crate::agent::images::PullOptions::new(registries);
    let secrets = pull_secrets(kl, pod).await;
    let refs: Vec<&[u8]> = secrets.iter().map(Vec::as_slice).collect();
    opts.credentials = credentials_from_docker_config(&refs, &reference)
        .map_err(|e| StartError::ImagePull(format!("{e:#}")))?;
    kl.event(
        pod,
        false,
        "Pulling",
        format!("Pulling image \"{image}\""),
        None,
    )
    .await;
    let started = std::time::Instant::now();
    match kl.images.pull(&image, &opts).await {
        Ok(rec) => {
            kl.event(
                pod,
                false,
                "Pulled",
                format!(
                    "Successfully pulled image \"{image}\" in {:.3}s. Image size: {} bytes.",
                    started.elapsed().as_secs_f64(),
                    rec.size
                ),
                None,
            )
            .await;
            Ok((rec, true))
        }
        Err(e) => Err(StartError::ImagePull(format!(
            "failed to pull and unpack image \"{image}\": {e:#}"
        ))),
    }
}

async fn pull_secrets(kl: &Kubelet, pod: &Pod) -> Vec<Vec<u8>> {
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(kl.client.clone(), &ns);
    let mut out = Vec::new();
    let names = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default();
    for r in names {
        let Ok(Some(s)) = api.get_opt(&r.name).await else {
            continue;
        };
        let data = s.data.unwrap_or_default();
        for key in [".dockerconfigjson", ".dockercfg"] {
            if let Some(b) = data.get(key) {
                out.push(b.0.clone());
            }
        }
    }
    out
}

/// `$(VAR)` expansion as upstream's `expansion.Expand`: `$$` escapes,
/// unknown references stay as written.
pub fn expand(input: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let bytes = input.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            if bytes[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if bytes[i + 1] == b'('
                && let Some(end) = input[i + 2..].find(')')
            {
                let name = &input[i + 2..i + 2 + end];
                match vars.get(name) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&input[i..i + 3 + end]),
                }
                i += 3 + end;
                continue;
            }
        }
        let ch = input[i..].chars().next().unwrap_or('\0');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn field_value(pod: &Pod, path: &str, node_ip: &str) -> Result<String, StartError> {
    let meta = &pod.metadata;
    let label =
        |m: &Option<BTreeMap<String, String>>, k: &str| m.as_ref().and_then(|m| m.get(k)).cloned();
    let v = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone()),
        "status.hostIP" => Some(node_ip.to_string()),
        "status.hostIPs" => Some(node_ip.to_string()),
        "status.podIP" | "status.podIPs" => pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
        p => {
            if let Some(k) = p
                .strip_prefix("metadata.labels['")
                .and_then(|k| k.strip_suffix("']"))
            {
                label(&meta.labels, k)
            } else if let Some(k) = p
                .strip_prefix("metadata.annotations['")
                .and_then(|k| k.strip_suffix("']"))
            {
                label(&meta.annotations, k)
            } else if p == "metadata.labels" || p == "metadata.annotations" {
                let m = if p == "metadata.labels" {
                    &meta.labels
                } else {
                    &meta.annotations
                };
                Some(
                    m.clone()
                        .unwrap_or_default()
                        .iter()
                        .map(|(k, v)| format!("{k}={v:?}"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                )
            } else {
                return Err(StartError::Config(format!(
                    "unsupported fieldRef path {p:?}"
                )));
            }
        }
    };
    Ok(v.unwrap_or_default())
}

/// `resourceFieldRef` as upstream: limits default to node allocatable,
/// values rounded up to the divisor.
pub fn resource_value(
    c: &Container,
    resource: &str,
    divisor: Option<&str>,
) -> Result<String, StartError> {
    let res = c.resources.clone().unwrap_or_default();
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| StartError::Config(format!("unsupported resource {resource:?}")))?;
    let map = if kind == "limits" {
        res.limits
    } else {
        res.requests
    };
    let q = map.as_ref().and_then(|m| m.get(name)).map(|q| q.0.clone());
    let value: f64 = match (q, name) {
        (Some(q), _) => milli(&q).unwrap_or(0) as f64,
        (None, "cpu") if kind == "limits" => {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1) as f64
                * 1000.0
        }
        (None, "memory") if kind == "limits" => crate::agent::node::memory().0 as f64 * 1000.0,
        (None, _) => 0.0,
    };
    let divisor = divisor
        .and_then(|d| milli(d).ok())
        .filter(|d| *d > 0)
        .unwrap_or(1000) as f64;
    Ok(format!("{}", (value / divisor).ceil() as i64))
}

fn set(vars: &mut Vec<(String, String)>, k: String, v: String) {
    if let Some(e) = vars.iter_mut().find(|e| e.0 == k) {
        e.1 = v;
    } else {
        vars.push((k, v));
    }
}

type ResourceMap =
    Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>;

fn milli_of(m: &ResourceMap, k: &str) -> Option<i64> {
    m.as_ref()
        .and_then(|m| m.get(k))
        .and_then(|q| milli(&q.0).ok())
}

/// The container's environment, in upstream's order: envFrom, then env,
/// each `$(VAR)`-expanded against what came before.
pub async fn environment(
    kl: &Kubelet,
    pod: &Pod,
    c: &Container,
    image_env: &[String],
) -> Result<Vec<(String, String)>, StartError> {
    let ns = pod.namespace().unwrap_or_default();
    let cms: Api<ConfigMap> = Api::namespaced(kl.client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(kl.client.clone(), &ns);
    let mut vars: Vec<(String, String)> = Vec::new();
    for kv in image_env {
        if let Some((k, v)) = kv.split_once('=') {
            set(&mut vars, k.into(), v.into());
        }
    }
    // Service links: only the API server's, which every pod gets.
    let svc = [
        ("KUBERNETES_SERVICE_HOST", "10.43.0.1"),
        ("KUBERNETES_SERVICE_PORT", "443"),
        ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
        ("KUBERNETES_PORT", "tcp://10.43.0.1:443"),
        ("KUBERNETES_PORT_443_TCP", "tcp://10.43.0.1:443"),
        ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
        ("KUBERNETES_PORT_443_TCP_PORT", "443"),
        ("KUBERNETES_PORT_443_TCP_ADDR", "10.43.0.1"),
    ];
    for (k, v) in svc {
        set(&mut vars, k.into(), v.into());
    }
    for from in c.env_from.clone().unwrap_or_default() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match cms.get_opt(&r.name).await {
                Ok(Some(cm)) => {
                    for (k, v) in cm.data.unwrap_or_default() {
                        set(&mut vars, format!("{prefix}{k}"), v);
                    }
                }
                _ if r.optional == Some(true) => {}
                _ => {
                    return Err(StartError::Config(format!(
                        "configmap \"{}\" not found",
                        r.name
                    )));
                }
            }
        }
        if let Some(r) = &from.secret_ref {
            match secrets.get_opt(&r.name).await {
                Ok(Some(s)) => {
                    for (k, v) in s.data.unwrap_or_default() {
                        set(
                            &mut vars,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v.0).into_owned(),
                        );
                    }
                }
                _ if r.optional == Some(true) => {}
                _ => {
                    return Err(StartError::Config(format!(
                        "secret \"{}\" not found",
                        r.name
                    )));
                }
            }
        }
    }
    for e in c.env.clone().unwrap_or_default() {
        let value = if let Some(src) = &e.value_from {
            if let Some(r) = &src.config_map_key_ref {
                match cms.get_opt(&r.name).await {
                    Ok(Some(cm)) => match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => v.clone(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(StartError::Config(format!(
                                "couldn't find key {} in ConfigMap {ns}/{}",
                                r.key, r.name
                            )));
                        }
                    },
                    _ if r.optional == Some(true) => continue,
                    _ => {
                        return Err(StartError::Config(format!(
                            "configmap \"{}\" not found",
                            r.name
                        )));
                    }
                }
            } else if let Some(r) = &src.secret_key_ref {
                match secrets.get_opt(&r.name).await {
                    Ok(Some(s)) => match s.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(StartError::Config(format!(
                                "couldn't find key {} in Secret {ns}/{}",
                                r.key, r.name
                            )));
                        }
                    },
                    _ if r.optional == Some(true) => continue,
                    _ => {
                        return Err(StartError::Config(format!(
                            "secret \"{}\" not found",
                            r.name
                        )));
                    }
                }
            } else if let Some(f) = &src.field_ref {
                field_value(pod, &f.field_path, &kl.cfg.node_ip)?
            } else if let Some(r) = &src.resource_field_ref {
                resource_value(c, &r.resource, r.divisor.as_ref().map(|q| q.0.as_str()))?
            } else {
                String::new()
            }
        } else {
            let known: HashMap<String, String> = vars.iter().cloned().collect();
            expand(e.value.as_deref().unwrap_or(""), &known)
        };
        set(&mut vars, e.name.clone(), value);
    }
    Ok(vars)
}

/// Entrypoint/Cmd merged with command/args as upstream: `command` replaces
/// the Entrypoint (and drops Cmd), `args` replaces Cmd.
pub fn command_line(
    c: &Container,
    image: &Value,
    env: &[(String, String)],
) -> Result<Vec<String>, StartError> {
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let vars: HashMap<String, String> = env.iter().cloned().collect();
    let entry = strings(image.get("Entrypoint"));
    let cmd = strings(image.get("Cmd"));
    let mut out = match (&c.command, &c.args) {
        (Some(command), Some(args)) => command.iter().chain(args).cloned().collect(),
        (Some(command), None) => command.clone(),
        (None, Some(args)) => entry.into_iter().chain(args.iter().cloned()).collect(),
        (None, None) => entry.into_iter().chain(cmd).collect(),
    };
    if c.command.is_some() || c.args.is_some() {
        out = out.iter().map(|s| expand(s, &vars)).collect();
    }
    if out.is_empty() {
        return Err(StartError::Run("no command specified".into()));
    }
    Ok(out)
}

/// Numeric uid/gid from the image's `User` (names looked up in the rootfs).
fn image_user(user: &str, lowerdirs: &[PathBuf]) -> (Option<u32>, Option<u32>) {
    if user.is_empty() {
        return (None, None);
    }
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    let lookup = |file: &str, name: &str| -> Option<(u32, u32)> {
        for d in lowerdirs {
            if let Ok(text) = std::fs::read_to_string(d.join(file)) {
                for line in text.lines() {
                    let f: Vec<&str> = line.split(':').collect();
                    if f.len() > 3 && f[0] == name {
                        return Some((f[2].parse().ok()?, f[3].parse().ok()?));
                    }
                }
            }
        }
        None
    };
    let (uid, mut gid) = match u.parse::<u32>() {
        Ok(n) => (Some(n), None),
        Err(_) => match lookup("etc/passwd", u) {
            Some((a, b)) => (Some(a), Some(b)),
            None => (None, None),
        },
    };
    if !g.is_empty() {
        gid = g
            .parse::<u32>()
            .ok()
            .or_else(|| lookup("etc/group", g).map(|x| x.0));
    }
    (uid, gid)
}

/// Device nodes under `dir` as containerd lists them for privileged
/// containers: no pts/shm/mqueue/fd trees, no console or ptmx (the runtime
/// makes its own), not the default devices every container gets.
fn host_devices(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    const SKIP: &[&str] = &[
        "pts",
        "shm",
        "fd",
        "mqueue",
        ".lxc",
        ".lxd-mounts",
        ".udev",
        "console",
        "ptmx",
        "null",
        "zero",
        "full",
        "random",
        "urandom",
        "tty",
    ];
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        if dir == Path::new("/dev") && SKIP.iter().any(|s| name == *s) {
            continue;
        }
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            out.extend(host_devices(&e.path()));
        } else if t.is_char_device() || t.is_block_device() {
            out.push(e.path());
        }
    }
    out.sort();
    out
}

/// The capability bounding set of this process.
fn own_bounding_set() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let v = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
    u64::from_str_radix(v.trim(), 16).ok()
}

/// Drops from the bundle's capability sets what this process cannot grant
/// (as containerd's privileged mode takes the current set, not a fixed
/// list): some sandboxes withhold capabilities even from root, and asking
/// for one makes the container's start fail.
fn limit_caps_to_bounding_set(bundle: &Path) -> anyhow::Result<()> {
    use crate::agent::runtime::spec::ALL_CAPABILITIES;
    use anyhow::Context;
    let Some(bounding) = own_bounding_set() else {
        return Ok(());
    };
    // ALL_CAPABILITIES is in kernel bit order.
    let granted = |name: &str| {
        ALL_CAPABILITIES
            .iter()
            .position(|c| *c == name)
            .is_none_or(|bit| bit >= 64 || bounding & (1u64 << bit) != 0)
    };
    let path = bundle.join("config.json");
    let mut spec: Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let Some(caps) = spec
        .pointer_mut("/process/capabilities")
        .and_then(|c| c.as_object_mut())
    else {
        return Ok(());
    };
    let mut changed = false;
    for set in caps.values_mut() {
        if let Some(list) = set.as_array_mut() {
            let before = list.len();
            list.retain(|c| c.as_str().is_none_or(granted));
            changed |= list.len() != before;
        }
    }
    if changed {
        let tmp = bundle.join(".config.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&spec)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    }
    Ok(())
}

pub struct Started {
    pub status: ContainerStatus,
    pub image: ImageRecord,
}

/// Creates and starts one container instance.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    kl: &Kubelet,
    pod: &Pod,
    sandbox: Option<&Sandbox>,
    vols: &PodVolumes,
    c: &Container,
    init: bool,
    index: usize,
    attempt: u32,
) -> Result<Started, StartError> {
    let (image, _) = ensure_image(kl, pod, c).await?;
    let image_cfg = kl
        .images
        .runtime_config(&image)
        .map_err(|e| StartError::Run(format!("{e:#}")))?;
    let image_env: Vec<String> = image_cfg
        .get("Env")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let env = environment(kl, pod, c, &image_env).await?;
    let args = command_line(c, &image_cfg, &env)?;
    let lowerdirs = kl
        .images
        .rootfs_lowerdirs(&image)
        .map_err(|e| StartError::Run(format!("{e:#}")))?;
    let spec = pod.spec.clone().unwrap_or_default();
    let psc = spec.security_context.clone().unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    let (img_uid, img_gid) = image_user(
        image_cfg.get("User").and_then(|u| u.as_str()).unwrap_or(""),
        &lowerdirs,
    );
    let uid = sc
        .run_as_user
        .or(psc.run_as_user)
        .map(|u| u as u32)
        .or(img_uid)
        .unwrap_or(0);
    let gid = sc
        .run_as_group
        .or(psc.run_as_group)
        .map(|g| g as u32)
        .or(img_gid)
        .unwrap_or(0);
    if sc.run_as_non_root.or(psc.run_as_non_root) == Some(true) && uid == 0 {
        return Err(StartError::Config(format!(
            "container has runAsNonRoot and image will run as root (pod: \"{}\", container: {})",
            super::format_pod(pod),
            c.name
        )));
    }
    let mut additional_gids: Vec<u32> = psc
        .supplemental_groups
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|g| *g as u32)
        .collect();
    if let Some(fs) = psc.fs_group {
        additional_gids.push(fs as u32);
    }

    let id = InstanceId::format(&pod.uid().unwrap_or_default(), init, index, attempt);
    let dir = instance_dir(&kl.cfg, &id);
    cleanup_instance(&kl.cfg, &id);
    let rootfs = dir.join("rootfs");
    for d in ["upper", "work", "rootfs"] {
        std::fs::create_dir_all(dir.join(d))
            .map_err(|e| StartError::Run(format!("creating {}: {e}", dir.display())))?;
    }
    let lower: Vec<String> = lowerdirs.iter().map(|p| p.display().to_string()).collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    nix::mount::mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| StartError::Run(format!("mounting the rootfs overlay: {e}")))?;

    let mut mounts = Vec::new();
    let term_log = vols
        .pod_dir
        .join("containers")
        .join(&c.name)
        .join(format!("{attempt}-termination-log"));
    if let Some(p) = term_log.parent() {
        let _ = std::fs::create_dir_all(p);
    }
    let _ = std::fs::write(&term_log, b"");
    let term_path = c
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    mounts.push(MountSpec {
        destination: term_path,
        source: term_log,
        kind: MountKind::Bind,
        readonly: false,
    });
    for (dest, file) in [
        ("/etc/hosts", "etc-hosts"),
        ("/etc/resolv.conf", "resolv.conf"),
        ("/etc/hostname", "hostname"),
    ] {
        let already = c
            .volume_mounts
            .as_ref()
            .is_some_and(|m| m.iter().any(|m| m.mount_path == dest));
        if !already && vols.pod_dir.join(file).exists() {
            mounts.push(MountSpec {
                destination: dest.into(),
                source: vols.pod_dir.join(file),
                kind: MountKind::Bind,
                readonly: false,
            });
        }
    }
    for m in c.volume_mounts.clone().unwrap_or_default() {
        let Some(src) = vols.paths.get(&m.name) else {
            return Err(StartError::Config(format!(
                "cannot find volume \"{}\" to mount into container \"{}\"",
                m.name, c.name
            )));
        };
        let mut source = src.clone();
        let sub = m.sub_path.clone().filter(|s| !s.is_empty()).or_else(|| {
            m.sub_path_expr.as_ref().map(|e| {
                let vars: HashMap<String, String> = env.iter().cloned().collect();
                expand(e, &vars)
            })
        });
        if let Some(sub) = sub.filter(|s| !s.is_empty()) {
            if sub.starts_with('/') || sub.split('/').any(|p| p == "..") {
                return Err(StartError::Config(format!(
                    "subPath {sub:?} must be a relative path without '..'"
                )));
            }
            source = source.join(&sub);
            if !source.exists() {
                let _ = std::fs::create_dir_all(&source);
            }
        }
        mounts.push(MountSpec {
            destination: m.mount_path.clone(),
            source,
            kind: MountKind::Bind,
            readonly: m.read_only == Some(true) || vols.read_only.contains(&m.name),
        });
    }

    if sc.privileged == Some(true) {
        // As containerd's WithHostDevices: a privileged container sees the
        // host's devices (the cgroup already allows them all).
        for dev in host_devices(std::path::Path::new("/dev")) {
            if !mounts.iter().any(|m| Path::new(&m.destination) == dev) {
                mounts.push(MountSpec {
                    destination: dev.display().to_string(),
                    source: dev,
                    kind: MountKind::Bind,
                    readonly: false,
                });
            }
        }
    }

    let res = c.resources.clone().unwrap_or_default();
    let cpu_req = milli_of(&res.requests, "cpu").or(milli_of(&res.limits, "cpu"));
    let cpu_lim = milli_of(&res.limits, "cpu");
    let mem_lim = milli_of(&res.limits, "memory");
    let mem_req = milli_of(&res.requests, "memory").or(mem_lim);
    let qos = status::qos_class(pod);
    let oom_score_adj = match qos.as_str() {
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ => {
            let cap = crate::agent::node::memory().0.max(1) as i64;
            let adj = 1000 - (mem_req.unwrap_or(0) / cap);
            adj.clamp(2, 999) as i32
        }
    };
    let caps = sc.capabilities.clone().unwrap_or_default();
    let seccomp = sc
        .seccomp_profile
        .as_ref()
        .or(psc.seccomp_profile.as_ref())
        .is_some_and(|p| p.type_ == "RuntimeDefault");
    let sysctls: BTreeMap<String, String> = psc
        .sysctls
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.name, s.value))
        .collect();
    let host_network = spec.host_network == Some(true);
    let cwd = c
        .working_dir
        .clone()
        .or_else(|| {
            image_cfg
                .get("WorkingDir")
                .and_then(|w| w.as_str())
                .map(String::from)
        })
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    let config = ContainerConfig {
        args,
        env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd,
        uid,
        gid,
        additional_gids,
        rootfs: rootfs.clone(),
        readonly_rootfs: sc.read_only_root_filesystem == Some(true),
        mounts,
        netns: if host_network {
            None
        } else {
            sandbox.map(|s| s.netns.clone())
        },
        utsns: if host_network {
            None
        } else {
            sandbox.map(|s| s.utsns.clone())
        },
        ipcns: if spec.host_ipc == Some(true) {
            None
        } else {
            sandbox.map(|s| s.ipcns.clone())
        },
        hostname: None,
        cgroups_path: format!("{}/{id}", status::pod_cgroup(pod)),
        cpu_shares: cpu_req
            .map(|m| ((m * 1024) / 1000).max(2) as u64)
            .or(Some(2)),
        cpu_quota: cpu_lim.map(|m| (m * 100_000 / 1000).max(1000)),
        cpu_period: cpu_lim.map(|_| 100_000),
        memory_limit: mem_lim.map(|b| b / 1000),
        pids_limit: None,
        capabilities_add: caps.add.unwrap_or_default(),
        capabilities_drop: caps.drop.unwrap_or_default(),
        privileged: sc.privileged == Some(true),
        no_new_privileges: sc.allow_privilege_escalation == Some(false),
        seccomp_runtime_default: seccomp,
        sysctls,
        tty: c.tty == Some(true),
        oom_score_adj: Some(oom_score_adj),
    };
    crate::agent::runtime::spec::write_bundle(&dir, &config)
        .and_then(|()| limit_caps_to_bounding_set(&dir))
        .map_err(|e| {
            cleanup_instance(&kl.cfg, &id);
            StartError::Run(format!("{e:#}"))
        })?;
    let log = log_path(&kl.cfg, pod, &c.name, attempt);
    if let Some(p) = log.parent() {
        let _ = std::fs::create_dir_all(p);
    }
    let spec = ContainerSpec {
        id: id.clone(),
        bundle: dir.clone(),
        log_path: log,
        stdin: c.stdin == Some(true),
        stdin_once: c.stdin_once == Some(true),
        tty: c.tty == Some(true),
    };
    match kl.runtime.start(spec).await {
        Ok(status) => {
            // The LRU stamp takes the store lock and two fsyncs: off the
            // async threads, not awaited, and at most once a minute per image
            // (GC needs no finer grain).
            if crate::agent::images::now() - image.last_used >= 60 {
                let store = kl.images.clone();
                let name = image.name.clone();
                tokio::task::spawn_blocking(move || store.mark_used(&name));
            }
            Ok(Started { status, image })
        }
        Err(e) => {
            let _ = kl.runtime.remove(&id).await;
            cleanup_instance(&kl.cfg, &id);
            Err(StartError::Run(format!("{e:#}")))
        }
    }
}

use super::status;

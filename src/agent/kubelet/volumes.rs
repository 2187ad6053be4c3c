//! Pod volumes on the host, under `<agent>/pods/<uid>/volumes/<name>`:
//! emptyDir (tmpfs for `medium: Memory`), configMap, secret, downwardAPI and
//! projected (written with the kubelet's atomic `..data` symlink swap so
//! updates reach running containers), hostPath (with its type checks) and
//! persistentVolumeClaim bound to a hostPath/local PV. Also the pod's
//! `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod,
    Secret, ServiceAccount, Volume,
};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::Kubelet;
use super::container::{StartError, resource_value};
use crate::agent::AgentConfig;

pub struct PodVolumes {
    pub pod_dir: PathBuf,
    /// Volume name → host path to bind.
    pub paths: HashMap<String, PathBuf>,
    /// Volumes every mount of which is read-only (`persistentVolumeClaim.readOnly`).
    pub read_only: HashSet<String>,
}

pub fn pod_dir(cfg: &AgentConfig, uid: &str) -> PathBuf {
    cfg.agent_dir().join("pods").join(uid)
}

/// Unmounts whatever is mounted below the pod dir and removes it.
pub fn cleanup_pod(cfg: &AgentConfig, uid: &str) {
    let dir = pod_dir(cfg, uid);
    if let Err(e) = crate::agent::cli::unmount_below(&dir) {
        tracing::warn!(uid, "{e:#}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn mount_err(volume: &str, msg: impl std::fmt::Display) -> StartError {
    StartError::Mount(format!(
        "MountVolume.SetUp failed for volume \"{volume}\" : {msg}"
    ))
}

/// Sets up every volume of the pod (idempotent; contents refreshed).
pub async fn prepare(kl: &Kubelet, pod: &Pod) -> Result<PodVolumes, StartError> {
    let uid = pod.uid().unwrap_or_default();
    let dir = pod_dir(&kl.cfg, &uid);
    let mut paths = HashMap::new();
    let mut read_only = HashSet::new();
    let spec = pod.spec.clone().unwrap_or_default();
    for v in spec.volumes.clone().unwrap_or_default() {
        let vdir = dir.join("volumes").join(&v.name);
        let path = setup_volume(kl, pod, &v, &vdir).await?;
        paths.insert(v.name.clone(), path);
        if v.persistent_volume_claim
            .as_ref()
            .is_some_and(|c| c.read_only == Some(true))
        {
            read_only.insert(v.name.clone());
        }
    }
    Ok(PodVolumes {
        pod_dir: dir,
        paths,
        read_only,
    })
}

async fn setup_volume(
    kl: &Kubelet,
    pod: &Pod,
    v: &Volume,
    vdir: &Path,
) -> Result<PathBuf, StartError> {
    let ns = pod.namespace().unwrap_or_default();
    if let Some(e) = &v.empty_dir {
        let fresh = !vdir.exists();
        std::fs::create_dir_all(vdir).map_err(|e| mount_err(&v.name, e))?;
        let _ = std::fs::set_permissions(vdir, std::fs::Permissions::from_mode(0o777));
        if fresh && e.medium.as_deref() == Some("Memory") {
            let size = e
                .size_limit
                .as_ref()
                .and_then(|q| crate::quantity::quantity_scaled(&q.0, 0))
                .map(|b| format!("size={b},mode=1777"))
                .unwrap_or_else(|| "mode=1777".into());
            nix::mount::mount(
                Some("tmpfs"),
                vdir,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some(size.as_str()),
            )
            .map_err(|e| mount_err(&v.name, e))?;
        }
        // fsGroup owns the volume and, via setgid, what is created in it.
        if let Some(g) = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|sc| sc.fs_group)
        {
            std::os::unix::fs::chown(vdir, None, Some(g as u32))
                .map_err(|e| mount_err(&v.name, e))?;
            let _ = std::fs::set_permissions(vdir, std::fs::Permissions::from_mode(0o2777));
        }
        return Ok(vdir.to_path_buf());
    }
    if let Some(h) = &v.host_path {
        let p = PathBuf::from(&h.path);
        let ty = h.type_.clone().unwrap_or_default();
        let md = std::fs::metadata(&p);
        let fail = |what: &str| {
            mount_err(
                &v.name,
                format!("hostPath type check failed: {} is not a {what}", h.path),
            )
        };
        match ty.as_str() {
            "DirectoryOrCreate" if md.is_err() => {
                std::fs::create_dir_all(&p).map_err(|e| mount_err(&v.name, e))?;
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755));
            }
            "Directory" if !md.as_ref().is_ok_and(|m| m.is_dir()) => return Err(fail("directory")),
            "FileOrCreate" if md.is_err() => {
                if let Some(parent) = p.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                std::fs::write(&p, b"").map_err(|e| mount_err(&v.name, e))?;
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644));
            }
            "File" if !md.as_ref().is_ok_and(|m| m.is_file()) => return Err(fail("file")),
            "Socket" | "CharDevice" | "BlockDevice" => {
                use std::os::unix::fs::FileTypeExt;
                let ok = md.as_ref().is_ok_and(|m| {
                    let t = m.file_type();
                    match ty.as_str() {
                        "Socket" => t.is_socket(),
                        "CharDevice" => t.is_char_device(),
                        _ => t.is_block_device(),
                    }
                });
                if !ok {
                    return Err(fail(&ty));
                }
            }
            _ => {}
        }
        return Ok(p);
    }
    if let Some(c) = &v.persistent_volume_claim {
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(kl.client.clone(), &ns);
        let pvc = pvcs
            .get_opt(&c.claim_name)
            .await
            .ok()
            .flatten()
            .ok_or_else(|| {
                mount_err(
                    &v.name,
                    format!("persistentvolumeclaim \"{}\" not found", c.claim_name),
                )
            })?;
        let pv_name = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                mount_err(
                    &v.name,
                    format!("persistentvolumeclaim \"{}\" is not bound", c.claim_name),
                )
            })?;
        let pvs: Api<PersistentVolume> = Api::all(kl.client.clone());
        let pv = pvs.get_opt(&pv_name).await.ok().flatten().ok_or_else(|| {
            mount_err(&v.name, format!("persistentvolume \"{pv_name}\" not found"))
        })?;
        let spec = pv.spec.unwrap_or_default();
        // A volume pre-bound to another claim is not this claim's.
        if let Some(r) = &spec.claim_ref {
            let other = r.name.as_deref().is_some_and(|n| n != c.claim_name)
                || r.namespace.as_deref().is_some_and(|n| n != ns)
                || r.uid
                    .as_deref()
                    .zip(pvc.metadata.uid.as_deref())
                    .is_some_and(|(a, b)| a != b);
            if other {
                return Err(mount_err(
                    &v.name,
                    format!(
                        "persistentvolume \"{pv_name}\" is bound to another claim ({}/{})",
                        r.namespace.clone().unwrap_or_default(),
                        r.name.clone().unwrap_or_default()
                    ),
                ));
            }
        }
        let path = spec
            .host_path
            .map(|h| h.path)
            .or(spec.local.map(|l| l.path))
            .ok_or_else(|| {
                mount_err(
                    &v.name,
                    format!("persistentvolume \"{pv_name}\" is neither hostPath nor local"),
                )
            })?;
        let p = PathBuf::from(path);
        if !p.exists() {
            std::fs::create_dir_all(&p).map_err(|e| mount_err(&v.name, e))?;
        }
        return Ok(p);
    }
    let mut files: BTreeMap<String, (Vec<u8>, u32)> = BTreeMap::new();
    let default_mode;
    if let Some(c) = &v.config_map {
        default_mode = c.default_mode.unwrap_or(0o644) as u32;
        let optional = c.optional == Some(true);
        config_map_files(
            kl,
            &ns,
            &c.name,
            c.items.as_deref(),
            default_mode,
            optional,
            &mut files,
        )
        .await
        .map_err(|e| mount_err(&v.name, e))?;
    } else if let Some(s) = &v.secret {
        default_mode = s.default_mode.unwrap_or(0o644) as u32;
        let name = s.secret_name.clone().unwrap_or_default();
        secret_files(
            kl,
            &ns,
            &name,
            s.items.as_deref(),
            default_mode,
            s.optional == Some(true),
            &mut files,
        )
        .await
        .map_err(|e| mount_err(&v.name, e))?;
    } else if let Some(d) = &v.downward_api {
        default_mode = d.default_mode.unwrap_or(0o644) as u32;
        downward_files(
            pod,
            d.items.as_deref().unwrap_or(&[]),
            default_mode,
            &mut files,
        )
        .map_err(|e| mount_err(&v.name, e))?;
    } else if let Some(p) = &v.projected {
        default_mode = p.default_mode.unwrap_or(0o644) as u32;
        for src in p.sources.clone().unwrap_or_default() {
            if let Some(c) = &src.config_map {
                config_map_files(
                    kl,
                    &ns,
                    &c.name,
                    c.items.as_deref(),
                    default_mode,
                    c.optional == Some(true),
                    &mut files,
                )
                .await
                .map_err(|e| mount_err(&v.name, e))?;
            }
            if let Some(s) = &src.secret {
                secret_files(
                    kl,
                    &ns,
                    &s.name,
                    s.items.as_deref(),
                    default_mode,
                    s.optional == Some(true),
                    &mut files,
                )
                .await
                .map_err(|e| mount_err(&v.name, e))?;
            }
            if let Some(d) = &src.downward_api {
                downward_files(
                    pod,
                    d.items.as_deref().unwrap_or(&[]),
                    default_mode,
                    &mut files,
                )
                .map_err(|e| mount_err(&v.name, e))?;
            }
            if let Some(t) = &src.service_account_token {
                let token =
                    service_account_token(kl, pod, t.audience.clone(), t.expiration_seconds)
                        .await
                        .map_err(|e| mount_err(&v.name, e))?;
                files.insert(t.path.clone(), (token.into_bytes(), default_mode));
            }
        }
    } else {
        // Volume kinds this node cannot provide (cloud disks, CSI, ...).
        let _ = &mut files;
        return Err(mount_err(&v.name, "volume type not supported on this node"));
    }
    std::fs::create_dir_all(vdir).map_err(|e| mount_err(&v.name, e))?;
    write_atomic(vdir, &files).map_err(|e| mount_err(&v.name, e))?;
    Ok(vdir.to_path_buf())
}

fn items_or_all(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    mode: u32,
    name: &str,
    kind: &str,
    out: &mut BTreeMap<String, (Vec<u8>, u32)>,
) -> Result<(), String> {
    match items {
        Some(items) if !items.is_empty() => {
            for it in items {
                let Some(v) = data.get(&it.key) else {
                    return Err(format!(
                        "configuration error: {kind} \"{name}\" has no key \"{}\"",
                        it.key
                    ));
                };
                out.insert(
                    it.path.clone(),
                    (v.clone(), it.mode.map(|m| m as u32).unwrap_or(mode)),
                );
            }
        }
        _ => {
            for (k, v) in data {
                out.insert(k, (v, mode));
            }
        }
    }
    Ok(())
}

async fn config_map_files(
    kl: &Kubelet,
    ns: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    mode: u32,
    optional: bool,
    out: &mut BTreeMap<String, (Vec<u8>, u32)>,
) -> Result<(), String> {
    let api: Api<ConfigMap> = Api::namespaced(kl.client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(cm)) => {
            let mut data: BTreeMap<String, Vec<u8>> = cm
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            for (k, v) in cm.binary_data.unwrap_or_default() {
                data.insert(k, v.0);
            }
            items_or_all(data, items, mode, name, "configmap", out)
        }
        Ok(None) if optional => Ok(()),
        Ok(None) => Err(format!("configmap \"{name}\" not found")),
        Err(e) => Err(e.to_string()),
    }
}

async fn secret_files(
    kl: &Kubelet,
    ns: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    mode: u32,
    optional: bool,
    out: &mut BTreeMap<String, (Vec<u8>, u32)>,
) -> Result<(), String> {
    let api: Api<Secret> = Api::namespaced(kl.client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(s)) => {
            let data: BTreeMap<String, Vec<u8>> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            items_or_all(data, items, mode, name, "secret", out)
        }
        Ok(None) if optional => Ok(()),
        Ok(None) => Err(format!("secret \"{name}\" not found")),
        Err(e) => Err(e.to_string()),
    }
}

fn downward_files(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    mode: u32,
    out: &mut BTreeMap<String, (Vec<u8>, u32)>,
) -> Result<(), String> {
    for it in items {
        let value = if let Some(f) = &it.field_ref {
            let meta = &pod.metadata;
            let render = |m: &Option<BTreeMap<String, String>>| {
                m.clone()
                    .unwrap_or_default()
                    .iter()
                    .map(|(k, v)| format!("{k}={v:?}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            match f.field_path.as_str() {
                "metadata.labels" => render(&meta.labels),
                "metadata.annotations" => render(&meta.annotations),
                "metadata.name" => meta.name.clone().unwrap_or_default(),
                "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
                "metadata.uid" => meta.uid.clone().unwrap_or_default(),
                p => {
                    let key = p
                        .strip_prefix("metadata.labels['")
                        .map(|k| (k, &meta.labels))
                        .or_else(|| {
                            p.strip_prefix("metadata.annotations['")
                                .map(|k| (k, &meta.annotations))
                        });
                    match key {
                        Some((k, m)) => m
                            .as_ref()
                            .and_then(|m| m.get(k.trim_end_matches("']")))
                            .cloned()
                            .unwrap_or_default(),
                        None => return Err(format!("unsupported fieldRef {p:?}")),
                    }
                }
            }
        } else if let Some(r) = &it.resource_field_ref {
            let spec = pod.spec.clone().unwrap_or_default();
            let cname = r.container_name.clone().unwrap_or_default();
            let c = spec
                .containers
                .iter()
                .find(|c| c.name == cname)
                .ok_or_else(|| format!("container {cname:?} not found for resourceFieldRef"))?;
            resource_value(c, &r.resource, r.divisor.as_ref().map(|q| q.0.as_str()))
                .map_err(|e| e.message().to_string())?
        } else {
            continue;
        };
        out.insert(
            it.path.clone(),
            (
                value.into_bytes(),
                it.mode.map(|m| m as u32).unwrap_or(mode),
            ),
        );
    }
    Ok(())
}

async fn service_account_token(
    kl: &Kubelet,
    pod: &Pod,
    audience: Option<String>,
    expiration: Option<i64>,
) -> Result<String, String> {
    let ns = pod.namespace().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = Api::namespaced(kl.client.clone(), &ns);
    let req = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": audience.map(|a| vec![a]).unwrap_or_default(),
            "expirationSeconds": expiration.unwrap_or(3607),
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.name_any(), "uid": pod.uid()}}});
    let tr: TokenRequest = api
        .create_subresource("token", &sa, &PostParams::default(), &req)
        .await
        .map_err(|e| format!("requesting a token for service account {ns}/{sa}: {e}"))?;
    Ok(tr.status.map(|s| s.token).unwrap_or_default())
}

/// The kubelet's AtomicWriter: the payload goes into a fresh timestamped
/// dir, `..data` is swapped to it with one rename, and each top-level name
/// is a symlink through `..data` — readers never see a half-written set.
fn write_atomic(dir: &Path, files: &BTreeMap<String, (Vec<u8>, u32)>) -> std::io::Result<()> {
    let current = std::fs::read_link(dir.join("..data")).ok();
    if let Some(cur) = &current {
        // Unchanged payload: nothing to do (keeps inotify watchers quiet).
        let same = files
            .iter()
            .all(|(k, (v, _))| std::fs::read(dir.join(cur).join(k)).is_ok_and(|old| &old == v))
            && count_files(&dir.join(cur)) == files.len();
        if same {
            return Ok(());
        }
    }
    let ts = format!("..{}", chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S.%f"));
    let payload = dir.join(&ts);
    std::fs::create_dir_all(&payload)?;
    for (k, (v, mode)) in files {
        if k.starts_with('/') || k.split('/').any(|p| p == "..") {
            continue;
        }
        let p = payload.join(k);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, v)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode & 0o777))?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&ts, &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    let tops: std::collections::BTreeSet<String> = files
        .keys()
        .map(|k| k.split('/').next().unwrap_or(k).to_string())
        .collect();
    for t in &tops {
        let link = dir.join(t);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(format!("..data/{t}"), &link)?;
        }
    }
    // Names that disappeared from the payload.
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !tops.contains(&name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    if let Some(cur) = current {
        let _ = std::fs::remove_dir_all(dir.join(cur));
    }
    Ok(())
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                n += count_files(&e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

/// `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf` for the pod.
pub fn write_etc_files(
    cfg: &AgentConfig,
    pod: &Pod,
    dir: &Path,
    ip: Option<&str>,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network == Some(true);
    let ns = pod.namespace().unwrap_or_default();
    let hostname = spec.hostname.clone().unwrap_or_else(|| pod.name_any());
    let fqdn = spec
        .subdomain
        .as_ref()
        .map(|s| format!("{hostname}.{s}.{ns}.svc.{}", cfg.cluster_domain));
    if host_network {
        let _ = std::fs::copy("/etc/hosts", dir.join("etc-hosts"));
        let _ = std::fs::copy("/etc/hostname", dir.join("hostname"));
    } else {
        let mut hosts = String::from(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
        );
        if let Some(ip) = ip {
            match &fqdn {
                Some(f) => hosts.push_str(&format!("{ip}\t{f}\t{hostname}\n")),
                None => hosts.push_str(&format!("{ip}\t{hostname}\n")),
            }
        }
        for ha in spec.host_aliases.clone().unwrap_or_default() {
            hosts.push_str(&format!(
                "\n# Entries added by HostAliases.\n{}\t{}\n",
                ha.ip,
                ha.hostnames.unwrap_or_default().join("\t")
            ));
        }
        std::fs::write(dir.join("etc-hosts"), hosts)?;
        std::fs::write(dir.join("hostname"), format!("{hostname}\n"))?;
    }
    let policy = spec
        .dns_policy
        .clone()
        .unwrap_or_else(|| "ClusterFirst".into());
    let cluster = policy == "ClusterFirst" && !host_network || policy == "ClusterFirstWithHostNet";
    // The node's resolver, as the kubelet's `--resolv-conf` (not read for
    // `None`, which uses only the pod's dnsConfig).
    let host = {
        let text = if policy == "None" {
            String::new()
        } else {
            std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
        };
        let mut s: (Vec<String>, Vec<String>, Vec<String>) = (vec![], vec![], vec![]);
        for l in text.lines() {
            let mut f = l.split_whitespace();
            match f.next() {
                Some("nameserver") => s.0.extend(f.next().map(String::from)),
                Some("search") => s.1.extend(f.map(String::from)),
                Some("options") => s.2.extend(f.map(String::from)),
                _ => {}
            }
        }
        s
    };
    let (mut servers, mut searches, mut options) = if policy == "None" {
        (vec![], vec![], vec![])
    } else if cluster {
        // Upstream: the cluster's search path, then the node's; ndots:5
        // replaces the node's options.
        let d = &cfg.cluster_domain;
        let mut searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
        searches.extend(host.1);
        (
            vec![cfg.cluster_dns.clone()],
            searches,
            vec!["ndots:5".into()],
        )
    } else {
        host
    };
    if let Some(dc) = &spec.dns_config {
        servers.extend(dc.nameservers.clone().unwrap_or_default());
        searches.extend(dc.searches.clone().unwrap_or_default());
        // Same-named options: the pod's replace the base's.
        for o in dc.options.clone().unwrap_or_default() {
            let opt = match o.value {
                Some(v) => format!("{}:{v}", o.name.clone().unwrap_or_default()),
                None => o.name.clone().unwrap_or_default(),
            };
            let key = opt.split(':').next().unwrap_or("").to_string();
            options.retain(|x| x.split(':').next() != Some(key.as_str()));
            options.push(opt);
        }
    }
    // Duplicates dropped keeping the first, as upstream's omitDuplicates.
    for list in [&mut servers, &mut searches] {
        let mut seen = std::collections::HashSet::new();
        list.retain(|s| seen.insert(s.clone()));
    }
    servers.truncate(3);
    let mut text = String::new();
    if !searches.is_empty() {
        text.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for s in &servers {
        text.push_str(&format!("nameserver {s}\n"));
    }
    if !options.is_empty() {
        text.push_str(&format!("options {}\n", options.join(" ")));
    }
    std::fs::write(dir.join("resolv.conf"), text)
}

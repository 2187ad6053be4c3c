//! OCI runtime spec (`config.json`) generation for a Kubernetes container,
//! shaped like what containerd's CRI plugin writes, plus cgroup helpers.
//!
//! Seccomp `RuntimeDefault` is a **deny-list** (default action allow): the
//! syscalls Docker/containerd's default profile keeps off-limits unless the
//! container holds the matching capability return `EPERM`. An allow-list
//! copy of containerd's ~370-entry profile would be stricter; the deny-list
//! blocks the same dangerous calls and cannot break an unusual but harmless
//! workload.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Value, json};

/// Where a mount comes from.
#[allow(dead_code)] // Tmpfs: for the kubelet's memory-medium emptyDirs
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum MountKind {
    #[default]
    Bind,
    /// `size` in bytes; None = kernel default (half of RAM).
    Tmpfs { size: Option<u64> },
}

#[derive(Clone, Debug)]
pub struct MountSpec {
    pub destination: String,
    /// Host path (Bind); ignored for Tmpfs.
    pub source: PathBuf,
    pub kind: MountKind,
    pub readonly: bool,
}

/// Everything the kubelet decides about one container, runtime-neutral.
#[derive(Clone, Debug, Default)]
pub struct ContainerConfig {
    pub args: Vec<String>,
    /// `K=V`.
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub rootfs: PathBuf,
    pub readonly_rootfs: bool,
    pub mounts: Vec<MountSpec>,
    /// Namespaces to join by path; None = the host's.
    pub netns: Option<PathBuf>,
    /// With `hostname` and no `utsns`, the container gets a new UTS namespace.
    pub utsns: Option<PathBuf>,
    pub ipcns: Option<PathBuf>,
    pub hostname: Option<String>,
    /// e.g. `/kubepods/burstable/pod<uid>/<container-id>`.
    pub cgroups_path: String,
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub memory_limit: Option<i64>,
    pub pids_limit: Option<i64>,
    /// Pod-spec names (`NET_ADMIN`, `ALL`), with or without `CAP_`.
    pub capabilities_add: Vec<String>,
    pub capabilities_drop: Vec<String>,
    pub privileged: bool,
    pub no_new_privileges: bool,
    pub seccomp_runtime_default: bool,
    pub sysctls: BTreeMap<String, String>,
    pub tty: bool,
    pub oom_score_adj: Option<i32>,
}

/// containerd's default capability set (oci.WithDefaultSpec / CRI).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability the kernel (5.9+) knows.
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// containerd's defaults (pkg/oci/spec.go).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Syscalls denied by RuntimeDefault, each with the capability that lifts
/// the ban (as in containerd's profile), None = always denied.
const SECCOMP_DENY: &[(&str, Option<&str>)] = &[
    ("acct", Some("CAP_SYS_PACCT")),
    ("add_key", None),
    ("bpf", Some("CAP_SYS_ADMIN")),
    ("clock_adjtime", Some("CAP_SYS_TIME")),
    ("clock_settime", Some("CAP_SYS_TIME")),
    ("create_module", Some("CAP_SYS_MODULE")),
    ("delete_module", Some("CAP_SYS_MODULE")),
    ("finit_module", Some("CAP_SYS_MODULE")),
    ("fsconfig", Some("CAP_SYS_ADMIN")),
    ("fsmount", Some("CAP_SYS_ADMIN")),
    ("fsopen", Some("CAP_SYS_ADMIN")),
    ("fspick", Some("CAP_SYS_ADMIN")),
    ("get_kernel_syms", Some("CAP_SYS_MODULE")),
    ("get_mempolicy", Some("CAP_SYS_NICE")),
    ("init_module", Some("CAP_SYS_MODULE")),
    ("ioperm", Some("CAP_SYS_RAWIO")),
    ("iopl", Some("CAP_SYS_RAWIO")),
    ("kcmp", Some("CAP_SYS_PTRACE")),
    ("kexec_file_load", Some("CAP_SYS_BOOT")),
    ("kexec_load", Some("CAP_SYS_BOOT")),
    ("keyctl", None),
    ("lookup_dcookie", Some("CAP_SYS_ADMIN")),
    ("mbind", Some("CAP_SYS_NICE")),
    ("mount", Some("CAP_SYS_ADMIN")),
    ("mount_setattr", Some("CAP_SYS_ADMIN")),
    ("move_mount", Some("CAP_SYS_ADMIN")),
    ("move_pages", Some("CAP_SYS_NICE")),
    ("name_to_handle_at", Some("CAP_DAC_READ_SEARCH")),
    ("nfsservctl", None),
    ("open_by_handle_at", Some("CAP_DAC_READ_SEARCH")),
    ("open_tree", Some("CAP_SYS_ADMIN")),
    ("perf_event_open", Some("CAP_PERFMON")),
    ("pivot_root", Some("CAP_SYS_ADMIN")),
    ("process_vm_readv", Some("CAP_SYS_PTRACE")),
    ("process_vm_writev", Some("CAP_SYS_PTRACE")),
    ("ptrace", Some("CAP_SYS_PTRACE")),
    ("query_module", Some("CAP_SYS_MODULE")),
    ("quotactl", Some("CAP_SYS_ADMIN")),
    ("reboot", Some("CAP_SYS_BOOT")),
    ("request_key", None),
    ("set_mempolicy", Some("CAP_SYS_NICE")),
    ("setdomainname", Some("CAP_SYS_ADMIN")),
    ("sethostname", Some("CAP_SYS_ADMIN")),
    ("setns", Some("CAP_SYS_ADMIN")),
    ("settimeofday", Some("CAP_SYS_TIME")),
    ("stime", Some("CAP_SYS_TIME")),
    ("swapoff", Some("CAP_SYS_ADMIN")),
    ("swapon", Some("CAP_SYS_ADMIN")),
    ("syslog", Some("CAP_SYSLOG")),
    ("_sysctl", None),
    ("sysfs", None),
    ("umount", Some("CAP_SYS_ADMIN")),
    ("umount2", Some("CAP_SYS_ADMIN")),
    ("unshare", Some("CAP_SYS_ADMIN")),
    ("uselib", None),
    ("userfaultfd", None),
    ("ustat", None),
    ("vm86", None),
    ("vm86old", None),
];

const NOFILE: u64 = 1048576;

fn has_cap_sys_resource() -> bool {
    // Bit 24 = CAP_SYS_RESOURCE.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

fn own_nofile_hard() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 1024;
    }
    r.rlim_max
}

fn own_oom_score_adj() -> i32 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// `net_admin` / `CAP_NET_ADMIN` / `all` → `CAP_NET_ADMIN` / `ALL`.
fn cap_name(s: &str) -> String {
    let up = s.trim().to_ascii_uppercase();
    if up == "ALL" || up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// The effective capability set after Pod-spec add/drop (CRI semantics:
/// drop ALL then add, or add ALL then drop).
pub fn capabilities(c: &ContainerConfig) -> Vec<String> {
    if c.privileged {
        return ALL_CAPABILITIES.iter().map(|s| s.to_string()).collect();
    }
    let add: Vec<String> = c.capabilities_add.iter().map(|s| cap_name(s)).collect();
    let drop: Vec<String> = c.capabilities_drop.iter().map(|s| cap_name(s)).collect();
    let mut caps: Vec<String> = if add.iter().any(|s| s == "ALL") {
        ALL_CAPABILITIES.iter().map(|s| s.to_string()).collect()
    } else if drop.iter().any(|s| s == "ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect()
    };
    if !drop.iter().any(|s| s == "ALL") || add.iter().any(|s| s == "ALL") {
        caps.retain(|c| !drop.contains(c));
    }
    for a in add {
        if a != "ALL" && !caps.contains(&a) && ALL_CAPABILITIES.contains(&a.as_str()) {
            caps.push(a);
        }
    }
    caps
}

fn seccomp_profile(caps: &[String]) -> Value {
    let mut denied: Vec<&str> = SECCOMP_DENY
        .iter()
        .filter(|(_, cap)| cap.is_none_or(|c| !caps.iter().any(|h| h == c)))
        .map(|(n, _)| *n)
        .collect();
    denied.sort_unstable();
    // Only the native architecture and its compat ABIs; libcontainer skips
    // names an architecture does not have.
    let arches: Vec<&str> = if cfg!(target_arch = "x86_64") {
        vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    } else if cfg!(target_arch = "aarch64") {
        vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    } else {
        vec![]
    };
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": arches,
        "syscalls": [
            {"names": denied, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM as u32}
        ]
    })
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Value {
    json!({"destination": dest, "type": typ, "source": source, "options": options})
}

/// The `config.json` value for `c` (exposed for tests and debugging).
pub fn spec_json(c: &ContainerConfig) -> Value {
    let caps = capabilities(c);
    // Raising RLIMIT_NOFILE's hard limit and lowering oom_score_adj need
    // CAP_SYS_RESOURCE, which some sandboxes withhold even from root; the
    // runtime then stays within what it may set instead of failing.
    let privileged_resources = has_cap_sys_resource();
    let nofile: u64 = if privileged_resources {
        NOFILE
    } else {
        own_nofile_hard().min(NOFILE)
    };
    let mut process = json!({
        "terminal": c.tty,
        "user": {"uid": c.uid, "gid": c.gid},
        "args": c.args,
        "env": c.env,
        "cwd": if c.cwd.is_empty() { "/" } else { c.cwd.as_str() },
        "capabilities": {
            "bounding": caps, "effective": caps, "permitted": caps,
        },
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
    });
    if !c.additional_gids.is_empty() {
        process["user"]["additionalGids"] = json!(c.additional_gids);
    }
    // Absent rather than false: libcontainer then installs seccomp before
    // dropping capabilities, which a non-root user could not do afterwards.
    if c.no_new_privileges {
        process["noNewPrivileges"] = json!(true);
    }
    if let Some(adj) = c.oom_score_adj {
        let adj = if privileged_resources {
            adj
        } else {
            adj.max(own_oom_score_adj())
        };
        process["oomScoreAdj"] = json!(adj);
    }
    if !c.env.iter().any(|e| e.starts_with("PATH=")) {
        process["env"]
            .as_array_mut()
            .expect("env is an array")
            .insert(
                0,
                json!("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            );
    }

    let sys_opt: &[&str] = if c.privileged {
        &["nosuid", "noexec", "nodev", "rw"]
    } else {
        &["nosuid", "noexec", "nodev", "ro"]
    };
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount("/sys", "sysfs", "sysfs", sys_opt),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &[
                "nosuid",
                "noexec",
                "nodev",
                "relatime",
                if c.privileged { "rw" } else { "ro" },
            ],
        ),
    ];
    // The pod may supply its own /dev/shm (shared by the pod's containers).
    if !c.mounts.iter().any(|m| m.destination == "/dev/shm") {
        mounts.push(mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ));
    }
    for m in &c.mounts {
        match &m.kind {
            MountKind::Bind => {
                let mut opts = vec!["rbind", "rprivate"];
                opts.push(if m.readonly { "ro" } else { "rw" });
                mounts.push(json!({
                    "destination": m.destination,
                    "type": "bind",
                    "source": m.source,
                    "options": opts,
                }));
            }
            MountKind::Tmpfs { size } => {
                let mut opts = vec![
                    "nosuid".to_string(),
                    "nodev".to_string(),
                    "mode=1777".to_string(),
                ];
                if let Some(s) = size {
                    opts.push(format!("size={s}"));
                }
                if m.readonly {
                    opts.push("ro".into());
                }
                mounts.push(json!({
                    "destination": m.destination, "type": "tmpfs", "source": "tmpfs", "options": opts,
                }));
            }
        }
    }

    let mut namespaces = vec![json!({"type": "pid"}), json!({"type": "mount"})];
    for (typ, path) in [("network", &c.netns), ("uts", &c.utsns), ("ipc", &c.ipcns)] {
        if let Some(p) = path {
            namespaces.push(json!({"type": typ, "path": p}));
        }
    }
    // A hostname needs a UTS namespace of its own when none is joined.
    if c.utsns.is_none() && c.hostname.is_some() {
        namespaces.push(json!({"type": "uts"}));
    }

    let mut resources = json!({
        "devices": [{"allow": c.privileged, "access": "rwm"}],
    });
    let mut cpu = serde_json::Map::new();
    if let Some(s) = c.cpu_shares {
        cpu.insert("shares".into(), json!(s));
    }
    if let Some(q) = c.cpu_quota {
        cpu.insert("quota".into(), json!(q));
    }
    if let Some(p) = c.cpu_period {
        cpu.insert("period".into(), json!(p));
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }
    if let Some(m) = c.memory_limit {
        // swap = limit: no swap, as the kubelet does.
        resources["memory"] = json!({"limit": m, "swap": m});
    }
    if let Some(p) = c.pids_limit {
        resources["pids"] = json!({"limit": p});
    }

    let mut linux = json!({
        "resources": resources,
        "cgroupsPath": c.cgroups_path,
        "namespaces": namespaces,
    });
    if !c.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
        if c.seccomp_runtime_default {
            linux["seccomp"] = seccomp_profile(&caps);
        }
    }
    if !c.sysctls.is_empty() {
        linux["sysctl"] = json!(c.sysctls);
    }

    let mut spec = json!({
        "ociVersion": "1.0.2-dev",
        "process": process,
        "root": {"path": c.rootfs, "readonly": c.readonly_rootfs},
        "mounts": mounts,
        "linux": linux,
    });
    if let Some(h) = &c.hostname {
        spec["hostname"] = json!(h);
    }
    spec
}

/// Writes `bundle/config.json` for `c` (checked against oci-spec's types).
pub fn write_bundle(bundle: &Path, c: &ContainerConfig) -> Result<()> {
    std::fs::create_dir_all(bundle).with_context(|| format!("mkdir {}", bundle.display()))?;
    let v = spec_json(c);
    let _: oci_spec::runtime::Spec =
        serde_json::from_value(v.clone()).context("generated OCI spec does not parse")?;
    let path = bundle.join("config.json");
    let tmp = bundle.join(".config.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&v)?)
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// True on a pure cgroup v2 host.
pub fn cgroup_v2() -> bool {
    nix::sys::statfs::statfs(CGROUP_ROOT)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Every directory `path` has in the hierarchies (one for v2, one per v1
/// controller mount, co-mounted controllers counted once).
fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    let rel = path.trim_start_matches('/');
    if cgroup_v2() {
        return vec![Path::new(CGROUP_ROOT).join(rel)];
    }
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    if let Ok(rd) = std::fs::read_dir(CGROUP_ROOT) {
        for e in rd.flatten() {
            let p = e.path();
            // Symlinks (cpu -> cpu,cpuacct) would name the same hierarchy twice.
            let Ok(real) = std::fs::canonicalize(&p) else {
                continue;
            };
            if seen.insert(real.clone()) {
                out.push(real.join(rel));
            }
        }
    }
    out
}

/// Removes the cgroup `path` (and empty children) in every hierarchy;
/// missing directories are fine.
pub fn remove_cgroup(path: &str) {
    if path.trim_matches('/').is_empty() {
        return;
    }
    for dir in cgroup_dirs(path) {
        remove_tree(&dir);
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_tree(&e.path());
            }
        }
    }
    // cgroup dirs are removed with rmdir even though they hold files.
    let _ = std::fs::remove_dir(dir);
}

fn read_kv(path: &Path, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    s.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
    })
}

#[allow(dead_code)] // for cgroup_usage
fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// (CPU time in ns, memory working set in bytes) of the cgroup `path`;
/// working set = usage - inactive_file, as cAdvisor computes it.
#[allow(dead_code)] // for node/pod metrics
pub fn cgroup_usage(path: &str) -> Option<(u64, u64)> {
    cgroup_usage_at(Path::new(CGROUP_ROOT), cgroup_v2(), path)
}

fn cgroup_usage_at(root: &Path, v2: bool, path: &str) -> Option<(u64, u64)> {
    let rel = path.trim_start_matches('/');
    if v2 {
        let dir = root.join(rel);
        let cpu_us = read_kv(&dir.join("cpu.stat"), "usage_usec")?;
        let usage = read_u64(&dir.join("memory.current")).unwrap_or(0);
        let inactive = read_kv(&dir.join("memory.stat"), "inactive_file").unwrap_or(0);
        return Some((cpu_us * 1000, usage.saturating_sub(inactive)));
    }
    let cpu = read_u64(&root.join("cpuacct").join(rel).join("cpuacct.usage"))?;
    let mem = root.join("memory").join(rel);
    let usage = read_u64(&mem.join("memory.usage_in_bytes")).unwrap_or(0);
    let inactive = read_kv(&mem.join("memory.stat"), "total_inactive_file").unwrap_or(0);
    Some((cpu, usage.saturating_sub(inactive)))
}

/// Whether the kernel OOM-killed a process of cgroup `path`.
pub fn cgroup_oom_killed(path: &str) -> bool {
    cgroup_oom_killed_at(Path::new(CGROUP_ROOT), cgroup_v2(), path)
}

fn cgroup_oom_killed_at(root: &Path, v2: bool, path: &str) -> bool {
    let rel = path.trim_start_matches('/');
    let n = if v2 {
        read_kv(&root.join(rel).join("memory.events"), "oom_kill")
    } else {
        read_kv(
            &root.join("memory").join(rel).join("memory.oom_control"),
            "oom_kill",
        )
    };
    n.unwrap_or(0) > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_add_drop() {
        let mut c = ContainerConfig::default();
        assert_eq!(capabilities(&c).len(), DEFAULT_CAPABILITIES.len());
        c.capabilities_add = vec!["NET_ADMIN".into()];
        c.capabilities_drop = vec!["chown".into()];
        let caps = capabilities(&c);
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_CHOWN".to_string()));
        c.capabilities_drop = vec!["ALL".into()];
        assert_eq!(capabilities(&c), vec!["CAP_NET_ADMIN".to_string()]);
        c.capabilities_add = vec!["ALL".into()];
        c.capabilities_drop = vec!["SYS_ADMIN".into()];
        let caps = capabilities(&c);
        assert_eq!(caps.len(), ALL_CAPABILITIES.len() - 1);
    }

    /// What the kernel's v1 and v2 files say, read as cAdvisor and the
    /// kubelet do (working set = usage - inactive file; OOM = oom_kill > 0).
    #[test]
    fn usage_and_oom_from_v1_and_v2_files() {
        let v2 = tempfile::tempdir().unwrap();
        let dir = v2.path().join("kubepods/podx/c");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
        std::fs::write(dir.join("memory.current"), "10000\n").unwrap();
        std::fs::write(dir.join("memory.stat"), "anon 6000\ninactive_file 4000\n").unwrap();
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n",
        )
        .unwrap();
        let path = "/kubepods/podx/c";
        assert_eq!(
            cgroup_usage_at(v2.path(), true, path),
            Some((1_500_000, 6000))
        );
        assert!(!cgroup_oom_killed_at(v2.path(), true, path));
        std::fs::write(dir.join("memory.events"), "oom 1\noom_kill 1\n").unwrap();
        assert!(cgroup_oom_killed_at(v2.path(), true, path));

        let v1 = tempfile::tempdir().unwrap();
        let cpu = v1.path().join("cpuacct/kubepods/podx/c");
        let mem = v1.path().join("memory/kubepods/podx/c");
        std::fs::create_dir_all(&cpu).unwrap();
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::write(cpu.join("cpuacct.usage"), "2500\n").unwrap();
        std::fs::write(mem.join("memory.usage_in_bytes"), "9000\n").unwrap();
        std::fs::write(
            mem.join("memory.stat"),
            "cache 1\ntotal_inactive_file 1000\n",
        )
        .unwrap();
        std::fs::write(
            mem.join("memory.oom_control"),
            "oom_kill_disable 0\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(cgroup_usage_at(v1.path(), false, path), Some((2500, 8000)));
        assert!(cgroup_oom_killed_at(v1.path(), false, path));
    }

    #[test]
    fn spec_parses() {
        let c = ContainerConfig {
            args: vec!["sh".into()],
            rootfs: "/tmp/x".into(),
            cgroups_path: "/a/b".into(),
            memory_limit: Some(1 << 24),
            seccomp_runtime_default: true,
            netns: Some("/run/netns/x".into()),
            mounts: vec![MountSpec {
                destination: "/data".into(),
                source: "/tmp".into(),
                kind: MountKind::Bind,
                readonly: true,
            }],
            ..Default::default()
        };
        let v = spec_json(&c);
        let s: oci_spec::runtime::Spec = serde_json::from_value(v).unwrap();
        assert!(s.linux().as_ref().unwrap().seccomp().is_some());
    }
}

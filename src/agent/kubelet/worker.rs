//! One pod's worker: a level-triggered loop that makes the node match the
//! pod (sandbox, volumes, init containers in order, containers with their
//! restart policy and back-off, probes), posts the status, and on deletion
//! stops everything gracefully and removes every trace.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::container::{self, StartError, cleanup_instance};
use super::probe::{self, ProbeState};
use super::status::{apply_pod_cgroup, qos_class, remove_pod_cgroups};
use super::volumes::{self, PodVolumes};
use super::{InstanceId, Kubelet, PodHandle};
use crate::agent::network::{HostPort, Sandbox};
use crate::agent::runtime::ContainerStatus;
use crate::agent::streaming::ContainerRef;

const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long has its back-off reset.
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How often volumes are refreshed (ConfigMap/Secret updates propagate).
const VOLUME_RESYNC: Duration = Duration::from_secs(10);

fn rfc3339_now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Seconds-precision RFC 3339, as metav1.Time serialises.
fn to_secs(ts: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(ts)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339_now())
}

#[derive(Default)]
struct Ctr {
    name: String,
    init: bool,
    /// `restartCount`: attempts before the current one.
    attempt: u32,
    /// The current (or last) instance as the runtime reported it.
    current: Option<ContainerStatus>,
    image_id: Option<String>,
    last_term: Option<Value>,
    waiting: Option<(String, String)>,
    backoff: Duration,
    next_start: Option<Instant>,
    probes: Option<Arc<ProbeState>>,
    probe_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Start failures (pull or config) count for back-off.
    pull_backoff: Duration,
    /// The current back-off delay was waited out: double it on restart.
    backoff_used: bool,
    /// The runtime refused to start the current instance (`StartError`).
    start_error: Option<String>,
}

impl Ctr {
    fn running(&self) -> bool {
        self.current.as_ref().is_some_and(|c| c.exit.is_none())
    }
    fn exit_code(&self) -> Option<i32> {
        self.current.as_ref()?.exit.as_ref().map(|e| e.code)
    }
    fn stop_probes(&mut self) {
        for t in self.probe_tasks.drain(..) {
            t.abort();
        }
    }
    fn ready(&self) -> bool {
        self.running()
            && self
                .probes
                .as_ref()
                .is_none_or(|p| p.ready.load(Ordering::SeqCst))
    }
    fn started(&self) -> bool {
        self.running()
            && self
                .probes
                .as_ref()
                .is_none_or(|p| p.started.load(Ordering::SeqCst))
    }
}

struct Worker {
    kl: Arc<Kubelet>,
    h: Arc<PodHandle>,
    ctrs: Vec<Ctr>,
    sandbox: Option<Sandbox>,
    vols: Option<PodVolumes>,
    vols_synced: Option<Instant>,
    start_time: Option<String>,
    last_status: Option<Value>,
    probe_wake: Arc<Notify>,
    terminal: bool,
    /// Last pod seen (for cleanup once it is gone from the API).
    last_pod: Option<Pod>,
    mount_retry: Option<Instant>,
    /// The sandbox's hostPort DNATs are in place.
    host_ports_set: bool,
    /// An extra sync soon (a failed pull turns into ImagePullBackOff).
    wake_soon: Option<Instant>,
    /// Pod-level cgroup limits are written.
    pod_cgroup_set: bool,
}

pub async fn run(kl: Arc<Kubelet>, h: Arc<PodHandle>, adopted: Vec<ContainerStatus>) {
    let mut w = Worker {
        kl,
        h,
        ctrs: Vec::new(),
        sandbox: None,
        vols: None,
        vols_synced: None,
        start_time: None,
        last_status: None,
        probe_wake: Arc::new(Notify::new()),
        terminal: false,
        last_pod: None,
        mount_retry: None,
        host_ports_set: false,
        wake_soon: None,
        pod_cgroup_set: false,
    };
    w.main(adopted).await;
}

impl Worker {
    async fn main(&mut self, adopted: Vec<ContainerStatus>) {
        let mut exits = self.kl.runtime.subscribe();
        let Some(pod) = self.h.pod.lock().unwrap().clone() else {
            return;
        };
        self.init_containers_from(&pod, adopted);
        loop {
            let pod = self.h.pod.lock().unwrap().clone();
            match pod {
                None => {
                    let grace = self.last_pod.as_ref().map(grace_period).unwrap_or(30);
                    self.terminate(grace).await;
                    self.cleanup().await;
                    return;
                }
                Some(p) if p.metadata.deletion_timestamp.is_some() => {
                    let grace = p
                        .metadata
                        .deletion_grace_period_seconds
                        .unwrap_or_else(|| grace_period(&p));
                    self.last_pod = Some(p.clone());
                    self.terminate(grace).await;
                    self.post_status(&p).await;
                    let api: Api<Pod> =
                        Api::namespaced(self.kl.client.clone(), &p.namespace().unwrap_or_default());
                    let dp = DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: Some(Preconditions {
                            uid: p.uid(),
                            resource_version: None,
                        }),
                        ..Default::default()
                    };
                    if let Err(e) = api.delete(&p.name_any(), &dp).await {
                        tracing::debug!(pod = %p.name_any(), "final delete: {e}");
                    }
                    self.cleanup().await;
                    return;
                }
                Some(p) => {
                    self.last_pod = Some(p.clone());
                    self.sync(&p).await;
                    self.post_status(&p).await;
                    self.publish_view(&p);
                }
            }
            let wake_at = self
                .ctrs
                .iter()
                .filter_map(|c| c.next_start)
                .chain(self.mount_retry)
                .chain(self.wake_soon.take())
                .min()
                .unwrap_or_else(|| Instant::now() + VOLUME_RESYNC)
                .min(Instant::now() + VOLUME_RESYNC);
            tokio::select! {
                _ = self.h.notify.notified() => {}
                _ = self.probe_wake.notified() => {}
                _ = tokio::time::sleep_until(wake_at) => {}
                ev = exits.recv() => {
                    match ev {
                        Ok(st) if !is_mine(&st.id, &self.h.uid) => continue,
                        _ => {}
                    }
                }
            }
        }
    }

    fn init_containers_from(&mut self, pod: &Pod, adopted: Vec<ContainerStatus>) {
        let spec = pod.spec.clone().unwrap_or_default();
        let mk = |name: &str, init: bool| Ctr {
            name: name.to_string(),
            init,
            backoff: BACKOFF_START,
            ..Default::default()
        };
        for c in spec.init_containers.iter().flatten() {
            self.ctrs.push(mk(&c.name, true));
        }
        for c in &spec.containers {
            self.ctrs.push(mk(&c.name, false));
        }
        let n_init = spec.init_containers.as_ref().map_or(0, |v| v.len());
        // Highest attempt per slot is the current instance.
        for st in adopted {
            let Some(id) = InstanceId::parse(&st.id) else {
                continue;
            };
            let slot = if id.init { id.index } else { n_init + id.index };
            let Some(c) = self.ctrs.get_mut(slot) else {
                continue;
            };
            if c.current.is_none() || id.attempt >= c.attempt {
                c.attempt = id.attempt;
                c.current = Some(st);
            }
        }
        if self.ctrs.iter().any(|c| c.current.is_some()) {
            self.start_time = pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0.to_string());
            // Sandbox of a re-adopted pod: setup is idempotent and returns it.
        }
    }

    fn spec_container<'a>(&self, pod: &'a Pod, i: usize) -> Option<&'a Container> {
        let spec = pod.spec.as_ref()?;
        let n_init = spec.init_containers.as_ref().map_or(0, |v| v.len());
        if i < n_init {
            spec.init_containers.as_ref()?.get(i)
        } else {
            spec.containers.get(i - n_init)
        }
    }

    async fn refresh_runtime(&mut self) {
        let Ok(list) = self.kl.runtime.list().await else {
            return;
        };
        for c in &mut self.ctrs {
            if let Some(cur) = &c.current
                && let Some(st) = list.iter().find(|s| s.id == cur.id)
            {
                c.current = Some(st.clone());
            }
        }
    }

    async fn sync(&mut self, pod: &Pod) {
        self.refresh_runtime().await;
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let host_network = spec.host_network == Some(true);
        // Containers that exited: stop their probes, note when to restart.
        for i in 0..self.ctrs.len() {
            let exited = self.ctrs[i].current.as_ref().and_then(|c| c.exit.clone());
            if exited.is_some() {
                self.ctrs[i].stop_probes();
            }
        }
        // Liveness/startup failures: kill, the restart policy does the rest.
        for i in 0..self.ctrs.len() {
            let failed = self.ctrs[i]
                .probes
                .as_ref()
                .and_then(|p| p.failed.lock().unwrap().take());
            if let Some((_kind, msg)) = failed
                && self.ctrs[i].running()
            {
                let name = self.ctrs[i].name.clone();
                self.kl
                    .event(
                        pod,
                        false,
                        "Killing",
                        msg,
                        Some(&format!("spec.containers{{{name}}}")),
                    )
                    .await;
                let grace = grace_period(pod);
                self.kill_one(pod, i, grace).await;
            }
        }
        if self.terminal {
            return;
        }
        if self.start_time.is_none() {
            self.start_time = Some(rfc3339_now());
        }
        if !host_network && self.sandbox.is_none() {
            let hostname = spec.hostname.clone().unwrap_or_else(|| pod.name_any());
            match self.kl.network.setup(&self.h.uid, &hostname).await {
                Ok(sb) => self.sandbox = Some(sb),
                Err(e) => {
                    self.kl
                        .event(
                            pod,
                            true,
                            "FailedCreatePodSandBox",
                            format!("Failed to create pod sandbox: {e:#}"),
                            None,
                        )
                        .await;
                    self.mount_retry = Some(Instant::now() + Duration::from_secs(2));
                    return;
                }
            }
        }
        if let Some(sb) = &self.sandbox
            && !self.host_ports_set
        {
            let ports = host_ports(&spec);
            match self
                .kl
                .network
                .set_host_ports(&self.h.uid, sb.ip, &ports)
                .await
            {
                Ok(()) => self.host_ports_set = true,
                Err(e) => {
                    self.kl
                        .event(
                            pod,
                            true,
                            "FailedCreatePodSandBox",
                            format!("Failed to set up hostPort mappings: {e:#}"),
                            None,
                        )
                        .await;
                    self.mount_retry = Some(Instant::now() + Duration::from_secs(2));
                    return;
                }
            }
        }
        let ip = self.pod_ip().map(|i| i.to_string());
        let resync = self.vols.is_none()
            || self
                .vols_synced
                .is_none_or(|t| t.elapsed() >= VOLUME_RESYNC);
        if resync {
            let dir = volumes::pod_dir(&self.kl.cfg, &self.h.uid);
            if let Err(e) = volumes::write_etc_files(&self.kl.cfg, pod, &dir, ip.as_deref()) {
                tracing::warn!("writing pod files: {e}");
            }
            match volumes::prepare(&self.kl, pod).await {
                Ok(v) => {
                    self.vols = Some(v);
                    self.vols_synced = Some(Instant::now());
                    self.mount_retry = None;
                }
                Err(e) => {
                    if self.vols.is_none() {
                        self.kl
                            .event(pod, true, "FailedMount", e.message().to_string(), None)
                            .await;
                        for c in &mut self.ctrs {
                            if c.current.is_none() {
                                c.waiting = Some(("ContainerCreating".into(), String::new()));
                            }
                        }
                        self.mount_retry = Some(Instant::now() + Duration::from_secs(2));
                        return;
                    }
                }
            }
        }
        if !self.pod_cgroup_set {
            // Best effort: a host that refuses a limit still runs the pod,
            // the containers' own limits apply.
            if let Err(e) = apply_pod_cgroup(pod) {
                tracing::warn!(pod = %pod.name_any(), "pod cgroup limits: {e}");
            }
            self.pod_cgroup_set = true;
        }
        let n_init = spec.init_containers.as_ref().map_or(0, |v| v.len());
        // Init containers, strictly in order.
        for i in 0..n_init {
            let c = &self.ctrs[i];
            if c.running() {
                return;
            }
            match c.exit_code() {
                Some(0) => continue,
                Some(_) if policy == "Never" => {
                    self.terminal = true;
                    return;
                }
                Some(_) => {
                    self.maybe_restart(pod, i, &policy).await;
                    return;
                }
                None => {
                    self.try_start(pod, i).await;
                    return;
                }
            }
        }
        for i in n_init..self.ctrs.len() {
            let c = &self.ctrs[i];
            if c.running() {
                continue;
            }
            match c.exit_code() {
                Some(code) => {
                    let restart = match policy.as_str() {
                        "Always" => true,
                        "OnFailure" => code != 0,
                        _ => false,
                    };
                    if restart {
                        self.maybe_restart(pod, i, &policy).await;
                    }
                }
                None => self.try_start(pod, i).await,
            }
        }
        // A pod whose containers all finished for good is done: release its sandbox.
        let all_done = self.ctrs[n_init..].iter().all(|c| match c.exit_code() {
            None => false,
            Some(code) => match policy.as_str() {
                "Always" => false,
                "OnFailure" => code == 0,
                _ => true,
            },
        });
        if all_done && !self.ctrs[n_init..].is_empty() {
            self.terminal = true;
        }
    }

    fn pod_ip(&self) -> Option<IpAddr> {
        match &self.sandbox {
            Some(s) => Some(IpAddr::V4(s.ip)),
            None => self
                .last_pod
                .as_ref()
                .filter(|p| p.spec.as_ref().and_then(|s| s.host_network) == Some(true))
                .and_then(|_| self.kl.cfg.node_ip.parse().ok()),
        }
    }

    /// Restart an exited container once its back-off has passed.
    async fn maybe_restart(&mut self, pod: &Pod, i: usize, _policy: &str) {
        let now = Instant::now();
        let c = &mut self.ctrs[i];
        match c.next_start {
            None => {
                // Reset the back-off after a long healthy run.
                let ran_long = c.current.as_ref().is_some_and(|cur| {
                    let (Ok(s), Some(Ok(f))) = (
                        chrono::DateTime::parse_from_rfc3339(&cur.started_at),
                        cur.exit
                            .as_ref()
                            .map(|e| chrono::DateTime::parse_from_rfc3339(&e.finished_at)),
                    ) else {
                        return false;
                    };
                    (f - s).num_seconds() as u64 >= BACKOFF_RESET.as_secs()
                });
                if ran_long {
                    c.backoff = BACKOFF_START;
                }
                if c.attempt == 0 && c.backoff == BACKOFF_START && c.last_term.is_none() {
                    // First failure restarts at once, as upstream (back-off applies from the second).
                    c.next_start = Some(now);
                } else {
                    c.next_start = Some(now + c.backoff);
                }
                if c.next_start > Some(now) {
                    c.backoff_used = true;
                    let msg = format!(
                        "back-off {}s restarting failed container={} pod={}",
                        c.backoff.as_secs(),
                        c.name,
                        super::format_pod(pod),
                    );
                    c.waiting = Some(("CrashLoopBackOff".into(), msg.clone()));
                    let field = format!(
                        "spec.{}{{{}}}",
                        if c.init {
                            "initContainers"
                        } else {
                            "containers"
                        },
                        c.name
                    );
                    self.kl
                        .event(
                            pod,
                            true,
                            "BackOff",
                            "Back-off restarting failed container".to_string(),
                            Some(&field),
                        )
                        .await;
                    return;
                }
                self.restart_now(pod, i).await;
            }
            Some(t) if t <= now => self.restart_now(pod, i).await,
            Some(_) => {}
        }
    }

    async fn restart_now(&mut self, pod: &Pod, i: usize) {
        let c = &mut self.ctrs[i];
        c.next_start = None;
        if std::mem::take(&mut c.backoff_used) {
            c.backoff = (c.backoff * 2).min(BACKOFF_MAX);
        }
        if let Some(old) = c.current.take() {
            let mut t = terminated_json(&old, self.vols.as_ref(), &c.name, c.attempt);
            if let Some(m) = c.start_error.take() {
                t["terminated"]["reason"] = json!("StartError");
                t["terminated"]["message"] = json!(m);
            }
            c.last_term = Some(t);
            let _ = self.kl.runtime.remove(&old.id).await;
            cleanup_instance(&self.kl.cfg, &old.id);
        }
        c.attempt += 1;
        self.try_start(pod, i).await;
    }

    async fn try_start(&mut self, pod: &Pod, i: usize) {
        let now = Instant::now();
        let Some(spec_c) = self.spec_container(pod, i).cloned() else {
            return;
        };
        if self.ctrs[i].next_start.is_some_and(|t| t > now) {
            // A failed pull is shown once as ErrImagePull, then as back-off.
            if let Some((reason, msg)) = self.ctrs[i].waiting.clone()
                && reason == "ErrImagePull"
            {
                let image = spec_c.image.clone().unwrap_or_default();
                self.ctrs[i].waiting = Some((
                    "ImagePullBackOff".into(),
                    format!("Back-off pulling image \"{image}\": ErrImagePull: {msg}"),
                ));
                let field = format!(
                    "spec.{}{{{}}}",
                    if self.ctrs[i].init {
                        "initContainers"
                    } else {
                        "containers"
                    },
                    spec_c.name
                );
                self.kl
                    .event(
                        pod,
                        false,
                        "BackOff",
                        format!("Back-off pulling image \"{image}\""),
                        Some(&field),
                    )
                    .await;
                self.kl
                    .event(
                        pod,
                        true,
                        "Failed",
                        "Error: ImagePullBackOff".into(),
                        Some(&field),
                    )
                    .await;
            }
            return;
        }
        let Some(vols) = self.vols.as_ref() else {
            return;
        };
        let init = self.ctrs[i].init;
        let n_init = pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.as_ref())
            .map_or(0, |v| v.len());
        let index = if init { i } else { i - n_init };
        let attempt = self.ctrs[i].attempt;
        let field = format!(
            "spec.{}{{{}}}",
            if init { "initContainers" } else { "containers" },
            spec_c.name
        );
        let res = container::start(
            &self.kl,
            pod,
            self.sandbox.as_ref(),
            vols,
            &spec_c,
            init,
            index,
            attempt,
        )
        .await;
        let c = &mut self.ctrs[i];
        match res {
            Ok(started) => {
                c.waiting = None;
                c.start_error = None;
                c.pull_backoff = Duration::ZERO;
                c.image_id = Some(image_id(&started.image));
                c.current = Some(started.status);
                self.kl
                    .event(
                        pod,
                        false,
                        "Created",
                        format!("Created container {}", spec_c.name),
                        Some(&field),
                    )
                    .await;
                self.kl
                    .event(
                        pod,
                        false,
                        "Started",
                        format!("Started container {}", spec_c.name),
                        Some(&field),
                    )
                    .await;
                self.start_probes(pod, i, &spec_c);
                self.post_start_hook(pod, i, &spec_c).await;
            }
            Err(e) => {
                let reason = e.reason();
                match &e {
                    StartError::ImagePull(m) => {
                        self.kl
                            .event(
                                pod,
                                true,
                                "Failed",
                                format!(
                                    "Failed to pull image \"{}\": {m}",
                                    spec_c.image.clone().unwrap_or_default()
                                ),
                                Some(&field),
                            )
                            .await;
                        self.kl
                            .event(
                                pod,
                                true,
                                "Failed",
                                "Error: ErrImagePull".into(),
                                Some(&field),
                            )
                            .await;
                        let c = &mut self.ctrs[i];
                        c.pull_backoff = if c.pull_backoff.is_zero() {
                            BACKOFF_START
                        } else {
                            (c.pull_backoff * 2).min(BACKOFF_MAX)
                        };
                        c.next_start = Some(Instant::now() + c.pull_backoff);
                        c.waiting = Some(("ErrImagePull".into(), e.message().to_string()));
                        self.wake_soon = Some(Instant::now() + Duration::from_secs(1));
                    }
                    StartError::Run(m) => {
                        self.kl
                            .event(pod, true, "Failed", format!("Error: {m}"), Some(&field))
                            .await;
                        let c = &mut self.ctrs[i];
                        let now = rfc3339_now();
                        // Shown as a terminated instance (exit 128), then the restart policy applies.
                        c.current = Some(ContainerStatus {
                            id: InstanceId::format(&self.h.uid, init, index, attempt),
                            pid: 0,
                            started_at: now.clone(),
                            log_path: Default::default(),
                            exit: Some(crate::agent::runtime::ExitStatus {
                                code: 128,
                                signal: None,
                                oom_killed: false,
                                finished_at: now,
                            }),
                        });
                        c.waiting = None;
                        c.start_error = Some(m.clone());
                    }
                    _ => {
                        self.kl
                            .event(
                                pod,
                                true,
                                "Failed",
                                format!("Error: {}", e.message()),
                                Some(&field),
                            )
                            .await;
                        let c = &mut self.ctrs[i];
                        c.pull_backoff = if c.pull_backoff.is_zero() {
                            Duration::from_secs(2)
                        } else {
                            (c.pull_backoff * 2).min(Duration::from_secs(20))
                        };
                        c.next_start = Some(Instant::now() + c.pull_backoff);
                        c.waiting = Some((reason.into(), e.message().to_string()));
                    }
                }
            }
        }
    }

    fn start_probes(&mut self, pod: &Pod, i: usize, spec_c: &Container) {
        let c = &mut self.ctrs[i];
        c.stop_probes();
        let state = Arc::new(ProbeState::default());
        state
            .started
            .store(spec_c.startup_probe.is_none(), Ordering::SeqCst);
        state
            .ready
            .store(spec_c.readiness_probe.is_none(), Ordering::SeqCst);
        c.probes = Some(state.clone());
        if c.init {
            return;
        }
        let id = c.current.as_ref().map(|s| s.id.clone()).unwrap_or_default();
        let ip = self.pod_ip();
        for (kind, p) in [
            (probe::Kind::Startup, &spec_c.startup_probe),
            (probe::Kind::Liveness, &spec_c.liveness_probe),
            (probe::Kind::Readiness, &spec_c.readiness_probe),
        ] {
            let Some(p) = p.clone() else { continue };
            let kl = self.kl.clone();
            let pod2 = pod.clone();
            let field = format!("spec.containers{{{}}}", spec_c.name);
            let warn = move |msg: String| {
                let kl = kl.clone();
                let pod = pod2.clone();
                let field = field.clone();
                tokio::spawn(
                    async move { kl.event(&pod, true, "Unhealthy", msg, Some(&field)).await },
                );
            };
            let task = tokio::spawn(probe::run_loop(
                kind,
                self.kl.runtime.clone(),
                id.clone(),
                p,
                spec_c.clone(),
                ip,
                state.clone(),
                self.probe_wake.clone(),
                warn,
            ));
            self.ctrs[i].probe_tasks.push(task);
        }
    }

    async fn post_start_hook(&mut self, pod: &Pod, i: usize, spec_c: &Container) {
        let Some(h) = spec_c.lifecycle.as_ref().and_then(|l| l.post_start.clone()) else {
            return;
        };
        let id = self.ctrs[i]
            .current
            .as_ref()
            .map(|s| s.id.clone())
            .unwrap_or_default();
        let ip = self.pod_ip();
        let outcome = run_handler(&self.kl, pod, &id, &h, spec_c, ip).await;
        if let probe::Outcome::Failure(msg) = outcome {
            let field = format!("spec.containers{{{}}}", spec_c.name);
            self.kl
                .event(pod, true, "FailedPostStartHook", msg, Some(&field))
                .await;
            self.kill_one(pod, i, grace_period(pod)).await;
        }
    }

    /// Stops one running instance: preStop hook, SIGTERM, grace, SIGKILL.
    async fn kill_one(&mut self, pod: &Pod, i: usize, grace: i64) {
        self.kill_some(pod, &[i], grace).await;
    }

    /// Stops the running instances among `slots` together, as the kubelet
    /// does: each runs its preStop hook then gets SIGTERM, all share one
    /// grace period, whatever still runs at its end gets SIGKILL.
    async fn kill_some(&mut self, pod: &Pod, slots: &[usize], grace: i64) {
        let deadline = Instant::now() + Duration::from_secs(grace.max(0) as u64);
        let ip = self.pod_ip();
        let mut victims = Vec::new();
        for &i in slots {
            let Some(cur) = self.ctrs[i].current.clone() else {
                continue;
            };
            if cur.exit.is_some() {
                continue;
            }
            self.ctrs[i].stop_probes();
            let spec_c = self.spec_container(pod, i).cloned().unwrap_or_default();
            victims.push((cur.id, spec_c));
        }
        if victims.is_empty() {
            return;
        }
        // Subscribed before the first SIGTERM so no exit is missed.
        let mut exits = self.kl.runtime.subscribe();
        let kl = &self.kl;
        futures::future::join_all(victims.iter().map(|(id, c)| async move {
            if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
                let hook = run_handler(kl, pod, id, h, c, ip);
                if let Ok(probe::Outcome::Failure(msg)) =
                    tokio::time::timeout_at(deadline, hook).await
                {
                    let field = format!("spec.containers{{{}}}", c.name);
                    kl.event(pod, true, "FailedPreStopHook", msg, Some(&field))
                        .await;
                }
            }
            let _ = kl.runtime.signal(id, libc::SIGTERM).await;
        }))
        .await;
        let mut killed = false;
        let hard_stop = deadline + Duration::from_secs(5);
        loop {
            let list = kl.runtime.list().await.unwrap_or_default();
            // An instance the runtime no longer lists is gone as well.
            let gone = |id: &str| !list.iter().any(|s| s.id == id) || has_exited(&list, id);
            if victims.iter().all(|(id, _)| gone(id)) {
                break;
            }
            let now = Instant::now();
            if now >= deadline && !killed {
                for (id, _) in &victims {
                    if !gone(id) {
                        let _ = kl.runtime.signal(id, libc::SIGKILL).await;
                    }
                }
                killed = true;
            }
            if now >= hard_stop {
                break;
            }
            let until = if killed { hard_stop } else { deadline };
            // Re-check at least every 200 ms: a missed event must not stall us.
            let tick = until.min(now + Duration::from_millis(200));
            let _ = tokio::time::timeout_at(tick, exits.recv()).await;
        }
        self.refresh_runtime().await;
    }

    /// Stops every container: running regular containers together (as the
    /// kubelet does), then any running init container.
    async fn terminate(&mut self, grace: i64) {
        let Some(pod) = self
            .last_pod
            .clone()
            .or_else(|| self.h.pod.lock().unwrap().clone())
        else {
            return;
        };
        if self.ctrs.iter().any(|c| c.running()) {
            self.kl
                .event(&pod, false, "Killing", "Stopping pod".into(), None)
                .await;
        }
        let start = Instant::now();
        let regular: Vec<usize> = (0..self.ctrs.len())
            .filter(|i| !self.ctrs[*i].init)
            .collect();
        self.kill_some(&pod, &regular, grace).await;
        let init: Vec<usize> = (0..self.ctrs.len())
            .filter(|i| self.ctrs[*i].init)
            .collect();
        let left = grace - start.elapsed().as_secs() as i64;
        self.kill_some(&pod, &init, left.max(0)).await;
        self.terminal = true;
    }

    async fn cleanup(&mut self) {
        for c in &mut self.ctrs {
            c.stop_probes();
            if let Some(cur) = c.current.take() {
                let _ = self.kl.runtime.remove(&cur.id).await;
                cleanup_instance(&self.kl.cfg, &cur.id);
            }
        }
        // Instances this worker did not know (older attempts).
        if let Ok(list) = self.kl.runtime.list().await {
            for s in list {
                if InstanceId::parse(&s.id).is_some_and(|i| i.uid == self.h.uid) {
                    let _ = self.kl.runtime.remove(&s.id).await;
                    cleanup_instance(&self.kl.cfg, &s.id);
                }
            }
        }
        if let Err(e) = self.kl.network.teardown(&self.h.uid).await {
            tracing::warn!(uid = %self.h.uid, "tearing down the pod network: {e:#}");
        }
        volumes::cleanup_pod(&self.kl.cfg, &self.h.uid);
        remove_pod_cgroups(&self.h.uid);
        if let Some(p) = &self.last_pod {
            let logs = self.kl.cfg.agent_dir().join("logs").join(format!(
                "{}_{}_{}",
                p.namespace().unwrap_or_default(),
                p.name_any(),
                self.h.uid
            ));
            let _ = std::fs::remove_dir_all(logs);
        }
    }

    fn publish_view(&self, pod: &Pod) {
        let mut v = self.h.view.lock().unwrap();
        v.namespace = pod.namespace().unwrap_or_default();
        v.name = pod.name_any();
        v.netns = self.sandbox.as_ref().map(|s| s.netns.clone());
        v.default_container = pod
            .annotations()
            .get("kubectl.kubernetes.io/default-container")
            .cloned();
        let mut list = Vec::new();
        // Regular containers first: `kubectl logs POD` with one container picks it.
        let order: Vec<usize> = (0..self.ctrs.len())
            .filter(|i| !self.ctrs[*i].init)
            .chain((0..self.ctrs.len()).filter(|i| self.ctrs[*i].init))
            .collect();
        for i in order {
            let c = &self.ctrs[i];
            let spec_c = self.spec_container(pod, i);
            let log_path = container::log_path(&self.kl.cfg, pod, &c.name, c.attempt);
            let previous = (c.attempt > 0)
                .then(|| container::log_path(&self.kl.cfg, pod, &c.name, c.attempt - 1));
            list.push((
                c.name.clone(),
                ContainerRef {
                    id: c.current.as_ref().map(|s| s.id.clone()).unwrap_or_default(),
                    log_path,
                    previous_log_path: previous.filter(|p| p.exists()),
                    running: c.running(),
                    stdin: spec_c.and_then(|s| s.stdin) == Some(true),
                    tty: spec_c.and_then(|s| s.tty) == Some(true),
                },
            ));
        }
        // Only regular containers count for the "only container" default.
        let regular = list
            .iter()
            .filter(|(n, _)| self.ctrs.iter().any(|c| &c.name == n && !c.init))
            .count();
        if v.default_container.is_none() && regular == 1 {
            v.default_container = Some(list[0].0.clone());
        }
        v.containers = list;
    }

    fn container_status(&self, pod: &Pod, i: usize) -> Value {
        let c = &self.ctrs[i];
        let spec_c = self.spec_container(pod, i);
        let image = spec_c.and_then(|s| s.image.clone()).unwrap_or_default();
        let mut st = json!({
            "name": c.name,
            "image": image,
            "imageID": c.image_id.clone().unwrap_or_default(),
            "ready": c.ready(),
            "restartCount": c.attempt,
            "started": c.started(),
        });
        if let Some(cur) = &c.current
            && cur.pid != 0
        {
            st["containerID"] = json!(format!("skiff://{}", cur.id));
        }
        let state = if let Some((reason, message)) = &c.waiting
            && !c.running()
        {
            if message.is_empty() {
                json!({"waiting": {"reason": reason}})
            } else {
                json!({"waiting": {"reason": reason, "message": message}})
            }
        } else {
            match &c.current {
                Some(cur) if cur.exit.is_none() => {
                    json!({"running": {"startedAt": to_secs(&cur.started_at)}})
                }
                Some(cur) => {
                    let mut t = terminated_json(cur, self.vols.as_ref(), &c.name, c.attempt);
                    if let Some(m) = &c.start_error {
                        t["terminated"]["reason"] = json!("StartError");
                        t["terminated"]["message"] = json!(m);
                    }
                    t
                }
                None => json!({"waiting": {"reason": "ContainerCreating"}}),
            }
        };
        st["state"] = state;
        st["lastState"] = c.last_term.clone().unwrap_or_else(|| json!({}));
        st
    }

    fn phase(&self, pod: &Pod) -> &'static str {
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let n_init = spec.init_containers.as_ref().map_or(0, |v| v.len());
        for c in &self.ctrs[..n_init] {
            match c.exit_code() {
                Some(0) => {}
                Some(_) if policy == "Never" => return "Failed",
                _ => return "Pending",
            }
        }
        let (mut pending, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
        for c in &self.ctrs[n_init..] {
            if c.running() {
                running += 1;
            } else if let Some(code) = c.exit_code() {
                stopped += 1;
                if code == 0 {
                    succeeded += 1;
                }
            } else if c.last_term.is_some() {
                stopped += 1;
            } else {
                pending += 1;
            }
        }
        if pending > 0 {
            "Pending"
        } else if running > 0 {
            "Running"
        } else if stopped > 0 {
            if policy == "Always" {
                "Running"
            } else if stopped == succeeded {
                "Succeeded"
            } else if policy == "Never" {
                "Failed"
            } else {
                "Running"
            }
        } else {
            "Pending"
        }
    }

    async fn post_status(&mut self, pod: &Pod) {
        let spec = pod.spec.clone().unwrap_or_default();
        let n_init = spec.init_containers.as_ref().map_or(0, |v| v.len());
        let phase = self.phase(pod);
        let now = rfc3339_now();
        let init_statuses: Vec<Value> =
            (0..n_init).map(|i| self.container_status(pod, i)).collect();
        let statuses: Vec<Value> = (n_init..self.ctrs.len())
            .map(|i| self.container_status(pod, i))
            .collect();
        let init_pending: Vec<String> = self.ctrs[..n_init]
            .iter()
            .filter(|c| c.exit_code() != Some(0))
            .map(|c| c.name.clone())
            .collect();
        let unready: Vec<String> = self.ctrs[n_init..]
            .iter()
            .filter(|c| !c.ready())
            .map(|c| c.name.clone())
            .collect();
        let old: BTreeMap<String, Value> = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| Some((c.type_.clone(), serde_json::to_value(c).ok()?)))
            .collect();
        let terminal = phase == "Succeeded" || phase == "Failed";
        let conds = {
            let cond = |type_: &str, ok: bool, reason: &str, message: String| -> Value {
                let status = if ok { "True" } else { "False" };
                let prev = old.get(type_);
                let since = prev
                    .filter(|p| p.get("status").and_then(|s| s.as_str()) == Some(status))
                    .and_then(|p| p.get("lastTransitionTime").cloned())
                    .unwrap_or_else(|| json!(now.clone()));
                let mut v = json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
                if !ok && !reason.is_empty() {
                    v["reason"] = json!(reason);
                    v["message"] = json!(message);
                }
                v
            };
            let gates_ok = spec
                .readiness_gates
                .clone()
                .unwrap_or_default()
                .iter()
                .all(|g| {
                    old.get(&g.condition_type)
                        .and_then(|c| c.get("status"))
                        .and_then(|s| s.as_str())
                        == Some("True")
                });
            let sandbox_ok = self.sandbox.is_some() || spec.host_network == Some(true);
            let mut conds = vec![
                cond(
                    "PodReadyToStartContainers",
                    sandbox_ok && !terminal,
                    "",
                    String::new(),
                ),
                cond(
                    "Initialized",
                    init_pending.is_empty(),
                    "ContainersNotInitialized",
                    format!(
                        "containers with incomplete status: [{}]",
                        init_pending.join(" ")
                    ),
                ),
            ];
            let (ready_reason, ready_msg) = if terminal {
                ("PodCompleted", String::new())
            } else {
                (
                    "ContainersNotReady",
                    format!("containers with unready status: [{}]", unready.join(" ")),
                )
            };
            let containers_ready = unready.is_empty() && !terminal;
            conds.push(cond(
                "ContainersReady",
                containers_ready,
                ready_reason,
                ready_msg.clone(),
            ));
            let ready_reason = if containers_ready && !gates_ok {
                "ReadinessGatesNotReady"
            } else {
                ready_reason
            };
            conds.push(cond(
                "Ready",
                containers_ready && gates_ok,
                ready_reason,
                ready_msg,
            ));
            conds
        };
        // Conditions others own (PodScheduled, DisruptionTarget, readiness gates) stay.
        let mine = [
            "PodReadyToStartContainers",
            "Initialized",
            "ContainersReady",
            "Ready",
        ];
        let mut all: Vec<Value> = old
            .iter()
            .filter(|(k, _)| !mine.contains(&k.as_str()))
            .map(|(_, v)| v.clone())
            .collect();
        all.extend(conds);
        let ip = self.pod_ip().map(|i| i.to_string());
        let mut status = json!({
            "phase": phase,
            "conditions": all,
            "hostIP": self.kl.cfg.node_ip,
            "hostIPs": [{"ip": self.kl.cfg.node_ip}],
            "startTime": self.start_time.as_deref().map(to_secs),
            "qosClass": qos_class(pod),
            "containerStatuses": statuses,
        });
        if n_init > 0 {
            status["initContainerStatuses"] = json!(init_statuses);
        }
        if let Some(ip) = ip {
            status["podIP"] = json!(ip);
            status["podIPs"] = json!([{"ip": ip}]);
        }
        // Compare without timestamps of conditions that did not change.
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        let api: Api<Pod> =
            Api::namespaced(self.kl.client.clone(), &pod.namespace().unwrap_or_default());
        match api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
        {
            Ok(_) => self.last_status = Some(status),
            Err(e) => tracing::debug!(pod = %pod.name_any(), "status update: {e}"),
        }
        if terminal && !self.terminal {
            self.terminal = true;
        }
        if terminal {
            // Finished pods keep their status, not their network.
            if let Some(_sb) = self.sandbox.take() {
                let _ = self.kl.network.teardown(&self.h.uid).await;
            }
        }
    }
}

/// The pod's `ports[].hostPort` mappings (IPv4 host IPs only; a `hostIP`
/// of 0.0.0.0 means every address).
fn host_ports(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<HostPort> {
    let mut out: Vec<HostPort> = Vec::new();
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
    {
        for p in c.ports.iter().flatten() {
            let Some(hp) = p.host_port.filter(|h| (1..=65535).contains(h)) else {
                continue;
            };
            let host_ip = p
                .host_ip
                .as_deref()
                .and_then(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
                .filter(|ip| !ip.is_unspecified());
            let m = HostPort {
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                host_ip,
                host_port: hp as u16,
                container_port: p.container_port.clamp(1, 65535) as u16,
            };
            if !out.contains(&m) {
                out.push(m);
            }
        }
    }
    out
}

fn is_mine(id: &str, uid: &str) -> bool {
    InstanceId::parse(id).is_some_and(|i| i.uid == uid)
}

fn has_exited(list: &[ContainerStatus], id: &str) -> bool {
    list.iter().any(|s| s.id == id && s.exit.is_some())
}

fn grace_period(pod: &Pod) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30)
}

fn image_id(img: &crate::agent::images::ImageRecord) -> String {
    let repo = img.name.split('@').next().unwrap_or(&img.name);
    let repo = match repo.rfind(':') {
        Some(i) if !repo[i..].contains('/') => &repo[..i],
        _ => repo,
    };
    format!(
        "{repo}@{}",
        img.index_digest.as_deref().unwrap_or(&img.digest)
    )
}

fn terminated_json(
    cur: &ContainerStatus,
    vols: Option<&PodVolumes>,
    name: &str,
    attempt: u32,
) -> Value {
    let exit = cur
        .exit
        .clone()
        .unwrap_or(crate::agent::runtime::ExitStatus {
            code: 0,
            signal: None,
            oom_killed: false,
            finished_at: rfc3339_now(),
        });
    let reason = if exit.oom_killed {
        "OOMKilled"
    } else if exit.code == 0 {
        "Completed"
    } else {
        "Error"
    };
    let mut t = json!({
        "exitCode": exit.code,
        "reason": reason,
        "startedAt": to_secs(&cur.started_at),
        "finishedAt": to_secs(&exit.finished_at),
        "containerID": format!("skiff://{}", cur.id),
    });
    if let Some(sig) = exit.signal {
        t["signal"] = json!(sig);
    }
    if let Some(v) = vols {
        let p = v
            .pod_dir
            .join("containers")
            .join(name)
            .join(format!("{attempt}-termination-log"));
        if let Ok(msg) = std::fs::read(&p)
            && !msg.is_empty()
        {
            let msg = &msg[..msg.len().min(4096)];
            t["message"] = json!(String::from_utf8_lossy(msg));
        }
    }
    json!({"terminated": t})
}

async fn run_handler(
    kl: &Kubelet,
    pod: &Pod,
    id: &str,
    h: &k8s_openapi::api::core::v1::LifecycleHandler,
    c: &Container,
    ip: Option<IpAddr>,
) -> probe::Outcome {
    let timeout = Duration::from_secs(30);
    // Upstream's hook failure texts name the container and the pod.
    let who = format!(
        "for Container {:?} in Pod {:?} failed",
        c.name,
        super::format_pod(pod)
    );
    if let Some(e) = &h.exec {
        match probe::exec(&kl.runtime, id, e, timeout).await {
            probe::Outcome::Failure(m) => probe::Outcome::Failure(format!(
                "Exec lifecycle hook ([{}]) {who} - error: {m}",
                e.command.clone().unwrap_or_default().join(" ")
            )),
            ok => ok,
        }
    } else if let Some(g) = &h.http_get {
        // Any answer will do: the kubelet discards a hook's response.
        match probe::http_status(g, c, ip, timeout).await {
            Ok(_) => probe::Outcome::Success,
            Err(m) => probe::Outcome::Failure(format!(
                "HTTP lifecycle hook ({}) {who} - error: {m}",
                g.path.clone().unwrap_or_default()
            )),
        }
    } else if let Some(s) = &h.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64)).await;
        probe::Outcome::Success
    } else {
        probe::Outcome::Success
    }
}

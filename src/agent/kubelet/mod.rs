//! The kubelet: watches the Pods bound to this node and makes the node's
//! containers match them, one worker task per pod (`worker.rs`), reporting
//! status back through the API.
//!
//! Container runtime ids are `<pod uid>-<c|i><index>-<attempt>`: a restarted
//! agent finds which pod, container and restart count every running
//! container belongs to from the runtime's list alone, and re-adopts it.

mod container;
mod probe;
mod status;
mod volumes;
mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::Notify;

use super::AgentConfig;
use super::images::ImageStore;
use super::network::PodNetwork;
use super::runtime::{ContainerStatus, Runtime};
use super::streaming::{ContainerRef, LookupError, Pods};

/// One container instance as the runtime knows it, parsed from its id.
#[derive(Clone, Debug)]
pub struct InstanceId {
    pub uid: String,
    pub init: bool,
    pub index: usize,
    pub attempt: u32,
}

/// A pod as upstream's messages name it (`format.Pod`): `name_namespace(uid)`.
pub fn format_pod(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.name_any(),
        pod.namespace().unwrap_or_default(),
        pod.uid().unwrap_or_default()
    )
}

impl InstanceId {
    pub fn format(uid: &str, init: bool, index: usize, attempt: u32) -> String {
        format!("{uid}-{}{index}-{attempt}", if init { 'i' } else { 'c' })
    }

    pub fn parse(id: &str) -> Option<InstanceId> {
        // The uid itself contains dashes: split from the right.
        let (rest, attempt) = id.rsplit_once('-')?;
        let (uid, slot) = rest.rsplit_once('-')?;
        let init = slot.starts_with('i');
        if !init && !slot.starts_with('c') {
            return None;
        }
        Some(InstanceId {
            uid: uid.to_string(),
            init,
            index: slot[1..].parse().ok()?,
            attempt: attempt.parse().ok()?,
        })
    }
}

/// What the streaming endpoint may ask about a pod's containers.
#[derive(Clone, Debug, Default)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub netns: Option<PathBuf>,
    /// Container name → reference (regular containers first, in spec order).
    pub containers: Vec<(String, ContainerRef)>,
    pub default_container: Option<String>,
}

/// Shared between the watch loop and a pod's worker.
pub struct PodHandle {
    pub uid: String,
    /// Latest object from the API; None once it is gone from the API.
    pub pod: Mutex<Option<Pod>>,
    pub notify: Notify,
    pub view: Mutex<PodView>,
}

pub struct Kubelet {
    pub client: Client,
    pub cfg: AgentConfig,
    pub images: ImageStore,
    pub runtime: Runtime,
    pub network: PodNetwork,
    pods: Mutex<HashMap<String, Arc<PodHandle>>>,
    recorder: Recorder,
    /// Serialises image pulls of the same reference.
    pull_locks: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Kubelet {
    pub fn new(
        client: Client,
        cfg: AgentConfig,
        images: ImageStore,
        runtime: Runtime,
        network: PodNetwork,
    ) -> Arc<Kubelet> {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "kubelet".into(),
                instance: Some(cfg.node_name.clone()),
            },
        );
        Arc::new(Kubelet {
            client,
            cfg,
            images,
            runtime,
            network,
            pods: Mutex::new(HashMap::new()),
            recorder,
            pull_locks: Default::default(),
        })
    }

    /// Records an Event on the pod (best effort), as the kubelet does.
    pub async fn event(
        &self,
        pod: &Pod,
        warning: bool,
        reason: &str,
        note: String,
        field: Option<&str>,
    ) {
        let mut reference = pod.object_ref(&());
        reference.field_path = field.map(str::to_string);
        // The recorder folds events with the same (type, reason, action)
        // into one series: the note's first words keep "Liveness probe
        // failed" and "Readiness probe failed", or "Error: ErrImagePull" and
        // "Error: ImagePullBackOff", apart, while repeats with varying
        // details (probe output) still fold.
        let mut action = note
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        if action.is_empty() {
            action = reason.to_string();
        }
        // events.k8s.io limits `action` to 128 characters.
        if let Some((i, _)) = action.char_indices().nth(128) {
            action.truncate(i);
        }
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action,
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &reference).await {
            tracing::debug!("event {reason}: {e}");
        }
    }

    pub async fn pull_lock(&self, image: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.pull_locks
            .lock()
            .await
            .entry(image.to_string())
            .or_default()
            .clone()
    }

    /// Watches this node's pods and keeps one worker per pod.
    pub async fn run(self: Arc<Self>) -> Result<()> {
        let adopted = self.runtime.list().await.unwrap_or_default();
        tracing::info!(containers = adopted.len(), "runtime state loaded");
        let api: Api<Pod> = Api::all(self.client.clone());
        let config =
            watcher::Config::default().fields(&format!("spec.nodeName={}", self.cfg.node_name));
        let stream = watcher(api, config).default_backoff();
        futures::pin_mut!(stream);
        let mut seen_in_init: Vec<String> = Vec::new();
        let mut collected = false;
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Apply(pod)) | Ok(watcher::Event::InitApply(pod)) => {
                    if !collected {
                        seen_in_init.push(pod.uid().unwrap_or_default());
                    }
                    self.clone().upsert(pod, &adopted);
                }
                Ok(watcher::Event::Delete(pod)) => {
                    let uid = pod.uid().unwrap_or_default();
                    if let Some(h) = self.pods.lock().unwrap().get(&uid) {
                        *h.pod.lock().unwrap() = None;
                        h.notify.notify_one();
                    }
                }
                Ok(watcher::Event::Init) => seen_in_init.clear(),
                Ok(watcher::Event::InitDone) => {
                    if !collected {
                        collected = true;
                        let this = self.clone();
                        let known = std::mem::take(&mut seen_in_init);
                        let adopted = adopted.clone();
                        tokio::spawn(async move { this.collect_orphans(&known, &adopted).await });
                    }
                }
                Err(e) => tracing::warn!("pod watch: {e}"),
            }
        }
        Ok(())
    }

    fn upsert(self: Arc<Self>, pod: Pod, adopted: &[ContainerStatus]) {
        let uid = pod.uid().unwrap_or_default();
        let mut pods = self.pods.lock().unwrap();
        if let Some(h) = pods.get(&uid) {
            *h.pod.lock().unwrap() = Some(pod);
            h.notify.notify_one();
            return;
        }
        let handle = Arc::new(PodHandle {
            uid: uid.clone(),
            view: Mutex::new(PodView {
                namespace: pod.namespace().unwrap_or_default(),
                name: pod.name_any(),
                ..Default::default()
            }),
            pod: Mutex::new(Some(pod)),
            notify: Notify::new(),
        });
        pods.insert(uid.clone(), handle.clone());
        let mine: Vec<ContainerStatus> = adopted
            .iter()
            .filter(|c| InstanceId::parse(&c.id).is_some_and(|i| i.uid == uid))
            .cloned()
            .collect();
        let this = self.clone();
        tokio::spawn(async move {
            worker::run(this.clone(), handle, mine).await;
            this.pods.lock().unwrap().remove(&uid);
        });
    }

    /// After the first full list: containers and sandboxes of pods that are
    /// no longer bound here (deleted while the agent was down) are removed.
    async fn collect_orphans(&self, known: &[String], adopted: &[ContainerStatus]) {
        for c in adopted {
            let Some(id) = InstanceId::parse(&c.id) else {
                continue;
            };
            if !known.contains(&id.uid) {
                tracing::info!(container = %c.id, "removing the container of a pod that is gone");
                let _ = self.runtime.remove(&c.id).await;
                container::cleanup_instance(&self.cfg, &c.id);
            }
        }
        for uid in self.network.sandboxes() {
            if !known.contains(&uid) {
                let _ = self.network.teardown(&uid).await;
                volumes::cleanup_pod(&self.cfg, &uid);
                status::remove_pod_cgroups(&uid);
            }
        }
    }

    fn find(&self, namespace: &str, pod: &str) -> Result<PodView, LookupError> {
        let pods = self.pods.lock().unwrap();
        pods.values()
            .map(|h| h.view.lock().unwrap().clone())
            .find(|v| v.namespace == namespace && v.name == pod)
            .ok_or_else(|| {
                LookupError::NotFound(format!("pod {namespace}/{pod} is not running on this node"))
            })
    }
}

impl Pods for Kubelet {
    fn container(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<ContainerRef, LookupError> {
        let view = self.find(namespace, pod)?;
        let name = if container.is_empty() {
            if let Some(d) = &view.default_container {
                d.clone()
            } else if view.containers.len() == 1 {
                view.containers[0].0.clone()
            } else {
                let names: Vec<&str> = view.containers.iter().map(|c| c.0.as_str()).collect();
                return Err(LookupError::BadRequest(format!(
                    "a container name must be specified for pod {pod}, choose one of: [{}]",
                    names.join(" ")
                )));
            }
        } else {
            container.to_string()
        };
        view.containers
            .iter()
            .find(|c| c.0 == name)
            .map(|c| c.1.clone())
            .ok_or_else(|| {
                LookupError::BadRequest(format!("container {name} is not valid for pod {pod}"))
            })
    }

    fn netns(&self, namespace: &str, pod: &str) -> Result<PathBuf, LookupError> {
        self.find(namespace, pod)?.netns.ok_or_else(|| {
            LookupError::BadRequest(format!("pod {pod} has no network namespace yet"))
        })
    }

    fn stats_pods(&self) -> Vec<super::streaming::stats::PodStatsRef> {
        let pods = self.pods.lock().unwrap();
        let stats_ref = |h: &Arc<PodHandle>| {
            let v = h.view.lock().unwrap();
            let running = v.containers.iter().filter(|c| c.1.running);
            super::streaming::stats::PodStatsRef {
                namespace: v.namespace.clone(),
                name: v.name.clone(),
                uid: h.uid.clone(),
                containers: running.map(|(n, c)| (n.clone(), c.id.clone())).collect(),
            }
        };
        pods.values().map(stats_ref).collect()
    }

    fn node_name(&self) -> String {
        self.cfg.node_name.clone()
    }
}

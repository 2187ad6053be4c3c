//! The scheduler's writes, each in its own task so the scheduling loop
//! never waits on the API: bindings (many in flight), pod status updates,
//! preemption of victims, and Events.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use super::Msg;
use super::model::{DEFAULT_SCHEDULER, PodInfo};

/// Bindings in flight at once: enough to keep the store's group commit
/// full, bounded so a burst of pods cannot queue unbounded work.
const BIND_CONCURRENCY: usize = 512;
/// Status patches and deletions in flight at once.
const WRITE_CONCURRENCY: usize = 128;
/// Events in flight at once. Events are informational: like upstream's
/// asynchronous event broadcaster they trail behind, so that during a burst
/// the store's write capacity goes to bindings first.
const EVENT_CONCURRENCY: usize = 16;

#[derive(Clone)]
pub struct Actions {
    client: Client,
    reporter: Reporter,
    binds: Arc<Semaphore>,
    writes: Arc<Semaphore>,
    events: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Msg>,
}

pub fn pod_ref(p: &PodInfo) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(p.name.clone()),
        namespace: Some(p.namespace.clone()),
        uid: Some(p.uid.clone()),
        ..Default::default()
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl Actions {
    pub fn new(client: Client, identity: &str, tx: mpsc::UnboundedSender<Msg>) -> Actions {
        Actions {
            client,
            reporter: Reporter {
                controller: DEFAULT_SCHEDULER.into(),
                instance: Some(identity.to_string()),
            },
            binds: Arc::new(Semaphore::new(BIND_CONCURRENCY)),
            writes: Arc::new(Semaphore::new(WRITE_CONCURRENCY)),
            events: Arc::new(Semaphore::new(EVENT_CONCURRENCY)),
            tx,
        }
    }

    pub fn recorder(&self) -> Recorder {
        Recorder::new(self.client.clone(), self.reporter.clone())
    }

    fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// POST pods/binding; reports the outcome to the loop, then records the
    /// `Scheduled` event.
    pub fn bind(&self, pod: Arc<PodInfo>, node: String) {
        let this = self.clone();
        tokio::spawn(async move {
            let permit = this.binds.clone().acquire_owned().await;
            let body = json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            });
            let res = this
                .pods(&pod.namespace)
                .create_subresource::<Value, Value>(
                    "binding",
                    &pod.name,
                    &PostParams::default(),
                    &body,
                )
                .await;
            drop(permit);
            let err = res.err().map(|e| e.to_string());
            let ok = err.is_none();
            let _ = this.tx.send(Msg::Bound {
                key: pod.key.clone(),
                uid: pod.uid.clone(),
                err,
            });
            if ok {
                let note = format!(
                    "Successfully assigned {}/{} to {node}",
                    pod.namespace, pod.name
                );
                this.publish_now(
                    &this.recorder(),
                    &pod,
                    EventType::Normal,
                    "Scheduled",
                    "Binding",
                    note,
                    None,
                )
                .await;
            }
        });
    }

    #[allow(clippy::too_many_arguments)]
    async fn publish_now(
        &self,
        recorder: &Recorder,
        pod: &PodInfo,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
        related: Option<ObjectReference>,
    ) {
        let _permit = self.events.acquire().await;
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: related,
        };
        if let Err(e) = recorder.publish(&ev, &pod_ref(pod)).await {
            tracing::debug!(pod = %pod.key, "recording {reason} event: {e}");
        }
    }

    /// Records an event in the background.
    pub fn event(
        &self,
        recorder: Recorder,
        pod: Arc<PodInfo>,
        warning: bool,
        reason: &'static str,
        action: &'static str,
        note: String,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let t = if warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            this.publish_now(&recorder, &pod, t, reason, action, note, None)
                .await;
        });
    }

    /// Strategic-merge patch of the pod's status (conditions merge by type).
    pub fn patch_status(&self, pod: &PodInfo, status: Value) {
        let this = self.clone();
        let (ns, name) = (pod.namespace.clone(), pod.name.clone());
        tokio::spawn(async move {
            let _permit = this.writes.acquire().await;
            let res = this
                .pods(&ns)
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Strategic(json!({ "status": status })),
                )
                .await;
            if let Err(e) = res {
                tracing::debug!(pod = %format!("{ns}/{name}"), "updating status: {e}");
            }
        });
    }

    /// Marks the pod PodScheduled=False with `reason`/`message`, and sets or
    /// clears status.nominatedNodeName.
    pub fn set_unschedulable(
        &self,
        pod: &PodInfo,
        reason: &str,
        message: &str,
        nominated: Option<Option<String>>,
    ) {
        let mut cond = json!({"type": "PodScheduled", "status": "False", "reason": reason,
            "message": message, "lastProbeTime": null});
        if pod
            .scheduled_cond
            .as_ref()
            .is_none_or(|(status, _, _)| status != "False")
        {
            cond["lastTransitionTime"] = json!(now_rfc3339());
        }
        let mut status = json!({"conditions": [cond]});
        if let Some(n) = nominated {
            status["nominatedNodeName"] = json!(n);
        }
        self.patch_status(pod, status);
    }

    /// Evicts a preemption victim as upstream does: a DisruptionTarget
    /// condition, a graceful delete (UID precondition), a `Preempted` event.
    pub fn preempt_victim(&self, victim: Arc<PodInfo>, preemptor: Arc<PodInfo>, node: String) {
        let this = self.clone();
        tokio::spawn(async move {
            let api = this.pods(&victim.namespace);
            {
                let _permit = this.writes.acquire().await;
                let cond = json!({"status": {"conditions": [{
                    "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                    "message": format!("{DEFAULT_SCHEDULER}: preempting to accommodate a higher priority pod"),
                    "lastTransitionTime": now_rfc3339()}]}});
                if let Err(e) = api
                    .patch_status(
                        &victim.name,
                        &PatchParams::default(),
                        &Patch::Strategic(cond),
                    )
                    .await
                {
                    tracing::debug!(pod = %victim.key, "marking preemption victim: {e}");
                }
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(victim.uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match api.delete(&victim.name, &dp).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                    Err(e) => tracing::warn!(pod = %victim.key, "deleting preemption victim: {e}"),
                }
            }
            let note = format!("Preempted by pod {} on node {node}", preemptor.uid);
            this.publish_now(
                &this.recorder(),
                &victim,
                EventType::Normal,
                "Preempted",
                "Preempting",
                note,
                Some(pod_ref(&preemptor)),
            )
            .await;
        });
    }
}

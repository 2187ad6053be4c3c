//! The ReplicationController controller. Upstream runs the ReplicaSet
//! controller's code on ReplicationControllers through a conversion layer;
//! here the shared code is generic (`replicaset::Manager`) and this module
//! only says how a core/v1 ReplicationController maps onto it. It is
//! started by `replicaset::run`, on the same pod subscription.

use k8s_openapi::api::core::v1::{PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::replicaset::{OwnerCondition, ReplicaOwner, ReplicaStatus};

impl ReplicaOwner for ReplicationController {
    const CONTROLLER: &'static str = "replication-controller";

    /// The equality-based selector; an empty one defaults to the template's
    /// labels, as the API server's defaulting does upstream.
    fn selector(&self) -> Option<LabelSelector> {
        let spec = self.spec.as_ref()?;
        let labels = match &spec.selector {
            Some(s) if !s.is_empty() => s.clone(),
            _ => spec
                .template
                .as_ref()
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.labels.clone())
                .filter(|l| !l.is_empty())?,
        };
        Some(LabelSelector {
            match_labels: Some(labels),
            match_expressions: None,
        })
    }

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }

    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }

    fn current_status(&self) -> ReplicaStatus {
        let Some(s) = &self.status else {
            return ReplicaStatus::default();
        };
        ReplicaStatus {
            replicas: s.replicas,
            fully_labeled: s.fully_labeled_replicas.unwrap_or(0),
            ready: s.ready_replicas.unwrap_or(0),
            available: s.available_replicas.unwrap_or(0),
            observed_generation: s.observed_generation.unwrap_or(0),
            conditions: s
                .conditions
                .iter()
                .flatten()
                .map(|c| OwnerCondition {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    last_transition_time: c.last_transition_time.clone(),
                })
                .collect(),
        }
    }
}

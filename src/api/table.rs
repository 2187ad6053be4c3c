//! Server-side Table conversion (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`).
//!
//! kubectl `get` prints whatever cells the server returns, so this mirrors kube-apiserver v1.33:
//! the per-kind printers of `pkg/printers/internalversion/printers.go`, the CRD
//! `additionalPrinterColumns` convertor (apiextensions `tableconvertor`), the APIService convertor
//! (kube-aggregator) and the generic `Name`/`Created At` fallback (`rest.DefaultTableConvertor`).
//!
//! The apiserver always generates the wide variant (`GenerateOptions{Wide: true}`); kubectl hides
//! `priority: 1` columns unless `-o wide`, so [`cells`] always returns every column's cell.
//!
//! Objects arrive as user-supplied JSON in their served version, not upstream's defaulted internal
//! form, so where upstream API defaulting always fills a field the printer reads (e.g. Deployment
//! `replicas`, Service `type`, Secret `type`) the default is applied here so the cell matches what
//! upstream would print. Everything is total: malformed input yields odd cells, never a panic.
//!
//! Custom resources: pass the served version's `additionalPrinterColumns` (`Some(&[])` when it has
//! none); a kind outside the built-in API groups given `None` is treated the same way.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/// The `columnDefinitions` of a Table for `group`/`kind` (`crd_columns`: the served CRD version's
/// `additionalPrinterColumns`, `Some` for custom resources).
// `columns` and `cells` serve callers that assemble rows themselves; only `table` is wired up
// in the binary today.
#[allow(dead_code)]
pub fn columns(group: &str, kind: &str, crd_columns: Option<&[Value]>) -> Vec<Value> {
    Printer::new(group, kind, crd_columns).columns()
}

/// One row's cells for `obj`, one per entry of [`columns`] (wide columns included).
#[allow(dead_code)]
pub fn cells(
    group: &str,
    kind: &str,
    obj: &Value,
    crd_columns: Option<&[Value]>,
    now: DateTime<Utc>,
) -> Vec<Value> {
    Printer::new(group, kind, crd_columns).cells(group, obj, now)
}

/// A complete `meta.k8s.io/v1` Table. Each row's `object` is a `PartialObjectMetadata` carrying the
/// object's full metadata, which kubectl needs for `NAMESPACE` (`-A`), `--show-labels` and `-L`.
/// `include_columns: false` yields `"columnDefinitions": []` (watch events after the first).
#[allow(clippy::too_many_arguments)]
pub fn table(
    group: &str,
    kind: &str,
    objs: &[&Value],
    crd_columns: Option<&[Value]>,
    now: DateTime<Utc>,
    include_columns: bool,
    resource_version: &str,
    continue_token: Option<&str>,
    remaining: Option<i64>,
) -> Value {
    let printer = Printer::new(group, kind, crd_columns);

    let mut metadata = Map::new();
    if !resource_version.is_empty() {
        metadata.insert("resourceVersion".into(), json!(resource_version));
    }
    if let Some(token) = continue_token.filter(|t| !t.is_empty()) {
        metadata.insert("continue".into(), json!(token));
    }
    if let Some(remaining) = remaining {
        metadata.insert("remainingItemCount".into(), json!(remaining));
    }

    let mut ordered: Vec<&Value> = objs.to_vec();
    if matches!(printer, Printer::Builtin(K::FlowSchema)) {
        // printFlowSchemaList sorts by matching precedence, then name.
        ordered.sort_by(|a, b| {
            let pa = int(a, &["spec", "matchingPrecedence"]);
            let pb = int(b, &["spec", "matchingPrecedence"]);
            pa.cmp(&pb).then_with(|| name(a).cmp(name(b)))
        });
    }

    let rows: Vec<Value> = ordered
        .iter()
        .map(|obj| {
            let mut row = Map::new();
            row.insert("cells".into(), Value::Array(printer.cells(group, obj, now)));
            if let Some(conditions) = printer.row_conditions(obj) {
                row.insert("conditions".into(), conditions);
            }
            let meta = at(obj, &["metadata"])
                .filter(|m| m.is_object())
                .cloned()
                .unwrap_or_else(|| json!({}));
            row.insert(
                "object".into(),
                json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": meta,
                }),
            );
            Value::Object(row)
        })
        .collect();

    let column_definitions = if include_columns {
        printer.columns()
    } else {
        Vec::new()
    };

    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": column_definitions,
        "rows": rows,
    })
}

/// `k8s.io/apimachinery/pkg/util/duration.HumanDuration`: ~2-3 significant figures.
pub fn human_duration(d: Duration) -> String {
    // Go's time.Duration is int64 nanoseconds and time.Sub saturates, so clamp the same way.
    let nanos = d.num_nanoseconds().unwrap_or(if d < Duration::zero() {
        i64::MIN
    } else {
        i64::MAX
    });
    const SEC: i64 = 1_000_000_000;
    const MIN: i64 = 60 * SEC;
    const HOUR: i64 = 60 * MIN;
    // int(d.Seconds()) truncates toward zero; up to 2s of clock skew still reads as "0s".
    let seconds = nanos / SEC;
    if seconds < -1 {
        return "<invalid>".into();
    } else if seconds < 0 {
        return "0s".into();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = nanos / MIN;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = nanos / HOUR;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        return format!("{hours}h{m}m");
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        return format!("{}d{}h", hours / 24, h);
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        return format!("{}y{}d", hours / 24 / 365, dy);
    }
    format!("{}y", hours / 24 / 365)
}

// ---------------------------------------------------------------------------------------------
// Printer selection
// ---------------------------------------------------------------------------------------------

/// Kinds with an upstream printer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum K {
    Pod,
    PodTemplate,
    PodDisruptionBudget,
    ReplicationController,
    ReplicaSet,
    DaemonSet,
    Job,
    CronJob,
    Service,
    Ingress,
    IngressClass,
    StatefulSet,
    Endpoints,
    Node,
    Event,
    Namespace,
    Secret,
    ServiceAccount,
    PersistentVolume,
    PersistentVolumeClaim,
    ComponentStatus,
    Deployment,
    HorizontalPodAutoscaler,
    ConfigMap,
    NetworkPolicy,
    RoleBinding,
    ClusterRoleBinding,
    CertificateSigningRequest,
    ClusterTrustBundle,
    Lease,
    LeaseCandidate,
    StorageClass,
    VolumeAttributesClass,
    ControllerRevision,
    ResourceQuota,
    PriorityClass,
    RuntimeClass,
    VolumeAttachment,
    EndpointSlice,
    CsiNode,
    CsiDriver,
    CsiStorageCapacity,
    MutatingWebhookConfiguration,
    ValidatingWebhookConfiguration,
    ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding,
    MutatingAdmissionPolicy,
    MutatingAdmissionPolicyBinding,
    FlowSchema,
    PriorityLevelConfiguration,
    StorageVersion,
    DeviceClass,
    ResourceClaim,
    ResourceClaimTemplate,
    ResourceSlice,
    ServiceCidr,
    IpAddress,
    StorageVersionMigration,
    ApiService,
}

fn builtin_kind(group: &str, kind: &str) -> Option<K> {
    use K::*;
    Some(match (group, kind) {
        ("", "Pod") => Pod,
        ("", "PodTemplate") => PodTemplate,
        ("", "ReplicationController") => ReplicationController,
        ("", "Service") => Service,
        ("", "Endpoints") => Endpoints,
        ("", "Node") => Node,
        ("", "Event") | ("events.k8s.io", "Event") => Event,
        ("", "Namespace") => Namespace,
        ("", "Secret") => Secret,
        ("", "ServiceAccount") => ServiceAccount,
        ("", "PersistentVolume") => PersistentVolume,
        ("", "PersistentVolumeClaim") => PersistentVolumeClaim,
        ("", "ComponentStatus") => ComponentStatus,
        ("", "ConfigMap") => ConfigMap,
        ("", "ResourceQuota") => ResourceQuota,
        ("apps", "ReplicaSet") => ReplicaSet,
        ("apps", "DaemonSet") => DaemonSet,
        ("apps", "StatefulSet") => StatefulSet,
        ("apps", "Deployment") => Deployment,
        ("apps", "ControllerRevision") => ControllerRevision,
        ("batch", "Job") => Job,
        ("batch", "CronJob") => CronJob,
        ("autoscaling", "HorizontalPodAutoscaler") => HorizontalPodAutoscaler,
        ("policy", "PodDisruptionBudget") => PodDisruptionBudget,
        ("networking.k8s.io", "Ingress") => Ingress,
        ("networking.k8s.io", "IngressClass") => IngressClass,
        ("networking.k8s.io", "NetworkPolicy") => NetworkPolicy,
        ("networking.k8s.io", "ServiceCIDR") => ServiceCidr,
        ("networking.k8s.io", "IPAddress") => IpAddress,
        ("rbac.authorization.k8s.io", "RoleBinding") => RoleBinding,
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => ClusterRoleBinding,
        ("certificates.k8s.io", "CertificateSigningRequest") => CertificateSigningRequest,
        ("certificates.k8s.io", "ClusterTrustBundle") => ClusterTrustBundle,
        ("coordination.k8s.io", "Lease") => Lease,
        ("coordination.k8s.io", "LeaseCandidate") => LeaseCandidate,
        ("storage.k8s.io", "StorageClass") => StorageClass,
        ("storage.k8s.io", "VolumeAttributesClass") => VolumeAttributesClass,
        ("storage.k8s.io", "VolumeAttachment") => VolumeAttachment,
        ("storage.k8s.io", "CSINode") => CsiNode,
        ("storage.k8s.io", "CSIDriver") => CsiDriver,
        ("storage.k8s.io", "CSIStorageCapacity") => CsiStorageCapacity,
        ("scheduling.k8s.io", "PriorityClass") => PriorityClass,
        ("node.k8s.io", "RuntimeClass") => RuntimeClass,
        ("discovery.k8s.io", "EndpointSlice") => EndpointSlice,
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => {
            MutatingWebhookConfiguration
        }
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => {
            ValidatingWebhookConfiguration
        }
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => ValidatingAdmissionPolicy,
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding") => {
            ValidatingAdmissionPolicyBinding
        }
        ("admissionregistration.k8s.io", "MutatingAdmissionPolicy") => MutatingAdmissionPolicy,
        ("admissionregistration.k8s.io", "MutatingAdmissionPolicyBinding") => {
            MutatingAdmissionPolicyBinding
        }
        ("flowcontrol.apiserver.k8s.io", "FlowSchema") => FlowSchema,
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration") => {
            PriorityLevelConfiguration
        }
        ("internal.apiserver.k8s.io", "StorageVersion") => StorageVersion,
        ("resource.k8s.io", "DeviceClass") => DeviceClass,
        ("resource.k8s.io", "ResourceClaim") => ResourceClaim,
        ("resource.k8s.io", "ResourceClaimTemplate") => ResourceClaimTemplate,
        ("resource.k8s.io", "ResourceSlice") => ResourceSlice,
        ("storagemigration.k8s.io", "StorageVersionMigration") => StorageVersionMigration,
        ("apiregistration.k8s.io", "APIService") => ApiService,
        _ => return None,
    })
}

/// API groups served by kube-apiserver itself (v1.33); anything else is a custom resource.
const BUILTIN_GROUPS: &[&str] = &[
    "",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "storagemigration.k8s.io",
];

/// One CRD `additionalPrinterColumns` entry, with its JSONPath parsed once per table.
struct CrdColumn {
    name: String,
    ty: String,
    format: String,
    description: String,
    priority: i64,
    /// `None` when the path does not parse: the column then prints empty cells.
    path: Option<Vec<Step>>,
}

enum Printer {
    Builtin(K),
    Crd(Vec<CrdColumn>),
    /// `rest.DefaultTableConvertor`: Name + Created At.
    Default,
}

impl Printer {
    fn new(group: &str, kind: &str, crd_columns: Option<&[Value]>) -> Printer {
        if let Some(cols) = crd_columns {
            return Printer::Crd(crd_columns_parsed(cols));
        }
        match builtin_kind(group, kind) {
            Some(k) => Printer::Builtin(k),
            // A kind outside the built-in groups is a custom resource: with no printer columns
            // given, the CRD convertor's default (Name, Age) applies, not Name/Created At.
            None if !BUILTIN_GROUPS.contains(&group) => Printer::Crd(crd_columns_parsed(&[])),
            None => Printer::Default,
        }
    }

    fn columns(&self) -> Vec<Value> {
        match self {
            Printer::Builtin(k) => kind_columns(*k).iter().copied().map(Col::to_json).collect(),
            Printer::Default => [NAME, CREATED_AT]
                .iter()
                .copied()
                .map(Col::to_json)
                .collect(),
            Printer::Crd(cols) => {
                let mut out = vec![NAME.to_json()];
                out.extend(cols.iter().map(|c| {
                    json!({
                        "name": c.name,
                        "type": c.ty,
                        "format": c.format,
                        "description": c.description,
                        "priority": c.priority,
                    })
                }));
                out
            }
        }
    }

    fn cells(&self, group: &str, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        match self {
            Printer::Builtin(k) => builtin_cells(*k, group, obj, now),
            Printer::Crd(cols) => crd_cells(cols, obj, now),
            Printer::Default => vec![json!(name(obj)), json!(created_at_rfc3339(obj))],
        }
    }

    /// Pods that ran to completion carry a `Completed` row condition (podSuccessConditions /
    /// podFailedConditions).
    fn row_conditions(&self, obj: &Value) -> Option<Value> {
        if !matches!(self, Printer::Builtin(K::Pod)) {
            return None;
        }
        let (reason, message) = match st(obj, &["status", "phase"]) {
            "Succeeded" => ("Succeeded", "The pod has completed successfully."),
            "Failed" => ("Failed", "The pod failed."),
            _ => return None,
        };
        Some(json!([{
            "type": "Completed",
            "status": "True",
            "reason": reason,
            "message": message,
        }]))
    }
}

// ---------------------------------------------------------------------------------------------
// Column definitions (AddHandlers)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Col {
    name: &'static str,
    ty: &'static str,
    format: &'static str,
    desc: &'static str,
    priority: i64,
}

impl Col {
    fn to_json(self) -> Value {
        json!({
            "name": self.name,
            "type": self.ty,
            "format": self.format,
            "description": self.desc,
            "priority": self.priority,
        })
    }
}

const fn c(name: &'static str, ty: &'static str, desc: &'static str) -> Col {
    Col {
        name,
        ty,
        format: "",
        desc,
        priority: 0,
    }
}

/// A `priority: 1` column, shown only with `-o wide`.
const fn w(name: &'static str, ty: &'static str, desc: &'static str) -> Col {
    Col {
        name,
        ty,
        format: "",
        desc,
        priority: 1,
    }
}

const fn s(name: &'static str, desc: &'static str) -> Col {
    c(name, "string", desc)
}

const fn ws(name: &'static str, desc: &'static str) -> Col {
    w(name, "string", desc)
}

const NAME: Col = Col {
    name: "Name",
    ty: "string",
    format: "name",
    desc: D_META_NAME,
    priority: 0,
};
const AGE: Col = s("Age", D_META_CREATED);
const CREATED_AT: Col = c("Created At", "date", D_META_CREATED);
const CONTAINERS: Col = ws("Containers", "Names of each container in the template.");
const IMAGES: Col = ws(
    "Images",
    "Images referenced by each container in the template.",
);
const READY_PODS: &str = "Number of the pod with ready state";
const WEBHOOKS: Col = c(
    "Webhooks",
    "integer",
    "Webhooks indicates the number of webhooks registered in this configuration",
);
const PARAM_KIND: Col = s(
    "ParamKind",
    "ParamKind specifies the kind of resources used to parameterize this policy",
);
const POLICY_NAME: Col = s(
    "PolicyName",
    "PolicyName indicates the policy definition which the policy binding binded to",
);
const PARAM_REF: Col = s(
    "ParamRef",
    "ParamRef indicates the param resource which sets the configration param",
);

fn kind_columns(k: K) -> &'static [Col] {
    match k {
        K::Pod => {
            const {
                &[
                    NAME,
                    s(
                        "Ready",
                        "The aggregate readiness state of this pod for accepting traffic.",
                    ),
                    s(
                        "Status",
                        "The aggregate status of the containers in this pod.",
                    ),
                    s(
                        "Restarts",
                        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
                    ),
                    AGE,
                    ws("IP", D_POD_IP),
                    ws("Node", D_POD_NODE),
                    ws("Nominated Node", D_POD_NOMINATED),
                    ws("Readiness Gates", D_POD_GATES),
                ]
            }
        }
        K::PodTemplate => {
            const {
                &[
                    NAME,
                    s("Containers", "Names of each container in the template."),
                    s(
                        "Images",
                        "Images referenced by each container in the template.",
                    ),
                    s("Pod Labels", "The labels for the pod template."),
                ]
            }
        }
        K::PodDisruptionBudget => {
            const {
                &[
                    NAME,
                    s(
                        "Min Available",
                        "The minimum number of pods that must be available.",
                    ),
                    s(
                        "Max Unavailable",
                        "The maximum number of pods that may be unavailable.",
                    ),
                    c(
                        "Allowed Disruptions",
                        "integer",
                        "Calculated number of pods that may be disrupted at this time.",
                    ),
                    AGE,
                ]
            }
        }
        K::ReplicationController => {
            const {
                &[
                    NAME,
                    c("Desired", "integer", D_RC_SPEC_REPLICAS),
                    c("Current", "integer", D_RC_STATUS_REPLICAS),
                    c("Ready", "integer", D_RC_READY),
                    AGE,
                    CONTAINERS,
                    IMAGES,
                    ws("Selector", D_RC_SELECTOR),
                ]
            }
        }
        K::ReplicaSet => {
            const {
                &[
                    NAME,
                    c("Desired", "integer", D_RS_SPEC_REPLICAS),
                    c("Current", "integer", D_RS_STATUS_REPLICAS),
                    c("Ready", "integer", D_RS_READY),
                    AGE,
                    CONTAINERS,
                    IMAGES,
                    ws("Selector", D_RS_SELECTOR),
                ]
            }
        }
        K::DaemonSet => {
            const {
                &[
                    NAME,
                    c("Desired", "integer", D_DS_DESIRED),
                    c("Current", "integer", D_DS_CURRENT),
                    c("Ready", "integer", D_DS_READY),
                    c("Up-to-date", "integer", D_DS_UPDATED),
                    c("Available", "integer", D_DS_AVAILABLE),
                    s("Node Selector", D_POD_NODE_SELECTOR),
                    AGE,
                    CONTAINERS,
                    IMAGES,
                    ws("Selector", D_DS_SELECTOR),
                ]
            }
        }
        K::Job => {
            const {
                &[
                    NAME,
                    s("Status", "Status of the job."),
                    s("Completions", D_JOB_SUCCEEDED),
                    s("Duration", "Time required to complete the job."),
                    AGE,
                    CONTAINERS,
                    IMAGES,
                    ws("Selector", D_JOB_SELECTOR),
                ]
            }
        }
        K::CronJob => {
            const {
                &[
                    NAME,
                    s("Schedule", D_CJ_SCHEDULE),
                    s("Timezone", D_CJ_TZ),
                    c("Suspend", "boolean", D_CJ_SUSPEND),
                    c("Active", "integer", D_CJ_ACTIVE),
                    s("Last Schedule", D_CJ_LAST),
                    AGE,
                    CONTAINERS,
                    IMAGES,
                    ws("Selector", D_JOB_SELECTOR),
                ]
            }
        }
        K::Service => {
            const {
                &[
                    NAME,
                    s("Type", D_SVC_TYPE),
                    s("Cluster-IP", D_SVC_CLUSTER_IP),
                    s("External-IP", D_SVC_EXTERNAL_IPS),
                    s("Port(s)", D_SVC_PORTS),
                    AGE,
                    ws("Selector", D_SVC_SELECTOR),
                ]
            }
        }
        K::Ingress => {
            const {
                &[
                    NAME,
                    s(
                        "Class",
                        "The name of the IngressClass resource that should be used for additional configuration",
                    ),
                    s(
                        "Hosts",
                        "Hosts that incoming requests are matched against before the ingress rule",
                    ),
                    s(
                        "Address",
                        "Address is a list containing ingress points for the load-balancer",
                    ),
                    s("Ports", "Ports of TLS configurations that open"),
                    AGE,
                ]
            }
        }
        K::IngressClass => {
            const {
                &[
                    NAME,
                    s(
                        "Controller",
                        "Controller that is responsible for handling this class",
                    ),
                    s(
                        "Parameters",
                        "A reference to a resource with additional parameters",
                    ),
                    AGE,
                ]
            }
        }
        K::StatefulSet => const { &[NAME, s("Ready", READY_PODS), AGE, CONTAINERS, IMAGES] },
        K::Endpoints => const { &[NAME, s("Endpoints", D_EP_SUBSETS), AGE] },
        K::Node => {
            const {
                &[
                    NAME,
                    s("Status", "The status of the node"),
                    s("Roles", "The roles of the node"),
                    AGE,
                    s("Version", D_NODE_KUBELET),
                    ws("Internal-IP", D_NODE_ADDRESSES),
                    ws("External-IP", D_NODE_ADDRESSES),
                    ws("OS-Image", D_NODE_OS),
                    ws("Kernel-Version", D_NODE_KERNEL),
                    ws("Container-Runtime", D_NODE_CRI),
                ]
            }
        }
        K::Event => {
            const {
                &[
                    s("Last Seen", D_EV_LAST),
                    s("Type", D_EV_TYPE),
                    s("Reason", D_EV_REASON),
                    s("Object", D_EV_OBJECT),
                    ws("Subobject", D_EV_FIELDPATH),
                    ws("Source", D_EV_SOURCE),
                    s("Message", D_EV_MESSAGE),
                    ws("First Seen", D_EV_FIRST),
                    ws("Count", D_EV_COUNT),
                    Col {
                        priority: 1,
                        ..NAME
                    },
                ]
            }
        }
        K::Namespace => const { &[NAME, s("Status", "The status of the namespace"), AGE] },
        K::Secret => {
            const {
                &[
                    NAME,
                    s("Type", D_SECRET_TYPE),
                    s("Data", D_SECRET_DATA),
                    AGE,
                ]
            }
        }
        K::ServiceAccount => const { &[NAME, s("Secrets", D_SA_SECRETS), AGE] },
        K::PersistentVolume => {
            const {
                &[
                    NAME,
                    s("Capacity", D_PV_CAPACITY),
                    s("Access Modes", D_PV_MODES),
                    s("Reclaim Policy", D_PV_RECLAIM),
                    s("Status", D_PV_PHASE),
                    s("Claim", D_PV_CLAIM),
                    s("StorageClass", "StorageClass of the pv"),
                    s("VolumeAttributesClass", "VolumeAttributesClass of the pv"),
                    s("Reason", D_PV_REASON),
                    AGE,
                    ws("VolumeMode", D_PV_MODE),
                ]
            }
        }
        K::PersistentVolumeClaim => {
            const {
                &[
                    NAME,
                    s("Status", D_PVC_PHASE),
                    s("Volume", D_PVC_VOLUME),
                    s("Capacity", D_PVC_CAPACITY),
                    s("Access Modes", D_PVC_MODES),
                    s("StorageClass", "StorageClass of the pvc"),
                    s("VolumeAttributesClass", "VolumeAttributesClass of the pvc"),
                    AGE,
                    ws("VolumeMode", D_PVC_MODE),
                ]
            }
        }
        K::ComponentStatus => {
            const {
                &[
                    NAME,
                    s("Status", "Status of the component conditions"),
                    s("Message", "Message of the component conditions"),
                    s("Error", "Error of the component conditions"),
                ]
            }
        }
        K::Deployment => {
            const {
                &[
                    NAME,
                    s("Ready", READY_PODS),
                    s("Up-to-date", D_DEP_UPDATED),
                    s("Available", D_DEP_AVAILABLE),
                    AGE,
                    CONTAINERS,
                    IMAGES,
                    ws("Selector", D_DEP_SELECTOR),
                ]
            }
        }
        K::HorizontalPodAutoscaler => {
            const {
                &[
                    NAME,
                    s("Reference", D_HPA_REF),
                    s("Targets", D_HPA_METRICS),
                    s("MinPods", D_HPA_MIN),
                    s("MaxPods", D_HPA_MAX),
                    s("Replicas", D_HPA_CURRENT),
                    AGE,
                ]
            }
        }
        K::ConfigMap => const { &[NAME, s("Data", D_CM_DATA), AGE] },
        K::NetworkPolicy => const { &[NAME, s("Pod-Selector", D_NP_PODSELECTOR), AGE] },
        K::RoleBinding => {
            const {
                &[
                    NAME,
                    s("Role", D_RB_ROLEREF),
                    AGE,
                    ws("Users", "Users in the roleBinding"),
                    ws("Groups", "Groups in the roleBinding"),
                    ws("ServiceAccounts", "ServiceAccounts in the roleBinding"),
                ]
            }
        }
        K::ClusterRoleBinding => {
            const {
                &[
                    NAME,
                    s("Role", D_CRB_ROLEREF),
                    AGE,
                    ws("Users", "Users in the clusterRoleBinding"),
                    ws("Groups", "Groups in the clusterRoleBinding"),
                    ws(
                        "ServiceAccounts",
                        "ServiceAccounts in the clusterRoleBinding",
                    ),
                ]
            }
        }
        K::CertificateSigningRequest => {
            const {
                &[
                    NAME,
                    AGE,
                    s("SignerName", D_CSR_SIGNER),
                    s("Requestor", D_CSR_REQUEST),
                    s("RequestedDuration", D_CSR_EXPIRATION),
                    s("Condition", D_CSR_CONDITIONS),
                ]
            }
        }
        K::ClusterTrustBundle => const { &[NAME, s("SignerName", D_CTB_SIGNER)] },
        K::Lease => const { &[NAME, s("Holder", D_LEASE_HOLDER), AGE] },
        K::LeaseCandidate => {
            const {
                &[
                    NAME,
                    s("LeaseName", D_LC_LEASENAME),
                    // Upstream looks these up in ObjectMeta's swagger docs, where they do not exist.
                    s("BinaryVersion", ""),
                    s("EmulationVersion", ""),
                    AGE,
                ]
            }
        }
        K::StorageClass => {
            const {
                &[
                    NAME,
                    s("Provisioner", D_SC_PROVISIONER),
                    s("ReclaimPolicy", D_SC_RECLAIM),
                    s("VolumeBindingMode", D_SC_BINDING),
                    s("AllowVolumeExpansion", D_SC_EXPANSION),
                    AGE,
                ]
            }
        }
        K::VolumeAttributesClass => const { &[NAME, s("DriverName", D_VAC_DRIVER), AGE] },
        K::ControllerRevision => {
            const {
                &[
                    NAME,
                    s("Controller", "Controller of the object"),
                    s("Revision", D_CR_REVISION),
                    AGE,
                ]
            }
        }
        K::ResourceQuota => {
            const {
                &[
                    NAME,
                    s(
                        "Request",
                        "Request represents a minimum amount of cpu/memory that a container may consume.",
                    ),
                    s(
                        "Limit",
                        "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
                    ),
                    AGE,
                ]
            }
        }
        K::PriorityClass => {
            const {
                &[
                    NAME,
                    c("Value", "integer", D_PC_VALUE),
                    c("Global-Default", "boolean", D_PC_DEFAULT),
                    AGE,
                    s("PreemptionPolicy", D_PC_PREEMPTION),
                ]
            }
        }
        K::RuntimeClass => const { &[NAME, s("Handler", ""), AGE] },
        K::VolumeAttachment => {
            const {
                &[
                    NAME,
                    Col {
                        format: "name",
                        ..s("Attacher", D_VA_ATTACHER)
                    },
                    s("PV", D_VA_PV),
                    s("Node", D_VA_NODE),
                    c("Attached", "boolean", D_VA_ATTACHED),
                    AGE,
                ]
            }
        }
        K::EndpointSlice => {
            const {
                &[
                    NAME,
                    s("AddressType", D_ES_ADDRESSTYPE),
                    s("Ports", D_ES_PORTS),
                    s("Endpoints", D_ES_ENDPOINTS),
                    AGE,
                ]
            }
        }
        K::CsiNode => {
            const {
                &[
                    NAME,
                    c(
                        "Drivers",
                        "integer",
                        "Drivers indicates the number of CSI drivers registered on the node",
                    ),
                    AGE,
                ]
            }
        }
        K::CsiDriver => {
            const {
                &[
                    NAME,
                    c("AttachRequired", "boolean", D_CSID_ATTACH),
                    c("PodInfoOnMount", "boolean", D_CSID_PODINFO),
                    c("StorageCapacity", "boolean", D_CSID_CAPACITY),
                    s("TokenRequests", D_CSID_TOKENS),
                    c("RequiresRepublish", "boolean", D_CSID_REPUBLISH),
                    s("Modes", D_CSID_MODES),
                    AGE,
                ]
            }
        }
        K::CsiStorageCapacity => {
            const {
                &[
                    NAME,
                    s("StorageClassName", D_CSISC_CLASS),
                    s("Capacity", D_CSISC_CAPACITY),
                ]
            }
        }
        K::MutatingWebhookConfiguration | K::ValidatingWebhookConfiguration => {
            const { &[NAME, WEBHOOKS, AGE] }
        }
        K::ValidatingAdmissionPolicy => {
            const {
                &[
                    NAME,
                    c(
                        "Validations",
                        "integer",
                        "Validations indicates the number of validation rules defined in this configuration",
                    ),
                    PARAM_KIND,
                    AGE,
                ]
            }
        }
        K::MutatingAdmissionPolicy => {
            const {
                &[
                    NAME,
                    c(
                        "Mutations",
                        "integer",
                        "Mutation indicates the number of mutations rules defined in this configuration",
                    ),
                    PARAM_KIND,
                    AGE,
                ]
            }
        }
        K::ValidatingAdmissionPolicyBinding | K::MutatingAdmissionPolicyBinding => {
            const { &[NAME, POLICY_NAME, PARAM_REF, AGE] }
        }
        K::FlowSchema => {
            const {
                &[
                    NAME,
                    s("PriorityLevel", D_FS_PL),
                    s("MatchingPrecedence", D_FS_PRECEDENCE),
                    s("DistinguisherMethod", D_FS_DISTINGUISHER),
                    AGE,
                    s(
                        "MissingPL",
                        "references a broken or non-existent PriorityLevelConfiguration",
                    ),
                ]
            }
        }
        K::PriorityLevelConfiguration => {
            const {
                &[
                    NAME,
                    s("Type", D_PL_TYPE),
                    s("NominalConcurrencyShares", D_PL_SHARES),
                    s("Queues", D_PL_QUEUES),
                    s("HandSize", D_PL_HANDSIZE),
                    s("QueueLengthLimit", D_PL_QLL),
                    AGE,
                ]
            }
        }
        K::StorageVersion => {
            const {
                &[
                    NAME,
                    s("CommonEncodingVersion", D_SV_COMMON),
                    s("StorageVersions", D_SV_VERSIONS),
                    AGE,
                ]
            }
        }
        K::DeviceClass | K::ResourceClaimTemplate => const { &[NAME, AGE] },
        K::ResourceClaim => {
            const {
                &[
                    NAME,
                    s(
                        "State",
                        "A summary of the current state (allocated, pending, reserved, etc.).",
                    ),
                    AGE,
                ]
            }
        }
        K::ResourceSlice => {
            const {
                &[
                    NAME,
                    s("Node", D_RSL_NODE),
                    s("Driver", D_RSL_DRIVER),
                    s("Pool", D_RSL_POOL),
                    AGE,
                ]
            }
        }
        K::ServiceCidr => const { &[NAME, s("CIDRs", D_SCIDR_CIDRS), AGE] },
        K::IpAddress => const { &[NAME, s("ParentRef", D_IPA_PARENT)] },
        K::StorageVersionMigration => {
            const {
                &[
                    // Upstream gives this Name column no "name" format.
                    s("Name", D_META_NAME),
                    s("Resource", "Fully qualified resource to migrate"),
                ]
            }
        }
        K::ApiService => {
            const {
                &[
                    NAME,
                    s(
                        "Service",
                        "The reference to the service that hosts this API endpoint.",
                    ),
                    s("Available", "Whether this service is available."),
                    AGE,
                ]
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cells for built-in kinds
// ---------------------------------------------------------------------------------------------

fn builtin_cells(k: K, group: &str, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let n = json!(name(obj));
    let age = json!(age(obj, now));
    match k {
        K::Pod => pod_cells(obj, now),
        K::PodTemplate => {
            let (names, images) = layout_containers(list(obj, &["template", "spec", "containers"]));
            vec![
                n,
                json!(names),
                json!(images),
                json!(format_labels(at(obj, &["template", "metadata", "labels"]))),
            ]
        }
        K::PodDisruptionBudget => vec![
            n,
            json!(int_or_string(at(obj, &["spec", "minAvailable"]))),
            json!(int_or_string(at(obj, &["spec", "maxUnavailable"]))),
            json!(int(obj, &["status", "disruptionsAllowed"])),
            age,
        ],
        K::ReplicationController => {
            let (names, images) =
                layout_containers(list(obj, &["spec", "template", "spec", "containers"]));
            vec![
                n,
                json!(replicas(obj)),
                json!(int(obj, &["status", "replicas"])),
                json!(int(obj, &["status", "readyReplicas"])),
                age,
                json!(names),
                json!(images),
                json!(format_labels(at(obj, &["spec", "selector"]))),
            ]
        }
        K::ReplicaSet => {
            let (names, images) =
                layout_containers(list(obj, &["spec", "template", "spec", "containers"]));
            vec![
                n,
                json!(replicas(obj)),
                json!(int(obj, &["status", "replicas"])),
                json!(int(obj, &["status", "readyReplicas"])),
                age,
                json!(names),
                json!(images),
                json!(format_label_selector(at(obj, &["spec", "selector"]))),
            ]
        }
        K::DaemonSet => {
            let (names, images) =
                layout_containers(list(obj, &["spec", "template", "spec", "containers"]));
            vec![
                n,
                json!(int(obj, &["status", "desiredNumberScheduled"])),
                json!(int(obj, &["status", "currentNumberScheduled"])),
                json!(int(obj, &["status", "numberReady"])),
                json!(int(obj, &["status", "updatedNumberScheduled"])),
                json!(int(obj, &["status", "numberAvailable"])),
                json!(format_labels(at(
                    obj,
                    &["spec", "template", "spec", "nodeSelector"]
                ))),
                age,
                json!(names),
                json!(images),
                json!(format_label_selector(at(obj, &["spec", "selector"]))),
            ]
        }
        K::Job => job_cells(obj, now),
        K::CronJob => {
            let last = match at(obj, &["status", "lastScheduleTime"]).filter(|v| !v.is_null()) {
                Some(t) => since(t.as_str(), now),
                None => "<none>".into(),
            };
            let (names, images) = layout_containers(list(
                obj,
                &[
                    "spec",
                    "jobTemplate",
                    "spec",
                    "template",
                    "spec",
                    "containers",
                ],
            ));
            vec![
                n,
                json!(st(obj, &["spec", "schedule"])),
                json!(opt_str(obj, &["spec", "timeZone"]).unwrap_or("<none>")),
                // printBoolPtr; API defaulting makes suspend false when unset.
                json!(go_bool(boolean(obj, &["spec", "suspend"]))),
                json!(list(obj, &["status", "active"]).len()),
                json!(last),
                age,
                json!(names),
                json!(images),
                json!(format_label_selector(at(
                    obj,
                    &["spec", "jobTemplate", "spec", "selector"]
                ))),
            ]
        }
        K::Service => service_cells(obj, now),
        K::Ingress => {
            let rules = list(obj, &["spec", "rules"]);
            let ports = if list(obj, &["spec", "tls"]).is_empty() {
                "80"
            } else {
                "80, 443"
            };
            vec![
                n,
                json!(opt_str(obj, &["spec", "ingressClassName"]).unwrap_or("<none>")),
                json!(format_hosts(rules)),
                json!(load_balancer_string(list(
                    obj,
                    &["status", "loadBalancer", "ingress"]
                ))),
                json!(ports),
                age,
            ]
        }
        K::IngressClass => {
            let parameters = match at(obj, &["spec", "parameters"]).filter(|v| v.is_object()) {
                Some(p) => {
                    let mut out = st(p, &["kind"]).to_string();
                    if let Some(g) = opt_str(p, &["apiGroup"]) {
                        out = format!("{out}.{g}");
                    }
                    format!("{out}/{}", st(p, &["name"]))
                }
                None => "<none>".into(),
            };
            vec![
                n,
                json!(st(obj, &["spec", "controller"])),
                json!(parameters),
                age,
            ]
        }
        K::StatefulSet => {
            let (names, images) =
                layout_containers(list(obj, &["spec", "template", "spec", "containers"]));
            vec![
                n,
                json!(format!(
                    "{}/{}",
                    int(obj, &["status", "readyReplicas"]),
                    replicas(obj)
                )),
                age,
                json!(names),
                json!(images),
            ]
        }
        K::Endpoints => vec![n, json!(format_endpoints(obj)), age],
        K::Node => node_cells(obj, now),
        K::Event => event_cells(group, obj, now),
        K::Namespace => vec![
            n,
            json!(nonempty(obj, &["status", "phase"]).unwrap_or("Active")),
            age,
        ],
        K::Secret => {
            // stringData is merged into data on write upstream; count the union.
            let mut keys: BTreeSet<&str> = BTreeSet::new();
            for field in ["data", "stringData"] {
                if let Some(m) = at(obj, &[field]).and_then(Value::as_object) {
                    keys.extend(m.keys().map(String::as_str));
                }
            }
            vec![
                n,
                json!(nonempty(obj, &["type"]).unwrap_or("Opaque")),
                json!(keys.len()),
                age,
            ]
        }
        K::ServiceAccount => vec![n, json!(list(obj, &["secrets"]).len()), age],
        K::PersistentVolume => pv_cells(obj, now),
        K::PersistentVolumeClaim => pvc_cells(obj, now),
        K::ComponentStatus => {
            let mut status = "Unknown";
            let (mut message, mut error) = ("", "");
            for cond in list(obj, &["conditions"]) {
                if st(cond, &["type"]) == "Healthy" {
                    status = if st(cond, &["status"]) == "True" {
                        "Healthy"
                    } else {
                        "Unhealthy"
                    };
                    message = st(cond, &["message"]);
                    error = st(cond, &["error"]);
                    break;
                }
            }
            vec![n, json!(status), json!(message), json!(error)]
        }
        K::Deployment => {
            let (names, images) =
                layout_containers(list(obj, &["spec", "template", "spec", "containers"]));
            // printDeployment prints selector.String() directly: "" for empty, "<invalid>" on error.
            let selector = selector_string(at(obj, &["spec", "selector"]))
                .unwrap_or_else(|_| "<invalid>".into());
            vec![
                n,
                json!(format!(
                    "{}/{}",
                    int(obj, &["status", "readyReplicas"]),
                    replicas(obj)
                )),
                json!(int(obj, &["status", "updatedReplicas"])),
                json!(int(obj, &["status", "availableReplicas"])),
                age,
                json!(names),
                json!(images),
                json!(selector),
            ]
        }
        K::HorizontalPodAutoscaler => {
            let reference = format!(
                "{}/{}",
                st(obj, &["spec", "scaleTargetRef", "kind"]),
                st(obj, &["spec", "scaleTargetRef", "name"])
            );
            // minReplicas defaults to 1 in every autoscaling version.
            let min = at(obj, &["spec", "minReplicas"])
                .and_then(as_int)
                .unwrap_or(1);
            vec![
                n,
                json!(reference),
                json!(hpa_targets(obj)),
                json!(min.to_string()),
                json!(int(obj, &["spec", "maxReplicas"])),
                json!(int(obj, &["status", "currentReplicas"])),
                age,
            ]
        }
        K::ConfigMap => vec![
            n,
            json!(map_len(obj, &["data"]) + map_len(obj, &["binaryData"])),
            age,
        ],
        K::NetworkPolicy => vec![
            n,
            json!(format_label_selector(Some(
                at(obj, &["spec", "podSelector"]).unwrap_or(&json!({}))
            ))),
            age,
        ],
        K::RoleBinding | K::ClusterRoleBinding => {
            let role = format!(
                "{}/{}",
                st(obj, &["roleRef", "kind"]),
                st(obj, &["roleRef", "name"])
            );
            let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
            for subject in list(obj, &["subjects"]) {
                let sn = st(subject, &["name"]);
                match st(subject, &["kind"]) {
                    "ServiceAccount" => sas.push(format!("{}/{sn}", st(subject, &["namespace"]))),
                    "User" => users.push(sn.to_string()),
                    "Group" => groups.push(sn.to_string()),
                    _ => {}
                }
            }
            vec![
                n,
                json!(role),
                age,
                json!(users.join(", ")),
                json!(groups.join(", ")),
                json!(sas.join(", ")),
            ]
        }
        K::CertificateSigningRequest => {
            let requested = match at(obj, &["spec", "expirationSeconds"]).and_then(as_int) {
                Some(secs) => human_duration(Duration::seconds(
                    secs.clamp(i64::MIN / 1_000_000_000, i64::MAX / 1_000_000_000),
                )),
                None => "<none>".into(),
            };
            vec![
                n,
                age,
                json!(nonempty(obj, &["spec", "signerName"]).unwrap_or("<none>")),
                json!(st(obj, &["spec", "username"])),
                json!(requested),
                json!(csr_status(obj)),
            ]
        }
        K::ClusterTrustBundle => vec![
            n,
            json!(nonempty(obj, &["spec", "signerName"]).unwrap_or("<none>")),
        ],
        K::Lease => vec![n, json!(st(obj, &["spec", "holderIdentity"])), age],
        K::LeaseCandidate => vec![
            n,
            json!(st(obj, &["spec", "leaseName"])),
            json!(st(obj, &["spec", "binaryVersion"])),
            json!(st(obj, &["spec", "emulationVersion"])),
            age,
        ],
        K::StorageClass => {
            let is_default = [
                "storageclass.kubernetes.io/is-default-class",
                "storageclass.beta.kubernetes.io/is-default-class",
            ]
            .iter()
            .any(|a| st(obj, &["metadata", "annotations", a]) == "true");
            let display = if is_default {
                format!("{} (default)", name(obj))
            } else {
                name(obj).to_string()
            };
            vec![
                json!(display),
                json!(st(obj, &["provisioner"])),
                json!(nonempty(obj, &["reclaimPolicy"]).unwrap_or("Delete")),
                json!(nonempty(obj, &["volumeBindingMode"]).unwrap_or("Immediate")),
                json!(boolean(obj, &["allowVolumeExpansion"])),
                age,
            ]
        }
        K::VolumeAttributesClass => {
            let is_default = st(
                obj,
                &[
                    "metadata",
                    "annotations",
                    "volumeattributesclass.alpha.kubernetes.io/is-default-class",
                ],
            ) == "true";
            let display = if is_default {
                format!("{} (default)", name(obj))
            } else {
                name(obj).to_string()
            };
            vec![json!(display), json!(st(obj, &["driverName"])), age]
        }
        K::ControllerRevision => vec![
            n,
            json!(controller_of(obj)),
            json!(int(obj, &["revision"])),
            age,
        ],
        K::ResourceQuota => {
            let (request, limit) = resource_quota_columns(obj);
            vec![n, json!(request), json!(limit), age]
        }
        K::PriorityClass => vec![
            n,
            json!(int(obj, &["value"])),
            json!(boolean(obj, &["globalDefault"])),
            age,
            json!(nonempty(obj, &["preemptionPolicy"]).unwrap_or("PreemptLowerPriority")),
        ],
        K::RuntimeClass => vec![n, json!(st(obj, &["handler"])), age],
        K::VolumeAttachment => vec![
            n,
            json!(st(obj, &["spec", "attacher"])),
            json!(st(obj, &["spec", "source", "persistentVolumeName"])),
            json!(st(obj, &["spec", "nodeName"])),
            json!(boolean(obj, &["status", "attached"])),
            age,
        ],
        K::EndpointSlice => {
            let ports: Vec<String> = list(obj, &["ports"])
                .iter()
                .map(|p| match at(p, &["port"]).and_then(as_int) {
                    Some(port) => port.to_string(),
                    None => opt_str(p, &["name"]).unwrap_or("*").to_string(),
                })
                .collect();
            let addresses: Vec<String> = list(obj, &["endpoints"])
                .iter()
                .flat_map(|e| list(e, &["addresses"]))
                .map(|a| a.as_str().unwrap_or("").to_string())
                .collect();
            vec![
                n,
                json!(st(obj, &["addressType"])),
                json!(list_with_more(&ports, 3)),
                json!(list_with_more(&addresses, 3)),
                age,
            ]
        }
        K::CsiNode => vec![n, json!(list(obj, &["spec", "drivers"]).len()), age],
        K::CsiDriver => {
            let modes: Vec<&str> = list(obj, &["spec", "volumeLifecycleModes"])
                .iter()
                .map(|m| m.as_str().unwrap_or(""))
                .collect();
            let modes = if modes.is_empty() {
                "<none>".to_string()
            } else {
                modes.join(",")
            };
            let tokens = match at(obj, &["spec", "tokenRequests"]).and_then(Value::as_array) {
                Some(reqs) => reqs
                    .iter()
                    .map(|t| st(t, &["audience"]))
                    .collect::<Vec<_>>()
                    .join(","),
                None => "<unset>".into(),
            };
            vec![
                n,
                json!(opt_bool(obj, &["spec", "attachRequired"]).unwrap_or(true)),
                json!(boolean(obj, &["spec", "podInfoOnMount"])),
                json!(boolean(obj, &["spec", "storageCapacity"])),
                json!(tokens),
                json!(boolean(obj, &["spec", "requiresRepublish"])),
                json!(modes),
                age,
            ]
        }
        K::CsiStorageCapacity => {
            let capacity = match at(obj, &["capacity"]).filter(|v| !v.is_null()) {
                Some(q) => quantity_value(q),
                None => "<unset>".into(),
            };
            vec![n, json!(st(obj, &["storageClassName"])), json!(capacity)]
        }
        K::MutatingWebhookConfiguration | K::ValidatingWebhookConfiguration => {
            vec![n, json!(list(obj, &["webhooks"]).len()), age]
        }
        K::ValidatingAdmissionPolicy | K::MutatingAdmissionPolicy => {
            let rules = if k == K::ValidatingAdmissionPolicy {
                "validations"
            } else {
                "mutations"
            };
            let param_kind = match at(obj, &["spec", "paramKind"]).filter(|v| v.is_object()) {
                Some(pk) => format!("{}/{}", st(pk, &["apiVersion"]), st(pk, &["kind"])),
                None => "<unset>".into(),
            };
            vec![
                n,
                json!(list(obj, &["spec", rules]).len()),
                json!(param_kind),
                age,
            ]
        }
        K::ValidatingAdmissionPolicyBinding | K::MutatingAdmissionPolicyBinding => {
            let mut param = "<unset>".to_string();
            if let Some(pr) = at(obj, &["spec", "paramRef"]).filter(|v| v.is_object()) {
                let pn = st(pr, &["name"]);
                if !pn.is_empty() {
                    param = match nonempty(pr, &["namespace"]) {
                        Some(ns) => format!("{ns}/{pn}"),
                        // Can't tell whether the param is cluster-scoped: "*" namespace.
                        None => format!("*/{pn}"),
                    };
                } else if let Some(sel) = at(pr, &["selector"]).filter(|v| v.is_object()) {
                    param = go_proto_label_selector(sel);
                }
            }
            vec![
                n,
                json!(st(obj, &["spec", "policyName"])),
                json!(param),
                age,
            ]
        }
        K::FlowSchema => {
            let distinguisher = at(obj, &["spec", "distinguisherMethod"])
                .filter(|v| v.is_object())
                .map_or("<none>".to_string(), |d| st(d, &["type"]).to_string());
            let dangling = list(obj, &["status", "conditions"])
                .iter()
                .find(|c| st(c, &["type"]) == "Dangling")
                .map_or("?", |c| st(c, &["status"]));
            vec![
                n,
                json!(st(obj, &["spec", "priorityLevelConfiguration", "name"])),
                json!(int(obj, &["spec", "matchingPrecedence"])),
                json!(distinguisher),
                age,
                json!(dangling),
            ]
        }
        K::PriorityLevelConfiguration => {
            let none = json!("<none>");
            let (mut ncs, mut queues, mut hand, mut qll) =
                (none.clone(), none.clone(), none.clone(), none);
            if let Some(limited) = at(obj, &["spec", "limited"]).filter(|v| v.is_object()) {
                // Defaulted to 30 when unset.
                ncs = json!(
                    at(limited, &["nominalConcurrencyShares"])
                        .and_then(as_int)
                        .unwrap_or(30)
                );
                if let Some(q) =
                    at(limited, &["limitResponse", "queuing"]).filter(|v| v.is_object())
                {
                    queues = json!(int(q, &["queues"]));
                    hand = json!(int(q, &["handSize"]));
                    qll = json!(int(q, &["queueLengthLimit"]));
                }
            }
            vec![
                n,
                json!(st(obj, &["spec", "type"])),
                ncs,
                queues,
                hand,
                qll,
                age,
            ]
        }
        K::StorageVersion => {
            let versions: Vec<String> = list(obj, &["status", "storageVersions"])
                .iter()
                .map(|sv| {
                    format!(
                        "{}={}",
                        st(sv, &["apiServerID"]),
                        st(sv, &["encodingVersion"])
                    )
                })
                .collect();
            vec![
                n,
                json!(opt_str(obj, &["status", "commonEncodingVersion"]).unwrap_or("<unset>")),
                json!(list_with_more(&versions, 3)),
                age,
            ]
        }
        K::DeviceClass | K::ResourceClaimTemplate => vec![n, age],
        K::ResourceClaim => {
            let mut states = Vec::new();
            let deleting = present(obj, &["metadata", "deletionTimestamp"]);
            if deleting {
                states.push("deleted");
            }
            if !present(obj, &["status", "allocation"]) {
                if !deleting {
                    states.push("pending");
                }
            } else {
                states.push("allocated");
                if !list(obj, &["status", "reservedFor"]).is_empty() {
                    states.push("reserved");
                }
            }
            vec![n, json!(states.join(",")), age]
        }
        K::ResourceSlice => vec![
            n,
            json!(st(obj, &["spec", "nodeName"])),
            json!(st(obj, &["spec", "driver"])),
            json!(st(obj, &["spec", "pool", "name"])),
            age,
        ],
        K::ServiceCidr => {
            let cidrs: Vec<&str> = list(obj, &["spec", "cidrs"])
                .iter()
                .map(|c| c.as_str().unwrap_or(""))
                .collect();
            vec![n, json!(cidrs.join(",")), age]
        }
        K::IpAddress => {
            let parent = match at(obj, &["spec", "parentRef"]).filter(|v| v.is_object()) {
                Some(p) => {
                    let (g, r) = (st(p, &["group"]), st(p, &["resource"]));
                    let mut out = if g.is_empty() {
                        r.to_lowercase()
                    } else {
                        format!("{r}.{g}").to_lowercase()
                    };
                    if let Some(ns) = nonempty(p, &["namespace"]) {
                        out = format!("{out}/{ns}");
                    }
                    format!("{out}/{}", st(p, &["name"]))
                }
                None => "<none>".into(),
            };
            // Upstream emits an Age cell without a matching column; kubectl ignores extras.
            vec![n, json!(parent), age]
        }
        K::StorageVersionMigration => vec![
            n,
            json!(format!(
                "{}.{}.{}",
                st(obj, &["spec", "resource", "resource"]),
                st(obj, &["spec", "resource", "version"]),
                st(obj, &["spec", "resource", "group"])
            )),
        ],
        K::ApiService => {
            let service = match at(obj, &["spec", "service"]).filter(|v| v.is_object()) {
                Some(svc) => format!("{}/{}", st(svc, &["namespace"]), st(svc, &["name"])),
                None => "Local".into(),
            };
            let mut status = "Unknown".to_string();
            if let Some(cond) = list(obj, &["status", "conditions"])
                .iter()
                .find(|c| st(c, &["type"]) == "Available")
            {
                let cs = st(cond, &["status"]);
                status = match nonempty(cond, &["reason"]) {
                    Some(reason) if cs != "True" => format!("{cs} ({reason})"),
                    _ => cs.to_string(),
                };
            }
            vec![n, json!(service), json!(status), age]
        }
    }
}

fn pod_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let init_specs = list(obj, &["spec", "initContainers"]);
    // A restartable init container (restartPolicy: Always) is a sidecar and counts as a container.
    let is_sidecar = |container_name: &str| {
        init_specs
            .iter()
            .rev()
            .find(|c| st(c, &["name"]) == container_name)
            .is_some_and(|c| st(c, &["restartPolicy"]) == "Always")
    };
    let total = list(obj, &["spec", "containers"]).len()
        + init_specs
            .iter()
            .filter(|c| st(c, &["restartPolicy"]) == "Always")
            .count();
    let mut ready = 0usize;
    let mut restarts: i64 = 0;
    let mut sidecar_restarts: i64 = 0;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut last_sidecar_restart: Option<DateTime<Utc>> = None;

    // The API server sets phase Pending on create; mirror that for objects stored without one.
    let phase = nonempty(obj, &["status", "phase"]).unwrap_or("Pending");
    let mut reason = nonempty(obj, &["status", "reason"])
        .unwrap_or(phase)
        .to_string();
    for cond in list(obj, &["status", "conditions"]) {
        if st(cond, &["type"]) == "PodScheduled" && st(cond, &["reason"]) == "SchedulingGated" {
            reason = "SchedulingGated".into();
        }
    }

    let mut initializing = false;
    let init_statuses = list(obj, &["status", "initContainerStatuses"]);
    for (i, cs) in init_statuses.iter().enumerate() {
        let count = int(cs, &["restartCount"]);
        restarts = restarts.saturating_add(count);
        let finished = last_terminated_at(cs);
        last_restart = last_restart.max(finished);
        let sidecar = is_sidecar(st(cs, &["name"]));
        if sidecar {
            sidecar_restarts = sidecar_restarts.saturating_add(count);
            last_sidecar_restart = last_sidecar_restart.max(finished);
        }
        let terminated = state(cs, "terminated");
        let waiting = state(cs, "waiting");
        if terminated.is_some_and(|t| int(t, &["exitCode"]) == 0) {
            continue;
        }
        if sidecar && boolean(cs, &["started"]) {
            if boolean(cs, &["ready"]) {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = terminated {
            // Initialization failed.
            reason = match nonempty(t, &["reason"]) {
                Some(r) => format!("Init:{r}"),
                None => match int(t, &["signal"]) {
                    0 => format!("Init:ExitCode:{}", int(t, &["exitCode"])),
                    sig => format!("Init:Signal:{sig}"),
                },
            };
        } else if let Some(r) = waiting
            .and_then(|w| nonempty(w, &["reason"]))
            .filter(|r| *r != "PodInitializing")
        {
            reason = format!("Init:{r}");
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }

    if !initializing || pod_condition_true(obj, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        // Walk backwards so the first container's state wins, as upstream does.
        for cs in list(obj, &["status", "containerStatuses"]).iter().rev() {
            restarts = restarts.saturating_add(int(cs, &["restartCount"]));
            last_restart = last_restart.max(last_terminated_at(cs));
            let waiting_reason = state(cs, "waiting").and_then(|w| nonempty(w, &["reason"]));
            let terminated = state(cs, "terminated");
            if let Some(r) = waiting_reason {
                reason = r.to_string();
            } else if let Some(t) = terminated {
                reason = match nonempty(t, &["reason"]) {
                    Some(r) => r.to_string(),
                    None => match int(t, &["signal"]) {
                        0 => format!("ExitCode:{}", int(t, &["exitCode"])),
                        sig => format!("Signal:{sig}"),
                    },
                };
            } else if boolean(cs, &["ready"]) && state(cs, "running").is_some() {
                has_running = true;
                ready += 1;
            }
        }
        // Back to Running if a container still runs (e.g. a finished container plus a live one).
        if reason == "Completed" && has_running {
            reason = if pod_condition_true(obj, "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }

    let deleting = present(obj, &["metadata", "deletionTimestamp"]);
    if deleting && st(obj, &["status", "reason"]) == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", human_duration(now - t)),
        _ => restarts.to_string(),
    };

    let pod_ip = list(obj, &["status", "podIPs"])
        .first()
        .and_then(|ip| nonempty(ip, &["ip"]))
        .or_else(|| nonempty(obj, &["status", "podIP"]))
        .unwrap_or("<none>");
    let node = nonempty(obj, &["spec", "nodeName"]).unwrap_or("<none>");
    let nominated = nonempty(obj, &["status", "nominatedNodeName"]).unwrap_or("<none>");
    let gates = list(obj, &["spec", "readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = list(obj, &["status", "conditions"]);
        let passing = gates
            .iter()
            .filter(|g| {
                let ty = st(g, &["conditionType"]);
                conditions
                    .iter()
                    .find(|c| st(c, &["type"]) == ty)
                    .is_some_and(|c| st(c, &["status"]) == "True")
            })
            .count();
        format!("{passing}/{}", gates.len())
    };

    vec![
        json!(name(obj)),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        json!(age(obj, now)),
        json!(pod_ip),
        json!(node),
        json!(nominated),
        json!(readiness_gates),
    ]
}

/// `lastState.terminated.finishedAt` of a container status.
fn last_terminated_at(cs: &Value) -> Option<DateTime<Utc>> {
    at(cs, &["lastState", "terminated"])
        .filter(|t| t.is_object())
        .and_then(|t| opt_str(t, &["finishedAt"]))
        .and_then(parse_time)
}

/// A container state (`waiting`/`running`/`terminated`) when set.
fn state<'a>(cs: &'a Value, which: &str) -> Option<&'a Value> {
    at(cs, &["state", which]).filter(|v| v.is_object())
}

/// First condition of `ty` decides (isPodInitializedConditionTrue / hasPodReadyCondition).
fn pod_condition_true(obj: &Value, ty: &str) -> bool {
    list(obj, &["status", "conditions"])
        .iter()
        .find(|c| st(c, &["type"]) == ty)
        .is_some_and(|c| st(c, &["status"]) == "True")
}

fn job_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let succeeded = int(obj, &["status", "succeeded"]);
    let completions = match at(obj, &["spec", "completions"]).and_then(as_int) {
        Some(want) => format!("{succeeded}/{want}"),
        None => match int(obj, &["spec", "parallelism"]) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let start = opt_str(obj, &["status", "startTime"]).and_then(parse_time);
    let completion = opt_str(obj, &["status", "completionTime"]).and_then(parse_time);
    let duration = match (start, completion) {
        (None, _) => String::new(),
        (Some(s), None) => human_duration(now - s),
        (Some(s), Some(c)) => human_duration(c - s),
    };
    // hasJobCondition: the first condition of the type decides.
    let has = |ty: &str| {
        list(obj, &["status", "conditions"])
            .iter()
            .find(|c| st(c, &["type"]) == ty)
            .is_some_and(|c| st(c, &["status"]) == "True")
    };
    let status = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if present(obj, &["metadata", "deletionTimestamp"]) {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = layout_containers(list(obj, &["spec", "template", "spec", "containers"]));
    vec![
        json!(name(obj)),
        json!(status),
        json!(completions),
        json!(duration),
        json!(age(obj, now)),
        json!(names),
        json!(images),
        json!(format_label_selector(at(obj, &["spec", "selector"]))),
    ]
}

fn service_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ty = nonempty(obj, &["spec", "type"]).unwrap_or("ClusterIP");
    let cluster_ip = list(obj, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| nonempty(obj, &["spec", "clusterIP"]))
        .unwrap_or("<none>");
    let external_ips: Vec<&str> = list(obj, &["spec", "externalIPs"])
        .iter()
        .map(|ip| ip.as_str().unwrap_or(""))
        .collect();
    let external = match ty {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_string()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            // Server-side tables are always wide, so the LB list is never clipped.
            let lb = load_balancer_string(list(obj, &["status", "loadBalancer", "ingress"]));
            if !external_ips.is_empty() {
                let mut all: Vec<&str> = Vec::new();
                if !lb.is_empty() {
                    all.extend(lb.split(','));
                }
                all.extend(external_ips.iter().copied());
                all.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".to_string()
            }
        }
        "ExternalName" => st(obj, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    };
    let ports: Vec<String> = list(obj, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = int(p, &["port"]);
            let protocol = nonempty(p, &["protocol"]).unwrap_or("TCP");
            match int(p, &["nodePort"]) {
                np if np > 0 => format!("{port}:{np}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    };
    vec![
        json!(name(obj)),
        json!(ty),
        json!(cluster_ip),
        json!(external),
        json!(ports),
        json!(age(obj, now)),
        json!(format_labels(at(obj, &["spec", "selector"]))),
    ]
}

/// Sorted, de-duplicated LoadBalancer ingress IPs (or hostnames), comma-joined.
fn load_balancer_string(ingress: &[Value]) -> String {
    let set: BTreeSet<&str> = ingress
        .iter()
        .filter_map(|i| nonempty(i, &["ip"]).or_else(|| nonempty(i, &["hostname"])))
        .collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

fn format_hosts(rules: &[Value]) -> String {
    const MAX: usize = 3;
    let mut hosts: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if hosts.len() == MAX {
            more = true;
        }
        if let Some(h) = nonempty(rule, &["host"]).filter(|_| !more) {
            hosts.push(h);
        }
    }
    if hosts.is_empty() {
        return "*".into();
    }
    let joined = hosts.join(",");
    if more {
        return format!("{joined} + {} more...", rules.len().saturating_sub(MAX));
    }
    joined
}

fn format_endpoints(obj: &Value) -> String {
    let subsets = list(obj, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".into();
    }
    const MAX: usize = 3;
    let mut out: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for ss in subsets {
        let addresses = list(ss, &["addresses"]);
        let ports = list(ss, &["ports"]);
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addresses.len();
            for a in addresses {
                if out.len() == MAX {
                    more = true;
                    break;
                }
                out.push(st(a, &["ip"]).to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for a in addresses {
                if out.len() == MAX {
                    more = true;
                    break;
                }
                out.push(join_host_port(st(a, &["ip"]), int(port, &["port"])));
            }
        }
    }
    let joined = out.join(",");
    if more {
        return format!("{joined} + {} more...", count.saturating_sub(MAX));
    }
    joined
}

/// net.JoinHostPort: brackets around IPv6 hosts.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// listWithMoreString: at most `max` entries, "<unset>" when empty.
fn list_with_more(items: &[String], max: usize) -> String {
    let shown = &items[..items.len().min(max)];
    let joined = shown.join(",");
    if items.len() > max {
        return format!("{joined} + {} more...", items.len() - max);
    }
    if joined.is_empty() {
        return "<unset>".into();
    }
    joined
}

fn node_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // Only the Ready condition is reported; a later duplicate overrides an earlier one.
    let ready = list(obj, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| st(c, &["type"]) == "Ready");
    let mut status = vec![match ready {
        Some(c) if st(c, &["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if boolean(obj, &["spec", "unschedulable"]) {
        status.push("SchedulingDisabled");
    }
    let mut roles: BTreeSet<&str> = BTreeSet::new();
    if let Some(labels) = at(obj, &["metadata", "labels"]).and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role);
                }
            } else if let Some(v) = v
                .as_str()
                .filter(|v| !v.is_empty() && k == "kubernetes.io/role")
            {
                roles.insert(v);
            }
        }
    }
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    };
    let address = |ty: &str| {
        list(obj, &["status", "addresses"])
            .iter()
            .find(|a| st(a, &["type"]) == ty)
            .map_or("<none>", |a| st(a, &["address"]))
    };
    let info = |field: &str| nonempty(obj, &["status", "nodeInfo", field]).unwrap_or("<unknown>");
    vec![
        json!(name(obj)),
        json!(status.join(",")),
        json!(roles),
        json!(age(obj, now)),
        json!(st(obj, &["status", "nodeInfo", "kubeletVersion"])),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

/// core/v1 and events.k8s.io/v1 Events share one internal type and printer; only field names differ.
fn event_cells(group: &str, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let new_api = group == "events.k8s.io";
    let f = |core: &'static str, events: &'static str| if new_api { events } else { core };
    let first_ts = opt_str(obj, &[f("firstTimestamp", "deprecatedFirstTimestamp")]);
    let last_ts = opt_str(obj, &[f("lastTimestamp", "deprecatedLastTimestamp")]);
    let first = match first_ts.and_then(parse_time) {
        Some(t) => human_duration(now - t),
        None => since(opt_str(obj, &["eventTime"]), now),
    };
    let mut last = match last_ts.and_then(parse_time) {
        Some(t) => human_duration(now - t),
        None => first.clone(),
    };
    let mut count = int(obj, &[f("count", "deprecatedCount")]);
    if let Some(series) = at(obj, &["series"]).filter(|v| v.is_object()) {
        last = since(opt_str(series, &["lastObservedTime"]), now);
        count = int(series, &["count"]);
    } else if count == 0 {
        // Singleton events don't have a count set in the new API.
        count = 1;
    }
    let involved = at(obj, &[f("involvedObject", "regarding")]).unwrap_or(&Value::Null);
    let kind = st(involved, &["kind"]).to_lowercase();
    let target = match nonempty(involved, &["name"]) {
        Some(n) => format!("{kind}/{n}"),
        None => kind,
    };
    let source = at(obj, &[f("source", "deprecatedSource")]).unwrap_or(&Value::Null);
    let component = nonempty(source, &["component"])
        .or_else(|| nonempty(obj, &[f("reportingComponent", "reportingController")]))
        .unwrap_or("");
    let host = nonempty(source, &["host"])
        .or_else(|| nonempty(obj, &["reportingInstance"]))
        .unwrap_or("");
    let source = if host.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {host}")
    };
    vec![
        json!(last),
        json!(st(obj, &["type"])),
        json!(st(obj, &["reason"])),
        json!(target),
        json!(st(involved, &["fieldPath"])),
        json!(source),
        json!(st(obj, &[f("message", "note")]).trim()),
        json!(first),
        json!(count),
        json!(name(obj)),
    ]
}

fn pv_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let claim = match at(obj, &["spec", "claimRef"]).filter(|v| v.is_object()) {
        Some(r) => format!("{}/{}", st(r, &["namespace"]), st(r, &["name"])),
        None => String::new(),
    };
    let phase = if present(obj, &["metadata", "deletionTimestamp"]) {
        "Terminating"
    } else {
        nonempty(obj, &["status", "phase"]).unwrap_or("Pending")
    };
    let class = opt_str(
        obj,
        &[
            "metadata",
            "annotations",
            "volume.beta.kubernetes.io/storage-class",
        ],
    )
    .unwrap_or_else(|| st(obj, &["spec", "storageClassName"]));
    vec![
        json!(name(obj)),
        json!(quantity_at(obj, &["spec", "capacity", "storage"])),
        json!(access_modes(list(obj, &["spec", "accessModes"]))),
        json!(nonempty(obj, &["spec", "persistentVolumeReclaimPolicy"]).unwrap_or("Retain")),
        json!(phase),
        json!(claim),
        json!(class),
        json!(opt_str(obj, &["spec", "volumeAttributesClassName"]).unwrap_or("<unset>")),
        json!(st(obj, &["status", "reason"])),
        json!(age(obj, now)),
        json!(nonempty(obj, &["spec", "volumeMode"]).unwrap_or("Filesystem")),
    ]
}

fn pvc_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let phase = if present(obj, &["metadata", "deletionTimestamp"]) {
        "Terminating"
    } else {
        nonempty(obj, &["status", "phase"]).unwrap_or("Pending")
    };
    let volume = st(obj, &["spec", "volumeName"]);
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity_at(obj, &["status", "capacity", "storage"]),
            access_modes(list(obj, &["status", "accessModes"])),
        )
    };
    let class = opt_str(
        obj,
        &[
            "metadata",
            "annotations",
            "volume.beta.kubernetes.io/storage-class",
        ],
    )
    .or_else(|| opt_str(obj, &["spec", "storageClassName"]))
    .unwrap_or("");
    vec![
        json!(name(obj)),
        json!(phase),
        json!(volume),
        json!(capacity),
        json!(modes),
        json!(class),
        json!(opt_str(obj, &["spec", "volumeAttributesClassName"]).unwrap_or("<unset>")),
        json!(age(obj, now)),
        json!(nonempty(obj, &["spec", "volumeMode"]).unwrap_or("Filesystem")),
    ]
}

/// helper.GetAccessModesAsString: fixed order, duplicates dropped.
fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(full, _)| has(full))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

fn csr_status(obj: &Value) -> String {
    let conditions = list(obj, &["status", "conditions"]);
    let has = |ty: &str| conditions.iter().any(|c| st(c, &["type"]) == ty);
    let mut status = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        status.push_str(",Failed");
    }
    if !st(obj, &["status", "certificate"]).is_empty() {
        status.push_str(",Issued");
    }
    status
}

/// The controller owner as "kind.group/name" (lower-cased kind.group), or "<none>".
fn controller_of(obj: &Value) -> String {
    let Some(owner) = list(obj, &["metadata", "ownerReferences"])
        .iter()
        .find(|o| boolean(o, &["controller"]))
    else {
        return "<none>".into();
    };
    let api_version = st(owner, &["apiVersion"]);
    let group = match api_version.split_once('/') {
        Some((g, _)) => g,
        None => "",
    };
    let kind = st(owner, &["kind"]);
    let owner_name = st(owner, &["name"]);
    if group.is_empty() && kind.is_empty() {
        return owner_name.to_string();
    }
    let group_kind = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    format!("{}/{owner_name}", group_kind.to_lowercase())
}

fn resource_quota_columns(obj: &Value) -> (String, String) {
    let Some(hard) = at(obj, &["status", "hard"]).and_then(Value::as_object) else {
        return (String::new(), String::new());
    };
    let mut resources: Vec<&String> = hard.keys().collect();
    resources.sort();
    let (mut request, mut limit) = (Vec::new(), Vec::new());
    for r in resources {
        let used = quantity_at(obj, &["status", "used", r.as_str()]);
        let hard = quantity_at(obj, &["status", "hard", r.as_str()]);
        let entry = format!("{r}: {used}/{hard}");
        // "limits.*" resources go to the Limit column.
        match r.split_once('.') {
            Some(("limits", _)) => limit.push(entry),
            _ => request.push(entry),
        }
    }
    (request.join(", "), limit.join(", "))
}

/// formatHPAMetrics over autoscaling/v2 metrics (v1 CPU targets are converted first).
fn hpa_targets(obj: &Value) -> String {
    let (specs, statuses) = hpa_metrics(obj);
    if specs.is_empty() {
        return "<none>".into();
    }
    const MAX: usize = 2;
    let mut out: Vec<String> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let status = statuses.get(i);
        // The status entry at the same index, when it carries this source type.
        let cur = |field: &str| {
            status
                .and_then(|s| at(s, &[field]))
                .filter(|v| v.is_object())
        };
        let entry = match st(spec, &["type"]) {
            ty @ ("External" | "Object") => {
                let field = if ty == "External" {
                    "external"
                } else {
                    "object"
                };
                let target = at(spec, &[field, "target"]).unwrap_or(&Value::Null);
                if present(target, &["averageValue"]) {
                    let current = cur(field)
                        .and_then(|s| at(s, &["current", "averageValue"]))
                        .filter(|v| !v.is_null())
                        .map_or("<unknown>".to_string(), quantity_value);
                    format!(
                        "{current}/{} (avg)",
                        quantity_ptr(at(target, &["averageValue"]))
                    )
                } else {
                    let current = cur(field).map_or("<unknown>".to_string(), |s| {
                        quantity_ptr(at(s, &["current", "value"]))
                    });
                    format!("{current}/{}", quantity_ptr(at(target, &["value"])))
                }
            }
            "Pods" => {
                let current = cur("pods").map_or("<unknown>".to_string(), |s| {
                    quantity_ptr(at(s, &["current", "averageValue"]))
                });
                format!(
                    "{current}/{}",
                    quantity_ptr(at(spec, &["pods", "target", "averageValue"]))
                )
            }
            ty @ ("Resource" | "ContainerResource") => {
                let field = if ty == "Resource" {
                    "resource"
                } else {
                    "containerResource"
                };
                let resource = st(spec, &[field, "name"]);
                let target = at(spec, &[field, "target"]).unwrap_or(&Value::Null);
                if present(target, &["averageValue"]) {
                    let current = cur(field).map_or("<unknown>".to_string(), |s| {
                        quantity_ptr(at(s, &["current", "averageValue"]))
                    });
                    format!(
                        "{resource}: {current}/{}",
                        quantity_ptr(at(target, &["averageValue"]))
                    )
                } else {
                    let current = cur(field)
                        .and_then(|s| at(s, &["current", "averageUtilization"]))
                        .and_then(as_int)
                        .map_or("<unknown>".to_string(), |u| format!("{u}%"));
                    let want = at(target, &["averageUtilization"])
                        .and_then(as_int)
                        .map_or("<auto>".to_string(), |u| format!("{u}%"));
                    format!("{resource}: {current}/{want}")
                }
            }
            _ => "<unknown type>".to_string(),
        };
        out.push(entry);
    }
    let count = out.len();
    if count > MAX {
        out.truncate(MAX);
        return format!("{} + {} more...", out.join(", "), count - MAX);
    }
    out.join(", ")
}

/// The v2 metric specs and statuses of an HPA; autoscaling/v1 objects carry only CPU utilization,
/// which the internal conversion turns into a Resource metric.
fn hpa_metrics(obj: &Value) -> (Vec<Value>, Vec<Value>) {
    if let Some(metrics) = at(obj, &["spec", "metrics"]).and_then(Value::as_array) {
        return (
            metrics.clone(),
            list(obj, &["status", "currentMetrics"]).to_vec(),
        );
    }
    let mut specs = Vec::new();
    let mut statuses = Vec::new();
    if let Some(target) = at(obj, &["spec", "targetCPUUtilizationPercentage"]).and_then(as_int) {
        specs.push(json!({"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}}));
    }
    if let Some(current) = at(obj, &["status", "currentCPUUtilizationPercentage"]).and_then(as_int)
    {
        statuses.push(json!({"type": "Resource", "resource": {
            "name": "cpu", "current": {"averageUtilization": current}}}));
    }
    (specs, statuses)
}

fn layout_containers(containers: &[Value]) -> (String, String) {
    let names: Vec<&str> = containers.iter().map(|c| st(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| st(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

/// IntOrString.String(), "N/A" when unset (PodDisruptionBudget).
fn int_or_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(v) => match as_int(v) {
            Some(i) => i.to_string(),
            None => "N/A".into(),
        },
        None => "N/A".into(),
    }
}

/// Spec/template replicas; API defaulting makes an unset count 1.
fn replicas(obj: &Value) -> i64 {
    at(obj, &["spec", "replicas"]).and_then(as_int).unwrap_or(1)
}

/// printBool.
fn go_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

// ---------------------------------------------------------------------------------------------
// CRD additionalPrinterColumns
// ---------------------------------------------------------------------------------------------

fn crd_columns_parsed(cols: &[Value]) -> Vec<CrdColumn> {
    if cols.is_empty() {
        // serveDefaultColumnsIfEmpty: a CRD version without columns gets an Age column.
        return vec![CrdColumn {
            name: "Age".into(),
            ty: "date".into(),
            format: String::new(),
            description: D_META_CREATED.into(),
            priority: 0,
            path: parse_json_path(".metadata.creationTimestamp"),
        }];
    }
    cols.iter()
        .map(|col| {
            let json_path = st(col, &["jsonPath"]);
            CrdColumn {
                name: st(col, &["name"]).to_string(),
                ty: st(col, &["type"]).to_string(),
                format: st(col, &["format"]).to_string(),
                description: match nonempty(col, &["description"]) {
                    Some(d) => d.to_string(),
                    None => format!(
                        "Custom resource definition column (in JSONPath format): {json_path}"
                    ),
                },
                priority: int(col, &["priority"]),
                path: parse_json_path(json_path),
            }
        })
        .collect()
}

fn crd_cells(cols: &[CrdColumn], obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut out = vec![json!(name(obj))];
    for col in cols {
        // Only simple paths are allowed, so the first result is the value.
        let found = col
            .path
            .as_ref()
            .and_then(|p| eval_json_path(p, obj).into_iter().next());
        out.push(match found {
            Some(v) => crd_cell(&col.ty, v, now),
            None => Value::Null,
        });
    }
    out
}

/// cellForJSONValue, plus the JSONPath text printing used for "string" columns.
fn crd_cell(ty: &str, v: &Value, now: DateTime<Utc>) -> Value {
    if v.is_null() {
        return Value::Null;
    }
    match (ty, v) {
        ("string", Value::String(s)) => json!(s),
        ("string", Value::Bool(b)) => json!(b.to_string()),
        ("string", Value::Number(n)) => json!(match n.as_i64() {
            Some(i) => i.to_string(),
            None => go_float_v(n.as_f64().unwrap_or(0.0)),
        }),
        ("string", _) => json!(go_json(v)),
        ("integer", Value::Number(n)) => match n.as_i64() {
            Some(i) => json!(i),
            // int64(float64) truncates.
            None => json!(n.as_f64().unwrap_or(0.0) as i64),
        },
        ("number", Value::Number(n)) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        ("boolean", Value::Bool(b)) => json!(b),
        ("date", Value::String(s)) => {
            // metav1.Time.UnmarshalQueryParameter: "" and "null" are the zero time.
            if s.is_empty() || s == "null" {
                return json!("<unknown>");
            }
            match parse_time(s) {
                Some(t) => json!(human_duration(now - t)),
                None if DateTime::parse_from_rfc3339(s).is_ok() => json!("<unknown>"),
                None => json!("<invalid>"),
            }
        }
        _ => Value::Null,
    }
}

// ---------------------------------------------------------------------------------------------
// JSONPath (the subset CRD printer columns use)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Wildcard,
    Index(i64),
    Slice(Option<i64>, Option<i64>),
    Filter(Box<Filter>),
    /// `..`: the node and all its descendants.
    Recursive,
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    left: Vec<Step>,
    /// `None`: existence test (`[?(@.x)]`).
    cmp: Option<(CmpOp, Operand)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Str(String),
    Num(f64),
    Bool(bool),
    Path(Vec<Step>),
}

fn parse_json_path(path: &str) -> Option<Vec<Step>> {
    let mut p = path.trim();
    if let Some(inner) = p.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        p = inner.trim();
    }
    let p = p.strip_prefix('$').unwrap_or(p);
    parse_steps(&p.chars().collect::<Vec<_>>())
}

fn parse_steps(chars: &[char]) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                if chars.get(i) == Some(&'.') {
                    steps.push(Step::Recursive);
                    i += 1;
                }
                if chars.get(i).is_none_or(|c| *c == '[' || *c == '.') {
                    continue;
                }
                let (field, next) = parse_field(chars, i);
                i = next;
                steps.push(if field == "*" {
                    Step::Wildcard
                } else {
                    Step::Field(field)
                });
            }
            '[' => {
                let end = matching_bracket(chars, i)?;
                let inner: String = chars[i + 1..end].iter().collect();
                steps.push(parse_bracket(inner.trim())?);
                i = end + 1;
            }
            c if c.is_whitespace() => i += 1,
            _ => {
                // Tolerate a path without the leading dot ("spec.replicas").
                let (field, next) = parse_field(chars, i);
                i = next;
                steps.push(Step::Field(field));
            }
        }
    }
    Some(steps)
}

/// A field name up to the next unescaped `.` or `[` (`\.` escapes a dot).
fn parse_field(chars: &[char], mut i: usize) -> (String, usize) {
    let mut out = String::new();
    while i < chars.len() {
        match chars[i] {
            '\\' if i + 1 < chars.len() => {
                out.push(chars[i + 1]);
                i += 2;
            }
            '.' | '[' => break,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    (out.trim_end().to_string(), i)
}

/// Index of the `]` closing the `[` at `open`, skipping quoted strings and nested brackets.
fn matching_bracket(chars: &[char], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut i = open;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some(q) => {
                if c == '\\' {
                    i += 1;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => quote = Some(c),
                '[' => depth += 1,
                ']' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(i);
                    }
                }
                _ => {}
            },
        }
        i += 1;
    }
    None
}

fn parse_bracket(inner: &str) -> Option<Step> {
    if inner == "*" {
        return Some(Step::Wildcard);
    }
    if let Some(filter) = inner
        .strip_prefix('?')
        .map(str::trim_start)
        .and_then(|f| f.strip_prefix('('))
        .and_then(|f| f.strip_suffix(')'))
    {
        return parse_filter(filter.trim()).map(|f| Step::Filter(Box::new(f)));
    }
    if let Some(key) = unquote(inner) {
        return Some(Step::Field(key));
    }
    if let Some((start, end)) = inner.split_once(':') {
        // Step after a second ':' is not supported beyond being ignored.
        let end = end.split(':').next().unwrap_or("");
        let bound = |s: &str| -> Option<Option<i64>> {
            let s = s.trim();
            if s.is_empty() {
                Some(None)
            } else {
                s.parse().ok().map(Some)
            }
        };
        return Some(Step::Slice(bound(start)?, bound(end)?));
    }
    inner.parse().ok().map(Step::Index)
}

fn unquote(s: &str) -> Option<String> {
    let q = s.chars().next()?;
    if (q != '\'' && q != '"') || s.len() < 2 || !s.ends_with(q) {
        return None;
    }
    let body = &s[1..s.len() - 1];
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

fn parse_filter(f: &str) -> Option<Filter> {
    let chars: Vec<char> = f.chars().collect();
    // Find the first comparison operator outside quotes.
    let mut quote: Option<char> = None;
    let mut split: Option<(usize, usize, CmpOp)> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            if c == '\\' {
                i += 1;
            } else if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        let next = chars.get(i + 1).copied();
        let op = match (c, next) {
            ('\'' | '"', _) => {
                quote = Some(c);
                None
            }
            ('=', Some('=')) => Some((2, CmpOp::Eq)),
            ('!', Some('=')) => Some((2, CmpOp::Ne)),
            ('<', Some('=')) => Some((2, CmpOp::Le)),
            ('>', Some('=')) => Some((2, CmpOp::Ge)),
            ('<', _) => Some((1, CmpOp::Lt)),
            ('>', _) => Some((1, CmpOp::Gt)),
            _ => None,
        };
        if let Some((len, op)) = op {
            split = Some((i, i + len, op));
            break;
        }
        i += 1;
    }
    let (left, cmp): (String, _) = match split {
        None => (f.to_string(), None),
        Some((l_end, r_start, op)) => {
            let right: String = chars[r_start..].iter().collect();
            (
                chars[..l_end].iter().collect(),
                Some((op, parse_operand(right.trim())?)),
            )
        }
    };
    let left = left.trim().strip_prefix('@')?;
    Some(Filter {
        left: parse_steps(&left.chars().collect::<Vec<_>>())?,
        cmp,
    })
}

fn parse_operand(s: &str) -> Option<Operand> {
    if let Some(text) = unquote(s) {
        return Some(Operand::Str(text));
    }
    if let Some(path) = s.strip_prefix('@') {
        return parse_steps(&path.chars().collect::<Vec<_>>()).map(Operand::Path);
    }
    match s {
        "true" => return Some(Operand::Bool(true)),
        "false" => return Some(Operand::Bool(false)),
        _ => {}
    }
    s.parse::<f64>().ok().map(Operand::Num)
}

fn eval_json_path<'a>(steps: &[Step], root: &'a Value) -> Vec<&'a Value> {
    let mut current = vec![root];
    for step in steps {
        let mut next = Vec::new();
        for v in current {
            match step {
                Step::Field(f) => {
                    if let Some(x) = v.as_object().and_then(|o| o.get(f)) {
                        next.push(x);
                    }
                }
                Step::Wildcard => match v {
                    Value::Object(o) => next.extend(o.values()),
                    Value::Array(a) => next.extend(a.iter()),
                    _ => {}
                },
                Step::Index(i) => {
                    if let Some(a) = v.as_array() {
                        let len = a.len() as i64;
                        let idx = if *i < 0 { len + i } else { *i };
                        if (0..len).contains(&idx) {
                            next.push(&a[idx as usize]);
                        }
                    }
                }
                Step::Slice(start, end) => {
                    if let Some(a) = v.as_array() {
                        let len = a.len() as i64;
                        let norm = |b: i64| if b < 0 { (len + b).max(0) } else { b.min(len) };
                        let s = start.map_or(0, norm);
                        let e = end.map_or(len, norm);
                        if s < e {
                            next.extend(&a[s as usize..e as usize]);
                        }
                    }
                }
                Step::Filter(filter) => {
                    if let Some(a) = v.as_array() {
                        next.extend(a.iter().filter(|el| filter_matches(filter, el)));
                    }
                }
                Step::Recursive => {
                    // Iterative pre-order walk: no recursion on user-controlled depth.
                    let mut stack = vec![v];
                    while let Some(n) = stack.pop() {
                        next.push(n);
                        match n {
                            Value::Object(o) => stack.extend(o.values().rev()),
                            Value::Array(a) => stack.extend(a.iter().rev()),
                            _ => {}
                        }
                    }
                }
            }
        }
        current = next;
    }
    current
}

fn filter_matches(filter: &Filter, el: &Value) -> bool {
    let lefts = eval_json_path(&filter.left, el);
    let Some((op, operand)) = &filter.cmp else {
        return !lefts.is_empty();
    };
    // Upstream compares exactly one value on each side.
    let [left] = lefts.as_slice() else {
        return false;
    };
    let right: Value = match operand {
        Operand::Str(s) => json!(s),
        Operand::Num(n) => json!(n),
        Operand::Bool(b) => json!(b),
        Operand::Path(p) => match eval_json_path(p, el).as_slice() {
            [r] => (*r).clone(),
            _ => return false,
        },
    };
    let ord = match (left, &right) {
        (Value::String(a), Value::String(b)) => a.cmp(b),
        (Value::Number(a), Value::Number(b)) => {
            match a
                .as_f64()
                .unwrap_or(0.0)
                .partial_cmp(&b.as_f64().unwrap_or(0.0))
            {
                Some(o) => o,
                None => return false,
            }
        }
        (Value::Bool(a), Value::Bool(b)) if matches!(op, CmpOp::Eq | CmpOp::Ne) => a.cmp(b),
        _ => return false,
    };
    match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
    }
}

// ---------------------------------------------------------------------------------------------
// Go formatting helpers
// ---------------------------------------------------------------------------------------------

/// fmt's `%v` for a float64: shortest digits, exponent form when the exponent is < -4 or >= 6.
fn go_float_v(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.unsigned_abs());
    }
    format!("{f}")
}

/// encoding/json's float64 text: plain unless < 1e-6 or >= 1e21, then "1e-07" becomes "1e-7".
fn go_json_float(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let sci = format!("{f:e}");
        let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{}", exp.unsigned_abs());
    }
    format!("{f}")
}

/// encoding/json.Marshal: sorted object keys, HTML-safe string escaping.
fn go_json(v: &Value) -> String {
    let mut out = String::new();
    // Iterative to stay safe on deep input: a stack of pending output fragments / values.
    enum Item<'a> {
        Val(&'a Value),
        Text(String),
    }
    let mut stack = vec![Item::Val(v)];
    while let Some(item) = stack.pop() {
        match item {
            Item::Text(t) => out.push_str(&t),
            Item::Val(v) => match v {
                Value::Null => out.push_str("null"),
                Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                    (Some(i), _) => out.push_str(&i.to_string()),
                    (None, Some(u)) => out.push_str(&u.to_string()),
                    _ => out.push_str(&go_json_float(n.as_f64().unwrap_or(0.0))),
                },
                Value::String(s) => out.push_str(&go_json_string(s)),
                Value::Array(a) => {
                    out.push('[');
                    stack.push(Item::Text("]".into()));
                    for (i, el) in a.iter().enumerate().rev() {
                        stack.push(Item::Val(el));
                        if i > 0 {
                            stack.push(Item::Text(",".into()));
                        }
                    }
                }
                Value::Object(o) => {
                    out.push('{');
                    stack.push(Item::Text("}".into()));
                    let mut keys: Vec<&String> = o.keys().collect();
                    keys.sort();
                    for (i, k) in keys.iter().enumerate().rev() {
                        if let Some(val) = o.get(*k) {
                            stack.push(Item::Val(val));
                        }
                        let sep = if i > 0 { "," } else { "" };
                        stack.push(Item::Text(format!("{sep}{}:", go_json_string(k))));
                    }
                }
            },
        }
    }
    out
}

fn go_json_string(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let mut out = String::with_capacity(quoted.len());
    for ch in quoted.chars() {
        match ch {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Labels and selectors
// ---------------------------------------------------------------------------------------------

/// labels.FormatLabels: "k=v" sorted by key, "<none>" when empty.
fn format_labels(m: Option<&Value>) -> String {
    let Some(m) = m.and_then(Value::as_object).filter(|m| !m.is_empty()) else {
        return "<none>".into();
    };
    let mut pairs: Vec<(&String, &str)> = m
        .iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// metav1.FormatLabelSelector: "<none>" for nil/empty selectors, "<error>" for invalid ones.
fn format_label_selector(sel: Option<&Value>) -> String {
    match selector_string(sel) {
        Ok(s) if s.is_empty() => "<none>".into(),
        Ok(s) => s,
        Err(()) => "<error>".into(),
    }
}

/// metav1.LabelSelectorAsSelector(sel).String().
fn selector_string(sel: Option<&Value>) -> Result<String, ()> {
    let Some(sel) = sel.filter(|v| !v.is_null()) else {
        return Ok(String::new());
    };
    let o = sel.as_object().ok_or(())?;
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(labels) = o.get("matchLabels").filter(|v| !v.is_null()) {
        for (k, v) in labels.as_object().ok_or(())? {
            let v = v.as_str().ok_or(())?;
            valid_label_key(k)?;
            valid_label_value(v)?;
            reqs.push((k.clone(), format!("{k}={v}")));
        }
    }
    if let Some(exprs) = o.get("matchExpressions").filter(|v| !v.is_null()) {
        for e in exprs.as_array().ok_or(())? {
            let key = e.get("key").and_then(Value::as_str).ok_or(())?;
            valid_label_key(key)?;
            let mut values: Vec<&str> = match e.get("values").filter(|v| !v.is_null()) {
                Some(vs) => vs
                    .as_array()
                    .ok_or(())?
                    .iter()
                    .map(|v| v.as_str().ok_or(()))
                    .collect::<Result<_, _>>()?,
                None => Vec::new(),
            };
            let rendered = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                op @ ("In" | "NotIn") => {
                    if values.is_empty() {
                        return Err(());
                    }
                    for v in &values {
                        valid_label_value(v)?;
                    }
                    values.sort_unstable();
                    let word = if op == "In" { "in" } else { "notin" };
                    format!("{key} {word} ({})", values.join(","))
                }
                "Exists" if values.is_empty() => key.to_string(),
                "DoesNotExist" if values.is_empty() => format!("!{key}"),
                _ => return Err(()),
            };
            reqs.push((key.to_string(), rendered));
        }
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(reqs
        .into_iter()
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join(","))
}

/// The gogo-protobuf `LabelSelector.String()` upstream prints for admission policy binding
/// param selectors.
fn go_proto_label_selector(sel: &Value) -> String {
    let mut labels: Vec<(&String, String)> = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k, v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    labels.sort();
    let labels: String = labels.iter().map(|(k, v)| format!("{k}: {v},")).collect();
    let exprs: String = list(sel, &["matchExpressions"])
        .iter()
        .map(|e| {
            let values: Vec<&str> = list(e, &["values"])
                .iter()
                .map(|v| v.as_str().unwrap_or(""))
                .collect();
            format!(
                "LabelSelectorRequirement{{Key:{},Operator:{},Values:[{}],}},",
                st(e, &["key"]),
                st(e, &["operator"]),
                values.join(" ")
            )
        })
        .collect();
    format!(
        "&LabelSelector{{MatchLabels:map[string]string{{{labels}}},MatchExpressions:[]LabelSelectorRequirement{{{exprs}}},}}"
    )
}

/// validation.IsQualifiedName: optional DNS-subdomain prefix, then a 63-char name.
fn valid_label_key(k: &str) -> Result<(), ()> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || !p.split('.').all(dns_label_ok))
    {
        return Err(());
    }
    if name.is_empty() || name.len() > 63 || !qualified_part_ok(name) {
        return Err(());
    }
    Ok(())
}

fn valid_label_value(v: &str) -> Result<(), ()> {
    if v.len() > 63 || (!v.is_empty() && !qualified_part_ok(v)) {
        return Err(());
    }
    Ok(())
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn qualified_part_ok(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) if f.is_ascii_alphanumeric() && l.is_ascii_alphanumeric() => b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')),
        _ => false,
    }
}

/// One DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn dns_label_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) if edge(f) && edge(l) => b.iter().all(|c| edge(c) || *c == b'-'),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// resource.Quantity canonical form
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum QFormat {
    DecimalSi,
    BinarySi,
    DecimalExponent,
}

/// The Quantity at `path` in canonical form; a missing quantity prints as Go's zero Quantity ("0").
fn quantity_at(obj: &Value, path: &[&str]) -> String {
    match at(obj, path).filter(|v| !v.is_null()) {
        Some(q) => quantity_value(q),
        None => "0".into(),
    }
}

/// `(*Quantity).String()` of an optional quantity: "<nil>" for a nil pointer.
fn quantity_ptr(q: Option<&Value>) -> String {
    match q.filter(|v| !v.is_null()) {
        Some(q) => quantity_value(q),
        None => "<nil>".into(),
    }
}

fn quantity_value(q: &Value) -> String {
    match q {
        Value::String(s) => canonical_quantity(s),
        Value::Number(n) => canonical_quantity(&n.to_string()),
        other => other.to_string(),
    }
}

/// `resource.MustParse(s).String()`; unparseable input is returned unchanged.
fn canonical_quantity(s: &str) -> String {
    parse_quantity(s).map_or_else(
        || s.to_string(),
        |(neg, m, scale, f)| format_quantity(neg, m, scale, f),
    )
}

/// (negative, mantissa, base-10 scale, format); values are rounded up to nano precision.
fn parse_quantity(s: &str) -> Option<(bool, u128, i32, QFormat)> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut neg = false;
    if let Some(&c) = b.first().filter(|c| **c == b'+' || **c == b'-') {
        neg = c == b'-';
        i = 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = &s[int_start..i];
    let mut frac_digits = "";
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = &s[frac_start..i];
    }
    if int_digits.is_empty() && frac_digits.is_empty() {
        return None;
    }
    let (format, exp10, pow1024): (QFormat, i32, u32) = match &s[i..] {
        "" => (QFormat::DecimalSi, 0, 0),
        "n" => (QFormat::DecimalSi, -9, 0),
        "u" => (QFormat::DecimalSi, -6, 0),
        "m" => (QFormat::DecimalSi, -3, 0),
        "k" => (QFormat::DecimalSi, 3, 0),
        "M" => (QFormat::DecimalSi, 6, 0),
        "G" => (QFormat::DecimalSi, 9, 0),
        "T" => (QFormat::DecimalSi, 12, 0),
        "P" => (QFormat::DecimalSi, 15, 0),
        "E" => (QFormat::DecimalSi, 18, 0),
        "Ki" => (QFormat::BinarySi, 0, 1),
        "Mi" => (QFormat::BinarySi, 0, 2),
        "Gi" => (QFormat::BinarySi, 0, 3),
        "Ti" => (QFormat::BinarySi, 0, 4),
        "Pi" => (QFormat::BinarySi, 0, 5),
        "Ei" => (QFormat::BinarySi, 0, 6),
        rest if rest.starts_with(['e', 'E']) => {
            let e: i32 = rest[1..].parse().ok()?;
            (QFormat::DecimalExponent, e, 0)
        }
        _ => return None,
    };
    let digits = format!("{int_digits}{frac_digits}");
    let digits = digits.trim_start_matches('0');
    // Keep the arithmetic comfortably inside u128; huge inputs are passed through verbatim.
    if digits.len() > 24 || !(-60..=60).contains(&exp10) {
        return None;
    }
    let mut mantissa: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    mantissa = mantissa.checked_mul(1024u128.checked_pow(pow1024)?)?;
    let mut scale = exp10 - i32::try_from(frac_digits.len()).ok()?;
    if scale < -9 {
        // Quantities keep nano precision, rounding away from zero.
        let shift = u32::try_from(-9 - scale).ok()?;
        mantissa = match 10u128.checked_pow(shift) {
            Some(d) => mantissa / d + u128::from(!mantissa.is_multiple_of(d)),
            None => u128::from(mantissa != 0),
        };
        scale = -9;
    }
    Some((neg, mantissa, scale, format))
}

fn format_quantity(neg: bool, mantissa: u128, scale: i32, format: QFormat) -> String {
    if mantissa == 0 {
        return "0".into();
    }
    let sign = if neg { "-" } else { "" };
    let mut format = format;
    if format == QFormat::BinarySi {
        // Binary only for integers of magnitude >= 1024; otherwise DecimalSI avoids rounding.
        let integer = if scale >= 0 {
            10u128
                .checked_pow(scale.unsigned_abs())
                .and_then(|p| mantissa.checked_mul(p))
        } else {
            10u128
                .checked_pow(scale.unsigned_abs())
                .filter(|d| mantissa.is_multiple_of(*d))
                .map(|d| mantissa / d)
        };
        match integer.filter(|v| *v >= 1024) {
            Some(mut v) => {
                let mut e = 0;
                while v % 1024 == 0 && e < 6 {
                    v /= 1024;
                    e += 1;
                }
                let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][e];
                return format!("{sign}{v}{suffix}");
            }
            None => format = QFormat::DecimalSi,
        }
    }
    let (mut m, mut e) = (mantissa, scale);
    while m % 10 == 0 {
        m /= 10;
        e += 1;
    }
    // Exponent down to a multiple of three.
    let r = e.rem_euclid(3);
    match m.checked_mul(10u128.pow(r.unsigned_abs())) {
        Some(v) => {
            m = v;
            e -= r;
        }
        None => return format!("{sign}{m}e{e}"),
    }
    let suffix = match (format, e) {
        (_, 0) => String::new(),
        (QFormat::DecimalSi, -9) => "n".into(),
        (QFormat::DecimalSi, -6) => "u".into(),
        (QFormat::DecimalSi, -3) => "m".into(),
        (QFormat::DecimalSi, 3) => "k".into(),
        (QFormat::DecimalSi, 6) => "M".into(),
        (QFormat::DecimalSi, 9) => "G".into(),
        (QFormat::DecimalSi, 12) => "T".into(),
        (QFormat::DecimalSi, 15) => "P".into(),
        (QFormat::DecimalSi, 18) => "E".into(),
        _ => format!("e{e}"),
    };
    format!("{sign}{m}{suffix}")
}

// ---------------------------------------------------------------------------------------------
// JSON access helpers (all total on arbitrary input)
// ---------------------------------------------------------------------------------------------

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter()
        .try_fold(v, |cur, key| cur.as_object().and_then(|o| o.get(*key)))
}

/// The string at `path`, "" when missing or not a string.
fn st<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    opt_str(v, path).unwrap_or("")
}

fn opt_str<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path).and_then(Value::as_str)
}

fn nonempty<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    opt_str(v, path).filter(|s| !s.is_empty())
}

fn as_int(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_u64().map(|_| i64::MAX))
        .or_else(|| v.as_f64().map(|f| f as i64))
}

/// The integer at `path`, 0 when missing.
fn int(v: &Value, path: &[&str]) -> i64 {
    at(v, path).and_then(as_int).unwrap_or(0)
}

fn opt_bool(v: &Value, path: &[&str]) -> Option<bool> {
    at(v, path).and_then(Value::as_bool)
}

fn boolean(v: &Value, path: &[&str]) -> bool {
    opt_bool(v, path).unwrap_or(false)
}

/// Set and not null (Go's non-nil pointer).
fn present(v: &Value, path: &[&str]) -> bool {
    at(v, path).is_some_and(|x| !x.is_null())
}

fn list<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn map_len(v: &Value, path: &[&str]) -> usize {
    at(v, path).and_then(Value::as_object).map_or(0, Map::len)
}

fn name(obj: &Value) -> &str {
    st(obj, &["metadata", "name"])
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc);
    // Go's zero time.Time (what "null"/unset decode to) prints as "<unknown>".
    (t != DateTime::<Utc>::MIN_UTC && t.timestamp() != GO_ZERO_TIME_UNIX).then_some(t)
}

/// 0001-01-01T00:00:00Z as Unix seconds.
const GO_ZERO_TIME_UNIX: i64 = -62_135_596_800;

/// translateTimestampSince: "<unknown>" for unset timestamps.
fn since(ts: Option<&str>, now: DateTime<Utc>) -> String {
    match ts.and_then(parse_time) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".into(),
    }
}

fn age(obj: &Value, now: DateTime<Utc>) -> String {
    since(opt_str(obj, &["metadata", "creationTimestamp"]), now)
}

/// The default convertor's "Created At": creationTimestamp in RFC 3339, UTC, whole seconds.
fn created_at_rfc3339(obj: &Value) -> String {
    match opt_str(obj, &["metadata", "creationTimestamp"]) {
        Some(s) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => t
                .with_timezone(&Utc)
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string(),
            Err(_) => s.to_string(),
        },
        None => "0001-01-01T00:00:00Z".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Column descriptions (the swagger docs upstream takes from k8s.io/api types)
// ---------------------------------------------------------------------------------------------

const D_META_NAME: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const D_META_CREATED: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const D_POD_IP: &str = "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.";
const D_POD_NODE: &str = "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename";
const D_POD_NOMINATED: &str = "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.";
const D_POD_GATES: &str = "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates";
const D_RC_SPEC_REPLICAS: &str = "Replicas is the number of desired replicas. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller#what-is-a-replicationcontroller";
const D_RC_STATUS_REPLICAS: &str = "Replicas is the most recently observed number of replicas. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller#what-is-a-replicationcontroller";
const D_RC_READY: &str = "The number of ready replicas for this replication controller.";
const D_RC_SELECTOR: &str = "Selector is a label query over pods that should match the Replicas count. If Selector is empty, it is defaulted to the labels present on the Pod template. Label keys and values that must match in order to be controlled by this replication controller, if empty defaulted to labels on Pod template. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
const D_RS_SPEC_REPLICAS: &str = "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset";
const D_RS_STATUS_REPLICAS: &str = "Replicas is the most recently observed number of non-terminating pods. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset";
const D_RS_READY: &str =
    "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.";
const D_RS_SELECTOR: &str = "Selector is a label query over pods that should match the replica count. Label keys and values that must match in order to be controlled by this replica set. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
const D_DS_DESIRED: &str = "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod). More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/";
const D_DS_CURRENT: &str = "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod. More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/";
const D_DS_READY: &str = "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.";
const D_DS_UPDATED: &str = "The total number of nodes that are running updated daemon pod";
const D_DS_AVAILABLE: &str = "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)";
const D_POD_NODE_SELECTOR: &str = "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node. More info: https://kubernetes.io/docs/concepts/configuration/assign-pod-node/";
const D_DS_SELECTOR: &str = "A label query over pods that are managed by the daemon set. Must match in order to be controlled. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
const D_JOB_SUCCEEDED: &str = "The number of pods which reached phase Succeeded. The value increases monotonically for a given spec. However, it may decrease in reaction to scale down of elastic indexed jobs.";
const D_JOB_SELECTOR: &str = "A label query over pods that should match the pod count. Normally, the system sets this field for you. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
const D_CJ_SCHEDULE: &str = "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.";
const D_CJ_TZ: &str = "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones. If not specified, this will default to the time zone of the kube-controller-manager process. The set of valid time zone names and the time zone offset is loaded from the system-wide time zone database by the API server during CronJob validation and the controller manager during execution. If no system-wide time zone database can be found a bundled version of the database is used instead. If the time zone name becomes invalid during the lifetime of a CronJob or due to a change in host configuration, the controller will stop creating new new Jobs and will create a system event with the reason UnknownTimeZone. More information can be found in https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/#time-zones";
const D_CJ_SUSPEND: &str = "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.  Defaults to false.";
const D_CJ_ACTIVE: &str = "A list of pointers to currently running jobs.";
const D_CJ_LAST: &str = "Information when was the last time the job was successfully scheduled.";
const D_SVC_TYPE: &str = "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. \"ExternalName\" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types";
const D_SVC_CLUSTER_IP: &str = "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies";
const D_SVC_EXTERNAL_IPS: &str = "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system.";
const D_SVC_PORTS: &str = "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies";
const D_SVC_SELECTOR: &str = "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/";
const D_EP_SUBSETS: &str = "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service.";
const D_NODE_KUBELET: &str = "Kubelet Version reported by the node.";
const D_NODE_ADDRESSES: &str = "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).";
const D_NODE_OS: &str =
    "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).";
const D_NODE_KERNEL: &str =
    "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).";
const D_NODE_CRI: &str = "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).";
const D_EV_LAST: &str = "The time at which the most recent occurrence of this event was recorded.";
const D_EV_TYPE: &str =
    "Type of this event (Normal, Warning), new types could be added in the future";
const D_EV_REASON: &str = "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.";
const D_EV_OBJECT: &str = "The object that this event is about.";
const D_EV_FIELDPATH: &str = "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object.";
const D_EV_SOURCE: &str =
    "The component reporting this event. Should be a short machine understandable string.";
const D_EV_MESSAGE: &str = "A human-readable description of the status of this operation.";
const D_EV_FIRST: &str =
    "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)";
const D_EV_COUNT: &str = "The number of times this event has occurred.";
const D_SECRET_TYPE: &str = "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types";
const D_SECRET_DATA: &str = "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4";
const D_SA_SECRETS: &str = "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use. Pods are only limited to this list if this service account has a \"kubernetes.io/enforce-mountable-secrets\" annotation set to \"true\". The \"kubernetes.io/enforce-mountable-secrets\" annotation is deprecated since v1.32. Prefer separate namespaces to isolate access to mounted secrets. This field should not be used to find auto-generated service account token secrets for use outside of pods. Instead, tokens can be requested directly using the TokenRequest API, or service account token secrets can be manually created. More info: https://kubernetes.io/docs/concepts/configuration/secret";
const D_PV_CAPACITY: &str = "capacity is the description of the persistent volume's resources and capacity. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#capacity";
const D_PV_MODES: &str = "accessModes contains all ways the volume can be mounted. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes";
const D_PV_RECLAIM: &str = "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim. Valid options are Retain (default for manually created PersistentVolumes), Delete (default for dynamically provisioned PersistentVolumes), and Recycle (deprecated). Recycle must be supported by the volume plugin underlying this PersistentVolume. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#reclaiming";
const D_PV_PHASE: &str = "phase indicates if a volume is available, bound to a claim, or released by a claim. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#phase";
const D_PV_CLAIM: &str = "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim. Expected to be non-nil when bound. claim.VolumeName is the authoritative bind between PV and PVC. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#binding";
const D_PV_REASON: &str = "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI.";
const D_PV_MODE: &str = "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state. Value of Filesystem is implied when not included in spec.";
const D_PVC_PHASE: &str = "phase represents the current phase of PersistentVolumeClaim.";
const D_PVC_VOLUME: &str =
    "volumeName is the binding reference to the PersistentVolume backing this claim.";
const D_PVC_CAPACITY: &str = "capacity represents the actual resources of the underlying volume.";
const D_PVC_MODES: &str = "accessModes contains the actual access modes the volume backing the PVC has. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes-1";
const D_PVC_MODE: &str = "volumeMode defines what type of volume is required by the claim. Value of Filesystem is implied when not included in claim spec.";
const D_DEP_UPDATED: &str = "Total number of non-terminating pods targeted by this deployment that have the desired template spec.";
const D_DEP_AVAILABLE: &str = "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment.";
const D_DEP_SELECTOR: &str = "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment. It must match the pod template's labels.";
const D_HPA_REF: &str = "scaleTargetRef points to the target resource to scale, and is used to the pods for which metrics should be collected, as well as to actually change the replica count.";
const D_HPA_METRICS: &str = "metrics contains the specifications for which to use to calculate the desired replica count (the maximum replica count across all metrics will be used).  The desired replica count is calculated multiplying the ratio between the target value and the current value by the current number of pods.  Ergo, metrics used must decrease as the pod count is increased, and vice-versa.  See the individual metric source types for more information about how each type of metric must respond. If not set, the default metric will be set to 80% average CPU utilization.";
const D_HPA_MIN: &str = "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.  It defaults to 1 pod.  minReplicas is allowed to be 0 if the alpha feature gate HPAScaleToZero is enabled and at least one Object or External metric is configured.  Scaling is active as long as at least one metric value is available.";
const D_HPA_MAX: &str = "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up. It cannot be less that minReplicas.";
const D_HPA_CURRENT: &str = "currentReplicas is current number of replicas of pods managed by this autoscaler, as last seen by the autoscaler.";
const D_CM_DATA: &str = "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.";
const D_NP_PODSELECTOR: &str = "podSelector selects the pods to which this NetworkPolicy object applies. The array of ingress rules is applied to any pods selected by this field. Multiple network policies can select the same set of pods. In this case, the ingress rules for each are combined additively. This field is NOT optional and follows standard label selector semantics. An empty podSelector matches all pods in this namespace.";
const D_RB_ROLEREF: &str = "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error. This field is immutable.";
const D_CRB_ROLEREF: &str = "RoleRef can only reference a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error. This field is immutable.";
const D_CSR_SIGNER: &str = "signerName indicates the requested signer, and is a qualified name.\n\nList/watch requests for CertificateSigningRequests can filter on this field using a \"spec.signerName=NAME\" fieldSelector.\n\nWell-known Kubernetes signers are:  1. \"kubernetes.io/kube-apiserver-client\": issues client certificates that can be used to authenticate to kube-apiserver.   Requests for this signer are never auto-approved by kube-controller-manager, can be issued by the \"csrsigning\" controller in kube-controller-manager.  2. \"kubernetes.io/kube-apiserver-client-kubelet\": issues client certificates that kubelets use to authenticate to kube-apiserver.   Requests for this signer can be auto-approved by the \"csrapproving\" controller in kube-controller-manager, and can be issued by the \"csrsigning\" controller in kube-controller-manager.  3. \"kubernetes.io/kubelet-serving\" issues serving certificates that kubelets use to serve TLS endpoints, which kube-apiserver can connect to securely.   Requests for this signer are never auto-approved by kube-controller-manager, and can be issued by the \"csrsigning\" controller in kube-controller-manager.\n\nMore details are available at https://k8s.io/docs/reference/access-authn-authz/certificate-signing-requests/#kubernetes-signers\n\nCustom signerNames can also be specified. The signer defines:  1. Trust distribution: how trust (CA bundles) are distributed.  2. Permitted subjects: and behavior when a disallowed subject is requested.  3. Required, permitted, or forbidden x509 extensions in the request (including whether subjectAltNames are allowed, which types, restrictions on allowed values) and behavior when a disallowed extension is requested.  4. Required, permitted, or forbidden key usages / extended key usages.  5. Expiration/certificate lifetime: whether it is fixed by the signer, configurable by the admin.  6. Whether or not requests for CA certificates are allowed.";
const D_CSR_REQUEST: &str = "request contains an x509 certificate signing request encoded in a \"CERTIFICATE REQUEST\" PEM block. When serialized as JSON or YAML, the data is additionally base64-encoded.";
const D_CSR_EXPIRATION: &str = "expirationSeconds is the requested duration of validity of the issued certificate. The certificate signer may issue a certificate with a different validity duration so a client must check the delta between the notBefore and and notAfter fields in the issued certificate to determine the actual duration.\n\nThe v1.22+ in-tree implementations of the well-known Kubernetes signers will honor this field as long as the requested duration is not greater than the maximum duration they will honor per the --cluster-signing-duration CLI flag to the Kubernetes controller manager.\n\nCertificate signers may not honor this field for various reasons:\n\n  1. Old signer that is unaware of the field (such as the in-tree      implementations prior to v1.22)   2. Signer whose configured maximum is shorter than the requested duration   3. Signer whose configured minimum is longer than the requested duration\n\nThe minimum valid value for expirationSeconds is 600, i.e. 10 minutes.";
const D_CSR_CONDITIONS: &str = "conditions applied to the request. Known conditions are \"Approved\", \"Denied\", and \"Failed\".";
const D_LEASE_HOLDER: &str = "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.";
const D_LC_LEASENAME: &str = "LeaseName is the name of the lease for which this candidate is contending. The limits on this field are the same as on Lease.name. Multiple lease candidates may reference the same Lease.name. This field is immutable.";
const D_SC_PROVISIONER: &str = "provisioner indicates the type of the provisioner.";
const D_SC_RECLAIM: &str = "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class. Defaults to Delete.";
const D_SC_BINDING: &str = "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.  When unset, VolumeBindingImmediate is used. This field is only honored by servers that enable the VolumeScheduling feature.";
const D_SC_EXPANSION: &str =
    "allowVolumeExpansion shows whether the storage class allow volume expand.";
const D_VAC_DRIVER: &str = "Name of the CSI driver This field is immutable.";
const D_CR_REVISION: &str = "Revision indicates the revision of the state represented by Data.";
const D_PC_VALUE: &str = "value represents the integer value of this priority class. This is the actual priority that pods receive when they have the name of this class in their pod spec.";
const D_PC_DEFAULT: &str = "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class. Only one PriorityClass can be marked as `globalDefault`. However, if more than one PriorityClasses exists with their `globalDefault` field set to true, the smallest value of such global default PriorityClasses will be used as the default priority.";
const D_PC_PREEMPTION: &str = "preemptionPolicy is the Policy for preempting pods with lower priority. One of Never, PreemptLowerPriority. Defaults to PreemptLowerPriority if unset.";
const D_VA_ATTACHER: &str = "attacher indicates the name of the volume driver that MUST handle this request. This is the name returned by GetPluginName().";
const D_VA_PV: &str =
    "persistentVolumeName represents the name of the persistent volume to attach.";
const D_VA_NODE: &str = "nodeName represents the node that the volume should be attached to.";
const D_VA_ATTACHED: &str = "attached indicates the volume is successfully attached. This field must only be set by the entity completing the attach operation, i.e. the external-attacher.";
const D_ES_ADDRESSTYPE: &str = "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type. This field is immutable after creation. The following address types are currently supported: * IPv4: Represents an IPv4 Address. * IPv6: Represents an IPv6 Address. * FQDN: Represents a Fully Qualified Domain Name. (Deprecated) The EndpointSlice controller only generates, and kube-proxy only processes, slices of addressType \"IPv4\" and \"IPv6\". No semantics are defined for the \"FQDN\" type.";
const D_ES_PORTS: &str = "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must have a unique name. Each slice may include a maximum of 100 ports. Services always have at least 1 port, so EndpointSlices generated by the EndpointSlice controller will likewise always have at least 1 port. EndpointSlices used for other purposes may have an empty ports list.";
const D_ES_ENDPOINTS: &str = "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 endpoints.";
const D_CSID_ATTACH: &str = "attachRequired indicates this CSI volume driver requires an attach operation (because it implements the CSI ControllerPublishVolume() method), and that the Kubernetes attach detach controller should call the attach volume interface which checks the volumeattachment status and waits until the volume is attached before proceeding to mounting. The CSI external-attacher coordinates with CSI volume driver and updates the volumeattachment status when the attach operation is complete. If the CSIDriverRegistry feature gate is enabled and the value is specified to false, the attach operation will be skipped. Otherwise the attach operation will be called.\n\nThis field is immutable.";
const D_CSID_PODINFO: &str = "podInfoOnMount indicates this CSI volume driver requires additional pod information (like podName, podUID, etc.) during mount operations, if set to true. If set to false, pod information will not be passed on mount. Default is false.\n\nThe CSI driver specifies podInfoOnMount as part of driver deployment. If true, Kubelet will pass pod information as VolumeContext in the CSI NodePublishVolume() calls. The CSI driver is responsible for parsing and validating the information passed in as VolumeContext.\n\nThe following VolumeContext will be passed if podInfoOnMount is set to true. This list might grow, but the prefix will be used. \"csi.storage.k8s.io/pod.name\": pod.Name \"csi.storage.k8s.io/pod.namespace\": pod.Namespace \"csi.storage.k8s.io/pod.uid\": string(pod.UID) \"csi.storage.k8s.io/ephemeral\": \"true\" if the volume is an ephemeral inline volume                                 defined by a CSIVolumeSource, otherwise \"false\"\n\n\"csi.storage.k8s.io/ephemeral\" is a new feature in Kubernetes 1.16. It is only required for drivers which support both the \"Persistent\" and \"Ephemeral\" VolumeLifecycleMode. Other drivers can leave pod info disabled and/or ignore this field. As Kubernetes 1.15 doesn't support this field, drivers can only support one mode when deployed on such a cluster and the deployment determines which mode that is, for example via a command line parameter of the driver.\n\nThis field was immutable in Kubernetes < 1.29 and now is mutable.";
const D_CSID_CAPACITY: &str = "storageCapacity indicates that the CSI volume driver wants pod scheduling to consider the storage capacity that the driver deployment will report by creating CSIStorageCapacity objects with capacity information, if set to true.\n\nThe check can be enabled immediately when deploying a driver. In that case, provisioning new volumes with late binding will pause until the driver deployment has published some suitable CSIStorageCapacity object.\n\nAlternatively, the driver can be deployed with the field unset or false and it can be flipped later when storage capacity information has been published.\n\nThis field was immutable in Kubernetes <= 1.22 and now is mutable.";
const D_CSID_TOKENS: &str = "tokenRequests indicates the CSI driver needs pods' service account tokens it is mounting volume for to do necessary authentication. Kubelet will pass the tokens in VolumeContext in the CSI NodePublishVolume calls. The CSI driver should parse and validate the following VolumeContext: \"csi.storage.k8s.io/serviceAccount.tokens\": {   \"<audience>\": {     \"token\": <token>,     \"expirationTimestamp\": <expiration timestamp in RFC3339>,   },   ... }\n\nNote: Audience in each TokenRequest should be different and at most one token is empty string. To receive a new token after expiry, RequiresRepublish can be used to trigger NodePublishVolume periodically.";
const D_CSID_REPUBLISH: &str = "requiresRepublish indicates the CSI driver wants `NodePublishVolume` being periodically called to reflect any possible change in the mounted volume. This field defaults to false.\n\nNote: After a successful initial NodePublishVolume call, subsequent calls to NodePublishVolume should only update the contents of the volume. New mount points will not be seen by a running container.";
const D_CSID_MODES: &str = "volumeLifecycleModes defines what kind of volumes this CSI volume driver supports. The default if the list is empty is \"Persistent\", which is the usage defined by the CSI specification and implemented in Kubernetes via the usual PV/PVC mechanism.\n\nThe other mode is \"Ephemeral\". In this mode, volumes are defined inline inside the pod spec with CSIVolumeSource and their lifecycle is tied to the lifecycle of that pod. A driver has to be aware of this because it is only going to get a NodePublishVolume call for such a volume.\n\nFor more information about implementing this mode, see https://kubernetes-csi.github.io/docs/ephemeral-local-volumes.html A driver can support one or more of these modes and more modes may be added in the future.\n\nThis field is beta. This field is immutable.";
const D_CSISC_CLASS: &str = "storageClassName represents the name of the StorageClass that the reported capacity applies to. It must meet the same requirements as the name of a StorageClass object (non-empty, DNS subdomain). If that object no longer exists, the CSIStorageCapacity object is obsolete and should be removed by its creator. This field is immutable.";
const D_CSISC_CAPACITY: &str = "capacity is the value reported by the CSI driver in its GetCapacityResponse for a GetCapacityRequest with topology and parameters that match the previous fields.\n\nThe semantic is currently (CSI spec 1.2) defined as: The available capacity, in bytes, of the storage that can be used to provision volumes. If not set, that information is currently unavailable.";
const D_FS_PL: &str =
    "`name` is the name of the priority level configuration being referenced Required.";
const D_FS_PRECEDENCE: &str = "`matchingPrecedence` is used to choose among the FlowSchemas that match a given request. The chosen FlowSchema is among those with the numerically lowest (which we take to be logically highest) MatchingPrecedence.  Each MatchingPrecedence value must be ranged in [1,10000]. Note that if the precedence is not specified, it will be set to 1000 as default.";
const D_FS_DISTINGUISHER: &str = "`distinguisherMethod` defines how to compute the flow distinguisher for requests that match this schema. `nil` specifies that the distinguisher is disabled and thus will always be the empty string.";
const D_PL_TYPE: &str = "`type` indicates whether this priority level is subject to limitation on request execution.  A value of `\"Exempt\"` means that requests of this priority level are not subject to a limit (and thus are never queued) and do not detract from the capacity made available to other priority levels.  A value of `\"Limited\"` means that (a) requests of this priority level _are_ subject to limits and (b) some of the server's limited capacity is made available exclusively to this priority level. Required.";
const D_PL_SHARES: &str = "`nominalConcurrencyShares` (NCS) contributes to the computation of the NominalConcurrencyLimit (NominalCL) of this level. This is the number of execution seats available at this priority level. This is used both for requests dispatched from this priority level as well as requests dispatched from other priority levels borrowing seats from this level. The server's concurrency limit (ServerCL) is divided among the Limited priority levels in proportion to their NCS values:\n\nNominalCL(i)  = ceil( ServerCL * NCS(i) / sum_ncs ) sum_ncs = sum[priority level k] NCS(k)\n\nBigger numbers mean a larger nominal concurrency limit, at the expense of every other priority level.\n\nIf not specified, this field defaults to a value of 30.\n\nSetting this field to zero supports the construction of a \"jail\" for this priority level that is used to hold some request(s)";
const D_PL_QUEUES: &str = "`queues` is the number of queues for this priority level. The queues exist independently at each apiserver. The value must be positive.  Setting it to 1 effectively precludes shufflesharding and thus makes the distinguisher method of associated flow schemas irrelevant.  This field has a default value of 64.";
const D_PL_HANDSIZE: &str = "`handSize` is a small positive number that configures the shuffle sharding of requests into queues.  When enqueuing a request at this priority level the request's flow identifier (a string pair) is hashed and the hash value is used to shuffle the list of queues and deal a hand of the size specified here.  The request is put into one of the shortest queues in that hand. `handSize` must be no larger than `queues`, and should be significantly smaller (so that a few heavy flows do not saturate most of the queues).  See the user-facing documentation for more extensive guidance on setting this field.  This field has a default value of 8.";
const D_PL_QLL: &str = "`queueLengthLimit` is the maximum number of requests allowed to be waiting in a given queue of this priority level at a time; excess requests are rejected.  This value must be positive.  If not specified, it will be defaulted to 50.";
const D_SV_COMMON: &str = "If all API server instances agree on the same encoding storage version, then this field is set to that version. Otherwise this field is left empty. API servers should finish updating its storageVersionStatus entry before serving write operations, so that this field will be in sync with the reality.";
const D_SV_VERSIONS: &str = "The reported versions per API server instance.";
const D_RSL_NODE: &str = "NodeName identifies the node which provides the resources in this pool. A field selector can be used to list only ResourceSlice objects belonging to a certain node.\n\nThis field can be used to limit access from nodes to ResourceSlices with the same node name. It also indicates to autoscalers that adding new nodes of the same type as some old node might also make new resources available.\n\nExactly one of NodeName, NodeSelector, AllNodes, and PerDeviceNodeSelection must be set. This field is immutable.";
const D_RSL_DRIVER: &str = "Driver identifies the DRA driver providing the capacity information. A field selector can be used to list only ResourceSlice objects with a certain driver name.\n\nMust be a DNS subdomain and should end with a DNS domain owned by the vendor of the driver. This field is immutable.";
const D_RSL_POOL: &str = "Name is used to identify the pool. For node-local devices, this is often the node name, but this is not required.\n\nIt must not be longer than 253 characters and must consist of one or more DNS sub-domains separated by slashes. This field is immutable.";
const D_SCIDR_CIDRS: &str = "CIDRs defines the IP blocks in CIDR notation (e.g. \"192.168.0.0/24\" or \"2001:db8::/64\") from which to assign service cluster IPs. Max of two CIDRs is allowed, one of each IP family. This field is immutable.";
const D_IPA_PARENT: &str = "ParentRef references the resource that an IPAddress is attached to. An IPAddress must reference a parent object.";
const D_CTB_SIGNER: &str = "signerName indicates the associated signer, if any.\n\nIn order to create or update a ClusterTrustBundle that sets signerName, you must have the following cluster-scoped permission: group=certificates.k8s.io resource=signers resourceName=<the signer name> verb=attest.\n\nIf signerName is not empty, then the ClusterTrustBundle object must be named with the signer name as a prefix (translating slashes to colons). For example, for the signer name `example.com/foo`, valid ClusterTrustBundle object names include `example.com:foo:abc` and `example.com:foo:v1`.\n\nIf signerName is empty, then the ClusterTrustBundle object's name must not have such a prefix.\n\nList/watch requests for ClusterTrustBundles can filter on this field using a `spec.signerName=NAME` field selector.";

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-06-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// An RFC 3339 timestamp `secs` seconds before `now()`.
    fn ago(secs: i64) -> String {
        (now() - Duration::seconds(secs))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    fn core(kind: &str, obj: &Value) -> Vec<Value> {
        cells("", kind, obj, None, now())
    }

    fn col_names(group: &str, kind: &str) -> Vec<String> {
        columns(group, kind, None)
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn wide_names(group: &str, kind: &str) -> Vec<String> {
        columns(group, kind, None)
            .iter()
            .filter(|c| c["priority"] == 1)
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn human_duration_upstream_cases() {
        let sec = Duration::seconds;
        let min = Duration::minutes;
        let hour = Duration::hours;
        let ms = Duration::milliseconds;
        let cases: Vec<(Duration, &str)> = vec![
            (sec(1), "1s"),
            (sec(70), "70s"),
            (sec(190), "3m10s"),
            (min(70), "70m"),
            (hour(47), "47h"),
            (hour(49), "2d1h"),
            (hour(8 * 24 + 2), "8d"),
            (hour(367 * 24), "367d"),
            (hour(365 * 2 * 24 + 25), "2y1d"),
            (hour(365 * 8 * 24 + 2), "8y"),
            // TestHumanDurationBoundaries
            (sec(-2), "<invalid>"),
            (sec(-2) + Duration::nanoseconds(1), "0s"),
            (Duration::zero(), "0s"),
            (sec(1) - ms(1), "0s"),
            (min(2) - ms(1), "119s"),
            (min(2), "2m"),
            (min(2) + sec(1), "2m1s"),
            (min(10) - ms(1), "9m59s"),
            (min(10), "10m"),
            (min(10) + sec(1), "10m"),
            (hour(3) - ms(1), "179m"),
            (hour(3), "3h"),
            (hour(3) + min(1), "3h1m"),
            (hour(8) - ms(1), "7h59m"),
            (hour(8), "8h"),
            (hour(8) + min(59), "8h"),
            (hour(48) - ms(1), "47h"),
            (hour(48), "2d"),
            (hour(49), "2d1h"),
            (hour(8 * 24) - ms(1), "7d23h"),
            (hour(8 * 24), "8d"),
            (hour(8 * 24 + 23), "8d"),
            (hour(2 * 365 * 24) - ms(1), "729d"),
            (hour(2 * 365 * 24), "2y"),
            (hour(2 * 365 * 24 + 23), "2y"),
            (hour(2 * 365 * 24 + 23) + min(59), "2y"),
            (hour(2 * 365 * 24 + 24) - ms(1), "2y"),
            (hour(2 * 365 * 24 + 24), "2y1d"),
            (hour(3 * 365 * 24), "3y"),
            (hour(7 * 365 * 24), "7y"),
            (hour(8 * 365 * 24) - ms(1), "7y364d"),
            (hour(8 * 365 * 24), "8y"),
            (hour(8 * 365 * 24 + 364 * 24), "8y"),
            (hour(9 * 365 * 24), "9y"),
            // Beyond Go's ~292y Duration range, time.Sub saturates.
            (Duration::days(365 * 1000), "292y"),
            (Duration::days(-365 * 1000), "<invalid>"),
        ];
        for (d, want) in cases {
            assert_eq!(human_duration(d), want, "{d:?}");
        }
    }

    fn running_pod() -> Value {
        json!({
            "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": ago(3600)},
            "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "nginx"}]},
            "status": {
                "phase": "Running",
                "podIP": "10.0.0.5",
                "podIPs": [{"ip": "10.0.0.5"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{
                    "name": "app", "ready": true, "restartCount": 1,
                    "state": {"running": {"startedAt": ago(300)}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                                 "finishedAt": ago(300)}}
                }]
            }
        })
    }

    #[test]
    fn pod_columns() {
        assert_eq!(
            col_names("", "Pod"),
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        assert_eq!(
            wide_names("", "Pod"),
            ["IP", "Node", "Nominated Node", "Readiness Gates"]
        );
        let cols = columns("", "Pod", None);
        assert_eq!(cols[0]["format"], "name");
        assert_eq!(cols[3]["type"], "string");
        assert_eq!(cols[1]["format"], "");
        assert!(
            cols[4]["description"]
                .as_str()
                .unwrap()
                .starts_with("CreationTimestamp")
        );
    }

    #[test]
    fn pod_running_with_restart() {
        assert_eq!(
            core("Pod", &running_pod()),
            json!([
                "web-1",
                "1/1",
                "Running",
                "1 (5m ago)",
                "60m",
                "10.0.0.5",
                "node-a",
                "<none>",
                "<none>"
            ])
            .as_array()
            .unwrap()
            .clone()
        );
    }

    #[test]
    fn pod_crash_loop() {
        let pod = json!({
            "metadata": {"name": "crash", "creationTimestamp": ago(600)},
            "spec": {"containers": [{"name": "app"}]},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "app", "ready": false, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(30)}}
            }]}
        });
        let c = core("Pod", &pod);
        assert_eq!(c[1], "0/1");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], "4 (30s ago)");
        assert_eq!(c[4], "10m");
        assert_eq!(c[5], "<none>");
        assert_eq!(c[6], "<none>");
    }

    #[test]
    fn pod_terminating_and_node_lost() {
        let mut pod = running_pod();
        pod["metadata"]["deletionTimestamp"] = json!(ago(5));
        assert_eq!(core("Pod", &pod)[2], "Terminating");
        pod["status"]["reason"] = json!("NodeLost");
        assert_eq!(core("Pod", &pod)[2], "Unknown");
        // A finished pod being deleted keeps its final status.
        let mut done = json!({
            "metadata": {"name": "done", "deletionTimestamp": ago(5)},
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [{
                "name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}
        });
        assert_eq!(core("Pod", &done)[2], "Completed");
        done["status"]["phase"] = json!("Running");
        assert_eq!(core("Pod", &done)[2], "Terminating");
    }

    #[test]
    fn pod_init_containers() {
        let mut pod = json!({
            "metadata": {"name": "init", "creationTimestamp": ago(20)},
            "spec": {
                "initContainers": [{"name": "setup"}, {"name": "migrate"}],
                "containers": [{"name": "app"}]
            },
            "status": {
                "phase": "Pending",
                "initContainerStatuses": [
                    {"name": "setup", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    {"name": "migrate", "state": {"running": {}}}
                ],
                "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "PodInitializing"}}}]
            }
        });
        let c = core("Pod", &pod);
        assert_eq!(c[1], "0/1");
        assert_eq!(c[2], "Init:1/2");
        assert_eq!(c[3], "0");

        pod["status"]["initContainerStatuses"][1]["state"] =
            json!({"waiting": {"reason": "ImagePullBackOff"}});
        assert_eq!(core("Pod", &pod)[2], "Init:ImagePullBackOff");

        pod["status"]["initContainerStatuses"][1]["state"] =
            json!({"waiting": {"reason": "PodInitializing"}});
        assert_eq!(core("Pod", &pod)[2], "Init:1/2");

        pod["status"]["initContainerStatuses"][1]["restartCount"] = json!(2);
        pod["status"]["initContainerStatuses"][1]["state"] =
            json!({"terminated": {"exitCode": 1, "reason": "Error"}});
        assert_eq!(core("Pod", &pod)[2], "Init:Error");
        assert_eq!(core("Pod", &pod)[3], "2");

        pod["status"]["initContainerStatuses"][1]["state"] =
            json!({"terminated": {"exitCode": 137, "signal": 9}});
        assert_eq!(core("Pod", &pod)[2], "Init:Signal:9");
        pod["status"]["initContainerStatuses"][1]["state"] = json!({"terminated": {"exitCode": 3}});
        assert_eq!(core("Pod", &pod)[2], "Init:ExitCode:3");

        // No statuses yet: the pod phase shows.
        pod["status"]["initContainerStatuses"] = json!([]);
        pod["status"]["containerStatuses"] = json!([]);
        assert_eq!(core("Pod", &pod)[2], "Pending");
    }

    #[test]
    fn pod_sidecar_counts_as_container() {
        let pod = json!({
            "metadata": {"name": "sc"},
            "spec": {
                "initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
                "containers": [{"name": "app"}]
            },
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"},
                               {"type": "Ready", "status": "True"}],
                "initContainerStatuses": [{"name": "proxy", "started": true, "ready": true,
                    "restartCount": 1, "state": {"running": {}},
                    "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(130)}}}],
                "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
                    "state": {"running": {}}}]
            }
        });
        let c = core("Pod", &pod);
        assert_eq!(c[1], "2/2");
        assert_eq!(c[2], "Running");
        assert_eq!(c[3], "1 (2m10s ago)");
        assert_eq!(c[4], "<unknown>");
    }

    #[test]
    fn pod_other_statuses() {
        let waiting = |reason: &str| {
            json!({
                "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "a"}]},
                "status": {"phase": "Pending", "containerStatuses": [{
                    "name": "a", "state": {"waiting": {"reason": reason}}}]}
            })
        };
        assert_eq!(
            core("Pod", &waiting("ContainerCreating"))[2],
            "ContainerCreating"
        );
        assert_eq!(core("Pod", &waiting("ErrImagePull"))[2], "ErrImagePull");

        let failed = json!({
            "metadata": {"name": "f"},
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Failed", "containerStatuses": [{
                "name": "a", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}
        });
        assert_eq!(core("Pod", &failed)[2], "Error");

        let evicted = json!({
            "metadata": {"name": "e"},
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Failed", "reason": "Evicted"}
        });
        assert_eq!(core("Pod", &evicted)[2], "Evicted");

        let gated = json!({
            "metadata": {"name": "g"},
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}
        });
        assert_eq!(core("Pod", &gated)[2], "SchedulingGated");

        // One container completed while another still runs: Running or NotReady.
        let mixed = json!({
            "metadata": {"name": "m"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    {"name": "b", "ready": true, "state": {"running": {}}}
                ]}
        });
        let c = core("Pod", &mixed);
        assert_eq!(c[1], "1/2");
        assert_eq!(c[2], "NotReady");

        // No status at all (freshly created, never defaulted).
        let bare = json!({"metadata": {"name": "bare"}, "spec": {"containers": [{"name": "a"}]}});
        assert_eq!(
            core("Pod", &bare)[..4],
            [json!("bare"), json!("0/1"), json!("Pending"), json!("0")]
        );
    }

    #[test]
    fn pod_readiness_gates_and_ips() {
        let pod = json!({
            "metadata": {"name": "g"},
            "spec": {"containers": [], "readinessGates": [
                {"conditionType": "example.com/a"}, {"conditionType": "example.com/b"}]},
            "status": {"phase": "Running", "podIP": "fd00::1", "nominatedNodeName": "n2",
                "conditions": [{"type": "example.com/a", "status": "True"},
                               {"type": "example.com/b", "status": "False"}]}
        });
        let c = core("Pod", &pod);
        assert_eq!(c[5], "fd00::1");
        assert_eq!(c[7], "n2");
        assert_eq!(c[8], "1/2");
    }

    #[test]
    fn deployment_cells() {
        let d = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(7200)},
            "spec": {"replicas": 3,
                "selector": {"matchLabels": {"app": "web"},
                    "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]},
                "template": {"spec": {"containers": [
                    {"name": "nginx", "image": "nginx:1.25"},
                    {"name": "sidecar", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        assert_eq!(
            col_names("apps", "Deployment"),
            [
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        assert_eq!(
            cells("apps", "Deployment", &d, None, now()),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("120m"),
                json!("nginx,sidecar"),
                json!("nginx:1.25,busybox"),
                json!("app=web,tier in (a,b)"),
            ]
        );
        // Unset replicas default to 1; an empty selector prints as "".
        let bare = json!({"metadata": {"name": "b"}, "spec": {"selector": {}}});
        let c = cells("apps", "Deployment", &bare, None, now());
        assert_eq!(c[1], "0/1");
        assert_eq!(c[7], "");
    }

    #[test]
    fn replica_set_and_rc_cells() {
        let rs = json!({
            "metadata": {"name": "web-abc", "creationTimestamp": ago(90)},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "abc"}},
                     "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}},
            "status": {"replicas": 3, "readyReplicas": 1}
        });
        assert_eq!(
            cells("apps", "ReplicaSet", &rs, None, now()),
            vec![
                json!("web-abc"),
                json!(3),
                json!(3),
                json!(1),
                json!("90s"),
                json!("nginx"),
                json!("nginx"),
                json!("app=web,pod-template-hash=abc"),
            ]
        );
        let rc = json!({
            "metadata": {"name": "rc"},
            "spec": {"replicas": 2, "selector": {"app": "x"},
                     "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
            "status": {"replicas": 2, "readyReplicas": 2}
        });
        assert_eq!(
            core("ReplicationController", &rc),
            vec![
                json!("rc"),
                json!(2),
                json!(2),
                json!(2),
                json!("<unknown>"),
                json!("c"),
                json!("i"),
                json!("app=x")
            ]
        );
    }

    #[test]
    fn statefulset_and_daemonset_cells() {
        let sts = json!({
            "metadata": {"name": "db"},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "pg", "image": "postgres"}]}}},
            "status": {"readyReplicas": 3}
        });
        assert_eq!(
            col_names("apps", "StatefulSet"),
            ["Name", "Ready", "Age", "Containers", "Images"]
        );
        let c = cells("apps", "StatefulSet", &sts, None, now());
        assert_eq!(c[1], "3/3");
        assert_eq!(c[3], "pg");

        let ds = json!({
            "metadata": {"name": "agent", "creationTimestamp": ago(3 * 86400)},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [{"name": "a", "image": "agent:1"}]}}},
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                       "updatedNumberScheduled": 3, "numberAvailable": 2}
        });
        assert_eq!(
            cells("apps", "DaemonSet", &ds, None, now()),
            vec![
                json!("agent"),
                json!(3),
                json!(3),
                json!(2),
                json!(3),
                json!(2),
                json!("kubernetes.io/os=linux"),
                json!("3d"),
                json!("a"),
                json!("agent:1"),
                json!("app=agent"),
            ]
        );
    }

    #[test]
    fn job_cells_statuses() {
        assert_eq!(
            col_names("batch", "Job"),
            [
                "Name",
                "Status",
                "Completions",
                "Duration",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let complete = json!({
            "metadata": {"name": "pi", "creationTimestamp": ago(600)},
            "spec": {"completions": 1, "parallelism": 1,
                     "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
                     "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
            "status": {"succeeded": 1, "startTime": ago(600), "completionTime": ago(590),
                       "conditions": [{"type": "SuccessCriteriaMet", "status": "True"},
                                      {"type": "Complete", "status": "True"}]}
        });
        assert_eq!(
            cells("batch", "Job", &complete, None, now()),
            vec![
                json!("pi"),
                json!("Complete"),
                json!("1/1"),
                json!("10s"),
                json!("10m"),
                json!("pi"),
                json!("perl"),
                json!("batch.kubernetes.io/controller-uid=u1"),
            ]
        );
        let running = json!({
            "metadata": {"name": "r"},
            "spec": {"parallelism": 3},
            "status": {"startTime": ago(125), "active": 3}
        });
        let c = cells("batch", "Job", &running, None, now());
        assert_eq!(c[1], "Running");
        assert_eq!(c[2], "0/1 of 3");
        assert_eq!(c[3], "2m5s");
        assert_eq!(c[7], "<none>");

        let suspended = json!({"metadata": {"name": "s"}, "spec": {"completions": 5},
            "status": {"conditions": [{"type": "Suspended", "status": "True"}]}});
        let c = cells("batch", "Job", &suspended, None, now());
        assert_eq!(c[1], "Suspended");
        assert_eq!(c[2], "0/5");
        assert_eq!(c[3], "");

        let failed = json!({"metadata": {"name": "f"},
            "status": {"failed": 6, "conditions": [{"type": "FailureTarget", "status": "True"},
                                                   {"type": "Failed", "status": "True"}]}});
        assert_eq!(cells("batch", "Job", &failed, None, now())[1], "Failed");
        let target = json!({"metadata": {"name": "t"},
            "status": {"conditions": [{"type": "FailureTarget", "status": "True"}]}});
        assert_eq!(
            cells("batch", "Job", &target, None, now())[1],
            "FailureTarget"
        );
        let deleting = json!({"metadata": {"name": "d", "deletionTimestamp": ago(1)}});
        assert_eq!(
            cells("batch", "Job", &deleting, None, now())[1],
            "Terminating"
        );
    }

    #[test]
    fn cronjob_cells() {
        let cj = json!({
            "metadata": {"name": "hello", "creationTimestamp": ago(86400 * 10)},
            "spec": {"schedule": "*/5 * * * *", "suspend": false,
                "jobTemplate": {"spec": {"template": {"spec": {"containers": [
                    {"name": "hello", "image": "busybox"}]}}}}},
            "status": {"active": [{"name": "hello-1"}], "lastScheduleTime": ago(200)}
        });
        assert_eq!(
            cells("batch", "CronJob", &cj, None, now()),
            vec![
                json!("hello"),
                json!("*/5 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(1),
                json!("3m20s"),
                json!("10d"),
                json!("hello"),
                json!("busybox"),
                json!("<none>"),
            ]
        );
        let never = json!({"metadata": {"name": "n"},
            "spec": {"schedule": "@daily", "timeZone": "Etc/UTC", "suspend": true}});
        let c = cells("batch", "CronJob", &never, None, now());
        assert_eq!(c[2], "Etc/UTC");
        assert_eq!(c[3], "True");
        assert_eq!(c[5], "<none>");
    }

    #[test]
    fn service_cells() {
        let np = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(45)},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                "selector": {"app": "web", "tier": "fe"},
                "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080},
                          {"port": 443, "nodePort": 30443}]}
        });
        assert_eq!(
            core("Service", &np),
            vec![
                json!("web"),
                json!("NodePort"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("80:30080/TCP,443:30443/TCP"),
                json!("45s"),
                json!("app=web,tier=fe"),
            ]
        );
        let cluster = json!({"metadata": {"name": "kubernetes"},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 443, "protocol": "TCP"}]}});
        let c = core("Service", &cluster);
        assert_eq!(c[1], "ClusterIP");
        assert_eq!(c[2], "10.96.0.1");
        assert_eq!(c[4], "443/TCP");
        assert_eq!(c[6], "<none>");

        let mut lb = json!({"metadata": {"name": "lb"},
            "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.1.1"],
                     "ports": [{"port": 53, "protocol": "UDP", "nodePort": 31000}]}});
        assert_eq!(core("Service", &lb)[3], "<pending>");
        lb["status"] = json!({"loadBalancer": {"ingress": [
            {"ip": "203.0.113.9"}, {"hostname": "a-very-long-hostname.elb.example.com"}]}});
        assert_eq!(
            core("Service", &lb)[3],
            "203.0.113.9,a-very-long-hostname.elb.example.com"
        );
        lb["spec"]["externalIPs"] = json!(["198.51.100.1"]);
        assert_eq!(
            core("Service", &lb)[3],
            "203.0.113.9,a-very-long-hostname.elb.example.com,198.51.100.1"
        );

        let ext = json!({"metadata": {"name": "ext"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        let c = core("Service", &ext);
        assert_eq!(c[2], "<none>");
        assert_eq!(c[3], "db.example.com");
        assert_eq!(c[4], "<none>");

        let headless = json!({"metadata": {"name": "h"},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"], "externalIPs": ["1.2.3.4"]}});
        let c = core("Service", &headless);
        assert_eq!(c[2], "None");
        assert_eq!(c[3], "1.2.3.4");
    }

    #[test]
    fn endpoints_and_slices() {
        let ep = json!({"metadata": {"name": "web"}, "subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
             "ports": [{"port": 8080}, {"port": 9090}]}
        ]});
        assert_eq!(
            core("Endpoints", &ep)[1],
            "10.0.0.1:8080,10.0.0.2:8080,10.0.0.1:9090 + 1 more..."
        );
        let v6 = json!({"metadata": {"name": "v6"}, "subsets": [
            {"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]});
        assert_eq!(core("Endpoints", &v6)[1], "[fd00::1]:80");
        let headless = json!({"metadata": {"name": "h"}, "subsets": [
            {"addresses": [{"ip": "10.0.0.9"}]}]});
        assert_eq!(core("Endpoints", &headless)[1], "10.0.0.9");
        assert_eq!(
            core("Endpoints", &json!({"metadata": {"name": "e"}}))[1],
            "<none>"
        );

        let slice = json!({"metadata": {"name": "web-x"}, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 80}, {"name": "named"}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]});
        assert_eq!(
            cells("discovery.k8s.io", "EndpointSlice", &slice, None, now())[1..4],
            [json!("IPv4"), json!("80,named"), json!("10.0.0.1,10.0.0.2")]
        );
        let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv6"});
        assert_eq!(
            cells("discovery.k8s.io", "EndpointSlice", &empty, None, now())[2..4],
            [json!("<unset>"), json!("<unset>")]
        );
    }

    #[test]
    fn node_cells() {
        let node = json!({
            "metadata": {"name": "cp-1", "creationTimestamp": ago(86400 * 30), "labels": {
                "node-role.kubernetes.io/control-plane": "",
                "node-role.kubernetes.io/master": "",
                "kubernetes.io/hostname": "cp-1"}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"},
                               {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "192.168.1.10"},
                              {"type": "Hostname", "address": "cp-1"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Ubuntu 24.04 LTS",
                             "kernelVersion": "6.8.0", "containerRuntimeVersion": "containerd://2.0.0"}
            }
        });
        assert_eq!(
            core("Node", &node),
            vec![
                json!("cp-1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,master"),
                json!("30d"),
                json!("v1.33.0"),
                json!("192.168.1.10"),
                json!("<none>"),
                json!("Ubuntu 24.04 LTS"),
                json!("6.8.0"),
                json!("containerd://2.0.0"),
            ]
        );
        let worker = json!({"metadata": {"name": "w", "labels": {"kubernetes.io/role": "gpu"}},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        let c = core("Node", &worker);
        assert_eq!(c[1], "NotReady");
        assert_eq!(c[2], "gpu");
        assert_eq!(c[7], "<unknown>");
        let bare = json!({"metadata": {"name": "b"}});
        let c = core("Node", &bare);
        assert_eq!(c[1], "Unknown");
        assert_eq!(c[2], "<none>");
        assert_eq!(c[4], "");
    }

    #[test]
    fn simple_core_kinds() {
        let ns = json!({"metadata": {"name": "default", "creationTimestamp": ago(100)},
                        "status": {"phase": "Active"}});
        assert_eq!(
            core("Namespace", &ns),
            vec![json!("default"), json!("Active"), json!("100s")]
        );
        let terminating = json!({"metadata": {"name": "x"}, "status": {"phase": "Terminating"}});
        assert_eq!(core("Namespace", &terminating)[1], "Terminating");

        let cm = json!({"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"},
                        "binaryData": {"c": "AA=="}});
        assert_eq!(
            core("ConfigMap", &cm),
            vec![json!("cfg"), json!(3), json!("<unknown>")]
        );

        let secret = json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls",
                            "data": {"tls.crt": "", "tls.key": ""}});
        assert_eq!(
            core("Secret", &secret)[1..3],
            [json!("kubernetes.io/tls"), json!(2)]
        );
        let opaque = json!({"metadata": {"name": "o"}, "stringData": {"a": "b"}});
        assert_eq!(core("Secret", &opaque)[1..3], [json!("Opaque"), json!(1)]);

        let sa = json!({"metadata": {"name": "default"}});
        assert_eq!(col_names("", "ServiceAccount"), ["Name", "Secrets", "Age"]);
        assert_eq!(core("ServiceAccount", &sa)[1], json!(0));
    }

    #[test]
    fn event_cells_core_and_events_api() {
        assert_eq!(
            col_names("", "Event"),
            [
                "Last Seen",
                "Type",
                "Reason",
                "Object",
                "Subobject",
                "Source",
                "Message",
                "First Seen",
                "Count",
                "Name"
            ]
        );
        assert_eq!(
            wide_names("", "Event"),
            ["Subobject", "Source", "First Seen", "Count", "Name"]
        );
        let ev = json!({
            "metadata": {"name": "web-1.17a", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-1",
                               "fieldPath": "spec.containers{app}"},
            "reason": "Pulled", "type": "Normal",
            "message": "Successfully pulled image \"nginx\"\n",
            "source": {"component": "kubelet", "host": "node-a"},
            "firstTimestamp": ago(600), "lastTimestamp": ago(60), "count": 3
        });
        assert_eq!(
            core("Event", &ev),
            vec![
                json!("60s"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/web-1"),
                json!("spec.containers{app}"),
                json!("kubelet, node-a"),
                json!("Successfully pulled image \"nginx\""),
                json!("10m"),
                json!(3),
                json!("web-1.17a"),
            ]
        );
        let new = json!({
            "metadata": {"name": "e2"},
            "regarding": {"kind": "Node", "name": "node-a"},
            "reason": "Starting", "type": "Normal", "note": "Starting kubelet.",
            "reportingController": "kubelet", "reportingInstance": "node-a",
            "eventTime": "2024-06-01T11:59:00.000000Z"
        });
        let c = cells("events.k8s.io", "Event", &new, None, now());
        assert_eq!(c[0], "60s");
        assert_eq!(c[3], "node/node-a");
        assert_eq!(c[5], "kubelet, node-a");
        assert_eq!(c[6], "Starting kubelet.");
        assert_eq!(c[7], "60s");
        assert_eq!(c[8], json!(1));
        let series = json!({
            "metadata": {"name": "e3"}, "involvedObject": {"kind": "Pod"},
            "reportingComponent": "scheduler", "eventTime": ago(300),
            "series": {"count": 7, "lastObservedTime": ago(10)}
        });
        let c = core("Event", &series);
        assert_eq!(c[0], "10s");
        assert_eq!(c[3], "pod");
        assert_eq!(c[5], "scheduler");
        assert_eq!(c[7], "5m");
        assert_eq!(c[8], json!(7));
    }

    #[test]
    fn persistent_volumes() {
        let pv = json!({
            "metadata": {"name": "pv1", "creationTimestamp": ago(60)},
            "spec": {"capacity": {"storage": "1024Mi"},
                     "accessModes": ["ReadWriteMany", "ReadWriteOnce", "ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "fast",
                     "claimRef": {"namespace": "default", "name": "data"}},
            "status": {"phase": "Bound"}
        });
        assert_eq!(
            core("PersistentVolume", &pv),
            vec![
                json!("pv1"),
                json!("1Gi"),
                json!("RWO,RWX"),
                json!("Delete"),
                json!("Bound"),
                json!("default/data"),
                json!("fast"),
                json!("<unset>"),
                json!(""),
                json!("60s"),
                json!("Filesystem"),
            ]
        );
        let pvc = json!({
            "metadata": {"name": "data", "annotations": {"volume.beta.kubernetes.io/storage-class": "legacy"}},
            "spec": {"volumeName": "pv1", "storageClassName": "fast",
                     "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}
        });
        assert_eq!(
            core("PersistentVolumeClaim", &pvc)[1..7],
            [
                json!("Bound"),
                json!("pv1"),
                json!("1Gi"),
                json!("RWO"),
                json!("legacy"),
                json!("<unset>")
            ]
        );
        let pending = json!({"metadata": {"name": "p"},
            "spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "5Gi"}}}});
        assert_eq!(
            core("PersistentVolumeClaim", &pending)[1..6],
            [
                json!("Pending"),
                json!(""),
                json!(""),
                json!(""),
                json!("fast")
            ]
        );
    }

    #[test]
    fn hpa_targets_v2_and_v1() {
        let hpa = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(300)},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
                     "minReplicas": 2, "maxReplicas": 10,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                         "target": {"type": "Utilization", "averageUtilization": 50}}}]},
            "status": {"currentReplicas": 3, "currentMetrics": [{"type": "Resource",
                "resource": {"name": "cpu", "current": {"averageUtilization": 20}}}]}
        });
        assert_eq!(
            cells("autoscaling", "HorizontalPodAutoscaler", &hpa, None, now()),
            vec![
                json!("web"),
                json!("Deployment/web"),
                json!("cpu: 20%/50%"),
                json!("2"),
                json!(10),
                json!(3),
                json!("5m"),
            ]
        );
        let mut unknown = hpa.clone();
        unknown["status"] = json!({"currentReplicas": 0});
        assert_eq!(
            cells(
                "autoscaling",
                "HorizontalPodAutoscaler",
                &unknown,
                None,
                now()
            )[2],
            "cpu: <unknown>/50%"
        );
        let many = json!({"metadata": {"name": "m"}, "spec": {"maxReplicas": 3, "metrics": [
            {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "512Mi"}}},
            {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "1k"}}},
            {"type": "External", "external": {"metric": {"name": "q"}, "target": {"type": "Value", "value": "30"}}}
        ]}});
        let c = cells("autoscaling", "HorizontalPodAutoscaler", &many, None, now());
        assert_eq!(c[2], "memory: <unknown>/512Mi, <unknown>/1k + 1 more...");
        assert_eq!(c[3], "1");
        let v1 = json!({"metadata": {"name": "v1"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 5,
                     "targetCPUUtilizationPercentage": 80},
            "status": {"currentReplicas": 1, "currentCPUUtilizationPercentage": 12}});
        assert_eq!(
            cells("autoscaling", "HorizontalPodAutoscaler", &v1, None, now())[2],
            "cpu: 12%/80%"
        );
        let none = json!({"metadata": {"name": "n"}, "spec": {"maxReplicas": 1}});
        assert_eq!(
            cells("autoscaling", "HorizontalPodAutoscaler", &none, None, now())[2],
            "<none>"
        );
    }

    #[test]
    fn networking_policy_rbac_kinds() {
        let ing = json!({"metadata": {"name": "web"},
            "spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["a.example.com"]}],
                     "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}, {},
                               {"host": "c.example.com"}, {"host": "d.example.com"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.1.1.1"}]}}});
        assert_eq!(
            cells("networking.k8s.io", "Ingress", &ing, None, now())[1..5],
            [
                json!("nginx"),
                json!("a.example.com,b.example.com,c.example.com + 2 more..."),
                json!("10.1.1.1"),
                json!("80, 443")
            ]
        );
        let bare = json!({"metadata": {"name": "b"}, "spec": {"rules": [{}]}});
        assert_eq!(
            cells("networking.k8s.io", "Ingress", &bare, None, now())[1..5],
            [json!("<none>"), json!("*"), json!(""), json!("80")]
        );

        let np = json!({"metadata": {"name": "deny"}, "spec": {"podSelector": {}}});
        assert_eq!(
            cells("networking.k8s.io", "NetworkPolicy", &np, None, now())[1],
            "<none>"
        );
        let np2 = json!({"metadata": {"name": "a"}, "spec": {"podSelector": {"matchExpressions": [
            {"key": "app", "operator": "Exists"}, {"key": "env", "operator": "DoesNotExist"},
            {"key": "tier", "operator": "NotIn", "values": ["db"]}]}}});
        assert_eq!(
            cells("networking.k8s.io", "NetworkPolicy", &np2, None, now())[1],
            "app,!env,tier notin (db)"
        );

        let pdb = json!({"metadata": {"name": "web"}, "spec": {"minAvailable": "50%"},
                         "status": {"disruptionsAllowed": 1}});
        assert_eq!(
            cells("policy", "PodDisruptionBudget", &pdb, None, now())[1..4],
            [json!("50%"), json!("N/A"), json!(1)]
        );

        let rb = json!({"metadata": {"name": "admins"},
            "roleRef": {"kind": "ClusterRole", "name": "admin"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "ops"},
                         {"kind": "ServiceAccount", "name": "ci", "namespace": "tools"},
                         {"kind": "User", "name": "bob"}]});
        assert_eq!(
            cells("rbac.authorization.k8s.io", "RoleBinding", &rb, None, now()),
            vec![
                json!("admins"),
                json!("ClusterRole/admin"),
                json!("<unknown>"),
                json!("alice, bob"),
                json!("ops"),
                json!("tools/ci"),
            ]
        );
        assert_eq!(
            wide_names("rbac.authorization.k8s.io", "ClusterRoleBinding"),
            ["Users", "Groups", "ServiceAccounts"]
        );
    }

    #[test]
    fn misc_builtin_kinds() {
        let lease = json!({"metadata": {"name": "kube-scheduler"},
                           "spec": {"holderIdentity": "cp-1_abc"}});
        assert_eq!(
            cells("coordination.k8s.io", "Lease", &lease, None, now())[1],
            "cp-1_abc"
        );
        let pc = json!({"metadata": {"name": "high"}, "value": 1000000, "globalDefault": false});
        assert_eq!(
            cells("scheduling.k8s.io", "PriorityClass", &pc, None, now()),
            vec![
                json!("high"),
                json!(1000000),
                json!(false),
                json!("<unknown>"),
                json!("PreemptLowerPriority")
            ]
        );
        let sc = json!({"metadata": {"name": "standard",
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"});
        assert_eq!(
            cells("storage.k8s.io", "StorageClass", &sc, None, now())[..5],
            [
                json!("standard (default)"),
                json!("rancher.io/local-path"),
                json!("Delete"),
                json!("WaitForFirstConsumer"),
                json!(false)
            ]
        );
        let cr = json!({"metadata": {"name": "agent-5d8", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "controller": true}]},
            "revision": 2});
        assert_eq!(
            cells("apps", "ControllerRevision", &cr, None, now())[1..3],
            [json!("daemonset.apps/agent"), json!(2)]
        );
        let rq = json!({"metadata": {"name": "quota"}, "status": {
            "hard": {"requests.cpu": "2", "limits.memory": "2Gi", "pods": "10", "limits.cpu": "4000m"},
            "used": {"requests.cpu": "500m", "limits.memory": "512Mi", "pods": "3"}}});
        assert_eq!(
            core("ResourceQuota", &rq)[1..3],
            [
                json!("pods: 3/10, requests.cpu: 500m/2"),
                json!("limits.cpu: 0/4, limits.memory: 512Mi/2Gi")
            ]
        );
        let apisvc = json!({"metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {"service": {"namespace": "kube-system", "name": "metrics-server"}},
            "status": {"conditions": [{"type": "Available", "status": "False",
                                       "reason": "MissingEndpoints"}]}});
        assert_eq!(
            cells("apiregistration.k8s.io", "APIService", &apisvc, None, now())[1..3],
            [
                json!("kube-system/metrics-server"),
                json!("False (MissingEndpoints)")
            ]
        );
        let local = json!({"metadata": {"name": "v1."}});
        assert_eq!(
            cells("apiregistration.k8s.io", "APIService", &local, None, now())[1..3],
            [json!("Local"), json!("Unknown")]
        );
        let csr = json!({"metadata": {"name": "csr-1"},
            "spec": {"signerName": "kubernetes.io/kube-apiserver-client", "username": "alice",
                     "expirationSeconds": 86400},
            "status": {"conditions": [{"type": "Approved"}], "certificate": "LS0t"}});
        assert_eq!(
            cells(
                "certificates.k8s.io",
                "CertificateSigningRequest",
                &csr,
                None,
                now()
            )[2..6],
            [
                json!("kubernetes.io/kube-apiserver-client"),
                json!("alice"),
                json!("24h"),
                json!("Approved,Issued")
            ]
        );
        let webhook = json!({"metadata": {"name": "w"}, "webhooks": [{}, {}]});
        assert_eq!(
            cells(
                "admissionregistration.k8s.io",
                "ValidatingWebhookConfiguration",
                &webhook,
                None,
                now()
            )[1],
            json!(2)
        );
        let fs = json!({"metadata": {"name": "exempt"}, "spec": {
            "priorityLevelConfiguration": {"name": "exempt"}, "matchingPrecedence": 1}});
        assert_eq!(
            cells(
                "flowcontrol.apiserver.k8s.io",
                "FlowSchema",
                &fs,
                None,
                now()
            )[1..4],
            [json!("exempt"), json!(1), json!("<none>")]
        );
        let plc = json!({"metadata": {"name": "global-default"}, "spec": {"type": "Limited",
            "limited": {"nominalConcurrencyShares": 20, "limitResponse": {"type": "Queue",
                "queuing": {"queues": 128, "handSize": 6, "queueLengthLimit": 50}}}}});
        assert_eq!(
            cells(
                "flowcontrol.apiserver.k8s.io",
                "PriorityLevelConfiguration",
                &plc,
                None,
                now()
            )[1..6],
            [json!("Limited"), json!(20), json!(128), json!(6), json!(50)]
        );
        let exempt = json!({"metadata": {"name": "exempt"}, "spec": {"type": "Exempt"}});
        assert_eq!(
            cells(
                "flowcontrol.apiserver.k8s.io",
                "PriorityLevelConfiguration",
                &exempt,
                None,
                now()
            )[2],
            "<none>"
        );
    }

    #[test]
    fn default_table_for_kinds_without_printer() {
        let role =
            json!({"metadata": {"name": "reader", "creationTimestamp": "2024-05-01T08:09:10Z"}});
        for (group, kind) in [
            ("rbac.authorization.k8s.io", "Role"),
            ("rbac.authorization.k8s.io", "ClusterRole"),
            ("", "LimitRange"),
            ("apiextensions.k8s.io", "CustomResourceDefinition"),
            ("storage.k8s.io", "SomethingNew"),
        ] {
            let cols = columns(group, kind, None);
            assert_eq!(cols.len(), 2, "{kind}");
            assert_eq!(cols[0]["name"], "Name");
            assert_eq!(cols[1]["name"], "Created At");
            assert_eq!(cols[1]["type"], "date");
            assert_eq!(
                cells(group, kind, &role, None, now()),
                vec![json!("reader"), json!("2024-05-01T08:09:10Z")]
            );
        }
        let offset =
            json!({"metadata": {"name": "x", "creationTimestamp": "2024-05-01T10:09:10.5+02:00"}});
        assert_eq!(
            cells("", "LimitRange", &offset, None, now())[1],
            "2024-05-01T08:09:10Z"
        );
    }

    #[test]
    fn crd_additional_printer_columns() {
        let cols = vec![
            json!({"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}),
            json!({"name": "Ready", "type": "string",
                   "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}),
            json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}),
            json!({"name": "Hosts", "type": "string", "jsonPath": ".spec.hosts", "priority": 1,
                   "description": "hosts served"}),
            json!({"name": "Ratio", "type": "number", "jsonPath": ".spec.ratio"}),
            json!({"name": "Paused", "type": "boolean", "jsonPath": ".spec.paused"}),
            json!({"name": "Missing", "type": "string", "jsonPath": ".status.nope"}),
        ];
        let defs = columns("example.com", "Widget", Some(&cols));
        assert_eq!(defs.len(), 8);
        assert_eq!(defs[0]["name"], "Name");
        assert_eq!(defs[1]["type"], "integer");
        assert_eq!(
            defs[1]["description"],
            "Custom resource definition column (in JSONPath format): .spec.replicas"
        );
        assert_eq!(defs[4]["priority"], 1);
        assert_eq!(defs[4]["description"], "hosts served");

        let obj = json!({
            "metadata": {"name": "w1", "creationTimestamp": ago(120)},
            "spec": {"replicas": 3, "hosts": ["a", "b"], "ratio": 0.5, "paused": false},
            "status": {"conditions": [{"type": "Synced", "status": "True"},
                                      {"type": "Ready", "status": "False"}]}
        });
        assert_eq!(
            cells("example.com", "Widget", &obj, Some(&cols), now()),
            vec![
                json!("w1"),
                json!(3),
                json!("False"),
                json!("2m"),
                json!("[\"a\",\"b\"]"),
                json!(0.5),
                json!(false),
                Value::Null,
            ]
        );

        // No additionalPrinterColumns: Name + Age (a date column), whether the caller passes an
        // empty list or nothing for a non-built-in group.
        for given in [Some(&[][..]), None] {
            let defs = columns("example.com", "Widget", given);
            assert_eq!(defs.len(), 2);
            assert_eq!(defs[1]["name"], "Age");
            assert_eq!(defs[1]["type"], "date");
            assert_eq!(
                cells("example.com", "Widget", &obj, given, now()),
                vec![json!("w1"), json!("2m")]
            );
        }
    }

    #[test]
    fn crd_cell_conversions() {
        let n = now();
        assert_eq!(crd_cell("string", &json!(12), n), json!("12"));
        assert_eq!(crd_cell("string", &json!(1.5), n), json!("1.5"));
        assert_eq!(crd_cell("string", &json!(1e6), n), json!("1e+06"));
        assert_eq!(crd_cell("string", &json!(true), n), json!("true"));
        assert_eq!(
            crd_cell("string", &json!({"b": 1, "a": "<x>"}), n),
            json!("{\"a\":\"\\u003cx\\u003e\",\"b\":1}")
        );
        assert_eq!(crd_cell("integer", &json!(2.9), n), json!(2));
        assert_eq!(crd_cell("integer", &json!("2"), n), Value::Null);
        assert_eq!(crd_cell("number", &json!(2), n), json!(2.0));
        assert_eq!(crd_cell("boolean", &json!("true"), n), Value::Null);
        assert_eq!(crd_cell("date", &json!(""), n), json!("<unknown>"));
        assert_eq!(crd_cell("date", &json!("yesterday"), n), json!("<invalid>"));
        assert_eq!(crd_cell("date", &json!(ago(3 * 3600)), n), json!("3h"));
        assert_eq!(crd_cell("date", &json!(5), n), Value::Null);
        assert_eq!(crd_cell("string", &Value::Null, n), Value::Null);
        assert_eq!(crd_cell("custom", &json!("x"), n), Value::Null);
    }

    #[test]
    fn json_path_subset() {
        let doc = json!({
            "spec": {"items": [{"n": 1, "k": "a"}, {"n": 2, "k": "b"}, {"n": 3, "k": "c"}],
                     "a.b": "dotted", "m": {"x": 1}},
            "status": {"conditions": [{"type": "Ready", "status": "True", "gen": 2}]}
        });
        let eval = |p: &str| -> Vec<Value> {
            eval_json_path(&parse_json_path(p).unwrap(), &doc)
                .into_iter()
                .cloned()
                .collect()
        };
        assert_eq!(eval(".spec.items[1].k"), vec![json!("b")]);
        assert_eq!(eval(".spec.items[-1].n"), vec![json!(3)]);
        assert_eq!(
            eval(".spec.items[*].k"),
            vec![json!("a"), json!("b"), json!("c")]
        );
        assert_eq!(eval(".spec.items[0:2].n"), vec![json!(1), json!(2)]);
        assert_eq!(
            eval(".spec.items[?(@.n > 1)].k"),
            vec![json!("b"), json!("c")]
        );
        assert_eq!(
            eval(".spec.items[?(@.k != 'a')].n"),
            vec![json!(2), json!(3)]
        );
        assert_eq!(eval("{.spec.m.x}"), vec![json!(1)]);
        assert_eq!(eval("$.spec['a.b']"), vec![json!("dotted")]);
        assert_eq!(eval(".spec.a\\.b"), vec![json!("dotted")]);
        assert_eq!(
            eval(".status.conditions[?(@.type==\"Ready\")].status"),
            vec![json!("True")]
        );
        assert_eq!(
            eval(".status.conditions[?(@.gen)].type"),
            vec![json!("Ready")]
        );
        assert_eq!(eval("..status").len(), 2);
        assert!(eval(".spec.items[7]").is_empty());
        assert!(eval(".nope.deeper").is_empty());
        assert!(parse_json_path(".spec.items[").is_none());
        assert!(parse_json_path(".a[?(@.x == )]").is_none());
    }

    #[test]
    fn label_selectors() {
        assert_eq!(format_label_selector(None), "<none>");
        assert_eq!(format_label_selector(Some(&json!({}))), "<none>");
        assert_eq!(
            format_label_selector(Some(&json!({"matchLabels": {"tier": "fe", "app": "web"}}))),
            "app=web,tier=fe"
        );
        assert_eq!(
            format_label_selector(Some(&json!({"matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod"]}]}))),
            "env in (prod)"
        );
        // Invalid selectors.
        for bad in [
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "Near"}]}),
            json!({"matchLabels": {"bad key": "v"}}),
            json!({"matchLabels": {"k": "-bad"}}),
            json!({"matchLabels": {"Example.COM/k": "v"}}),
            json!({"matchLabels": "x"}),
            json!(7),
        ] {
            assert_eq!(format_label_selector(Some(&bad)), "<error>", "{bad}");
        }
        assert_eq!(
            format_label_selector(Some(&json!({"matchLabels": {"example.com/k": "v_1.x"}}))),
            "example.com/k=v_1.x"
        );
        assert_eq!(format_labels(Some(&json!({"b": "2", "a": "1"}))), "a=1,b=2");
        assert_eq!(format_labels(Some(&json!({}))), "<none>");
        assert_eq!(
            go_proto_label_selector(&json!({"matchLabels": {"a": "b"},
                "matchExpressions": [{"key": "k", "operator": "In", "values": ["x", "y"]}]})),
            "&LabelSelector{MatchLabels:map[string]string{a: b,},MatchExpressions:[]LabelSelectorRequirement{LabelSelectorRequirement{Key:k,Operator:In,Values:[x y],},},}"
        );
    }

    #[test]
    fn quantities_are_canonical() {
        for (input, want) in [
            ("1Gi", "1Gi"),
            ("1024Mi", "1Gi"),
            ("1000Mi", "1000Mi"),
            ("1.5Gi", "1536Mi"),
            ("0.5Gi", "512Mi"),
            ("512", "512"),
            ("1000", "1k"),
            ("1500m", "1500m"),
            ("1.5", "1500m"),
            ("0.1", "100m"),
            ("2000m", "2"),
            ("4000m", "4"),
            ("100Ki", "100Ki"),
            ("0.5Ki", "512"),
            ("1.5Ki", "1536"),
            ("1e3", "1e3"),
            ("12e2", "1200"),
            ("0", "0"),
            ("0Gi", "0"),
            ("-1.5", "-1500m"),
            ("1n", "1n"),
            ("0.1n", "1n"),
            ("10G", "10G"),
            ("5000M", "5G"),
            ("bogus", "bogus"),
            ("", ""),
        ] {
            assert_eq!(canonical_quantity(input), want, "{input}");
        }
        assert_eq!(quantity_value(&json!(2)), "2");
    }

    #[test]
    fn go_float_formatting() {
        assert_eq!(go_float_v(0.5), "0.5");
        assert_eq!(go_float_v(123456.0), "123456");
        assert_eq!(go_float_v(1234567.5), "1.2345675e+06");
        assert_eq!(go_float_v(0.0001), "0.0001");
        assert_eq!(go_float_v(0.00001), "1e-05");
        assert_eq!(go_json_float(1e21), "1e+21");
        assert_eq!(go_json_float(1e-7), "1e-7");
        assert_eq!(go_json_float(2.5), "2.5");
    }

    #[test]
    fn table_shape() {
        let a = running_pod();
        let mut b = running_pod();
        b["metadata"]["name"] = json!("done");
        b["metadata"]["labels"] = json!({"app": "web"});
        b["status"]["phase"] = json!("Succeeded");
        let t = table(
            "",
            "Pod",
            &[&a, &b],
            None,
            now(),
            true,
            "42",
            Some("tok"),
            Some(5),
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(
            t["metadata"],
            json!({"resourceVersion": "42", "continue": "tok", "remainingItemCount": 5})
        );
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 9);
        let rows = t["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["cells"][0], "web-1");
        assert!(rows[0].get("conditions").is_none());
        assert_eq!(
            rows[0]["object"],
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                   "metadata": a["metadata"]})
        );
        assert_eq!(rows[1]["object"]["metadata"]["labels"]["app"], "web");
        assert_eq!(
            rows[1]["conditions"],
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded",
                    "message": "The pod has completed successfully."}])
        );
        // Key order matches upstream's serialization.
        let keys: Vec<&String> = t.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "kind",
                "apiVersion",
                "metadata",
                "columnDefinitions",
                "rows"
            ]
        );

        let watch = table("", "Pod", &[&a], None, now(), false, "", None, None);
        assert_eq!(watch["columnDefinitions"], json!([]));
        assert_eq!(watch["metadata"], json!({}));

        let empty = table(
            "apps",
            "Deployment",
            &[],
            None,
            now(),
            true,
            "7",
            None,
            None,
        );
        assert_eq!(empty["rows"], json!([]));
        assert_eq!(empty["columnDefinitions"].as_array().unwrap().len(), 8);

        let no_meta = json!({"spec": {}});
        let t = table(
            "",
            "ConfigMap",
            &[&no_meta],
            None,
            now(),
            true,
            "1",
            None,
            None,
        );
        assert_eq!(t["rows"][0]["object"]["metadata"], json!({}));
        assert_eq!(t["rows"][0]["cells"], json!(["", 0, "<unknown>"]));
    }

    #[test]
    fn table_sorts_flow_schemas() {
        let fs = |name: &str, prec: i64| {
            json!({"metadata": {"name": name}, "spec": {"matchingPrecedence": prec,
                "priorityLevelConfiguration": {"name": "x"}}})
        };
        let (a, b, c) = (fs("z", 1000), fs("b", 1), fs("a", 1000));
        let t = table(
            "flowcontrol.apiserver.k8s.io",
            "FlowSchema",
            &[&a, &b, &c],
            None,
            now(),
            true,
            "1",
            None,
            None,
        );
        let names: Vec<&Value> = t["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["cells"][0])
            .collect();
        assert_eq!(names, [&json!("b"), &json!("a"), &json!("z")]);
    }

    const ALL_KINDS: &[(&str, &str)] = &[
        ("", "Pod"),
        ("", "PodTemplate"),
        ("", "ReplicationController"),
        ("", "Service"),
        ("", "Endpoints"),
        ("", "Node"),
        ("", "Event"),
        ("events.k8s.io", "Event"),
        ("", "Namespace"),
        ("", "Secret"),
        ("", "ServiceAccount"),
        ("", "PersistentVolume"),
        ("", "PersistentVolumeClaim"),
        ("", "ComponentStatus"),
        ("", "ConfigMap"),
        ("", "ResourceQuota"),
        ("", "LimitRange"),
        ("apps", "ReplicaSet"),
        ("apps", "DaemonSet"),
        ("apps", "StatefulSet"),
        ("apps", "Deployment"),
        ("apps", "ControllerRevision"),
        ("batch", "Job"),
        ("batch", "CronJob"),
        ("autoscaling", "HorizontalPodAutoscaler"),
        ("policy", "PodDisruptionBudget"),
        ("networking.k8s.io", "Ingress"),
        ("networking.k8s.io", "IngressClass"),
        ("networking.k8s.io", "NetworkPolicy"),
        ("networking.k8s.io", "ServiceCIDR"),
        ("networking.k8s.io", "IPAddress"),
        ("rbac.authorization.k8s.io", "Role"),
        ("rbac.authorization.k8s.io", "RoleBinding"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("certificates.k8s.io", "CertificateSigningRequest"),
        ("certificates.k8s.io", "ClusterTrustBundle"),
        ("coordination.k8s.io", "Lease"),
        ("coordination.k8s.io", "LeaseCandidate"),
        ("storage.k8s.io", "StorageClass"),
        ("storage.k8s.io", "VolumeAttributesClass"),
        ("storage.k8s.io", "VolumeAttachment"),
        ("storage.k8s.io", "CSINode"),
        ("storage.k8s.io", "CSIDriver"),
        ("storage.k8s.io", "CSIStorageCapacity"),
        ("scheduling.k8s.io", "PriorityClass"),
        ("node.k8s.io", "RuntimeClass"),
        ("discovery.k8s.io", "EndpointSlice"),
        (
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration",
        ),
        (
            "admissionregistration.k8s.io",
            "ValidatingWebhookConfiguration",
        ),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
        (
            "admissionregistration.k8s.io",
            "ValidatingAdmissionPolicyBinding",
        ),
        ("admissionregistration.k8s.io", "MutatingAdmissionPolicy"),
        (
            "admissionregistration.k8s.io",
            "MutatingAdmissionPolicyBinding",
        ),
        ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
        ("internal.apiserver.k8s.io", "StorageVersion"),
        ("resource.k8s.io", "DeviceClass"),
        ("resource.k8s.io", "ResourceClaim"),
        ("resource.k8s.io", "ResourceClaimTemplate"),
        ("resource.k8s.io", "ResourceSlice"),
        ("storagemigration.k8s.io", "StorageVersionMigration"),
        ("apiregistration.k8s.io", "APIService"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ];

    #[test]
    fn one_cell_per_column_for_every_kind() {
        let obj = json!({"metadata": {"name": "x", "creationTimestamp": ago(1)}});
        for (group, kind) in ALL_KINDS {
            let cols = columns(group, kind, None);
            let row = cells(group, kind, &obj, None, now());
            // printIPAddress emits an Age cell without a column (kubectl ignores extras).
            let extra = usize::from(*kind == "IPAddress");
            assert_eq!(cols.len() + extra, row.len(), "{group}/{kind}");
            for col in &cols {
                let obj = col.as_object().unwrap();
                let keys: Vec<&String> = obj.keys().collect();
                assert_eq!(keys, ["name", "type", "format", "description", "priority"]);
            }
        }
    }

    #[test]
    fn hostile_input_never_panics() {
        let weird = [
            Value::Null,
            json!(1),
            json!("str"),
            json!([1, 2]),
            json!({"metadata": 5, "spec": [], "status": "x"}),
            json!({"metadata": {"name": 7, "creationTimestamp": "not-a-time",
                                "deletionTimestamp": null, "labels": [1],
                                "ownerReferences": [{"controller": true, "apiVersion": "a/b/c"}]},
                   "spec": {"containers": [null, 3, {"name": []}], "initContainers": "x",
                            "replicas": "3", "completions": -1, "parallelism": 1e300,
                            "selector": {"matchLabels": {"a": 1}}, "ports": [{"port": 1e40, "nodePort": -5}],
                            "metrics": [{"type": "Resource"}, {}, null], "capacity": {"storage": "9999999999999999999999999999999Ei"},
                            "readinessGates": [{}], "type": 4, "accessModes": [1]},
                   "status": {"phase": "Running", "containerStatuses": [{"state": {"terminated": {"exitCode": "x"}}, "restartCount": 9223372036854775807_i64},
                                                                       {"restartCount": 9223372036854775807_i64, "lastState": {"terminated": {"finishedAt": "0001-01-01T00:00:00Z"}}}],
                              "initContainerStatuses": [{"state": null}],
                              "conditions": "nope", "hard": {"x": 5}, "used": [],
                              "currentMetrics": [{"resource": {"current": {"averageUtilization": "x"}}}]},
                   "series": {"count": "x"}, "involvedObject": 3, "subsets": [{"addresses": [{"ip": 1}], "ports": [{}]}]}),
        ];
        let crd_cols = [
            json!({"name": "A", "type": "string", "jsonPath": "..spec"}),
            json!({"name": "B", "type": "integer", "jsonPath": "[?(@.x > 'a')]"}),
            json!({"name": "C", "type": "date", "jsonPath": "]["}),
            json!({"name": "D", "jsonPath": ".spec.ports[-99:99]"}),
            json!(null),
        ];
        for obj in &weird {
            for (group, kind) in ALL_KINDS {
                let _ = cells(group, kind, obj, None, now());
            }
            let _ = cells("x.io", "Thing", obj, Some(&crd_cols), now());
            let _ = table("", "Pod", &[obj], None, now(), true, "1", None, None);
        }
        // Far-future and far-past timestamps.
        let far = json!({"metadata": {"name": "f", "creationTimestamp": "9999-12-31T23:59:59Z"}});
        assert_eq!(core("ConfigMap", &far)[2], "<invalid>");
        let old = json!({"metadata": {"name": "o", "creationTimestamp": "0002-01-01T00:00:00Z"}});
        assert_eq!(core("ConfigMap", &old)[2], "292y");
    }
}

//! Object rules shared by every write: metadata, defaults, validation.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use serde_json::{Map, Value, json};

use super::errors::{ApiError, ApiResult, Cause};
use super::registry::ResourceInfo;

pub fn key_for(info: &ResourceInfo, namespace: Option<&str>, name: &str) -> String {
    let mut k = info.storage_prefix();
    if info.namespaced {
        k.push_str(namespace.unwrap_or(""));
        k.push('/');
    }
    k.push_str(name);
    k
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"].as_object_mut().unwrap()
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// `generateName` suffix: 5 characters from upstream's alphabet (no vowels,
/// no confusable digits).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

/// Kinds whose names must be DNS-1123 labels (upstream's ValidateNameFunc).
fn name_is_label(info: &ResourceInfo) -> bool {
    info.group.is_empty()
        && matches!(
            info.resource.as_str(),
            "namespaces" | "services" | "replicationcontrollers"
        )
}

/// Kinds whose names only need to be path segments.
fn name_is_path_segment(info: &ResourceInfo) -> bool {
    matches!(
        (info.group.as_str(), info.resource.as_str()),
        ("rbac.authorization.k8s.io", _) | ("", "nodes")
    )
}

/// Metadata validation common to every kind.
pub fn validate_meta(info: &ResourceInfo, obj: &Value, causes: &mut Vec<Cause>) {
    let name = meta_str(obj, "name").unwrap_or("");
    if name.is_empty() {
        causes.push(Cause::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else if name_is_path_segment(info) {
        if name == "." || name == ".." || name.contains('/') || name.contains('%') {
            causes.push(Cause::invalid(
                "metadata.name",
                &json!(name),
                "may not be '.' or '..' and may not contain '/' or '%'",
            ));
        }
    } else if name_is_label(info) {
        if !is_dns1123_label(name) {
            causes.push(Cause::invalid(
                "metadata.name",
                &json!(name),
                DNS1123_LABEL_MSG,
            ));
        }
    } else if !is_dns1123_subdomain(name) {
        causes.push(Cause::invalid(
            "metadata.name",
            &json!(name),
            DNS1123_SUBDOMAIN_MSG,
        ));
    }
    if let Some(m) = meta(obj) {
        for field in ["labels", "annotations"] {
            if let Some(v) = m.get(field)
                && !v.is_null()
            {
                match v.as_object() {
                    Some(map) => {
                        for (k, val) in map {
                            if !is_qualified_name(k) {
                                causes.push(Cause::invalid(
                                    format!("metadata.{field}"),
                                    &json!(k),
                                    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                                ));
                            }
                            if field == "labels" {
                                let s = val.as_str().unwrap_or("");
                                if !is_label_value(s) {
                                    causes.push(Cause::invalid(
                                        "metadata.labels".to_string(),
                                        val,
                                        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
                                    ));
                                }
                            } else if !val.is_string() {
                                causes.push(Cause::invalid(
                                    "metadata.annotations".to_string(),
                                    val,
                                    "must be a string",
                                ));
                            }
                        }
                    }
                    None => causes.push(Cause::invalid(
                        format!("metadata.{field}"),
                        v,
                        "must be a map of strings",
                    )),
                }
            }
        }
    }
}

pub fn is_qualified_name(k: &str) -> bool {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && !is_dns1123_subdomain(p)
    {
        return false;
    }
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

pub fn is_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && v.as_bytes()[0].is_ascii_alphanumeric()
            && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric())
}

/// Kind-specific validation (the subset of upstream's that users hit most).
pub fn validate_kind(info: &ResourceInfo, obj: &Value, causes: &mut Vec<Cause>) {
    let spec = obj.get("spec");
    match (info.group.as_str(), info.kind.as_str()) {
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => {
            if let Some(r) = spec.and_then(|s| s.get("replicas"))
                && r.as_i64().is_some_and(|n| n < 0)
            {
                causes.push(Cause::invalid(
                    "spec.replicas",
                    r,
                    "must be greater than or equal to 0",
                ));
            }
            let selector = spec.and_then(|s| s.get("selector"));
            match selector {
                None | Some(Value::Null) => causes.push(Cause::required("spec.selector", "")),
                Some(sel) => {
                    let labels = spec
                        .and_then(|s| s.pointer("/template/metadata/labels"))
                        .and_then(Value::as_object);
                    match super::selector::LabelSelector::from_label_selector_object(sel) {
                        Ok(ls) => {
                            if ls.is_empty() {
                                causes.push(Cause::invalid(
                                    "spec.selector",
                                    sel,
                                    "empty selector is invalid for deployment",
                                ));
                            } else if !ls.matches(labels) {
                                causes.push(Cause::invalid(
                                    "spec.template.metadata.labels",
                                    &json!(labels.cloned().unwrap_or_default()),
                                    "`selector` does not match template `labels`",
                                ));
                            }
                        }
                        Err(e) => causes.push(Cause::invalid("spec.selector", sel, &e)),
                    }
                }
            }
            if let Some(ps) = spec.and_then(|s| s.pointer("/template/spec")) {
                validate_pod_spec(ps, "spec.template.spec", causes);
            } else {
                causes.push(Cause::required("spec.template.spec.containers", ""));
            }
        }
        ("batch", "Job") => {
            if let Some(ps) = spec.and_then(|s| s.pointer("/template/spec")) {
                validate_pod_spec(ps, "spec.template.spec", causes);
                let rp = ps
                    .get("restartPolicy")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if rp != "OnFailure" && rp != "Never" {
                    causes.push(Cause::not_supported(
                        "spec.template.spec.restartPolicy",
                        &json!(rp),
                        &["OnFailure", "Never"],
                    ));
                }
            }
        }
        ("", "Pod") => match spec {
            Some(ps) => validate_pod_spec(ps, "spec", causes),
            None => causes.push(Cause::required("spec.containers", "")),
        },
        ("", "Service") => {
            if let Some(ports) = spec.and_then(|s| s.get("ports")).and_then(Value::as_array) {
                for (i, p) in ports.iter().enumerate() {
                    match p.get("port").and_then(Value::as_i64) {
                        Some(n) if (1..=65535).contains(&n) => {}
                        Some(n) => causes.push(Cause::invalid(
                            format!("spec.ports[{i}].port"),
                            &json!(n),
                            "must be between 1 and 65535, inclusive",
                        )),
                        None => causes.push(Cause::required(format!("spec.ports[{i}].port"), "")),
                    }
                }
            }
        }
        ("", "ConfigMap") | ("", "Secret") => {
            for field in ["data", "binaryData", "stringData"] {
                if let Some(m) = obj.get(field).and_then(Value::as_object) {
                    for k in m.keys() {
                        let ok = !k.is_empty()
                            && k.len() <= 253
                            && k.bytes().all(|b| {
                                b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'
                            });
                        if !ok {
                            causes.push(Cause::invalid(
                                format!("{field}[{k}]"),
                                &json!(k),
                                "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                            ));
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

fn validate_pod_spec(ps: &Value, path: &str, causes: &mut Vec<Cause>) {
    let containers = ps.get("containers").and_then(Value::as_array);
    match containers {
        None => causes.push(Cause::required(format!("{path}.containers"), "")),
        Some(cs) if cs.is_empty() => causes.push(Cause::required(format!("{path}.containers"), "")),
        Some(cs) => {
            let mut names = HashSet::new();
            for (i, c) in cs.iter().enumerate() {
                let name = c.get("name").and_then(Value::as_str).unwrap_or("");
                if name.is_empty() {
                    causes.push(Cause::required(format!("{path}.containers[{i}].name"), ""));
                } else if !is_dns1123_label(name) {
                    causes.push(Cause::invalid(
                        format!("{path}.containers[{i}].name"),
                        &json!(name),
                        DNS1123_LABEL_MSG,
                    ));
                } else if !names.insert(name.to_string()) {
                    causes.push(Cause::duplicate(
                        format!("{path}.containers[{i}].name"),
                        &json!(name),
                    ));
                }
                if c.get("image")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    causes.push(Cause::required(format!("{path}.containers[{i}].image"), ""));
                }
            }
        }
    }
}

pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// What upstream's ServiceAccount admission adds to a new pod: a projected
/// `kube-api-access-<5>` volume (bound token, `kube-root-ca.crt`, namespace)
/// mounted read-only in every container at [`SERVICE_ACCOUNT_MOUNT`] —
/// unless the pod or its account sets `automountServiceAccountToken: false`
/// or a container already mounts something there.
pub fn mount_service_account_token(pod: &mut Value, account_opts_out: bool) {
    let Some(spec) = pod.get_mut("spec").and_then(|s| s.as_object_mut()) else {
        return;
    };
    match spec
        .get("automountServiceAccountToken")
        .and_then(|v| v.as_bool())
    {
        Some(false) => return,
        None if account_opts_out => return,
        _ => {}
    }
    let containers = ["initContainers", "containers", "ephemeralContainers"];
    let already = containers.iter().any(|k| {
        spec.get(*k).and_then(|c| c.as_array()).is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("volumeMounts")
                    .and_then(|m| m.as_array())
                    .is_some_and(|ms| {
                        ms.iter().any(|m| {
                            m.get("mountPath").and_then(|p| p.as_str())
                                == Some(SERVICE_ACCOUNT_MOUNT)
                        })
                    })
            })
        })
    });
    if already {
        return;
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect();
    let name = format!("kube-api-access-{suffix}");
    let volume = json!({"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
    ]}});
    match spec.get_mut("volumes").and_then(|v| v.as_array_mut()) {
        Some(vs) => vs.push(volume),
        None => {
            spec.insert("volumes".into(), json!([volume]));
        }
    }
    let mount = json!({"name": name, "readOnly": true, "mountPath": SERVICE_ACCOUNT_MOUNT});
    for k in ["initContainers", "containers"] {
        if let Some(cs) = spec.get_mut(k).and_then(|c| c.as_array_mut()) {
            for c in cs {
                if let Some(o) = c.as_object_mut() {
                    match o.get_mut("volumeMounts").and_then(|m| m.as_array_mut()) {
                        Some(ms) => ms.push(mount.clone()),
                        None => {
                            o.insert("volumeMounts".into(), json!([mount.clone()]));
                        }
                    }
                }
            }
        }
    }
}

/// Upstream defaults for the kinds users create by hand.
pub fn apply_defaults(info: &ResourceInfo, obj: &mut Value) {
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "Pod") => {
            if let Some(spec) = obj.get_mut("spec") {
                default_pod_spec(spec);
                if let Some(s) = spec.as_object_mut() {
                    // What upstream's admission chain adds to a new pod.
                    set_default(s, "serviceAccountName", json!("default"));
                    if let Some(sa) = s.get("serviceAccountName").cloned() {
                        s.insert("serviceAccount".into(), sa);
                    }
                    set_default(s, "enableServiceLinks", json!(true));
                    set_default(s, "priority", json!(0));
                    set_default(s, "preemptionPolicy", json!("PreemptLowerPriority"));
                    default_tolerations(s);
                }
            }
            let qos = qos_class(obj.get("spec").unwrap_or(&Value::Null));
            let status = ensure_obj(obj, "status");
            set_default(status, "phase", json!("Pending"));
            set_default(status, "qosClass", json!(qos));
        }
        ("apps", "Deployment") => {
            let spec = ensure_obj(obj, "spec");
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            let strategy = ensure_obj_in(spec, "strategy");
            set_default(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type") == Some(&json!("RollingUpdate")) {
                let ru = ensure_obj_in(strategy, "rollingUpdate");
                set_default(ru, "maxUnavailable", json!("25%"));
                set_default(ru, "maxSurge", json!("25%"));
            }
            default_template(spec);
        }
        ("apps", "ReplicaSet") => {
            let spec = ensure_obj(obj, "spec");
            set_default(spec, "replicas", json!(1));
            default_template(spec);
        }
        ("apps", "StatefulSet") => {
            let spec = ensure_obj(obj, "spec");
            set_default(spec, "replicas", json!(1));
            set_default(spec, "podManagementPolicy", json!("OrderedReady"));
            set_default(spec, "revisionHistoryLimit", json!(10));
            let strategy = ensure_obj_in(spec, "updateStrategy");
            set_default(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type") == Some(&json!("RollingUpdate")) {
                let ru = ensure_obj_in(strategy, "rollingUpdate");
                set_default(ru, "partition", json!(0));
            }
            default_template(spec);
        }
        ("apps", "DaemonSet") => {
            let spec = ensure_obj(obj, "spec");
            set_default(spec, "revisionHistoryLimit", json!(10));
            let strategy = ensure_obj_in(spec, "updateStrategy");
            set_default(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type") == Some(&json!("RollingUpdate")) {
                let ru = ensure_obj_in(strategy, "rollingUpdate");
                set_default(ru, "maxUnavailable", json!(1));
                set_default(ru, "maxSurge", json!(0));
            }
            default_template(spec);
        }
        ("batch", "Job") => {
            generate_job_selector(obj);
            let spec = ensure_obj(obj, "spec");
            set_default(spec, "parallelism", json!(1));
            set_default(spec, "completions", json!(1));
            set_default(spec, "backoffLimit", json!(6));
            set_default(spec, "completionMode", json!("NonIndexed"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
            default_template(spec);
        }
        ("batch", "CronJob") => {
            let spec = ensure_obj(obj, "spec");
            set_default(spec, "concurrencyPolicy", json!("Allow"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "successfulJobsHistoryLimit", json!(3));
            set_default(spec, "failedJobsHistoryLimit", json!(1));
            if let Some(js) = spec
                .get_mut("jobTemplate")
                .and_then(|j| j.get_mut("spec"))
                .and_then(Value::as_object_mut)
            {
                default_template(js);
            }
        }
        ("", "Service") => {
            let spec = ensure_obj(obj, "spec");
            set_default(spec, "type", json!("ClusterIP"));
            set_default(spec, "sessionAffinity", json!("None"));
            if spec.get("type") != Some(&json!("ExternalName")) {
                set_default(spec, "ipFamilies", json!(["IPv4"]));
                set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
                set_default(spec, "internalTrafficPolicy", json!("Cluster"));
            }
            if matches!(
                spec.get("type").and_then(Value::as_str),
                Some("NodePort") | Some("LoadBalancer")
            ) {
                set_default(spec, "externalTrafficPolicy", json!("Cluster"));
            }
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports {
                    if let Some(p) = p.as_object_mut() {
                        set_default(p, "protocol", json!("TCP"));
                        if !p.contains_key("targetPort")
                            && let Some(port) = p.get("port").cloned()
                        {
                            p.insert("targetPort".into(), port);
                        }
                    }
                }
            }
        }
        ("", "Namespace") => {
            let spec = ensure_obj(obj, "spec");
            set_default(spec, "finalizers", json!(["kubernetes"]));
            let status = ensure_obj(obj, "status");
            set_default(status, "phase", json!("Active"));
            let name = meta_str(obj, "name").unwrap_or("").to_string();
            let labels = ensure_obj_in(meta_mut(obj), "labels");
            labels.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
        ("", "Secret") => {
            let o = obj.as_object_mut().expect("object checked by caller");
            set_default(o, "type", json!("Opaque"));
            // stringData is write-only: folded into data, base64-encoded.
            if let Some(Value::Object(sd)) = o.remove("stringData") {
                use base64::Engine;
                let data = ensure_obj_in(o, "data");
                for (k, v) in sd {
                    let s = v.as_str().unwrap_or("").to_string();
                    data.insert(
                        k,
                        json!(base64::engine::general_purpose::STANDARD.encode(s.as_bytes())),
                    );
                }
            }
        }
        ("", "PersistentVolumeClaim") => {
            let spec = ensure_obj(obj, "spec");
            set_default(spec, "volumeMode", json!("Filesystem"));
            let status = ensure_obj(obj, "status");
            set_default(status, "phase", json!("Pending"));
        }
        _ => {}
    }
}

fn default_template(spec: &mut Map<String, Value>) {
    if let Some(ps) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
        default_pod_spec(ps);
    }
}

fn default_pod_spec(spec: &mut Value) {
    let Some(s) = spec.as_object_mut() else {
        return;
    };
    set_default(s, "restartPolicy", json!("Always"));
    set_default(s, "terminationGracePeriodSeconds", json!(30));
    set_default(s, "dnsPolicy", json!("ClusterFirst"));
    set_default(s, "securityContext", json!({}));
    set_default(s, "schedulerName", json!("default-scheduler"));
    if let Some(sa) = s.get("serviceAccount").cloned()
        && !s.contains_key("serviceAccountName")
    {
        s.insert("serviceAccountName".into(), sa);
    }
    for field in ["containers", "initContainers"] {
        if let Some(cs) = s.get_mut(field).and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                let image = c
                    .get("image")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                set_default(c, "imagePullPolicy", json!(default_pull_policy(&image)));
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                set_default(c, "resources", json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        set_default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

/// `Always` for `:latest` or no tag, otherwise `IfNotPresent`.
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

/// Upstream's Job strategy `generateSelector`: unless `spec.manualSelector`
/// is true, a Job's pods carry its name and uid as labels and the Job
/// selects them by uid (the uid is known only here, at create).
fn generate_job_selector(obj: &mut Value) {
    let name = meta_str(obj, "name").unwrap_or("").to_string();
    let uid = meta_str(obj, "uid").unwrap_or("").to_string();
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if uid.is_empty() || spec.get("manualSelector") == Some(&json!(true)) {
        return;
    }
    set_default(spec, "manualSelector", json!(false));
    let labels = ensure_obj_in(
        ensure_obj_in(ensure_obj_in(spec, "template"), "metadata"),
        "labels",
    );
    for k in ["batch.kubernetes.io/job-name", "job-name"] {
        labels.entry(k).or_insert_with(|| json!(name));
    }
    for k in ["batch.kubernetes.io/controller-uid", "controller-uid"] {
        labels.entry(k).or_insert_with(|| json!(uid));
    }
    let selector = ensure_obj_in(ensure_obj_in(spec, "selector"), "matchLabels");
    selector
        .entry("batch.kubernetes.io/controller-uid")
        .or_insert_with(|| json!(uid));
}

fn ensure_obj<'a>(obj: &'a mut Value, field: &str) -> &'a mut Map<String, Value> {
    let o = obj.as_object_mut().expect("object checked by caller");
    ensure_obj_in(o, field)
}

fn ensure_obj_in<'a>(o: &'a mut Map<String, Value>, field: &str) -> &'a mut Map<String, Value> {
    if !o.get(field).is_some_and(Value::is_object) {
        o.insert(field.into(), json!({}));
    }
    o.get_mut(field).unwrap().as_object_mut().unwrap()
}

fn set_default(o: &mut Map<String, Value>, field: &str, v: Value) {
    if o.get(field).is_none_or(Value::is_null) {
        o.insert(field.into(), v);
    }
}

/// Whether a change between two objects counts as a spec change for
/// `metadata.generation`: anything but metadata and status.
pub fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("metadata");
            o.remove("status");
        }
        v
    };
    strip(old) != strip(new)
}

/// ClusterIP allocation from the service CIDR.
pub struct ServiceIpAllocator {
    base: u32,
    size: u32,
    used: Mutex<HashSet<u32>>,
}

impl ServiceIpAllocator {
    pub fn new(cidr: &str) -> Self {
        let (ip, bits) = cidr.split_once('/').unwrap_or((cidr, "16"));
        let base: u32 = ip.parse::<Ipv4Addr>().map(u32::from).unwrap_or(0x0a2b0000);
        let bits: u32 = bits.parse().unwrap_or(16);
        ServiceIpAllocator {
            base,
            size: 1u32 << (32 - bits),
            used: Mutex::new(HashSet::new()),
        }
    }

    pub fn contains(&self, ip: &str) -> bool {
        ip.parse::<Ipv4Addr>()
            .map(u32::from)
            .is_ok_and(|v| v >= self.base && v < self.base + self.size)
    }

    pub fn mark(&self, ip: &str) {
        if let Ok(a) = ip.parse::<Ipv4Addr>() {
            self.used.lock().unwrap().insert(u32::from(a));
        }
    }

    pub fn release(&self, ip: &str) {
        if let Ok(a) = ip.parse::<Ipv4Addr>() {
            self.used.lock().unwrap().remove(&u32::from(a));
        }
    }

    /// A random free address (never .0, the kubernetes service's .1, or
    /// the DNS service's .10, unless asked for explicitly).
    pub fn allocate(&self) -> ApiResult<String> {
        let mut used = self.used.lock().unwrap();
        for _ in 0..4096 {
            let off = rand::random_range(11..self.size - 1);
            let ip = self.base + off;
            if used.insert(ip) {
                return Ok(Ipv4Addr::from(ip).to_string());
            }
        }
        Err(ApiError::internal(
            "failed to allocate a serviceIP: range is full",
        ))
    }
}

/// Whether the kind keeps `metadata.generation`: custom resources and the
/// built-ins whose status reports an `observedGeneration` (plus the few
/// upstream strategies that set it without one).
pub fn tracks_generation(info: &ResourceInfo, is_crd: bool) -> bool {
    if is_crd {
        return true;
    }
    if matches!(
        (info.group.as_str(), info.kind.as_str()),
        ("networking.k8s.io", "NetworkPolicy" | "Ingress") | ("apiextensions.k8s.io", _)
    ) {
        return true;
    }
    let defs = super::openapi::definitions();
    let Some(def) = info.definition.as_deref().and_then(|d| defs.get(d)) else {
        return false;
    };
    let status_ref = def
        .pointer("/properties/status/$ref")
        .or_else(|| def.pointer("/properties/status/allOf/0/$ref"))
        .and_then(Value::as_str)
        .and_then(|r| r.rsplit('/').next());
    status_ref
        .and_then(|r| defs.get(r))
        .and_then(|d| d.pointer("/properties/observedGeneration"))
        .is_some()
}

/// DefaultTolerationSeconds admission: tolerate not-ready and unreachable
/// nodes for 300 s unless the pod says otherwise.
fn default_tolerations(spec: &mut Map<String, Value>) {
    let list = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(list) = list.as_array_mut() else {
        return;
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let present = list.iter().any(|t| {
            t.get("key").and_then(Value::as_str) == Some(key)
                || (t.get("operator").and_then(Value::as_str) == Some("Exists")
                    && t.get("key").is_none())
        });
        if !present {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
}

/// The pod's QoS class from its containers' requests and limits, with
/// requests defaulted from limits as upstream does.
pub fn qos_class(spec: &Value) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    let containers = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| spec.get(*f).and_then(Value::as_array))
        .flatten();
    for c in containers {
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        if limits.is_some_and(|l| !l.is_empty()) || requests.is_some_and(|r| !r.is_empty()) {
            any = true;
        }
        for r in ["cpu", "memory"] {
            let l = limits.and_then(|l| l.get(r));
            let q = requests.and_then(|q| q.get(r)).or(l);
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

//! Strict field validation: finding fields an object carries that its schema
//! does not know.
//!
//! For built-in kinds kube-apiserver finds these while decoding JSON into Go
//! structs (sigs.k8s.io/json with `DisallowUnknownFields`); we walk the same
//! structure through the OpenAPI definitions instead. For custom resources it
//! runs structural pruning (apiextensions-apiserver `pruning.PruneWithOptions`)
//! and reports what would be pruned; [`unknown_fields_structural`] mirrors
//! that. Paths use upstream's format: `spec.containers[0].foo`, map keys as
//! `.key`. The caller formats `unknown field "<path>"`.

use serde_json::{Map, Value};

/// Upstream stops collecting strict decoding errors after this many.
const MAX_ERRORS: usize = 100;

/// Maximum `$ref` chain followed when resolving a schema (guards against cycles).
const MAX_REF_DEPTH: usize = 32;

/// Definitions without `properties` that are nevertheless Go structs with no
/// fields, so any field inside them is unknown. Every other definition without
/// `properties` (RawExtension, IntOrString, Quantity, Time, JSON, FieldsV1, …)
/// has a custom decoder and accepts any content.
const EMPTY_STRUCTS: &[&str] = &[
    "io.k8s.api.apiserverinternal.v1alpha1.StorageVersionSpec",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceSubresourceStatus",
];

/// Paths of fields in `obj` that definition `def_name` (a key of the OpenAPI
/// `$defs` map) does not declare, in document order. `apiVersion` and `kind`
/// are always accepted at the root. An unknown `def_name` accepts everything.
pub fn unknown_fields(obj: &Value, defs: &Map<String, Value>, def_name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Some(def) = defs.get(def_name) else {
        return out;
    };
    let mut w = DefWalker {
        defs,
        out: &mut out,
    };
    let mut path = String::new();
    if let Some(node) = w.resolve(def, Some(def_name)) {
        w.walk(obj, node, &mut path, true);
    }
    out
}

/// A resolved schema node, remembering the definition it came from.
#[derive(Clone, Copy)]
struct Node<'a> {
    schema: &'a Value,
    def: Option<&'a str>,
}

struct DefWalker<'a, 'o> {
    defs: &'a Map<String, Value>,
    out: &'o mut Vec<String>,
}

impl<'a> DefWalker<'a, '_> {
    /// Follows `$ref` (and a single-element `allOf`) to the describing schema.
    fn resolve(&self, v: &'a Value, def: Option<&'a str>) -> Option<Node<'a>> {
        let mut cur = Node { schema: v, def };
        for _ in 0..MAX_REF_DEPTH {
            if let Some(r) = cur.schema.get("$ref").and_then(Value::as_str) {
                let name = r.rsplit('/').next().unwrap_or(r);
                let (name, schema) = self.defs.get_key_value(name)?;
                cur = Node {
                    schema,
                    def: Some(name.as_str()),
                };
                continue;
            }
            if let Some(first) = cur
                .schema
                .get("allOf")
                .and_then(Value::as_array)
                .filter(|a| a.len() == 1)
                .and_then(|a| a.first())
            {
                cur.schema = first;
                continue;
            }
            return Some(cur);
        }
        None
    }

    fn record(&mut self, path: &str, key: &str) {
        if self.out.len() < MAX_ERRORS {
            self.out.push(join_key(path, key));
        }
    }

    fn walk(&mut self, v: &Value, node: Node<'a>, path: &mut String, root: bool) {
        let s = node.schema;
        if s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
            return;
        }
        match v {
            Value::Object(obj) => {
                if let Some(props) = s.get("properties").and_then(Value::as_object) {
                    for (k, val) in obj {
                        if root && (k == "apiVersion" || k == "kind") {
                            continue;
                        }
                        match props.get(k) {
                            Some(p) => {
                                if let Some(child) = self.resolve(p, None) {
                                    self.descend(val, child, path, k);
                                }
                            }
                            None => self.record(path, k),
                        }
                    }
                } else if let Some(ap) = s.get("additionalProperties").filter(|a| a.is_object()) {
                    if let Some(child) = self.resolve(ap, None) {
                        for (k, val) in obj {
                            self.descend(val, child, path, k);
                        }
                    }
                } else if node.def.is_some_and(|d| EMPTY_STRUCTS.contains(&d)) {
                    for k in obj.keys() {
                        self.record(path, k);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(child) = s.get("items").and_then(|i| self.resolve(i, None)) {
                    for (i, item) in items.iter().enumerate() {
                        let len = path.len();
                        path.push_str(&format!("[{i}]"));
                        self.walk(item, child, path, false);
                        path.truncate(len);
                    }
                }
            }
            _ => {}
        }
    }

    fn descend(&mut self, v: &Value, node: Node<'a>, path: &mut String, key: &str) {
        // Scalars cannot hold unknown fields; skip the path bookkeeping.
        if !v.is_object() && !v.is_array() {
            return;
        }
        let len = path.len();
        push_key(path, key);
        self.walk(v, node, path, false);
        path.truncate(len);
    }
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

fn join_key(path: &str, key: &str) -> String {
    let mut p = path.to_string();
    push_key(&mut p, key);
    p
}

/// Paths of fields structural pruning would drop from a custom resource,
/// sorted like upstream. `schema` is the CRD version's `openAPIV3Schema`.
/// `apiVersion`, `kind` and `metadata` are never reported at the root or in
/// `x-kubernetes-embedded-resource` objects (unknown fields inside
/// `metadata` are checked separately against ObjectMeta).
pub fn unknown_fields_structural(obj: &Value, schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut path = String::new();
    prune(obj, Some(schema), &mut path, &mut out, true);
    out.sort();
    out
}

fn is_meta_field(k: &str) -> bool {
    matches!(k, "apiVersion" | "kind" | "metadata")
}

fn flag(s: &Value, name: &str) -> bool {
    s.get(name) == Some(&Value::Bool(true))
}

/// `additionalProperties` of a structural node: `None` when absent, else the
/// value schema (`Some(None)` for the boolean form, which has no schema).
fn additional_properties(s: &Value) -> Option<Option<&Value>> {
    match s.get("additionalProperties")? {
        v @ Value::Object(_) => Some(Some(v)),
        Value::Bool(_) => Some(None),
        _ => None,
    }
}

fn structural_items(s: Option<&Value>) -> Option<&Value> {
    s.and_then(|s| s.get("items")).filter(|i| i.is_object())
}

/// Upstream `prune`; `root` marks the resource root, which is treated as an
/// embedded resource.
fn prune(x: &Value, s: Option<&Value>, path: &mut String, out: &mut Vec<String>, root: bool) {
    if let Some(s) = s
        && flag(s, "x-kubernetes-preserve-unknown-fields")
    {
        skip_prune(x, s, path, out, root);
        return;
    }
    match x {
        Value::Object(obj) => {
            let Some(s) = s else {
                out.extend(obj.keys().map(|k| join_key(path, k)));
                return;
            };
            let embedded = root || flag(s, "x-kubernetes-embedded-resource");
            let props = s.get("properties").and_then(Value::as_object);
            for (k, v) in obj {
                if embedded && is_meta_field(k) {
                    continue;
                }
                let len = path.len();
                if let Some(p) = props.and_then(|p| p.get(k)) {
                    push_key(path, k);
                    prune(v, Some(p), path, out, false);
                } else if let Some(ap) = additional_properties(s) {
                    push_key(path, k);
                    prune(v, ap, path, out, false);
                } else if !is_meta_field(k) || !path.is_empty() {
                    out.push(join_key(path, k));
                }
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            let item_schema = structural_items(s);
            for (i, v) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                prune(v, item_schema, path, out, false);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// Upstream `skipPrune`: below `x-kubernetes-preserve-unknown-fields` unknown
/// fields are kept, but known properties are still pruned.
fn skip_prune(x: &Value, s: &Value, path: &mut String, out: &mut Vec<String>, root: bool) {
    match x {
        Value::Object(obj) => {
            let embedded = root || flag(s, "x-kubernetes-embedded-resource");
            let props = s.get("properties").and_then(Value::as_object);
            for (k, v) in obj {
                if embedded && is_meta_field(k) {
                    continue;
                }
                let len = path.len();
                if let Some(p) = props.and_then(|p| p.get(k)) {
                    push_key(path, k);
                    prune(v, Some(p), path, out, false);
                } else if let Some(ap) = additional_properties(s) {
                    push_key(path, k);
                    prune(v, ap, path, out, false);
                }
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = structural_items(Some(s)) {
                for (i, v) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    skip_prune(v, item_schema, path, out, false);
                    path.truncate(len);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The embedded v1.33 definitions the server itself uses.
    fn defs() -> &'static Map<String, Value> {
        crate::api::openapi::definitions()
    }

    fn check(def: &str, obj: Value) -> Vec<String> {
        unknown_fields(&obj, defs(), def)
    }

    #[test]
    fn clean_deployment_has_no_unknown_fields() {
        let d = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"any/key": "v"}, "annotations": {"x": "y"},
                "creationTimestamp": null, "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}]},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [{
                            "name": "c", "image": "nginx",
                            "ports": [{"containerPort": 80}],
                            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                            "env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
                        }]
                    }
                }
            },
            "status": {"replicas": 2, "conditions": [{"type": "Available", "status": "True"}]}
        });
        assert!(check("io.k8s.api.apps.v1.Deployment", d).is_empty());
    }

    #[test]
    fn reports_paths_in_document_order() {
        let d = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "foo": 1,
            "metadata": {"name": "web", "bogus": {"x": 1}},
            "spec": {
                "template": {"spec": {"containers": [
                    {"name": "a"},
                    {"name": "b", "imagee": "x", "ports": [{"containerPort": 1, "hostIp": "x"}]}
                ]}},
                "extra": [1, 2]
            }
        });
        assert_eq!(
            check("io.k8s.api.apps.v1.Deployment", d),
            vec![
                "foo",
                "metadata.bogus",
                "spec.template.spec.containers[1].imagee",
                "spec.template.spec.containers[1].ports[0].hostIp",
                "spec.extra",
            ]
        );
    }

    #[test]
    fn field_names_are_case_sensitive() {
        let pod = json!({"spec": {"containers": [{"Name": "a"}], "NodeName": "n"}});
        assert_eq!(
            check("io.k8s.api.core.v1.Pod", pod),
            vec!["spec.containers[0].Name", "spec.NodeName"]
        );
    }

    #[test]
    fn opaque_types_accept_anything() {
        // RawExtension, IntOrString, Quantity, Time, FieldsV1 decode themselves.
        let cr = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": "r"}, "revision": 1,
            "data": {"anything": {"goes": [1, {"here": true}]}}});
        assert!(check("io.k8s.api.apps.v1.ControllerRevision", cr).is_empty());
        let pdb = json!({"spec": {"minAvailable": {"weird": 1}}});
        assert!(check("io.k8s.api.policy.v1.PodDisruptionBudget", pdb).is_empty());
        // Values of the wrong type are a decode error, not an unknown field.
        assert!(
            check(
                "io.k8s.api.core.v1.Pod",
                json!({"spec": "x", "metadata": [1]})
            )
            .is_empty()
        );
        assert!(check("no.such.Definition", json!({"a": 1})).is_empty());
    }

    #[test]
    fn maps_of_structs_use_dotted_keys() {
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "foos.example.com"},
            "spec": {
                "group": "example.com",
                "names": {"plural": "foos", "kind": "Foo"},
                "scope": "Namespaced",
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": true,
                        "properties": {"spec": {"type": "object", "typo": 1, "default": {"a": 1}}}
                    }},
                    "subresources": {"status": {"unexpected": true}}
                }]
            }
        });
        assert_eq!(
            check(
                "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
                crd
            ),
            vec![
                "spec.versions[0].schema.openAPIV3Schema.properties.spec.typo",
                "spec.versions[0].subresources.status.unexpected",
            ]
        );
    }

    #[test]
    fn structural_pruning_paths() {
        let schema = json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "replicas": {"type": "integer"},
                        "items": {"type": "array", "items": {
                            "type": "object", "properties": {"name": {"type": "string"}}}},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "ports": {"type": "object", "additionalProperties": {
                            "type": "object", "properties": {"port": {"type": "integer"}}}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                            "properties": {"known": {"type": "object",
                                "properties": {"a": {"type": "string"}}}}},
                        "empty": {"type": "object"},
                        "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                            "properties": {"spec": {"type": "object"}}}
                    }
                },
                "status": {"type": "object", "properties": {"ok": {"type": "boolean"}}}
            }
        });
        let obj = json!({
            "apiVersion": "example.com/v1",
            "kind": "Foo",
            "metadata": {"name": "x", "whatever": 1},
            "zzz": 1,
            "spec": {
                "replicas": 1,
                "bogus": true,
                "items": [{"name": "a"}, {"name": "b", "nme": "typo"}],
                "labels": {"a": "b"},
                "ports": {"http": {"port": 80, "proto": "TCP"}},
                "free": {"anything": {"x": 1}, "known": {"a": "x", "b": "y"}},
                "empty": {"k": 1},
                "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                    "spec": {"c": 1}, "other": 1}
            },
            "status": {"ok": true, "phase": "x"}
        });
        assert_eq!(
            unknown_fields_structural(&obj, &schema),
            vec![
                "spec.bogus",
                "spec.empty.k",
                "spec.free.known.b",
                "spec.items[1].nme",
                "spec.ports.http.proto",
                "spec.template.other",
                "spec.template.spec.c",
                "status.phase",
                "zzz",
            ]
        );
    }

    #[test]
    fn structural_preserve_unknown_at_root() {
        let schema = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true,
            "properties": {"spec": {"type": "object", "properties": {"a": {"type": "string"}}}}});
        let obj = json!({"kind": "X", "anything": {"deep": 1}, "spec": {"a": "1", "b": 2}});
        assert_eq!(unknown_fields_structural(&obj, &schema), vec!["spec.b"]);
    }
}

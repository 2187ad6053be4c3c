// TEMPORARY STUB (being replaced by the real module)
use serde_json::{Value, json};
#[allow(clippy::too_many_arguments)]
pub fn table(_group: &str, _kind: &str, objs: &[&Value], _crd: Option<&[Value]>, _now: chrono::DateTime<chrono::Utc>, _inc: bool, rv: &str, _c: Option<&str>, _r: Option<i64>) -> Value {
    json!({"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{"resourceVersion":rv},"columnDefinitions":[{"name":"Name","type":"string","format":"name","description":"","priority":0}],
      "rows": objs.iter().map(|o| json!({"cells":[o.pointer("/metadata/name")], "object": {"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata": o.get("metadata")}})).collect::<Vec<_>>()})
}

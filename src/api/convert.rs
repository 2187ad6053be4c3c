//! Conversion between versions that share one storage: events
//! (core/v1 ⇄ events.k8s.io/v1) and HorizontalPodAutoscalers
//! (autoscaling/v2 ⇄ autoscaling/v1). Storage holds core/v1 Events and
//! autoscaling/v2 HPAs; other versions are converted on the way in and out.

use serde_json::{Map, Value, json};

use super::registry::ResourceInfo;

fn take(o: &mut Map<String, Value>, from: &str, to: &str, out: &mut Map<String, Value>) {
    if let Some(v) = o.remove(from) {
        out.insert(to.into(), v);
    }
}

/// The stored (canonical) form of an object written through `info`.
pub fn to_storage(info: &ResourceInfo, v: Value) -> Value {
    match (
        info.group.as_str(),
        info.version.as_str(),
        info.kind.as_str(),
    ) {
        ("events.k8s.io", _, "Event") => event_to_core(v),
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => hpa_v1_to_v2(v),
        _ => v,
    }
}

/// The object as `info`'s version presents it.
pub fn from_storage(info: &ResourceInfo, v: Value) -> Value {
    match (
        info.group.as_str(),
        info.version.as_str(),
        info.kind.as_str(),
    ) {
        ("events.k8s.io", _, "Event") => event_from_core(v),
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => hpa_v2_to_v1(v),
        _ => v,
    }
}

pub fn needs_conversion(info: &ResourceInfo) -> bool {
    matches!(
        (
            info.group.as_str(),
            info.version.as_str(),
            info.kind.as_str()
        ),
        ("events.k8s.io", _, "Event") | ("autoscaling", "v1", "HorizontalPodAutoscaler")
    )
}

fn event_to_core(v: Value) -> Value {
    let Value::Object(mut o) = v else { return v };
    if o.get("apiVersion").and_then(Value::as_str) == Some("v1") {
        return Value::Object(o);
    }
    let mut out = Map::new();
    for k in [
        "metadata",
        "eventTime",
        "series",
        "action",
        "reason",
        "related",
        "type",
        "reportingInstance",
    ] {
        take(&mut o, k, k, &mut out);
    }
    take(&mut o, "regarding", "involvedObject", &mut out);
    take(&mut o, "note", "message", &mut out);
    take(
        &mut o,
        "reportingController",
        "reportingComponent",
        &mut out,
    );
    take(&mut o, "deprecatedSource", "source", &mut out);
    take(
        &mut o,
        "deprecatedFirstTimestamp",
        "firstTimestamp",
        &mut out,
    );
    take(&mut o, "deprecatedLastTimestamp", "lastTimestamp", &mut out);
    take(&mut o, "deprecatedCount", "count", &mut out);
    out.insert("apiVersion".into(), json!("v1"));
    out.insert("kind".into(), json!("Event"));
    if !out.contains_key("involvedObject") {
        out.insert("involvedObject".into(), json!({}));
    }
    Value::Object(out)
}

fn event_from_core(v: Value) -> Value {
    let Value::Object(mut o) = v else { return v };
    let mut out = Map::new();
    for k in [
        "metadata",
        "eventTime",
        "series",
        "action",
        "reason",
        "related",
        "type",
        "reportingInstance",
    ] {
        take(&mut o, k, k, &mut out);
    }
    take(&mut o, "involvedObject", "regarding", &mut out);
    take(&mut o, "message", "note", &mut out);
    take(
        &mut o,
        "reportingComponent",
        "reportingController",
        &mut out,
    );
    if !out.contains_key("reportingController")
        && let Some(c) = o.get("source").and_then(|s| s.get("component")).cloned()
    {
        out.insert("reportingController".into(), c);
    }
    take(&mut o, "source", "deprecatedSource", &mut out);
    take(
        &mut o,
        "firstTimestamp",
        "deprecatedFirstTimestamp",
        &mut out,
    );
    take(&mut o, "lastTimestamp", "deprecatedLastTimestamp", &mut out);
    take(&mut o, "count", "deprecatedCount", &mut out);
    out.insert("apiVersion".into(), json!("events.k8s.io/v1"));
    out.insert("kind".into(), json!("Event"));
    Value::Object(out)
}

fn hpa_v1_to_v2(mut v: Value) -> Value {
    if v.get("apiVersion").and_then(Value::as_str) == Some("autoscaling/v2") {
        return v;
    }
    v["apiVersion"] = json!("autoscaling/v2");
    if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut)
        && let Some(t) = spec.remove("targetCPUUtilizationPercentage")
    {
        spec.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": t}}}]),
        );
    }
    if let Some(st) = v.get_mut("status").and_then(Value::as_object_mut)
        && let Some(c) = st.remove("currentCPUUtilizationPercentage")
    {
        st.insert(
            "currentMetrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": c}}}]),
        );
    }
    v
}

fn hpa_v2_to_v1(mut v: Value) -> Value {
    v["apiVersion"] = json!("autoscaling/v1");
    let cpu_target = v
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
        .and_then(|ms| {
            ms.iter().find(|m| {
                m.pointer("/resource/name") == Some(&json!("cpu"))
                    && m.pointer("/resource/target/type") == Some(&json!("Utilization"))
            })
        })
        .and_then(|m| m.pointer("/resource/target/averageUtilization").cloned());
    if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("metrics");
        spec.remove("behavior");
        if let Some(t) = cpu_target {
            spec.insert("targetCPUUtilizationPercentage".into(), t);
        }
    }
    let cpu_current = v
        .pointer("/status/currentMetrics")
        .and_then(Value::as_array)
        .and_then(|ms| {
            ms.iter()
                .find(|m| m.pointer("/resource/name") == Some(&json!("cpu")))
        })
        .and_then(|m| m.pointer("/resource/current/averageUtilization").cloned());
    if let Some(st) = v.get_mut("status").and_then(Value::as_object_mut) {
        st.remove("currentMetrics");
        st.remove("conditions");
        if let Some(c) = cpu_current {
            st.insert("currentCPUUtilizationPercentage".into(), c);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_round_trip() {
        let core = json!({"apiVersion":"v1","kind":"Event","metadata":{"name":"e"},
            "involvedObject":{"kind":"Pod","name":"p"},"message":"hi","reason":"Started","count":2,"type":"Normal"});
        let ev = event_from_core(core.clone());
        assert_eq!(ev["regarding"]["name"], "p");
        assert_eq!(ev["note"], "hi");
        assert_eq!(ev["deprecatedCount"], 2);
        assert_eq!(event_to_core(ev), core);
    }

    #[test]
    fn hpa_round_trip() {
        let v1 = json!({"apiVersion":"autoscaling/v1","kind":"HorizontalPodAutoscaler","metadata":{"name":"h"},
            "spec":{"minReplicas":1,"maxReplicas":5,"scaleTargetRef":{"kind":"Deployment","name":"web","apiVersion":"apps/v1"},"targetCPUUtilizationPercentage":50}});
        let v2 = hpa_v1_to_v2(v1.clone());
        assert_eq!(
            v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            50
        );
        let mut back = hpa_v2_to_v1(v2);
        back["kind"] = json!("HorizontalPodAutoscaler");
        assert_eq!(back, v1);
    }
}

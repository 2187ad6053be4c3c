//! Discovery (legacy and aggregated) and OpenAPI v3.

use std::sync::Arc;

use hyper::{Response, StatusCode};
use serde_json::{Map, Value, json};

use super::errors::{ApiError, ApiResult};
use super::http::Body;
use super::registry::{Registry, ResourceInfo};
use super::{Api, bytes_response, json_response, openapi};

const AGGREGATED_CT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn wants_aggregated(accept: &str) -> bool {
    accept.contains("g=apidiscovery.k8s.io") && accept.contains("as=APIGroupDiscoveryList")
}

fn aggregated_ct(accept: &str) -> &'static str {
    // Answer in the newest version the client listed.
    if accept.contains("v=v2;") || accept.contains("v=v2,") || accept.ends_with("v=v2") {
        AGGREGATED_CT
    } else {
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
    }
}

pub fn api_root(api: &Api, accept: &str) -> Response<Body> {
    let reg = api.registry();
    if wants_aggregated(accept) {
        let ct = aggregated_ct(accept);
        let items = vec![group_discovery(&reg, "", &["v1".to_string()])];
        return aggregated(ct, items);
    }
    json_response(
        StatusCode::OK,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": api.server_address}],
        }),
    )
}

pub fn apis_root(api: &Api, accept: &str) -> Response<Body> {
    let reg = api.registry();
    let gvs: Vec<(String, Vec<String>)> = reg
        .group_versions()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .collect();
    if wants_aggregated(accept) {
        let mut items: Vec<Value> = gvs
            .iter()
            .map(|(g, vs)| group_discovery(&reg, g, vs))
            .collect();
        items.push(super::metrics::group_discovery());
        return aggregated(aggregated_ct(accept), items);
    }
    let mut groups: Vec<Value> = gvs.iter().map(|(g, vs)| api_group(g, vs)).collect();
    groups.push(super::metrics::api_group());
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
    )
}

fn api_group(g: &str, vs: &[String]) -> Value {
    let versions: Vec<Value> = vs
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({
        "name": g,
        "versions": versions,
        "preferredVersion": versions[0].clone(),
    })
}

pub fn group(api: &Api, g: &str) -> ApiResult<Response<Body>> {
    let reg = api.registry();
    let (_, vs) = reg
        .group_versions()
        .into_iter()
        .find(|(name, _)| name == g)
        .ok_or_else(ApiError::not_found_path)?;
    let mut v = api_group(g, &vs);
    v["kind"] = json!("APIGroup");
    v["apiVersion"] = json!("v1");
    Ok(json_response(StatusCode::OK, &v))
}

fn aggregated(ct: &str, items: Vec<Value>) -> Response<Body> {
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": ct.split("v=").nth(1).map(|v| format!("apidiscovery.k8s.io/{}", v.split(';').next().unwrap_or("v2"))).unwrap_or_else(|| "apidiscovery.k8s.io/v2".into()),
        "metadata": {},
        "items": items,
    });
    bytes_response(
        StatusCode::OK,
        ct,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

fn group_discovery(reg: &Registry, g: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| {
            let resources: Vec<Value> = reg
                .resources_of(g, v)
                .iter()
                .map(|r| {
                    let mut o = json!({
                        "resource": r.resource,
                        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": r.singular,
                        "verbs": r.verbs(),
                    });
                    if !r.short_names.is_empty() {
                        o["shortNames"] = json!(r.short_names);
                    }
                    if !r.categories.is_empty() {
                        o["categories"] = json!(r.categories);
                    }
                    if !r.subresources.is_empty() {
                        o["subresources"] = Value::Array(
                            r.subresources
                                .iter()
                                .map(|s| {
                                    json!({
                                        "subresource": s.name,
                                        "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
                                        "verbs": s.verbs,
                                    })
                                })
                                .collect(),
                        );
                    }
                    o
                })
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions})
}

pub fn resource_list(_api: &Api, reg: &Registry, g: &str, v: &str) -> ApiResult<Response<Body>> {
    let rs = reg.resources_of(g, v);
    if rs.is_empty() {
        return Err(ApiError::not_found_path());
    }
    let mut out = Vec::new();
    for r in &rs {
        let mut o = json!({
            "name": r.resource,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
        });
        if !r.short_names.is_empty() {
            o["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            o["categories"] = json!(r.categories);
        }
        out.push(o);
        for s in &r.subresources {
            let mut so = json!({
                "name": format!("{}/{}", r.resource, s.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": s.kind,
                "verbs": s.verbs,
            });
            if s.group != r.group || s.version != r.version {
                so["group"] = json!(s.group);
                so["version"] = json!(s.version);
            }
            out.push(so);
        }
    }
    let gv = if g.is_empty() {
        v.to_string()
    } else {
        format!("{g}/{v}")
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}),
    ))
}

fn gv_path(g: &str, v: &str) -> String {
    if g.is_empty() {
        format!("api/{v}")
    } else {
        format!("apis/{g}/{v}")
    }
}

/// The per-GV document, built once per registry generation and cached.
fn document(api: &Api, path: &str) -> Option<bytes::Bytes> {
    let reg = api.registry();
    if let Some((gen_, bytes)) = api.openapi_docs.lock().unwrap().get(path)
        && *gen_ == reg.generation
    {
        return Some(bytes.clone());
    }
    let (g, v) = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => (String::new(), v.to_string()),
        ["apis", g, v] => (g.to_string(), v.to_string()),
        _ => return None,
    };
    let rs: Vec<ResourceInfo> = reg
        .resources_of(&g, &v)
        .iter()
        .map(|r| (**r).clone())
        .collect();
    if rs.is_empty() {
        return None;
    }
    let mut extra = Map::new();
    for r in &rs {
        if let Some(crd) = reg.crd(r) {
            extra.insert(
                crd_schema_name(r),
                crd_openapi_schema(r, crd.schema.as_ref()),
            );
        }
    }
    let doc = openapi::v3_document(&g, &v, &rs, &extra);
    let bytes = bytes::Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
    api.openapi_docs
        .lock()
        .unwrap()
        .insert(path.to_string(), (reg.generation, bytes.clone()));
    Some(bytes)
}

/// The `?hash=` of a group-version's document, from its inputs rather than
/// its bytes, so the index needs no document built: built-in documents are
/// fixed by the binary; CRD ones change with the CRDs' names and schemas.
fn document_hash(reg: &Registry, path: &str) -> String {
    let mut input = format!("{}\n{path}\n", crate::cli::VERSION);
    let (g, v) = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => (String::new(), v.to_string()),
        ["apis", g, v] => (g.to_string(), v.to_string()),
        _ => return openapi::document_hash(input.as_bytes()),
    };
    for r in reg.resources_of(&g, &v) {
        if let Some(crd) = reg.crd(&r) {
            input.push_str(&serde_json::to_string(&*r).unwrap_or_default());
            input.push_str(&serde_json::to_string(&crd.schema).unwrap_or_default());
            input.push_str(&serde_json::to_string(&crd.printer_columns).unwrap_or_default());
        }
    }
    openapi::document_hash(input.as_bytes())
}

/// Schema name of a CRD kind in OpenAPI, as upstream: reversed group + kind.
pub fn crd_schema_name(r: &ResourceInfo) -> String {
    let mut parts: Vec<&str> = r.group.split('.').collect();
    parts.reverse();
    format!("{}.{}.{}", parts.join("."), r.version, r.kind)
}

fn crd_openapi_schema(r: &ResourceInfo, schema: Option<&Value>) -> Value {
    let mut s = schema
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    if let Some(o) = s.as_object_mut() {
        let props = o
            .entry("properties")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|p| {
                p.insert("apiVersion".into(), json!({"type": "string"}));
                p.insert("kind".into(), json!({"type": "string"}));
                p.insert(
                    "metadata".into(),
                    json!({"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}),
                );
            });
        let _ = props;
        o.insert(
            "x-kubernetes-group-version-kind".into(),
            json!([{"group": r.group, "version": r.version, "kind": r.kind}]),
        );
    }
    s
}

pub fn openapi_index(api: &Api) -> Response<Body> {
    let reg = api.registry();
    let paths: Vec<String> = reg
        .group_versions()
        .iter()
        .flat_map(|(g, vs)| vs.iter().map(move |v| gv_path(g, v)))
        .collect();
    let idx = openapi::v3_index(&paths, |p| document_hash(&reg, p));
    json_response(StatusCode::OK, &idx)
}

pub fn openapi_doc(api: &Arc<Api>, path: &str) -> ApiResult<Response<Body>> {
    let bytes = document(api, path).ok_or_else(ApiError::not_found_path)?;
    let mut resp = bytes_response(StatusCode::OK, "application/json", bytes);
    resp.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("public, immutable"),
    );
    Ok(resp)
}

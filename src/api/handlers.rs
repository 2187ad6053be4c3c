//! The generic REST verbs over any resource: get, list, create, update,
//! patch, delete, deletecollection, plus the status and scale subresources
//! and the review kinds (access and identity checks that store nothing).

use std::sync::Arc;

use hyper::{Response, StatusCode, header};
use serde_json::{Value, json};

use super::cache::Obj;
use super::errors::{ApiError, ApiResult, Cause};
use super::http::Body;
use super::objects::{self, meta_mut, meta_str};
use super::registry::{Registry, ResourceInfo};
use super::{Api, Ctx, Shape, Target, bytes_response, fieldcheck, openapi, protobuf, selector};
use crate::store::{Op, StoreError};

pub async fn dispatch(
    api: &Arc<Api>,
    reg: &Registry,
    t: &Target,
    verb: &str,
    ctx: &mut Ctx,
) -> ApiResult<Response<Body>> {
    if t.info.group.is_empty() && t.info.resource == "bindings" && verb == "create" {
        // POST /namespaces/{ns}/bindings names the pod in the body.
        let body = decode_object(ctx)?;
        let pod = meta_str(&body, "name").unwrap_or("").to_string();
        let pods = reg
            .find("", "v1", "pods")
            .ok_or_else(ApiError::not_found_path)?;
        let target = Target {
            info: pods,
            namespace: t.namespace.clone(),
            name: Some(pod),
            subresource: Some("binding".into()),
        };
        return bind(api, &target, &body, dry_run(ctx)?).await;
    }
    if !t.info.is_stored() {
        return match verb {
            "create" => review(api, t, ctx),
            _ => Err(ApiError::method_not_allowed()),
        };
    }
    if let Some(sub) = t.subresource.clone() {
        return match (sub.as_str(), verb) {
            ("status", "get") => get(api, reg, t, ctx),
            ("status", "update") => update(api, reg, t, ctx, Some("status")).await,
            ("status", "patch") => patch(api, reg, t, ctx, Some("status")).await,
            ("scale", "get") => scale_get(api, reg, t, ctx),
            ("scale", "update" | "patch") => scale_write(api, reg, t, ctx, verb).await,
            ("finalize", "update") => update(api, reg, t, ctx, Some("finalize")).await,
            ("binding", "create") => {
                let body = decode_object(ctx)?;
                bind(api, t, &body, dry_run(ctx)?).await
            }
            ("eviction", "create") => evict(api, reg, t, ctx).await,
            ("token", "create") => token_request(api, t, ctx).await,
            _ => Err(ApiError::method_not_allowed()),
        };
    }
    if !t.info.has_verb(verb) && verb != "watch" {
        return Err(ApiError::method_not_allowed());
    }
    match verb {
        "get" => get(api, reg, t, ctx),
        "list" => list(api, reg, t, ctx),
        "watch" => super::watch::watch(api, reg, t, ctx).await,
        "create" => create(api, reg, t, ctx).await,
        "update" => update(api, reg, t, ctx, None).await,
        "patch" => patch(api, reg, t, ctx, None).await,
        "delete" => delete(api, reg, t, ctx).await,
        "deletecollection" => delete_collection(api, reg, t, ctx).await,
        _ => Err(ApiError::method_not_allowed()),
    }
}

// ---------------------------------------------------------------- reading

/// The object as the request's group-version names it (CRD versions and
/// autoscaling v1/v2 share storage).
pub fn view(info: &ResourceInfo, obj: &Obj) -> bytes::Bytes {
    if super::convert::needs_conversion(info) {
        return bytes::Bytes::from(serde_json::to_vec(&view_value(info, obj)).unwrap_or_default());
    }
    let gv = info.gv();
    if *obj.meta.api_version == *gv.as_str() && *obj.meta.kind == *info.kind.as_str() {
        return obj.bytes.clone();
    }
    let mut v = obj.value();
    v["apiVersion"] = json!(gv);
    v["kind"] = json!(info.kind);
    bytes::Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
}

pub fn view_value(info: &ResourceInfo, obj: &Obj) -> Value {
    let mut v = super::convert::from_storage(info, obj.value());
    if v.is_object() {
        v["apiVersion"] = json!(info.gv());
        v["kind"] = json!(info.kind);
    }
    v
}

fn object_response(
    reg: &Registry,
    t: &Target,
    ctx: &Ctx,
    status: StatusCode,
    obj: &Obj,
) -> Response<Body> {
    let resp = match ctx.shape {
        Shape::Table => {
            let v = view_value(&t.info, obj);
            let cols = crd_columns(reg, &t.info);
            let table = super::table::table(
                &t.info.group,
                &t.info.kind,
                &[&v],
                cols.as_deref(),
                chrono::Utc::now(),
                true,
                &obj.mod_revision.to_string(),
                None,
                None,
            );
            bytes_response(
                status,
                "application/json;as=Table;v=v1;g=meta.k8s.io",
                serde_json::to_vec(&table).unwrap_or_default(),
            )
        }
        Shape::PartialMetadata => {
            let v = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.value().get("metadata")});
            bytes_response(
                status,
                "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io",
                serde_json::to_vec(&v).unwrap_or_default(),
            )
        }
        Shape::Object => bytes_response(status, "application/json", view(&t.info, obj)),
    };
    with_warnings(resp, ctx)
}

fn value_response(ctx: &Ctx, status: StatusCode, v: &Value) -> Response<Body> {
    with_warnings(
        bytes_response(
            status,
            "application/json",
            serde_json::to_vec(v).unwrap_or_default(),
        ),
        ctx,
    )
}

fn with_warnings(mut resp: Response<Body>, ctx: &Ctx) -> Response<Body> {
    for w in &ctx.warnings {
        let text = format!("299 - {}", serde_json::to_string(w).unwrap_or_default());
        if let Ok(v) = header::HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

pub fn crd_columns(reg: &Registry, info: &ResourceInfo) -> Option<Vec<Value>> {
    reg.crd(info)
        .map(|c| c.printer_columns.clone())
        .filter(|c| !c.is_empty())
}

fn get(api: &Api, reg: &Registry, t: &Target, ctx: &Ctx) -> ApiResult<Response<Body>> {
    let name = t.name.as_deref().unwrap_or("");
    let obj = api
        .cache
        .get(&t.key())
        .ok_or_else(|| ApiError::not_found(&t.info.group, &t.info.resource, name))?;
    Ok(object_response(reg, t, ctx, StatusCode::OK, &obj))
}

/// Parsed `labelSelector` and `fieldSelector` of a list or watch.
pub struct Filter {
    pub labels: Option<selector::LabelSelector>,
    pub fields: Option<selector::FieldSelector>,
}

impl Filter {
    pub fn from_query(info: &ResourceInfo, ctx: &Ctx) -> ApiResult<Filter> {
        let labels = match ctx.query.get("labelSelector") {
            Some(s) => Some(selector::LabelSelector::parse(s).map_err(ApiError::bad_request)?),
            None => None,
        };
        let fields = match ctx.query.get("fieldSelector") {
            Some(s) => {
                let mut fs = selector::FieldSelector::parse(s).map_err(ApiError::bad_request)?;
                for f in fs.fields() {
                    if !selector::FieldSelector::supported(&info.kind, f) {
                        return Err(ApiError::bad_request(format!(
                            "field label not supported: {f}"
                        )));
                    }
                }
                fs.canonicalize(&info.kind);
                Some(fs)
            }
            None => None,
        };
        Ok(Filter { labels, fields })
    }

    /// Whether a cached object is selected, from its extracted attributes.
    pub fn matches_obj(&self, o: &Obj) -> bool {
        if let Some(l) = &self.labels
            && !l.matches(o.meta.labels.as_ref())
        {
            return false;
        }
        if let Some(f) = &self.fields
            && !f.matches_fields(|name| o.field(name))
        {
            return false;
        }
        true
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: i64,
    start: String,
}

fn list(api: &Api, reg: &Registry, t: &Target, ctx: &Ctx) -> ApiResult<Response<Body>> {
    let filter = Filter::from_query(&t.info, ctx)?;
    let limit: usize = ctx
        .query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let start_after = match ctx.query.get("continue") {
        Some(c) => {
            use base64::Engine;
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(c)
                .or_else(|_| base64::engine::general_purpose::STANDARD.decode(c))
                .map_err(|_| ApiError::bad_request("invalid continue token"))?;
            let tok: ContinueToken = serde_json::from_slice(&raw)
                .map_err(|_| ApiError::bad_request("invalid continue token"))?;
            Some(tok.start)
        }
        None => None,
    };
    let prefix = t.prefix();
    let (all, rev) = api.cache.list(&prefix, start_after.as_deref());
    let mut items: Vec<Arc<Obj>> = Vec::new();
    let mut next: Option<String> = None;
    let mut remaining: i64 = 0;
    for o in all {
        if !filter.matches_obj(&o) {
            continue;
        }
        if limit > 0 && items.len() >= limit {
            if next.is_none() {
                next = items.last().map(|l| l.key.clone());
            }
            remaining += 1;
            continue;
        }
        items.push(o);
    }
    let continue_token = next.map(|start| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&ContinueToken { rv: rev, start }).unwrap_or_default())
    });
    let has_selector = filter.labels.is_some() || filter.fields.is_some();
    if ctx.shape == Shape::Table {
        let values: Vec<Value> = items.iter().map(|o| view_value(&t.info, o)).collect();
        let refs: Vec<&Value> = values.iter().collect();
        let cols = crd_columns(reg, &t.info);
        let table = super::table::table(
            &t.info.group,
            &t.info.kind,
            &refs,
            cols.as_deref(),
            chrono::Utc::now(),
            true,
            &rev.to_string(),
            continue_token.as_deref(),
            (continue_token.is_some() && !has_selector).then_some(remaining),
        );
        return Ok(bytes_response(
            StatusCode::OK,
            "application/json;as=Table;v=v1;g=meta.k8s.io",
            serde_json::to_vec(&table).unwrap_or_default(),
        ));
    }
    // Assemble the list from the cached serialized objects.
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if let Some(c) = &continue_token {
        meta["continue"] = json!(c);
        if !has_selector {
            meta["remainingItemCount"] = json!(remaining);
        }
    }
    let mut out = Vec::with_capacity(items.iter().map(|o| o.bytes.len() + 1).sum::<usize>() + 256);
    out.extend_from_slice(
        format!(
            "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
            t.info.kind,
            t.info.gv(),
            meta
        )
        .as_bytes(),
    );
    for (i, o) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&view(&t.info, o));
    }
    out.extend_from_slice(b"]}");
    Ok(bytes_response(StatusCode::OK, "application/json", out))
}

// ---------------------------------------------------------------- decoding

fn media_type(ct: &str) -> String {
    ct.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Decodes a create/update body into a JSON object.
fn decode_object(ctx: &Ctx) -> ApiResult<Value> {
    let mt = media_type(&ctx.content_type);
    let v: Value = match mt.as_str() {
        "" | "application/json" | "*/*" => serde_json::from_slice(&ctx.body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            serde_yaml::from_slice(&ctx.body)
                .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))?
        }
        "application/vnd.kubernetes.protobuf" => {
            let (_, _, v) = protobuf::decode_request(&ctx.body).map_err(|e| {
                ApiError::bad_request(format!("failed to decode protobuf body: {e}"))
            })?;
            v
        }
        other => return Err(ApiError::unsupported_media(other)),
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "couldn't get version/kind; json parse error: the body must be a JSON object",
        ));
    }
    Ok(v)
}

/// Checks apiVersion/kind against the URL, filling them when absent.
fn check_type(
    info: &ResourceInfo,
    expect_kind: &str,
    expect_gv: &str,
    v: &mut Value,
) -> ApiResult<()> {
    let gv = v.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
    if !gv.is_empty() && gv != expect_gv {
        // Other versions of the same group and kind are served from one storage.
        let same_group = gv.split('/').rev().nth(1).unwrap_or("") == info.group;
        if !(same_group && kind == expect_kind) {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({gv}) does not match the expected API version ({expect_gv})"
            )));
        }
    }
    if !kind.is_empty() && kind != expect_kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({expect_kind})"
        )));
    }
    v["apiVersion"] = json!(expect_gv);
    v["kind"] = json!(expect_kind);
    Ok(())
}

/// Unknown-field handling per `fieldValidation` (Strict, Warn (default), Ignore).
/// Unknown fields are dropped from what is stored, as upstream's decoder does.
fn field_validation(
    reg: &Registry,
    info: &ResourceInfo,
    ctx: &mut Ctx,
    v: &mut Value,
) -> ApiResult<()> {
    let mode = ctx
        .query
        .get("fieldValidation")
        .unwrap_or("Warn")
        .to_string();
    if !matches!(mode.as_str(), "Strict" | "Warn" | "Ignore") {
        return Err(ApiError::bad_request(format!(
            "fieldValidation must be one of Ignore, Warn, or Strict, got {mode:?}"
        )));
    }
    let unknown = match (&info.definition, reg.crd(info)) {
        (_, Some(crd)) => match &crd.schema {
            Some(s) => fieldcheck::unknown_fields_structural(v, s),
            None => vec![],
        },
        (Some(def), None) => fieldcheck::unknown_fields(v, openapi::definitions(), def),
        (None, None) => vec![],
    };
    if unknown.is_empty() {
        return Ok(());
    }
    match mode.as_str() {
        "Strict" => {
            let msgs: Vec<String> = unknown
                .iter()
                .map(|p| format!("unknown field \"{p}\""))
                .collect();
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                msgs.join(", ")
            )));
        }
        "Warn" => {
            for p in &unknown {
                ctx.warnings.push(format!("unknown field \"{p}\""));
            }
        }
        _ => {}
    }
    for p in &unknown {
        prune_path(v, p);
    }
    Ok(())
}

/// Removes `a.b[2].c` from a JSON value.
fn prune_path(v: &mut Value, path: &str) {
    let mut steps: Vec<Result<usize, String>> = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        let name_end = rest.find('[').unwrap_or(rest.len());
        if name_end > 0 {
            steps.push(Err(rest[..name_end].to_string()));
        }
        rest = &rest[name_end..];
        while let Some(close) = rest.find(']') {
            if let Ok(i) = rest[1..close].parse() {
                steps.push(Ok(i));
            }
            rest = &rest[close + 1..];
        }
    }
    let Some((last, init)) = steps.split_last() else {
        return;
    };
    let mut cur = v;
    for s in init {
        let next = match s {
            Ok(i) => cur.get_mut(*i),
            Err(k) => cur.get_mut(k.as_str()),
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let (Err(k), Some(o)) = (last, cur.as_object_mut()) {
        o.remove(k.as_str());
    }
}

fn dry_run(ctx: &Ctx) -> ApiResult<bool> {
    match ctx.query.get("dryRun") {
        None => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid dry run value: {other:?}, only 'All' is supported"
        ))),
    }
}

// ---------------------------------------------------------------- writing

fn validate(info: &ResourceInfo, v: &Value, crd_schema: Option<&Value>) -> ApiResult<()> {
    let mut causes = Vec::new();
    objects::validate_meta(info, v, &mut causes);
    objects::validate_kind(info, v, &mut causes);
    if let Some(schema) = crd_schema {
        causes.extend(super::crdschema::validate(v, schema));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            &info.group,
            &info.kind,
            meta_str(v, "name").unwrap_or(""),
            causes,
        ))
    }
}

fn crd_schema(api: &Api, info: &ResourceInfo) -> Option<Value> {
    api.registry().crd(info).and_then(|c| c.schema.clone())
}

/// Serializes for storage: resourceVersion is the store's revision, not data.
fn to_stored(v: &Value) -> bytes::Bytes {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("selfLink");
    }
    bytes::Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
}

pub fn namespace_check(api: &Api, ns: &str) -> ApiResult<()> {
    let key = format!("/registry/core/namespaces/{ns}");
    match api.cache.get(&key) {
        None => Err(ApiError::not_found("", "namespaces", ns)),
        Some(n) if n.meta.deleting => Err(ApiError::forbidden(format!(
            "unable to create new content in namespace {ns} because it is being terminated"
        ))),
        Some(_) => Ok(()),
    }
}

/// Writes through the store and waits until the cache shows the result.
pub async fn store_write(api: &Api, op: Op) -> Result<Arc<Obj>, StoreError> {
    let ev = api.cache.backend().write(op).await?;
    api.cache.wait_for(ev.kv.mod_revision).await;
    // The object the cache built from this write, unless a later write
    // replaced it or this was a delete.
    if let Some(o) = api.cache.get(&ev.kv.key)
        && o.mod_revision == ev.kv.mod_revision
    {
        return Ok(o);
    }
    Ok(Arc::new(super::cache::materialize(
        &ev.kv.key,
        &ev.kv.value,
        ev.kv.mod_revision,
    )))
}

async fn create(
    api: &Arc<Api>,
    reg: &Registry,
    t: &Target,
    ctx: &mut Ctx,
) -> ApiResult<Response<Body>> {
    let mut v = decode_object(ctx)?;
    check_type(&t.info, &t.info.kind, &t.info.gv(), &mut v)?;
    field_validation(reg, &t.info, ctx, &mut v)?;
    let dry = dry_run(ctx)?;
    let obj = create_object(api, &t.info, t.namespace.as_deref(), v, dry).await?;
    Ok(object_response(reg, t, ctx, StatusCode::CREATED, &obj))
}

/// Create shared by POST, server-side apply and internal callers.
pub async fn create_object(
    api: &Api,
    info: &ResourceInfo,
    namespace: Option<&str>,
    v: Value,
    dry: bool,
) -> ApiResult<Arc<Obj>> {
    let mut v = super::convert::to_storage(info, v);
    {
        let m = meta_mut(&mut v);
        if let Some(rv) = m.get("resourceVersion").and_then(Value::as_str)
            && !rv.is_empty()
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let name_empty = m
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty();
        if name_empty
            && let Some(g) = m.get("generateName").and_then(Value::as_str)
            && !g.is_empty()
        {
            let base: String = g.chars().take(58).collect();
            m.insert(
                "name".into(),
                json!(format!("{base}{}", objects::random_suffix())),
            );
        }
        if info.namespaced {
            let ns = namespace.unwrap_or("default");
            match m.get("namespace").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    m.insert("namespace".into(), json!(ns));
                }
            }
        } else {
            m.remove("namespace");
        }
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(objects::now_rfc3339()));
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        if objects::tracks_generation(info, api.registry().crd(info).is_some()) {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
    }
    if info.subresource("status").is_some()
        && let Some(o) = v.as_object_mut()
    {
        o.remove("status");
    }
    objects::apply_defaults(info, &mut v);
    if info.group.is_empty() && info.kind == "Pod" {
        // The ServiceAccount admission plugin: a new pod gets its account's
        // token, CA and namespace as a projected volume, unless opted out.
        let sa = v
            .pointer("/spec/serviceAccountName")
            .and_then(|s| s.as_str())
            .unwrap_or("default")
            .to_string();
        let account_opts_out = api
            .registry()
            .find("", "v1", "serviceaccounts")
            .and_then(|sa_info| api.cache.get(&objects::key_for(&sa_info, namespace, &sa)))
            .is_some_and(|o| o.value().get("automountServiceAccountToken") == Some(&json!(false)));
        objects::mount_service_account_token(&mut v, account_opts_out);
    }
    let schema = crd_schema(api, info);
    if let Some(s) = &schema {
        super::crdschema::apply_defaults(&mut v, s);
    }
    validate(info, &v, schema.as_ref())?;
    if info.namespaced {
        namespace_check(api, namespace.unwrap_or("default"))?;
    }
    let name = meta_str(&v, "name").unwrap_or("").to_string();
    let key = objects::key_for(info, namespace, &name);
    if api.cache.get(&key).is_some() {
        return Err(ApiError::already_exists(&info.group, &info.resource, &name));
    }
    if info.namespaced {
        super::admission::admit(api, info, namespace.unwrap_or("default"), &mut v)?;
    }
    admit_create(api, info, &mut v, dry)?;
    if dry {
        return Ok(Arc::new(super::cache::materialize(&key, &to_stored(&v), 0)));
    }
    match store_write(
        api,
        Op::Create {
            key,
            value: to_stored(&v),
        },
    )
    .await
    {
        Ok(o) => Ok(o),
        Err(StoreError::AlreadyExists) => {
            release_create(api, info, &v);
            Err(ApiError::already_exists(&info.group, &info.resource, &name))
        }
        Err(e) => {
            release_create(api, info, &v);
            Err(e.into())
        }
    }
}

/// Allocations a create makes (service cluster IPs).
fn admit_create(api: &Api, info: &ResourceInfo, v: &mut Value, dry: bool) -> ApiResult<()> {
    if info.group.is_empty() && info.kind == "Service" {
        let ty = v
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP");
        if ty == "ExternalName" {
            return Ok(());
        }
        let requested = v
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let ip = match requested.as_str() {
            "None" => return Ok(()),
            "" => {
                if dry {
                    "10.43.0.0".to_string()
                } else {
                    api.service_ip.allocate()?
                }
            }
            ip => {
                if !api.service_ip.contains(ip) {
                    return Err(ApiError::invalid(
                        "",
                        "Service",
                        meta_str(v, "name").unwrap_or(""),
                        vec![Cause::invalid(
                            "spec.clusterIPs",
                            &json!([ip]),
                            "failed to allocate IP: the provided IP is not in the valid range. The range of valid IPs is 10.43.0.0/16",
                        )],
                    ));
                }
                if !dry {
                    api.service_ip.mark(ip);
                }
                ip.to_string()
            }
        };
        v["spec"]["clusterIP"] = json!(ip);
        v["spec"]["clusterIPs"] = json!([ip]);
    }
    Ok(())
}

fn release_create(api: &Api, info: &ResourceInfo, v: &Value) {
    if info.group.is_empty()
        && info.kind == "Service"
        && let Some(ip) = v.pointer("/spec/clusterIP").and_then(Value::as_str)
    {
        api.service_ip.release(ip);
    }
}

async fn update(
    api: &Arc<Api>,
    reg: &Registry,
    t: &Target,
    ctx: &mut Ctx,
    sub: Option<&str>,
) -> ApiResult<Response<Body>> {
    let mut v = decode_object(ctx)?;
    check_type(&t.info, &t.info.kind, &t.info.gv(), &mut v)?;
    field_validation(reg, &t.info, ctx, &mut v)?;
    let name = t.name.clone().unwrap_or_default();
    match meta_str(&v, "name") {
        Some(n) if n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        _ => {
            meta_mut(&mut v).insert("name".into(), json!(name));
        }
    }
    let dry = dry_run(ctx)?;
    let current = api
        .cache
        .get(&t.key())
        .ok_or_else(|| ApiError::not_found(&t.info.group, &t.info.resource, &name))?;
    let precondition = meta_str(&v, "resourceVersion").map(str::to_string);
    let (status, obj) = write_update(api, t, current, v, precondition, sub, dry).await?;
    Ok(object_response(reg, t, ctx, status, &obj))
}

/// The heart of PUT and PATCH: merges the immutable and subresource-owned
/// parts of `current` into `new`, validates, and writes with CAS on the
/// current revision.
pub async fn write_update(
    api: &Api,
    t: &Target,
    current: Arc<Obj>,
    new: Value,
    precondition: Option<String>,
    sub: Option<&str>,
    dry: bool,
) -> ApiResult<(StatusCode, Arc<Obj>)> {
    let info = &t.info;
    let name = t.name.clone().unwrap_or_default();
    let mut new = super::convert::to_storage(info, new);
    if let Some(rv) = &precondition
        && *rv != current.mod_revision.to_string()
    {
        return Err(ApiError::conflict(&info.group, &info.resource, &name));
    }
    let old = &current.value();
    let has_status = info.subresource("status").is_some();
    match sub {
        Some("status") => {
            // Only .status changes through /status.
            let mut merged = old.clone();
            merged["status"] = new.get("status").cloned().unwrap_or(Value::Null);
            if merged["status"].is_null()
                && let Some(o) = merged.as_object_mut()
            {
                o.remove("status");
            }
            // Metadata labels/annotations may change through status too (upstream allows).
            new = merged;
        }
        Some("finalize") => {
            let mut merged = old.clone();
            merged["spec"]["finalizers"] = new
                .pointer("/spec/finalizers")
                .cloned()
                .unwrap_or(json!([]));
            new = merged;
        }
        _ => {
            if has_status {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(o) = new.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
        }
    }
    {
        let old_meta = old.get("metadata").cloned().unwrap_or(json!({}));
        let m = meta_mut(&mut new);
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "generation",
        ] {
            match old_meta.get(f) {
                Some(x) => m.insert(f.into(), x.clone()),
                None => m.remove(f),
            };
        }
        m.insert("name".into(), json!(name));
        m.remove("resourceVersion");
    }
    if old.pointer("/metadata/deletionTimestamp").is_some() {
        let old_f: Vec<Value> = old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let new_f: Vec<Value> = new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if new_f.iter().any(|f| !old_f.contains(f)) {
            return Err(ApiError::invalid(
                &info.group,
                &info.kind,
                &name,
                vec![Cause::forbidden(
                    "metadata.finalizers",
                    "no new finalizers can be added if the object is being deleted",
                )],
            ));
        }
    }
    objects::apply_defaults(info, &mut new);
    if info.group.is_empty() && info.kind == "Service" {
        // The allocated IP stays unless the client repeats it.
        for f in ["clusterIP", "clusterIPs"] {
            let want = new.pointer(&format!("/spec/{f}")).cloned();
            let have = old.pointer(&format!("/spec/{f}")).cloned();
            match (want, have) {
                (None | Some(Value::Null), Some(h)) => new["spec"][f] = h,
                (Some(w), Some(h)) if w != h && w != json!("") => {
                    return Err(ApiError::invalid(
                        "",
                        "Service",
                        &name,
                        vec![Cause::invalid(
                            format!("spec.{f}"),
                            &w,
                            "field is immutable",
                        )],
                    ));
                }
                (Some(w), Some(h)) if w == json!("") => new["spec"][f] = h,
                _ => {}
            }
        }
    }
    check_immutable(info, old, &new, &name)?;
    if objects::spec_changed(old, &new)
        && sub.is_none()
        && objects::tracks_generation(info, api.registry().crd(info).is_some())
    {
        let g = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        meta_mut(&mut new).insert("generation".into(), json!(g + 1));
    }
    let schema = crd_schema(api, info);
    if let Some(s) = &schema {
        super::crdschema::apply_defaults(&mut new, s);
    }
    validate(info, &new, schema.as_ref())?;

    // Nothing changed: no write, the current object is the answer.
    let mut old_cmp = old.clone();
    if let Some(m) = old_cmp.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    let finalizers_done = new.pointer("/metadata/deletionTimestamp").is_some()
        && new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|f| f.is_empty());
    if old_cmp == new && !finalizers_done {
        return Ok((StatusCode::OK, current));
    }
    let key = t.key();
    if dry {
        return Ok((
            StatusCode::OK,
            Arc::new(super::cache::materialize(
                &key,
                &to_stored(&new),
                current.mod_revision,
            )),
        ));
    }
    if finalizers_done {
        // The last finalizer is gone from an object being deleted: delete it.
        return match store_write(
            api,
            Op::Delete {
                key,
                expected: Some(current.mod_revision),
            },
        )
        .await
        {
            Ok(_) => {
                after_delete(api, info, &new);
                Ok((
                    StatusCode::OK,
                    Arc::new(super::cache::materialize(
                        &t.key(),
                        &to_stored(&new),
                        current.mod_revision,
                    )),
                ))
            }
            Err(StoreError::Conflict { .. }) => {
                Err(ApiError::conflict(&info.group, &info.resource, &name))
            }
            Err(StoreError::NotFound) => {
                Err(ApiError::not_found(&info.group, &info.resource, &name))
            }
            Err(e) => Err(e.into()),
        };
    }
    match store_write(
        api,
        Op::Update {
            key,
            value: to_stored(&new),
            expected: Some(current.mod_revision),
        },
    )
    .await
    {
        Ok(o) => Ok((StatusCode::OK, o)),
        Err(StoreError::Conflict { .. }) => {
            Err(ApiError::conflict(&info.group, &info.resource, &name))
        }
        Err(StoreError::NotFound) => Err(ApiError::not_found(&info.group, &info.resource, &name)),
        Err(e) => Err(e.into()),
    }
}

fn check_immutable(info: &ResourceInfo, old: &Value, new: &Value, name: &str) -> ApiResult<()> {
    let paths: &[&str] = match (info.group.as_str(), info.kind.as_str()) {
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet") => &["/spec/selector"],
        ("batch", "Job") => &["/spec/selector", "/spec/completionMode"],
        ("", "ConfigMap" | "Secret") if old.get("immutable") == Some(&json!(true)) => {
            &["/data", "/binaryData", "/immutable"]
        }
        ("", "Secret") => &["/type"],
        _ => &[],
    };
    let mut causes = Vec::new();
    for p in paths {
        let a = old.pointer(p);
        let b = new.pointer(p);
        if a != b {
            let field = p.trim_start_matches('/').replace('/', ".");
            causes.push(Cause::invalid(
                field,
                b.unwrap_or(&Value::Null),
                "field is immutable",
            ));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&info.group, &info.kind, name, causes))
    }
}

async fn patch(
    api: &Arc<Api>,
    reg: &Registry,
    t: &Target,
    ctx: &mut Ctx,
    sub: Option<&str>,
) -> ApiResult<Response<Body>> {
    let mt = media_type(&ctx.content_type);
    let name = t.name.clone().unwrap_or_default();
    let dry = dry_run(ctx)?;
    if mt == "application/apply-patch+yaml" {
        return super::apply::server_side_apply(api, reg, t, ctx, sub, dry).await;
    }
    let patch: Value = serde_json::from_slice(&ctx.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    if mt == "application/strategic-merge-patch+json" && reg.crd(&t.info).is_some() {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        ));
    }
    for attempt in 0..8 {
        let current = api
            .cache
            .get(&t.key())
            .ok_or_else(|| ApiError::not_found(&t.info.group, &t.info.resource, &name))?;
        let base = view_value(&t.info, &current);
        let patched = apply_patch(&t.info, &mt, &base, &patch, &name)?;
        let mut patched = patched;
        check_type(&t.info, &t.info.kind, &t.info.gv(), &mut patched)?;
        field_validation(reg, &t.info, ctx, &mut patched)?;
        // A resourceVersion in the patch is a precondition; otherwise the
        // patch applies to whatever is current, retrying on races.
        let precondition = meta_str(&patched, "resourceVersion")
            .map(str::to_string)
            .filter(|rv| *rv != current.mod_revision.to_string());
        let explicit = precondition.is_some();
        match write_update(api, t, current, patched, precondition, sub, dry).await {
            Ok((status, obj)) => return Ok(object_response(reg, t, ctx, status, &obj)),
            Err(e) if e.reason == "Conflict" && !explicit && attempt < 7 => {
                // The store is ahead of the watch cache we read from: give
                // the cache a moment to apply the winning write.
                tokio::time::sleep(std::time::Duration::from_millis(1 << attempt)).await;
                continue;
            }
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(&t.info.group, &t.info.resource, &name))
}

pub fn apply_patch(
    info: &ResourceInfo,
    mt: &str,
    base: &Value,
    patch: &Value,
    name: &str,
) -> ApiResult<Value> {
    match mt {
        "application/json-patch+json" => {
            let p: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("error decoding json patch: {e}")))?;
            let mut doc = base.clone();
            json_patch::patch(&mut doc, &p).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
                .with_details(json!({"name": name, "group": info.group, "kind": info.resource}))
            })?;
            Ok(doc)
        }
        "application/merge-patch+json" => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("merge patch must be a JSON object"));
            }
            let mut doc = base.clone();
            json_patch::merge(&mut doc, patch);
            Ok(doc)
        }
        "application/strategic-merge-patch+json" => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "strategic merge patch must be a JSON object",
                ));
            }
            super::strategic::apply(
                base,
                patch,
                openapi::definitions(),
                info.definition.as_deref(),
            )
            .map_err(|e| ApiError::new(422, "Invalid", e))
        }
        other => Err(ApiError::unsupported_media(other)),
    }
}

// ---------------------------------------------------------------- deleting

#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteOptions {
    grace_period_seconds: Option<i64>,
    propagation_policy: Option<String>,
    orphan_dependents: Option<bool>,
    preconditions: Option<Preconditions>,
    dry_run: Option<Vec<String>>,
}

#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Preconditions {
    uid: Option<String>,
    resource_version: Option<String>,
}

fn delete_options(ctx: &Ctx) -> ApiResult<DeleteOptions> {
    let mut o: DeleteOptions = if ctx.body.iter().all(|b| b.is_ascii_whitespace()) {
        DeleteOptions::default()
    } else {
        serde_json::from_slice(&ctx.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
    };
    if let Some(g) = ctx.query.get("gracePeriodSeconds") {
        o.grace_period_seconds = g.parse().ok();
    }
    if let Some(p) = ctx.query.get("propagationPolicy") {
        o.propagation_policy = Some(p.to_string());
    }
    if ctx.query.flag("orphanDependents") {
        o.orphan_dependents = Some(true);
    }
    if let Some(p) = &o.propagation_policy
        && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::invalid(
            "",
            "DeleteOptions",
            "",
            vec![Cause::not_supported(
                "propagationPolicy",
                &json!(p),
                &["Foreground", "Background", "Orphan"],
            )],
        ));
    }
    Ok(o)
}

async fn delete(
    api: &Arc<Api>,
    reg: &Registry,
    t: &Target,
    ctx: &mut Ctx,
) -> ApiResult<Response<Body>> {
    let opts = delete_options(ctx)?;
    let dry = dry_run(ctx)?
        || opts
            .dry_run
            .as_ref()
            .is_some_and(|d| d.iter().any(|x| x == "All"));
    let name = t.name.clone().unwrap_or_default();
    let (status, obj, deleted) = delete_object(api, t, &opts_to_internal(&opts), dry).await?;
    if deleted {
        let uid = json!(obj.uid().unwrap_or(""));
        let v = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": name, "group": t.info.group, "kind": t.info.resource, "uid": uid},
        });
        return Ok(value_response(ctx, StatusCode::OK, &v));
    }
    Ok(object_response(reg, t, ctx, status, &obj))
}

pub struct DeleteOpts {
    pub grace: Option<i64>,
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub rv: Option<String>,
}

fn opts_to_internal(o: &DeleteOptions) -> DeleteOpts {
    let propagation = o.propagation_policy.clone().or_else(|| {
        o.orphan_dependents
            .and_then(|b| b.then(|| "Orphan".to_string()))
    });
    DeleteOpts {
        grace: o.grace_period_seconds,
        propagation,
        uid: o.preconditions.as_ref().and_then(|p| p.uid.clone()),
        rv: o
            .preconditions
            .as_ref()
            .and_then(|p| p.resource_version.clone()),
    }
}

/// Returns (status, object, removed-now). Objects with finalizers, and
/// namespaces, get a deletionTimestamp instead of disappearing.
pub async fn delete_object(
    api: &Api,
    t: &Target,
    opts: &DeleteOpts,
    dry: bool,
) -> ApiResult<(StatusCode, Arc<Obj>, bool)> {
    let info = &t.info;
    let name = t.name.clone().unwrap_or_default();
    for _ in 0..8 {
        let current = api
            .cache
            .get(&t.key())
            .ok_or_else(|| ApiError::not_found(&info.group, &info.resource, &name))?;
        let v = &current.value();
        if let Some(uid) = &opts.uid
            && v.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid.as_str())
        {
            return Err(
                ApiError::conflict(&info.group, &info.resource, &name).with_details(json!({}))
            )
            .map_err(|mut e| {
                e.message = format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    v.pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                );
                e
            });
        }
        if let Some(rv) = &opts.rv
            && *rv != current.mod_revision.to_string()
        {
            return Err(ApiError::conflict(&info.group, &info.resource, &name));
        }
        let mut finalizers: Vec<Value> = v
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        match opts.propagation.as_deref() {
            Some("Orphan") if !finalizers.contains(&json!("orphan")) => {
                finalizers.push(json!("orphan"))
            }
            Some("Foreground") if !finalizers.contains(&json!("foregroundDeletion")) => {
                finalizers.push(json!("foregroundDeletion"))
            }
            _ => {}
        }
        let is_ns = info.group.is_empty() && info.kind == "Namespace";
        let graceful_pod = info.group.is_empty()
            && info.kind == "Pod"
            && v.pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty())
            && opts.grace.unwrap_or(1) > 0
            && !matches!(
                v.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded" | "Failed")
            );
        if finalizers.is_empty() && !is_ns && !graceful_pod {
            if dry {
                return Ok((StatusCode::OK, current, true));
            }
            return match store_write(
                api,
                Op::Delete {
                    key: t.key(),
                    expected: Some(current.mod_revision),
                },
            )
            .await
            {
                Ok(_) => {
                    after_delete(api, info, v);
                    Ok((StatusCode::OK, current, true))
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound) => {
                    Err(ApiError::not_found(&info.group, &info.resource, &name))
                }
                Err(e) => Err(e.into()),
            };
        }
        if v.pointer("/metadata/deletionTimestamp").is_some() && !graceful_pod {
            // Already being deleted: only new finalizers from propagation matter.
            let have = v
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .map(Vec::len)
                .unwrap_or(0);
            if have == finalizers.len() {
                return Ok((StatusCode::ACCEPTED, current, false));
            }
        }
        let mut new = v.clone();
        {
            let m = meta_mut(&mut new);
            if !m.contains_key("deletionTimestamp") {
                m.insert("deletionTimestamp".into(), json!(objects::now_rfc3339()));
            }
            let grace = if graceful_pod {
                opts.grace
                    .or_else(|| {
                        v.pointer("/spec/terminationGracePeriodSeconds")
                            .and_then(Value::as_i64)
                    })
                    .unwrap_or(30)
            } else {
                0
            };
            m.insert("deletionGracePeriodSeconds".into(), json!(grace));
            if !finalizers.is_empty() {
                m.insert("finalizers".into(), Value::Array(finalizers));
            }
            m.remove("resourceVersion");
        }
        if is_ns {
            new["status"]["phase"] = json!("Terminating");
        }
        if dry {
            return Ok((
                StatusCode::ACCEPTED,
                Arc::new(super::cache::materialize(
                    &t.key(),
                    &to_stored(&new),
                    current.mod_revision,
                )),
                false,
            ));
        }
        match store_write(
            api,
            Op::Update {
                key: t.key(),
                value: to_stored(&new),
                expected: Some(current.mod_revision),
            },
        )
        .await
        {
            Ok(o) => return Ok((StatusCode::ACCEPTED, o, false)),
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound) => {
                return Err(ApiError::not_found(&info.group, &info.resource, &name));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(&info.group, &info.resource, &name))
}

fn after_delete(api: &Api, info: &ResourceInfo, v: &Value) {
    if info.group.is_empty()
        && info.kind == "Service"
        && let Some(ip) = v.pointer("/spec/clusterIP").and_then(Value::as_str)
    {
        api.service_ip.release(ip);
    }
}

async fn delete_collection(
    api: &Arc<Api>,
    _reg: &Registry,
    t: &Target,
    ctx: &mut Ctx,
) -> ApiResult<Response<Body>> {
    let filter = Filter::from_query(&t.info, ctx)?;
    let opts = delete_options(ctx)?;
    let dry = dry_run(ctx)?;
    let (items, _) = api.cache.list(&t.prefix(), None);
    let mut out = Vec::new();
    for o in items.iter().filter(|o| filter.matches_obj(o)) {
        let name = o.name().unwrap_or("").to_string();
        let ns = o.namespace().map(str::to_string);
        let target = Target {
            info: t.info.clone(),
            namespace: ns,
            name: Some(name),
            subresource: None,
        };
        match delete_object(api, &target, &opts_to_internal(&opts), dry).await {
            Ok((_, obj, _)) => out.push(view_value(&t.info, &obj)),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let v = json!({
        "kind": format!("{}List", t.info.kind),
        "apiVersion": t.info.gv(),
        "metadata": {"resourceVersion": api.cache.revision().to_string()},
        "items": out,
    });
    Ok(value_response(ctx, StatusCode::OK, &v))
}

// ---------------------------------------------------------------- scale

fn scale_paths(reg: &Registry, info: &ResourceInfo) -> (String, String, Option<String>) {
    if let Some(crd) = reg.crd(info)
        && let Some((s, st, sel)) = &crd.scale
    {
        return (s.clone(), st.clone(), sel.clone());
    }
    (
        ".spec.replicas".into(),
        ".status.replicas".into(),
        Some(".spec.selector".into()),
    )
}

fn jsonpath_pointer(p: &str) -> String {
    p.trim_start_matches('.')
        .split('.')
        .fold(String::new(), |mut acc, s| {
            acc.push('/');
            acc.push_str(s);
            acc
        })
}

fn scale_of(reg: &Registry, info: &ResourceInfo, obj: &Obj) -> Value {
    let (sp, st, sel) = scale_paths(reg, info);
    let v = &obj.value();
    let replicas = v
        .pointer(&jsonpath_pointer(&sp))
        .cloned()
        .unwrap_or(json!(0));
    let status_replicas = v
        .pointer(&jsonpath_pointer(&st))
        .cloned()
        .unwrap_or(json!(0));
    let selector = sel
        .and_then(|s| v.pointer(&jsonpath_pointer(&s)).cloned())
        .map(|s| match s {
            Value::String(s) => s,
            obj => selector::LabelSelector::from_label_selector_object(&obj)
                .map(|l| l.to_string())
                .unwrap_or_default(),
        });
    let m = v.get("metadata").cloned().unwrap_or(json!({}));
    let mut status = json!({"replicas": status_replicas});
    if let Some(s) = selector.filter(|s| !s.is_empty()) {
        status["selector"] = json!(s);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m.get("name"), "namespace": m.get("namespace"), "uid": m.get("uid"),
            "resourceVersion": obj.mod_revision.to_string(), "creationTimestamp": m.get("creationTimestamp"),
        },
        "spec": {"replicas": replicas},
        "status": status,
    })
}

fn scale_get(api: &Api, reg: &Registry, t: &Target, ctx: &Ctx) -> ApiResult<Response<Body>> {
    let name = t.name.clone().unwrap_or_default();
    let obj = api
        .cache
        .get(&t.key())
        .ok_or_else(|| ApiError::not_found(&t.info.group, &t.info.resource, &name))?;
    Ok(value_response(
        ctx,
        StatusCode::OK,
        &scale_of(reg, &t.info, &obj),
    ))
}

async fn scale_write(
    api: &Arc<Api>,
    reg: &Registry,
    t: &Target,
    ctx: &mut Ctx,
    verb: &str,
) -> ApiResult<Response<Body>> {
    let name = t.name.clone().unwrap_or_default();
    let dry = dry_run(ctx)?;
    for attempt in 0..8 {
        let current = api
            .cache
            .get(&t.key())
            .ok_or_else(|| ApiError::not_found(&t.info.group, &t.info.resource, &name))?;
        let scale = scale_of(reg, &t.info, &current);
        let new_scale = if verb == "patch" {
            let mt = media_type(&ctx.content_type);
            let patch: Value = serde_json::from_slice(&ctx.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let scale_info = ResourceInfo {
                definition: Some("io.k8s.api.autoscaling.v1.Scale".into()),
                ..(*t.info).clone()
            };
            apply_patch(&scale_info, &mt, &scale, &patch, &name)?
        } else {
            decode_object(ctx)?
        };
        let precondition = new_scale
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|rv| !rv.is_empty() && *rv != current.mod_revision.to_string())
            .map(str::to_string);
        let replicas = new_scale
            .pointer("/spec/replicas")
            .cloned()
            .unwrap_or(json!(0));
        if replicas.as_i64().is_none_or(|r| r < 0) {
            return Err(ApiError::invalid(
                "autoscaling",
                "Scale",
                &name,
                vec![Cause::invalid(
                    "spec.replicas",
                    &replicas,
                    "must be greater than or equal to 0",
                )],
            ));
        }
        let (sp, _, _) = scale_paths(reg, &t.info);
        let mut new = current.value();
        let ptr = jsonpath_pointer(&sp);
        set_pointer(&mut new, &ptr, replicas);
        let explicit = precondition.is_some();
        match write_update(api, t, current, new, precondition, None, dry).await {
            Ok((_, obj)) => {
                return Ok(value_response(
                    ctx,
                    StatusCode::OK,
                    &scale_of(reg, &t.info, &obj),
                ));
            }
            Err(e) if e.reason == "Conflict" && !explicit && attempt < 7 => {
                // The store is ahead of the watch cache we read from: give
                // the cache a moment to apply the winning write.
                tokio::time::sleep(std::time::Duration::from_millis(1 << attempt)).await;
                continue;
            }
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(&t.info.group, &t.info.resource, &name))
}

fn set_pointer(v: &mut Value, ptr: &str, val: Value) {
    let mut cur = v;
    let parts: Vec<&str> = ptr.trim_start_matches('/').split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            if let Some(o) = cur.as_object_mut() {
                o.insert(p.to_string(), val);
            }
            return;
        }
        if !cur.get(*p).is_some_and(Value::is_object) {
            cur[*p] = json!({});
        }
        cur = cur.get_mut(*p).unwrap();
    }
}

// ---------------------------------------------------------------- reviews

fn review(api: &Api, t: &Target, ctx: &mut Ctx) -> ApiResult<Response<Body>> {
    let mut v = decode_object(ctx)?;
    check_type(&t.info, &t.info.kind, &t.info.gv(), &mut v)?;
    let user = &ctx.user;
    let status = match (t.info.group.as_str(), t.info.resource.as_str()) {
        ("authentication.k8s.io", "selfsubjectreviews") => json!({"userInfo": {
            "username": user.name, "groups": user.groups,
        }}),
        ("authentication.k8s.io", "tokenreviews") => {
            let token = v
                .pointer("/spec/token")
                .and_then(Value::as_str)
                .unwrap_or("");
            match api.authenticate_token(token) {
                Some(u) => {
                    json!({"authenticated": true, "user": {"username": u.name, "groups": u.groups}})
                }
                None => json!({"authenticated": false}),
            }
        }
        ("authorization.k8s.io", "selfsubjectaccessreviews") => {
            let ra = v
                .pointer("/spec/resourceAttributes")
                .cloned()
                .unwrap_or(json!({}));
            let attrs = super::auth::Attributes {
                verb: ra.get("verb").and_then(Value::as_str).unwrap_or("").into(),
                group: ra.get("group").and_then(Value::as_str).unwrap_or("").into(),
                resource: ra
                    .get("resource")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .into(),
                namespace: ra
                    .get("namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .into(),
                name: ra.get("name").and_then(Value::as_str).unwrap_or("").into(),
                ..Default::default()
            };
            match super::auth::authorize(user, &attrs) {
                Ok(()) => json!({"allowed": true}),
                Err(reason) => json!({"allowed": false, "reason": reason}),
            }
        }
        ("authorization.k8s.io", "subjectaccessreviews" | "localsubjectaccessreviews") => {
            let groups: Vec<String> = v
                .pointer("/spec/groups")
                .and_then(Value::as_array)
                .map(|g| {
                    g.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let subject = super::auth::User {
                name: v
                    .pointer("/spec/user")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .into(),
                uid: String::new(),
                groups,
            };
            match super::auth::authorize(&subject, &Default::default()) {
                Ok(()) => json!({"allowed": true}),
                Err(reason) => json!({"allowed": false, "reason": reason}),
            }
        }
        ("authorization.k8s.io", "selfsubjectrulesreviews") => {
            if super::auth::authorize(user, &Default::default()).is_ok() {
                json!({
                    "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                    "incomplete": false,
                })
            } else {
                json!({"resourceRules": [], "nonResourceRules": [], "incomplete": false})
            }
        }
        _ => return Err(ApiError::method_not_allowed()),
    };
    v["status"] = status;
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    v["metadata"]["creationTimestamp"] = Value::Null;
    Ok(value_response(ctx, StatusCode::CREATED, &v))
}

// ---------------------------------------------------------------- pods

/// `pods/binding`: assigns a pending pod to a node, once.
async fn bind(api: &Api, t: &Target, binding: &Value, dry: bool) -> ApiResult<Response<Body>> {
    let name = t.name.clone().unwrap_or_default();
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if node.is_empty() {
        return Err(ApiError::invalid(
            "",
            "Binding",
            &name,
            vec![Cause::required("target.name", "")],
        ));
    }
    for _ in 0..8 {
        let current = api
            .cache
            .get(&t.key())
            .ok_or_else(|| ApiError::not_found("", "pods", &name))?;
        let v = &current.value();
        if v.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        if let Some(n) = v
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!("pod {name} is already assigned to node \"{n}\""),
            ));
        }
        let mut new = v.clone();
        new["spec"]["nodeName"] = json!(node);
        let now = objects::now_rfc3339();
        let mut conds: Vec<Value> = new
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        conds.retain(|c| c.get("type") != Some(&json!("PodScheduled")));
        conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}));
        if !new.get("status").is_some_and(Value::is_object) {
            new["status"] = json!({});
        }
        new["status"]["conditions"] = Value::Array(conds);
        if dry {
            break;
        }
        match store_write(
            api,
            Op::Update {
                key: t.key(),
                value: to_stored(&new),
                expected: Some(current.mod_revision),
            },
        )
        .await
        {
            Ok(_) => break,
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(bytes_response(
        StatusCode::CREATED,
        "application/json",
        serde_json::to_vec(&status).unwrap_or_default(),
    ))
}

/// `pods/eviction`: a delete that respects PodDisruptionBudgets.
async fn evict(api: &Api, reg: &Registry, t: &Target, ctx: &mut Ctx) -> ApiResult<Response<Body>> {
    let name = t.name.clone().unwrap_or_default();
    let eviction = decode_object(ctx)?;
    let pod = api
        .cache
        .get(&t.key())
        .ok_or_else(|| ApiError::not_found("", "pods", &name))?;
    let ns = t.namespace.clone().unwrap_or_default();
    let labels = pod.meta.labels.as_ref();
    let terminal = matches!(pod.field("status.phase"), "Succeeded" | "Failed");
    if !terminal && !pod.meta.deleting {
        let (pdbs, _) = api.cache.list(
            &format!("/registry/policy/poddisruptionbudgets/{ns}/"),
            None,
        );
        for listed in pdbs.iter() {
            // Budgets are shared by concurrent evictions: on a write conflict,
            // re-read the budget and decide again, as upstream retries.
            for attempt in 0..8 {
                let Some(pdb) = api.cache.get(&listed.key) else {
                    break;
                };
                let pdb_obj = &pdb;
                let pdb = &pdb.value();
                let sel = pdb
                    .pointer("/spec/selector")
                    .cloned()
                    .unwrap_or(Value::Null);
                let Ok(ls) = selector::LabelSelector::from_label_selector_object(&sel) else {
                    break;
                };
                if !ls.matches(labels) {
                    break;
                }
                let pdb_name = pdb_obj.name().unwrap_or("").to_string();
                let observed = pdb
                    .pointer("/status/observedGeneration")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                let generation = pdb
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                if observed < generation {
                    return Err(too_many(&format!(
                        "Cannot evict pod as it would violate the pod's disruption budget. The disruption budget {pdb_name} is still being processed by the server."
                    )));
                }
                let allowed = pdb
                    .pointer("/status/disruptionsAllowed")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if allowed <= 0 {
                    let need = pdb
                        .pointer("/status/desiredHealthy")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    let have = pdb
                        .pointer("/status/currentHealthy")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    return Err(too_many(&format!(
                        "Cannot evict pod as it would violate the pod's disruption budget. The disruption budget {pdb_name} needs {need} healthy pods and has {have} currently"
                    )));
                }
                // Spend one disruption so parallel evictions cannot overshoot.
                let pdb_info = reg
                    .find("policy", "v1", "poddisruptionbudgets")
                    .ok_or_else(ApiError::not_found_path)?;
                let pt = Target {
                    info: pdb_info,
                    namespace: Some(ns.clone()),
                    name: Some(pdb_name.clone()),
                    subresource: Some("status".into()),
                };
                let mut new = pdb.clone();
                new["status"]["disruptionsAllowed"] = json!(allowed - 1);
                let mut disrupted = new
                    .pointer("/status/disruptedPods")
                    .cloned()
                    .unwrap_or(json!({}));
                disrupted[&name] = json!(objects::now_rfc3339());
                new["status"]["disruptedPods"] = disrupted;
                match write_update(
                    api,
                    &pt,
                    pdb_obj.clone(),
                    new,
                    Some(pdb_obj.mod_revision.to_string()),
                    Some("status"),
                    false,
                )
                .await
                {
                    Ok(_) => break,
                    Err(e) if e.reason == "Conflict" && attempt < 7 => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    let opts = eviction.get("deleteOptions").cloned().unwrap_or(json!({}));
    let internal = DeleteOpts {
        grace: opts.get("gracePeriodSeconds").and_then(Value::as_i64),
        propagation: opts
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_string),
        uid: opts
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        rv: opts
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
    };
    let pod_target = Target {
        subresource: None,
        ..t.clone()
    };
    delete_object(api, &pod_target, &internal, dry_run(ctx)?).await?;
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(value_response(ctx, StatusCode::CREATED, &status))
}

fn too_many(msg: &str) -> ApiError {
    ApiError::new(429, "TooManyRequests", msg)
        .with_details(json!({"causes": [{"reason": "DisruptionBudget", "message": msg}]}))
}

/// `serviceaccounts/<name>/token` (TokenRequest): a signed, expiring token
/// for the account, optionally bound to a Pod or Secret.
async fn token_request(api: &Api, t: &Target, ctx: &mut Ctx) -> ApiResult<Response<Body>> {
    let name = t.name.clone().unwrap_or_default();
    let ns = t.namespace.clone().unwrap_or_default();
    let mut req = decode_object(ctx)?;
    let sa = api
        .cache
        .get(&t.key())
        .ok_or_else(|| ApiError::not_found("", "serviceaccounts", &name))?;
    let sa_uid = json!(sa.uid().unwrap_or(""));
    let spec = req.get("spec").cloned().unwrap_or(json!({}));
    let expiration = spec
        .get("expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    if expiration < 600 {
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            &name,
            vec![Cause::invalid(
                "spec.expirationSeconds",
                &json!(expiration),
                "may not specify a duration less than 10 minutes",
            )],
        ));
    }
    let expiration = expiration.min(48 * 3600);
    let audiences = spec
        .get("audiences")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .cloned()
        .unwrap_or_else(|| vec![json!(super::tokens::ISSUER)]);
    let now = chrono::Utc::now().timestamp();
    let mut k8s = json!({"namespace": ns, "serviceaccount": {"name": name, "uid": sa_uid}});
    if let Some(bound) = spec.get("boundObjectRef").filter(|b| b.is_object()) {
        let kind = bound.get("kind").and_then(Value::as_str).unwrap_or("");
        let bname = bound.get("name").and_then(Value::as_str).unwrap_or("");
        let resource = match kind {
            "Pod" => "pods",
            "Secret" => "secrets",
            other => {
                return Err(ApiError::invalid(
                    "authentication.k8s.io",
                    "TokenRequest",
                    &name,
                    vec![Cause::not_supported(
                        "spec.boundObjectRef.kind",
                        &json!(other),
                        &["Pod", "Secret"],
                    )],
                ));
            }
        };
        let obj = api
            .cache
            .get(&format!("/registry/core/{resource}/{ns}/{bname}"))
            .ok_or_else(|| ApiError::not_found("", resource, bname))?;
        let uid = json!(obj.uid().unwrap_or(""));
        k8s[if kind == "Pod" { "pod" } else { "secret" }] = json!({"name": bname, "uid": uid});
    }
    let claims = json!({
        "aud": audiences,
        "exp": now + expiration,
        "iat": now,
        "nbf": now,
        "iss": super::tokens::ISSUER,
        "jti": uuid::Uuid::new_v4().to_string(),
        "kubernetes.io": k8s,
        "sub": format!("system:serviceaccount:{ns}:{name}"),
    });
    let signer = api
        .tokens
        .get()
        .ok_or_else(|| ApiError::internal("no service-account signing key"))?;
    let token = signer.sign(&claims).map_err(ApiError::internal)?;
    let exp = chrono::DateTime::from_timestamp(now + expiration, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    req["apiVersion"] = json!("authentication.k8s.io/v1");
    req["kind"] = json!("TokenRequest");
    req["metadata"] = json!({"name": name, "namespace": ns, "creationTimestamp": null});
    req["spec"]["expirationSeconds"] = json!(expiration);
    req["spec"]["audiences"] = Value::Array(audiences);
    req["status"] = json!({"token": token, "expirationTimestamp": exp});
    Ok(value_response(ctx, StatusCode::CREATED, &req))
}

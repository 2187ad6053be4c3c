//! OpenAPI v3 documents as kube-apiserver serves them under `/openapi/v3`.
//!
//! Schemas come from `embedded/definitions.json.gz` (the Kubernetes v1.33
//! definitions in JSON-schema form, see `packaging/gen-definitions.py`) and are
//! converted to OpenAPI 3.0 form once; paths are generated from the resource
//! catalogue (`embedded/resources.json` plus CRDs).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::sync::OnceLock;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha512};

use crate::api::registry::{ResourceInfo, SubresourceInfo};

const DEFINITIONS_GZ: &[u8] = include_bytes!("../../embedded/definitions.json.gz");
const RESOURCES_JSON: &str = include_str!("../../embedded/resources.json");

/// Reported as `info.version`; kube-apiserver puts its git version here.
const KUBE_VERSION: &str = "v1.33.1";
const SCHEMA_PREFIX: &str = "#/components/schemas/";
const DEFS_PREFIX: &str = "#/$defs/";

const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
const API_RESOURCE_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList";

const ALL_VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The embedded Kubernetes definitions (`$defs` map, JSON-schema form with
/// `#/$defs/NAME` references), decompressed and parsed on first use.
pub fn definitions() -> &'static Map<String, Value> {
    static DEFS: OnceLock<Map<String, Value>> = OnceLock::new();
    DEFS.get_or_init(|| {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(DEFINITIONS_GZ)
            .read_to_end(&mut raw)
            .expect("embedded definitions.json.gz is valid gzip");
        serde_json::from_slice(&raw).expect("embedded definitions.json.gz holds a JSON object")
    })
}

/// The built-in resources a v1.33 kube-apiserver serves.
pub fn resources_builtin() -> Vec<ResourceInfo> {
    serde_json::from_str(RESOURCES_JSON).expect("embedded resources.json matches ResourceInfo")
}

/// Index served at `/openapi/v3`: one entry per group-version path
/// (`api/v1`, `apis/apps/v1`), each pointing at its document with a content
/// hash so clients can cache it.
pub fn v3_index(paths: &[String], hash_of: impl Fn(&str) -> String) -> Value {
    // Sorted so the index itself is stable whatever order callers pass.
    let sorted: BTreeSet<&str> = paths.iter().map(String::as_str).collect();
    let mut out = Map::new();
    for p in sorted {
        let url = format!("/openapi/v3/{p}?hash={}", hash_of(p));
        out.insert(p.to_string(), json!({ "serverRelativeURL": url }));
    }
    json!({ "paths": out })
}

/// Content hash used in `?hash=`: upper-case hex SHA-512, the same shape as
/// kube-apiserver's (128 hex characters).
pub fn document_hash(doc_bytes: &[u8]) -> String {
    hex::encode_upper(Sha512::digest(doc_bytes))
}

/// The OpenAPI 3.0 document for one group-version (`/openapi/v3/api/v1`,
/// `/openapi/v3/apis/<group>/<version>`). `resources` may hold other
/// group-versions; only those matching are described. `extra_schemas` are
/// already in OpenAPI 3 form (CRD schemas) and win over built-ins of the
/// same name.
pub fn v3_document(
    group: &str,
    version: &str,
    resources: &[ResourceInfo],
    extra_schemas: &Map<String, Value>,
) -> Value {
    let schemas = Schemas {
        builtin: converted(),
        extra: extra_schemas,
    };
    let gv = GvNames::new(group, version);
    let mut doc = DocBuilder {
        gv: &gv,
        schemas: &schemas,
        paths: BTreeMap::new(),
        // Always referenced by the generic operations (and by upstream's
        // documents), whatever the resources are.
        seeds: [
            STATUS,
            DELETE_OPTIONS,
            PATCH,
            WATCH_EVENT,
            API_RESOURCE_LIST,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    };
    doc.add_discovery_root();
    for r in resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        doc.add_resource(r);
    }

    let components = schemas.closure(doc.seeds);
    let mut paths = Map::new();
    for (path, item) in doc.paths {
        paths.insert(path, Value::Object(sorted_map(item)));
    }
    json!({
        "components": {
            "schemas": components,
            "securitySchemes": {
                "BearerToken": {
                    "description": "Bearer Token authentication",
                    "in": "header",
                    "name": "authorization",
                    "type": "apiKey"
                }
            }
        },
        "info": { "title": "Kubernetes", "version": KUBE_VERSION },
        "openapi": "3.0.0",
        "paths": paths,
    })
}

// ---------------------------------------------------------------------------
// Schema conversion (JSON-schema style -> OpenAPI 3.0), done once.

struct Converted {
    /// Every definition in OpenAPI 3 form.
    schemas: Map<String, Value>,
    /// Direct references of each definition, for the per-document closure.
    refs: HashMap<String, Vec<String>>,
    /// group/version/kind -> definition name (first wins for shared meta types).
    by_gvk: HashMap<(String, String, String), String>,
}

fn converted() -> &'static Converted {
    static CONVERTED: OnceLock<Converted> = OnceLock::new();
    CONVERTED.get_or_init(|| {
        let defs = definitions();
        let mut schemas = Map::new();
        let mut refs = HashMap::new();
        let mut by_gvk = HashMap::new();
        for (name, def) in defs {
            let schema = convert_schema(def);
            let mut direct = Vec::new();
            collect_refs(&schema, &mut direct);
            refs.insert(name.clone(), direct);
            for gvk in gvks_of(&schema) {
                by_gvk.entry(gvk).or_insert_with(|| name.clone());
            }
            schemas.insert(name.clone(), schema);
        }
        Converted {
            schemas,
            refs,
            by_gvk,
        }
    })
}

/// Converts one JSON-schema node. Keyword-aware: `properties` values are
/// schemas, but their keys are field names (JSONSchemaProps has fields named
/// `$ref`, `type` and `enum`), so they are never treated as keywords.
fn convert_schema(v: &Value) -> Value {
    let Value::Object(obj) = v else {
        return v.clone();
    };
    let mut out = Map::with_capacity(obj.len());
    for (k, val) in obj {
        match k.as_str() {
            "$ref" => match val.as_str() {
                Some(r) => {
                    let target = Value::String(rewrite_ref(r));
                    // OpenAPI 3.0 ignores siblings of `$ref`; upstream wraps
                    // the reference in allOf to keep description & co.
                    if obj.len() > 1 {
                        out.insert("allOf".into(), json!([{ "$ref": target }]));
                    } else {
                        out.insert("$ref".into(), target);
                    }
                }
                None => {
                    out.insert(k.clone(), val.clone());
                }
            },
            "type" => {
                if let Some(t) = convert_type(val) {
                    out.insert(k.clone(), t);
                }
            }
            "enum" => {
                let vals = match val {
                    Value::Array(a) => {
                        Value::Array(a.iter().filter(|x| !x.is_null()).cloned().collect())
                    }
                    other => other.clone(),
                };
                out.insert(k.clone(), vals);
            }
            "properties" | "patternProperties" | "definitions" | "$defs" => {
                let mapped = match val {
                    Value::Object(m) => Value::Object(
                        m.iter()
                            .map(|(name, s)| (name.clone(), convert_schema(s)))
                            .collect(),
                    ),
                    other => other.clone(),
                };
                out.insert(k.clone(), mapped);
            }
            "items" | "additionalProperties" | "not" | "allOf" | "anyOf" | "oneOf" => {
                let mapped = match val {
                    Value::Array(a) => Value::Array(a.iter().map(convert_schema).collect()),
                    other => convert_schema(other),
                };
                out.insert(k.clone(), mapped);
            }
            _ => {
                out.insert(k.clone(), val.clone());
            }
        }
    }
    Value::Object(out)
}

fn rewrite_ref(r: &str) -> String {
    match r.strip_prefix(DEFS_PREFIX) {
        Some(name) => format!("{SCHEMA_PREFIX}{name}"),
        None => r.to_string(),
    }
}

/// `["string","null"]` -> `"string"`: OpenAPI 3.0 has no type arrays, and
/// nullability is not expressed upstream either.
fn convert_type(t: &Value) -> Option<Value> {
    match t {
        Value::Array(a) => {
            let mut types: Vec<Value> = a
                .iter()
                .filter(|x| x.as_str() != Some("null"))
                .cloned()
                .collect();
            match types.len() {
                0 => None,
                1 => types.pop(),
                _ => Some(Value::Array(types)),
            }
        }
        other => Some(other.clone()),
    }
}

/// Names referenced (`#/components/schemas/NAME`) anywhere under `v`.
fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref"
                    && let Some(name) = x.as_str().and_then(|s| s.strip_prefix(SCHEMA_PREFIX))
                {
                    out.push(name.to_string());
                    continue;
                }
                collect_refs(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

fn gvks_of(schema: &Value) -> Vec<(String, String, String)> {
    let Some(Value::Array(list)) = schema.get("x-kubernetes-group-version-kind") else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|g| {
            let s = |k: &str| g.get(k).and_then(Value::as_str).map(str::to_string);
            Some((s("group")?, s("version")?, s("kind")?))
        })
        .collect()
}

/// Built-in schemas overlaid with a document's extra (CRD) schemas.
struct Schemas<'a> {
    builtin: &'static Converted,
    extra: &'a Map<String, Value>,
}

impl Schemas<'_> {
    fn exists(&self, name: &str) -> bool {
        self.extra.contains_key(name) || self.builtin.schemas.contains_key(name)
    }

    fn is_builtin(&self, name: &str) -> bool {
        !self.extra.contains_key(name) && self.builtin.schemas.contains_key(name)
    }

    /// Definition name for a group/version/kind, if any schema declares it.
    fn by_gvk(&self, group: &str, version: &str, kind: &str) -> Option<String> {
        let key = (group.to_string(), version.to_string(), kind.to_string());
        if let Some(name) = self.builtin.by_gvk.get(&key) {
            return Some(name.clone());
        }
        self.extra
            .iter()
            .find(|(_, s)| gvks_of(s).contains(&key))
            .map(|(name, _)| name.clone())
    }

    /// Every schema reachable from `seeds`, sorted by name.
    fn closure(&self, seeds: BTreeSet<String>) -> Map<String, Value> {
        let mut seen: BTreeMap<String, Value> = BTreeMap::new();
        let mut stack: Vec<String> = seeds.into_iter().collect();
        // Extra schemas are always served, and may reference built-ins.
        stack.extend(self.extra.keys().cloned());
        while let Some(name) = stack.pop() {
            if seen.contains_key(&name) {
                continue;
            }
            if let Some(s) = self.extra.get(&name) {
                let mut refs = Vec::new();
                collect_refs(s, &mut refs);
                stack.extend(refs);
                seen.insert(name, s.clone());
            } else if let Some(s) = self.builtin.schemas.get(&name) {
                if let Some(refs) = self.builtin.refs.get(&name) {
                    stack.extend(refs.iter().cloned());
                }
                seen.insert(name, s.clone());
            }
        }
        seen.into_iter().collect()
    }
}

// ---------------------------------------------------------------------------
// Paths and operations.

/// Naming pieces upstream derives from a group-version.
struct GvNames {
    /// "/api/v1" or "/apis/apps/v1".
    prefix: String,
    /// Operation-id infix: "CoreV1", "AppsV1", "RbacAuthorizationV1".
    op: String,
    /// Operation tag: "core_v1", "rbacAuthorization_v1".
    tag: String,
}

impl GvNames {
    fn new(group: &str, version: &str) -> Self {
        let group_id: String = if group.is_empty() {
            "Core".to_string()
        } else {
            group
                .trim_end_matches(".k8s.io")
                .split(['.', '-'])
                .map(capitalize)
                .collect()
        };
        let prefix = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let mut tag = group_id.clone();
        if let Some(first) = tag.get(..1) {
            tag.replace_range(..1, &first.to_ascii_lowercase());
        }
        GvNames {
            prefix,
            op: format!("{group_id}{}", capitalize(version)),
            tag: format!("{tag}_{version}"),
        }
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// "a Pod", "an Ingress", "Endpoints" (go-restful's article rule).
fn with_article(kind: &str) -> String {
    if kind.ends_with('s') && !kind.ends_with("ss") {
        return kind.to_string();
    }
    let vowel = kind
        .chars()
        .next()
        .is_some_and(|c| "aeiou".contains(c.to_ascii_lowercase()));
    format!("{} {kind}", if vowel { "an" } else { "a" })
}

type PathItem = Map<String, Value>;

struct DocBuilder<'a> {
    gv: &'a GvNames,
    schemas: &'a Schemas<'a>,
    paths: BTreeMap<String, PathItem>,
    seeds: BTreeSet<String>,
}

/// What a resource (or subresource) operation returns and accepts.
struct Target<'a> {
    group: &'a str,
    version: &'a str,
    kind: &'a str,
    /// Schema name of the body, if there is one.
    schema: Option<String>,
}

impl Target<'_> {
    fn gvk(&self) -> Value {
        json!({ "group": self.group, "kind": self.kind, "version": self.version })
    }
}

impl DocBuilder<'_> {
    fn schema_ref(&self, name: Option<&str>) -> Value {
        match name {
            Some(n) => json!({ "$ref": format!("{SCHEMA_PREFIX}{n}") }),
            // Resources without a schema (e.g. a CRD served without one).
            None => json!({ "type": "object" }),
        }
    }

    /// The resource's schema: its `definition`, else whichever schema
    /// declares its group/version/kind (CRDs registered without one).
    fn resource_schema(&self, r: &ResourceInfo) -> Option<String> {
        r.definition
            .clone()
            .filter(|d| self.schemas.exists(d))
            .or_else(|| self.schemas.by_gvk(&r.group, &r.version, &r.kind))
    }

    fn add_discovery_root(&mut self) {
        let mut op = Map::new();
        op.insert("description".into(), json!("get available resources"));
        op.insert(
            "operationId".into(),
            json!(format!("get{}APIResources", self.gv.op)),
        );
        op.insert(
            "responses".into(),
            responses(
                &[("200", "OK")],
                &self.schema_ref(Some(API_RESOURCE_LIST)),
                OBJECT_MEDIA,
            ),
        );
        op.insert("tags".into(), json!([self.gv.tag]));
        let mut item = PathItem::new();
        item.insert("get".into(), Value::Object(op));
        self.paths.insert(format!("{}/", self.gv.prefix), item);
    }

    fn add_resource(&mut self, r: &ResourceInfo) {
        let verbs: Vec<&str> = if r.verbs.is_empty() {
            ALL_VERBS.to_vec()
        } else {
            r.verbs.iter().map(String::as_str).collect()
        };
        let has = |v: &str| verbs.contains(&v);
        let def = self.resource_schema(r);
        let list_def = def
            .as_ref()
            .map(|d| format!("{d}List"))
            .filter(|d| self.schemas.exists(d));
        // CRDs are served as JSON/YAML only and reject strategic merge patch.
        let builtin = def.as_deref().is_some_and(|d| self.schemas.is_builtin(d));
        self.seeds.extend(def.iter().cloned());
        self.seeds.extend(list_def.iter().cloned());

        let gv = self.gv;
        let ns_part = if r.namespaced {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        let scoped_kind = format!("{}{}", if r.namespaced { "Namespaced" } else { "" }, r.kind);
        let target = Target {
            group: &r.group,
            version: &r.version,
            kind: &r.kind,
            schema: def.clone(),
        };
        let obj = self.schema_ref(def.as_deref());
        let list = self.schema_ref(list_def.as_deref());
        let media = if builtin { OBJECT_MEDIA } else { CRD_MEDIA };
        let list_media = if builtin { LIST_MEDIA } else { CRD_LIST_MEDIA };
        let kind = &r.kind;

        // Collection: list, create, deletecollection.
        let mut coll = PathItem::new();
        if has("deletecollection") {
            coll.insert(
                "delete".into(),
                operation(
                    format!("delete collection of {kind}"),
                    format!("delete{}Collection{scoped_kind}", gv.op),
                    &gv.tag,
                    "deletecollection",
                    &target,
                    params(DELETECOLLECTION_PARAMS),
                    Some(delete_body(self)),
                    responses(&[("200", "OK")], &self.schema_ref(Some(STATUS)), media),
                ),
            );
        }
        if has("list") {
            coll.insert(
                "get".into(),
                operation(
                    format!("list or watch objects of kind {kind}"),
                    format!("list{}{scoped_kind}", gv.op),
                    &gv.tag,
                    "list",
                    &target,
                    params(LIST_PARAMS),
                    None,
                    responses(&[("200", "OK")], &list, list_media),
                ),
            );
        }
        if has("create") {
            coll.insert(
                "post".into(),
                operation(
                    format!("create {}", with_article(kind)),
                    format!("create{}{scoped_kind}", gv.op),
                    &gv.tag,
                    "post",
                    &target,
                    params(WRITE_PARAMS),
                    Some(body(&obj)),
                    responses(
                        &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
                        &obj,
                        media,
                    ),
                ),
            );
        }
        if !coll.is_empty() {
            coll.insert("parameters".into(), path_params(r.namespaced, None, false));
            self.paths
                .insert(format!("{}{ns_part}/{}", gv.prefix, r.resource), coll);
        }

        // Item: read, replace, patch, delete.
        let mut item = PathItem::new();
        if has("delete") {
            item.insert(
                "delete".into(),
                operation(
                    format!("delete {}", with_article(kind)),
                    format!("delete{}{scoped_kind}", gv.op),
                    &gv.tag,
                    "delete",
                    &target,
                    params(DELETE_PARAMS),
                    Some(delete_body(self)),
                    responses(
                        &[("200", "OK"), ("202", "Accepted")],
                        &self.schema_ref(Some(STATUS)),
                        media,
                    ),
                ),
            );
        }
        self.add_read_write(&mut item, &target, &verbs, &scoped_kind, None, builtin);
        if !item.is_empty() {
            item.insert(
                "parameters".into(),
                path_params(r.namespaced, Some(kind), false),
            );
            self.paths.insert(
                format!("{}{ns_part}/{}/{{name}}", gv.prefix, r.resource),
                item,
            );
        }

        // Cross-namespace list and the deprecated watch paths.
        if r.namespaced && has("list") {
            let op = operation(
                format!("list or watch objects of kind {kind}"),
                format!("list{}{kind}ForAllNamespaces", gv.op),
                &gv.tag,
                "list",
                &target,
                params(LIST_PARAMS),
                None,
                responses(&[("200", "OK")], &list, list_media),
            );
            self.insert_single(format!("{}/{}", gv.prefix, r.resource), op, false, None);
        }
        if has("watch") {
            let event = self.schema_ref(Some(WATCH_EVENT));
            let watch_list = |op_id: String| {
                operation(
                    format!(
                        "watch individual changes to a list of {kind}. deprecated: use the 'watch' parameter with a list operation instead."
                    ),
                    op_id,
                    &gv.tag,
                    "watchlist",
                    &target,
                    params(LIST_PARAMS),
                    None,
                    responses(&[("200", "OK")], &event, list_media),
                )
            };
            let list_op = watch_list(format!("watch{}{scoped_kind}List", gv.op));
            self.insert_single(
                format!("{}/watch{ns_part}/{}", gv.prefix, r.resource),
                list_op,
                r.namespaced,
                None,
            );
            if r.namespaced {
                let all_op = watch_list(format!("watch{}{kind}ListForAllNamespaces", gv.op));
                self.insert_single(
                    format!("{}/watch/{}", gv.prefix, r.resource),
                    all_op,
                    false,
                    None,
                );
            }
            let one = operation(
                format!(
                    "watch changes to an object of kind {kind}. deprecated: use the 'watch' parameter with a list operation instead, filtered to a single item with the 'fieldSelector' parameter."
                ),
                format!("watch{}{scoped_kind}", gv.op),
                &gv.tag,
                "watch",
                &target,
                params(LIST_PARAMS),
                None,
                responses(&[("200", "OK")], &event, list_media),
            );
            self.insert_single(
                format!("{}/watch{ns_part}/{}/{{name}}", gv.prefix, r.resource),
                one,
                r.namespaced,
                Some(kind),
            );
        }

        for sub in &r.subresources {
            self.add_subresource(r, sub, ns_part, &scoped_kind, builtin);
        }
    }

    /// A path with a single GET operation.
    fn insert_single(&mut self, path: String, get: Value, namespaced: bool, name_of: Option<&str>) {
        let mut item = PathItem::new();
        item.insert("get".into(), get);
        item.insert("parameters".into(), path_params(namespaced, name_of, false));
        self.paths.insert(path, item);
    }

    /// get/put/patch/post on an object (or object-like subresource) path.
    /// `sub` is the subresource name, for operation ids and descriptions.
    fn add_read_write(
        &self,
        item: &mut PathItem,
        target: &Target,
        verbs: &[&str],
        scoped_kind: &str,
        sub: Option<(&str, &str)>,
        builtin: bool,
    ) {
        let gv = self.gv;
        let obj = self.schema_ref(target.schema.as_deref());
        let media = if builtin { OBJECT_MEDIA } else { CRD_MEDIA };
        // (operation-id suffix, "<sub> of " description prefix, parent kind)
        let (suffix, of, parent) = match sub {
            Some((name, parent)) => (capitalize(name), format!("{name} of "), parent),
            None => (String::new(), String::new(), target.kind),
        };
        let id = |verb: &str| format!("{verb}{}{scoped_kind}{suffix}", gv.op);
        if verbs.contains(&"get") {
            item.insert(
                "get".into(),
                operation(
                    format!("read {of}the specified {parent}"),
                    id("read"),
                    &gv.tag,
                    "get",
                    target,
                    Vec::new(),
                    None,
                    responses(&[("200", "OK")], &obj, media),
                ),
            );
        }
        if verbs.contains(&"patch") {
            item.insert(
                "patch".into(),
                operation(
                    format!("partially update {of}the specified {parent}"),
                    id("patch"),
                    &gv.tag,
                    "patch",
                    target,
                    params(PATCH_PARAMS),
                    Some(patch_body(self, builtin)),
                    responses(&[("200", "OK"), ("201", "Created")], &obj, media),
                ),
            );
        }
        // POST on an item path only exists for subresources (eviction, ...).
        if sub.is_some() && verbs.contains(&"create") {
            item.insert(
                "post".into(),
                operation(
                    format!("create {of}{}", with_article(parent)),
                    id("create"),
                    &gv.tag,
                    "post",
                    target,
                    params(WRITE_PARAMS),
                    Some(body(&obj)),
                    responses(
                        &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
                        &obj,
                        media,
                    ),
                ),
            );
        }
        if verbs.contains(&"update") {
            item.insert(
                "put".into(),
                operation(
                    format!("replace {of}the specified {parent}"),
                    id("replace"),
                    &gv.tag,
                    "put",
                    target,
                    params(WRITE_PARAMS),
                    Some(body(&obj)),
                    responses(&[("200", "OK"), ("201", "Created")], &obj, media),
                ),
            );
        }
    }

    fn add_subresource(
        &mut self,
        r: &ResourceInfo,
        sub: &SubresourceInfo,
        ns_part: &str,
        scoped_kind: &str,
        builtin: bool,
    ) {
        let gv = self.gv;
        let path = format!(
            "{}{ns_part}/{}/{{name}}/{}",
            gv.prefix, r.resource, sub.name
        );
        let schema = if (sub.group.as_str(), sub.version.as_str(), sub.kind.as_str())
            == (r.group.as_str(), r.version.as_str(), r.kind.as_str())
        {
            self.resource_schema(r)
        } else {
            self.schemas.by_gvk(&sub.group, &sub.version, &sub.kind)
        };
        self.seeds.extend(schema.iter().cloned());
        let target = Target {
            group: &sub.group,
            version: &sub.version,
            kind: &sub.kind,
            schema,
        };
        let verbs: Vec<&str> = sub.verbs.iter().map(String::as_str).collect();
        let suffix = capitalize(&sub.name);

        // Streaming "connect" subresources take *Options query parameters and
        // have no schema upstream.
        let connect_params = match sub.name.as_str() {
            _ if !sub.kind.ends_with("Options") => None,
            "exec" => Some(params(EXEC_PARAMS)),
            "attach" => Some(params(ATTACH_PARAMS)),
            "portforward" => Some(params(PORTFORWARD_PARAMS)),
            "proxy" => Some(vec![query_param(
                "path",
                "string",
                &format!(
                    "Path is the URL path to use for the current proxy request to {}.",
                    r.kind.to_lowercase()
                ),
            )]),
            _ => Some(Vec::new()),
        };
        if let Some(query) = connect_params {
            let proxy = sub.name == "proxy";
            let mut methods: Vec<&str> = Vec::new();
            for (verb, method) in [
                ("delete", "delete"),
                ("get", "get"),
                ("patch", "patch"),
                ("create", "post"),
                ("update", "put"),
            ] {
                if verbs.contains(&verb) {
                    methods.push(method);
                }
            }
            if proxy {
                // Proxies pass HEAD and OPTIONS through too (not in discovery).
                methods.extend(["head", "options"]);
            }
            let string = json!({ "type": "string" });
            let connect_op = |method: &str, with_path: bool| {
                operation(
                    format!(
                        "connect {} requests to {} of {}",
                        method.to_uppercase(),
                        sub.name,
                        r.kind
                    ),
                    format!(
                        "connect{}{}{scoped_kind}{suffix}{}",
                        gv.op,
                        capitalize(method),
                        if with_path { "WithPath" } else { "" }
                    ),
                    &gv.tag,
                    "connect",
                    &target,
                    if with_path { Vec::new() } else { query.clone() },
                    None,
                    responses(&[("200", "OK")], &string, &["*/*"]),
                )
            };
            let mut item = PathItem::new();
            for method in &methods {
                item.insert(method.to_string(), connect_op(method, false));
            }
            item.insert(
                "parameters".into(),
                path_params_no_pretty(r.namespaced, &sub.kind, false),
            );
            self.paths.insert(path.clone(), item);
            if proxy {
                let mut item = PathItem::new();
                for method in &methods {
                    item.insert(method.to_string(), connect_op(method, true));
                }
                item.insert(
                    "parameters".into(),
                    path_params_no_pretty(r.namespaced, &sub.kind, true),
                );
                self.paths.insert(format!("{path}/{{path}}"), item);
            }
            return;
        }

        let mut item = PathItem::new();
        if sub.name == "log" {
            let text = json!({ "type": "string" });
            item.insert(
                "get".into(),
                operation(
                    format!("read log of the specified {}", r.kind),
                    format!("read{}{scoped_kind}{suffix}", gv.op),
                    &gv.tag,
                    "get",
                    &target,
                    params(LOG_PARAMS),
                    None,
                    responses(&[("200", "OK")], &text, LOG_MEDIA),
                ),
            );
        } else {
            self.add_read_write(
                &mut item,
                &target,
                &verbs,
                scoped_kind,
                Some((&sub.name, &r.kind)),
                builtin,
            );
        }
        if !item.is_empty() {
            item.insert(
                "parameters".into(),
                path_params(r.namespaced, Some(&sub.kind), false),
            );
            self.paths.insert(path, item);
        }
    }
}

/// Operation object with upstream's fields (keys in upstream's order).
#[allow(clippy::too_many_arguments)]
fn operation(
    description: String,
    operation_id: String,
    tag: &str,
    action: &str,
    target: &Target,
    parameters: Vec<Value>,
    request_body: Option<Value>,
    responses: Value,
) -> Value {
    let mut op = Map::new();
    op.insert("description".into(), Value::String(description));
    op.insert("operationId".into(), Value::String(operation_id));
    if !parameters.is_empty() {
        op.insert("parameters".into(), Value::Array(parameters));
    }
    if let Some(b) = request_body {
        op.insert("requestBody".into(), b);
    }
    op.insert("responses".into(), responses);
    op.insert("tags".into(), json!([tag]));
    op.insert("x-kubernetes-action".into(), json!(action));
    op.insert("x-kubernetes-group-version-kind".into(), target.gvk());
    Value::Object(op)
}

const OBJECT_MEDIA: &[&str] = &[
    "application/json",
    "application/vnd.kubernetes.protobuf",
    "application/yaml",
];
const LIST_MEDIA: &[&str] = &[
    "application/json",
    "application/json;stream=watch",
    "application/vnd.kubernetes.protobuf",
    "application/vnd.kubernetes.protobuf;stream=watch",
    "application/yaml",
];
const CRD_MEDIA: &[&str] = &["application/json", "application/yaml"];
const CRD_LIST_MEDIA: &[&str] = &[
    "application/json",
    "application/json;stream=watch",
    "application/yaml",
];
const LOG_MEDIA: &[&str] = &[
    "application/json",
    "application/vnd.kubernetes.protobuf",
    "application/yaml",
    "text/plain",
];

fn responses(codes: &[(&str, &str)], schema: &Value, media: &[&str]) -> Value {
    let mut out = Map::new();
    for (code, desc) in codes {
        let content: Map<String, Value> = media
            .iter()
            .map(|m| (m.to_string(), json!({ "schema": schema })))
            .collect();
        out.insert(
            code.to_string(),
            json!({ "content": content, "description": desc }),
        );
    }
    out.insert("401".into(), json!({ "description": "Unauthorized" }));
    Value::Object(out)
}

fn body(schema: &Value) -> Value {
    json!({ "content": { "*/*": { "schema": schema } }, "required": true })
}

fn delete_body(doc: &DocBuilder) -> Value {
    json!({ "content": { "*/*": { "schema": doc.schema_ref(Some(DELETE_OPTIONS)) } } })
}

fn patch_body(doc: &DocBuilder, builtin: bool) -> Value {
    let patch = json!({ "schema": doc.schema_ref(Some(PATCH)) });
    let mut content = Map::new();
    for media in [
        "application/apply-patch+yaml",
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
    ] {
        if builtin || media != "application/strategic-merge-patch+json" {
            content.insert(media.into(), patch.clone());
        }
    }
    json!({ "content": content, "required": true })
}

// ---------------------------------------------------------------------------
// Parameters (texts as upstream).

fn query_param(name: &str, ty: &str, description: &str) -> Value {
    json!({
        "description": description,
        "in": "query",
        "name": name,
        "schema": { "type": ty, "uniqueItems": true }
    })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({
        "description": description,
        "in": "path",
        "name": name,
        "required": true,
        "schema": { "type": "string", "uniqueItems": true }
    })
}

const NAMESPACE_DESC: &str = "object name and auth scope, such as for teams and projects";
const PRETTY_DESC: &str = "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget).";

/// Path-level parameters: `name` (when `name_of` gives the kind),
/// `namespace`, `pretty`.
fn path_params(namespaced: bool, name_of: Option<&str>, with_path: bool) -> Value {
    let mut out = Vec::new();
    if let Some(kind) = name_of {
        out.push(path_param("name", &format!("name of the {kind}")));
    }
    if namespaced {
        out.push(path_param("namespace", NAMESPACE_DESC));
    }
    if with_path {
        out.push(path_param("path", "path to the resource"));
    }
    out.push(query_param("pretty", "string", PRETTY_DESC));
    Value::Array(out)
}

/// Connect subresources take no `pretty`.
fn path_params_no_pretty(namespaced: bool, kind: &str, with_path: bool) -> Value {
    let Value::Array(mut out) = path_params(namespaced, Some(kind), with_path) else {
        unreachable!("path_params returns an array");
    };
    out.pop();
    Value::Array(out)
}

/// (name, schema type, description)
type ParamSpec = (&'static str, &'static str, &'static str);

fn params(specs: &[ParamSpec]) -> Vec<Value> {
    specs
        .iter()
        .map(|(name, ty, desc)| query_param(name, ty, desc))
        .collect()
}

const ALLOW_WATCH_BOOKMARKS: ParamSpec = (
    "allowWatchBookmarks",
    "boolean",
    "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore this flag and bookmarks are sent at the server's discretion. Clients should not assume bookmarks are returned at any specific interval, nor may they assume the server will send any BOOKMARK event during a session. If this is not a watch, this field is ignored.",
);
const CONTINUE: ParamSpec = (
    "continue",
    "string",
    "The continue option should be set when retrieving more results from the server. Since this value is server defined, clients may only use the continue value from a previous query result with identical query parameters (except for the value of continue) and the server may reject a continue value it does not recognize. If the specified continue value is no longer valid whether due to expiration (generally five to fifteen minutes) or a configuration change on the server, the server will respond with a 410 ResourceExpired error together with a continue token. If the client needs a consistent list, it must restart their list without the continue field. Otherwise, the client may send another list request with the token received with the 410 error, the server will respond with a list starting from the next key, but from the latest snapshot, which is inconsistent from the previous list results - objects that are created, modified, or deleted after the first list request will be included in the response, as long as their keys are after the \"next key\".\n\nThis field is not supported when watch is true. Clients may start a watch from the last resourceVersion value returned by the server and not miss any modifications.",
);
const DRY_RUN: ParamSpec = (
    "dryRun",
    "string",
    "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed",
);
const FIELD_MANAGER: ParamSpec = (
    "fieldManager",
    "string",
    "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.",
);
const FIELD_MANAGER_PATCH: ParamSpec = (
    "fieldManager",
    "string",
    "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint. This field is required for apply requests (application/apply-patch) but optional for non-apply patch types (JsonPatch, MergePatch, StrategicMergePatch).",
);
const FIELD_SELECTOR: ParamSpec = (
    "fieldSelector",
    "string",
    "A selector to restrict the list of returned objects by their fields. Defaults to everything.",
);
const FIELD_VALIDATION: ParamSpec = (
    "fieldValidation",
    "string",
    "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. This is the default behavior prior to v1.23. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. This is the default in v1.23+ - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.",
);
const FORCE: ParamSpec = (
    "force",
    "boolean",
    "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.",
);
const GRACE_PERIOD_SECONDS: ParamSpec = (
    "gracePeriodSeconds",
    "integer",
    "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately. If this value is nil, the default grace period for the specified type will be used. Defaults to a per object value if not specified. zero means delete immediately.",
);
const IGNORE_STORE_READ_ERROR: ParamSpec = (
    "ignoreStoreReadErrorWithClusterBreakingPotential",
    "boolean",
    "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion flow fails with a corrupt object error. A resource is considered corrupt if it can not be retrieved from the underlying storage successfully because of a) its data can not be transformed e.g. decryption failure, or b) it fails to decode into an object. NOTE: unsafe deletion ignores finalizer constraints, skips precondition checks, and removes the object from the storage. WARNING: This may potentially break the cluster if the workload associated with the resource being unsafe-deleted relies on normal deletion flow. Use only if you REALLY know what you are doing. The default value is false, and the user must opt in to enable it",
);
const LABEL_SELECTOR: ParamSpec = (
    "labelSelector",
    "string",
    "A selector to restrict the list of returned objects by their labels. Defaults to everything.",
);
const LIMIT: ParamSpec = (
    "limit",
    "integer",
    "limit is a maximum number of responses to return for a list call. If more items exist, the server will set the `continue` field on the list metadata to a value that can be used with the same initial query to retrieve the next set of results. Setting a limit may return fewer than the requested amount of items (up to zero items) in the event all requested objects are filtered out and clients should only use the presence of the continue field to determine whether more results are available. Servers may choose not to support the limit argument and will return all of the available results. If limit is specified and the continue field is empty, clients may assume that no more results are available. This field is not supported if watch is true.\n\nThe server guarantees that the objects returned when using continue will be identical to issuing a single list call without a limit - that is, no objects created, modified, or deleted after the first request is issued will be included in any subsequent continued requests. This is sometimes referred to as a consistent snapshot, and ensures that a client that is using limit to receive smaller chunks of a very large result can ensure they see all possible objects. If objects are updated during a chunked list the version of the object that was present at the time the first list result was calculated is returned.",
);
const ORPHAN_DEPENDENTS: ParamSpec = (
    "orphanDependents",
    "boolean",
    "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned. If true/false, the \"orphan\" finalizer will be added to/removed from the object's finalizers list. Either this field or PropagationPolicy may be set, but not both.",
);
const PROPAGATION_POLICY: ParamSpec = (
    "propagationPolicy",
    "string",
    "Whether and how garbage collection will be performed. Either this field or OrphanDependents may be set, but not both. The default policy is decided by the existing finalizer set in the metadata.finalizers and the resource-specific default policy. Acceptable values are: 'Orphan' - orphan the dependents; 'Background' - allow the garbage collector to delete the dependents in the background; 'Foreground' - a cascading policy that deletes all dependents in the foreground.",
);
const RESOURCE_VERSION: ParamSpec = (
    "resourceVersion",
    "string",
    "resourceVersion sets a constraint on what resource versions a request may be served from. See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset",
);
const RESOURCE_VERSION_MATCH: ParamSpec = (
    "resourceVersionMatch",
    "string",
    "resourceVersionMatch determines how resourceVersion is applied to list calls. It is highly recommended that resourceVersionMatch be set for list calls where resourceVersion is set See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset",
);
const SEND_INITIAL_EVENTS: ParamSpec = (
    "sendInitialEvents",
    "boolean",
    "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream will begin with synthetic events to produce the current state of objects in the collection. Once all such events have been sent, a synthetic \"Bookmark\" event  will be sent. The bookmark will report the ResourceVersion (RV) corresponding to the set of objects, and be marked with `\"k8s.io/initial-events-end\": \"true\"` annotation. Afterwards, the watch stream will proceed as usual, sending watch events corresponding to changes (subsequent to the RV) to objects watched.\n\nWhen `sendInitialEvents` option is set, we require `resourceVersionMatch` option to also be set. The semantic of the watch request is as following: - `resourceVersionMatch` = NotOlderThan\n  is interpreted as \"data at least as new as the provided `resourceVersion`\"\n  and the bookmark event is send when the state is synced\n  to a `resourceVersion` at least as fresh as the one provided by the ListOptions.\n  If `resourceVersion` is unset, this is interpreted as \"consistent read\" and the\n  bookmark event is send when the state is synced at least to the moment\n  when request started being processed.\n- `resourceVersionMatch` set to any other value or unset\n  Invalid error is returned.\n\nDefaults to true if `resourceVersion=\"\"` or `resourceVersion=\"0\"` (for backward compatibility reasons) and to false otherwise.",
);
const TIMEOUT_SECONDS: ParamSpec = (
    "timeoutSeconds",
    "integer",
    "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity.",
);
const WATCH: ParamSpec = (
    "watch",
    "boolean",
    "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion.",
);

const LIST_PARAMS: &[ParamSpec] = &[
    ALLOW_WATCH_BOOKMARKS,
    CONTINUE,
    FIELD_SELECTOR,
    LABEL_SELECTOR,
    LIMIT,
    RESOURCE_VERSION,
    RESOURCE_VERSION_MATCH,
    SEND_INITIAL_EVENTS,
    TIMEOUT_SECONDS,
    WATCH,
];
const WRITE_PARAMS: &[ParamSpec] = &[DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION];
const PATCH_PARAMS: &[ParamSpec] = &[DRY_RUN, FIELD_MANAGER_PATCH, FIELD_VALIDATION, FORCE];
const DELETE_PARAMS: &[ParamSpec] = &[
    DRY_RUN,
    GRACE_PERIOD_SECONDS,
    IGNORE_STORE_READ_ERROR,
    ORPHAN_DEPENDENTS,
    PROPAGATION_POLICY,
];
const DELETECOLLECTION_PARAMS: &[ParamSpec] = &[
    CONTINUE,
    DRY_RUN,
    FIELD_SELECTOR,
    GRACE_PERIOD_SECONDS,
    IGNORE_STORE_READ_ERROR,
    LABEL_SELECTOR,
    LIMIT,
    ORPHAN_DEPENDENTS,
    PROPAGATION_POLICY,
    RESOURCE_VERSION,
    RESOURCE_VERSION_MATCH,
    SEND_INITIAL_EVENTS,
    TIMEOUT_SECONDS,
];
const LOG_PARAMS: &[ParamSpec] = &[
    (
        "container",
        "string",
        "The container for which to stream logs. Defaults to only container if there is one container in the pod.",
    ),
    (
        "follow",
        "boolean",
        "Follow the log stream of the pod. Defaults to false.",
    ),
    (
        "insecureSkipTLSVerifyBackend",
        "boolean",
        "insecureSkipTLSVerifyBackend indicates that the apiserver should not confirm the validity of the serving certificate of the backend it is connecting to.  This will make the HTTPS connection between the apiserver and the backend insecure. This means the apiserver cannot verify the log data it is receiving came from the real kubelet.  If the kubelet is configured to verify the apiserver's TLS credentials, it does not mean the connection to the real kubelet is vulnerable to a man in the middle attack (e.g. an attacker could not intercept the actual log data coming from the real kubelet).",
    ),
    (
        "limitBytes",
        "integer",
        "If set, the number of bytes to read from the server before terminating the log output. This may not display a complete final line of logging, and may return slightly more or slightly less than the specified limit.",
    ),
    (
        "previous",
        "boolean",
        "Return previous terminated container logs. Defaults to false.",
    ),
    (
        "sinceSeconds",
        "integer",
        "A relative time in seconds before the current time from which to show logs. If this value precedes the time a pod was started, only logs since the pod start will be returned. If this value is in the future, no logs will be returned. Only one of sinceSeconds or sinceTime may be specified.",
    ),
    (
        "stream",
        "string",
        "Specify which container log stream to return to the client. Acceptable values are \"All\", \"Stdout\" and \"Stderr\". If not specified, \"All\" is used, and both stdout and stderr are returned interleaved. Note that when \"TailLines\" is specified, \"Stream\" can only be set to nil or \"All\".",
    ),
    (
        "tailLines",
        "integer",
        "If set, the number of lines from the end of the logs to show. If not specified, logs are shown from the creation of the container or sinceSeconds or sinceTime. Note that when \"TailLines\" is specified, \"Stream\" can only be set to nil or \"All\".",
    ),
    (
        "timestamps",
        "boolean",
        "If true, add an RFC3339 or RFC3339Nano timestamp at the beginning of every line of log output. Defaults to false.",
    ),
];
const EXEC_PARAMS: &[ParamSpec] = &[
    (
        "command",
        "string",
        "Command is the remote command to execute. argv array. Not executed within a shell.",
    ),
    (
        "container",
        "string",
        "Container in which to execute the command. Defaults to only container if there is only one container in the pod.",
    ),
    (
        "stderr",
        "boolean",
        "Redirect the standard error stream of the pod for this call.",
    ),
    (
        "stdin",
        "boolean",
        "Redirect the standard input stream of the pod for this call. Defaults to false.",
    ),
    (
        "stdout",
        "boolean",
        "Redirect the standard output stream of the pod for this call.",
    ),
    (
        "tty",
        "boolean",
        "TTY if true indicates that a tty will be allocated for the exec call. Defaults to false.",
    ),
];
const ATTACH_PARAMS: &[ParamSpec] = &[
    (
        "container",
        "string",
        "The container in which to execute the command. Defaults to only container if there is only one container in the pod.",
    ),
    (
        "stderr",
        "boolean",
        "Stderr if true indicates that stderr is to be redirected for the attach call. Defaults to true.",
    ),
    (
        "stdin",
        "boolean",
        "Stdin if true, redirects the standard input stream of the pod for this call. Defaults to false.",
    ),
    (
        "stdout",
        "boolean",
        "Stdout if true indicates that stdout is to be redirected for the attach call. Defaults to true.",
    ),
    (
        "tty",
        "boolean",
        "TTY if true indicates that a tty will be allocated for the attach call. This is passed through the container runtime so the tty is allocated on the worker node by the container runtime. Defaults to false.",
    ),
];
const PORTFORWARD_PARAMS: &[ParamSpec] = &[(
    "ports",
    "integer",
    "List of ports to forward Required when using WebSockets",
)];

/// Path items and their operations are emitted in key order, as upstream.
fn sorted_map(m: Map<String, Value>) -> Map<String, Value> {
    let sorted: BTreeMap<String, Value> = m.into_iter().collect();
    sorted.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn group_versions(resources: &[ResourceInfo]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for r in resources {
            let gv = (r.group.clone(), r.version.clone());
            if !out.contains(&gv) {
                out.push(gv);
            }
        }
        out
    }

    fn all_documents() -> Vec<((String, String), Value)> {
        let resources = resources_builtin();
        let extra = Map::new();
        group_versions(&resources)
            .into_iter()
            .map(|(g, v)| {
                let doc = v3_document(&g, &v, &resources, &extra);
                ((g, v), doc)
            })
            .collect()
    }

    #[test]
    fn definitions_load() {
        let defs = definitions();
        assert_eq!(defs.len(), 707);
        assert!(defs.contains_key("io.k8s.api.core.v1.Pod"));
    }

    #[test]
    fn every_resource_definition_exists() {
        let defs = definitions();
        let resources = resources_builtin();
        assert!(resources.len() > 50);
        for r in &resources {
            let def = r.definition.as_deref().unwrap_or_else(|| {
                panic!("{}/{} {} has no definition", r.group, r.version, r.resource)
            });
            assert!(defs.contains_key(def), "missing definition {def}");
            // The definition really is this kind.
            let gvks = gvks_of(&defs[def]);
            assert!(
                gvks.contains(&(r.group.clone(), r.version.clone(), r.kind.clone())),
                "{def} does not declare {}/{} {}",
                r.group,
                r.version,
                r.kind
            );
        }
    }

    #[test]
    fn every_subresource_kind_exists() {
        // Connect subresources' option kinds have no schema upstream either.
        let schemaless = [
            "PodAttachOptions",
            "PodExecOptions",
            "PodPortForwardOptions",
            "PodProxyOptions",
            "NodeProxyOptions",
            "ServiceProxyOptions",
        ];
        let conv = converted();
        for r in resources_builtin() {
            for s in &r.subresources {
                if s.group.is_empty() && schemaless.contains(&s.kind.as_str()) {
                    continue;
                }
                let key = (s.group.clone(), s.version.clone(), s.kind.clone());
                assert!(
                    conv.by_gvk.contains_key(&key),
                    "{}/{}: no schema for {key:?}",
                    r.resource,
                    s.name
                );
            }
        }
    }

    #[test]
    fn resources_catalogue_basics() {
        let resources = resources_builtin();
        let find = |g: &str, res: &str| {
            resources
                .iter()
                .find(|r| r.group == g && r.resource == res)
                .unwrap_or_else(|| panic!("{g}/{res} missing"))
        };
        assert_eq!(
            find("events.k8s.io", "events").storage.as_deref(),
            Some("/events")
        );
        assert_eq!(find("", "events").storage, None);
        assert_eq!(find("", "bindings").verbs, ["create"]);
        assert_eq!(find("apps", "deployments").short_names, ["deploy"]);
        let pods = find("", "pods");
        let names: Vec<&str> = pods.subresources.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "attach",
                "binding",
                "ephemeralcontainers",
                "eviction",
                "exec",
                "log",
                "portforward",
                "proxy",
                "resize",
                "status"
            ]
        );
        // No duplicate resources within a group-version.
        let mut seen = BTreeSet::new();
        for r in &resources {
            assert!(seen.insert((&r.group, &r.version, &r.resource)));
        }
    }

    /// What kubectl apply does: find a PATCH op whose GVK extension matches,
    /// and check it takes `fieldValidation`.
    fn patch_supports_field_validation(
        doc: &Value,
        group: &str,
        version: &str,
        kind: &str,
    ) -> bool {
        let want = json!({ "group": group, "kind": kind, "version": version });
        doc["paths"].as_object().unwrap().values().any(|item| {
            let Some(op) = item.get("patch") else {
                return false;
            };
            op["x-kubernetes-group-version-kind"] == want
                && op["parameters"].as_array().is_some_and(|ps| {
                    ps.iter()
                        .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
                })
        })
    }

    #[test]
    fn apps_document_patch_has_field_validation() {
        let resources = resources_builtin();
        let doc = v3_document("apps", "v1", &resources, &Map::new());
        assert_eq!(doc["openapi"], "3.0.0");
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(patch["operationId"], "patchAppsV1NamespacedDeployment");
        assert_eq!(patch["x-kubernetes-action"], "patch");
        let names: Vec<&str> = patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["dryRun", "fieldManager", "fieldValidation", "force"]
        );
        let content = patch["requestBody"]["content"].as_object().unwrap();
        for media in [
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
            "application/apply-patch+yaml",
        ] {
            assert_eq!(
                content[media]["schema"]["$ref"],
                "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"
            );
        }
        assert!(patch_supports_field_validation(
            &doc,
            "apps",
            "v1",
            "Deployment"
        ));
        // Scale subresource ops carry the Scale GVK.
        let scale =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["put"];
        assert_eq!(
            scale["x-kubernetes-group-version-kind"],
            json!({ "group": "autoscaling", "kind": "Scale", "version": "v1" })
        );
        assert!(doc["components"]["schemas"]["io.k8s.api.autoscaling.v1.Scale"].is_object());
    }

    #[test]
    fn every_patchable_kind_passes_kubectl_apply_check() {
        let resources = resources_builtin();
        for ((g, v), doc) in all_documents() {
            for r in resources.iter().filter(|r| r.group == g && r.version == v) {
                if r.verbs.is_empty() || r.verbs.iter().any(|v| v == "patch") {
                    assert!(
                        patch_supports_field_validation(&doc, &g, &v, &r.kind),
                        "{g}/{v} {}",
                        r.kind
                    );
                }
            }
        }
    }

    #[test]
    fn explain_finds_schemas_by_gvk() {
        // kubectl explain looks up components.schemas by the GVK extension.
        for ((g, v), doc) in all_documents() {
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            for r in resources_builtin()
                .iter()
                .filter(|r| r.group == g && r.version == v)
            {
                let key = (g.clone(), v.clone(), r.kind.clone());
                assert!(
                    schemas.values().any(|s| gvks_of(s).contains(&key)),
                    "no schema with GVK {key:?}"
                );
            }
        }
        let resources = resources_builtin();
        let core = v3_document("", "v1", &resources, &Map::new());
        let s = &core["components"]["schemas"];
        let containers = &s["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["type"], "array");
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(
            containers["items"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Container"
        );
        let ports = &s["io.k8s.api.core.v1.Container"]["properties"]["ports"];
        assert_eq!(
            ports["x-kubernetes-list-map-keys"],
            json!(["containerPort", "protocol"])
        );
        assert_eq!(
            s["io.k8s.api.core.v1.Pod"]["properties"]["spec"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.PodSpec"
        );
        assert_eq!(s["io.k8s.api.core.v1.Pod"]["type"], "object");
        assert!(
            core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/exec"]["post"].is_object()
        );
        assert!(core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/log"]["get"].is_object());
        assert!(core["paths"]["/api/v1/nodes/{name}/proxy/{path}"]["get"].is_object());
        assert!(core["paths"]["/api/v1/namespaces/{name}/finalize"]["put"].is_object());
        assert!(core["paths"]["/api/v1/pods"]["get"].is_object());
        assert!(core["paths"]["/api/v1/namespaces"]["delete"].is_null());
    }

    fn check_refs(v: &Value, schemas: &Map<String, Value>, gv: &(String, String)) {
        let mut refs = Vec::new();
        collect_refs(v, &mut refs);
        for r in refs {
            assert!(schemas.contains_key(&r), "{gv:?}: dangling $ref {r}");
        }
    }

    fn check_no_type_arrays(v: &Value, at: &str) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    assert!(!(k == "type" && x.is_array()), "type array at {at}/{k}");
                    assert!(
                        !(k == "enum" && x.as_array().is_some_and(|a| a.contains(&Value::Null)))
                    );
                    if k == "$ref"
                        && let Some(s) = x.as_str()
                    {
                        assert!(!s.starts_with(DEFS_PREFIX), "unconverted ref at {at}");
                        // OpenAPI 3.0: a $ref has no siblings.
                        assert_eq!(m.len(), 1, "$ref with siblings at {at}");
                    }
                    check_no_type_arrays(x, &format!("{at}/{k}"));
                }
            }
            Value::Array(a) => a.iter().for_each(|x| check_no_type_arrays(x, at)),
            _ => {}
        }
    }

    #[test]
    fn documents_are_self_contained_openapi3() {
        for (gv, doc) in all_documents() {
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            check_refs(&doc["paths"], schemas, &gv);
            check_refs(&doc["components"], schemas, &gv);
            check_no_type_arrays(&doc, "");
            for name in [STATUS, DELETE_OPTIONS, PATCH] {
                assert!(schemas.contains_key(name), "{gv:?} lacks {name}");
            }
        }
    }

    #[test]
    fn extra_schemas_are_merged() {
        let crd = ResourceInfo {
            group: "stable.example.com".into(),
            version: "v1".into(),
            resource: "crontabs".into(),
            singular: "crontab".into(),
            kind: "CronTab".into(),
            namespaced: true,
            short_names: vec!["ct".into()],
            categories: vec![],
            verbs: vec![],
            subresources: vec![SubresourceInfo {
                name: "status".into(),
                group: "stable.example.com".into(),
                version: "v1".into(),
                kind: "CronTab".into(),
                verbs: vec!["get".into(), "patch".into(), "update".into()],
            }],
            definition: Some("com.example.stable.v1.CronTab".into()),
            storage: None,
        };
        let mut extra = Map::new();
        extra.insert(
            "com.example.stable.v1.CronTab".into(),
            json!({
                "type": "object",
                "properties": {
                    "metadata": { "allOf": [{ "$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" }] },
                    "spec": { "type": "object", "properties": { "cronSpec": { "type": "string" } } }
                },
                "x-kubernetes-group-version-kind": [{ "group": "stable.example.com", "kind": "CronTab", "version": "v1" }]
            }),
        );
        let doc = v3_document(
            "stable.example.com",
            "v1",
            std::slice::from_ref(&crd),
            &extra,
        );
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        assert!(schemas.contains_key("com.example.stable.v1.CronTab"));
        assert!(schemas.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
        check_refs(&doc, schemas, &("stable.example.com".into(), "v1".into()));
        let item =
            &doc["paths"]["/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}"];
        assert_eq!(
            item["patch"]["operationId"],
            "patchStableExampleComV1NamespacedCronTab"
        );
        assert!(
            item["patch"]["requestBody"]["content"]
                .get("application/strategic-merge-patch+json")
                .is_none()
        );
        assert!(patch_supports_field_validation(
            &doc,
            "stable.example.com",
            "v1",
            "CronTab"
        ));
        // Without `definition`, the schema is found by its GVK extension.
        let mut anonymous = crd.clone();
        anonymous.definition = None;
        let doc = v3_document("stable.example.com", "v1", &[anonymous], &extra);
        let status = &doc["paths"]["/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}/status"];
        assert_eq!(
            status["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/com.example.stable.v1.CronTab"
        );
    }

    #[test]
    fn index_and_hash() {
        let idx = v3_index(&["apis/apps/v1".to_string(), "api/v1".to_string()], |p| {
            document_hash(p.as_bytes())
        });
        let url = idx["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        let hash = url.strip_prefix("/openapi/v3/api/v1?hash=").unwrap();
        assert_eq!(hash.len(), 128);
        assert!(
            hash.chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        );
        assert_eq!(document_hash(b"x"), document_hash(b"x"));
        assert_ne!(document_hash(b"x"), document_hash(b"y"));
    }

    #[test]
    fn documents_are_deterministic() {
        let resources = resources_builtin();
        let a = serde_json::to_vec(&v3_document("apps", "v1", &resources, &Map::new())).unwrap();
        let b = serde_json::to_vec(&v3_document("apps", "v1", &resources, &Map::new())).unwrap();
        assert_eq!(document_hash(&a), document_hash(&b));
    }

    #[test]
    fn generating_all_documents_is_fast() {
        let _ = converted(); // one-time decompression and conversion
        let start = Instant::now();
        let docs = all_documents();
        let bytes: usize = docs
            .iter()
            .map(|(_, d)| serde_json::to_vec(d).unwrap().len())
            .sum();
        println!(
            "generated {} group-version documents ({bytes} bytes) in {:?}",
            docs.len(),
            start.elapsed()
        );
    }
}

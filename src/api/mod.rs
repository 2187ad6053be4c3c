//! The Kubernetes API server: routing, content negotiation and the generic
//! REST handlers over the watch cache and the store.

pub mod admission;
pub mod apply;
pub mod auth;
pub mod cache;
pub mod convert;
pub mod crd;
pub mod crdschema;
pub mod discovery;
pub mod errors;
pub mod fieldcheck;
pub mod handlers;
pub mod http;
pub mod lifecycle;
pub mod local;
pub mod metrics;
pub mod objects;
pub mod openapi;
pub mod protobuf;
pub mod proxy;
pub mod registry;
pub mod selector;
pub mod strategic;
pub mod table;
pub mod tokens;
pub mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use hyper::{Method, Request, Response, StatusCode, header};
use serde_json::{Value, json};

use self::auth::{Attributes, User};
use self::cache::Cache;
use self::errors::{ApiError, ApiResult};
use self::http::{Body, full};
use self::registry::{Registry, ResourceInfo};

/// Largest request body accepted, as kube-apiserver (3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

pub struct Api {
    pub cache: Arc<Cache>,
    registry: RwLock<Arc<Registry>>,
    token_secret: String,
    /// `host:port` clients should use, for `serverAddressByClientCIDRs`.
    pub server_address: String,
    openapi_docs: Mutex<HashMap<String, (u64, Bytes)>>,
    pub service_ip: objects::ServiceIpAllocator,
    /// Signs and checks service-account tokens; set once at start.
    pub tokens: std::sync::OnceLock<tokens::TokenSigner>,
    /// Credentials for reaching agents (logs, exec, attach, port-forward).
    pub kubelet_client: std::sync::OnceLock<proxy::KubeletClientConfig>,
    /// The last scrape of the agents for `metrics.k8s.io`.
    pub metrics: metrics::MetricsCache,
}

/// What the URL names, once parsed.
#[derive(Debug, Clone)]
pub struct Target {
    pub info: Arc<ResourceInfo>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    /// Store key of the named object.
    pub fn key(&self) -> String {
        objects::key_for(
            &self.info,
            self.namespace.as_deref(),
            self.name.as_deref().unwrap_or(""),
        )
    }
    /// Store prefix of the collection (all namespaces when none is given).
    pub fn prefix(&self) -> String {
        let mut p = self.info.storage_prefix();
        if let Some(ns) = &self.namespace {
            p.push_str(ns);
            p.push('/');
        }
        p
    }
}

/// The parsed query string: single values, last one wins; `command` style
/// repeats are kept in `all`.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub map: HashMap<String, String>,
}

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        let mut map = HashMap::new();
        if let Some(q) = q {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                map.insert(k.into_owned(), v.into_owned());
            }
        }
        Query { map }
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.map
            .get(k)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
    pub fn flag(&self, k: &str) -> bool {
        matches!(
            self.map.get(k).map(String::as_str),
            Some("true") | Some("1")
        )
    }
}

/// How the response body should be shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Object,
    Table,
    PartialMetadata,
}

impl Shape {
    fn from_accept(accept: &str) -> Shape {
        // First acceptable entry wins, as clients list preferences in order.
        for part in accept.split(',') {
            let p = part.trim();
            if p.contains("as=Table") {
                return Shape::Table;
            }
            if p.contains("as=PartialObjectMetadata") {
                return Shape::PartialMetadata;
            }
            if p.starts_with("application/json")
                || p.starts_with("*/*")
                || p.starts_with("application/yaml")
                || p.starts_with("application/vnd.kubernetes.protobuf")
            {
                return Shape::Object;
            }
        }
        Shape::Object
    }
}

pub struct Ctx {
    pub user: User,
    pub query: Query,
    pub shape: Shape,
    pub content_type: String,
    pub body: Bytes,
    pub warnings: Vec<String>,
}

impl Api {
    pub fn new(cache: Arc<Cache>, token_secret: String, server_address: String) -> Arc<Api> {
        let registry = Registry::new(openapi::resources_builtin());
        Arc::new(Api {
            cache,
            registry: RwLock::new(Arc::new(registry)),
            token_secret,
            server_address,
            openapi_docs: Mutex::new(HashMap::new()),
            service_ip: objects::ServiceIpAllocator::new("10.43.0.0/16"),
            tokens: std::sync::OnceLock::new(),
            kubelet_client: std::sync::OnceLock::new(),
            metrics: Default::default(),
        })
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.read().unwrap().clone()
    }

    pub fn set_registry(&self, r: Registry) {
        *self.registry.write().unwrap() = Arc::new(r);
    }

    pub fn authenticate_token(&self, token: &str) -> Option<User> {
        if token.matches('.').count() == 2 {
            return self.authenticate_service_account(token);
        }
        auth::user_from_token(token, &self.token_secret)
    }

    /// A service-account JWT is valid while it verifies, has not expired,
    /// and names a ServiceAccount (and bound Pod/Secret) that still exists
    /// with the same uid — deleting the account revokes its tokens.
    fn authenticate_service_account(&self, token: &str) -> Option<User> {
        let claims = self
            .tokens
            .get()?
            .verify(token, chrono::Utc::now().timestamp())?;
        let k = claims.get("kubernetes.io")?;
        let ns = k.get("namespace")?.as_str()?;
        let sa = k.pointer("/serviceaccount/name")?.as_str()?;
        let uid = k.pointer("/serviceaccount/uid")?.as_str()?;
        let live = self
            .cache
            .get(&format!("/registry/core/serviceaccounts/{ns}/{sa}"))?;
        if live.uid() != Some(uid) {
            return None;
        }
        if let Some(pod) = k.get("pod") {
            let name = pod.get("name")?.as_str()?;
            let p = self
                .cache
                .get(&format!("/registry/core/pods/{ns}/{name}"))?;
            if p.uid() != pod.get("uid").and_then(Value::as_str) {
                return None;
            }
        }
        Some(User {
            name: format!("system:serviceaccount:{ns}:{sa}"),
            uid: uid.to_string(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ],
        })
    }

    pub fn error_response(&self, e: &ApiError) -> Response<Body> {
        let body = serde_json::to_vec(&e.to_status()).unwrap_or_default();
        Response::builder()
            .status(StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header(header::CONTENT_TYPE, "application/json")
            .body(full(body))
            .unwrap()
    }

    /// Serves one request from an authenticated user. Generic over the body
    /// so the HTTPS listener and the in-process transport share it.
    pub async fn handle<B>(self: &Arc<Self>, req: Request<B>, user: User) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = req.uri().path().to_string();
        if user.is_anonymous() && !auth::is_public(&path) {
            return self.error_response(&ApiError::unauthorized());
        }
        match self.handle_inner(req, user, &path).await {
            Ok(r) => r,
            Err(e) => self.error_response(&e),
        }
    }

    async fn handle_inner<B>(
        self: &Arc<Self>,
        req: Request<B>,
        user: User,
        path: &str,
    ) -> ApiResult<Response<Body>>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let method = req.method().clone();
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let query = Query::parse(req.uri().query());
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();

        // Non-resource endpoints.
        match (segs.as_slice(), &method) {
            (["healthz"] | ["livez"] | ["readyz"], &Method::GET) => {
                return Ok(text(StatusCode::OK, "ok"));
            }
            (["version"], &Method::GET) => return Ok(json_response(StatusCode::OK, &version())),
            // k3s's bootstrap: a joining agent fetches the CA without trusting
            // it, then checks it against the hash in its join token.
            (["cacerts"], &Method::GET) => {
                return Ok(text(StatusCode::OK, crate::pki::served_ca().unwrap_or("")));
            }
            (["api"], &Method::GET) => return Ok(discovery::api_root(self, &accept)),
            (["apis"], &Method::GET) => return Ok(discovery::apis_root(self, &accept)),
            (["openapi", "v3"], &Method::GET) => return Ok(discovery::openapi_index(self)),
            (["openapi", "v3", rest @ ..], &Method::GET) => {
                return discovery::openapi_doc(self, &rest.join("/"));
            }
            (["openapi", "v2"], _) => return Err(ApiError::not_found_path()),
            _ => {}
        }

        // The resource metrics API is served here, not from the store.
        if let ["apis", metrics::GROUP, rest @ ..] = segs.as_slice() {
            return metrics::handle(self, &user, &method, &accept, &query, rest).await;
        }

        let (group, version, rest) = match segs.as_slice() {
            ["api", "v1", rest @ ..] => ("", "v1", rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            ["apis", g] if method == Method::GET => {
                return discovery::group(self, g);
            }
            _ => return Err(ApiError::not_found_path()),
        };
        let registry = self.registry();
        if rest.is_empty() {
            if method != Method::GET {
                return Err(ApiError::method_not_allowed());
            }
            return discovery::resource_list(self, &registry, group, version);
        }
        let target = parse_target(&registry, group, version, rest)?;

        let verb = verb_for(&method, &target, &query);
        let attrs = Attributes {
            verb: verb.to_string(),
            group: group.to_string(),
            resource: target.info.resource.clone(),
            subresource: target.subresource.clone().unwrap_or_default(),
            namespace: target.namespace.clone().unwrap_or_default(),
            name: target.name.clone().unwrap_or_default(),
            path: String::new(),
        };
        if let Err(msg) = auth::authorize(&user, &attrs) {
            // Upstream's shape: `pods "x" is forbidden: User "..." cannot ...`.
            let res = errors::qualified(&attrs.group, &attrs.resource);
            let prefix = match &attrs.name {
                n if n.is_empty() => format!("{res} is forbidden"),
                n => format!("{res} \"{n}\" is forbidden"),
            };
            return Err(
                ApiError::forbidden(format!("{prefix}: {msg}")).with_details(
                    json!({"name": attrs.name, "group": attrs.group, "kind": attrs.resource}),
                ),
            );
        }

        // Logs, exec, attach, port-forward: relayed to the pod's agent.
        if proxy::handles(&target) {
            return proxy::handle(self, req, &target).await;
        }

        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = read_body(req).await?;
        let mut ctx = Ctx {
            user,
            query,
            shape: Shape::from_accept(&accept),
            content_type,
            body,
            warnings: Vec::new(),
        };
        handlers::dispatch(self, &registry, &target, verb, &mut ctx).await
    }
}

async fn read_body<B>(req: Request<B>) -> ApiResult<Bytes>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(ApiError::new(
                    413,
                    "RequestEntityTooLarge",
                    "the server has received too large of a request body",
                ))
            } else {
                Err(ApiError::bad_request(format!("reading body: {e}")))
            }
        }
    }
}

fn parse_target(
    registry: &Registry,
    group: &str,
    version: &str,
    rest: &[&str],
) -> ApiResult<Target> {
    // namespaces/<ns>/<resource>[/<name>[/<sub>]] unless it is the
    // namespace object itself (namespaces/<name>[/status|finalize]).
    let (namespace, rest) = match rest {
        ["namespaces", ns, r, more @ ..]
            if !(group.is_empty() && more.is_empty() && (*r == "status" || *r == "finalize")) =>
        {
            (Some(ns.to_string()), {
                let mut v = vec![*r];
                v.extend_from_slice(more);
                v
            })
        }
        other => (None, other.to_vec()),
    };
    let (resource, name, sub) = match rest.as_slice() {
        [r] => (*r, None, None),
        [r, n] => (*r, Some(n.to_string()), None),
        [r, n, s] => (*r, Some(n.to_string()), Some(s.to_string())),
        _ => return Err(ApiError::not_found_path()),
    };
    let info = registry
        .find(group, version, resource)
        .ok_or_else(ApiError::not_found_path)?;
    if namespace.is_some() && !info.namespaced {
        return Err(ApiError::not_found_path());
    }
    if let Some(s) = &sub
        && info.subresource(s).is_none()
    {
        return Err(ApiError::not_found_path());
    }
    if name.as_deref() == Some("") {
        return Err(ApiError::not_found_path());
    }
    Ok(Target {
        info,
        namespace,
        name,
        subresource: sub,
    })
}

fn verb_for(method: &Method, t: &Target, q: &Query) -> &'static str {
    match (method, t.name.is_some()) {
        (&Method::GET, true) => "get",
        (&Method::GET, false) if q.flag("watch") => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => "unknown",
    }
}

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": format!("v1.33.1+skiff-{}", crate::cli::VERSION),
        "gitCommit": option_env!("SKIFF_GIT_COMMIT").unwrap_or("unknown"),
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a }),
    })
}

pub fn text(status: StatusCode, s: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(s.to_string()))
        .unwrap()
}

pub fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    bytes_response(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

pub fn bytes_response(status: StatusCode, ct: &str, b: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, ct)
        .body(full(b))
        .unwrap()
}

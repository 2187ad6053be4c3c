//! The agent's streaming endpoint (port 10250): container logs, exec,
//! attach, port-forward, as the kubelet serves them to the API server.
//!
//! HTTPS with a required client certificate from the cluster CA; the API
//! server relays `pods/{log,exec,attach,portforward}` here. Paths as the
//! kubelet's: `/containerLogs/{ns}/{pod}/{container}`,
//! `/exec|attach/{ns}/{pod}/{container}`, `/portForward/{ns}/{pod}`; and
//! resource usage, `/stats/summary` and `/metrics/resource` (`stats.rs`).

pub mod channel;
pub mod exec;
pub mod logs;
mod netns;
pub mod portforward;
pub mod spdy;
pub mod stats;
#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::json;
use tokio::io::AsyncWrite;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;

use crate::agent::runtime::{ExecSession, ExecSpec, Runtime};

/// A container as the streaming endpoint sees it.
#[derive(Clone, Debug)]
pub struct ContainerRef {
    /// Runtime id (for exec and attach).
    pub id: String,
    /// Current CRI log file.
    pub log_path: PathBuf,
    /// The previous instance's log file (`--previous`), when there was one.
    pub previous_log_path: Option<PathBuf>,
    pub running: bool,
    pub stdin: bool,
    pub tty: bool,
}

/// Errors map to upstream statuses: NotFound → 404, BadRequest → 400.
#[derive(Debug)]
pub enum LookupError {
    NotFound(String),
    BadRequest(String),
}

/// What the kubelet tells the streaming endpoint about its pods.
pub trait Pods: Send + Sync + 'static {
    /// `container` empty = the pod's only (or default-container-annotated) container.
    fn container(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<ContainerRef, LookupError>;
    /// The pod's network namespace file (port-forward connects inside it).
    fn netns(&self, namespace: &str, pod: &str) -> Result<PathBuf, LookupError>;
    /// The pods on the node with their running containers (resource metrics).
    fn stats_pods(&self) -> Vec<stats::PodStatsRef> {
        Vec::new()
    }
    /// The node's name, as the stats summary reports it.
    fn node_name(&self) -> String {
        String::new()
    }
}

pub struct Config {
    pub bind: std::net::SocketAddr,
    /// PEM of the cluster CA: clients (the API server) must present a certificate it signed.
    pub client_ca_pem: String,
    /// Serving certificate and key (PEM).
    pub cert_pem: String,
    pub key_pem: String,
}

/// What exec and attach need from the runtime; a trait so that tests can
/// stand in for it.
pub trait ContainerIo: Send + Sync + 'static {
    fn exec<'a>(&'a self, id: &'a str, spec: ExecSpec) -> BoxFuture<'a, Result<ExecSession>>;
    fn attach_stdin<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn AsyncWrite + Send + Unpin>>>;
}

impl ContainerIo for Runtime {
    fn exec<'a>(&'a self, id: &'a str, spec: ExecSpec) -> BoxFuture<'a, Result<ExecSession>> {
        Box::pin(Runtime::exec(self, id, spec))
    }
    fn attach_stdin<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn AsyncWrite + Send + Unpin>>> {
        Box::pin(Runtime::attach_stdin(self, id))
    }
}

/// Binds `config.bind` and serves until the task is dropped.
pub async fn serve(config: Config, pods: Arc<dyn Pods>, runtime: Runtime) -> Result<()> {
    let listener = TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("binding the streaming endpoint on {}", config.bind))?;
    serve_listener(listener, config, pods, Arc::new(runtime)).await
}

/// Serves on an already-bound listener (`config.bind` is ignored).
pub async fn serve_listener(
    listener: TcpListener,
    config: Config,
    pods: Arc<dyn Pods>,
    io: Arc<dyn ContainerIo>,
) -> Result<()> {
    let acceptor = tls_acceptor(&config)?;
    let stats = stats::Stats::new();
    // Stops with this future (the sampler only feeds this server).
    let _sampler = kube::runtime::utils::CancelableJoinHandle::spawn(
        stats.clone().run_sampler(pods.clone()),
        &tokio::runtime::Handle::current(),
    );
    let state = Arc::new(State { pods, io, stats });
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("streaming accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, state) = (acceptor.clone(), state.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%peer, "streaming TLS handshake: {e}");
                    return;
                }
            };
            let user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| crate::api::auth::user_from_cert(c));
            let allowed = user.as_ref().is_some_and(|u| {
                u.name == KUBELET_CLIENT_CN || u.groups.iter().any(|g| g == "system:masters")
            });
            let name = user.map(|u| u.name).unwrap_or_default();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                let name = name.clone();
                async move {
                    Ok::<_, Infallible>(if allowed {
                        route(&state, req).await
                    } else {
                        text(
                            StatusCode::FORBIDDEN,
                            &format!(
                                "Forbidden (user={name}, verb=get, resource=nodes, subresource=proxy)"
                            ),
                        )
                    })
                }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, "streaming connection: {e}");
            }
        });
    }
}

/// The API server's identity towards agents (upstream's name).
pub const KUBELET_CLIENT_CN: &str = "kube-apiserver-kubelet-client";

fn tls_acceptor(config: &Config) -> Result<tokio_rustls::TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(config.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .context("streaming serving certificate")?;
    let key = PrivateKeyDer::from_pem_slice(config.key_pem.as_bytes())
        .context("streaming serving key")?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(config.client_ca_pem.as_bytes()) {
        roots.add(c.context("client CA certificate")?)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    // Upgrades need HTTP/1.1.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))
}

/// A self-signed serving certificate for the agent's endpoint (the API
/// server does not verify it, as upstream's default). Returns (cert, key) PEM.
pub fn kubelet_serving_cert(node_name: &str, ips: &[IpAddr]) -> Result<(String, String)> {
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
        KeyUsagePurpose, SanType,
    };
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("{node_name}@{}", chrono::Utc::now().timestamp()),
    );
    params.distinguished_name = dn;
    let mut sans = vec![SanType::DnsName(node_name.to_string().try_into()?)];
    sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.subject_alt_names = sans;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

// ----------------------------------------------------------------- routing

type Body = BoxBody<Bytes, std::io::Error>;

struct State {
    pods: Arc<dyn Pods>,
    io: Arc<dyn ContainerIo>,
    stats: Arc<stats::Stats>,
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

fn text(code: StatusCode, msg: &str) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(msg.to_string()))
        .unwrap()
}

/// A `Status` body: what kubectl decodes from a refused upgrade.
fn status(code: StatusCode, msg: &str) -> Response<Body> {
    let reason = match code {
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::FORBIDDEN => "Forbidden",
        _ => "InternalError",
    };
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": msg, "reason": reason, "code": code.as_u16(),
    });
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(serde_json::to_vec(&body).unwrap_or_default()))
        .unwrap()
}

fn lookup_error(e: LookupError, as_status: bool) -> Response<Body> {
    let (code, msg) = match e {
        LookupError::NotFound(m) => (StatusCode::NOT_FOUND, m),
        LookupError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
    };
    if as_status {
        status(code, &msg)
    } else {
        text(code, &msg)
    }
}

fn upgrade_token(req: &Request<Incoming>) -> String {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

async fn route(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query: Vec<(String, String)> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    let readable = method == Method::GET;
    let upgradable = method == Method::GET || method == Method::POST;
    match segs.as_slice() {
        ["containerLogs", ns, pod, c] if readable => container_logs(state, ns, pod, c, &query),
        ["exec", ns, pod, c] | ["exec", ns, pod, _, c] if upgradable => {
            exec_or_attach(state, req, ns, pod, c, &query, false)
        }
        ["attach", ns, pod, c] | ["attach", ns, pod, _, c] if upgradable => {
            exec_or_attach(state, req, ns, pod, c, &query, true)
        }
        ["portForward", ns, pod] | ["portForward", ns, pod, _] if upgradable => {
            port_forward(state, req, ns, pod, &query)
        }
        ["stats", "summary"] if readable || method == Method::POST => {
            resource_stats(state, true).await
        }
        ["metrics", "resource"] if readable => resource_stats(state, false).await,
        ["containerLogs" | "exec" | "attach" | "portForward", ..] => {
            text(StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed")
        }
        _ => text(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

/// `/stats/summary` (JSON) or `/metrics/resource` (Prometheus text).
async fn resource_stats(state: &Arc<State>, summary: bool) -> Response<Body> {
    let (stats, pods) = (state.stats.clone(), state.pods.clone());
    let body = tokio::task::spawn_blocking(move || {
        let snap = stats.collect(&pods.stats_pods());
        if summary {
            serde_json::to_vec(&stats::summary_json(&snap, &pods.node_name())).unwrap_or_default()
        } else {
            stats::resource_metrics_text(&snap).into_bytes()
        }
    })
    .await;
    match body {
        Ok(b) => Response::builder()
            .status(StatusCode::OK)
            .header(
                header::CONTENT_TYPE,
                if summary {
                    "application/json"
                } else {
                    "text/plain; version=0.0.4; charset=utf-8"
                },
            )
            .body(full(b))
            .unwrap(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn container_logs(
    state: &Arc<State>,
    ns: &str,
    pod: &str,
    container: &str,
    query: &[(String, String)],
) -> Response<Body> {
    let opts = match logs::LogOptions::from_query(query) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e),
    };
    let cref = match state.pods.container(ns, pod, container) {
        Ok(c) => c,
        Err(e) => return lookup_error(e, false),
    };
    let path = if opts.previous {
        match cref.previous_log_path.clone() {
            Some(p) => p,
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "previous terminated container {container:?} in pod {pod:?} not found"
                    ),
                );
            }
        }
    } else {
        cref.log_path.clone()
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let running = running_check(state, ns, pod, container, &cref);
    tokio::spawn(async move {
        if let Err(e) = logs::stream(path, opts, tx, running).await {
            tracing::debug!("container logs: {e}");
        }
    });
    let body = StreamBody::new(
        tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|b| Ok::<_, std::io::Error>(hyper::body::Frame::data(b))),
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(BodyExt::boxed(body))
        .unwrap()
}

/// Whether this instance of the container still runs (a restart is a new
/// instance: its id differs).
fn running_check(
    state: &Arc<State>,
    ns: &str,
    pod: &str,
    container: &str,
    cref: &ContainerRef,
) -> impl Fn() -> bool + Send + Sync + 'static {
    let pods = state.pods.clone();
    let (ns, pod, container, id) = (
        ns.to_string(),
        pod.to_string(),
        container.to_string(),
        cref.id.clone(),
    );
    move || {
        pods.container(&ns, &pod, &container)
            .map(|c| c.running && c.id == id)
            .unwrap_or(false)
    }
}

/// Answers a WebSocket handshake: the negotiated protocol and the 101, or
/// why not.
fn ws_handshake(
    req: &Request<Incoming>,
    supported: &[&str],
) -> Result<(Option<String>, Response<Body>), String> {
    let offered = channel::offered_protocols(req.headers());
    let proto = channel::negotiate(&offered, supported)?;
    let headers = channel::accept_headers(req.headers(), proto.as_deref())?;
    let mut resp = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (k, v) in headers {
        resp = resp.header(k, v);
    }
    Ok((proto, resp.body(full(Bytes::new())).unwrap()))
}

async fn upgraded_ws(
    on: hyper::upgrade::OnUpgrade,
) -> Option<WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>> {
    match on.await {
        Ok(up) => {
            Some(WebSocketStream::from_raw_socket(TokioIo::new(up), WsRole::Server, None).await)
        }
        Err(e) => {
            tracing::debug!("streaming upgrade: {e}");
            None
        }
    }
}

fn exec_or_attach(
    state: &Arc<State>,
    mut req: Request<Incoming>,
    ns: &str,
    pod: &str,
    container: &str,
    query: &[(String, String)],
    attach: bool,
) -> Response<Body> {
    let opts = match exec::ExecOptions::from_query(query) {
        Ok(o) => o,
        Err(e) => return status(StatusCode::BAD_REQUEST, &e),
    };
    if !attach && opts.command.is_empty() {
        return status(
            StatusCode::BAD_REQUEST,
            "you must specify at least one command for the container",
        );
    }
    let cref = match state.pods.container(ns, pod, container) {
        Ok(c) => c,
        Err(e) => return lookup_error(e, true),
    };
    if !cref.running {
        return status(
            StatusCode::BAD_REQUEST,
            &format!("container {container:?} in pod {pod:?} is not running"),
        );
    }
    let io = state.io.clone();
    let running = running_check(state, ns, pod, container, &cref);
    // The session, once a transport delivered the client.
    let run = move |client: exec::Client, opts: exec::ExecOptions| async move {
        if attach {
            let target = exec::AttachTarget {
                id: cref.id.clone(),
                log_path: cref.log_path.clone(),
                stdin: cref.stdin,
                tty: cref.tty,
            };
            exec::attach(client, opts, io, target, running).await;
        } else {
            exec::exec(client, opts, io, cref.id.clone()).await;
        }
    };
    if channel::is_websocket(req.headers()) {
        let (proto, resp) = match ws_handshake(&req, channel::EXEC_PROTOCOLS) {
            Ok(r) => r,
            Err(e) => return status(StatusCode::BAD_REQUEST, &e),
        };
        let proto = channel::Proto::from_name(proto.as_deref());
        let first = opts.first_channel();
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Some(ws) = upgraded_ws(on).await else {
                return;
            };
            run(exec::ws_client(ws, proto, first).await, opts).await;
        });
        return resp;
    }
    if !upgrade_token(&req).starts_with("spdy/") {
        return status(StatusCode::BAD_REQUEST, "Upgrade request required");
    }
    // kubectl's SPDY fallback: negotiate, upgrade, wait for the streams.
    let (protocol, resp) = match spdy_handshake(&req, exec::SPDY_PROTOCOLS, true) {
        Ok(r) => r,
        Err(refusal) => return *refusal,
    };
    let protocol = protocol.unwrap_or_else(|| channel::V1.to_string());
    let on = hyper::upgrade::on(&mut req);
    let what = if attach { "attach" } else { "exec" };
    let target = format!("{ns}/{pod}/{container}");
    tokio::spawn(async move {
        let up = match on.await {
            Ok(up) => up,
            Err(e) => {
                tracing::debug!("{what} upgrade: {e}");
                return;
            }
        };
        tracing::debug!(%target, %protocol, "{what} over SPDY/3.1");
        let (r, w) = tokio::io::split(TokioIo::new(up));
        let session = spdy::Session::spawn(r, w, spdy::Role::Server);
        match exec::spdy_client(session, &opts, &protocol, exec::STREAM_CREATION_TIMEOUT).await {
            Ok(client) => run(client, opts).await,
            Err(e) => tracing::warn!(%target, "{what} over SPDY: {e}"),
        }
    });
    resp
}

/// Go's `%v` of a string list, as upstream's messages print them.
fn go_list(items: &[impl AsRef<str>]) -> String {
    let items: Vec<&str> = items.iter().map(|s| s.as_ref()).collect();
    format!("[{}]", items.join(" "))
}

/// A plain-text refusal, as Go's `http.Error` writes it.
fn http_error(code: StatusCode, msg: &str) -> Response<Body> {
    let mut r = text(code, &format!("{msg}\n"));
    r.headers_mut().insert(
        "X-Content-Type-Options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// The negotiated protocol and the 101, or the refusal to send back.
type SpdyHandshake = Result<(Option<String>, Response<Body>), Box<Response<Body>>>;

/// The SPDY upgrade handshake (upstream's `httpstream.Handshake` and
/// response upgrader): picks the first `X-Stream-Protocol-Version` the
/// client offers that `supported` has, and answers 101 naming it. With
/// `required`, a client that offers none is refused (exec, attach);
/// otherwise it gets Ok(None) (old port-forward clients).
fn spdy_handshake(req: &Request<Incoming>, supported: &[&str], required: bool) -> SpdyHandshake {
    let offered: Vec<String> = req
        .headers()
        .get_all(STREAM_PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let chosen = if offered.is_empty() {
        if required {
            return Err(Box::new(http_error(
                StatusCode::BAD_REQUEST,
                "unable to upgrade: X-Stream-Protocol-Version is required",
            )));
        }
        None
    } else {
        match offered.iter().find(|p| supported.contains(&p.as_str())) {
            Some(p) => Some(p.clone()),
            None => {
                let mut refusal = http_error(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "unable to upgrade: unable to negotiate protocol: client supports {}, server accepts {}",
                        go_list(&offered),
                        go_list(supported)
                    ),
                );
                for p in supported {
                    refusal.headers_mut().append(
                        "X-Accepted-Stream-Protocol-Versions",
                        HeaderValue::from_str(p).unwrap(),
                    );
                }
                return Err(Box::new(refusal));
            }
        }
    };
    if upgrade_token(req) != "spdy/3.1" {
        return Err(Box::new(http_error(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request",
        )));
    }
    let mut resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1");
    if let Some(p) = &chosen {
        resp = resp.header(STREAM_PROTOCOL_HEADER, p.as_str());
    }
    Ok((chosen, resp.body(full(Bytes::new())).unwrap()))
}

const STREAM_PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";

const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

fn port_forward(
    state: &Arc<State>,
    mut req: Request<Incoming>,
    ns: &str,
    pod: &str,
    query: &[(String, String)],
) -> Response<Body> {
    let netns = match state.pods.netns(ns, pod) {
        Ok(p) => p,
        Err(e) => return lookup_error(e, true),
    };
    let target = Arc::new(portforward::Target {
        netns,
        pod: format!("{ns}/{pod}"),
    });
    if channel::is_websocket(req.headers()) {
        let (proto, resp) = match ws_handshake(&req, channel::PORT_FORWARD_PROTOCOLS) {
            Ok(r) => r,
            Err(e) => return status(StatusCode::BAD_REQUEST, &e),
        };
        let tunnel = proto.as_deref() == Some(channel::SPDY_TUNNEL);
        let ports = if tunnel {
            Vec::new()
        } else {
            match portforward::parse_ports(query) {
                Ok(p) if p.is_empty() => {
                    return status(
                        StatusCode::BAD_REQUEST,
                        "query parameter \"port\" is required",
                    );
                }
                Ok(p) => p,
                Err(e) => return status(StatusCode::BAD_REQUEST, &e),
            }
        };
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Some(ws) = upgraded_ws(on).await else {
                return;
            };
            if tunnel {
                let (r, w) = tokio::io::split(portforward::ws_tunnel(ws));
                portforward::serve_spdy(r, w, target).await;
            } else {
                let proto = channel::Proto::from_name(proto.as_deref());
                portforward::serve_channels(ws, proto, ports, target).await;
            }
        });
        return resp;
    }
    if upgrade_token(&req) != "spdy/3.1" {
        return status(StatusCode::BAD_REQUEST, "Upgrade request required");
    }
    let resp = match spdy_handshake(&req, &[PORT_FORWARD_PROTOCOL], false) {
        Ok((_, resp)) => resp,
        Err(refusal) => return *refusal,
    };
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on.await {
            Ok(up) => {
                let (r, w) = tokio::io::split(TokioIo::new(up));
                portforward::serve_spdy(r, w, target).await;
            }
            Err(e) => tracing::debug!("port-forward upgrade: {e}"),
        }
    });
    resp
}

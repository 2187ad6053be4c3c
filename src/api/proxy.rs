//! `pods/{log,exec,attach,portforward}`: the API server finds the pod's node
//! and relays the request to that node's agent (the kubelet port, 10250),
//! over TLS with the API server's kubelet-client certificate. Logs stream
//! through chunk by chunk; upgrades (WebSocket or SPDY) are forwarded as
//! HTTP/1.1 upgrades and then copied byte for byte both ways, so the agent
//! speaks the streaming protocols itself.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{self, HeaderName};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::errors::{ApiError, ApiResult};
use super::http::{Body, full};
use super::{Api, Target};

const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest error body read back from an agent.
const MAX_ERROR_BODY: usize = 64 * 1024;
const DEFAULT_KUBELET_PORT: u16 = 10250;

/// The API server's credentials towards agents.
pub struct KubeletClientConfig {
    tls: Arc<rustls::ClientConfig>,
}

impl KubeletClientConfig {
    pub fn new(cert_pem: String, key_pem: String, ca_pem: Option<String>) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .context("kubelet client certificate")?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("kubelet client key")?;
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match &ca_pem {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                    roots.add(c.context("kubelet CA certificate")?)?;
                }
                builder.with_root_certificates(roots)
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider))),
        };
        let mut tls = builder.with_client_auth_cert(certs, key)?;
        // Upgrades need HTTP/1.1.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(KubeletClientConfig { tls: Arc::new(tls) })
    }

    /// A TLS connection to an agent.
    pub async fn connect(&self, addr: SocketAddr) -> std::io::Result<TlsStream<TcpStream>> {
        let dial = async {
            let tcp = TcpStream::connect(addr).await?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::IpAddress(addr.ip().into());
            tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
        };
        tokio::time::timeout(DIAL_TIMEOUT, dial)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "i/o timeout"))?
    }
}

/// A kubelet-client certificate signed by the cluster CA: CN
/// `kube-apiserver-kubelet-client`, O `system:masters` (the streaming tests' identity;
/// the server presents its admin certificate).
#[cfg(test)]
pub fn kubelet_client_config(ca_pem: &str, ca_key_pem: &str) -> Result<KubeletClientConfig> {
    let key = rcgen::KeyPair::from_pem(ca_key_pem).context("parsing CA key")?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(ca_pem, &key).context("loading CA certificate")?;
    let (cert, key) = crate::pki::client_cert(
        &issuer,
        crate::agent::streaming::KUBELET_CLIENT_CN,
        &["system:masters"],
    )?;
    KubeletClientConfig::new(cert, key, None)
}

/// Accepts any server certificate (signatures in the handshake are still
/// checked, so the peer holds the key of the certificate it shows).
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

// ------------------------------------------------------------------ routing

/// Whether the target is one of the relayed pod subresources.
pub fn handles(t: &Target) -> bool {
    t.info.group.is_empty()
        && t.info.resource == "pods"
        && matches!(
            t.subresource.as_deref(),
            Some("log" | "exec" | "attach" | "portforward")
        )
}

fn query_pairs<B>(req: &Request<B>) -> Vec<(String, String)> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn last<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter()
        .rev()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
}

fn flag(q: &[(String, String)], k: &str) -> ApiResult<bool> {
    match last(q, k) {
        None => Ok(false),
        Some(v) => crate::agent::streaming::logs::parse_bool(v).map_err(ApiError::bad_request),
    }
}

/// Upstream's `validateContainer`: a named container must exist; an
/// unnamed one is the only container.
pub fn validate_container(pod: &Value, name: &str, container: Option<&str>) -> ApiResult<String> {
    let names_of = |k: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{k}"))
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let all: Vec<String> = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| names_of(k))
        .collect();
    match container.filter(|c| !c.is_empty()) {
        Some(c) if all.iter().any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None => {
            let regular = names_of("containers");
            match regular.len() {
                1 => Ok(regular[0].clone()),
                0 => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}"
                ))),
                _ => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    all.join(" ")
                ))),
            }
        }
    }
}

/// The agent's address: InternalIP (then ExternalIP, then Hostname) and
/// the advertised kubelet port.
pub(crate) fn node_address(api: &Api, node: &str) -> ApiResult<SocketAddr> {
    let obj = api
        .cache
        .get(&format!("/registry/core/nodes/{node}"))
        .ok_or_else(|| ApiError::not_found("", "nodes", node))?;
    let obj = obj.value();
    let addrs = obj
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ip = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|kind| {
            addrs.iter().find_map(|a| {
                (a.get("type").and_then(Value::as_str) == Some(kind))
                    .then(|| a.get("address").and_then(Value::as_str))
                    .flatten()
                    .and_then(|s| s.parse::<IpAddr>().ok())
            })
        })
        .ok_or_else(|| {
            ApiError::internal(format!(
                "no preferred addresses found; known addresses: {}",
                Value::Array(addrs.clone())
            ))
        })?;
    let port = obj
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .filter(|p| *p > 0 && *p <= u64::from(u16::MAX))
        .map(|p| p as u16)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Ok(SocketAddr::new(ip, port))
}

/// Serves a relayed subresource (authentication and authorization done).
pub async fn handle<B>(api: &Arc<Api>, req: Request<B>, t: &Target) -> ApiResult<Response<Body>>
where
    B: Send,
{
    let sub = t.subresource.as_deref().unwrap_or("");
    let name = t.name.clone().unwrap_or_default();
    let ns = t.namespace.clone().unwrap_or_default();
    let method = req.method().clone();
    let allowed = match sub {
        "log" => method == Method::GET,
        _ => method == Method::GET || method == Method::POST,
    };
    if !allowed {
        return Err(ApiError::method_not_allowed());
    }
    let q = query_pairs(&req);
    let pod = api
        .cache
        .get(&t.key())
        .ok_or_else(|| ApiError::not_found("", "pods", &name))?;
    let pod = &pod.value();
    let path_and_query = match kubelet_path(pod, &ns, &name, sub, &q)? {
        Some(p) => p,
        // Upstream answers an unscheduled pod's log with nothing.
        None => return Ok(log_response(full(Bytes::new()))),
    };
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let addr = node_address(api, node)?;
    let kubelet = api
        .kubelet_client
        .get()
        .ok_or_else(|| ApiError::internal("no kubelet client credentials configured"))?;
    if sub == "log" {
        get_log(kubelet, addr, &path_and_query, &name).await
    } else {
        relay_upgrade(kubelet, addr, &path_and_query, req).await
    }
}

/// The agent's path and query for a relayed request, after upstream's
/// checks; None for the log of a pod not yet scheduled.
fn kubelet_path(
    pod: &Value,
    ns: &str,
    name: &str,
    sub: &str,
    q: &[(String, String)],
) -> ApiResult<Option<String>> {
    let scheduled = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let mut params = form_urlencoded::Serializer::new(String::new());
    let path = match sub {
        "log" => {
            let container = validate_container(pod, name, last(q, "container"))?;
            crate::agent::streaming::logs::LogOptions::from_query(q)
                .map_err(ApiError::bad_request)?;
            for k in ["follow", "previous", "timestamps"] {
                if flag(q, k)? {
                    params.append_pair(k, "true");
                }
            }
            for k in ["sinceSeconds", "sinceTime", "tailLines", "limitBytes"] {
                if let Some(v) = last(q, k).filter(|v| !v.is_empty()) {
                    params.append_pair(k, v);
                }
            }
            if !scheduled {
                return Ok(None);
            }
            format!("/containerLogs/{ns}/{name}/{container}")
        }
        "exec" | "attach" => {
            let container = validate_container(pod, name, last(q, "container"))?;
            for k in ["stdin", "stdout", "stderr", "tty"] {
                if flag(q, k)? {
                    params.append_pair(k, "1");
                }
            }
            if sub == "exec" {
                for (k, v) in q {
                    if k == "command" {
                        params.append_pair("command", v);
                    }
                }
            }
            format!("/{sub}/{ns}/{name}/{container}")
        }
        _ => {
            for p in crate::agent::streaming::portforward::parse_ports(q)
                .map_err(ApiError::bad_request)?
            {
                params.append_pair("port", &p.to_string());
            }
            format!("/portForward/{ns}/{name}")
        }
    };
    if !scheduled {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let query = params.finish();
    Ok(Some(if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    }))
}

fn log_response(body: Body) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(body)
        .unwrap()
}

async fn read_error_body(resp: Response<hyper::body::Incoming>) -> String {
    let limited = http_body_util::Limited::new(resp.into_body(), MAX_ERROR_BODY);
    match limited.collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(_) => String::new(),
    }
}

/// GET of the agent's log endpoint, its body streamed through.
pub async fn get_log(
    kubelet: &KubeletClientConfig,
    addr: SocketAddr,
    path_and_query: &str,
    pod: &str,
) -> ApiResult<Response<Body>> {
    let url = format!("https://{addr}{path_and_query}");
    let fail = |e: &dyn std::fmt::Display| {
        ApiError::new(500, "InternalError", format!("Get {url:?}: {e}"))
    };
    let tls = kubelet.connect(addr).await.map_err(|e| fail(&e))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| fail(&e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("kubelet log connection: {e}");
        }
    });
    let req = Request::get(path_and_query)
        .header(header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(&e))?;
    let resp = send.send_request(req).await.map_err(|e| fail(&e))?;
    let code = resp.status();
    if !code.is_success() {
        let text = read_error_body(resp).await;
        // Upstream's GenericHttpResponseChecker.
        return Err(match code.as_u16() {
            400 => ApiError::bad_request(text),
            500 => ApiError::internal(text),
            404 => ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
            .with_details(serde_json::json!({
                "name": pod, "kind": "pods/log",
                "causes": [{"reason": "UnexpectedServerResponse", "message": text}],
            })),
            c => ApiError::new(
                c,
                "InternalError",
                format!(
                    "the server responded with the status code {c} but did not return more information"
                ),
            ),
        });
    }
    Ok(log_response(
        resp.into_body().map_err(std::io::Error::other).boxed(),
    ))
}

const UPGRADE_REQUEST_HEADERS: &[HeaderName] = &[
    header::CONNECTION,
    header::UPGRADE,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_PROTOCOL,
];
const UPGRADE_RESPONSE_HEADERS: &[HeaderName] = &[
    header::CONNECTION,
    header::UPGRADE,
    header::SEC_WEBSOCKET_ACCEPT,
    header::SEC_WEBSOCKET_PROTOCOL,
];
const STREAM_PROTOCOL: &str = "x-stream-protocol-version";
const ACCEPTED_STREAM_PROTOCOLS: &str = "x-accepted-stream-protocol-versions";

/// Forwards an HTTP/1.1 upgrade to the agent and, once the agent switched
/// protocols, splices the two connections.
pub async fn relay_upgrade<B>(
    kubelet: &KubeletClientConfig,
    addr: SocketAddr,
    path_and_query: &str,
    mut req: Request<B>,
) -> ApiResult<Response<Body>> {
    let upgrading = req.headers().contains_key(header::UPGRADE)
        && req
            .extensions()
            .get::<hyper::upgrade::OnUpgrade>()
            .is_some();
    if !upgrading {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let fail =
        |e: &dyn std::fmt::Display| ApiError::internal(format!("error dialing backend: {e}"));
    let mut out = Request::builder()
        .method(req.method().clone())
        .uri(path_and_query)
        .header(header::HOST, addr.to_string());
    for name in UPGRADE_REQUEST_HEADERS {
        for v in req.headers().get_all(name) {
            out = out.header(name, v);
        }
    }
    for v in req.headers().get_all(STREAM_PROTOCOL) {
        out = out.header(STREAM_PROTOCOL, v);
    }
    let out = out.body(Empty::<Bytes>::new()).map_err(|e| fail(&e))?;
    let tls = kubelet.connect(addr).await.map_err(|e| fail(&e))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| fail(&e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("kubelet upgrade connection: {e}");
        }
    });
    let mut resp = send.send_request(out).await.map_err(|e| fail(&e))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The agent's refusal goes back as it is (kubectl reads a Status
        // from it, or prints the text).
        let code = resp.status();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(header::HeaderValue::from_static("text/plain"));
        let mut refusal = Response::builder()
            .status(code)
            .header(header::CONTENT_TYPE, ct);
        // A failed SPDY negotiation names what the agent accepts.
        for v in resp.headers().get_all(ACCEPTED_STREAM_PROTOCOLS) {
            refusal = refusal.header(ACCEPTED_STREAM_PROTOCOLS, v);
        }
        let body = read_error_body(resp).await;
        return Ok(refusal.body(full(body)).unwrap());
    }
    let mut answer = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for name in UPGRADE_RESPONSE_HEADERS {
        for v in resp.headers().get_all(name) {
            answer = answer.header(name, v);
        }
    }
    for v in resp.headers().get_all(STREAM_PROTOCOL) {
        answer = answer.header(STREAM_PROTOCOL, v);
    }
    let agent_side = hyper::upgrade::on(&mut resp);
    let client_side = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match tokio::join!(client_side, agent_side) {
            (Ok(c), Ok(a)) => {
                let (mut c, mut a) = (TokioIo::new(c), TokioIo::new(a));
                if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut a).await {
                    tracing::debug!("stream relay: {e}");
                }
            }
            (c, a) => {
                tracing::debug!(client = ?c.err(), agent = ?a.err(), "stream relay: upgrade failed")
            }
        }
    });
    Ok(answer.body(full(Bytes::new())).unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn container_validation_as_upstream() {
        let pod = json!({"spec": {
            "initContainers": [{"name": "init"}],
            "containers": [{"name": "a"}, {"name": "b"}],
        }});
        assert_eq!(
            validate_container(&pod, "web", None).unwrap_err().message,
            "a container name must be specified for pod web, choose one of: [init a b]"
        );
        assert_eq!(validate_container(&pod, "web", Some("b")).unwrap(), "b");
        assert_eq!(
            validate_container(&pod, "web", Some("init")).unwrap(),
            "init"
        );
        assert_eq!(
            validate_container(&pod, "web", Some("c"))
                .unwrap_err()
                .message,
            "container c is not valid for pod web"
        );
        let one = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(validate_container(&one, "p", Some("")).unwrap(), "only");
    }
}

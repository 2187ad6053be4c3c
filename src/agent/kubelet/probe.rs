//! Probes (exec, httpGet, tcpSocket) and lifecycle-hook handlers, with
//! upstream's timing semantics: initialDelaySeconds, periodSeconds,
//! timeoutSeconds, successThreshold, failureThreshold; liveness and
//! readiness wait for the startup probe.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ExecAction, HTTPGetAction, Probe, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::agent::runtime::{ExecSpec, Runtime};

/// What the worker reads of a running instance's probes.
#[derive(Default)]
pub struct ProbeState {
    /// Startup probe passed (or none).
    pub started: AtomicBool,
    pub ready: AtomicBool,
    /// Set when liveness (or startup) failed `failureThreshold` times: the
    /// message for the kill event.
    pub failed: std::sync::Mutex<Option<(String, String)>>,
}

pub enum Outcome {
    Success,
    Failure(String),
}

fn port_number(port: &IntOrString, c: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("invalid port {p}")),
        IntOrString::String(name) => c
            .ports
            .as_ref()
            .and_then(|ps| ps.iter().find(|p| p.name.as_deref() == Some(name.as_str())))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("couldn't find port {name:?} in the container")),
    }
}

pub async fn exec(runtime: &Runtime, id: &str, action: &ExecAction, timeout: Duration) -> Outcome {
    let args = action.command.clone().unwrap_or_default();
    let session = match runtime
        .exec(
            id,
            ExecSpec {
                args,
                tty: false,
                stdin: false,
            },
        )
        .await
    {
        Ok(s) => s,
        Err(e) => return Outcome::Failure(format!("{e:#}")),
    };
    let mut out = Vec::new();
    let collect = async {
        if let Some(mut o) = session.stdout {
            let _ = o.read_to_end(&mut out).await;
        }
        session.exit.await.unwrap_or(-1)
    };
    match tokio::time::timeout(timeout, collect).await {
        Ok(0) => Outcome::Success,
        Ok(code) => Outcome::Failure(format!(
            "command {:?} exited with {code}: {}",
            action.command.clone().unwrap_or_default().join(" "),
            String::from_utf8_lossy(&out).trim()
        )),
        Err(_) => Outcome::Failure(format!("command timed out after {}s", timeout.as_secs())),
    }
}

/// An httpGet probe: success on a 2xx or 3xx answer.
pub async fn http_get(
    h: &HTTPGetAction,
    c: &Container,
    pod_ip: Option<IpAddr>,
    timeout: Duration,
) -> Outcome {
    match http_status(h, c, pod_ip, timeout).await {
        Ok(code) if (200..400).contains(&code) => Outcome::Success,
        Ok(code) => Outcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
        Err(e) => Outcome::Failure(e),
    }
}

/// The status code `h` answers with, or why there was no answer.
pub async fn http_status(
    h: &HTTPGetAction,
    c: &Container,
    pod_ip: Option<IpAddr>,
    timeout: Duration,
) -> Result<u16, String> {
    let port = port_number(&h.port, c)?;
    let host: IpAddr = match h.host.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => s
            .parse()
            .map_err(|_| format!("host {s:?} is not an IP address"))?,
        None => pod_ip.ok_or("pod has no IP")?,
    };
    if h.scheme.as_deref() == Some("HTTPS") {
        return Err("HTTPS probes are not supported on this node".into());
    }
    let path = h
        .path
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".into());
    let url = format!("http://{host}:{port}{path}");
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(SocketAddr::new(host, port)).await?;
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n"
        );
        for hd in h.http_headers.clone().unwrap_or_default() {
            req.push_str(&format!("{}: {}\r\n", hd.name, hd.value));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = vec![0u8; 1024];
        let mut n = 0;
        while n < 12 {
            let m = s.read(&mut buf[n..]).await?;
            if m == 0 {
                break;
            }
            n += m;
        }
        let line = String::from_utf8_lossy(&buf[..n]).to_string();
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok::<u16, std::io::Error>(code)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(code)) => Ok(code),
        Ok(Err(e)) => Err(format!("Get \"{url}\": dial tcp {host}:{port}: {e}")),
        Err(_) => Err(format!(
            "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

pub async fn tcp(
    t: &TCPSocketAction,
    c: &Container,
    pod_ip: Option<IpAddr>,
    timeout: Duration,
) -> Outcome {
    let port = match port_number(&t.port, c) {
        Ok(p) => p,
        Err(e) => return Outcome::Failure(e),
    };
    let host = match t
        .host
        .as_deref()
        .and_then(|h| h.parse::<IpAddr>().ok())
        .or(pod_ip)
    {
        Some(h) => h,
        None => return Outcome::Failure("pod has no IP".into()),
    };
    match tokio::time::timeout(
        timeout,
        tokio::net::TcpStream::connect(SocketAddr::new(host, port)),
    )
    .await
    {
        Ok(Ok(_)) => Outcome::Success,
        Ok(Err(e)) => Outcome::Failure(format!("dial tcp {host}:{port}: connect: {e}")),
        Err(_) => Outcome::Failure(format!("dial tcp {host}:{port}: i/o timeout")),
    }
}

pub async fn run_once(
    runtime: &Runtime,
    id: &str,
    p: &Probe,
    c: &Container,
    pod_ip: Option<IpAddr>,
) -> Outcome {
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(e) = &p.exec {
        exec(runtime, id, e, timeout).await
    } else if let Some(h) = &p.http_get {
        http_get(h, c, pod_ip, timeout).await
    } else if let Some(t) = &p.tcp_socket {
        tcp(t, c, pod_ip, timeout).await
    } else {
        Outcome::Failure("probe has no handler this node supports".into())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// Runs one probe of a container instance until aborted; flips `state`
/// and wakes the worker on every change. `warn` records an Unhealthy
/// Event per failure, as the kubelet does.
#[allow(clippy::too_many_arguments)]
pub async fn run_loop(
    kind: Kind,
    runtime: Runtime,
    id: String,
    probe: Probe,
    container: Container,
    pod_ip: Option<IpAddr>,
    state: Arc<ProbeState>,
    wake: Arc<Notify>,
    warn: impl Fn(String) + Send + Sync + 'static,
) {
    let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
    let success_threshold = probe.success_threshold.unwrap_or(1).max(1);
    let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1);
    tokio::time::sleep(Duration::from_secs(
        probe.initial_delay_seconds.unwrap_or(0).max(0) as u64,
    ))
    .await;
    let (mut successes, mut failures) = (0, 0);
    loop {
        if kind != Kind::Startup && !state.started.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        match run_once(&runtime, &id, &probe, &container, pod_ip).await {
            Outcome::Success => {
                failures = 0;
                successes += 1;
                if successes >= success_threshold {
                    match kind {
                        Kind::Startup => {
                            state.started.store(true, Ordering::SeqCst);
                            wake.notify_one();
                            return;
                        }
                        Kind::Readiness => {
                            if !state.ready.swap(true, Ordering::SeqCst) {
                                wake.notify_one();
                            }
                        }
                        Kind::Liveness => {}
                    }
                }
            }
            Outcome::Failure(msg) => {
                successes = 0;
                failures += 1;
                warn(format!("{} probe failed: {msg}", kind.name()));
                if failures >= failure_threshold {
                    match kind {
                        Kind::Readiness => {
                            if state.ready.swap(false, Ordering::SeqCst) {
                                wake.notify_one();
                            }
                        }
                        Kind::Liveness | Kind::Startup => {
                            *state.failed.lock().unwrap() = Some((
                                kind.name().to_string(),
                                format!(
                                    "Container {} failed {} probe, will be restarted",
                                    container.name,
                                    kind.name().to_lowercase()
                                ),
                            ));
                            wake.notify_one();
                            return;
                        }
                    }
                }
            }
        }
        tokio::time::sleep(period).await;
    }
}

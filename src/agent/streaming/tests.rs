//! End-to-end tests of the streaming endpoint over real TLS: logs, exec and
//! attach with a process-backed stand-in runtime, port-forward into the
//! host's own network namespace, directly and through the API server's
//! relay functions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::spdy::{self, Role, Session};
use super::*;
use crate::api::proxy::{self, KubeletClientConfig};

const T: Duration = Duration::from_secs(10);

struct FakePods {
    containers: Mutex<HashMap<String, ContainerRef>>,
}

impl Pods for FakePods {
    fn container(&self, ns: &str, pod: &str, c: &str) -> Result<ContainerRef, LookupError> {
        self.containers
            .lock()
            .unwrap()
            .get(&format!("{ns}/{pod}/{c}"))
            .cloned()
            .ok_or_else(|| {
                LookupError::NotFound(format!("container {c:?} not found in pod {pod:?}"))
            })
    }
    fn netns(&self, _ns: &str, pod: &str) -> Result<PathBuf, LookupError> {
        if pod == "nopod" {
            return Err(LookupError::NotFound(format!("pod {pod:?} not found")));
        }
        Ok(PathBuf::from("/proc/self/ns/net"))
    }
}

impl FakePods {
    fn set_running(&self, key: &str, running: bool) {
        self.containers
            .lock()
            .unwrap()
            .get_mut(key)
            .unwrap()
            .running = running;
    }
}

/// Exec runs the command on the host; attach's stdin goes to a file.
struct FakeIo {
    stdin_file: PathBuf,
    sizes: Arc<Mutex<Vec<(u16, u16)>>>,
}

impl ContainerIo for FakeIo {
    fn exec<'a>(&'a self, _id: &'a str, spec: ExecSpec) -> BoxFuture<'a, Result<ExecSession>> {
        let sizes = self.sizes.clone();
        Box::pin(async move {
            use std::process::Stdio;
            let mut child = tokio::process::Command::new(&spec.args[0])
                .args(&spec.args[1..])
                .stdin(if spec.stdin {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let stdin = child
                .stdin
                .take()
                .map(|w| Box::new(w) as Box<dyn AsyncWrite + Send + Unpin>);
            let stdout = child
                .stdout
                .take()
                .map(|r| Box::new(r) as Box<dyn tokio::io::AsyncRead + Send + Unpin>);
            let stderr = child
                .stderr
                .take()
                .map(|r| Box::new(r) as Box<dyn tokio::io::AsyncRead + Send + Unpin>);
            let (tx, exit) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let code = child
                    .wait()
                    .await
                    .map(|s| s.code().unwrap_or(137))
                    .unwrap_or(1);
                let _ = tx.send(code);
            });
            Ok(ExecSession {
                stdin,
                stdout,
                stderr,
                resize: Some(Box::new(move |w, h| sizes.lock().unwrap().push((w, h)))),
                exit,
            })
        })
    }
    fn attach_stdin<'a>(
        &'a self,
        _id: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn AsyncWrite + Send + Unpin>>> {
        Box::pin(async move {
            let f = tokio::fs::File::create(&self.stdin_file).await?;
            Ok(Box::new(f) as Box<dyn AsyncWrite + Send + Unpin>)
        })
    }
}

struct Env {
    addr: SocketAddr,
    kubelet: KubeletClientConfig,
    pods: Arc<FakePods>,
    dir: tempfile::TempDir,
    ca_pem: String,
    ca_key_pem: String,
    sizes: Arc<Mutex<Vec<(u16, u16)>>>,
}

fn ca() -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test-ca");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn cref(dir: &Path, name: &str) -> ContainerRef {
    ContainerRef {
        id: format!("id-{name}"),
        log_path: dir.join(format!("{name}.log")),
        previous_log_path: None,
        running: true,
        stdin: true,
        tty: false,
    }
}

async fn start() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, ca_key_pem) = ca();
    let kubelet = proxy::kubelet_client_config(&ca_pem, &ca_key_pem).unwrap();
    let (cert_pem, key_pem) =
        kubelet_serving_cert("node1", &["127.0.0.1".parse().unwrap()]).unwrap();
    let mut containers = HashMap::new();
    for name in ["c", "attach", "follow"] {
        containers.insert(format!("ns/pod/{name}"), cref(dir.path(), name));
    }
    let pods = Arc::new(FakePods {
        containers: Mutex::new(containers),
    });
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let io = Arc::new(FakeIo {
        stdin_file: dir.path().join("stdin"),
        sizes: sizes.clone(),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Config {
        bind: addr,
        client_ca_pem: ca_pem.clone(),
        cert_pem,
        key_pem,
    };
    tokio::spawn(serve_listener(listener, config, pods.clone(), io));
    Env {
        addr,
        kubelet,
        pods,
        dir,
        ca_pem,
        ca_key_pem,
        sizes,
    }
}

fn cri(ts: &str, stream: &str, tag: &str, text: &str) -> String {
    format!("{ts} {stream} {tag} {text}\n")
}

/// GET over TLS; (status, body).
async fn get(env: &Env, path: &str) -> (u16, String) {
    let tls = env.kubelet.connect(env.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(header::HOST, "node1")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (code, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn logs_history_options_and_errors() {
    let env = start().await;
    let d = env.dir.path();
    std::fs::write(
        d.join("c.log.2"),
        cri("2024-01-01T00:00:01.100000000Z", "stdout", "F", "one"),
    )
    .unwrap();
    std::fs::write(
        d.join("c.log.1"),
        cri("2024-01-01T00:00:02Z", "stderr", "F", "two"),
    )
    .unwrap();
    std::fs::write(
        d.join("c.log"),
        [
            cri("2024-01-01T00:00:03.5Z", "stdout", "P", "thr"),
            cri("2024-01-01T00:00:03.6Z", "stdout", "F", "ee"),
            "not a cri line\n".into(),
            cri("2024-01-01T00:00:04Z", "stdout", "F", "four"),
            "2024-01-01T00:00:05Z stdout F unfinished".into(),
        ]
        .concat(),
    )
    .unwrap();
    let base = "/containerLogs/ns/pod/c";
    assert_eq!(
        get(&env, base).await,
        (200, "one\ntwo\nthree\nfour\n".into())
    );
    assert_eq!(
        get(&env, &format!("{base}?tailLines=2")).await.1,
        "three\nfour\n"
    );
    assert_eq!(get(&env, &format!("{base}?tailLines=0")).await.1, "");
    assert_eq!(
        get(&env, &format!("{base}?tailLines=2&timestamps=true"))
            .await
            .1,
        "2024-01-01T00:00:03.5Z three\n2024-01-01T00:00:04Z four\n"
    );
    assert_eq!(
        get(&env, &format!("{base}?timestamps=true&limitBytes=30"))
            .await
            .1,
        "2024-01-01T00:00:01.1Z one\n202"
    );
    assert_eq!(
        get(&env, &format!("{base}?sinceTime=2024-01-01T00:00:02Z"))
            .await
            .1,
        "two\nthree\nfour\n"
    );
    // previous: none yet, then a file.
    let (code, body) = get(&env, &format!("{base}?previous=true")).await;
    assert_eq!(code, 400);
    assert_eq!(
        body,
        "previous terminated container \"c\" in pod \"pod\" not found"
    );
    std::fs::write(
        d.join("prev.log"),
        cri("2023-12-31T00:00:00Z", "stdout", "F", "old"),
    )
    .unwrap();
    env.pods
        .containers
        .lock()
        .unwrap()
        .get_mut("ns/pod/c")
        .unwrap()
        .previous_log_path = Some(d.join("prev.log"));
    assert_eq!(get(&env, &format!("{base}?previous=true")).await.1, "old\n");
    assert_eq!(
        get(&env, "/containerLogs/ns/pod/nope").await,
        (404, "container \"nope\" not found in pod \"pod\"".into())
    );
    assert_eq!(get(&env, &format!("{base}?tailLines=-3")).await.0, 400);
    assert_eq!(get(&env, "/nothing").await.0, 404);
}

/// Reads the body until `got` ends with `expect`.
async fn want(body: &mut Body, got: &mut String, expect: &str) {
    let fut = async {
        while !got.ends_with(expect) {
            let frame = body.frame().await.expect("stream ended").unwrap();
            if let Ok(d) = frame.into_data() {
                got.push_str(&String::from_utf8_lossy(&d));
            }
        }
    };
    tokio::time::timeout(T, fut).await.expect("timed out");
}

#[tokio::test]
async fn logs_follow_through_the_relay_with_rotation() {
    let env = start().await;
    let path = env.dir.path().join("follow.log");
    std::fs::write(&path, cri("2024-01-01T00:00:01Z", "stdout", "F", "a")).unwrap();
    let resp = proxy::get_log(
        &env.kubelet,
        env.addr,
        "/containerLogs/ns/pod/follow?follow=true&timestamps=true",
        "pod",
    )
    .await
    .unwrap();
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/plain");
    let mut body = resp.into_body();
    let mut got = String::new();
    want(&mut body, &mut got, "2024-01-01T00:00:01Z a\n").await;
    // Appended, in pieces: a partial record and its continuation.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    use std::io::Write;
    f.write_all(b"2024-01-01T00:00:02Z stdout P b").unwrap();
    f.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    f.write_all(b"1\n2024-01-01T00:00:02.5Z stdout F b2\n")
        .unwrap();
    want(&mut body, &mut got, "2024-01-01T00:00:02Z b1b2\n").await;
    // Rotation: the writer renames and starts a new file.
    f.write_all(cri("2024-01-01T00:00:03Z", "stdout", "F", "c").as_bytes())
        .unwrap();
    drop(f);
    std::fs::rename(&path, env.dir.path().join("follow.log.1")).unwrap();
    std::fs::write(&path, cri("2024-01-01T00:00:04Z", "stderr", "F", "d")).unwrap();
    want(
        &mut body,
        &mut got,
        "2024-01-01T00:00:03Z c\n2024-01-01T00:00:04Z d\n",
    )
    .await;
    // The container stops: the stream ends once the file is drained.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(cri("2024-01-01T00:00:05Z", "stdout", "F", "e").as_bytes())
        .unwrap();
    env.pods.set_running("ns/pod/follow", false);
    let rest = tokio::time::timeout(T, body.collect())
        .await
        .unwrap()
        .unwrap();
    got.push_str(&String::from_utf8_lossy(&rest.to_bytes()));
    assert!(got.ends_with("2024-01-01T00:00:05Z e\n"), "{got}");
}

/// A plain-HTTP stand-in for the API server: relays every request to the
/// agent path it names, the way `pods/exec` etc. are relayed.
async fn start_relay(env: &Env) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let kubelet = Arc::new(proxy::kubelet_client_config(&env.ca_pem, &env.ca_key_pem).unwrap());
    let agent = env.addr;
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let kubelet = kubelet.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let kubelet = kubelet.clone();
                    async move {
                        let pq = req.uri().path_and_query().unwrap().to_string();
                        let r = proxy::relay_upgrade(&kubelet, agent, &pq, req).await;
                        Ok::<_, Infallible>(r.unwrap_or_else(|e| {
                            Response::builder()
                                .status(e.code)
                                .body(full(e.message))
                                .unwrap()
                        }))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

type ClientWs<S> = tokio_tungstenite::WebSocketStream<S>;

async fn ws_connect<S>(io: S, path: &str, protocols: &str) -> ClientWs<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut req = format!("ws://node1{path}").into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::client_async(req, io).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws
}

async fn next_msg<S>(ws: &mut ClientWs<S>) -> Message
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::time::timeout(T, ws.next())
        .await
        .expect("timed out")
        .expect("stream ended")
        .unwrap()
}

/// Collects channel data until the server closes: (per-channel bytes, close code).
async fn drain<S>(ws: &mut ClientWs<S>) -> (HashMap<u8, Vec<u8>>, Option<u16>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut out: HashMap<u8, Vec<u8>> = HashMap::new();
    loop {
        match next_msg(ws).await {
            Message::Binary(b) => out.entry(b[0]).or_default().extend_from_slice(&b[1..]),
            Message::Close(c) => return (out, c.map(|c| u16::from(c.code))),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn exec_v5_stdin_close_and_exit_code_through_the_relay() {
    let env = start().await;
    let relay = start_relay(&env).await;
    let tcp = TcpStream::connect(relay).await.unwrap();
    let path = "/exec/ns/pod/c?command=sh&command=-c&command=cat%3B+echo+err+%3E%262%3B+exit+3&stdin=1&stdout=1&stderr=1";
    let mut ws = ws_connect(tcp, path, "v5.channel.k8s.io, v4.channel.k8s.io").await;
    // First frame: the empty "ready" frame on stdout.
    assert_eq!(next_msg(&mut ws).await, Message::binary(vec![1]));
    ws.send(Message::binary(b"\x00hello\n".to_vec()))
        .await
        .unwrap();
    ws.send(Message::binary(
        b"\x04{\"Width\":100,\"Height\":30}".to_vec(),
    ))
    .await
    .unwrap();
    ws.send(Message::binary(vec![255, 0])).await.unwrap();
    let (chans, close) = drain(&mut ws).await;
    assert_eq!(close, Some(1000));
    assert_eq!(chans[&1], b"hello\n");
    assert_eq!(chans[&2], b"err\n");
    let status: serde_json::Value = serde_json::from_slice(&chans[&3]).unwrap();
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
    assert_eq!(
        status["message"],
        "command terminated with non-zero exit code: error executing command [sh -c cat; echo err >&2; exit 3], exit code 3"
    );
    assert_eq!(*env.sizes.lock().unwrap(), vec![(100, 30)]);
}

#[tokio::test]
async fn exec_v4_and_base64_success() {
    let env = start().await;
    let tls = env.kubelet.connect(env.addr).await.unwrap();
    let mut ws = ws_connect(
        tls,
        "/exec/ns/pod/c?command=echo&command=hi&output=1",
        "v4.channel.k8s.io",
    )
    .await;
    let (chans, close) = drain(&mut ws).await;
    assert_eq!(close, Some(1000));
    assert_eq!(chans[&1], b"hi\n");
    assert_eq!(chans[&3], br#"{"metadata":{},"status":"Success"}"#);

    let tls = env.kubelet.connect(env.addr).await.unwrap();
    let mut ws = ws_connect(
        tls,
        "/exec/ns/pod/c?command=echo&command=hi&stdout=true",
        "v4.base64.channel.k8s.io",
    )
    .await;
    assert_eq!(next_msg(&mut ws).await, Message::text("1"));
    assert_eq!(next_msg(&mut ws).await, Message::text("1aGkK"));
    match next_msg(&mut ws).await {
        Message::Text(t) => assert!(t.as_str().starts_with('3')),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn exec_refusals_are_statuses() {
    let env = start().await;
    let (code, body) = get(&env, "/exec/ns/pod/nope?command=ls&stdout=1").await;
    assert_eq!(code, 404);
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["kind"], "Status");
    assert_eq!(s["message"], "container \"nope\" not found in pod \"pod\"");
    let (code, body) = get(&env, "/exec/ns/pod/c?command=ls").await;
    assert_eq!(code, 400);
    assert!(body.contains("you must specify at least 1 of stdin, stdout, stderr"));
    let (code, body) = get(&env, "/exec/ns/pod/c?command=ls&stdout=1").await;
    assert_eq!(code, 400);
    assert!(body.contains("Upgrade request required"));
}

#[tokio::test]
async fn attach_follows_output_and_feeds_stdin() {
    let env = start().await;
    let log = env.dir.path().join("attach.log");
    std::fs::write(&log, cri("2024-01-01T00:00:01Z", "stdout", "F", "before")).unwrap();
    let tls = env.kubelet.connect(env.addr).await.unwrap();
    let mut ws = ws_connect(
        tls,
        "/attach/ns/pod/attach?stdin=1&stdout=1&stderr=1",
        "v5.channel.k8s.io",
    )
    .await;
    assert_eq!(next_msg(&mut ws).await, Message::binary(vec![1]));
    ws.send(Message::binary(b"\x00typed".to_vec()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(cri("2024-01-01T00:00:02Z", "stdout", "P", "prompt$ ").as_bytes())
            .unwrap();
        f.write_all(cri("2024-01-01T00:00:03Z", "stderr", "F", "oops").as_bytes())
            .unwrap();
    }
    assert_eq!(
        next_msg(&mut ws).await,
        Message::binary(b"\x01prompt$ ".to_vec())
    );
    assert_eq!(
        next_msg(&mut ws).await,
        Message::binary(b"\x02oops\n".to_vec())
    );
    env.pods.set_running("ns/pod/attach", false);
    let (chans, close) = drain(&mut ws).await;
    assert_eq!(close, Some(1000));
    assert_eq!(chans[&3], br#"{"metadata":{},"status":"Success"}"#);
    assert_eq!(
        std::fs::read(env.dir.path().join("stdin")).unwrap(),
        b"typed"
    );
}

/// An echo server on 127.0.0.1 (in the host's namespace, which the fake
/// pod uses); it echoes until EOF, then closes.
async fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn port_forward_websocket_channels() {
    let env = start().await;
    let port = echo_server().await;
    let dead = closed_port();
    let tls = env.kubelet.connect(env.addr).await.unwrap();
    let mut ws = ws_connect(
        tls,
        &format!("/portForward/ns/pod?ports={port},{dead}"),
        "v5.channel.k8s.io,v4.channel.k8s.io",
    )
    .await;
    let mut first = Vec::new();
    for _ in 0..4 {
        first.push(next_msg(&mut ws).await);
    }
    let p = port.to_le_bytes();
    let d = dead.to_le_bytes();
    for want in [
        vec![0, p[0], p[1]],
        vec![1, p[0], p[1]],
        vec![2, d[0], d[1]],
        vec![3, d[0], d[1]],
    ] {
        assert!(
            first.contains(&Message::binary(want.clone())),
            "{want:?} in {first:?}"
        );
    }
    ws.send(Message::binary(b"\x00ping".to_vec()))
        .await
        .unwrap();
    let mut echoed = Vec::new();
    let mut errors = String::new();
    while echoed.len() < 4 {
        match next_msg(&mut ws).await {
            Message::Binary(b) if b[0] == 0 => echoed.extend_from_slice(&b[1..]),
            Message::Binary(b) if b[0] == 3 => errors.push_str(&String::from_utf8_lossy(&b[1..])),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(echoed, b"ping");
    while errors.is_empty() {
        match next_msg(&mut ws).await {
            Message::Binary(b) if b[0] == 3 => errors.push_str(&String::from_utf8_lossy(&b[1..])),
            other => panic!("{other:?}"),
        }
    }
    assert!(
        errors.starts_with(&format!("error forwarding port {dead} to pod ns/pod")),
        "{errors}"
    );
}

async fn spdy_forward_roundtrip(session: &Session, port: u16, request: &str) {
    let h = |t: &str| -> spdy::Headers {
        vec![
            ("streamtype".into(), t.into()),
            ("port".into(), port.to_string()),
            ("requestid".into(), request.into()),
        ]
    };
    let mut err = session.handle.open(h("error")).await.unwrap();
    err.writer.finish().await.unwrap();
    let mut data = session.handle.open(h("data")).await.unwrap();
    data.writer
        .write(Bytes::from_static(b"over spdy"))
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 9 {
        let chunk = tokio::time::timeout(T, data.reader.read())
            .await
            .unwrap()
            .unwrap();
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, b"over spdy");
    // Half-close: the pod side sees EOF, closes, and both streams finish.
    data.writer.finish().await.unwrap();
    assert!(
        tokio::time::timeout(T, data.reader.read())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        tokio::time::timeout(T, err.reader.read())
            .await
            .unwrap()
            .is_none()
    );
}

async fn spdy_forward_error(session: &Session, port: u16) {
    let h = |t: &str| -> spdy::Headers {
        vec![
            ("streamtype".into(), t.into()),
            ("port".into(), port.to_string()),
            ("requestid".into(), "9".into()),
        ]
    };
    let mut err = session.handle.open(h("error")).await.unwrap();
    let mut data = session.handle.open(h("data")).await.unwrap();
    let mut msg = Vec::new();
    while let Some(c) = tokio::time::timeout(T, err.reader.read()).await.unwrap() {
        msg.extend_from_slice(&c);
    }
    let msg = String::from_utf8(msg).unwrap();
    assert!(
        msg.starts_with(&format!("error forwarding port {port} to pod ns/pod")),
        "{msg}"
    );
    assert!(
        tokio::time::timeout(T, data.reader.read())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn port_forward_plain_spdy_through_the_relay() {
    let env = start().await;
    let port = echo_server().await;
    let relay = start_relay(&env).await;
    let tcp = TcpStream::connect(relay).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let req = Request::post("/portForward/ns/pod")
        .header(header::HOST, "node1")
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", "portforward.k8s.io")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(
        resp.headers()["x-stream-protocol-version"],
        "portforward.k8s.io"
    );
    assert_eq!(resp.headers()[header::UPGRADE], "SPDY/3.1");
    let up = hyper::upgrade::on(resp).await.unwrap();
    let (r, w) = tokio::io::split(TokioIo::new(up));
    let session = Session::spawn(r, w, Role::Client);
    session.handle.ping().await.unwrap();
    spdy_forward_roundtrip(&session, port, "0").await;
    spdy_forward_roundtrip(&session, port, "1").await;
    spdy_forward_error(&session, closed_port()).await;
    // A stream without the required headers is reset.
    let mut bad = session.handle.open(Vec::new()).await.unwrap();
    assert!(
        tokio::time::timeout(T, bad.reader.read())
            .await
            .unwrap()
            .is_none()
    );
    session.handle.close().await;
}

#[tokio::test]
async fn port_forward_spdy_tunnelled_in_websocket() {
    let env = start().await;
    let port = echo_server().await;
    let tls = env.kubelet.connect(env.addr).await.unwrap();
    let ws = ws_connect(tls, "/portForward/ns/pod", "SPDY/3.1+portforward.k8s.io").await;
    let (r, w) = tokio::io::split(portforward::ws_tunnel(ws));
    let session = Session::spawn(r, w, Role::Client);
    spdy_forward_roundtrip(&session, port, "0").await;
    spdy_forward_error(&session, closed_port()).await;
    session.handle.close().await;
}

/// A SPDY upgrade of `path` through the API server's relay: the 101 (or
/// the refusal) and, when it switched, a client session.
async fn spdy_upgrade(
    relay: SocketAddr,
    path: &str,
    protocols: Option<&str>,
) -> (Response<Incoming>, Option<Session>) {
    let tcp = TcpStream::connect(relay).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let mut req = Request::post(path)
        .header(header::HOST, "node1")
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1");
    // As Go's client sends them: one header line per protocol.
    for p in protocols.unwrap_or("").split(',').filter(|p| !p.is_empty()) {
        req = req.header("X-Stream-Protocol-Version", p.trim());
    }
    let mut resp = send
        .send_request(req.body(http_body_util::Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    if resp.status() != 101 {
        return (resp, None);
    }
    let up = hyper::upgrade::on(&mut resp).await.unwrap();
    let (r, w) = tokio::io::split(TokioIo::new(up));
    (resp, Some(Session::spawn(r, w, Role::Client)))
}

/// A SPDY session for `path` after an upgrade that chose `want` among the
/// `offer`ed protocols.
async fn spdy_session(relay: SocketAddr, path: &str, offer: &str, want: &str) -> Session {
    let (resp, session) = spdy_upgrade(relay, path, Some(offer)).await;
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()[header::UPGRADE], "SPDY/3.1");
    assert_eq!(resp.headers()["x-stream-protocol-version"], want);
    session.unwrap()
}

fn stream_type(t: &str) -> spdy::Headers {
    vec![("streamtype".into(), t.into())]
}

/// Everything a stream carries until the server's FIN.
async fn read_to_end(r: &mut spdy::StreamReader) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(c) = tokio::time::timeout(T, r.read())
        .await
        .expect("stream not finished")
    {
        out.extend_from_slice(&c);
    }
    out
}

#[tokio::test]
async fn exec_over_spdy_stdin_fin_and_exit_code_through_the_relay() {
    let env = start().await;
    let relay = start_relay(&env).await;
    let path = "/exec/ns/pod/c?command=sh&command=-c&command=cat%3B+echo+err+%3E%262%3B+exit+3&stdin=1&stdout=1&stderr=1";
    // kubectl's offer, in its order.
    let session = spdy_session(
        relay,
        path,
        "v5.channel.k8s.io,v4.channel.k8s.io,v3.channel.k8s.io,v2.channel.k8s.io,channel.k8s.io",
        "v5.channel.k8s.io",
    )
    .await;
    let mut error = session.handle.open(stream_type("error")).await.unwrap();
    let stdin = session.handle.open(stream_type("stdin")).await.unwrap();
    let mut stdout = session.handle.open(stream_type("stdout")).await.unwrap();
    let mut stderr = session.handle.open(stream_type("stderr")).await.unwrap();
    stdin
        .writer
        .write(Bytes::from_static(b"hello\n"))
        .await
        .unwrap();
    // FIN on stdin: the process sees EOF and `cat` ends.
    stdin.writer.finish().await.unwrap();
    assert_eq!(read_to_end(&mut stdout.reader).await, b"hello\n");
    assert_eq!(read_to_end(&mut stderr.reader).await, b"err\n");
    let status: serde_json::Value =
        serde_json::from_slice(&read_to_end(&mut error.reader).await).unwrap();
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
    assert_eq!(
        status["message"],
        "command terminated with non-zero exit code: error executing command [sh -c cat; echo err >&2; exit 3], exit code 3"
    );
    // Then GOAWAY and the server's end of the connection.
    tokio::time::timeout(T, session.handle.closed())
        .await
        .expect("connection still open");
}

#[tokio::test]
async fn exec_over_spdy_older_protocols_and_resize() {
    let env = start().await;
    let relay = start_relay(&env).await;
    // v4: success is a JSON Status.
    let session = spdy_session(
        relay,
        "/exec/ns/pod/c?command=echo&command=hi&stdout=1",
        "v4.channel.k8s.io",
        "v4.channel.k8s.io",
    )
    .await;
    let mut error = session.handle.open(stream_type("error")).await.unwrap();
    let mut stdout = session.handle.open(stream_type("stdout")).await.unwrap();
    assert_eq!(read_to_end(&mut stdout.reader).await, b"hi\n");
    assert_eq!(
        read_to_end(&mut error.reader).await,
        br#"{"metadata":{},"status":"Success"}"#
    );

    // v2: a failure is its message as text, success is nothing.
    let session = spdy_session(
        relay,
        "/exec/ns/pod/c?command=sh&command=-c&command=exit+4&stdout=1",
        "v2.channel.k8s.io, channel.k8s.io",
        "v2.channel.k8s.io",
    )
    .await;
    let mut error = session.handle.open(stream_type("error")).await.unwrap();
    let mut stdout = session.handle.open(stream_type("stdout")).await.unwrap();
    assert_eq!(read_to_end(&mut stdout.reader).await, b"");
    assert_eq!(
        String::from_utf8(read_to_end(&mut error.reader).await).unwrap(),
        "command terminated with non-zero exit code: error executing command [sh -c exit 4], exit code 4"
    );
    let session = spdy_session(
        relay,
        "/exec/ns/pod/c?command=true&stdout=1",
        "v2.channel.k8s.io",
        "v2.channel.k8s.io",
    )
    .await;
    let mut error = session.handle.open(stream_type("error")).await.unwrap();
    let _stdout = session.handle.open(stream_type("stdout")).await.unwrap();
    assert_eq!(read_to_end(&mut error.reader).await, b"");

    // v3 with a terminal: the session waits for the resize stream too,
    // whose JSON objects resize the terminal.
    let session = spdy_session(
        relay,
        "/exec/ns/pod/c?command=cat&stdin=1&stdout=1&tty=1",
        "v3.channel.k8s.io",
        "v3.channel.k8s.io",
    )
    .await;
    let mut error = session.handle.open(stream_type("error")).await.unwrap();
    let stdin = session.handle.open(stream_type("stdin")).await.unwrap();
    let mut stdout = session.handle.open(stream_type("stdout")).await.unwrap();
    let resize = session.handle.open(stream_type("resize")).await.unwrap();
    resize
        .writer
        .write(Bytes::from_static(
            b"{\"Width\":100,\"Height\":30}\n{\"Width\":",
        ))
        .await
        .unwrap();
    resize
        .writer
        .write(Bytes::from_static(b"81,\"Height\":25}\n"))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + T;
    while env.sizes.lock().unwrap().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no resize");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*env.sizes.lock().unwrap(), vec![(100, 30), (81, 25)]);
    stdin
        .writer
        .write(Bytes::from_static(b"typed"))
        .await
        .unwrap();
    stdin.writer.finish().await.unwrap();
    assert_eq!(read_to_end(&mut stdout.reader).await, b"typed");
    assert_eq!(read_to_end(&mut error.reader).await, b"");
}

#[tokio::test]
async fn exec_over_spdy_refusals_as_upstream() {
    let env = start().await;
    let relay = start_relay(&env).await;
    let path = "/exec/ns/pod/c?command=ls&stdout=1";
    let (resp, _) = spdy_upgrade(relay, path, Some("v9.channel.k8s.io,v8.channel.k8s.io")).await;
    assert_eq!(resp.status(), 403);
    let accepted: Vec<_> = resp
        .headers()
        .get_all("x-accepted-stream-protocol-versions")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(accepted[1], "v4.channel.k8s.io");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&body),
        "unable to upgrade: unable to negotiate protocol: client supports [v9.channel.k8s.io v8.channel.k8s.io], server accepts [v5.channel.k8s.io v4.channel.k8s.io v3.channel.k8s.io v2.channel.k8s.io channel.k8s.io]\n"
    );
    let (resp, _) = spdy_upgrade(relay, path, None).await;
    assert_eq!(resp.status(), 400);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&body),
        "unable to upgrade: X-Stream-Protocol-Version is required\n"
    );
    // Lookups come first, as for WebSockets: a Status.
    let (resp, _) = spdy_upgrade(
        relay,
        "/exec/ns/pod/nope?command=ls&stdout=1",
        Some("v4.channel.k8s.io"),
    )
    .await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn attach_over_spdy_follows_output_and_feeds_stdin() {
    let env = start().await;
    let relay = start_relay(&env).await;
    let log = env.dir.path().join("attach.log");
    std::fs::write(&log, cri("2024-01-01T00:00:01Z", "stdout", "F", "before")).unwrap();
    let session = spdy_session(
        relay,
        "/attach/ns/pod/attach?stdin=1&stdout=1&stderr=1",
        "v4.channel.k8s.io",
        "v4.channel.k8s.io",
    )
    .await;
    let mut error = session.handle.open(stream_type("error")).await.unwrap();
    let stdin = session.handle.open(stream_type("stdin")).await.unwrap();
    let mut stdout = session.handle.open(stream_type("stdout")).await.unwrap();
    let mut stderr = session.handle.open(stream_type("stderr")).await.unwrap();
    stdin
        .writer
        .write(Bytes::from_static(b"typed"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(cri("2024-01-01T00:00:02Z", "stdout", "P", "prompt$ ").as_bytes())
            .unwrap();
        f.write_all(cri("2024-01-01T00:00:03Z", "stderr", "F", "oops").as_bytes())
            .unwrap();
    }
    let chunk = tokio::time::timeout(T, stdout.reader.read())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(chunk, Bytes::from_static(b"prompt$ "));
    let chunk = tokio::time::timeout(T, stderr.reader.read())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(chunk, Bytes::from_static(b"oops\n"));
    env.pods.set_running("ns/pod/attach", false);
    assert_eq!(read_to_end(&mut stdout.reader).await, b"");
    assert_eq!(
        read_to_end(&mut error.reader).await,
        br#"{"metadata":{},"status":"Success"}"#
    );
    assert_eq!(
        std::fs::read(env.dir.path().join("stdin")).unwrap(),
        b"typed"
    );
}

#[tokio::test]
async fn client_certificates_are_required_and_checked() {
    let env = start().await;
    // No client certificate: the handshake fails.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let (srv_cert, _) = kubelet_serving_cert("x", &[]).unwrap();
    roots
        .add(CertificateDer::from_pem_slice(srv_cert.as_bytes()).unwrap())
        .unwrap();
    let anon = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(env.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(anon))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await;
    // The server's certificate does not verify here either way; what
    // matters is that no HTTP exchange succeeds.
    if let Ok(mut s) = tls {
        let _ = s
            .write_all(b"GET /containerLogs/ns/pod/c HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(T, s.read_to_end(&mut buf)).await;
        assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    }
    // A CA-signed certificate without the right identity: 403.
    let key = rcgen::KeyPair::from_pem(&env.ca_key_pem).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&env.ca_pem, &key).unwrap();
    let (cert, key) =
        crate::pki::client_cert(&issuer, "system:node:n2", &["system:nodes"]).unwrap();
    let other = KubeletClientConfig::new(cert, key, None).unwrap();
    let tls = other.connect(env.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = send
        .send_request(
            Request::get("/containerLogs/ns/pod/c")
                .header(header::HOST, "x")
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

/// Interop with the SPDY implementation kubectl uses: a port-forward client
/// built on Go's moby/spdystream (`testdata/pfclient`, build per its go.mod). Run with
/// `SKIFF_GO_SPDY_CLIENT=/path/to/pfclient cargo test --bin skiff go_spdystream -- --ignored`.
#[tokio::test]
#[ignore = "needs the Go spdystream client in SKIFF_GO_SPDY_CLIENT"]
async fn port_forward_with_go_spdystream() {
    let bin = std::env::var("SKIFF_GO_SPDY_CLIENT").expect("SKIFF_GO_SPDY_CLIENT");
    let env = start().await;
    let port = echo_server().await;
    let cert = env.dir.path().join("client.crt");
    let key = env.dir.path().join("client.key");
    let ca_key = rcgen::KeyPair::from_pem(&env.ca_key_pem).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&env.ca_pem, &ca_key).unwrap();
    let (cert_pem, key_pem) =
        crate::pki::client_cert(&issuer, super::KUBELET_CLIENT_CN, &["system:masters"]).unwrap();
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    let out = tokio::process::Command::new(bin)
        .arg(env.addr.to_string())
        .arg(&cert)
        .arg(&key)
        .arg(port.to_string())
        .arg(closed_port().to_string())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        stdout.contains("error stream: error forwarding port"),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("OK"), "{stdout}");
}

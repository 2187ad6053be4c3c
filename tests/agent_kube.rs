//! The node agent driven by the `kube` crate (kube-rs), end to end: the
//! server with its embedded agent, a real pod, and the client's own
//! `Api::<Pod>::portforward` (WebSocket `v4.channel.k8s.io`, relayed by the
//! API server to the agent's streaming port). Same harness and busybox
//! image as agent_e2e.rs; the client uses the admin kubeconfig with full
//! TLS verification.

mod common;

use std::time::Duration;

use common::{Server, pod_ready, wait_pod};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// Long enough for a debug build on a busy machine; a hang fails.
const STEP: Duration = Duration::from_secs(20);

/// Two HTTP servers in one pod: `web` on 8080 (every address) serving a
/// generated file bigger than one WebSocket frame, `other` on the pod's
/// 127.0.0.1:8081 only. Ready once both listen.
const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: pf}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox:test
    command: ["sh", "-c", "seq 1 20000 > /www/seq.txt && exec httpd -f -p 8080 -h /www"]
    readinessProbe:
      httpGet: {path: /seq.txt, port: 8080}
      periodSeconds: 1
  - name: other
    image: busybox:test
    command: ["sh", "-c", "mkdir -p /tmp/b && echo second port > /tmp/b/b.txt && exec httpd -f -p 127.0.0.1:8081 -h /tmp/b"]
    readinessProbe:
      exec: {command: ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8081/b.txt"]}
      periodSeconds: 1
"#;

/// What `seq 1 20000` prints.
fn seq_txt() -> String {
    (1..=20000).map(|i| format!("{i}\n")).collect()
}

/// Sends `GET path HTTP/1.0` down a forwarded stream and reads to the end
/// (httpd closes after one HTTP/1.0 answer; the agent then ends the
/// forward). Returns the status line and the body.
async fn http_get(mut stream: DuplexStream, path: &str) -> (String, Vec<u8>) {
    let req = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    // Our write side stays open: kube-rs ends the whole port's stream when
    // the writer half-closes, before the answer could arrive.
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(STEP, stream.read_to_end(&mut buf))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "GET {path}: no end of the answer after {STEP:?}; got {:?}",
                String::from_utf8_lossy(&buf)
            )
        })
        .expect("reading the forwarded stream");
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "GET {path}: no HTTP answer: {:?}",
                String::from_utf8_lossy(&buf)
            )
        });
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head.lines().next().unwrap_or("").to_string();
    (status, buf[split + 4..].to_vec())
}

/// The error the agent reported on `port`'s error channel, within [`STEP`].
async fn port_error(pf: &mut kube::api::Portforwarder, port: u16) -> Option<String> {
    let err = pf.take_error(port).expect("error future taken once");
    tokio::time::timeout(STEP, err)
        .await
        .unwrap_or_else(|_| panic!("port {port}: neither an error nor an end after {STEP:?}"))
}

/// Waits for the forwarder's task to end once the agent closed the
/// WebSocket. Like the kubelet, the agent closes it (with a close frame)
/// when every forwarded connection has ended: that is how the client learns
/// that a stream ended, the v4 protocol having no per-port close. kube-rs
/// then still sends its own close when the streams are dropped, which
/// tungstenite refuses after the peer's (`SendAfterClosing`); that one
/// error means a clean end, any other fails the test.
async fn finish(pf: kube::api::Portforwarder) {
    let ended = tokio::time::timeout(STEP, pf.join())
        .await
        .expect("port-forward did not end");
    if let Err(e) = ended {
        assert!(
            format!("{e:?}").contains("SendAfterClosing"),
            "port-forward ended with an error: {e:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_portforward_reaches_pod_ports_and_reports_closed_ones() {
    let s = Server::start_agent(&[]);
    s.kubectl_stdin_ok(&["apply", "-f", "-"], POD);
    wait_pod(&s, "pf", 90, "Ready", pod_ready);
    let pods: Api<Pod> = Api::default_namespaced(s.client().await);
    let seq = seq_txt();

    // Two forwards one after the other, each its own WebSocket and its own
    // connection into the pod; the body is several frames long.
    for round in 0..2 {
        let mut pf = pods.portforward("pf", &[8080]).await.expect("portforward");
        let stream = pf.take_stream(8080).expect("stream for 8080");
        let (status, body) = http_get(stream, "/seq.txt").await;
        assert!(status.contains(" 200 "), "round {round}: {status}");
        assert_eq!(
            String::from_utf8_lossy(&body),
            seq,
            "round {round}: body differs"
        );
        // The connection ended cleanly: no error for the port.
        assert_eq!(port_error(&mut pf, 8080).await, None, "round {round}");
        finish(pf).await;
    }

    // Two ports on one WebSocket, used at the same time; 8081 listens on
    // the pod's loopback only.
    let mut pf = pods
        .portforward("pf", &[8080, 8081])
        .await
        .expect("portforward");
    let a = pf.take_stream(8080).expect("stream for 8080");
    let b = pf.take_stream(8081).expect("stream for 8081");
    let ((sa, ba), (sb, bb)) = tokio::join!(http_get(a, "/index.html"), http_get(b, "/b.txt"));
    assert!(sa.contains(" 200 "), "8080: {sa}");
    assert_eq!(String::from_utf8_lossy(&ba), "hello from skiff\n");
    assert!(sb.contains(" 200 "), "8081: {sb}");
    assert_eq!(String::from_utf8_lossy(&bb), "second port\n");
    finish(pf).await;

    // Nothing listens on 9999: the error channel carries the agent's
    // message (as the kubelet's), the data stream ends, nothing hangs.
    let mut pf = pods.portforward("pf", &[9999]).await.expect("portforward");
    let mut stream = pf.take_stream(9999).expect("stream for 9999");
    let msg = port_error(&mut pf, 9999)
        .await
        .expect("an error message for port 9999");
    assert!(
        msg.contains("error forwarding port 9999 to pod"),
        "unexpected message: {msg}"
    );
    assert!(msg.to_lowercase().contains("refused"), "{msg}");
    let mut rest = Vec::new();
    tokio::time::timeout(STEP, stream.read_to_end(&mut rest))
        .await
        .expect("the stream of a failed port did not end")
        .unwrap();
    assert!(rest.is_empty(), "data from a closed port: {rest:?}");
    drop(stream);
    finish(pf).await;

    // A closed port next to an open one: each port fails or works alone.
    let mut pf = pods
        .portforward("pf", &[9999, 8081])
        .await
        .expect("portforward");
    let bad = pf.take_stream(9999).expect("stream for 9999");
    let good = pf.take_stream(8081).expect("stream for 8081");
    let msg = port_error(&mut pf, 9999).await.expect("an error for 9999");
    assert!(msg.contains("9999"), "{msg}");
    let (status, body) = http_get(good, "/b.txt").await;
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(String::from_utf8_lossy(&body), "second port\n");
    // The forwarder ends once every taken stream is dropped.
    drop(bad);
    assert_eq!(port_error(&mut pf, 8081).await, None);
    finish(pf).await;
}

//! The official Python `kubernetes` client's streams against a real node:
//! exec (v4.channel.k8s.io, stdout/stderr and the exit code) and
//! port-forward (v4 WebSocket port-forward) — the protocols it speaks, which
//! differ from kubectl's.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;

#[test]
fn python_client_exec_and_port_forward() {
    let s = Server::start_agent(&[]);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: py}\nspec:\n  containers: [{name: c, image: busybox:test, command: [httpd, -f, -p, '127.0.0.1:8080', -h, /www]}]\n",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while s
        .kubectl_ok(&[
            "get",
            "pod",
            "py",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.running.startedAt}",
        ])
        .is_empty()
    {
        assert!(Instant::now() < deadline, "pod did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/agent_streams.py"
        ))
        .arg(&s.kubeconfig)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .output()
        .expect("python3 with the kubernetes client (pip install kubernetes; .ci/run does)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("EXEC from-exec|to-stderr") || text.contains("EXEC to-stderr|from-exec"),
        "{text}"
    );
    assert!(text.contains("EXITCODE 4"), "{text}");
    assert!(
        text.contains("PORTFORWARD HTTP/1.0 200 OK True")
            || text.contains("PORTFORWARD HTTP/1.1 200 OK True"),
        "{text}"
    );
}

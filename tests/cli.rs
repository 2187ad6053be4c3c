//! The command line: config file, environment and flag precedence.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(path: &std::path::Path) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn server_url(kubeconfig: &std::path::Path) -> String {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .to_string()
}

#[test]
fn version_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("skiff {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn config_file_then_env_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let (p_file, p_env) = (free_port(), free_port());
    let cfg = dir.path().join("config.yaml");
    let kc = dir.path().join("kc.yaml");
    std::fs::write(
        &cfg,
        format!(
            "data-dir: {}\nhttps-listen-port: {p_file}\nbind-address: 127.0.0.1\nwrite-kubeconfig: {}\nwrite-kubeconfig-mode: \"0640\"\ntls-san:\n  - skiff.example.test\ndisable-agent: true\n",
            dir.path().join("data").display(),
            kc.display()
        ),
    )
    .unwrap();
    // The config file alone.
    let mut child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["server", "--config", cfg.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_for(&kc),
        "kubeconfig not written at the configured path"
    );
    assert_eq!(server_url(&kc), format!("https://127.0.0.1:{p_file}"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&kc).unwrap().permissions().mode() & 0o777,
        0o640
    );
    let cert = std::fs::read_to_string(
        dir.path()
            .join("data/server/tls/serving-kube-apiserver.crt"),
    )
    .unwrap();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
    let sans = std::fs::read_to_string(dir.path().join("data/server/tls/serving-sans")).unwrap();
    assert!(sans.contains("skiff.example.test"), "{sans}");
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_file(&kc).unwrap();

    // The environment beats the file; a flag beats both.
    let mut child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args([
            "server",
            "--config",
            cfg.to_str().unwrap(),
            "--write-kubeconfig-mode",
            "0600",
        ])
        .env("SKIFF_HTTPS_LISTEN_PORT", p_env.to_string())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(&kc));
    assert_eq!(server_url(&kc), format!("https://127.0.0.1:{p_env}"));
    assert_eq!(
        std::fs::metadata(&kc).unwrap().permissions().mode() & 0o777,
        0o600
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn bad_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "https-listen-port: [not a port\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args([
            "server",
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            dir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config file"), "{err}");
}

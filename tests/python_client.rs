//! Runs the pytest suite in tests/python, which drives skiff with the official
//! Python `kubernetes` client. The suite starts its own server from
//! `SKIFF_BIN`.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for the whole pytest run.
const TIMEOUT: Duration = Duration::from_secs(600);

fn python3() -> Command {
    let mut cmd = Command::new("python3");
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    for var in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Fails (never skips) when a Python module is missing: CI installs them.
fn require_module(module: &str) {
    let out = python3()
        .args(["-c", &format!("import {module}")])
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3: {e}"));
    assert!(
        out.status.success(),
        "the Python module `{module}` is not importable, but this test needs it \
         (install with `python3 -m pip install kubernetes pytest`; .ci/run does):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn python_kubernetes_client() {
    require_module("kubernetes");
    require_module("pytest");

    let mut child = python3()
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/python",
        ])
        .env("SKIFF_BIN", env!("CARGO_BIN_EXE_skiff"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running python3 -m pytest");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let deadline = Instant::now() + TIMEOUT;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for pytest") {
            break status;
        }
        if Instant::now() >= deadline && !timed_out {
            // SIGINT lets pytest run its fixture teardown (which kills the
            // server); SIGKILL if it does not exit soon after.
            timed_out = true;
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGINT);
            }
            let grace = Instant::now() + Duration::from_secs(15);
            while Instant::now() < grace {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if child.try_wait().ok().flatten().is_none() {
                unsafe {
                    libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
                }
            }
            continue;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    println!("--- pytest stdout ---\n{out}\n--- pytest stderr ---\n{err}");
    assert!(!timed_out, "pytest did not finish within {TIMEOUT:?}");
    assert!(
        status.success(),
        "python3 -m pytest -q tests/python failed ({status}):\n{out}\n{err}"
    );
}

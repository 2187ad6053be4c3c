//! The container runtime: youki's `libcontainer`, driven in a separate,
//! single-threaded helper process (the "runtime keeper"), never from the
//! agent's tokio threads. The keeper is forked at the top of `main` and
//! waits until the agent needs it (`standby`); a process that could not
//! fork it in time (tests, a thread already running) re-executes the
//! binary as `skiff __runtime-keeper` instead.
//!
//! Layout of the state dir (keep it short: unix socket paths ≤ 108 bytes):
//! `keeper.sock` (requests, see `proto`), `console.sock` (pty masters from
//! libcontainer), `keeper.lock` (one keeper per dir), `keeper.pid`,
//! `keeper.log`, `c/<id>/` (libcontainer state), `x/` (exec process specs).
//!
//! With a tty, libcontainer's init opens the pty inside the container
//! (its devpts, controlling terminal set) and sends the master to
//! `console.sock`; the keeper logs it as stdout. Exec processes get the
//! container's `process` (user, env, cwd, caps, rlimits) with new args,
//! and its seccomp filter, which libcontainer's tenant builder drops and
//! the keeper's `ExecSeccomp` executor installs.
//!
//! Environment read by the keeper (inherited from the agent):
//! `SKIFF_CONTAINER_LOG_MAX_SIZE` (bytes, default 10 MiB) and
//! `SKIFF_CONTAINER_LOG_MAX_FILES` (default 5: `log`, `log.1`…`log.4`),
//! `SKIFF_KEEPER_LOG` (tracing filter for `keeper.log`).
//!
//! This module only uses external crates (no `crate::` paths), so that
//! `tests/runtime.rs` can compile it in and drive a keeper run from the
//! real `skiff` binary.

mod client;
mod keeper;
mod logs;
mod proto;
pub mod spec;
mod standby;

#[allow(unused_imports)] // tests/runtime.rs compiles this module without main
pub use standby::fork_standby;

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

pub use client::Runtime;

/// What the keeper needs to run one container. The caller has written
/// `bundle/config.json` (OCI runtime spec, absolute `root.path`, explicit
/// `linux.cgroupsPath`) and mounted the rootfs.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ContainerSpec {
    /// Unique container id (libcontainer id, `[a-z0-9-]`, ≤ 64 chars).
    pub id: String,
    pub bundle: PathBuf,
    /// CRI-format log file the keeper writes stdout/stderr to (rotated by size).
    pub log_path: PathBuf,
    /// Keep a stdin pipe open (`stdin: true` in the Pod spec).
    pub stdin: bool,
    /// Close stdin after the first attach disconnects (pipes only: the
    /// keeper hands its own writer to that attach).
    pub stdin_once: bool,
    /// Informational: `process.terminal` in config.json decides.
    pub tty: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code; 128+N when killed by signal N.
    pub code: i32,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    /// RFC 3339.
    pub finished_at: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ContainerStatus {
    pub id: String,
    /// Init pid (host pid namespace).
    pub pid: i32,
    /// RFC 3339.
    pub started_at: String,
    pub log_path: PathBuf,
    /// None while running.
    pub exit: Option<ExitStatus>,
}

/// A process to run inside a running container (`kubectl exec`).
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct ExecSpec {
    pub args: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
}

/// A running exec. With `tty`, `stdout` carries the terminal's output and
/// `stderr` is None.
pub struct ExecSession {
    pub stdin: Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>>,
    pub stdout: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>,
    pub stderr: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>,
    /// Resizes the terminal (tty only): (width, height).
    pub resize: Option<Box<dyn Fn(u16, u16) + Send + Sync>>,
    /// Resolves to the exit code.
    pub exit: tokio::sync::oneshot::Receiver<i32>,
}

/// Entry point of the keeper process (`skiff __runtime-keeper --state-dir D`):
/// single-threaded, started by `Runtime::connect_or_spawn`.
pub fn keeper_main(state_dir: &Path) -> Result<()> {
    keeper::run(state_dir)
}

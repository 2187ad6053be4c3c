//! The keeper forked at the top of `main`, before any thread exists.
//!
//! libcontainer must run in a single-threaded process. `fork_standby` makes
//! that process while `skiff server`/`skiff agent` is still one thread: a
//! grandchild (in its own session, so it outlives the agent) that blocks on
//! a pipe. When the agent has joined and finds no keeper running, it writes
//! "go" and the grandchild becomes the keeper. If the agent finds a keeper
//! already serving (an agent restart), or exits first (a node the server
//! refused), the pipe closes and the standby exits having touched nothing.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::unistd::{ForkResult, fork, setsid};

struct Standby {
    state_dir: PathBuf,
    go: OwnedFd,
}

static STANDBY: Mutex<Option<Standby>> = Mutex::new(None);

fn single_threaded() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l == "Threads:\t1"))
        .unwrap_or(false)
}

/// Forks the standby keeper for `state_dir`. Must be called before any
/// thread starts; does nothing otherwise (the agent then re-executes this
/// binary as the keeper).
pub fn fork_standby(state_dir: &Path) {
    if !single_threaded() {
        return;
    }
    let Ok((r, w)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else {
        return;
    };
    // SAFETY: the process has one thread (checked above), so the child may
    // run arbitrary code; it leaves only through `_exit`.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(w);
            let _ = setsid();
            // The grandchild is adopted by init once this child exits, so
            // the agent has nothing to reap.
            if let Ok(ForkResult::Child) = unsafe { fork() } {
                let code = standby_main(r, state_dir);
                unsafe { libc::_exit(code) };
            }
            unsafe { libc::_exit(0) };
        }
        Ok(ForkResult::Parent { child }) => {
            drop(r);
            let _ = nix::sys::wait::waitpid(child, None);
            *STANDBY.lock().unwrap_or_else(|e| e.into_inner()) = Some(Standby {
                state_dir: state_dir.to_path_buf(),
                go: w,
            });
        }
        Err(_) => {}
    }
}

/// Runs in the standby: waits for "go", then is the keeper.
fn standby_main(go: OwnedFd, state_dir: &Path) -> i32 {
    // Nothing of the agent's stdio is held: whoever reads the agent's
    // output until EOF must not wait for the keeper.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    let name = c"skiff-keeper";
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    let mut b = [0u8; 1];
    loop {
        let n = unsafe { libc::read(go.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if n != 1 {
            return 0;
        }
        break;
    }
    drop(go);
    match super::keeper::run(state_dir) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("keeper: {e:#}");
            1
        }
    }
}

/// Starts the standby keeper forked for `state_dir` (canonical), if there
/// is one. True when it was told to start.
pub(super) fn start(state_dir: &Path) -> bool {
    let Some(sb) = take(state_dir) else {
        return false;
    };
    let n = unsafe { libc::write(sb.go.as_raw_fd(), b"g".as_ptr().cast(), 1) };
    n == 1
}

/// Lets a standby for `state_dir` go: a keeper already serves it.
pub(super) fn release(state_dir: &Path) {
    drop(take(state_dir));
}

fn take(state_dir: &Path) -> Option<Standby> {
    let mut slot = STANDBY.lock().unwrap_or_else(|e| e.into_inner());
    let same = slot
        .as_ref()
        .is_some_and(|sb| std::fs::canonicalize(&sb.state_dir).is_ok_and(|d| d == state_dir));
    if same { slot.take() } else { None }
}

//! Agent ⇄ keeper protocol: one JSON message per `SOCK_SEQPACKET` record
//! on `<state_dir>/keeper.sock`, file descriptors as `SCM_RIGHTS`.
//! Each request opens its own connection (so concurrent agent calls need
//! no multiplexing); a `Subscribe` connection then receives `Event`s, an
//! `Exec` connection its `ExecExit`.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};

use super::{ContainerSpec, ContainerStatus, ExecSpec};

#[derive(Serialize, Deserialize, Debug)]
pub enum Request {
    Start(ContainerSpec),
    Signal {
        id: String,
        signal: i32,
    },
    Remove {
        id: String,
    },
    List,
    Subscribe,
    /// Reply `Exec` carries fds: tty → [pty master]; else
    /// [stdin writer if `stdin`, stdout reader, stderr reader].
    Exec {
        id: String,
        spec: ExecSpec,
    },
    AttachStdin {
        id: String,
    },
    Shutdown {
        kill: bool,
    },
}

#[derive(Serialize, Deserialize, Debug)]
pub enum Response {
    Ok,
    Err(String),
    Status(ContainerStatus),
    List(Vec<ContainerStatus>),
    Event(ContainerStatus),
    Exec {
        pid: i32,
    },
    ExecExit(i32),
    /// Carries the stdin writer fd.
    Stdin,
}

/// Maximum fds in one message.
const MAX_FDS: usize = 8;

/// Sends one record without blocking (`EAGAIN` when the peer is full).
pub fn send(fd: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let iov = [IoSlice::new(data)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(
        fd,
        &iov,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        None,
    )?;
    Ok(())
}

/// Receives one record without blocking; Ok(None) at end of stream.
pub fn recv(fd: RawFd) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    // Peek with MSG_TRUNC: the real length of the next record.
    let mut one = [0u8; 1];
    let n = unsafe {
        libc::recv(
            fd,
            one.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n == 0 {
        return Ok(None);
    }
    let mut buf = vec![0u8; n as usize];
    let mut cmsg_buf = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut fds = Vec::new();
    let len = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            fd,
            &mut iov,
            Some(&mut cmsg_buf),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(rs) = c {
                fds.extend(rs.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
            }
        }
        msg.bytes
    };
    if len == 0 {
        return Ok(None);
    }
    buf.truncate(len);
    Ok(Some((buf, fds)))
}

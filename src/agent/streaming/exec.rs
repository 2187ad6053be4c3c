//! `exec` and `attach` over the WebSocket channel protocol, as the kubelet's
//! remotecommand server: an empty frame on the first output channel once
//! the streams are up, stdin/resize/CLOSE from the client, and the outcome
//! as a `Status` on the error channel before a normal close.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::SplitStream;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;

use super::ContainerIo;
use super::channel::{self, Proto, WsOut};
use super::logs::{self, LineSink, StreamKind};
use crate::agent::runtime::ExecSpec;

/// How long output may keep flowing after the process exited (children
/// holding the pipes open), before the status is sent regardless.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);
/// How long to wait for the client's close reply.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExecOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl ExecOptions {
    /// Accepts the kubelet's names (`input`, `output`, `error`) and the
    /// API's (`stdin`, `stdout`, `stderr`).
    pub fn from_query(q: &[(String, String)]) -> Result<ExecOptions, String> {
        let flag = |names: &[&str]| -> Result<bool, String> {
            let mut v = false;
            for (k, val) in q {
                if names.contains(&k.as_str()) {
                    v = logs::parse_bool(val)?;
                }
            }
            Ok(v)
        };
        let mut o = ExecOptions {
            command: q
                .iter()
                .filter(|(k, _)| k == "command")
                .map(|(_, v)| v.clone())
                .collect(),
            stdin: flag(&["stdin", "input"])?,
            stdout: flag(&["stdout", "output"])?,
            stderr: flag(&["stderr", "error"])?,
            tty: flag(&["tty"])?,
        };
        if !(o.stdin || o.stdout || o.stderr) {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        // A terminal has one output stream, as upstream.
        if o.tty {
            o.stderr = false;
        }
        Ok(o)
    }

    fn first_channel(&self) -> u8 {
        if self.stdout {
            channel::STDOUT
        } else if self.stderr {
            channel::STDERR
        } else {
            channel::ERROR
        }
    }
}

pub fn status_success() -> Value {
    json!({"metadata": {}, "status": "Success"})
}

/// What the kubelet sends for a non-zero exit; kubectl exits with the
/// `ExitCode` cause's message.
pub fn status_exit_code(command: &[String], code: i32) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            command.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

pub fn status_internal(msg: &str) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: {msg}"),
        "reason": "InternalError",
        "details": {"causes": [{"message": msg}]},
        "code": 500,
    })
}

/// Writes the outcome on the error channel: JSON from v4 on; before that
/// only a failure's message, as plain text.
async fn write_status(out: &WsOut, status: &Value) {
    if out.proto.json_status {
        let body = serde_json::to_vec(status).unwrap_or_default();
        out.send(channel::ERROR, &body).await;
    } else if status["status"] != "Success" {
        let msg = status["message"].as_str().unwrap_or("error");
        out.send(channel::ERROR, msg.as_bytes()).await;
    }
}

/// Parses the resize channel: a stream of `{"Width":w,"Height":h}` objects,
/// possibly split across or packed into messages.
fn take_sizes(buf: &mut Vec<u8>) -> Vec<(u16, u16)> {
    let mut sizes = Vec::new();
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<Value>();
    let consumed = loop {
        match it.next() {
            Some(Ok(v)) => {
                let dim = |k: &str| {
                    v.get(k)
                        .and_then(Value::as_u64)
                        .map(|n| n.min(u16::MAX as u64) as u16)
                };
                if let (Some(w), Some(h)) = (dim("Width"), dim("Height")) {
                    sizes.push((w, h));
                }
            }
            Some(Err(e)) if e.is_eof() => break it.byte_offset(),
            Some(Err(_)) => break buf.len(),
            None => break it.byte_offset(),
        }
    };
    buf.drain(..consumed);
    sizes
}

type Stdin = Box<dyn AsyncWrite + Send + Unpin>;
type Resize = Box<dyn Fn(u16, u16) + Send + Sync>;

/// Reads the client's messages until it closes: stdin, resize, CLOSE.
async fn input_loop<S>(
    mut stream: SplitStream<WebSocketStream<S>>,
    proto: Proto,
    mut stdin: Option<Stdin>,
    resize: Option<Resize>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut sizes = Vec::new();
    while let Some(Ok(msg)) = stream.next().await {
        if msg.is_close() {
            break;
        }
        let Some((ch, data)) = proto.decode(&msg) else {
            continue;
        };
        match ch {
            channel::STDIN => {
                if let Some(w) = stdin.as_mut()
                    && (w.write_all(&data).await.is_err() || w.flush().await.is_err())
                {
                    stdin = None;
                }
            }
            channel::RESIZE => {
                sizes.extend_from_slice(&data);
                for (w, h) in take_sizes(&mut sizes) {
                    if let Some(r) = &resize {
                        r(w, h);
                    }
                }
            }
            channel::CLOSE if proto.close_signal => {
                if data.first() == Some(&channel::STDIN)
                    && let Some(mut w) = stdin.take()
                {
                    let _ = w.shutdown().await;
                }
            }
            _ => {}
        }
    }
    if let Some(mut w) = stdin {
        let _ = w.shutdown().await;
    }
}

/// Copies a process output to a channel (or drains it when not wanted, so
/// the process never blocks on a full pipe).
async fn pump(mut r: Box<dyn AsyncRead + Send + Unpin>, out: WsOut, ch: u8, mut forward: bool) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if forward && !out.send(ch, &buf[..n]).await {
                    forward = false;
                }
            }
        }
    }
}

/// Sends the close and waits (briefly) for the client's reply.
async fn finish(
    out: WsOut,
    writer: tokio::task::JoinHandle<()>,
    input: tokio::task::JoinHandle<()>,
) {
    out.close().await;
    drop(out);
    let _ = tokio::time::timeout(CLOSE_WAIT, writer).await;
    let _ = tokio::time::timeout(CLOSE_WAIT, input).await;
}

pub async fn exec<S>(
    ws: WebSocketStream<S>,
    proto: Proto,
    opts: ExecOptions,
    io: Arc<dyn ContainerIo>,
    id: String,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = ws.split();
    let (out, writer) = WsOut::spawn(sink, proto);
    out.send(opts.first_channel(), b"").await;
    let spec = ExecSpec {
        args: opts.command.clone(),
        tty: opts.tty,
        stdin: opts.stdin,
    };
    let session = match io.exec(&id, spec).await {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("error executing command in container: {e:#}");
            write_status(&out, &status_internal(&msg)).await;
            let input = tokio::spawn(input_loop(stream, proto, None, None));
            finish(out, writer, input).await;
            return;
        }
    };
    let stdin = session.stdin.filter(|_| opts.stdin);
    let mut input = tokio::spawn(input_loop(stream, proto, stdin, session.resize));
    let mut pumps = Vec::new();
    if let Some(r) = session.stdout {
        pumps.push(tokio::spawn(pump(
            r,
            out.clone(),
            channel::STDOUT,
            opts.stdout,
        )));
    }
    if let Some(r) = session.stderr {
        pumps.push(tokio::spawn(pump(
            r,
            out.clone(),
            channel::STDERR,
            opts.stderr,
        )));
    }
    let code = tokio::select! {
        code = session.exit => code,
        _ = &mut input => {
            // The client went away; the streams close with the connection.
            for p in pumps {
                p.abort();
            }
            return;
        }
    };
    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, futures::future::join_all(pumps)).await;
    let status = match code {
        Ok(0) => status_success(),
        Ok(n) => status_exit_code(&opts.command, n),
        Err(_) => status_internal("error executing command in container: exit status lost"),
    };
    write_status(&out, &status).await;
    finish(out, writer, input).await;
}

/// Attach output: the container's log from now on, split back into its
/// streams.
struct AttachSink {
    out: WsOut,
    opts: ExecOptions,
    tty: bool,
}

impl LineSink for AttachSink {
    async fn line(&mut self, raw: &[u8]) -> bool {
        let Some(mut rec) = logs::parse_record(raw) else {
            return true;
        };
        let ch = match rec.stream {
            StreamKind::Stdout if self.opts.stdout => channel::STDOUT,
            StreamKind::Stderr if self.tty && self.opts.stdout => channel::STDOUT,
            StreamKind::Stderr if self.opts.stderr => channel::STDERR,
            _ => return true,
        };
        if !rec.partial {
            rec.content.push(b'\n');
        }
        self.out.send(ch, &rec.content).await
    }
    fn closed(&self) -> bool {
        false
    }
}

pub struct AttachTarget {
    pub id: String,
    pub log_path: std::path::PathBuf,
    /// The container keeps stdin open.
    pub stdin: bool,
    /// The container has a terminal: its output is one stream.
    pub tty: bool,
}

pub async fn attach<S>(
    ws: WebSocketStream<S>,
    proto: Proto,
    opts: ExecOptions,
    io: Arc<dyn ContainerIo>,
    target: AttachTarget,
    running: impl Fn() -> bool + Send + Sync + 'static,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = ws.split();
    let (out, writer) = WsOut::spawn(sink, proto);
    out.send(opts.first_channel(), b"").await;
    let stdin = if opts.stdin && target.stdin {
        match io.attach_stdin(&target.id).await {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::debug!(id = %target.id, "attach stdin: {e:#}");
                None
            }
        }
    } else {
        None
    };
    let mut input = tokio::spawn(input_loop(stream, proto, stdin, None));
    let mut sink = AttachSink {
        out: out.clone(),
        opts,
        tty: target.tty,
    };
    let path: &Path = &target.log_path;
    let result = tokio::select! {
        r = async {
            let tail = logs::Tail::open(path, true).await?;
            logs::follow(path, tail, &mut sink, running).await
        } => r,
        _ = &mut input => return,
    };
    drop(sink);
    let status = match result {
        Ok(()) => status_success(),
        Err(e) => status_internal(&format!("error attaching to container: {e}")),
    };
    write_status(&out, &status).await;
    finish(out, writer, input).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(s.as_bytes()).into_owned().collect()
    }

    #[test]
    fn options_from_either_spelling() {
        let o = ExecOptions::from_query(&q(
            "command=sh&command=-c&command=echo+hi&stdin=true&stdout=1&stderr=True",
        ))
        .unwrap();
        assert_eq!(o.command, ["sh", "-c", "echo hi"]);
        assert!(o.stdin && o.stdout && o.stderr && !o.tty);
        let o = ExecOptions::from_query(&q("command=ls&output=1&error=1&tty=1")).unwrap();
        assert!(
            o.stdout && !o.stderr && o.tty,
            "tty folds stderr into stdout"
        );
        assert!(ExecOptions::from_query(&q("command=ls")).is_err());
    }

    #[test]
    fn status_shapes() {
        assert_eq!(
            serde_json::to_string(&status_success()).unwrap(),
            r#"{"metadata":{},"status":"Success"}"#
        );
        let cmd: Vec<String> = ["sh", "-c", "exit 3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            serde_json::to_string(&status_exit_code(&cmd, 3)).unwrap(),
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
        );
    }

    #[test]
    fn resize_stream() {
        let mut b = br#"{"Width":100,"Height":30}"#.to_vec();
        b.extend_from_slice(b"\n{\"Width\":80,");
        assert_eq!(take_sizes(&mut b), vec![(100, 30)]);
        b.extend_from_slice(b"\"Height\":24}\n");
        assert_eq!(take_sizes(&mut b), vec![(80, 24)]);
        assert!(b.iter().all(u8::is_ascii_whitespace));
    }
}

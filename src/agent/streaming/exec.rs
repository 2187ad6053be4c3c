//! `exec` and `attach` as the kubelet's remotecommand server, over either
//! transport kubectl speaks:
//! - WebSocket channels (`v5/v4.channel.k8s.io`, ...): an empty frame on the
//!   first output channel once the streams are up, stdin/resize/CLOSE from
//!   the client, and the outcome on the error channel before a normal close;
//! - SPDY/3.1 (kubectl's fallback, `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`):
//!   the client opens one stream per `streamType` (error, stdin, stdout,
//!   stderr, resize), stdin ends with its FIN, the outcome goes on the error
//!   stream, then every stream gets FIN and the connection GOAWAY.
//!
//! Both become a [`Client`] (an [`Output`] plus [`Input`] events), and one
//! session logic ([`exec`], [`attach`]) serves it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;

use super::ContainerIo;
use super::channel::{self, Proto, WsOut};
use super::logs::{self, LineSink, StreamKind};
use super::spdy::{self, SessionHandle, StreamReader, StreamWriter};
use crate::agent::runtime::ExecSpec;

/// How long output may keep flowing after the process exited (children
/// holding the pipes open), before the status is sent regardless.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);
/// How long to wait for the client's close reply.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How long a SPDY client has to open the streams it asked for (upstream's
/// `DefaultStreamCreationTimeout`).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The SPDY `X-Stream-Protocol-Version`s exec and attach accept, preferred
/// first as upstream's list. kubectl ≥ 1.29 offers v5 first; over SPDY v5
/// is v4 (its CLOSE signal is a WebSocket matter: SPDY has FIN).
pub const SPDY_PROTOCOLS: &[&str] = &[channel::V5, channel::V4, V3, V2, channel::V1];
pub const V3: &str = "v3.channel.k8s.io";
pub const V2: &str = "v2.channel.k8s.io";

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

    /// The WebSocket channel whose empty frame says the streams are up.
    pub fn first_channel(&self) -> u8 {
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
async fn write_status(out: &Output, status: &Value) {
    if out.json_status() {
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

// ------------------------------------------------------------ transports

/// What the client sends, whatever the transport.
#[derive(Debug, PartialEq)]
pub enum Input {
    Stdin(Bytes),
    /// The client closed stdin (v5's CLOSE signal, or FIN on the SPDY
    /// stdin stream): EOF for the process.
    StdinEof,
    /// Part of the resize stream (`{"Width":w,"Height":h}` objects).
    Resize(Bytes),
}

/// SPDY: one stream per output; the client opened them.
#[derive(Clone)]
pub struct SpdyOut {
    error: StreamWriter,
    stdout: Option<StreamWriter>,
    stderr: Option<StreamWriter>,
    session: SessionHandle,
    json_status: bool,
}

/// Where a session's output goes.
#[derive(Clone)]
pub enum Output {
    Ws(WsOut),
    Spdy(SpdyOut),
}

impl Output {
    /// Data for channel `ch` (`channel::STDOUT`, `STDERR`, `ERROR`); false
    /// once the connection is gone.
    pub async fn send(&self, ch: u8, data: &[u8]) -> bool {
        match self {
            Output::Ws(o) => o.send(ch, data).await,
            Output::Spdy(o) => {
                let w = match ch {
                    channel::STDOUT => o.stdout.as_ref(),
                    channel::STDERR => o.stderr.as_ref(),
                    channel::ERROR => Some(&o.error),
                    _ => None,
                };
                // A stream the client did not open: nobody wants the data.
                let Some(w) = w else { return true };
                w.write(Bytes::copy_from_slice(data)).await.is_ok()
            }
        }
    }

    /// v4 and later: the outcome is a JSON `Status`.
    fn json_status(&self) -> bool {
        match self {
            Output::Ws(o) => o.proto.json_status,
            Output::Spdy(o) => o.json_status,
        }
    }

    /// Ends the session after everything sent before: a WebSocket close
    /// (1000), or FIN on every stream and GOAWAY.
    async fn close(&self) {
        match self {
            Output::Ws(o) => o.close().await,
            Output::Spdy(o) => {
                for w in [Some(&o.error), o.stdout.as_ref(), o.stderr.as_ref()]
                    .into_iter()
                    .flatten()
                {
                    let _ = w.finish().await;
                }
                o.session.close().await;
            }
        }
    }
}

/// A connected client: its output, its input (the channel ends when the
/// client has gone away), and what resolves once the transport is done
/// after `Output::close` (bounded by `CLOSE_WAIT`).
pub struct Client {
    pub out: Output,
    pub input: mpsc::Receiver<Input>,
    pub done: BoxFuture<'static, ()>,
}

/// A WebSocket client: sends the empty "streams are up" frame on `first`
/// (the first output channel), then decodes the client's messages.
pub async fn ws_client<S>(ws: WebSocketStream<S>, proto: Proto, first: u8) -> Client
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, mut stream) = ws.split();
    let (out, writer) = WsOut::spawn(sink, proto);
    out.send(first, b"").await;
    let (tx, input) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            if msg.is_close() {
                break;
            }
            let Some((ch, data)) = proto.decode(&msg) else {
                continue;
            };
            let event = match ch {
                channel::STDIN => Input::Stdin(data),
                channel::RESIZE => Input::Resize(data),
                channel::CLOSE if proto.close_signal && data.first() == Some(&channel::STDIN) => {
                    Input::StdinEof
                }
                _ => continue,
            };
            if tx.send(event).await.is_err() {
                break;
            }
        }
    });
    Client {
        out: Output::Ws(out),
        input,
        done: Box::pin(async move {
            let _ = tokio::time::timeout(CLOSE_WAIT, writer).await;
        }),
    }
}

/// The streams a SPDY exec/attach needs: always `error`, plus what the
/// query asked for (`resize` with a terminal, from v3 on).
fn spdy_expected(opts: &ExecOptions, protocol: &str) -> usize {
    let resize = opts.tty && ![V2, channel::V1].contains(&protocol);
    1 + [opts.stdin, opts.stdout, opts.stderr, resize]
        .iter()
        .filter(|b| **b)
        .count()
}

/// A SPDY client: answers the streams it opens and waits (up to
/// `timeout`) until all those the query asks for are there. Err when they
/// did not come; the connection is then closed.
pub async fn spdy_client(
    mut session: spdy::Session,
    opts: &ExecOptions,
    protocol: &str,
    timeout: Duration,
) -> Result<Client, String> {
    let expected = spdy_expected(opts, protocol);
    let (mut error, mut stdin, mut stdout, mut stderr, mut resize) = (None, None, None, None, None);
    let mut received = 0;
    let deadline = tokio::time::Instant::now() + timeout;
    while received < expected {
        let stream = match tokio::time::timeout_at(deadline, session.incoming.recv()).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err("connection closed before the streams were created".into()),
            Err(_) => {
                session.handle.close().await;
                session.handle.abort();
                return Err("timed out waiting for client to create streams".into());
            }
        };
        let kind = spdy::header(&stream.headers, "streamtype").unwrap_or("");
        let slot = match kind {
            "error" => &mut error,
            "stdin" => &mut stdin,
            "stdout" => &mut stdout,
            "stderr" => &mut stderr,
            "resize" => &mut resize,
            _ => {
                // Upstream accepts it and carries on without it.
                tracing::debug!(stream = stream.id, "exec: unexpected stream type {kind:?}");
                let _ = stream.writer.reply(Vec::new()).await;
                continue;
            }
        };
        if stream.writer.reply(Vec::new()).await.is_err() {
            return Err("connection closed while creating streams".into());
        }
        *slot = Some(stream);
        received += 1;
    }
    // Streams opened later are refused (the receiver is dropped).
    let handle = session.handle.clone();
    drop(session);
    let Some(error) = error else {
        handle.close().await;
        return Err("the client opened no error stream".into());
    };
    let (tx, input) = mpsc::channel(16);
    let stdin_reader = stdin.map(|s| s.reader);
    let resize_reader = resize.map(|s| s.reader);
    tokio::spawn({
        let handle = handle.clone();
        async move {
            let forward =
                |r: Option<StreamReader>, wrap: fn(Bytes) -> Input, eof: Option<Input>| {
                    let tx = tx.clone();
                    async move {
                        let Some(mut r) = r else { return };
                        while let Some(b) = r.read().await {
                            if tx.send(wrap(b)).await.is_err() {
                                return;
                            }
                        }
                        if let Some(e) = eof {
                            let _ = tx.send(e).await;
                        }
                    }
                };
            tokio::join!(
                forward(stdin_reader, Input::Stdin, Some(Input::StdinEof)),
                forward(resize_reader, Input::Resize, None),
            );
            // The input ends (the client is gone) with the connection.
            handle.closed().await;
            drop(tx);
        }
    });
    let out = SpdyOut {
        error: error.writer,
        stdout: stdout.map(|s| s.writer),
        stderr: stderr.map(|s| s.writer),
        session: handle.clone(),
        json_status: ![V3, V2, channel::V1].contains(&protocol),
    };
    Ok(Client {
        out: Output::Spdy(out),
        input,
        done: Box::pin(async move {
            if tokio::time::timeout(CLOSE_WAIT, handle.closed())
                .await
                .is_err()
            {
                handle.abort();
            }
        }),
    })
}

// --------------------------------------------------------------- session

/// Applies the client's input until it goes away: stdin, its EOF, resizes.
async fn input_loop(
    mut input: mpsc::Receiver<Input>,
    mut stdin: Option<Stdin>,
    resize: Option<Resize>,
) {
    let mut sizes = Vec::new();
    while let Some(event) = input.recv().await {
        match event {
            Input::Stdin(data) => {
                if let Some(w) = stdin.as_mut()
                    && (w.write_all(&data).await.is_err() || w.flush().await.is_err())
                {
                    stdin = None;
                }
            }
            Input::StdinEof => {
                if let Some(mut w) = stdin.take() {
                    let _ = w.shutdown().await;
                }
            }
            Input::Resize(data) => {
                sizes.extend_from_slice(&data);
                for (w, h) in take_sizes(&mut sizes) {
                    if let Some(r) = &resize {
                        r(w, h);
                    }
                }
            }
        }
    }
    if let Some(mut w) = stdin {
        let _ = w.shutdown().await;
    }
}

/// Copies a process output to a channel (or drains it when not wanted, so
/// the process never blocks on a full pipe).
async fn pump(mut r: Box<dyn AsyncRead + Send + Unpin>, out: Output, ch: u8, mut forward: bool) {
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

/// Closes the session and waits (briefly) for the client's side to end.
async fn finish(out: Output, done: BoxFuture<'static, ()>, input: tokio::task::JoinHandle<()>) {
    out.close().await;
    drop(out);
    done.await;
    let _ = tokio::time::timeout(CLOSE_WAIT, input).await;
}

pub async fn exec(client: Client, opts: ExecOptions, io: Arc<dyn ContainerIo>, id: String) {
    let Client { out, input, done } = client;
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
            let input = tokio::spawn(input_loop(input, None, None));
            finish(out, done, input).await;
            return;
        }
    };
    let stdin = session.stdin.filter(|_| opts.stdin);
    let mut input = tokio::spawn(input_loop(input, stdin, session.resize));
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
    finish(out, done, input).await;
}

/// Attach output: the container's log from now on, split back into its
/// streams.
struct AttachSink {
    out: Output,
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

pub async fn attach(
    client: Client,
    opts: ExecOptions,
    io: Arc<dyn ContainerIo>,
    target: AttachTarget,
    running: impl Fn() -> bool + Send + Sync + 'static,
) {
    let Client { out, input, done } = client;
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
    let mut input = tokio::spawn(input_loop(input, stdin, None));
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
    finish(out, done, input).await;
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
    fn spdy_streams_expected_from_the_query() {
        let o = |s: &str| ExecOptions::from_query(&q(s)).unwrap();
        // error + stdout.
        assert_eq!(spdy_expected(&o("stdout=1"), channel::V4), 2);
        assert_eq!(
            spdy_expected(&o("stdin=1&stdout=1&stderr=1"), channel::V4),
            4
        );
        // A terminal: no stderr, a resize stream from v3 on.
        let tty = o("stdin=1&stdout=1&stderr=1&tty=1");
        assert_eq!(spdy_expected(&tty, channel::V5), 4);
        assert_eq!(spdy_expected(&tty, V3), 4);
        assert_eq!(spdy_expected(&tty, V2), 3);
        assert_eq!(spdy_expected(&tty, channel::V1), 3);
    }

    fn spdy_pair() -> (spdy::Session, spdy::Session) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        (
            spdy::Session::spawn(ar, aw, spdy::Role::Client),
            spdy::Session::spawn(br, bw, spdy::Role::Server),
        )
    }

    fn stream_type(t: &str) -> spdy::Headers {
        vec![("streamtype".to_string(), t.to_string())]
    }

    #[tokio::test]
    async fn spdy_client_waits_for_the_streams_then_times_out() {
        let (client, server) = spdy_pair();
        let opts = ExecOptions::from_query(&q("stdout=1&stderr=1")).unwrap();
        let _e = client.handle.open(stream_type("error")).await.unwrap();
        let _o = client.handle.open(stream_type("stdout")).await.unwrap();
        // stderr never comes.
        let r = spdy_client(server, &opts, channel::V4, Duration::from_millis(200)).await;
        assert_eq!(
            r.err().as_deref(),
            Some("timed out waiting for client to create streams")
        );
        tokio::time::timeout(Duration::from_secs(5), client.handle.closed())
            .await
            .expect("the server closes the connection");
    }

    #[tokio::test]
    async fn spdy_client_input_and_output_mapping() {
        let (client, server) = spdy_pair();
        let opts = ExecOptions::from_query(&q("stdin=1&stdout=1&tty=1")).unwrap();
        let e = client.handle.open(stream_type("error")).await.unwrap();
        // An unknown type is answered but does not count.
        let _x = client.handle.open(stream_type("bogus")).await.unwrap();
        let i = client.handle.open(stream_type("stdin")).await.unwrap();
        let o = client.handle.open(stream_type("stdout")).await.unwrap();
        let r = client.handle.open(stream_type("resize")).await.unwrap();
        let mut c = spdy_client(server, &opts, channel::V4, Duration::from_secs(5))
            .await
            .unwrap();
        i.writer.write(Bytes::from_static(b"abc")).await.unwrap();
        i.writer.finish().await.unwrap();
        assert_eq!(
            c.input.recv().await,
            Some(Input::Stdin(Bytes::from_static(b"abc")))
        );
        assert_eq!(c.input.recv().await, Some(Input::StdinEof));
        r.writer.write(Bytes::from_static(b"{}")).await.unwrap();
        assert_eq!(
            c.input.recv().await,
            Some(Input::Resize(Bytes::from_static(b"{}")))
        );
        assert!(c.out.send(channel::STDOUT, b"hi").await);
        // No stderr stream with a terminal: its data goes nowhere.
        assert!(c.out.send(channel::STDERR, b"lost").await);
        write_status(&c.out, &status_success()).await;
        c.out.close().await;
        let read_all = |mut r: spdy::StreamReader| async move {
            let mut v = Vec::new();
            while let Some(b) = r.read().await {
                v.extend_from_slice(&b);
            }
            v
        };
        assert_eq!(read_all(o.reader).await, b"hi");
        assert_eq!(
            read_all(e.reader).await,
            br#"{"metadata":{},"status":"Success"}"#
        );
        // The client's end closes: the input ends.
        client.handle.close().await;
        assert_eq!(c.input.recv().await, None);
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

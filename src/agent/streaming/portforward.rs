//! Port-forward, as the kubelet serves it: WebSocket channels
//! (`v4.channel.k8s.io`, Python and kube-rs) or SPDY/3.1 (kubectl, plain or
//! tunnelled in a WebSocket). Every forwarded connection is a TCP
//! connection to localhost:port inside the pod's network namespace.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::channel::{Proto, WsOut};
use super::netns;
use super::spdy::{self, Role, Session, Stream};

/// Where forwarded connections go.
pub struct Target {
    pub netns: PathBuf,
    /// For messages: `namespace/name`.
    pub pod: String,
}

impl Target {
    async fn connect(&self, port: u16) -> Result<tokio::net::TcpStream, String> {
        netns::connect(self.netns.clone(), port).await.map_err(|e| {
            format!(
                "error forwarding port {port} to pod {}, uid : {e:#}",
                self.pod
            )
        })
    }
}

/// `port` query values: repeated and/or comma-separated, each 1..=65535.
pub fn parse_ports(q: &[(String, String)]) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (k, v) in q {
        if k != "port" && k != "ports" {
            continue;
        }
        if v.is_empty() {
            return Err(format!("query parameter {k:?} cannot be empty"));
        }
        for p in v.split(',') {
            let port: u16 = p
                .trim()
                .parse()
                .map_err(|_| format!("unable to parse {v:?} as a port"))?;
            if port == 0 {
                return Err(format!("port {v:?} must be > 0"));
            }
            ports.push(port);
        }
    }
    Ok(ports)
}

/// Copies the pod side to `send` until the pod closes; the client side
/// (`rx`) is copied to the pod concurrently and stops with it.
async fn relay<F, Fut>(tcp: tokio::net::TcpStream, mut rx: Inbound, send: F)
where
    F: Fn(Bytes) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let (mut tr, mut tw) = tcp.into_split();
    let upstream = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if tw.write_all(&b).await.is_err() {
                return;
            }
        }
        // The client is done sending: pass the half-close on.
        let _ = tw.shutdown().await;
        // Keep the write half alive until aborted so the socket stays open.
        futures::future::pending::<()>().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match tr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !send(Bytes::copy_from_slice(&buf[..n])).await {
                    break;
                }
            }
        }
    }
    upstream.abort();
}

/// The client-to-pod half of a forwarded connection.
enum Inbound {
    Channel(mpsc::Receiver<Bytes>),
    Spdy(spdy::StreamReader),
}

impl Inbound {
    async fn recv(&mut self) -> Option<Bytes> {
        match self {
            Inbound::Channel(rx) => rx.recv().await,
            Inbound::Spdy(r) => r.read().await,
        }
    }
}

// ------------------------------------------------------- WebSocket channels

/// `v4.channel.k8s.io`: per port i, channel 2i carries data and 2i+1
/// errors; each channel's first server frame is the port (u16 LE).
pub async fn serve_channels<S>(
    ws: WebSocketStream<S>,
    proto: Proto,
    ports: Vec<u16>,
    target: Arc<Target>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, mut stream) = ws.split();
    let (out, writer) = WsOut::spawn(sink, proto);
    let mut inputs = Vec::new();
    let mut pairs = tokio::task::JoinSet::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let data_ch = (2 * i) as u8;
        out.send(data_ch, &port.to_le_bytes()).await;
        out.send(data_ch + 1, &port.to_le_bytes()).await;
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        inputs.push(tx);
        let (out, target) = (out.clone(), target.clone());
        pairs.spawn(async move {
            match target.connect(port).await {
                Ok(tcp) => {
                    relay(tcp, Inbound::Channel(rx), |b| {
                        let out = out.clone();
                        async move { out.send(data_ch, &b).await }
                    })
                    .await
                }
                Err(msg) => {
                    tracing::debug!("{msg}");
                    out.send(data_ch + 1, msg.as_bytes()).await;
                }
            }
        });
    }
    let reader = async {
        while let Some(Ok(msg)) = stream.next().await {
            if msg.is_close() {
                break;
            }
            if let Some((ch, data)) = proto.decode(&msg)
                && ch % 2 == 0
                && let Some(tx) = inputs.get(usize::from(ch / 2))
            {
                let _ = tx.send(data).await;
            }
        }
    };
    tokio::select! {
        _ = async { while pairs.join_next().await.is_some() {} } => {
            out.close().await;
        }
        _ = reader => pairs.abort_all(),
    }
    drop(out);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
}

// ------------------------------------------------------------------- SPDY

/// SPDY bytes carried in binary WebSocket messages (kubectl ≥ 1.30's
/// `SPDY/3.1+portforward.k8s.io`): returns the byte-stream end.
pub fn ws_tunnel<S>(ws: WebSocketStream<S>) -> DuplexStream
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    tokio::spawn(async move {
        let (mut sink, mut stream) = ws.split();
        let (mut rd, mut wr) = tokio::io::split(theirs);
        let mut up = tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                if msg.is_close() {
                    break;
                }
                // SPDY travels in binary messages only.
                if let Message::Binary(b) = msg
                    && wr.write_all(&b).await.is_err()
                {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });
        let down = async {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = sink.close().await;
        };
        tokio::select! {
            _ = down => {
                // Our side finished: give the client a moment to answer the close.
                let _ = tokio::time::timeout(Duration::from_secs(2), &mut up).await;
                up.abort();
            }
            _ = &mut up => {}
        }
    });
    ours
}

/// The kubelet's SPDY port-forward server: streams come in pairs (error,
/// data) sharing a `requestid`; each pair is one forwarded connection.
pub async fn serve_spdy<R, W>(reader: R, writer: W, target: Arc<Target>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut session = Session::spawn(reader, writer, Role::Server);
    let mut pending: HashMap<String, (Option<Stream>, Option<Stream>)> = HashMap::new();
    while let Some(stream) = session.incoming.recv().await {
        let port = spdy::header(&stream.headers, "port")
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p > 0);
        let kind = spdy::header(&stream.headers, "streamtype").unwrap_or("");
        let is_error = kind == "error";
        if port.is_none() || !(is_error || kind == "data") {
            tracing::debug!(headers = ?stream.headers, "port-forward: stream rejected");
            let _ = stream.writer.reset(spdy::RST_CANCEL).await;
            continue;
        }
        if stream.writer.reply(Vec::new()).await.is_err() {
            break;
        }
        // Clients before requestid paired streams by consecutive ids.
        let request = match spdy::header(&stream.headers, "requestid") {
            Some(r) if !r.is_empty() => r.to_string(),
            _ if is_error => stream.id.to_string(),
            _ => stream.id.saturating_sub(2).to_string(),
        };
        let slot = pending.entry(request.clone()).or_default();
        if is_error {
            slot.0 = Some(stream);
        } else {
            slot.1 = Some(stream);
        }
        if let (Some(_), Some(_)) = slot {
            let (Some(err), Some(data)) = pending.remove(&request).unwrap() else {
                unreachable!()
            };
            tokio::spawn(forward_pair(err, data, target.clone()));
        }
    }
}

async fn forward_pair(err: Stream, data: Stream, target: Arc<Target>) {
    let port = spdy::header(&data.headers, "port")
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(0);
    let Stream {
        reader: data_in,
        writer: data_out,
        ..
    } = data;
    match target.connect(port).await {
        Ok(tcp) => {
            relay(tcp, Inbound::Spdy(data_in), |b| {
                let w = data_out.clone();
                async move { w.write(b).await.is_ok() }
            })
            .await
        }
        Err(msg) => {
            tracing::debug!("{msg}");
            let _ = err.writer.write(Bytes::from(msg)).await;
        }
    }
    let _ = data_out.finish().await;
    let _ = err.writer.finish().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        let q = |s: &str| -> Vec<(String, String)> {
            form_urlencoded::parse(s.as_bytes()).into_owned().collect()
        };
        assert_eq!(
            parse_ports(&q("ports=80,1234&port=5")).unwrap(),
            [80, 1234, 5]
        );
        assert!(parse_ports(&q("ports=0")).is_err());
        assert!(parse_ports(&q("port=")).is_err());
        assert!(parse_ports(&q("ports=http")).is_err());
        assert!(parse_ports(&q("x=1")).unwrap().is_empty());
    }
}

//! The Kubernetes WebSocket channel protocols (`*.channel.k8s.io`): every
//! message starts with a channel number; the base64 variants send text
//! messages whose first character is `'0' + channel`.

use base64::Engine;
use bytes::Bytes;
use futures::SinkExt;
use futures::stream::SplitSink;
use hyper::header::{self, HeaderMap, HeaderValue};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: "this stream is closed" (payload: the channel), for stdin EOF.
pub const CLOSE: u8 = 255;

pub const V5: &str = "v5.channel.k8s.io";
pub const V4: &str = "v4.channel.k8s.io";
pub const V4_BASE64: &str = "v4.base64.channel.k8s.io";
pub const V1: &str = "channel.k8s.io";
pub const V1_BASE64: &str = "base64.channel.k8s.io";
/// kubectl ≥ 1.30 port-forward: a SPDY/3.1 byte stream inside the WebSocket.
pub const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// Protocols exec and attach accept, as the kubelet's remotecommand server.
pub const EXEC_PROTOCOLS: &[&str] = &[V5, V4, V4_BASE64, V1, V1_BASE64];
/// Protocols port-forward accepts (the kubelet has no v5 port-forward).
pub const PORT_FORWARD_PROTOCOLS: &[&str] = &[SPDY_TUNNEL, V4, V4_BASE64];

/// The negotiated flavour of channel framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proto {
    pub base64: bool,
    /// v4 and later: exit status as a JSON `Status` on the error channel.
    pub json_status: bool,
    /// v5: the CLOSE signal.
    pub close_signal: bool,
}

impl Proto {
    pub fn from_name(name: Option<&str>) -> Proto {
        let name = name.unwrap_or("");
        Proto {
            base64: name.contains("base64"),
            json_status: name.starts_with("v4.") || name.starts_with("v5."),
            close_signal: name.starts_with("v5."),
        }
    }

    pub fn encode(&self, channel: u8, data: &[u8]) -> Message {
        if self.base64 {
            let mut s = String::with_capacity(1 + data.len() * 4 / 3 + 4);
            s.push((b'0'.wrapping_add(channel)) as char);
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
            Message::text(s)
        } else {
            let mut v = Vec::with_capacity(1 + data.len());
            v.push(channel);
            v.extend_from_slice(data);
            Message::binary(v)
        }
    }

    /// (channel, payload) of a data message; None for control messages and
    /// messages that do not parse.
    pub fn decode(&self, msg: &Message) -> Option<(u8, Bytes)> {
        match msg {
            Message::Binary(b) if !self.base64 && !b.is_empty() => Some((b[0], b.slice(1..))),
            Message::Text(t) if self.base64 && !t.is_empty() => {
                let s = t.as_str();
                let ch = s.as_bytes()[0].wrapping_sub(b'0');
                let data = base64::engine::general_purpose::STANDARD
                    .decode(&s[1..])
                    .ok()?;
                Some((ch, Bytes::from(data)))
            }
            _ => None,
        }
    }
}

/// The subprotocols a client offered, in its order of preference.
pub fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Picks the first offered protocol the server supports, as the kubelet's
/// wsstream does. Ok(None) when the client offered none (binary channels).
pub fn negotiate(offered: &[String], supported: &[&str]) -> Result<Option<String>, String> {
    if offered.is_empty() {
        return Ok(None);
    }
    offered
        .iter()
        .find(|p| supported.contains(&p.as_str()))
        .map(|p| Some(p.clone()))
        .ok_or_else(|| {
            format!("requested protocol(s) are not supported: {offered:?}; supports {supported:?}")
        })
}

pub fn is_websocket(headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket")
}

/// The headers of a 101 answering a WebSocket handshake.
pub fn accept_headers(
    req: &HeaderMap,
    protocol: Option<&str>,
) -> Result<Vec<(header::HeaderName, HeaderValue)>, String> {
    if req
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        return Err("unsupported WebSocket version (want 13)".into());
    }
    let key = req
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or("missing Sec-WebSocket-Key")?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut out = vec![
        (header::CONNECTION, HeaderValue::from_static("Upgrade")),
        (header::UPGRADE, HeaderValue::from_static("websocket")),
        (
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&accept).map_err(|e| e.to_string())?,
        ),
    ];
    if let Some(p) = protocol {
        out.push((
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(p).map_err(|e| e.to_string())?,
        ));
    }
    Ok(out)
}

/// The sending half of a channel-protocol WebSocket: one writer task, fed
/// by any number of pumps. Dropping every clone (or `close`) ends it.
#[derive(Clone)]
pub struct WsOut {
    tx: mpsc::Sender<Message>,
    pub proto: Proto,
}

impl WsOut {
    pub fn spawn<S>(
        mut sink: SplitSink<WebSocketStream<S>, Message>,
        proto: Proto,
    ) -> (WsOut, tokio::task::JoinHandle<()>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<Message>(64);
        let task = tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                let last = matches!(m, Message::Close(_));
                if sink.send(m).await.is_err() || last {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        (WsOut { tx, proto }, task)
    }

    /// false once the connection is gone.
    pub async fn send(&self, channel: u8, data: &[u8]) -> bool {
        self.tx.send(self.proto.encode(channel, data)).await.is_ok()
    }

    /// A normal close (1000), after everything queued before it.
    pub async fn close(&self) {
        let _ = self
            .tx
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_framing() {
        let p = Proto::from_name(Some(V5));
        assert!(p.json_status && p.close_signal && !p.base64);
        let m = p.encode(STDOUT, b"hi");
        assert_eq!(m, Message::binary(vec![1, b'h', b'i']));
        assert_eq!(p.decode(&m), Some((1, Bytes::from_static(b"hi"))));
        assert_eq!(
            p.decode(&Message::binary(vec![CLOSE, STDIN])),
            Some((CLOSE, Bytes::from_static(&[0])))
        );
        assert_eq!(p.decode(&Message::binary(Vec::new())), None);
        // An empty payload is still a frame: the "stream is ready" signal.
        assert_eq!(p.encode(STDOUT, b""), Message::binary(vec![1]));
        let v4 = Proto::from_name(Some(V4));
        assert!(v4.json_status && !v4.close_signal);
        let v1 = Proto::from_name(None);
        assert!(!v1.json_status && !v1.base64);
    }

    #[test]
    fn base64_framing() {
        let p = Proto::from_name(Some(V4_BASE64));
        assert!(p.base64 && p.json_status);
        let m = p.encode(STDERR, b"hello");
        assert_eq!(m, Message::text("2aGVsbG8="));
        assert_eq!(p.decode(&m), Some((2, Bytes::from_static(b"hello"))));
        assert_eq!(p.decode(&Message::text("0")), Some((0, Bytes::new())));
    }

    #[test]
    fn negotiation_follows_client_order() {
        let offered = |s: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_str(s).unwrap(),
            );
            offered_protocols(&h)
        };
        assert_eq!(
            negotiate(
                &offered("v5.channel.k8s.io, v4.channel.k8s.io"),
                EXEC_PROTOCOLS
            ),
            Ok(Some(V5.to_string()))
        );
        assert_eq!(
            negotiate(
                &offered("v5.channel.k8s.io,v4.channel.k8s.io"),
                PORT_FORWARD_PROTOCOLS
            ),
            Ok(Some(V4.to_string()))
        );
        assert_eq!(
            negotiate(&offered(SPDY_TUNNEL), PORT_FORWARD_PROTOCOLS),
            Ok(Some(SPDY_TUNNEL.to_string()))
        );
        assert_eq!(negotiate(&[], EXEC_PROTOCOLS), Ok(None));
        assert!(negotiate(&offered("v9.channel.k8s.io"), EXEC_PROTOCOLS).is_err());
    }

    #[test]
    fn accept_key() {
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        // RFC 6455's example.
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        let out = accept_headers(&h, Some(V5)).unwrap();
        assert!(
            out.iter()
                .any(|(n, v)| n == header::SEC_WEBSOCKET_ACCEPT
                    && v == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        assert!(
            out.iter()
                .any(|(n, v)| n == header::SEC_WEBSOCKET_PROTOCOL && v == V5)
        );
    }
}

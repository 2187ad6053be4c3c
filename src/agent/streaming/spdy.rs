//! SPDY/3.1 as Kubernetes speaks it (Go's `moby/spdystream`): the framing,
//! the zlib header compression with the SPDY/3 dictionary, and a small
//! session that multiplexes streams over one byte stream. Used for
//! port-forward (over a plain HTTP upgrade or tunnelled in a WebSocket) and
//! for exec/attach over a plain upgrade (kubectl's SPDY fallback).
//!
//! flate2's default backend (miniz_oxide) has no preset-dictionary API, so
//! the dictionary is installed by running it through the (de)compressor as
//! one stored/sync-flushed block whose output is discarded: afterwards the
//! deflate window holds exactly the dictionary, which is what a preset
//! dictionary is.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

pub const VERSION: u16 = 3;

pub const TYPE_SYN_STREAM: u16 = 1;
pub const TYPE_SYN_REPLY: u16 = 2;
pub const TYPE_RST_STREAM: u16 = 3;
pub const TYPE_SETTINGS: u16 = 4;
pub const TYPE_PING: u16 = 6;
pub const TYPE_GOAWAY: u16 = 7;
pub const TYPE_HEADERS: u16 = 8;
pub const TYPE_WINDOW_UPDATE: u16 = 9;

pub const FLAG_FIN: u8 = 0x01;

/// RST_STREAM status codes.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_CANCEL: u32 = 5;

/// Largest frame payload accepted (the length field has 24 bits).
const MAX_FRAME: usize = (1 << 24) - 1;
/// Largest decompressed header block accepted.
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// SPDY/3.1's initial stream and session window.
pub const INITIAL_WINDOW: u32 = 64 * 1024;

/// The SPDY/3 header compression dictionary (spdy3 draft, section 2.6.10.1).
pub const DICTIONARY: &[u8] = &[
    0x00, 0x00, 0x00, 0x07, 0x6f, 0x70, 0x74, 0x69, 0x6f, 0x6e, 0x73, 0x00, 0x00, 0x00, 0x04, 0x68,
    0x65, 0x61, 0x64, 0x00, 0x00, 0x00, 0x04, 0x70, 0x6f, 0x73, 0x74, 0x00, 0x00, 0x00, 0x03, 0x70,
    0x75, 0x74, 0x00, 0x00, 0x00, 0x06, 0x64, 0x65, 0x6c, 0x65, 0x74, 0x65, 0x00, 0x00, 0x00, 0x05,
    0x74, 0x72, 0x61, 0x63, 0x65, 0x00, 0x00, 0x00, 0x06, 0x61, 0x63, 0x63, 0x65, 0x70, 0x74, 0x00,
    0x00, 0x00, 0x0e, 0x61, 0x63, 0x63, 0x65, 0x70, 0x74, 0x2d, 0x63, 0x68, 0x61, 0x72, 0x73, 0x65,
    0x74, 0x00, 0x00, 0x00, 0x0f, 0x61, 0x63, 0x63, 0x65, 0x70, 0x74, 0x2d, 0x65, 0x6e, 0x63, 0x6f,
    0x64, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x0f, 0x61, 0x63, 0x63, 0x65, 0x70, 0x74, 0x2d, 0x6c,
    0x61, 0x6e, 0x67, 0x75, 0x61, 0x67, 0x65, 0x00, 0x00, 0x00, 0x0d, 0x61, 0x63, 0x63, 0x65, 0x70,
    0x74, 0x2d, 0x72, 0x61, 0x6e, 0x67, 0x65, 0x73, 0x00, 0x00, 0x00, 0x03, 0x61, 0x67, 0x65, 0x00,
    0x00, 0x00, 0x05, 0x61, 0x6c, 0x6c, 0x6f, 0x77, 0x00, 0x00, 0x00, 0x0d, 0x61, 0x75, 0x74, 0x68,
    0x6f, 0x72, 0x69, 0x7a, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00, 0x0d, 0x63, 0x61, 0x63,
    0x68, 0x65, 0x2d, 0x63, 0x6f, 0x6e, 0x74, 0x72, 0x6f, 0x6c, 0x00, 0x00, 0x00, 0x0a, 0x63, 0x6f,
    0x6e, 0x6e, 0x65, 0x63, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00, 0x0c, 0x63, 0x6f, 0x6e, 0x74,
    0x65, 0x6e, 0x74, 0x2d, 0x62, 0x61, 0x73, 0x65, 0x00, 0x00, 0x00, 0x10, 0x63, 0x6f, 0x6e, 0x74,
    0x65, 0x6e, 0x74, 0x2d, 0x65, 0x6e, 0x63, 0x6f, 0x64, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x10,
    0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x2d, 0x6c, 0x61, 0x6e, 0x67, 0x75, 0x61, 0x67, 0x65,
    0x00, 0x00, 0x00, 0x0e, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x2d, 0x6c, 0x65, 0x6e, 0x67,
    0x74, 0x68, 0x00, 0x00, 0x00, 0x10, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x2d, 0x6c, 0x6f,
    0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00, 0x0b, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e,
    0x74, 0x2d, 0x6d, 0x64, 0x35, 0x00, 0x00, 0x00, 0x0d, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74,
    0x2d, 0x72, 0x61, 0x6e, 0x67, 0x65, 0x00, 0x00, 0x00, 0x0c, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e,
    0x74, 0x2d, 0x74, 0x79, 0x70, 0x65, 0x00, 0x00, 0x00, 0x04, 0x64, 0x61, 0x74, 0x65, 0x00, 0x00,
    0x00, 0x04, 0x65, 0x74, 0x61, 0x67, 0x00, 0x00, 0x00, 0x06, 0x65, 0x78, 0x70, 0x65, 0x63, 0x74,
    0x00, 0x00, 0x00, 0x07, 0x65, 0x78, 0x70, 0x69, 0x72, 0x65, 0x73, 0x00, 0x00, 0x00, 0x04, 0x66,
    0x72, 0x6f, 0x6d, 0x00, 0x00, 0x00, 0x04, 0x68, 0x6f, 0x73, 0x74, 0x00, 0x00, 0x00, 0x08, 0x69,
    0x66, 0x2d, 0x6d, 0x61, 0x74, 0x63, 0x68, 0x00, 0x00, 0x00, 0x11, 0x69, 0x66, 0x2d, 0x6d, 0x6f,
    0x64, 0x69, 0x66, 0x69, 0x65, 0x64, 0x2d, 0x73, 0x69, 0x6e, 0x63, 0x65, 0x00, 0x00, 0x00, 0x0d,
    0x69, 0x66, 0x2d, 0x6e, 0x6f, 0x6e, 0x65, 0x2d, 0x6d, 0x61, 0x74, 0x63, 0x68, 0x00, 0x00, 0x00,
    0x08, 0x69, 0x66, 0x2d, 0x72, 0x61, 0x6e, 0x67, 0x65, 0x00, 0x00, 0x00, 0x13, 0x69, 0x66, 0x2d,
    0x75, 0x6e, 0x6d, 0x6f, 0x64, 0x69, 0x66, 0x69, 0x65, 0x64, 0x2d, 0x73, 0x69, 0x6e, 0x63, 0x65,
    0x00, 0x00, 0x00, 0x0d, 0x6c, 0x61, 0x73, 0x74, 0x2d, 0x6d, 0x6f, 0x64, 0x69, 0x66, 0x69, 0x65,
    0x64, 0x00, 0x00, 0x00, 0x08, 0x6c, 0x6f, 0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00,
    0x0c, 0x6d, 0x61, 0x78, 0x2d, 0x66, 0x6f, 0x72, 0x77, 0x61, 0x72, 0x64, 0x73, 0x00, 0x00, 0x00,
    0x06, 0x70, 0x72, 0x61, 0x67, 0x6d, 0x61, 0x00, 0x00, 0x00, 0x12, 0x70, 0x72, 0x6f, 0x78, 0x79,
    0x2d, 0x61, 0x75, 0x74, 0x68, 0x65, 0x6e, 0x74, 0x69, 0x63, 0x61, 0x74, 0x65, 0x00, 0x00, 0x00,
    0x13, 0x70, 0x72, 0x6f, 0x78, 0x79, 0x2d, 0x61, 0x75, 0x74, 0x68, 0x6f, 0x72, 0x69, 0x7a, 0x61,
    0x74, 0x69, 0x6f, 0x6e, 0x00, 0x00, 0x00, 0x05, 0x72, 0x61, 0x6e, 0x67, 0x65, 0x00, 0x00, 0x00,
    0x07, 0x72, 0x65, 0x66, 0x65, 0x72, 0x65, 0x72, 0x00, 0x00, 0x00, 0x0b, 0x72, 0x65, 0x74, 0x72,
    0x79, 0x2d, 0x61, 0x66, 0x74, 0x65, 0x72, 0x00, 0x00, 0x00, 0x06, 0x73, 0x65, 0x72, 0x76, 0x65,
    0x72, 0x00, 0x00, 0x00, 0x02, 0x74, 0x65, 0x00, 0x00, 0x00, 0x07, 0x74, 0x72, 0x61, 0x69, 0x6c,
    0x65, 0x72, 0x00, 0x00, 0x00, 0x11, 0x74, 0x72, 0x61, 0x6e, 0x73, 0x66, 0x65, 0x72, 0x2d, 0x65,
    0x6e, 0x63, 0x6f, 0x64, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x07, 0x75, 0x70, 0x67, 0x72, 0x61,
    0x64, 0x65, 0x00, 0x00, 0x00, 0x0a, 0x75, 0x73, 0x65, 0x72, 0x2d, 0x61, 0x67, 0x65, 0x6e, 0x74,
    0x00, 0x00, 0x00, 0x04, 0x76, 0x61, 0x72, 0x79, 0x00, 0x00, 0x00, 0x03, 0x76, 0x69, 0x61, 0x00,
    0x00, 0x00, 0x07, 0x77, 0x61, 0x72, 0x6e, 0x69, 0x6e, 0x67, 0x00, 0x00, 0x00, 0x10, 0x77, 0x77,
    0x77, 0x2d, 0x61, 0x75, 0x74, 0x68, 0x65, 0x6e, 0x74, 0x69, 0x63, 0x61, 0x74, 0x65, 0x00, 0x00,
    0x00, 0x06, 0x6d, 0x65, 0x74, 0x68, 0x6f, 0x64, 0x00, 0x00, 0x00, 0x03, 0x67, 0x65, 0x74, 0x00,
    0x00, 0x00, 0x06, 0x73, 0x74, 0x61, 0x74, 0x75, 0x73, 0x00, 0x00, 0x00, 0x06, 0x32, 0x30, 0x30,
    0x20, 0x4f, 0x4b, 0x00, 0x00, 0x00, 0x07, 0x76, 0x65, 0x72, 0x73, 0x69, 0x6f, 0x6e, 0x00, 0x00,
    0x00, 0x08, 0x48, 0x54, 0x54, 0x50, 0x2f, 0x31, 0x2e, 0x31, 0x00, 0x00, 0x00, 0x03, 0x75, 0x72,
    0x6c, 0x00, 0x00, 0x00, 0x06, 0x70, 0x75, 0x62, 0x6c, 0x69, 0x63, 0x00, 0x00, 0x00, 0x0a, 0x73,
    0x65, 0x74, 0x2d, 0x63, 0x6f, 0x6f, 0x6b, 0x69, 0x65, 0x00, 0x00, 0x00, 0x0a, 0x6b, 0x65, 0x65,
    0x70, 0x2d, 0x61, 0x6c, 0x69, 0x76, 0x65, 0x00, 0x00, 0x00, 0x06, 0x6f, 0x72, 0x69, 0x67, 0x69,
    0x6e, 0x31, 0x30, 0x30, 0x31, 0x30, 0x31, 0x32, 0x30, 0x31, 0x32, 0x30, 0x32, 0x32, 0x30, 0x35,
    0x32, 0x30, 0x36, 0x33, 0x30, 0x30, 0x33, 0x30, 0x32, 0x33, 0x30, 0x33, 0x33, 0x30, 0x34, 0x33,
    0x30, 0x35, 0x33, 0x30, 0x36, 0x33, 0x30, 0x37, 0x34, 0x30, 0x32, 0x34, 0x30, 0x35, 0x34, 0x30,
    0x36, 0x34, 0x30, 0x37, 0x34, 0x30, 0x38, 0x34, 0x30, 0x39, 0x34, 0x31, 0x30, 0x34, 0x31, 0x31,
    0x34, 0x31, 0x32, 0x34, 0x31, 0x33, 0x34, 0x31, 0x34, 0x34, 0x31, 0x35, 0x34, 0x31, 0x36, 0x34,
    0x31, 0x37, 0x35, 0x30, 0x32, 0x35, 0x30, 0x34, 0x35, 0x30, 0x35, 0x32, 0x30, 0x33, 0x20, 0x4e,
    0x6f, 0x6e, 0x2d, 0x41, 0x75, 0x74, 0x68, 0x6f, 0x72, 0x69, 0x74, 0x61, 0x74, 0x69, 0x76, 0x65,
    0x20, 0x49, 0x6e, 0x66, 0x6f, 0x72, 0x6d, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x32, 0x30, 0x34, 0x20,
    0x4e, 0x6f, 0x20, 0x43, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x33, 0x30, 0x31, 0x20, 0x4d, 0x6f,
    0x76, 0x65, 0x64, 0x20, 0x50, 0x65, 0x72, 0x6d, 0x61, 0x6e, 0x65, 0x6e, 0x74, 0x6c, 0x79, 0x34,
    0x30, 0x30, 0x20, 0x42, 0x61, 0x64, 0x20, 0x52, 0x65, 0x71, 0x75, 0x65, 0x73, 0x74, 0x34, 0x30,
    0x31, 0x20, 0x55, 0x6e, 0x61, 0x75, 0x74, 0x68, 0x6f, 0x72, 0x69, 0x7a, 0x65, 0x64, 0x34, 0x30,
    0x33, 0x20, 0x46, 0x6f, 0x72, 0x62, 0x69, 0x64, 0x64, 0x65, 0x6e, 0x34, 0x30, 0x34, 0x20, 0x4e,
    0x6f, 0x74, 0x20, 0x46, 0x6f, 0x75, 0x6e, 0x64, 0x35, 0x30, 0x30, 0x20, 0x49, 0x6e, 0x74, 0x65,
    0x72, 0x6e, 0x61, 0x6c, 0x20, 0x53, 0x65, 0x72, 0x76, 0x65, 0x72, 0x20, 0x45, 0x72, 0x72, 0x6f,
    0x72, 0x35, 0x30, 0x31, 0x20, 0x4e, 0x6f, 0x74, 0x20, 0x49, 0x6d, 0x70, 0x6c, 0x65, 0x6d, 0x65,
    0x6e, 0x74, 0x65, 0x64, 0x35, 0x30, 0x33, 0x20, 0x53, 0x65, 0x72, 0x76, 0x69, 0x63, 0x65, 0x20,
    0x55, 0x6e, 0x61, 0x76, 0x61, 0x69, 0x6c, 0x61, 0x62, 0x6c, 0x65, 0x4a, 0x61, 0x6e, 0x20, 0x46,
    0x65, 0x62, 0x20, 0x4d, 0x61, 0x72, 0x20, 0x41, 0x70, 0x72, 0x20, 0x4d, 0x61, 0x79, 0x20, 0x4a,
    0x75, 0x6e, 0x20, 0x4a, 0x75, 0x6c, 0x20, 0x41, 0x75, 0x67, 0x20, 0x53, 0x65, 0x70, 0x74, 0x20,
    0x4f, 0x63, 0x74, 0x20, 0x4e, 0x6f, 0x76, 0x20, 0x44, 0x65, 0x63, 0x20, 0x30, 0x30, 0x3a, 0x30,
    0x30, 0x3a, 0x30, 0x30, 0x20, 0x4d, 0x6f, 0x6e, 0x2c, 0x20, 0x54, 0x75, 0x65, 0x2c, 0x20, 0x57,
    0x65, 0x64, 0x2c, 0x20, 0x54, 0x68, 0x75, 0x2c, 0x20, 0x46, 0x72, 0x69, 0x2c, 0x20, 0x53, 0x61,
    0x74, 0x2c, 0x20, 0x53, 0x75, 0x6e, 0x2c, 0x20, 0x47, 0x4d, 0x54, 0x63, 0x68, 0x75, 0x6e, 0x6b,
    0x65, 0x64, 0x2c, 0x74, 0x65, 0x78, 0x74, 0x2f, 0x68, 0x74, 0x6d, 0x6c, 0x2c, 0x69, 0x6d, 0x61,
    0x67, 0x65, 0x2f, 0x70, 0x6e, 0x67, 0x2c, 0x69, 0x6d, 0x61, 0x67, 0x65, 0x2f, 0x6a, 0x70, 0x67,
    0x2c, 0x69, 0x6d, 0x61, 0x67, 0x65, 0x2f, 0x67, 0x69, 0x66, 0x2c, 0x61, 0x70, 0x70, 0x6c, 0x69,
    0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x2f, 0x78, 0x6d, 0x6c, 0x2c, 0x61, 0x70, 0x70, 0x6c, 0x69,
    0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x2f, 0x78, 0x68, 0x74, 0x6d, 0x6c, 0x2b, 0x78, 0x6d, 0x6c,
    0x2c, 0x74, 0x65, 0x78, 0x74, 0x2f, 0x70, 0x6c, 0x61, 0x69, 0x6e, 0x2c, 0x74, 0x65, 0x78, 0x74,
    0x2f, 0x6a, 0x61, 0x76, 0x61, 0x73, 0x63, 0x72, 0x69, 0x70, 0x74, 0x2c, 0x70, 0x75, 0x62, 0x6c,
    0x69, 0x63, 0x70, 0x72, 0x69, 0x76, 0x61, 0x74, 0x65, 0x6d, 0x61, 0x78, 0x2d, 0x61, 0x67, 0x65,
    0x3d, 0x67, 0x7a, 0x69, 0x70, 0x2c, 0x64, 0x65, 0x66, 0x6c, 0x61, 0x74, 0x65, 0x2c, 0x73, 0x64,
    0x63, 0x68, 0x63, 0x68, 0x61, 0x72, 0x73, 0x65, 0x74, 0x3d, 0x75, 0x74, 0x66, 0x2d, 0x38, 0x63,
    0x68, 0x61, 0x72, 0x73, 0x65, 0x74, 0x3d, 0x69, 0x73, 0x6f, 0x2d, 0x38, 0x38, 0x35, 0x39, 0x2d,
    0x31, 0x2c, 0x75, 0x74, 0x66, 0x2d, 0x2c, 0x2a, 0x2c, 0x65, 0x6e, 0x71, 0x3d, 0x30, 0x2e,
];

/// Header name/value pairs; names are lower case, several values of one
/// name are joined with NUL as on the wire.
pub type Headers = Vec<(String, String)>;

/// The first value of header `name`.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.split('\0').next().unwrap_or(""))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_id: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Adler-32, for the dictionary id in the zlib header.
pub fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

/// The compressing half of a connection's header context: one zlib stream
/// for every header block sent, each ending with a sync flush.
pub struct HeaderEncoder {
    /// Created, and primed with the dictionary, on first use.
    z: Option<Compress>,
}

impl Default for HeaderEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderEncoder {
    pub fn new() -> HeaderEncoder {
        HeaderEncoder { z: None }
    }

    /// Compresses one serialized header block.
    pub fn compress(&mut self, block: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let z = match &mut self.z {
            Some(z) => z,
            None => {
                let mut z = Compress::new(Compression::default(), false);
                // Prime the window with the dictionary; the output is discarded.
                deflate_all(&mut z, DICTIONARY, &mut Vec::new())?;
                // zlib header: deflate, 32K window, FDICT, then the dictionary id.
                out.extend_from_slice(&[0x78, 0xbb]);
                out.extend_from_slice(&adler32(DICTIONARY).to_be_bytes());
                self.z.insert(z)
            }
        };
        deflate_all(z, block, out)
    }
}

fn deflate_all(z: &mut Compress, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let start = z.total_in();
    loop {
        let done = (z.total_in() - start) as usize;
        out.reserve(input.len().saturating_sub(done) + 64);
        z.compress_vec(&input[done..], out, FlushCompress::Sync)
            .map_err(|e| invalid(format!("header compression: {e}")))?;
        // A sync flush is complete once zlib leaves output space unused.
        if (z.total_in() - start) as usize == input.len() && out.len() < out.capacity() {
            return Ok(());
        }
    }
}

/// The decompressing half of a connection's header context.
pub struct HeaderDecoder {
    z: Decompress,
    started: bool,
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderDecoder {
    pub fn new() -> HeaderDecoder {
        HeaderDecoder {
            z: Decompress::new(false),
            started: false,
        }
    }

    /// Decompresses one header block (the continuation of the stream).
    pub fn decompress(&mut self, mut block: &[u8]) -> io::Result<Vec<u8>> {
        if !self.started {
            if block.len() < 2 {
                return Err(invalid("header block: short zlib header"));
            }
            let (cmf, flg) = (block[0], block[1]);
            if cmf & 0x0f != 8 || (u16::from(cmf) << 8 | u16::from(flg)) % 31 != 0 {
                return Err(invalid("header block: not a zlib stream"));
            }
            block = &block[2..];
            if flg & 0x20 != 0 {
                if block.len() < 4 {
                    return Err(invalid("header block: short dictionary id"));
                }
                let id = u32::from_be_bytes([block[0], block[1], block[2], block[3]]);
                if id != adler32(DICTIONARY) {
                    return Err(invalid("header block: unknown dictionary"));
                }
                block = &block[4..];
            }
            // Feed the dictionary as one non-final stored block so that it
            // becomes the window the peer's back-references point into.
            let len = DICTIONARY.len() as u16;
            let mut stored = vec![0x00];
            stored.extend_from_slice(&len.to_le_bytes());
            stored.extend_from_slice(&(!len).to_le_bytes());
            stored.extend_from_slice(DICTIONARY);
            let primed = inflate_all(&mut self.z, &stored, usize::MAX)?;
            if primed.len() != DICTIONARY.len() {
                return Err(invalid("header block: priming failed"));
            }
            self.started = true;
        }
        inflate_all(&mut self.z, block, MAX_HEADER_BLOCK)
    }
}

fn inflate_all(z: &mut Decompress, input: &[u8], limit: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() * 4 + 256);
    let start = z.total_in();
    loop {
        let done = (z.total_in() - start) as usize;
        if out.capacity() - out.len() < 256 {
            out.reserve(out.capacity().max(1024));
        }
        let status = z
            .decompress_vec(&input[done..], &mut out, FlushDecompress::Sync)
            .map_err(|e| invalid(format!("header decompression: {e}")))?;
        if out.len() > limit {
            return Err(invalid("header block too large"));
        }
        let consumed = (z.total_in() - start) as usize;
        if status == flate2::Status::StreamEnd {
            return Err(invalid("header block: zlib stream ended"));
        }
        if consumed == input.len() && out.len() < out.capacity() {
            return Ok(out);
        }
        if consumed == done && out.len() < out.capacity() && status == flate2::Status::BufError {
            return Err(invalid("header block: truncated"));
        }
    }
}

/// Serializes a header block (before compression).
pub fn encode_header_block(headers: &Headers) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        b.extend_from_slice(&(name.len() as u32).to_be_bytes());
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&(value.len() as u32).to_be_bytes());
        b.extend_from_slice(value.as_bytes());
    }
    b
}

/// Parses a decompressed header block.
pub fn decode_header_block(mut b: &[u8]) -> io::Result<Headers> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> io::Result<&'a [u8]> {
        if b.len() < n {
            return Err(invalid("header block: truncated"));
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Ok(head)
    }
    fn word(b: &mut &[u8]) -> io::Result<usize> {
        let w = take(b, 4)?;
        Ok(u32::from_be_bytes([w[0], w[1], w[2], w[3]]) as usize)
    }
    if b.is_empty() {
        return Ok(Vec::new());
    }
    let n = word(&mut b)?;
    let mut headers = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let len = word(&mut b)?;
        let name = String::from_utf8_lossy(take(&mut b, len)?).to_ascii_lowercase();
        let len = word(&mut b)?;
        let value = String::from_utf8_lossy(take(&mut b, len)?).into_owned();
        headers.push((name, value));
    }
    Ok(headers)
}

/// One direction pair of a connection's framing state: the header
/// compression contexts are per connection, so every frame of a connection
/// goes through the same codec, in order.
#[derive(Default)]
pub struct Codec {
    enc: HeaderEncoder,
    dec: HeaderDecoder,
}

fn control_header(out: &mut BytesMut, kind: u16, flags: u8, len: usize) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u32((u32::from(flags) << 24) | (len as u32 & 0x00ff_ffff));
}

impl Codec {
    pub fn new() -> Codec {
        Codec::default()
    }

    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> io::Result<()> {
        match frame {
            Frame::SynStream {
                stream_id,
                associated_id,
                priority,
                flags,
                headers,
            } => {
                let mut block = Vec::new();
                self.enc
                    .compress(&encode_header_block(headers), &mut block)?;
                control_header(out, TYPE_SYN_STREAM, *flags, 10 + block.len());
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(associated_id & 0x7fff_ffff);
                out.put_u8((priority & 0x07) << 5);
                out.put_u8(0); // slot
                out.put_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            }
            | Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    TYPE_SYN_REPLY
                } else {
                    TYPE_HEADERS
                };
                let mut block = Vec::new();
                self.enc
                    .compress(&encode_header_block(headers), &mut block)?;
                control_header(out, kind, *flags, 4 + block.len());
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_slice(&block);
            }
            Frame::RstStream { stream_id, status } => {
                control_header(out, TYPE_RST_STREAM, 0, 8);
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(*status);
            }
            Frame::Settings { flags, entries } => {
                control_header(out, TYPE_SETTINGS, *flags, 4 + 8 * entries.len());
                out.put_u32(entries.len() as u32);
                for s in entries {
                    out.put_u32((u32::from(s.flags) << 24) | (s.id & 0x00ff_ffff));
                    out.put_u32(s.value);
                }
            }
            Frame::Ping { id } => {
                control_header(out, TYPE_PING, 0, 4);
                out.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control_header(out, TYPE_GOAWAY, 0, 8);
                out.put_u32(last_good_stream_id & 0x7fff_ffff);
                out.put_u32(*status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control_header(out, TYPE_WINDOW_UPDATE, 0, 8);
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(delta & 0x7fff_ffff);
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if data.len() > MAX_FRAME {
                    return Err(invalid("data frame too large"));
                }
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32((u32::from(*flags) << 24) | data.len() as u32);
                out.put_slice(data);
            }
        }
        Ok(())
    }

    /// Takes one frame off the front of `buf`, or None when more bytes are
    /// needed. Frames of unknown types are skipped, as the spec requires.
    pub fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<Frame>> {
        loop {
            if buf.len() < 8 {
                return Ok(None);
            }
            let len = (u32::from_be_bytes([0, buf[5], buf[6], buf[7]])) as usize;
            if buf.len() < 8 + len {
                buf.reserve(8 + len - buf.len());
                return Ok(None);
            }
            let mut f = buf.split_to(8 + len).freeze();
            let first = f.get_u32();
            let flags = f.get_u8();
            f.advance(3);
            if first & 0x8000_0000 == 0 {
                return Ok(Some(Frame::Data {
                    stream_id: first & 0x7fff_ffff,
                    flags,
                    data: f,
                }));
            }
            let version = ((first >> 16) & 0x7fff) as u16;
            if version != VERSION {
                return Err(invalid(format!("unsupported SPDY version {version}")));
            }
            let kind = (first & 0xffff) as u16;
            let need = |f: &Bytes, n: usize| {
                if f.len() < n {
                    Err(invalid(format!("control frame {kind} too short")))
                } else {
                    Ok(())
                }
            };
            let frame = match kind {
                TYPE_SYN_STREAM => {
                    need(&f, 10)?;
                    let stream_id = f.get_u32() & 0x7fff_ffff;
                    let associated_id = f.get_u32() & 0x7fff_ffff;
                    let priority = f.get_u8() >> 5;
                    f.advance(1);
                    let headers = decode_header_block(&self.dec.decompress(&f)?)?;
                    Frame::SynStream {
                        stream_id,
                        associated_id,
                        priority,
                        flags,
                        headers,
                    }
                }
                TYPE_SYN_REPLY | TYPE_HEADERS => {
                    need(&f, 4)?;
                    let stream_id = f.get_u32() & 0x7fff_ffff;
                    let headers = if f.is_empty() {
                        Vec::new()
                    } else {
                        decode_header_block(&self.dec.decompress(&f)?)?
                    };
                    if kind == TYPE_SYN_REPLY {
                        Frame::SynReply {
                            stream_id,
                            flags,
                            headers,
                        }
                    } else {
                        Frame::Headers {
                            stream_id,
                            flags,
                            headers,
                        }
                    }
                }
                TYPE_RST_STREAM => {
                    need(&f, 8)?;
                    Frame::RstStream {
                        stream_id: f.get_u32() & 0x7fff_ffff,
                        status: f.get_u32(),
                    }
                }
                TYPE_SETTINGS => {
                    need(&f, 4)?;
                    let n = f.get_u32() as usize;
                    need(&f, n.saturating_mul(8))?;
                    let entries = (0..n)
                        .map(|_| {
                            let w = f.get_u32();
                            Setting {
                                flags: (w >> 24) as u8,
                                id: w & 0x00ff_ffff,
                                value: f.get_u32(),
                            }
                        })
                        .collect();
                    Frame::Settings { flags, entries }
                }
                TYPE_PING => {
                    need(&f, 4)?;
                    Frame::Ping { id: f.get_u32() }
                }
                TYPE_GOAWAY => {
                    need(&f, 4)?;
                    let last_good_stream_id = f.get_u32() & 0x7fff_ffff;
                    // SPDY/2-style GOAWAY frames carry no status.
                    let status = if f.len() >= 4 { f.get_u32() } else { 0 };
                    Frame::GoAway {
                        last_good_stream_id,
                        status,
                    }
                }
                TYPE_WINDOW_UPDATE => {
                    need(&f, 8)?;
                    Frame::WindowUpdate {
                        stream_id: f.get_u32() & 0x7fff_ffff,
                        delta: f.get_u32() & 0x7fff_ffff,
                    }
                }
                _ => continue,
            };
            return Ok(Some(frame));
        }
    }
}

// ------------------------------------------------------------------ session

/// Which end of the connection this is: clients open odd streams and send
/// odd ping ids, servers even ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

enum Out {
    Frame(Frame),
    /// Flush, shut the transport's write half and stop writing.
    Close,
}

/// Chunks queued per stream before the connection's reader waits: the
/// backpressure that stands in for flow control (the Go peer ignores
/// windows; it neither sends nor honours WINDOW_UPDATE).
const STREAM_QUEUE: usize = 64;

struct Shared {
    out: mpsc::Sender<Out>,
    streams: Mutex<HashMap<u32, mpsc::Sender<Bytes>>>,
    pings: Mutex<HashMap<u32, tokio::sync::oneshot::Sender<()>>>,
    #[cfg_attr(not(test), allow(dead_code))]
    next_stream: AtomicU32,
    #[cfg_attr(not(test), allow(dead_code))]
    next_ping: AtomicU32,
    /// The highest stream id the peer opened (GOAWAY's last-good id).
    last_peer_stream: AtomicU32,
    closed: watch::Receiver<bool>,
    /// The reading task, so that a peer that never closes cannot keep it.
    reader: Mutex<Option<tokio::task::AbortHandle>>,
}

/// Opens streams, pings, closes; cheap to clone.
#[derive(Clone)]
pub struct SessionHandle(Arc<Shared>);

/// A running connection: streams the peer opens arrive on `incoming`
/// (which ends when the connection does).
pub struct Session {
    pub incoming: mpsc::Receiver<Stream>,
    pub handle: SessionHandle,
}

pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    pub reader: StreamReader,
    pub writer: StreamWriter,
}

pub struct StreamReader {
    id: u32,
    rx: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<Out>,
    unacked: u32,
}

#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    out: mpsc::Sender<Out>,
}

fn broken() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "SPDY connection closed")
}

impl StreamReader {
    /// The next chunk of data; None once the peer finished or reset the
    /// stream, or the connection ended.
    pub async fn read(&mut self) -> Option<Bytes> {
        let data = self.rx.recv().await?;
        self.unacked += data.len() as u32;
        if self.unacked >= INITIAL_WINDOW / 2 {
            let delta = std::mem::take(&mut self.unacked);
            for stream_id in [self.id, 0] {
                let _ = self
                    .out
                    .send(Out::Frame(Frame::WindowUpdate { stream_id, delta }))
                    .await;
            }
        }
        Some(data)
    }
}

impl StreamWriter {
    async fn send(&self, f: Frame) -> io::Result<()> {
        self.out.send(Out::Frame(f)).await.map_err(|_| broken())
    }
    pub async fn reply(&self, headers: Headers) -> io::Result<()> {
        self.send(Frame::SynReply {
            stream_id: self.id,
            flags: 0,
            headers,
        })
        .await
    }
    pub async fn write(&self, data: Bytes) -> io::Result<()> {
        for chunk in data.chunks(64 * 1024) {
            self.send(Frame::Data {
                stream_id: self.id,
                flags: 0,
                data: data.slice_ref(chunk),
            })
            .await?;
        }
        Ok(())
    }
    /// Half-closes the stream (an empty DATA frame with FIN).
    pub async fn finish(&self) -> io::Result<()> {
        self.send(Frame::Data {
            stream_id: self.id,
            flags: FLAG_FIN,
            data: Bytes::new(),
        })
        .await
    }
    pub async fn reset(&self, status: u32) -> io::Result<()> {
        self.send(Frame::RstStream {
            stream_id: self.id,
            status,
        })
        .await
    }
}

impl Session {
    /// Runs a connection over `reader`/`writer` (two tasks).
    pub fn spawn<R, W>(reader: R, writer: W, role: Role) -> Session
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (out_tx, out_rx) = mpsc::channel(256);
        let (closed_tx, closed_rx) = watch::channel(false);
        let (in_tx, in_rx) = mpsc::channel(16);
        let first = if role == Role::Client { 1 } else { 2 };
        let shared = Arc::new(Shared {
            out: out_tx,
            streams: Mutex::new(HashMap::new()),
            pings: Mutex::new(HashMap::new()),
            next_stream: AtomicU32::new(first),
            next_ping: AtomicU32::new(first),
            last_peer_stream: AtomicU32::new(0),
            closed: closed_rx,
            reader: Mutex::new(None),
        });
        tokio::spawn(write_loop(writer, out_rx));
        let reader = tokio::spawn({
            let shared = shared.clone();
            async move {
                if let Err(e) = read_loop(reader, &shared, role, in_tx).await {
                    tracing::debug!("spdy: {e}");
                    let _ = shared
                        .out
                        .send(Out::Frame(Frame::GoAway {
                            last_good_stream_id: 0,
                            status: 1,
                        }))
                        .await;
                }
                shared.streams.lock().unwrap().clear();
                shared.pings.lock().unwrap().clear();
                let _ = closed_tx.send(true);
            }
        });
        *shared.reader.lock().unwrap() = Some(reader.abort_handle());
        Session {
            incoming: in_rx,
            handle: SessionHandle(shared),
        }
    }
}

impl SessionHandle {
    /// Opens a stream (SYN_STREAM) with `headers` (the client side: tests).
    #[cfg_attr(not(test), allow(dead_code))]
    pub async fn open(&self, headers: Headers) -> io::Result<Stream> {
        let id = self.0.next_stream.fetch_add(2, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        self.0.streams.lock().unwrap().insert(id, tx);
        self.0
            .out
            .send(Out::Frame(Frame::SynStream {
                stream_id: id,
                associated_id: 0,
                priority: 0,
                flags: 0,
                headers: headers.clone(),
            }))
            .await
            .map_err(|_| broken())?;
        Ok(new_stream(id, headers, rx, &self.0.out))
    }

    /// Round trip of a PING.
    #[cfg_attr(not(test), allow(dead_code))]
    pub async fn ping(&self) -> io::Result<()> {
        let id = self.0.next_ping.fetch_add(2, Ordering::SeqCst);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.0.pings.lock().unwrap().insert(id, tx);
        self.0
            .out
            .send(Out::Frame(Frame::Ping { id }))
            .await
            .map_err(|_| broken())?;
        rx.await.map_err(|_| broken())
    }

    /// Sends GOAWAY (naming the last stream the peer opened, so it knows
    /// every stream it opened was seen) after everything queued before it,
    /// and closes the write half.
    pub async fn close(&self) {
        let last_good_stream_id = self.0.last_peer_stream.load(Ordering::SeqCst);
        let _ = self
            .0
            .out
            .send(Out::Frame(Frame::GoAway {
                last_good_stream_id,
                status: 0,
            }))
            .await;
        let _ = self.0.out.send(Out::Close).await;
    }

    /// Stops reading from a peer that does not close its side: ends every
    /// stream's reader and resolves `closed`.
    pub fn abort(&self) {
        if let Some(r) = self.0.reader.lock().unwrap().take() {
            r.abort();
        }
        self.0.streams.lock().unwrap().clear();
    }

    /// Resolves once the peer's side of the connection has ended.
    pub async fn closed(&self) {
        let mut rx = self.0.closed.clone();
        let _ = rx.wait_for(|c| *c).await;
    }
}

fn new_stream(
    id: u32,
    headers: Headers,
    rx: mpsc::Receiver<Bytes>,
    out: &mpsc::Sender<Out>,
) -> Stream {
    Stream {
        id,
        headers,
        reader: StreamReader {
            id,
            rx,
            out: out.clone(),
            unacked: 0,
        },
        writer: StreamWriter {
            id,
            out: out.clone(),
        },
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut r: R,
    shared: &Arc<Shared>,
    role: Role,
    incoming: mpsc::Sender<Stream>,
) -> io::Result<()> {
    let mut codec = Codec::new();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        while let Some(frame) = codec.decode(&mut buf)? {
            on_frame(frame, shared, role, &incoming).await;
        }
        if r.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

async fn on_frame(frame: Frame, shared: &Arc<Shared>, role: Role, incoming: &mpsc::Sender<Stream>) {
    let send = |f: Frame| shared.out.send(Out::Frame(f));
    match frame {
        Frame::SynStream {
            stream_id,
            flags,
            headers,
            ..
        } => {
            let peer_parity = if role == Role::Server { 1 } else { 0 };
            if stream_id == 0 || stream_id % 2 != peer_parity {
                let _ = send(Frame::RstStream {
                    stream_id,
                    status: RST_PROTOCOL_ERROR,
                })
                .await;
                return;
            }
            shared
                .last_peer_stream
                .fetch_max(stream_id, Ordering::SeqCst);
            let (tx, rx) = mpsc::channel(STREAM_QUEUE);
            if flags & FLAG_FIN == 0 {
                shared.streams.lock().unwrap().insert(stream_id, tx);
            }
            let stream = new_stream(stream_id, headers, rx, &shared.out);
            if incoming.send(stream).await.is_err() {
                shared.streams.lock().unwrap().remove(&stream_id);
                let _ = send(Frame::RstStream {
                    stream_id,
                    status: RST_REFUSED_STREAM,
                })
                .await;
            }
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            let tx = shared.streams.lock().unwrap().get(&stream_id).cloned();
            let Some(tx) = tx else { return };
            if !data.is_empty() && tx.send(data).await.is_err() {
                // Nobody reads this stream any more.
                shared.streams.lock().unwrap().remove(&stream_id);
            }
            if flags & FLAG_FIN != 0 {
                shared.streams.lock().unwrap().remove(&stream_id);
            }
        }
        Frame::RstStream { stream_id, .. } => {
            shared.streams.lock().unwrap().remove(&stream_id);
        }
        Frame::Ping { id } => {
            let ours = (id % 2 == 1) == (role == Role::Client);
            if ours {
                if let Some(tx) = shared.pings.lock().unwrap().remove(&id) {
                    let _ = tx.send(());
                }
            } else {
                let _ = send(Frame::Ping { id }).await;
            }
        }
        // Replies, headers, settings, window updates and GOAWAY need no
        // action: streams already opened carry on until the peer closes
        // (this end only accepts streams, so a GOAWAY changes nothing; and
        // Go's spdystream neither sends nor honours windows, so writes do
        // not wait for them).
        Frame::SynReply { .. }
        | Frame::Headers { .. }
        | Frame::Settings { .. }
        | Frame::WindowUpdate { .. }
        | Frame::GoAway { .. } => {}
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Out>) {
    let mut codec = Codec::new();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    'outer: while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut close = false;
        while let Some(item) = next.take() {
            match item {
                Out::Frame(f) => {
                    if let Err(e) = codec.encode(&f, &mut buf) {
                        tracing::debug!("spdy encode: {e}");
                        break 'outer;
                    }
                }
                Out::Close => {
                    close = true;
                    break;
                }
            }
            // Coalesce what is already queued into one write.
            if buf.len() < 64 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
            break;
        }
        buf.clear();
        if close {
            break;
        }
    }
    let _ = w.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn dictionary_id() {
        assert_eq!(DICTIONARY.len(), 1423);
        // zlib.adler32 of the dictionary, as Go's and C zlib compute it.
        assert_eq!(adler32(DICTIONARY), 0xe3c6_a7c2);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
    }

    #[test]
    fn decodes_blocks_compressed_by_zlib_with_the_dictionary() {
        // Two consecutive header blocks of one zlib stream, made by C zlib
        // (level 9, preset dictionary, sync flush) as Go's framer does.
        let b1 = unhex(
            "78f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45e01c6061606100a4398b20d198094ade8c0600000000ffff",
        );
        let b2 = unhex("c2aa19540e2512d60b000000ffff");
        let mut dec = HeaderDecoder::new();
        let h1 = decode_header_block(&dec.decompress(&b1).unwrap()).unwrap();
        assert_eq!(
            h1,
            h(&[
                ("streamtype", "error"),
                ("port", "8080"),
                ("requestid", "0")
            ])
        );
        let h2 = decode_header_block(&dec.decompress(&b2).unwrap()).unwrap();
        assert_eq!(
            h2,
            h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")])
        );
    }

    #[test]
    fn encoder_output_uses_the_dictionary_and_roundtrips() {
        let mut enc = HeaderEncoder::new();
        let mut dec = HeaderDecoder::new();
        let headers = h(&[("content-type", "text/plain"), ("accept-encoding", "gzip")]);
        let raw = encode_header_block(&headers);
        let mut first = Vec::new();
        enc.compress(&raw, &mut first).unwrap();
        // zlib header with FDICT and the dictionary's id.
        assert_eq!(&first[..6], &[0x78, 0xbb, 0xe3, 0xc6, 0xa7, 0xc2]);
        // Sync flush marker.
        assert_eq!(&first[first.len() - 4..], &[0, 0, 0xff, 0xff]);
        assert!(first.len() < raw.len(), "dictionary words compress");
        assert_eq!(
            decode_header_block(&dec.decompress(&first).unwrap()).unwrap(),
            headers
        );
        for i in 0..50 {
            let hs = h(&[
                ("requestid", &i.to_string()),
                ("streamtype", "data"),
                ("port", "80"),
            ]);
            let mut b = Vec::new();
            enc.compress(&encode_header_block(&hs), &mut b).unwrap();
            assert_eq!(
                decode_header_block(&dec.decompress(&b).unwrap()).unwrap(),
                hs
            );
        }
    }

    #[test]
    fn header_block_layout_and_multi_values() {
        let b = encode_header_block(&h(&[("Port", "80")]));
        assert_eq!(
            b,
            [&[0, 0, 0, 1, 0, 0, 0, 4][..], b"port", &[0, 0, 0, 2], b"80"].concat()
        );
        let hs = h(&[("x-stream-protocol-version", "a\0b")]);
        assert_eq!(header(&hs, "X-Stream-Protocol-Version"), Some("a"));
        assert!(decode_header_block(&[0, 0, 0, 2, 0]).is_err());
    }

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::SynStream {
                stream_id: 1,
                associated_id: 0,
                priority: 3,
                flags: FLAG_FIN,
                headers: h(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: Vec::new(),
            },
            Frame::Headers {
                stream_id: 3,
                flags: FLAG_FIN,
                headers: h(&[("a", "b")]),
            },
            Frame::RstStream {
                stream_id: 5,
                status: RST_CANCEL,
            },
            Frame::Settings {
                flags: 1,
                entries: vec![Setting {
                    flags: 1,
                    id: 7,
                    value: 65536,
                }],
            },
            Frame::Ping { id: 0xffff_fff1 },
            Frame::GoAway {
                last_good_stream_id: 9,
                status: 0,
            },
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 32768,
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 0x7fff_ffff,
                flags: 0,
                data: Bytes::new(),
            },
        ]
    }

    #[test]
    fn frames_roundtrip_whole_and_byte_by_byte() {
        let mut tx = Codec::new();
        let mut wire = BytesMut::new();
        for f in all_frames() {
            tx.encode(&f, &mut wire).unwrap();
        }
        let wire = wire.freeze();
        // All at once.
        let mut rx = Codec::new();
        let mut buf = BytesMut::from(&wire[..]);
        let mut got = Vec::new();
        while let Some(f) = rx.decode(&mut buf).unwrap() {
            got.push(f);
        }
        assert_eq!(got, all_frames());
        assert!(buf.is_empty());
        // One byte at a time (WebSocket tunnels split frames anywhere).
        let mut rx = Codec::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.put_u8(*b);
            while let Some(f) = rx.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, all_frames());
    }

    #[test]
    fn known_frame_bytes() {
        let mut c = Codec::new();
        let enc = |c: &mut Codec, f: Frame| {
            let mut b = BytesMut::new();
            c.encode(&f, &mut b).unwrap();
            b.to_vec()
        };
        assert_eq!(
            enc(&mut c, Frame::Ping { id: 1 }),
            [0x80, 0x03, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1]
        );
        assert_eq!(
            enc(
                &mut c,
                Frame::RstStream {
                    stream_id: 3,
                    status: RST_CANCEL
                }
            ),
            [0x80, 0x03, 0x00, 0x03, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 5]
        );
        assert_eq!(
            enc(
                &mut c,
                Frame::WindowUpdate {
                    stream_id: 1,
                    delta: 0x10000
                }
            ),
            [0x80, 0x03, 0x00, 0x09, 0, 0, 0, 8, 0, 0, 0, 1, 0, 1, 0, 0]
        );
        assert_eq!(
            enc(
                &mut c,
                Frame::GoAway {
                    last_good_stream_id: 7,
                    status: 0
                }
            ),
            [0x80, 0x03, 0x00, 0x07, 0, 0, 0, 8, 0, 0, 0, 7, 0, 0, 0, 0]
        );
        assert_eq!(
            enc(
                &mut c,
                Frame::Data {
                    stream_id: 1,
                    flags: FLAG_FIN,
                    data: Bytes::from_static(b"abc")
                }
            ),
            [0, 0, 0, 1, 1, 0, 0, 3, b'a', b'b', b'c']
        );
        // SYN_STREAM prefix: control bit, version 3, type 1, flags, length,
        // ids, priority in the top 3 bits, slot.
        let syn = enc(
            &mut c,
            Frame::SynStream {
                stream_id: 1,
                associated_id: 0,
                priority: 7,
                flags: 0,
                headers: Vec::new(),
            },
        );
        assert_eq!(&syn[..4], &[0x80, 0x03, 0x00, 0x01]);
        assert_eq!(syn[4], 0);
        assert_eq!(
            u32::from_be_bytes([0, syn[5], syn[6], syn[7]]) as usize,
            syn.len() - 8
        );
        assert_eq!(&syn[8..18], &[0, 0, 0, 1, 0, 0, 0, 0, 0xe0, 0]);
    }

    #[test]
    fn decodes_a_syn_stream_as_kubectl_sends_it() {
        // The first message kubectl sent in the trace: 80 03 00 01 | 00 00 00 3d
        // i.e. SYN_STREAM with a 61-byte payload. Rebuild one such frame from
        // a zlib-made header block.
        let block = unhex(
            "78f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45e01c6061606100a4398b20d198094ade8c0600000000ffff",
        );
        let mut wire = vec![0x80, 0x03, 0x00, 0x01, 0x00];
        wire.extend_from_slice(&((10 + block.len()) as u32).to_be_bytes()[1..]);
        wire.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        wire.extend_from_slice(&block);
        let mut c = Codec::new();
        let f = c.decode(&mut BytesMut::from(&wire[..])).unwrap().unwrap();
        match f {
            Frame::SynStream {
                stream_id, headers, ..
            } => {
                assert_eq!(stream_id, 1);
                assert_eq!(header(&headers, "streamtype"), Some("error"));
                assert_eq!(header(&headers, "port"), Some("8080"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn skips_unknown_control_frames_and_rejects_other_versions() {
        let mut c = Codec::new();
        let mut buf = BytesMut::from(
            &[
                0x80, 0x03, 0x00, 0x0a, 0, 0, 0, 2, 0xaa, 0xbb, // CREDENTIAL-ish, unknown
                0x80, 0x03, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 2,
            ][..],
        );
        assert_eq!(c.decode(&mut buf).unwrap(), Some(Frame::Ping { id: 2 }));
        let mut buf = BytesMut::from(&[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 2][..]);
        assert!(c.decode(&mut buf).is_err());
    }

    #[tokio::test]
    async fn session_streams_ping_and_close() {
        let (a, b) = tokio::io::duplex(1024);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        let client = Session::spawn(ar, aw, Role::Client);
        let mut server = Session::spawn(br, bw, Role::Server);
        client.handle.ping().await.unwrap();
        server.handle.ping().await.unwrap();

        let mut s1 = client
            .handle
            .open(h(&[("streamtype", "data")]))
            .await
            .unwrap();
        assert_eq!(s1.id, 1);
        let mut r1 = server.incoming.recv().await.unwrap();
        assert_eq!(header(&r1.headers, "streamtype"), Some("data"));
        r1.writer.reply(Vec::new()).await.unwrap();
        // More than a window's worth, to exercise WINDOW_UPDATEs.
        let big = Bytes::from(vec![7u8; 300 * 1024]);
        let w = s1.writer.clone();
        let send = tokio::spawn(async move {
            w.write(big).await.unwrap();
            w.finish().await.unwrap();
        });
        let mut n = 0;
        while let Some(d) = r1.reader.read().await {
            assert!(d.iter().all(|b| *b == 7));
            n += d.len();
        }
        assert_eq!(n, 300 * 1024);
        send.await.unwrap();
        r1.writer.write(Bytes::from_static(b"back")).await.unwrap();
        r1.writer.finish().await.unwrap();
        assert_eq!(s1.reader.read().await.unwrap(), Bytes::from_static(b"back"));
        assert!(s1.reader.read().await.is_none());

        // A reset ends the reader.
        let mut s3 = client.handle.open(Vec::new()).await.unwrap();
        assert_eq!(s3.id, 3);
        let r3 = server.incoming.recv().await.unwrap();
        r3.writer.reset(RST_CANCEL).await.unwrap();
        assert!(s3.reader.read().await.is_none());

        client.handle.close().await;
        server.handle.closed().await;
        assert!(server.incoming.recv().await.is_none());
    }

    /// Reads raw frames as the peer sees them.
    async fn next_frame<R: AsyncRead + Unpin>(
        r: &mut R,
        codec: &mut Codec,
        buf: &mut BytesMut,
    ) -> Option<Frame> {
        loop {
            if let Some(f) = codec.decode(buf).unwrap() {
                return Some(f);
            }
            if r.read_buf(buf).await.unwrap() == 0 {
                return None;
            }
        }
    }

    #[tokio::test]
    async fn server_close_names_the_last_stream_and_ends_the_connection() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (mut ar, mut aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        let mut server = Session::spawn(br, bw, Role::Server);
        // A raw client opens streams 1 and 3, FINs the second at once.
        let mut codec = Codec::new();
        let mut wire = BytesMut::new();
        for (id, flags) in [(1, 0), (3, FLAG_FIN)] {
            codec
                .encode(
                    &Frame::SynStream {
                        stream_id: id,
                        associated_id: 0,
                        priority: 0,
                        flags,
                        headers: h(&[("streamtype", "stdout")]),
                    },
                    &mut wire,
                )
                .unwrap();
        }
        aw.write_all(&wire).await.unwrap();
        let s1 = server.incoming.recv().await.unwrap();
        let mut s3 = server.incoming.recv().await.unwrap();
        // A stream opened with FIN has nothing to read.
        assert!(s3.reader.read().await.is_none());
        s1.writer.reply(Vec::new()).await.unwrap();
        s1.writer.write(Bytes::from_static(b"out")).await.unwrap();
        s1.writer.finish().await.unwrap();
        server.handle.close().await;
        // The peer sees, in order: reply, data, FIN, GOAWAY(3), then EOF.
        let mut rx = Codec::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        while let Some(f) = next_frame(&mut ar, &mut rx, &mut buf).await {
            got.push(f);
        }
        assert_eq!(
            got,
            vec![
                Frame::SynReply {
                    stream_id: 1,
                    flags: 0,
                    headers: Vec::new()
                },
                Frame::Data {
                    stream_id: 1,
                    flags: 0,
                    data: Bytes::from_static(b"out")
                },
                Frame::Data {
                    stream_id: 1,
                    flags: FLAG_FIN,
                    data: Bytes::new()
                },
                Frame::GoAway {
                    last_good_stream_id: 3,
                    status: 0
                },
            ]
        );
    }

    #[tokio::test]
    async fn abort_ends_readers_of_a_peer_that_never_closes() {
        let (a, b) = tokio::io::duplex(1024);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        let client = Session::spawn(ar, aw, Role::Client);
        let mut server = Session::spawn(br, bw, Role::Server);
        let _s = client.handle.open(Vec::new()).await.unwrap();
        let mut r = server.incoming.recv().await.unwrap();
        server.handle.abort();
        let t = std::time::Duration::from_secs(5);
        assert!(
            tokio::time::timeout(t, r.reader.read())
                .await
                .unwrap()
                .is_none()
        );
        tokio::time::timeout(t, server.handle.closed())
            .await
            .unwrap();
    }
}

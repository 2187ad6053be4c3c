//! Container logs from CRI-format files (`<RFC3339Nano> <stream> <F|P> <text>`),
//! as the kubelet serves `/containerLogs`: rotated files (`path.N`, larger is
//! older) then the current one; `tailLines`, `since*`, `timestamps`,
//! `limitBytes`; `follow` polls the file, survives rotation, and ends once
//! the container has stopped and its file is drained.

use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

/// How often a followed file is polled.
const POLL: Duration = Duration::from_millis(100);
/// Bytes read from a file before the follower looks around again.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogOptions {
    pub follow: bool,
    pub tail_lines: Option<usize>,
    pub since: Option<DateTime<Utc>>,
    pub timestamps: bool,
    pub previous: bool,
    pub limit_bytes: Option<u64>,
}

/// Go's `strconv.ParseBool`, which the kubelet's query decoding uses.
pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid boolean value {v:?}")),
    }
}

impl LogOptions {
    pub fn from_query(q: &[(String, String)]) -> Result<LogOptions, String> {
        let get = |k: &str| {
            q.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        let flag = |k: &str| {
            get(k)
                .map(parse_bool)
                .transpose()
                .map(|b| b.unwrap_or(false))
        };
        let int = |k: &str| {
            get(k)
                .filter(|v| !v.is_empty())
                .map(|v| {
                    v.parse::<i64>()
                        .map_err(|_| format!("invalid value {v:?} for {k}"))
                })
                .transpose()
        };
        let mut o = LogOptions {
            follow: flag("follow")?,
            timestamps: flag("timestamps")?,
            previous: flag("previous")?,
            ..Default::default()
        };
        if let Some(n) = int("tailLines")? {
            if n < 0 {
                return Err("tailLines: Invalid value: must be greater than or equal to 0".into());
            }
            o.tail_lines = Some(n as usize);
        }
        if let Some(n) = int("limitBytes")? {
            if n < 1 {
                return Err("limitBytes: Invalid value: must be greater than 0".into());
            }
            o.limit_bytes = Some(n as u64);
        }
        if let Some(s) = int("sinceSeconds")? {
            if s < 1 {
                return Err("sinceSeconds: Invalid value: must be greater than 0".into());
            }
            o.since = Some(Utc::now() - chrono::Duration::seconds(s));
        }
        if let Some(t) = get("sinceTime").filter(|t| !t.is_empty()) {
            if o.since.is_some() {
                return Err("at most one of `sinceTime` or `sinceSeconds` may be specified".into());
            }
            let t = DateTime::parse_from_rfc3339(t)
                .map_err(|e| format!("invalid sinceTime {t:?}: {e}"))?;
            o.since = Some(t.with_timezone(&Utc));
        }
        Ok(o)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    Stdout,
    Stderr,
}

/// One line of a CRI log file.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub time: DateTime<Utc>,
    pub stream: StreamKind,
    /// `P`: the line continues in the next record of the same stream.
    pub partial: bool,
    pub content: Vec<u8>,
}

pub fn parse_record(line: &[u8]) -> Option<Record> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let time = DateTime::parse_from_rfc3339(time).ok()?.with_timezone(&Utc);
    let stream = match parts.next()? {
        b"stdout" => StreamKind::Stdout,
        b"stderr" => StreamKind::Stderr,
        _ => return None,
    };
    // Tags are colon-separated; the first says full or partial.
    let tag = parts.next()?;
    let partial = tag.split(|b| *b == b':').next() == Some(b"P");
    let content = parts.next().unwrap_or(b"").to_vec();
    Some(Record {
        time,
        stream,
        partial,
        content,
    })
}

/// Go's `time.RFC3339Nano` for a UTC time: trailing zeros of the fraction
/// dropped, and the fraction too when it is zero.
pub fn format_rfc3339_nano(t: &DateTime<Utc>) -> String {
    let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let ns = t.timestamp_subsec_nanos().min(999_999_999);
    if ns > 0 {
        let frac = format!("{ns:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// A whole log line (partials joined), newline included.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub time: DateTime<Utc>,
    pub stream: StreamKind,
    pub content: Vec<u8>,
}

/// Joins `P` records with their continuation, per stream.
#[derive(Default)]
pub struct Assembler {
    pending: [Option<Line>; 2],
}

impl Assembler {
    pub fn push(&mut self, r: Record) -> Option<Line> {
        let slot = &mut self.pending[r.stream as usize];
        let mut line = slot.take().unwrap_or(Line {
            time: r.time,
            stream: r.stream,
            content: Vec::new(),
        });
        line.content.extend_from_slice(&r.content);
        if r.partial {
            *slot = Some(line);
            None
        } else {
            line.content.push(b'\n');
            Some(line)
        }
    }
}

/// The rotated siblings of `current` (`current.N`), oldest first, then
/// `current` itself.
pub fn log_files(current: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = Vec::new();
    if let (Some(dir), Some(name)) = (current.parent(), current.file_name()) {
        let prefix = format!("{}.", name.to_string_lossy());
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if let Some(num) = n.strip_prefix(&prefix).and_then(|s| s.parse::<u32>().ok()) {
                    rotated.push((num, e.path()));
                }
            }
        }
    }
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    files.push(current.to_path_buf());
    files
}

/// Receives complete raw lines from a followed file.
pub(super) trait LineSink {
    /// false = stop reading.
    async fn line(&mut self, raw: &[u8]) -> bool;
    /// The consumer has gone away.
    fn closed(&self) -> bool;
}

/// An open log file read incrementally; keeps the bytes of an unfinished
/// last line until its newline arrives.
pub(super) struct Tail {
    file: tokio::fs::File,
    ino: u64,
    pos: u64,
    pending: Vec<u8>,
}

enum Change {
    None,
    Replaced,
    Truncated,
}

impl Tail {
    /// Opens `path` at its start, or at its end with `at_end`; None when it
    /// does not exist.
    pub async fn open(path: &Path, at_end: bool) -> io::Result<Option<Tail>> {
        let mut file = match tokio::fs::File::open(path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = file.metadata().await?;
        let pos = if at_end {
            file.seek(io::SeekFrom::End(0)).await?
        } else {
            0
        };
        Ok(Some(Tail {
            file,
            ino: meta.ino(),
            pos,
            pending: Vec::new(),
        }))
    }

    /// Reads what is there now and hands complete lines to `sink`.
    /// Returns (read anything, sink wants more).
    pub async fn pump<S: LineSink>(&mut self, sink: &mut S) -> io::Result<(bool, bool)> {
        let mut any = false;
        let mut buf = vec![0u8; READ_CHUNK];
        for _ in 0..16 {
            let n = self.file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            any = true;
            self.pos += n as u64;
            let mut chunk = &buf[..n];
            while let Some(i) = chunk.iter().position(|b| *b == b'\n') {
                let more = if self.pending.is_empty() {
                    sink.line(&chunk[..=i]).await
                } else {
                    self.pending.extend_from_slice(&chunk[..=i]);
                    let line = std::mem::take(&mut self.pending);
                    sink.line(&line).await
                };
                if !more {
                    return Ok((true, false));
                }
                chunk = &chunk[i + 1..];
            }
            self.pending.extend_from_slice(chunk);
        }
        Ok((any, true))
    }

    async fn change(&self, path: &Path) -> Change {
        match tokio::fs::metadata(path).await {
            Ok(m) if m.ino() != self.ino => Change::Replaced,
            Ok(m) if m.len() < self.pos => Change::Truncated,
            _ => Change::None,
        }
    }
}

/// Follows `path` (starting from `tail` when given) until the sink stops,
/// or `running()` turns false and the file is drained.
pub(super) async fn follow<S: LineSink>(
    path: &Path,
    mut tail: Option<Tail>,
    sink: &mut S,
    running: impl Fn() -> bool,
) -> io::Result<()> {
    loop {
        let Some(t) = tail.as_mut() else {
            tail = Tail::open(path, false).await?;
            if tail.is_none() {
                if sink.closed() || !running() {
                    return Ok(());
                }
                tokio::time::sleep(POLL).await;
            }
            continue;
        };
        let (any, more) = t.pump(sink).await?;
        if !more {
            return Ok(());
        }
        if any {
            continue;
        }
        if sink.closed() {
            return Ok(());
        }
        match t.change(path).await {
            Change::Replaced => {
                // Drain what the writer added before renaming it away.
                let (_, more) = t.pump(sink).await?;
                if !more {
                    return Ok(());
                }
                tail = Tail::open(path, false).await?;
                continue;
            }
            Change::Truncated => {
                t.file.seek(io::SeekFrom::Start(0)).await?;
                t.pos = 0;
                t.pending.clear();
                continue;
            }
            Change::None => {}
        }
        if !running() {
            // The writer is gone: one last read, then done.
            t.pump(sink).await?;
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Where log output goes: applies `since`, `timestamps`, `limitBytes`, and
/// buffers the last `tailLines` while reading history.
pub(super) struct LogSink {
    tx: mpsc::Sender<Bytes>,
    opts: LogOptions,
    asm: Assembler,
    remaining: Option<u64>,
    /// Some while reading history with `tailLines`.
    tail: Option<VecDeque<Line>>,
}

impl LogSink {
    pub fn new(tx: mpsc::Sender<Bytes>, opts: LogOptions) -> LogSink {
        LogSink {
            tx,
            remaining: opts.limit_bytes,
            tail: opts
                .tail_lines
                .map(|n| VecDeque::with_capacity(n.min(4096))),
            opts,
            asm: Assembler::default(),
        }
    }

    async fn emit(&mut self, line: &Line) -> bool {
        let mut out = Vec::with_capacity(line.content.len() + 32);
        if self.opts.timestamps {
            out.extend_from_slice(format_rfc3339_nano(&line.time).as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&line.content);
        if let Some(rem) = self.remaining.as_mut() {
            if (out.len() as u64) >= *rem {
                out.truncate(*rem as usize);
                *rem = 0;
            } else {
                *rem -= out.len() as u64;
            }
        }
        if self.tx.send(Bytes::from(out)).await.is_err() {
            return false;
        }
        self.remaining != Some(0)
    }

    /// Ends the history phase: writes the buffered tail.
    pub async fn flush_tail(&mut self) -> bool {
        if let Some(lines) = self.tail.take() {
            for l in lines {
                if !self.emit(&l).await {
                    return false;
                }
            }
        }
        true
    }
}

impl LineSink for LogSink {
    async fn line(&mut self, raw: &[u8]) -> bool {
        let Some(rec) = parse_record(raw) else {
            return true;
        };
        let Some(line) = self.asm.push(rec) else {
            return true;
        };
        if self.opts.since.is_some_and(|s| line.time < s) {
            return true;
        }
        match (&mut self.tail, self.opts.tail_lines) {
            (Some(buf), Some(n)) => {
                if n > 0 {
                    if buf.len() == n {
                        buf.pop_front();
                    }
                    buf.push_back(line);
                }
                true
            }
            _ => self.emit(&line).await,
        }
    }
    fn closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Writes the log of one container instance to `tx`: the history, and with
/// `follow` whatever comes next while `running()` holds.
pub async fn stream(
    current: PathBuf,
    opts: LogOptions,
    tx: mpsc::Sender<Bytes>,
    running: impl Fn() -> bool,
) -> io::Result<()> {
    let follow_on = opts.follow;
    let mut sink = LogSink::new(tx, opts);
    let files = log_files(&current);
    let last = files.len() - 1;
    let mut current_tail = None;
    for (i, path) in files.iter().enumerate() {
        let Some(mut t) = Tail::open(path, false).await? else {
            continue;
        };
        loop {
            let (any, more) = t.pump(&mut sink).await?;
            if !more {
                return Ok(());
            }
            if !any {
                break;
            }
        }
        if i == last {
            current_tail = Some(t);
        }
    }
    if !sink.flush_tail().await || !follow_on {
        return Ok(());
    }
    follow(&current, current_tail, &mut sink, running).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records() {
        let r = parse_record(b"2016-10-06T00:17:09.669794202Z stdout F some log\n").unwrap();
        assert_eq!(r.stream, StreamKind::Stdout);
        assert!(!r.partial);
        assert_eq!(r.content, b"some log");
        assert_eq!(
            format_rfc3339_nano(&r.time),
            "2016-10-06T00:17:09.669794202Z"
        );
        let r = parse_record(b"2016-10-06T00:17:09.5Z stderr P part").unwrap();
        assert!(r.partial);
        assert_eq!(r.stream, StreamKind::Stderr);
        let r = parse_record(b"2016-10-06T00:17:09Z stdout F ").unwrap();
        assert_eq!(r.content, b"");
        assert!(parse_record(b"garbage").is_none());
        assert!(parse_record(b"2016-10-06T00:17:09Z stdin F x").is_none());
    }

    #[test]
    fn go_rfc3339_nano() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            format_rfc3339_nano(&t("2024-01-02T03:04:05.120000000Z")),
            "2024-01-02T03:04:05.12Z"
        );
        assert_eq!(
            format_rfc3339_nano(&t("2024-01-02T03:04:05.000000000Z")),
            "2024-01-02T03:04:05Z"
        );
        assert_eq!(
            format_rfc3339_nano(&t("2024-01-02T05:04:05.5+02:00")),
            "2024-01-02T03:04:05.5Z"
        );
    }

    #[test]
    fn joins_partials_per_stream() {
        let mut a = Assembler::default();
        let rec = |s: &str| parse_record(s.as_bytes()).unwrap();
        assert!(a.push(rec("2024-01-01T00:00:01Z stdout P hel")).is_none());
        let e = a.push(rec("2024-01-01T00:00:02Z stderr F err")).unwrap();
        assert_eq!(e.content, b"err\n");
        let l = a.push(rec("2024-01-01T00:00:03Z stdout F lo")).unwrap();
        assert_eq!(l.content, b"hello\n");
        assert_eq!(format_rfc3339_nano(&l.time), "2024-01-01T00:00:01Z");
    }

    #[test]
    fn options() {
        let q = |s: &str| -> Vec<(String, String)> {
            form_urlencoded::parse(s.as_bytes()).into_owned().collect()
        };
        let o = LogOptions::from_query(&q("follow=true&tailLines=10&timestamps=1&limitBytes=5"))
            .unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!(o.tail_lines, Some(10));
        assert_eq!(o.limit_bytes, Some(5));
        let o = LogOptions::from_query(&q("sinceTime=2024-01-01T00:00:00Z")).unwrap();
        assert_eq!(o.since.unwrap().timestamp(), 1_704_067_200);
        assert!(LogOptions::from_query(&q("tailLines=-1")).is_err());
        assert!(LogOptions::from_query(&q("follow=maybe")).is_err());
        assert!(
            LogOptions::from_query(&q("sinceSeconds=5&sinceTime=2024-01-01T00:00:00Z")).is_err()
        );
    }

    #[test]
    fn rotated_files_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let cur = dir.path().join("0.log");
        for n in [
            "0.log", "0.log.1", "0.log.2", "0.log.10", "0.log.x", "1.log",
        ] {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        let files: Vec<String> = log_files(&cur)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(files, ["0.log.10", "0.log.2", "0.log.1", "0.log"]);
    }
}

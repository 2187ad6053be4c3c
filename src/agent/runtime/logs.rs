//! Container output to a CRI-format log file
//! (`2016-10-06T00:17:09.669794202Z stdout F line`), rotated by size.
//!
//! Rotation keeps `path` (current) and `path.1` … `path.<N-1>` (older;
//! higher = older), N = `max_files` in all. The kubelet reading `path`
//! follows renames by reopening it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A line longer than this is split into `P` records (containerd's limit).
pub const MAX_LINE: usize = 16 * 1024;

pub struct Rotation {
    pub max_size: u64,
    pub max_files: usize,
}

impl Rotation {
    /// 10 MiB × 5 files unless `SKIFF_CONTAINER_LOG_MAX_SIZE` (bytes) or
    /// `SKIFF_CONTAINER_LOG_MAX_FILES` say otherwise (kubelet's
    /// containerLogMaxSize/containerLogMaxFiles).
    pub fn from_env() -> Rotation {
        let get = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
        Rotation {
            max_size: get("SKIFF_CONTAINER_LOG_MAX_SIZE")
                .unwrap_or(10 << 20)
                .max(4096),
            max_files: get("SKIFF_CONTAINER_LOG_MAX_FILES").unwrap_or(5).max(1) as usize,
        }
    }
}

/// The log file of one container, shared by its stdout and stderr.
pub struct CriLog {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_size: u64,
    max_files: usize,
}

impl CriLog {
    pub fn open(path: &Path, rot: &Rotation) -> std::io::Result<CriLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(CriLog {
            path: path.to_path_buf(),
            file: Some(file),
            size,
            max_size: rot.max_size,
            max_files: rot.max_files,
        })
    }

    fn rotate(&mut self) {
        self.file = None;
        if self.max_files <= 1 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let name = |i: usize| {
                let mut s = self.path.clone().into_os_string();
                s.push(format!(".{i}"));
                PathBuf::from(s)
            };
            let _ = std::fs::remove_file(name(self.max_files - 1));
            for i in (1..self.max_files - 1).rev() {
                let _ = std::fs::rename(name(i), name(i + 1));
            }
            let _ = std::fs::rename(&self.path, name(1));
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .ok();
        self.size = 0;
    }

    /// Appends one record; write errors (disk full) drop the record rather
    /// than stall the container.
    pub fn record(&mut self, stream: &str, partial: bool, msg: &[u8]) {
        let ts = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.9fZ");
        let mut line = Vec::with_capacity(msg.len() + 48);
        let _ = write!(line, "{ts} {stream} {} ", if partial { "P" } else { "F" });
        line.extend_from_slice(msg);
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.max_size {
            self.rotate();
        }
        if let Some(f) = &mut self.file
            && f.write_all(&line).is_ok()
        {
            self.size += line.len() as u64;
        }
    }
}

/// Splits one stream's bytes into CRI records.
#[derive(Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Feeds `data`; complete lines become `F` records, runs of `MAX_LINE`
    /// bytes without a newline become `P` records.
    pub fn feed(&mut self, data: &[u8], stream: &str, log: &mut CriLog) {
        self.buf.extend_from_slice(data);
        let mut start = 0;
        loop {
            let rest = &self.buf[start..];
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) if i <= MAX_LINE => {
                    let mut line = &rest[..i];
                    // A CRLF from a tty: drop the CR as containerd does.
                    if line.last() == Some(&b'\r') {
                        line = &line[..line.len() - 1];
                    }
                    log.record(stream, false, line);
                    start += i + 1;
                }
                _ if rest.len() >= MAX_LINE => {
                    log.record(stream, true, &rest[..MAX_LINE]);
                    start += MAX_LINE;
                }
                _ => break,
            }
        }
        self.buf.drain(..start);
    }

    /// End of stream: what is left is a final, unterminated line.
    pub fn finish(&mut self, stream: &str, log: &mut CriLog) {
        if !self.buf.is_empty() {
            log.record(stream, false, &self.buf);
            self.buf.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let rot = Rotation {
            max_size: 4096,
            max_files: 3,
        };
        let mut log = CriLog::open(&p, &rot).unwrap();
        let mut sp = LineSplitter::default();
        sp.feed(b"hello\nwor", "stdout", &mut log);
        sp.feed(b"ld\n", "stdout", &mut log);
        sp.finish("stdout", &mut log);
        let s = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with(" stdout F hello"), "{}", lines[0]);
        assert!(lines[1].ends_with(" stdout F world"));
        let big = vec![b'a'; MAX_LINE + 10];
        sp.feed(&big, "stderr", &mut log);
        sp.feed(b"\n", "stderr", &mut log);
        // Rotation happened (each record > 4 KiB would overflow).
        let all: String = [
            p.clone(),
            dir.path().join("c.log.1"),
            dir.path().join("c.log.2"),
        ]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .collect();
        assert!(all.contains(" stderr P aaaa"));
        assert!(all.contains(&format!(" stderr F {}\n", "a".repeat(10))));
        assert!(dir.path().join("c.log.1").exists());
    }
}

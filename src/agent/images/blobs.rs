//! Content-addressed blobs under `blobs/sha256/<hex>`.
//!
//! A blob is written under a temporary name in the same directory, hashed
//! as it is written, checked against its expected digest, fsynced and only
//! then renamed to its digest. Anything that fails on the way (a network
//! error, a digest mismatch, a full disk, a panic) drops the writer, which
//! unlinks the temporary file: the store never holds a half-written or
//! unverified blob under a digest name.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::digest::{Hasher, sha256_hex};

/// Prefix of temporary names; whatever carries it is garbage once no
/// operation holds the store lock.
pub const TMP_PREFIX: &str = ".tmp-";

#[derive(Clone, Debug)]
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    pub fn new(dir: PathBuf) -> BlobStore {
        BlobStore { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.dir.join(sha256_hex(digest)?))
    }

    pub fn exists(&self, digest: &str) -> bool {
        self.path(digest).map(|p| p.is_file()).unwrap_or(false)
    }

    /// Size of a stored blob.
    pub fn size(&self, digest: &str) -> Result<u64> {
        let p = self.path(digest)?;
        Ok(fs::metadata(&p)
            .with_context(|| format!("blob {digest} is missing"))?
            .len())
    }

    pub fn writer(&self) -> Result<BlobWriter> {
        let tmp = self.dir.join(format!(
            "{TMP_PREFIX}{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        Ok(BlobWriter {
            file: Some(file),
            tmp,
            dir: self.dir.clone(),
            hasher: Hasher::default(),
        })
    }

    /// Stores small content (manifests, configs) held in memory.
    pub fn put(&self, bytes: &[u8], expected: Option<&str>) -> Result<String> {
        let mut w = self.writer()?;
        w.write_all(bytes)?;
        w.commit(expected)
    }

    /// Links a complete file whose digest the caller computed (an archive's
    /// staged member) into the store. `path` must be on the store's
    /// filesystem; it stays usable (several images may share a member).
    pub fn adopt(&self, path: &Path, digest: &str) -> Result<()> {
        let dst = self.path(digest)?;
        if dst.is_file() {
            return Ok(());
        }
        File::open(path)?.sync_all()?;
        match fs::hard_link(path, &dst) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("linking {} to {}", path.display(), dst.display()));
            }
        }
        sync_dir(&self.dir)
    }

    pub fn remove(&self, digest: &str) -> Result<()> {
        match fs::remove_file(self.path(digest)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Digests of every committed blob.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let name = e?.file_name();
            let Some(name) = name.to_str() else { continue };
            let d = format!("sha256:{name}");
            if sha256_hex(&d).is_ok() {
                out.push(d);
            }
        }
        Ok(out)
    }
}

pub struct BlobWriter {
    file: Option<File>,
    tmp: PathBuf,
    dir: PathBuf,
    hasher: Hasher,
}

impl BlobWriter {
    /// Verifies the content against `expected` (when given), makes it
    /// durable and names it by its digest. Returns the digest.
    pub fn commit(mut self, expected: Option<&str>) -> Result<String> {
        let actual = self.hasher.digest();
        if let Some(exp) = expected
            && exp != actual
        {
            bail!(
                "digest mismatch: expected {exp}, got {actual} ({} bytes); the content was discarded",
                self.hasher.len()
            );
        }
        let file = self.file.take().expect("writer used after commit");
        file.sync_all().context("fsync of blob")?;
        drop(file);
        let dst = self.dir.join(sha256_hex(&actual)?);
        fs::rename(&self.tmp, &dst)
            .with_context(|| format!("renaming {} to {}", self.tmp.display(), dst.display()))?;
        // Committed: nothing left to clean up.
        self.tmp = PathBuf::new();
        sync_dir(&self.dir)?;
        Ok(actual)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already committed"))?;
        let n = f.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            drop(self.file.take());
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync of {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::images::digest::digest_of;

    #[test]
    fn commit_verifies_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path().to_path_buf());
        let good = digest_of(b"hello");
        assert_eq!(store.put(b"hello", Some(&good)).unwrap(), good);
        assert!(store.exists(&good));
        let bad = digest_of(b"other");
        let err = store.put(b"hello!", Some(&bad)).unwrap_err();
        assert!(format!("{err}").contains("digest mismatch"), "{err}");
        assert!(!store.exists(&bad));
        // Only the committed blob is left: no temporary file.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        {
            let mut w = store.writer().unwrap();
            w.write_all(b"partial").unwrap();
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(store.list().unwrap(), vec![good]);
    }
}

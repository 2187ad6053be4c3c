//! sha256 digests: parsing, hashing readers and writers.

use std::io::{self, Read, Write};

use anyhow::{Result, bail};
use sha2::{Digest as _, Sha256};

/// Validates an `sha256:<64 lowercase hex>` digest and returns its hex part.
/// Other algorithms are refused: the store is addressed by sha256 only, as
/// every registry and tool in practice produces.
pub fn sha256_hex(digest: &str) -> Result<&str> {
    let Some(hex) = digest.strip_prefix("sha256:") else {
        bail!("unsupported digest {digest:?}: only sha256 is supported");
    };
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        bail!("malformed digest {digest:?}");
    }
    Ok(hex)
}

/// `sha256:<hex>` of a byte slice.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Incremental sha256 with a byte count.
#[derive(Default, Clone)]
pub struct Hasher {
    sha: Sha256,
    len: u64,
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
        self.len += bytes.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// `sha256:<hex>` of everything seen so far.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.sha.clone().finalize()))
    }
}

/// A reader that hashes what passes through it.
pub struct HashingReader<R> {
    inner: R,
    pub hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::default(),
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A writer that hashes what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    pub hasher: Hasher,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::default(),
        }
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_digests() {
        let d = digest_of(b"");
        assert_eq!(
            d,
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(sha256_hex(&d).is_ok());
        assert!(sha256_hex("sha512:abcd").is_err());
        assert!(sha256_hex("sha256:../../etc/passwd").is_err());
        assert!(sha256_hex(&d.to_uppercase()).is_err());
    }
}

//! Unpacking one layer (tar, gzip or zstd) into its own directory in the
//! form overlayfs reads as a lower layer: a whiteout `.wh.<name>` becomes a
//! character device 0/0 named `<name>`, an opaque marker `.wh..wh..opq`
//! becomes the `trusted.overlay.opaque=y` xattr on its directory.
//!
//! Entries never reach outside the layer directory: `..` components are
//! refused, and so is an entry whose parent path crosses a symlink (within a
//! single layer directory, the only way to write through a symlink is an
//! escape attempt). Layers are composed by overlayfs, so symlinks in lower
//! layers are never followed here.

use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use super::digest::HashingReader;

const WHITEOUT_PREFIX: &str = ".wh.";
const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// By magic bytes, not media type: registries and tools mislabel
    /// layers, and the OCI media types have no constant for zstd in the client.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// OCI media type of a layer with this compression.
    pub fn layer_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// Detects the compression of a file.
pub fn detect_file(path: &Path) -> Result<Compression> {
    let mut head = [0u8; 4];
    let mut f = File::open(path)?;
    let mut n = 0;
    while n < head.len() {
        let r = f.read(&mut head[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    Ok(Compression::detect(&head[..n]))
}

/// A decompressing reader chosen by the stream's magic bytes.
pub fn decompress<'a, R: BufRead + 'a>(mut r: R) -> io::Result<Box<dyn Read + 'a>> {
    let c = Compression::detect(r.fill_buf()?);
    Ok(match c {
        Compression::None => Box::new(r),
        // Multi-member: pigz and some builders write several gzip members.
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(ZstdReader::new(r)),
    })
}

/// Streaming zstd with several frames and skippable frames (zstd:chunked
/// layers consist of many frames plus a skippable manifest frame).
struct ZstdReader<R> {
    src: R,
    dec: ruzstd::decoding::FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> ZstdReader<R> {
    fn new(src: R) -> Self {
        let mut dec = ruzstd::decoding::FrameDecoder::new();
        // `zstd --long` windows reach 128 MiB (2^27).
        dec.set_max_window_size(1 << 27);
        ZstdReader {
            src,
            dec,
            in_frame: false,
        }
    }
}

impl<R: BufRead> Read for ZstdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if self.src.fill_buf()?.is_empty() {
                    return Ok(0);
                }
                let mut magic = [0u8; 4];
                self.src.read_exact(&mut magic)?;
                let m = u32::from_le_bytes(magic);
                if m & 0xFFFF_FFF0 == 0x184D_2A50 {
                    let mut len = [0u8; 4];
                    self.src.read_exact(&mut len)?;
                    let len = u64::from(u32::from_le_bytes(len));
                    let skipped = io::copy(&mut (&mut self.src).take(len), &mut io::sink())?;
                    if skipped != len {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "truncated zstd skippable frame",
                        ));
                    }
                    continue;
                }
                self.dec
                    .reset(io::Cursor::new(magic).chain(&mut self.src))
                    .map_err(io::Error::other)?;
                self.in_frame = true;
            }
            if self.dec.can_collect() > 0 {
                return self.dec.read(buf);
            }
            if self.dec.is_finished() {
                self.in_frame = false;
                continue;
            }
            self.dec
                .decode_blocks(
                    &mut self.src,
                    ruzstd::decoding::BlockDecodingStrategy::UptoBlocks(1),
                )
                .map_err(io::Error::other)?;
        }
    }
}

#[derive(Debug, Clone)]
pub struct Unpacked {
    /// Bytes of regular file content written.
    pub size: u64,
}

/// Unpacks the layer blob at `blob` into the (empty, existing) directory
/// `dest`, checking that the uncompressed stream hashes to
/// `expected_diff_id` when given. On error `dest` is left for the caller
/// to remove (it is a temporary directory).
pub fn unpack_layer(blob: &Path, dest: &Path, expected_diff_id: Option<&str>) -> Result<Unpacked> {
    let file = File::open(blob).with_context(|| format!("opening {}", blob.display()))?;
    let reader = BufReader::with_capacity(256 * 1024, file);
    let mut hashing = HashingReader::new(decompress(reader)?);
    let mut size = 0u64;
    let mut dirs: Vec<(PathBuf, Times)> = Vec::new();
    {
        let mut archive = tar::Archive::new(&mut hashing);
        for entry in archive.entries().context("reading layer tar")? {
            let mut entry = entry.context("reading layer tar entry")?;
            size += apply_entry(dest, &mut entry, &mut dirs).with_context(|| {
                format!(
                    "layer entry {:?}",
                    String::from_utf8_lossy(&entry.path_bytes())
                )
            })?;
        }
    }
    // The diff ID covers the whole uncompressed stream, end-of-archive
    // padding included.
    io::copy(&mut hashing, &mut io::sink()).context("reading layer tail")?;
    let diff_id = hashing.hasher.digest();
    if let Some(exp) = expected_diff_id
        && exp != diff_id
    {
        bail!(
            "layer content does not match the image config: expected diff ID {exp}, got {diff_id}"
        );
    }
    // Directory times last: creating their children changed them.
    for (path, t) in dirs.iter().rev() {
        set_times(path, *t)?;
    }
    // One syncfs makes the whole layer durable before it is renamed into
    // place; cheaper than an fsync per file.
    let d = File::open(dest)?;
    // SAFETY: syncfs on a valid open file descriptor.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error()).context("syncfs");
    }
    Ok(Unpacked { size })
}

#[derive(Clone, Copy, Debug)]
struct Times {
    sec: i64,
    nsec: i64,
}

/// Entry metadata, with PAX overrides applied.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: Times,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn meta<R: Read>(entry: &mut tar::Entry<R>) -> Result<Meta> {
    let h = entry.header();
    let mut uid = h.uid().unwrap_or(0);
    let mut gid = h.gid().unwrap_or(0);
    let mode = h.mode().unwrap_or(0o644) & 0o7777;
    let mut mtime = Times {
        sec: h.mtime().map(|m| m as i64).unwrap_or(0),
        nsec: 0,
    };
    let mut xattrs = Vec::new();
    if let Some(pax) = entry.pax_extensions()? {
        for ext in pax {
            let ext = ext?;
            let key = ext.key_bytes();
            let value = ext.value_bytes();
            let num = || {
                std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
            };
            match key {
                b"uid" => uid = num().unwrap_or(uid),
                b"gid" => gid = num().unwrap_or(gid),
                b"mtime" => {
                    if let Some(t) = std::str::from_utf8(value).ok().and_then(parse_pax_time) {
                        mtime = t;
                    }
                }
                _ => {
                    if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                        xattrs.push((name.to_vec(), value.to_vec()));
                    }
                }
            }
        }
    }
    Ok(Meta {
        uid: u32::try_from(uid).map_err(|_| anyhow!("uid {uid} out of range"))?,
        gid: u32::try_from(gid).map_err(|_| anyhow!("gid {gid} out of range"))?,
        mode,
        mtime,
        xattrs,
    })
}

fn parse_pax_time(s: &str) -> Option<Times> {
    let (sec, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let sec: i64 = sec.parse().ok()?;
    let mut nsec = 0i64;
    for (i, c) in frac.chars().take(9).enumerate() {
        nsec += i64::from(c.to_digit(10)?) * 10i64.pow(8 - i as u32);
    }
    Some(Times { sec, nsec })
}

/// The entry's path relative to the layer root; `None` for the root itself.
fn clean_path(raw: &[u8]) -> Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for c in Path::new(OsStr::from_bytes(raw)).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => bail!("path contains '..'"),
            Component::Prefix(_) => bail!("unsupported path"),
        }
    }
    Ok(if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    })
}

/// Makes sure every directory on the way to `rel` (excluded) exists inside
/// `root` and is a real directory, not a symlink.
fn ensure_parents(root: &Path, rel: &Path) -> Result<()> {
    match rel.parent() {
        Some(p) => ensure_dir(root, p),
        None => Ok(()),
    }
}

fn ensure_dir(root: &Path, rel: &Path) -> Result<()> {
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                bail!("path goes through the symlink {}", cur.display())
            }
            Ok(_) => bail!("path goes through the non-directory {}", cur.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&cur).with_context(|| format!("mkdir {}", cur.display()))?;
            }
            Err(e) => return Err(e).with_context(|| format!("lstat {}", cur.display())),
        }
    }
    Ok(())
}

/// Removes whatever is at `path`, unless it is a directory and `keep_dir`.
/// Returns whether a directory was kept.
fn clear(path: &Path, keep_dir: bool) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
        Ok(m) if m.is_dir() => {
            if keep_dir {
                Ok(true)
            } else {
                fs::remove_dir_all(path)?;
                Ok(false)
            }
        }
        Ok(_) => {
            fs::remove_file(path)?;
            Ok(false)
        }
    }
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| anyhow!("path contains NUL"))
}

fn mknod(path: &Path, kind: libc::mode_t, perm: u32, major: u32, minor: u32) -> Result<()> {
    let c = cpath(path)?;
    // SAFETY: valid NUL-terminated path.
    let r = unsafe { libc::mknod(c.as_ptr(), kind | perm, libc::makedev(major, minor)) };
    if r != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("mknod {}", path.display()));
    }
    Ok(())
}

fn lsetxattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c = cpath(path).map_err(io::Error::other)?;
    let n = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: valid path and name strings, value pointer/length from a slice.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_times(path: &Path, t: Times) -> Result<()> {
    let c = cpath(path)?;
    let ts = libc::timespec {
        tv_sec: t.sec as libc::time_t,
        tv_nsec: t.nsec as _,
    };
    let times = [ts, ts];
    // SAFETY: valid path, two timespecs, flags do not follow symlinks.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("utimensat {}", path.display()));
    }
    Ok(())
}

fn owner_mode_xattrs(path: &Path, m: &Meta, symlink: bool) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(m.uid), Some(m.gid))
        .with_context(|| format!("lchown {}", path.display()))?;
    if !symlink {
        // After chown, which clears set-id bits.
        fs::set_permissions(path, fs::Permissions::from_mode(m.mode))
            .with_context(|| format!("chmod {}", path.display()))?;
    }
    for (name, value) in &m.xattrs {
        // Image content must not forge overlayfs metadata (opaque dirs,
        // redirects) in the composed rootfs.
        if name.starts_with(b"trusted.overlay.") {
            continue;
        }
        if let Err(e) = lsetxattr(path, name, value) {
            tracing::warn!(
                path = %path.display(),
                xattr = %String::from_utf8_lossy(name),
                "cannot set xattr: {e}"
            );
        }
    }
    Ok(())
}

/// Applies one tar entry; returns the regular-file bytes written.
fn apply_entry<R: Read>(
    root: &Path,
    entry: &mut tar::Entry<R>,
    dirs: &mut Vec<(PathBuf, Times)>,
) -> Result<u64> {
    use tar::EntryType as T;
    let kind = entry.header().entry_type();
    if matches!(
        kind,
        T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink
    ) {
        return Ok(0);
    }
    let raw = entry.path_bytes().into_owned();
    let Some(rel) = clean_path(&raw)? else {
        // The layer root itself ("./"): take its mode and owner.
        if kind == T::Directory {
            let m = meta(entry)?;
            owner_mode_xattrs(root, &m, false)?;
            dirs.push((root.to_path_buf(), m.mtime));
        }
        return Ok(0);
    };
    let name = rel
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .unwrap_or_default();
    let parent = rel.parent().unwrap_or(Path::new(""));

    if name.starts_with(WHITEOUT_PREFIX.as_bytes()) {
        if name == WHITEOUT_OPAQUE.as_bytes() {
            ensure_dir(root, parent)?;
            let dir = root.join(parent);
            lsetxattr(&dir, OPAQUE_XATTR.as_bytes(), b"y")
                .with_context(|| format!("setting {OPAQUE_XATTR} on {}", dir.display()))?;
            return Ok(0);
        }
        if name.starts_with(WHITEOUT_META_PREFIX.as_bytes()) {
            // Other AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): never part of a rootfs.
            return Ok(0);
        }
        let hidden = &name[WHITEOUT_PREFIX.len()..];
        if hidden.is_empty() {
            bail!("empty whiteout name");
        }
        ensure_dir(root, parent)?;
        let target = root.join(parent).join(OsStr::from_bytes(hidden));
        clear(&target, false)?;
        mknod(&target, libc::S_IFCHR, 0, 0, 0)?;
        let m = meta(entry)?;
        std::os::unix::fs::lchown(&target, Some(m.uid), Some(m.gid))?;
        return Ok(0);
    }

    ensure_parents(root, &rel)?;
    let path = root.join(&rel);
    let m = meta(entry)?;
    match kind {
        T::Directory => {
            if !clear(&path, true)? {
                fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
            }
            owner_mode_xattrs(&path, &m, false)?;
            dirs.push((path, m.mtime));
            Ok(0)
        }
        T::Symlink => {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| anyhow!("symlink without a target"))?
                .into_owned();
            clear(&path, false)?;
            std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                .with_context(|| format!("symlink {}", path.display()))?;
            owner_mode_xattrs(&path, &m, true)?;
            set_times(&path, m.mtime)?;
            Ok(0)
        }
        T::Link => {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| anyhow!("hard link without a target"))?
                .into_owned();
            let target_rel =
                clean_path(&target)?.ok_or_else(|| anyhow!("hard link to the layer root"))?;
            if target_rel == rel {
                return Ok(0);
            }
            ensure_parents(root, &target_rel)?;
            let src = root.join(&target_rel);
            let md = fs::symlink_metadata(&src).with_context(|| {
                format!(
                    "hard link target {} is not in this layer",
                    target_rel.display()
                )
            })?;
            if md.is_dir() {
                bail!("hard link to a directory");
            }
            clear(&path, false)?;
            fs::hard_link(&src, &path).with_context(|| format!("link {}", path.display()))?;
            Ok(0)
        }
        T::Char | T::Block | T::Fifo => {
            let h = entry.header();
            let major = h.device_major().ok().flatten().unwrap_or(0);
            let minor = h.device_minor().ok().flatten().unwrap_or(0);
            let t = match kind {
                T::Char => libc::S_IFCHR,
                T::Block => libc::S_IFBLK,
                _ => libc::S_IFIFO,
            };
            clear(&path, false)?;
            mknod(&path, t, 0o600, major, minor)?;
            owner_mode_xattrs(&path, &m, false)?;
            set_times(&path, m.mtime)?;
            Ok(0)
        }
        // Regular files; POSIX says unknown types are read as regular files.
        _ => {
            clear(&path, false)?;
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            let n =
                io::copy(entry, &mut f).with_context(|| format!("writing {}", path.display()))?;
            drop(f);
            owner_mode_xattrs(&path, &m, false)?;
            set_times(&path, m.mtime)?;
            Ok(n)
        }
    }
}

/// `sha256(parent + " " + diff_id)`, the OCI chain ID of each layer prefix.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => super::digest::digest_of(format!("{parent} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tar_with(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        f(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append_data(&mut h, path, data).unwrap();
    }

    fn raw_entry(b: &mut tar::Builder<Vec<u8>>, path: &[u8], kind: tar::EntryType, link: &[u8]) {
        // Hand-made header so hostile names reach the unpacker unfiltered.
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..path.len()].copy_from_slice(path);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        h.set_size(0);
        h.set_mode(0o644);
        h.set_entry_type(kind);
        h.set_cksum();
        b.append(&h, io::empty()).unwrap();
    }

    fn unpack_bytes(bytes: &[u8]) -> (tempfile::TempDir, Result<Unpacked>) {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        fs::File::create(&blob).unwrap().write_all(bytes).unwrap();
        let dest = dir.path().join("root");
        fs::create_dir(&dest).unwrap();
        let r = unpack_layer(&blob, &dest, None);
        (dir, r)
    }

    #[test]
    fn whiteouts_in_overlay_form() {
        let t = tar_with(|b| {
            file(b, "etc/keep", b"k");
            file(b, "etc/.wh.gone", b"");
            file(b, "dir/.wh..wh..opq", b"");
            file(b, "dir/new", b"n");
        });
        let (d, r) = unpack_bytes(&t);
        r.unwrap();
        let root = d.path().join("root");
        let md = fs::symlink_metadata(root.join("etc/gone")).unwrap();
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        assert!(md.file_type().is_char_device());
        assert_eq!(md.rdev(), 0);
        assert!(!root.join("etc/.wh.gone").exists());
        let c = cpath(&root.join("dir")).unwrap();
        let n = CString::new(OPAQUE_XATTR).unwrap();
        let mut buf = [0u8; 4];
        // SAFETY: valid strings and buffer.
        let len =
            unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        assert_eq!(len, 1);
        assert_eq!(buf[0], b'y');
        assert!(!root.join("dir/.wh..wh..opq").exists());
    }

    #[test]
    fn refuses_escapes() {
        let t = tar_with(|b| raw_entry(b, b"../evil", tar::EntryType::Regular, b""));
        let (_d, r) = unpack_bytes(&t);
        assert!(format!("{:#}", r.unwrap_err()).contains(".."));

        let t = tar_with(|b| {
            raw_entry(b, b"link", tar::EntryType::Symlink, b"/tmp");
            raw_entry(b, b"link/evil", tar::EntryType::Regular, b"");
        });
        let (_d, r) = unpack_bytes(&t);
        assert!(format!("{:#}", r.unwrap_err()).contains("symlink"));

        let t = tar_with(|b| raw_entry(b, b"h", tar::EntryType::Link, b"../../etc/passwd"));
        let (_d, r) = unpack_bytes(&t);
        assert!(r.is_err());
    }

    #[test]
    fn gzip_and_zstd_and_diff_id() {
        let t = tar_with(|b| file(b, "a", b"hello"));
        let plain = super::super::digest::digest_of(&t);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&t).unwrap();
        let gz = gz.finish().unwrap();
        let zs =
            ruzstd::encoding::compress_to_vec(&t[..], ruzstd::encoding::CompressionLevel::Fastest);
        // Two zstd frames with a skippable frame in between.
        let mut multi = ruzstd::encoding::compress_to_vec(
            &t[..512],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        multi.extend_from_slice(&0x184D_2A5Au32.to_le_bytes());
        multi.extend_from_slice(&3u32.to_le_bytes());
        multi.extend_from_slice(b"xyz");
        multi.extend(ruzstd::encoding::compress_to_vec(
            &t[512..],
            ruzstd::encoding::CompressionLevel::Fastest,
        ));
        for bytes in [&t, &gz, &zs, &multi] {
            let dir = tempfile::tempdir().unwrap();
            let blob = dir.path().join("blob");
            fs::write(&blob, bytes).unwrap();
            let dest = dir.path().join("root");
            fs::create_dir(&dest).unwrap();
            let u = unpack_layer(&blob, &dest, Some(&plain)).unwrap();
            assert_eq!(u.size, 5);
            assert_eq!(fs::read(dest.join("a")).unwrap(), b"hello");
        }
        // A wrong diff ID is refused.
        let (_d, r) = unpack_bytes(&gz);
        assert!(r.is_ok());
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        fs::write(&blob, &gz).unwrap();
        let dest = dir.path().join("root");
        fs::create_dir(&dest).unwrap();
        let e =
            unpack_layer(&blob, &dest, Some(&super::super::digest::digest_of(b"x"))).unwrap_err();
        assert!(format!("{e}").contains("diff ID"), "{e}");
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = "sha256:aaaa".to_string();
        let b = "sha256:bbbb".to_string();
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(
            c[1],
            super::super::digest::digest_of(b"sha256:aaaa sha256:bbbb")
        );
    }
}

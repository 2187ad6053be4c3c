//! The image store: OCI distribution pulls, air-gap imports, a
//! content-addressed blob store, per-layer unpacked directories for
//! overlayfs, an index of names, and garbage collection.
//!
//! Layout under `<data-dir>/agent/images/` (also the air-gap directory
//! users drop tarballs into, as in k3s):
//!
//! ```text
//! blobs/sha256/<hex>      manifests, configs, layer blobs (compressed as pulled)
//! layers/<chain-id hex>/  one unpacked layer each, in overlayfs lower-dir form
//! index.json              name → manifest, config, layers, sizes, last use, pinned
//! tmp/                    staging for archive imports
//! .lock                   flock: one mutating operation at a time
//! ```
//!
//! Every mutating operation (pull, import, remove, gc) holds the store lock
//! from start to end, which also serializes pulls (kubelet's default
//! `serializeImagePulls: true`). Whatever carries a temporary name when the
//! lock is taken was left by a crashed holder and is deleted. Readers (list,
//! inspect, lowerdirs) read `index.json`, which is replaced atomically.

pub mod archive;
pub mod blobs;
pub mod cli;
pub mod digest;
pub mod gc;
pub mod progress;
pub mod pull;
pub mod reference;
pub mod registries;
pub mod unpack;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use blobs::{BlobStore, TMP_PREFIX, sync_dir};
use digest::sha256_hex;
use reference::ImageRef;

pub use gc::GcPolicy;
pub use pull::PullOptions;

const TRASH_PREFIX: &str = ".trash-";

/// One name in the store. Several names may share one manifest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    /// Normalized reference: `docker.io/library/busybox:latest`, or
    /// `…@sha256:…` when pulled by digest, or the bare manifest digest for an
    /// unnamed imported image.
    pub name: String,
    /// Manifest digest (the platform-specific manifest).
    pub digest: String,
    /// Digest of the image index / manifest list it was chosen from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    pub media_type: String,
    /// Config digest: the image ID.
    pub config: String,
    /// Bottom layer first.
    pub layers: Vec<LayerRecord>,
    /// Manifest + config + layer blob sizes, as registries report image size.
    pub size: u64,
    /// Unix seconds.
    pub created: i64,
    pub last_used: i64,
    /// Pinned images (imported ones) are never garbage-collected.
    pub pinned: bool,
    /// `pull` or `import:<file>`.
    pub source: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LayerRecord {
    /// Blob digest (compressed, as distributed).
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    /// Names the unpacked directory `layers/<hex>`.
    pub chain_id: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct LayerInfo {
    diff_id: String,
    /// Bytes of file content unpacked.
    size: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct ImportedFile {
    size: u64,
    mtime: i64,
}

#[derive(Serialize, Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase")]
struct Index {
    #[serde(default)]
    images: BTreeMap<String, ImageRecord>,
    /// chain ID → unpacked layer facts.
    #[serde(default)]
    layers: BTreeMap<String, LayerInfo>,
    /// Air-gap tarballs already imported by `import_dir`, path → identity.
    #[serde(default)]
    imported: BTreeMap<String, ImportedFile>,
}

/// Holding it means holding the store's exclusive flock.
pub struct StoreLock {
    _file: File,
}

#[derive(Clone, Debug)]
pub struct ImageStore {
    root: PathBuf,
    blobs: BlobStore,
    layers: PathBuf,
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl ImageStore {
    /// The store of a data dir: `<data-dir>/agent/images`.
    pub fn open(data_dir: &Path) -> Result<ImageStore> {
        Self::at(data_dir.join("agent").join("images"))
    }

    pub fn at(root: PathBuf) -> Result<ImageStore> {
        let blobs = root.join("blobs").join("sha256");
        let layers = root.join("layers");
        for d in [&blobs, &layers, &root.join("tmp")] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(ImageStore {
            blobs: BlobStore::new(blobs),
            layers,
            root,
        })
    }

    /// Takes the store lock (blocking) and removes what crashed holders left.
    pub fn lock(&self) -> Result<StoreLock> {
        let path = self.root.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        loop {
            // SAFETY: flock on a file descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e).context("locking the image store");
            }
        }
        let lock = StoreLock { _file: file };
        self.remove_stale()?;
        Ok(lock)
    }

    fn remove_stale(&self) -> Result<()> {
        for dir in [self.blobs.dir(), &self.layers, &self.root.join("tmp")] {
            for e in fs::read_dir(dir)? {
                let e = e?;
                let name = e.file_name();
                let name = name.to_string_lossy();
                let in_tmp = dir.ends_with("tmp");
                if in_tmp || name.starts_with(TMP_PREFIX) || name.starts_with(TRASH_PREFIX) {
                    remove_any(&e.path())?;
                }
            }
        }
        Ok(())
    }

    fn load_index(&self) -> Result<Index> {
        let path = self.root.join("index.json");
        match fs::read(&path) {
            Ok(b) => {
                serde_json::from_slice(&b).with_context(|| format!("parsing {}", path.display()))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn save_index(&self, _lock: &StoreLock, idx: &Index) -> Result<()> {
        let path = self.root.join("index.json");
        let tmp = self.root.join(format!("{TMP_PREFIX}index.json"));
        let mut f = File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(idx)?)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &path)?;
        sync_dir(&self.root)
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        Ok(self.load_index()?.images.into_values().collect())
    }

    /// Records matching `reference`: a name (normalized), a manifest, index
    /// or config digest, a unique image-ID prefix (≥ 12 hex), or
    /// `name@digest` matching an image pulled by tag with that digest.
    pub fn resolve(&self, reference: &str) -> Result<Vec<ImageRecord>> {
        Ok(matching(&self.load_index()?, reference))
    }

    pub fn get(&self, reference: &str) -> Result<Option<ImageRecord>> {
        Ok(self.resolve(reference)?.into_iter().next())
    }

    pub fn layer_dir(&self, chain_id: &str) -> Result<PathBuf> {
        Ok(self.layers.join(sha256_hex(chain_id)?))
    }

    /// The image's layer directories in overlayfs `lowerdir=` order: the
    /// top layer first, the base layer last. Mount them read-only below a
    /// per-container upper dir:
    /// `lowerdir=<join(':')>,upperdir=…,workdir=…`. Fails when a layer
    /// directory is missing: a rootfs without one of its layers is wrong,
    /// not smaller.
    pub fn rootfs_lowerdirs(&self, image: &ImageRecord) -> Result<Vec<PathBuf>> {
        image
            .layers
            .iter()
            .rev()
            .map(|l| {
                let d = self.layer_dir(&l.chain_id)?;
                if !d.is_dir() {
                    bail!(
                        "layer {} of {} is missing from the store; pull the image again",
                        l.digest,
                        image.name
                    );
                }
                Ok(d)
            })
            .collect()
    }

    /// The image's runtime defaults (`config` of the image config document:
    /// Entrypoint, Cmd, Env, WorkingDir, User, StopSignal).
    pub fn runtime_config(&self, image: &ImageRecord) -> Result<serde_json::Value> {
        let bytes = oci::read_small(&self.blobs, &image.config)?;
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).context("malformed image config")?;
        Ok(v.get("config").cloned().unwrap_or(serde_json::Value::Null))
    }

    /// Stamps the image as used now (garbage collection removes the least
    /// recently used first). Returns how many names matched.
    // The kubelet side (not built yet) calls it when a container starts.
    #[allow(dead_code)]
    pub fn mark_used(&self, reference: &str) -> Result<usize> {
        let lock = self.lock()?;
        let mut idx = self.load_index()?;
        let names: Vec<String> = matching(&idx, reference)
            .into_iter()
            .map(|r| r.name)
            .collect();
        let t = now();
        for n in &names {
            if let Some(r) = idx.images.get_mut(n) {
                r.last_used = t;
            }
        }
        self.save_index(&lock, &idx)?;
        Ok(names.len())
    }

    /// Removes the names matching `reference` (all names of an image when
    /// given its digest or ID), then deletes blobs and layers no remaining
    /// image references. Returns the removed names.
    pub fn remove(&self, reference: &str) -> Result<Vec<String>> {
        let lock = self.lock()?;
        let mut idx = self.load_index()?;
        let names: Vec<String> = matching(&idx, reference)
            .into_iter()
            .map(|r| r.name)
            .collect();
        if names.is_empty() {
            bail!("image {reference:?} not found");
        }
        for n in &names {
            idx.images.remove(n);
        }
        self.save_index(&lock, &idx)?;
        self.prune(&lock, &mut idx)?;
        Ok(names)
    }

    /// Deletes unreferenced blobs and layer directories. Returns the bytes
    /// freed as far as the store knows them (blob sizes + unpacked sizes).
    fn prune(&self, lock: &StoreLock, idx: &mut Index) -> Result<u64> {
        let mut blobs = BTreeSet::new();
        let mut chains = BTreeSet::new();
        for r in idx.images.values() {
            blobs.insert(r.digest.clone());
            blobs.insert(r.config.clone());
            if let Some(d) = &r.index_digest {
                blobs.insert(d.clone());
            }
            for l in &r.layers {
                blobs.insert(l.digest.clone());
                chains.insert(l.chain_id.clone());
            }
        }
        let mut freed = 0;
        for d in self.blobs.list()? {
            if !blobs.contains(&d) {
                freed += self.blobs.size(&d).unwrap_or(0);
                self.blobs.remove(&d)?;
            }
        }
        for e in fs::read_dir(&self.layers)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let chain = format!("sha256:{name}");
            if !chains.contains(&chain) {
                freed += idx.layers.get(&chain).map(|l| l.size).unwrap_or(0);
                // Renamed first so a crash mid-delete never leaves a partial
                // layer under its real name.
                let trash = self
                    .layers
                    .join(format!("{TRASH_PREFIX}{}", uuid::Uuid::new_v4().simple()));
                fs::rename(e.path(), &trash)?;
                remove_any(&trash)?;
            }
        }
        let before = idx.layers.len();
        idx.layers.retain(|c, _| chains.contains(c));
        if idx.layers.len() != before {
            self.save_index(lock, idx)?;
        }
        Ok(freed)
    }

    /// Unpacks the layer blob `digest` into `layers/<chain>` unless that
    /// directory already exists (layer dedup). Returns whether it unpacked.
    pub(crate) fn ensure_layer(
        &self,
        _lock: &StoreLock,
        digest: &str,
        diff_id: &str,
        chain_id: &str,
    ) -> Result<Option<u64>> {
        let dst = self.layer_dir(chain_id)?;
        if dst.is_dir() {
            return Ok(None);
        }
        let blob = self.blobs.path(digest)?;
        let tmp = self
            .layers
            .join(format!("{TMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        fs::create_dir(&tmp)?;
        let guard = TmpGuard(Some(tmp.clone()));
        let u = unpack::unpack_layer(&blob, &tmp, Some(diff_id))
            .with_context(|| format!("unpacking layer {digest}"))?;
        fs::rename(&tmp, &dst).with_context(|| format!("renaming into {}", dst.display()))?;
        std::mem::forget(guard);
        sync_dir(&self.layers)?;
        Ok(Some(u.size))
    }

    /// Records `rec` under each of `names` (keeping a pinned flag and the
    /// creation time of an unchanged image), then prunes what a re-tag left
    /// unreferenced.
    pub(crate) fn register(
        &self,
        lock: &StoreLock,
        names: &[String],
        rec: &ImageRecord,
        layer_sizes: &BTreeMap<String, u64>,
    ) -> Result<Vec<ImageRecord>> {
        let mut idx = self.load_index()?;
        for l in &rec.layers {
            let e = idx.layers.entry(l.chain_id.clone()).or_default();
            e.diff_id = l.diff_id.clone();
            if let Some(s) = layer_sizes.get(&l.chain_id) {
                e.size = *s;
            }
        }
        let mut out = Vec::new();
        for n in names {
            let mut r = rec.clone();
            r.name = n.clone();
            if let Some(old) = idx.images.get(n) {
                r.pinned |= old.pinned;
                if old.digest == r.digest {
                    r.created = old.created;
                }
            }
            idx.images.insert(n.clone(), r.clone());
            out.push(r);
        }
        self.save_index(lock, &idx)?;
        self.prune(lock, &mut idx)?;
        Ok(out)
    }
}

fn matching(idx: &Index, reference: &str) -> Vec<ImageRecord> {
    let reference = reference.trim();
    if reference.starts_with("sha256:") {
        return idx
            .images
            .values()
            .filter(|r| {
                r.digest == reference
                    || r.config == reference
                    || r.index_digest.as_deref() == Some(reference)
            })
            .cloned()
            .collect();
    }
    if reference.len() >= 12 && reference.bytes().all(|b| b.is_ascii_hexdigit()) {
        let ids: BTreeSet<&str> = idx
            .images
            .values()
            .filter(|r| {
                r.config
                    .trim_start_matches("sha256:")
                    .starts_with(reference)
            })
            .map(|r| r.config.as_str())
            .collect();
        if ids.len() == 1 {
            return idx
                .images
                .values()
                .filter(|r| ids.contains(r.config.as_str()))
                .cloned()
                .collect();
        }
    }
    let Ok(r) = ImageRef::parse(reference) else {
        return Vec::new();
    };
    let name = r.to_string();
    if let Some(rec) = idx.images.get(&name) {
        return vec![rec.clone()];
    }
    if let Some(d) = &r.digest {
        let repo = r.name();
        return idx
            .images
            .values()
            .filter(|rec| {
                (rec.digest == *d || rec.index_digest.as_deref() == Some(d.as_str()))
                    && ImageRef::parse(&rec.name).map(|x| x.name()).ok().as_deref()
                        == Some(repo.as_str())
            })
            .cloned()
            .collect();
    }
    Vec::new()
}

/// Removes a file or a whole directory tree; absent is fine.
fn remove_any(p: &Path) -> Result<()> {
    let r = match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    r.with_context(|| format!("removing {}", p.display()))
}

/// Deletes a temporary path when dropped (unless forgotten after commit).
struct TmpGuard(Option<PathBuf>);

impl Drop for TmpGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = remove_any(&p);
        }
    }
}

/// Sizes for display: 1.2 MiB.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Manifest and config documents, parsed loosely (only what the store needs).
pub(crate) mod oci {
    use super::*;

    pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

    #[derive(Deserialize, Serialize, Clone, Debug)]
    #[serde(rename_all = "camelCase")]
    pub struct Descriptor {
        #[serde(default)]
        pub media_type: String,
        pub digest: String,
        pub size: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub platform: Option<Platform>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub annotations: Option<BTreeMap<String, String>>,
    }

    #[derive(Deserialize, Serialize, Clone, Debug)]
    pub struct Platform {
        #[serde(default)]
        pub architecture: String,
        #[serde(default)]
        pub os: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub variant: Option<String>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "camelCase")]
    pub struct Manifest {
        pub schema_version: i64,
        pub config: Descriptor,
        pub layers: Vec<Descriptor>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "camelCase")]
    pub struct IndexDoc {
        pub manifests: Vec<Descriptor>,
    }

    #[derive(Deserialize, Debug)]
    pub struct RootFs {
        #[serde(rename = "type", default)]
        pub kind: String,
        #[serde(default)]
        pub diff_ids: Vec<String>,
    }

    #[derive(Deserialize, Debug)]
    pub struct Config {
        pub rootfs: RootFs,
    }

    /// Manifest or index, told apart by media type or shape.
    pub enum Doc {
        Manifest(Manifest, String),
        Index(IndexDoc),
    }

    pub fn parse_doc(bytes: &[u8], header_media_type: Option<&str>) -> Result<Doc> {
        let v: serde_json::Value =
            serde_json::from_slice(bytes).context("manifest is not valid JSON")?;
        let mt = v
            .get("mediaType")
            .and_then(|m| m.as_str())
            .or(header_media_type)
            .unwrap_or("")
            .to_string();
        if v.get("schemaVersion").and_then(|s| s.as_i64()) == Some(1) {
            bail!("Docker schema 1 manifests are not supported");
        }
        let is_index = mt == MT_OCI_INDEX || mt == MT_DOCKER_LIST || v.get("manifests").is_some();
        if is_index {
            let i: IndexDoc = serde_json::from_value(v).context("malformed image index")?;
            return Ok(Doc::Index(i));
        }
        let m: Manifest = serde_json::from_value(v).context("malformed image manifest")?;
        if m.schema_version != 2 {
            bail!("unsupported manifest schemaVersion {}", m.schema_version);
        }
        let mt = if mt.is_empty() {
            MT_OCI_MANIFEST.to_string()
        } else {
            mt
        };
        for l in &m.layers {
            sha256_hex(&l.digest)?;
            if l.size < 0 {
                bail!("negative layer size");
            }
        }
        sha256_hex(&m.config.digest)?;
        Ok(Doc::Manifest(m, mt))
    }

    pub fn parse_config(bytes: &[u8]) -> Result<Vec<String>> {
        let c: Config = serde_json::from_slice(bytes).context("malformed image config")?;
        if c.rootfs.kind != "layers" {
            bail!(
                "image config rootfs.type is {:?}, not \"layers\"",
                c.rootfs.kind
            );
        }
        for d in &c.rootfs.diff_ids {
            sha256_hex(d)?;
        }
        Ok(c.rootfs.diff_ids)
    }

    /// GOARCH and variant of this machine, for picking from an index.
    pub fn host_platform() -> (&'static str, Option<&'static str>) {
        match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        }
    }

    /// The index entry for this machine's platform.
    pub fn pick_platform(index: &IndexDoc) -> Result<&Descriptor> {
        let (arch, variant) = host_platform();
        let candidates: Vec<&Descriptor> = index
            .manifests
            .iter()
            .filter(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == arch)
            })
            .collect();
        candidates
            .iter()
            .find(|d| {
                let v = d.platform.as_ref().and_then(|p| p.variant.as_deref());
                v.is_none() || v == variant
            })
            .or(candidates.first())
            .copied()
            .ok_or_else(|| {
                let have: Vec<String> = index
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref())
                    .map(|p| format!("{}/{}", p.os, p.architecture))
                    .collect();
                anyhow!(
                    "no manifest for linux/{arch} in the image index (it has: {})",
                    have.join(", ")
                )
            })
    }

    /// Reads a small document from the blob store, refusing huge ones
    /// (configs are kilobytes; a multi-megabyte one is hostile).
    pub fn read_small(store: &BlobStore, digest: &str) -> Result<Vec<u8>> {
        let p = store.path(digest)?;
        let len = fs::metadata(&p)?.len();
        if len > 16 << 20 {
            bail!("document {digest} is {len} bytes, refusing");
        }
        Ok(fs::read(p)?)
    }
}

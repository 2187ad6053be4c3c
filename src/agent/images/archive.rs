//! Air-gap imports: OCI image-layout tarballs (`skopeo copy … oci-archive:`,
//! `ctr export`) and `docker save` tarballs, plain, gzip or zstd.
//!
//! A tarball is read once, start to end: every member is streamed to a
//! staging directory on the store's filesystem and hashed on the way (tar
//! members come in any order, and `manifest.json` often comes last). Then
//! the referenced members are checked and moved (renamed) into the blob
//! store, the layers unpacked, and the images recorded as pinned, so garbage
//! collection never removes them (as k3s pins its air-gap images).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

use super::digest::HashingWriter;
use super::oci::{self, Doc};
use super::reference::ImageRef;
use super::unpack::{self, chain_ids};
use super::{ImageRecord, ImageStore, ImportedFile, LayerRecord, StoreLock, TmpGuard, now};

/// File names the air-gap directory scan picks up.
const SUFFIXES: &[&str] = &[".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst"];

#[derive(Debug, Default)]
pub struct ImportReport {
    pub imported: Vec<ImageRecord>,
    /// Unchanged since their last import.
    pub skipped: Vec<PathBuf>,
    pub failed: Vec<(PathBuf, String)>,
}

struct Staged {
    path: PathBuf,
    digest: String,
    size: u64,
}

/// The members of one archive, staged on disk.
struct Staging {
    files: BTreeMap<String, Staged>,
    /// Symlinks and hard links: member → target member.
    links: BTreeMap<String, String>,
}

impl Staging {
    fn get(&self, name: &str) -> Result<&Staged> {
        let mut n = clean(name).ok_or_else(|| anyhow!("bad member name {name:?}"))?;
        for _ in 0..16 {
            if let Some(s) = self.files.get(&n) {
                return Ok(s);
            }
            match self.links.get(&n) {
                Some(t) => n = t.clone(),
                None => break,
            }
        }
        bail!("the archive has no member {name:?}")
    }

    /// An OCI layout blob, checked against its name.
    fn blob(&self, digest: &str) -> Result<&Staged> {
        let hex = super::digest::sha256_hex(digest)?;
        let s = self.get(&format!("blobs/sha256/{hex}"))?;
        if s.digest != digest {
            bail!(
                "archive member blobs/sha256/{hex} does not match its name (content is {})",
                s.digest
            );
        }
        Ok(s)
    }

    fn read_small(&self, s: &Staged) -> Result<Vec<u8>> {
        if s.size > 16 << 20 {
            bail!("document {} is {} bytes, refusing", s.digest, s.size);
        }
        Ok(fs::read(&s.path)?)
    }
}

/// Normalized member path ("./a//b" → "a/b"); None if it climbs out.
fn clean(name: &str) -> Option<String> {
    let mut parts = Vec::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(n) => parts.push(n.to_str()?.to_string()),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

impl ImageStore {
    /// Imports one tarball; its images are pinned.
    pub fn import_file(&self, path: &Path) -> Result<Vec<ImageRecord>> {
        let lock = self.lock()?;
        self.import_locked(&lock, path)
    }

    /// Imports every tarball in the air-gap directory `<data-dir>/agent/images/`
    /// that changed since it was last imported; the agent calls it at start.
    pub fn import_dir(&self) -> Result<ImportReport> {
        let root = self.root.clone();
        self.import_dir_at(&root)
    }

    /// Same, for any directory (not recursive).
    pub fn import_dir_at(&self, dir: &Path) -> Result<ImportReport> {
        let lock = self.lock()?;
        let mut report = ImportReport::default();
        let mut paths = Vec::new();
        for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type()?.is_file() && SUFFIXES.iter().any(|s| name.ends_with(s)) {
                paths.push(e.path());
            }
        }
        paths.sort();
        for p in paths {
            let md = fs::metadata(&p)?;
            let mtime = md
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let id = ImportedFile {
                size: md.len(),
                mtime,
            };
            let key = p.to_string_lossy().into_owned();
            if self.load_index()?.imported.get(&key) == Some(&id) {
                report.skipped.push(p);
                continue;
            }
            match self.import_locked(&lock, &p) {
                Ok(recs) => {
                    let mut idx = self.load_index()?;
                    idx.imported.insert(key, id);
                    self.save_index(&lock, &idx)?;
                    report.imported.extend(recs);
                }
                Err(e) => report.failed.push((p, format!("{e:#}"))),
            }
        }
        Ok(report)
    }

    fn import_locked(&self, lock: &StoreLock, path: &Path) -> Result<Vec<ImageRecord>> {
        let staging_dir = self
            .root
            .join("tmp")
            .join(format!("import-{}", uuid::Uuid::new_v4().simple()));
        fs::create_dir(&staging_dir)?;
        let _guard = TmpGuard(Some(staging_dir.clone()));
        let st =
            stage(path, &staging_dir).with_context(|| format!("reading {}", path.display()))?;
        let source = format!(
            "import:{}",
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        let out = if st.files.contains_key("manifest.json") {
            self.import_docker(lock, &st, &source)
        } else if st.files.contains_key("index.json") {
            self.import_oci(lock, &st, &source)
        } else {
            Err(anyhow!(
                "not an OCI image layout or docker save archive (no index.json or manifest.json)"
            ))
        };
        out.with_context(|| format!("importing {}", path.display()))
    }

    fn import_docker(
        &self,
        lock: &StoreLock,
        st: &Staging,
        source: &str,
    ) -> Result<Vec<ImageRecord>> {
        let m = st.get("manifest.json")?;
        let entries: Vec<DockerEntry> =
            serde_json::from_slice(&st.read_small(m)?).context("malformed manifest.json")?;
        let mut out = Vec::new();
        for e in entries {
            let cfg = st.get(&e.config)?;
            let config_bytes = st.read_small(cfg)?;
            let diff_ids = oci::parse_config(&config_bytes)?;
            if diff_ids.len() != e.layers.len() {
                bail!(
                    "{}: config lists {} layers, manifest.json {}",
                    e.config,
                    diff_ids.len(),
                    e.layers.len()
                );
            }
            let mut layers = Vec::new();
            for l in &e.layers {
                let s = st.get(l)?;
                let c = unpack::detect_file(&s.path)?;
                layers.push((s, c.layer_media_type().to_string()));
            }
            // docker save has no manifest of its own: write the OCI manifest
            // the image would have had.
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": oci::MT_OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": cfg.digest,
                    "size": cfg.size,
                },
                "layers": layers.iter().map(|(s, mt)| serde_json::json!({
                    "mediaType": mt,
                    "digest": s.digest,
                    "size": s.size,
                })).collect::<Vec<_>>(),
            });
            let manifest_bytes = serde_json::to_vec(&manifest)?;
            self.blobs.adopt(&cfg.path, &cfg.digest)?;
            for (s, _) in &layers {
                self.blobs.adopt(&s.path, &s.digest)?;
            }
            let digest = self.blobs.put(&manifest_bytes, None)?;
            let descs: Vec<(String, String, u64)> = layers
                .iter()
                .map(|(s, mt)| (s.digest.clone(), mt.clone(), s.size))
                .collect();
            let names = match e.repo_tags.as_deref() {
                Some(tags) if !tags.is_empty() => tags
                    .iter()
                    .map(|t| ImageRef::parse(t).map(|r| r.to_string()))
                    .collect::<Result<Vec<_>>>()?,
                _ => vec![digest.clone()],
            };
            out.extend(self.finish_import(
                lock,
                names,
                (
                    digest,
                    oci::MT_OCI_MANIFEST.to_string(),
                    manifest_bytes.len() as u64,
                ),
                None,
                (cfg.digest.clone(), cfg.size),
                diff_ids,
                descs,
                source,
            )?);
        }
        Ok(out)
    }

    fn import_oci(&self, lock: &StoreLock, st: &Staging, source: &str) -> Result<Vec<ImageRecord>> {
        let index_bytes = st.read_small(st.get("index.json")?)?;
        let index: oci::IndexDoc =
            serde_json::from_slice(&index_bytes).context("malformed index.json")?;
        let mut out = Vec::new();
        for desc in &index.manifests {
            let names = oci_names(desc);
            let top = st.blob(&desc.digest)?;
            let top_bytes = st.read_small(top)?;
            let (manifest, mt, mdesc, index_digest) = match oci::parse_doc(&top_bytes, None)? {
                Doc::Manifest(m, mt) => (m, mt, top, None),
                Doc::Index(ix) => {
                    let d = oci::pick_platform(&ix)?;
                    let s = st.blob(&d.digest)?;
                    match oci::parse_doc(&st.read_small(s)?, None)? {
                        Doc::Manifest(m, mt) => (m, mt, s, Some(top)),
                        Doc::Index(_) => bail!("an image index points to another index"),
                    }
                }
            };
            let cfg = st.blob(&manifest.config.digest)?;
            let diff_ids = oci::parse_config(&st.read_small(cfg)?)?;
            if diff_ids.len() != manifest.layers.len() {
                bail!(
                    "{}: config lists {} layers, the manifest {}",
                    desc.digest,
                    diff_ids.len(),
                    manifest.layers.len()
                );
            }
            let mut descs = Vec::new();
            for l in &manifest.layers {
                let s = st.blob(&l.digest)?;
                descs.push((s.digest.clone(), l.media_type.clone(), s.size));
            }
            for l in &manifest.layers {
                let s = st.blob(&l.digest)?;
                self.blobs.adopt(&s.path, &s.digest)?;
            }
            self.blobs.adopt(&cfg.path, &cfg.digest)?;
            self.blobs.adopt(&mdesc.path, &mdesc.digest)?;
            if let Some(ix) = index_digest {
                self.blobs.adopt(&ix.path, &ix.digest)?;
            }
            let names = if names.is_empty() {
                vec![mdesc.digest.clone()]
            } else {
                names
            };
            out.extend(self.finish_import(
                lock,
                names,
                (mdesc.digest.clone(), mt, mdesc.size),
                index_digest.map(|s| s.digest.clone()),
                (cfg.digest.clone(), cfg.size),
                diff_ids,
                descs,
                source,
            )?);
        }
        Ok(out)
    }

    /// Unpacks the layers (blobs already in the store) and records the names.
    #[allow(clippy::too_many_arguments)]
    fn finish_import(
        &self,
        lock: &StoreLock,
        names: Vec<String>,
        (digest, media_type, manifest_size): (String, String, u64),
        index_digest: Option<String>,
        (config, config_size): (String, u64),
        diff_ids: Vec<String>,
        layers: Vec<(String, String, u64)>,
        source: &str,
    ) -> Result<Vec<ImageRecord>> {
        let chains = chain_ids(&diff_ids);
        let mut sizes = BTreeMap::new();
        for (i, (d, _, _)) in layers.iter().enumerate() {
            if let Some(s) = self.ensure_layer(lock, d, &diff_ids[i], &chains[i])? {
                sizes.insert(chains[i].clone(), s);
            }
        }
        let t = now();
        let rec = ImageRecord {
            name: String::new(),
            digest,
            index_digest,
            media_type,
            config,
            size: manifest_size + config_size + layers.iter().map(|l| l.2).sum::<u64>(),
            layers: layers
                .into_iter()
                .enumerate()
                .map(|(i, (digest, media_type, size))| LayerRecord {
                    digest,
                    media_type,
                    size,
                    diff_id: diff_ids[i].clone(),
                    chain_id: chains[i].clone(),
                })
                .collect(),
            created: t,
            last_used: t,
            pinned: true,
            source: source.to_string(),
        };
        self.register(lock, &names, &rec, &sizes)
    }
}

/// Names an OCI layout gives an image: containerd's full-name annotation,
/// else `org.opencontainers.image.ref.name` when it is a full reference
/// (not a bare tag, which names no repository).
fn oci_names(desc: &oci::Descriptor) -> Vec<String> {
    let Some(a) = &desc.annotations else {
        return Vec::new();
    };
    if let Some(n) = a.get("io.containerd.image.name")
        && let Ok(r) = ImageRef::parse(n)
    {
        return vec![r.to_string()];
    }
    if let Some(n) = a.get("org.opencontainers.image.ref.name")
        && (n.contains('/') || n.contains(':'))
        && let Ok(r) = ImageRef::parse(n)
    {
        return vec![r.to_string()];
    }
    Vec::new()
}

/// Streams every member of the tarball at `path` into `dir`, hashing it.
fn stage(path: &Path, dir: &Path) -> Result<Staging> {
    let file = File::open(path)?;
    let reader = BufReader::with_capacity(256 * 1024, file);
    let mut ar = tar::Archive::new(unpack::decompress(reader)?);
    let mut st = Staging {
        files: BTreeMap::new(),
        links: BTreeMap::new(),
    };
    for (n, entry) in ar.entries()?.enumerate() {
        let mut entry = entry?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(name) = clean(&raw) else {
            bail!("archive member {raw:?} climbs out of the archive");
        };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let p = dir.join(n.to_string());
                let mut w = HashingWriter::new(File::create(&p)?);
                io::copy(&mut entry, &mut w).with_context(|| format!("staging {name}"))?;
                let digest = w.hasher.digest();
                let size = w.hasher.len();
                drop(w.into_inner());
                st.files.insert(
                    name,
                    Staged {
                        path: p,
                        digest,
                        size,
                    },
                );
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                let base = Path::new(&name).parent().unwrap_or(Path::new(""));
                let joined = if target.starts_with('/') {
                    target
                } else {
                    base.join(&target).to_string_lossy().into_owned()
                };
                if let Some(t) = clean(&joined) {
                    st.links.insert(name, t);
                }
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                if let Some(t) = clean(&target) {
                    st.links.insert(name, t);
                }
            }
            _ => {}
        }
    }
    Ok(st)
}

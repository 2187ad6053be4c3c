//! The image store end to end, through `skiff images …`, against a real
//! local registry (Debian's `docker-registry`, distribution 2.8) on
//! 127.0.0.1. Test images are built here from Debian's static busybox:
//! layer tars, configs and manifests written by hand, pushed with
//! oci-client. Needs root (overlayfs and tmpfs mounts, chroot, trusted
//! xattrs), `/bin/busybox` (busybox-static) and `/usr/bin/docker-registry`.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const BUSYBOX: &str = "/bin/busybox";

// ---------------------------------------------------------------- registry

/// A docker-registry process on 127.0.0.1:<free port>, killed (by PID) on drop.
struct Registry {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Serves `storage`; with `htpasswd`, requires basic auth.
    fn start(storage: &Path, htpasswd: Option<&Path>) -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} missing: apt-get install docker-registry"
        );
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..3 {
            let port = free_port();
            let mut cfg = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                storage.display()
            );
            if let Some(h) = htpasswd {
                cfg.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
                    h.display()
                ));
            }
            let cfg_path = dir.path().join("config.yml");
            fs::write(&cfg_path, cfg).unwrap();
            let log = fs::File::create(dir.path().join("registry.log")).unwrap();
            let mut child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&cfg_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("starting docker-registry");
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if http_status(port, "/v2/").is_some() {
                    return Registry {
                        port,
                        child,
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default();
        panic!("docker-registry did not start:\n{log}");
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The status code of a plain GET, if anything answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = [0u8; 32];
    let n = s.read(&mut buf).ok()?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}

// ------------------------------------------------------------- test images

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[derive(Clone, Copy)]
enum Comp {
    None,
    Gzip,
    Zstd,
}

struct Blob {
    digest: String,
    bytes: Vec<u8>,
    media_type: &'static str,
}

impl Blob {
    fn new(bytes: Vec<u8>, media_type: &'static str) -> Blob {
        Blob {
            digest: sha(&bytes),
            bytes,
            media_type,
        }
    }
}

struct TestImage {
    manifest: Vec<u8>,
    manifest_digest: String,
    config: Blob,
    layers: Vec<Blob>,
    diff_ids: Vec<String>,
}

fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

fn add_dir(b: &mut tar::Builder<Vec<u8>>, path: &str) {
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    b.append_data(&mut h, path, std::io::empty()).unwrap();
}

fn add_file(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) {
    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
    b.append_data(&mut h, path, data).unwrap();
}

fn add_symlink(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    b.append_link(&mut h, path, target).unwrap();
}

/// The base layer: a busybox rootfs plus files the next layer deletes.
fn busybox_layer() -> Vec<u8> {
    let busybox = fs::read(BUSYBOX).expect("/bin/busybox: apt-get install busybox-static");
    let mut b = tar::Builder::new(Vec::new());
    for d in ["bin/", "etc/", "data/", "data/dir/", "tmp/"] {
        add_dir(&mut b, d);
    }
    add_file(&mut b, "bin/busybox", 0o755, &busybox);
    for l in ["sh", "cat", "ls", "echo"] {
        add_symlink(&mut b, &format!("bin/{l}"), "busybox");
    }
    add_file(&mut b, "etc/hello.txt", 0o644, b"hello\n");
    add_file(&mut b, "etc/remove-me", 0o644, b"bye\n");
    add_file(&mut b, "data/dir/a", 0o644, b"a\n");
    add_file(&mut b, "data/dir/b", 0o644, b"b\n");
    b.into_inner().unwrap()
}

/// A layer on top: a whiteout, an opaque directory, new files.
fn whiteout_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    add_dir(&mut b, "etc/");
    add_file(&mut b, "etc/.wh.remove-me", 0o644, b"");
    add_file(&mut b, "etc/added", 0o644, b"added\n");
    add_dir(&mut b, "data/dir/");
    add_file(&mut b, "data/dir/.wh..wh..opq", 0o644, b"");
    add_file(&mut b, "data/dir/c", 0o644, b"c\n");
    b.into_inner().unwrap()
}

fn small_layer(name: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    add_file(&mut b, name, 0o644, content);
    b.into_inner().unwrap()
}

fn compress(tar: &[u8], c: Comp) -> Blob {
    match c {
        Comp::None => Blob::new(tar.to_vec(), "application/vnd.oci.image.layer.v1.tar"),
        Comp::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            Blob::new(
                e.finish().unwrap(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        }
        Comp::Zstd => Blob::new(
            ruzstd::encoding::compress_to_vec(tar, ruzstd::encoding::CompressionLevel::Fastest),
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
    }
}

fn build_image(layers: &[(&[u8], Comp)]) -> TestImage {
    let diff_ids: Vec<String> = layers.iter().map(|(t, _)| sha(t)).collect();
    let layers: Vec<Blob> = layers.iter().map(|(t, c)| compress(t, *c)).collect();
    let config = serde_json::json!({
        "architecture": goarch(),
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = Blob::new(
        serde_json::to_vec(&config).unwrap(),
        "application/vnd.oci.image.config.v1+json",
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": config.media_type, "digest": config.digest, "size": config.bytes.len()},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": l.media_type, "digest": l.digest, "size": l.bytes.len()
        })).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    TestImage {
        manifest_digest: sha(&manifest),
        manifest,
        config,
        layers,
        diff_ids,
    }
}

/// Pushes with the OCI distribution API (oci-client, plain http).
fn push(registry: &Registry, repo_tag: &str, img: &TestImage) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = oci_client::Client::new(oci_client::client::ClientConfig {
            protocol: oci_client::client::ClientProtocol::Http,
            ..Default::default()
        });
        let reference: oci_client::Reference =
            format!("{}/{repo_tag}", registry.host()).parse().unwrap();
        for b in img.layers.iter().chain(std::iter::once(&img.config)) {
            client
                .push_blob(&reference, b.bytes.clone(), &b.digest)
                .await
                .expect("pushing a blob");
        }
        client
            .push_manifest_raw(
                &reference,
                img.manifest.clone(),
                http::HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json"),
            )
            .await
            .expect("pushing the manifest");
    });
}

/// An image index listing `img` for this machine and a manifest for
/// another platform (which must never be picked).
fn index_for(img: &TestImage, other: &TestImage) -> Vec<u8> {
    let entry = |i: &TestImage, arch: &str| {
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": i.manifest_digest,
            "size": i.manifest.len(),
            "platform": {"architecture": arch, "os": "linux"},
        })
    };
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(other, "s390x"), entry(img, goarch())],
    }))
    .unwrap()
}

/// Pushes an image index under `repo_tag` (its manifests must be pushed).
fn push_index(registry: &Registry, repo_tag: &str, index: &[u8]) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = oci_client::Client::new(oci_client::client::ClientConfig {
            protocol: oci_client::client::ClientProtocol::Http,
            ..Default::default()
        });
        let reference: oci_client::Reference =
            format!("{}/{repo_tag}", registry.host()).parse().unwrap();
        client
            .push_manifest_raw(
                &reference,
                index.to_vec(),
                http::HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
            )
            .await
            .expect("pushing the index");
    });
}

// --------------------------------------------------------------- the CLI

struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        Node {
            dir: tempfile::Builder::new()
                .prefix("skiff-images-")
                .tempdir()
                .unwrap(),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn store(&self) -> PathBuf {
        self.data().join("agent/images")
    }

    fn registries(&self) -> PathBuf {
        self.dir.path().join("registries.yaml")
    }

    /// registries.yaml making `registry` a plain-http endpoint, plus `extra`.
    fn use_registry(&self, registry: &Registry, extra: &str) {
        fs::write(
            self.registries(),
            format!(
                "mirrors:\n  \"{h}\":\n    endpoint:\n      - \"http://{h}\"\n{extra}",
                h = registry.host()
            ),
        )
        .unwrap();
    }

    fn skiff(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("images")
            .args(args)
            .arg("--data-dir")
            .arg(self.data())
            .arg("--registries")
            .arg(self.registries())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        eprintln!(
            "$ skiff images {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.skiff(args);
        assert!(out.status.success(), "skiff images {args:?} failed");
        out
    }

    fn list(&self) -> Vec<serde_json::Value> {
        let out = self.ok(&["list", "-o", "json"]);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self
            .list()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    }

    fn inspect(&self, image: &str) -> serde_json::Value {
        serde_json::from_slice(&self.ok(&["inspect", image]).stdout).unwrap()
    }

    fn layer_dirs(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.store().join("layers"))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn blob_names(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.store().join("blobs/sha256"))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// An overlayfs mount, unmounted on drop (also when an assertion fails).
struct OverlayMount {
    target: PathBuf,
}

impl OverlayMount {
    fn new(lower: &[String], base: &Path) -> OverlayMount {
        let upper = base.join("upper");
        let work = base.join("work");
        let target = base.join("merged");
        for d in [&upper, &work, &target] {
            fs::create_dir_all(d).unwrap();
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            upper.display(),
            work.display()
        );
        let st = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&target)
            .status()
            .unwrap();
        assert!(st.success(), "mount -t overlay -o {opts} failed");
        OverlayMount { target }
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.target).status();
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// -------------------------------------------------------------------- tests

/// Pull two images sharing a base layer, check dedup, compose the layers
/// with overlayfs (whiteouts and opaque dirs hide lower files; busybox runs
/// in the rootfs), then remove them and check the store empties.
#[test]
fn pull_dedup_overlay_and_remove() {
    let storage = tempfile::tempdir().unwrap();
    let registry = Registry::start(storage.path(), None);
    let base = busybox_layer();
    let top = whiteout_layer();
    let one = build_image(&[(&base, Comp::Gzip)]);
    let two = build_image(&[(&base, Comp::Gzip), (&top, Comp::Zstd)]);
    push(&registry, "test/busybox:1", &one);
    push(&registry, "test/busybox:2", &two);

    let node = Node::new();
    node.use_registry(&registry, "");
    let ref1 = format!("{}/test/busybox:1", registry.host());
    let ref2 = format!("{}/test/busybox:2", registry.host());

    let t = Instant::now();
    node.ok(&["pull", &ref1]);
    let elapsed = t.elapsed();
    eprintln!(
        "MEASURED: skiff images pull {ref1} ({} bytes compressed, fresh store): {:.0} ms",
        one.layers[0].bytes.len(),
        elapsed.as_secs_f64() * 1000.0
    );
    let out = node.ok(&["pull", &ref2]);
    assert!(
        stderr(&out).contains("exists"),
        "the shared layer must not be fetched again"
    );

    // A multi-platform index over image 2 (and image 1 posing as s390x):
    // the pull picks this machine's manifest, and by digest works too.
    let index = index_for(&two, &one);
    push_index(&registry, "test/busybox:multi", &index);
    let multi = format!("{}/test/busybox:multi", registry.host());
    node.ok(&["pull", &multi]);
    let rec = node.inspect(&multi);
    assert_eq!(rec["digest"], two.manifest_digest.as_str());
    assert_eq!(rec["indexDigest"], sha(&index).as_str());
    let by_digest = format!("{}/test/busybox@{}", registry.host(), sha(&index));
    node.ok(&["pull", &by_digest]);
    assert_eq!(
        node.inspect(&by_digest)["digest"],
        two.manifest_digest.as_str()
    );
    node.ok(&["remove", &multi]);
    node.ok(&["remove", &by_digest]);

    assert_eq!(node.names(), vec![ref1.clone(), ref2.clone()]);
    let list = node.list();
    let rec2 = list.iter().find(|r| r["name"] == ref2.as_str()).unwrap();
    assert_eq!(rec2["digest"], two.manifest_digest.as_str());
    assert_eq!(rec2["config"], two.config.digest.as_str());
    assert_eq!(rec2["layers"][1]["diffId"], two.diff_ids[1].as_str());
    assert_eq!(rec2["pinned"], false);

    // Dedup: the shared base layer is one directory and one blob.
    assert_eq!(node.layer_dirs().len(), 2, "{:?}", node.layer_dirs());
    let blobs = node.blob_names();
    let base_hex = one.layers[0].digest.trim_start_matches("sha256:");
    assert_eq!(blobs.iter().filter(|b| *b == base_hex).count(), 1);
    // 2 manifests + 2 configs + 2 distinct layers; nothing temporary.
    assert_eq!(blobs.len(), 6, "{blobs:?}");

    // The table shows both.
    let table = String::from_utf8(node.ok(&["list"]).stdout).unwrap();
    assert!(
        table.contains("IMAGE ID") && table.lines().count() == 3,
        "{table}"
    );

    // Compose image 2 read-only below an upper dir.
    let lower: Vec<String> = node.inspect(&ref2)["lowerdirs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(lower.len(), 2);
    let ctr = tempfile::tempdir().unwrap();
    {
        let m = OverlayMount::new(&lower, ctr.path());
        let root = &m.target;
        assert_eq!(
            fs::read_to_string(root.join("etc/hello.txt")).unwrap(),
            "hello\n"
        );
        assert_eq!(
            fs::read_to_string(root.join("etc/added")).unwrap(),
            "added\n"
        );
        assert!(
            !root.join("etc/remove-me").exists(),
            "whiteout must hide the file"
        );
        let mut dir: Vec<String> = fs::read_dir(root.join("data/dir"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        dir.sort();
        assert_eq!(dir, vec!["c"], "the opaque dir must hide the lower entries");
        // The rootfs works: busybox runs inside it.
        let out = Command::new("chroot")
            .arg(root)
            .args(["/bin/sh", "-c", "cat /etc/hello.txt; ls /data/dir"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nc\n");
        // Writes land in the upper dir, never in the shared layers.
        fs::write(root.join("etc/hello.txt"), "changed\n").unwrap();
        assert_eq!(
            fs::read_to_string(ctr.path().join("upper/etc/hello.txt")).unwrap(),
            "changed\n"
        );
    }
    assert!(
        fs::read_dir(ctr.path().join("merged"))
            .unwrap()
            .next()
            .is_none()
    );
    for l in &lower {
        if let Ok(s) = fs::read_to_string(Path::new(l).join("etc/hello.txt")) {
            assert_eq!(s, "hello\n", "a layer directory was modified");
        }
    }

    // Image 1 alone: its lowerdir is the shared base layer.
    let lower1 = node.inspect(&ref1)["lowerdirs"].clone();
    assert_eq!(lower1.as_array().unwrap().len(), 1);
    assert_eq!(lower1[0], lower[1].as_str());

    // Remove 2: its own layer goes, the shared one stays for image 1.
    node.ok(&["remove", &ref2]);
    assert_eq!(node.names(), vec![ref1.clone()]);
    assert_eq!(node.layer_dirs().len(), 1);
    assert!(Path::new(&lower[1]).is_dir() && !Path::new(&lower[0]).exists());
    // Removing by image ID works too, and then the store is empty.
    let id = one.config.digest.trim_start_matches("sha256:")[..12].to_string();
    node.ok(&["rm", &id]);
    assert!(node.names().is_empty());
    assert!(node.layer_dirs().is_empty());
    assert!(node.blob_names().is_empty());
    let out = node.skiff(&["remove", &ref1]);
    assert!(!out.status.success() && stderr(&out).contains("not found"));
}

/// A blob whose bytes do not match its digest fails the pull with a clear
/// error and leaves nothing in the store.
#[test]
fn corrupt_blob_fails_and_leaves_no_blob() {
    let storage = tempfile::tempdir().unwrap();
    let registry = Registry::start(storage.path(), None);
    let img = build_image(&[(&small_layer("file", &[7u8; 64 * 1024]), Comp::Gzip)]);
    push(&registry, "test/corrupt:1", &img);
    let hex = img.layers[0].digest.trim_start_matches("sha256:");
    let data = storage.path().join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    let mut bytes = fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&data, bytes).unwrap();

    let node = Node::new();
    node.use_registry(&registry, "");
    let out = node.skiff(&["pull", &format!("{}/test/corrupt:1", registry.host())]);
    assert!(!out.status.success());
    let err = stderr(&out).to_lowercase();
    assert!(
        err.contains("digest") && err.contains(hex),
        "the error must name the digest: {err}"
    );
    let blobs = node.blob_names();
    assert!(
        !blobs.iter().any(|b| b == hex),
        "corrupt blob stored: {blobs:?}"
    );
    assert!(
        !blobs.iter().any(|b| b.starts_with('.')),
        "temporary file left: {blobs:?}"
    );
    assert!(node.layer_dirs().is_empty());
    assert!(node.names().is_empty());
}

/// A full disk while a layer downloads leaves no half-written blob.
#[test]
fn disk_full_leaves_no_partial_blob() {
    let storage = tempfile::tempdir().unwrap();
    let registry = Registry::start(storage.path(), None);
    let img = build_image(&[(&busybox_layer(), Comp::Gzip)]);
    push(&registry, "test/big:1", &img);

    let node = Node::new();
    node.use_registry(&registry, "");
    fs::create_dir_all(node.data()).unwrap();
    // 512 KiB of tmpfs for a ~1 MiB layer.
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
        .arg(node.data())
        .status()
        .unwrap();
    assert!(st.success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(node.data());

    let out = node.skiff(&["pull", &format!("{}/test/big:1", registry.host())]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("No space left"), "{}", stderr(&out));
    let blobs = node.blob_names();
    let hex = img.layers[0].digest.trim_start_matches("sha256:");
    assert!(
        !blobs.iter().any(|b| b == hex || b.starts_with('.')),
        "{blobs:?}"
    );
    assert!(node.layer_dirs().is_empty());
}

/// `docker save` and OCI-layout tarballs import (plain and gzip), pinned;
/// the air-gap directory is imported once.
#[test]
fn import_docker_save_and_oci_layout() {
    let node = Node::new();
    fs::write(node.registries(), "").unwrap();

    // docker save: uncompressed layer tars under <id>/layer.tar.
    let base = busybox_layer();
    let img = build_image(&[
        (&base, Comp::None),
        (&small_layer("etc/extra", b"x\n"), Comp::None),
    ]);
    let tarball = node.dir.path().join("saved.tar");
    {
        let mut b = tar::Builder::new(Vec::new());
        let cfg_name = format!("{}.json", img.config.digest.trim_start_matches("sha256:"));
        add_file(&mut b, &cfg_name, 0o644, &img.config.bytes);
        let mut layer_paths = Vec::new();
        for (i, l) in img.layers.iter().enumerate() {
            let id = format!("{:064x}", i + 1);
            add_dir(&mut b, &format!("{id}/"));
            add_file(&mut b, &format!("{id}/VERSION"), 0o644, b"1.0");
            add_file(&mut b, &format!("{id}/json"), 0o644, b"{}");
            add_file(&mut b, &format!("{id}/layer.tar"), 0o644, &l.bytes);
            layer_paths.push(format!("{id}/layer.tar"));
        }
        let manifest = serde_json::json!([{
            "Config": cfg_name,
            "RepoTags": ["imported:v1", "registry.example.com/team/imported:v1"],
            "Layers": layer_paths,
        }]);
        add_file(&mut b, "repositories", 0o644, br#"{"imported":{"v1":"x"}}"#);
        add_file(
            &mut b,
            "manifest.json",
            0o644,
            &serde_json::to_vec(&manifest).unwrap(),
        );
        fs::write(&tarball, b.into_inner().unwrap()).unwrap();
    }
    let out = node.ok(&["import", tarball.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("docker.io/library/imported:v1"));
    assert_eq!(
        node.names(),
        vec![
            "docker.io/library/imported:v1".to_string(),
            "registry.example.com/team/imported:v1".to_string()
        ]
    );
    let rec = node.inspect("imported:v1");
    assert_eq!(rec["pinned"], true);
    assert_eq!(rec["config"], img.config.digest.as_str());
    let lower = rec["lowerdirs"].as_array().unwrap();
    assert_eq!(lower.len(), 2);
    let base_dir = Path::new(lower[1].as_str().unwrap());
    assert_eq!(
        fs::read_to_string(base_dir.join("etc/hello.txt")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        fs::read_link(base_dir.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        fs::read(base_dir.join("bin/busybox")).unwrap(),
        fs::read(BUSYBOX).unwrap()
    );

    // OCI layout, gzip layers, the whole tarball gzipped, dropped into the
    // air-gap directory.
    let oci = build_image(&[(&base, Comp::Gzip), (&whiteout_layer(), Comp::Gzip)]);
    let mut b = tar::Builder::new(Vec::new());
    add_file(
        &mut b,
        "oci-layout",
        0o644,
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    );
    add_dir(&mut b, "blobs/");
    add_dir(&mut b, "blobs/sha256/");
    let put = |b: &mut tar::Builder<Vec<u8>>, d: &str, bytes: &[u8]| {
        add_file(
            b,
            &format!("blobs/sha256/{}", d.trim_start_matches("sha256:")),
            0o644,
            bytes,
        )
    };
    for l in &oci.layers {
        put(&mut b, &l.digest, &l.bytes);
    }
    put(&mut b, &oci.config.digest, &oci.config.bytes);
    put(&mut b, &oci.manifest_digest, &oci.manifest);
    // index.json points at a multi-platform index, as `skopeo copy --all` writes.
    let platforms = index_for(&oci, &img);
    put(&mut b, &sha(&platforms), &platforms);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": sha(&platforms),
            "size": platforms.len(),
            "annotations": {
                "io.containerd.image.name": "example.com/airgap/busybox:v2",
                "org.opencontainers.image.ref.name": "v2"
            }
        }]
    });
    add_file(
        &mut b,
        "index.json",
        0o644,
        &serde_json::to_vec(&index).unwrap(),
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&b.into_inner().unwrap()).unwrap();
    fs::create_dir_all(node.store()).unwrap();
    fs::write(node.store().join("airgap.tar.gz"), gz.finish().unwrap()).unwrap();

    let out = node.ok(&["import"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("example.com/airgap/busybox:v2"));
    let rec = node.inspect("example.com/airgap/busybox:v2");
    assert_eq!(rec["pinned"], true);
    assert_eq!(rec["digest"], oci.manifest_digest.as_str());
    assert_eq!(rec["indexDigest"], sha(&platforms).as_str());
    // The busybox layer is shared with the docker-save image: it is the same
    // diff ID, hence the same directory, even though the blobs differ.
    let lower2 = rec["lowerdirs"].as_array().unwrap();
    assert_eq!(lower2[1], lower[1]);
    assert!(
        Path::new(lower2[0].as_str().unwrap())
            .join("data/dir")
            .is_dir()
    );
    // A second scan skips the unchanged tarball.
    let out = node.ok(&["import"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("unchanged"));
    assert_eq!(node.names().len(), 3);

    // Garbage is refused with a clear message.
    let junk = node.dir.path().join("junk.tar");
    let mut b = tar::Builder::new(Vec::new());
    add_file(&mut b, "hello", 0o644, b"x");
    fs::write(&junk, b.into_inner().unwrap()).unwrap();
    let out = node.skiff(&["import", junk.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not an OCI image layout or docker save archive"));
}

/// GC with a tiny threshold removes the unused image but neither the one in
/// use nor the pinned (imported) one; at the default thresholds on a
/// roomy disk it removes nothing.
#[test]
fn gc_spares_in_use_and_pinned_images() {
    let storage = tempfile::tempdir().unwrap();
    let registry = Registry::start(storage.path(), None);
    let base = busybox_layer();
    let one = build_image(&[(&base, Comp::Gzip)]);
    let two = build_image(&[(&base, Comp::Gzip), (&whiteout_layer(), Comp::Gzip)]);
    let three = build_image(&[(&small_layer("only-three", b"3"), Comp::Gzip)]);
    push(&registry, "test/gc:1", &one);
    push(&registry, "test/gc:2", &two);
    push(&registry, "test/gc:3", &three);
    let node = Node::new();
    node.use_registry(&registry, "");
    let r = |t: &str| format!("{}/test/gc:{t}", registry.host());
    for t in ["1", "2", "3"] {
        node.ok(&["pull", "-q", &r(t)]);
    }
    // Image 3 again, pinned through an import of the same content.
    let tarball = node.dir.path().join("pinned.tar");
    {
        let mut b = tar::Builder::new(Vec::new());
        add_file(&mut b, "cfg.json", 0o644, &three.config.bytes);
        add_file(
            &mut b,
            "l/layer.tar",
            0o644,
            &small_layer("only-three", b"3"),
        );
        let m = serde_json::json!([{"Config": "cfg.json", "RepoTags": ["pinned:1"], "Layers": ["l/layer.tar"]}]);
        add_file(
            &mut b,
            "manifest.json",
            0o644,
            &serde_json::to_vec(&m).unwrap(),
        );
        fs::write(&tarball, b.into_inner().unwrap()).unwrap();
    }
    node.ok(&["import", tarball.to_str().unwrap()]);

    // Usage below the high threshold: nothing goes (a threshold of 100 %,
    // since the defaults depend on how full this machine's disk is).
    let out = node.ok(&[
        "gc",
        "--image-gc-high-threshold",
        "100",
        "--image-gc-low-threshold",
        "99",
    ]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("removed"));
    assert_eq!(node.names().len(), 4);

    let out = node.ok(&[
        "gc",
        "--image-gc-high-threshold",
        "1",
        "--image-gc-low-threshold",
        "0",
        "--in-use",
        &r("2"),
    ]);
    let removed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(removed.contains(&r("1")), "{removed}");
    // Image 3 shares its config (image ID) with the pinned import: spared.
    assert_eq!(
        node.names(),
        vec![r("2"), r("3"), "docker.io/library/pinned:1".to_string()]
    );
    // The base layer image 1 had is still there for image 2.
    assert_eq!(node.layer_dirs().len(), 3);
    let lower = node.inspect(&r("2"))["lowerdirs"].clone();
    for l in lower.as_array().unwrap() {
        assert!(Path::new(l.as_str().unwrap()).is_dir());
    }

    // Nothing in use: only the pinned image (and its name twin) survive.
    node.ok(&[
        "gc",
        "--image-gc-high-threshold",
        "1",
        "--image-gc-low-threshold",
        "0",
    ]);
    assert_eq!(
        node.names(),
        vec![r("3"), "docker.io/library/pinned:1".to_string()]
    );
    assert_eq!(node.layer_dirs().len(), 1);

    let out = node.skiff(&[
        "gc",
        "--image-gc-high-threshold",
        "50",
        "--image-gc-low-threshold",
        "60",
    ]);
    assert!(!out.status.success() && stderr(&out).contains("below the high threshold"));
}

/// A mirror with a repository rewrite serves another registry's name; a
/// registry with basic auth is reached with registries.yaml credentials or
/// with an imagePullSecret (dockerconfigjson), and refused without.
#[test]
fn mirrors_rewrites_and_auth() {
    let storage = tempfile::tempdir().unwrap();
    let img = build_image(&[(&small_layer("hello", b"mirror\n"), Comp::Gzip)]);
    {
        let open = Registry::start(storage.path(), None);
        push(&open, "mirrored/app:1", &img);
    }
    // The same storage behind basic auth.
    let htpasswd = storage.path().join("htpasswd");
    // Cost 4: the registry checks it on every request; the default (12) is slow.
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    fs::write(&htpasswd, format!("tester:{hash}\n")).unwrap();
    let registry = Registry::start(storage.path(), Some(&htpasswd));
    let host = registry.host();

    // Through a mirror: `example.invalid` does not exist; its mirror does,
    // under another repository.
    let node = Node::new();
    fs::write(
        node.registries(),
        format!(
            "mirrors:\n  example.invalid:\n    endpoint: [\"http://{host}\"]\n    rewrite:\n      \"^apps/(.*)\": \"mirrored/$1\"\n\
             configs:\n  \"{host}\":\n    auth:\n      username: tester\n      password: s3cret\n"
        ),
    )
    .unwrap();
    node.ok(&["pull", "example.invalid/apps/app:1"]);
    assert_eq!(node.names(), vec!["example.invalid/apps/app:1".to_string()]);
    assert_eq!(
        node.inspect("example.invalid/apps/app:1")["digest"],
        img.manifest_digest.as_str()
    );

    // Without credentials: refused, and the error says so.
    let node = Node::new();
    node.use_registry(&registry, "");
    let image = format!("{host}/mirrored/app:1");
    let out = node.skiff(&["pull", &image]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.to_lowercase().contains("not authorized"), "{err}");
    // With an imagePullSecret's dockerconfigjson.
    let secret = node.dir.path().join("config.json");
    fs::write(
        &secret,
        format!(r#"{{"auths":{{"http://{host}":{{"auth":"dGVzdGVyOnMzY3JldA=="}}}}}}"#),
    )
    .unwrap();
    node.ok(&["pull", "--docker-config", secret.to_str().unwrap(), &image]);
    assert_eq!(node.names(), vec![image.clone()]);
    // And with --creds.
    node.ok(&["remove", &image]);
    node.ok(&["pull", "--creds", "tester:s3cret", &image]);
    assert_eq!(node.names(), vec![image]);
}

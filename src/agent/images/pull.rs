//! Pulling over the OCI distribution API with `oci-client` (rustls).
//!
//! Endpoints come from registries.yaml (mirrors first, the registry last);
//! the first endpoint that resolves the manifest serves the whole pull.
//! Blobs stream to temporary files through a hashing writer and are
//! committed under their digest only after verification; layers are
//! fetched and unpacked three at a time, each into its chain-ID directory.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use futures::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::digest::digest_of;
use super::oci::{self, Doc};
use super::progress::{Progress, Status};
use super::reference::ImageRef;
use super::registries::{Credentials, Endpoint, RegistriesConfig, Scheme};
use super::unpack::chain_ids;
use super::{ImageRecord, ImageStore, LayerRecord, StoreLock, human_bytes, now};

const ACCEPT: &[&str] = &[
    oci::MT_OCI_MANIFEST,
    oci::MT_OCI_INDEX,
    oci::MT_DOCKER_MANIFEST,
    oci::MT_DOCKER_LIST,
];

const USER_AGENT: &str = concat!("skiff/", env!("CARGO_PKG_VERSION"));

pub struct PullOptions {
    pub registries: RegistriesConfig,
    /// Credentials for the image's own registry (from `imagePullSecrets` or
    /// `--creds`); they take precedence over registries.yaml there, as the
    /// kubelet-supplied auth does in containerd. Mirrors use registries.yaml.
    pub credentials: Option<Credentials>,
    pub progress: Progress,
    /// Layers fetched and unpacked at once.
    pub concurrency: usize,
}

impl PullOptions {
    pub fn new(registries: RegistriesConfig) -> PullOptions {
        PullOptions {
            registries,
            credentials: None,
            progress: Progress::quiet(),
            concurrency: 3,
        }
    }
}

/// Why an endpoint failed: before the manifest resolved (try the next
/// endpoint) or after (the pull fails).
enum Failure {
    Resolve(anyhow::Error),
    Fatal(anyhow::Error),
}

struct Resolved {
    bytes: Bytes,
    digest: String,
    media_type: String,
    manifest: oci::Manifest,
    index: Option<(Bytes, String)>,
}

impl ImageStore {
    /// Pulls `reference` into the store and records it under its normalized
    /// name. Never holds a layer in memory.
    pub async fn pull(&self, reference: &str, opts: &PullOptions) -> Result<ImageRecord> {
        let image = ImageRef::parse(reference)?;
        // reqwest is built without a bundled crypto provider; skiff uses ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let endpoints = opts.registries.endpoints(&image)?;
        let store = self.clone();
        let lock = Arc::new(
            tokio::task::spawn_blocking(move || store.lock())
                .await
                .context("lock task")??,
        );
        opts.progress.start(&format!("pulling {image}"));
        let mut tried = Vec::new();
        for ep in &endpoints {
            match self.pull_from(&lock, &image, ep, opts).await {
                Ok(rec) => {
                    opts.progress.finish(&format!(
                        "pulled {image} ({}, {}) in {:.2} s",
                        rec.digest,
                        human_bytes(rec.size),
                        opts.progress.elapsed().as_secs_f64()
                    ));
                    return Ok(rec);
                }
                Err(Failure::Resolve(e)) => {
                    tracing::debug!(endpoint = %ep.url(), "resolve failed: {e:#}");
                    tried.push(format!("{}: {e:#}", ep.url()));
                }
                Err(Failure::Fatal(e)) => {
                    opts.progress.finish(&format!("failed to pull {image}"));
                    return Err(e.context(format!("pulling {image} from {}", ep.url())));
                }
            }
        }
        opts.progress.finish(&format!("failed to pull {image}"));
        bail!(
            "pulling {image}: no endpoint could resolve it:\n  {}",
            tried.join("\n  ")
        )
    }

    async fn pull_from(
        &self,
        lock: &Arc<StoreLock>,
        image: &ImageRef,
        ep: &Endpoint,
        opts: &PullOptions,
    ) -> Result<ImageRecord, Failure> {
        let client = make_client(ep).map_err(Failure::Resolve)?;
        let oref = image.at(&ep.repository, (!ep.is_default).then_some(ep.host.as_str()));
        let auth = auth_for(ep, &oref, opts).await.map_err(Failure::Resolve)?;
        let r = resolve(&client, &oref, &auth, image)
            .await
            .map_err(Failure::Resolve)?;
        self.fetch(lock, &client, &oref, image, r, opts)
            .await
            .map_err(Failure::Fatal)
    }

    async fn fetch(
        &self,
        lock: &Arc<StoreLock>,
        client: &Client,
        oref: &Reference,
        image: &ImageRef,
        r: Resolved,
        opts: &PullOptions,
    ) -> Result<ImageRecord> {
        let m = &r.manifest;
        if !self.blobs.exists(&m.config.digest) {
            download(self, client, oref, &m.config.digest, m.config.size, None).await?;
        }
        let config = oci::read_small(&self.blobs, &m.config.digest)?;
        let diff_ids = oci::parse_config(&config)?;
        if diff_ids.len() != m.layers.len() {
            bail!(
                "image config lists {} layers, the manifest {}",
                diff_ids.len(),
                m.layers.len()
            );
        }
        let chains = chain_ids(&diff_ids);
        let progress = &opts.progress;
        let items: Vec<usize> = m
            .layers
            .iter()
            .map(|l| {
                let hex = l.digest.trim_start_matches("sha256:");
                progress.item(&format!("layer-sha256:{}", &hex[..12]), l.size as u64)
            })
            .collect();

        // Collected eagerly: a lazy `Map` with a closure would make the
        // whole pull future non-`Send` (higher-ranked closure lifetimes).
        let jobs: Vec<_> = m
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let (diff, chain, item) = (diff_ids[i].clone(), chains[i].clone(), items[i]);
                async move {
                    let res = self
                        .fetch_layer(
                            lock, client, oref, &l.digest, l.size, &diff, &chain, item, progress,
                        )
                        .await;
                    if res.is_err() {
                        progress.status(item, Status::Failed);
                    }
                    res.map(|size| (chain, size))
                }
            })
            .collect();
        // Every job runs to its end (no half-finished work left behind),
        // then the first error is reported.
        let results: Vec<Result<(String, Option<u64>)>> = futures::stream::iter(jobs)
            .buffer_unordered(opts.concurrency.max(1))
            .collect()
            .await;
        let mut sizes = BTreeMap::new();
        for res in results {
            if let (c, Some(s)) = res? {
                sizes.insert(c, s);
            }
        }

        self.blobs.put(&r.bytes, Some(&r.digest))?;
        if let Some((b, d)) = &r.index {
            self.blobs.put(b, Some(d))?;
        }
        let t = now();
        let rec = ImageRecord {
            name: image.to_string(),
            digest: r.digest.clone(),
            index_digest: r.index.as_ref().map(|(_, d)| d.clone()),
            media_type: r.media_type.clone(),
            config: m.config.digest.clone(),
            layers: m
                .layers
                .iter()
                .enumerate()
                .map(|(i, l)| LayerRecord {
                    digest: l.digest.clone(),
                    media_type: l.media_type.clone(),
                    size: l.size as u64,
                    diff_id: diff_ids[i].clone(),
                    chain_id: chains[i].clone(),
                })
                .collect(),
            size: r.bytes.len() as u64
                + config.len() as u64
                + m.layers.iter().map(|l| l.size as u64).sum::<u64>(),
            created: t,
            last_used: t,
            pinned: false,
            source: "pull".into(),
        };
        let store = self.clone();
        let lock = lock.clone();
        let names = vec![rec.name.clone()];
        let out = tokio::task::spawn_blocking(move || store.register(&lock, &names, &rec, &sizes))
            .await
            .context("register task")??;
        out.into_iter()
            .next()
            .ok_or_else(|| anyhow!("image was not recorded"))
    }

    #[allow(clippy::too_many_arguments)]
    async fn fetch_layer(
        &self,
        lock: &Arc<StoreLock>,
        client: &Client,
        oref: &Reference,
        digest: &str,
        size: i64,
        diff_id: &str,
        chain: &str,
        item: usize,
        progress: &Progress,
    ) -> Result<Option<u64>> {
        if self.layer_dir(chain)?.is_dir() {
            // Unpacked for another image already: nothing to fetch.
            progress.status(item, Status::Exists);
            return Ok(None);
        }
        if !self.blobs.exists(digest) {
            progress.status(item, Status::Downloading);
            download(self, client, oref, digest, size, Some((progress, item))).await?;
        }
        progress.status(item, Status::Unpacking);
        let (store, lock) = (self.clone(), lock.clone());
        let (digest, diff_id, chain) = (digest.to_string(), diff_id.to_string(), chain.to_string());
        let size = tokio::task::spawn_blocking(move || {
            store.ensure_layer(&lock, &digest, &diff_id, &chain)
        })
        .await
        .context("unpack task")??;
        progress.status(item, Status::Done);
        Ok(size)
    }
}

enum Chunk {
    Data(Bytes),
    End,
}

/// Streams one blob into the store: bytes go through a bounded channel to
/// a blocking writer that hashes them into a temporary file; the file is
/// committed only when the stream ended cleanly and the digest matches.
async fn download(
    store: &ImageStore,
    client: &Client,
    oref: &Reference,
    digest: &str,
    size: i64,
    progress: Option<(&Progress, usize)>,
) -> Result<()> {
    let what = || format!("downloading {digest} from {}", oref.resolve_registry());
    let mut stream = client
        .pull_blob_stream(oref, digest)
        .await
        .with_context(what)?;
    let mut writer = store.blobs.writer()?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(16);
    let expected = digest.to_string();
    let task = tokio::task::spawn_blocking(move || -> Result<String> {
        while let Some(c) = rx.blocking_recv() {
            match c {
                Chunk::Data(b) => writer.write_all(&b).context("writing blob")?,
                Chunk::End => return writer.commit(Some(&expected)),
            }
        }
        // The sender went away without End: the transfer failed; dropping
        // the writer deletes the partial file.
        bail!("transfer aborted")
    });
    let declared = u64::try_from(size).ok();
    let mut received = 0u64;
    let mut failure: Option<anyhow::Error> = None;
    // The writer ended early (a full disk): its error is the one to report.
    let mut writer_gone = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(b) => {
                received += b.len() as u64;
                if declared.is_some_and(|d| received > d) {
                    failure = Some(anyhow!(
                        "the registry sent more than the {size} bytes the manifest declares"
                    ));
                    break;
                }
                if let Some((p, i)) = progress {
                    p.advance(i, b.len() as u64);
                }
                if tx.send(Chunk::Data(b)).await.is_err() {
                    writer_gone = true;
                    break;
                }
            }
            Err(e) => {
                failure = Some(anyhow::Error::new(e));
                break;
            }
        }
    }
    if !writer_gone && failure.is_none() && declared.is_some_and(|d| received != d) {
        failure = Some(anyhow!(
            "the registry sent {received} bytes, the manifest declares {size}"
        ));
    }
    if !writer_gone && failure.is_none() {
        // Only now may the writer commit; without End it discards.
        writer_gone = tx.send(Chunk::End).await.is_err();
    }
    drop(tx);
    let written = task.await.context("blob writer task")?;
    match (failure, written) {
        (_, Err(w)) if writer_gone => Err(w),
        (Some(e), _) => Err(e),
        (None, w) => w.map(|_| ()),
    }
    .with_context(what)
}

async fn resolve(
    client: &Client,
    oref: &Reference,
    auth: &RegistryAuth,
    image: &ImageRef,
) -> Result<Resolved> {
    let (bytes, _) = client
        .pull_manifest_raw(oref, auth, ACCEPT)
        .await
        .context("fetching the manifest")?;
    let digest = digest_of(&bytes);
    if let Some(want) = &image.digest
        && *want != digest
    {
        bail!("manifest digest mismatch: asked for {want}, got {digest}");
    }
    match oci::parse_doc(&bytes, None)? {
        Doc::Manifest(manifest, media_type) => Ok(Resolved {
            bytes,
            digest,
            media_type,
            manifest,
            index: None,
        }),
        Doc::Index(ix) => {
            let d = oci::pick_platform(&ix)?.digest.clone();
            let r2 = oref.clone_with_digest(d.clone());
            let (b2, _) = client
                .pull_manifest_raw(&r2, auth, ACCEPT)
                .await
                .with_context(|| format!("fetching the platform manifest {d}"))?;
            let d2 = digest_of(&b2);
            if d2 != d {
                bail!("manifest digest mismatch: the index names {d}, got {d2}");
            }
            match oci::parse_doc(&b2, None)? {
                Doc::Manifest(manifest, media_type) => Ok(Resolved {
                    bytes: b2,
                    digest: d2,
                    media_type,
                    manifest,
                    index: Some((bytes, digest)),
                }),
                Doc::Index(_) => bail!("an image index points to another index"),
            }
        }
    }
}

fn make_client(ep: &Endpoint) -> Result<Client> {
    let mut cfg = ClientConfig {
        protocol: match ep.scheme {
            Scheme::Http => ClientProtocol::Http,
            Scheme::Https => ClientProtocol::Https,
        },
        user_agent: USER_AGENT,
        connect_timeout: Some(Duration::from_secs(30)),
        read_timeout: Some(Duration::from_secs(120)),
        platform_resolver: None,
        ..Default::default()
    };
    // The client is built without reqwest's system-proxy feature; take the
    // usual variables ourselves.
    let env = |k: &str| {
        std::env::var(k)
            .or_else(|_| std::env::var(k.to_lowercase()))
            .ok()
            .filter(|v| !v.is_empty())
    };
    cfg.https_proxy = env("HTTPS_PROXY");
    cfg.http_proxy = env("HTTP_PROXY");
    cfg.no_proxy = env("NO_PROXY");
    if let Some(tls) = &ep.config.tls {
        if tls.cert_file.is_some() || tls.key_file.is_some() {
            bail!(
                "tls.cert_file/key_file (client certificates) for {} are not supported yet",
                ep.host
            );
        }
        if let Some(ca) = &tls.ca_file {
            let data = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            cfg.extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        cfg.accept_invalid_certificates = tls.insecure_skip_verify;
    }
    // try_from, not new: new() silently falls back to defaults (dropping
    // the TLS settings) when the configuration is invalid.
    Client::try_from(cfg).map_err(|e| anyhow!("building the registry client for {}: {e}", ep.host))
}

async fn auth_for(ep: &Endpoint, oref: &Reference, opts: &PullOptions) -> Result<RegistryAuth> {
    let creds = match (&opts.credentials, ep.is_default) {
        (Some(c), true) => Some(c.clone()),
        _ => match &ep.config.auth {
            Some(a) => a.credentials()?,
            None => None,
        },
    };
    Ok(match creds {
        None => RegistryAuth::Anonymous,
        Some(Credentials::Basic { username, password }) => RegistryAuth::Basic(username, password),
        Some(Credentials::Bearer(t)) => RegistryAuth::Bearer(t),
        Some(Credentials::IdentityToken(t)) => {
            RegistryAuth::Bearer(exchange_identity_token(ep, oref, &t).await?)
        }
    })
}

/// Trades an identity (OAuth2 refresh) token for a pull token at the
/// registry's token realm, as `docker login` credentials are used.
async fn exchange_identity_token(ep: &Endpoint, oref: &Reference, token: &str) -> Result<String> {
    let mut b = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(60));
    if let Some(tls) = &ep.config.tls {
        if let Some(ca) = &tls.ca_file {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            b = b.tls_certs_merge(vec![reqwest::Certificate::from_pem(&pem)?]);
        }
        b = b.danger_accept_invalid_certs(tls.insecure_skip_verify);
    }
    let http = b.build()?;
    let res = http
        .get(format!("{}/v2/", ep.url()))
        .send()
        .await
        .context("asking the registry for its token realm")?;
    let challenge = res
        .headers()
        .get("www-authenticate")
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| {
            anyhow!(
                "{} asks for no token, but an identity token is configured",
                ep.host
            )
        })?
        .to_string();
    let params = parse_challenge(&challenge)
        .ok_or_else(|| anyhow!("{}: not a Bearer challenge: {challenge}", ep.host))?;
    let realm = params
        .get("realm")
        .ok_or_else(|| anyhow!("{}: the challenge has no realm", ep.host))?;
    let scope = format!("repository:{}:pull", oref.repository());
    // Built in a block: the serializer is not Send and must not live across an await.
    let body = {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "refresh_token")
            .append_pair("refresh_token", token)
            .append_pair("client_id", "skiff")
            .append_pair("scope", &scope);
        if let Some(s) = params.get("service") {
            form.append_pair("service", s);
        }
        form.finish()
    };
    let res = http
        .post(realm)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .context("exchanging the identity token")?;
    let status = res.status();
    let body = res.bytes().await?;
    if !status.is_success() {
        bail!(
            "{}: the token realm refused the identity token: {status} {}",
            ep.host,
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&body).context("token response")?;
    v.get("access_token")
        .or_else(|| v.get("token"))
        .and_then(|t| t.as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{}: the token response has no access_token", ep.host))
}

/// `Bearer realm="…",service="…",scope="…"` → its parameters.
fn parse_challenge(h: &str) -> Option<BTreeMap<String, String>> {
    let rest = h.trim();
    let (scheme, rest) = rest.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut out = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => val.extend(chars.next()),
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                val.push(*c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), val);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let p = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/busybox:pull");
        assert!(parse_challenge("Basic realm=\"x\"").is_none());
    }
}

//! `skiff images list|pull|import|remove|inspect|gc`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use super::progress::Progress;
use super::reference::ImageRef;
use super::registries::{
    Credentials, DEFAULT_REGISTRIES_FILE, RegistriesConfig, credentials_from_docker_config,
};
use super::{GcPolicy, ImageStore, PullOptions, human_bytes};

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Folder for state (images live in <data-dir>/agent/images).
    #[arg(
        long,
        short = 'd',
        env = "SKIFF_DATA_DIR",
        default_value = "/var/lib/skiff",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Registry mirrors, auth and TLS (k3s's registries.yaml format).
    #[arg(long, env = "SKIFF_REGISTRIES", default_value = DEFAULT_REGISTRIES_FILE, global = true)]
    pub registries: PathBuf,
    #[command(subcommand)]
    pub command: ImagesCommand,
}

#[derive(Subcommand, Debug)]
pub enum ImagesCommand {
    /// List images.
    #[command(alias = "ls")]
    List {
        /// table or json.
        #[arg(long, short = 'o', default_value = "table")]
        output: String,
        /// Print names only.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Pull images from their registries (or mirrors).
    Pull {
        #[arg(required = true)]
        images: Vec<String>,
        /// Registry credentials USER:PASSWORD for the image's registry.
        #[arg(long)]
        creds: Option<String>,
        /// A dockerconfigjson file (the data of an imagePullSecret) to take
        /// credentials from.
        #[arg(long)]
        docker_config: Option<PathBuf>,
        /// No progress display.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Import OCI-layout or docker-save tarballs (imported images are pinned).
    ///
    /// A directory imports every tarball in it that changed since its last
    /// import; no path imports the air-gap directory <data-dir>/agent/images.
    Import { paths: Vec<PathBuf> },
    /// Remove images (by name, digest or image ID).
    #[command(alias = "rm", alias = "rmi")]
    Remove {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Print an image's record and its overlayfs lower dirs as JSON.
    Inspect { image: String },
    /// Garbage-collect unused images when the disk is too full.
    Gc {
        /// Disk usage percent that triggers collection.
        #[arg(long, default_value_t = 85)]
        image_gc_high_threshold: u8,
        /// Disk usage percent collection frees down to.
        #[arg(long, default_value_t = 80)]
        image_gc_low_threshold: u8,
        /// An image in use, never removed (repeatable).
        #[arg(long)]
        in_use: Vec<String>,
    },
}

pub fn run(args: ImagesArgs) -> Result<()> {
    init_logging();
    let store = ImageStore::open(&args.data_dir)?;
    match args.command {
        ImagesCommand::List { output, quiet } => list(&store, &output, quiet),
        ImagesCommand::Pull {
            images,
            creds,
            docker_config,
            quiet,
        } => {
            let registries = RegistriesConfig::load(&args.registries)?;
            let secret = match &docker_config {
                Some(p) => {
                    Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)
                }
                None => None,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            for image in images {
                let mut opts = PullOptions::new(registries.clone());
                opts.progress = if quiet {
                    Progress::quiet()
                } else {
                    Progress::stderr()
                };
                opts.credentials = match (&creds, &secret) {
                    (Some(c), _) => {
                        let (u, p) = c.split_once(':').unwrap_or((c.as_str(), ""));
                        Some(Credentials::Basic {
                            username: u.to_string(),
                            password: p.to_string(),
                        })
                    }
                    (None, Some(data)) => {
                        credentials_from_docker_config(&[data], &ImageRef::parse(&image)?)?
                    }
                    (None, None) => None,
                };
                rt.block_on(store.pull(&image, &opts))?;
            }
            Ok(())
        }
        ImagesCommand::Import { paths } => {
            let mut failed = 0;
            let targets: Vec<Option<PathBuf>> = if paths.is_empty() {
                vec![None]
            } else {
                paths.into_iter().map(Some).collect()
            };
            for p in targets {
                let dir_report = match &p {
                    None => Some(store.import_dir()?),
                    Some(p) if p.is_dir() => Some(store.import_dir_at(p)?),
                    Some(_) => None,
                };
                if let Some(r) = dir_report {
                    for rec in &r.imported {
                        println!("imported {} {}", rec.name, rec.digest);
                    }
                    for s in &r.skipped {
                        println!("unchanged {}", s.display());
                    }
                    for (f, e) in &r.failed {
                        eprintln!("skiff: importing {}: {e}", f.display());
                        failed += 1;
                    }
                } else if let Some(p) = &p {
                    for rec in store.import_file(p)? {
                        println!("imported {} {}", rec.name, rec.digest);
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} archive(s) could not be imported");
            }
            Ok(())
        }
        ImagesCommand::Remove { images } => {
            for i in images {
                for n in store.remove(&i)? {
                    println!("removed {n}");
                }
            }
            Ok(())
        }
        ImagesCommand::Inspect { image } => {
            let Some(rec) = store.get(&image)? else {
                bail!("image {image:?} not found");
            };
            let lower: Vec<String> = store
                .rootfs_lowerdirs(&rec)?
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            let mut v = serde_json::to_value(&rec)?;
            v["lowerdirs"] = serde_json::json!(lower);
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        ImagesCommand::Gc {
            image_gc_high_threshold,
            image_gc_low_threshold,
            in_use,
        } => {
            let policy = GcPolicy {
                high_threshold_percent: image_gc_high_threshold,
                low_threshold_percent: image_gc_low_threshold,
            };
            let r = store.gc(&policy, &in_use)?;
            for n in &r.removed {
                println!("removed {n}");
            }
            eprintln!(
                "disk usage {}% of {} ({} available; high {}%, low {}%); freed {} of {} wanted",
                r.usage_percent,
                human_bytes(r.capacity),
                human_bytes(r.available_before),
                policy.high_threshold_percent,
                policy.low_threshold_percent,
                human_bytes(r.freed),
                human_bytes(r.to_free)
            );
            Ok(())
        }
    }
}

fn list(store: &ImageStore, output: &str, quiet: bool) -> Result<()> {
    let recs = store.list()?;
    if quiet {
        for r in &recs {
            println!("{}", r.name);
        }
        return Ok(());
    }
    match output {
        "json" => println!("{}", serde_json::to_string_pretty(&recs)?),
        "table" => {
            let mut rows = vec![[
                "IMAGE".to_string(),
                "TAG".into(),
                "DIGEST".into(),
                "IMAGE ID".into(),
                "SIZE".into(),
                "PINNED".into(),
            ]];
            for r in &recs {
                let (image, tag) = match ImageRef::parse(&r.name) {
                    Ok(i) => (i.name(), i.tag.unwrap_or_else(|| "<none>".into())),
                    Err(_) => ("<none>".to_string(), "<none>".to_string()),
                };
                rows.push([
                    image,
                    tag,
                    short(&r.digest),
                    short(&r.config),
                    human_bytes(r.size),
                    if r.pinned { "yes" } else { "no" }.into(),
                ]);
            }
            let mut widths = [0usize; 6];
            for row in &rows {
                for (w, c) in widths.iter_mut().zip(row) {
                    *w = (*w).max(c.len());
                }
            }
            for row in &rows {
                let cells: Vec<String> = row
                    .iter()
                    .zip(widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                println!("{}", cells.join("  ").trim_end());
            }
        }
        other => bail!("unknown output format {other:?} (table or json)"),
    }
    Ok(())
}

fn short(d: &str) -> String {
    d.trim_start_matches("sha256:").chars().take(12).collect()
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SKIFF_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

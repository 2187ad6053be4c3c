//! Forwarding sysctls. The values found before the first `init` are saved in
//! the state dir, so `remove_all` puts the host back exactly as it was.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::ipam::write_atomic;

/// (name, value wanted, required). br_netfilter may be absent elsewhere.
const WANTED: [(&str, &str, bool); 2] = [
    ("net.ipv4.ip_forward", "1", true),
    ("net.bridge.bridge-nf-call-iptables", "1", false),
];

const SAVED: &str = "sysctl-saved.json";

fn proc_path(name: &str) -> PathBuf {
    Path::new("/proc/sys").join(name.replace('.', "/"))
}

pub fn read(name: &str) -> Result<Option<String>> {
    match std::fs::read_to_string(proc_path(name)) {
        Ok(v) => Ok(Some(v.trim().to_string())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading sysctl {name}")),
    }
}

fn write(name: &str, value: &str) -> Result<()> {
    std::fs::write(proc_path(name), value).with_context(|| format!("setting sysctl {name}={value}"))
}

/// Saves the current values (only if none are saved yet: a restarted agent
/// must not record its own settings as the originals), then sets ours.
pub fn apply(state_dir: &Path) -> Result<()> {
    if !state_dir.join(SAVED).exists() {
        let mut saved = BTreeMap::new();
        for (name, _, _) in WANTED {
            if let Some(v) = read(name)? {
                saved.insert(name.to_string(), v);
            }
        }
        write_atomic(state_dir, SAVED, &serde_json::to_vec(&saved)?)?;
    }
    for (name, value, required) in WANTED {
        if read(name)?.is_none() && !required {
            tracing::warn!(
                sysctl = name,
                "not present (br_netfilter not loaded?); skipped"
            );
            continue;
        }
        write(name, value)?;
    }
    Ok(())
}

/// Restores the saved values and forgets them. Idempotent.
pub fn restore(state_dir: &Path) -> Result<()> {
    let path = state_dir.join(SAVED);
    let saved: BTreeMap<String, String> = match std::fs::read(&path) {
        Ok(b) => {
            serde_json::from_slice(&b).with_context(|| format!("parsing {}", path.display()))?
        }
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    for (name, value) in &saved {
        // Only names we manage: the file is ours, but never write arbitrary paths.
        if WANTED.iter().any(|(n, _, _)| n == name) && read(name)?.as_deref() != Some(value) {
            write(name, value)?;
        }
    }
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
}

/// Original `route_localnet` of the bridge, saved before the first change.
const SAVED_LOCALNET: &str = "sysctl-route-localnet";

fn route_localnet(bridge: &str) -> String {
    format!("net.ipv4.conf.{bridge}.route_localnet")
}

/// Sets `route_localnet=1` on the bridge (needed for 127.0.0.1:hostPort),
/// saving the value found the first time.
pub fn enable_route_localnet(state_dir: &Path, bridge: &str) -> Result<()> {
    let name = route_localnet(bridge);
    let Some(now) = read(&name)? else {
        anyhow::bail!("sysctl {name} not present: no bridge {bridge}?");
    };
    if now == "1" {
        return Ok(());
    }
    if !state_dir.join(SAVED_LOCALNET).exists() {
        write_atomic(state_dir, SAVED_LOCALNET, now.as_bytes())?;
    }
    write(&name, "1")
}

/// Puts the saved `route_localnet` back (if the bridge still exists) and
/// forgets it. Idempotent.
pub fn restore_route_localnet(state_dir: &Path, bridge: &str) -> Result<()> {
    let path = state_dir.join(SAVED_LOCALNET);
    let saved = match std::fs::read_to_string(&path) {
        Ok(v) => v.trim().to_string(),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let name = route_localnet(bridge);
    // Only a 0/1 value we saved ourselves is written back.
    if (saved == "0" || saved == "1") && read(&name)?.is_some_and(|v| v != saved) {
        write(&name, &saved)?;
    }
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
}

//! Image garbage collection by disk usage, as the kubelet does it: when the
//! filesystem holding the store is at least `high` percent full, remove
//! unused images, least recently used first, until usage is back to `low`
//! percent. Images in use (a caller-supplied set) and pinned images are
//! never removed.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Result, anyhow, bail};

use super::{ImageRecord, ImageStore, matching};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcPolicy {
    /// Usage (percent) at or above which GC runs; 100 disables it.
    pub high_threshold_percent: u8,
    /// Usage (percent) GC frees down to.
    pub low_threshold_percent: u8,
}

impl Default for GcPolicy {
    /// The kubelet's defaults (`imageGCHighThresholdPercent` 85, low 80).
    fn default() -> Self {
        GcPolicy {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
        }
    }
}

impl GcPolicy {
    pub fn validate(&self) -> Result<()> {
        if self.high_threshold_percent > 100 {
            bail!("the image GC high threshold must be 0–100");
        }
        if self.low_threshold_percent >= self.high_threshold_percent
            && self.high_threshold_percent != 100
        {
            bail!(
                "the image GC low threshold ({}) must be below the high threshold ({})",
                self.low_threshold_percent,
                self.high_threshold_percent
            );
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
pub struct GcReport {
    pub capacity: u64,
    pub available_before: u64,
    /// Usage when GC started, percent.
    pub usage_percent: u64,
    /// Bytes GC aimed to free (0 when below the high threshold).
    pub to_free: u64,
    /// Names removed.
    pub removed: Vec<String>,
    /// Bytes that became available.
    pub freed: u64,
}

/// (capacity, available to unprivileged users) of the filesystem at `p`.
pub fn disk_usage(p: &Path) -> Result<(u64, u64)> {
    let c = CString::new(p.as_os_str().as_bytes())?;
    // SAFETY: statvfs writes into the zeroed struct we pass.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(anyhow!(
            "statvfs {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        ));
    }
    let frsize = s.f_frsize as u64;
    Ok((s.f_blocks as u64 * frsize, s.f_bavail as u64 * frsize))
}

impl ImageStore {
    /// Runs one GC pass. `in_use` holds references (names, digests or IDs)
    /// of the images running containers use.
    pub fn gc(&self, policy: &GcPolicy, in_use: &[String]) -> Result<GcReport> {
        policy.validate()?;
        let (capacity, available) = disk_usage(&self.root)?;
        let mut report = GcReport {
            capacity,
            available_before: available,
            usage_percent: (available.min(capacity) * 100)
                .checked_div(capacity)
                .map_or(0, |free| 100 - free),
            ..Default::default()
        };
        if policy.high_threshold_percent == 100
            || report.usage_percent < u64::from(policy.high_threshold_percent)
        {
            return Ok(report);
        }
        report.to_free = (capacity * (100 - u64::from(policy.low_threshold_percent)) / 100)
            .saturating_sub(available);

        let lock = self.lock()?;
        let mut idx = self.load_index()?;
        let mut used: BTreeSet<String> = BTreeSet::new();
        for r in in_use {
            for rec in matching(&idx, r) {
                used.insert(rec.config);
            }
        }
        // One image = one image ID (config digest), with all its names.
        let mut groups: BTreeMap<String, Vec<ImageRecord>> = BTreeMap::new();
        for rec in idx.images.values() {
            groups
                .entry(rec.config.clone())
                .or_default()
                .push(rec.clone());
        }
        let mut candidates: Vec<(i64, i64, Vec<ImageRecord>)> = groups
            .into_iter()
            .filter(|(id, recs)| !used.contains(id) && !recs.iter().any(|r| r.pinned))
            .map(|(_, recs)| {
                let last = recs.iter().map(|r| r.last_used).max().unwrap_or(0);
                let created = recs.iter().map(|r| r.created).min().unwrap_or(0);
                (last, created, recs)
            })
            .collect();
        candidates.sort_by_key(|c| (c.0, c.1));

        let mut estimated = 0u64;
        for (_, _, recs) in candidates {
            for r in &recs {
                idx.images.remove(&r.name);
                report.removed.push(r.name.clone());
            }
            self.save_index(&lock, &idx)?;
            estimated += self.prune(&lock, &mut idx)?;
            let (_, now_available) = disk_usage(&self.root)?;
            // What the filesystem says, unless other writers hide it.
            report.freed = now_available.saturating_sub(available).max(estimated);
            if report.freed >= report.to_free {
                break;
            }
        }
        Ok(report)
    }
}

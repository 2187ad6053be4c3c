//! The CronJob controller (upstream `pkg/controller/cronjob`, the v2
//! controller) with a cron schedule parser that follows robfig/cron v3's
//! `ParseStandard`, which upstream uses: five fields or an `@descriptor`,
//! `TZ=`/`CRON_TZ=` prefixes, and its day-of-month/day-of-week and DST
//! behaviour.
//!
//! Testing knob: `SKIFF_CRONJOB_TEST_MINUTE_SECONDS=<s>` in the server's
//! environment makes this controller's clock run so that one schedule minute
//! passes every `<s>` real seconds (it starts at the real time when the
//! controller starts). Job names, `lastScheduleTime` and
//! `startingDeadlineSeconds` are then in that fast clock; everything else
//! (Job start and completion times) stays real.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use super::workloads::{self as w, Error, Events, Result, Watched};

pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Requeue padding past the next schedule time (upstream `nextScheduleDelta`).
const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);
const CLOCK_ENV: &str = "SKIFF_CRONJOB_TEST_MINUTE_SECONDS";

/// The controller's clock: real time, or real time sped up for tests.
struct Clock {
    /// Schedule seconds per real second.
    speed: f64,
    real0: Instant,
    virtual0: Timestamp,
}

impl Clock {
    fn from_env() -> Clock {
        let speed = std::env::var(CLOCK_ENV)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|minute_seconds| 60.0 / minute_seconds)
            .unwrap_or(1.0);
        if speed != 1.0 {
            tracing::warn!("{CLOCK_ENV} is set: the CronJob controller's clock runs {speed}x fast");
        }
        Clock {
            speed,
            real0: Instant::now(),
            virtual0: Timestamp::now(),
        }
    }

    fn now(&self) -> Timestamp {
        if self.speed == 1.0 {
            return Timestamp::now();
        }
        let elapsed = self.real0.elapsed().as_secs_f64() * self.speed;
        self.virtual0 + SignedDuration::from_secs_f64(elapsed)
    }

    /// How long to really wait for `d` to pass on this clock.
    fn real(&self, d: Duration) -> Duration {
        Duration::from_secs_f64(d.as_secs_f64() / self.speed)
    }
}

struct Ctx {
    client: Client,
    cronjobs: Arc<Watched<CronJob>>,
    jobs: Arc<Watched<Job>>,
    events: Events,
    clock: Clock,
}

pub async fn run(client: Client) {
    let (cronjobs, cj_stream) = w::watch(
        Api::<CronJob>::all(client.clone()),
        watcher::Config::default(),
    );
    let (jobs, job_stream) = w::watch(Api::<Job>::all(client.clone()), watcher::Config::default());
    let ctx = Arc::new(Ctx {
        events: Events::new(client.clone(), "cronjob-controller"),
        client,
        cronjobs: cronjobs.clone(),
        jobs,
        clock: Clock::from_env(),
    });
    Controller::for_stream(cj_stream, cronjobs.store.clone())
        .owns_stream(job_stream)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(_cj: Arc<CronJob>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    match err {
        Error::Kube(e) if w::is_status(e, 409) => Action::requeue(Duration::from_millis(200)),
        _ => {
            tracing::debug!("cronjob sync: {err}");
            Action::requeue(Duration::from_secs(1))
        }
    }
}

/// (finished, condition type) as upstream `getFinishedStatus`.
fn finished_status(job: &Job) -> Option<&str> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

/// The Job name for a scheduled time: minutes since the epoch.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// RFC 3339 in `tz`, as Go's `time.RFC3339` prints it (`Z` for offset 0).
fn rfc3339_in(t: Timestamp, tz: &jiff::tz::TimeZone) -> String {
    let z = t.to_zoned(tz.clone());
    if z.offset().seconds() == 0 {
        z.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action> {
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    ctx.jobs.wait_ready().await?;
    if !ctx.jobs.caught_up(&uid) || !ctx.cronjobs.caught_up(&uid) {
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    let cj = ctx
        .cronjobs
        .store
        .get(&ObjectRef::from_obj(&*cj))
        .unwrap_or(cj);
    let ns = cj.namespace().unwrap_or_default();
    let cj_ref = w::object_ref(&*cj);
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let jobs: Vec<Arc<Job>> = ctx
        .jobs
        .store
        .state()
        .into_iter()
        .filter(|j| {
            j.metadata.namespace.as_deref() == Some(ns.as_str())
                && w::is_controlled_by(&j.metadata, &uid)
        })
        .collect();
    let original = cj.status.clone().unwrap_or_default();
    let mut status = original.clone();
    let spec = cj.spec.clone().unwrap_or_default();

    // Reconcile the active list with the Jobs that exist.
    let children: HashSet<String> = jobs.iter().filter_map(|j| j.metadata.uid.clone()).collect();
    for j in &jobs {
        let juid = j.metadata.uid.clone().unwrap_or_default();
        let in_active = status
            .active
            .iter()
            .flatten()
            .any(|r| r.uid.as_deref() == Some(juid.as_str()));
        let finished = finished_status(j);
        if !in_active && finished.is_none() {
            ctx.events
                .warning(
                    &cj_ref,
                    Some(w::object_ref(&**j)),
                    "UnexpectedJob",
                    "Sync",
                    format!(
                        "Saw a job that the controller did not create or forgot: {}",
                        j.name_any()
                    ),
                )
                .await;
        } else if in_active && let Some(cond) = finished {
            if let Some(a) = status.active.as_mut() {
                a.retain(|r| r.uid.as_deref() != Some(juid.as_str()));
            }
            ctx.events
                .normal(
                    &cj_ref,
                    Some(w::object_ref(&**j)),
                    "SawCompletedJob",
                    "Sync",
                    format!("Saw completed job: {}, condition: {cond}", j.name_any()),
                )
                .await;
        }
        if finished == Some("Complete")
            && let Some(done) = j.status.as_ref().and_then(|s| s.completion_time.clone())
            && status
                .last_successful_time
                .as_ref()
                .is_none_or(|t| t.0 < done.0)
        {
            status.last_successful_time = Some(done);
        }
    }
    for r in status.active.clone().unwrap_or_default() {
        if r.uid.as_ref().is_some_and(|u| children.contains(u)) {
            continue;
        }
        // Ask the API: the store may not have caught up with a new Job.
        let name = r.name.clone().unwrap_or_default();
        if jobs_api.get_opt(&name).await?.is_none() {
            ctx.events
                .normal(
                    &cj_ref,
                    Some(r.clone()),
                    "MissingJob",
                    "Sync",
                    format!("Active job went missing: {name}"),
                )
                .await;
            if let Some(a) = status.active.as_mut() {
                a.retain(|x| x.uid != r.uid);
            }
        }
    }
    if status.active.as_ref().is_some_and(|a| a.is_empty()) {
        status.active = None;
    }

    if cj.metadata.deletion_timestamp.is_some() {
        write_status(&ctx, &cj, &original, &status).await?;
        return Ok(Action::await_change());
    }

    let requeue = schedule_next(&ctx, &cj, &spec, &mut status).await?;
    cleanup_finished_jobs(&ctx, &cj, &spec, &mut status, &jobs).await;
    write_status(&ctx, &cj, &original, &status).await?;
    Ok(match requeue {
        Some(d) => Action::requeue(ctx.clock.real(d).max(Duration::from_millis(10))),
        None => Action::await_change(),
    })
}

/// Upstream `syncCronJob` after the active-list bookkeeping: creates the Job
/// for the most recent unmet schedule time; returns when to look again (on
/// the controller's clock).
async fn schedule_next(
    ctx: &Ctx,
    cj: &CronJob,
    spec: &k8s_openapi::api::batch::v1::CronJobSpec,
    status: &mut CronJobStatus,
) -> Result<Option<Duration>> {
    let cj_ref = w::object_ref(cj);
    let ns = cj.namespace().unwrap_or_default();
    let tz = match spec.time_zone.as_deref() {
        None => jiff::tz::TimeZone::system(),
        Some(name) => match jiff::tz::TimeZone::get(name) {
            Ok(tz) => tz,
            Err(e) => {
                ctx.events
                    .warning(
                        &cj_ref,
                        None,
                        "UnknownTimeZone",
                        "Sync",
                        format!("invalid timeZone: {name:?}: {e}"),
                    )
                    .await;
                return Ok(None);
            }
        },
    };
    let schedule = match schedule::Schedule::parse(&spec.schedule) {
        Ok(s) => s,
        Err(e) => {
            ctx.events
                .warning(
                    &cj_ref,
                    None,
                    "UnparseableSchedule",
                    "Sync",
                    format!("unparseable schedule: {:?} : {e}", spec.schedule),
                )
                .await;
            return Ok(None);
        }
    };
    if spec.suspend == Some(true) {
        return Ok(None);
    }
    let now = ctx.clock.now();
    let created = w::creation(&cj.metadata);
    let last = status.last_schedule_time.as_ref().map(|t| t.0);
    let (most_recent, missed) = schedule::most_recent(
        &schedule,
        &tz,
        created,
        last,
        spec.starting_deadline_seconds,
        now,
    );
    let next_in = schedule::next_requeue(&schedule, &tz, created, last, now);
    let Some(scheduled) = most_recent else {
        return Ok(next_in);
    };
    if missed > 100 {
        ctx.events
            .warning(&cj_ref, None,
                "TooManyMissedTimes",
                "Sync",
                "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into(),
            )
            .await;
    }
    if let Some(sds) = spec.starting_deadline_seconds
        && scheduled + SignedDuration::from_secs(sds) < now
    {
        let rfc1123z = scheduled
            .to_zoned(jiff::tz::TimeZone::UTC)
            .strftime("%a, %d %b %Y %H:%M:%S %z")
            .to_string();
        ctx.events
            .warning(
                &cj_ref,
                None,
                "MissSchedule",
                "Sync",
                format!("Missed scheduled time to start a job: {rfc1123z}"),
            )
            .await;
        return Ok(next_in);
    }
    let name = job_name(&cj.name_any(), scheduled);
    let already = status
        .active
        .iter()
        .flatten()
        .any(|r| r.name.as_deref() == Some(name.as_str()))
        || status
            .last_schedule_time
            .as_ref()
            .is_some_and(|t| t.0 == scheduled);
    if already {
        return Ok(next_in);
    }
    let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
    if policy == "Forbid" && status.active.as_ref().is_some_and(|a| !a.is_empty()) {
        ctx.events
            .normal(&cj_ref, None,
                "JobAlreadyActive",
                "Sync",
                "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
            )
            .await;
        return Ok(next_in);
    }
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    if policy == "Replace" {
        for r in status.active.clone().unwrap_or_default() {
            let jname = r.name.clone().unwrap_or_default();
            match jobs_api.get_opt(&jname).await? {
                Some(j) => {
                    delete_job(ctx, cj, &j, status).await?;
                }
                None => {
                    if let Some(a) = status.active.as_mut() {
                        a.retain(|x| x.uid != r.uid);
                    }
                }
            }
        }
    }
    let tmpl = &spec.job_template;
    let tmeta = tmpl.metadata.clone().unwrap_or_default();
    let mut annotations = tmeta.annotations.clone().unwrap_or_default();
    let tz_for_annotation = match spec.time_zone.as_deref() {
        Some(n) => jiff::tz::TimeZone::get(n).unwrap_or(jiff::tz::TimeZone::UTC),
        None => jiff::tz::TimeZone::UTC,
    };
    annotations.insert(
        SCHEDULED_TIMESTAMP.into(),
        rfc3339_in(scheduled, &tz_for_annotation),
    );
    let job = Job {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            labels: tmeta.labels.clone(),
            annotations: Some(annotations),
            owner_references: Some(vec![w::controller_ref(cj)]),
            ..Default::default()
        },
        spec: tmpl.spec.clone(),
        status: None,
    };
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let made = match jobs_api.create(&PostParams::default(), &job).await {
        Ok(j) => {
            ctx.jobs.note_write(&uid, &j.metadata);
            ctx.events
                .normal(
                    &cj_ref,
                    Some(w::object_ref(&j)),
                    "SuccessfulCreate",
                    "CreateJob",
                    format!("Created job {}", j.name_any()),
                )
                .await;
            j
        }
        Err(e) if w::is_status(&e, 409) => {
            // Someone (maybe us before a restart) already made it.
            let Some(j) = jobs_api.get_opt(&name).await? else {
                return Ok(Some(Duration::from_secs(1)));
            };
            if !w::is_controlled_by(&j.metadata, &uid)
                || status
                    .active
                    .iter()
                    .flatten()
                    .any(|r| r.uid == j.metadata.uid)
            {
                return Ok(next_in);
            }
            j
        }
        Err(e) => {
            ctx.events
                .warning(
                    &cj_ref,
                    None,
                    "FailedCreate",
                    "CreateJob",
                    format!("Error creating job: {e}"),
                )
                .await;
            return Err(e.into());
        }
    };
    status
        .active
        .get_or_insert_with(Vec::new)
        .push(w::object_ref(&made));
    status.last_schedule_time = Some(w::time(scheduled));
    // Look again at the schedule time after this one.
    let after = schedule.next(scheduled, &tz);
    Ok(after.map(|t| to_duration(t.duration_since(now)) + NEXT_SCHEDULE_DELTA))
}

fn to_duration(d: SignedDuration) -> Duration {
    if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    }
}

async fn delete_job(ctx: &Ctx, cj: &CronJob, job: &Job, status: &mut CronJobStatus) -> Result<()> {
    let ns = job.namespace().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    match api
        .delete(&job.name_any(), &DeleteParams::background())
        .await
    {
        Ok(_) => {}
        Err(e) if w::is_status(&e, 404) => {}
        Err(e) => {
            ctx.events
                .warning(
                    &w::object_ref(cj),
                    None,
                    "FailedDelete",
                    "DeleteJob",
                    format!("Deleted job: {e}"),
                )
                .await;
            return Err(e.into());
        }
    }
    if let Some(a) = status.active.as_mut() {
        a.retain(|r| r.uid != job.metadata.uid);
        if a.is_empty() {
            status.active = None;
        }
    }
    ctx.events
        .normal(
            &w::object_ref(cj),
            Some(w::object_ref(job)),
            "SuccessfulDelete",
            "DeleteJob",
            format!("Deleted job {}", job.name_any()),
        )
        .await;
    Ok(())
}

/// Upstream `cleanupFinishedJobs`: keep the newest finished Jobs up to the
/// history limits.
async fn cleanup_finished_jobs(
    ctx: &Ctx,
    cj: &CronJob,
    spec: &k8s_openapi::api::batch::v1::CronJobSpec,
    status: &mut CronJobStatus,
    jobs: &[Arc<Job>],
) {
    if spec.successful_jobs_history_limit.is_none() && spec.failed_jobs_history_limit.is_none() {
        return;
    }
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit),
        ("Failed", spec.failed_jobs_history_limit),
    ] {
        let Some(limit) = limit else { continue };
        let mut list: Vec<&Arc<Job>> = jobs
            .iter()
            .filter(|j| finished_status(j) == Some(kind) && j.metadata.deletion_timestamp.is_none())
            .collect();
        let excess = list.len().saturating_sub(limit.max(0) as usize);
        if excess == 0 {
            continue;
        }
        // Oldest start first; Jobs that never started sort last.
        list.sort_by(|a, b| {
            let sa = a
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0);
            let sb = b
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0);
            match (sa, sb) {
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => sa.cmp(&sb).then_with(|| a.name_any().cmp(&b.name_any())),
            }
        });
        for j in list.into_iter().take(excess) {
            if let Err(e) = delete_job(ctx, cj, j, status).await {
                tracing::debug!("deleting job {}: {e}", j.name_any());
            }
        }
    }
}

async fn write_status(
    ctx: &Ctx,
    cj: &CronJob,
    original: &CronJobStatus,
    status: &CronJobStatus,
) -> Result<()> {
    if status == original {
        return Ok(());
    }
    let api: Api<CronJob> =
        Api::namespaced(ctx.client.clone(), &cj.namespace().unwrap_or_default());
    let mut c = cj.clone();
    c.status = Some(status.clone());
    c.metadata.managed_fields = None;
    let written = api
        .replace_status(&cj.name_any(), &PostParams::default(), &c)
        .await?;
    ctx.cronjobs.note_write(
        cj.metadata.uid.as_deref().unwrap_or_default(),
        &written.metadata,
    );
    Ok(())
}

/// Cron schedules as robfig/cron v3's `ParseStandard` reads them.
pub mod schedule {
    use std::time::Duration;

    use jiff::civil::date;
    use jiff::tz::TimeZone;
    use jiff::{SignedDuration, Timestamp, ToSpan, Zoned};

    const STAR: u64 = 1 << 63;

    struct Bounds {
        min: u32,
        max: u32,
        names: &'static [(&'static str, u32)],
    }

    const MINUTES: Bounds = Bounds {
        min: 0,
        max: 59,
        names: &[],
    };
    const HOURS: Bounds = Bounds {
        min: 0,
        max: 23,
        names: &[],
    };
    const DOM: Bounds = Bounds {
        min: 1,
        max: 31,
        names: &[],
    };
    const MONTHS: Bounds = Bounds {
        min: 1,
        max: 12,
        names: &[
            ("jan", 1),
            ("feb", 2),
            ("mar", 3),
            ("apr", 4),
            ("may", 5),
            ("jun", 6),
            ("jul", 7),
            ("aug", 8),
            ("sep", 9),
            ("oct", 10),
            ("nov", 11),
            ("dec", 12),
        ],
    };
    const DOW: Bounds = Bounds {
        min: 0,
        max: 6,
        names: &[
            ("sun", 0),
            ("mon", 1),
            ("tue", 2),
            ("wed", 3),
            ("thu", 4),
            ("fri", 5),
            ("sat", 6),
        ],
    };

    #[derive(Debug, Clone)]
    pub struct Schedule {
        kind: Kind,
        /// A `TZ=`/`CRON_TZ=` prefix; else the caller's zone applies.
        tz: Option<TimeZone>,
    }

    #[derive(Debug, Clone)]
    enum Kind {
        Spec {
            minute: u64,
            hour: u64,
            dom: u64,
            month: u64,
            dow: u64,
        },
        Every(Duration),
    }

    fn bits(min: u32, max: u32, step: u32) -> u64 {
        if step == 1 {
            return (!(u64::MAX << (max + 1))) & (u64::MAX << min);
        }
        let mut b = 0;
        let mut i = min;
        while i <= max {
            b |= 1 << i;
            i += step;
        }
        b
    }

    fn all(r: &Bounds) -> u64 {
        bits(r.min, r.max, 1) | STAR
    }

    fn parse_int(s: &str) -> Result<u32, String> {
        let n: i64 = s
            .parse()
            .map_err(|_| format!("failed to parse int from {s}"))?;
        if n < 0 {
            return Err(format!("negative number ({n}) not allowed: {s}"));
        }
        u32::try_from(n).map_err(|_| format!("failed to parse int from {s}"))
    }

    fn parse_int_or_name(s: &str, r: &Bounds) -> Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        if let Some((_, v)) = r.names.iter().find(|(n, _)| *n == lower) {
            return Ok(*v);
        }
        parse_int(s)
    }

    fn range(expr: &str, r: &Bounds) -> Result<u64, String> {
        let range_and_step: Vec<&str> = expr.split('/').collect();
        let low_high: Vec<&str> = range_and_step[0].split('-').collect();
        let single = low_high.len() == 1;
        let (start, mut end, mut extra);
        if low_high[0] == "*" || low_high[0] == "?" {
            start = r.min;
            end = r.max;
            extra = STAR;
        } else {
            start = parse_int_or_name(low_high[0], r)?;
            extra = 0;
            end = match low_high.len() {
                1 => start,
                2 => parse_int_or_name(low_high[1], r)?,
                _ => return Err(format!("too many hyphens: {expr}")),
            };
        }
        let step = match range_and_step.len() {
            1 => 1,
            2 => {
                let step = parse_int(range_and_step[1])?;
                // "N/step" means "N-max/step".
                if single {
                    end = r.max;
                }
                if step > 1 {
                    extra = 0;
                }
                step
            }
            _ => return Err(format!("too many slashes: {expr}")),
        };
        if start < r.min {
            return Err(format!(
                "beginning of range ({start}) below minimum ({}): {expr}",
                r.min
            ));
        }
        if end > r.max {
            return Err(format!(
                "end of range ({end}) above maximum ({}): {expr}",
                r.max
            ));
        }
        if start > end {
            return Err(format!(
                "beginning of range ({start}) beyond end of range ({end}): {expr}"
            ));
        }
        if step == 0 {
            return Err(format!("step of range should be a positive number: {expr}"));
        }
        Ok(bits(start, end, step) | extra)
    }

    fn field(f: &str, r: &Bounds) -> Result<u64, String> {
        let mut b = 0;
        for expr in f.split(',') {
            b |= range(expr, r)?;
        }
        Ok(b)
    }

    /// Go's `time.ParseDuration` for the units cron schedules use.
    fn parse_go_duration(s: &str) -> Result<Duration, String> {
        let err = || format!("time: invalid duration {s:?}");
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(err());
        }
        if rest == "0" {
            return Ok(Duration::ZERO);
        }
        let mut total = 0f64;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(err)?;
            let n: f64 = rest[..num_len].parse().map_err(|_| err())?;
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let mult = match &rest[..unit_len] {
                "ns" => 1e-9,
                "us" | "µs" | "μs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(err()),
            };
            total += n * mult;
            rest = &rest[unit_len..];
        }
        Ok(Duration::from_secs_f64(total))
    }

    impl Schedule {
        pub fn parse(spec: &str) -> Result<Schedule, String> {
            let mut spec = spec.trim();
            if spec.is_empty() {
                return Err("empty spec string".into());
            }
            let mut tz = None;
            if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
                let eq = spec.find('=').unwrap_or(0);
                let sp = spec
                    .find(' ')
                    .ok_or_else(|| format!("provided bad location {}", &spec[eq + 1..]))?;
                let name = &spec[eq + 1..sp];
                tz = Some(
                    TimeZone::get(name)
                        .map_err(|e| format!("provided bad location {name}: {e}"))?,
                );
                spec = spec[sp..].trim();
            }
            if spec.starts_with('@') {
                let kind = match spec {
                    "@yearly" | "@annually" => Kind::Spec {
                        minute: 1,
                        hour: 1,
                        dom: 1 << 1,
                        month: 1 << 1,
                        dow: all(&DOW),
                    },
                    "@monthly" => Kind::Spec {
                        minute: 1,
                        hour: 1,
                        dom: 1 << 1,
                        month: all(&MONTHS),
                        dow: all(&DOW),
                    },
                    "@weekly" => Kind::Spec {
                        minute: 1,
                        hour: 1,
                        dom: all(&DOM),
                        month: all(&MONTHS),
                        dow: 1,
                    },
                    "@daily" | "@midnight" => Kind::Spec {
                        minute: 1,
                        hour: 1,
                        dom: all(&DOM),
                        month: all(&MONTHS),
                        dow: all(&DOW),
                    },
                    "@hourly" => Kind::Spec {
                        minute: 1,
                        hour: all(&HOURS),
                        dom: all(&DOM),
                        month: all(&MONTHS),
                        dow: all(&DOW),
                    },
                    s if s.starts_with("@every ") => {
                        let d = parse_go_duration(&s["@every ".len()..])
                            .map_err(|e| format!("failed to parse duration {s}: {e}"))?;
                        // At least a second, in whole seconds.
                        let d = Duration::from_secs(d.as_secs().max(1));
                        Kind::Every(d)
                    }
                    s => return Err(format!("unrecognized descriptor: {s}")),
                };
                return Ok(Schedule { kind, tz });
            }
            let fields: Vec<&str> = spec.split_whitespace().collect();
            if fields.len() != 5 {
                return Err(format!(
                    "expected exactly 5 fields, found {}: {spec}",
                    fields.len()
                ));
            }
            Ok(Schedule {
                kind: Kind::Spec {
                    minute: field(fields[0], &MINUTES)?,
                    hour: field(fields[1], &HOURS)?,
                    dom: field(fields[2], &DOM)?,
                    month: field(fields[3], &MONTHS)?,
                    dow: field(fields[4], &DOW)?,
                },
                tz,
            })
        }

        /// The first activation strictly after `t` (robfig `Next`), in the
        /// schedule's own zone if it has one, else `default_tz`; None if
        /// there is none within five years.
        pub fn next(&self, t: Timestamp, default_tz: &TimeZone) -> Option<Timestamp> {
            let tz = self.tz.clone().unwrap_or_else(|| default_tz.clone());
            let (minute, hour, dom, month, dow) = match &self.kind {
                Kind::Every(d) => {
                    let whole = t.as_second();
                    return Timestamp::from_second(whole).ok()?.checked_add(*d).ok();
                }
                Kind::Spec {
                    minute,
                    hour,
                    dom,
                    month,
                    dow,
                } => (*minute, *hour, *dom, *month, *dow),
            };
            let day_matches = |z: &Zoned| {
                let dom_match = (1u64 << z.day()) & dom > 0;
                let dow_match = (1u64 << z.weekday().to_sunday_zero_offset()) & dow > 0;
                if dom & STAR > 0 || dow & STAR > 0 {
                    dom_match && dow_match
                } else {
                    dom_match || dow_match
                }
            };
            // Start at the upcoming whole second.
            let mut z = Timestamp::from_second(t.as_second())
                .ok()?
                .checked_add(SignedDuration::from_secs(1))
                .ok()?
                .to_zoned(tz.clone());
            let mut added = false;
            let year_limit = z.year() + 5;
            'wrap: loop {
                if z.year() > year_limit {
                    return None;
                }
                while (1u64 << z.month()) & month == 0 {
                    if !added {
                        added = true;
                        z = date(z.year(), z.month(), 1).to_zoned(tz.clone()).ok()?;
                    }
                    z = z.checked_add(1.month()).ok()?;
                    if z.month() == 1 {
                        continue 'wrap;
                    }
                }
                while !day_matches(&z) {
                    if !added {
                        added = true;
                        z = z.date().to_zoned(tz.clone()).ok()?;
                    }
                    z = z.checked_add(1.day()).ok()?;
                    // Midnight may have moved by a DST change.
                    let h = z.hour() as i64;
                    if h != 0 {
                        let fix = if h > 12 { 24 - h } else { -h };
                        z = z.checked_add(SignedDuration::from_hours(fix)).ok()?;
                    }
                    if z.day() == 1 {
                        continue 'wrap;
                    }
                }
                while (1u64 << z.hour()) & hour == 0 {
                    if !added {
                        added = true;
                        z = z
                            .with()
                            .minute(0)
                            .second(0)
                            .subsec_nanosecond(0)
                            .build()
                            .ok()?;
                    }
                    z = z.checked_add(SignedDuration::from_hours(1)).ok()?;
                    if z.hour() == 0 {
                        continue 'wrap;
                    }
                }
                while (1u64 << z.minute()) & minute == 0 {
                    if !added {
                        added = true;
                        z = z.with().second(0).subsec_nanosecond(0).build().ok()?;
                    }
                    z = z.checked_add(SignedDuration::from_mins(1)).ok()?;
                    if z.minute() == 0 {
                        continue 'wrap;
                    }
                }
                // Standard schedules fire at second 0.
                while z.second() != 0 {
                    if !added {
                        added = true;
                        z = z.with().subsec_nanosecond(0).build().ok()?;
                    }
                    z = z.checked_add(SignedDuration::from_secs(1)).ok()?;
                    if z.second() == 0 {
                        continue 'wrap;
                    }
                }
                return Some(z.timestamp());
            }
        }
    }

    /// Upstream `mostRecentScheduleTime` with the starting deadline: the
    /// latest activation in (earliest, now] and how many there were.
    pub fn most_recent(
        s: &Schedule,
        tz: &TimeZone,
        created: Timestamp,
        last_scheduled: Option<Timestamp>,
        starting_deadline_seconds: Option<i64>,
        now: Timestamp,
    ) -> (Option<Timestamp>, u64) {
        let mut earliest = last_scheduled.unwrap_or(created);
        if let Some(sds) = starting_deadline_seconds {
            let deadline = now - SignedDuration::from_secs(sds);
            if deadline > earliest {
                earliest = deadline;
            }
        }
        let Some(t1) = s.next(earliest, tz) else {
            return (None, 0);
        };
        if t1 > now {
            return (None, 0);
        }
        // Walk the activations exactly; when far behind, skip to just
        // before `now` by the average interval seen so far and estimate the
        // count, as upstream does, so a wrong clock cannot cost minutes.
        let mut most_recent = t1;
        let mut cursor = t1;
        let mut count: u64 = 1;
        while let Some(n) = s.next(cursor, tz).filter(|n| *n <= now) {
            most_recent = n;
            cursor = n;
            count += 1;
            if count == 200 {
                let step = n.duration_since(t1).as_secs() / (count as i64 - 1);
                let skip_to = now - SignedDuration::from_secs(2 * step.max(1));
                if step > 0 && skip_to > n && s.next(skip_to, tz).is_some_and(|x| x <= now) {
                    count += (skip_to.duration_since(n).as_secs() / step) as u64;
                    cursor = skip_to;
                }
            }
        }
        (Some(most_recent), count)
    }

    /// Upstream `nextScheduleTimeDuration`: time until the activation after
    /// the most recent one (without the starting deadline), plus padding.
    pub fn next_requeue(
        s: &Schedule,
        tz: &TimeZone,
        created: Timestamp,
        last_scheduled: Option<Timestamp>,
        now: Timestamp,
    ) -> Option<Duration> {
        let (most_recent, missed) = most_recent(s, tz, created, last_scheduled, None, now);
        let base = match most_recent {
            Some(t) => t,
            None if missed == 0 => last_scheduled.unwrap_or(created),
            None => now,
        };
        let next = s.next(base, tz)?;
        let d = next.duration_since(now);
        let d = if d.is_negative() {
            Duration::ZERO
        } else {
            d.unsigned_abs()
        };
        Some(d + super::NEXT_SCHEDULE_DELTA)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn ts(s: &str) -> Timestamp {
            s.parse().unwrap()
        }

        fn next(spec: &str, from: &str) -> String {
            let s = Schedule::parse(spec).unwrap();
            s.next(ts(from), &TimeZone::UTC)
                .map(|t| t.to_string())
                .unwrap_or_default()
        }

        #[test]
        fn standard_fields() {
            assert_eq!(
                next("* * * * *", "2024-01-01T00:00:00Z"),
                "2024-01-01T00:01:00Z"
            );
            assert_eq!(
                next("* * * * *", "2024-01-01T00:00:30.5Z"),
                "2024-01-01T00:01:00Z"
            );
            assert_eq!(
                next("*/15 * * * *", "2024-01-01T00:16:00Z"),
                "2024-01-01T00:30:00Z"
            );
            assert_eq!(
                next("5 4 * * *", "2024-01-01T04:05:00Z"),
                "2024-01-02T04:05:00Z"
            );
            assert_eq!(
                next("0 22 * * 1-5", "2024-01-06T00:00:00Z"),
                "2024-01-08T22:00:00Z"
            );
            assert_eq!(
                next("0 0 1 */3 *", "2024-02-15T00:00:00Z"),
                "2024-04-01T00:00:00Z"
            );
            assert_eq!(
                next("0 9 * JAN,jul MON", "2024-02-01T00:00:00Z"),
                "2024-07-01T09:00:00Z"
            );
            assert_eq!(
                next("10-20/5 * * * *", "2024-01-01T00:16:00Z"),
                "2024-01-01T00:20:00Z"
            );
            assert_eq!(
                next("30/10 1 * * *", "2024-01-01T00:00:00Z"),
                "2024-01-01T01:30:00Z"
            );
            assert_eq!(
                next("0 0 29 2 *", "2024-03-01T00:00:00Z"),
                "2028-02-29T00:00:00Z"
            );
        }

        #[test]
        fn day_of_month_or_day_of_week() {
            // Both restricted: either matches (Jan 13 2024 is a Saturday).
            assert_eq!(
                next("0 0 13 * 5", "2024-01-01T00:00:00Z"),
                "2024-01-05T00:00:00Z"
            );
            assert_eq!(
                next("0 0 13 * 5", "2024-01-06T00:00:00Z"),
                "2024-01-12T00:00:00Z"
            );
            assert_eq!(
                next("0 0 13 * 5", "2024-01-12T00:00:00Z"),
                "2024-01-13T00:00:00Z"
            );
            // One of them a star: both must match.
            assert_eq!(
                next("0 0 * * 5", "2024-01-06T00:00:00Z"),
                "2024-01-12T00:00:00Z"
            );
            // A "*/1"-style step keeps the star; "*/2" does not.
            assert_eq!(
                next("0 0 */2 * 1", "2024-01-01T12:00:00Z"),
                "2024-01-03T00:00:00Z"
            );
        }

        #[test]
        fn descriptors() {
            assert_eq!(
                next("@hourly", "2024-01-01T00:00:00Z"),
                "2024-01-01T01:00:00Z"
            );
            assert_eq!(
                next("@daily", "2024-01-01T00:00:00Z"),
                "2024-01-02T00:00:00Z"
            );
            assert_eq!(
                next("@midnight", "2024-01-01T10:00:00Z"),
                "2024-01-02T00:00:00Z"
            );
            assert_eq!(
                next("@weekly", "2024-01-01T00:00:00Z"),
                "2024-01-07T00:00:00Z"
            );
            assert_eq!(
                next("@monthly", "2024-01-15T00:00:00Z"),
                "2024-02-01T00:00:00Z"
            );
            assert_eq!(
                next("@yearly", "2024-01-15T00:00:00Z"),
                "2025-01-01T00:00:00Z"
            );
            assert_eq!(
                next("@annually", "2024-01-15T00:00:00Z"),
                "2025-01-01T00:00:00Z"
            );
            assert_eq!(
                next("@every 90s", "2024-01-01T00:00:00.7Z"),
                "2024-01-01T00:01:30Z"
            );
            assert_eq!(
                next("@every 1h30m", "2024-01-01T00:00:00Z"),
                "2024-01-01T01:30:00Z"
            );
        }

        #[test]
        fn rejects_bad_specs() {
            for bad in [
                "",
                "* * * *",
                "* * * * * *",
                "60 * * * *",
                "* 24 * * *",
                "* * 0 * *",
                "* * * 13 *",
                "* * * * 7",
                "5-1 * * * *",
                "*/0 * * * *",
                "1-2-3 * * * *",
                "*/2/2 * * * *",
                "a * * * *",
                "-1 * * * *",
                "@fortnightly",
                "@every x",
                "TZ=Nowhere/Land * * * * *",
            ] {
                assert!(Schedule::parse(bad).is_err(), "{bad:?} should not parse");
            }
        }

        #[test]
        fn time_zones() {
            let s = Schedule::parse("0 9 * * *").unwrap();
            let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
            // 09:00 in Tokyo is 00:00 UTC.
            assert_eq!(
                s.next(ts("2024-01-01T01:00:00Z"), &tokyo)
                    .unwrap()
                    .to_string(),
                "2024-01-02T00:00:00Z"
            );
            // A TZ= prefix overrides the default zone.
            let s = Schedule::parse("TZ=Asia/Kolkata 30 9 * * *").unwrap();
            assert_eq!(
                s.next(ts("2024-01-01T00:00:00Z"), &TimeZone::UTC)
                    .unwrap()
                    .to_string(),
                "2024-01-01T04:00:00Z"
            );
            let s = Schedule::parse("CRON_TZ=America/New_York 0 12 * * *").unwrap();
            assert_eq!(
                s.next(ts("2024-07-01T00:00:00Z"), &TimeZone::UTC)
                    .unwrap()
                    .to_string(),
                "2024-07-01T16:00:00Z"
            );
        }

        #[test]
        fn daylight_saving_time() {
            let ny = TimeZone::get("America/New_York").unwrap();
            let at = |spec: &str, from: &str| {
                Schedule::parse(spec)
                    .unwrap()
                    .next(ts(from), &ny)
                    .map(|t| {
                        t.to_zoned(ny.clone())
                            .strftime("%Y-%m-%dT%H:%M:%S%:z")
                            .to_string()
                    })
                    .unwrap_or_default()
            };
            // Spring forward 2012-03-11 02:00 EST -> 03:00 EDT: 02:30 does
            // not exist that day, so the next is the following day's.
            assert_eq!(
                at("30 2 * * *", "2012-03-11T05:00:00Z"),
                "2012-03-12T02:30:00-04:00"
            );
            // ... and a date-pinned one skips to next year (robfig's test).
            assert_eq!(
                at("30 2 11 Mar *", "2012-03-11T05:00:00Z"),
                "2013-03-11T02:30:00-04:00"
            );
            // Hourly keeps firing on real hours across the gap.
            assert_eq!(
                at("0 * * * *", "2012-03-11T06:30:00Z"),
                "2012-03-11T03:00:00-04:00"
            );
            // Fall back 2012-11-04 02:00 EDT -> 01:00 EST: 01:00 happens twice
            // and robfig fires at both (its test case).
            assert_eq!(
                at("0 1 4 Nov *", "2012-11-04T05:45:00Z"),
                "2012-11-04T01:00:00-05:00"
            );
            assert_eq!(
                at("0 2 4 Nov *", "2012-11-04T04:00:00Z"),
                "2012-11-04T02:00:00-05:00"
            );
            // Daily at midnight stays at local midnight across the change.
            assert_eq!(
                at("0 0 * * *", "2012-11-04T04:30:00Z"),
                "2012-11-05T00:00:00-05:00"
            );
        }

        #[test]
        fn most_recent_and_missed() {
            let s = Schedule::parse("*/10 * * * *").unwrap();
            let tz = TimeZone::UTC;
            let created = ts("2024-01-01T00:00:00Z");
            let (t, n) = most_recent(&s, &tz, created, None, None, ts("2024-01-01T00:35:00Z"));
            assert_eq!(t.unwrap().to_string(), "2024-01-01T00:30:00Z");
            assert_eq!(n, 3);
            // Nothing due yet.
            let (t, _) = most_recent(&s, &tz, created, None, None, ts("2024-01-01T00:09:59Z"));
            assert!(t.is_none());
            // Already scheduled at 00:30: nothing new until 00:40.
            let (t, _) = most_recent(
                &s,
                &tz,
                created,
                Some(ts("2024-01-01T00:30:00Z")),
                None,
                ts("2024-01-01T00:35:00Z"),
            );
            assert!(t.is_none());
            // A starting deadline hides older activations.
            let (t, _) = most_recent(
                &s,
                &tz,
                created,
                None,
                Some(200),
                ts("2024-01-01T00:35:00Z"),
            );
            assert!(t.is_none());
            let (t, n) = most_recent(
                &s,
                &tz,
                created,
                None,
                Some(400),
                ts("2024-01-01T00:35:00Z"),
            );
            assert_eq!(t.unwrap().to_string(), "2024-01-01T00:30:00Z");
            assert_eq!(n, 1);
            // Very far behind: counted as many, the latest is still exact.
            let (t, n) = most_recent(&s, &tz, created, None, None, ts("2024-03-01T00:05:00Z"));
            assert_eq!(t.unwrap().to_string(), "2024-03-01T00:00:00Z");
            assert!(n > 100);
            let d = next_requeue(
                &s,
                &tz,
                created,
                Some(ts("2024-01-01T00:30:00Z")),
                ts("2024-01-01T00:35:00Z"),
            )
            .unwrap();
            assert_eq!(
                d,
                Duration::from_secs(300) + super::super::NEXT_SCHEDULE_DELTA
            );
        }

        #[test]
        fn job_names_are_minutes_since_epoch() {
            assert_eq!(
                super::super::job_name("hello", ts("2024-01-01T00:00:00Z")),
                "hello-28401120"
            );
        }
    }
}

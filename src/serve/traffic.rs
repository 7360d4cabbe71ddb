//! Simulated users as traffic (docs/serving.md: Traffic): each [`SimUser`] carries the
//! simulator's truth of one user (the latent state, the session clock and step) and
//! answers each recommendation with the world's user model, exactly as in a simulated
//! episode. [`drive`] sends them to a service over HTTP (closed loop: each of C workers
//! waits for its answer; open loop: requests arrive at a fixed rate whatever the
//! service's pace) and measures throughput and latency; [`rehearse`] runs them against a
//! [`Service`] in process, without HTTP and deterministically.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::seq::index::sample;
use serde::{Deserialize, Serialize};

use super::{FeedbackRequest, Health, RecommendRequest, Recommendation, Record, Reported, Service};
use crate::config::{Checked, EnvConfig};
use crate::model::user::Latent;
use crate::rng::{stream, substream, SimRng, Stream};
use crate::world::World;
use crate::{Error, Result};

/// One simulated user of a world, as traffic.
#[derive(Debug, Clone)]
pub struct SimUser {
    pub id: u32,
    latent: Latent,
    t: usize,
    now: f64,
    in_session: bool,
    rng: SimRng,
    /// Sessions finished.
    pub sessions: u64,
    /// The service said this user has seen every video it can offer: nothing more is
    /// asked for them (retrying would only count phantom sessions).
    pub exhausted: bool,
}

/// The service's answer for a user with nothing left to see (a 409 naming it).
pub fn is_exhausted(status: u16, message: &str) -> bool {
    status == 409 && message.contains(super::EXHAUSTED)
}

impl SimUser {
    /// The user at the world's start, with their own response stream of `seed`.
    pub fn new(world: &World, id: u32, seed: u64) -> SimUser {
        SimUser {
            id,
            latent: world.start.latent[id as usize].clone(),
            t: 0,
            now: 0.0,
            in_session: false,
            rng: substream(seed, Stream::Traffic, id as u64),
            exhausted: false,
            sessions: 0,
        }
    }

    /// The user's next request (a new session opens when none is in flight).
    pub fn request(&mut self, world: &World) -> RecommendRequest {
        let new_session = !self.in_session;
        if new_session {
            world.model.begin_session(&mut self.latent);
            self.t = 0;
            self.in_session = true;
        }
        RecommendRequest { user: self.id as u64, new_session, recent: None }
    }

    /// The user's response to `rec` (drawn from the user model, which then updates the
    /// user's latent state) as feedback, and the reward the model paid.
    pub fn respond(&mut self, world: &World, rules: &EnvConfig, rec: &Recommendation) -> (FeedbackRequest, f64) {
        let user = &world.users[self.id as usize];
        let r = world.model.respond(user, &self.latent, self.t, rec.video, self.now, &mut self.rng);
        world.model.update(&mut self.latent, rec.video, r.action, r.followed, self.now);
        self.now += r.dt;
        self.t += 1;
        if r.left || rules.budget_spent(self.t) {
            self.end_session();
        }
        let fb = FeedbackRequest {
            request_id: rec.request_id.clone(),
            response: Reported::of(r.action),
            watch_time_s: Some(r.watch_s),
            left: r.left,
            shared: r.shared,
            followed: r.followed,
        };
        (fb, r.reward)
    }

    /// The session is over (the user left, or the service could not go on).
    pub fn end_session(&mut self) {
        if self.in_session {
            self.in_session = false;
            self.sessions += 1;
        }
    }
}

/// `n` distinct users of the world, drawn with `seed`.
pub fn pick_users(world: &World, n: usize, seed: u64) -> Result<Vec<u32>> {
    let total = world.users.len();
    if n == 0 || n > total {
        return Err(Error::Other(format!("--users {n}: between 1 and the world's {total} users")));
    }
    let mut rng = stream(seed, Stream::Traffic);
    let mut ids: Vec<u32> = sample(&mut rng, total, n).into_iter().map(|i| i as u32).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Runs `sessions` sessions of each of `users` against `service` in process (one user
/// after another, the clock a step counter): a deterministic rehearsal of an experiment,
/// returning its log records. Rewards paid by the model and by the service agree.
pub fn rehearse(service: &mut Service, world: &World, users: &[u32], sessions: usize, seed: u64) -> Result<Vec<Record>> {
    service.capture();
    let rules = service.config().env.clone();
    let mut clock = 1_000_000u64;
    for &id in users {
        let mut u = SimUser::new(world, id, seed);
        while u.sessions < sessions as u64 {
            clock += 1;
            let req = u.request(world);
            let rec = match service.recommend(&req, clock) {
                Ok(r) => r,
                Err(e) if is_exhausted(e.status, &e.message) => break,
                Err(e) if e.status == 409 => {
                    u.end_session();
                    continue;
                }
                Err(e) => return Err(Error::Other(format!("user {id}: {}", e.message))),
            };
            let (fb, paid) = u.respond(world, &rules, &rec);
            let ack = service.feedback(&fb, clock).map_err(|e| Error::Other(format!("user {id}: {}", e.message)))?;
            if (ack.reward - paid).abs() > 1e-9 * (1.0 + paid.abs()) {
                return Err(Error::Other(format!("user {id}: the service paid {} where the model paid {paid}", ack.reward)));
            }
        }
    }
    Ok(service.take_records())
}

/// The most sessions per user a plan rehearses.
pub const MAX_PLAN_SESSIONS: usize = 1000;

/// Refuses a plan's sessions per user outside 1 to [`MAX_PLAN_SESSIONS`].
pub fn check_plan_sessions(sessions: usize) -> Result<()> {
    if sessions == 0 || sessions > MAX_PLAN_SESSIONS {
        return Err(Error::Other(format!("--plan {sessions}: sessions per user, from 1 to {MAX_PLAN_SESSIONS}")));
    }
    Ok(())
}

/// What an experiment of a given size can detect, stated before it runs
/// (`fypsim traffic --plan SESSIONS`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub users: usize,
    pub sessions_per_user: usize,
    pub control: String,
    /// The level each comparison with the control is tested at: 5% / (arms − 1).
    pub level: f64,
    /// The rehearsal's reward per session, every arm served greedily (None: no session).
    pub reward_per_session: Option<f64>,
    /// Sessions the rehearsal ran: fewer than users × sessions when users ran out of
    /// unseen videos.
    pub sessions_run: usize,
    /// Users who ran out of unseen videos before their last session.
    pub users_exhausted: usize,
    pub arms: Vec<PlanArm>,
}

/// One arm of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanArm {
    pub name: String,
    pub share: f64,
    /// Users of the experiment the hash assigns it.
    pub users: usize,
    /// Against the control: the smallest difference in reward per session detected with
    /// 80% power at the plan's level (None for the control itself).
    pub mde80: Option<f64>,
    /// Against the control: the power for a difference of 5% of the control's mean.
    pub power_at_5_percent: Option<f64>,
}

/// Plans the experiment the server at `opts.url` serves for `opts.users` users (drawn
/// as the driver draws them) with `sessions` sessions each: an A/A rehearsal in process
/// of exactly that experiment (its arms' shares and salt, so the same users land in the
/// same arms), with greedy serving in every arm as a stand-in for the arms' policies,
/// gives the spread of the users' reward per session, and the A/B report's own
/// arithmetic gives each comparison's detectable difference at its Bonferroni level.
/// The arms' own policies may spread rewards more or less than greedy does.
pub fn plan(opts: &TrafficOptions, config: &Checked, sessions: usize, control: Option<&str>) -> Result<Plan> {
    check_plan_sessions(sessions)?;
    let base = base_url(opts)?;
    let health = runtime()?.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Other(format!("cannot build the HTTP client: {e}")))?;
        fetch_health(&client, &base, config).await
    })?;
    let control = super::report::control_index(&health.arms, control, "the served experiment")?;
    let mut service = Service::new(&super::ServeOptions::stand_in(&health.arms, &health.salt, config))?;
    let world = service.env().world.clone();
    let ids = pick_users(&world, opts.users, opts.seed)?;
    let records = rehearse(&mut service, &world, &ids, sessions, opts.seed)?;
    let report = super::report::analyse_with(&service.experiment(), &records, 0, control);
    let k = health.arms.len();
    let against: Vec<Option<super::report::Diff>> = (0..k)
        .map(|i| match (i == control, k) {
            (true, _) => None,
            (false, 2) => report.reward_diff,
            (false, _) => report.comparisons.iter().find(|c| c.arm == health.arms[i].name).map(|c| c.reward),
        })
        .collect();
    let (y, n) = report
        .arms
        .iter()
        .filter(|a| a.sessions > 0)
        .fold((0.0, 0.0), |(y, n), a| (y + a.reward_per_session.mean * a.sessions as f64, n + a.sessions as f64));
    let mut per_user: HashMap<u32, HashSet<u32>> = HashMap::new();
    for r in &records {
        if let Record::Decision(d) = r {
            per_user.entry(d.user).or_default().insert(d.session);
        }
    }
    let sessions_run = per_user.values().map(HashSet::len).sum();
    let users_exhausted = ids.iter().filter(|u| per_user.get(u).map_or(0, HashSet::len) < sessions).count();
    Ok(Plan {
        users: ids.len(),
        sessions_per_user: sessions,
        control: health.arms[control].name.clone(),
        level: 0.05 / (k.max(2) - 1) as f64,
        reward_per_session: (n > 0.0).then(|| y / n),
        sessions_run,
        users_exhausted,
        arms: report
            .arms
            .iter()
            .zip(against)
            .map(|(a, d)| PlanArm {
                name: a.name.clone(),
                share: a.share,
                users: a.users,
                mde80: d.map(|d| d.mde80).filter(|x| x.is_finite()),
                power_at_5_percent: d.map(|d| d.power_at_5_percent).filter(|x| x.is_finite()),
            })
            .collect(),
    })
}

fn base_url(opts: &TrafficOptions) -> Result<String> {
    let base = opts.url.trim_end_matches('/').to_string();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(Error::Other(format!("--url {}: an http:// address, e.g. http://127.0.0.1:8080", opts.url)));
    }
    Ok(base)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Other(format!("cannot start the async runtime: {e}")))
}

/// The service's `/health`, checked to serve the world of `config`.
async fn fetch_health(client: &reqwest::Client, base: &str, config: &Checked) -> Result<Health> {
    let health: Health = answer(client.get(format!("{base}/health")).send().await)
        .await
        .map_err(|(_, m)| Error::Other(format!("{base}/health: {m}; is `fypsim serve` running there?")))?;
    let fingerprint = crate::experiment::checkpoint::fingerprint(config);
    if health.world != fingerprint {
        return Err(Error::Other(format!(
            "the service at {base} serves another world than this config's (world {} vs {}): \
             give `fypsim traffic` the config the server uses (--config, --set)",
            &health.world[..12.min(health.world.len())],
            &fingerprint[..12]
        )));
    }
    Ok(health)
}

/// What to drive.
#[derive(Debug, Clone)]
pub struct TrafficOptions {
    pub url: String,
    pub users: usize,
    pub duration_s: f64,
    /// Closed loop: workers, each with its own share of the users.
    pub concurrency: usize,
    /// Open loop: recommendation requests per second (each followed by its feedback).
    pub rate: Option<f64>,
    pub seed: u64,
    pub progress: bool,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(mut micros: Vec<u64>) -> Latency {
        if micros.is_empty() {
            return Latency::default();
        }
        micros.sort_unstable();
        let n = micros.len();
        let q = |p: f64| micros[((p * n as f64).ceil() as usize).clamp(1, n) - 1] as f64 / 1000.0;
        Latency {
            count: n,
            mean_ms: micros.iter().sum::<u64>() as f64 / n as f64 / 1000.0,
            p50_ms: q(0.50),
            p90_ms: q(0.90),
            p99_ms: q(0.99),
            max_ms: micros[n - 1] as f64 / 1000.0,
        }
    }
}

/// What a traffic run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrafficReport {
    pub url: String,
    /// "closed" or "open".
    pub mode: String,
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub users: usize,
    pub elapsed_s: f64,
    /// Recommendations answered with 200.
    pub recommendations: u64,
    pub feedbacks: u64,
    pub recommendations_per_s: f64,
    /// Every request (recommendations and feedback) per second.
    pub requests_per_s: f64,
    /// From sending a recommendation request to its answer.
    pub recommend_latency: Latency,
    /// Open loop: how late the driver sent each request after its scheduled time (its
    /// timer's granularity and the machine's load; large values mean the driver, not the
    /// service, could not keep the rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_lag: Option<Latency>,
    pub feedback_latency: Latency,
    pub sessions: u64,
    /// Mean reward per recommendation, as the model paid it.
    pub mean_reward: f64,
    /// Failed requests by status (0: no answer).
    pub errors: BTreeMap<u16, u64>,
    pub first_error: Option<String>,
    /// Open loop: arrivals that found every user busy (raise --users).
    pub dropped: u64,
    /// Users who had seen every video the feed can offer (the service answered 409): they
    /// stopped taking part, and no session is counted for them.
    #[serde(default)]
    pub users_exhausted: u64,
}

#[derive(Default)]
struct Tally {
    rec_us: Vec<u64>,
    lag_us: Vec<u64>,
    fb_us: Vec<u64>,
    rewards: f64,
    errors: BTreeMap<u16, u64>,
    first_error: Option<String>,
    /// Users the service said had seen every video (they stop taking part).
    exhausted: u64,
}

impl Tally {
    fn error(&mut self, status: u16, message: String) {
        *self.errors.entry(status).or_insert(0) += 1;
        self.first_error.get_or_insert(message);
    }

    fn merge(&mut self, o: Tally) {
        self.rec_us.extend(o.rec_us);
        self.lag_us.extend(o.lag_us);
        self.fb_us.extend(o.fb_us);
        self.rewards += o.rewards;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_insert(0) += v;
        }
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        self.exhausted += o.exhausted;
    }
}

struct Driver {
    client: reqwest::Client,
    base: String,
    world: Arc<World>,
    rules: EnvConfig,
}

impl Driver {
    /// One step of `u`: recommend, respond, feedback.
    async fn step(&self, u: &mut SimUser, tally: &mut Tally) {
        let since = Instant::now();
        let req = u.request(&self.world);
        let sent = self.client.post(format!("{}/recommend", self.base)).json(&req).send().await;
        let rec: Recommendation = match answer(sent).await {
            Ok(r) => r,
            Err((status, msg)) if is_exhausted(status, &msg) => {
                // Not a session: the user has nothing left to watch and leaves the run.
                u.in_session = false;
                u.exhausted = true;
                tally.exhausted += 1;
                return;
            }
            Err((status, msg)) => {
                tally.error(status, format!("POST /recommend: {msg}"));
                u.end_session();
                if status == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                return;
            }
        };
        tally.rec_us.push(since.elapsed().as_micros() as u64);
        let (fb, reward) = u.respond(&self.world, &self.rules, &rec);
        tally.rewards += reward;
        let t = Instant::now();
        let sent = self.client.post(format!("{}/feedback", self.base)).json(&fb).send().await;
        match answer::<super::FeedbackAck>(sent).await {
            Ok(_) => tally.fb_us.push(t.elapsed().as_micros() as u64),
            Err((status, msg)) => {
                tally.error(status, format!("POST /feedback: {msg}"));
                u.end_session();
            }
        }
    }
}

async fn answer<T: serde::de::DeserializeOwned>(
    sent: reqwest::Result<reqwest::Response>,
) -> std::result::Result<T, (u16, String)> {
    let resp = sent.map_err(|e| (0, format!("no answer ({e})")))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err((status.as_u16(), format!("{status}: {body}")));
    }
    resp.json::<T>().await.map_err(|e| (status.as_u16(), format!("unreadable answer: {e}")))
}

/// Drives the service at `opts.url` with simulated users of `config`'s world; checks
/// first (`GET /health`) that the service serves the same world.
pub fn drive(opts: &TrafficOptions, config: &Checked) -> Result<TrafficReport> {
    if !(opts.duration_s.is_finite() && opts.duration_s > 0.0 && opts.duration_s <= 86_400.0) {
        return Err(Error::Other(format!("--duration {}: seconds, more than 0 and at most 86400", opts.duration_s)));
    }
    if opts.concurrency == 0 || opts.concurrency > 4096 {
        return Err(Error::Other(format!("--concurrency {}: between 1 and 4096", opts.concurrency)));
    }
    if let Some(r) = opts.rate {
        if !(r.is_finite() && r > 0.0 && r <= 1_000_000.0) {
            return Err(Error::Other(format!("--rate {r}: requests per second, more than 0 and at most 1000000")));
        }
    }
    let base = base_url(opts)?;
    runtime()?.block_on(drive_async(opts, config, base))
}

async fn drive_async(opts: &TrafficOptions, config: &Checked, base: String) -> Result<TrafficReport> {
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(opts.concurrency.max(64))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Error::Other(format!("cannot build the HTTP client: {e}")))?;
    fetch_health(&client, &base, config).await?;
    let world = Arc::new(World::generate(config));
    let ids = pick_users(&world, opts.users, opts.seed)?;
    let users: Vec<SimUser> = ids.iter().map(|&id| SimUser::new(&world, id, opts.seed)).collect();
    let driver = Arc::new(Driver { client, base: base.clone(), world: Arc::clone(&world), rules: config.env.clone() });
    let duration = Duration::from_secs_f64(opts.duration_s);
    let bar = opts.progress.then(|| {
        let b = indicatif::ProgressBar::new(opts.duration_s.ceil() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} s  {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        b.set_prefix("traffic");
        b
    });
    let start = Instant::now();
    let deadline = start + duration;
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker = bar.clone().map(|b| {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let s = start.elapsed().as_secs_f64();
                b.set_position(s.floor() as u64);
                let n = done.load(std::sync::atomic::Ordering::Relaxed);
                b.set_message(format!("{n} recommendations, {:.0}/s", n as f64 / s.max(1e-9)));
            }
        })
    });
    let (mode, tally, sessions, dropped) = match opts.rate {
        None => {
            let (tally, sessions) = closed_loop(&driver, users, opts.concurrency, deadline, &done).await?;
            ("closed", tally, sessions, 0)
        }
        Some(rate) => {
            let (tally, sessions, dropped) = open_loop(&driver, users, rate, start, deadline, &done).await?;
            ("open", tally, sessions, dropped)
        }
    };
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (recs, fbs) = (tally.rec_us.len() as u64, tally.fb_us.len() as u64);
    if recs == 0 {
        return Err(Error::Other(format!(
            "no recommendation was answered in {elapsed:.1} s: {}",
            tally.first_error.clone().unwrap_or_else(|| "no request was sent".into())
        )));
    }
    Ok(TrafficReport {
        url: base,
        mode: mode.into(),
        concurrency: opts.concurrency,
        rate: opts.rate,
        users: opts.users,
        elapsed_s: elapsed,
        recommendations: recs,
        feedbacks: fbs,
        recommendations_per_s: recs as f64 / elapsed,
        requests_per_s: (recs + fbs) as f64 / elapsed,
        mean_reward: tally.rewards / recs as f64,
        recommend_latency: Latency::of(tally.rec_us),
        dispatch_lag: (mode == "open").then(|| Latency::of(tally.lag_us)),
        feedback_latency: Latency::of(tally.fb_us),
        sessions,
        errors: tally.errors,
        first_error: tally.first_error,
        dropped,
        users_exhausted: tally.exhausted,
    })
}

/// Closed loop: `concurrency` workers, each stepping its own share of the users in turn
/// until `deadline`. Returns the tally and the sessions ended.
async fn closed_loop(
    driver: &Arc<Driver>,
    users: Vec<SimUser>,
    concurrency: usize,
    deadline: Instant,
    done: &Arc<std::sync::atomic::AtomicU64>,
) -> Result<(Tally, u64)> {
    let mut shards: Vec<Vec<SimUser>> = (0..concurrency).map(|_| Vec::new()).collect();
    for (k, u) in users.into_iter().enumerate() {
        shards[k % concurrency].push(u);
    }
    let mut tasks = Vec::new();
    for mut shard in shards.into_iter().filter(|s| !s.is_empty()) {
        let d = Arc::clone(driver);
        let done = Arc::clone(done);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut k = 0;
            while Instant::now() < deadline {
                if shard.iter().all(|u| u.exhausted) {
                    break;
                }
                let n = shard.len();
                let u = &mut shard[k % n];
                if u.exhausted {
                    k += 1;
                    continue;
                }
                d.step(u, &mut tally).await;
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                k += 1;
            }
            (tally, shard.iter().map(|u| u.sessions).sum::<u64>())
        }));
    }
    let mut tally = Tally::default();
    let mut sessions = 0;
    for t in tasks {
        let (t, s) = t.await.map_err(|e| Error::Other(format!("a traffic worker failed: {e}")))?;
        tally.merge(t);
        sessions += s;
    }
    Ok((tally, sessions))
}

/// Open loop: a recommendation (and its feedback) starts every 1/`rate` seconds, whoever
/// is free of the users, until `deadline`; a tick with every user busy is dropped.
/// Returns the tally, the sessions ended and the ticks dropped.
async fn open_loop(
    driver: &Arc<Driver>,
    users: Vec<SimUser>,
    rate: f64,
    start: Instant,
    deadline: Instant,
    done: &Arc<std::sync::atomic::AtomicU64>,
) -> Result<(Tally, u64, u64)> {
    let pool = Arc::new(Mutex::new(users));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let sessions = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut dropped = 0u64;
    let mut tasks = Vec::new();
    let gap = 1.0 / rate;
    for k in 0u64.. {
        let due = start + Duration::from_secs_f64(k as f64 * gap);
        if due >= deadline {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let Some(mut u) = pool.lock().expect("no panics hold it").pop() else {
            dropped += 1;
            continue;
        };
        let (d, pool, tally, done, sessions) =
            (Arc::clone(driver), Arc::clone(&pool), Arc::clone(&tally), Arc::clone(done), Arc::clone(&sessions));
        tasks.push(tokio::spawn(async move {
            let mut mine = Tally::default();
            let before = u.sessions;
            mine.lag_us.push(due.elapsed().as_micros() as u64);
            d.step(&mut u, &mut mine).await;
            sessions.fetch_add(u.sessions - before, std::sync::atomic::Ordering::Relaxed);
            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tally.lock().expect("no panics hold it").merge(mine);
            // Back at the front of the queue's far end: users take turns (a user with
            // nothing left to see leaves).
            if !u.exhausted {
                pool.lock().expect("no panics hold it").insert(0, u);
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| Error::Other(format!("a traffic request failed: {e}")))?;
    }
    let tally = std::mem::take(&mut *tally.lock().expect("no panics hold it"));
    Ok((tally, sessions.load(std::sync::atomic::Ordering::Relaxed), dropped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_sample() {
        let l = Latency::of((1..=100).map(|x| x * 1000).collect());
        assert_eq!((l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(l.mean_ms, 50.5);
        assert_eq!(Latency::of(vec![]).count, 0);
    }

    /// docs/serving.md: the driver draws its users with the seed: the same seed, the same
    /// distinct users; another seed, others; more than the world holds is refused.
    #[test]
    fn users_are_drawn_with_the_seed() {
        let config = crate::config::Config::from_toml_str("seed = 3\n[world]\nn_videos = 300\nn_users = 200\n", &[]).unwrap();
        let world = World::generate(&config);
        let a = pick_users(&world, 50, 7).unwrap();
        assert_eq!(a, pick_users(&world, 50, 7).unwrap());
        assert_ne!(a, pick_users(&world, 50, 8).unwrap());
        assert!(a.windows(2).all(|w| w[0] < w[1]) && a.iter().all(|&u| u < 200), "{a:?}");
        use rand::RngCore;
        // Each user's responses come from their own stream of the seed.
        let (mut u, mut v) = (SimUser::new(&world, a[0], 7), SimUser::new(&world, a[0], 7));
        assert_eq!(u.rng.next_u64(), v.rng.next_u64());
        assert!(pick_users(&world, 201, 7).unwrap_err().to_string().contains("between 1 and the world's 200 users"));
        assert!(pick_users(&world, 0, 7).is_err());
    }
}

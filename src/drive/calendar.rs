//! Days and weeks (docs/model.md: Days and weeks): the whole population lives through
//! simulated days under one policy. Every user's sessions and every step of them are
//! events in one queue ordered by calendar time, so sessions of different users
//! interleave step by step on the shared matrix: another user's interaction shows in your
//! candidates as soon as it happens. After a session ends, the [`ReturnModel`] decides when
//! the user opens the app again, or that they have churned.
//!
//! The run keeps every session (a row of `sessions.parquet`) and every churn; the daily
//! figures (`days.parquet`), the cohort retention and the weekly aggregates with their
//! churn labels (`user_weeks.parquet`) are derived from those rows by the functions below.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::agent::Policy;
use crate::agent::Transition;
use crate::config::{Checked, PolicyKind};
use crate::drive::session::{decide, transition, Decision, Learner, StepEnd};
use crate::env::{Env, Session, State};
use crate::platform::candidates::CandidateGenerator;
use crate::rng::{substream, SimRng, Stream};
use crate::world::{Action, World};
use crate::Result;

pub use crate::model::returns::{hour_of, Next, ReturnModel, DAY_S};

/// One session of a population run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRow {
    pub user: u32,
    /// The user's sessions in this run before this one.
    pub session: u32,
    /// Calendar seconds since day 0, 00:00.
    pub start_s: f64,
    pub end_s: f64,
    pub steps: u32,
    pub watch_s: f64,
    pub reward: f64,
    pub likes: u32,
    pub skips: u32,
    /// Seconds since the end of the user's previous session in this run (none for the
    /// first).
    pub gap_s: Option<f64>,
    /// The session brought a churned user back.
    pub reactivated: bool,
}

/// Everything a population run of one policy recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Population {
    pub policy: PolicyKind,
    /// Every user, sign-ups included.
    pub n_users: usize,
    pub days: usize,
    /// In the order the sessions ended.
    pub sessions: Vec<SessionRow>,
    /// (user, calendar time) of every churn.
    pub churns: Vec<(u32, f64)>,
    /// Environment steps taken.
    pub steps: u64,
    /// The users there from the start; users `initial_users..n_users` signed up at
    /// `signups[user - initial_users]` (calendar seconds).
    pub initial_users: usize,
    pub signups: Vec<f64>,
    /// Per day and creator (index `day * creators.n + creator`): views, seconds watched and
    /// uploads.
    pub creators: CreatorDays,
    /// Per day, the views of videos uploaded during the run.
    pub new_video_views: Vec<u32>,
    /// Learning runs: the learner's updates and the sum of their losses.
    pub updates: u64,
    pub loss_sum: f64,
}

/// The creator side of a population run, per day and creator.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CreatorDays {
    /// Creators.
    pub n: usize,
    pub views: Vec<u32>,
    pub watch_s: Vec<f64>,
    pub uploads: Vec<u32>,
}

impl CreatorDays {
    fn new(n: usize, days: usize) -> CreatorDays {
        CreatorDays { n, views: vec![0; n * days], watch_s: vec![0.0; n * days], uploads: vec![0; n * days] }
    }

    /// Day `d`'s views per creator.
    pub fn views_on(&self, d: usize) -> &[u32] {
        self.views.get(d * self.n..(d + 1) * self.n).unwrap_or(&[])
    }
}

/// The Gini coefficient of `x` (0: all equal, towards 1: all to one); 0 when all are 0.
pub fn gini(x: &[f64]) -> f64 {
    let total: f64 = x.iter().sum();
    if x.is_empty() || total <= 0.0 {
        return 0.0;
    }
    let mut sorted = x.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let weighted: f64 = sorted.iter().enumerate().map(|(i, v)| (i + 1) as f64 * v).sum();
    2.0 * weighted / (n * total) - (n + 1.0) / n
}

/// How a population run uses its policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Acts without exploration and learns nothing: the population runs a run reports.
    Evaluate,
    /// Learning across sessions (docs/model.md: Learning across sessions): the policy
    /// explores and learns from every step, and a session's last step leads to the user's
    /// next session, its bootstrap discounted by `calendar.discount_per_day` to the power
    /// of the days between them (with `calendar.return_reward` for the return); a churn is
    /// terminal. `run` (from 0) gives the run random numbers of its own, none shared with
    /// the evaluated population runs.
    Train { run: u64 },
}

/// A user's last step, waiting for what follows it (learning only).
#[derive(Debug)]
struct LastStep {
    state: State,
    action: usize,
    reward: f64,
    /// The session ended with this step, at this calendar time.
    ended_at: Option<f64>,
}

/// What a user is waiting for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Due {
    Start { reactivated: bool },
    Step,
    Churn,
    Nothing,
}

/// A session in flight.
#[derive(Debug)]
struct Flight {
    session: Session,
    start: f64,
    steps: u32,
    watch_s: f64,
    reward: f64,
    likes: u32,
    skips: u32,
    gap_s: Option<f64>,
    reactivated: bool,
    responses: SimRng,
    policy: SimRng,
}

#[derive(Debug)]
struct Life {
    satisfaction: f64,
    peak: f64,
    last_end: Option<f64>,
    sessions: u32,
    pending: Due,
    flight: Option<Box<Flight>>,
    last_step: Option<Box<LastStep>>,
}

/// Queues user `u`'s next event at calendar time `t`. Calendar times are never negative,
/// so their bit patterns sort as the numbers do; ties go to the lower user id.
fn pending_at(heap: &mut BinaryHeap<Reverse<(u64, u32)>>, t: f64, u: usize) {
    heap.push(Reverse((t.max(0.0).to_bits(), u as u32)));
}

/// The sub-stream index of user `u`'s `n`-th draw of a kind.
fn key(u: usize, n: u32) -> u64 {
    ((u as u64) << 32) | n as u64
}

/// Each user's peak hour (Normal(`peak_hour`, `peak_hour_sd`), wrapped to [0, 24)).
pub fn peak_hours(config: &Checked, n_users: usize) -> Vec<f64> {
    let c = &config.calendar;
    let normal = Normal::new(c.peak_hour, c.peak_hour_sd).expect("a validated spread");
    (0..n_users)
        .map(|u| normal.sample(&mut substream(config.seed, Stream::Calendar, key(u, u32::MAX))).rem_euclid(24.0))
        .collect()
}

/// Lives `config.calendar.days` days of the world's whole population under `policy`
/// (acting without exploration), from the generated world's state. `on_day` is called as
/// each day completes. Sessions that are in flight when the last day ends run to their end;
/// nothing starts after it.
///
/// Every draw comes from sub-streams per user and session (the return draws, the
/// responses, the policy's own), so two policies face the same users with the same random
/// numbers as far as their paths agree.
pub fn live_days(
    config: &Checked,
    world: &Arc<World>,
    policy: &mut dyn Policy,
    kind: PolicyKind,
    mode: Mode,
    on_day: &mut dyn FnMut(usize),
) -> Result<Population> {
    let cal = &config.calendar;
    let mut run = Living::new(config, world, mode);
    let mut days_done = 0;
    while let Some(Reverse((bits, user))) = run.heap.pop() {
        let t = f64::from_bits(bits);
        let u = user as usize;
        run.arrive(t);
        while days_done < cal.days && t >= (days_done + 1) as f64 * DAY_S {
            days_done += 1;
            on_day(days_done);
            // A signal stops the run at a day's end (a resume repeats the population run).
            if crate::stop::stop_requested() {
                return Err(crate::Error::Interrupted);
            }
        }
        match run.lives[u].pending {
            // Past the last day only the sessions in flight go on.
            Due::Start { .. } | Due::Churn if t >= run.horizon => run.lives[u].pending = Due::Nothing,
            Due::Nothing => {}
            Due::Start { reactivated } => run.start(u, t, reactivated),
            Due::Step => run.step(u, t, policy)?,
            Due::Churn => run.churn(u, t, policy)?,
        }
    }
    while days_done < cal.days {
        days_done += 1;
        on_day(days_done);
    }
    Ok(run.finish(kind))
}

/// One population run under way: the event queue, every user's life, the environment and
/// what the run tallies.
struct Living<'a> {
    config: &'a Checked,
    world: &'a Arc<World>,
    /// The run's seed: the config's, or with learning one of the learning run's own.
    seed: u64,
    learn: bool,
    model: ReturnModel,
    env: Env,
    /// Calendar time 0: the midnight after every user's logged history.
    origin: f64,
    /// The end of the last day: nothing starts after it.
    horizon: f64,
    heap: BinaryHeap<Reverse<(u64, u32)>>,
    lives: Vec<Life>,
    churns: Vec<(u32, f64)>,
    generator: CandidateGenerator,
    sessions: Vec<SessionRow>,
    steps: u64,
    creators: CreatorDays,
    new_video_views: Vec<u32>,
    first_new_video: u32,
    fresh_s: f64,
    learner: Learner,
    learner_rng: SimRng,
    loss_sum: f64,
}

impl<'a> Living<'a> {
    /// The run at calendar time 0: every user of the starting population has their first
    /// return (or churn) drawn, and every sign-up their first session at their sign-up.
    fn new(config: &'a Checked, world: &'a Arc<World>, mode: Mode) -> Living<'a> {
        let cal = &config.calendar;
        let (seed, learn) = match mode {
            Mode::Evaluate => (config.seed, false),
            Mode::Train { run } => (config.seed ^ (run + 1).wrapping_mul(0xD1B5_4A32_D192_ED03), true),
        };
        let model = ReturnModel::new(cal);
        let env = Env::new(config, Arc::clone(world));
        let origin = (env.sim().clock.iter().copied().fold(0.0, f64::max) / DAY_S).ceil() * DAY_S;
        let n = world.users.len();
        let initial = world.initial_users();
        let mut heap: BinaryHeap<Reverse<(u64, u32)>> = BinaryHeap::with_capacity(n);
        let mut lives: Vec<Life> = Vec::with_capacity(n);
        for (u, &peak) in peak_hours(config, n).iter().enumerate() {
            let satisfaction = cal.reference;
            let pending = if u >= initial {
                // A sign-up opens the app for the first time as they sign up.
                pending_at(&mut heap, world.arrivals.user_at[u - initial], u);
                Due::Start { reactivated: false }
            } else {
                let mut rng = substream(seed, Stream::Calendar, key(u, 0));
                match model.next(satisfaction, peak, 0.0, 0.0, &mut rng) {
                    Next::Return(t) => {
                        pending_at(&mut heap, t, u);
                        Due::Start { reactivated: false }
                    }
                    Next::Churn(t) => {
                        pending_at(&mut heap, t, u);
                        Due::Churn
                    }
                }
            };
            lives.push(Life { satisfaction, peak, last_end: None, sessions: 0, pending, flight: None, last_step: None });
        }
        Living {
            config,
            world,
            seed,
            learn,
            model,
            env,
            origin,
            horizon: cal.days as f64 * DAY_S,
            heap,
            lives,
            churns: Vec::new(),
            generator: CandidateGenerator::new(world.videos.len()),
            sessions: Vec::new(),
            steps: 0,
            creators: CreatorDays::new(config.world.n_creators, cal.days),
            new_video_views: vec![0u32; cal.days],
            first_new_video: world.initial_videos() as u32,
            fresh_s: cal.fresh_days * DAY_S,
            learner: Learner::default(),
            learner_rng: substream(seed, Stream::Replay, u64::MAX),
            loss_sum: 0.0,
        }
    }

    /// Sign-ups and uploads due by calendar time `t` arrive (a sign-up's first session is
    /// queued at the moment they sign up), and uploads older than `fresh_days` stop
    /// counting as fresh.
    fn arrive(&mut self, t: f64) {
        let (arrivals, days) = (&self.world.arrivals, self.config.calendar.days);
        while let Some(&at) = arrivals.user_at.get(self.env.sim().signed_up as usize) {
            if at > t {
                break;
            }
            self.env.sign_up();
        }
        while let Some(&at) = arrivals.video_at.get(self.env.sim().uploaded as usize) {
            if at > t {
                break;
            }
            let v = self.env.upload();
            let day = day_of(at).min(days.saturating_sub(1));
            self.creators.uploads[day * self.creators.n + self.world.videos[v as usize].creator as usize] += 1;
        }
        let mut fresh_from = self.env.sim().fresh_from;
        while fresh_from < self.env.sim().uploaded && arrivals.video_at[fresh_from as usize] + self.fresh_s <= t {
            fresh_from += 1;
        }
        self.env.set_fresh_from(fresh_from);
    }

    /// User `u` opens the app at calendar time `t`: a session starts, its first step due now.
    fn start(&mut self, u: usize, t: f64, reactivated: bool) {
        let session = self.env.start_session_at(u as u32, self.origin + t);
        let life = &mut self.lives[u];
        let n = life.sessions;
        life.flight = Some(Box::new(Flight {
            session,
            start: t,
            steps: 0,
            watch_s: 0.0,
            reward: 0.0,
            likes: 0,
            skips: 0,
            gap_s: life.last_end.map(|e| t - e),
            reactivated,
            responses: substream(self.seed, Stream::CalendarResponses, key(u, n)),
            policy: substream(self.seed, Stream::CalendarPolicy, key(u, n)),
        }));
        life.pending = Due::Step;
        pending_at(&mut self.heap, t, u);
    }

    /// Hands `transition` to a learning policy, adding its loss to the run's.
    fn feed(&mut self, policy: &mut dyn Policy, transition: Transition) -> Result<()> {
        if let Some(loss) = self.learner.feed(policy, transition, &mut self.learner_rng, 0)? {
            self.loss_sum += loss;
        }
        Ok(())
    }
    /// User `u`'s next step at calendar time `t`: with learning, the previous step's
    /// transition first; then the policy decides and the user responds. A session that ends
    /// there (or finds nothing left to show) is recorded.
    fn step(&mut self, u: usize, t: f64, policy: &mut dyn Policy) -> Result<()> {
        let cal = &self.config.calendar;
        let mut obs = {
            let f = self.lives[u].flight.as_ref().expect("a session in flight");
            self.env.observe_session(&f.session, &mut self.generator)
        };
        let (mut ended, mut end) = (obs.exhausted(), t);
        if self.learn && !ended {
            if let Some(last) = self.lives[u].last_step.take() {
                // Within a session the step leads to the next; a session's last step
                // leads to this session, discounted by the days between them.
                let (discount, bonus) = match last.ended_at {
                    Some(at) => (cal.discount_per_day.powf((t - at) / DAY_S), cal.return_reward),
                    None => (1.0, 0.0),
                };
                let end = match last.ended_at {
                    Some(_) => StepEnd::NextSession { discount },
                    None => StepEnd::Continues,
                };
                let tr = transition(last.state, last.action, last.reward + bonus, obs.state.clone(), end);
                self.feed(policy, tr)?;
            }
        }
        if !ended {
            let life = &mut self.lives[u];
            let f = life.flight.as_mut().expect("a session in flight");
            obs.truth.calendar = Some(crate::env::CalendarTruth { satisfaction: life.satisfaction, session_return: f.reward });
            let Decision { slot, propensity, estimated } = decide(&mut *policy, &obs, self.learn, &mut f.policy)?;
            let mut out = self.env.apply(&mut f.session, &obs, slot, &mut f.responses);
            out.propensity = propensity;
            out.propensity_estimated = estimated;
            self.steps += 1;
            f.steps += 1;
            f.watch_s += out.watch_s;
            f.reward += out.reward;
            f.likes += u32::from(out.response == Action::Liked);
            f.skips += u32::from(out.response == Action::Skipped);
            let day = day_of(t);
            if day < cal.days {
                let c = day * self.creators.n + self.world.videos[out.video as usize].creator as usize;
                self.creators.views[c] += 1;
                self.creators.watch_s[c] += out.watch_s;
                self.new_video_views[day] += u32::from(out.video >= self.first_new_video);
            }
            end = self.env.sim().clock[u] - self.origin;
            ended = out.terminal || out.truncated;
            if self.learn {
                let state = std::mem::take(&mut obs.state);
                let ended_at = ended.then_some(end);
                life.last_step = Some(Box::new(LastStep { state, action: slot, reward: out.reward, ended_at }));
            }
        }
        if ended {
            self.end_session(u, end, policy);
        } else {
            pending_at(&mut self.heap, end, u);
        }
        Ok(())
    }

    /// User `u`'s session ends at calendar time `end`: its row, the user's satisfaction,
    /// and their return (or churn) drawn.
    fn end_session(&mut self, u: usize, end: f64, policy: &mut dyn Policy) {
        let cal = &self.config.calendar;
        let life = &mut self.lives[u];
        let f = life.flight.take().expect("a session in flight");
        if self.learn {
            policy.end_episode();
        }
        self.sessions.push(SessionRow {
            user: u as u32,
            session: life.sessions,
            start_s: f.start,
            end_s: end,
            steps: f.steps,
            watch_s: f.watch_s,
            reward: f.reward,
            likes: f.likes,
            skips: f.skips,
            gap_s: f.gap_s,
            reactivated: f.reactivated,
        });
        life.sessions += 1;
        life.satisfaction = self.model.satisfaction_after(life.satisfaction, f.reward);
        life.last_end = Some(end);
        let mut rng = substream(self.seed, Stream::Calendar, key(u, life.sessions));
        let (pending, at) = match self.model.next(life.satisfaction, life.peak, end, end + cal.min_gap_s, &mut rng) {
            Next::Return(at) => (Due::Start { reactivated: false }, at),
            Next::Churn(at) => (Due::Churn, at),
        };
        life.pending = pending;
        pending_at(&mut self.heap, at, u);
    }

    /// User `u` churns at calendar time `t` (learning: the churn ends the user's chain of
    /// sessions, terminal); a reactivation may bring them back.
    fn churn(&mut self, u: usize, t: f64, policy: &mut dyn Policy) -> Result<()> {
        self.churns.push((u as u32, t));
        if let Some(last) = self.lives[u].last_step.take() {
            let tr = transition(last.state.clone(), last.action, last.reward, last.state, StepEnd::Terminal);
            self.feed(policy, tr)?;
        }
        // A reactivation draw of its own: index 2^31 + sessions so far.
        let mut rng = substream(self.seed, Stream::Calendar, key(u, (1 << 31) + self.lives[u].sessions));
        self.lives[u].pending = match self.model.reactivation(t, &mut rng) {
            Some(at) => {
                pending_at(&mut self.heap, at, u);
                Due::Start { reactivated: true }
            }
            None => Due::Nothing,
        };
        Ok(())
    }

    /// The run's record.
    fn finish(self, kind: PolicyKind) -> Population {
        Population {
            policy: kind,
            n_users: self.world.users.len(),
            days: self.config.calendar.days,
            sessions: self.sessions,
            churns: self.churns,
            steps: self.steps,
            initial_users: self.world.initial_users(),
            signups: self.world.arrivals.user_at.clone(),
            creators: self.creators,
            new_video_views: self.new_video_views,
            updates: self.learner.updates,
            loss_sum: self.loss_sum,
        }
    }
}

/// The day (from 0) of calendar time `t`.
pub fn day_of(t: f64) -> usize {
    (t / DAY_S).floor().max(0.0) as usize
}

/// One day of a population run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayRow {
    pub day: u32,
    /// Users there by the day's end (the initial users and the sign-ups so far).
    pub users: u32,
    /// Users with a session that started this day.
    pub active_users: u32,
    pub sessions: u32,
    pub watch_s: f64,
    pub reward: f64,
    /// Users who churned this day.
    pub churned: u32,
    /// Churned users who came back this day.
    pub reactivated: u32,
    /// Users who signed up this day.
    pub new_users: u32,
    /// Videos uploaded this day.
    pub uploads: u32,
    /// Videos shown (each a view of its creator's).
    pub views: u32,
    /// The share of the views that went to videos uploaded during the run.
    pub new_video_share: f64,
    /// The Gini coefficient of the views across creators.
    pub exposure_gini: f64,
    /// What the creators earned, all together (views x `calendar.pay_per_view`).
    pub creator_earnings: f64,
}

/// The retention of one cohort: the users there from the start who were active on day 0
/// (`signup_day` none), or those who signed up on one day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohortRow {
    pub signup_day: Option<u32>,
    pub users: u32,
    /// The share of the cohort active 1, 7 and 28 days after its day (none when the run
    /// ends before).
    pub day1: Option<f64>,
    pub day7: Option<f64>,
    pub day28: Option<f64>,
}

/// The day-by-day figures of a population run.
#[derive(Debug, Clone, PartialEq)]
pub struct Daily {
    pub rows: Vec<DayRow>,
    /// Per day, the share of the day-0 cohort (the users there from the start who were
    /// active on day 0) active that day (empty without days or without a day-0 user).
    pub retention: Vec<f64>,
    /// The day-0 cohort, then one per day with sign-ups.
    pub cohorts: Vec<CohortRow>,
}

impl Daily {
    /// The share of the users there (signed up by the day's end) active on each day.
    pub fn share_active(&self) -> Vec<f64> {
        self.rows.iter().map(|d| d.active_users as f64 / d.users.max(1) as f64).collect()
    }
}

/// The daily figures and the cohorts' retention, from one pass over which users were
/// active (had a session start) on each day. `pay_per_view`: the creators' pay.
pub fn daily(pop: &Population, pay_per_view: f64) -> Daily {
    let mut active = vec![vec![false; pop.n_users]; pop.days];
    let c = &pop.creators;
    let mut rows: Vec<DayRow> = (0..pop.days)
        .map(|d| {
            let views = c.views_on(d);
            let total: u32 = views.iter().sum();
            let new = pop.new_video_views.get(d).copied().unwrap_or(0);
            DayRow {
                day: d as u32,
                users: 0,
                active_users: 0,
                sessions: 0,
                watch_s: 0.0,
                reward: 0.0,
                churned: 0,
                reactivated: 0,
                new_users: 0,
                uploads: c.uploads.get(d * c.n..(d + 1) * c.n).map_or(0, |u| u.iter().sum()),
                views: total,
                new_video_share: if total == 0 { 0.0 } else { new as f64 / total as f64 },
                exposure_gini: gini(&views.iter().map(|&v| v as f64).collect::<Vec<_>>()),
                creator_earnings: total as f64 * pay_per_view,
            }
        })
        .collect();
    for &at in &pop.signups {
        if let Some(r) = rows.get_mut(day_of(at)) {
            r.new_users += 1;
        }
    }
    // Users there by each day's end: the initial users and the sign-ups so far.
    let mut users = pop.initial_users as u32;
    for r in &mut rows {
        users += r.new_users;
        r.users = users;
    }
    for s in &pop.sessions {
        let day = day_of(s.start_s);
        if let (Some(r), Some(a)) = (rows.get_mut(day), active.get_mut(day)) {
            r.sessions += 1;
            r.watch_s += s.watch_s;
            r.reward += s.reward;
            r.reactivated += u32::from(s.reactivated);
            a[s.user as usize] = true;
        }
    }
    for (r, a) in rows.iter_mut().zip(&active) {
        r.active_users = a.iter().filter(|&&x| x).count() as u32;
    }
    for &(_, t) in &pop.churns {
        if let Some(r) = rows.get_mut(day_of(t)) {
            r.churned += 1;
        }
    }
    // Each cohort as a membership mask: the day-0 cohort, then each sign-up day's.
    let mut masks: Vec<(Option<u32>, usize, Vec<bool>)> = Vec::new();
    if let Some(day0) = active.first() {
        let mut m = day0.clone();
        let from = pop.initial_users.min(m.len());
        m[from..].fill(false);
        masks.push((None, 0, m));
    }
    for (k, &at) in pop.signups.iter().enumerate() {
        let d = day_of(at);
        if d >= pop.days {
            continue;
        }
        if masks.last().is_none_or(|m| m.0 != Some(d as u32)) {
            masks.push((Some(d as u32), d, vec![false; pop.n_users]));
        }
        let last = masks.last_mut().expect("just pushed");
        last.2[pop.initial_users + k] = true;
    }
    let share = |mask: &[bool], day: usize| -> Option<f64> {
        let size = mask.iter().filter(|&&c| c).count();
        let a = active.get(day)?;
        (size > 0).then(|| a.iter().zip(mask).filter(|(&a, &c)| a && c).count() as f64 / size as f64)
    };
    let retention = match masks.first() {
        Some((None, _, m)) if m.contains(&true) => (0..pop.days).filter_map(|d| share(m, d)).collect(),
        _ => Vec::new(),
    };
    let cohorts = masks
        .iter()
        .filter(|(_, _, m)| m.contains(&true))
        .map(|(signup_day, d, m)| CohortRow {
            signup_day: *signup_day,
            users: m.iter().filter(|&&c| c).count() as u32,
            day1: share(m, d + 1),
            day7: share(m, d + 7),
            day28: share(m, d + 28),
        })
        .collect();
    Daily { rows, retention, cohorts }
}

/// One user's week: activity aggregates and the label of week-ahead churn prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserWeek {
    pub user: u32,
    pub week: u32,
    pub sessions: u32,
    /// Days of the week with a session.
    pub active_days: u32,
    pub watch_s: f64,
    pub likes: u32,
    pub skips: u32,
    /// Days from the user's last session start to the week's end (from the calendar's
    /// start, or the user's sign-up, when they have had none).
    pub days_since_last_visit: f64,
    /// No session in the next week; none for the last week (its next week is not
    /// observed).
    pub inactive_next_week: Option<bool>,
}

/// Per user and whole week, the aggregates and the "inactive next week" label, ordered by
/// user then week (a sign-up's weeks from the week they signed up in).
pub fn user_weeks(pop: &Population) -> Vec<UserWeek> {
    let weeks = pop.days / 7;
    let mut rows: Vec<UserWeek> = (0..pop.n_users)
        .flat_map(|u| {
            (0..weeks).map(move |w| UserWeek {
                user: u as u32,
                week: w as u32,
                sessions: 0,
                active_days: 0,
                watch_s: 0.0,
                likes: 0,
                skips: 0,
                days_since_last_visit: 0.0,
                inactive_next_week: None,
            })
        })
        .collect();
    if weeks == 0 {
        return rows;
    }
    // When each user joined: the calendar's start, or their sign-up.
    let joined = |u: usize| if u < pop.initial_users { 0.0 } else { pop.signups[u - pop.initial_users] };
    let mut last_start = vec![None::<f64>; pop.n_users * weeks];
    let mut day_seen = vec![false; pop.n_users * weeks * 7];
    for s in &pop.sessions {
        let day = day_of(s.start_s);
        let w = day / 7;
        if w >= weeks {
            continue;
        }
        let i = s.user as usize * weeks + w;
        let r = &mut rows[i];
        r.sessions += 1;
        r.watch_s += s.watch_s;
        r.likes += s.likes;
        r.skips += s.skips;
        if !std::mem::replace(&mut day_seen[i * 7 + day % 7], true) {
            r.active_days += 1;
        }
        last_start[i] = Some(last_start[i].map_or(s.start_s, |x: f64| x.max(s.start_s)));
    }
    for u in 0..pop.n_users {
        let mut last: Option<f64> = None;
        for w in 0..weeks {
            let i = u * weeks + w;
            if let Some(t) = last_start[i] {
                last = Some(t);
            }
            let week_end = (w + 1) as f64 * 7.0 * DAY_S;
            rows[i].days_since_last_visit = (week_end - last.unwrap_or(joined(u))) / DAY_S;
            if w + 1 < weeks {
                rows[i].inactive_next_week = Some(rows[i + 1].sessions == 0);
            }
        }
    }
    // A sign-up's weeks start with the week they signed up in.
    if !pop.signups.is_empty() {
        rows.retain(|r| joined(r.user as usize) < (r.week + 1) as f64 * 7.0 * DAY_S);
    }
    rows
}

/// One population run of learning across sessions (`calendar_training.csv`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalendarRun {
    /// From 1.
    pub run: u32,
    pub sessions_per_user_day: f64,
    pub watch_s_per_user: f64,
    pub reward_per_session: f64,
    pub day7_retention: Option<f64>,
    pub steps: u64,
    pub updates: u64,
    /// The mean TD loss of the run's updates (none without an update).
    pub mean_loss: Option<f64>,
    /// The exploration rate at the run's end.
    pub epsilon: f64,
}

impl CalendarRun {
    pub fn of(run: u32, pop: &Population, summary: &PopulationSummary, epsilon: f64) -> CalendarRun {
        CalendarRun {
            run,
            sessions_per_user_day: summary.sessions_per_user_day,
            watch_s_per_user: summary.watch_s_per_user,
            reward_per_session: summary.reward_per_session,
            day7_retention: summary.day7_retention,
            steps: pop.steps,
            updates: pop.updates,
            mean_loss: (pop.updates > 0).then(|| pop.loss_sum / pop.updates as f64),
            epsilon,
        }
    }
}

/// A population run's headline figures, for `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PopulationSummary {
    pub policy: String,
    pub users: usize,
    pub days: usize,
    pub sessions: usize,
    pub steps: u64,
    pub sessions_per_user_day: f64,
    /// Seconds watched per user over the whole run.
    pub watch_s_per_user: f64,
    pub reward_per_session: f64,
    pub steps_per_session: f64,
    /// The share of the day-0 cohort active on day 1, 7 and 28 (none when the run is too
    /// short to observe it).
    pub day1_retention: Option<f64>,
    pub day7_retention: Option<f64>,
    pub day28_retention: Option<f64>,
    /// The share of users churned and not back at the end.
    pub churned_at_end: f64,
    /// Users who signed up and videos uploaded during the run (the creator figures below
    /// read 0 in summaries written before they existed).
    #[serde(default)]
    pub new_users: usize,
    #[serde(default)]
    pub uploads: usize,
    /// The share of all views that went to videos uploaded during the run.
    #[serde(default)]
    pub new_video_share: f64,
    /// The Gini coefficient of the whole run's views across creators.
    #[serde(default)]
    pub exposure_gini: f64,
    /// What the creators earned, all together.
    #[serde(default)]
    pub creator_earnings: f64,
}

/// The headline figures of `pop`, whose day-by-day figures are `daily`. Sessions per
/// user-day count a sign-up's days from their sign-up; watch time per user is per user
/// who was there at any time.
pub fn summarize(pop: &Population, daily: &Daily) -> PopulationSummary {
    let n = pop.sessions.len();
    let users = pop.n_users.max(1) as f64;
    let per_session = |f: fn(&SessionRow) -> f64| if n == 0 { 0.0 } else { pop.sessions.iter().map(f).sum::<f64>() / n as f64 };
    let retention = &daily.retention;
    // A user is churned at the end if their last event was a churn.
    let mut last_churn = vec![None::<f64>; pop.n_users];
    for &(u, t) in &pop.churns {
        last_churn[u as usize] = Some(t);
    }
    let mut last_start = vec![None::<f64>; pop.n_users];
    for s in &pop.sessions {
        let x = &mut last_start[s.user as usize];
        *x = Some(x.map_or(s.start_s, |v: f64| v.max(s.start_s)));
    }
    let days = pop.days.max(1) as f64;
    let user_days = pop.initial_users as f64 * days + pop.signups.iter().map(|&at| (days - at / DAY_S).max(0.0)).sum::<f64>();
    let c = &pop.creators;
    let per_creator: Vec<f64> = (0..c.n).map(|k| (0..pop.days).map(|d| c.views[d * c.n + k] as f64).sum()).collect();
    let views: u64 = c.views.iter().map(|&v| v as u64).sum();
    let new_views: u64 = pop.new_video_views.iter().map(|&v| v as u64).sum();
    let churned =
        last_churn.iter().zip(&last_start).filter(|(c, s)| matches!((c, s), (Some(c), s) if s.is_none_or(|s| s < *c))).count();
    PopulationSummary {
        policy: pop.policy.name().to_string(),
        users: pop.n_users,
        days: pop.days,
        sessions: n,
        steps: pop.steps,
        sessions_per_user_day: n as f64 / user_days.max(1e-9),
        watch_s_per_user: pop.sessions.iter().map(|s| s.watch_s).sum::<f64>() / users,
        reward_per_session: per_session(|s| s.reward),
        steps_per_session: per_session(|s| s.steps as f64),
        day1_retention: retention.get(1).copied(),
        day7_retention: retention.get(7).copied(),
        day28_retention: retention.get(28).copied(),
        churned_at_end: churned as f64 / users,
        new_users: pop.signups.len(),
        uploads: pop.creators.uploads.iter().map(|&u| u as usize).sum(),
        new_video_share: if views == 0 { 0.0 } else { new_views as f64 / views as f64 },
        exposure_gini: gini(&per_creator),
        creator_earnings: daily.rows.iter().map(|d| d.creator_earnings).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::Transition;
    use crate::config::{CalendarConfig, Config};
    use crate::rng::stream;

    fn calendar(extra: &str) -> CalendarConfig {
        Config::from_toml_str(&format!("[calendar]\ndays = 7\n{extra}"), &[]).unwrap().calendar.clone()
    }

    #[test]
    fn the_return_hazard_follows_satisfaction_and_the_hour_on_hand_made_histories() {
        let m =
            ReturnModel::new(&calendar("sessions_per_day = 2.0\ncoupling = 0.5\nreference = 1.0\nmemory = 0.5\nrhythm = 0.5\n"));
        // Satisfaction after sessions returning 2, 4 and 0, from the reference.
        let mut s = 1.0;
        let mut seen = Vec::new();
        for r in [2.0, 4.0, 0.0] {
            s = m.satisfaction_after(s, r);
            seen.push(s);
        }
        assert_eq!(seen, vec![1.5, 2.75, 1.375]);
        // At the reference the day-average rate is sessions_per_day; each unit of
        // satisfaction above it multiplies the rate by e^0.5.
        assert!((m.base_rate(1.0) * DAY_S - 2.0).abs() < 1e-12);
        assert!((m.base_rate(2.75) / m.base_rate(1.0) - (0.5f64 * 1.75).exp()).abs() < 1e-12);
        // The rhythm: 1.5x at the peak hour, 0.5x twelve hours away, 1x six hours away.
        let base = m.base_rate(1.375);
        let at = |h: f64| m.hazard(1.375, 20.0, 3.0 * DAY_S + h * 3600.0) / base;
        assert!((at(20.0) - 1.5).abs() < 1e-9 && (at(8.0) - 0.5).abs() < 1e-9 && (at(2.0) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn returns_come_at_the_configured_rate_and_satisfaction_brings_users_back_sooner() {
        let m = ReturnModel::new(&calendar("sessions_per_day = 1.5\ncoupling = 0.5\nmin_gap_s = 0.0\nchurn_days = 1000\n"));
        let mut rng = stream(5, Stream::Calendar);
        let per_day = |sat: f64, rng: &mut SimRng| {
            let (mut t, mut n) = (0.0, 0);
            while t < 2000.0 * DAY_S {
                match m.next(sat, 20.0, t, t, rng) {
                    Next::Return(at) => t = at,
                    Next::Churn(_) => panic!("no churn within 1000 days at this rate"),
                }
                n += 1;
            }
            n as f64 / 2000.0
        };
        // 3,000 returns expected: the count is within about 3 standard deviations.
        let flat = per_day(0.0, &mut rng);
        assert!((flat - 1.5).abs() < 0.09, "{flat} returns per day, want 1.5");
        let happy = per_day(1.0, &mut rng);
        let want = 1.5 * 0.5f64.exp();
        assert!((happy - want).abs() < 0.12, "{happy} returns per day, want {want}");
    }

    #[test]
    fn users_who_stay_away_churn_and_may_be_reactivated() {
        // 0.1 sessions a day: P(a return within 7 days) = 1 - e^-0.7 = 0.503.
        let m =
            ReturnModel::new(&calendar("sessions_per_day = 0.1\nrhythm = 0.0\nmin_gap_s = 0.0\nreactivation_per_day = 0.5\n"));
        let mut rng = stream(6, Stream::Calendar);
        let mut churned = 0;
        for _ in 0..4000 {
            match m.next(0.0, 20.0, DAY_S, DAY_S, &mut rng) {
                Next::Churn(at) => {
                    assert_eq!(at, 8.0 * DAY_S, "churn is dated churn_days after the last session");
                    churned += 1;
                }
                Next::Return(at) => assert!(at > DAY_S && at < 8.0 * DAY_S),
            }
        }
        let share = churned as f64 / 4000.0;
        assert!((share - (-0.7f64).exp()).abs() < 0.025, "{share}");
        let back: Vec<f64> = (0..4000).map(|_| m.reactivation(10.0 * DAY_S, &mut rng).unwrap() - 10.0 * DAY_S).collect();
        let mean_days = back.iter().sum::<f64>() / back.len() as f64 / DAY_S;
        assert!((mean_days - 2.0).abs() < 0.15, "mean wait {mean_days} days, want 2");
        let never = ReturnModel::new(&calendar(""));
        assert_eq!(never.reactivation(0.0, &mut rng), None);
    }

    fn row(user: u32, start_day: f64, watch_s: f64) -> SessionRow {
        SessionRow {
            user,
            session: 0,
            start_s: start_day * DAY_S,
            end_s: start_day * DAY_S + 60.0,
            steps: 3,
            watch_s,
            reward: 1.0,
            likes: 1,
            skips: 0,
            gap_s: None,
            reactivated: false,
        }
    }

    #[test]
    fn weeks_are_labelled_inactive_next_week_from_the_sessions() {
        // User 0 is active in weeks 0 and 2, user 1 in week 0 (twice on day 3) and never
        // again (churned on day 10), user 2 never.
        let pop = Population {
            policy: PolicyKind::Greedy,
            n_users: 3,
            days: 21,
            sessions: vec![row(0, 0.5, 10.0), row(1, 3.2, 20.0), row(1, 3.7, 5.0), row(0, 15.0, 7.0)],
            churns: vec![(1, 10.7 * DAY_S)],
            steps: 12,
            initial_users: 3,
            signups: Vec::new(),
            creators: CreatorDays::new(2, 21),
            new_video_views: vec![0; 21],
            updates: 0,
            loss_sum: 0.0,
        };
        let weeks = user_weeks(&pop);
        assert_eq!(weeks.len(), 9);
        let w = |u: usize, k: usize| &weeks[u * 3 + k];
        assert_eq!((w(0, 0).sessions, w(0, 0).inactive_next_week), (1, Some(true)));
        assert_eq!((w(0, 1).sessions, w(0, 1).inactive_next_week), (0, Some(false)));
        assert_eq!(w(0, 2).inactive_next_week, None, "the last week's next week is not observed");
        assert_eq!((w(1, 0).sessions, w(1, 0).active_days, w(1, 0).watch_s), (2, 1, 25.0));
        assert_eq!(w(1, 0).inactive_next_week, Some(true));
        assert!((w(1, 1).days_since_last_visit - (14.0 - 3.7)).abs() < 1e-9);
        assert!((w(0, 2).days_since_last_visit - 6.0).abs() < 1e-9);
        assert_eq!((w(2, 0).days_since_last_visit, w(2, 2).days_since_last_visit), (7.0, 21.0));
        let daily = daily(&pop, 0.001);
        let d = &daily.rows;
        assert_eq!((d[3].active_users, d[3].sessions, d[10].churned), (1, 2, 1));
        // Day 0's cohort is user 0 alone: active again on day 15 only.
        let r = &daily.retention;
        assert_eq!((r[0], r[1], r[15]), (1.0, 0.0, 1.0));
        let s = summarize(&pop, &daily);
        assert_eq!((s.sessions, s.day1_retention, s.day7_retention, s.day28_retention), (4, Some(0.0), Some(0.0), None));
        assert!((s.churned_at_end - 1.0 / 3.0).abs() < 1e-12);
    }

    fn world(overrides: &[&str]) -> (Checked, Arc<World>) {
        let toml =
            "seed = 9\n[world]\nn_videos = 400\nn_users = 60\n[calendar]\ndays = 3\ncoupling = 0.3\nsessions_per_day = 3.0\n";
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let c = Config::from_toml_str(toml, &o).unwrap();
        let w = Arc::new(World::generate(&c));
        (c, w)
    }

    fn live(c: &Checked, w: &Arc<World>, kind: PolicyKind) -> Population {
        let mut p = crate::agent::make_policy(kind, c).unwrap();
        let mut days = Vec::new();
        let pop = live_days(c, w, p.as_mut(), kind, Mode::Evaluate, &mut |d| days.push(d)).unwrap();
        assert_eq!(days, vec![1, 2, 3], "every day is reported once");
        pop
    }

    #[test]
    fn a_population_run_repeats_for_its_seed_and_interleaves_sessions_in_time() {
        let (c, w) = world(&[]);
        let a = live(&c, &w, PolicyKind::Greedy);
        assert_eq!(a, live(&c, &w, PolicyKind::Greedy));
        assert!(a.sessions.len() > 60, "{} sessions", a.sessions.len());
        // Every session starts within the calendar, and no user has two at once.
        let mut by_user: Vec<Vec<&SessionRow>> = vec![Vec::new(); 60];
        for s in &a.sessions {
            assert!(s.start_s >= 0.0 && s.start_s < 3.0 * DAY_S && s.end_s >= s.start_s);
            by_user[s.user as usize].push(s);
        }
        for rows in &by_user {
            for pair in rows.windows(2) {
                assert!(pair[1].start_s >= pair[0].end_s + c.calendar.min_gap_s - 1e-6);
                assert_eq!(pair[1].gap_s.unwrap(), pair[1].start_s - pair[0].end_s);
            }
        }
        // Sessions of different users overlap in time: they ran interleaved.
        let mut sorted: Vec<&SessionRow> = a.sessions.iter().collect();
        sorted.sort_by(|x, y| x.start_s.total_cmp(&y.start_s));
        assert!(sorted.windows(2).any(|p| p[1].start_s < p[0].end_s), "some sessions overlap");
        // Another seed is another run.
        let (c2, w2) = world(&["seed=10"]);
        assert_ne!(a.sessions, live(&c2, &w2, PolicyKind::Greedy).sessions);
    }

    fn summary(pop: &Population) -> PopulationSummary {
        summarize(pop, &daily(pop, 0.001))
    }

    #[test]
    fn a_better_policy_brings_users_back_more_often_when_returns_are_coupled() {
        let (c, w) = world(&["calendar.reference=2.0"]);
        let random = summary(&live(&c, &w, PolicyKind::Random));
        let oracle = summary(&live(&c, &w, PolicyKind::Oracle));
        assert!(oracle.reward_per_session > random.reward_per_session);
        assert!(oracle.sessions_per_user_day > random.sessions_per_user_day, "{oracle:?} vs {random:?}");
        let (c0, w0) = world(&["calendar.reference=2.0", "calendar.coupling=0.0"]);
        let flat_random = summary(&live(&c0, &w0, PolicyKind::Random));
        let flat_oracle = summary(&live(&c0, &w0, PolicyKind::Oracle));
        // Without the coupling the sessions a user opens depend on the policy only through
        // when the last one ended (returns come min_gap_s after it at the earliest).
        let rel = |a: &PopulationSummary, b: &PopulationSummary| a.sessions as f64 / b.sessions as f64 - 1.0;
        let (coupled, flat) = (rel(&oracle, &random), rel(&flat_oracle, &flat_random));
        assert!(flat.abs() < 0.02 && coupled > 0.1, "oracle over random: {coupled} coupled, {flat} without");
    }

    #[test]
    fn gini_is_zero_for_equal_shares_and_grows_with_concentration() {
        assert_eq!(gini(&[3.0, 3.0, 3.0, 3.0]), 0.0);
        assert!((gini(&[0.0, 0.0, 0.0, 4.0]) - 0.75).abs() < 1e-12);
        assert!((gini(&[1.0, 2.0, 3.0]) - 2.0 / 9.0).abs() < 1e-12);
        assert_eq!(gini(&[0.0, 0.0]), 0.0);
        assert_eq!(gini(&[]), 0.0);
    }

    const ARRIVALS: [&str; 3] = ["calendar.signups_per_day=10", "calendar.uploads_per_creator_day=2", "calendar.fresh_slots=2"];

    #[test]
    fn arrivals_are_drawn_with_the_world_without_moving_the_rest_of_it() {
        let (_, plain) = world(&[]);
        let (c, w) = world(&ARRIVALS);
        assert!(plain.arrivals.user_at.is_empty() && plain.arrivals.video_at.is_empty());
        assert_eq!((w.initial_users(), w.initial_videos()), (60, 400));
        assert_eq!(&w.users[..60], &plain.users[..]);
        assert_eq!(&w.videos[..400], &plain.videos[..]);
        assert_eq!(w.history, plain.history);
        // 3 days: 30 sign-ups and 20 creators x 2 x 3 = 120 uploads expected.
        let (users, videos) = (w.arrivals.user_at.len(), w.arrivals.video_at.len());
        assert!((15..=48).contains(&users) && (85..=160).contains(&videos), "{users} sign-ups, {videos} uploads");
        assert_eq!((w.users.len(), w.videos.len()), (60 + users, 400 + videos));
        for at in [&w.arrivals.user_at, &w.arrivals.video_at] {
            assert!(at.windows(2).all(|p| p[0] <= p[1]) && at.iter().all(|&t| (0.0..3.0 * DAY_S).contains(&t)));
        }
        assert!(w.videos[400..].iter().all(|v| v.views == 0 && (v.creator as usize) < c.world.n_creators));
        assert!(w.users.iter().enumerate().all(|(k, u)| u.id as usize == k));
        // The environment starts with the initial users and videos alone.
        let env = Env::new(&c, Arc::clone(&w));
        assert_eq!((env.matrix.n_users(), env.matrix.n_items()), (60, 400));
    }

    #[test]
    fn an_upload_enters_the_candidates_through_a_fresh_slot_only_once_it_is_uploaded() {
        let (c, w) = world(&ARRIVALS);
        let mut env = Env::new(&c, Arc::clone(&w));
        let mut g = CandidateGenerator::new(w.videos.len());
        let session = env.start_session(3);
        let before = env.observe_session(&session, &mut g);
        assert!(before.candidates.iter().all(|x| x.video < 400), "nothing uploaded yet");
        let v = env.upload();
        assert_eq!(v, 400);
        let after = env.observe_session(&session, &mut g);
        assert_eq!(after.candidates.len(), c.candidates.count);
        assert!(after.candidates.iter().any(|x| x.video == 400), "the upload takes a fresh slot");
        // No longer fresh: it has no co-views, so it drops out.
        env.set_fresh_from(1);
        assert!(env.observe_session(&session, &mut g).candidates.iter().all(|x| x.video < 400));
        // A sign-up with nothing watched gets the catalogue's best by the business weights.
        let u = env.sign_up();
        assert_eq!(u, 60);
        let fresh_user = env.start_session(u);
        let cold = env.observe_session(&fresh_user, &mut g);
        assert_eq!(cold.candidates.len(), c.candidates.count);
        assert!(cold.candidates.windows(2).all(|p| p[0].final_score >= p[1].final_score));
        // The state with arrivals saves and restores whole.
        let saved = env.state();
        let mut again = Env::new(&c, Arc::clone(&w));
        again.restore(&saved).unwrap();
        assert_eq!((again.matrix.n_users(), again.matrix.n_items(), again.sim().uploaded), (61, 401, 1));
        assert_eq!(again.state(), saved);
    }

    #[test]
    fn sign_ups_start_at_their_sign_up_and_form_cohorts_and_uploads_get_views() {
        let (c, w) = world(&ARRIVALS);
        let pop = live(&c, &w, PolicyKind::Greedy);
        assert_eq!(pop, live(&c, &w, PolicyKind::Greedy), "a run with arrivals repeats for its seed");
        let initial = w.initial_users();
        for s in pop.sessions.iter().filter(|s| s.user as usize >= initial) {
            let at = w.arrivals.user_at[s.user as usize - initial];
            assert!(s.start_s >= at - 1e-9, "user {} session before signing up", s.user);
            if s.session == 0 {
                assert_eq!(s.start_s, at, "a sign-up's first session opens as they sign up");
            }
        }
        assert!(pop.sessions.iter().any(|s| s.user as usize >= initial));
        let d = daily(&pop, 0.5);
        let new_users: u32 = d.rows.iter().map(|r| r.new_users).sum();
        assert_eq!(new_users as usize, w.arrivals.user_at.len());
        assert_eq!(d.rows.last().unwrap().users as usize, w.users.len());
        // The day-0 cohort, then one per day with sign-ups; day 1 of the last day's is not
        // observed.
        assert_eq!(d.cohorts[0].signup_day, None);
        assert!(d.cohorts[1..].iter().all(|k| k.signup_day.is_some() && k.day7.is_none()));
        assert_eq!(d.cohorts.last().unwrap().day1, None);
        let s = summarize(&pop, &d);
        assert_eq!(s.uploads, w.arrivals.video_at.len());
        assert!(s.new_video_share > 0.05, "{}", s.new_video_share);
        let views: u32 = d.rows.iter().map(|r| r.views).sum();
        assert_eq!(views as u64, pop.steps);
        assert!((s.creator_earnings - 0.5 * views as f64).abs() < 1e-9);
        assert!((0.0..1.0).contains(&s.exposure_gini));
        // Without the fresh slots the uploads hardly get in (a random policy takes what is
        // offered).
        let open = summary(&live(&c, &w, PolicyKind::Random));
        let (c0, w0) = world(&[ARRIVALS[0], ARRIVALS[1]]);
        let closed = summary(&live(&c0, &w0, PolicyKind::Random));
        assert!(closed.new_video_share < open.new_video_share / 3.0, "{} vs {}", closed.new_video_share, open.new_video_share);
        // A sign-up's weeks start with their sign-up week (here: the only week is partial).
        let weeks = user_weeks(&pop);
        assert!(weeks.is_empty(), "3 days hold no whole week");
    }

    /// Shows slot 0 and keeps every transition it is given.
    struct Recorder(Vec<Transition>, usize);

    impl Policy for Recorder {
        fn kind(&self) -> PolicyKind {
            PolicyKind::Greedy
        }
        fn act(&mut self, _obs: &crate::env::Observation, explore: bool, _rng: &mut SimRng) -> Result<usize> {
            assert!(explore, "a learning run explores");
            Ok(0)
        }
        fn observe(&mut self, t: Transition, _rng: &mut SimRng) -> Result<Option<f64>> {
            self.0.push(t);
            Ok(Some(0.5))
        }
        fn end_episode(&mut self) {
            self.1 += 1;
        }
    }

    #[test]
    fn learning_across_sessions_links_a_sessions_last_step_to_the_users_next_session_discounted_by_the_gap() {
        let (c, w) = world(&["calendar.discount_per_day=0.5", "calendar.return_reward=2.0", "calendar.churn_days=1"]);
        let mut rec = Recorder(Vec::new(), 0);
        let pop = live_days(&c, &w, &mut rec, PolicyKind::Greedy, Mode::Train { run: 0 }, &mut |_| {}).unwrap();
        let (ts, episodes) = (rec.0, rec.1);
        assert_eq!(episodes, pop.sessions.len(), "every session ends an episode");
        assert_eq!((pop.updates, pop.loss_sum), (ts.len() as u64, 0.5 * ts.len() as f64));
        // Each user's sessions in order: the gap from one's end to the next's start.
        let gaps: Vec<f64> = pop.sessions.iter().filter_map(|s| s.gap_s).collect();
        let crossing: Vec<&Transition> = ts.iter().filter(|t| t.episode_end && !t.terminal).collect();
        let terminal = ts.iter().filter(|t| t.terminal).count();
        let within = ts.iter().filter(|t| !t.episode_end).count();
        assert!(ts.iter().filter(|t| !t.episode_end).all(|t| t.discount == 1.0 && !t.terminal));
        // A session's last step leads to the next session (every gap of a user who came
        // back), or the user churns (terminal), or the calendar ends first.
        assert_eq!(crossing.len(), gaps.len(), "one link per return");
        assert!(terminal > 0 && terminal <= pop.churns.len());
        assert!(within + crossing.len() + terminal <= pop.steps as usize);
        let mut discounts: Vec<f64> = crossing.iter().map(|t| t.discount).collect();
        let want = |g: &f64| 0.5f64.powf(g / DAY_S);
        let mut wanted: Vec<f64> = gaps.iter().map(want).collect();
        discounts.sort_by(f64::total_cmp);
        wanted.sort_by(f64::total_cmp);
        for (d, w) in discounts.iter().zip(&wanted) {
            assert!((d - w).abs() < 1e-12, "{d} vs {w}");
        }
        assert!(discounts.iter().all(|&d| d > 0.0 && d < 1.0));
        // The return reward is paid on the link into the next session, not within one:
        // the same run without it differs there by exactly the reward.
        let (c0, w0) = world(&["calendar.discount_per_day=0.5", "calendar.return_reward=0.0", "calendar.churn_days=1"]);
        let mut plain = Recorder(Vec::new(), 0);
        live_days(&c0, &w0, &mut plain, PolicyKind::Greedy, Mode::Train { run: 0 }, &mut |_| {}).unwrap();
        assert_eq!(plain.0.len(), ts.len());
        for (a, b) in ts.iter().zip(&plain.0) {
            let paid = if a.episode_end && !a.terminal { 2.0 } else { 0.0 };
            assert_eq!(a.reward, b.reward + paid);
        }
        // A learning run's random numbers are its own: not those of the evaluated run.
        let evaluated = live(&c, &w, PolicyKind::Greedy);
        assert_ne!(evaluated.sessions, pop.sessions);
    }
}

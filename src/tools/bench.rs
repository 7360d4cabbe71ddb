//! `fypsim bench`: how long each part of the simulator takes for a config, as medians over
//! repeats. Figures, not pass/fail: machines are shared and noisy.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::Rng;
use serde::Serialize;

use crate::agent::baselines::GreedyPolicy;
use crate::agent::dqn::DqnAgent;
use crate::agent::replay::ReplayBuffer;
use crate::agent::Policy;
use crate::config::CandidateSource;
use crate::config::Checked;
use crate::drive::session::{transition, StepEnd};
use crate::drive::train::{train, Flow, TrainProgress};
use crate::env::Env;
use crate::output::plot::{loglog_plot, Series};
use crate::platform::candidates::{item_neighbours, CandidateGenerator, NeighbourIndex};
use crate::platform::matrix::InteractionMatrix;
use crate::rng::{stream, SimRng, Stream};
use crate::world::World;
use crate::Result;

/// The figures of one benchmark run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub config: String,
    pub users: usize,
    pub videos: usize,
    pub history_rows: usize,
    pub world_build_s: f64,
    pub matrix_build_s: f64,
    /// Exact top-k item neighbours (cosine) of every video from the built matrix.
    pub neighbours_build_s: f64,
    pub neighbours_k: usize,
    /// One user's candidates as the config makes them (`candidates.source`), median over
    /// users.
    pub candidates_us: f64,
    /// One user's candidates from the exact neighbour lists, median over users (the
    /// approximate mode; its recall is `recall_at_r`).
    pub candidates_neighbours_us: f64,
    /// One interaction added to the matrix.
    pub update_us: f64,
    /// Mean recall of the top-r candidates from the neighbour lists against exact ones,
    /// with freshly built lists (sampled users).
    pub recall_at_r: f64,
    /// The same after `stale_after_interactions` random interactions without a refresh.
    pub recall_stale: f64,
    pub stale_after_interactions: usize,
    /// One DQN gradient step on a batch of `dqn.batch_size`.
    pub dqn_update_us: f64,
    /// One small libtorch operation that autograd records (a ReLU of a [50, 64] tensor on
    /// the agent's device), median: the fixed cost that bounds the update.
    pub libtorch_op_us: f64,
    /// Environment steps per second under the greedy baseline (no learning).
    pub env_steps_per_s: f64,
    /// Training steps per second: environment, DQN acting and one update every
    /// `train_every` steps.
    pub train_steps_per_s: f64,
    /// `dqn.train_every` of the config (1 in the shipped ones: an update every step).
    pub train_every: usize,
    /// Sessions in flight for the lockstep figures below.
    pub parallel_sessions: usize,
    /// Threads of the parallel figure (one per core).
    pub parallel_threads: usize,
    /// Environment steps per second, greedy, `parallel_sessions` sessions in lockstep,
    /// observed on 1 thread and on `parallel_threads` threads.
    pub lockstep_env_steps_per_s_1_thread: f64,
    pub lockstep_env_steps_per_s: f64,
    /// Training steps per second, DQN, `parallel_sessions` sessions in lockstep on
    /// `parallel_threads` threads (batched forward pass), updates every `dqn.train_every`.
    pub lockstep_train_steps_per_s: f64,
    /// The bandits' feature dimension d at this config.
    pub bandit_dim: usize,
    /// One bandit decision (act and propensity, exploring) plus its model update, median
    /// over recorded observations: LinUCB, Thompson sampling (its propensity not
    /// estimated), epsilon-greedy.
    pub linucb_step_us: f64,
    pub thompson_step_us: f64,
    pub epsilon_greedy_step_us: f64,
    /// Thompson sampling's Monte Carlo propensity estimate of one decision, at
    /// [`THOMPSON_BENCH_DRAWS`] draws (logging only: off the decision's path).
    pub thompson_propensity_us: f64,
    pub peak_rss_mb: f64,
}

/// The draws of [`BenchReport::thompson_propensity_us`].
pub const THOMPSON_BENCH_DRAWS: usize = 1000;

/// The bandits' figures of [`bench`]: decisions plus updates on observations recorded from
/// greedy sessions of the config's world (so the features are the real ones), medians of
/// batches of 1,000 (a single decision is too short to time alone).
fn time_bandits(config: &Checked, world: &std::sync::Arc<World>, report: &mut BenchReport) -> Result<()> {
    use crate::agent::Transition;
    use crate::config::PolicyKind;
    let mut env = Env::new(config, world.clone());
    let mut rng = stream(config.seed, Stream::Eval);
    let mut obs = Vec::new();
    while obs.len() < 2000 {
        env.reset_random(&mut rng);
        while !env.observation().exhausted() {
            let o = env.observation().clone();
            let out = env.step(0, &mut rng);
            obs.push((o, out.reward));
            if out.terminal || out.truncated {
                break;
            }
        }
    }
    let batch = 1000;
    let per_decision = |policy: &mut dyn Policy, draws: bool| -> Result<f64> {
        let mut rng = stream(config.seed, Stream::Bandit);
        let mut us = Vec::new();
        for chunk in obs.chunks_exact(batch) {
            let t = Instant::now();
            for (o, reward) in chunk {
                let d = crate::drive::session::decide(policy, o, true, &mut rng)?;
                if !draws {
                    let next_state = o.state.clone();
                    let step = Transition {
                        state: o.state.clone(),
                        action: d.slot,
                        reward: *reward,
                        next_state,
                        terminal: false,
                        episode_end: false,
                        discount: 1.0,
                    };
                    policy.observe(step, &mut rng)?;
                }
                std::hint::black_box(d);
            }
            us.push(t.elapsed().as_secs_f64() * 1e6 / batch as f64);
        }
        Ok(median(us))
    };
    // Two passes over the recordings: the model is no longer at its prior in the second.
    let time = |kind: PolicyKind, draws: usize| -> Result<f64> {
        let mut c: crate::config::Config = (**config).clone();
        c.bandit.propensity_draws = draws;
        let c = c.check()?;
        let mut p = crate::agent::make_policy(kind, &c)?;
        per_decision(p.as_mut(), false)?;
        if draws == 0 {
            per_decision(p.as_mut(), false)
        } else {
            // The estimate alone: the decision with it, less the decision without.
            let with = per_decision(p.as_mut(), true)?;
            let mut c0: crate::config::Config = (*c).clone();
            c0.bandit.propensity_draws = 0;
            let mut p0 = crate::agent::make_policy(kind, &c0.check()?)?;
            per_decision(p0.as_mut(), false)?;
            let without = per_decision(p0.as_mut(), true)?;
            Ok((with - without).max(0.0))
        }
    };
    report.bandit_dim = crate::agent::bandit::BanditFeatures::of(config).dim();
    report.linucb_step_us = time(PolicyKind::LinUcb, 0)?;
    report.thompson_step_us = time(PolicyKind::Thompson, 0)?;
    report.epsilon_greedy_step_us = time(PolicyKind::EpsilonGreedy, 0)?;
    report.thompson_propensity_us = time(PolicyKind::Thompson, THOMPSON_BENCH_DRAWS)?;
    Ok(())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    if xs.is_empty() {
        return f64::NAN;
    }
    xs[xs.len() / 2]
}

/// Peak resident memory of this process (VmHWM), in MiB; NaN where /proc is missing.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Times every part for `config`; `repeats` for the whole-world timings, `steps` for the
/// throughput loops.
pub fn bench(
    config: &Checked,
    label: &str,
    repeats: usize,
    steps: usize,
    kernels_only: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<BenchReport> {
    let repeats = repeats.max(1);
    let threads = crate::cores();

    progress("world generation");
    let (world, world_s) = timed(repeats, || std::sync::Arc::new(World::generate(config)));
    progress("matrix build");
    let (mut matrix, matrix_s) = timed(repeats, || {
        InteractionMatrix::from_triplets(
            world.initial_videos(),
            world.initial_users(),
            world.history.iter().map(|i| (i.video, i.user, i.score)),
        )
    });
    progress("item neighbours");
    let k = config.candidates.neighbours;
    let (index, neigh_s) = timed(repeats, || NeighbourIndex { lists: item_neighbours(&matrix, k, threads), k });
    let use_index = config.candidates.source == CandidateSource::Neighbours;

    progress("candidate requests");
    let mut g = CandidateGenerator::new(world.initial_videos());
    let mut rng = stream(config.seed, Stream::Eval);
    // At most 10 s per timing loop: at platform scale one exact request can take a large
    // fraction of a second.
    let mut time_requests = |index: Option<&NeighbourIndex>, rng: &mut crate::rng::SimRng| {
        let budget = std::time::Duration::from_secs(10);
        let (start, mut us) = (Instant::now(), Vec::new());
        for _ in 0..steps.clamp(100, 20_000) {
            if start.elapsed() > budget && us.len() >= 5 {
                break;
            }
            let u = rng.random_range(0..world.initial_users());
            let t = Instant::now();
            let c = g.candidates(&matrix, index, &world.users[u], &world.videos, &world.start.views, &config.candidates);
            us.push(t.elapsed().as_secs_f64() * 1e6);
            std::hint::black_box(c);
        }
        us
    };
    let cand_us = time_requests(use_index.then_some(&index), &mut rng);
    let cand_nb_us = time_requests(Some(&index), &mut rng);

    progress("recall of neighbour-list candidates");
    let recall_fresh = recall(&mut g, &matrix, &index, &world, config, &mut rng);

    progress("incremental updates");
    let mut upd_us = Vec::new();
    for _ in 0..steps.clamp(1000, 100_000) {
        let (v, u) = (rng.random_range(0..world.initial_videos()) as u32, rng.random_range(0..world.initial_users()) as u32);
        let t = Instant::now();
        matrix.add(v, u, 1.0);
        upd_us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    // The same lists after those interactions, without a refresh: staleness.
    progress("recall with stale neighbour lists");
    let recall_stale = recall(&mut g, &matrix, &index, &world, config, &mut rng);
    let stale_after = upd_us.len();
    drop(matrix);
    let mut report = BenchReport {
        config: label.to_string(),
        users: world.initial_users(),
        videos: world.initial_videos(),
        history_rows: world.history.len(),
        world_build_s: median(world_s),
        matrix_build_s: median(matrix_s),
        neighbours_build_s: median(neigh_s),
        neighbours_k: k,
        candidates_us: median(cand_us),
        candidates_neighbours_us: median(cand_nb_us),
        update_us: median(upd_us),
        recall_at_r: recall_fresh,
        recall_stale,
        stale_after_interactions: stale_after,
        dqn_update_us: f64::NAN,
        libtorch_op_us: f64::NAN,
        env_steps_per_s: f64::NAN,
        train_steps_per_s: f64::NAN,
        train_every: config.dqn.train_every,
        parallel_sessions: PARALLEL_SESSIONS,
        parallel_threads: threads,
        lockstep_env_steps_per_s_1_thread: f64::NAN,
        lockstep_env_steps_per_s: f64::NAN,
        lockstep_train_steps_per_s: f64::NAN,
        bandit_dim: 0,
        linucb_step_us: f64::NAN,
        thompson_step_us: f64::NAN,
        epsilon_greedy_step_us: f64::NAN,
        thompson_propensity_us: f64::NAN,
        peak_rss_mb: f64::NAN,
    };
    if kernels_only {
        report.peak_rss_mb = peak_rss_mb();
        return Ok(report);
    }

    progress("bandit decisions and updates");
    time_bandits(config, &world, &mut report)?;
    time_learning(config, &world, steps, threads, &mut report, progress)?;
    report.peak_rss_mb = peak_rss_mb();
    Ok(report)
}

/// Runs `f` `repeats` times (at least once): its last result and each run's seconds.
fn timed<T>(repeats: usize, mut f: impl FnMut() -> T) -> (T, Vec<f64>) {
    let mut seconds = Vec::with_capacity(repeats.max(1));
    let mut last = None;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        last = Some(f());
        seconds.push(t.elapsed().as_secs_f64());
    }
    (last.expect("at least one repeat"), seconds)
}

/// The learner's figures of [`bench`]: DQN update time, a libtorch operation's cost, and
/// whole-loop throughput (one session and lockstep, greedy and training).
fn time_learning(
    config: &Checked,
    world: &std::sync::Arc<World>,
    steps: usize,
    threads: usize,
    report: &mut BenchReport,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    progress("DQN updates");
    let mut agent = DqnAgent::new(config)?;
    let mut env = Env::new(config, world.clone());
    // Enough transitions to sample batches from.
    let mut erng = stream(config.seed, Stream::Responses);
    let replay = filled_replay(config, &mut env, config.dqn.batch_size.max(256), &mut erng);
    let mut rrng = stream(config.seed, Stream::Replay);
    let mut dqn_us = Vec::new();
    for _ in 0..(steps / 10).clamp(50, 2000) {
        let b = replay.sample(config.dqn.batch_size, &mut rrng);
        let t = Instant::now();
        agent.update(&b);
        dqn_us.push(t.elapsed().as_secs_f64() * 1e6);
    }

    progress("libtorch operation cost");
    report.libtorch_op_us = crate::agent::dqn::small_op_us(agent.device(), 4000);

    progress("environment steps (greedy)");
    let episodes_for = |steps: usize, per: f64| ((steps as f64 / per).ceil() as usize).max(1);
    let env_sps = throughput(config, world, &mut GreedyPolicy, episodes_for(steps, 7.0), 1, 1)?;
    progress("training steps (DQN)");
    let mut agent = DqnAgent::new(config)?;
    let train_sps = throughput(config, world, &mut agent, episodes_for(steps / 5, 7.0), 1, 1)?;
    progress("lockstep sessions (greedy, 1 thread and one per core; DQN)");
    let p = PARALLEL_SESSIONS;
    report.lockstep_env_steps_per_s_1_thread = throughput(config, world, &mut GreedyPolicy, episodes_for(steps, 7.0), p, 1)?;
    report.lockstep_env_steps_per_s = throughput(config, world, &mut GreedyPolicy, episodes_for(steps, 7.0), p, threads)?;
    let mut agent = DqnAgent::new(config)?;
    report.lockstep_train_steps_per_s = throughput(config, world, &mut agent, episodes_for(steps / 5, 7.0), p, threads)?;

    report.dqn_update_us = median(dqn_us);
    report.env_steps_per_s = env_sps;
    report.train_steps_per_s = train_sps;
    Ok(())
}

/// A replay buffer holding `n` transitions of `env` always showing slot 0, to time
/// updates on (here and in the criterion benches).
#[doc(hidden)]
pub fn filled_replay(config: &Checked, env: &mut Env, n: usize, rng: &mut SimRng) -> ReplayBuffer {
    let mut replay = ReplayBuffer::with_layout(n, &crate::env::Layout::of(config));
    let mut dry = env.reset(0).exhausted();
    for _ in 0..n {
        if dry {
            // Nobody is left with anything to see (a tiny world, long used).
            break;
        }
        let s = env.observation().state.clone();
        let o = env.step(0, rng);
        let next = env.observation();
        let end = StepEnd::of(&o, next.exhausted());
        replay.push(&transition(s, 0, o.reward, next.state.clone(), end), config.dqn.gamma);
        if end.ends_episode() {
            dry = env.reset_random(rng).exhausted();
        }
    }
    replay
}

/// Writes how each kernel's cost grows with the size of the world: `scaling.csv` (one
/// row per config) and `scaling.png` (log-log, every cost in seconds against the number
/// of logged interactions), into `dir`. Returns the paths written.
pub fn write_scaling(reports: &[BenchReport], dir: &Path) -> Result<Vec<PathBuf>> {
    use polars::prelude::Column;
    std::fs::create_dir_all(dir).map_err(crate::Error::io("create", dir))?;
    let col = |name: &str, f: fn(&BenchReport) -> f64| Column::new(name.into(), reports.iter().map(f).collect::<Vec<f64>>());
    let mut df = crate::output::records::frame(
        polars::prelude::DataFrame::new_infer_height(vec![
            Column::new("config".into(), reports.iter().map(|r| r.config.clone()).collect::<Vec<_>>()),
            Column::new("users".into(), reports.iter().map(|r| r.users as u64).collect::<Vec<_>>()),
            Column::new("videos".into(), reports.iter().map(|r| r.videos as u64).collect::<Vec<_>>()),
            Column::new("history_rows".into(), reports.iter().map(|r| r.history_rows as u64).collect::<Vec<_>>()),
            col("world_build_s", |r| r.world_build_s),
            col("matrix_build_s", |r| r.matrix_build_s),
            col("neighbours_build_s", |r| r.neighbours_build_s),
            col("candidates_us", |r| r.candidates_us),
            col("candidates_neighbours_us", |r| r.candidates_neighbours_us),
            col("update_us", |r| r.update_us),
            col("recall_at_r", |r| r.recall_at_r),
            col("peak_rss_mb", |r| r.peak_rss_mb),
        ]),
        dir,
    )?;
    let csv = dir.join("scaling.csv");
    crate::output::records::write_csv(&mut df, &csv)?;
    let series = |name: &str, scale: f64, f: fn(&BenchReport) -> f64| Series {
        name: name.to_string(),
        points: reports.iter().map(|r| (r.history_rows as f64, f(r) * scale)).collect(),
    };
    let png = dir.join("scaling.png");
    loglog_plot(
        &png,
        "fypsim: cost against the size of the world",
        "logged interactions (history rows)",
        "seconds",
        &[
            series("world generation", 1.0, |r| r.world_build_s),
            series("matrix build", 1.0, |r| r.matrix_build_s),
            series("exact item neighbours (all videos)", 1.0, |r| r.neighbours_build_s),
            series("candidates / request", 1e-6, |r| r.candidates_us),
            series("candidates / request, neighbour lists", 1e-6, |r| r.candidates_neighbours_us),
            series("update / interaction", 1e-6, |r| r.update_us),
        ],
    )?;
    Ok(vec![csv, png])
}

/// Mean |approximate top-r ∩ exact top-r| / r over sampled users (at most 2 s of exact
/// requests, at least 5 users).
fn recall(
    g: &mut CandidateGenerator,
    m: &InteractionMatrix,
    index: &NeighbourIndex,
    world: &World,
    config: &Checked,
    rng: &mut crate::rng::SimRng,
) -> f64 {
    let r = config.candidates.count;
    let start = Instant::now();
    let mut total = 0.0;
    let mut n = 0;
    while n < 200 && (n < 5 || start.elapsed().as_secs_f64() < 2.0) {
        let u = rng.random_range(0..world.initial_users()) as u32;
        let exact: Vec<u32> = g.top_raw(m, u, r).into_iter().map(|x| x.0).collect();
        let approx: Vec<u32> = g.top_raw_from(m, index, u, r).into_iter().map(|x| x.0).collect();
        let hit = approx.iter().filter(|j| exact.contains(j)).count();
        total += hit as f64 / r.max(1) as f64;
        n += 1;
    }
    total / n as f64
}

/// Sessions in flight for the lockstep figures.
const PARALLEL_SESSIONS: usize = 32;

/// Steps per second of `episodes` training episodes of `policy` (learning included when
/// it learns), from a fresh copy of the world, with `sessions` in lockstep on `threads`.
fn throughput(
    config: &Checked,
    world: &World,
    policy: &mut dyn Policy,
    episodes: usize,
    sessions: usize,
    threads: usize,
) -> Result<f64> {
    let mut c = config.inner().clone();
    c.train.episodes = episodes;
    c.train.sessions = sessions;
    c.train.threads = threads;
    c.train.checkpoint_every = 0;
    c.dqn.learning_starts = 0;
    if sessions > 1 {
        // Sessions in flight share one world: a config that trains in fresh worlds is
        // timed in an evolving one for the lockstep figures.
        c.train.train_world = crate::config::EvalWorld::Evolving;
    }
    let c = c.check()?;
    let mut env = Env::new(&c, world.clone());
    let mut progress = TrainProgress::new(&c, &env);
    train(&c, &mut env, policy, false, &mut progress, &mut |_, _, _| Ok(Flow::Continue))?;
    Ok(progress.steps_per_s())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_match_pairwise_cosine() {
        let m = InteractionMatrix::from_triplets(
            6,
            4,
            [(0, 0, 1.0), (1, 0, 2.0), (1, 1, 1.0), (2, 1, -2.0), (3, 2, 1.0), (4, 2, 1.0), (4, 3, 1.0), (0, 3, 2.0)],
        );
        let n = crate::platform::candidates::item_neighbours(&m, 2, 2);
        for i in 0..6u32 {
            let mut all: Vec<(f64, u32)> =
                (0..6u32).filter(|&j| j != i).map(|j| (m.cosine(i, j), j)).filter(|x| x.0 != 0.0).collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            all.truncate(2);
            let got: Vec<u32> = n[i as usize].iter().map(|x| x.0).collect();
            let want: Vec<u32> = all.iter().map(|x| x.1).collect();
            assert_eq!(got, want, "item {i}");
            for (g, w) in n[i as usize].iter().zip(&all) {
                assert!((g.1 - w.0).abs() < 1e-9);
            }
        }
    }
}

/// One point of a time-to-quality run: the trained policy's evaluation after `episodes`
/// training episodes.
#[derive(Debug, Clone, Serialize)]
pub struct QualityPoint {
    pub episodes: usize,
    pub env_steps: u64,
    pub updates: u64,
    /// Training seconds so far (evaluations excluded).
    pub training_s: f64,
    pub mean_return: f64,
    pub oracle_fraction: f64,
}

/// When a quality was first reached.
#[derive(Debug, Clone, Serialize)]
pub struct Reached {
    pub oracle_fraction: f64,
    /// The first point at or above it (None: not within the run's budget).
    pub at: Option<QualityPoint>,
}

/// `fypsim bench --learn`: how long training takes to reach a quality.
#[derive(Debug, Clone, Serialize)]
pub struct LearnReport {
    pub config: String,
    pub seed: u64,
    /// Evaluation episodes per point (fresh worlds, common random numbers).
    pub eval_episodes: usize,
    pub random_return: f64,
    pub oracle_return: f64,
    pub points: Vec<QualityPoint>,
    pub reached: Vec<Reached>,
}

/// Trains `config`'s policy and evaluates it every `every` episodes on the config's
/// evaluation episodes (in fresh worlds, whatever `train.eval_world` says, so that every
/// point is measured alike), until the oracle fraction reaches the largest of `targets`
/// or the training budget ends. Training time excludes the evaluations.
pub fn time_to_quality(
    config: &Checked,
    label: &str,
    every: usize,
    targets: &[f64],
    progress: &mut dyn FnMut(&QualityPoint),
) -> Result<LearnReport> {
    use crate::config::{EvalWorld, PolicyKind};
    let mut c = config.inner().clone();
    c.train.eval_world = EvalWorld::Fresh;
    let c = c.check()?;
    let world = std::sync::Arc::new(World::generate(&c));
    let n = c.train.eval_episodes;
    let base = |kind| -> Result<f64> {
        let mut p = crate::agent::make_policy(kind, &c)?;
        Ok(crate::drive::train::evaluate(&c, &world, p.as_mut(), n)?.mean_return)
    };
    let (random, oracle) = (base(PolicyKind::Random)?, base(PolicyKind::Oracle)?);
    let fraction = |r: f64| crate::experiment::run::oracle_fraction(r, Some(random), Some(oracle)).unwrap_or(f64::NAN);
    let goal = targets.iter().copied().fold(f64::NEG_INFINITY, f64::max);

    let mut policy = crate::agent::make_policy(c.policy, &c)?;
    let mut env = Env::new(&c, world.clone());
    let mut state = TrainProgress::new(&c, &env);
    let mut points = Vec::new();
    let every = every.max(1);
    train(&c, &mut env, policy.as_mut(), false, &mut state, &mut |p, _, pol| {
        let done = p.episodes_done as usize;
        if !done.is_multiple_of(every) && done < c.train.episodes {
            return Ok(Flow::Continue);
        }
        let e = crate::drive::train::evaluate(&c, &world, pol, n)?;
        let point = QualityPoint {
            episodes: done,
            env_steps: p.total_steps,
            updates: p.updates,
            training_s: p.elapsed_s,
            mean_return: e.mean_return,
            oracle_fraction: fraction(e.mean_return),
        };
        progress(&point);
        let stop = point.oracle_fraction >= goal;
        points.push(point);
        Ok(if stop { Flow::Stop } else { Flow::Continue })
    })?;
    let reached = targets
        .iter()
        .map(|&t| Reached { oracle_fraction: t, at: points.iter().find(|p| p.oracle_fraction >= t).cloned() })
        .collect();
    Ok(LearnReport {
        config: label.to_string(),
        seed: c.seed,
        eval_episodes: n,
        random_return: random,
        oracle_return: oracle,
        points,
        reached,
    })
}

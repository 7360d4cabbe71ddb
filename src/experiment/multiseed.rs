//! One config trained under several seeds (`train.seeds`), aggregated: the evidence that a
//! policy beats the baselines is a mean across independent seeds with its interval.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{Checked, PolicyKind};
use crate::drive::calendar::PopulationSummary;
use crate::experiment::report;
use crate::experiment::sweep::{execute, seed_runs, RunStatus};
use crate::output::records::frame;
use crate::stats::Interval;
use crate::{Error, Result};

/// summary.json of a multi-seed run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MultiSeedSummary {
    /// Marks this summary as an aggregate (reports skip it and read the per-seed runs).
    pub multi_seed: bool,
    pub name: String,
    pub policy: String,
    pub seeds: Vec<u64>,
    pub episodes: usize,
    pub eval_episodes: usize,
    /// Mean evaluation return (exploration off) of the trained policy and each baseline,
    /// across seeds.
    pub eval_mean_return: BTreeMap<String, Interval>,
    /// Seconds watched per evaluation session, per policy, across seeds (with
    /// `dynamics.behaviour` on: the return as watch time).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub eval_mean_watch_s: BTreeMap<String, Interval>,
    /// (trained - random) / (oracle - random), per seed, then across seeds (with both
    /// baselines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oracle_fraction: Option<Interval>,
    /// Per seed: trained - greedy, across seeds (with that baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advantage_over_greedy: Option<Interval>,
    /// Per seed: trained - myopic oracle (paired), across seeds (with that baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advantage_over_myopic_oracle: Option<Interval>,
    /// Per seed: planner - myopic oracle (paired), across seeds (with both baselines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub myopia_gap: Option<Interval>,
    /// Per seed: (trained - myopic oracle) / the myopic oracle's return, across seeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advantage_over_myopic_oracle_relative: Option<Interval>,
    /// Per seed: the share of the myopia gap the trained policy closes, (trained - myopic
    /// oracle) / (planner - myopic oracle), across seeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub myopia_gap_closed: Option<Interval>,
    /// Per seed: (trained - myopic oracle) - (planner - myopic oracle) / 2, across seeds:
    /// above zero when the trained policy closes more than half of the myopia gap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advantage_beyond_half_myopia_gap: Option<Interval>,
    /// Per seed: trained - each learning baseline (the bandits in `train.baselines`),
    /// paired over the seed's evaluation episodes; its mean across seeds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub advantage_over_learners: BTreeMap<String, Interval>,
    pub per_seed: Vec<SeedResult>,
    /// With `[calendar]`: per policy, its population figures across seeds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub population: BTreeMap<String, PopulationAcross>,
    /// With `[calendar]`: per other policy, "<policy> - <the run's policy>" of the
    /// population figures, paired per seed, across seeds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub population_differences: BTreeMap<String, PopulationAcross>,
    /// Mean training steps per second of the seeds: only with `output.wall_time = true`
    /// (each seed's `timing.json` has it), so that the summary is the same for the same
    /// seeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_per_second: Option<f64>,
}

/// A population run's headline figures across seeds (each a mean with its 95% interval);
/// the retentions only where every seed's run was long enough to observe them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PopulationAcross {
    pub sessions_per_user_day: Interval,
    pub watch_s_per_user: Interval,
    pub reward_per_session: Interval,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day1_retention: Option<Interval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day7_retention: Option<Interval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day28_retention: Option<Interval>,
    pub churned_at_end: Interval,
    /// The creator side (docs/model.md: Days and weeks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_video_share: Option<Interval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure_gini: Option<Interval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator_earnings: Option<Interval>,
}

/// Picks one figure of a population summary.
type Figure = fn(&PopulationSummary) -> Option<f64>;

impl PopulationAcross {
    /// Across seeds, of `f` of each seed's figure picked by a getter (none where a seed
    /// lacks it).
    fn of(seeds: usize, f: &dyn Fn(Figure) -> Vec<f64>) -> PopulationAcross {
        let across = |g: Figure| {
            let xs = f(g);
            (xs.len() == seeds && seeds > 0).then(|| Interval::of(&xs))
        };
        let always = |g| Interval::of(&f(g));
        PopulationAcross {
            sessions_per_user_day: always(|p| Some(p.sessions_per_user_day)),
            watch_s_per_user: always(|p| Some(p.watch_s_per_user)),
            reward_per_session: always(|p| Some(p.reward_per_session)),
            day1_retention: across(|p| p.day1_retention),
            day7_retention: across(|p| p.day7_retention),
            day28_retention: across(|p| p.day28_retention),
            churned_at_end: always(|p| Some(p.churned_at_end)),
            new_video_share: across(|p| (p.uploads > 0).then_some(p.new_video_share)),
            exposure_gini: across(|p| Some(p.exposure_gini)),
            creator_earnings: across(|p| Some(p.creator_earnings)),
        }
    }
}

/// Per policy its population figures across seeds, and per other policy its differences
/// from the run's own policy (the first population of each seed), paired per seed.
fn population_across(found: &[report::RunInfo]) -> (BTreeMap<String, PopulationAcross>, BTreeMap<String, PopulationAcross>) {
    let mut own: BTreeMap<String, Vec<&PopulationSummary>> = BTreeMap::new();
    let mut pairs: BTreeMap<String, Vec<(&PopulationSummary, &PopulationSummary)>> = BTreeMap::new();
    for r in found {
        let Some(first) = r.summary.population.first() else { continue };
        for p in &r.summary.population {
            own.entry(p.policy.clone()).or_default().push(p);
            if !std::ptr::eq(p, first) {
                pairs.entry(format!("{} - {}", p.policy, first.policy)).or_default().push((p, first));
            }
        }
    }
    let figures = own
        .iter()
        .map(|(k, v)| (k.clone(), PopulationAcross::of(v.len(), &|g| v.iter().filter_map(|p| g(p)).collect())))
        .collect();
    let differences = pairs
        .iter()
        .map(|(k, v)| {
            (k.clone(), PopulationAcross::of(v.len(), &|g| v.iter().filter_map(|(p, t)| Some(g(p)? - g(t)?)).collect()))
        })
        .collect();
    (figures, differences)
}

/// retention.png of a multi-seed calendar run: per policy the share of all users active
/// each day, its mean across seeds with the 95% band (from each seed's days.csv).
fn draw_retention(dir: &Path, found: &[report::RunInfo]) -> Result<()> {
    let mut by: BTreeMap<String, BTreeMap<i64, Vec<f64>>> = BTreeMap::new();
    for r in found {
        let path = r.dir.join("days.csv");
        if !path.is_file() {
            continue;
        }
        let df = crate::output::records::read_csv(&path)?;
        let policy = frame(df.column("policy").and_then(|c| c.str().cloned()), &path)?;
        let day = frame(df.column("day").and_then(|c| c.cast(&polars::prelude::DataType::Int64)), &path)?;
        let share = frame(df.column("share_active").and_then(|c| c.cast(&polars::prelude::DataType::Float64)), &path)?;
        let (day, share) = (frame(day.i64().cloned(), &path)?, frame(share.f64().cloned(), &path)?);
        for i in 0..df.height() {
            if let (Some(p), Some(d), Some(x)) = (policy.get(i), day.get(i), share.get(i)) {
                by.entry(p.to_string()).or_default().entry(d).or_default().push(x);
            }
        }
    }
    if by.is_empty() {
        return Ok(());
    }
    let series: Vec<(String, crate::output::plot::Band)> =
        by.into_iter().map(|(p, days)| (p, report::band_of(days.into_iter().map(|(d, xs)| (d as f64, xs))))).collect();
    crate::output::plot::bands_plot(
        &dir.join("retention.png"),
        &format!("share of users active each day ({} seeds, mean and 95% band)", found.len()),
        "day",
        "share of all users active",
        &series,
    )
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedResult {
    pub seed: u64,
    pub eval_mean_return: BTreeMap<String, f64>,
    /// With the random and oracle baselines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oracle_fraction: Option<f64>,
}

/// Writes the resolved config.toml, trains every seed of `config.train.seeds` into
/// `dir/seed<s>/` (`jobs` at a time; seeds already complete are kept), then writes the
/// aggregate summary.json and the report.
pub fn run_seeds(
    config: &Checked,
    dir: &Path,
    jobs: usize,
    on_done: &(dyn Fn(u64, &RunStatus) + Sync),
    on_episodes: &(dyn Fn(u64) + Sync),
) -> Result<MultiSeedSummary> {
    // Seeds already done are kept only when they are of this very config: a rerun with
    // changed settings must not average old seeds with new ones.
    if dir.join("config.toml").is_file() {
        let theirs = crate::experiment::run::config_of_run(dir)?;
        if crate::experiment::checkpoint::fingerprint(&theirs) != crate::experiment::checkpoint::fingerprint(config) {
            return Err(Error::Other(format!(
                "{} holds a multi-seed run of another config; choose another --out folder (or delete it to start afresh)",
                dir.display()
            )));
        }
    }
    crate::experiment::run::write_resolved_config(config, dir, &crate::experiment::run::provenance())?;
    let runs = seed_runs(config, dir);
    let outcome = execute(&runs, jobs, &|r, s| on_done(r.seed, s), on_episodes);
    if let Some((run, err)) = outcome.failed.first() {
        return Err(Error::Other(format!("{} of {} seeds failed; first: {run}: {err}", outcome.failed.len(), runs.len())));
    }
    if outcome.interrupted + outcome.not_started > 0 {
        return Err(Error::Interrupted);
    }
    if outcome.busy > 0 {
        return Err(Error::Busy {
            dir: dir.to_path_buf(),
            holder: format!("{} of its seeds are being run elsewhere", outcome.busy),
        });
    }
    let found = report::discover(dir)?;
    let trained = config.policy.name().to_string();
    let mut per_seed = Vec::new();
    for r in &found {
        let mut m = BTreeMap::new();
        m.insert(trained.clone(), r.summary.eval_mean_return);
        for (k, v) in &r.summary.baselines {
            m.insert(k.clone(), *v);
        }
        per_seed.push(SeedResult { seed: r.summary.seed, eval_mean_return: m, oracle_fraction: r.summary.oracle_fraction });
    }
    let mut names: Vec<String> = per_seed.iter().flat_map(|s| s.eval_mean_return.keys().cloned()).collect();
    names.sort();
    names.dedup();
    let eval_mean_return = names
        .iter()
        .map(|n| {
            let xs: Vec<f64> = per_seed.iter().filter_map(|s| s.eval_mean_return.get(n).copied()).collect();
            (n.clone(), Interval::of(&xs))
        })
        .collect();
    let mut watch = BTreeMap::<String, Vec<f64>>::new();
    for r in &found {
        // The trained policy's evaluation comes first, then the baselines'.
        for (i, e) in r.summary.evaluation.iter().enumerate() {
            if let Some(w) = e.mean_watch_s {
                let name = if i == 0 { trained.clone() } else { e.policy.name().to_string() };
                watch.entry(name).or_default().push(w);
            }
        }
    }
    let eval_mean_watch_s = watch.into_iter().map(|(k, xs)| (k, Interval::of(&xs))).collect();
    let fractions: Vec<f64> = per_seed.iter().filter_map(|s| s.oracle_fraction).collect();
    let greedy = PolicyKind::Greedy.name();
    let advantage: Vec<f64> =
        per_seed.iter().filter_map(|s| Some(s.eval_mean_return.get(&trained)? - s.eval_mean_return.get(greedy)?)).collect();
    let across = |f: &dyn Fn(&crate::experiment::run::Summary) -> Option<f64>| {
        let xs: Vec<f64> = found.iter().filter_map(|r| f(&r.summary)).collect();
        (!xs.is_empty()).then(|| Interval::of(&xs))
    };
    let advantage_over_myopic_oracle = across(&|s| s.advantage_over_myopic_oracle.as_ref().map(|i| i.mean));
    let myopia_gap = across(&|s| s.myopia_gap.as_ref().map(|i| i.mean));
    let myopic = PolicyKind::MyopicOracle.name();
    let advantage_over_myopic_oracle_relative = across(&|s| {
        let (base, advantage) = (*s.baselines.get(myopic)?, s.advantage_over_myopic_oracle.as_ref()?.mean);
        (base != 0.0).then(|| advantage / base.abs())
    });
    let gap_pair =
        |s: &crate::experiment::run::Summary| Some((s.advantage_over_myopic_oracle.as_ref()?.mean, s.myopia_gap.as_ref()?.mean));
    let myopia_gap_closed = across(&|s| gap_pair(s).and_then(|(a, g)| (g != 0.0).then(|| a / g)));
    let advantage_beyond_half_myopia_gap = across(&|s| gap_pair(s).map(|(a, g)| a - g / 2.0));
    let (population, population_differences) = population_across(&found);
    let learners: std::collections::BTreeSet<&String> =
        found.iter().flat_map(|r| r.summary.advantage_over_learners.keys()).collect();
    let advantage_over_learners = learners
        .into_iter()
        .filter_map(|name| Some((name.clone(), across(&|s| s.advantage_over_learners.get(name).map(|i| i.mean))?)))
        .collect();
    let summary = MultiSeedSummary {
        multi_seed: true,
        name: config.name.clone(),
        policy: trained,
        seeds: config.train.seeds.clone(),
        episodes: config.train.episodes,
        eval_episodes: config.train.eval_episodes,
        eval_mean_return,
        eval_mean_watch_s,
        oracle_fraction: (!fractions.is_empty()).then(|| Interval::of(&fractions)),
        advantage_over_greedy: (!advantage.is_empty()).then(|| Interval::of(&advantage)),
        advantage_over_myopic_oracle,
        myopia_gap,
        advantage_over_myopic_oracle_relative,
        myopia_gap_closed,
        advantage_beyond_half_myopia_gap,
        advantage_over_learners,
        per_seed,
        population,
        population_differences,
        steps_per_second: config.output.wall_time.then(|| {
            found.iter().map(|r| r.summary.steps_per_second.unwrap_or(f64::NAN)).sum::<f64>() / found.len().max(1) as f64
        }),
    };
    let path = dir.join("summary.json");
    let json = serde_json::to_string_pretty(&summary).expect("a summary serialises");
    std::fs::write(&path, json).map_err(Error::io("write", &path))?;
    report::report(dir)?;
    draw_retention(dir, &found)?;
    Ok(summary)
}

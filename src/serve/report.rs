//! The A/B report of a decision log (docs/serving.md: The A/B report): per arm the mean
//! reward and watch time per session with 95% intervals, the difference between the arms
//! with its interval and p-value, the power the test had, and a sample-ratio-mismatch
//! check. Users, not requests, are the unit of randomisation: a user's sessions are
//! correlated, so each arm's mean is a ratio of sums over users with the delta-method
//! error ([`crate::serve::abtest::arm_estimate`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::log::{Contents, Experiment};
use super::Record;
use crate::output::plot::{plot_err, register_font, PALETTE};
use crate::serve::abtest::{arm_estimate, difference, power, srm_p_value, srm_p_value_k, UserTotals};
use crate::{Error, Result};

/// The interference note every report carries.
pub const INTERFERENCE: &str = "The arms share one live interaction matrix: what users of one arm \
    watch changes the similarities, and so the candidates, of the other arm's users. The test \
    compares the arms under that interference, not each arm alone; a difference can be smaller \
    (or larger) once one arm serves everyone.";

/// A mean per session with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mean {
    pub mean: f64,
    pub se: f64,
    pub ci95: [f64; 2],
}

impl Mean {
    fn of(e: &crate::serve::abtest::ArmEstimate) -> Mean {
        Mean { mean: e.mean, se: e.se, ci95: [e.mean - 1.96 * e.se, e.mean + 1.96 * e.se] }
    }
}

/// One arm's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmFigures {
    pub name: String,
    pub policy: String,
    pub version: String,
    pub share: f64,
    pub users: usize,
    pub sessions: usize,
    pub decisions: usize,
    pub outcomes: usize,
    pub reward_per_session: Mean,
    pub watch_time_s_per_session: Mean,
    pub reward_per_decision: f64,
}

/// The second arm minus the first.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    pub diff: f64,
    pub se: f64,
    pub ci95: [f64; 2],
    pub p_value: f64,
    /// The smallest true difference the test detects with 80% power (two-sided 5%).
    pub mde80: f64,
    /// The power the test had for a difference of 5% of the first arm's mean.
    pub power_at_5_percent: f64,
}

/// The two-sided critical value of the normal at 5% / m, for m = 1 to 7 comparisons
/// (Bonferroni's level for an A/B/n test of up to 8 arms).
const Z_BONFERRONI: [f64; 7] = [1.959_964, 2.241_403, 2.393_980, 2.497_705, 2.575_829, 2.638_257, 2.690_109];

impl Diff {
    fn of(a: &crate::serve::abtest::ArmEstimate, b: &crate::serve::abtest::ArmEstimate) -> Diff {
        let d = difference(a, b);
        Diff {
            diff: d.diff,
            se: d.se,
            ci95: d.ci95,
            p_value: d.p_value,
            mde80: (1.96 + 0.841_621) * d.se,
            power_at_5_percent: power(0.05 * a.mean.abs(), d.se),
        }
    }

    /// [`Diff::of`] as one of `m` comparisons tested at 5% / m: the detectable difference
    /// and the power at that level.
    fn of_among(a: &crate::serve::abtest::ArmEstimate, b: &crate::serve::abtest::ArmEstimate, m: usize) -> Diff {
        let z = Z_BONFERRONI[m.clamp(1, Z_BONFERRONI.len()) - 1];
        let d = Diff::of(a, b);
        let k = 0.05 * a.mean.abs() / d.se;
        Diff {
            mde80: (z + 0.841_621) * d.se,
            power_at_5_percent: crate::serve::abtest::normal_sf(z - k) + crate::serve::abtest::normal_sf(z + k),
            ..d
        }
    }

    /// Whether the 5% two-sided test rejects "no difference".
    pub fn significant(&self) -> bool {
        self.p_value < 0.05
    }
}

/// The sample-ratio-mismatch check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Srm {
    pub users: Vec<usize>,
    pub expected_share: Vec<f64>,
    pub p_value: f64,
    /// p below 0.001: the assignment or the logging is broken; no difference can be trusted.
    pub alarm: bool,
}

/// One arm against the control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub arm: String,
    pub control: String,
    /// The arm minus the control.
    pub reward: Diff,
    pub watch_time: Diff,
    /// Whether p is below 0.05 / (the number of comparisons): Bonferroni's bound keeps the
    /// chance of any false alarm among them at 5% or less.
    pub significant_bonferroni: bool,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbReport {
    pub salt: String,
    pub arms: Vec<ArmFigures>,
    /// With two arms: the other arm minus the control (the first arm unless named).
    pub reward_diff: Option<Diff>,
    pub watch_time_diff: Option<Diff>,
    /// With three or more arms: each arm against the control.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comparisons: Vec<Comparison>,
    /// The control, when named (`--control`); else the first arm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
    pub srm: Option<Srm>,
    pub decisions: usize,
    pub outcomes: usize,
    /// Decisions whose outcome never came (not counted: a session counts from its first
    /// outcome).
    pub awaiting_feedback: usize,
    /// Decisions of an arm the experiment does not have (not counted).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unknown_arm_decisions: usize,
    /// Outcomes without a decision, or of an arm the experiment lacks (not counted).
    pub orphan_outcomes: usize,
    /// Users logged in more than one arm (a broken assignment: counted in their first).
    pub users_in_two_arms: usize,
    /// Lines of the log that are not records (skipped).
    pub damaged_lines: usize,
    pub interference: String,
    /// Off-policy estimates of policies not in the experiment (`--ope-target`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ope: Option<super::ope::ServedOpe>,
    /// Per arm, the reward per session by the user's session index (`--by-session`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_session_index: Option<Vec<IndexFigures>>,
    /// Learning arms that stopped learning, as the log says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub learning_stopped: Vec<crate::serve::log::LearningStopped>,
}

/// One arm's sessions of one index group (the user's 1st, 2nd to 5th, 6th and later).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexFigures {
    pub arm: String,
    pub sessions_index: String,
    pub users: usize,
    pub sessions: usize,
    /// Over users (delta method), as the arms' means are.
    pub reward_per_session: Mean,
}

/// Per arm and index group of `crate::experiment::fade::GROUPS`, the reward per session.
pub fn by_session_index(experiment: &Experiment, records: &[Record]) -> Vec<IndexFigures> {
    let users = collect(experiment, records).users;
    let mut out = Vec::new();
    for (i, meta) in experiment.arms.iter().enumerate() {
        for &(lo, hi) in &crate::experiment::fade::GROUPS {
            let inside = |k: u32| k + 1 >= lo && hi.is_none_or(|h| k < h);
            let totals: Vec<UserTotals> = users
                .values()
                .filter(|t| t.arm == i)
                .filter_map(|t| {
                    let (n, v) =
                        t.sessions.iter().filter(|(k, _)| inside(**k)).fold((0.0, 0.0), |(n, v), (_, r)| (n + 1.0, v + r));
                    (n > 0.0).then_some(UserTotals { sessions: n, value: v })
                })
                .collect();
            if totals.is_empty() {
                continue;
            }
            out.push(IndexFigures {
                arm: meta.name.clone(),
                sessions_index: crate::experiment::fade::group_name((lo, hi)),
                users: totals.len(),
                sessions: totals.iter().map(|t| t.sessions as usize).sum(),
                reward_per_session: Mean::of(&arm_estimate(&totals)),
            });
        }
    }
    out
}

/// The index of the arm named `control` among `arms` (the first without one); `whose`
/// names the experiment in the refusal.
pub fn control_index(arms: &[crate::serve::log::ArmMeta], control: Option<&str>, whose: &str) -> Result<usize> {
    match control {
        None => Ok(0),
        Some(name) => arms.iter().position(|a| a.name == name).ok_or_else(|| {
            let names: Vec<&str> = arms.iter().map(|a| a.name.as_str()).collect();
            Error::Other(format!("--control {name}: not an arm of {whose} (its arms: {})", names.join(", ")))
        }),
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Per user, per arm: sessions and their reward and watch-time sums.
struct Totals {
    arm: usize,
    /// Per session (the user's session number), its reward.
    sessions: BTreeMap<u32, f64>,
    reward: f64,
    watch: f64,
}

/// The log's records per user, joined by request id.
struct Collected {
    users: BTreeMap<u32, Totals>,
    /// Per arm.
    decisions: Vec<usize>,
    outcomes: Vec<usize>,
    orphans: usize,
    two_arms: usize,
    awaiting: usize,
    unknown_arm: usize,
    /// Learning arms' stops, in log order.
    stopped: Vec<crate::serve::log::LearningStopped>,
}

fn collect(experiment: &Experiment, records: &[Record]) -> Collected {
    let arm_index: HashMap<&str, usize> = experiment.arms.iter().enumerate().map(|(i, a)| (a.name.as_str(), i)).collect();
    let mut users: BTreeMap<u32, Totals> = BTreeMap::new();
    let mut decided: HashMap<&str, (u32, usize, u32)> = HashMap::new();
    let (mut decisions, mut outcomes, mut orphans, mut two_arms, mut unknown_arm) =
        (vec![0usize; arm_index.len()], vec![0usize; arm_index.len()], 0, 0, 0);
    let mut in_two = std::collections::BTreeSet::new();
    let mut stopped = Vec::new();
    for r in records {
        match r {
            Record::Decision(d) => {
                let Some(&arm) = arm_index.get(d.arm.as_str()) else {
                    unknown_arm += 1;
                    continue;
                };
                decisions[arm] += 1;
                let t =
                    users.entry(d.user).or_insert_with(|| Totals { arm, sessions: Default::default(), reward: 0.0, watch: 0.0 });
                if t.arm != arm && in_two.insert(d.user) {
                    two_arms += 1;
                }
                decided.insert(&d.request_id, (d.user, arm, d.session));
            }
            Record::Outcome(o) => match decided.remove(o.request_id.as_str()) {
                Some((user, arm, session)) => {
                    outcomes[arm] += 1;
                    let t = users.get_mut(&user).expect("decided users have totals");
                    // A session counts from its first outcome: one still awaiting
                    // feedback is not a session with reward 0.
                    *t.sessions.entry(session).or_default() += o.reward;
                    t.reward += o.reward;
                    t.watch += o.watch_time_s;
                }
                None => orphans += 1,
            },
            Record::Start(_) | Record::Swap(_) => {}
            Record::LearningStopped(s) => stopped.push(s.clone()),
        }
    }
    Collected { users, decisions, outcomes, orphans, two_arms, awaiting: decided.len(), unknown_arm, stopped }
}

/// Reads the log's records into the report (pure: the same records give the same report),
/// with the first arm as the control.
pub fn analyse(experiment: &Experiment, records: &[Record], damaged_lines: usize) -> AbReport {
    analyse_with(experiment, records, damaged_lines, 0)
}

/// [`analyse`] with arm `control` as the control.
pub fn analyse_with(experiment: &Experiment, records: &[Record], damaged_lines: usize, control: usize) -> AbReport {
    let Collected { users, decisions, outcomes, orphans, two_arms, awaiting, unknown_arm, stopped: learning_stopped } =
        collect(experiment, records);
    let mut arms = Vec::new();
    let mut estimates = Vec::new();
    for (i, meta) in experiment.arms.iter().enumerate() {
        let mine: Vec<&Totals> = users.values().filter(|t| t.arm == i).collect();
        // The estimates are over users with a session (an outcome); the assignment
        // (users, for the sample-ratio check) counts every user the arm served.
        let reward: Vec<UserTotals> = mine
            .iter()
            .filter(|t| !t.sessions.is_empty())
            .map(|t| UserTotals { sessions: t.sessions.len() as f64, value: t.reward })
            .collect();
        let watch: Vec<UserTotals> = mine
            .iter()
            .filter(|t| !t.sessions.is_empty())
            .map(|t| UserTotals { sessions: t.sessions.len() as f64, value: t.watch })
            .collect();
        let (er, ew) = (arm_estimate(&reward), arm_estimate(&watch));
        let total_reward: f64 = mine.iter().map(|t| t.reward).sum();
        arms.push(ArmFigures {
            name: meta.name.clone(),
            policy: meta.policy.clone(),
            version: meta.version.clone(),
            share: meta.share,
            users: mine.len(),
            sessions: mine.iter().map(|t| t.sessions.len()).sum(),
            decisions: decisions[i],
            outcomes: outcomes[i],
            reward_per_session: Mean::of(&er),
            watch_time_s_per_session: Mean::of(&ew),
            reward_per_decision: if outcomes[i] > 0 { total_reward / outcomes[i] as f64 } else { f64::NAN },
        });
        estimates.push((er, ew));
    }
    let k = estimates.len();
    let srm = (k >= 2).then(|| {
        let counts: Vec<usize> = arms.iter().map(|a| a.users).collect();
        let shares: Vec<f64> = experiment.arms.iter().map(|a| a.share).collect();
        let p = if k == 2 { srm_p_value(counts[0], counts[1], shares[1]) } else { srm_p_value_k(&counts, &shares) };
        Srm { users: counts, expected_share: shares, p_value: p, alarm: p < 0.001 }
    });
    let control = control.min(k.saturating_sub(1));
    let other = usize::from(control == 0);
    let two = k == 2;
    let comparisons = if k >= 3 {
        (0..k)
            .filter(|&i| i != control)
            .map(|i| {
                let reward = Diff::of_among(&estimates[control].0, &estimates[i].0, k - 1);
                Comparison {
                    arm: arms[i].name.clone(),
                    control: arms[control].name.clone(),
                    significant_bonferroni: reward.p_value < 0.05 / (k - 1) as f64,
                    reward,
                    watch_time: Diff::of_among(&estimates[control].1, &estimates[i].1, k - 1),
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    AbReport {
        salt: experiment.salt.clone(),
        reward_diff: two.then(|| Diff::of(&estimates[control].0, &estimates[other].0)),
        watch_time_diff: two.then(|| Diff::of(&estimates[control].1, &estimates[other].1)),
        comparisons,
        control: None,
        srm,
        decisions: decisions.iter().sum(),
        outcomes: outcomes.iter().sum(),
        awaiting_feedback: awaiting,
        unknown_arm_decisions: unknown_arm,
        orphan_outcomes: orphans,
        users_in_two_arms: two_arms,
        damaged_lines,
        arms,
        interference: INTERFERENCE.into(),
        ope: None,
        by_session_index: None,
        learning_stopped,
    }
}

fn f(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "n/a".into()
    }
}

/// The report as text (the same as `ab_report.md`).
pub fn markdown(r: &AbReport) -> String {
    let mut s = String::from("# A/B report\n\n");
    s += &format!(
        "{} decisions, {} outcomes ({} awaiting feedback), salt `{}`. Unit of randomisation: the user; \
         intervals are 95%, with each user's sessions kept together (delta method).\n\n",
        r.decisions, r.outcomes, r.awaiting_feedback, r.salt
    );
    s += "| arm | policy | share | users | sessions | reward / session (95% CI) | watch s / session (95% CI) |\n|---|---|---|---|---|---|---|\n";
    for a in &r.arms {
        let (m, w) = (&a.reward_per_session, &a.watch_time_s_per_session);
        s += &format!(
            "| {} | {} | {:.2} | {} | {} | {} [{}, {}] | {} [{}, {}] |\n",
            a.name,
            a.version,
            a.share,
            a.users,
            a.sessions,
            f(m.mean),
            f(m.ci95[0]),
            f(m.ci95[1]),
            f(w.mean),
            f(w.ci95[0]),
            f(w.ci95[1])
        );
    }
    if let (Some(d), Some(w)) = (&r.reward_diff, &r.watch_time_diff) {
        let (a, b) = match &r.control {
            Some(c) if *c == r.arms[1].name => (&r.arms[1].name, &r.arms[0].name),
            _ => (&r.arms[0].name, &r.arms[1].name),
        };
        s += &format!(
            "\n{b} - {a}, reward per session: {} [{}, {}], p = {}{}\n",
            f(d.diff),
            f(d.ci95[0]),
            f(d.ci95[1]),
            f(d.p_value),
            if d.significant() { " (significant at 5%)" } else { " (not significant at 5%)" }
        );
        s += &format!(
            "{b} - {a}, watch time per session: {} s [{}, {}], p = {}\n",
            f(w.diff),
            f(w.ci95[0]),
            f(w.ci95[1]),
            f(w.p_value)
        );
        s += &if d.power_at_5_percent.is_finite() {
            format!(
                "power: the smallest difference in reward per session detected 80% of the time is {}; \
                 a difference of 5% of {a}'s mean would be detected {:.0}% of the time\n",
                f(d.mde80),
                100.0 * d.power_at_5_percent
            )
        } else {
            "power: n/a (each arm needs at least 2 users with a session)\n".to_string()
        };
    }
    if !r.comparisons.is_empty() {
        let n = r.comparisons.len();
        s += &format!(
            "\nEach arm against the control {} ({n} comparisons: a difference is significant for the experiment as a whole \
             at p < 0.05 / {n} = {:.4}, Bonferroni); mde80: the smallest difference detected 80% of the time at that level.\n\n\
             | arm - control | reward / session (95% CI) | p | significant | mde80 | watch s / session (95% CI) | p |\n\
             |---|---|---|---|---|---|---|\n",
            r.comparisons[0].control,
            0.05 / n as f64
        );
        for c in &r.comparisons {
            let (d, w) = (&c.reward, &c.watch_time);
            s += &format!(
                "| {} - {} | {} [{}, {}] | {} | {} | {} | {} [{}, {}] | {} |\n",
                c.arm,
                c.control,
                f(d.diff),
                f(d.ci95[0]),
                f(d.ci95[1]),
                f(d.p_value),
                if c.significant_bonferroni { "yes" } else { "no" },
                f(d.mde80),
                f(w.diff),
                f(w.ci95[0]),
                f(w.ci95[1]),
                f(w.p_value)
            );
        }
    }
    if let Some(m) = &r.srm {
        s += &format!(
            "sample ratio: {} users against expected shares {} (chi-square p = {}){}\n",
            m.users.iter().map(|u| u.to_string()).collect::<Vec<_>>().join(" / "),
            m.expected_share.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" / "),
            f(m.p_value),
            if m.alarm {
                ": MISMATCH, the assignment or the logging is broken; do not trust the difference"
            } else {
                ": no mismatch"
            }
        );
    }
    if r.damaged_lines > 0 || r.orphan_outcomes > 0 || r.users_in_two_arms > 0 || r.unknown_arm_decisions > 0 {
        s += &format!(
            "integrity: {} damaged log lines skipped, {} outcomes without a decision, {} users in two arms, \
             {} decisions of an arm not in the experiment\n",
            r.damaged_lines, r.orphan_outcomes, r.users_in_two_arms, r.unknown_arm_decisions
        );
    }
    for l in &r.learning_stopped {
        s += &format!(
            "learning: arm {} stopped learning after {} transitions ({}); it served its last good parameters from then on\n",
            l.arm, l.transitions, l.why
        );
    }
    s += &format!("\nInterference: {}\n", r.interference);
    if let Some(groups) = &r.by_session_index {
        s += "\n## By session index\n\nReward per session by the user's session index (intervals over users).\n\n\
              | arm | sessions | users | sessions counted | reward / session (95% CI) |\n|---|---|---|---|---|\n";
        for g in groups {
            let m = &g.reward_per_session;
            s += &format!(
                "| {} | {} | {} | {} | {} [{}, {}] |\n",
                g.arm,
                g.sessions_index,
                g.users,
                g.sessions,
                f(m.mean),
                f(m.ci95[0]),
                f(m.ci95[1])
            );
        }
    }
    if let Some(o) = &r.ope {
        s += &super::ope::markdown(o);
    }
    s
}

/// Refuses a log whose decisions name a policy version other than experiment.json's for
/// their arm: the experiment file is not this log's, and the results would be credited to
/// the wrong policies.
fn check_versions(experiment: &Experiment, records: &[Record], dir: &Path) -> Result<()> {
    let versions: HashMap<&str, &str> = experiment.arms.iter().map(|a| (a.name.as_str(), a.version.as_str())).collect();
    let mut wrong = records.iter().filter_map(|r| match r {
        Record::Decision(d) => versions.get(d.arm.as_str()).filter(|v| **v != d.version).map(|v| (d, *v)),
        Record::Outcome(_) | Record::Start(_) | Record::LearningStopped(_) | Record::Swap(_) => None,
    });
    if let Some((d, expected)) = wrong.next() {
        let n = 1 + wrong.count();
        return Err(Error::Other(format!(
            "{}: {n} decisions name a policy version other than experiment.json's (first: arm {} served {}, experiment.json says {}); \
             experiment.json is not this log's, and the report would credit the results to the wrong policies",
            dir.display(),
            d.arm,
            d.version,
            expected
        )));
    }
    Ok(())
}

/// What `--ope-target` asks of the report: targets estimated on the served log's world.
pub struct OpeRequest {
    /// The world's config (the server's): the log is replayed in it.
    pub config: crate::config::Checked,
    pub targets: Vec<crate::ope::PolicySpec>,
    pub options: crate::ope::estimators::Options,
}

/// Reads the log in `dir`, writes `ab_report.json`, `ab_report.md` and `ab_report.png`
/// into `out` (default: `dir`), with `ab_ope.csv` when `ope` asks for off-policy
/// estimates, and returns the report with the files. `control` names the arm the others
/// are compared with (default: the first).
pub fn report(
    dir: &Path,
    out: Option<&Path>,
    ope: Option<&OpeRequest>,
    (control, by_session): (Option<&str>, bool),
) -> Result<(AbReport, Vec<PathBuf>)> {
    let Contents { experiment, records, damaged } = super::log::read(dir)?;
    if records.is_empty() && damaged > 0 {
        return Err(Error::Other(format!(
            "{}: none of its {damaged} log lines is a record of this version (damaged, or not a decision log)",
            dir.display()
        )));
    }
    if records.is_empty() {
        return Err(Error::Other(format!("{} holds no decisions yet: drive the service first (fypsim traffic)", dir.display())));
    }
    check_versions(&experiment, &records, dir)?;
    let control_index = control_index(&experiment.arms, control, "this experiment")?;
    let mut r = analyse_with(&experiment, &records, damaged, control_index);
    r.control = control.map(str::to_string);
    if by_session {
        r.by_session_index = Some(by_session_index(&experiment, &records));
    }
    if let Some(req) = ope {
        r.ope = Some(super::ope::evaluate(&req.config, &experiment, &records, &req.targets, &req.options)?);
    }
    let out = out.unwrap_or(dir);
    std::fs::create_dir_all(out).map_err(Error::io("create", out))?;
    let json = out.join("ab_report.json");
    let text = serde_json::to_string_pretty(&r).expect("a report serialises");
    crate::files::write_file(&json, text.as_bytes())?;
    let md = out.join("ab_report.md");
    crate::files::write_file(&md, markdown(&r).as_bytes())?;
    let png = out.join("ab_report.png");
    draw(&png, &r)?;
    let mut files = vec![md, json, png];
    if let Some(o) = &r.ope {
        let csv = out.join("ab_ope.csv");
        write_ope_csv(o, &csv)?;
        files.push(csv);
    }
    Ok((r, files))
}

/// `ab_ope.csv`: one row per arm, target and estimator.
fn write_ope_csv(o: &super::ope::ServedOpe, path: &Path) -> Result<()> {
    use polars::prelude::{Column, DataFrame};
    let rows = &o.rows;
    let col_s = |name: &str, f: &dyn Fn(&super::ope::OpeRow) -> String| {
        Column::new(name.into(), rows.iter().map(f).collect::<Vec<String>>())
    };
    let mut columns = vec![
        col_s("arm", &|r| r.arm.clone()),
        col_s("logging", &|r| r.logging.clone()),
        col_s("target", &|r| r.target.clone()),
        Column::new("sessions".into(), rows.iter().map(|r| r.sessions as u64).collect::<Vec<u64>>()),
        Column::new("decisions".into(), rows.iter().map(|r| r.decisions as u64).collect::<Vec<u64>>()),
    ];
    columns.extend(crate::ope::estimate_columns(&rows.iter().map(|r| &r.estimate).collect::<Vec<_>>()));
    columns.push(col_s("setting", &|r| r.estimate.setting.clone()));
    let mut df = crate::output::records::frame(DataFrame::new_infer_height(columns), path)?;
    crate::output::records::write_csv(&mut df, path)
}

/// Two panels: reward and watch time per session, one bar per arm with its interval.
fn draw(path: &Path, r: &AbReport) -> Result<()> {
    register_font();
    let err = plot_err(path);
    let root = BitMapBackend::new(path, (1100, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let panels = root.split_evenly((1, 2));
    type Pick = fn(&ArmFigures) -> Mean;
    let pick: [(&str, Pick); 2] =
        [("reward per session", |a| a.reward_per_session), ("watch time per session (s)", |a| a.watch_time_s_per_session)];
    for (area, (title, get)) in panels.iter().zip(pick) {
        let ms: Vec<Mean> = r.arms.iter().map(get).collect();
        let lo = ms.iter().map(|m| if m.ci95[0].is_finite() { m.ci95[0] } else { m.mean }).fold(0.0, f64::min);
        let hi = ms.iter().map(|m| if m.ci95[1].is_finite() { m.ci95[1] } else { m.mean }).fold(0.0, f64::max);
        let (lo, hi) = if lo.is_finite() && hi.is_finite() && hi > lo { (lo, hi) } else { (0.0, 1.0) };
        let pad = (hi - lo) * 0.1;
        let n = r.arms.len();
        let names: Vec<String> = r.arms.iter().map(|a| format!("{} ({})", a.name, a.policy)).collect();
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{title}, 95% interval over users"), ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..n as f64, (lo - pad)..(hi + pad))
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(2 * n + 1)
            .x_label_formatter(&|x: &f64| {
                let k = (x - 0.5).round();
                if (x - 0.5 - k).abs() < 1e-6 && k >= 0.0 && (k as usize) < names.len() {
                    names[k as usize].clone()
                } else {
                    String::new()
                }
            })
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        for (k, m) in ms.iter().enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            let x = k as f64;
            chart
                .draw_series(std::iter::once(Rectangle::new([(x + 0.2, 0.0), (x + 0.8, m.mean)], color.filled())))
                .map_err(|e| err(e.to_string()))?;
            if m.ci95[0].is_finite() && m.ci95[1].is_finite() {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(x + 0.5, m.ci95[0]), (x + 0.5, m.ci95[1])],
                        BLACK.stroke_width(2),
                    )))
                    .map_err(|e| err(e.to_string()))?;
                for y in m.ci95 {
                    chart
                        .draw_series(std::iter::once(PathElement::new(vec![(x + 0.4, y), (x + 0.6, y)], BLACK.stroke_width(2))))
                        .map_err(|e| err(e.to_string()))?;
                }
            }
        }
    }
    root.present().map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, PolicyKind};
    use crate::rng::{stream, Stream};
    use crate::serve::abtest::hash_share;
    use crate::serve::traffic::rehearse;
    use crate::serve::{ArmSpec, ServeOptions, Service, Source};
    use rand::seq::index::sample;

    /// A/A experiments over the simulator, in process: the same policy in both arms, so
    /// every rejection is a false positive. 1,000 experiments, each 1,000 users drawn from
    /// a simulated pool of 3,000 (two sessions each) and split by a fresh salt, reject at
    /// the nominal 5% (within the binomial 95% interval of 1,000 tests); a planted effect
    /// is detected as often as the power the report claims for it.
    #[test]
    fn a_a_false_positives_are_nominal_and_planted_effects_are_found_at_the_claimed_power() {
        let toml = "seed = 11\n[world]\nn_videos = 1500\nn_users = 3000\n[env]\nmax_steps = 15\n";
        let config = Config::from_toml_str(toml, &[]).unwrap();
        let opts = ServeOptions {
            arms: ["A", "B"].iter().map(|n| ArmSpec::plain(n, Source::Baseline(PolicyKind::Greedy))).collect(),
            shares: None,
            salt: "aa".into(),
            config: Some(config),
            log: None,
            learning_checkpoint_every: crate::serve::LEARNING_CHECKPOINT_EVERY,
        };
        let mut service = Service::new(&opts).unwrap();
        let world = service.env().world.clone();
        let users: Vec<u32> = (0..3000).collect();
        let records = rehearse(&mut service, &world, &users, 2, 4).unwrap();
        // Per user: (sessions, reward), as the report collects them.
        let totals: BTreeMap<u32, (f64, f64)> = collect(&service.experiment(), &records)
            .users
            .into_iter()
            .map(|(u, t)| (u, (t.sessions.len() as f64, t.reward)))
            .collect();
        assert_eq!(totals.len(), 3000);

        // The report's own figures for the served split equal the direct computation.
        let report = analyse(&service.experiment(), &records, 0);
        let arm = |b: bool| -> Vec<UserTotals> {
            totals
                .iter()
                .filter(|(u, _)| (hash_share("aa", **u as u64) >= 0.5) == b)
                .map(|(_, &(s, v))| UserTotals { sessions: s, value: v })
                .collect()
        };
        let d = difference(&arm_estimate(&arm(false)), &arm_estimate(&arm(true)));
        let r = report.reward_diff.unwrap();
        assert!((r.diff - d.diff).abs() < 1e-9 && (r.se - d.se).abs() < 1e-9, "{r:?} vs {d:?}");
        assert!(!report.srm.as_ref().unwrap().alarm);

        let pool: Vec<(u32, f64, f64)> = totals.iter().map(|(&u, &(s, v))| (u, s, v)).collect();
        let mut rng = stream(5, Stream::Traffic);
        let (experiments, m) = (1000, 1000);
        // An effect of 0.6 reward per session planted in arm B.
        let effect = 0.6;
        let (mut false_pos, mut detected, mut claimed) = (0, 0, 0.0);
        for e in 0..experiments {
            let salt = format!("aa-{e}");
            let (mut a, mut b, mut b_planted) = (Vec::new(), Vec::new(), Vec::new());
            for i in sample(&mut rng, pool.len(), m) {
                let (u, s, v) = pool[i];
                if hash_share(&salt, u as u64) < 0.5 {
                    a.push(UserTotals { sessions: s, value: v });
                } else {
                    b.push(UserTotals { sessions: s, value: v });
                    b_planted.push(UserTotals { sessions: s, value: v + effect * s });
                }
            }
            let ea = arm_estimate(&a);
            let aa = difference(&ea, &arm_estimate(&b));
            false_pos += usize::from(aa.p_value < 0.05);
            let ab = difference(&ea, &arm_estimate(&b_planted));
            detected += usize::from(ab.p_value < 0.05);
            claimed += power(effect, ab.se);
        }
        let n = experiments as f64;
        let fpr = false_pos as f64 / n;
        let half = 1.96 * (0.05f64 * 0.95 / n).sqrt();
        println!("A/A false-positive rate {fpr:.3} (nominal 0.05 ± {half:.3})");
        assert!((fpr - 0.05).abs() <= half, "false-positive rate {fpr}");
        let (found, claimed) = (detected as f64 / n, claimed / n);
        let half = 1.96 * (claimed * (1.0 - claimed) / n).sqrt();
        println!("planted effect {effect}: detected {found:.3}, claimed power {claimed:.3} ± {half:.3}");
        assert!((0.3..0.95).contains(&claimed), "choose an effect with informative power: {claimed}");
        assert!((found - claimed).abs() <= half, "detected {found}, claimed {claimed}");
    }

    /// An experiment of `arms` (the rest made up).
    fn experiment(arms: Vec<crate::serve::log::ArmMeta>) -> crate::serve::log::Experiment {
        crate::serve::log::Experiment {
            fypsim: "x".into(),
            salt: "s".into(),
            arms,
            world: "w".into(),
            reward: crate::serve::log::RewardMeta {
                watched: 1.0,
                liked: 2.0,
                skipped: -2.0,
                left: -0.5,
                watch_s: 0.0,
                share: 0.0,
                follow: 0.0,
            },
            max_steps: 10,
            session_timeout_s: 1800,
        }
    }

    /// Another experiment's experiment.json beside a log is refused: its decisions name
    /// other policy versions (the report credited them to the wrong policies).
    #[test]
    fn an_experiment_file_of_another_log_is_refused() {
        use crate::serve::log::{ArmMeta, Decision, EXPERIMENT, LOG};
        let dir = tempfile::tempdir().unwrap();
        let exp = experiment(vec![ArmMeta { name: "A".into(), policy: "dqn".into(), version: "dqn@aaaa".into(), share: 1.0 }]);
        std::fs::write(dir.path().join(EXPERIMENT), serde_json::to_string(&exp).unwrap()).unwrap();
        let d = Decision {
            request_id: "r1".into(),
            time_ms: 0,
            user: 1,
            session: 0,
            step: 0,
            arm: "A".into(),
            assignment_p: 1.0,
            policy: "dqn".into(),
            version: "dqn@bbbb".into(),
            candidates: vec![1, 2],
            video: 1,
            slot: 0,
            propensity: 1.0,
        };
        let line = serde_json::to_string(&Record::Decision(d)).unwrap();
        std::fs::write(dir.path().join(LOG), format!("{line}\n")).unwrap();
        let e = report(dir.path(), None, None, (None, false)).unwrap_err().to_string();
        assert!(e.contains("dqn@bbbb") && e.contains("dqn@aaaa") && e.contains("not this log's"), "{e}");
    }

    /// A log of nothing but garbage says so, with the count, instead of "no decisions yet".
    #[test]
    fn a_log_of_garbage_is_counted_not_called_empty() {
        use crate::serve::log::{ArmMeta, EXPERIMENT, LOG};
        let dir = tempfile::tempdir().unwrap();
        let exp = experiment(vec![ArmMeta { name: "A".into(), policy: "greedy".into(), version: "v".into(), share: 1.0 }]);
        std::fs::write(dir.path().join(EXPERIMENT), serde_json::to_string(&exp).unwrap()).unwrap();
        std::fs::write(dir.path().join(LOG), "not json\n{\"half\": 1}\n\u{0}\u{1}garbage\n").unwrap();
        let e = report(dir.path(), None, None, (None, false)).unwrap_err().to_string();
        assert!(e.contains("none of its 3 log lines"), "{e}");
    }

    #[test]
    fn a_hand_made_log_gives_known_figures() {
        use crate::serve::log::{ArmMeta, Decision, Experiment, Outcome, RewardMeta};
        use crate::serve::Reported;
        let exp = Experiment {
            fypsim: "x".into(),
            salt: "s".into(),
            arms: ["A", "B"]
                .iter()
                .map(|n| ArmMeta { name: n.to_string(), policy: "greedy".into(), version: "v".into(), share: 0.5 })
                .collect(),
            world: "w".into(),
            reward: RewardMeta { watched: 1.0, liked: 2.0, skipped: -2.0, left: -0.5, watch_s: 0.0, share: 0.0, follow: 0.0 },
            max_steps: 10,
            session_timeout_s: 1800,
        };
        let mut records = Vec::new();
        // Arm A: users 1 (sessions 0, 1: rewards 1 and 2) and 2 (one session: 3).
        // Arm B: users 3 and 4, one session each: 4 and 6. One decision of B unanswered.
        let mut id = 0;
        let mut step = |user: u32, session: u32, arm: &str, reward: Option<f64>| {
            id += 1;
            let request_id = format!("r{id}");
            records.push(Record::Decision(Decision {
                request_id: request_id.clone(),
                time_ms: 0,
                user,
                session,
                step: 0,
                arm: arm.into(),
                assignment_p: 0.5,
                policy: "greedy".into(),
                version: "v".into(),
                candidates: vec![1, 2],
                video: 1,
                slot: 0,
                propensity: 1.0,
            }));
            if let Some(r) = reward {
                records.push(Record::Outcome(Outcome {
                    request_id,
                    time_ms: 0,
                    user,
                    session,
                    arm: arm.into(),
                    video: 1,
                    response: Reported::Watched,
                    left: false,
                    watch_time_s: 2.0,
                    shared: false,
                    followed: false,
                    reward: r,
                }));
            }
        };
        step(1, 0, "A", Some(1.0));
        step(1, 1, "A", Some(2.0));
        step(2, 0, "A", Some(3.0));
        step(3, 0, "B", Some(4.0));
        step(4, 0, "B", Some(6.0));
        step(4, 0, "B", None);
        // A user whose only decision still awaits feedback has no session yet; a decision
        // of an arm the experiment lacks is counted apart.
        step(5, 0, "A", None);
        step(6, 0, "C", Some(9.0));
        let r = analyse(&exp, &records, 2);
        assert_eq!(r.unknown_arm_decisions, 1);
        assert_eq!(r.orphan_outcomes, 1, "the unknown arm's outcome has no decision");
        assert!(markdown(&r).contains("1 decisions of an arm not in the experiment"));
        assert_eq!((r.arms[0].users, r.arms[0].sessions, r.arms[1].users, r.arms[1].sessions), (3, 3, 2, 2));
        assert!((r.arms[0].reward_per_session.mean - 2.0).abs() < 1e-12);
        assert!((r.arms[1].reward_per_session.mean - 5.0).abs() < 1e-12);
        assert!((r.reward_diff.unwrap().diff - 3.0).abs() < 1e-12);
        // Watch time: A 6 s over 3 sessions, B 4 s over 2.
        assert!((r.arms[0].watch_time_s_per_session.mean - 2.0).abs() < 1e-12);
        assert_eq!((r.awaiting_feedback, r.damaged_lines, r.decisions, r.outcomes), (2, 2, 7, 5));
        // One user an arm: no interval, so no power; said, not printed as NaN.
        let one = analyse(&exp, &records[..4], 0);
        let text = markdown(&one);
        assert!(text.contains("power: n/a") && !text.contains("NaN"), "{text}");
        let text = markdown(&r);
        assert!(text.contains("Interference") && text.contains("B - A, reward per session: 3.000"), "{text}");
        // A user seen in both arms is counted; 60 users in A against 2 in B at 50/50 is a
        // sample-ratio mismatch, said in words.
        let mut more = records.clone();
        let with = |more: &mut Vec<Record>, user: u32, arm: &str| {
            let mut d = match &records[0] {
                Record::Decision(d) => d.clone(),
                _ => unreachable!("the first record is a decision"),
            };
            let mut o = match &records[1] {
                Record::Outcome(o) => o.clone(),
                _ => unreachable!("the second record is its outcome"),
            };
            d.request_id = format!("x{user}{arm}");
            o.request_id = d.request_id.clone();
            (d.user, o.user, d.arm, o.arm) = (user, user, arm.into(), arm.into());
            more.push(Record::Decision(d));
            more.push(Record::Outcome(o));
        };
        with(&mut more, 1, "B");
        for user in 100..160 {
            with(&mut more, user, "A");
        }
        let r = analyse(&exp, &more, 0);
        assert_eq!(r.users_in_two_arms, 1);
        assert!(r.srm.as_ref().unwrap().alarm);
        let text = markdown(&r);
        assert!(text.contains("1 users in two arms") && text.contains("MISMATCH"), "{text}");
    }

    /// Three arms: the k-arm sample-ratio check, each arm against the control (the first,
    /// or a named one) with Bonferroni's bound, in the JSON and the text.
    #[test]
    fn three_arms_are_compared_with_a_control() {
        let toml = "seed = 11\n[world]\nn_videos = 1500\nn_users = 900\n[env]\nmax_steps = 10\n";
        let opts = ServeOptions {
            arms: [("A", PolicyKind::Greedy), ("B", PolicyKind::Random), ("C", PolicyKind::MostViewed)]
                .iter()
                .map(|(n, k)| ArmSpec::plain(n, Source::Baseline(*k)))
                .collect(),
            shares: None,
            salt: "abc".into(),
            config: Some(Config::from_toml_str(toml, &[]).unwrap()),
            log: None,
            learning_checkpoint_every: crate::serve::LEARNING_CHECKPOINT_EVERY,
        };
        let mut service = Service::new(&opts).unwrap();
        let world = service.env().world.clone();
        let users: Vec<u32> = (0..900).collect();
        let records = rehearse(&mut service, &world, &users, 2, 4).unwrap();
        let r = analyse(&service.experiment(), &records, 0);
        assert!(r.reward_diff.is_none());
        let srm = r.srm.as_ref().unwrap();
        assert_eq!((srm.users.len(), srm.users.iter().sum::<usize>()), (3, 900));
        assert!(srm.p_value > 0.001 && !srm.alarm, "{srm:?}");
        assert_eq!(
            r.comparisons.iter().map(|c| (c.arm.as_str(), c.control.as_str())).collect::<Vec<_>>(),
            [("B", "A"), ("C", "A")]
        );
        for (c, arm) in r.comparisons.iter().zip([1, 2]) {
            let d = r.arms[arm].reward_per_session.mean - r.arms[0].reward_per_session.mean;
            assert!((c.reward.diff - d).abs() < 1e-9);
            assert_eq!(c.significant_bonferroni, c.reward.p_value < 0.025);
        }
        // Random loses to greedy by far more than its detectable difference.
        assert!(r.comparisons[0].reward.diff < -r.comparisons[0].reward.mde80 && r.comparisons[0].significant_bonferroni);
        let text = markdown(&r);
        assert!(text.contains("Bonferroni") && text.contains("| B - A |") && text.contains("| C - A |"), "{text}");
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"comparisons\"") && json.contains("significant_bonferroni"));
        // By session index: every session of an arm in exactly one group; two sessions a
        // user, so groups 1 and 2-5 only, each with every user of the arm.
        let groups = by_session_index(&service.experiment(), &records);
        for a in &r.arms {
            let mine: Vec<&IndexFigures> = groups.iter().filter(|g| g.arm == a.name).collect();
            assert_eq!(mine.iter().map(|g| g.sessions).sum::<usize>(), a.sessions, "{}", a.name);
            assert_eq!(mine.iter().map(|g| g.sessions_index.as_str()).collect::<Vec<_>>(), ["1", "2-5"]);
            assert!(mine.iter().all(|g| g.users == a.users && g.reward_per_session.mean.is_finite()));
        }
        for m in 1..=7 {
            let level = 2.0 * crate::serve::abtest::normal_sf(Z_BONFERRONI[m - 1]);
            assert!((level - 0.05 / m as f64).abs() < 1e-6, "{m}: {level}");
        }
        let b = analyse_with(&service.experiment(), &records, 0, 1);
        assert_eq!(
            b.comparisons.iter().map(|c| (c.arm.as_str(), c.control.as_str())).collect::<Vec<_>>(),
            [("A", "B"), ("C", "B")]
        );
    }
}

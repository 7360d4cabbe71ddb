//! The return by session index of a calendar run (`fypsim report DIR --by-session`): does
//! a policy's return hold up over a user's later sessions, when the history it carries
//! between sessions grows (seen videos do not come back, the matrix fills)?
//!
//! Reads each run's `sessions.parquet` (one row per session and policy, with `session` the
//! user's sessions before it) below a folder: per run (seed) and policy, the mean reward of
//! the sessions in each index group; across runs, the mean and the 95% Student-t interval;
//! and each policy's share of a reference policy's return, per run, then across runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::output::records;
use crate::stats::Interval;
use crate::{Error, Result};

/// The session-index groups: 1-based, inclusive; None: no upper end.
pub const GROUPS: [(u32, Option<u32>); 3] = [(1, Some(1)), (2, Some(5)), (6, None)];

/// A group's name: "1", "2-5", "6+".
pub fn group_name(g: (u32, Option<u32>)) -> String {
    match g {
        (a, Some(b)) if a == b => a.to_string(),
        (a, Some(b)) => format!("{a}-{b}"),
        (a, None) => format!("{a}+"),
    }
}

/// One policy's figures in one group.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub policy: String,
    pub group: String,
    /// Runs with a session in the group.
    pub runs: usize,
    /// Sessions in the group, summed over runs.
    pub sessions: usize,
    /// Mean reward per session: the mean over runs of each run's mean.
    pub reward: Interval,
    /// The share of the reference policy's reward in the same group (per run, then across
    /// runs); None for the reference itself or without it.
    pub share_of_reference: Option<Interval>,
}

/// What `--by-session` found.
#[derive(Debug, Clone, Serialize)]
pub struct BySession {
    pub runs: Vec<PathBuf>,
    pub reference: String,
    pub cells: Vec<Cell>,
}

/// Per policy and group, the sum of rewards and the count of sessions of one run.
type RunTotals = BTreeMap<(String, usize), (f64, usize)>;

fn totals(path: &Path) -> Result<RunTotals> {
    use polars::prelude::DataType;
    let df = records::read_parquet(path)?;
    let bad = |c: &str, why: String| Error::Other(format!("{}: column `{c}` {why}", path.display()));
    let policy = df.column("policy").map_err(|_| bad("policy", "is missing".into()))?;
    let policy = policy.str().map_err(|e| bad("policy", e.to_string()))?.clone();
    let index = df.column("session").and_then(|c| c.cast(&DataType::UInt32)).map_err(|e| bad("session", e.to_string()))?;
    let index = index.u32().map_err(|e| bad("session", e.to_string()))?.clone();
    let reward = df.column("reward").and_then(|c| c.cast(&DataType::Float64)).map_err(|e| bad("reward", e.to_string()))?;
    let reward = reward.f64().map_err(|e| bad("reward", e.to_string()))?.clone();
    let mut out = RunTotals::new();
    for i in 0..df.height() {
        let (Some(p), Some(k), Some(r)) = (policy.get(i), index.get(i), reward.get(i)) else {
            return Err(bad("policy/session/reward", format!("has an empty row {i}")));
        };
        let k = k + 1;
        let g = GROUPS.iter().position(|&(a, b)| k >= a && b.is_none_or(|b| k <= b)).expect("the last group is open");
        let e = out.entry((p.to_string(), g)).or_default();
        e.0 += r;
        e.1 += 1;
    }
    Ok(out)
}

/// Every run with `sessions.parquet` below `dir` (a run folder, a multi-seed run or a
/// sweep), and per policy and group the reward per session across them. `reference` names
/// the policy shares are taken of (`myopic_oracle`, say).
pub fn by_session(dir: &Path, reference: &str) -> Result<BySession> {
    let mut runs: Vec<PathBuf> = crate::experiment::report::discover(dir)?
        .into_iter()
        .map(|r| r.dir)
        .filter(|d| d.join("sessions.parquet").is_file())
        .collect();
    runs.sort();
    if runs.is_empty() {
        return Err(Error::Other(format!(
            "no run below {} has sessions.parquet: the return by session index needs a calendar run ([calendar] days > 0)",
            dir.display()
        )));
    }
    let per_run: Vec<RunTotals> = runs.iter().map(|d| totals(&d.join("sessions.parquet"))).collect::<Result<_>>()?;
    let mut policies: Vec<String> = Vec::new();
    for t in &per_run {
        for (p, _) in t.keys() {
            if !policies.contains(p) {
                policies.push(p.clone());
            }
        }
    }
    let mut cells = Vec::new();
    for p in &policies {
        for (g, &group) in GROUPS.iter().enumerate() {
            let (mut means, mut shares, mut sessions) = (Vec::new(), Vec::new(), 0);
            for t in &per_run {
                let Some(&(sum, n)) = t.get(&(p.clone(), g)) else { continue };
                let mean = sum / n as f64;
                means.push(mean);
                sessions += n;
                if let Some(&(rs, rn)) = t.get(&(reference.to_string(), g)) {
                    let r = rs / rn as f64;
                    if r != 0.0 {
                        shares.push(mean / r);
                    }
                }
            }
            if means.is_empty() {
                continue;
            }
            let share = (p != reference && !shares.is_empty()).then(|| Interval::of(&shares));
            cells.push(Cell {
                policy: p.clone(),
                group: group_name(group),
                runs: means.len(),
                sessions,
                reward: Interval::of(&means),
                share_of_reference: share,
            });
        }
    }
    Ok(BySession { runs, reference: reference.to_string(), cells })
}

/// "m ± c", or "m (one run)" where a single run gives no interval.
fn show(i: &Interval) -> String {
    if i.ci95.is_finite() {
        format!("{:.3} ± {:.3}", i.mean, i.ci95)
    } else {
        format!("{:.3} (one run)", i.mean)
    }
}

/// The table as markdown.
pub fn markdown(b: &BySession) -> String {
    let mut s = format!(
        "Reward per session by the user's session index, over {} run(s) (mean across runs, 95% t interval); share: of {}'s reward in the same sessions.\n\n",
        b.runs.len(),
        b.reference
    );
    s += "| policy | sessions | sessions counted | reward per session | share of reference |\n|---|---|---|---|---|\n";
    for c in &b.cells {
        s += &format!(
            "| {} | {} | {} | {} | {} |\n",
            c.policy,
            c.group,
            c.sessions,
            show(&c.reward),
            c.share_of_reference.as_ref().map_or("".to_string(), show)
        );
    }
    s
}

/// Writes `by_session.csv` and `by_session.md` into `dir`.
pub fn write(b: &BySession, dir: &Path) -> Result<Vec<PathBuf>> {
    use polars::prelude::{Column, DataFrame};
    let c = &b.cells;
    // Undefined figures (one run's interval, the reference's share of itself) are empty.
    let f =
        |name: &str, g: &dyn Fn(&Cell) -> Option<f64>| Column::new(name.into(), c.iter().map(g).collect::<Vec<Option<f64>>>());
    let csv = dir.join("by_session.csv");
    let mut df = records::frame(
        DataFrame::new_infer_height(vec![
            Column::new("policy".into(), c.iter().map(|x| x.policy.clone()).collect::<Vec<String>>()),
            Column::new("sessions_index".into(), c.iter().map(|x| x.group.clone()).collect::<Vec<String>>()),
            Column::new("runs".into(), c.iter().map(|x| x.runs as u64).collect::<Vec<u64>>()),
            Column::new("sessions".into(), c.iter().map(|x| x.sessions as u64).collect::<Vec<u64>>()),
            f("reward", &|x| Some(x.reward.mean)),
            f("reward_ci95", &|x| Some(x.reward.ci95).filter(|c| c.is_finite())),
            f("share_of_reference", &|x| x.share_of_reference.as_ref().map(|i| i.mean)),
            f("share_ci95", &|x| x.share_of_reference.as_ref().map(|i| i.ci95).filter(|c| c.is_finite())),
        ]),
        &csv,
    )?;
    records::write_csv(&mut df, &csv)?;
    let md = dir.join("by_session.md");
    crate::files::write_file(&md, markdown(b).as_bytes())?;
    Ok(vec![md, csv])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_cover_every_index_once() {
        for k in 1..50u32 {
            assert_eq!(GROUPS.iter().filter(|&&(a, b)| k >= a && b.is_none_or(|b| k <= b)).count(), 1, "{k}");
        }
        assert_eq!(GROUPS.iter().map(|&g| group_name(g)).collect::<Vec<_>>(), ["1", "2-5", "6+"]);
    }
}

//! `fypsim report DIR`: every run below DIR aggregated per configuration across seeds, as
//! a Markdown and a CSV table and two pictures; and A/B comparisons of two configurations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::Serialize;

use crate::experiment::run::Summary;
use crate::output::plot::{finish_chart, plot_err, register_font, Band, PALETTE};
use crate::output::records::{self, frame};
use crate::stats::{mean_ci, Critical};
use crate::{Error, Result};

/// One finished run found below the report folder.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub dir: PathBuf,
    pub summary: Summary,
    /// (training episodes, evaluation return) from eval.csv.
    pub curve: Vec<(u32, f64)>,
}

/// Every run with a summary.json below `dir`, sorted by label then seed.
pub fn discover(dir: &Path) -> Result<Vec<RunInfo>> {
    let mut found = Vec::new();
    walk(dir, &mut found)?;
    let mut runs = Vec::new();
    for d in found {
        let path = d.join("summary.json");
        let text = std::fs::read_to_string(&path).map_err(Error::io("read", &path))?;
        // A multi-seed aggregate: its runs are the seed folders below it.
        if serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| v.get("multi_seed").is_some()) {
            continue;
        }
        let summary: Summary =
            serde_json::from_str(&text).map_err(|e| Error::Other(format!("{} is not a fypsim summary: {e}", path.display())))?;
        let curve_path = d.join("eval.csv");
        let mut curve = Vec::new();
        if curve_path.exists() {
            let df = records::read_csv(&curve_path)?;
            let ep = df.column("episode").and_then(|c| c.cast(&polars::prelude::DataType::UInt32));
            let ret = df.column("mean_return").and_then(|c| c.cast(&polars::prelude::DataType::Float64));
            let (ep, ret) = (frame(ep, &curve_path)?, frame(ret, &curve_path)?);
            let (ep, ret) = (frame(ep.u32().cloned(), &curve_path)?, frame(ret.f64().cloned(), &curve_path)?);
            curve = (0..ep.len()).filter_map(|i| Some((ep.get(i)?, ret.get(i)?))).collect();
        }
        let mut summary = summary;
        summary.steps_per_second = crate::experiment::run::steps_per_second_of(&d, &summary);
        runs.push(RunInfo { dir: d, summary, curve });
    }
    runs.sort_by(|a, b| a.summary.label.cmp(&b.summary.label).then(a.summary.seed.cmp(&b.summary.seed)));
    Ok(runs)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if dir.join("summary.json").is_file() {
        out.push(dir.to_path_buf());
    }
    let entries = std::fs::read_dir(dir).map_err(Error::io("list", dir))?;
    let mut subdirs: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    subdirs.sort();
    for s in subdirs {
        walk(&s, out)?;
    }
    Ok(())
}

/// One configuration's row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigRow {
    pub label: String,
    pub policy: String,
    pub seeds: usize,
    /// Mean over seeds of the trained policy's evaluation return, with its 95% interval.
    pub mean_return: f64,
    pub ci95: f64,
    /// Mean over seeds of each run's (trained - random) / (oracle - random).
    pub oracle_fraction: f64,
    pub oracle_fraction_ci95: f64,
    /// Baselines' mean evaluation returns over the same seeds.
    pub baselines: BTreeMap<String, (f64, f64)>,
    pub steps_per_second: f64,
}

/// Aggregates runs per label.
pub fn aggregate(runs: &[RunInfo]) -> Vec<ConfigRow> {
    let mut groups: BTreeMap<&str, Vec<&RunInfo>> = BTreeMap::new();
    for r in runs {
        groups.entry(&r.summary.label).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|(label, rs)| {
            let (mean_return, ci95) =
                mean_ci(&rs.iter().map(|r| r.summary.eval_mean_return).collect::<Vec<_>>(), Critical::StudentT);
            let fractions: Vec<f64> = rs.iter().filter_map(|r| r.summary.oracle_fraction).collect();
            let (oracle_fraction, oracle_fraction_ci95) = mean_ci(&fractions, Critical::StudentT);
            let mut names: Vec<&String> = rs.iter().flat_map(|r| r.summary.baselines.keys()).collect();
            names.sort();
            names.dedup();
            let baselines = names
                .into_iter()
                .map(|n| {
                    let xs: Vec<f64> = rs.iter().filter_map(|r| r.summary.baselines.get(n).copied()).collect();
                    (n.clone(), mean_ci(&xs, Critical::StudentT))
                })
                .collect();
            ConfigRow {
                label: label.to_string(),
                policy: rs[0].summary.policy.clone(),
                seeds: rs.len(),
                mean_return,
                ci95,
                oracle_fraction,
                oracle_fraction_ci95,
                baselines,
                steps_per_second: rs.iter().map(|r| r.summary.steps_per_second.unwrap_or(f64::NAN)).sum::<f64>()
                    / rs.len() as f64,
            }
        })
        .collect()
}

/// A figure with three decimals, or "n/a" where it is undefined (an interval over one
/// seed, an oracle_fraction without the baselines it needs): what reports print.
pub fn fmt(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "n/a".into()
    }
}

/// What `report` wrote.
#[derive(Debug)]
pub struct ReportOutcome {
    pub rows: Vec<ConfigRow>,
    pub runs: usize,
    pub files: Vec<PathBuf>,
}

/// Writes report.md, report.csv, curves.png and policies.png into `dir`.
pub fn report(dir: &Path) -> Result<ReportOutcome> {
    let runs = discover(dir)?;
    if runs.is_empty() {
        return Err(Error::Other(format!("no finished runs (folders with summary.json) below {}", dir.display())));
    }
    let rows = aggregate(&runs);
    let baseline_names: Vec<String> = {
        let mut v: Vec<String> = rows.iter().flat_map(|r| r.baselines.keys().cloned()).collect();
        v.sort();
        v.dedup();
        v
    };

    let csv_path = dir.join("report.csv");
    // A figure that does not exist (an interval of one seed, oracle_fraction without the
    // oracle) is an empty cell, not NaN.
    let known = |x: f64| x.is_finite().then_some(x);
    let mut cols = vec![
        polars::prelude::Column::new("label".into(), rows.iter().map(|r| r.label.clone()).collect::<Vec<_>>()),
        polars::prelude::Column::new("policy".into(), rows.iter().map(|r| r.policy.clone()).collect::<Vec<_>>()),
        polars::prelude::Column::new("seeds".into(), rows.iter().map(|r| r.seeds as u64).collect::<Vec<_>>()),
        polars::prelude::Column::new("mean_return".into(), rows.iter().map(|r| known(r.mean_return)).collect::<Vec<_>>()),
        polars::prelude::Column::new("ci95".into(), rows.iter().map(|r| known(r.ci95)).collect::<Vec<_>>()),
        polars::prelude::Column::new("oracle_fraction".into(), rows.iter().map(|r| known(r.oracle_fraction)).collect::<Vec<_>>()),
        polars::prelude::Column::new(
            "oracle_fraction_ci95".into(),
            rows.iter().map(|r| known(r.oracle_fraction_ci95)).collect::<Vec<_>>(),
        ),
    ];
    for b in &baseline_names {
        cols.push(polars::prelude::Column::new(
            b.as_str().into(),
            rows.iter().map(|r| r.baselines.get(b).and_then(|x| known(x.0))).collect::<Vec<_>>(),
        ));
    }
    cols.push(polars::prelude::Column::new(
        "steps_per_second".into(),
        rows.iter().map(|r| known(r.steps_per_second)).collect::<Vec<_>>(),
    ));
    let mut df = frame(polars::prelude::DataFrame::new_infer_height(cols), &csv_path)?;
    records::write_csv(&mut df, &csv_path)?;

    let mut md = String::new();
    md.push_str(&format!("# Report: {}\n\n", dir.display()));
    md.push_str(&format!(
        "{} runs in {} configurations. Returns are mean evaluation returns (exploration off, \
         common random numbers), averaged over seeds, ± the half-width of the 95% t interval \
         across seeds. oracle_fraction = (policy - random) / (oracle - random), per run, averaged.\n\n",
        runs.len(),
        rows.len()
    ));
    md.push_str("| configuration | policy | seeds | mean return | oracle_fraction |");
    for b in &baseline_names {
        md.push_str(&format!(" {b} |"));
    }
    md.push_str(" steps/s |\n|---|---|---|---|---|");
    for _ in &baseline_names {
        md.push_str("---|");
    }
    md.push_str("---|\n");
    for r in &rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} ± {} | {} ± {} |",
            r.label,
            r.policy,
            r.seeds,
            fmt(r.mean_return),
            fmt(r.ci95),
            fmt(r.oracle_fraction),
            fmt(r.oracle_fraction_ci95)
        ));
        for b in &baseline_names {
            let (m, c) = r.baselines.get(b).copied().unwrap_or((f64::NAN, f64::NAN));
            md.push_str(&format!(" {} ± {} |", fmt(m), fmt(c)));
        }
        md.push_str(&format!(" {:.0} |\n", r.steps_per_second));
    }
    md.push_str("\n![learning curves](curves.png)\n\n![policies](policies.png)\n");
    let md_path = dir.join("report.md");
    std::fs::write(&md_path, md).map_err(Error::io("write", &md_path))?;

    let curves = dir.join("curves.png");
    draw_curves(&curves, &runs, &rows)?;
    let policies = dir.join("policies.png");
    draw_policies(&policies, &rows, &baseline_names)?;
    Ok(ReportOutcome { runs: runs.len(), rows, files: vec![md_path, csv_path, curves, policies] })
}

fn short(label: &str, max: usize) -> String {
    if label.chars().count() <= max {
        label.to_string()
    } else {
        let s: String = label.chars().take(max - 1).collect();
        format!("{s}…")
    }
}

/// Per x, the mean of its values and the half-width of their 95% interval (0 for a
/// single value).
pub fn band_of(points: impl IntoIterator<Item = (f64, Vec<f64>)>) -> Band {
    points
        .into_iter()
        .map(|(x, ys)| {
            let (m, c) = mean_ci(&ys, Critical::StudentT);
            (x, m, if c.is_finite() { c } else { 0.0 })
        })
        .collect()
}

/// Learning curves: per configuration the mean evaluation return over seeds at each
/// evaluation point, with its 95% band.
fn draw_curves(path: &Path, runs: &[RunInfo], rows: &[ConfigRow]) -> Result<()> {
    let mut series: Vec<(String, Band)> = Vec::new();
    for row in rows {
        let mut by_ep: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
        for r in runs.iter().filter(|r| r.summary.label == row.label) {
            for &(e, v) in &r.curve {
                by_ep.entry(e).or_default().push(v);
            }
        }
        series.push((row.label.clone(), band_of(by_ep.into_iter().map(|(e, xs)| (e as f64, xs)))));
    }
    let series: Vec<(String, Band)> = series.into_iter().map(|(l, p)| (short(&l, 60), p)).collect();
    crate::output::plot::bands_plot(
        path,
        "evaluation return during training (mean over seeds, 95% band)",
        "training episodes",
        "evaluation return",
        &series,
    )
}

/// Horizontal grouped bars: per configuration the trained policy and each baseline, with
/// 95% intervals across seeds.
fn draw_policies(path: &Path, rows: &[ConfigRow], baselines: &[String]) -> Result<()> {
    register_font();
    let err = plot_err(path);
    let per = 1 + baselines.len();
    let mut bars: Vec<(usize, usize, f64, f64)> = Vec::new(); // (group, member, mean, ci)
    for (g, r) in rows.iter().enumerate() {
        bars.push((g, 0, r.mean_return, r.ci95));
        for (k, b) in baselines.iter().enumerate() {
            if let Some(&(m, c)) = r.baselines.get(b) {
                bars.push((g, k + 1, m, c));
            }
        }
    }
    let lo = bars.iter().map(|b| b.2 - if b.3.is_finite() { b.3 } else { 0.0 }).fold(0.0, f64::min);
    let hi = bars.iter().map(|b| b.2 + if b.3.is_finite() { b.3 } else { 0.0 }).fold(0.0, f64::max);
    let pad = ((hi - lo) * 0.08).max(0.1);
    let height = (120 + rows.len() * (per * 14 + 20)).max(400) as u32;
    let root = BitMapBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let n = rows.len() as f64;
    let labels: Vec<String> = rows.iter().map(|r| short(&r.label, 42)).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption("mean evaluation return per configuration (95% intervals across seeds)", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(330)
        .build_cartesian_2d((lo - pad)..(hi + pad), 0.0..n)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(rows.len() * 2 + 1)
        .y_label_formatter(&|y: &f64| {
            let g = (y - 0.5).round();
            if (y - 0.5 - g).abs() < 1e-6 && g >= 0.0 && (g as usize) < labels.len() {
                labels[labels.len() - 1 - g as usize].clone()
            } else {
                String::new()
            }
        })
        .x_desc("mean evaluation return")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let slot = 0.8 / per as f64;
    for member in 0..per {
        let color = PALETTE[member % PALETTE.len()];
        let name = if member == 0 { "trained policy".to_string() } else { baselines[member - 1].clone() };
        let mine: Vec<_> = bars.iter().filter(|b| b.1 == member).copied().collect();
        let top = |g: usize| n - g as f64 - 0.1 - member as f64 * slot;
        chart
            .draw_series(
                mine.iter().map(|&(g, _, m, _)| Rectangle::new([(0.0, top(g)), (m, top(g) - slot * 0.9)], color.filled())),
            )
            .map_err(|e| err(e.to_string()))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled()));
        chart
            .draw_series(mine.iter().filter(|b| b.3.is_finite()).map(|&(g, _, m, c)| {
                let y = top(g) - slot * 0.45;
                PathElement::new(vec![(m - c, y), (m + c, y)], BLACK.stroke_width(2))
            }))
            .map_err(|e| err(e.to_string()))?;
    }
    finish_chart(&mut chart, &root, 14, path)
}

/// The result of an A/B comparison.
#[derive(Debug, Clone, Serialize)]
pub struct AbOutcome {
    pub a: String,
    pub b: String,
    /// Paired evaluation episodes (same seed, same episode: same user and random numbers).
    pub pairs: usize,
    pub mean_a: f64,
    pub ci95_a: f64,
    pub mean_b: f64,
    pub ci95_b: f64,
    /// mean(B - A) over the pairs, with its 95% t interval.
    pub diff: f64,
    pub diff_ci95: f64,
    pub files: Vec<PathBuf>,
}

/// Compares configurations `a` and `b` (labels as in the report) on their final
/// evaluation episodes: each arm's mean, and the paired difference with its interval;
/// writes the per-episode log `ab.csv` and `ab.md` into `dir`.
pub fn ab(dir: &Path, a: &str, b: &str) -> Result<AbOutcome> {
    let runs = discover(dir)?;
    let labels: Vec<&str> = {
        let mut l: Vec<&str> = runs.iter().map(|r| r.summary.label.as_str()).collect();
        l.dedup();
        l
    };
    for arm in [a, b] {
        if !labels.contains(&arm) {
            return Err(Error::Other(format!(
                "no configuration `{arm}` below {}; the configurations are: {}",
                dir.display(),
                labels.join(", ")
            )));
        }
    }
    // (seed, episode) -> (user, return) for the trained policy of each arm.
    let arm_rows = |label: &str| -> Result<BTreeMap<(u64, u32), (u32, f64)>> {
        let mut m = BTreeMap::new();
        for r in runs.iter().filter(|r| r.summary.label == label) {
            let path = r.dir.join("eval_episodes.csv");
            let df = records::read_csv(&path)?;
            let trained = format!("{} (trained)", r.summary.policy);
            let pol = frame(df.column("policy").and_then(|c| c.str().cloned()), &path)?;
            let ep = frame(df.column("episode").and_then(|c| c.cast(&polars::prelude::DataType::UInt32)), &path)?;
            let us = frame(df.column("user").and_then(|c| c.cast(&polars::prelude::DataType::UInt32)), &path)?;
            let rt = frame(df.column("return").and_then(|c| c.cast(&polars::prelude::DataType::Float64)), &path)?;
            let (ep, us, rt) =
                (frame(ep.u32().cloned(), &path)?, frame(us.u32().cloned(), &path)?, frame(rt.f64().cloned(), &path)?);
            for i in 0..df.height() {
                if pol.get(i) == Some(trained.as_str()) {
                    if let (Some(e), Some(u), Some(v)) = (ep.get(i), us.get(i), rt.get(i)) {
                        m.insert((r.summary.seed, e), (u, v));
                    }
                }
            }
        }
        Ok(m)
    };
    let (ra, rb) = (arm_rows(a)?, arm_rows(b)?);
    // ((seed, episode), arm A's (user, return), arm B's).
    type Pair = ((u64, u32), (u32, f64), (u32, f64));
    let pairs: Vec<Pair> = ra.iter().filter_map(|(k, va)| rb.get(k).map(|vb| (*k, *va, *vb))).collect();
    if pairs.is_empty() {
        return Err(Error::Other(format!("`{a}` and `{b}` share no (seed, evaluation episode): run both with the same seeds")));
    }
    let xa: Vec<f64> = pairs.iter().map(|p| p.1 .1).collect();
    let xb: Vec<f64> = pairs.iter().map(|p| p.2 .1).collect();
    let d: Vec<f64> = pairs.iter().map(|p| p.2 .1 - p.1 .1).collect();
    let ((mean_a, ci95_a), (mean_b, ci95_b), (diff, diff_ci95)) =
        (mean_ci(&xa, Critical::StudentT), mean_ci(&xb, Critical::StudentT), mean_ci(&d, Critical::StudentT));

    let csv = dir.join("ab.csv");
    let mut df = frame(
        polars::df!(
            "seed" => pairs.iter().map(|p| p.0 .0).collect::<Vec<_>>(),
            "episode" => pairs.iter().map(|p| p.0 .1).collect::<Vec<_>>(),
            "user" => pairs.iter().map(|p| p.1 .0).collect::<Vec<_>>(),
            "return_a" => xa.clone(),
            "return_b" => xb.clone(),
            "diff_b_minus_a" => d.clone(),
        ),
        &csv,
    )?;
    records::write_csv(&mut df, &csv)?;
    let md = dir.join("ab.md");
    let verdict = if diff - diff_ci95 > 0.0 {
        "B is better (the interval excludes 0)"
    } else if diff + diff_ci95 < 0.0 {
        "A is better (the interval excludes 0)"
    } else {
        "no significant difference (the interval contains 0)"
    };
    let text = format!(
        "# A/B: {a} vs {b}\n\nA = `{a}`, B = `{b}`; {} paired evaluation episodes (same seed and \
         episode: same user, same random numbers).\n\n| arm | mean return | 95% interval |\n|---|---|---|\n\
         | A | {} | ± {} |\n| B | {} | ± {} |\n| B - A (paired) | {} | ± {} |\n\n{verdict}. Per-episode log: ab.csv.\n",
        pairs.len(),
        fmt(mean_a),
        fmt(ci95_a),
        fmt(mean_b),
        fmt(ci95_b),
        fmt(diff),
        fmt(diff_ci95)
    );
    std::fs::write(&md, text).map_err(Error::io("write", &md))?;
    Ok(AbOutcome {
        a: a.into(),
        b: b.into(),
        pairs: pairs.len(),
        mean_a,
        ci95_a,
        mean_b,
        ci95_b,
        diff,
        diff_ci95,
        files: vec![md, csv],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_interval_of_a_known_sample() {
        let (m, c) = mean_ci(&[1.0, 2.0, 3.0, 4.0], Critical::StudentT);
        assert_eq!(m, 2.5);
        // sd = 1.291, se = 0.6455, t(3) = 3.182.
        assert!((c - 3.182 * 0.645_497).abs() < 1e-3);
        assert!(mean_ci(&[1.0], Critical::StudentT).1.is_nan());
    }
}

//! `fypsim ope`: off-policy estimators against the simulator's truth.

use crate::args::ConfigArgs;
use anyhow::{bail, Result};
use fypsim::ope::estimators::{Estimand, Options};
use fypsim::ope::{PolicySpec, Request};
use std::path::Path;

#[allow(clippy::too_many_arguments)]
pub(crate) fn cmd_ope(
    config: &ConfigArgs,
    (logging, saved): (Option<&str>, Option<&Path>),
    targets: &[String],
    sessions: usize,
    sizes: Option<&[usize]>,
    (bootstrap, ridge, switch_tau, shrinkage_lambda): (usize, f64, Option<f64>, Option<f64>),
    truth_max: usize,
    out: Option<&Path>,
) -> Result<()> {
    if saved.is_some() && (!config.overrides.is_empty() || config.config != Path::new("configs/default.toml")) {
        bail!("--log uses the saved log's own config (its config.toml): give no CONFIG or --set with it");
    }
    let checked = match saved {
        Some(dir) => fypsim::config::Config::load(&dir.join(fypsim::ope::CONFIG_FILE), &[])
            .map_err(|e| anyhow::anyhow!("{} is not the folder of a `fypsim ope` log ({e})", dir.display()))?,
        None => config.load()?,
    };
    if !(ridge.is_finite() && ridge > 0.0) {
        bail!("--ridge {ridge}: a finite number > 0");
    }
    for (flag, v, grid) in [
        ("--switch-tau", switch_tau, &fypsim::ope::estimators::TAU_GRID[..]),
        ("--shrinkage-lambda", shrinkage_lambda, &fypsim::ope::estimators::LAMBDA_GRID[..]),
    ] {
        if let Some(v) = v {
            if !grid.iter().any(|g| (g - v).abs() < 1e-12) {
                bail!("{flag} {v}: one of {grid:?}");
            }
        }
    }
    // Memory: about 2 KB a decision held, at most max_steps decisions a session.
    let per_session = checked.env.max_steps as f64 * 2048.0;
    let need = sessions as f64 * per_session;
    let have = fypsim::drive::preflight::physical_memory().unwrap_or(f64::INFINITY);
    if need > 0.8 * have {
        bail!(
            "--sessions {sessions}: the log could take up to {:.1} GB (env.max_steps = {} decisions a session), more than 80% of this machine's memory ({:.1} GB)",
            need / 1e9,
            checked.env.max_steps,
            have / 1e9
        );
    }
    let options =
        Options { ridge, switch_tau, shrinkage_lambda, bootstrap, seed: checked.seed, fqe_iterations: checked.env.max_steps };
    let targets: Vec<PolicySpec> = targets.iter().map(|t| PolicySpec::parse(t)).collect::<fypsim::Result<_>>()?;
    if let Some(saved) = saved {
        let dir = out.map(Path::to_path_buf).unwrap_or_else(|| saved.join("estimates"));
        let sizes = sizes.map(<[usize]>::to_vec).unwrap_or_default();
        let report =
            fypsim::ope::run_on_saved(saved, &targets, &sizes, &options, truth_max, &dir, &mut |s| eprintln!("fypsim ope: {s}"))?;
        print_report(&report, "replaying");
        println!("results: {} (ope.csv, ope.json, ope.png)", dir.display());
        return Ok(());
    }
    let logging = logging.expect("clap requires --logging without --log");
    let request = Request {
        logging: PolicySpec::parse(logging)?,
        targets,
        sessions,
        sizes: sizes.map(<[usize]>::to_vec).unwrap_or_else(|| vec![sessions / 100, sessions / 10]),
        options,
        truth_max,
    };
    let dir = out.map(Path::to_path_buf).unwrap_or_else(|| Path::new("results").join("ope").join(&checked.name));
    let report = fypsim::ope::run(&checked, &request, &dir, &mut |s| eprintln!("fypsim ope: {s}"))?;
    print_report(&report, "logging");
    println!("results: {} (ope.csv, ope.json, ope.png, log.parquet)", dir.display());
    Ok(())
}

/// The estimates of every target on the whole log, against the truths; `what` names the
/// first stage's time (logging, or replaying a saved log).
fn print_report(report: &fypsim::ope::Report, what: &str) {
    println!(
        "{} sessions ({} decisions) logged under {} ({} seed {}); 95% bootstrap intervals over sessions ({} resamples)",
        report.sessions, report.decisions, report.logging, report.config, report.seed, report.bootstrap
    );
    for truth in &report.truths {
        println!(
            "target {}: truth V1 {:.4} (exact, on the logged decisions), V {:.4} ± {:.4} (on-policy, {} sessions{})",
            truth.target,
            truth.one_decision,
            truth.session,
            1.96 * truth.session_se,
            truth.sessions,
            if truth.precise_enough { "" } else { "; capped by --truth-max before its error reached a tenth of the estimators'" }
        );
        println!(
            "  {:<10} {:<12} {:>9}  {:>21}  {:>9}  {:>9}",
            "estimator", "estimand", "estimate", "95% interval", "ESS", "rel. err"
        );
        for r in report.rows.iter().filter(|r| r.target == truth.target && r.sessions == report.sessions) {
            let e = &r.estimate;
            println!(
                "  {:<10} {:<12} {:>9.4}  [{:>8.4}, {:>8.4}]  {:>9.0}  {:>+8.1}%{}",
                e.estimator,
                if e.estimand == Estimand::OneDecision { "V1" } else { "V" },
                e.value,
                e.ci_low,
                e.ci_high,
                e.ess,
                100.0 * r.relative_error,
                if e.setting.is_empty() { String::new() } else { format!("  ({})", e.setting) }
            );
        }
    }
    println!(
        "time: {what} {:.1} s, estimating {:.1} s, truth runs {:.1} s",
        report.logging_s, report.estimating_s, report.truth_s
    );
}

/// Shows the study's stages as lines and its logs as a bar.
struct StudyProgress {
    bar: indicatif::ProgressBar,
}

impl fypsim::ope::study::StudyObserver for StudyProgress {
    fn stage(&self, message: &str) {
        self.bar.finish_and_clear();
        self.bar.println(format!("fypsim ope-study: {message}"));
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!("fypsim ope-study: {message}");
        }
        self.bar.reset();
    }

    fn progress(&self, done: usize, total: usize) {
        self.bar.set_length(total as u64);
        self.bar.set_position(done as u64);
    }
}

pub(crate) fn cmd_ope_study(study: &Path, out: Option<&Path>) -> Result<()> {
    use fypsim::ope::study::{run_study, StudyFile};
    let file = StudyFile::load(study)?;
    let config_path = file.config_path(study);
    let config = fypsim::config::Config::load(&config_path, &[])?;
    let name = study.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "study".into());
    let dir = out.map(Path::to_path_buf).unwrap_or_else(|| Path::new("results").join("ope-study").join(&name));
    let bar = indicatif::ProgressBar::new(0);
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("[{bar:30.cyan/blue}] {pos}/{len} [{elapsed_precise}, about {eta} left]")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let report = run_study(&config, &file, &name, &dir, &StudyProgress { bar: bar.clone() })?;
    bar.finish_and_clear();
    println!(
        "study {} on {} (seed {}): logging {}; {} bootstrap resamples per estimate",
        name,
        report.config,
        report.seed,
        file.logging.join(", "),
        file.bootstrap
    );
    for t in &report.truths {
        println!("session truth of {}: V = {:.4} ± {:.4} ({} on-policy sessions)", t.target, t.value, 1.96 * t.se, t.sessions);
    }
    for logging in &file.logging {
        for target in &file.targets {
            println!("\nlogging {logging}, target {target}: relative RMSE (coverage of the 95% intervals) by log size");
            let mut head = format!("  {:<10} {:<3}", "estimator", "");
            for (s, l) in file.sizes.iter().zip(&file.logs) {
                head.push_str(&format!(" {:>19}", format!("{s} x{l}")));
            }
            println!("{head}");
            for (name, estimand) in fypsim::ope::estimators::NAMES {
                let mut line = format!("  {:<10} {:<3}", name, if estimand == Estimand::OneDecision { "V1" } else { "V" });
                for &s in &file.sizes {
                    match report
                        .cells
                        .iter()
                        .find(|c| &c.logging == logging && &c.target == target && c.sessions == s && c.estimator == name)
                    {
                        Some(c) => line.push_str(&format!(" {:>10.1}% ({:>4.0}%)", 100.0 * c.relative_rmse, 100.0 * c.coverage)),
                        None => line.push_str(&format!(" {:>19}", "-")),
                    }
                }
                println!("{line}");
            }
        }
    }
    println!(
        "compute: {:.0} s wall, {:.0} s processor time ({} logs reused from an earlier invocation)",
        report.wall_s, report.cpu_s, report.resumed_logs
    );
    println!("results: {} (study.csv, logs.csv, study.json, study-*.png, parts/, truth.json)", dir.display());
    Ok(())
}

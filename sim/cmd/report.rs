//! `fypsim report`: compare runs, or report an A/B decision log.

use anyhow::Result;
use std::path::Path;

pub(crate) fn cmd_report(dir: &Path, ab: Option<&[String]>) -> Result<()> {
    use fypsim::experiment::report::fmt;
    if let Some([a, b]) = ab {
        let o = fypsim::experiment::report::ab(dir, a, b)?;
        println!("A = {}: {} ± {}", o.a, fmt(o.mean_a), fmt(o.ci95_a));
        println!("B = {}: {} ± {}", o.b, fmt(o.mean_b), fmt(o.ci95_b));
        println!("B - A over {} paired episodes: {} ± {}", o.pairs, fmt(o.diff), fmt(o.diff_ci95));
        for f in &o.files {
            println!("wrote {}", f.display());
        }
        return Ok(());
    }
    let o = fypsim::experiment::report::report(dir)?;
    println!("{} runs in {} configurations", o.runs, o.rows.len());
    for r in &o.rows {
        println!(
            "  {:<50} {} seeds  return {} ± {}  oracle_fraction {}",
            r.label,
            r.seeds,
            fmt(r.mean_return),
            fmt(r.ci95),
            fmt(r.oracle_fraction)
        );
    }
    for f in &o.files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

pub(crate) fn cmd_report_ab_log(
    dir: &Path,
    (out, control, by_session): (Option<&Path>, Option<&str>, bool),
    targets: &[String],
    (config, overrides): (&Path, &[String]),
    bootstrap: usize,
) -> Result<()> {
    let ope = if targets.is_empty() {
        None
    } else {
        use fypsim::ope::estimators::{MAX_BOOTSTRAP, MIN_BOOTSTRAP};
        if !(MIN_BOOTSTRAP..=MAX_BOOTSTRAP).contains(&bootstrap) {
            anyhow::bail!("--bootstrap {bootstrap}: from {MIN_BOOTSTRAP} to {MAX_BOOTSTRAP}");
        }
        let config = fypsim::config::Config::load(config, overrides)?;
        let targets = targets.iter().map(|t| fypsim::ope::PolicySpec::parse(t)).collect::<fypsim::Result<Vec<_>>>()?;
        let options = fypsim::ope::estimators::Options {
            ridge: 1.0,
            switch_tau: None,
            shrinkage_lambda: None,
            bootstrap,
            seed: config.seed,
            fqe_iterations: config.env.max_steps,
        };
        Some(fypsim::serve::report::OpeRequest { config, targets, options })
    };
    let (report, files) = fypsim::serve::report::report(dir, out, ope.as_ref(), (control, by_session))?;
    print!("{}", fypsim::serve::report::markdown(&report).trim_start_matches("# A/B report\n\n"));
    for f in &files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

pub(crate) fn cmd_report_by_session(dir: &Path, reference: &str) -> Result<()> {
    let b = fypsim::experiment::fade::by_session(dir, reference)?;
    print!("{}", fypsim::experiment::fade::markdown(&b));
    for f in fypsim::experiment::fade::write(&b, dir)? {
        println!("wrote {}", f.display());
    }
    Ok(())
}

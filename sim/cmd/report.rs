//! `fypsim report`: compare runs, or report an A/B decision log.

use anyhow::Result;
use std::path::Path;

pub(crate) fn cmd_report(dir: &Path, ab: Option<&[String]>) -> Result<()> {
    if let Some([a, b]) = ab {
        let o = fypsim::experiment::report::ab(dir, a, b)?;
        println!("A = {}: {:.3} ± {:.3}", o.a, o.mean_a, o.ci95_a);
        println!("B = {}: {:.3} ± {:.3}", o.b, o.mean_b, o.ci95_b);
        println!("B - A over {} paired episodes: {:.3} ± {:.3}", o.pairs, o.diff, o.diff_ci95);
        for f in &o.files {
            println!("wrote {}", f.display());
        }
        return Ok(());
    }
    let o = fypsim::experiment::report::report(dir)?;
    println!("{} runs in {} configurations", o.runs, o.rows.len());
    for r in &o.rows {
        println!(
            "  {:<50} {} seeds  return {:.3} ± {:.3}  oracle_fraction {:.3}",
            r.label, r.seeds, r.mean_return, r.ci95, r.oracle_fraction
        );
    }
    for f in &o.files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

pub(crate) fn cmd_report_ab_log(dir: &Path, out: Option<&Path>) -> Result<()> {
    let (report, files) = fypsim::serve::report::report(dir, out)?;
    print!("{}", fypsim::serve::report::markdown(&report).trim_start_matches("# A/B report\n\n"));
    for f in &files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

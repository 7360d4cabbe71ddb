//! `fypsim eval`: a saved agent against the baselines.

use anyhow::{Context, Result};
use std::path::Path;

pub(crate) fn cmd_eval(dir: &Path, episodes: Option<usize>, choices: bool) -> Result<()> {
    if choices {
        let (path, records) = fypsim::experiment::run::eval_saved_choices(dir, episodes)?;
        let s = fypsim::drive::train::summarize_choices(&records, 5);
        println!("choices of the agent saved in {} over {} steps, scored with the true response model:", dir.display(), s.steps);
        println!("  shows a candidate of the best expected p on offer: {:.1}% of steps", 100.0 * s.oracle_match);
        println!("  mean shortfall in expected p per step: {:.4}", s.mean_shortfall);
        println!(
            "  a candidate of the user's interests was on offer at {:.1}% of steps, and shown at {:.1}% of those",
            100.0 * s.interest_on_offer,
            100.0 * s.interest_shown_when_offered
        );
        println!("  most frequent misses (best expected p on offer -> shown: share of steps):");
        for (best, shown, share) in &s.misses {
            println!("    {best:.3} -> {shown:.3}: {:.1}%", 100.0 * share);
        }
        println!("wrote {}", path.display());
    }
    let results = fypsim::experiment::run::eval_saved(dir, episodes)?;
    let n = results[0].episodes;
    println!("evaluation of the agent saved in {} ({n} episodes each, exploration off, common random numbers):", dir.display());
    let names: Vec<String> = results
        .iter()
        .enumerate()
        .map(|(k, e)| if k == 0 { format!("{} (saved)", e.policy) } else { e.policy.name().to_string() })
        .collect();
    for (name, e) in names.iter().zip(&results) {
        println!("  {:<14} {:>8.3} ± {:.3}", name, e.mean_return, e.ci95);
    }
    if let Some(f) = fypsim::experiment::run::oracle_fraction_of(&results) {
        println!("oracle_fraction: {f:.3}");
    }
    let path = dir.join(format!("eval_saved_{n}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&results)?).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

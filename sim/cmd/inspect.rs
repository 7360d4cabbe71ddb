//! `fypsim inspect`, `anatomy` and `world`: looking inside a config's world.

use crate::args::ConfigArgs;
use anyhow::Result;
use std::path::Path;

pub(crate) fn cmd_anatomy(config: &ConfigArgs, user: u64, policies: &str, episode: u64, out: &Path) -> Result<()> {
    use fypsim::config::PolicyKind;
    let checked = config.load()?;
    let kinds = policies
        .split(',')
        .map(|name| {
            PolicyKind::from_name(name.trim()).ok_or_else(|| {
                let names: Vec<&str> = PolicyKind::ALL.iter().filter(|k| !k.learns()).map(|k| k.name()).collect();
                anyhow::anyhow!("--policies: unknown policy `{}` (allowed: {})", name.trim(), names.join(", "))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let sessions = fypsim::tools::inspect::anatomy(&checked, user, &kinds, episode)?;
    std::fs::create_dir_all(out).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
    let csv = out.join("anatomy.csv");
    let mut text = String::from("policy,t,video,category,response,reward,watch_s,expected_p,satiation,quality,left\n");
    for (kind, steps) in &sessions {
        for s in steps {
            text += &format!(
                "{},{},{},{},{},{},{},{},{},{},{}\n",
                kind, s.t, s.video, s.category, s.response, s.reward, s.watch_s, s.expected_p, s.satiation, s.quality, s.left
            );
        }
    }
    std::fs::write(&csv, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", csv.display()))?;
    let series = |f: &dyn Fn(&[fypsim::tools::inspect::AnatomyStep], usize) -> f64| -> Vec<fypsim::output::plot::Series> {
        sessions
            .iter()
            .map(|(kind, steps)| fypsim::output::plot::Series {
                name: kind.name().to_string(),
                points: (0..steps.len()).map(|i| (i as f64, f(steps, i))).collect(),
            })
            .collect()
    };
    let png = out.join("anatomy.png");
    fypsim::output::plot::panels_plot(
        &png,
        &format!("{}: user {user}'s session under each policy (same random numbers)", checked.name),
        "step of the session",
        &[
            ("return so far", series(&|s, i| s[..=i].iter().map(|x| x.reward).sum())),
            ("E[p] of the shown video", series(&|s, i| s[i].expected_p)),
            ("exposure to its category", series(&|s, i| s[i].satiation)),
            ("its hidden quality", series(&|s, i| s[i].quality)),
        ],
    )?;
    for (kind, steps) in &sessions {
        let ret: f64 = steps.iter().map(|s| s.reward).sum();
        let watch: f64 = steps.iter().map(|s| s.watch_s).sum();
        println!("{:<14} {:>3} steps  return {ret:>7.3}  watched {watch:>6.1} s", kind.name(), steps.len());
    }
    println!("results: {} and {}", csv.display(), png.display());
    Ok(())
}

pub(crate) fn cmd_inspect(config: &ConfigArgs, user: u64) -> Result<()> {
    let checked = config.load()?;
    let report = fypsim::tools::inspect::inspect_user(&checked, user)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

pub(crate) fn cmd_world(config: &ConfigArgs, out: &Path) -> Result<()> {
    let checked = config.load()?;
    let world = fypsim::tools::inspect::write_world(&checked, out)?;
    println!(
        "{} users, {} videos, {} interactions written to {}",
        world.users.len(),
        world.videos.len(),
        world.history.len(),
        out.display()
    );
    Ok(())
}

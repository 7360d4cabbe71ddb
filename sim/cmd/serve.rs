//! `fypsim serve` and `fypsim traffic`: policies behind HTTP, and simulated users driving them.

use anyhow::{Context, Result};
use fypsim::config::Config;
use std::path::Path;

#[allow(clippy::too_many_arguments)]
pub(crate) fn cmd_serve(
    arms: &[String],
    split: Option<&str>,
    (host, port): (&String, u16),
    log: Option<&Path>,
    config: Option<&Path>,
    overrides: &[String],
    salt: &str,
    http: fypsim::serve::http::HttpOptions,
    learning_checkpoint_s: Option<f64>,
) -> Result<()> {
    use fypsim::serve::{parse_split, ArmSpec, ServeOptions, Source};
    let specs: Vec<ArmSpec> = arms.iter().map(|a| ArmSpec::parse(a)).collect::<fypsim::Result<_>>()?;
    let shares = split.map(|s| parse_split(s, specs.len())).transpose()?;
    let any_run = specs.iter().any(|a| matches!(a.source, Source::Run(_)));
    let config = match config {
        Some(path) => Some(Config::load(path, overrides)?),
        None if !any_run => Some(Config::load(Path::new("configs/default.toml"), overrides)?),
        None if !overrides.is_empty() => anyhow::bail!("--set needs --config when the world is a run folder's"),
        None => None,
    };
    if salt.is_empty() || salt.len() > 200 {
        anyhow::bail!("--salt: 1 to 200 characters");
    }
    // Resolves names and takes address literals alike.
    let addr: std::net::SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
        .map_err(|e| e.to_string())
        .and_then(|mut a| a.next().ok_or_else(|| "no address".into()))
        .map_err(|e| anyhow::anyhow!("--host {host}: not an address this machine can listen on ({e})"))?;
    if let Some(s) = learning_checkpoint_s {
        if !(s.is_finite() && (1.0..=86_400.0).contains(&s)) {
            anyhow::bail!("--learning-checkpoint {s}: from 1 to 86400 seconds");
        }
        if log.is_none() || !specs.iter().any(|a| a.learn) {
            eprintln!("note: --learning-checkpoint has no effect without --log and an arm that learns (`:learn`)");
        }
    }
    let learning_checkpoint_s = learning_checkpoint_s.unwrap_or(fypsim::serve::LEARNING_CHECKPOINT_EVERY.as_secs_f64());
    let opts = ServeOptions {
        arms: specs,
        shares,
        salt: salt.to_string(),
        config,
        log: log.map(Path::to_path_buf),
        learning_checkpoint_every: std::time::Duration::from_secs_f64(learning_checkpoint_s),
    };
    if log.is_none() {
        eprintln!("note: no --log DIR: decisions are not logged, so no A/B report can be made");
    }
    eprintln!("loading the world and the arms...");
    let stopped = fypsim::serve::http::serve(opts, addr, http, |bound, h| {
        let arms: Vec<String> = h.arms.iter().map(|a| format!("{}={} ({:.0}%)", a.name, a.version, 100.0 * a.share)).collect();
        println!(
            "world {} ({} users, {} videos); arms {}; salt \"{}\"",
            &h.world[..12],
            h.users,
            h.videos,
            arms.join(", "),
            h.salt
        );
        if let Some(l) = &h.log {
            println!("decision log: {l} ({} decisions awaiting feedback from before)", h.pending_feedback);
        }
        println!(
            "listening on http://{bound}  (POST /recommend, POST /feedback, GET /health, GET /metrics; Ctrl-C or SIGTERM stops)"
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
    })?;
    if stopped.cut {
        println!(
            "stopped after {} requests; connections still open after the {} s drain were cut (their decisions are logged)",
            stopped.requests,
            http.drain.as_secs_f64()
        );
    } else {
        println!("stopped after {} requests, none in flight", stopped.requests);
    }
    if let Some(l) = stopped.log {
        println!("decision log flushed: {}  (report: fypsim report --ab-log {})", l.display(), l.display());
    }
    Ok(())
}

pub(crate) fn cmd_traffic(
    opts: fypsim::serve::traffic::TrafficOptions,
    config: &Path,
    overrides: &[String],
    json: Option<&Path>,
    plan: Option<(usize, Option<&str>)>,
) -> Result<()> {
    let config = Config::load(config, overrides)?;
    if let Some((sessions, control)) = plan {
        return cmd_plan(&opts, &config, sessions, control, json);
    }
    // Where the figures go is checked before the run, not after it (the file is made
    // now and written at the end).
    let made = json.filter(|p| !p.exists());
    if let Some(path) = json {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("--json {}: cannot write there", path.display()))?;
    }
    let r = match fypsim::serve::traffic::drive(&opts, &config) {
        Ok(r) => r,
        Err(e) => {
            // No empty figures file left behind by a run that did not happen.
            if let Some(p) = made {
                let _ = std::fs::remove_file(p);
            }
            return Err(e.into());
        }
    };
    let how = match r.rate {
        Some(rate) => format!("open loop at {rate} recommendations/s"),
        None => format!("closed loop, concurrency {}", r.concurrency),
    };
    println!("{} users for {:.1} s, {how}", r.users, r.elapsed_s);
    println!(
        "{} recommendations ({:.0}/s), {} feedbacks; {:.0} requests/s in all; {} sessions ended",
        r.recommendations, r.recommendations_per_s, r.feedbacks, r.requests_per_s, r.sessions
    );
    for (name, l) in [("recommend", &r.recommend_latency), ("feedback", &r.feedback_latency)] {
        println!(
            "{name:<9} latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  (mean {:.3})",
            l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.mean_ms
        );
    }
    if let Some(l) = &r.dispatch_lag {
        println!("driver's lag behind its schedule ms: p50 {:.3}  p99 {:.3}  max {:.3}", l.p50_ms, l.p99_ms, l.max_ms);
    }
    println!("mean reward per recommendation (as the users' model paid it): {:.3}", r.mean_reward);
    if r.dropped > 0 {
        println!("{} arrivals found every user busy and were not sent: raise --users", r.dropped);
    }
    if r.users_exhausted > 0 {
        println!(
            "{} users had seen every video the feed can offer and stopped taking part (no session counted for them)",
            r.users_exhausted
        );
    }
    if !r.errors.is_empty() {
        let e: Vec<String> =
            r.errors.iter().map(|(k, v)| format!("{v} x {}", if *k == 0 { "no answer".into() } else { k.to_string() })).collect();
        println!("errors: {}; first: {}", e.join(", "), r.first_error.as_deref().unwrap_or(""));
    }
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&r)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("figures: {}", path.display());
    }
    Ok(())
}

/// `fypsim traffic --plan SESSIONS`: what the experiment can detect, before it runs.
fn cmd_plan(
    opts: &fypsim::serve::traffic::TrafficOptions,
    config: &fypsim::config::Checked,
    sessions: usize,
    control: Option<&str>,
    json: Option<&Path>,
) -> Result<()> {
    // Refused before the rehearsal is announced.
    fypsim::serve::traffic::check_plan_sessions(sessions)?;
    eprintln!("rehearsing the experiment in process ({} users, {sessions} sessions each, greedy in every arm)...", opts.users);
    let p = fypsim::serve::traffic::plan(opts, config, sessions, control)?;
    println!(
        "plan: {} users, {} sessions each; each arm against {} at p < {:.4}{}",
        p.users,
        p.sessions_per_user,
        p.control,
        p.level,
        if p.arms.len() > 2 { " (5% / comparisons, Bonferroni)" } else { "" }
    );
    if p.arms.len() < 2 {
        println!("one arm: there is nothing to compare it with");
    }
    println!("| arm | share | users | mde80 (reward / session) | power for a 5% difference |");
    println!("|---|---|---|---|---|");
    let control_users = p.arms.iter().find(|a| a.name == p.control).map_or(0, |a| a.users);
    for a in &p.arms {
        let (mde, power) = match (a.mde80, a.power_at_5_percent) {
            (Some(m), Some(w)) => (format!("{m:.3}"), format!("{:.0}%", 100.0 * w)),
            _ if a.name == p.control => ("control".into(), String::new()),
            _ if control_users < 2 => ("n/a (the control has fewer than 2 users)".into(), String::new()),
            _ => ("n/a (fewer than 2 users)".into(), String::new()),
        };
        println!("| {} | {:.0}% | {} | {mde} | {power} |", a.name, 100.0 * a.share, a.users);
    }
    if p.users_exhausted > 0 {
        println!(
            "{} of the {} users ran out of unseen videos before their last session: the rehearsal ran {} sessions, \
             not {}; the figures are for those",
            p.users_exhausted,
            p.users,
            p.sessions_run,
            p.users * p.sessions_per_user
        );
    }
    match p.reward_per_session {
        Some(mean) => println!(
            "mde80: the smallest true difference detected 80% of the time, from the spread of reward per session \
             across users in an A/A rehearsal of this world (mean {mean:.3} a session); arms whose policies spread \
             rewards more detect less"
        ),
        None => println!("the rehearsal ran no session: no figure can be given"),
    }
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&p)?;
        std::fs::write(path, text).with_context(|| format!("--json {}: cannot write there", path.display()))?;
        println!("plan: {}", path.display());
    }
    Ok(())
}

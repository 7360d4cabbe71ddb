//! Range checks of every config value. Each failure names the TOML key, the bad value and
//! what is allowed.

use std::collections::HashSet;
use std::fmt::Display;

use super::{Config, DecayShape, PolicyKind};
use crate::error::ConfigError;

fn invalid(key: &str, value: impl Display, allowed: &str) -> ConfigError {
    ConfigError::Invalid { key: key.into(), value: value.to_string(), allowed: allowed.into() }
}

fn positive(key: &str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(invalid(key, v, "a finite number > 0"))
    }
}

fn in_unit(key: &str, v: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(invalid(key, v, "a number in [0, 1]"))
    }
}

/// Magnitudes beyond which sums of thousands of values could overflow an f64 or a view
/// counter: every weight, score, reward and probability shift is at most this large.
pub const MAX_MAGNITUDE: f64 = 1e6;

/// A finite number of magnitude at most [`MAX_MAGNITUDE`].
fn moderate(key: &str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v.abs() <= MAX_MAGNITUDE {
        Ok(())
    } else {
        Err(invalid(key, v, "a number in [-1000000, 1000000] (larger values overflow the arithmetic)"))
    }
}

/// A finite number in [0, max].
fn in_range(key: &str, v: f64, max: f64, what: &str) -> Result<(), ConfigError> {
    if v.is_finite() && (0.0..=max).contains(&v) {
        Ok(())
    } else {
        Err(invalid(key, v, &format!("a number in [0, {max}] ({what})")))
    }
}

fn at_least(key: &str, v: usize, min: usize) -> Result<(), ConfigError> {
    if v >= min {
        Ok(())
    } else {
        Err(invalid(key, v, &format!("an integer >= {min}")))
    }
}

fn at_most(key: &str, v: usize, max: usize, what: &str) -> Result<(), ConfigError> {
    if v <= max {
        Ok(())
    } else {
        Err(invalid(key, v, &format!("an integer <= {max} ({what})")))
    }
}

fn distinct_names(key: &str, names: &[String]) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for n in names {
        if n.trim().is_empty() {
            return Err(invalid(key, format!("{names:?}"), "non-empty names"));
        }
        if !seen.insert(n) {
            return Err(invalid(key, format!("{names:?}"), &format!("distinct names; `{n}` repeats")));
        }
    }
    Ok(())
}

pub(super) fn validate(c: &Config) -> Result<(), ConfigError> {
    if c.name.is_empty() || !c.name.chars().all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch)) || c.name.starts_with('.')
    {
        return Err(invalid(
            "name",
            format!("{:?}", c.name),
            "a non-empty folder name of letters, digits, '-', '_' and '.', not starting with '.'",
        ));
    }
    world(c)?;
    history(c)?;
    dynamics(c)?;
    calendar(c)?;
    planner(c)?;
    train(c)?;
    dqn(c)?;
    dqn_inputs(c)?;
    bandit(c)?;
    output(c)?;
    Ok(())
}

/// The checks of the world and the response model.
fn world(c: &Config) -> Result<(), ConfigError> {
    let w = &c.world;
    at_least("world.categories", w.categories.len(), 2)?;
    distinct_names("world.categories", &w.categories)?;
    at_least("world.regions", w.regions.len(), 1)?;
    distinct_names("world.regions", &w.regions)?;
    at_least("world.genders", w.genders.len(), 1)?;
    distinct_names("world.genders", &w.genders)?;
    at_least("world.n_videos", w.n_videos, c.candidates.count.max(1) + 1)
        .map_err(|_| invalid("world.n_videos", w.n_videos, "an integer > candidates.count"))?;
    at_most("world.n_videos", w.n_videos, u32::MAX as usize, "video ids are 32-bit")?;
    at_least("world.n_creators", w.n_creators, 1)?;
    at_most("world.n_creators", w.n_creators, u32::MAX as usize, "creator ids are 32-bit")?;
    positive("world.video_duration_s", w.video_duration_s)?;
    in_range("world.video_duration_s", w.video_duration_s, 1e6, "seconds")?;
    in_range("world.initial_views_mean", w.initial_views_mean, 1e12, "view counts must not overflow")?;
    in_range("world.initial_views_std", w.initial_views_std, 1e12, "view counts must not overflow")?;
    at_least("world.n_users", w.n_users, 1)?;
    at_most("world.n_users", w.n_users, u32::MAX as usize, "user ids are 32-bit")?;
    if w.age_max > 1000 {
        return Err(invalid("world.age_max", w.age_max, "an integer <= 1000"));
    }
    if w.age_max <= w.age_min {
        return Err(invalid("world.age_max", w.age_max, &format!("an integer > world.age_min ({})", w.age_min)));
    }

    let r = &c.response;
    moderate("response.interest_boost", r.interest_boost)?;
    for (i, t) in r.regional_taste.iter().enumerate() {
        if !w.categories.contains(&t.category) {
            return Err(invalid(
                &format!("response.regional_taste[{i}].category"),
                format!("{:?}", t.category),
                &format!("one of world.categories {:?}", w.categories),
            ));
        }
        if !w.regions.contains(&t.region) {
            return Err(invalid(
                &format!("response.regional_taste[{i}].region"),
                format!("{:?}", t.region),
                &format!("one of world.regions {:?}", w.regions),
            ));
        }
        moderate(&format!("response.regional_taste[{i}].delta"), t.delta)?;
    }
    Ok(())
}

/// The checks of the logged history, the matrix scores, the candidates and the episodes.
fn history(c: &Config) -> Result<(), ConfigError> {
    let h = &c.history;
    in_range("history.interactions_mean", h.interactions_mean, 100_000.0, "interactions per user")?;
    in_range("history.interactions_std", h.interactions_std, 100_000.0, "interactions per user")?;
    at_most("history.interactions_min", h.interactions_min, 100_000, "interactions per user")?;
    moderate("history.like_boost", h.like_boost)?;
    moderate("history.skip_penalty", h.skip_penalty)?;
    in_range("history.session_gap_mean_s", h.session_gap_mean_s, 1e9, "seconds")?;
    in_range("history.session_gap_std_s", h.session_gap_std_s, 1e9, "seconds")?;
    in_range("history.zipf_exponent", h.zipf_exponent, 100.0, "a Zipf exponent")?;

    let s = &c.scores;
    moderate("scores.watched", s.watched)?;
    moderate("scores.liked", s.liked)?;
    moderate("scores.skipped", s.skipped)?;
    moderate("scores.other", s.other)?;

    let k = &c.candidates;
    at_least("candidates.count", k.count, 1)?;
    at_most("candidates.count", k.count, 1000, "the Q-network has one output per slot")?;
    moderate("candidates.w_similarity", k.w_similarity)?;
    moderate("candidates.w_popularity", k.w_popularity)?;
    moderate("candidates.w_interest", k.w_interest)?;
    moderate("candidates.popularity_scale", k.popularity_scale)?;
    at_least("candidates.neighbours", k.neighbours, 1)?;
    at_most("candidates.neighbours", k.neighbours, 100_000, "neighbours kept per video")?;

    let e = &c.env;
    at_least("env.max_steps", e.max_steps, 1)?;
    at_most("env.max_steps", e.max_steps, 1_000_000, "steps per episode")?;
    moderate("env.reward_watched", e.reward_watched)?;
    moderate("env.reward_liked", e.reward_liked)?;
    moderate("env.reward_skipped", e.reward_skipped)?;
    moderate("env.reward_session_end", e.reward_session_end)?;
    in_range("env.skip_time_min_s", e.skip_time_min_s, 1e6, "seconds")?;
    if !(e.skip_time_max_s.is_finite() && e.skip_time_max_s > e.skip_time_min_s && e.skip_time_max_s <= 1e6) {
        return Err(invalid(
            "env.skip_time_max_s",
            e.skip_time_max_s,
            &format!("a number > env.skip_time_min_s ({}) and <= 1000000 seconds", e.skip_time_min_s),
        ));
    }
    Ok(())
}

/// The checks of the dynamics of users with memory.
fn dynamics(c: &Config) -> Result<(), ConfigError> {
    let d = &c.dynamics;
    in_range("dynamics.satiation.strength", d.satiation.strength, 100.0, "shift lost per unit of exposure")?;
    positive("dynamics.satiation.half_life_s", d.satiation.half_life_s)?;
    in_range("dynamics.satiation.session_gap_s", d.satiation.session_gap_s, 1e9, "seconds")?;
    in_range("dynamics.fatigue.rate", d.fatigue.rate, 100.0, "leave hazard per step")?;
    in_unit("dynamics.drift.rate", d.drift.rate)?;
    in_range("dynamics.quality.sd", d.quality.sd, 100.0, "quality spread")?;
    moderate("dynamics.quality.clickbait", d.quality.clickbait)?;
    in_range("dynamics.quality.leave", d.quality.leave, 100.0, "leave hazard per unit of poor quality")?;
    moderate("dynamics.quality.watch", d.quality.watch)?;
    let b = &d.behaviour;
    let fixed = b.duration_min_s == 0.0 && b.duration_max_s == 0.0;
    if !fixed {
        positive("dynamics.behaviour.duration_min_s", b.duration_min_s)?;
        if !(b.duration_max_s.is_finite() && b.duration_max_s >= b.duration_min_s && b.duration_max_s <= 1e6) {
            return Err(invalid(
                "dynamics.behaviour.duration_max_s",
                b.duration_max_s,
                &format!("a number >= dynamics.behaviour.duration_min_s ({}) and <= 1000000 seconds", b.duration_min_s),
            ));
        }
        if !b.enabled {
            return Err(invalid(
                "dynamics.behaviour.duration_min_s",
                b.duration_min_s,
                "0 (every video lasts world.video_duration_s) unless dynamics.behaviour.enabled = true",
            ));
        }
    }
    moderate("dynamics.behaviour.watch_base", b.watch_base)?;
    in_unit("dynamics.behaviour.share_rate", b.share_rate)?;
    in_unit("dynamics.behaviour.like_rate", b.like_rate)?;
    in_range("dynamics.behaviour.leave_base", b.leave_base, 100.0, "leave hazard per step")?;
    in_range("dynamics.behaviour.leave_skip", b.leave_skip, 100.0, "leave hazard after a skip")?;
    in_unit("dynamics.behaviour.follow_rate", b.follow_rate)?;
    moderate("dynamics.behaviour.follow_boost", b.follow_boost)?;
    moderate("dynamics.behaviour.reward_watch_s", b.reward_watch_s)?;
    moderate("dynamics.behaviour.reward_share", b.reward_share)?;
    moderate("dynamics.behaviour.reward_follow", b.reward_follow)?;
    Ok(())
}

/// The checks of the calendar (days and weeks) and the worlds training runs in.
fn calendar(c: &Config) -> Result<(), ConfigError> {
    if c.train.train_world == super::EvalWorld::Fresh && c.train.sessions > 1 {
        return Err(invalid(
            "train.train_world",
            "\"fresh\"",
            "\"evolving\" when train.sessions > 1 (sessions in flight share one world)",
        ));
    }
    let cal = &c.calendar;
    at_most("calendar.days", cal.days, 36_500, "simulated days, 100 years")?;
    in_range("calendar.sessions_per_day", cal.sessions_per_day, 1_000.0, "sessions per user and day")?;
    if cal.days > 0 && cal.sessions_per_day <= 0.0 {
        return Err(invalid("calendar.sessions_per_day", cal.sessions_per_day, "a rate > 0 sessions per user and day"));
    }
    in_range("calendar.coupling", cal.coupling, 10.0, "the return hazard's sensitivity to satisfaction")?;
    moderate("calendar.reference", cal.reference)?;
    in_unit("calendar.memory", cal.memory)?;
    in_unit("calendar.rhythm", cal.rhythm)?;
    if !(0.0..24.0).contains(&cal.peak_hour) {
        return Err(invalid("calendar.peak_hour", cal.peak_hour, "an hour in [0, 24)"));
    }
    in_range("calendar.peak_hour_sd", cal.peak_hour_sd, 24.0, "hours")?;
    in_range("calendar.min_gap_s", cal.min_gap_s, 86_400.0 * 7.0, "seconds, at most a week")?;
    at_least("calendar.churn_days", cal.churn_days, 1)?;
    at_most("calendar.churn_days", cal.churn_days, 36_500, "days")?;
    in_range("calendar.reactivation_per_day", cal.reactivation_per_day, 100.0, "a rate per day")?;
    in_range("calendar.signups_per_day", cal.signups_per_day, 1e9, "new users per day")?;
    in_range("calendar.uploads_per_creator_day", cal.uploads_per_creator_day, 1e6, "new videos per creator and day")?;
    if cal.fresh_slots > c.candidates.count {
        return Err(invalid(
            "calendar.fresh_slots",
            cal.fresh_slots,
            &format!("at most candidates.count ({}) slots", c.candidates.count),
        ));
    }
    in_range("calendar.fresh_days", cal.fresh_days, 36_500.0, "days")?;
    if cal.fresh_slots > 0 && cal.fresh_days <= 0.0 {
        return Err(invalid("calendar.fresh_days", cal.fresh_days, "days > 0 when calendar.fresh_slots > 0"));
    }
    in_range("calendar.pay_per_view", cal.pay_per_view, 1e9, "money per view")?;
    at_most("calendar.train_runs", cal.train_runs, 100_000, "population runs")?;
    if cal.train_runs > 0 {
        if c.policy != PolicyKind::Dqn {
            return Err(invalid(
                "calendar.train_runs",
                cal.train_runs,
                "0 unless policy = \"dqn\" (only a learner learns across sessions)",
            ));
        }
        if cal.days == 0 {
            return Err(invalid(
                "calendar.train_runs",
                cal.train_runs,
                "0 unless calendar.days > 0 (each run lives that many days)",
            ));
        }
        if c.dqn.n_step != 1 {
            return Err(invalid("dqn.n_step", c.dqn.n_step, "1 with calendar.train_runs > 0 (users' steps interleave)"));
        }
    }
    in_unit("calendar.discount_per_day", cal.discount_per_day)?;
    moderate("calendar.return_reward", cal.return_reward)?;
    if let Some(k) = cal.baselines.iter().find(|&&k| k == PolicyKind::Dqn) {
        return Err(invalid(
            "calendar.baselines",
            k.name(),
            "baseline policies (the run's own policy always lives through the calendar)",
        ));
    }
    Ok(())
}

/// The checks of the planner baselines.
fn planner(c: &Config) -> Result<(), ConfigError> {
    let pl = &c.planner;
    at_least("planner.depth", pl.depth, 1)?;
    at_most("planner.depth", pl.depth, 10_000, "steps per rollout")?;
    at_least("planner.rollouts", pl.rollouts, 1)?;
    at_most("planner.rollouts", pl.rollouts, 100_000, "rollouts per candidate")?;
    in_unit("planner.gamma", pl.gamma)?;
    in_range("planner.churn_weight", pl.churn_weight, 1e6, "reward units per churn")?;
    at_most("planner.eval_episodes", pl.eval_episodes, 10_000_000, "evaluation episodes")?;
    Ok(())
}

/// The checks of the training budget and the baselines.
fn train(c: &Config) -> Result<(), ConfigError> {
    let t = &c.train;
    at_least("train.episodes", t.episodes, 1)?;
    at_most("train.episodes", t.episodes, 1_000_000_000, "training episodes")?;
    let mut seen = HashSet::new();
    if let Some(s) = t.seeds.iter().find(|s| !seen.insert(**s)) {
        return Err(invalid("train.seeds", s, "distinct seeds"));
    }
    if t.seeds.len() == 1 {
        return Err(invalid("train.seeds", "a single seed", "an empty list (use `seed`) or at least 2 seeds"));
    }
    at_least("train.eval_episodes", t.eval_episodes, 1)?;
    at_most("train.eval_episodes", t.eval_episodes, 10_000_000, "evaluation episodes per policy")?;
    at_least("train.moving_average", t.moving_average, 1)?;
    at_most("train.moving_average", t.moving_average, 1_000_000, "episodes")?;
    if !(1..=4096).contains(&t.sessions) {
        return Err(invalid("train.sessions", t.sessions, "an integer in 1..=4096"));
    }
    if t.threads > 1024 {
        return Err(invalid("train.threads", t.threads, "an integer in 0..=1024 (0 = one per core)"));
    }
    if t.sessions > 1 && t.checkpoint_every > 0 {
        return Err(invalid(
            "train.checkpoint_every",
            t.checkpoint_every,
            "0 when train.sessions > 1 (sessions in flight are not checkpointed; the final agent is saved)",
        ));
    }
    let mut seen = HashSet::new();
    if let Some(b) = t.baselines.iter().find(|b| !seen.insert(**b)) {
        return Err(invalid(
            "train.baselines",
            format!("{:?}", t.baselines.iter().map(|b| b.name()).collect::<Vec<_>>()),
            &format!("distinct baselines; \"{b}\" repeats"),
        ));
    }
    if t.baselines.contains(&PolicyKind::Dqn) {
        return Err(invalid(
            "train.baselines",
            "\"dqn\"",
            "baseline policies: \"random\", \"greedy\", \"most_viewed\", \"oracle\", \"myopic_oracle\", \"planner\", \"retention_planner\", and the bandits \"linucb\", \"thompson\", \"epsilon_greedy\"",
        ));
    }
    Ok(())
}

/// The checks of the contextual bandits, and their feature dimension where one is used.
fn bandit(c: &Config) -> Result<(), ConfigError> {
    let b = &c.bandit;
    in_range("bandit.alpha", b.alpha, MAX_MAGNITUDE, "LinUCB's width multiplier")?;
    positive("bandit.ridge", b.ridge)?;
    in_range("bandit.ridge", b.ridge, MAX_MAGNITUDE, "the ridge penalty: > 0")?;
    positive("bandit.prior_variance", b.prior_variance)?;
    in_range("bandit.prior_variance", b.prior_variance, MAX_MAGNITUDE, "Thompson sampling's posterior scale: > 0")?;
    in_unit("bandit.epsilon", b.epsilon)?;
    at_most("bandit.propensity_draws", b.propensity_draws, 1_000_000, "Monte Carlo draws per decision")?;
    let used = c.policy.is_bandit() || c.train.baselines.iter().any(|k| k.is_bandit());
    let per_slot = super::features::BASE.len()
        + super::features::Logged::ALL.iter().filter(|l| c.dqn.candidate_features.iter().any(|f| f == l.name())).count();
    let d = super::features::bandit_dimension(per_slot, c.world.categories.len(), c.world.regions.len());
    if used && d > super::features::BANDIT_MAX_DIM {
        return Err(invalid(
            "bandit",
            format!(
                "a feature dimension of {d} ({} categories, {} regions, {per_slot} numbers per candidate)",
                c.world.categories.len(),
                c.world.regions.len()
            ),
            &format!(
                "at most {} features: 5 + numbers per candidate + categories x (regions + 2); fewer world.categories, world.regions or dqn.candidate_features",
                super::features::BANDIT_MAX_DIM
            ),
        ));
    }
    if let Some(k) = c.calendar.baselines.iter().find(|k| k.is_bandit()) {
        return Err(invalid(
            "calendar.baselines",
            k.name(),
            "policies that do not learn (a bandit lives through the calendar as the run's own policy: `policy = \"linucb\"`)",
        ));
    }
    Ok(())
}

/// The checks of the DQN: its network, optimiser and replay.
fn dqn(c: &Config) -> Result<(), ConfigError> {
    let d = &c.dqn;
    if d.hidden.is_empty() || d.hidden.iter().any(|&h| h == 0 || h > 65_536) {
        return Err(invalid("dqn.hidden", format!("{:?}", d.hidden), "a non-empty list of layer widths in 1..=65536"));
    }
    positive("dqn.lr", d.lr)?;
    if let Some(decay) = &d.lr_decay {
        if !(decay.end > 0.0 && decay.end <= d.lr) {
            return Err(invalid("dqn.lr_decay.end", decay.end, &format!("a learning rate in (0, dqn.lr = {}]", d.lr)));
        }
        at_least("dqn.lr_decay.episodes", decay.episodes, 1)?;
        at_most("dqn.lr_decay.from_episode", decay.from_episode, 1_000_000_000, "episodes")?;
        at_most("dqn.lr_decay.episodes", decay.episodes, 1_000_000_000, "episodes")?;
    }
    at_most("dqn.batch_size", d.batch_size, 1_000_000, "transitions per batch")?;
    at_most("dqn.replay_capacity", d.replay_capacity, 1_000_000_000, "transitions")?;
    in_unit("dqn.gamma", d.gamma)?;
    at_least("dqn.batch_size", d.batch_size, 1)?;
    at_least("dqn.replay_capacity", d.replay_capacity, d.batch_size).map_err(|_| {
        invalid("dqn.replay_capacity", d.replay_capacity, &format!("an integer >= dqn.batch_size ({})", d.batch_size))
    })?;
    at_least("dqn.train_every", d.train_every, 1)?;
    at_least("dqn.n_step", d.n_step, 1)?;
    at_most("dqn.n_step", d.n_step, 1000, "steps")?;
    at_least("dqn.gradient_steps", d.gradient_steps, 1)?;
    at_most("dqn.gradient_steps", d.gradient_steps, 1000, "updates per training event")?;
    at_least("dqn.target_update_every", d.target_update_every, 1)?;
    if !(d.tau > 0.0 && d.tau <= 1.0) {
        return Err(invalid("dqn.tau", d.tau, "a number in (0, 1]"));
    }
    in_range("dqn.grad_clip", d.grad_clip, MAX_MAGNITUDE, "a gradient norm; 0 turns clipping off")?;
    at_least("dqn.threads", d.threads, 1)?;
    at_most("dqn.threads", d.threads, 1024, "CPU threads")?;
    Ok(())
}

/// The checks of the DQN's inputs, exploration and embeddings.
fn dqn_inputs(c: &Config) -> Result<(), ConfigError> {
    let d = &c.dqn;
    if !(1..=256).contains(&d.session_window) {
        return Err(invalid("dqn.session_window", d.session_window, "1 to 256 steps"));
    }
    if !(1..=1024).contains(&d.session_hidden) {
        return Err(invalid("dqn.session_hidden", d.session_hidden, "1 to 1024"));
    }
    for f in &d.candidate_features {
        if !super::CANDIDATE_FEATURES.contains(&f.as_str()) {
            return Err(invalid(
                "dqn.candidate_features",
                format!("{f:?}"),
                &format!("names from {:?}", super::CANDIDATE_FEATURES),
            ));
        }
    }
    if c.dynamics.is_off() {
        let needs_logs = ["watch_rate", "completion", "exit_rate", "mean_completion", "logged_views"];
        if let Some(f) = d.candidate_features.iter().find(|f| needs_logs.contains(&f.as_str())) {
            let (last, rest) = needs_logs.split_last().expect("a non-empty list");
            let names: Vec<String> = rest.iter().map(|n| format!("{n:?}")).collect();
            return Err(invalid(
                "dqn.candidate_features",
                format!("{f:?}"),
                &format!(
                    "{} and {last:?} only with a [dynamics] section on (the per-video logs they read are kept then)",
                    names.join(", ")
                ),
            ));
        }
    }
    let eps = &d.epsilon;
    in_unit("dqn.epsilon.start", eps.start)?;
    in_unit("dqn.epsilon.end", eps.end)?;
    if eps.end > eps.start {
        return Err(invalid("dqn.epsilon.end", eps.end, &format!("a number <= dqn.epsilon.start ({})", eps.start)));
    }
    match eps.decay {
        DecayShape::Exponential => {
            if !(eps.rate > 0.0 && eps.rate <= 1.0) {
                return Err(invalid("dqn.epsilon.rate", eps.rate, "a number in (0, 1]"));
            }
        }
        DecayShape::Linear => at_least("dqn.epsilon.linear_units", eps.linear_units, 1)?,
    }

    let m = &d.embeddings;
    for (key, v) in [
        ("dqn.embeddings.gender", m.gender),
        ("dqn.embeddings.region", m.region),
        ("dqn.embeddings.interest", m.interest),
        ("dqn.embeddings.last_category", m.last_category),
        ("dqn.embeddings.last_action", m.last_action),
    ] {
        at_least(key, v, 1)?;
        at_most(key, v, 1024, "embedding width")?;
    }
    at_most("dqn.embeddings.candidate_category", m.candidate_category, 1024, "embedding width")?;
    at_most("dqn.embeddings.region_category", m.region_category, 1024, "embedding width")?;
    at_most("dqn.embeddings.video", m.video, 1024, "embedding width")?;
    Ok(())
}

/// The checks of the outputs.
fn output(c: &Config) -> Result<(), ConfigError> {
    if c.output.results_dir.trim().is_empty() {
        return Err(invalid("output.results_dir", "\"\"", "a folder path"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    fn err(text: &str) -> String {
        Config::from_toml_str(text, &[]).unwrap_err().to_string()
    }

    #[test]
    fn bandit_settings_out_of_range_are_refused_by_key() {
        for (text, key) in [
            ("[bandit]\nalpha = -1.0\n", "`bandit.alpha`"),
            ("[bandit]\nridge = 0.0\n", "`bandit.ridge`"),
            ("[bandit]\nridge = -2.0\n", "`bandit.ridge`"),
            ("[bandit]\nprior_variance = 0.0\n", "`bandit.prior_variance`"),
            ("[bandit]\nepsilon = 1.5\n", "`bandit.epsilon`"),
            ("[bandit]\npropensity_draws = 2000000\n", "`bandit.propensity_draws`"),
            ("[calendar]\ndays = 2\nbaselines = [\"linucb\"]\n", "`calendar.baselines`"),
        ] {
            let m = err(text);
            assert!(m.contains(key), "{text}: {m}");
        }
        // 5 + 4 + 12 x (3 + 2) = 69 features: over the bound once a bandit is used.
        let wide = "[world]\ncategories = [\"comedy\",\"educational\",\"news\",\"food\",\"politics\",\"animals\",\"tech\",\"fashion\",\"i\",\"j\",\"k\",\"l\"]\n";
        assert!(Config::from_toml_str(wide, &[]).is_ok());
        let m = err(&format!("policy = \"linucb\"\n{wide}"));
        assert!(m.contains("`bandit`") && m.contains("69") && m.contains("at most 64"), "{m}");
        let m = err(&format!("[train]\nbaselines = [\"thompson\"]\n{wide}"));
        assert!(m.contains("69"), "{m}");
        assert!(Config::from_toml_str("policy = \"linucb\"\n", &[]).is_ok());
    }

    #[test]
    fn errors_name_key_value_and_allowed_range() {
        let m = err("[dqn]\nlr = -1.0\n");
        assert!(m.contains("`dqn.lr`") && m.contains("-1") && m.contains("> 0"), "{m}");
        let m = err("[dqn]\ngamma = 1.5\n");
        assert!(m.contains("`dqn.gamma`") && m.contains("[0, 1]"), "{m}");
        let m = err("[world]\nage_min = 30\nage_max = 20\n");
        assert!(m.contains("`world.age_max`"), "{m}");
        let m = err("[[response.regional_taste]]\ncategory = \"cats\"\nregion = \"west\"\ndelta = 0.1\n");
        assert!(m.contains("regional_taste[0].category") && m.contains("cats"), "{m}");
        let m = err("[world]\nn_videos = 5\n");
        assert!(m.contains("`world.n_videos`"), "{m}");
        let m = err("[dqn]\nlr = 0.001\n[dqn.lr_decay]\nend = 0.01\nepisodes = 100\n");
        assert!(m.contains("`dqn.lr_decay.end`") && m.contains("(0, dqn.lr = 0.001]"), "{m}");
        let m = err("[calendar]\ndays = 7\nrhythm = 1.5\n");
        assert!(m.contains("`calendar.rhythm`") && m.contains("[0, 1]"), "{m}");
        let m = err("[calendar]\ndays = 7\nbaselines = [\"dqn\"]\n");
        assert!(m.contains("`calendar.baselines`"), "{m}");
        let m = err("[calendar]\ndays = 7\nsessions_per_day = 0.0\n");
        assert!(m.contains("`calendar.sessions_per_day`"), "{m}");
        let m = err("[calendar]\ndays = 7\nfresh_slots = 11\n");
        assert!(m.contains("`calendar.fresh_slots`") && m.contains("candidates.count (10)"), "{m}");
        let m = err("[calendar]\ndays = 7\nsignups_per_day = -1.0\n");
        assert!(m.contains("`calendar.signups_per_day`"), "{m}");
        let m = err("policy = \"greedy\"\n[calendar]\ndays = 7\ntrain_runs = 2\n");
        assert!(m.contains("`calendar.train_runs`") && m.contains("dqn"), "{m}");
        let m = err("[calendar]\ntrain_runs = 2\n");
        assert!(m.contains("`calendar.train_runs`") && m.contains("calendar.days"), "{m}");
        let m = err("[calendar]\ndays = 7\ntrain_runs = 2\n[dqn]\nn_step = 3\n");
        assert!(m.contains("`dqn.n_step`"), "{m}");
        let m = err("[calendar]\ndays = 7\ndiscount_per_day = 1.5\n");
        assert!(m.contains("`calendar.discount_per_day`"), "{m}");
        let m = err("[calendar]\ndays = 7\nuploads_per_creator_day = inf\n");
        assert!(m.contains("`calendar.uploads_per_creator_day`"), "{m}");
        let m = err("[dqn.lr_decay]\nend = 0.0001\n");
        assert!(m.contains("episodes"), "{m}");
        let m = err("[dqn.epsilon]\nstart = 0.1\nend = 0.5\n");
        assert!(m.contains("`dqn.epsilon.end`"), "{m}");
        let m = err("name = \"../x\"\n");
        assert!(m.contains("`name`"), "{m}");
        let m = err("[train]\nbaselines = [\"dqn\"]\n");
        assert!(m.contains("`train.baselines`"), "{m}");
    }

    #[test]
    fn wrong_types_and_enum_values_are_reported() {
        let m = err("seed = \"abc\"\n");
        assert!(m.contains("seed") || m.contains("invalid type"), "{m}");
        let m = err("policy = \"psychic\"\n");
        assert!(m.contains("psychic") && m.contains("dqn"), "{m}");
        let m = err("[dqn\nlr = 1\n");
        assert!(m.contains("malformed"), "{m}");
    }
}

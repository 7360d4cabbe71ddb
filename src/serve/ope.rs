//! Off-policy evaluation on a served experiment's decision log (docs/serving.md: Off-policy
//! evaluation of a served log): estimates of how a policy the experiment did not serve
//! would have done, from an arm that logged exact propensities (an arm served with a
//! mixture, `@epsilon=E` or `@softmax=T`).
//!
//! The log holds each decision's candidates, choice and propensity, not the observation a
//! target needs: the log is replayed in order through a fresh service of the same world
//! (each decision's session opened or continued as it was, each outcome applied to the
//! matrix as it was), which rebuilds every decision's observation. A decision whose
//! rebuilt candidates differ from the logged ones stops the replay with an error: the
//! estimates would be of other states.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::log::{Experiment, Record};
use super::{refuse_truth_readers, ServeOptions, Service};
use crate::agent::make_policy;
use crate::config::{Checked, PolicyKind};
use crate::ope::estimators::{self, Estimate, Options};
use crate::ope::{Base, LoggedDecision, Mix, OpeLog, PolicySpec, SpecPolicy};
use crate::{Error, Result};

/// One arm's decisions, rebuilt: sessions of decisions with their observations.
pub struct ArmLog {
    pub arm: String,
    /// The arm's version as `experiment.json` records it (`greedy@epsilon=0.1@fypsim-…`).
    pub version: String,
    pub log: OpeLog,
    /// Decisions still awaiting their outcome (left out, with what followed them).
    pub awaiting: usize,
    /// Why the arm's log supports no other policy; None if it does.
    pub refused: Option<String>,
}

/// The arm's logging policy as its version names it: a servable baseline, with its
/// mixture. None for a run folder's agent (the log does not say where its folder is).
fn logging_policy(version: &str, config: &Checked) -> Result<(Option<SpecPolicy>, Mix)> {
    let parts: Vec<&str> = version.split('@').collect();
    let mix = match parts.len() {
        3 => Mix::parse(parts[1]).map_err(|why| Error::Other(format!("arm version `{version}`: {why}")))?,
        _ => Mix::Plain,
    };
    let policy = match PolicyKind::from_name(parts[0]) {
        Some(kind) if super::SERVABLE_BASELINES.contains(&kind) => {
            Some(SpecPolicy::wrap(make_policy(kind, config)?, mix, version.to_string()))
        }
        _ => None,
    };
    Ok((policy, mix))
}

/// Why an arm's log cannot support estimates of another policy, if it cannot.
fn refusal(arm: &str, version: &str, mix: Mix, propensities: &[f64]) -> Option<String> {
    if propensities.is_empty() {
        return Some(format!("arm {arm} has no decision with its outcome"));
    }
    if propensities.iter().all(|&p| p == 1.0) {
        return Some(format!(
            "arm {arm} ({version}) logged propensity 1 for every decision: a deterministic policy's log shows nothing \
             of any other choice; serve the arm with @epsilon=E or @softmax=T to log for off-policy evaluation"
        ));
    }
    if let Some(p) = propensities.iter().find(|p| !(p.is_finite() && **p > 0.0 && **p <= 1.0)) {
        return Some(format!("arm {arm} ({version}) logged a propensity of {p}: only exact propensities in (0, 1] can weight"));
    }
    let random = version.split('@').next() == Some(PolicyKind::Random.name());
    let mixed = match mix {
        Mix::Plain => false,
        Mix::Epsilon(e) => e > 0.0,
        Mix::Softmax(_) => true,
    };
    if !mixed && !random {
        return Some(format!(
            "arm {arm} ({version}) draws without a mixture: its propensities do not make every candidate possible; \
             serve it with @epsilon=E (E > 0) or @softmax=T"
        ));
    }
    None
}

/// Replays `records` in order through a fresh service of `config`'s world (which must be
/// the experiment's) and returns each arm's decisions with their rebuilt observations.
pub fn replay(config: &Checked, experiment: &Experiment, records: &[Record]) -> Result<Vec<ArmLog>> {
    let mut service = Service::for_replay(&ServeOptions::stand_in(&experiment.arms, &experiment.salt, config))?;
    if service.fingerprint != experiment.world {
        return Err(Error::Other(format!(
            "the log's world ({}) is not the config's ({}): give the config the server was started with (--config, --set)",
            experiment.world.chars().take(12).collect::<String>(),
            service.fingerprint.chars().take(12).collect::<String>()
        )));
    }
    let mut logging = Vec::new();
    for a in &experiment.arms {
        logging.push(logging_policy(&a.version, config)?);
    }
    // Per arm: sessions in order of their first decision, keyed by (user, session); per
    // logged request id, where its decision is. Shared by the two callbacks.
    struct Built {
        sessions: Vec<Vec<Vec<LoggedDecision>>>,
        rewarded: Vec<Vec<Vec<bool>>>,
        session_of: HashMap<(u32, u32), (usize, usize)>,
        at: HashMap<String, (usize, usize, usize)>,
    }
    let built = std::cell::RefCell::new(Built {
        sessions: experiment.arms.iter().map(|_| Vec::new()).collect(),
        rewarded: experiment.arms.iter().map(|_| Vec::new()).collect(),
        session_of: HashMap::new(),
        at: HashMap::new(),
    });
    let names: Vec<String> = experiment.arms.iter().map(|a| a.name.clone()).collect();
    service.replay_in_order(
        &names,
        records,
        &mut |arm, d, obs, _| {
            let n = obs.candidates.len();
            let slots = obs.state.valid.len().max(n);
            let probs = match &logging[arm].0 {
                Some(policy) => {
                    let p = policy.probabilities(&obs)?;
                    if (p[d.slot] - d.propensity).abs() > 1e-9 * p[d.slot].max(1e-300) + 1e-12 {
                        return Err(Error::Other(format!(
                            "the log cannot be replayed at decision {}: the arm's policy ({}) gives the logged choice probability {} on the rebuilt state, the log {}",
                            d.request_id, experiment.arms[arm].version, p[d.slot], d.propensity
                        )));
                    }
                    p
                }
                // Only the chosen slot's probability is known; a mixture makes every
                // candidate's positive (NaN: positive, unknown).
                None => (0..slots).map(|k| if k == d.slot { d.propensity } else if k < n { f64::NAN } else { 0.0 }).collect(),
            };
            let b = &mut *built.borrow_mut();
            let (a, s) = *b.session_of.entry((d.user, d.session)).or_insert_with(|| {
                b.sessions[arm].push(Vec::new());
                b.rewarded[arm].push(Vec::new());
                (arm, b.sessions[arm].len() - 1)
            });
            b.sessions[a][s].push(LoggedDecision { obs, expected: Vec::new(), probs, slot: d.slot, reward: 0.0 });
            b.rewarded[a][s].push(false);
            let k = b.sessions[a][s].len() - 1;
            b.at.insert(d.request_id.clone(), (a, s, k));
            Ok(())
        },
        &mut |o, paid| {
            let b = &mut *built.borrow_mut();
            if let Some(&(a, s, k)) = b.at.get(&o.request_id) {
                b.sessions[a][s][k].reward = paid;
                b.rewarded[a][s][k] = true;
            }
            Ok(())
        },
    )?;
    let Built { mut sessions, rewarded, .. } = built.into_inner();
    let mut out = Vec::new();
    for (arm, meta) in experiment.arms.iter().enumerate() {
        let mut log = OpeLog { decisions: Vec::new(), starts: vec![0], first_episode: 0 };
        let mut awaiting = 0;
        for (session, paid) in std::mem::take(&mut sessions[arm]).into_iter().zip(&rewarded[arm]) {
            // A decision without its outcome ends what the log knows of its session.
            let known = paid.iter().take_while(|&&p| p).count();
            awaiting += session.len() - known;
            if known > 0 {
                log.decisions.extend(session.into_iter().take(known));
                log.starts.push(log.decisions.len());
            }
        }
        let propensities: Vec<f64> = log.decisions.iter().map(|d| d.probs[d.slot]).collect();
        let refused = refusal(&meta.name, &meta.version, logging[arm].1, &propensities);
        out.push(ArmLog { arm: meta.name.clone(), version: meta.version.clone(), log, awaiting, refused });
    }
    Ok(out)
}

/// One estimate of a target from one arm's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpeRow {
    pub arm: String,
    pub logging: String,
    pub target: String,
    pub sessions: usize,
    pub decisions: usize,
    #[serde(flatten)]
    pub estimate: Estimate,
}

/// What off-policy evaluation found on a served log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServedOpe {
    pub rows: Vec<OpeRow>,
    /// Arms whose logs support no estimate, with why.
    pub refused: Vec<String>,
    /// Decisions left out because their outcome never came.
    pub awaiting: usize,
    pub bootstrap: usize,
}

/// A target for a served log: what a service could run (truth readers are refused: the
/// replayed observations carry no user's latent state as it was), stating its
/// probabilities.
fn target_policy(spec: &PolicySpec, config: &Checked) -> Result<SpecPolicy> {
    let what = format!("--ope-target `{}`", spec.text);
    match &spec.base {
        Base::Kind(kind) => refuse_truth_readers(*kind, &what)?,
        Base::Run(dir) => refuse_truth_readers(crate::experiment::run::config_of_run(dir)?.policy, &what)?,
    }
    SpecPolicy::new(spec, config)
}

/// Every estimator of every target on each arm whose log supports it.
pub fn evaluate(
    config: &Checked,
    experiment: &Experiment,
    records: &[Record],
    targets: &[PolicySpec],
    opts: &Options,
) -> Result<ServedOpe> {
    if targets.is_empty() {
        return Err(Error::Other("name at least one --ope-target".into()));
    }
    let targets: Vec<SpecPolicy> = targets.iter().map(|t| target_policy(t, config)).collect::<Result<_>>()?;
    let arms = replay(config, experiment, records)?;
    let features = crate::agent::bandit::BanditFeatures::of(config);
    let mut out = ServedOpe { rows: Vec::new(), refused: Vec::new(), awaiting: 0, bootstrap: opts.bootstrap };
    for a in &arms {
        out.awaiting += a.awaiting;
        if let Some(why) = &a.refused {
            out.refused.push(why.clone());
            continue;
        }
        if a.log.sessions() < 2 {
            out.refused.push(format!("arm {} has {} session(s) with outcomes: at least 2 are needed", a.arm, a.log.sessions()));
            continue;
        }
        for t in &targets {
            let probs = crate::ope::target_probabilities(&a.log, t)?;
            for estimate in estimators::estimate(a.log.view(), &probs, &features, opts)? {
                out.rows.push(OpeRow {
                    arm: a.arm.clone(),
                    logging: a.version.clone(),
                    target: t.text.clone(),
                    sessions: a.log.sessions(),
                    decisions: a.log.decisions.len(),
                    estimate,
                });
            }
        }
    }
    if out.rows.is_empty() {
        return Err(Error::Other(format!("no arm's log supports off-policy evaluation: {}", out.refused.join("; "))));
    }
    Ok(out)
}

/// The markdown section of the A/B report.
pub fn markdown(o: &ServedOpe) -> String {
    let mut s = format!(
        "\n## Off-policy estimates\n\nPolicies not in the experiment, estimated from the logs of arms that logged exact \
         propensities (the log replayed in order; 95% bootstrap intervals over sessions, {} resamples; ESS: the \
         effective sample size of the weights).\n\n",
        o.bootstrap
    );
    for why in &o.refused {
        s += &format!("- not used: {why}\n");
    }
    if o.awaiting > 0 {
        s += &format!("- {} decisions awaiting feedback are left out (with their sessions' later steps)\n", o.awaiting);
    }
    s += "\n| arm | target | estimand | estimator | estimate | 95% interval | ESS |\n|---|---|---|---|---|---|---|\n";
    for r in &o.rows {
        let e = &r.estimate;
        let estimand = if e.estimand == estimators::Estimand::OneDecision { "one decision" } else { "session" };
        s += &format!(
            "| {} | {} | {estimand} | {} | {:.4} | [{:.4}, {:.4}] | {:.0} |\n",
            r.arm, r.target, e.estimator, e.value, e.ci_low, e.ci_high, e.ess
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::ope::estimators::Estimand;
    use crate::serve::traffic::rehearse;
    use crate::serve::{ArmSpec, RecommendRequest};

    const TOML: &str = "seed = 5\n[world]\nn_videos = 800\nn_users = 600\n[env]\nmax_steps = 10\n";

    /// A service of `arms` on the test world, unlogged.
    fn service(arms: &[&str]) -> (Checked, Service) {
        let config = Config::from_toml_str(TOML, &[]).unwrap();
        let opts = ServeOptions {
            arms: arms.iter().map(|a| ArmSpec::parse(a).unwrap()).collect(),
            shares: None,
            salt: "ope".into(),
            config: Some(config.clone()),
            log: None,
            learning_checkpoint_every: crate::serve::LEARNING_CHECKPOINT_EVERY,
        };
        (config, Service::new(&opts).unwrap())
    }

    /// An experiment of `arms` rehearsed in process: 600 users, 3 sessions each.
    fn served(arms: &[&str]) -> (Checked, Experiment, Vec<Record>) {
        let (config, mut service) = service(arms);
        let world = service.env().world.clone();
        let users: Vec<u32> = (0..600).collect();
        let records = rehearse(&mut service, &world, &users, 3, 2).unwrap();
        (config, service.experiment(), records)
    }

    fn options() -> Options {
        Options { ridge: 1.0, switch_tau: None, shrinkage_lambda: None, bootstrap: 100, seed: 1, fqe_iterations: 10 }
    }

    fn row<'a>(o: &'a ServedOpe, target: &str, estimator: &str) -> &'a Estimate {
        &o.rows.iter().find(|r| r.target == target && r.estimate.estimator == estimator).unwrap().estimate
    }

    /// Per arm: the mean reward per decision and per session, from the records.
    fn observed(records: &[Record], arm: &str) -> (f64, f64, f64) {
        let mut per_session: HashMap<(u32, u32), f64> = HashMap::new();
        let (mut sum, mut n) = (0.0, 0.0);
        for r in records {
            if let Record::Outcome(o) = r {
                if o.arm == arm {
                    *per_session.entry((o.user, o.session)).or_default() += o.reward;
                    sum += o.reward;
                    n += 1.0;
                }
            }
        }
        let v: Vec<f64> = per_session.values().copied().collect();
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let se = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0) / v.len() as f64).sqrt();
        (sum / n, m, se)
    }

    /// The replay rebuilds every decision (candidates and propensities checked on the way);
    /// a deterministic arm is refused; the arm's own policy as the target has weights 1,
    /// so IPS is the arm's mean reward per decision exactly and PDIS its mean return; the
    /// plain policy estimated from the mixture's log lands near what the other arm, which
    /// served it, observed.
    #[test]
    fn a_replayed_log_supports_estimates_of_other_policies() {
        let (config, exp, records) = served(&["A=greedy", "B=greedy@epsilon=0.3"]);
        let arms = replay(&config, &exp, &records).unwrap();
        let decisions = |arm: &str| records.iter().filter(|r| matches!(r, Record::Decision(d) if d.arm == arm)).count();
        assert_eq!(arms[0].log.decisions.len(), decisions("A"));
        assert_eq!(arms[1].log.decisions.len(), decisions("B"));
        assert!(arms[0].refused.as_deref().unwrap().contains("propensity 1 for every decision"));
        assert!(arms[1].refused.is_none(), "{:?}", arms[1].refused);

        let targets: Vec<PolicySpec> = ["greedy@epsilon=0.3", "greedy"].iter().map(|t| PolicySpec::parse(t).unwrap()).collect();
        let o = evaluate(&config, &exp, &records, &targets, &options()).unwrap();
        assert!(o.rows.iter().all(|r| r.arm == "B"));
        assert_eq!(o.refused.len(), 1);
        let (per_decision, per_session, _) = observed(&records, "B");
        let ips = row(&o, "greedy@epsilon=0.3", "ips");
        assert_eq!(ips.estimand, Estimand::OneDecision);
        assert!((ips.value - per_decision).abs() < 1e-9, "{} against {per_decision}", ips.value);
        let pdis = row(&o, "greedy@epsilon=0.3", "pdis");
        assert!((pdis.value - per_session).abs() < 1e-9, "{} against {per_session}", pdis.value);

        let (_, greedy, greedy_se) = observed(&records, "A");
        for estimator in ["pdis", "dr_seq"] {
            let e = row(&o, "greedy", estimator);
            let z = (e.value - greedy).abs() / (e.se.powi(2) + greedy_se.powi(2)).sqrt();
            assert!(z < 3.0, "{estimator}: {} ± {} against A's {greedy} ± {greedy_se}", e.value, e.se);
        }
        assert!(markdown(&o).contains("| B | greedy | session | pdis |"));
    }

    /// A log that is not what the service did stops the replay, saying where.
    #[test]
    fn a_log_that_does_not_replay_is_refused() {
        let (config, exp, records) = served(&["A=random", "B=greedy@softmax=1"]);
        let k = records.iter().position(|r| matches!(r, Record::Decision(d) if d.step == 3 && d.candidates.len() > 2)).unwrap();
        let mut swapped = records.clone();
        if let Record::Decision(d) = &mut swapped[k] {
            d.candidates.swap(1, 2);
        }
        let e = replay(&config, &exp, &swapped).err().unwrap().to_string();
        assert!(e.contains("rebuilt candidates differ") && e.contains("first difference at slot 1"), "{e}");

        let j = records.iter().position(|r| matches!(r, Record::Decision(d) if d.arm == "B" && d.step == 2)).unwrap();
        let mut scaled = records.clone();
        if let Record::Decision(d) = &mut scaled[j] {
            d.propensity *= 1.1;
        }
        let e = replay(&config, &exp, &scaled).err().unwrap().to_string();
        assert!(e.contains("gives the logged choice probability"), "{e}");

        let mut stranger = records.clone();
        if let Record::Decision(d) = &mut stranger[k] {
            d.user = 1_000_000;
        }
        let e = replay(&config, &exp, &stranger).err().unwrap().to_string();
        assert!(e.contains("the world has users 0..600"), "{e}");

        let other = Config::from_toml_str(&TOML.replace("seed = 5", "seed = 6"), &[]).unwrap();
        let e = replay(&other, &exp, &records).err().unwrap().to_string();
        assert!(e.contains("is not the config's"), "{e}");

        // Truth readers are no targets of a served log; a plain random arm supports estimates.
        let oracle = PolicySpec::parse("myopic_oracle@epsilon=0.1").unwrap();
        let e = evaluate(&config, &exp, &records, &[oracle], &options()).err().unwrap().to_string();
        assert!(e.contains("latent state"), "{e}");
        let o = evaluate(&config, &exp, &records, &[PolicySpec::parse("most_viewed@softmax=1").unwrap()], &options()).unwrap();
        assert_eq!(o.rows.iter().filter(|r| r.arm == "A").count(), estimators::NAMES.len());
        assert_eq!(o.rows.iter().filter(|r| r.arm == "B").count(), estimators::NAMES.len());
    }

    /// An arm that draws without a mixture (a plain Thompson-sampling run, say) is refused;
    /// a decision whose outcome never came ends what the log knows of its session.
    #[test]
    fn plain_stochastic_arms_are_refused_and_awaiting_decisions_end_their_session() {
        let why = refusal("T", "thompson@0123456789ab", Mix::Plain, &[0.4, 1.0, 0.7]).unwrap();
        assert!(why.contains("draws without a mixture"), "{why}");
        assert!(refusal("R", "random@fypsim-0.1.0", Mix::Plain, &[0.1, 0.1]).is_none());
        assert!(refusal("E", "greedy@epsilon=0@fypsim-0.1.0", Mix::Epsilon(0.0), &[1.0, 1.0]).unwrap().contains("propensity 1"));
        assert!(refusal("N", "greedy@softmax=1@x", Mix::Softmax(1.0), &[0.5, f64::NAN]).unwrap().contains("NaN"));

        // A user whose decision never had its feedback starts a new session: the log holds
        // that decision awaiting; the replay leaves it out and goes on.
        let (config, mut service) = service(&["A=random", "B=greedy@softmax=1"]);
        let world = service.env().world.clone();
        let users: Vec<u32> = (0..100).collect();
        let mut records = rehearse(&mut service, &world, &users, 2, 2).unwrap();
        service.capture();
        let req = RecommendRequest { user: 7, new_session: true, recent: None };
        let left = service.recommend(&req, 2_000_000).unwrap();
        let next = service.recommend(&req, 2_000_001).unwrap();
        service.feedback(&crate::serve::tests::watched(&next.request_id, Some(1.0)), 2_000_002).unwrap();
        records.extend(service.take_records());
        let arms = replay(&config, &service.experiment(), &records).unwrap();
        let a = service.experiment().arms.iter().position(|x| x.name == left.arm).unwrap();
        let in_arm = records.iter().filter(|r| matches!(r, Record::Decision(d) if d.arm == left.arm)).count();
        assert_eq!(arms[a].awaiting, 1);
        assert_eq!(arms[a].log.decisions.len(), in_arm - 1);
        assert_eq!(arms[1 - a].awaiting, 0);
    }
}

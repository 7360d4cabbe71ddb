//! Tests that catch a broken learner without flaking: TD targets on hand-made batches,
//! n-step returns, a tiny deterministic task that a correct DQN solves and a broken one
//! does not, and a checkpoint that resumes to the same agent.

use fypsim::agent::dqn::{DqnAgent, TargetRule};
use fypsim::agent::replay::{Batch, ReplayBuffer};
use fypsim::agent::{Policy, Transition};
use fypsim::config::{Checked, Config};
use fypsim::env::{cat, num, Observation, State};
use fypsim::rng::{stream, Stream};
use fypsim::world::User;
use std::path::Path;

const SLOTS: usize = 3;

fn config(extra: &[&str]) -> Checked {
    let mut o: Vec<String> = vec![
        "world.n_videos=50".into(),
        format!("candidates.count={SLOTS}"),
        "dqn.batch_size=16".into(),
        "dqn.learning_starts=16".into(),
    ];
    o.extend(extra.iter().map(|s| s.to_string()));
    Config::from_toml_str("", &o).unwrap()
}

/// A state whose candidates have the given categories (1-based ids in the state) and
/// step counter `t`.
fn state(categories: [i64; SLOTS], t: usize) -> State {
    let mut s = State {
        numeric: vec![0.0; State::n_numeric(SLOTS)],
        categorical: vec![0; State::n_categorical(SLOTS)],
        valid: vec![true; SLOTS],
    };
    s.numeric[num::WATCHED] = t as f32 / 4.0;
    for (k, c) in categories.iter().enumerate() {
        s.categorical[cat::CANDIDATES + k] = *c;
    }
    s
}

fn one_batch(t: &Transition, discount: f32) -> Batch {
    Batch {
        size: 1,
        numeric: t.state.numeric.clone(),
        categorical: t.state.categorical.clone(),
        actions: vec![t.action as i64],
        rewards: vec![t.reward as f32],
        next_numeric: t.next_state.numeric.clone(),
        next_categorical: t.next_state.categorical.clone(),
        next_valid: t.next_state.valid.iter().map(|&v| if v { 1.0 } else { 0.0 }).collect(),
        terminal: vec![if t.terminal { 1.0 } else { 0.0 }],
        discount: vec![discount],
    }
}

fn argmax(q: &[f32], valid: &[bool]) -> usize {
    (0..q.len())
        .filter(|&k| valid[k])
        .fold(None, |b: Option<usize>, k| match b {
            Some(b) if q[b] >= q[k] => Some(b),
            _ => Some(k),
        })
        .unwrap()
}

/// Trains the online network a little with a target network that stays put, so that the
/// online and target networks disagree.
fn diverged(extra: &[&str]) -> DqnAgent {
    let mut o = vec!["dqn.target_update_every=1000000"];
    o.extend_from_slice(extra);
    let mut a = DqnAgent::new(&config(&o)).unwrap();
    let mut r = ReplayBuffer::new(64, SLOTS);
    for k in 0..64 {
        let s = state([1 + (k % 3) as i64, 2, 3], k % 4);
        let t = Transition {
            state: s.clone(),
            action: k % 3,
            reward: (k % 5) as f64 - 2.0,
            next_state: s,
            terminal: false,
            episode_end: false,
            discount: 1.0,
        };
        r.push(&t, 0.95);
    }
    let mut rng = stream(3, Stream::Replay);
    for _ in 0..50 {
        a.update(&r.sample(16, &mut rng));
    }
    a
}

#[test]
fn td_target_terminal_and_bootstrapped_with_and_without_double_dqn() {
    for double in [false, true] {
        let a = diverged(&[if double { "dqn.double=true" } else { "dqn.double=false" }]);
        let s = state([1, 2, 3], 0);
        let mut next = state([3, 1, 2], 1);
        next.valid = vec![true, true, false]; // the last slot is empty: never the max
        let t = Transition {
            state: s,
            action: 1,
            reward: 0.7,
            next_state: next.clone(),
            terminal: false,
            episode_end: false,
            discount: 1.0,
        };

        // Terminal: the reward alone.
        let mut term = t.clone();
        term.terminal = true;
        assert!((a.td_targets(&one_batch(&term, 0.95))[0] - 0.7).abs() < 1e-6);

        // Non-terminal: r + discount * Q_target(s', a').
        let qt = a.target_q_values(&next);
        let qo = a.q_values(&next);
        let chosen = if double { argmax(&qo, &next.valid) } else { argmax(&qt, &next.valid) };
        let expected = 0.7 + 0.9 * qt[chosen];
        let got = a.td_targets(&one_batch(&t, 0.9))[0];
        assert!((got - expected).abs() < 1e-5, "double={double}: {got} vs {expected}");
    }
    // The two rules really differ once the networks disagree on the best next slot.
    let a = diverged(&["dqn.double=true"]);
    let mut differ = false;
    for k in 0..27 {
        let next = state([1 + k % 3, 1 + (k / 3) % 3, 1 + (k / 9) % 3], (k % 4) as usize);
        let (qt, qo) = (a.target_q_values(&next), a.q_values(&next));
        differ |= argmax(&qt, &next.valid) != argmax(&qo, &next.valid);
    }
    assert!(differ, "the test needs states where online and target pick different slots");
}

#[test]
fn n_step_transitions_sum_discounted_rewards_and_stop_at_episode_end() {
    let mut a = DqnAgent::new(&config(&["dqn.n_step=3", "dqn.gamma=0.5", "dqn.learning_starts=1000"])).unwrap();
    let mut rng = stream(1, Stream::Policy);
    let rewards = [1.0, 2.0, 4.0, 8.0];
    for (k, r) in rewards.iter().enumerate() {
        let end = k == 3;
        let t = Transition {
            state: state([1, 2, 3], k),
            action: k % SLOTS,
            reward: *r,
            next_state: state([1, 2, 3], k + 1),
            terminal: end,
            episode_end: end,
            discount: 1.0,
        };
        a.observe(t, &mut rng).unwrap();
    }
    let rb = a.replay();
    assert_eq!(rb.len(), 4);
    // Stored in order: from step 0 (3 steps), 1 (3 steps, ends at the terminal), then the
    // flush at the episode's end: 2 (2 steps), 3 (1 step).
    let expect = [
        (0, 1.0 + 0.5 * 2.0 + 0.25 * 4.0, 0.0, 0.125),
        (1, 2.0 + 0.5 * 4.0 + 0.25 * 8.0, 1.0, 0.125),
        (2, 4.0 + 0.5 * 8.0, 1.0, 0.25),
        (0, 8.0, 1.0, 0.5),
    ];
    for (k, (action, reward, terminal, discount)) in expect.iter().enumerate() {
        let (a_, r_, t_, d_) = rb.row(k);
        assert_eq!(a_, *action as i64, "row {k}");
        assert!((r_ as f64 - reward).abs() < 1e-6, "row {k}: reward {r_} vs {reward}");
        assert_eq!(t_, *terminal as f32, "row {k}");
        assert!((d_ as f64 - discount).abs() < 1e-7, "row {k}");
    }
}

/// A tiny deterministic task: 3 steps per episode; at each step the candidates' categories
/// are a known permutation of {1, 2, 3}; showing category 3 pays +1, anything else -1.
/// Returns the fraction of the 3 x 3 (step, permutation) states where the greedy policy
/// shows category 3, after `episodes` training episodes.
fn tiny_task(rule: TargetRule, episodes: usize) -> f64 {
    let perms = [[1, 2, 3], [3, 1, 2], [2, 3, 1]];
    let c = config(&[
        "dqn.head=items",
        "dqn.lr=0.01",
        "dqn.gamma=0.5",
        "dqn.target_update_every=20",
        "dqn.epsilon.per=episode",
        "dqn.epsilon.rate=0.97",
    ]);
    let mut a = DqnAgent::new(&c).unwrap();
    a.set_target_rule(rule);
    let mut rng = stream(11, Stream::Policy);
    let user = User { id: 0, age: 20, gender: 0, region: 0, interests: [0, 1] };
    let model = fypsim::world::World::generate(&c).model;
    let truth = fypsim::env::Truth { model, latent: Default::default(), t: 0, now: 0.0, calendar: None };
    let obs =
        |s: &State| Observation { user: user.clone(), candidates: fake_candidates(), state: s.clone(), truth: truth.clone() };
    for e in 0..episodes {
        for t in 0..3 {
            let s = state(perms[(e + t) % 3], t);
            let slot = a.act(&obs(&s), true, &mut rng).unwrap();
            let reward = if s.categorical[cat::CANDIDATES + slot] == 3 { 1.0 } else { -1.0 };
            let next = state(perms[(e + t + 1) % 3], t + 1);
            let end = t == 2;
            a.observe(
                Transition { state: s, action: slot, reward, next_state: next, terminal: end, episode_end: end, discount: 1.0 },
                &mut rng,
            )
            .unwrap();
        }
        a.end_episode();
    }
    let mut right = 0;
    for t in 0..3 {
        for p in perms {
            let s = state(p, t);
            let slot = a.act(&obs(&s), false, &mut rng).unwrap();
            right += usize::from(p[slot] == 3);
        }
    }
    right as f64 / 9.0
}

fn fake_candidates() -> Vec<fypsim::platform::candidates::Candidate> {
    (0..SLOTS as u32)
        .map(|v| fypsim::platform::candidates::Candidate {
            video: v,
            category: 0,
            raw: 0.0,
            final_score: 0.0,
            views: 0,
            interest_match: false,
        })
        .collect()
}

#[test]
fn a_correct_dqn_solves_the_tiny_task_and_broken_ones_do_not() {
    assert_eq!(tiny_task(TargetRule::Standard, 150), 1.0, "a correct DQN solves it");
    assert!(tiny_task(TargetRule::WrongSign, 150) <= 1.0 / 3.0, "a wrong sign learns to avoid the reward");
    assert!(tiny_task(TargetRule::NoTarget, 150) < 1.0, "without a TD target nothing is learned");
}

#[test]
fn a_saved_agent_loads_into_the_same_agent() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(&["dqn.head=items", "dqn.n_step=2"]);
    let mut a = DqnAgent::new(&c).unwrap();
    let mut rng = stream(5, Stream::Policy);
    let feed = |a: &mut DqnAgent, rng: &mut fypsim::rng::SimRng, from: usize, to: usize| {
        let mut losses = Vec::new();
        for k in from..to {
            let t = Transition {
                state: state([1 + (k % 3) as i64, 2, 3], k % 4),
                action: k % SLOTS,
                reward: (k % 4) as f64 - 1.0,
                next_state: state([3, 2, 1], (k + 1) % 4),
                terminal: k % 7 == 6,
                episode_end: k % 7 == 6,
                discount: 1.0,
            };
            losses.push(a.observe(t, rng).unwrap());
        }
        losses
    };
    feed(&mut a, &mut rng, 0, 40);
    a.save(dir.path()).unwrap();
    let mut b = DqnAgent::new(&c.with_seed(999)).unwrap(); // other initial weights
    b.load(dir.path()).unwrap();
    assert_eq!(a.online_weights(), b.online_weights());
    assert_eq!(a.target_weights(), b.target_weights());
    assert_eq!(a.epsilon(), b.epsilon());
    // Continuing both gives the same losses and weights: replay, its RNG, Adam's moments
    // and the pending n-step transitions all came back.
    let mut rng_b = rng.clone();
    let la = feed(&mut a, &mut rng, 40, 80);
    let lb = feed(&mut b, &mut rng_b, 40, 80);
    assert_eq!(la, lb);
    assert_eq!(a.online_weights(), b.online_weights());
}

#[test]
fn a_full_disk_while_saving_is_an_error_naming_the_file() {
    // /dev/full answers every write with "no space left on device".
    if !Path::new("/dev/full").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/full", dir.path().join("agent.ot")).unwrap();
    let a = DqnAgent::new(&config(&[])).unwrap();
    let e = a.save(dir.path()).unwrap_err().to_string();
    assert!(e.contains("agent.ot") && e.to_lowercase().contains("no space"), "{e}");
}

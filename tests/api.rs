//! The public environment API driven by the built-in baselines reproduces, row for row,
//! the evaluation episodes `fypsim run` writes (same config, same seed).

use std::path::Path;

use assert_cmd::Command;
use fypsim::config::{Config, PolicyKind};
use fypsim::drive::api::{ResetOptions, SimEnv};

/// (episode, user, return, steps) of `policy`'s rows in eval_episodes.csv.
fn rows(csv: &str, policy: &str) -> Vec<(u64, u32, f64, u32)> {
    csv.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0] == policy).then(|| (f[1].parse().unwrap(), f[2].parse().unwrap(), f[3].parse().unwrap(), f[4].parse().unwrap()))
        })
        .collect()
}

fn check(settings: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::cargo_bin("fypsim").unwrap();
    cmd.current_dir(root).args(["run", "configs/smoke.toml", "--quiet", "--out"]).arg(&out);
    for s in settings {
        cmd.args(["--set", s]);
    }
    cmd.assert().success();
    let config = Config::load(&out.join("config.toml"), &[]).unwrap();
    let csv = std::fs::read_to_string(out.join("eval_episodes.csv")).unwrap();
    for kind in [PolicyKind::Random, PolicyKind::Greedy, PolicyKind::MostViewed, PolicyKind::Oracle] {
        let expected = rows(&csv, kind.name());
        assert_eq!(expected.len(), config.train.eval_episodes, "{kind}: rows in eval_episodes.csv");
        assert!(expected.iter().map(|r| r.3).sum::<u32>() > 20, "{kind}: too few steps to say anything");
        let mut api = SimEnv::new(&config).unwrap();
        for &(k, user, ret, steps) in &expected {
            // The seed once: a seed restarts the environment (the generated world).
            let seed = (k == 0).then_some(config.seed);
            let obs = api.reset(seed, ResetOptions { episode: Some(k), world: None }).unwrap();
            assert_eq!(obs.user.id, user, "{kind} episode {k}: the user");
            let (mut got, mut n) = (0.0, 0);
            loop {
                let a = api.baseline_action(kind).unwrap();
                let s = api.step(a).unwrap();
                got += s.reward;
                n += 1;
                if s.terminated || s.truncated {
                    break;
                }
            }
            assert_eq!((got, n), (ret, steps), "{kind} episode {k}: (return, steps)");
        }
    }
}

#[test]
fn the_api_reproduces_eval_episodes_csv_in_an_evolving_world() {
    // configs/smoke.toml evaluates in one evolving world: episodes in order.
    check(&[]);
}

#[test]
fn a_world_too_large_for_this_machine_is_refused_with_the_estimate() {
    let config = Config::from_toml_str("[world]\nn_users = 4000000000\n", &[]).unwrap();
    let e = SimEnv::new(&config).err().expect("refused").to_string();
    assert!(e.contains("would need about") && e.contains("GiB"), "{e}");
}

#[test]
fn the_api_reproduces_eval_episodes_csv_in_fresh_worlds() {
    check(&["train.eval_world=\"fresh\""]);
}

//! `fypsim learn` end to end: both tasks on small runs of the presets, the Bayes bound,
//! reproducibility, `--user`, and bad input.

use std::path::Path;

use assert_cmd::Command;
use predicates::str::contains;

fn fypsim() -> Command {
    let mut c = Command::cargo_bin("fypsim").unwrap();
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn run(config: &str, out: &Path, sets: &[&str]) {
    let mut c = fypsim();
    c.args(["run", config, "--quiet", "--out"]).arg(out);
    for s in sets {
        c.args(["--set", s]);
    }
    c.assert().success();
}

fn metrics(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap()
}

/// A small run of the instatok world and one of the users-with-memory world, both with
/// the step log's detail columns and a random logging policy.
fn logs(tmp: &Path) -> Vec<(&'static str, std::path::PathBuf)> {
    let instatok = tmp.join("instatok");
    run("configs/smoke.toml", &instatok, &["policy=\"random\"", "train.episodes=600", "output.step_detail=true"]);
    let memory = tmp.join("memory");
    run(
        "configs/longterm.toml",
        &memory,
        &[
            "policy=\"random\"",
            "world.n_users=60",
            "world.n_videos=400",
            "train.episodes=500",
            "train.eval_episodes=20",
            "train.eval_every=0",
            "train.baselines=[]",
        ],
    );
    vec![("instatok", instatok), ("memory", memory)]
}

#[test]
fn next_action_models_never_beat_the_bayes_optimal_figure_and_write_every_file() {
    let tmp = tempfile::tempdir().unwrap();
    for (preset, dir) in logs(tmp.path()) {
        for cell in ["rnn", "lstm", "gru"] {
            for mode in ["many-to-many", "many-to-one"] {
                fypsim()
                    .args(["learn", "next-action", "--quiet", "--cell", cell, "--mode", mode])
                    .arg(&dir)
                    .args(["--set", "epochs=4", "--set", "bootstrap=200"])
                    .assert()
                    .success()
                    .stdout(contains("share of the Markov-to-Bayes log-loss gap closed"));
                let out = dir.join("learn").join(format!("next-action-{cell}-{mode}"));
                let m = metrics(&out);
                // Below the Bayes-optimal log-loss by more than the interval: only a leak
                // of the outcome into the features can do that.
                assert_eq!(m["below_bayes"], false, "{preset} {cell} {mode}: {m}");
                let excess = &m["model_minus_bayes_log_loss"];
                assert!(excess["ci95"][1].as_f64().unwrap() >= 0.0, "{preset} {cell} {mode}: {excess}");
                for f in [
                    "config.toml",
                    "metrics.json",
                    "training.csv",
                    "training.png",
                    "confusion.png",
                    "predictions.parquet",
                    "model.ot",
                    "timing.json",
                ] {
                    assert!(out.join(f).exists(), "{preset} {cell} {mode}: no {f}");
                }
                let ll = m["model"]["log_loss"]["value"].as_f64().unwrap();
                assert!(ll.is_finite() && ll > 0.0);
            }
        }
    }
}

#[test]
fn learn_is_reproducible_and_predicts_a_users_next_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("instatok");
    run("configs/smoke.toml", &dir, &["policy=\"random\"", "train.episodes=400", "output.step_detail=true"]);
    let out = dir.join("learn/next-action-gru-many-to-many");
    let learn = || {
        fypsim().args(["learn", "next-action", "--quiet"]).arg(&dir).args(["--set", "epochs=3"]).assert().success();
        (
            std::fs::read(out.join("metrics.json")).unwrap(),
            std::fs::read(out.join("training.csv")).unwrap(),
            std::fs::read(out.join("predictions.parquet")).unwrap(),
        )
    };
    assert_eq!(learn(), learn(), "the same seed gives the same files");
    // The saved model predicts user 3's last 4 steps (no retraining: the settings match).
    let a = fypsim()
        .args(["learn", "next-action", "--quiet"])
        .arg(&dir)
        .args(["--set", "epochs=3", "--user", "3", "--next", "4"])
        .assert()
        .success()
        .stdout(contains("user 3: the last 4 logged steps"));
    let text = String::from_utf8(a.get_output().stdout.clone()).unwrap();
    assert_eq!(text.lines().count(), 2 + 4, "{text}");
    fypsim()
        .args(["learn", "next-action", "--quiet"])
        .arg(&dir)
        .args(["--set", "epochs=3", "--user", "4000"])
        .assert()
        .failure()
        .stderr(contains("user 4000 does not exist"));
}

#[test]
fn churn_end_to_end_and_its_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("churn");
    run("configs/churn.toml", &dir, &["world.n_users=300", "world.n_videos=600", "calendar.signups_per_day=2.0"]);
    for cell in ["rnn", "gru"] {
        fypsim()
            .args(["learn", "churn", "--quiet", "--cell", cell])
            .arg(&dir)
            .args(["--set", "epochs=3", "--set", "bootstrap=100"])
            .assert()
            .success()
            .stdout(contains("ROC-AUC, model minus logistic regression"));
        let out = dir.join(format!("learn/churn-{cell}-many-to-many"));
        let m = metrics(&out);
        for scorer in [&m["model"], &m["baselines"]["logistic_regression"], &m["baselines"]["last_week_inactive"]] {
            let auc = scorer["roc_auc"]["value"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&auc), "{m}");
            let ci = &scorer["roc_auc"]["ci95"];
            assert!(ci[0].as_f64().unwrap() <= auc && auc <= ci[1].as_f64().unwrap(), "{m}");
        }
        for f in ["roc.png", "training.png", "predictions.parquet", "model.ot", "logistic_regression.ot"] {
            assert!(out.join(f).exists(), "no {f}");
        }
    }
    fypsim()
        .args(["learn", "churn", "--quiet"])
        .arg(&dir)
        .args(["--set", "policy=\"greedy\""])
        .assert()
        .failure()
        .stderr(contains("no policy `greedy`"));
    // Four weeks are too few.
    let short = tmp.path().join("short");
    run("configs/churn.toml", &short, &["world.n_users=100", "world.n_videos=400", "calendar.days=28"]);
    fypsim().args(["learn", "churn", "--quiet"]).arg(&short).assert().failure().stderr(contains("needs at least 12"));
}

#[test]
fn bad_input_gets_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    // Not a run folder.
    fypsim().args(["learn", "next-action", "--quiet"]).arg(tmp.path()).assert().failure().stderr(contains("is not a run folder"));
    // A run without the detail columns, and without weeks.
    let plain = tmp.path().join("plain");
    run("configs/smoke.toml", &plain, &[]);
    fypsim()
        .args(["learn", "next-action", "--quiet"])
        .arg(&plain)
        .assert()
        .failure()
        .stderr(contains("output.step_detail = true"));
    fypsim().args(["learn", "churn", "--quiet"]).arg(&plain).assert().failure().stderr(contains("needs a population run"));
    // Settings out of range, unknown keys and cells.
    for (args, says) in [
        (vec!["--set", "hidden=0"], "invalid value for `hidden`"),
        (vec!["--set", "time_split=1.5"], "invalid value for `time_split`"),
        (vec!["--set", "colour=1"], "unknown field"),
        (vec!["--cell", "transformer"], "unknown cell"),
        (vec!["--mode", "sideways"], "unknown mode"),
    ] {
        fypsim().args(["learn", "next-action", "--quiet"]).arg(&plain).args(&args).assert().failure().stderr(contains(says));
    }
    // A damaged step log.
    let damaged = tmp.path().join("damaged");
    run("configs/smoke.toml", &damaged, &["output.step_detail=true"]);
    let steps = damaged.join("steps.parquet");
    let bytes = std::fs::read(&steps).unwrap();
    std::fs::write(&steps, &bytes[..bytes.len() / 2]).unwrap();
    fypsim().args(["learn", "next-action", "--quiet"]).arg(&damaged).assert().failure().stderr(contains("steps.parquet"));
}

#[test]
fn ctrl_c_stops_training_and_keeps_the_results_already_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("instatok");
    run("configs/smoke.toml", &dir, &["policy=\"random\"", "train.episodes=400", "output.step_detail=true"]);
    let out = dir.join("learn/next-action-gru-many-to-many");
    fypsim().args(["learn", "next-action", "--quiet"]).arg(&dir).args(["--set", "epochs=2"]).assert().success();
    let before: Vec<Vec<u8>> =
        ["config.toml", "metrics.json", "model.ot"].iter().map(|f| std::fs::read(out.join(f)).unwrap()).collect();
    // Other settings, training that would never end: interrupted once it has begun.
    let partial = dir.join("learn/.next-action-gru-many-to-many.partial");
    let child = endless_learn(&dir, &partial);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("stopping the training"), "{err}");
    // The interrupted attempt says what it was, beside the untouched earlier results.
    assert!(std::fs::read_to_string(partial.join("config.toml")).unwrap().contains("epochs = 100000"));
    for (f, bytes) in ["config.toml", "metrics.json", "model.ot"].iter().zip(&before) {
        assert_eq!(&std::fs::read(out.join(f)).unwrap(), bytes, "{f} changed");
    }
    // A second signal quits at once, cleanly: exit 130, never a segfault or a tch panic
    // (it exited from the signal thread while the main thread was inside libtorch).
    for attempt in 0..3 {
        std::fs::remove_dir_all(&partial).ok();
        let child = endless_learn(&dir, &partial);
        std::thread::sleep(std::time::Duration::from_millis(800));
        for _ in 0..2 {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGINT);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(130), "attempt {attempt}: {:?}\n{err}", o.status);
        assert!(!err.contains("panicked"), "attempt {attempt}: {err}");
    }
    for (f, bytes) in ["config.toml", "metrics.json", "model.ot"].iter().zip(&before) {
        assert_eq!(&std::fs::read(out.join(f)).unwrap(), bytes, "{f} changed by a second signal");
    }
}

/// `fypsim learn next-action` on the run in `dir` with training that would never end,
/// returned once it has begun (its attempt's `partial` folder holds config.toml).
fn endless_learn(dir: &std::path::Path, partial: &std::path::Path) -> std::process::Child {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_fypsim"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["learn", "next-action", "--quiet"])
        .arg(dir)
        .args(["--set", "epochs=100000", "--set", "patience=100000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !partial.join("config.toml").exists() && started.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child
}

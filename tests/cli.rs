//! The CLI end to end: a smoke run that checks every file it writes, reproducibility,
//! inspect and world, and bad input.

use std::path::Path;

use assert_cmd::Command;
use fypsim::output::records::{read_csv, read_parquet};

fn fypsim() -> Command {
    let mut c = Command::cargo_bin("fypsim").unwrap();
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn smoke_run(out: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    let mut c = fypsim();
    c.args(["run", "configs/smoke.toml", "--quiet", "--out"]).arg(out);
    for e in extra {
        c.args(["--set", e]);
    }
    c.assert()
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    assert_eq!(&bytes[12..16], b"IHDR");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1000, 600));
    // A blank image compresses to almost nothing; a drawn chart with text does not.
    assert!(bytes.len() > 20_000, "{} looks empty ({} bytes)", path.display(), bytes.len());
}

fn columns(df: &polars::prelude::DataFrame) -> Vec<String> {
    df.get_column_names().iter().map(|s| s.to_string()).collect()
}

#[test]
fn smoke_run_writes_every_documented_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let assert = smoke_run(&out, &[]).success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).to_string();
    assert!(stdout.contains(&format!("results: {}", out.display())), "{stdout}");

    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(config.contains("[provenance]") && config.contains("git_revision"), "{config}");
    assert!(config.contains("seed = 7"));
    // The resolved config is itself a valid config.
    fypsim::config::Config::load(&out.join("config.toml"), &[]).unwrap();

    let episodes = read_csv(&out.join("episodes.csv")).unwrap();
    assert_eq!(columns(&episodes), ["episode", "user", "steps", "return", "mean_loss", "epsilon"]);
    assert_eq!(episodes.height(), 30);
    let pq = read_parquet(&out.join("episodes.parquet")).unwrap();
    assert_eq!(columns(&pq), columns(&episodes));
    assert_eq!(pq.height(), 30);

    let steps = read_parquet(&out.join("steps.parquet")).unwrap();
    assert_eq!(columns(&steps), ["episode", "t", "user", "video", "slot", "category", "response", "reward"]);
    let total: u64 = episodes
        .column("steps")
        .unwrap()
        .cast(&polars::prelude::DataType::UInt64)
        .unwrap()
        .u64()
        .unwrap()
        .into_no_null_iter()
        .sum();
    assert_eq!(steps.height() as u64, total, "one steps row per step");

    assert_png(&out.join("rewards.png"));
    assert_png(&out.join("loss.png"));

    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    for key in ["policy", "seed", "episodes", "mean_return_last_100", "baselines"] {
        assert!(summary.get(key).is_some(), "summary.json lacks {key}: {summary}");
    }
    assert_eq!(summary["policy"], "dqn");
    assert_eq!(summary["seed"], 7);
    assert_eq!(summary["episodes"], 30);
    for b in ["random", "greedy", "most_viewed", "oracle"] {
        assert!(summary["baselines"][b].is_number(), "baseline {b}: {summary}");
    }
    // Wall-clock figures are in timing.json only (output.wall_time = false by default).
    assert!(summary.get("steps_per_second").is_none(), "{summary}");
    // The trained policy against greedy, paired episode by episode.
    let a = &summary["advantage_over_greedy"];
    assert!(a["mean"].is_number() && a["ci95"].as_f64().unwrap() > 0.0, "{summary}");
    let timing: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("timing.json")).unwrap()).unwrap();
    assert!(timing["steps_per_second"].as_f64().unwrap() > 0.0);

    let baselines = read_csv(&out.join("baselines.csv")).unwrap();
    assert_eq!(columns(&baselines), ["policy", "episodes", "mean_return", "ci95", "mean_steps"]);
    assert_eq!(baselines.height(), 5);
}

#[test]
fn same_seed_gives_byte_identical_episodes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    smoke_run(&a, &["output.wall_time=false"]).success();
    smoke_run(&b, &["output.wall_time=false"]).success();
    let ea = std::fs::read(a.join("episodes.csv")).unwrap();
    let eb = std::fs::read(b.join("episodes.csv")).unwrap();
    assert_eq!(ea, eb, "episodes.csv differs between two runs of one seed");
    assert_eq!(std::fs::read(a.join("baselines.csv")).unwrap(), std::fs::read(b.join("baselines.csv")).unwrap());
    let sa = read_parquet(&a.join("steps.parquet")).unwrap();
    let sb = read_parquet(&b.join("steps.parquet")).unwrap();
    assert!(sa.equals(&sb));

    // Another seed gives another run.
    let c = dir.path().join("c");
    smoke_run(&c, &["output.wall_time=false", "seed=8"]).success();
    assert_ne!(ea, std::fs::read(c.join("episodes.csv")).unwrap());
}

#[test]
fn lockstep_sessions_give_the_same_run_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let lockstep = ["output.wall_time=false", "train.sessions=6", "train.checkpoint_every=0"];
    let mut runs = Vec::new();
    for threads in ["1", "2", "3"] {
        let out = dir.path().join(format!("t{threads}"));
        let mut set: Vec<String> = lockstep.iter().map(|s| s.to_string()).collect();
        set.push(format!("train.threads={threads}"));
        smoke_run(&out, &set.iter().map(String::as_str).collect::<Vec<_>>()).success();
        runs.push(out);
    }
    let episodes: Vec<Vec<u8>> = runs.iter().map(|r| std::fs::read(r.join("episodes.csv")).unwrap()).collect();
    assert_eq!(episodes[0], episodes[1], "1 and 2 threads differ");
    assert_eq!(episodes[0], episodes[2], "1 and 3 threads differ");
    let steps: Vec<_> = runs.iter().map(|r| read_parquet(&r.join("steps.parquet")).unwrap()).collect();
    assert!(steps[0].equals(&steps[1]) && steps[0].equals(&steps[2]));
    // Every episode ran and learnt: 30 episodes, each recorded once, with updates.
    let e = read_csv(&runs[0].join("episodes.csv")).unwrap();
    assert_eq!(e.height(), 30);
    let mut ids: Vec<i64> = e
        .column("episode")
        .unwrap()
        .cast(&polars::prelude::DataType::Int64)
        .unwrap()
        .i64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..30).collect::<Vec<i64>>());
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(runs[0].join("summary.json")).unwrap()).unwrap();
    assert!(summary["updates"].as_u64().unwrap() > 0);
    // Sessions in lockstep are another schedule than one at a time: another run.
    let single = dir.path().join("single");
    smoke_run(&single, &["output.wall_time=false", "train.checkpoint_every=0"]).success();
    assert_ne!(std::fs::read(single.join("episodes.csv")).unwrap(), episodes[0]);
    // Checkpoints of sessions in flight are not supported: a clear error, not a silent skip.
    smoke_run(&dir.path().join("bad"), &["train.sessions=4"])
        .failure()
        .stderr(predicates::str::contains("train.checkpoint_every"));
}

#[test]
fn eval_choices_scores_each_choice_against_the_best_on_offer() {
    let dir = tempfile::tempdir().unwrap();
    let read = |run: &Path, policy: &str| {
        smoke_run(run, &[&format!("policy={policy}"), "output.steps=false"]).success();
        let out = fypsim().args(["eval", "--episodes", "15", "--choices"]).arg(run).assert().success();
        let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
        assert!(text.contains("mean shortfall in expected p per step"), "{text}");
        let df = read_csv(&run.join("choices_15.csv")).unwrap();
        assert_eq!(
            columns(&df),
            ["episode", "t", "user", "slot", "category", "interest_match", "expected_p", "best_expected_p", "interest_on_offer"]
        );
        let shown: Vec<f64> = df.column("expected_p").unwrap().f64().unwrap().into_no_null_iter().collect();
        let best: Vec<f64> = df.column("best_expected_p").unwrap().f64().unwrap().into_no_null_iter().collect();
        assert!(shown.iter().zip(&best).all(|(s, b)| s <= b), "nothing beats the best on offer");
        shown.iter().zip(&best).map(|(s, b)| b - s).sum::<f64>() / shown.len() as f64
    };
    // The oracle shows the best candidate every time; random does not.
    assert_eq!(read(&dir.path().join("oracle"), "oracle"), 0.0);
    assert!(read(&dir.path().join("random"), "random") > 0.02);
}

#[test]
fn wall_time_only_adds_a_column() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    smoke_run(&a, &["output.wall_time=false", "output.steps=false"]).success();
    smoke_run(&b, &["output.wall_time=true", "output.steps=false"]).success();
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(b.join("summary.json")).unwrap()).unwrap();
    assert!(summary["steps_per_second"].as_f64().unwrap() > 0.0, "{summary}");
    assert!(!b.join("steps.parquet").exists() && !a.join("steps.parquet").exists());
    let ea = read_csv(&a.join("episodes.csv")).unwrap();
    let eb = read_csv(&b.join("episodes.csv")).unwrap().drop("wall_s").unwrap();
    assert!(ea.equals_missing(&eb));
}

#[test]
fn default_results_folder_is_numbered_per_seed() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("res");
    for _ in 0..2 {
        let mut c = fypsim();
        c.args(["run", "configs/smoke.toml", "--quiet", "--set", "train.episodes=2", "--set"])
            .arg(format!("output.results_dir=\"{}\"", results.display()));
        c.assert().success();
    }
    assert!(results.join("smoke/seed7-001/summary.json").exists());
    assert!(results.join("smoke/seed7-002/summary.json").exists());
}

#[test]
fn inspect_prints_profile_history_and_candidates() {
    let out = fypsim().args(["inspect", "configs/smoke.toml", "--user", "3"]).assert().success().get_output().stdout.clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["profile"]["id"], 3);
    assert!(v["history"].as_array().unwrap().len() >= 5);
    let cands = v["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), 10);
    for c in cands {
        for key in ["video", "category", "raw", "final_score"] {
            assert!(c.get(key).is_some(), "{c}");
        }
    }
    let seen: Vec<u64> = v["summed"].as_array().unwrap().iter().map(|s| s["video"].as_u64().unwrap()).collect();
    assert!(cands.iter().all(|c| !seen.contains(&c["video"].as_u64().unwrap())));
    let finals: Vec<f64> = cands.iter().map(|c| c["final_score"].as_f64().unwrap()).collect();
    assert!(finals.windows(2).all(|w| w[0] >= w[1]));

    fypsim()
        .args(["inspect", "configs/smoke.toml", "--user", "4000"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("user 4000 does not exist: the world has users 0..40"));
}

#[test]
fn world_writes_three_tables() {
    let dir = tempfile::tempdir().unwrap();
    fypsim().args(["world", "configs/smoke.toml", "--out"]).arg(dir.path()).assert().success();
    let users = read_csv(&dir.path().join("users.csv")).unwrap();
    assert_eq!(columns(&users), ["user", "age", "gender", "region", "interest_1", "interest_2"]);
    assert_eq!(users.height(), 40);
    let videos = read_csv(&dir.path().join("videos.csv")).unwrap();
    assert_eq!(columns(&videos), ["video", "category", "creator", "duration_s", "views"]);
    assert_eq!(videos.height(), 300);
    let inter = read_csv(&dir.path().join("interactions.csv")).unwrap();
    assert_eq!(columns(&inter), ["user", "video", "session", "action", "score", "timestamp"]);
    assert!(inter.height() >= 40 * 5);
}

#[test]
fn bench_measures_several_sizes_and_writes_the_scaling_table_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let out = fypsim()
        .args(["bench", "configs/smoke.toml", "configs/smoke.toml", "--kernels-only", "--json", "--repeats", "1"])
        .args(["--steps", "200", "--set", "world.n_users=80", "--scaling"])
        .arg(dir.path())
        .assert()
        .success();
    // One JSON object per config, with the issue's keys.
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["users"], 80, "--set applies to every config");
        for key in [
            "world_build_s",
            "matrix_build_s",
            "neighbours_build_s",
            "candidates_us",
            "candidates_neighbours_us",
            "update_us",
            "peak_rss_mb",
        ] {
            assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key} in {l}");
        }
    }
    let table = read_csv(&dir.path().join("scaling.csv")).unwrap();
    assert_eq!(table.height(), 2);
    assert!(columns(&table).contains(&"candidates_neighbours_us".to_string()));
    let png = std::fs::read(dir.path().join("scaling.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() > 20_000, "the plot has lines and text");
    // A bad config among several fails before anything is measured.
    fypsim()
        .args(["bench", "configs/smoke.toml", "configs/nope.toml", "--kernels-only"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("configs/nope.toml"));
}

fn bad_config(text: Option<&str>, overrides: &[&str], expect: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    if let Some(t) = text {
        std::fs::write(&path, t).unwrap();
    }
    let mut c = fypsim();
    c.args(["run", "--quiet", "--out"]).arg(dir.path().join("out")).arg(&path);
    for o in overrides {
        c.args(["--set", o]);
    }
    let out = c.assert().failure().code(1).get_output().clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    for e in expect {
        assert!(stderr.contains(e), "expected `{e}` in: {stderr}");
    }
    assert!(!dir.path().join("out").exists(), "nothing is written for a bad config");
}

#[test]
fn bad_configs_fail_with_documented_errors() {
    bad_config(Some("[dqn]\nlearnin_rate = 0.1\n"), &[], &["unknown field `learnin_rate`", "bad.toml"]);
    bad_config(Some("[dqn]\nlr = -0.5\n"), &[], &["invalid value for `dqn.lr`: -0.5", "allowed: a finite number > 0"]);
    bad_config(Some("[dqn\nlr = 1\n"), &[], &["malformed config"]);
    bad_config(None, &[], &["cannot read config file", "bad.toml"]);
    bad_config(Some(""), &["dqn.gamma=2"], &["`dqn.gamma`", "[0, 1]"]);
    bad_config(Some(""), &["nosuch.key=1"], &["unknown field `nosuch`"]);
    bad_config(Some("policy = \"psychic\"\n"), &[], &["unknown variant `psychic`"]);
    bad_config(
        Some("[dqn]\ncandidate_features = [\"mean_completion\"]\n"),
        &[],
        &[
            "`dqn.candidate_features`: \"mean_completion\"",
            "\"exit_rate\", \"mean_completion\" and \"logged_views\" only with a [dynamics] section on",
        ],
    );
    bad_config(Some(""), &["dqn.embeddings.video=2000"], &["`dqn.embeddings.video`: 2000", "<= 1024"]);
    if !tch::Cuda::is_available() {
        bad_config(Some("[dqn]\ndevice = \"cuda\"\n"), &[], &["`dqn.device` is \"cuda\" but libtorch finds no CUDA device"]);
    }
}

#[test]
fn unwritable_output_folder_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let out = fypsim()
        .args(["run", "configs/smoke.toml", "--quiet", "--out"])
        .arg(file.join("run"))
        .assert()
        .failure()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot create folder") && stderr.contains("a-file/run"), "{stderr}");
    assert!(!stderr.contains("panicked"));
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let settings = ["output.wall_time=false", "train.checkpoint_every=10", "dqn.n_step=2", "dqn.head=items"];
    smoke_run(&a, &settings).success();
    // Interrupted after 12 episodes (a checkpoint is written on stopping), then resumed.
    let mut c = fypsim();
    c.args(["run", "configs/smoke.toml", "--quiet", "--max-episodes", "12", "--out"]).arg(&b);
    for s in settings {
        c.args(["--set", s]);
    }
    let out = c.assert().success().get_output().stdout.clone();
    assert!(String::from_utf8_lossy(&out).contains("stopped after episode 12 of 30"));
    assert!(!b.join("summary.json").exists() && b.join("checkpoint/MANIFEST.json").exists());
    // Each checkpoint appended only its new records (episodes 1-10, then 11-12); the
    // progress file holds none of them.
    let mut segments: Vec<String> = std::fs::read_dir(b.join("checkpoint-records"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into())
        .collect();
    segments.sort();
    assert_eq!(segments, ["000000-to-episode-000000010.json", "000001-to-episode-000000012.json"]);
    let second: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("checkpoint-records").join(&segments[1])).unwrap()).unwrap();
    assert_eq!(second["episodes"].as_array().unwrap().len(), 2);
    let progress: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("checkpoint/progress.json")).unwrap()).unwrap();
    assert_eq!(progress["episodes"].as_array().unwrap().len(), 0);
    assert_eq!(progress["episodes_done"], 12);
    fypsim().args(["run", "--quiet", "--resume"]).arg(&b).assert().success();
    for f in ["episodes.csv", "eval.csv", "baselines.csv", "eval_episodes.csv"] {
        assert_eq!(
            std::fs::read_to_string(a.join(f)).unwrap(),
            std::fs::read_to_string(b.join(f)).unwrap(),
            "{f} differs after resume"
        );
    }
    let (sa, sb) = (read_parquet(&a.join("steps.parquet")).unwrap(), read_parquet(&b.join("steps.parquet")).unwrap());
    assert!(sa.equals(&sb));

    // A finished run cannot be resumed; a folder without a checkpoint neither.
    fypsim()
        .args(["run", "--quiet", "--resume"])
        .arg(&b)
        .assert()
        .failure()
        .stderr(predicates::str::contains("is a finished run"));
    fypsim()
        .args(["run", "--quiet", "--resume"])
        .arg(dir.path())
        .assert()
        .failure()
        .stderr(predicates::str::contains("config.toml"));

    // The saved agent evaluates against the baselines; its numbers match the run's own.
    let out = fypsim().arg("eval").arg(&a).assert().success().get_output().stdout.clone();
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("dqn (saved)") && text.contains("oracle"), "{text}");
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(a.join("eval_saved_20.json")).unwrap()).unwrap();
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(a.join("summary.json")).unwrap()).unwrap();
    assert_eq!(saved[0]["mean_return"], summary["eval_mean_return"]);
}

/// Bandits as learning baselines: trained on the run's steps, saved in the run folder,
/// evaluated beside the others (and again by `fypsim eval` from what was saved, to the
/// same numbers); a Thompson-sampling run logs its estimated propensities, flagged.
#[test]
fn bandits_train_as_baselines_and_as_the_run_policy() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    smoke_run(&a, &[r#"train.baselines=["random", "linucb", "thompson", "epsilon_greedy"]"#]).success();
    let baselines = std::fs::read_to_string(a.join("baselines.csv")).unwrap();
    let names: Vec<&str> = baselines.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(names, ["dqn (trained)", "random", "linucb", "thompson", "epsilon_greedy"]);
    for b in ["linucb", "thompson", "epsilon_greedy"] {
        let saved = a.join("baselines").join(b).join("bandit.json");
        assert!(saved.is_file(), "{}", saved.display());
    }
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(a.join("summary.json")).unwrap()).unwrap();
    // The trained policy minus each learning baseline, paired.
    for b in ["linucb", "thompson", "epsilon_greedy"] {
        assert!(summary["advantage_over_learners"][b]["ci95"].as_f64().unwrap().is_finite(), "{b}: {summary}");
    }
    fypsim().arg("eval").arg(&a).assert().success();
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(a.join("eval_saved_20.json")).unwrap()).unwrap();
    for row in saved.as_array().unwrap().iter().skip(1) {
        let name = row["policy"].as_str().unwrap();
        assert_eq!(row["mean_return"], summary["baselines"][name], "{name}");
    }
    // What a baseline learnt, lost: eval says which and where.
    std::fs::remove_file(a.join("baselines/thompson/bandit.json")).unwrap();
    fypsim().arg("eval").arg(&a).assert().failure().stderr(predicates::str::contains("baselines/thompson"));

    let b = dir.path().join("b");
    smoke_run(&b, &["policy=thompson", "bandit.propensity_draws=200", "output.step_detail=true"]).success();
    let steps = read_parquet(&b.join("steps.parquet")).unwrap();
    assert!(columns(&steps).contains(&"propensity_estimated".to_string()), "{:?}", columns(&steps));
    let p: Vec<f64> = steps.column("propensity").unwrap().f64().unwrap().into_no_null_iter().collect();
    assert!(!p.is_empty() && p.iter().all(|x| (0.0..=1.0).contains(x)), "{p:?}");
    // Exact propensities add no column.
    let c = dir.path().join("c");
    smoke_run(&c, &["policy=epsilon_greedy", "output.step_detail=true"]).success();
    let steps = read_parquet(&c.join("steps.parquet")).unwrap();
    assert!(!columns(&steps).contains(&"propensity_estimated".to_string()));
    // output.step_detail writes the step's true outcome probabilities with every dynamic off.
    for col in ["p_watched", "p_skipped", "p_liked", "p_left", "time_s", "offered"] {
        assert!(columns(&steps).contains(&col.to_string()), "steps.parquet lacks {col}");
    }
    let p: Vec<f64> = steps.column("propensity").unwrap().f64().unwrap().into_no_null_iter().collect();
    assert!(p.iter().any(|&x| x < 1.0), "epsilon-greedy explores");
    fypsim().arg("eval").arg(&c).assert().success().stdout(predicates::str::contains("epsilon_greedy (saved)"));
}

#[test]
fn multi_seed_runs_aggregate_with_intervals() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m");
    let o = fypsim()
        .args(["run", "configs/smoke.toml", "--quiet", "--set", "train.seeds=[1, 2, 3]", "--set", "train.episodes=10", "--out"])
        .arg(&out)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8_lossy(&o);
    assert!(text.contains("oracle_fraction:"), "{text}");
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["seeds"], serde_json::json!([1, 2, 3]));
    assert_eq!(s["per_seed"].as_array().unwrap().len(), 3);
    for p in ["dqn", "random", "greedy", "oracle"] {
        assert!(s["eval_mean_return"][p]["mean"].is_number(), "{p}: {s}");
        assert!(s["eval_mean_return"][p]["ci95"].as_f64().unwrap() >= 0.0);
    }
    // The aggregate equals the mean of the seed runs' own summaries.
    let mean: f64 = (1..=3)
        .map(|k| {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(out.join(format!("seed{k}/summary.json"))).unwrap()).unwrap();
            v["oracle_fraction"].as_f64().unwrap()
        })
        .sum::<f64>()
        / 3.0;
    assert!((s["oracle_fraction"]["mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    for f in ["report.md", "report.csv", "curves.png", "policies.png", "config.toml"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // Without greedy and the oracle there is nothing to compare with: no line and no
    // key, never a NaN.
    let out = dir.path().join("without");
    let o = fypsim()
        .args(["run", "configs/smoke.toml", "--quiet", "--set", "train.seeds=[1, 2]", "--set", "train.episodes=10"])
        .args(["--set", r#"train.baselines=["random"]"#, "--out"])
        .arg(&out)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8_lossy(&o);
    assert!(!text.contains("NaN") && !text.contains("- greedy") && !text.contains("oracle_fraction"), "{text}");
    let s = std::fs::read_to_string(out.join("summary.json")).unwrap();
    assert!(!s.contains("advantage_over_greedy") && !s.contains("null"), "{s}");
    assert!(!s.contains("eval_mean_watch_s") && !text.contains("seconds watched"), "no watch time in instatok: {s}");
    // With watch time (users with memory), the return as watch time per session too.
    let out = dir.path().join("longterm");
    let o = fypsim()
        .args(["run", "configs/longterm.toml", "--set", "train.seeds=[1, 2]", "--set", "train.episodes=10"])
        .args(["--set", "train.eval_episodes=30", "--set", "train.eval_every=0"])
        .args(["--set", r#"train.baselines=["myopic_oracle", "planner"]"#, "--set", "planner.rollouts=2"])
        .arg("--out")
        .arg(&out)
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(String::from_utf8_lossy(&o.stdout).contains("seconds watched per session:"));
    // Progress without a terminal: a line at every tenth of the seeds' training episodes.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("10% of the training episodes done (2 of 20)"), "{err}");
    assert!(err.contains("100% of the training episodes done (20 of 20)"), "{err}");
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    for p in ["dqn", "myopic_oracle"] {
        let per_seed: Vec<f64> = (1..=2)
            .map(|k| {
                let v: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(out.join(format!("seed{k}/summary.json"))).unwrap()).unwrap();
                let e = v["evaluation"].as_array().unwrap().iter().find(|e| e["policy"] == p).unwrap().clone();
                e["mean_watch_s"].as_f64().unwrap()
            })
            .collect();
        let mean = s["eval_mean_watch_s"][p]["mean"].as_f64().unwrap();
        assert!(mean > 0.0 && (mean - (per_seed[0] + per_seed[1]) / 2.0).abs() < 1e-9, "{p}: {s}");
    }
    // The share of the myopia gap closed and the advantage beyond half of it: per seed,
    // then across seeds.
    let (mut closed, mut beyond) = (0.0, 0.0);
    for k in 1..=2 {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join(format!("seed{k}/summary.json"))).unwrap()).unwrap();
        let (a, g) = (v["advantage_over_myopic_oracle"]["mean"].as_f64().unwrap(), v["myopia_gap"]["mean"].as_f64().unwrap());
        closed += a / g / 2.0;
        beyond += (a - g / 2.0) / 2.0;
    }
    assert!((s["myopia_gap_closed"]["mean"].as_f64().unwrap() - closed).abs() < 1e-9, "{s}");
    assert!((s["advantage_beyond_half_myopia_gap"]["mean"].as_f64().unwrap() - beyond).abs() < 1e-9, "{s}");
    assert!(s["advantage_over_myopic_oracle_relative"]["ci95"].as_f64().unwrap().is_finite(), "{s}");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("share of the myopia gap closed:") && text.contains("- half the myopia gap:"), "{text}");
    // One seed is not a multi-seed run.
    fypsim()
        .args(["run", "configs/smoke.toml", "--quiet", "--set", "train.seeds=[1]"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("`train.seeds`"));
}

#[test]
fn bench_learn_reports_time_to_quality() {
    // `fypsim bench --learn --json` on smoke: one JSON report per line, one per seed.
    let reports_of = |args: &[&str]| -> Vec<serde_json::Value> {
        let o = fypsim()
            .args(["bench", "configs/smoke.toml", "--learn", "--json"])
            .args(args)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        String::from_utf8_lossy(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let reports = reports_of(&["--every", "10", "--seeds", "3,4"]);
    assert_eq!(reports.len(), 2, "{reports:?}");
    for (r, seed) in reports.iter().zip([3, 4]) {
        assert_eq!(r["seed"], seed);
        let points = r["points"].as_array().unwrap();
        // Every 10 episodes of 30, unless a target is reached sooner.
        assert!(!points.is_empty() && points.len() <= 3, "{r}");
        let mut last = 0.0;
        for p in points {
            let t = p["training_s"].as_f64().unwrap();
            assert!(p["oracle_fraction"].as_f64().unwrap().is_finite() && t >= last, "{p}");
            last = t;
        }
        let reached = r["reached"].as_array().unwrap();
        assert_eq!(reached.len(), 2);
        for t in reached {
            if let Some(at) = t["at"].as_object() {
                assert!(at["oracle_fraction"].as_f64().unwrap() >= t["oracle_fraction"].as_f64().unwrap());
            }
        }
    }
    // Without --seeds, a multi-seed config's own seeds, one after another.
    let seeds: Vec<serde_json::Value> =
        reports_of(&["--every", "30", "--set", "train.seeds=[5, 6]"]).iter().map(|r| r["seed"].clone()).collect();
    assert_eq!(seeds, [5, 6]);
    fypsim()
        .args(["bench", "configs/smoke.toml", "--learn", "--every", "0"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("--every must be at least 1"));
}

#[test]
fn longterm_runs_record_the_user_model_and_anatomy_compares_policies() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    fypsim()
        .args(["run", "configs/longterm.toml", "--quiet", "--out"])
        .arg(&run)
        .args(["--set", "train.episodes=40", "--set", "train.eval_episodes=30", "--set", "train.eval_every=0"])
        .args(["--set", "train.checkpoint_every=0", "--set", "planner.rollouts=4"])
        .assert()
        .success()
        .stdout(predicates::str::contains("myopia gap (planner - myopic_oracle, paired)"))
        .stdout(predicates::str::contains("dqn - myopic_oracle, paired"));
    let steps = read_parquet(&run.join("steps.parquet")).unwrap();
    for c in ["watch_s", "expected_p", "expected_reward", "satiation", "propensity", "left", "offered"] {
        assert!(columns(&steps).contains(&c.to_string()), "steps.parquet lacks {c}");
    }
    let baselines = read_csv(&run.join("baselines.csv")).unwrap();
    assert!(columns(&baselines).contains(&"mean_watch_s".to_string()));
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert!(summary["myopia_gap"]["mean"].as_f64().unwrap().is_finite());
    assert!(summary["advantage_over_myopic_oracle"]["ci95"].as_f64().unwrap().is_finite());

    let out = tmp.path().join("anatomy");
    fypsim()
        .args(["anatomy", "configs/longterm.toml", "--user", "3", "--out"])
        .arg(&out)
        .assert()
        .success()
        .stdout(predicates::str::contains("planner"));
    let csv = read_csv(&out.join("anatomy.csv")).unwrap();
    assert!(csv.height() >= 2);
    let png = std::fs::read(out.join("anatomy.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
    fypsim()
        .args(["anatomy", "configs/longterm.toml", "--user", "3", "--policies", "myopic,planner", "--out"])
        .arg(&out)
        .assert()
        .failure()
        .stderr(predicates::str::contains("unknown policy `myopic`"));
    fypsim()
        .args(["inspect", "configs/longterm.toml", "--user", "3"])
        .assert()
        .success()
        .stdout(predicates::str::contains("\"latent\""))
        .stdout(predicates::str::contains("\"expected_reward\""));
}

#[test]
fn a_calendar_run_lives_the_population_through_weeks_and_writes_its_tables() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let extra = [
        "policy=greedy",
        "calendar.days=15",
        "calendar.coupling=0.3",
        "calendar.sessions_per_day=0.5",
        "calendar.churn_days=3",
        r#"calendar.baselines=["random"]"#,
    ];
    let assert = smoke_run(&out, &extra).success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).to_string();
    assert!(stdout.contains("population (40 users, 15 days") && stdout.contains("days.png"), "{stdout}");

    let sessions = read_parquet(&out.join("sessions.parquet")).unwrap();
    assert_eq!(
        columns(&sessions),
        [
            "policy",
            "user",
            "session",
            "start_s",
            "end_s",
            "day",
            "hour",
            "steps",
            "watch_s",
            "reward",
            "likes",
            "skips",
            "gap_s",
            "reactivated"
        ]
    );
    let days = read_csv(&out.join("days.csv")).unwrap();
    assert_eq!(days.height(), 30, "15 days for each of two policies");
    assert_eq!(
        columns(&days),
        [
            "policy",
            "day",
            "active_users",
            "sessions",
            "watch_s",
            "reward",
            "churned",
            "reactivated",
            "share_active",
            "cohort_retention",
            "users",
            "new_users",
            "uploads",
            "views",
            "new_video_share",
            "exposure_gini",
            "creator_earnings"
        ]
    );
    assert_eq!(read_parquet(&out.join("days.parquet")).unwrap().height(), 30);
    let weeks = read_parquet(&out.join("user_weeks.parquet")).unwrap();
    assert_eq!(weeks.height(), 2 * 40 * 2, "two whole weeks of 40 users under two policies");
    for col in ["policy", "user", "week", "sessions", "active_days", "watch_s", "likes", "skips", "days_since_last_visit"] {
        assert!(columns(&weeks).contains(&col.to_string()), "user_weeks.parquet lacks {col}");
    }
    assert!(columns(&weeks).contains(&"inactive_next_week".to_string()));
    for png in ["days.png", "retention.png"] {
        let bytes = std::fs::read(out.join(png)).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let pop = summary["population"].as_array().unwrap();
    assert_eq!(pop.len(), 2);
    assert_eq!(pop[0]["policy"], "greedy");
    assert!(pop[0]["day7_retention"].is_number() && pop[0]["day28_retention"].is_null());
    // The same seed writes the same population tables.
    let again = dir.path().join("again");
    smoke_run(&again, &extra).success();
    for f in ["sessions.parquet", "days.csv", "user_weeks.parquet"] {
        assert_eq!(std::fs::read(out.join(f)).unwrap(), std::fs::read(again.join(f)).unwrap(), "{f}");
    }
}

#[test]
fn a_calendar_with_sign_ups_and_uploads_writes_cohorts_and_the_creator_side() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let extra = [
        "policy=random",
        "calendar.days=9",
        "calendar.coupling=0.3",
        "calendar.signups_per_day=3",
        "calendar.uploads_per_creator_day=0.5",
        "calendar.fresh_slots=2",
        "calendar.pay_per_view=0.01",
    ];
    let assert = smoke_run(&out, &extra).success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).to_string();
    assert!(stdout.contains("of them sign-ups") && stdout.contains("creators (") && stdout.contains("cohorts.csv"), "{stdout}");
    let cohorts = read_csv(&out.join("cohorts.csv")).unwrap();
    assert_eq!(columns(&cohorts), ["policy", "signup_day", "users", "day1_retention", "day7_retention", "day28_retention"]);
    assert!(cohorts.height() >= 2, "the day-0 cohort and some sign-up days");
    let creators = read_parquet(&out.join("creators.parquet")).unwrap();
    assert_eq!(columns(&creators), ["policy", "day", "creator", "uploads", "views", "watch_s", "earnings"]);
    assert_eq!(creators.height(), 9 * 20, "every creator on every day");
    let total = |df: &polars::prelude::DataFrame, c: &str| -> f64 {
        df.column(c).unwrap().cast(&polars::prelude::DataType::Float64).unwrap().f64().unwrap().into_no_null_iter().sum()
    };
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let pop = &summary["population"][0];
    assert_eq!(pop["uploads"].as_f64().unwrap(), total(&creators, "uploads"));
    assert!((pop["creator_earnings"].as_f64().unwrap() - 0.01 * total(&creators, "views")).abs() < 1e-6);
    assert!(pop["new_users"].as_u64().unwrap() > 0 && pop["new_video_share"].as_f64().unwrap() > 0.0, "{pop}");
    let again = dir.path().join("again");
    smoke_run(&again, &extra).success();
    for f in ["sessions.parquet", "days.csv", "cohorts.csv", "creators.parquet", "user_weeks.parquet"] {
        assert_eq!(std::fs::read(out.join(f)).unwrap(), std::fs::read(again.join(f)).unwrap(), "{f}");
    }
}

#[test]
fn a_multi_seed_calendar_run_aggregates_the_population_across_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("seeds");
    let extra =
        ["train.seeds=[1,2,3]", "policy=greedy", "calendar.days=8", "calendar.coupling=0.3", r#"calendar.baselines=["random"]"#];
    let assert = smoke_run(&out, &extra).success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).to_string();
    assert!(stdout.contains("population, across seeds") && stdout.contains("random - greedy"), "{stdout}");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    for policy in ["greedy", "random"] {
        let p = &summary["population"][policy];
        assert!(p["watch_s_per_user"]["mean"].as_f64().unwrap() > 0.0, "{p}");
        assert!(p["day7_retention"]["ci95"].is_number(), "{p}");
    }
    // The paired difference is the mean of the per-seed differences.
    let d = summary["population_differences"]["random - greedy"]["watch_s_per_user"]["mean"].as_f64().unwrap();
    let per_seed: Vec<f64> = (1..=3)
        .map(|s| {
            let r: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(out.join(format!("seed{s}/summary.json"))).unwrap()).unwrap();
            r["population"][1]["watch_s_per_user"].as_f64().unwrap() - r["population"][0]["watch_s_per_user"].as_f64().unwrap()
        })
        .collect();
    assert!((d - per_seed.iter().sum::<f64>() / 3.0).abs() < 1e-9);
    assert!(out.join("retention.png").is_file());

    // The reward per session by session index, across seeds, recomputed from each seed's
    // sessions.parquet: random's first sessions and its share of greedy's in them.
    fypsim().args(["report"]).arg(&out).args(["--by-session", "--reference", "greedy"]).assert().success();
    let first_sessions = |s: u32, policy: &str| -> f64 {
        let df = read_parquet(&out.join(format!("seed{s}/sessions.parquet"))).unwrap();
        let p = df.column("policy").unwrap().str().unwrap().clone();
        let k = df.column("session").unwrap().cast(&polars::prelude::DataType::UInt32).unwrap();
        let r = df.column("reward").unwrap().cast(&polars::prelude::DataType::Float64).unwrap();
        let (k, r) = (k.u32().unwrap().clone(), r.f64().unwrap().clone());
        let v: Vec<f64> =
            (0..df.height()).filter(|&i| p.get(i) == Some(policy) && k.get(i) == Some(0)).map(|i| r.get(i).unwrap()).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let mean = (1..=3).map(|s| first_sessions(s, "random")).sum::<f64>() / 3.0;
    let share = (1..=3).map(|s| first_sessions(s, "random") / first_sessions(s, "greedy")).sum::<f64>() / 3.0;
    let table = read_csv(&out.join("by_session.csv")).unwrap();
    let row = (0..table.height())
        .find(|&i| {
            table.column("policy").unwrap().str().unwrap().get(i) == Some("random")
                && table.column("sessions_index").unwrap().str().unwrap().get(i) == Some("1")
        })
        .unwrap();
    let got = |c: &str| table.column(c).unwrap().f64().unwrap().get(row).unwrap();
    assert!((got("reward") - mean).abs() < 1e-9 && (got("share_of_reference") - share).abs() < 1e-9);
    assert!(got("reward_ci95").is_finite());
    let o = fypsim().args(["report", "configs", "--by-session"]).assert().failure();
    assert!(String::from_utf8_lossy(&o.get_output().stderr).contains("needs a calendar run"));
}

/// docs/run-folder.md: a checkpoint's `agent.ot` holds the replay buffer's filled rows
/// only (a buffer 50 times larger, as empty, costs nothing), and `config.toml` records the
/// git revision the binary came from, `-dirty` when the tree had changes.
#[test]
fn checkpoints_hold_filled_replay_rows_and_configs_their_revision() {
    let dir = tempfile::tempdir().unwrap();
    let (small, large) = (dir.path().join("small"), dir.path().join("large"));
    smoke_run(&small, &["dqn.replay_capacity=2000"]).success();
    smoke_run(&large, &["dqn.replay_capacity=100000"]).success();
    let size = |d: &Path| std::fs::metadata(d.join("checkpoint/agent.ot")).unwrap().len();
    let (a, b) = (size(&small), size(&large));
    assert!((a as f64 - b as f64).abs() < 0.01 * a as f64, "agent.ot: {a} bytes with capacity 2,000, {b} with 100,000");

    let config = std::fs::read_to_string(small.join("config.toml")).unwrap();
    let recorded = config.lines().find_map(|l| l.strip_prefix("git_revision = ")).unwrap().trim_matches('"').to_string();
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(head) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            assert_eq!(recorded, if dirty { format!("{head}-dirty") } else { head });
        }
        None => assert_eq!(recorded, "unknown"),
    }
}

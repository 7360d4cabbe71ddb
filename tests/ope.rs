//! `fypsim ope` end to end: the files it writes, and what it refuses.

use assert_cmd::Command;
use fypsim::output::records::{read_csv, read_parquet};

fn fypsim() -> Command {
    let mut c = Command::cargo_bin("fypsim").unwrap();
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

#[test]
fn ope_writes_every_estimate_with_its_truth_and_the_log_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ope");
    let run = fypsim()
        .args(["ope", "configs/smoke.toml", "--logging", "greedy@softmax=1", "--target", "greedy@softmax=0.5"])
        .args(["--target", "myopic_oracle@epsilon=0.3", "--sessions", "200", "--sizes", "20,100", "--truth-max", "3000"])
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let text = String::from_utf8_lossy(&run.get_output().stdout).to_string();
    assert!(text.contains("truth V1") && text.contains("wdr") && text.contains("results:"), "{text}");
    let df = read_csv(&out.join("ope.csv")).unwrap();
    // 2 targets x 3 sizes x 13 estimators.
    assert_eq!(df.height(), 2 * 3 * 13);
    for col in ["target", "sessions", "estimator", "estimand", "estimate", "ci_low", "ci_high", "ess", "truth", "relative_error"]
    {
        assert!(df.column(col).is_ok(), "{col}");
    }
    let est: Vec<f64> = df.column("estimate").unwrap().f64().unwrap().into_no_null_iter().collect();
    assert!(est.iter().all(|v| v.is_finite()), "{est:?}");
    let log = read_parquet(&out.join("log.parquet")).unwrap();
    for col in ["session", "action", "reward", "pscore", "logging_probs", "expected_rewards", "target0_probs", "target1_probs"] {
        assert!(log.column(col).is_ok(), "{col}");
    }
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("ope.json")).unwrap()).unwrap();
    assert_eq!(json["truths"].as_array().unwrap().len(), 2);
    assert!(out.join("ope.png").is_file());
}

#[test]
fn ope_refuses_what_it_cannot_estimate_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["--logging", "greedy", "--target", "random"], "never chooses"),
        (&["--logging", "greedy@softmax=1", "--target", "planner"], "probabilities are unknown"),
        (&["--logging", "greedy@softmax=0", "--target", "random"], "NAME@softmax=T"),
        (&["--logging", "random", "--target", "greedy", "--bootstrap", "5"], "from 100 to 100000"),
        (&["--logging", "random", "--target", "greedy", "--bootstrap", "1000000000000"], "from 100 to 100000"),
        (&["--logging", "random", "--target", "greedy", "--switch-tau", "3"], "--switch-tau 3"),
    ];
    for (args, want) in cases {
        fypsim()
            .args(["ope", "configs/smoke.toml", "--sessions", "20", "--truth-max", "100", "--out"])
            .arg(dir.path().join("x"))
            .args(args)
            .assert()
            .failure()
            .stderr(predicates::str::contains(want));
    }
}

/// `fypsim ope-study`: a small study file writes its tables and says where; a bad one is
/// refused naming the key and what is allowed.
#[test]
fn ope_study_writes_its_tables_and_refuses_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let study = dir.path().join("small.toml");
    let smoke = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/smoke.toml");
    let body = |sizes: &str| {
        format!(
            "config = {:?}\nlogging = [\"greedy@softmax=1\"]\ntargets = [\"greedy@softmax=0.5\"]\nsizes = {sizes}\nlogs = [4, 2]\ntruth_sessions = 2000\n",
            smoke.display().to_string()
        )
    };
    std::fs::write(&study, body("[20, 60]")).unwrap();
    let out = dir.path().join("out");
    let run = fypsim().arg("ope-study").arg(&study).arg("--out").arg(&out).assert().success();
    let text = String::from_utf8_lossy(&run.get_output().stdout).to_string();
    assert!(text.contains("relative RMSE") && text.contains("dr_seq") && text.contains("results:"), "{text}");
    let df = read_csv(&out.join("study.csv")).unwrap();
    assert_eq!(df.height(), 2 * 13);
    for col in ["bias", "bias_se", "spread", "relative_rmse", "coverage", "mean_ess"] {
        assert!(df.column(col).is_ok(), "{col}");
    }
    std::fs::write(&study, body("[60, 20]")).unwrap();
    let bad = fypsim().arg("ope-study").arg(&study).assert().failure();
    let err = String::from_utf8_lossy(&bad.get_output().stderr).to_string();
    assert!(err.contains("`sizes`") && err.contains("increasing"), "{err}");
}

/// `fypsim ope --log DIR`: a saved log is replayed (its choices rerun in their episodes)
/// and estimates new targets; the same target gives the same estimates as the run that
/// logged it; a log whose reward, propensity or choice was changed is refused, naming the
/// row; a folder that is not an ope log, or a CONFIG beside --log, is refused.
#[test]
fn ope_estimates_new_targets_on_a_saved_log_after_checking_its_replay() {
    use polars::prelude::{Column, DataFrame};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ope");
    fypsim()
        .args(["ope", "configs/smoke.toml", "--logging", "greedy@softmax=1", "--target", "greedy@softmax=0.5"])
        .args(["--sessions", "150", "--bootstrap", "100", "--truth-max", "2000", "--out"])
        .arg(&out)
        .assert()
        .success();
    assert!(out.join("config.toml").is_file());
    let again = dir.path().join("again");
    let run = fypsim()
        .args(["ope", "--log"])
        .arg(&out)
        .args(["--target", "greedy@softmax=0.5", "--target", "most_viewed@epsilon=0.5"])
        .args(["--bootstrap", "100", "--truth-max", "2000", "--out"])
        .arg(&again)
        .assert()
        .success();
    let text = String::from_utf8_lossy(&run.get_output().stdout).to_string();
    assert!(text.contains("150 sessions") && text.contains("target most_viewed@epsilon=0.5"), "{text}");
    let rows = |path: &std::path::Path, target: &str| -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with(&format!("{target},150,")))
            .map(str::to_string)
            .collect()
    };
    let first = rows(&out.join("ope.csv"), "greedy@softmax=0.5");
    assert_eq!(first.len(), 13);
    assert_eq!(first, rows(&again.join("ope.csv"), "greedy@softmax=0.5"), "the replayed log estimates differently");
    assert_eq!(rows(&again.join("ope.csv"), "most_viewed@epsilon=0.5").len(), 13);
    assert!(!again.join("log.parquet").exists());

    // A changed log is refused, naming the row.
    let log = read_parquet(&out.join("log.parquet")).unwrap();
    for (column, why) in [("reward", "the replay pays"), ("pscore", "choice probability"), ("action", "")] {
        let mut df = DataFrame::new_infer_height(
            ["session", "t", "action", "reward", "pscore"]
                .iter()
                .map(|c| log.column(c).unwrap().clone())
                .collect::<Vec<Column>>(),
        )
        .unwrap();
        let mut values: Vec<f64> = df
            .column(column)
            .unwrap()
            .cast(&polars::prelude::DataType::Float64)
            .unwrap()
            .f64()
            .unwrap()
            .into_no_null_iter()
            .collect();
        values[7] += if column == "action" { 1.0 } else { 0.25 };
        df.with_column(Column::new(column.into(), values)).unwrap();
        let bad = dir.path().join(format!("bad-{column}"));
        std::fs::create_dir_all(&bad).unwrap();
        for f in ["config.toml", "ope.json"] {
            std::fs::copy(out.join(f), bad.join(f)).unwrap();
        }
        fypsim::output::records::write_parquet(&mut df, &bad.join("log.parquet")).unwrap();
        let o = fypsim().args(["ope", "--log"]).arg(&bad).args(["--target", "greedy", "--truth-max", "100"]).assert().failure();
        let err = String::from_utf8_lossy(&o.get_output().stderr).to_string();
        assert!(err.contains("does not replay at row") && err.contains(why), "{column}: {err}");
    }
    let o = fypsim().args(["ope", "--log", "configs", "--target", "greedy"]).assert().failure();
    assert!(String::from_utf8_lossy(&o.get_output().stderr).contains("is not the folder of a `fypsim ope` log"));
    let o = fypsim().args(["ope", "configs/smoke.toml", "--log"]).arg(&out).args(["--target", "greedy"]).assert().failure();
    assert!(String::from_utf8_lossy(&o.get_output().stderr).contains("give no CONFIG or --set"));
}

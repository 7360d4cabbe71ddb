//! Sweeps and reports end to end: the shipped smoke sweep runs, shards add up to the whole
//! sweep, a finished sweep does no work, and the report's numbers match the runs' files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use fypsim::output::records::read_csv;
use polars::prelude::DataType;

fn fypsim() -> Command {
    let mut c = Command::cargo_bin("fypsim").unwrap();
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn sweep(out: &Path, extra: &[&str]) -> String {
    let mut c = fypsim();
    c.args(["sweep", "configs/sweeps/smoke.toml", "--jobs", "2", "--out"]).arg(out).args(extra);
    let o = c.assert().success().get_output().clone();
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Every run folder (with summary.json) below `dir`, relative to it.
fn runs(dir: &Path) -> Vec<PathBuf> {
    fypsim::experiment::report::discover(dir)
        .unwrap()
        .into_iter()
        .map(|r| r.dir.strip_prefix(dir).unwrap().to_path_buf())
        .collect()
}

#[test]
fn shards_add_up_to_the_sweep_and_finished_sweeps_do_no_work() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, sharded) = (tmp.path().join("whole"), tmp.path().join("sharded"));
    let out = sweep(&whole, &[]);
    assert!(out.contains("4 runs done, 0 skipped"), "{out}");
    let all = runs(&whole);
    assert_eq!(all.len(), 4);

    let one = sweep(&sharded, &["--shard", "1/2"]);
    assert!(one.contains("2 runs done"), "{one}");
    let first = runs(&sharded);
    let two = sweep(&sharded, &["--shard", "2/2"]);
    assert!(two.contains("2 runs done"), "{two}");
    let mut both = runs(&sharded);
    both.sort();
    let mut expected = all.clone();
    expected.sort();
    assert_eq!(both, expected, "the shards' union is the sweep");
    assert!(first.iter().all(|r| both.contains(r)) && first.len() == 2);
    // The same runs give the same results, sharded or not.
    for r in &all {
        let a = std::fs::read_to_string(whole.join(r).join("baselines.csv")).unwrap();
        let b = std::fs::read_to_string(sharded.join(r).join("baselines.csv")).unwrap();
        assert_eq!(a, b, "{}", r.display());
    }

    // A finished sweep does no work and leaves the files alone.
    let stamp = std::fs::metadata(whole.join(&all[0]).join("summary.json")).unwrap().modified().unwrap();
    let again = sweep(&whole, &[]);
    assert!(again.contains("0 runs done, 4 skipped"), "{again}");
    assert_eq!(std::fs::metadata(whole.join(&all[0]).join("summary.json")).unwrap().modified().unwrap(), stamp);

    // An interrupted run (no summary.json) is run again.
    std::fs::remove_file(whole.join(&all[1]).join("summary.json")).unwrap();
    let resumed = sweep(&whole, &[]);
    assert!(resumed.contains("1 runs done, 3 skipped"), "{resumed}");
}

fn column_f64(df: &polars::prelude::DataFrame, name: &str) -> Vec<Option<f64>> {
    let c = df.column(name).unwrap().cast(&DataType::Float64).unwrap();
    let ca = c.f64().unwrap();
    (0..ca.len()).map(|i| ca.get(i)).collect()
}

fn column_str(df: &polars::prelude::DataFrame, name: &str) -> Vec<String> {
    let ca = df.column(name).unwrap().str().unwrap().clone();
    (0..ca.len()).map(|i| ca.get(i).unwrap().to_string()).collect()
}

#[test]
fn report_numbers_match_the_runs_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    sweep(&dir, &[]);
    fypsim().arg("report").arg(&dir).assert().success();
    for f in ["report.md", "report.csv", "curves.png", "policies.png"] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let png = std::fs::read(dir.join("curves.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");

    // Recompute from each run's eval_episodes.csv: per run, the mean return of each policy;
    // per configuration, the mean over seeds, a t interval, and the oracle fraction.
    let mut per_config: BTreeMap<String, Vec<BTreeMap<String, f64>>> = BTreeMap::new();
    for label in ["dqn.lr=0.001", "dqn.lr=0.003"] {
        for seed in [1, 2] {
            let df = read_csv(&dir.join(label).join(format!("seed{seed}")).join("eval_episodes.csv")).unwrap();
            let policies = column_str(&df, "policy");
            let returns = column_f64(&df, "return");
            let mut sums: BTreeMap<String, (f64, f64)> = BTreeMap::new();
            for (p, r) in policies.iter().zip(returns) {
                let e = sums.entry(p.clone()).or_default();
                e.0 += r.unwrap();
                e.1 += 1.0;
            }
            per_config.entry(label.into()).or_default().push(sums.into_iter().map(|(k, (s, n))| (k, s / n)).collect());
        }
    }
    let report = read_csv(&dir.join("report.csv")).unwrap();
    let labels = column_str(&report, "label");
    let mean = column_f64(&report, "mean_return");
    let ci = column_f64(&report, "ci95");
    let frac = column_f64(&report, "oracle_fraction");
    let greedy = column_f64(&report, "greedy");
    for (i, label) in labels.iter().enumerate() {
        let seeds = &per_config[label];
        let trained: Vec<f64> = seeds.iter().map(|m| m["dqn (trained)"]).collect();
        let m = trained.iter().sum::<f64>() / 2.0;
        assert!((mean[i].unwrap() - m).abs() < 1e-9, "{label}: {:?} vs {m}", mean[i]);
        let sd = ((trained[0] - m).powi(2) + (trained[1] - m).powi(2)).sqrt(); // n - 1 = 1
        assert!((ci[i].unwrap() - 12.706 * sd / 2f64.sqrt()).abs() < 1e-6);
        let f: f64 = seeds.iter().map(|s| (s["dqn (trained)"] - s["random"]) / (s["oracle"] - s["random"])).sum::<f64>() / 2.0;
        assert!((frac[i].unwrap() - f).abs() < 1e-9);
        let g = seeds.iter().map(|s| s["greedy"]).sum::<f64>() / 2.0;
        assert!((greedy[i].unwrap() - g).abs() < 1e-9);
    }

    // A/B between the two configurations: paired episodes and a per-episode log.
    let o = fypsim()
        .args(["report"])
        .arg(&dir)
        .args(["--ab", "dqn.lr=0.001", "dqn.lr=0.003"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8_lossy(&o);
    assert!(text.contains("paired episodes"), "{text}");
    let log = read_csv(&dir.join("ab.csv")).unwrap();
    assert_eq!(log.height(), 2 * 20, "2 seeds x 20 evaluation episodes");
    let a = column_f64(&log, "return_a");
    let b = column_f64(&log, "return_b");
    let d = column_f64(&log, "diff_b_minus_a");
    for k in 0..log.height() {
        assert!((b[k].unwrap() - a[k].unwrap() - d[k].unwrap()).abs() < 1e-12);
    }
    fypsim()
        .arg("report")
        .arg(&dir)
        .args(["--ab", "dqn.lr=0.001", "nope"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("no configuration `nope`"));
}

#[test]
fn shipped_sweeps_expand_and_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/sweeps");
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let s = fypsim::experiment::sweep::plan(&path, None).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(s.runs.len() >= 4, "{}", path.display());
    }
    let lr = fypsim::experiment::sweep::plan(&root.join("lr-epsilon.toml"), None).unwrap();
    let seeds: std::collections::BTreeSet<u64> = lr.runs.iter().map(|r| r.seed).collect();
    assert_eq!(seeds.len(), 3);
}

#[test]
fn a_failing_run_is_recorded_and_the_sweep_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("s");
    // Make one run's folder impossible to create: a file where its parent folder goes.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("dqn.lr=0.003"), "in the way").unwrap();
    let mut c = fypsim();
    c.args(["sweep", "configs/sweeps/smoke.toml", "--jobs", "2", "--out"]).arg(&out);
    let o = c.assert().failure().get_output().clone();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("2 runs done, 0 skipped (complete), 2 failed"), "{stdout}");
    assert!(stdout.contains("failed: dqn.lr=0.003 seed 1"), "{stdout}");
    assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
}

#[test]
fn sweeps_leave_locked_runs_alone_and_refuse_runs_of_other_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("s");
    // Another process works in one run folder: the sweep leaves it to that process.
    let held = out.join("dqn.lr=0.001/seed1");
    std::fs::create_dir_all(&held).unwrap();
    let lock = fypsim::experiment::run::RunLock::acquire(&held).unwrap();
    let first = sweep(&out, &[]);
    assert!(first.contains("3 runs done") && first.contains("1 runs were being run by another process"), "{first}");
    assert!(!held.join("summary.json").exists());
    drop(lock);
    let second = sweep(&out, &[]);
    assert!(second.contains("1 runs done, 3 skipped"), "{second}");

    // The same folders under other settings: each run fails alone, nothing is reused.
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/smoke.toml");
    let changed = tmp.path().join("changed.toml");
    std::fs::write(
        &changed,
        format!(
            "base = {:?}\nseeds = [1, 2]\n[grid]\n\"dqn.lr\" = [0.001, 0.003]\n[set]\n\"train.episodes\" = 21\n",
            base.display().to_string()
        ),
    )
    .unwrap();
    let o = fypsim().args(["sweep"]).arg(&changed).args(["--out"]).arg(&out).assert().failure().get_output().clone();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("0 runs done, 0 skipped (complete), 4 failed"), "{stdout}");
    assert!(stdout.contains("holds a finished run of another config"), "{stdout}");
}

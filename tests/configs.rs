//! Every shipped config parses and validates.

use std::path::{Path, PathBuf};

use fypsim::config::Config;

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

#[test]
fn every_shipped_config_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut files = Vec::new();
    toml_files(&root, &mut files);
    assert!(files.len() >= 2, "configs/ should hold default.toml and smoke.toml");
    for f in &files {
        // Sweep files are checked by the sweep tests; experiment configs here; off-policy
        // study files as study files, and their world configs with them.
        if f.components().any(|c| c.as_os_str() == "sweeps") {
            continue;
        }
        if f.components().any(|c| c.as_os_str() == "ope") {
            let study = fypsim::ope::study::StudyFile::load(f).unwrap_or_else(|e| panic!("{e}"));
            Config::load(&study.config_path(f), &[]).unwrap_or_else(|e| panic!("{}: its config: {e}", f.display()));
            continue;
        }
        if let Err(e) = Config::load(f, &[]) {
            panic!("{}: {e}", f.display());
        }
    }
}

#[test]
fn the_built_in_defaults_are_configs_default_toml() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = Config::load(&root.join("configs/default.toml"), &[]).unwrap();
    assert_eq!(
        shipped.inner(),
        &Config::default(),
        "configs/default.toml and Config::default() disagree: change both (and docs/configuration.md)"
    );
    // The prototype's agent and budget live in configs/prototype.toml alone.
    let proto = Config::load(&root.join("configs/prototype.toml"), &[]).unwrap();
    let c = &proto.dqn;
    assert_eq!(
        (c.head, c.double, c.lr, c.replay_capacity, c.train_every),
        (fypsim::config::QHead::Slots, false, 1e-3, 10_000, 1)
    );
    assert_eq!(c.candidate_features, ["final", "raw", "views", "interest"]);
    assert_eq!((c.epsilon.per, c.epsilon.rate), (fypsim::config::DecayUnit::Update, 0.995));
    let t = &proto.train;
    assert_eq!((t.episodes, t.eval_episodes, t.eval_every, t.checkpoint_every, t.moving_average), (500, 100, 50, 100, 20));
    assert_eq!(t.eval_world, fypsim::config::EvalWorld::Evolving);
}

/// Every leaf key of `table`, dotted.
fn leaves(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) => leaves(t, &key, out),
            _ => out.push(key),
        }
    }
}

/// The keys and documented defaults of docs/configuration.md's table: (keys, default
/// tokens; empty where the default is described in words).
fn documented() -> Vec<(Vec<String>, Vec<String>)> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md")).unwrap();
    let ticked = |cell: &str| -> Vec<String> { cell.split('`').skip(1).step_by(2).map(str::to_string).collect() };
    let mut rows = Vec::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        assert!(cells.len() >= 3, "a table row of docs/configuration.md with fewer than 3 cells: {line}");
        let names = ticked(cells[0]);
        let first = names[0].clone();
        let (section, last) =
            first.rsplit_once('.').map_or((String::new(), first.clone()), |(s, l)| (s.to_string(), l.to_string()));
        let mut keys = vec![first.clone()];
        for n in &names[1..] {
            // `_std` after `world.initial_views_mean` is `world.initial_views_std`; `age_max`
            // after `world.age_min` is `world.age_max`.
            let key = if n.starts_with('_') {
                let stems: Vec<usize> = last.match_indices('_').map(|(i, _)| i).collect();
                stems.iter().map(|&i| format!("{section}.{}{n}", &last[..i])).collect::<Vec<_>>()
            } else {
                vec![if section.is_empty() { n.clone() } else { format!("{section}.{n}") }]
            };
            keys.push(key.join("|"));
        }
        rows.push((keys, ticked(cells[1])));
    }
    rows
}

/// Whether `key = value` as an override leaves the built-in defaults unchanged (so the
/// documented default is the default), or why not.
fn is_default(key: &str, value: &str) -> Result<(), String> {
    let c = Config::from_toml_str("", &[format!("{key}={value}")]).map_err(|e| e.to_string())?;
    if c.inner() == &Config::default() {
        Ok(())
    } else {
        Err(format!("the default is not {value}"))
    }
}

#[test]
fn docs_configuration_md_states_every_key_and_its_built_in_default() {
    let d = Config::default();
    let mut known = Vec::new();
    leaves(&toml::Table::try_from(&d).unwrap(), "", &mut known);
    // Sections left out of a resolved config while at their defaults.
    leaves(&toml::Table::try_from(&d.dynamics).unwrap(), "dynamics", &mut known);
    leaves(&toml::Table::try_from(&d.planner).unwrap(), "planner", &mut known);
    leaves(&toml::Table::try_from(&d.calendar).unwrap(), "calendar", &mut known);

    let mut problems = Vec::new();
    let mut named = Vec::new();
    for (keys, values) in documented() {
        // Resolve each `a|b` alternative to the one that exists.
        let keys: Vec<String> = keys
            .iter()
            .map(|k| k.split('|').find(|c| known.iter().any(|n| n == c)).unwrap_or(k.split('|').next().unwrap()).to_string())
            .collect();
        named.extend(keys.iter().cloned());
        if let Some(table) = keys[0].strip_suffix(".*") {
            // `dqn.embeddings.*`: "gender 1, region 2, ..." in one cell.
            for pair in values.concat().split(", ") {
                let (k, v) = pair.split_once(' ').unwrap_or((pair, ""));
                let key = format!("{table}.{k}");
                named.push(key.clone());
                if let Err(e) = is_default(&key, v) {
                    problems.push(format!("{key}: {e}"));
                }
            }
            continue;
        }
        if values.is_empty() {
            continue; // described in words ("8 names", "none")
        }
        if values.len() != keys.len() {
            problems.push(format!("{}: {} keys but {} defaults", keys.join(", "), keys.len(), values.len()));
            continue;
        }
        for (k, v) in keys.iter().zip(&values) {
            if let Err(e) = is_default(k, v) {
                problems.push(format!("{k}: documented `{v}`: {e}"));
            }
        }
    }
    for k in &known {
        if !named.contains(k) {
            problems.push(format!("{k}: not in docs/configuration.md"));
        }
    }
    assert!(problems.is_empty(), "docs/configuration.md disagrees with Config::default():\n  {}", problems.join("\n  "));
}

//! The library's layers hold: every `crate::` and `super::` path outside `#[cfg(test)]`,
//! in `use` lines and inline, names an item of its own layer or of a layer below, and no
//! two modules import each other (directly or round a longer circle).
//!
//! The layers, bottom to top (the order of `LAYERS`); `lib.rs` documents the same list.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module of `src/` and its layer. The root (`lib.rs`) and its items
/// (`crate::Error`, `crate::cores`) are the base.
const LAYERS: &[(&str, &[&str])] = &[
    ("base", &["error", "files", "rng", "stats", "stop"]),
    ("config", &["config"]),
    ("model", &["model"]),
    ("world", &["world"]),
    ("platform", &["platform"]),
    ("env", &["env"]),
    ("agent", &["agent"]),
    ("drive", &["drive"]),
    ("output", &["output"]),
    ("experiment", &["experiment"]),
    ("tools", &["tools"]),
    ("side systems", &["learn", "serve", "ope"]),
];

/// A module path, `[]` for the crate root.
type Module = Vec<String>;

fn layer_of(module: &[String]) -> Option<usize> {
    let Some(top) = module.first() else { return Some(0) };
    LAYERS.iter().position(|(_, mods)| mods.contains(&top.as_str()))
}

/// The module a source file defines: `src/agent/dqn.rs` -> `agent::dqn`,
/// `src/agent/mod.rs` -> `agent`, `src/lib.rs` -> the root.
fn module_of(rel: &str) -> Module {
    let rel = rel.trim_end_matches(".rs");
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Punct(char),
    PathSep,
}

/// The tokens of Rust source without comments, string and character literals.
fn tokens(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if ch == 'r' && matches!(c.get(i + 1), Some('"') | Some('#')) && raw_string_end(&c, i).is_some() {
            i = raw_string_end(&c, i).unwrap();
        } else if ch == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if ch == '\'' {
            // A character literal ('a', '\n', '\u{..}') or a lifetime ('a).
            if c.get(i + 1) == Some(&'\\') {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(c[start..i].iter().collect()));
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push(Tok::PathSep);
            i += 2;
        } else {
            if !ch.is_whitespace() {
                out.push(Tok::Punct(ch));
            }
            i += 1;
        }
    }
    out
}

/// Where a raw string literal starting at `i` (`r"..."`, `r#"..."#`) ends, if it is one.
fn raw_string_end(c: &[char], i: usize) -> Option<usize> {
    let mut j = i + 1;
    let mut hashes = 0;
    while c.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    if c.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < c.len() {
        if c[j] == '"' && (0..hashes).all(|k| c.get(j + 1 + k) == Some(&'#')) {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(c.len())
}

/// The tokens with every item under `#[cfg(test)]` removed.
fn without_tests(toks: Vec<Tok>) -> Vec<Tok> {
    let is = |t: Option<&Tok>, s: &str| matches!(t, Some(Tok::Ident(x)) if x == s);
    let p = |t: Option<&Tok>, ch: char| t == Some(&Tok::Punct(ch));
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let cfg_test = p(toks.get(i), '#')
            && p(toks.get(i + 1), '[')
            && is(toks.get(i + 2), "cfg")
            && p(toks.get(i + 3), '(')
            && is(toks.get(i + 4), "test")
            && p(toks.get(i + 5), ')')
            && p(toks.get(i + 6), ']');
        if !cfg_test {
            out.push(toks[i].clone());
            i += 1;
            continue;
        }
        // Skip the attribute and its item: up to a `;` at depth 0 or a balanced `{...}`.
        i += 7;
        let mut depth = 0usize;
        while i < toks.len() {
            match &toks[i] {
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => {
                    depth -= 1;
                    if depth == 0 {
                        i += 1;
                        break;
                    }
                }
                Tok::Punct(';') if depth == 0 => {
                    i += 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
    }
    out
}

/// Parses a path or use tree at `i` (just after `crate::` or `super::`), appending every
/// full path it names to `out`; returns the index after it.
fn tree(toks: &[Tok], mut i: usize, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    loop {
        match toks.get(i) {
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    if toks.get(i) == Some(&Tok::Punct('}')) {
                        break;
                    }
                    i = tree(toks, i, prefix.clone(), out);
                    if toks.get(i) == Some(&Tok::Punct(',')) {
                        i += 1;
                    } else {
                        break;
                    }
                }
                return i + 1;
            }
            Some(Tok::Ident(name)) => {
                prefix.push(name.clone());
                i += 1;
                if toks.get(i) == Some(&Tok::PathSep) && !matches!(toks.get(i + 1), Some(Tok::Punct('<'))) {
                    i += 1;
                    continue;
                }
                if matches!(toks.get(i), Some(Tok::Ident(a)) if a == "as") {
                    i += 2;
                }
                out.push(prefix);
                return i;
            }
            Some(Tok::Punct('*')) => {
                out.push(prefix);
                return i + 1;
            }
            _ => {
                out.push(prefix);
                return i;
            }
        }
    }
}

/// Every path a module's source names through `crate::` or `super::`, as absolute
/// segment lists.
fn paths(module: &Module, src: &str) -> Vec<Vec<String>> {
    let toks = without_tests(tokens(src));
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let crate_path = matches!(&toks[i], Tok::Ident(s) if s == "crate") && toks.get(i + 1) == Some(&Tok::PathSep);
        let super_path = matches!(&toks[i], Tok::Ident(s) if s == "super") && toks.get(i + 1) == Some(&Tok::PathSep);
        let preceded_by_sep = i > 0 && toks[i - 1] == Tok::PathSep;
        if crate_path && !preceded_by_sep {
            i = tree(&toks, i + 2, Vec::new(), &mut out);
        } else if super_path && !preceded_by_sep {
            let mut base = module.clone();
            while matches!(toks.get(i), Some(Tok::Ident(s)) if s == "super") && toks.get(i + 1) == Some(&Tok::PathSep) {
                base.pop();
                i += 2;
            }
            i = tree(&toks, i, base, &mut out);
        } else {
            i += 1;
        }
    }
    out
}

/// The module a path names: its longest prefix that is a module of the crate.
fn target(path: &[String], modules: &BTreeSet<Module>) -> Module {
    (0..=path.len()).rev().map(|k| path[..k].to_vec()).find(|p| modules.contains(p)).unwrap_or_default()
}

/// The module graph of a set of files (relative path, source): for each module, the
/// modules its paths name, each with one path that names it.
fn graph(files: &[(String, String)]) -> BTreeMap<Module, BTreeMap<Module, String>> {
    let modules: BTreeSet<Module> = files.iter().map(|(rel, _)| module_of(rel)).collect();
    let mut g = BTreeMap::new();
    for (rel, src) in files {
        let me = module_of(rel);
        let edges: &mut BTreeMap<Module, String> = g.entry(me.clone()).or_default();
        for p in paths(&me, src) {
            let to = target(&p, &modules);
            edges.entry(to).or_insert_with(|| p.join("::"));
        }
    }
    g
}

/// Every upward path, every module outside the layer table, and every import circle.
fn violations(files: &[(String, String)]) -> Vec<String> {
    let g = graph(files);
    let name = |m: &Module| if m.is_empty() { "crate".to_string() } else { m.join("::") };
    let mut found = Vec::new();
    for (from, edges) in &g {
        let Some(mine) = layer_of(from) else {
            found.push(format!("module {} is in no layer (tests/layers.rs lists them)", name(from)));
            continue;
        };
        for (to, path) in edges {
            if let Some(theirs) = layer_of(to) {
                if theirs > mine {
                    found.push(format!(
                        "{} (layer {}) names crate::{path}, of layer {} above it",
                        name(from),
                        LAYERS[mine].0,
                        LAYERS[theirs].0
                    ));
                }
            }
        }
    }
    // Circles: a parent naming its own submodules (declaring or re-exporting them) is not
    // an import; any other edge is.
    let edges = |m: &Module| -> Vec<Module> {
        g.get(m)
            .map(|e| e.keys().filter(|t| *t != m && !(t.len() > m.len() && t.starts_with(m))).cloned().collect())
            .unwrap_or_default()
    };
    let mut state: BTreeMap<Module, u8> = BTreeMap::new(); // 1 on the stack, 2 done
    fn visit(
        m: &Module,
        edges: &dyn Fn(&Module) -> Vec<Module>,
        state: &mut BTreeMap<Module, u8>,
        stack: &mut Vec<Module>,
        found: &mut Vec<String>,
    ) {
        state.insert(m.clone(), 1);
        stack.push(m.clone());
        for t in edges(m) {
            match state.get(&t) {
                Some(1) => {
                    let at = stack.iter().position(|s| *s == t).unwrap();
                    let circle: Vec<String> = stack[at..].iter().chain([&t]).map(|s| s.join("::")).collect();
                    found.push(format!("import circle: {}", circle.join(" -> ")));
                }
                Some(_) => {}
                None => visit(&t, edges, state, stack, found),
            }
        }
        stack.pop();
        state.insert(m.clone(), 2);
    }
    for m in g.keys() {
        if !state.contains_key(m) {
            visit(m, &edges, &mut state, &mut Vec::new(), &mut found);
        }
    }
    found
}

fn read_tree(dir: &Path, rel: &str, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let r = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
        if p.is_dir() {
            read_tree(&p, &r, out);
        } else if name.ends_with(".rs") {
            out.push((r, std::fs::read_to_string(&p).unwrap()));
        }
    }
}

#[test]
fn the_library_has_no_upward_path_and_no_import_circle() {
    let mut files = Vec::new();
    read_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), "", &mut files);
    assert!(files.len() > 40, "read only {} files", files.len());
    let found = violations(&files);
    assert!(found.is_empty(), "the layers do not hold:\n  {}", found.join("\n  "));
}

fn tree_of(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files.iter().map(|(p, s)| (p.to_string(), s.to_string())).collect()
}

#[test]
fn an_upward_path_fails_in_any_form() {
    let base = [
        ("lib.rs", "pub mod config; pub mod agent; pub mod experiment;"),
        ("agent/mod.rs", "pub mod dqn; pub trait Policy {}"),
        ("agent/dqn.rs", "use super::Policy;"),
        ("experiment/mod.rs", "pub mod run;"),
        ("experiment/run.rs", "pub struct Summary;"),
    ];
    let ok = tree_of(&[&base[..], &[("config/mod.rs", "use crate::Error;")]].concat());
    assert_eq!(violations(&ok), Vec::<String>::new());

    for upward in [
        "use crate::agent::Policy;",
        "use crate::{Error, agent::dqn};",
        "fn f() { let _ = crate::experiment::run::Summary; }",
        "fn f() -> Option<crate::experiment::run::Summary> { None }",
        "use crate::experiment::{self};",
    ] {
        let t = tree_of(&[&base[..], &[("config/mod.rs", upward)]].concat());
        let found = violations(&t);
        assert_eq!(found.len(), 1, "{upward}: {found:?}");
        assert!(found[0].starts_with("config (layer config) names crate::"), "{upward}: {found:?}");
    }

    // Comments, strings and test modules name nothing.
    for harmless in [
        "// crate::agent::Policy\nfn f() {}",
        "/// See [`crate::experiment::run`].\nfn f() {}",
        "fn f() -> &'static str { \"crate::agent::Policy\" }",
        "#[cfg(test)]\nmod tests { use crate::experiment::run::Summary; }",
    ] {
        let t = tree_of(&[&base[..], &[("config/mod.rs", harmless)]].concat());
        assert_eq!(violations(&t), Vec::<String>::new(), "{harmless}");
    }

    // super:: resolves against the file's own module.
    let t = tree_of(&[&base[..], &[("config/mod.rs", ""), ("experiment/run.rs", "use super::super::config;")]].concat());
    assert_eq!(violations(&t), Vec::<String>::new());
    let t = tree_of(&[&base[..], &[("agent/replay.rs", "use super::super::experiment::run::Summary;")]].concat());
    assert_eq!(violations(&t).len(), 1);
}

#[test]
fn a_circle_within_a_layer_fails_and_a_parent_naming_its_children_does_not() {
    let t = tree_of(&[
        ("lib.rs", "pub mod drive;"),
        ("drive/mod.rs", "pub mod train; pub mod calendar; pub use train::train;"),
        ("drive/train.rs", "use super::calendar::Run;"),
        ("drive/calendar.rs", "use crate::drive::train::Record;"),
    ]);
    let found = violations(&t);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("import circle: drive::"), "{found:?}");

    let t = tree_of(&[
        ("lib.rs", "pub mod agent;"),
        ("agent/mod.rs", "pub mod dqn; pub use dqn::Dqn;"),
        ("agent/dqn.rs", "use super::Policy;"),
    ]);
    assert_eq!(violations(&t), Vec::<String>::new());
}

#[test]
fn a_module_outside_the_table_fails() {
    let t = tree_of(&[("lib.rs", "pub mod helpers;"), ("helpers.rs", "")]);
    assert_eq!(violations(&t), vec!["module helpers is in no layer (tests/layers.rs lists them)".to_string()]);
}

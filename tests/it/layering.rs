//! The folders of src/ depend on each other in one direction only (the
//! map in docs/architecture.md): a `use crate::<folder>` against it fails
//! here, so no import cycle can creep back in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Which top-level module may use which.
const ALLOWED: &[(&str, &[&str])] = &[
    ("api", &[]),
    ("domain", &["api"]),
    ("platform", &["api", "domain"]),
    ("log", &["api", "domain", "platform"]),
    ("scopes", &["api", "domain", "log", "platform"]),
    ("identity", &["api", "domain", "log", "platform", "scopes"]),
    ("fleet", &["api", "domain", "log", "platform", "scopes"]),
    ("queries", &["api", "domain", "fleet", "log", "platform"]),
    (
        "app",
        &["api", "domain", "fleet", "identity", "log", "platform", "scopes"],
    ),
    (
        "http",
        &[
            "api", "app", "domain", "fleet", "identity", "log", "platform", "queries", "scopes",
        ],
    ),
    (
        "cli",
        &[
            "api", "app", "domain", "fleet", "http", "identity", "log", "platform", "queries", "scopes",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn folders_only_use_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(module, uses)| (*module, uses.iter().copied().collect()))
        .collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let module = relative
            .iter()
            .next()
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches(".rs");
        let Some(may_use) = allowed.get(module) else {
            assert!(["lib", "main"].contains(&module), "{module} is not in the layer map");
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for used in line.split("crate::").skip(1) {
                let used: String = used.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if used != module && allowed.contains_key(used.as_str()) && !may_use.contains(used.as_str()) {
                    violations.push(format!("{}:{}: {module} uses {used}", relative.display(), number + 1));
                }
            }
        }
    }
    assert!(violations.is_empty(), "layering violations:\n{}", violations.join("\n"));
}

/// Inside `http/`, the modules (files, and `routes/` as one) import each
/// other without a loop: the route files use the shared parts (auth,
/// errors, sessions, ...), never the other way round. `mod.rs` (the
/// server's assembly) and test code are left out.
#[test]
fn http_modules_import_each_other_without_a_loop() {
    let http = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut files = Vec::new();
    rust_files(&http, &mut files);
    let module_of = |path: &Path| -> Option<String> {
        let relative = path.strip_prefix(&http).unwrap();
        let first = relative.iter().next()?.to_str()?.to_owned();
        if first == "mod.rs" {
            return None;
        }
        Some(first.trim_end_matches(".rs").to_owned())
    };
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(module) = module_of(file) else { continue };
        let text = std::fs::read_to_string(file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let in_http_root = file.parent() == Some(http.as_path());
        let mut used = BTreeSet::new();
        for (prefix, applies) in [("crate::http::", true), ("super::", in_http_root)] {
            if !applies {
                continue;
            }
            for piece in code.split(prefix).skip(1) {
                let name: String = piece.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                let is_module = http.join(format!("{name}.rs")).exists() || http.join(&name).is_dir();
                if !name.is_empty() && name != module && is_module {
                    used.insert(name);
                }
            }
        }
        uses.entry(module).or_default().extend(used);
    }
    // Depth-first search for a cycle.
    fn visit(
        node: &str,
        uses: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in uses.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, uses, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for module in uses.keys() {
        let cycle = visit(module, &uses, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "http modules import each other in a loop: {cycle:?} (all: {uses:?})"
        );
    }
    assert!(uses.get("routes").is_some_and(|used| used.contains("auth")), "{uses:?}");
}

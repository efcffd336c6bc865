//! The folders of src/ depend on each other in one direction only (the
//! map in docs/architecture.md): a `use crate::<folder>` against it fails
//! here, so no import cycle can creep back in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Which top-level module may use which.
const ALLOWED: &[(&str, &[&str])] = &[
    ("api", &[]),
    ("domain", &[]),
    ("platform", &["domain"]),
    ("log", &["domain", "platform"]),
    ("identity", &["domain", "log", "platform"]),
    ("fleet", &["api", "domain", "log", "platform"]),
    ("queries", &["api", "domain", "fleet", "log", "platform"]),
    ("app", &["domain", "fleet", "identity", "log", "platform"]),
    (
        "http",
        &[
            "api", "app", "domain", "fleet", "identity", "log", "platform", "queries",
        ],
    ),
    (
        "cli",
        &[
            "api", "app", "domain", "fleet", "http", "identity", "log", "platform", "queries",
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

//! Layering of the runtime: its dependencies run one way. No file of `runtime/src` uses a
//! file that uses it back, directly or through others (a re-export in a `mod.rs` counts as
//! the file that defines the item). Read from the source, so that a change that closes a loop
//! fails here and names the files, instead of a review finding it later.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`context::inner`, `` for `lib.rs`) -> source without comments and test modules.
fn runtime_files() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/src");
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(&root)
                .unwrap()
                .to_str()
                .unwrap()
                .replace('\\', "/");
            // loom's models test every module from outside, as the integration tests do.
            if !rel.ends_with(".rs") || rel == "loom_tests.rs" {
                continue;
            }
            let module = rel
                .trim_end_matches(".rs")
                .trim_end_matches("/mod")
                .replace('/', "::");
            let module = if module == "lib" {
                String::new()
            } else {
                module
            };
            out.insert(module, code_of(&std::fs::read_to_string(&path).unwrap()));
        }
    }
    out
}

/// The source without comments (doc links are not dependencies) and `#[cfg(test)]` modules.
fn code_of(src: &str) -> String {
    let mut out = String::new();
    let mut lines = src.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|l| l.trim_start().starts_with("mod "))
        {
            let mut depth = 0i32;
            for l in lines.by_ref() {
                depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
                if depth <= 0 && l.contains('}') {
                    break;
                }
            }
            continue;
        }
        let code = match trimmed.find("//") {
            Some(i) => &trimmed[..i],
            None => trimmed,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Every path a `use` tree names, spelled out: `a::{b, c::{d}}` -> `a::b`, `a::c::d`.
fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if let Some(inner) = tree.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        let (mut depth, mut start) = (0, 0);
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(prefix, &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(prefix, &inner[start..], out);
    } else if let Some((head, rest)) = tree.split_once("::{") {
        expand(&format!("{prefix}{head}::"), &format!("{{{rest}"), out);
    } else if !tree.is_empty() {
        let path = tree.split(" as ").next().unwrap().trim();
        out.push(format!("{prefix}{path}"));
    }
}

/// The tree of a `use` item ending this statement (`pub(crate) use a::{b, c}` -> `a::{b,c}`).
fn use_tree(stmt: &str) -> Option<String> {
    stmt.match_indices("use ").find_map(|(i, _)| {
        let word_start = stmt[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        word_start.then(|| stmt[i + 4..].replace(' ', ""))
    })
}

/// The paths a file names: its `use` trees and the `crate::`/`super::` paths in its code.
fn paths_in(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let flat: String = code.split_whitespace().collect::<Vec<_>>().join(" ");
    for stmt in flat.split(';') {
        if let Some(tree) = use_tree(stmt) {
            expand("", &tree, &mut out);
        }
    }
    for start in ["crate::", "super::"] {
        for (i, _) in flat.match_indices(start) {
            let path: String = flat[i..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push(path.trim_end_matches(':').to_string());
        }
    }
    out
}

/// The file a path resolves to: the longest module prefix, followed into the child module
/// when a `mod.rs` re-exports the named item from it.
fn resolve(
    from: &str,
    path: &str,
    files: &BTreeMap<String, String>,
    reexports: &BTreeMap<(String, String), String>,
) -> Option<String> {
    let mut parts: Vec<&str> = path.split("::").collect();
    let mut base: Vec<String> = if from.is_empty() {
        vec![]
    } else {
        from.split("::").map(String::from).collect()
    };
    match parts.first().copied() {
        Some("crate") => base.clear(),
        Some("super") => {
            while parts.first() == Some(&"super") {
                base.pop();
                parts.remove(0);
            }
            parts.insert(0, "self");
        }
        Some("self") => {}
        Some(child) if files.contains_key(&join(&base, &[child])) => parts.insert(0, "self"),
        _ => return None,
    }
    let parts = &parts[1..];
    (0..=parts.len()).rev().find_map(|n| {
        let module = join(&base, &parts[..n]);
        files.contains_key(&module).then(|| {
            match parts.get(n) {
                Some(item) => reexports.get(&(module.clone(), item.to_string())).cloned(),
                None => None,
            }
            .unwrap_or(module)
        })
    })
}

fn join(base: &[String], more: &[&str]) -> String {
    let all: Vec<&str> = base
        .iter()
        .map(String::as_str)
        .chain(more.iter().copied())
        .collect();
    all.join("::")
}

/// `(module, item) -> child module` for `pub use child::{item, ...}` in module files.
fn reexports(files: &BTreeMap<String, String>) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    for (module, code) in files {
        let flat: String = code.split_whitespace().collect::<Vec<_>>().join(" ");
        for stmt in flat.split(';') {
            let Some(tree) = use_tree(stmt) else { continue };
            if !stmt.trim_start().starts_with("pub") {
                continue;
            }
            let mut paths = Vec::new();
            expand("", &tree, &mut paths);
            for path in paths {
                let path = path.trim_start_matches("self::");
                if let Some((child, item)) = path.split_once("::") {
                    let child_module = join(
                        &module
                            .split("::")
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect::<Vec<_>>(),
                        &[child],
                    );
                    if files.contains_key(&child_module) {
                        let item = item.split("::").next().unwrap().to_string();
                        out.insert((module.clone(), item), child_module);
                    }
                }
            }
        }
    }
    out
}

fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let files = runtime_files();
    let reexports = reexports(&files);
    files
        .iter()
        .map(|(module, code)| {
            let deps = paths_in(code)
                .iter()
                .filter_map(|p| resolve(module, p, &files, &reexports))
                .filter(|d| d != module)
                .collect();
            (module.clone(), deps)
        })
        .collect()
}

/// A loop through `from`, if any: the modules on it, in order.
fn a_loop_through(from: &str, deps: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    let mut paths = vec![vec![from.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = paths.pop() {
        for next in &deps[path.last().unwrap()] {
            if next == from {
                return Some(path);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                paths.push(longer);
            }
        }
    }
    None
}

#[test]
fn no_runtime_file_depends_on_a_file_that_depends_on_it() {
    let deps = dependencies();
    let loops: Vec<String> = deps
        .keys()
        // The crate root re-exports the public API and declares the modules: every file names
        // items through it (`crate::Local`), so it is the top, not a member of a loop.
        .filter(|m| !m.is_empty())
        .filter_map(|m| a_loop_through(m, &deps))
        .filter(|l| !l.iter().any(String::is_empty))
        .map(|l| l.join(" -> "))
        .collect();
    assert!(
        loops.is_empty(),
        "import loops in runtime/src:\n{}",
        loops.join("\n")
    );
}

#[test]
fn the_check_sees_a_loop_where_there_is_one() {
    // Control: the resolver must find what real files name, or the test above proves nothing.
    let deps = dependencies();
    assert!(
        deps["context::inner"].contains("context::table"),
        "{:?}",
        deps["context::inner"]
    );
    assert!(
        deps["storage"].contains("storage::borrow"),
        "{:?}",
        deps["storage"]
    );
    assert!(deps["local"].contains("storage"), "{:?}", deps["local"]);
    let mut with_a_loop = deps.clone();
    with_a_loop
        .get_mut("context::table")
        .unwrap()
        .insert("context::inner".into());
    assert!(a_loop_through("context::table", &with_a_loop).is_some());
}

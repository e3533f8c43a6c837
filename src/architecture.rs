//! The module graph has no cycles.
//!
//! Each top-level module of the crate names the modules it uses (`crate::x` paths and
//! `use crate::{x, y::z}` groups) in its non-test code; the graph of those edges must be
//! acyclic, so every module can be read, tested and changed with only the modules below it
//! in mind. A new edge that closes a cycle fails this test with the cycle spelled out;
//! the way out is a neutral module below both (as `civil`, `escape` and `pem` are) or
//! moving the type to the module that owns the concept.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The top-level modules of the crate: `src/x.rs` and `src/x/`.
fn top_level_modules(src: &Path) -> BTreeSet<String> {
    let mut mods = BTreeSet::new();
    for entry in std::fs::read_dir(src).expect("src is readable") {
        let path = entry.expect("src entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("UTF-8 file names")
            .to_owned();
        if path.is_dir() || (path.extension().is_some_and(|e| e == "rs")) {
            mods.insert(name);
        }
    }
    mods.remove("lib");
    mods.remove("main");
    mods
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("dir is readable") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file that ships: line comments removed, and nothing from the first inline
/// test module on (`#[cfg(test)] mod x {`: inline test modules come last in this crate, by
/// convention). Other test-only items are kept, which can only add edges.
fn shipped_code(text: &str) -> String {
    let mut end = text.len();
    let mut from = 0;
    while let Some(i) = text[from..].find("#[cfg(test)]") {
        let at = from + i;
        let next = text[at + "#[cfg(test)]".len()..].trim_start();
        let line = next.lines().next().unwrap_or("");
        if line.starts_with("mod ") && line.contains('{') {
            end = at;
            break;
        }
        from = at + 1;
    }
    let text = &text[..end];
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The first path segment of each item of a brace group starting at `s[0] == '{'`.
fn group_heads(s: &str) -> Vec<String> {
    let bytes = s.as_bytes();
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut at_item_start = true;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => {
                depth += 1;
                at_item_start = depth == 1;
            }
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            b',' if depth == 1 => at_item_start = true,
            b if at_item_start && depth == 1 && is_ident(b) => {
                let start = i;
                while i < bytes.len() && is_ident(bytes[i]) {
                    i += 1;
                }
                heads.push(s[start..i].to_owned());
                at_item_start = false;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    heads
}

/// The modules named after `crate::` in `code`.
fn crate_references(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].bytes().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|b| is_ident(b) || b == b'$') {
            continue; // `$crate::` or `mycrate::`
        }
        let rest_trimmed = rest.trim_start();
        if rest_trimmed.starts_with('{') {
            names.extend(group_heads(rest_trimmed));
        } else {
            let end = rest
                .bytes()
                .position(|b| !is_ident(b))
                .unwrap_or(rest.len());
            names.insert(rest[..end].to_owned());
        }
    }
    names
}

fn module_graph(src: &Path) -> Graph {
    let mods = top_level_modules(src);
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph: Graph = mods.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for file in files {
        let rel = file.strip_prefix(src).expect("under src");
        let first = rel.components().next().expect("a component");
        let top = Path::new(first.as_os_str())
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("UTF-8")
            .to_owned();
        if !mods.contains(&top)
            || top == "architecture"
            || file.file_name().is_some_and(|n| n == "tests.rs")
        {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("source is readable");
        for name in crate_references(&shipped_code(&text)) {
            if name != top && mods.contains(&name) {
                graph.entry(top.clone()).or_default().insert(name);
            }
        }
    }
    graph
}

/// One cycle of the graph, if it has any (depth-first search, the path kept).
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_owned(), Mark::Open);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match marks.get(next).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let start = path.iter().position(|n| n == next).expect("on the path");
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(next, graph, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if marks.get(node).copied().unwrap_or(Mark::New) == Mark::New
            && let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn the_module_graph_has_no_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    // The reader sees real edges: a broken scan would find nothing and pass.
    assert!(graph["gateway"].contains("routes"), "{graph:?}");
    assert!(graph["identity"].contains("civil"), "{graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle between modules: {}", cycle.join(" -> "));
    }
}

#[test]
fn references_are_read_from_paths_and_use_groups() {
    let code = "use crate::{a, b::{C, d}, e as f};\nfn g() { crate::h::i(); $crate::j; }";
    let names: Vec<_> = crate_references(code).into_iter().collect();
    assert_eq!(names, ["a", "b", "e", "h"]);
    let code = shipped_code(
        "#[cfg(test)]\nmod tests;\nuse crate::a; // crate::b\n#[cfg(test)]\nmod t {\n crate::c }",
    );
    let names: Vec<_> = crate_references(&code).into_iter().collect();
    assert_eq!(names, ["a"]);
}

#[test]
fn a_cycle_is_found_and_spelled_out() {
    let graph: Graph = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]
        .into_iter()
        .fold(Graph::new(), |mut g, (from, to)| {
            g.entry(from.into()).or_default().insert(to.into());
            g.entry(to.into()).or_default();
            g
        });
    assert_eq!(find_cycle(&graph).expect("a cycle"), ["a", "b", "c", "a"]);
    let mut acyclic = graph.clone();
    acyclic.get_mut("c").expect("c").clear();
    assert_eq!(find_cycle(&acyclic), None);
}

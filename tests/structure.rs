//! The host library's modules depend on each other one way only.
//!
//! Reads `host/src/**/*.rs`, finds every `crate::…` and `super::…` path in
//! the code (comments and string literals are blanked first, so a doc link
//! is not a dependency), and builds the graph of top-level modules: an edge
//! `a -> b` when code anywhere in `a` (its file, its `a/` directory, its
//! tests) names something in `b`. The graph must have no cycle: shared
//! types and rules live in a module below every user (see issue 10,
//! "Structure"). Nothing is allow-listed.
//!
//! `main.rs` is another crate (the binary); `lib.rs` only declares modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module below the crate root, e.g. `["node", "mkfs"]`.
type ModPath = Vec<String>;

/// One source file: its module path, a name for messages, its text.
struct Source {
    module: ModPath,
    name: String,
    text: String,
}

/// Where one top-level module names another: `from -> to -> {(file, line)}`.
type Edges = BTreeMap<String, BTreeMap<String, BTreeSet<(String, usize)>>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// `policy.rs` → policy, `node/mod.rs` → node, `node/mkfs.rs` → node::mkfs;
/// `None` for the crate roots.
fn module_of(relative: &Path) -> Option<ModPath> {
    let mut parts: ModPath = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts == ["lib"] || parts == ["main"] {
        return None;
    }
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    Some(parts)
}

fn host_sources() -> Vec<Source> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let relative = path.strip_prefix(&src).expect("under src").to_path_buf();
            let module = module_of(&relative)?;
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            Some(Source {
                module,
                name: relative.display().to_string(),
                text,
            })
        })
        .collect()
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The code of a file with comments, string literals and char literals
/// blanked (newlines kept, so lines still count).
fn code_only(src: &str) -> Vec<char> {
    let s: Vec<char> = src.chars().collect();
    let mut out = Vec::with_capacity(s.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        let next = s.get(i + 1).copied();
        let ident_before = i > 0 && is_ident(s[i - 1]);
        if c == '/' && next == Some('/') {
            while i < s.len() && s[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            // Block comments nest in Rust.
            let mut depth = 0;
            while i < s.len() {
                if s[i] == '/' && s.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.extend([' ', ' ']);
                    i += 2;
                } else if s[i] == '*' && s.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.extend([' ', ' ']);
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(s[i]));
                    i += 1;
                }
            }
        } else if !ident_before
            && (c == 'r' || (c == 'b' && next == Some('r')))
            && raw_string_hashes(&s, i).is_some()
        {
            // r"…", r#"…"#, br"…": no escapes, ends at `"` and as many `#`.
            let (start, hashes) = raw_string_hashes(&s, i).expect("checked");
            out.extend(std::iter::repeat_n(' ', start - i));
            i = start;
            loop {
                if i >= s.len() {
                    break;
                }
                if s[i] == '"' && (1..=hashes).all(|k| s.get(i + k) == Some(&'#')) {
                    out.extend(std::iter::repeat_n(' ', hashes + 1));
                    i += hashes + 1;
                    break;
                }
                out.push(blank(s[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < s.len() && s[i] != '"' {
                if s[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < s.len() {
                    out.push(blank(s[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && (next == Some('\\') || s.get(i + 2) == Some(&'\'')) {
            // A char literal ('x', '\n', '\u{1F600}'); a lifetime ('a) is
            // left alone.
            out.push(' ');
            i += 1;
            while i < s.len() && s[i] != '\'' {
                if s[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < s.len() {
                    out.push(' ');
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// At `r"`/`r#"`/`br#"`: where the string's content starts, and its `#`s.
fn raw_string_hashes(s: &[char], at: usize) -> Option<(usize, usize)> {
    let mut i = at + if s[at] == 'b' { 2 } else { 1 };
    let mut hashes = 0;
    while s.get(i) == Some(&'#') {
        hashes += 1;
        i += 1;
    }
    (s.get(i) == Some(&'"')).then_some((i + 1, hashes))
}

fn skip_space(code: &[char], mut i: usize) -> usize {
    while i < code.len() && code[i].is_whitespace() {
        i += 1;
    }
    i
}

fn ident_at(code: &[char], i: usize) -> Option<(String, usize)> {
    let mut j = i;
    while j < code.len() && is_ident(code[j]) {
        j += 1;
    }
    (j > i && !code[i].is_ascii_digit()).then(|| (code[i..j].iter().collect(), j))
}

fn double_colon_at(code: &[char], i: usize) -> bool {
    code.get(i) == Some(&':') && code.get(i + 1) == Some(&':')
}

/// The first segment of each item of a `{…}` use group at `open`, with
/// where it is, and where the group ends.
fn group_items(code: &[char], open: usize) -> (Vec<(String, usize)>, usize) {
    let mut items = Vec::new();
    let mut depth = 0;
    let mut expect_item = true;
    let mut i = open;
    while i < code.len() {
        match code[i] {
            '{' => {
                depth += 1;
                expect_item = depth == 1;
                i += 1;
            }
            '}' => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => {
                expect_item = true;
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            _ if expect_item => {
                expect_item = false;
                match ident_at(code, i) {
                    Some((name, end)) => {
                        items.push((name, i));
                        i = end;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    (items, i)
}

/// Every module path a `crate::` or `super::` path in `src` starts from,
/// resolved against the file's `module` (and inline `mod x { … }` blocks),
/// with the line it is on.
fn references(src: &str, module: &ModPath) -> Vec<(ModPath, usize)> {
    let code = code_only(src);
    let mut found = Vec::new();
    // Inline modules we are in: (name, brace depth inside them).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut line = 1;
    let mut i = 0;
    while i < code.len() {
        let c = code[i];
        if c == '\n' {
            line += 1;
        }
        if c == '{' {
            depth += 1;
            i += 1;
            continue;
        }
        if c == '}' {
            if inline.last().is_some_and(|(_, d)| *d == depth) {
                inline.pop();
            }
            depth -= 1;
            i += 1;
            continue;
        }
        let starts_ident =
            is_ident(c) && (i == 0 || !(is_ident(code[i - 1]) || code[i - 1] == '$'));
        if !starts_ident {
            i += 1;
            continue;
        }
        let Some((word, end)) = ident_at(&code, i) else {
            i += 1;
            continue;
        };
        if word == "mod" {
            if let Some((name, after)) = ident_at(&code, skip_space(&code, end))
                && code.get(skip_space(&code, after)) == Some(&'{')
            {
                inline.push((name, depth + 1));
            }
            i = end;
            continue;
        }
        if (word != "crate" && word != "super") || !double_colon_at(&code, skip_space(&code, end)) {
            i = end;
            continue;
        }
        // A path: crate/super, then segments, maybe ending in a {group}.
        let mut path: ModPath = if word == "crate" {
            Vec::new()
        } else {
            let mut here = module.clone();
            here.extend(inline.iter().map(|(n, _)| n.clone()));
            here.pop();
            here
        };
        let mut j = end;
        let mut group = Vec::new();
        loop {
            let k = skip_space(&code, j);
            if !double_colon_at(&code, k) {
                break;
            }
            let k = skip_space(&code, k + 2);
            if code.get(k) == Some(&'{') {
                let (items, after) = group_items(&code, k);
                group = items;
                j = after;
                break;
            }
            match ident_at(&code, k) {
                Some((seg, after)) => {
                    match seg.as_str() {
                        "super" => {
                            path.pop();
                        }
                        "self" => {}
                        _ => path.push(seg),
                    }
                    j = after;
                }
                None => break,
            }
        }
        let line_of = |at: usize| line + code[i..at].iter().filter(|c| **c == '\n').count();
        if group.is_empty() {
            found.push((path, line));
        } else {
            for (item, at) in group {
                let mut p = path.clone();
                if item != "self" {
                    p.push(item);
                }
                found.push((p, line_of(at)));
            }
        }
        line = line_of(j);
        i = j;
    }
    found
}

/// The top-level module graph of `sources`.
fn top_level_edges(sources: &[Source]) -> Edges {
    let tops: BTreeSet<&str> = sources.iter().map(|s| s.module[0].as_str()).collect();
    let mut edges = Edges::new();
    for s in sources {
        let from = &s.module[0];
        for (path, line) in references(&s.text, &s.module) {
            let Some(to) = path.first() else { continue };
            if to != from && tops.contains(to.as_str()) {
                edges
                    .entry(from.clone())
                    .or_default()
                    .entry(to.clone())
                    .or_default()
                    .insert((s.name.clone(), line));
            }
        }
    }
    edges
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(edges: &Edges) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        edges: &'a Edges,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            let edges = self.edges;
            for w in edges.get(v).into_iter().flat_map(|m| m.keys()) {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                loop {
                    let w = self.stack.pop().expect("on the stack");
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.out.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    let nodes: BTreeSet<&str> = edges
        .iter()
        .flat_map(|(a, m)| std::iter::once(a.as_str()).chain(m.keys().map(String::as_str)))
        .collect();
    for v in nodes {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out
}

/// One cycle through `component`'s first module, shortest first:
/// `a -> b -> a`.
fn one_cycle(edges: &Edges, component: &[String]) -> Vec<String> {
    let start = &component[0];
    let inside: BTreeSet<&String> = component.iter().collect();
    // Breadth-first from start's successors back to start.
    let mut came_from: BTreeMap<&String, &String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for w in edges.get(v).into_iter().flat_map(|m| m.keys()) {
            if !inside.contains(w) || came_from.contains_key(w) {
                continue;
            }
            came_from.insert(w, v);
            if w == start {
                let mut path = vec![start.clone()];
                let mut at = came_from[start];
                while at != start {
                    path.push(at.clone());
                    at = came_from[at];
                }
                path.push(start.clone());
                path.reverse();
                return path;
            }
            queue.push_back(w);
        }
    }
    component.to_vec()
}

/// What a person needs to break each cycle: the modules, one cycle
/// through them, and where each edge inside them is made.
fn describe(edges: &Edges, components: &[Vec<String>]) -> String {
    let mut text = String::new();
    for component in components {
        text += &format!(
            "modules {} depend on each other, e.g. {}:\n",
            component.join(", "),
            one_cycle(edges, component).join(" -> ")
        );
        for from in component {
            for (to, places) in edges.get(from).into_iter().flatten() {
                if component.contains(to) {
                    let places: Vec<String> =
                        places.iter().map(|(f, l)| format!("{f}:{l}")).collect();
                    text += &format!("  {from} -> {to}: {}\n", places.join(", "));
                }
            }
        }
    }
    text
}

#[test]
fn host_modules_depend_one_way() {
    let sources = host_sources();
    assert!(
        sources.iter().any(|s| s.module == ["runtime"]),
        "host/src was not found or not read"
    );
    let edges = top_level_edges(&sources);
    // The graph is really there: the runtime links the capabilities.
    assert!(
        edges
            .get("runtime")
            .is_some_and(|m| m.contains_key("capabilities")),
        "no edge runtime -> capabilities: the scan finds nothing"
    );
    let found = cycles(&edges);
    assert!(
        found.is_empty(),
        "the host's modules must depend on each other one way only; move what both sides \
         share into a module below them.\n{}",
        describe(&edges, &found)
    );
}

fn source(module: &str, text: &str) -> Source {
    Source {
        module: module.split("::").map(str::to_string).collect(),
        name: format!("{}.rs", module.replace("::", "/")),
        text: text.to_string(),
    }
}

#[test]
fn a_cycle_is_found_and_named() {
    let sources = [
        source("a", "use crate::b::B;\npub struct A;\n"),
        source("b", "pub struct B;\nfn f() { let _ = crate::c::C; }\n"),
        source("c", "use crate::{\n    a::{self, A},\n};\npub struct C;\n"),
        source("d", "use crate::a::A;\n"),
    ];
    let edges = top_level_edges(&sources);
    let found = cycles(&edges);
    assert_eq!(found, vec![vec!["a", "b", "c"]]);
    let text = describe(&edges, &found);
    assert!(text.contains("a -> b -> c -> a"), "{text}");
    assert!(text.contains("c -> a: c.rs:2"), "{text}");
}

#[test]
fn comments_strings_and_own_children_are_no_dependency() {
    let sources = [
        source(
            "a",
            "//! See [`crate::b`].\n/* crate::b::X */\nconst S: &str = \"crate::b::X\";\n\
             const R: &str = r#\"crate::b\"#;\nconst C: char = '\"';\nfn f<'x>() {}\n\
             #[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
        ),
        source("a::inner", "use super::S;\nuse crate::a::C;\n"),
        source("b", "use crate::a::inner;\n"),
        // `super` from a top-level module's file is the crate root.
        source("c", "use super::b;\n"),
    ];
    let edges = top_level_edges(&sources);
    assert_eq!(
        edges
            .iter()
            .flat_map(|(a, m)| m.keys().map(move |b| format!("{a} -> {b}")))
            .collect::<Vec<_>>(),
        ["b -> a", "c -> b"]
    );
    assert!(cycles(&edges).is_empty());
}

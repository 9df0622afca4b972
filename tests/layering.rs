//! The shape of `src/`, checked: no import cycle between two files, imports point down the
//! floors that `lib.rs`'s layout section lists (at most three named exceptions), and no file
//! over 600 lines (tests aside).
//!
//! A small reader, not a Rust parser: comments and string literals are blanked, inline
//! `#[cfg(test)]` modules dropped, then every path that starts with `crate::` (`wsedge::` in
//! `main.rs`), `super::` or a child module declared with `mod x;` is resolved to the file that
//! defines its longest known module prefix, `use` groups (`use crate::{a, b::{c, d}}`)
//! included. `cargo test --test layering -- --nocapture` prints the picture (cycles, upward
//! imports, largest files); `LAYERING_SRC=/path/to/src` reads another tree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The longest a file of `src/` may be, its inline tests aside.
const MAX_LINES: usize = 600;
/// How many imports may point up the floors (each named in lib.rs with its reason).
const MAX_UPWARD: usize = 3;

/// Module name of a file: its path under `src/` without `.rs`, `/`-separated (`health/probe`).
type Module = String;

/// One file as the checks see it.
#[derive(Debug)]
struct SourceFile {
    module: Module,
    /// Lines outside inline test modules.
    lines: usize,
    is_test: bool,
    /// Code with comments and string contents blanked, inline test modules removed.
    code: String,
}

/// A test file: a `tests.rs` or anything under a `tests/` folder inside `src/`.
fn is_test_module(module: &str) -> bool {
    module.split('/').any(|s| s == "tests")
}

/// Blanks comments and the contents of string and char literals, keeping line breaks.
fn strip_comments_and_strings(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if b[i] == b'\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if c == b'r'
            && matches!(b.get(i + 1), Some(b'"') | Some(b'#'))
            && !ident_byte(prev(b, i))
        {
            // Raw string r"..." / r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == b'"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&b'#')) {
                    j += 1 + hashes;
                    break;
                }
                if b[j] == b'\n' {
                    out.push('\n');
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                if b.get(i) == Some(&b'\n') {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if b.get(i + 1) == Some(&b'\\') {
                let mut j = i + 2;
                while j < b.len() && b[j] != b'\'' {
                    j += 1;
                }
                i = j + 1;
                out.push_str("' '");
            } else if b.get(i + 2) == Some(&b'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                out.push('\'');
                i += 1;
            }
        } else {
            // Multi-byte UTF-8 sequences are copied whole.
            let len = utf8_len(c);
            out.push_str(&src[i..i + len]);
            i += len;
        }
    }
    out
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

fn prev(b: &[u8], i: usize) -> u8 {
    if i == 0 {
        b' '
    } else {
        b[i - 1]
    }
}

fn ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Removes `#[cfg(test)]` items with a body (`mod tests { … }`); `#[cfg(test)] mod tests;`
/// stays (it names a test file, which is skipped on its own).
fn drop_inline_tests(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let semi = after.find(';').unwrap_or(usize::MAX);
        let Some(open) = after.find('{').filter(|&o| o < semi) else {
            out.push_str("#[cfg(test)]");
            rest = &after["#[cfg(test)]".len()..];
            continue;
        };
        let mut depth = 0;
        let mut end = after.len();
        for (k, ch) in after[open..].char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        // Keep the line count of what stays honest: the removed text's lines are not counted.
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Every `.rs` file under `root`, by module name.
fn read_tree(root: &Path) -> BTreeMap<Module, SourceFile> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<Module, SourceFile>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let rel = path.strip_prefix(root).unwrap().with_extension("");
                let module = rel.to_string_lossy().replace('\\', "/");
                let text = std::fs::read_to_string(&path).unwrap();
                out.insert(module.clone(), parse_file(&module, &text));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn parse_file(module: &str, text: &str) -> SourceFile {
    let code = drop_inline_tests(&strip_comments_and_strings(text));
    SourceFile {
        module: module.to_owned(),
        lines: code.lines().count(),
        is_test: is_test_module(module),
        code,
    }
}

/// The module a `super::` path starts from: the parent of `module` (`lib` for a top file).
fn parent(module: &str) -> &str {
    match module.rfind('/') {
        Some(i) => &module[..i],
        None => "lib",
    }
}

/// `module`'s path segments as seen from the crate root (`lib` and `main` are the root).
fn segments(module: &str) -> Vec<String> {
    if module == "lib" || module == "main" {
        Vec::new()
    } else {
        module.split('/').map(str::to_owned).collect()
    }
}

/// Reads a path tree at `s[i..]` after its first segment: `::a::b`, `::{a, b::c}`, `::*`.
/// Returns every full path (as segments) the tree names.
fn path_tree(s: &[u8], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    loop {
        skip_ws(s, i);
        if !(s.get(*i) == Some(&b':') && s.get(*i + 1) == Some(&b':')) {
            break;
        }
        *i += 2;
        skip_ws(s, i);
        match s.get(*i) {
            Some(b'{') => {
                *i += 1;
                loop {
                    skip_ws(s, i);
                    match s.get(*i) {
                        Some(b'}') => {
                            *i += 1;
                            break;
                        }
                        Some(b',') => *i += 1,
                        Some(b'{') | Some(b'*') => *i += 1,
                        Some(_) => {
                            let word = ident(s, i);
                            if word.is_empty() {
                                *i += 1;
                                continue;
                            }
                            let mut p = path.clone();
                            if word != "self" {
                                p.push(word);
                            }
                            path_tree(s, i, p, out);
                        }
                        None => break,
                    }
                }
                return;
            }
            Some(b'*') => {
                *i += 1;
                break;
            }
            _ => {
                let word = ident(s, i);
                if word.is_empty() {
                    break;
                }
                path.push(word);
            }
        }
    }
    out.push(path);
}

fn skip_ws(s: &[u8], i: &mut usize) {
    while s.get(*i).is_some_and(|c| c.is_ascii_whitespace()) {
        *i += 1;
    }
}

fn ident(s: &[u8], i: &mut usize) -> String {
    let start = *i;
    while s.get(*i).is_some_and(|&c| ident_byte(c)) {
        *i += 1;
    }
    String::from_utf8_lossy(&s[start..*i]).into_owned()
}

/// The modules (files) `file` imports, each once.
fn imports(file: &SourceFile, known: &BTreeSet<Module>) -> BTreeSet<Module> {
    let s = file.code.as_bytes();
    let me = segments(&file.module);
    // Children declared here (`mod probe;`), reachable by their bare name.
    let children: BTreeSet<String> = file
        .code
        .split(';')
        .filter_map(|stmt| {
            let words: Vec<&str> = stmt.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "mod")?;
            (at + 2 == words.len()).then(|| words[at + 1].to_owned())
        })
        .collect();
    let mut paths = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if !ident_byte(s[i]) || (i > 0 && (ident_byte(s[i - 1]) || s[i - 1] == b':')) {
            i += 1;
            continue;
        }
        let word = ident(s, &mut i);
        let base: Option<Vec<String>> = match word.as_str() {
            "crate" => Some(Vec::new()),
            "wsedge" if file.module == "main" => Some(Vec::new()),
            "super" => Some(segments(parent(&file.module))),
            "self" => Some(me.clone()),
            w if children.contains(w) => {
                let mut p = me.clone();
                p.push(w.to_owned());
                Some(p)
            }
            _ => None,
        };
        if let Some(base) = base {
            let mut save = i;
            skip_ws(s, &mut save);
            if s.get(save) == Some(&b':') && s.get(save + 1) == Some(&b':') {
                // `super::super::x`
                let mut base = base;
                let mut j = i;
                loop {
                    let mut k = j;
                    skip_ws(s, &mut k);
                    if s.get(k) == Some(&b':') && s.get(k + 1) == Some(&b':') {
                        let mut m = k + 2;
                        skip_ws(s, &mut m);
                        let mut m2 = m;
                        if ident(s, &mut m2) == "super" {
                            base.pop();
                            j = m2;
                            continue;
                        }
                    }
                    break;
                }
                i = j;
                path_tree(s, &mut i, base, &mut paths);
            }
        }
    }
    let mut out = BTreeSet::new();
    for p in paths {
        if let Some(m) = resolve(&p, known) {
            if m != file.module {
                out.insert(m);
            }
        }
    }
    out
}

/// The file defining the longest module prefix of `path` (`lib` for a crate-root item).
fn resolve(path: &[String], known: &BTreeSet<Module>) -> Option<Module> {
    for n in (1..=path.len()).rev() {
        let m = path[..n].join("/");
        if known.contains(&m) {
            return Some(m);
        }
    }
    None
}

/// The import graph of every non-test file but the crate root (edges to test files dropped).
fn graph(files: &BTreeMap<Module, SourceFile>) -> BTreeMap<Module, BTreeSet<Module>> {
    let known: BTreeSet<Module> = files.keys().cloned().collect();
    files
        .values()
        .filter(|f| !f.is_test && f.module != "lib")
        .map(|f| {
            let deps = imports(f, &known)
                .into_iter()
                .filter(|d| !is_test_module(d))
                .collect();
            (f.module.clone(), deps)
        })
        .collect()
}

/// Strongly connected components with more than one file (Tarjan), each sorted.
fn cycles(g: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        g: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<Module>>,
    }
    fn visit<'a>(st: &mut State<'a>, v: &'a str) {
        st.index.insert(v, st.next);
        st.low.insert(v, st.next);
        st.next += 1;
        st.stack.push(v);
        st.on_stack.insert(v);
        let g = st.g;
        for w in g.get(v).into_iter().flatten() {
            let w = w.as_str();
            // A folder's own file declares and re-exports its children (`health.rs` over
            // `health/`): its edges into the folder are structure, not a cycle's half.
            if !g.contains_key(w) || w.starts_with(&format!("{v}/")) {
                continue;
            }
            if !st.index.contains_key(w) {
                visit(st, w);
                let lw = st.low[w];
                let lv = st.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if st.on_stack.contains(w) {
                let iw = st.index[w];
                let lv = st.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if st.low[v] == st.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = st.stack.pop().unwrap();
                st.on_stack.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                st.out.push(comp);
            }
        }
    }
    let mut st = State {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !st.index.contains_key(v.as_str()) {
            visit(&mut st, v);
        }
    }
    st.out.sort();
    st.out
}

/// lib.rs's layout section: floors top to bottom, and the upward imports it allows.
#[derive(Debug, Default)]
struct Layout {
    /// Top-level module → floor (0 = top).
    floors: BTreeMap<String, usize>,
    /// (from, to) module pairs allowed to point up, with the reason given.
    upward: BTreeMap<(String, String), String>,
}

/// Reads the `# Layout` section of lib.rs's `//!` docs: floor lines `//! N. \`a\`, \`b\` …`
/// and allowed upward imports `//! - up: \`from\` → \`to\`: reason`.
fn layout(lib_rs: &str) -> Layout {
    let mut l = Layout::default();
    let mut inside = false;
    for line in lib_rs.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            continue;
        };
        let doc = doc.trim();
        if doc.starts_with('#') {
            inside = doc == "# Layout";
            continue;
        }
        if !inside {
            continue;
        }
        if let Some(rest) = doc.strip_prefix("- up: ") {
            let names = backticked(rest);
            let reason = rest.rsplit_once("`:").map_or("", |(_, r)| r.trim());
            assert!(
                names.len() >= 2 && !reason.is_empty(),
                "lib.rs layout: an upward import reads \"- up: `from` → `to`: reason\", got {doc:?}"
            );
            l.upward
                .insert((names[0].clone(), names[1].clone()), reason.to_owned());
        } else if let Some((n, rest)) = doc.split_once(". ") {
            if let Ok(n) = n.parse::<usize>() {
                for name in backticked(rest) {
                    l.floors.insert(name, n);
                }
            }
        }
    }
    l
}

fn backticked(s: &str) -> Vec<String> {
    s.split('`')
        .skip(1)
        .step_by(2)
        .map(|x| x.trim().to_owned())
        .collect()
}

/// The floor of a file: its own entry if listed (`health/probe`), else its top-level module's.
fn floor_of(layout: &Layout, module: &str) -> Option<usize> {
    let mut m = module;
    loop {
        if let Some(f) = layout.floors.get(m) {
            return Some(*f);
        }
        m = m.rsplit_once('/')?.0;
    }
}

/// What the checks found; every list empty means the layout holds.
#[derive(Debug, Default)]
struct Findings {
    cycles: Vec<Vec<Module>>,
    /// (from, to, from's floor, to's floor) for every import pointing up.
    upward: Vec<(Module, Module, usize, usize)>,
    unlisted_modules: Vec<Module>,
    stale_layout_entries: Vec<String>,
    long_files: Vec<(Module, usize)>,
    largest: Vec<(Module, usize)>,
}

/// Import cycles known and being removed by other work, each with what removes it. A cycle
/// listed here that no longer exists fails the test too, so the list only shrinks. Empty: the
/// last one (drain ↔ health ↔ shared) went with the one drain path.
const KNOWN_CYCLES: &[(&[&str], &str)] = &[];

fn check(files: &BTreeMap<Module, SourceFile>, layout: &Layout) -> Findings {
    let g = graph(files);
    let mut f = Findings {
        cycles: cycles(&g),
        ..Findings::default()
    };
    for m in g.keys() {
        if m == "lib" {
            continue;
        }
        if floor_of(layout, m).is_none() {
            f.unlisted_modules.push(m.clone());
        }
    }
    for name in layout.floors.keys() {
        if !files.contains_key(name) {
            f.stale_layout_entries.push(name.clone());
        }
    }
    for (from, deps) in &g {
        let Some(ff) = floor_of(layout, from) else {
            continue;
        };
        for to in deps {
            if let Some(ft) = floor_of(layout, to) {
                if ft < ff {
                    f.upward.push((from.clone(), to.clone(), ff, ft));
                }
            }
        }
    }
    let mut sizes: Vec<(Module, usize)> = files
        .values()
        .filter(|x| !x.is_test)
        .map(|x| (x.module.clone(), x.lines))
        .collect();
    sizes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    f.long_files = sizes
        .iter()
        .filter(|(_, n)| *n > MAX_LINES)
        .cloned()
        .collect();
    f.largest = sizes.into_iter().take(5).collect();
    f
}

fn src_root() -> PathBuf {
    std::env::var_os("LAYERING_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn src_has_no_cycles_no_unlisted_upward_imports_and_no_long_files() {
    let root = src_root();
    let files = read_tree(&root);
    assert!(
        files.len() > 20,
        "read {} files under {}",
        files.len(),
        root.display()
    );
    let layout = layout(&std::fs::read_to_string(root.join("lib.rs")).unwrap());
    let found = check(&files, &layout);

    // The picture, for the record (`-- --nocapture`).
    let in_cycles: usize = found.cycles.iter().map(Vec::len).sum();
    println!("files: {}", files.values().filter(|f| !f.is_test).count());
    println!("files in import cycles: {in_cycles}");
    for c in &found.cycles {
        println!("  cycle: {}", c.join(", "));
    }
    println!("upward imports: {}", found.upward.len());
    for (from, to, ff, ft) in &found.upward {
        println!("  {from} (floor {ff}) -> {to} (floor {ft})");
    }
    if std::env::var_os("LAYERING_EDGES").is_some() {
        for (m, deps) in graph(&files) {
            let deps: Vec<_> = deps.into_iter().collect();
            println!("  {m} -> {}", deps.join(" "));
        }
    }
    println!("largest files (lines, tests aside):");
    for (m, n) in &found.largest {
        println!("  {n:5} {m}.rs");
    }

    let mut problems = Vec::new();
    for m in &found.unlisted_modules {
        let top = m.split('/').next().unwrap();
        problems.push(format!(
            "src/{m}.rs is on no floor: add `{top}` to lib.rs's layout (the floor of what it imports or higher)"
        ));
    }
    for m in &found.stale_layout_entries {
        problems.push(format!(
            "lib.rs's layout lists `{m}`, which has no file: remove it"
        ));
    }
    for c in &found.cycles {
        let known = KNOWN_CYCLES
            .iter()
            .any(|(files, _)| files.iter().copied().eq(c.iter().map(String::as_str)));
        if !known {
            problems.push(format!("import cycle: {}", c.join(" <-> ")));
        }
    }
    for (files, why) in KNOWN_CYCLES {
        if !found
            .cycles
            .iter()
            .any(|c| files.iter().copied().eq(c.iter().map(String::as_str)))
        {
            problems.push(format!(
                "the known cycle {} ({why}) is gone: remove it from KNOWN_CYCLES",
                files.join(" <-> ")
            ));
        }
    }
    let mut named_and_found = BTreeSet::new();
    for (from, to, _, _) in &found.upward {
        let top = |m: &str| m.split('/').next().unwrap().to_owned();
        let named = [(from.clone(), to.clone()), (top(from), top(to))]
            .into_iter()
            .find(|pair| layout.upward.contains_key(pair));
        if let Some(pair) = named {
            named_and_found.insert(pair);
        } else {
            problems.push(format!(
                "src/{from}.rs imports src/{to}.rs, which is on a higher floor (lib.rs's layout): move the shared part down, or name it under `- up:` with its reason"
            ));
        }
    }
    if layout.upward.len() > MAX_UPWARD {
        problems.push(format!(
            "lib.rs's layout names {} upward imports; at most {MAX_UPWARD}",
            layout.upward.len()
        ));
    }
    for (from, to) in layout.upward.keys() {
        if !named_and_found.contains(&(from.clone(), to.clone())) {
            problems.push(format!(
                "lib.rs's layout names the upward import {from} → {to}, which no longer exists: remove it"
            ));
        }
    }
    for (m, n) in &found.long_files {
        problems.push(format!(
            "src/{m}.rs has {n} lines (tests aside); at most {MAX_LINES}"
        ));
    }
    assert!(
        problems.is_empty(),
        "layering:\n  {}",
        problems.join("\n  ")
    );
}

// ---- self-checks: the reader and the cycle finder on tiny trees ------------------------

fn tree(files: &[(&str, &str)]) -> BTreeMap<Module, SourceFile> {
    files
        .iter()
        .map(|(m, text)| (m.to_string(), parse_file(m, text)))
        .collect()
}

fn deps(files: &BTreeMap<Module, SourceFile>, of: &str) -> Vec<String> {
    graph(files)[of].iter().cloned().collect()
}

#[test]
fn reader_finds_groups_inline_paths_super_and_children_but_not_comments_or_tests() {
    let files = tree(&[
        (
            "lib",
            "pub mod a; pub mod b; pub mod c; pub mod d; pub mod e; pub mod f;",
        ),
        (
            "a",
            r#"//! Docs naming [`crate::f::X`] do not count.
mod child;
use crate::{b, c::{Y, self}};
/* crate::f::Z */
fn go() { let s = "crate::f::W"; let _ = crate::d::run(); child::go(); }
#[cfg(test)]
mod tests { use crate::e::T; }
"#,
        ),
        ("a/child", "use super::super::e::Q; use super::go;"),
        ("a/tests", "use crate::f::Anything;"),
        ("b", "pub use crate::a::child::Thing as Other;"),
        ("c", ""),
        ("d", ""),
        ("e", "use crate::c::*;"),
        ("f", ""),
    ]);
    assert_eq!(deps(&files, "a"), ["a/child", "b", "c", "d"]);
    assert_eq!(deps(&files, "a/child"), ["a", "e"]);
    assert_eq!(deps(&files, "b"), ["a/child"]);
    assert_eq!(deps(&files, "e"), ["c"]);
    assert!(
        !graph(&files).contains_key("a/tests"),
        "test files are not checked"
    );
}

#[test]
fn cycle_finder_reports_each_cycle_once_and_a_dag_has_none() {
    let files = tree(&[
        ("lib", ""),
        ("a", "use crate::b::X;"),
        ("b", "use crate::c::X;"),
        ("c", "use crate::a::X;"),
        ("d", "use crate::e::X;"),
        ("e", "use crate::f::X;"),
        ("f", "use crate::e::X;"),
        ("g", "use crate::a::X;"),
    ]);
    assert_eq!(
        cycles(&graph(&files)),
        [vec!["a", "b", "c"], vec!["e", "f"]]
    );
    let dag = tree(&[
        ("lib", ""),
        ("a", "use crate::b::X;"),
        ("b", "use crate::c::X;"),
        ("c", ""),
    ]);
    assert!(cycles(&graph(&dag)).is_empty());
}

#[test]
fn layout_checks_floors_upward_imports_unlisted_modules_and_length() {
    let lib = "//! # Layout\n//! 1. `top`\n//! 2. `mid`\n//! 3. `low`, `gone`\n//! - up: `low` → `mid`: a callback the middle registers\n//! # Other\n//! 4. `not_a_floor`\n";
    let l = layout(lib);
    assert_eq!(l.floors.len(), 4);
    assert_eq!(floor_of(&l, "low/inner"), Some(3));
    let long = "fn x() {}\n".repeat(MAX_LINES + 1);
    let files = tree(&[
        ("lib", ""),
        ("top", "use crate::mid::X;"),
        ("mid", "use crate::low::X;"),
        ("low", "use crate::mid::Y; use crate::top::Z;"),
        ("new", ""),
        ("big", &long),
    ]);
    let f = check(&files, &l);
    assert_eq!(f.unlisted_modules, ["big", "new"]);
    assert_eq!(f.stale_layout_entries, ["gone"]);
    let up: Vec<_> = f
        .upward
        .iter()
        .map(|(a, b, _, _)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(up, [("low", "mid"), ("low", "top")]);
    assert!(l.upward.contains_key(&("low".into(), "mid".into())));
    assert_eq!(f.long_files, [("big".to_owned(), MAX_LINES + 1)]);
    assert_eq!(f.cycles, [vec!["low", "mid", "top"]]);
}

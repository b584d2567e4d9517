//! The house rules as tests (`cargo test` runs them): `//!` headers, `SAFETY:` comments, which
//! modules may import aya and io_uring, a line budget, and no import cycles in the server.
//!
//! Each rule is a function from a file's path and text to the violations it finds, so the unit
//! tests at the bottom can show every rule failing on a crafted file. The repository tests run
//! the rules over every `.rs` file except `target/` and hidden directories, collect every
//! violation, and fail once with the whole list. Clippy's `undocumented_unsafe_blocks` covers
//! the default members; this covers `ebpf/` and `benches/` too, which CI's clippy does not
//! check (the eBPF crate only builds for the BPF target).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Largest `.rs` file allowed under `server/src`, in lines. The biggest today is
/// `shard/runtime.rs` at about 1120; a file that outgrows the budget is split by concern, not
/// granted a bigger one. ARCHITECTURE.md ("House rules") states the same figure.
const MAX_SERVER_FILE_LINES: usize = 1200;

/// Where the server's modules live, relative to the repository root.
const SERVER_SRC: &str = "server/src/";

/// One source file: its path relative to the repository root (with `/`) and its text.
struct SourceFile {
    path: String,
    text: String,
}

fn repo_root() -> PathBuf {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().expect("xtask/ has a parent").to_owned()
}

/// Every `.rs` file of the repository, sorted by path; skips `target/` and hidden directories.
fn rust_files() -> Vec<SourceFile> {
    let root = repo_root();
    let mut paths = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with('.') || name == "target" {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else if name.ends_with(".rs") {
                paths.push(path);
            }
        }
    }
    paths.sort();
    let files: Vec<SourceFile> = paths
        .iter()
        .map(|path| SourceFile {
            path: path
                .strip_prefix(&root)
                .expect("under the root")
                .to_string_lossy()
                .replace('\\', "/"),
            text: std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        })
        .collect();
    // A walk that found almost nothing would make every rule pass vacuously.
    assert!(
        files.iter().any(|f| f.path == "server/src/lib.rs") && files.len() > 50,
        "tidy found only {} .rs files under {}",
        files.len(),
        root.display()
    );
    files
}

/// One line split into its code (comments and the insides of string and char literals blanked
/// out) and its comment text.
#[derive(Debug, Default)]
struct Line {
    code: String,
    comment: String,
}

/// Where the lexer is: in code, or inside a comment or literal that may span lines.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LexState {
    Code,
    LineComment,
    /// Nesting depth of `/* */` comments.
    BlockComment(usize),
    Str,
    /// A raw string closed by `"` and this many `#`.
    RawStr(usize),
}

/// Splits Rust source into [`Line`]s. Knows line and nested block comments, plain, byte and raw
/// strings, char literals and lifetimes: enough that a rule looking for `unsafe {` or `aya::`
/// in code is not fooled by the same words in prose or in a test's string.
fn lex_lines(text: &str) -> Vec<Line> {
    let chars: Vec<char> = text.chars().collect();
    let mut lines = vec![Line::default()];
    let mut state = LexState::Code;
    let mut idx = 0;
    while idx < chars.len() {
        let line = lines.last_mut().expect("at least one line");
        if chars[idx] == '\n' {
            lines.push(Line::default());
            if state == LexState::LineComment {
                state = LexState::Code;
            }
            idx += 1;
            continue;
        }
        (idx, state) = match state {
            LexState::Code => lex_code(&chars, idx, line),
            LexState::LineComment => {
                line.comment.push(chars[idx]);
                (idx + 1, state)
            }
            LexState::BlockComment(depth) => lex_block_comment(&chars, idx, depth, line),
            LexState::Str => lex_str(&chars, idx, line),
            LexState::RawStr(n_hashes) => lex_raw_str(&chars, idx, n_hashes, line),
        };
    }
    lines
}

/// One step in code: copies the character, or enters a comment or literal. Returns the next
/// index and state.
fn lex_code(chars: &[char], idx: usize, line: &mut Line) -> (usize, LexState) {
    let c = chars[idx];
    let next = chars.get(idx + 1).copied();
    let ident_before = |at: usize| at > 0 && is_ident_char(chars[at - 1]);
    match (c, next) {
        ('/', Some('/')) => {
            line.comment.push_str("//");
            (idx + 2, LexState::LineComment)
        }
        ('/', Some('*')) => {
            line.comment.push_str("/*");
            (idx + 2, LexState::BlockComment(1))
        }
        ('"', _) => {
            line.code.push('"');
            (idx + 1, LexState::Str)
        }
        ('r', Some('"' | '#'))
            if !ident_before(idx) || (chars[idx - 1] == 'b' && !ident_before(idx - 1)) =>
        {
            let n_hashes = chars[idx + 1..].iter().take_while(|&&h| h == '#').count();
            if chars.get(idx + 1 + n_hashes) == Some(&'"') {
                line.code.push_str("r\"");
                (idx + 2 + n_hashes, LexState::RawStr(n_hashes))
            } else {
                // A raw identifier (`r#type`).
                line.code.push(c);
                (idx + 1, LexState::Code)
            }
        }
        ('\'', _) => {
            // `'x'`, `'\n'`, `'\''`, `'\u{..}'` are char literals; `'a` is a lifetime.
            let close = if next == Some('\\') {
                chars
                    .get(idx + 3..)
                    .and_then(|rest| rest.iter().position(|&q| q == '\''))
                    .map(|pos| idx + 3 + pos)
            } else if chars.get(idx + 2) == Some(&'\'') {
                Some(idx + 2)
            } else {
                None
            };
            match close {
                Some(close) => {
                    line.code.push_str("''");
                    (close + 1, LexState::Code)
                }
                None => {
                    line.code.push('\'');
                    (idx + 1, LexState::Code)
                }
            }
        }
        _ => {
            line.code.push(c);
            (idx + 1, LexState::Code)
        }
    }
}

fn lex_block_comment(
    chars: &[char],
    idx: usize,
    depth: usize,
    line: &mut Line,
) -> (usize, LexState) {
    let c = chars[idx];
    let next = chars.get(idx + 1).copied();
    line.comment.push(c);
    match (c, next) {
        ('*', Some('/')) => {
            line.comment.push('/');
            let state = if depth == 1 {
                LexState::Code
            } else {
                LexState::BlockComment(depth - 1)
            };
            (idx + 2, state)
        }
        ('/', Some('*')) => {
            line.comment.push('*');
            (idx + 2, LexState::BlockComment(depth + 1))
        }
        _ => (idx + 1, LexState::BlockComment(depth)),
    }
}

fn lex_str(chars: &[char], idx: usize, line: &mut Line) -> (usize, LexState) {
    match chars[idx] {
        // Skip the escaped character; an escaped newline is left to end the line.
        '\\' if chars.get(idx + 1).is_some_and(|&n| n != '\n') => (idx + 2, LexState::Str),
        '"' => {
            line.code.push('"');
            (idx + 1, LexState::Code)
        }
        _ => (idx + 1, LexState::Str),
    }
}

fn lex_raw_str(chars: &[char], idx: usize, n_hashes: usize, line: &mut Line) -> (usize, LexState) {
    let closes = chars[idx] == '"'
        && chars[idx + 1..]
            .iter()
            .take(n_hashes)
            .filter(|&&h| h == '#')
            .count()
            == n_hashes;
    if closes {
        line.code.push('"');
        (idx + 1 + n_hashes, LexState::Code)
    } else {
        (idx + 1, LexState::RawStr(n_hashes))
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Byte offsets where the identifier `word` stands alone in `code`.
fn word_positions<'a>(code: &'a str, word: &'a str) -> impl Iterator<Item = usize> + 'a {
    code.match_indices(word).filter_map(move |(pos, _)| {
        let before = code[..pos].chars().next_back();
        let after = code[pos + word.len()..].chars().next();
        let alone = !before.is_some_and(is_ident_char) && !after.is_some_and(is_ident_char);
        alone.then_some(pos)
    })
}

/// Rule: the first line is an inner doc comment saying what the file is.
fn check_inner_doc(file: &SourceFile) -> Option<String> {
    let first_line = file.text.lines().next().unwrap_or_default();
    (!first_line.starts_with("//!")).then(|| {
        format!(
            "{}:1: the file must open with a `//!` line saying what it is",
            file.path
        )
    })
}

/// Rule: every `unsafe` block and `unsafe impl` has a `SAFETY:` comment just above it (above
/// the statement it starts in, as clippy's `undocumented_unsafe_blocks` reads it).
fn check_safety_comments(file: &SourceFile) -> Vec<String> {
    let lines = lex_lines(&file.text);
    let mut violations = Vec::new();
    for (line_idx, line) in lines.iter().enumerate() {
        let code = line.code.as_str();
        let n_unsafe = word_positions(code, "unsafe")
            .filter(|&pos| {
                let rest = code[pos + "unsafe".len()..].trim_start();
                rest.starts_with('{') || word_positions(rest, "impl").any(|p| p == 0)
            })
            .count();
        if n_unsafe > 0 && !has_safety_comment_above(&lines, line_idx) {
            violations.push(format!(
                "{}:{}: `unsafe` without a `// SAFETY:` comment just above: {}",
                file.path,
                line_idx + 1,
                code.trim()
            ));
        }
    }
    violations
}

/// Walks up from `line_idx` through comment lines, attributes and earlier lines of the same
/// statement; a blank line or the end of a previous statement or item ends the search.
fn has_safety_comment_above(lines: &[Line], line_idx: usize) -> bool {
    if lines[line_idx].comment.contains("SAFETY:") {
        return true;
    }
    for line in lines[..line_idx].iter().rev() {
        if line.comment.contains("SAFETY:") {
            return true;
        }
        let code = line.code.trim();
        if code.is_empty() {
            if line.comment.is_empty() {
                return false;
            }
            continue;
        }
        if code.starts_with("#[") {
            continue;
        }
        if code.ends_with([';', '{', '}', ',']) {
            return false;
        }
    }
    false
}

/// Whether `code` names the crate `krate` as a path root: `use krate`, `extern crate krate`,
/// or `krate::` (also `::krate::`).
fn imports_crate(code: &str, krate: &str) -> bool {
    word_positions(code, krate).any(|pos| {
        let after = code[pos + krate.len()..].trim_start();
        let before = code[..pos].trim_end();
        after.starts_with("::")
            || word_positions(before, "use").any(|p| p + "use".len() == before.len())
            || word_positions(before, "crate").any(|p| p + "crate".len() == before.len())
    })
}

/// Rule: inside the server crate (`server/src`), only files under `allowed_dir` import `krate`.
fn check_import_confined(file: &SourceFile, krate: &str, allowed_dir: &str) -> Vec<String> {
    if !file.path.starts_with(SERVER_SRC) || file.path.starts_with(allowed_dir) {
        return Vec::new();
    }
    lex_lines(&file.text)
        .iter()
        .enumerate()
        .filter(|(_, line)| imports_crate(&line.code, krate))
        .map(|(line_idx, line)| {
            format!(
                "{}:{}: only {allowed_dir} may import `{krate}`: {}",
                file.path,
                line_idx + 1,
                line.code.trim()
            )
        })
        .collect()
}

/// Rule: no file under `server/src` is longer than [`MAX_SERVER_FILE_LINES`] lines.
fn check_line_budget(file: &SourceFile) -> Option<String> {
    let n_lines = file.text.lines().count();
    (file.path.starts_with(SERVER_SRC) && n_lines > MAX_SERVER_FILE_LINES).then(|| {
        format!(
            "{}: {n_lines} lines, over the budget of {MAX_SERVER_FILE_LINES}: split it by concern",
            file.path
        )
    })
}

/// The top-level module of the server a file belongs to (`server/src/api/token.rs` → `api`,
/// `server/src/serve.rs` → `serve`); `None` for the crate roots and files elsewhere.
fn server_module(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(SERVER_SRC)?;
    let first = rest.split('/').next()?;
    let module = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(module, "lib" | "main")).then_some(module)
}

/// Where one module refers to another: `file:line`.
type Edges = BTreeMap<String, BTreeMap<String, String>>;

/// The modules `code` refers to through `crate::name` paths and `use crate::{a, b::c}` groups
/// (`$crate::` in macros does not count).
fn crate_refs(code: &str) -> Vec<(usize, String)> {
    let mut refs = Vec::new();
    for pos in word_positions(code, "crate") {
        if code[..pos].ends_with('$') {
            continue;
        }
        let Some(rest) = code[pos + "crate".len()..].trim_start().strip_prefix("::") else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            // Only the first segment of each top-level item of the group names a module.
            let mut depth = 0_usize;
            let mut item_start = true;
            for (offset, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && is_ident_char(c) => {
                        item_start = false;
                        let name: String = group[offset..]
                            .chars()
                            .take_while(|&c| is_ident_char(c))
                            .collect();
                        if name != "self" {
                            let at = code.len() - group.len() + offset;
                            refs.push((at, name));
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = rest.chars().take_while(|&c| is_ident_char(c)).collect();
            if !name.is_empty() {
                refs.push((code.len() - rest.len(), name));
            }
        }
    }
    refs
}

/// The graph of the server's top-level modules: an edge `a → b` for every file of `a` that
/// refers to `crate::b`. Keeps the first place each edge is seen, for the report. Only
/// `crate::` paths count: the modules reach each other that way, and `super::` stays inside a
/// module (it would only leave one from a module's root file).
fn module_graph(files: &[SourceFile]) -> Edges {
    let mut edges = Edges::new();
    for file in files {
        let Some(from) = server_module(&file.path) else {
            continue;
        };
        let lines = lex_lines(&file.text);
        // Join the code so a `use crate::{...}` group spanning lines is read whole.
        let code: String = lines
            .iter()
            .map(|l| l.code.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let node = edges.entry(from.to_owned()).or_default();
        for (at, to) in crate_refs(&code) {
            if to != from {
                let line_no = code[..at].matches('\n').count() + 1;
                node.entry(to)
                    .or_insert_with(|| format!("{}:{line_no}", file.path));
            }
        }
    }
    // `crate::unix_now_s` and the like name items of the crate root, not modules.
    let modules: BTreeSet<String> = edges.keys().cloned().collect();
    for targets in edges.values_mut() {
        targets.retain(|to, _| modules.contains(to));
    }
    edges
}

/// The first cycle a depth-first search over `edges` finds (modules in sorted order), as the
/// path `a → b → … → a`.
fn find_cycle(edges: &Edges) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &Edges,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[pos..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flat_map(BTreeMap::keys) {
            if let Some(cycle) = visit(next, edges, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

/// Rule: the server's top-level modules form a DAG. The report names the cycle and where each
/// of its edges comes from.
fn check_no_cycles(edges: &Edges) -> Option<String> {
    let cycle = find_cycle(edges)?;
    let mut report = format!(
        "import cycle between server modules: {}",
        cycle.join(" -> ")
    );
    for pair in cycle.windows(2) {
        let at = &edges[&pair[0]][&pair[1]];
        write!(report, "\n    {} -> {}: {at}", pair[0], pair[1]).expect("writing to a String");
    }
    Some(report)
}

/// Panics with every violation, one per line, under a title saying which rule they break.
fn assert_none(rule: &str, violations: &[String]) {
    assert!(
        violations.is_empty(),
        "\n{rule}: {} violation(s)\n\n{}\n",
        violations.len(),
        violations.join("\n")
    );
}

#[test]
fn every_file_opens_with_an_inner_doc_comment() {
    let violations: Vec<String> = rust_files().iter().filter_map(check_inner_doc).collect();
    assert_none("every .rs file opens with `//!`", &violations);
}

#[test]
fn every_unsafe_has_a_safety_comment() {
    let violations: Vec<String> = rust_files()
        .iter()
        .flat_map(check_safety_comments)
        .collect();
    assert_none("every `unsafe` has a `// SAFETY:` comment", &violations);
}

#[test]
fn only_gate_imports_aya() {
    let violations: Vec<String> = rust_files()
        .iter()
        .flat_map(|file| check_import_confined(file, "aya", "server/src/gate/"))
        .collect();
    assert_none("only server/src/gate/ imports aya", &violations);
}

#[test]
fn only_shard_imports_io_uring() {
    let violations: Vec<String> = rust_files()
        .iter()
        .flat_map(|file| check_import_confined(file, "io_uring", "server/src/shard/"))
        .collect();
    assert_none("only server/src/shard/ imports io_uring", &violations);
}

#[test]
fn server_files_stay_within_the_line_budget() {
    let violations: Vec<String> = rust_files().iter().filter_map(check_line_budget).collect();
    assert_none("server/src line budget", &violations);
}

#[test]
fn server_modules_have_no_import_cycles() {
    let edges = module_graph(&rust_files());
    // The graph must be the real one: these edges exist today and are not cycles.
    assert!(edges["serve"].contains_key("shard"), "{edges:?}");
    assert!(edges["api"].contains_key("cache"), "{edges:?}");
    if let Some(report) = check_no_cycles(&edges) {
        panic!("\n{report}\n");
    }
}

#[cfg(test)]
mod tests {
    //! Each rule fails on a crafted file that breaks it and passes on one that keeps it.

    use super::*;

    fn file(path: &str, lines: &[&str]) -> SourceFile {
        SourceFile {
            path: path.to_owned(),
            text: lines.join("\n") + "\n",
        }
    }

    #[test]
    fn lexer_blanks_strings_and_comments() {
        let lines = lex_lines(
            "let s = \"unsafe { aya:: }\"; // unsafe {\nlet c = '\"'; let q = '\\''; let r = r#\"a\"b\"#; let b = br\"x\"; x::<'a>();\n/* a /* b */ unsafe { */ done",
        );
        assert_eq!(lines[0].code.trim(), "let s = \"\";");
        assert_eq!(lines[0].comment, "// unsafe {");
        assert_eq!(
            lines[1].code.trim(),
            "let c = ''; let q = ''; let r = r\"\"; let b = br\"\"; x::<'a>();"
        );
        assert_eq!(lines[2].code.trim(), "done");
    }

    #[test]
    fn inner_doc_rule() {
        assert!(check_inner_doc(&file("a.rs", &["//! What this is.", "fn f() {}"])).is_none());
        assert!(check_inner_doc(&file("a.rs", &["/// Item doc.", "fn f() {}"])).is_some());
        assert!(check_inner_doc(&file("a.rs", &["", "//! Late."])).is_some());
    }

    #[test]
    fn safety_rule() {
        let ok = file(
            "a.rs",
            &[
                "fn f() {",
                "    // SAFETY: no preconditions.",
                "    let x = unsafe { g() };",
                "    // SAFETY: the comment may say more",
                "    // on a second line.",
                "    Ok((0..n)",
                "        .filter(|&i| unsafe { h(i) }))",
                "}",
                "// SAFETY: plain data.",
                "unsafe impl Send for T {}",
                "unsafe fn no_block_here() {}",
                "let s = \"unsafe { in a string }\";",
            ],
        );
        assert_eq!(check_safety_comments(&ok), Vec::<String>::new());
        let bad = file(
            "a.rs",
            &[
                "// SAFETY: covers the first only.",
                "let a = unsafe { g() };",
                "let b = unsafe { g() };",
                "// SAFETY: separated by a blank line.",
                "",
                "unsafe {",
                "}",
                "// SAFETY: covers one impl.",
                "unsafe impl Send for T {}",
                "unsafe impl Sync for T {}",
            ],
        );
        let violations = check_safety_comments(&bad);
        assert_eq!(violations.len(), 3, "{violations:#?}");
        assert!(violations[0].starts_with("a.rs:3:"), "{violations:#?}");
        assert!(violations[1].starts_with("a.rs:6:"), "{violations:#?}");
        assert!(violations[2].starts_with("a.rs:10:"), "{violations:#?}");
    }

    #[test]
    fn import_rule() {
        let uses = |path, line| {
            !check_import_confined(&file(path, &[line]), "aya", "server/src/gate/").is_empty()
        };
        assert!(uses("server/src/api/x.rs", "use aya::maps::HashMap;"));
        assert!(uses("server/src/api/x.rs", "use aya;"));
        assert!(uses(
            "server/src/api/x.rs",
            "let m = ::aya::Ebpf::load(b)?;"
        ));
        assert!(uses("server/src/api/x.rs", "use {aya::Pod, std::io};"));
        assert!(!uses("server/src/gate/x.rs", "use aya::maps::HashMap;"));
        assert!(!uses("benches/src/x.rs", "use aya::maps::HashMap;"));
        assert!(!uses(
            "server/src/api/x.rs",
            "use aya_build::Package; // aya::"
        ));
        assert!(!uses("server/src/api/x.rs", "let papaya = \"aya::\";"));
    }

    #[test]
    fn line_budget_rule() {
        let long = vec!["//! Long."; MAX_SERVER_FILE_LINES + 1];
        assert!(check_line_budget(&file("server/src/a.rs", &long)).is_some());
        assert!(check_line_budget(&file("server/src/a.rs", &long[1..])).is_none());
        assert!(check_line_budget(&file("xtask/src/a.rs", &long)).is_none());
    }

    #[test]
    fn reads_crate_paths_and_use_groups() {
        let refs: Vec<String> = crate_refs(
            "use crate::{auth::{jwt, keys}, cache, self};\nlet x = crate::pool::Pool::new(); $crate::http::f(); subcrate::z",
        )
        .into_iter()
        .map(|(_, name)| name)
        .collect();
        assert_eq!(refs, ["auth", "cache", "pool"]);
    }

    #[test]
    fn cycle_rule_reports_the_cycle_and_its_edges() {
        let files = [
            file("server/src/lib.rs", &["//! Root.", "use crate::api;"]),
            file(
                "server/src/api/mod.rs",
                &["use crate::{cache, control::Msg};"],
            ),
            file(
                "server/src/control/mod.rs",
                &["", "fn f() { crate::api::g(); }"],
            ),
            file(
                "server/src/cache/mod.rs",
                &["use crate::{hashing, unix_now_s};"],
            ),
        ];
        let graph = module_graph(&files);
        // Crate-root items and modules without files are not nodes.
        assert_eq!(
            graph.keys().collect::<Vec<_>>(),
            ["api", "cache", "control"]
        );
        assert!(graph["cache"].is_empty(), "{graph:?}");
        let report = check_no_cycles(&graph).expect("a cycle");
        assert!(
            report.starts_with("import cycle between server modules: api -> control -> api"),
            "{report}"
        );
        assert!(
            report.contains("api -> control: server/src/api/mod.rs:1"),
            "{report}"
        );
        assert!(
            report.contains("control -> api: server/src/control/mod.rs:2"),
            "{report}"
        );
        let acyclic = [&files[1], &files[3]].map(|f| SourceFile {
            path: f.path.clone(),
            text: f.text.clone(),
        });
        assert!(check_no_cycles(&module_graph(&acyclic)).is_none());
    }
}

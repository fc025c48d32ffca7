//! Tidy: the invariants of ARCHITECTURE.md, checked by the build instead of by review.
//!
//! In the manner of rust-analyzer's `tidy` test, this reads `cargo metadata --no-deps` and the
//! sources and fails, naming file and line and what to do, when a rule is broken. It is hermetic
//! and fast (no network, no build, a few hundred files read), so it runs in plain `cargo test`.
//!
//! The rules (ARCHITECTURE.md, "Invariants"):
//!
//! 1. **Third-party crates stay home.** Only wflo-db depends on sea-orm / sea-query / sqlx, only
//!    wflo-sandbox on bollard, only wflo-cache on fred, only wflo-bus on rskafka, only
//!    wflo-temporal on the Temporal SDK (`temporalio-*`), only wflo-server on axum. Checked on
//!    every workspace crate's normal and build dependencies; dev-dependencies are test tooling
//!    and may use a backend (a test may read with sqlx what a crate wrote). The library sources
//!    of the other crates do not name those crates' paths either (`sqlx::`, `wflo_db::sea_orm::`
//!    through a re-export, ...).
//! 2. **Environment variables are read by the config loader only**
//!    (`crates/wflo-core/src/config.rs`): no `env::var`, `env::var_os`, `env::vars`,
//!    `env::vars_os` (nor an import of them) in library code.
//! 3. **Every inner crate says so**: the `//!` docs of each library crate but wflo-core contain
//!    [`INNER_CRATE_PHRASE`].
//! 4. **ARCHITECTURE.md's crate diagram is the real graph**: between the `tidy:crate-graph`
//!    markers, the drawing names every workspace crate and puts each one under a crate that
//!    depends on it (directly or through others), and the list states, for every workspace
//!    crate, exactly the workspace crates it depends on (normal and build dependencies).
//! 5. **No panicking lock in library code**: no `.lock()`, `.read()` or `.write()` followed by
//!    `.unwrap()` or `.expect(..)`. A panic while a std lock is held poisons it, and every later
//!    `unwrap` panics too: one failed step would take the whole process with it. Recover the
//!    guard (`.unwrap_or_else(PoisonError::into_inner)`, when the data cannot be left
//!    half-changed), use a lock that cannot be poisoned, or return an error.
//!
//! **Library code** (rules 1 to 3 on sources, and 5) is every `.rs` file under `src/` and
//! `build.rs` of every workspace crate but the test tooling crates ([`TOOLING_CRATES`]: xtask
//! and this end-to-end suite), minus test code, which is recognised by a simple rule and
//! nothing cleverer:
//! * a file named `testing.rs` or `tests.rs`, or under a directory `testing/` or `tests/` inside
//!   `src/` (test tooling modules, behind `cfg(test)` or a `testing` feature);
//! * an inline module whose `mod name {` line is preceded by a `#[cfg(test)]` (or
//!   `#[cfg(any(test, ..))]`) attribute, up to the `}` at the indentation of its `mod` line
//!   (rustfmt puts it there). A lone `#[cfg(test)] fn` or `use` elsewhere is *not* skipped: put
//!   test-only code in the test module or a `testing` module;
//! * comment lines (`//`, `///`, `//!`).
//!
//! Known offenders are listed in the allow-lists below, each with its count and the reason it
//! is tolerated: a new violation fails, and so does an entry that no longer matches (lower or
//! remove it), so the lists only shrink.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The sentence every inner crate's `//!` docs contain (whitespace between words is free, so it
/// may be wrapped over several `//!` lines).
const INNER_CRATE_PHRASE: &str = "Inner crate of Wflo: its API may change in any release. Use it \
                                  through `wflo-core`, the one public, semver'd facade.";

/// The facade: the one crate that is not inner.
const FACADE: &str = "wflo-core";

/// Workspace crates that are test and build tooling, not library code: their sources are not
/// scanned (their dependencies are still checked, and they appear in the crate graph).
const TOOLING_CRATES: &[&str] = &["xtask", "wflo-e2e"];

/// The one file that reads the environment: wflo-core's Config loader.
const CONFIG_LOADER: &str = "crates/wflo-core/src/config.rs";

/// Which workspace crate owns a third-party crate. A name matches when it equals the prefix or
/// continues it with `-` (`sqlx` matches `sqlx-core`, `temporalio` matches `temporalio-sdk`).
const OWNERS: &[(&str, &str)] = &[
    ("sea-orm", "wflo-db"),
    ("sea-query", "wflo-db"),
    ("sea-schema", "wflo-db"),
    ("sqlx", "wflo-db"),
    ("bollard", "wflo-sandbox"),
    ("fred", "wflo-cache"),
    ("rskafka", "wflo-bus"),
    ("temporalio", "wflo-temporal"),
    ("temporal-sdk", "wflo-temporal"),
    ("temporal-client", "wflo-temporal"),
    ("axum", "wflo-server"),
];

/// Files allowed a panicking lock, with how many they hold: none (the last ones went with
/// issue 14); keep it that way.
const PANICKING_LOCK_ALLOWED: &[(&str, usize)] = &[];

/// Files allowed to read the environment besides the Config loader: none, keep it that way.
const ENV_READ_ALLOWED: &[(&str, usize)] = &[];

/// Library crates whose `//!` docs do not yet carry [`INNER_CRATE_PHRASE`].
const INNER_PHRASE_MISSING_ALLOWED: &[&str] = &[];

// ------------------------------------------------------------------------------------------
// The rules
// ------------------------------------------------------------------------------------------

#[test]
fn third_party_crates_stay_home() {
    let ws = workspace();
    let mut problems = Vec::new();
    for pkg in &ws.packages {
        for dep in pkg.deps.iter().filter(|d| d.kind != DepKind::Dev) {
            let Some(owner) = owner_of(&dep.name) else {
                continue;
            };
            if owner != pkg.name {
                problems.push(format!(
                    "{}: {} has a {} dependency on `{}`, which only {owner} may use",
                    ws.manifest_location(pkg, &dep.name),
                    pkg.name,
                    dep.kind.as_str(),
                    dep.name,
                ));
            }
        }
    }
    for file in ws.library_sources() {
        for (line_no, line) in file.library_lines() {
            for ident in path_roots(line) {
                let Some(owner) = owner_of(&ident.replace('_', "-")) else {
                    continue;
                };
                if owner != file.package {
                    problems.push(format!(
                        "{}:{line_no}: names `{ident}::` in {}, but only {owner} may know \
                         `{ident}`",
                        file.rel_path, file.package,
                    ));
                }
            }
        }
    }
    report(
        "third-party crates stay home",
        problems,
        "go through the owning crate's own types: a third-party type never crosses a crate \
         boundary, and the owner does not re-export its backend. Dev-dependencies may use a \
         backend (tests check what a crate wrote)",
    );
}

#[test]
fn environment_is_read_by_the_config_loader_only() {
    let ws = workspace();
    let mut found = BTreeMap::new();
    for file in ws.library_sources() {
        if file.rel_path == CONFIG_LOADER {
            continue;
        }
        let code = file.compact();
        let mut lines = code.find_all("env::var");
        for start in code.find_all("env::{") {
            let list: String = code.chars[start + 6..]
                .iter()
                .map(|&(c, _)| c)
                .take_while(|&c| c != '}')
                .collect();
            if list.split(',').any(|item| item.starts_with("var")) {
                lines.push(code.chars[start].1);
            }
        }
        if !lines.is_empty() {
            lines.sort_unstable();
            found.insert(file.rel_path.clone(), lines);
        }
    }
    let problems = check_allowed(
        found,
        ENV_READ_ALLOWED,
        "ENV_READ_ALLOWED",
        "reads an environment variable outside wflo-core's Config loader",
    );
    report(
        "environment variables are read in one place",
        problems,
        "add a field to `wflo_core::Config` (read in `Config::from_env`, \
         crates/wflo-core/src/config.rs) and pass it down in the crate's own *Config struct. \
         Test tooling belongs in a `testing.rs` module, a `#[cfg(test)] mod`, tests/ or benches/",
    );
}

#[test]
fn inner_crates_say_so() {
    let ws = workspace();
    let phrase = collapse_whitespace(INNER_CRATE_PHRASE);
    let mut problems = Vec::new();
    let mut allowed_but_fine = Vec::new();
    for pkg in ws.library_packages() {
        let Some(lib) = &pkg.lib_src else { continue };
        if pkg.name == FACADE {
            continue;
        }
        let text = read(lib);
        let docs: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("//!"))
            .collect();
        let has = collapse_whitespace(&docs.join(" ")).contains(&phrase);
        let allowed = INNER_PHRASE_MISSING_ALLOWED.contains(&pkg.name.as_str());
        match (has, allowed) {
            (false, false) => problems.push(format!(
                "{}:1: {} is an inner crate but its `//!` docs do not say so. Add, near the \
                 top: \"*{INNER_CRATE_PHRASE}*\"",
                ws.rel(lib),
                pkg.name,
            )),
            (true, true) => allowed_but_fine.push(pkg.name.clone()),
            _ => {}
        }
    }
    for name in INNER_PHRASE_MISSING_ALLOWED {
        if allowed_but_fine.contains(&name.to_string()) {
            problems.push(format!(
                "tests/tests/tidy.rs: {name} now says it is inner: remove it from \
                 INNER_PHRASE_MISSING_ALLOWED"
            ));
        } else if !ws.library_packages().any(|p| p.name == *name) {
            problems.push(format!(
                "tests/tests/tidy.rs: {name} is not a library crate of the workspace: remove it \
                 from INNER_PHRASE_MISSING_ALLOWED"
            ));
        }
    }
    report(
        "every inner crate says it is inner",
        problems,
        "wflo-core is the one semver'd surface; every other library crate says so in its \
         `//!` docs with the same sentence, so a reader of any inner crate's docs is sent to \
         the facade",
    );
}

#[test]
fn architecture_md_matches_the_crate_graph() {
    let ws = workspace();
    let path = ws.root.join("ARCHITECTURE.md");
    let text = read(&path);
    let problems = check_architecture(&text, &ws.graph());
    report(
        "ARCHITECTURE.md's crate diagram is the real graph",
        problems,
        "make ARCHITECTURE.md say what the Cargo.toml files say (`cargo metadata \
         --format-version 1 --no-deps` lists each crate's dependencies), or change the \
         dependency if the diagram is what was meant",
    );
}

#[test]
fn no_panicking_lock_in_library_code() {
    let ws = workspace();
    let mut found = BTreeMap::new();
    for file in ws.library_sources() {
        let code = file.compact();
        let mut lines = Vec::new();
        for method in ["lock", "read", "write"] {
            for then in ["unwrap()", "expect("] {
                lines.extend(code.find_all(&format!(".{method}().{then}")));
            }
        }
        if !lines.is_empty() {
            lines.sort_unstable();
            found.insert(file.rel_path.clone(), lines);
        }
    }
    let problems = check_allowed(
        found,
        PANICKING_LOCK_ALLOWED,
        "PANICKING_LOCK_ALLOWED",
        "unwraps a lock (`.lock()`/`.read()`/`.write()` then `.unwrap()`/`.expect(..)`)",
    );
    report(
        "no panicking lock in library code",
        problems,
        "a panic while a std lock is held poisons it, and then every `unwrap` of it panics \
         too. Recover the guard with `.unwrap_or_else(PoisonError::into_inner)` when the data \
         cannot be left half-changed, use a lock that cannot be poisoned, or return an error",
    );
}

// ------------------------------------------------------------------------------------------
// ARCHITECTURE.md
// ------------------------------------------------------------------------------------------

const GRAPH_BEGIN: &str = "<!-- tidy:crate-graph -->";
const GRAPH_END: &str = "<!-- /tidy:crate-graph -->";
/// What the list says of a crate that depends on no workspace crate.
const NO_DEPS: &str = "(none)";

/// The real graph: every workspace crate and the workspace crates it depends on (normal and
/// build dependencies).
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The problems with ARCHITECTURE.md's crate graph section, given the real graph.
fn check_architecture(text: &str, graph: &Graph) -> Vec<String> {
    let file = "ARCHITECTURE.md";
    let how = format!(
        "the section between `{GRAPH_BEGIN}` and `{GRAPH_END}` holds the drawing (a ``` block) \
         and the list (`- crate → dep, dep` per workspace crate, `→ {NO_DEPS}` for none)"
    );
    let lines: Vec<&str> = text.lines().collect();
    let find = |marker: &str| lines.iter().position(|l| l.trim() == marker);
    let (Some(begin), Some(end)) = (find(GRAPH_BEGIN), find(GRAPH_END)) else {
        return vec![format!(
            "{file}: the crate graph markers are missing: {how}"
        )];
    };
    if end < begin {
        return vec![format!(
            "{file}:{}: the crate graph markers are out of order: {how}",
            end + 1
        )];
    }
    let mut problems = Vec::new();
    let section = (begin + 1..end).map(|i| (i + 1, lines[i]));

    // Split the section into the drawing (inside the fence) and the list.
    // An item may wrap: an indented line right after an item continues it.
    let mut drawing = Vec::new();
    let mut list: Vec<(usize, String)> = Vec::new();
    let mut in_fence = false;
    let mut in_item = false;
    for (no, line) in section {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            in_item = false;
        } else if in_fence {
            drawing.push((no, line));
        } else if let Some(item) = line.trim_start().strip_prefix("- ") {
            list.push((no, item.to_string()));
            in_item = true;
        } else if in_item && line.starts_with(' ') && !line.trim().is_empty() {
            let last = list.last_mut().expect("an item is open");
            last.1.push(' ');
            last.1.push_str(line.trim());
        } else {
            in_item = false;
        }
    }
    if drawing.is_empty() {
        problems.push(format!(
            "{file}:{}: no drawing in the crate graph section: {how}",
            begin + 1
        ));
    }

    // The drawing: every crate appears, no other `wflo-*` name does, and a crate drawn under
    // another is used by it (directly or through others).
    for &(no, line) in &drawing {
        for token in line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')) {
            if token.starts_with("wflo-") && !graph.contains_key(token) {
                problems.push(format!(
                    "{file}:{no}: the drawing names `{token}`, which is not a workspace crate: \
                     remove or rename it"
                ));
            }
        }
    }
    // A crate is drawn where its name starts a line (after the tree's lines): the column of
    // the name gives its depth, the nearest line above with a smaller column its parent.
    let mut drawn = BTreeSet::new();
    let mut stack: Vec<(usize, &str)> = Vec::new(); // (column, crate) of the open ancestors
    for &(no, line) in &drawing {
        let body = line.trim_start_matches(['│', '├', '└', '─', '|', '`', '+', '-', ' ']);
        let Some(name) = graph.keys().find(|n| {
            body.starts_with(n.as_str())
                && !body[n.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
        }) else {
            continue;
        };
        let column = line.chars().count() - body.chars().count();
        while stack.last().is_some_and(|&(c, _)| c >= column) {
            stack.pop();
        }
        if let Some(&(_, parent)) = stack.last()
            && !reaches(graph, parent, name)
        {
            problems.push(format!(
                "{file}:{no}: the drawing puts `{name}` under `{parent}`, but {parent} does not \
                 depend on {name}, even indirectly: move it under a crate that does"
            ));
        }
        stack.push((column, name.as_str()));
        drawn.insert(name.as_str());
    }
    for name in graph.keys().filter(|n| !drawn.contains(n.as_str())) {
        problems.push(format!(
            "{file}:{}: the drawing does not show the workspace crate `{name}`: draw it under \
             a crate that depends on it (or at the left margin if none does), with one line \
             on what it does",
            begin + 1
        ));
    }

    // The list: exactly the real edges.
    let mut stated: BTreeMap<String, (usize, BTreeSet<String>)> = BTreeMap::new();
    for (no, item) in &list {
        let no = *no;
        let item = item.replace('`', "");
        let Some((from, to)) = item.split_once('→') else {
            problems.push(format!(
                "{file}:{no}: cannot read `- {item}` as `crate → dep, dep`: {how}"
            ));
            continue;
        };
        let from = from.trim().to_string();
        let to = to.trim();
        let deps: BTreeSet<String> = if to == NO_DEPS {
            BTreeSet::new()
        } else {
            to.split(',').map(|d| d.trim().to_string()).collect()
        };
        if !graph.contains_key(&from) {
            problems.push(format!(
                "{file}:{no}: the list names `{from}`, which is not a workspace crate: remove \
                 the line"
            ));
            continue;
        }
        if stated.insert(from.clone(), (no, deps)).is_some() {
            problems.push(format!(
                "{file}:{no}: `{from}` is listed twice: keep one line"
            ));
        }
    }
    for (name, real) in graph {
        let Some((no, deps)) = stated.get(name) else {
            let deps = if real.is_empty() {
                NO_DEPS.to_string()
            } else {
                real.iter().cloned().collect::<Vec<_>>().join(", ")
            };
            problems.push(format!(
                "{file}:{}: the crate list has no line for `{name}`: add `- {name} → {deps}`",
                end + 1
            ));
            continue;
        };
        for missing in real.difference(deps) {
            problems.push(format!(
                "{file}:{no}: {name} depends on {missing}, but the list does not say so: add \
                 it (and draw it if the drawing hides it)"
            ));
        }
        for extra in deps.difference(real) {
            problems.push(format!(
                "{file}:{no}: the list says {name} depends on `{extra}`, but its Cargo.toml has \
                 no such (normal or build) dependency: remove it"
            ));
        }
    }
    problems
}

/// Whether `from` depends on `to`, directly or through other workspace crates.
fn reaches(graph: &Graph, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from];
    while let Some(at) = todo.pop() {
        for next in graph.get(at).into_iter().flatten() {
            if next == to {
                return true;
            }
            if seen.insert(next.as_str()) {
                todo.push(next);
            }
        }
    }
    false
}

// ------------------------------------------------------------------------------------------
// The workspace, from `cargo metadata`
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DepKind {
    Normal,
    Build,
    Dev,
}

impl DepKind {
    fn as_str(self) -> &'static str {
        match self {
            DepKind::Normal => "normal",
            DepKind::Build => "build",
            DepKind::Dev => "dev",
        }
    }
}

#[derive(Debug)]
struct Dep {
    /// The package's real name (not a rename).
    name: String,
    kind: DepKind,
    /// A path dependency on a crate of this workspace.
    in_workspace: bool,
}

#[derive(Debug)]
struct Package {
    name: String,
    manifest: PathBuf,
    dir: PathBuf,
    lib_src: Option<PathBuf>,
    deps: Vec<Dep>,
}

#[derive(Debug)]
struct Workspace {
    root: PathBuf,
    packages: Vec<Package>,
    sources: Vec<SourceFile>,
}

fn workspace() -> &'static Workspace {
    static WS: OnceLock<Workspace> = OnceLock::new();
    WS.get_or_init(load_workspace)
}

fn load_workspace() -> Workspace {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", cargo.to_string_lossy()));
    assert!(
        out.status.success(),
        "`cargo metadata --no-deps` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let root = PathBuf::from(str_of(&meta["workspace_root"]));
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .map(str_of)
        .collect();
    let raw: Vec<&Value> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| members.contains(str_of(&p["id"])))
        .collect();
    let names: BTreeSet<&str> = raw.iter().map(|p| str_of(&p["name"])).collect();
    let mut packages: Vec<Package> = raw
        .iter()
        .map(|p| {
            let manifest = PathBuf::from(str_of(&p["manifest_path"]));
            let dir = manifest.parent().expect("manifest dir").to_path_buf();
            let lib_src = p["targets"].as_array().into_iter().flatten().find_map(|t| {
                let kinds = t["kind"].as_array()?;
                kinds
                    .iter()
                    .any(|k| matches!(k.as_str(), Some("lib" | "rlib" | "proc-macro")))
                    .then(|| PathBuf::from(str_of(&t["src_path"])))
            });
            let deps = p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    let name = str_of(&d["name"]).to_string();
                    Dep {
                        in_workspace: d.get("path").is_some_and(Value::is_string)
                            && names.contains(name.as_str()),
                        name,
                        kind: match d["kind"].as_str() {
                            Some("dev") => DepKind::Dev,
                            Some("build") => DepKind::Build,
                            _ => DepKind::Normal,
                        },
                    }
                })
                .collect();
            Package {
                name: str_of(&p["name"]).to_string(),
                manifest,
                dir,
                lib_src,
                deps,
            }
        })
        .collect();
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    let mut sources = Vec::new();
    for pkg in packages
        .iter()
        .filter(|p| !TOOLING_CRATES.contains(&p.name.as_str()))
    {
        let mut files = Vec::new();
        collect_rs(&pkg.dir.join("src"), &mut files);
        let build = pkg.dir.join("build.rs");
        if build.is_file() {
            files.push(build);
        }
        for path in files {
            let rel_path = rel_to(&root, &path);
            let in_src = rel_to(&pkg.dir.join("src"), &path);
            if is_test_tooling(&in_src) {
                continue;
            }
            let lines: Vec<String> = read(&path).lines().map(str::to_string).collect();
            let library = library_mask(&lines);
            sources.push(SourceFile {
                rel_path,
                package: pkg.name.clone(),
                lines,
                library,
            });
        }
    }
    Workspace {
        root,
        packages,
        sources,
    }
}

impl Workspace {
    fn graph(&self) -> Graph {
        self.packages
            .iter()
            .map(|p| {
                let deps = p
                    .deps
                    .iter()
                    .filter(|d| d.in_workspace && d.kind != DepKind::Dev)
                    .map(|d| d.name.clone())
                    .collect();
                (p.name.clone(), deps)
            })
            .collect()
    }

    fn library_packages(&self) -> impl Iterator<Item = &Package> {
        self.packages
            .iter()
            .filter(|p| p.lib_src.is_some() && !TOOLING_CRATES.contains(&p.name.as_str()))
    }

    fn library_sources(&self) -> impl Iterator<Item = &SourceFile> {
        self.sources.iter()
    }

    fn rel(&self, path: &Path) -> String {
        rel_to(&self.root, path)
    }

    /// `path:line` of the line of `pkg`'s Cargo.toml that declares `dep`.
    fn manifest_location(&self, pkg: &Package, dep: &str) -> String {
        let text = read(&pkg.manifest);
        let line = text.lines().position(|l| {
            let l = l.trim_start().trim_start_matches('"');
            l.strip_prefix(dep)
                .is_some_and(|rest| rest.starts_with(['.', ' ', '=', '"']))
        });
        match line {
            Some(i) => format!("{}:{}", self.rel(&pkg.manifest), i + 1),
            None => self.rel(&pkg.manifest),
        }
    }
}

fn str_of(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("cargo metadata: expected a string, got {v}"))
}

// ------------------------------------------------------------------------------------------
// Sources
// ------------------------------------------------------------------------------------------

#[derive(Debug)]
struct SourceFile {
    /// Relative to the workspace root, with `/`.
    rel_path: String,
    package: String,
    lines: Vec<String>,
    /// Per line: library code (not test code, not a comment).
    library: Vec<bool>,
}

impl SourceFile {
    /// (1-based line number, text) of each line of library code.
    fn library_lines(&self) -> impl Iterator<Item = (usize, &str)> {
        self.lines
            .iter()
            .enumerate()
            .filter(|&(i, _)| self.library[i])
            .map(|(i, l)| (i + 1, l.as_str()))
    }

    /// The library code without whitespace, so a chain split over lines reads as one.
    fn compact(&self) -> Compact {
        let chars = self
            .library_lines()
            .flat_map(|(no, l)| {
                l.chars()
                    .filter(|c| !c.is_whitespace())
                    .map(move |c| (c, no))
            })
            .collect();
        Compact { chars }
    }
}

/// Code with whitespace removed, each character with its 1-based line number.
struct Compact {
    chars: Vec<(char, usize)>,
}

impl Compact {
    /// The line of each occurrence of `needle` (itself without whitespace).
    fn find_all(&self, needle: &str) -> Vec<usize> {
        let needle: Vec<char> = needle.chars().collect();
        (0..self.chars.len())
            .filter(|&i| {
                self.chars.len() - i >= needle.len()
                    && needle
                        .iter()
                        .enumerate()
                        .all(|(k, &c)| self.chars[i + k].0 == c)
            })
            .map(|i| self.chars[i].1)
            .collect()
    }
}

/// A file of test tooling inside `src/` (path relative to `src/`).
fn is_test_tooling(in_src: &str) -> bool {
    let parts: Vec<&str> = in_src.split('/').collect();
    let (file, dirs) = parts.split_last().expect("a file name");
    matches!(*file, "testing.rs" | "tests.rs")
        || dirs.iter().any(|d| matches!(*d, "testing" | "tests"))
}

/// Which lines are library code: not comments, not inside a `#[cfg(test)] mod name { .. }`.
fn library_mask(lines: &[String]) -> Vec<bool> {
    let mut mask = vec![true; lines.len()];
    let mut i = 0;
    while i < lines.len() {
        let line = &lines[i];
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            mask[i] = false;
        } else if is_inline_mod(trimmed) && cfg_test_before(lines, i) {
            let indent = &line[..line.len() - trimmed.len()];
            let close = format!("{indent}}}");
            let end = (i + 1..lines.len())
                .find(|&j| lines[j].trim_end() == close)
                .unwrap_or(lines.len() - 1);
            for m in &mut mask[i..=end] {
                *m = false;
            }
            i = end;
        }
        i += 1;
    }
    mask
}

/// `mod name {`, with any visibility.
fn is_inline_mod(trimmed: &str) -> bool {
    let rest = trimmed
        .strip_prefix("pub(crate) ")
        .or_else(|| trimmed.strip_prefix("pub(super) "))
        .or_else(|| trimmed.strip_prefix("pub "))
        .unwrap_or(trimmed);
    rest.starts_with("mod ") && rest.trim_end().ends_with('{')
}

/// Whether the attributes (and doc comments) right above line `i` include a test cfg.
fn cfg_test_before(lines: &[String], i: usize) -> bool {
    lines[..i]
        .iter()
        .rev()
        .map(|l| l.trim())
        .take_while(|l| l.starts_with("#[") || l.starts_with("//"))
        .any(|l| {
            l.starts_with("#[cfg(")
                && l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .any(|w| w == "test")
                && !l.contains("not(test")
        })
}

/// The first segment of each path (`a::b`) on a line of code, as written (`sea_orm` in
/// `use sea_orm::X`, also `sea_orm` in `wflo_db::sea_orm::X`).
fn path_roots(line: &str) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if is_ident(chars[i]) && (i == 0 || !is_ident(chars[i - 1])) {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            if chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':') {
                out.push(chars[start..i].iter().collect());
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The workspace crate that owns third-party crate `name`, if any.
fn owner_of(name: &str) -> Option<&'static str> {
    OWNERS.iter().find_map(|&(prefix, owner)| {
        let rest = name.strip_prefix(prefix)?;
        (rest.is_empty() || rest.starts_with('-')).then_some(owner)
    })
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.map(|e| e.expect("read_dir entry").path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn rel_to(base: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(base).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn collapse_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ------------------------------------------------------------------------------------------
// Allow-lists and reports
// ------------------------------------------------------------------------------------------

/// Compares what a rule found (file → lines) with its allow-list (file → count): a file not
/// listed, or with more occurrences than listed, is a violation; a listed count that is now too
/// high is a stale entry.
fn check_allowed(
    found: BTreeMap<String, Vec<usize>>,
    allowed: &[(&str, usize)],
    list_name: &str,
    what: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (file, lines) in &found {
        let limit = allowed
            .iter()
            .find(|(f, _)| f == file)
            .map_or(0, |&(_, n)| n);
        if lines.len() > limit {
            for line in lines {
                problems.push(format!("{file}:{line}: {what}"));
            }
            if limit > 0 {
                problems.push(format!(
                    "  ({file} is allowed {limit} in {list_name} (tests/tests/tidy.rs) and has \
                     {}: the new ones are among the lines above)",
                    lines.len()
                ));
            }
        }
    }
    for &(file, limit) in allowed {
        let n = found.get(file).map_or(0, Vec::len);
        if n < limit {
            problems.push(format!(
                "tests/tests/tidy.rs: {list_name} allows {file} {limit}, it has {n} now: {}",
                if n == 0 {
                    "remove the entry".to_string()
                } else {
                    format!("lower the count to {n}")
                }
            ));
        }
    }
    problems
}

/// Fails with every problem of one rule, one per line, then what to do about them.
fn report(rule: &str, problems: Vec<String>, advice: &str) {
    if problems.is_empty() {
        return;
    }
    let mut msg = format!(
        "tidy: {} problem(s) with the rule \"{rule}\" (ARCHITECTURE.md, Invariants; \
         tests/tests/tidy.rs says how it reads the code):\n",
        problems.len()
    );
    for p in &problems {
        let _ = writeln!(msg, "  {p}");
    }
    if !advice.is_empty() {
        let _ = writeln!(msg, "What to do: {advice}");
    }
    panic!("{msg}");
}

// ------------------------------------------------------------------------------------------
// The checker's own tests
// ------------------------------------------------------------------------------------------

#[test]
fn the_checker_reads_test_modules_and_chains() {
    let src = [
        "fn a() { m.lock()",
        "    .expect(\"x\"); }",
        "// m.lock().unwrap() in a comment",
        "#[cfg(test)]",
        "#[allow(clippy::unwrap_used)]",
        "mod tests {",
        "    fn t() { m.lock().unwrap(); std::env::var(\"X\"); }",
        "    mod inner {",
        "    }",
        "}",
        "fn b() { let _ = std::env::var_os(\"Y\"); }",
        "#[cfg(not(test))]",
        "mod real {",
        "    fn c() { m.write().unwrap(); }",
        "}",
    ];
    let lines: Vec<String> = src.iter().map(|s| s.to_string()).collect();
    let file = SourceFile {
        rel_path: "x.rs".into(),
        package: "p".into(),
        library: library_mask(&lines),
        lines,
    };
    let code = file.compact();
    assert_eq!(code.find_all(".lock().expect("), vec![1]);
    assert_eq!(code.find_all(".lock().unwrap()"), Vec::<usize>::new());
    assert_eq!(code.find_all("env::var"), vec![11]);
    assert_eq!(code.find_all(".write().unwrap()"), vec![14]);
    assert!(is_test_tooling("testing.rs"));
    assert!(is_test_tooling("a/tests/b.rs"));
    assert!(!is_test_tooling("a/b.rs"));
    assert_eq!(
        path_roots("use wflo_db::sea_orm::X; a::b"),
        ["wflo_db", "sea_orm", "a"]
    );
    assert_eq!(owner_of("sqlx-core"), Some("wflo-db"));
    assert_eq!(owner_of("sqlxx"), None);
    assert_eq!(owner_of("temporalio-sdk"), Some("wflo-temporal"));
}

#[test]
fn the_checker_reads_the_crate_graph() {
    let graph: Graph = [
        ("a", vec!["b", "c"]),
        ("b", vec!["c"]),
        ("c", vec![]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    let doc = |drawing: &str, list: &str| {
        format!("# x\n{GRAPH_BEGIN}\n```\n{drawing}```\n\n{list}{GRAPH_END}\n")
    };
    let good_drawing = "a      top\n └── b  middle\n      └── c  leaf\nd\n";
    let good_list = "- `a` → `b`,\n  `c`\n- `b` → `c`\n- `c` → (none)\n- `d` → (none)\n";
    assert_eq!(
        check_architecture(&doc(good_drawing, good_list), &graph),
        Vec::<String>::new()
    );
    let bad = check_architecture(
        &doc(
            "a\n └── c\n      └── b\nwflo-gone\n",
            "- a → b\n- b → c, d\n- c → (none)\n",
        ),
        &graph,
    );
    let expect = [
        "`wflo-gone`, which is not a workspace crate",
        "does not show the workspace crate `d`",
        "puts `b` under `c`",
        "a depends on c, but the list does not say so",
        "b depends on `d`",
        "no line for `d`: add `- d → (none)`",
    ];
    for e in expect {
        assert!(bad.iter().any(|p| p.contains(e)), "no `{e}` in {bad:#?}");
    }
    assert_eq!(bad.len(), expect.len(), "{bad:#?}");
    assert!(check_architecture("no markers", &graph)[0].contains("markers are missing"));
}

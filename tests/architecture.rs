//! ARCHITECTURE.md's roster checked against the code, so the map cannot drift from the
//! territory: every message type the roster names exists, every actix message type in
//! `src/` is named, every actor in `src/` has a row, each row's "messages in" are exactly
//! the messages its actor handles, and each of its "messages out" is named in the code of
//! its actor's file (outside imports and comments: a weaker check, as a file may name a
//! message it does not send, but one that catches a name the actor cannot send).
//!
//! The code is read as text (a declaration scan, not a Rust parser), which is enough for
//! the forms this codebase uses: `#[derive(Message)]` on a struct or enum, `impl Message
//! for`, a `macro_rules!` whose body derives `Message` (its invocations declare one type
//! each), `impl Actor for` and `impl Handler<M> for`. Test modules (`#[cfg(test)] mod`)
//! and `tests.rs` files are skipped: their actors and messages are scaffolding.
//!
//! It is its own test target, apart from `tests/it`, because it needs neither the engine
//! nor loopback: it reads files, and builds and runs in a moment.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One row of the roster.
#[derive(Debug)]
struct Row {
    /// The actor's type name, as bolded in the first cell.
    actor: String,
    /// The message types named in "messages in".
    incoming: BTreeSet<String>,
    /// The message types named in "messages out".
    outgoing: BTreeSet<String>,
    /// The row as written, for error messages.
    line: String,
    /// Characters in the row outside its two message columns: the prose that must stay
    /// short (the message columns are names only, as many as the actor has).
    prose_chars: usize,
}

/// What the scan of `src/` found.
#[derive(Debug, Default)]
struct Code {
    /// Message type → the file declaring it.
    messages: BTreeMap<String, PathBuf>,
    /// Actor type → the message types it handles.
    actors: BTreeMap<String, BTreeSet<String>>,
    /// Actor type → the code of the file declaring it, without imports, comments and
    /// tests: where what it sends must be named.
    actor_code: BTreeMap<String, String>,
}

/// The most characters a roster row may spend on what is not a message name: one row per
/// actor is a summary, and the explanation belongs below the table or in docs/.
const MAX_ROW_PROSE: usize = 300;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The roster table: the one whose header has "messages in" and "messages out". Its
/// rows are the `|` lines that follow the header without a break, so a blank line
/// inside the table cuts it short and the actors after it show up as missing.
fn roster(doc: &str) -> Vec<Row> {
    let lines: Vec<&str> = doc.lines().collect();
    let header_at = lines
        .iter()
        .position(|l| l.starts_with('|') && l.contains("messages in") && l.contains("messages out"))
        .expect("ARCHITECTURE.md has a roster table with \"messages in\" and \"messages out\"");
    let header = cells(lines[header_at]);
    let column = |name: &str| {
        header
            .iter()
            .position(|c| c.trim() == name)
            .unwrap_or_else(|| panic!("the roster has a \"{name}\" column"))
    };
    let (actor_col, in_col, out_col) = (
        column("actor"),
        column("messages in"),
        column("messages out"),
    );
    lines[header_at + 2..]
        .iter()
        .take_while(|l| l.starts_with('|'))
        .map(|line| {
            let row = cells(line);
            assert_eq!(
                row.len(),
                header.len(),
                "a roster row has as many cells as the header: {line}"
            );
            let actor = bold(&row[actor_col]).unwrap_or_else(|| {
                panic!("a roster row's first cell starts with the actor's **name**: {line}")
            });
            Row {
                actor,
                incoming: code_names(&row[in_col]),
                outgoing: code_names(&row[out_col]),
                line: line.to_string(),
                prose_chars: line.chars().count()
                    - row[in_col].chars().count()
                    - row[out_col].chars().count(),
            }
        })
        .collect()
}

/// The cells of a table row, without the outer pipes.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(|c| c.trim().to_string()).collect()
}

/// The text between the first pair of `**`.
fn bold(cell: &str) -> Option<String> {
    let rest = cell.strip_prefix("**")?;
    Some(rest[..rest.find("**")?].to_string())
}

/// Every `code span` in a cell that names a type: the part before any `::` or `{`, if it
/// is an identifier starting with a capital letter.
fn code_names(cell: &str) -> BTreeSet<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|span| {
            let name = span
                .split("::")
                .next()?
                .split([' ', '{', '('])
                .next()?
                .trim();
            let is_type = name.starts_with(|c: char| c.is_ascii_uppercase())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            is_type.then(|| name.to_string())
        })
        .collect()
}

/// A file's text without its test module: everything from a top-level `#[cfg(test)]`
/// followed by `mod` on.
fn without_tests(text: &str) -> &str {
    let mut offset = 0;
    let mut previous_was_cfg_test = false;
    for line in text.split_inclusive('\n') {
        if previous_was_cfg_test && line.starts_with("mod ") {
            let cfg_len = text[..offset].trim_end().len() - "#[cfg(test)]".len();
            return &text[..cfg_len];
        }
        previous_was_cfg_test = line.trim_end() == "#[cfg(test)]";
        offset += line.len();
    }
    text
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// The lines of `text` that are code: no `use` declarations (however many lines each
/// spans) and no comments.
fn without_imports_and_comments(text: &str) -> String {
    let mut code = String::new();
    let mut in_use = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("use ") || trimmed.starts_with("pub use ") {
            in_use = true;
        }
        if !in_use && !trimmed.starts_with("//") {
            code.push_str(line);
            code.push('\n');
        }
        if in_use && line.contains(';') {
            in_use = false;
        }
    }
    code
}

/// Whether `text` has `word` as a whole identifier.
fn mentions(text: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// The identifier at the start of `text`.
fn ident(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The name of the first `struct` or `enum` declared in `text`, skipping attributes, doc
/// comments and visibility.
fn next_type_name(text: &str) -> Option<&str> {
    for line in text.lines() {
        let line = line.trim();
        let line = line
            .strip_prefix("pub(crate) ")
            .or_else(|| line.strip_prefix("pub(super) "))
            .or_else(|| line.strip_prefix("pub "))
            .unwrap_or(line);
        if let Some(rest) = line
            .strip_prefix("struct ")
            .or_else(|| line.strip_prefix("enum "))
        {
            return Some(ident(rest));
        }
        if !(line.is_empty() || line.starts_with("#[") || line.starts_with("//")) {
            return None;
        }
    }
    None
}

/// Whether a `#[derive(...)]` attribute starting at the beginning of `text` lists actix's
/// `Message` (not merely a name containing it, like `MessageCodec`).
fn derives_message(text: &str) -> bool {
    let Some(list) = text.strip_prefix("#[derive(") else {
        return false;
    };
    let list = &list[..list.find(")]").unwrap_or(list.len())];
    list.split(',')
        .map(str::trim)
        .any(|d| d == "Message" || d == "actix::Message")
}

fn scan(src: &Path) -> Code {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut code = Code::default();
    let mut message_macros = BTreeSet::new();
    let texts: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("a source file is readable");
            (path, without_tests(&text).to_string())
        })
        .collect();
    for (_, text) in &texts {
        for (at, _) in text.match_indices("macro_rules!") {
            let name = ident(text[at + "macro_rules!".len()..].trim_start());
            let body_end = text[at..].find("\n}").map_or(text.len(), |e| at + e);
            if text[at..body_end].contains("derive(Message)") {
                message_macros.insert(name.to_string());
            }
        }
    }
    for (path, text) in &texts {
        let mut declare = |name: &str| {
            code.messages.insert(name.to_string(), path.clone());
        };
        for (at, _) in text.match_indices("#[derive(") {
            // Inside a `macro_rules!` body the name is a `$` variable: its invocations
            // are counted below instead.
            let line_start = text[..at].rfind('\n').map_or(0, |n| n + 1);
            let starts_line = text[line_start..at].trim().is_empty();
            if starts_line && derives_message(&text[at..]) {
                match next_type_name(&text[at..]) {
                    Some("") => {}
                    Some(name) => declare(name),
                    None => panic!("a derive of Message is followed by a struct or enum"),
                }
            }
        }
        for marker in ["impl Message for ", "impl actix::Message for "] {
            for (at, _) in text.match_indices(marker) {
                declare(ident(&text[at + marker.len()..]));
            }
        }
        for mac in &message_macros {
            let call = format!("{mac}!(");
            for (at, _) in text.match_indices(&call) {
                // Skip the doc comments and attributes that the macro passes on.
                let mut rest = &text[at + call.len()..];
                loop {
                    rest = rest.trim_start();
                    if rest.starts_with("///") || rest.starts_with("#[") {
                        rest = rest.find('\n').map_or("", |e| &rest[e..]);
                    } else {
                        break;
                    }
                }
                declare(ident(rest));
            }
        }
        for (at, _) in text.match_indices("impl Actor for ") {
            let actor = ident(&text[at + "impl Actor for ".len()..]);
            code.actors.entry(actor.to_string()).or_default();
            code.actor_code
                .insert(actor.to_string(), without_imports_and_comments(text));
        }
        for (at, _) in text.match_indices("impl Handler<") {
            let rest = &text[at + "impl Handler<".len()..];
            let message = ident(rest);
            let Some(for_at) = rest.find("> for ") else {
                continue;
            };
            let actor = ident(&rest[for_at + "> for ".len()..]);
            code.actors
                .entry(actor.to_string())
                .or_default()
                .insert(message.to_string());
        }
    }
    code
}

fn architecture() -> String {
    std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md is readable")
}

/// The problems of the roster against the code, one line each; empty when they agree.
fn disagreements(doc: &str, code: &Code) -> Vec<String> {
    let rows = roster(doc);
    let mut problems = Vec::new();
    let mut named = BTreeSet::new();
    let mut listed_actors = BTreeSet::new();
    for row in &rows {
        if row.prose_chars > MAX_ROW_PROSE {
            problems.push(format!(
                "{}'s row has {} characters besides its messages, more than {MAX_ROW_PROSE}",
                row.actor, row.prose_chars
            ));
        }
        if !listed_actors.insert(row.actor.clone()) {
            problems.push(format!("{} has two rows", row.actor));
        }
        for name in row.incoming.iter().chain(&row.outgoing) {
            named.insert(name.clone());
            if !code.messages.contains_key(name) {
                problems.push(format!(
                    "the roster's {} row names `{name}`, which is no message type in src/",
                    row.actor
                ));
            }
        }
        if let Some(actor_code) = code.actor_code.get(&row.actor) {
            for sent in &row.outgoing {
                if !mentions(actor_code, sent) {
                    problems.push(format!(
                        "{}'s \"messages out\" names `{sent}`, which its file's code never mentions",
                        row.actor
                    ));
                }
            }
        }
        match code.actors.get(&row.actor) {
            None => problems.push(format!(
                "the roster lists {}, which is no actor in src/",
                row.actor
            )),
            Some(handled) => {
                for missing in handled.difference(&row.incoming) {
                    problems.push(format!(
                        "{} handles `{missing}`, missing from its \"messages in\"",
                        row.actor
                    ));
                }
                for extra in row.incoming.difference(handled) {
                    problems.push(format!(
                        "{}'s \"messages in\" names `{extra}`, which it does not handle: {}",
                        row.actor, row.line
                    ));
                }
            }
        }
    }
    for (name, path) in &code.messages {
        if !named.contains(name) {
            problems.push(format!(
                "`{name}` ({}) is a message the roster does not name",
                path.strip_prefix(root()).unwrap_or(path).display()
            ));
        }
    }
    for actor in code.actors.keys() {
        if !listed_actors.contains(actor) {
            problems.push(format!("{actor} is an actor with no roster row"));
        }
    }
    problems
}

fn code() -> Code {
    let code = scan(&root().join("src"));
    // A scan that finds nothing would agree with an empty roster: make sure it works.
    assert!(
        code.messages.contains_key("StoreBlocks"),
        "the scan finds derived messages"
    );
    assert!(
        code.messages.contains_key("GetOverview"),
        "the scan finds macro-declared messages"
    );
    assert!(
        code.actors.contains_key("Coordinator"),
        "the scan finds actors"
    );
    code
}

#[test]
fn the_roster_names_exactly_the_messages_and_actors_in_the_code() {
    let problems = disagreements(&architecture(), &code());
    assert!(
        problems.is_empty(),
        "ARCHITECTURE.md's roster is out of date:\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_stale_message_name_in_the_roster_is_caught() {
    let doc = architecture().replacen(
        "`StoreBlocks`, `MarkDone`",
        "`StoreBlocks`, `ReadPiece`, `MarkDone`",
        1,
    );
    assert_ne!(
        doc,
        architecture(),
        "the PieceManager's row is where this test expects it"
    );
    let problems = disagreements(&doc, &code());
    assert!(
        problems
            .iter()
            .any(|p| p.contains("`ReadPiece`, which is no message type")),
        "{problems:?}"
    );
}

#[test]
fn a_message_left_out_of_the_roster_is_caught() {
    let doc = architecture().replacen("`StoreBlocks`, `MarkDone`", "`MarkDone`", 1);
    let problems = disagreements(&doc, &code());
    assert!(
        problems
            .iter()
            .any(|p| p.contains("PieceManager handles `StoreBlocks`, missing")),
        "{problems:?}"
    );
}

#[test]
fn a_message_an_actor_cannot_send_is_caught() {
    let doc = architecture().replacen(
        "| `TrackerStart`, `TrackerCompleted`, `TrackerStop` | `PeersFound`,",
        "| `TrackerStart`, `TrackerCompleted`, `TrackerStop` | `StoreBlocks`, `PeersFound`,",
        1,
    );
    assert_ne!(
        doc,
        architecture(),
        "the Tracker's row is where this test expects it"
    );
    let problems = disagreements(&doc, &code());
    assert!(
        problems
            .iter()
            .any(|p| p.contains("Tracker's \"messages out\" names `StoreBlocks`")),
        "{problems:?}"
    );
}

#[test]
fn a_blank_line_splitting_the_roster_is_caught() {
    let doc = architecture().replacen("\n| **Session**", "\n\n| **Session**", 1);
    let problems = disagreements(&doc, &code());
    assert!(
        problems
            .iter()
            .any(|p| p == "Session is an actor with no roster row"),
        "{problems:?}"
    );
}

/// The variants of every `enum` declared in `src/` (outside tests): the capitalised
/// identifiers that start a line of its body at one level of indentation more than the
/// `enum` line.
fn enum_variants(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut enums: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("a source file is readable");
        let text = without_tests(&text);
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            let Some(rest) = trimmed
                .strip_prefix("pub enum ")
                .or_else(|| trimmed.strip_prefix("pub(crate) enum "))
                .or_else(|| trimmed.strip_prefix("enum "))
            else {
                continue;
            };
            let variants = enums.entry(ident(rest).to_string()).or_default();
            let close = format!("{}}}", " ".repeat(indent));
            for body in lines[n + 1..].iter().take_while(|l| !l.starts_with(&close)) {
                let inner = body.trim_start();
                if body.len() - inner.len() == indent + 4
                    && inner.starts_with(|c: char| c.is_ascii_uppercase())
                {
                    variants.insert(ident(inner).to_string());
                }
            }
        }
    }
    enums
}

#[test]
fn the_map_and_the_docs_name_only_enum_variants_that_exist() {
    let enums = enum_variants(&root().join("src"));
    assert!(
        enums.get("ToPeer").is_some_and(|v| v.contains("Haves")),
        "the scan finds enum variants"
    );
    let mut pages = vec![root().join("ARCHITECTURE.md"), root().join("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).expect("docs/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let mut problems = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).expect("a page is readable");
        for span in text.split('`').skip(1).step_by(2) {
            let Some((ty, rest)) = span.split_once("::") else {
                continue;
            };
            // A capitalised name after `::` is a variant; a lower-case one is a function.
            let variant = ident(rest);
            if let Some(variants) = enums.get(ty) {
                let is_variant = variant.starts_with(|c: char| c.is_ascii_uppercase());
                if is_variant && !variants.contains(variant) {
                    problems.push(format!(
                        "{} names `{ty}::{variant}`, which is no variant of {ty}",
                        page.strip_prefix(root()).unwrap_or(page).display()
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_roster_row_grown_into_an_essay_is_caught() {
    let essay = "a long explanation ".repeat(20);
    let doc = architecture().replacen(
        "| **Hasher** (pool, per process) | nothing |",
        &format!("| **Hasher** (pool, per process) | {essay} |"),
        1,
    );
    assert_ne!(
        doc,
        architecture(),
        "the Hasher's row is where this test expects it"
    );
    let problems = disagreements(&doc, &code());
    assert!(
        problems.iter().any(|p| p.starts_with("Hasher's row has")),
        "{problems:?}"
    );
}

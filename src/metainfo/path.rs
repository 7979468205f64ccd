//! File paths from a torrent, jailed: a [`SafePath`] can only be made from components that
//! were checked one by one, so joining it under a download folder can never leave that
//! folder. Nothing here touches the filesystem.
//!
//! What is refused (a hostile or broken torrent): `..`, `.`, empty components, a path
//! separator or NUL inside a component, an empty path, a path of more than
//! [`MAX_PATH_BYTES`]. What is repaired (harmless but unportable): names reserved on
//! Windows get a `_` suffix, components longer than 255 bytes are shortened keeping
//! their extension, and duplicate paths are renamed with a `.N` suffix by [`dedupe`].
//!
//! A check holds only for the value it checked, so every repair is followed by
//! [`check_final`] on its result: what is stored is what was checked, whatever the
//! repairs did (shortening `"..." + 300 × "a"` by its extension would leave `..`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Most filesystems cap one name at 255 bytes.
pub const MAX_COMPONENT_BYTES: usize = 255;

/// The longest path a torrent may give a file, its components joined with `/`: under
/// Linux's 4096-byte `PATH_MAX` with room for the `.N` of a renamed duplicate. It also
/// bounds how deep a path can go (at most 2,000 folders), which keeps the renaming of
/// duplicates linear in the size of the torrent.
pub const MAX_PATH_BYTES: usize = 4000;

/// The most a duplicate's `.N` adds to its path (`.` and a 64-bit number).
const MAX_SUFFIX_BYTES: usize = 21;

/// Why a path from a torrent was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path has no components at all.
    #[error("empty path")]
    Empty,
    /// A component is the empty string.
    #[error("empty path component")]
    EmptyComponent,
    /// A component is `.` or `..`, which would point elsewhere than a plain name.
    #[error("path component {0:?} would leave its folder")]
    Traversal(String),
    /// A component holds `/`, `\` or NUL, so it is really several components or none.
    #[error("path component {0:?} holds a separator or NUL")]
    BadCharacter(String),
    /// The path is longer than [`MAX_PATH_BYTES`].
    #[error("path of {0} bytes is longer than {MAX_PATH_BYTES}")]
    TooLong(usize),
    /// A repair (shortening, renaming) made a component that is not a plain name. Never
    /// expected: the repairs are written not to, and this is the check that they did not.
    #[error("path component {0:?} is not a plain name once repaired")]
    Unrepairable(String),
}

/// A relative path of plain names, each checked. The only ways to make one are
/// [`SafePath::new`] and [`dedupe`], and both check the final value, so every value of
/// this type is safe to join under a folder.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SafePath {
    components: Vec<String>,
}

impl SafePath {
    /// Checks every component, repairing reserved and overlong names, then checks the
    /// repaired path.
    pub fn new<S: AsRef<str>>(components: &[S]) -> Result<Self, PathError> {
        if components.is_empty() {
            return Err(PathError::Empty);
        }
        let components = components
            .iter()
            .map(|c| repair_component(c.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let path = Self { components };
        check_final(&path)?;
        Ok(path)
    }

    /// The components, each a plain name.
    pub fn components(&self) -> &[String] {
        &self.components
    }

    /// The path under `root`. Every component is a plain name, so the result stays
    /// inside `root`.
    pub fn under(&self, root: &Path) -> PathBuf {
        let mut path = root.to_path_buf();
        path.extend(&self.components);
        path
    }

    /// The path joined with `/`, for display.
    pub fn display(&self) -> String {
        self.components.join("/")
    }

    /// The bytes of the path joined with `/`.
    fn joined_len(&self) -> usize {
        self.components.iter().map(String::len).sum::<usize>() + self.components.len() - 1
    }
}

/// Whether `c` is a plain name: one that a filesystem takes as a single entry of the
/// folder it is in, and nothing else.
pub fn is_plain_name(c: &str) -> bool {
    !c.is_empty()
        && c != "."
        && c != ".."
        && c.len() <= MAX_COMPONENT_BYTES
        && !c.contains(['/', '\\', '\0'])
}

/// The check of the value that is kept: every component a plain name, the whole within
/// [`MAX_PATH_BYTES`]. Runs after every repair.
fn check_final(path: &SafePath) -> Result<(), PathError> {
    if let Some(bad) = path.components.iter().find(|c| !is_plain_name(c)) {
        return Err(PathError::Unrepairable(bad.clone()));
    }
    let len = path.joined_len();
    if len > MAX_PATH_BYTES {
        return Err(PathError::TooLong(len));
    }
    Ok(())
}

/// Refuses a component that is not a name, then repairs a reserved or overlong one.
/// The caller checks the result ([`check_final`]).
fn repair_component(c: &str) -> Result<String, PathError> {
    if c.is_empty() {
        return Err(PathError::EmptyComponent);
    }
    if c == "." || c == ".." {
        return Err(PathError::Traversal(c.to_string()));
    }
    if c.contains(['/', '\\', '\0']) {
        return Err(PathError::BadCharacter(c.to_string()));
    }
    // A reserved name gets a `_`, so it is shortened one byte more to stay in the limit.
    let reserved = is_windows_reserved(c);
    let mut c = shorten(c, MAX_COMPONENT_BYTES - usize::from(reserved));
    if reserved {
        c.push('_');
    }
    Ok(c)
}

/// Shortens a name to `max` bytes. A short extension (up to 16 bytes) is kept and the
/// rest of the name cut; a name without one is cut at its end, whole, so the cut never
/// leaves only what came before a dot.
fn shorten(c: &str, max: usize) -> String {
    if c.len() <= max {
        return c.to_string();
    }
    let (stem, ext) = split_extension(c);
    if ext.len() <= 16 && !stem.is_empty() {
        let stem = truncate_at_char(stem, max - ext.len());
        if !stem.is_empty() && stem.bytes().any(|b| b != b'.') {
            return format!("{stem}{ext}");
        }
    }
    truncate_at_char(c, max).to_string()
}

/// Splits `name.ext` into (`name`, `.ext`); a leading dot does not start an extension.
fn split_extension(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    }
}

fn truncate_at_char(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// The stem and extension a duplicate of `name` is renamed from: `.{n}` goes between
/// them. The stem is cut once, to leave room for any suffix, so every long name that
/// shares its first bytes shares one base, and one count of the suffixes tried. An
/// extension too long to leave that room is taken as part of the stem.
fn suffix_base(name: &str) -> (&str, &str) {
    let (stem, ext) = split_extension(name);
    let (stem, ext) = if ext.len() + MAX_SUFFIX_BYTES < MAX_COMPONENT_BYTES {
        (stem, ext)
    } else {
        (name, "")
    };
    (
        truncate_at_char(stem, MAX_COMPONENT_BYTES - MAX_SUFFIX_BYTES - ext.len()),
        ext,
    )
}

/// `stem.{n}ext`, within [`MAX_COMPONENT_BYTES`] for a base from [`suffix_base`].
fn with_suffix((stem, ext): (&str, &str), n: usize) -> String {
    format!("{stem}.{n}{ext}")
}

/// Device names Windows will not create as files, with or without an extension, in any
/// case. A torrent made elsewhere may carry them; renaming keeps the download portable.
fn is_windows_reserved(c: &str) -> bool {
    let stem = c.split('.').next().unwrap_or(c).trim_end_matches(' ');
    let is = |name: &str| stem.eq_ignore_ascii_case(name);
    let numbered = |prefix: &str| {
        stem.len() == 4
            && stem
                .get(..3)
                .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
            && stem
                .as_bytes()
                .get(3)
                .is_some_and(|d| (b'1'..=b'9').contains(d))
    };
    is("CON") || is("PRN") || is("AUX") || is("NUL") || numbered("COM") || numbered("LPT")
}

/// The folders and files of a set of paths as a tree of names, each node numbered, so
/// that "is this path a folder" and "is this path taken" cost one hash look-up per
/// component rather than a copy of every prefix.
#[derive(Default)]
struct NameTree<'a> {
    /// (parent node, name) → node; node 0 is the root.
    nodes: HashMap<(u32, &'a str), u32>,
    /// Renamed names, owned here because the paths they replace are still borrowed.
    renamed: HashMap<(u32, String), u32>,
    /// Nodes some path runs through (folders).
    folder: Vec<bool>,
    /// Nodes a file was given.
    taken: Vec<bool>,
}

impl<'a> NameTree<'a> {
    fn new() -> Self {
        Self {
            folder: vec![true],
            taken: vec![false],
            ..Self::default()
        }
    }

    fn add_node(&mut self) -> u32 {
        self.folder.push(false);
        self.taken.push(false);
        (self.folder.len() - 1) as u32
    }

    /// The node of `name` under `parent`, made if need be.
    fn node(&mut self, parent: u32, name: &'a str) -> u32 {
        match self.nodes.get(&(parent, name)) {
            Some(&n) => n,
            None => {
                let n = self.add_node();
                self.nodes.insert((parent, name), n);
                n
            }
        }
    }

    /// The node of the folder `name` under `parent`, made if need be, marked a folder.
    fn folder(&mut self, parent: u32, name: &'a str) -> u32 {
        let node = self.node(parent, name);
        self.folder[node as usize] = true;
        node
    }

    /// Whether `name` under `parent` is free for a file: neither a folder nor taken.
    fn free(&self, parent: u32, name: &str) -> bool {
        let node = self
            .nodes
            .get(&(parent, name))
            .or_else(|| self.renamed.get(&(parent, name.to_string())));
        node.is_none_or(|&n| !self.folder[n as usize] && !self.taken[n as usize])
    }

    /// Gives `name` under `parent` to a file.
    fn take(&mut self, parent: u32, name: &'a str) {
        let node = self.node(parent, name);
        self.taken[node as usize] = true;
    }

    /// Gives a renamed `name` under `parent` to a file.
    fn take_renamed(&mut self, parent: u32, name: String) {
        let node = match self
            .nodes
            .get(&(parent, name.as_str()))
            .or_else(|| self.renamed.get(&(parent, name.clone())))
        {
            Some(&n) => n,
            None => {
                let n = self.add_node();
                self.renamed.insert((parent, name), n);
                n
            }
        };
        self.taken[node as usize] = true;
    }
}

/// Renames paths so that no two are equal and no file sits where another file needs a
/// folder (`a` and `a/b`). The first holder of a name keeps it; later ones get `.1`,
/// `.2`, ... before the extension. Returns how many paths were renamed, or the index
/// and error of a renamed path that fails its final check.
///
/// Linear in the total size of the paths: a tree of names answers each question with a
/// look-up per component, and the next suffix to try is remembered per name, so a
/// thousand copies of one name cost a thousand tries, not half a million.
pub fn dedupe(paths: &mut [SafePath]) -> Result<usize, (usize, PathError)> {
    dedupe_counted(paths).0
}

/// [`dedupe`], also returning how many candidate names it tried: the measure of its
/// work, which the tests hold to linear.
fn dedupe_counted(paths: &mut [SafePath]) -> (Result<usize, (usize, PathError)>, usize) {
    let mut tries = 0;
    let mut renames: Vec<(usize, String)> = Vec::new();
    {
        let mut tree = NameTree::new();
        // Every folder any file needs, so that a file named like a folder is renamed too.
        let mut parents = Vec::with_capacity(paths.len());
        for path in paths.iter() {
            let mut node = 0;
            for name in path.components.split_last().map_or(&[][..], |(_, f)| f) {
                node = tree.folder(node, name);
            }
            parents.push(node);
        }
        // The next suffix to try for a (folder, name) that was found taken.
        let mut next: HashMap<(u32, String), usize> = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            let parent = parents[i];
            let Some(name) = path.components.last() else {
                continue;
            };
            tries += 1;
            if tree.free(parent, name) {
                tree.take(parent, name);
                continue;
            }
            let base = suffix_base(name);
            let n = next
                .entry((parent, base.0.to_string() + base.1))
                .or_insert(1);
            let mut candidate = with_suffix(base, *n);
            tries += 1;
            while !tree.free(parent, &candidate) {
                tries += 1;
                *n += 1;
                candidate = with_suffix(base, *n);
            }
            *n += 1;
            tree.take_renamed(parent, candidate.clone());
            renames.push((i, candidate));
        }
    }
    let renamed = renames.len();
    for (i, name) in renames {
        let path = &mut paths[i];
        if let Some(last) = path.components.last_mut() {
            *last = name;
        }
        // What a rename made is checked like everything else (`with_suffix` keeps a
        // non-empty stem and adds `.N`, so this is never expected to fail), with room
        // past MAX_PATH_BYTES for the suffix itself.
        if let Some(bad) = path.components.iter().find(|c| !is_plain_name(c)) {
            return (Err((i, PathError::Unrepairable(bad.clone()))), tries);
        }
        let len = path.joined_len();
        if len > MAX_PATH_BYTES + MAX_SUFFIX_BYTES {
            return (Err((i, PathError::TooLong(len))), tries);
        }
    }
    (Ok(renamed), tries)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use std::path::Component;

    /// A component of 0-600 bytes, rich in what could make it something other than a
    /// name: dots, both slashes, NUL, reserved names and multi-byte letters.
    pub(crate) fn component() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just(".".to_string()),
            Just("..".to_string()),
            Just("/".to_string()),
            Just("\\".to_string()),
            Just("\0".to_string()),
            Just("é".to_string()),
            Just("日本".to_string()),
            Just("con".to_string()),
            "[a-c]{1,40}",
            "[.]{1,300}",
            "[a]{200,300}",
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|p| {
            let mut s = p.concat();
            let mut end = s.len().min(600);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            s
        })
    }

    #[test]
    fn hostile_components_are_refused() {
        assert_eq!(SafePath::new::<&str>(&[]), Err(PathError::Empty));
        assert_eq!(SafePath::new(&["a", ""]), Err(PathError::EmptyComponent));
        assert_eq!(
            SafePath::new(&["..", "etc"]),
            Err(PathError::Traversal("..".into()))
        );
        assert_eq!(
            SafePath::new(&["a", "."]),
            Err(PathError::Traversal(".".into()))
        );
        assert_eq!(
            SafePath::new(&["/etc/passwd"]),
            Err(PathError::BadCharacter("/etc/passwd".into()))
        );
        assert_eq!(
            SafePath::new(&["a\\..\\b"]),
            Err(PathError::BadCharacter("a\\..\\b".into()))
        );
        assert_eq!(
            SafePath::new(&["a\0b"]),
            Err(PathError::BadCharacter("a\0b".into()))
        );
    }

    #[test]
    fn reserved_and_overlong_names_are_repaired() {
        assert_eq!(SafePath::new(&["con.txt"]).unwrap().display(), "con.txt_");
        assert_eq!(SafePath::new(&["LPT1"]).unwrap().display(), "LPT1_");
        assert_eq!(SafePath::new(&["COM10"]).unwrap().display(), "COM10");
        assert_eq!(SafePath::new(&["console"]).unwrap().display(), "console");
        let long = format!("{}.mkv", "é".repeat(200));
        let p = SafePath::new(&[long.as_str()]).unwrap();
        let name = &p.components()[0];
        assert!(name.len() <= MAX_COMPONENT_BYTES);
        assert!(name.ends_with(".mkv"));
    }

    #[test]
    fn duplicates_and_file_folder_clashes_are_renamed() {
        let mut paths: Vec<SafePath> = [
            &["d", "a.txt"][..],
            &["d", "a.txt"],
            &["d", "a.txt"],
            &["x"],
            &["x", "y"],
        ]
        .iter()
        .map(|c| SafePath::new(c).unwrap())
        .collect();
        assert_eq!(dedupe(&mut paths), Ok(3));
        let shown: Vec<_> = paths.iter().map(SafePath::display).collect();
        assert_eq!(shown, ["d/a.txt", "d/a.1.txt", "d/a.2.txt", "x.1", "x/y"]);
    }

    /// The review's finding: shortening `"..." + 300 × "a"` by dropping its long
    /// extension kept the stem `..`, and the file was written outside the folder.
    #[test]
    fn shortening_never_makes_dots_of_a_name() {
        for name in [
            format!("...{}", "a".repeat(300)),
            format!("..{}", "a".repeat(300)),
            format!(".{}", "a".repeat(300)),
            format!("..{}.txt", ".".repeat(300)),
            format!("{}.{}", ".".repeat(2), "b".repeat(10)),
            ".".repeat(300),
        ] {
            if let Ok(p) = SafePath::new(&[name.as_str()]) {
                let c = &p.components()[0];
                assert!(is_plain_name(c), "{name:?} became {c:?}");
                assert!(c.len() <= MAX_COMPONENT_BYTES);
            }
        }
        let p = SafePath::new(&[format!("...{}", "a".repeat(300))]).unwrap();
        assert!(p.components()[0].starts_with("...aaa"));
        assert_eq!(p.components()[0].len(), MAX_COMPONENT_BYTES);
    }

    #[test]
    fn an_overlong_path_is_refused() {
        let deep = vec!["ab"; 1400];
        assert!(matches!(SafePath::new(&deep), Err(PathError::TooLong(_))));
        let fits = vec!["ab"; 1300];
        assert!(SafePath::new(&fits).is_ok());
    }

    /// The review's finding: renaming N copies of one name tried 1, 2, ... N suffixes for
    /// each, O(N²). Counted, not timed: the tries stay linear in the number of paths.
    #[test]
    fn renaming_duplicates_is_linear() {
        for copies in [1_000, 20_000] {
            let mut paths: Vec<SafePath> = (0..copies)
                .map(|i| {
                    let name = if i % 3 == 0 { "a.1.txt" } else { "a.txt" };
                    SafePath::new(&["d", name]).unwrap()
                })
                .collect();
            let (renamed, tries) = dedupe_counted(&mut paths);
            assert!(renamed.is_ok());
            assert!(tries <= 3 * copies, "{tries} tries for {copies} paths");
            let set: HashSet<_> = paths.iter().map(SafePath::display).collect();
            assert_eq!(set.len(), copies);
        }
    }

    /// The reviewer's case: long names that differ only past the cut share their
    /// renamed forms, so counting suffixes per original name went quadratic again.
    #[test]
    fn renaming_long_duplicates_is_linear() {
        let copies = 8_000;
        let mut paths: Vec<SafePath> = (0..copies)
            .map(|i| {
                let name = format!("{}{:03}", "a".repeat(252), (i / 2) % 1000);
                SafePath::new(&["d", name.as_str()]).unwrap()
            })
            .collect();
        let (renamed, tries) = dedupe_counted(&mut paths);
        assert!(renamed.is_ok());
        assert!(tries <= 3 * copies, "{tries} tries for {copies} paths");
        let set: HashSet<_> = paths.iter().map(SafePath::display).collect();
        assert_eq!(set.len(), copies);
        assert!(paths
            .iter()
            .all(|p| p.components()[1].len() <= MAX_COMPONENT_BYTES));
    }

    proptest! {
        /// Every component of 0-600 bytes over dots, separators, NUL and multi-byte
        /// letters, through the whole pipeline (checks, reserved-name repair, shortening,
        /// renaming of duplicates): what comes out is plain names only, and joined under
        /// a root stays under it.
        #[test]
        fn the_whole_pipeline_keeps_paths_under_the_root(
            paths in proptest::collection::vec(
                proptest::collection::vec(component(), 1..4),
                1..8,
            )
        ) {
            let root = Path::new("/srv/downloads");
            let mut kept: Vec<SafePath> =
                paths.iter().filter_map(|p| SafePath::new(p).ok()).collect();
            kept.extend(kept.clone());
            if dedupe(&mut kept).is_ok() {
                for p in &kept {
                    for c in p.components() {
                        prop_assert!(is_plain_name(c), "{:?}", c);
                    }
                    let joined = p.under(root);
                    prop_assert!(joined.starts_with(root));
                    for c in joined.strip_prefix(root).unwrap().components() {
                        prop_assert!(matches!(c, Component::Normal(_)), "{:?}", c);
                    }
                }
                let set: HashSet<_> = kept.iter().collect();
                prop_assert_eq!(set.len(), kept.len());
            }
        }

        /// Whatever a torrent says, an accepted path joined under a root stays under it.
        #[test]
        fn accepted_paths_never_leave_the_root(
            comps in proptest::collection::vec(
                prop_oneof![
                    Just("..".to_string()), Just(".".to_string()), Just("".to_string()),
                    Just("/".to_string()), Just("a/../..".to_string()), Just("C:\\x".to_string()),
                    "[./\\\\a-z\0]{0,6}", any::<String>(),
                ],
                0..6,
            )
        ) {
            let root = Path::new("/srv/downloads");
            if let Ok(p) = SafePath::new(&comps) {
                let joined = p.under(root);
                prop_assert!(joined.starts_with(root));
                prop_assert!(joined.components().count() > root.components().count());
                for c in joined.strip_prefix(root).unwrap().components() {
                    prop_assert!(matches!(c, Component::Normal(_)), "{:?}", c);
                }
            }
        }

        #[test]
        fn dedupe_leaves_every_path_unique(names in proptest::collection::vec("[ab]{1,2}(/[ab]{1,2}){0,2}", 1..12)) {
            let mut paths: Vec<SafePath> = names
                .iter()
                .map(|n| SafePath::new(&n.split('/').collect::<Vec<_>>()).unwrap())
                .collect();
            dedupe(&mut paths).unwrap();
            let set: HashSet<_> = paths.iter().map(|p| p.components().to_vec()).collect();
            prop_assert_eq!(set.len(), paths.len());
            for p in &paths {
                for n in 1..p.components().len() {
                    prop_assert!(!set.contains(&p.components()[..n]));
                }
            }
        }
    }
}

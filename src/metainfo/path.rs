//! File paths from a torrent, jailed: a [`SafePath`] can only be made from components that
//! were checked one by one, so joining it under a download folder can never leave that
//! folder. Nothing here touches the filesystem.
//!
//! What is refused (a hostile or broken torrent): `..`, `.`, empty components, a path
//! separator or NUL inside a component, an empty path. What is repaired (harmless but
//! unportable): names reserved on Windows get a `_` suffix, components longer than 255
//! bytes are shortened keeping their extension, and duplicate paths are renamed with a
//! `.N` suffix by [`dedupe`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Most filesystems cap one name at 255 bytes.
pub const MAX_COMPONENT_BYTES: usize = 255;

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
}

/// A relative path of plain names, each checked. The only way to make one is
/// [`SafePath::new`], so every value of this type is safe to join under a folder.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SafePath {
    components: Vec<String>,
}

impl SafePath {
    /// Checks every component, repairing reserved and overlong names.
    pub fn new<S: AsRef<str>>(components: &[S]) -> Result<Self, PathError> {
        if components.is_empty() {
            return Err(PathError::Empty);
        }
        let components = components
            .iter()
            .map(|c| check_component(c.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { components })
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

    /// A copy whose last component has `.{n}` inserted before its extension.
    fn with_suffix(&self, n: usize) -> Self {
        let mut components = self.components.clone();
        if let Some(last) = components.last_mut() {
            let (stem, ext) = split_extension(last);
            let suffix = format!(".{n}");
            let stem = truncate_at_char(stem, MAX_COMPONENT_BYTES - suffix.len() - ext.len());
            *last = format!("{stem}{suffix}{ext}");
        }
        Self { components }
    }
}

fn check_component(c: &str) -> Result<String, PathError> {
    if c.is_empty() {
        return Err(PathError::EmptyComponent);
    }
    if c == "." || c == ".." {
        return Err(PathError::Traversal(c.to_string()));
    }
    if c.contains(['/', '\\', '\0']) {
        return Err(PathError::BadCharacter(c.to_string()));
    }
    let c = shorten(c);
    Ok(if is_windows_reserved(&c) {
        format!("{c}_")
    } else {
        c
    })
}

/// Shortens a name to [`MAX_COMPONENT_BYTES`], keeping its extension if the extension is
/// short enough to be one.
fn shorten(c: &str) -> String {
    if c.len() <= MAX_COMPONENT_BYTES {
        return c.to_string();
    }
    let (stem, ext) = split_extension(c);
    let ext = if ext.len() <= 16 { ext } else { "" };
    let stem = truncate_at_char(stem, MAX_COMPONENT_BYTES - ext.len());
    format!("{stem}{ext}")
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

/// Device names Windows will not create as files, with or without an extension, in any
/// case. A torrent made elsewhere may carry them; renaming keeps the download portable.
fn is_windows_reserved(c: &str) -> bool {
    let stem = c.split('.').next().unwrap_or(c).trim_end_matches(' ');
    let upper = stem.to_ascii_uppercase();
    matches!(upper.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((upper.starts_with("COM") || upper.starts_with("LPT"))
            && upper.len() == 4
            && upper
                .as_bytes()
                .get(3)
                .is_some_and(|d| (b'1'..=b'9').contains(d)))
}

/// Renames paths so that no two are equal and no file sits where another file needs a
/// folder (`a` and `a/b`). The first holder of a name keeps it; later ones get `.1`,
/// `.2`, ... before the extension. Returns how many paths were renamed.
pub fn dedupe(paths: &mut [SafePath]) -> usize {
    // Every folder any file needs, so that a file named like a folder is renamed too.
    let folders: HashSet<Vec<String>> = paths
        .iter()
        .flat_map(|p| {
            (1..p.components.len()).map(move |n| p.components.get(..n).unwrap_or_default().to_vec())
        })
        .collect();
    let mut taken: HashSet<Vec<String>> = HashSet::with_capacity(paths.len());
    let mut renamed = 0;
    for path in paths.iter_mut() {
        if taken.contains(&path.components) || folders.contains(&path.components) {
            let mut n = 1;
            let mut candidate = path.with_suffix(n);
            while taken.contains(&candidate.components) || folders.contains(&candidate.components) {
                n += 1;
                candidate = path.with_suffix(n);
            }
            *path = candidate;
            renamed += 1;
        }
        taken.insert(path.components.clone());
    }
    renamed
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Component;

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
        assert_eq!(dedupe(&mut paths), 3);
        let shown: Vec<_> = paths.iter().map(SafePath::display).collect();
        assert_eq!(shown, ["d/a.txt", "d/a.1.txt", "d/a.2.txt", "x.1", "x/y"]);
    }

    proptest! {
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
            dedupe(&mut paths);
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

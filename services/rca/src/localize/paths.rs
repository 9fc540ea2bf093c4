//! Maps an untrusted path from a stack trace to a file of the repository at one commit.
//!
//! The only files a path can map to are the regular files (blobs of mode 100644 or 100755) that
//! `git ls-tree` lists for the commit; their contents are then read from the object database, never
//! from the working tree. So no path from a trace ever reaches the filesystem: `..` cannot climb
//! out, an absolute path names nothing outside, and a symbolic link is never followed (a link is a
//! blob of mode 120000, and the files under a linked directory are not in the tree at all).
//!
//! On top of that invariant, the rules reject what is plainly hostile or ambiguous: `..`
//! components, control characters, very long paths, links, submodules, and suffixes that match
//! several files.

use std::collections::HashMap;
use std::fmt;

/// The longest path accepted from a trace, in bytes.
const MAX_PATH_BYTES: usize = 4096;

/// What kind of entry a tree path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Symlink,
    Submodule,
}

/// One entry of `git ls-tree -r -l`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    pub kind: EntryKind,
    /// The object id of the blob (or the submodule's commit).
    pub object: String,
    /// The blob size in bytes; 0 for submodules.
    pub size: u64,
}

/// The entries of a commit's tree, indexed for exact and suffix lookups.
#[derive(Clone, Debug, Default)]
pub struct RepoTree {
    entries: HashMap<String, TreeEntry>,
    /// File name → every path with that name.
    by_name: HashMap<String, Vec<String>>,
}

/// Why a frame's path does not map to a file of the repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    NoPath,
    TooLong,
    ControlCharacters,
    /// A `..` component: the path tries to leave the directory it is relative to.
    ParentEscape,
    /// The path is (or passes through) a symbolic link of the repository.
    Symlink(String),
    Submodule(String),
    /// Several files of the repository end with the path.
    Ambiguous(String),
    NotInRepository,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::NoPath => f.write_str("the frame names no file"),
            Rejection::TooLong => f.write_str("the path is too long"),
            Rejection::ControlCharacters => f.write_str("the path holds control characters"),
            Rejection::ParentEscape => f.write_str("the path climbs out with `..`"),
            Rejection::Symlink(path) => write!(f, "{path} is a symbolic link, never followed"),
            Rejection::Submodule(path) => write!(f, "{path} is a submodule"),
            Rejection::Ambiguous(suffix) => write!(f, "several files end with {suffix}"),
            Rejection::NotInRepository => f.write_str("no file of the repository matches"),
        }
    }
}

impl RepoTree {
    /// Parses the NUL-separated output of `git ls-tree -r -l -z --full-tree`.
    pub fn from_ls_tree(output: &[u8]) -> Self {
        let mut tree = RepoTree::default();
        for record in output.split(|b| *b == 0) {
            let Ok(record) = std::str::from_utf8(record) else {
                continue;
            };
            let Some((meta, path)) = record.split_once('\t') else {
                continue;
            };
            let mut fields = meta.split_whitespace();
            let (Some(mode), Some(_kind), Some(object), Some(size)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let kind = match mode {
                "100644" | "100755" => EntryKind::File,
                "120000" => EntryKind::Symlink,
                "160000" => EntryKind::Submodule,
                _ => continue,
            };
            tree.insert(
                path,
                TreeEntry {
                    kind,
                    object: object.to_owned(),
                    size: size.parse().unwrap_or(0),
                },
            );
        }
        tree
    }

    fn insert(&mut self, path: &str, entry: TreeEntry) {
        let name = path.rsplit('/').next().unwrap_or(path);
        self.by_name
            .entry(name.to_owned())
            .or_default()
            .push(path.to_owned());
        self.entries.insert(path.to_owned(), entry);
    }

    /// The entry at `path` (repository-relative).
    pub fn get(&self, path: &str) -> Option<&TreeEntry> {
        self.entries.get(path)
    }

    /// Maps `raw` (a path as a trace printed it) to a regular file of the tree.
    ///
    /// `roots` are absolute directories the repository is known under (its path as given and
    /// canonical); a path under one of them must match exactly below it. Any other path is tried
    /// as progressively shorter suffixes (`/srv/app/src/x.rs`, `app/src/x.rs`, `src/x.rs`, …):
    /// first as a whole repository path, then as the tail of one (`com/example/X.java` matches
    /// `src/main/java/com/example/X.java`; for absolute paths only with two components or more).
    pub fn resolve(&self, raw: &str, roots: &[String]) -> Result<String, Rejection> {
        if raw.is_empty() {
            return Err(Rejection::NoPath);
        }
        if raw.len() > MAX_PATH_BYTES {
            return Err(Rejection::TooLong);
        }
        if raw.chars().any(char::is_control) {
            return Err(Rejection::ControlCharacters);
        }
        let path = raw.strip_prefix("file://").unwrap_or(raw);
        let absolute = path.starts_with('/');
        let anchored = roots.iter().find_map(|root| {
            let root = root.trim_end_matches('/');
            path.strip_prefix(root).filter(|rest| rest.starts_with('/'))
        });
        let components: Vec<&str> = anchored
            .unwrap_or(path)
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        if components.contains(&"..") {
            return Err(Rejection::ParentEscape);
        }
        if components.is_empty() {
            return Err(Rejection::NoPath);
        }
        if anchored.is_some() {
            return self.accept(&components.join("/"));
        }
        for start in 0..components.len() {
            let candidate = components[start..].join("/");
            if self.entries.contains_key(&candidate) || self.through_symlink(&candidate).is_some() {
                return self.accept(&candidate);
            }
            let parts = components.len() - start;
            let tail_match = if !absolute || parts >= 2 {
                self.unique_tail_match(&candidate)?
            } else {
                None
            };
            if let Some(found) = tail_match {
                return self.accept(&found);
            }
        }
        Err(Rejection::NotInRepository)
    }

    /// The repository paths ending with `/suffix`, when there is exactly one.
    fn unique_tail_match(&self, suffix: &str) -> Result<Option<String>, Rejection> {
        let name = suffix.rsplit('/').next().unwrap_or(suffix);
        let Some(paths) = self.by_name.get(name) else {
            return Ok(None);
        };
        let mut matches = paths
            .iter()
            .filter(|path| path.len() > suffix.len() && path.ends_with(suffix))
            .filter(|path| path.as_bytes()[path.len() - suffix.len() - 1] == b'/');
        match (matches.next(), matches.next()) {
            (Some(only), None) => Ok(Some(only.clone())),
            (Some(_), Some(_)) => Err(Rejection::Ambiguous(suffix.to_owned())),
            _ => Ok(None),
        }
    }

    /// The first proper prefix of `path` that is a symlink or submodule.
    fn through_symlink<'p>(&self, path: &'p str) -> Option<&'p str> {
        path.match_indices('/')
            .map(|(i, _)| &path[..i])
            .find(|prefix| {
                self.entries
                    .get(*prefix)
                    .is_some_and(|entry| entry.kind != EntryKind::File)
            })
    }

    fn accept(&self, path: &str) -> Result<String, Rejection> {
        if let Some(link) = self.through_symlink(path) {
            return Err(Rejection::Symlink(link.to_owned()));
        }
        match self.entries.get(path).map(|entry| entry.kind) {
            Some(EntryKind::File) => Ok(path.to_owned()),
            Some(EntryKind::Symlink) => Err(Rejection::Symlink(path.to_owned())),
            Some(EntryKind::Submodule) => Err(Rejection::Submodule(path.to_owned())),
            None => Err(Rejection::NotInRepository),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(entries: &[(&str, &str)]) -> RepoTree {
        let mut out = Vec::new();
        for (mode, path) in entries {
            out.extend_from_slice(format!("{mode} blob 0123abcd      12\t{path}\0").as_bytes());
        }
        RepoTree::from_ls_tree(&out)
    }

    fn demo() -> RepoTree {
        tree(&[
            ("100644", "src/payments.rs"),
            ("100644", "src/main/java/com/example/orders/Pricing.java"),
            ("100644", "a/util.py"),
            ("100644", "b/util.py"),
            ("120000", "src/leak.rs"),
            ("120000", "linked"),
            ("160000", "vendored"),
        ])
    }

    #[test]
    fn resolves_relative_absolute_and_package_paths() {
        let tree = demo();
        let roots = ["/repo".to_owned()];
        assert_eq!(
            tree.resolve("./src/payments.rs", &roots),
            Ok("src/payments.rs".into())
        );
        assert_eq!(
            tree.resolve("/repo/src/payments.rs", &roots),
            Ok("src/payments.rs".into())
        );
        assert_eq!(
            tree.resolve("/build/x/src/payments.rs", &roots),
            Ok("src/payments.rs".into())
        );
        assert_eq!(
            tree.resolve("com/example/orders/Pricing.java", &roots),
            Ok("src/main/java/com/example/orders/Pricing.java".into())
        );
    }

    #[test]
    fn rejects_escapes_outside_paths_links_and_ambiguity() {
        let tree = demo();
        let roots = ["/repo".to_owned()];
        assert_eq!(
            tree.resolve("../../etc/passwd", &roots),
            Err(Rejection::ParentEscape)
        );
        assert_eq!(
            tree.resolve("/repo/../etc/passwd", &roots),
            Err(Rejection::ParentEscape)
        );
        assert_eq!(
            tree.resolve("/etc/passwd", &roots),
            Err(Rejection::NotInRepository)
        );
        assert_eq!(
            tree.resolve("/repo/etc/passwd", &roots),
            Err(Rejection::NotInRepository)
        );
        assert_eq!(
            tree.resolve("src/leak.rs", &roots),
            Err(Rejection::Symlink("src/leak.rs".into()))
        );
        assert_eq!(
            tree.resolve("linked/passwd", &roots),
            Err(Rejection::Symlink("linked".into()))
        );
        assert_eq!(
            tree.resolve("vendored/lib.rs", &roots),
            Err(Rejection::Symlink("vendored".into()))
        );
        assert_eq!(
            tree.resolve("util.py", &roots),
            Err(Rejection::Ambiguous("util.py".into()))
        );
        assert_eq!(
            tree.resolve("src/a\0b.rs", &roots),
            Err(Rejection::ControlCharacters)
        );
        assert_eq!(
            tree.resolve(&"a/".repeat(3000), &roots),
            Err(Rejection::TooLong)
        );
    }
}

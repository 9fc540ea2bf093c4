//! The scenario file, `scenario/scenario.toml` in an example, and its validation.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::ScenarioError;

/// The parsed and validated contents of a scenario file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScenarioSpec {
    /// The file holding the bug, relative to the repository root.
    pub(crate) bug_file: PathBuf,
    /// The 1-based line of the bug in the bug commit's tree.
    pub(crate) bug_line: u32,
    /// Text the bug line must contain; [`crate::BUG_MARKER`] when not given.
    #[serde(default)]
    pub(crate) bug_marker: Option<String>,
    /// The commits, oldest first.
    pub(crate) commits: Vec<CommitSpec>,
}

/// One commit of the scenario.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommitSpec {
    /// The commit message.
    pub(crate) message: String,
    /// The author's (and committer's) name.
    pub(crate) author_name: String,
    /// The author's (and committer's) email.
    pub(crate) author_email: String,
    /// The author and committer date, RFC 3339 with an explicit offset.
    pub(crate) date: String,
    /// True for a commit of the example's own files.
    #[serde(default)]
    pub(crate) snapshot: bool,
    /// A patch file, relative to the scenario directory.
    pub(crate) patch: Option<PathBuf>,
    /// True for the commit that introduces the bug.
    #[serde(default)]
    pub(crate) bug: bool,
}

/// How a commit changes the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change<'a> {
    /// Copy the example's files.
    Snapshot,
    /// Apply this patch, relative to the scenario directory.
    Patch(&'a Path),
}

impl CommitSpec {
    /// How this commit changes the tree; only valid after [`ScenarioSpec::load`] checked it.
    pub(crate) fn change(&self) -> Change<'_> {
        match &self.patch {
            Some(patch) => Change::Patch(patch),
            None => Change::Snapshot,
        }
    }
}

impl ScenarioSpec {
    /// Reads and validates the scenario file at `path`.
    pub(crate) fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        let spec: ScenarioSpec = toml::from_str(&text).map_err(|source| ScenarioError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        spec.validate().map_err(|reason| ScenarioError::Invalid {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(spec)
    }

    /// The text the bug line must contain.
    pub(crate) fn bug_marker(&self) -> &str {
        self.bug_marker.as_deref().unwrap_or(crate::BUG_MARKER)
    }

    /// The index of the bug commit; only valid after validation.
    pub(crate) fn bug_index(&self) -> usize {
        self.commits.iter().position(|c| c.bug).unwrap_or(0)
    }

    fn validate(&self) -> Result<(), String> {
        if self.commits.is_empty() {
            return Err("no commits".to_owned());
        }
        for (i, commit) in self.commits.iter().enumerate() {
            let n = i + 1;
            if commit.message.trim().is_empty() {
                return Err(format!("commit {n} has an empty message"));
            }
            if commit.author_name.trim().is_empty() || commit.author_email.trim().is_empty() {
                return Err(format!("commit {n} needs author_name and author_email"));
            }
            if !is_rfc3339(&commit.date) {
                return Err(format!(
                    "commit {n} has date {:?}; expected YYYY-MM-DDTHH:MM:SS followed by Z or +HH:MM",
                    commit.date
                ));
            }
            match (commit.snapshot, &commit.patch) {
                (true, Some(_)) => {
                    return Err(format!("commit {n} has both snapshot and patch"));
                }
                (false, None) => return Err(format!("commit {n} has neither snapshot nor patch")),
                (true, None) if i != 0 => {
                    return Err(format!(
                        "commit {n} is a snapshot; only the first commit may be"
                    ));
                }
                (false, Some(_)) if i == 0 => {
                    return Err("the first commit must be a snapshot".to_owned());
                }
                (false, Some(patch)) if !is_plain_relative(patch) => {
                    return Err(format!(
                        "commit {n} patch {} must be a relative path inside the scenario directory",
                        patch.display()
                    ));
                }
                _ => {}
            }
        }
        match self.commits.iter().filter(|c| c.bug).count() {
            0 => return Err("no commit is marked bug = true".to_owned()),
            1 => {}
            _ => return Err("more than one commit is marked bug = true".to_owned()),
        }
        if self.commits.first().is_some_and(|c| c.bug) {
            return Err("the bug commit needs a parent, the good commit".to_owned());
        }
        if self
            .bug_marker
            .as_ref()
            .is_some_and(|m| m.trim().is_empty())
        {
            return Err("bug_marker must not be empty".to_owned());
        }
        if self.bug_line == 0 {
            return Err("bug_line is 1-based and must not be 0".to_owned());
        }
        if !is_plain_relative(&self.bug_file) {
            return Err(format!(
                "bug_file {} must be a relative path inside the repository",
                self.bug_file.display()
            ));
        }
        Ok(())
    }
}

/// True for a non-empty relative path made only of normal components (no `..`, no root).
fn is_plain_relative(path: &Path) -> bool {
    path.components().next().is_some()
        && path
            .components()
            .all(|component| matches!(component, Component::Normal(_)))
}

/// True for `YYYY-MM-DDTHH:MM:SS` followed by `Z` or `+HH:MM`/`-HH:MM`.
///
/// Git accepts many date formats, some of them relative to the current time; insisting on one
/// absolute format keeps commit ids reproducible.
fn is_rfc3339(date: &str) -> bool {
    fn shape(s: &str, pattern: &str) -> bool {
        s.len() == pattern.len()
            && s.bytes().zip(pattern.bytes()).all(|(c, p)| match p {
                b'9' => c.is_ascii_digit(),
                _ => c == p,
            })
    }
    let (Some(date_time), Some(offset)) = (date.get(..19), date.get(19..)) else {
        return false;
    };
    let offset_ok = offset == "Z"
        || shape(offset, "+99:99")
        || (offset.starts_with('-') && shape(&offset.replacen('-', "+", 1), "+99:99"));
    shape(date_time, "9999-99-99T99:99:99") && offset_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(snapshot: bool, patch: Option<&str>, bug: bool) -> CommitSpec {
        CommitSpec {
            message: "m".to_owned(),
            author_name: "A".to_owned(),
            author_email: "a@example.com".to_owned(),
            date: "2025-01-01T00:00:00Z".to_owned(),
            snapshot,
            patch: patch.map(PathBuf::from),
            bug,
        }
    }

    fn spec(commits: Vec<CommitSpec>) -> ScenarioSpec {
        ScenarioSpec {
            bug_file: PathBuf::from("src/lib.rs"),
            bug_line: 3,
            bug_marker: None,
            commits,
        }
    }

    #[test]
    fn accepts_a_well_formed_history() {
        let s = spec(vec![
            commit(true, None, false),
            commit(false, Some("02.patch"), true),
        ]);
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(s.bug_index(), 1);
        assert_eq!(s.commits[0].change(), Change::Snapshot);
        assert_eq!(s.commits[1].change(), Change::Patch(Path::new("02.patch")));
    }

    #[test]
    fn rejects_impossible_histories() {
        let cases = [
            vec![],
            vec![commit(false, Some("a.patch"), true)],
            vec![commit(true, None, true)],
            vec![commit(true, None, false), commit(true, None, true)],
            vec![commit(true, None, false), commit(false, None, true)],
            vec![
                commit(true, Some("a.patch"), false),
                commit(false, Some("b"), true),
            ],
            vec![
                commit(true, None, false),
                commit(false, Some("../x.patch"), true),
            ],
            vec![
                commit(true, None, false),
                commit(false, Some("/x.patch"), true),
            ],
            vec![commit(true, None, false), commit(false, Some("b"), false)],
            vec![
                commit(true, None, false),
                commit(false, Some("b"), true),
                commit(false, Some("c"), true),
            ],
        ];
        for commits in cases {
            let s = spec(commits.clone());
            assert!(s.validate().is_err(), "accepted {commits:?}");
        }
    }

    #[test]
    fn rejects_bad_bug_locations_and_dates() {
        let good = vec![commit(true, None, false), commit(false, Some("b"), true)];
        let mut s = spec(good.clone());
        s.bug_line = 0;
        assert!(s.validate().is_err());
        let mut s = spec(good.clone());
        s.bug_file = PathBuf::from("../outside.rs");
        assert!(s.validate().is_err());
        let mut s = spec(good.clone());
        s.commits[0].date = "yesterday".to_owned();
        assert!(s.validate().unwrap_err().contains("date"));
        let mut s = spec(good);
        s.bug_marker = Some(" ".to_owned());
        assert!(s.validate().unwrap_err().contains("bug_marker"));
    }

    #[test]
    fn bug_marker_defaults_to_unwrap() {
        let good = vec![commit(true, None, false), commit(false, Some("b"), true)];
        let mut s = spec(good);
        assert_eq!(s.bug_marker(), ".unwrap()");
        s.bug_marker = Some(".expect(".to_owned());
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(s.bug_marker(), ".expect(");
    }

    #[test]
    fn checks_date_shape() {
        assert!(is_rfc3339("2025-03-03T09:14:00+01:00"));
        assert!(is_rfc3339("2025-03-03T09:14:00-05:30"));
        assert!(is_rfc3339("2025-03-03T09:14:00Z"));
        assert!(!is_rfc3339("2025-03-03 09:14:00Z"));
        assert!(!is_rfc3339("2025-03-03T09:14Z"));
        assert!(!is_rfc3339("2025-03-03T09:14:00"));
        assert!(!is_rfc3339("2025-03-03T09:14:00+0100"));
        assert!(!is_rfc3339("now"));
        assert!(!is_rfc3339("2025-03-03T09:14:0éZ"));
        assert!(!is_rfc3339("2025-03-03T09:14:00é"));
        assert!(!is_rfc3339("2025-03-03T09:14:00+01:00 "));
    }
}

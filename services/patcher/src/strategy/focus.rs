//! The order in which the lines of a location are explored: for a range (a function, a hunk),
//! the lines the culprit commit wrote come first, then the most recently changed, then the rest
//! top to bottom; within each group, code before blank and comment lines. Blame comes from
//! `git blame` at the source commit.

use std::collections::HashMap;

use super::MAX_FOCUS_LINES;
use crate::git::{Repo, RepoPath};

/// The lines of `range`, most suspicious first, at most [`MAX_FOCUS_LINES`].
pub(super) async fn order(
    repo: &Repo,
    commit: &str,
    culprit: Option<&str>,
    path: &RepoPath,
    source: &str,
    (first, last): (u32, u32),
) -> Vec<u32> {
    if first == last {
        return vec![first];
    }
    let range = format!("{first},{last}");
    let blame = repo
        .git(&[
            "blame",
            "--porcelain",
            "-L",
            &range,
            commit,
            "--",
            path.as_str(),
        ])
        .await
        .map(|text| parse_porcelain(&text))
        .unwrap_or_default();
    let text: Vec<&str> = source.lines().collect();
    let mut lines: Vec<u32> = (first..=last).collect();
    lines.sort_by_key(|line| {
        let (sha, time) = blame
            .get(line)
            .map_or(("", 0), |(sha, time)| (sha.as_str(), *time));
        let trivial = text
            .get(*line as usize - 1)
            .is_none_or(|code| is_trivial(code));
        (
            culprit != Some(sha) || sha.is_empty(),
            trivial,
            std::cmp::Reverse(time),
            *line,
        )
    });
    lines.truncate(MAX_FOCUS_LINES);
    lines
}

/// Blank lines, comments and lone brackets: nothing a template or a mutation would change.
fn is_trivial(line: &str) -> bool {
    let code = line.trim();
    code.is_empty()
        || ["//", "#", "/*", "*", "\"\"\""]
            .iter()
            .any(|marker| code.starts_with(marker))
        || code.chars().all(|c| "{}()[];,".contains(c))
}

/// Final line number → (commit, committer time) from `git blame --porcelain`.
fn parse_porcelain(text: &str) -> HashMap<u32, (String, i64)> {
    let mut times: HashMap<String, i64> = HashMap::new();
    let mut lines: HashMap<u32, String> = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with('\t') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let first = parts.next().unwrap_or_default();
        if first.len() == 40 && first.bytes().all(|b| b.is_ascii_hexdigit()) {
            let _original = parts.next();
            if let Some(final_line) = parts.next().and_then(|n| n.parse::<u32>().ok()) {
                lines.insert(final_line, first.to_owned());
                current = Some(first.to_owned());
            }
        } else if first == "committer-time"
            && let (Some(sha), Some(time)) = (&current, parts.next().and_then(|t| t.parse().ok()))
        {
            times.insert(sha.clone(), time);
        }
    }
    lines
        .into_iter()
        .map(|(line, sha)| {
            let time = times.get(&sha).copied().unwrap_or_default();
            (line, (sha, time))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{is_trivial, parse_porcelain};

    #[test]
    fn comments_blanks_and_brackets_are_trivial() {
        for line in [
            "",
            "   ",
            "    // why",
            "# note",
            "    }",
            "});",
            " * doc",
            "\"\"\"Doc.\"\"\"",
        ] {
            assert!(is_trivial(line), "{line:?}");
        }
        for line in ["let x = y.unwrap();", "    if a < b:", "return 1"] {
            assert!(!is_trivial(line), "{line:?}");
        }
    }

    #[test]
    fn reads_commit_and_time_per_line() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let text = format!(
            "{a} 1 1 2\nauthor x\ncommitter-time 100\nfilename f\n\tone\n{a} 2 2\n\ttwo\n{b} 5 3 1\ncommitter-time 200\n\tthree\n"
        );
        let blame = parse_porcelain(&text);
        assert_eq!(blame[&1], (a.clone(), 100));
        assert_eq!(blame[&2], (a, 100));
        assert_eq!(blame[&3], (b, 200));
    }
}

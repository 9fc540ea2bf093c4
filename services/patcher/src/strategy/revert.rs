//! Reverts of the culprit commit: only the hunk around the localised line (partial), or the
//! whole commit (full) when no later commit touched its files.

use super::{Candidate, Strategy, candidate_id, short};
use crate::diff::unified;
use crate::error::Error;
use crate::git::{Repo, RepoPath};

/// One `-U0` hunk: old lines replaced by new lines starting at `new_start`.
#[derive(Debug, PartialEq)]
struct Hunk {
    new_start: usize,
    old: Vec<String>,
    new: Vec<String>,
}

pub(super) async fn partial(
    repo: &Repo,
    commit: &str,
    culprit: &str,
    path: &RepoPath,
    source: &str,
    line: u32,
) -> Result<Option<Candidate>, Error> {
    if !is_ancestor(repo, culprit, commit).await? {
        return Err(Error::InvalidInput(format!(
            "culprit {} is not in the history of {}",
            short(culprit),
            short(commit)
        )));
    }
    let Ok(parent) = repo.resolve(&format!("{culprit}^")).await else {
        return Ok(None);
    };
    let patch = repo
        .git(&[
            "diff",
            "-U0",
            "--no-color",
            "--no-ext-diff",
            &parent,
            culprit,
            "--",
            path.as_str(),
        ])
        .await?;
    let line = line as usize;
    let Some(hunk) = parse_hunks(&patch)
        .into_iter()
        .find(|h| (h.new_start..h.new_start + h.new.len()).contains(&line))
    else {
        return Ok(None);
    };
    let mut lines: Vec<String> = source.split_inclusive('\n').map(str::to_owned).collect();
    let start = hunk.new_start - 1;
    let matches_at = |at: usize| {
        at + hunk.new.len() <= lines.len()
            && lines[at..at + hunk.new.len()]
                .iter()
                .zip(&hunk.new)
                .all(|(have, want)| have.trim_end() == want.trim_end())
    };
    // The hunk may have moved if later commits changed lines above it.
    let Some(at) = std::iter::once(start)
        .chain(0..lines.len())
        .find(|at| matches_at(*at))
    else {
        return Ok(None);
    };
    let old: Vec<String> = hunk.old.iter().map(|text| format!("{text}\n")).collect();
    lines.splice(at..at + hunk.new.len(), old);
    let (diff, added, removed) = unified(path.as_str(), source, &lines.concat());
    Ok(Some(Candidate {
        id: candidate_id(Strategy::PartialRevert, &diff),
        strategy: Strategy::PartialRevert,
        rationale: format!(
            "restore the lines that commit {} changed around {}:{line}; safe but drops what that hunk added",
            short(culprit),
            path.as_str()
        ),
        confidence: 0.7,
        files: vec![path.as_str().to_owned()],
        lines_added: added,
        lines_removed: removed,
        template: String::new(),
        diff,
    }))
}

/// The whole culprit commit reversed, or a note saying why not.
pub(super) async fn full(
    repo: &Repo,
    commit: &str,
    culprit: &str,
) -> Result<Result<Candidate, String>, Error> {
    if !is_ancestor(repo, culprit, commit).await? {
        return Err(Error::InvalidInput(format!(
            "culprit {} is not in the history of {}",
            short(culprit),
            short(commit)
        )));
    }
    let Ok(parent) = repo.resolve(&format!("{culprit}^")).await else {
        return Ok(Err(format!(
            "full revert: {} is the first commit",
            short(culprit)
        )));
    };
    let files: Vec<String> = repo
        .git(&["diff", "--name-only", &parent, culprit])
        .await?
        .lines()
        .map(str::to_owned)
        .collect();
    let mut args = vec!["diff", "--quiet", culprit, commit, "--"];
    args.extend(files.iter().map(String::as_str));
    if repo.git(&args).await.is_err() {
        return Ok(Err(format!(
            "full revert: later commits changed the files of {}; a revert would not apply cleanly",
            short(culprit)
        )));
    }
    let diff = repo
        .git(&["diff", "--no-color", "--no-ext-diff", culprit, &parent])
        .await?;
    let (added, removed) = diff.lines().fold((0u32, 0u32), |(a, r), line| {
        if line.starts_with('+') && !line.starts_with("+++") {
            (a + 1, r)
        } else if line.starts_with('-') && !line.starts_with("---") {
            (a, r + 1)
        } else {
            (a, r)
        }
    });
    let subject = repo
        .git(&["log", "-1", "--format=%s", culprit])
        .await?
        .trim()
        .to_owned();
    Ok(Ok(Candidate {
        id: candidate_id(Strategy::FullRevert, &diff),
        strategy: Strategy::FullRevert,
        rationale: format!(
            "revert commit {} ({subject:?}) entirely; removes the fault and the feature with it",
            short(culprit)
        ),
        confidence: 0.5,
        files,
        lines_added: added,
        lines_removed: removed,
        template: String::new(),
        diff,
    }))
}

async fn is_ancestor(repo: &Repo, ancestor: &str, descendant: &str) -> Result<bool, Error> {
    match repo
        .git(&["merge-base", "--is-ancestor", ancestor, descendant])
        .await
    {
        Ok(_) => Ok(true),
        Err(Error::Git { message, .. }) if message.is_empty() => Ok(false),
        Err(error) => Err(error),
    }
}

fn parse_hunks(patch: &str) -> Vec<Hunk> {
    let mut hunks = Vec::new();
    let mut current: Option<Hunk> = None;
    for line in patch.lines() {
        if let Some(header) = line.strip_prefix("@@ ") {
            hunks.extend(current.take());
            let new_start = header
                .split_whitespace()
                .find_map(|part| part.strip_prefix('+'))
                .and_then(|range| range.split(',').next())
                .and_then(|start| start.parse::<usize>().ok());
            current = new_start.map(|new_start| Hunk {
                new_start: new_start.max(1),
                old: Vec::new(),
                new: Vec::new(),
            });
        } else if let Some(hunk) = current.as_mut() {
            if let Some(text) = line.strip_prefix('-') {
                hunk.old.push(text.to_owned());
            } else if let Some(text) = line.strip_prefix('+') {
                hunk.new.push(text.to_owned());
            }
        }
    }
    hunks.extend(current);
    hunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_zero_context_hunks() {
        let patch = "diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -3,2 +3,1 @@ fn x\n-a\n-b\n+c\n@@ -9 +8,0 @@\n-d\n";
        let hunks = parse_hunks(patch);
        assert_eq!(
            hunks[0],
            Hunk {
                new_start: 3,
                old: vec!["a".into(), "b".into()],
                new: vec!["c".into()]
            }
        );
        assert_eq!(hunks[1].new, Vec::<String>::new());
    }
}

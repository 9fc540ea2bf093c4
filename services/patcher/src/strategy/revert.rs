//! Reverts of the culprit commit: only the hunk around the localised line (partial), or the
//! whole commit (full) when no later commit touched its files.

use super::{Candidate, Strategy, Target, candidate_id, short};
use crate::diff::unified;
use crate::error::Error;
use crate::git::Repo;

/// One `-U0` hunk: old lines replaced by new lines starting at `new_start`.
#[derive(Debug, PartialEq)]
struct Hunk {
    new_start: usize,
    old: Vec<String>,
    new: Vec<String>,
}

/// The culprit's hunks that touch the location, each reverted on its own (the one holding the
/// localised line first), at most three.
pub(super) async fn partial(target: &Target<'_>, culprit: &str) -> Result<Vec<Candidate>, Error> {
    let repo = &target.repo;
    let path = &target.path;
    let Ok(parent) = repo.resolve(&format!("{culprit}^")).await else {
        return Ok(Vec::new());
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
    let (first, last) = (target.range.0 as usize, target.range.1 as usize);
    let line = first;
    let mut hunks: Vec<Hunk> = parse_hunks(&patch)
        .into_iter()
        .filter(|h| {
            // A pure deletion sits between new_start and the line after it.
            let end = h.new_start + h.new.len().max(1);
            h.new_start <= last && end > first.saturating_sub(usize::from(h.new.is_empty()))
        })
        .collect();
    hunks.sort_by_key(|h| {
        let holds_line = (h.new_start..h.new_start + h.new.len().max(1)).contains(&line);
        (!holds_line, h.new_start)
    });
    let mut out = Vec::new();
    for (index, hunk) in hunks.iter().take(3).enumerate() {
        if let Some(candidate) = revert_hunk(target, culprit, hunk, index) {
            out.push(candidate);
        }
    }
    Ok(out)
}

fn revert_hunk(target: &Target<'_>, culprit: &str, hunk: &Hunk, index: usize) -> Option<Candidate> {
    let source = &target.source;
    let path = &target.path;
    let mut lines: Vec<String> = source.split_inclusive('\n').map(str::to_owned).collect();
    let start = if hunk.new.is_empty() {
        hunk.new_start
    } else {
        hunk.new_start - 1
    };
    let matches_at = |at: usize| {
        at + hunk.new.len() <= lines.len()
            && lines[at..at + hunk.new.len()]
                .iter()
                .zip(&hunk.new)
                .all(|(have, want)| have.trim_end() == want.trim_end())
    };
    // The hunk may have moved if later commits changed lines above it.
    let at = if hunk.new.is_empty() {
        (start <= lines.len()).then_some(start)?
    } else {
        std::iter::once(start)
            .chain(0..lines.len())
            .find(|at| matches_at(*at))?
    };
    let old: Vec<String> = hunk.old.iter().map(|text| format!("{text}\n")).collect();
    lines.splice(at..at + hunk.new.len(), old);
    let (diff, added, removed) = unified(path.as_str(), source, &lines.concat());
    let shown = at + 1;
    Some(Candidate {
        id: candidate_id(Strategy::PartialRevert, &diff),
        strategy: Strategy::PartialRevert,
        rationale: format!(
            "restore the lines that commit {} changed at {}:{shown}; safe but drops what that hunk added",
            short(culprit),
            path.as_str()
        ),
        confidence: if index == 0 { 0.7 } else { 0.65 },
        files: vec![path.as_str().to_owned()],
        lines_added: added,
        lines_removed: removed,
        template: String::new(),
        diff,
    })
}

/// The whole culprit commit reversed, or a note saying why not.
pub(super) async fn full(
    repo: &Repo,
    commit: &str,
    culprit: &str,
) -> Result<Result<Candidate, String>, Error> {
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
    let diff_args = ["diff", "--no-color", "--no-ext-diff", culprit, &parent];
    let log_args = ["log", "-1", "--format=%s", culprit];
    let (diff, subject) = tokio::join!(repo.git(&diff_args), repo.git(&log_args));
    let (diff, subject) = (diff?, subject?.trim().to_owned());
    let (added, removed) = diff.lines().fold((0u32, 0u32), |(a, r), line| {
        if line.starts_with('+') && !line.starts_with("+++") {
            (a + 1, r)
        } else if line.starts_with('-') && !line.starts_with("---") {
            (a, r + 1)
        } else {
            (a, r)
        }
    });
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

pub(super) async fn is_ancestor(
    repo: &Repo,
    ancestor: &str,
    descendant: &str,
) -> Result<bool, Error> {
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
                new_start,
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

//! Candidate fixes and the strategies that produce them, most trusted first: fix templates for
//! the fault class at the localised line, a partial revert of the culprit commit's hunk, and a
//! full revert of the culprit commit.

mod revert;
mod template;

use crate::error::Error;
use crate::git::{Repo, RepoPath};

/// How a candidate was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    Template,
    PartialRevert,
    FullRevert,
}

/// One proposed fix.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub id: String,
    pub strategy: Strategy,
    /// git-style unified diff relative to the repository root.
    pub diff: String,
    pub rationale: String,
    /// 0..1
    pub confidence: f64,
    pub files: Vec<String>,
    pub lines_added: u32,
    pub lines_removed: u32,
    /// e.g. `rust.option_unwrap.unwrap_or_default_in_scope`.
    pub template: String,
}

/// What the patcher is asked to fix.
#[derive(Clone, Debug)]
pub struct FixRequest {
    pub repository: std::path::PathBuf,
    /// The deployed (failing) commit.
    pub commit: String,
    /// The localised file, relative to the repository root.
    pub file: String,
    pub line: u32,
    /// The commit that introduced the line, when known.
    pub culprit: Option<String>,
    /// The panic or exception message.
    pub failure_message: String,
    pub max_candidates: usize,
    pub exclude: Vec<Strategy>,
}

/// The candidates, and what each strategy that produced nothing said.
#[derive(Clone, Debug, Default)]
pub struct Candidates {
    pub candidates: Vec<Candidate>,
    pub notes: Vec<String>,
}

/// Runs every strategy not excluded; deduplicates by diff and orders by confidence.
pub async fn generate(
    request: &FixRequest,
    git_timeout: std::time::Duration,
) -> Result<Candidates, Error> {
    let repo = Repo::open(&request.repository, git_timeout)?;
    let commit = repo.resolve(&request.commit).await?;
    let path = RepoPath::parse(&request.file)?;
    if request.line == 0 {
        return Err(Error::InvalidInput("line must be 1 or greater".into()));
    }
    let source = repo.show(&commit, &path).await?;
    let mut out = Candidates::default();
    let wanted = |strategy| !request.exclude.contains(&strategy);

    if wanted(Strategy::Template) {
        let found =
            template::rust_candidates(&path, &source, request.line, &request.failure_message);
        if found.is_empty() {
            out.notes.push(format!(
                "template: no fix template matches {}:{}",
                path.as_str(),
                request.line
            ));
        }
        out.candidates.extend(found);
    }
    match &request.culprit {
        Some(culprit) => {
            let culprit = repo.resolve(culprit).await?;
            if wanted(Strategy::PartialRevert) {
                match revert::partial(&repo, &commit, &culprit, &path, &source, request.line)
                    .await?
                {
                    Some(candidate) => out.candidates.push(candidate),
                    None => out.notes.push(format!(
                        "partial revert: no hunk of {} touches {}:{}",
                        short(&culprit),
                        path.as_str(),
                        request.line
                    )),
                }
            }
            if wanted(Strategy::FullRevert) {
                match revert::full(&repo, &commit, &culprit).await? {
                    Ok(candidate) => out.candidates.push(candidate),
                    Err(note) => out.notes.push(note),
                }
            }
        }
        None => out.notes.push("revert: no culprit commit was given".into()),
    }

    let mut seen: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut notes = Vec::new();
    out.candidates
        .retain(|candidate| match seen.entry(normalise(&candidate.diff)) {
            std::collections::hash_map::Entry::Occupied(kept) => {
                notes.push(format!(
                    "{:?} {} is identical to {}; kept one",
                    candidate.strategy,
                    candidate.id,
                    kept.get()
                ));
                false
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(candidate.id.clone());
                true
            }
        });
    out.notes.extend(notes);
    out.candidates
        .sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    out.candidates.truncate(request.max_candidates.max(1));
    Ok(out)
}

/// Diffs that differ only in headers or trailing space are the same fix.
fn normalise(diff: &str) -> String {
    diff.lines()
        .filter(|line| line.starts_with('+') || line.starts_with('-'))
        .filter(|line| !line.starts_with("+++") && !line.starts_with("---"))
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) fn short(sha: &str) -> &str {
    sha.get(..10).unwrap_or(sha)
}

/// A stable id from the diff, so the same fix has the same id across runs.
pub(crate) fn candidate_id(strategy: Strategy, diff: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(diff.as_bytes());
    let prefix = match strategy {
        Strategy::Template => "tpl",
        Strategy::PartialRevert => "prv",
        Strategy::FullRevert => "rev",
    };
    format!("{prefix}-{}", hex::encode(&digest[..6]))
}

//! Candidate fixes and the strategies that produce them: fix templates for the fault class at the
//! suspicious lines, mutations of those lines when no template matches, a partial revert of the
//! culprit commit's hunks, a full revert of the culprit commit, and an LLM when one is configured.
//!
//! Every candidate is a unified diff against the request's source commit, made with a diff
//! library or by git itself, so `git apply` takes it as it is. This module never writes to the
//! repository.

mod focus;
pub(crate) mod llm;
mod mutation;
mod rank;
mod revert;
mod template;

use std::path::PathBuf;
use std::time::Duration;

use crate::diff::unified;
use crate::error::Error;
use crate::git::{Repo, RepoPath};

pub use llm::LlmProvider;

/// The longest failure message accepted.
pub const MAX_FAILURE_MESSAGE_BYTES: usize = 64 * 1024;
/// The longest trace accepted.
pub const MAX_TRACE_BYTES: usize = 1024 * 1024;
/// The most past fixes a request may carry.
pub const MAX_PAST_FIXES: usize = 200;
/// Lines of a range location explored, most suspicious first.
pub const MAX_FOCUS_LINES: usize = 200;
/// Candidates one strategy may contribute before ranking.
const MAX_PER_STRATEGY: usize = 24;

/// How a candidate was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    Template,
    PartialRevert,
    FullRevert,
    Mutation,
    Llm,
}

impl Strategy {
    /// The name used in notes, rationales and past fixes (`PastFix.strategy`).
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Template => "template",
            Strategy::PartialRevert => "partial_revert",
            Strategy::FullRevert => "full_revert",
            Strategy::Mutation => "mutation",
            Strategy::Llm => "llm",
        }
    }

    /// Reads a strategy name as recorded in a past fix: `template`, `partial_revert`,
    /// `PATCH_STRATEGY_PARTIAL_REVERT`, `partial-revert` and `Partial revert` all name one.
    pub fn parse(raw: &str) -> Option<Self> {
        let name = raw.trim().to_ascii_lowercase().replace(['-', ' '], "_");
        let name = name.strip_prefix("patch_strategy_").unwrap_or(&name);
        [
            Strategy::Template,
            Strategy::PartialRevert,
            Strategy::FullRevert,
            Strategy::Mutation,
            Strategy::Llm,
        ]
        .into_iter()
        .find(|s| s.name() == name || (name == "revert" && *s == Strategy::FullRevert))
    }

    fn id_prefix(self) -> &'static str {
        match self {
            Strategy::Template => "tpl",
            Strategy::PartialRevert => "prv",
            Strategy::FullRevert => "rev",
            Strategy::Mutation => "mut",
            Strategy::Llm => "llm",
        }
    }
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
    /// e.g. `rust.option_unwrap.unwrap_or`; empty for strategies without templates.
    pub template: String,
}

/// The kind of root cause rca settled on; past fixes of the same kind count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CauseKind {
    #[default]
    Unspecified,
    CodeDefect,
    BadDeploy,
    Dependency,
    Resource,
    Configuration,
}

/// A fix that resolved an earlier incident.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PastFix {
    pub incident_id: String,
    pub service: String,
    pub cause_kind: CauseKind,
    /// None when the recorded strategy name is not one the patcher knows.
    pub strategy: Option<Strategy>,
    pub template: String,
}

/// What the patcher is asked to fix.
#[derive(Clone, Debug, Default)]
pub struct FixRequest {
    pub incident_id: String,
    pub service: String,
    pub repository: PathBuf,
    /// The deployed (failing) commit.
    pub commit: String,
    /// The localised file, relative to the repository root.
    pub file: String,
    /// The localised line, 1-based.
    pub line: u32,
    /// The last line of the location when it is a range (a function, a hunk).
    pub end_line: Option<u32>,
    /// The commit that introduced the line, when known.
    pub culprit: Option<String>,
    /// The panic or exception message.
    pub failure_message: String,
    /// The raw stack trace or log text.
    pub trace_text: String,
    pub cause_kind: CauseKind,
    pub max_candidates: usize,
    pub exclude: Vec<Strategy>,
    pub past_fixes: Vec<PastFix>,
}

/// The candidates, and what each strategy that produced nothing said.
#[derive(Clone, Debug, Default)]
pub struct Candidates {
    pub candidates: Vec<Candidate>,
    pub notes: Vec<String>,
}

/// Generates candidates; holds the settings every request shares.
#[derive(Clone, Debug)]
pub struct Patcher {
    git_timeout: Duration,
    llm: Option<LlmProvider>,
}

/// Everything the strategies look at, read once per request.
pub(crate) struct Target<'a> {
    pub(crate) request: &'a FixRequest,
    pub(crate) repo: Repo,
    pub(crate) commit: String,
    pub(crate) culprit: Option<String>,
    pub(crate) path: RepoPath,
    pub(crate) source: String,
    /// The location's first and last line, clamped to the file.
    pub(crate) range: (u32, u32),
    /// The lines of the range, most suspicious first.
    pub(crate) focus: Vec<u32>,
}

impl Patcher {
    /// A patcher without an LLM.
    pub fn new(git_timeout: Duration) -> Self {
        Self {
            git_timeout,
            llm: None,
        }
    }

    /// Adds the LLM strategy.
    pub fn with_llm(mut self, llm: LlmProvider) -> Self {
        self.llm = Some(llm);
        self
    }

    /// Runs every strategy not excluded; deduplicates by diff, applies the past fixes' priors
    /// and orders by confidence.
    pub async fn generate(&self, request: &FixRequest) -> Result<Candidates, Error> {
        let target = self.prepare(request).await?;
        let mut out = Candidates::default();
        let wanted = |strategy| !request.exclude.contains(&strategy);

        // The LLM runs while the local strategies work.
        let llm = async {
            match (&self.llm, wanted(Strategy::Llm)) {
                (Some(llm), true) => Some(llm.candidate(&target).await),
                _ => None,
            }
        };
        let local = self.local_strategies(&target, &wanted);
        let (llm, local) = tokio::join!(llm, local);
        let local = local?;
        out.candidates.extend(local.candidates);
        out.notes.extend(local.notes);
        match llm {
            Some(Ok(candidate)) => out.candidates.push(candidate),
            Some(Err(note)) => out.notes.push(note),
            None if self.llm.is_none() => {}
            None => out.notes.push("llm: excluded by the request".into()),
        }
        rank::finish(&mut out, request);
        Ok(out)
    }

    async fn prepare<'a>(&self, request: &'a FixRequest) -> Result<Target<'a>, Error> {
        validate(request)?;
        let repo = Repo::open(&request.repository, self.git_timeout)?;
        let path = RepoPath::parse(&request.file)?;
        // Independent git commands run concurrently: each is a process of its own.
        let (commit, culprit) = tokio::join!(repo.resolve(&request.commit), async {
            match &request.culprit {
                Some(culprit) => repo.resolve(culprit).await.map(Some),
                None => Ok(None),
            }
        });
        let (commit, culprit) = (commit?, culprit?);
        let (source, ancestry) = tokio::join!(repo.show(&commit, &path), async {
            match &culprit {
                Some(culprit) => revert::is_ancestor(&repo, culprit, &commit).await,
                None => Ok(true),
            }
        });
        if let (false, Some(culprit)) = (ancestry?, &culprit) {
            return Err(Error::InvalidInput(format!(
                "culprit {} is not in the history of {}",
                short(culprit),
                short(&commit)
            )));
        }
        let source = source?;
        let count = source.split_inclusive('\n').count() as u32;
        if request.line > count {
            return Err(Error::InvalidInput(format!(
                "line {} is past the end of {} ({count} lines at {})",
                request.line,
                path.as_str(),
                short(&commit)
            )));
        }
        let end = request.end_line.unwrap_or(request.line).min(count);
        let range = (request.line, end);
        let focus = focus::order(&repo, &commit, culprit.as_deref(), &path, &source, range).await;
        Ok(Target {
            request,
            repo,
            commit,
            culprit,
            path,
            source,
            range,
            focus,
        })
    }

    async fn local_strategies(
        &self,
        target: &Target<'_>,
        wanted: &impl Fn(Strategy) -> bool,
    ) -> Result<Candidates, Error> {
        let mut out = Candidates::default();
        let request = target.request;
        let place = place(target);
        let failure = format!("{}\n{}", request.failure_message, request.trace_text);

        let mut templates = Vec::new();
        if wanted(Strategy::Template) {
            for (rank, line) in target.focus.iter().enumerate() {
                for edit in template::at_line(&target.path, &target.source, *line, &failure) {
                    templates.push(edit_candidate(target, Strategy::Template, edit, rank));
                }
            }
            templates.truncate(MAX_PER_STRATEGY);
            if templates.is_empty() {
                out.notes
                    .push(format!("template: no fix template matches {place}"));
            }
        }
        if wanted(Strategy::Mutation) {
            if templates.is_empty() {
                let mut mutations = Vec::new();
                for (rank, line) in target.focus.iter().enumerate() {
                    for edit in mutation::at_line(&target.path, &target.source, *line) {
                        mutations.push(edit_candidate(target, Strategy::Mutation, edit, rank));
                    }
                }
                mutations.truncate(MAX_PER_STRATEGY);
                if mutations.is_empty() {
                    out.notes
                        .push(format!("mutation: nothing to mutate at {place}"));
                }
                out.candidates.extend(mutations);
            } else {
                out.notes
                    .push("mutation: skipped, a fix template matched the fault".into());
            }
        }
        out.candidates.extend(templates);

        match &target.culprit {
            Some(culprit) => {
                let (partial, full) = tokio::join!(
                    async {
                        if wanted(Strategy::PartialRevert) {
                            revert::partial(target, culprit).await.map(Some)
                        } else {
                            Ok(None)
                        }
                    },
                    async {
                        if wanted(Strategy::FullRevert) {
                            revert::full(&target.repo, &target.commit, culprit)
                                .await
                                .map(Some)
                        } else {
                            Ok(None)
                        }
                    }
                );
                if let Some(found) = partial? {
                    if found.is_empty() {
                        out.notes.push(format!(
                            "partial revert: no hunk of {} touches {place}",
                            short(culprit)
                        ));
                    }
                    out.candidates.extend(found);
                }
                match full? {
                    Some(Ok(candidate)) => out.candidates.push(candidate),
                    Some(Err(note)) => out.notes.push(note),
                    None => {}
                }
            }
            None => out.notes.push("revert: no culprit commit was given".into()),
        }
        Ok(out)
    }
}

fn validate(request: &FixRequest) -> Result<(), Error> {
    let invalid = |message: String| Err(Error::InvalidInput(message));
    if request.line == 0 {
        return invalid("location.line must be 1 or greater".into());
    }
    if let Some(end) = request.end_line
        && end < request.line
    {
        return invalid(format!(
            "location.end_line {end} is before location.line {}",
            request.line
        ));
    }
    if request.failure_message.len() > MAX_FAILURE_MESSAGE_BYTES {
        return invalid(format!(
            "failure_message is {} bytes; at most {MAX_FAILURE_MESSAGE_BYTES} are accepted",
            request.failure_message.len()
        ));
    }
    if request.trace_text.len() > MAX_TRACE_BYTES {
        return invalid(format!(
            "trace_text is {} bytes; at most {MAX_TRACE_BYTES} are accepted",
            request.trace_text.len()
        ));
    }
    if request.past_fixes.len() > MAX_PAST_FIXES {
        return invalid(format!(
            "{} past fixes; at most {MAX_PAST_FIXES} are accepted",
            request.past_fixes.len()
        ));
    }
    Ok(())
}

/// `file:line` or `file:line-end`, for notes.
pub(crate) fn place(target: &Target<'_>) -> String {
    match target.range {
        (line, end) if line == end => format!("{}:{line}", target.path.as_str()),
        (line, end) => format!("{}:{line}-{end}", target.path.as_str()),
    }
}

/// One line of the source replaced by `replacement` (which may hold several lines), as a
/// template or mutation proposes it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Edit {
    /// 1-based.
    pub(crate) line: u32,
    /// The new text of that line, each line ending in a newline when the original did.
    pub(crate) replacement: String,
    pub(crate) template: String,
    pub(crate) confidence: f64,
    pub(crate) rationale: String,
}

/// Applies an edit to the source and turns it into a candidate; lines further down the focus
/// order lose a little confidence.
fn edit_candidate(target: &Target<'_>, strategy: Strategy, edit: Edit, rank: usize) -> Candidate {
    let mut lines: Vec<&str> = target.source.split_inclusive('\n').collect();
    let index = edit.line as usize - 1;
    lines[index] = &edit.replacement;
    let patched = lines.concat();
    let (diff, added, removed) = unified(target.path.as_str(), &target.source, &patched);
    let decay = 1.0 - (0.03 * rank as f64).min(0.3);
    let rationale = if rank == 0 {
        edit.rationale
    } else {
        format!(
            "{} (line {}, suspicion rank {} in {})",
            edit.rationale,
            edit.line,
            rank + 1,
            place(target)
        )
    };
    Candidate {
        id: candidate_id(strategy, &diff),
        strategy,
        diff,
        rationale,
        confidence: edit.confidence * decay,
        files: vec![target.path.as_str().to_owned()],
        lines_added: added,
        lines_removed: removed,
        template: edit.template,
    }
}

pub(crate) fn short(sha: &str) -> &str {
    sha.get(..10).unwrap_or(sha)
}

/// A stable id from the diff, so the same fix has the same id across runs.
pub(crate) fn candidate_id(strategy: Strategy, diff: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(diff.as_bytes());
    format!("{}-{}", strategy.id_prefix(), hex::encode(&digest[..6]))
}

#[cfg(test)]
mod tests {
    use super::Strategy;

    #[test]
    fn strategy_names_round_trip_in_every_spelling() {
        for (raw, want) in [
            ("template", Strategy::Template),
            ("PATCH_STRATEGY_PARTIAL_REVERT", Strategy::PartialRevert),
            ("partial-revert", Strategy::PartialRevert),
            ("Full revert", Strategy::FullRevert),
            ("revert", Strategy::FullRevert),
            ("mutation", Strategy::Mutation),
            (" LLM ", Strategy::Llm),
        ] {
            assert_eq!(Strategy::parse(raw), Some(want), "{raw}");
            assert_eq!(Strategy::parse(want.name()), Some(want));
        }
        assert_eq!(Strategy::parse("magic"), None);
    }
}

//! The LLM strategy: a model behind an OpenAI-compatible chat-completions API
//! (`POST {base_url}/chat/completions`) asked for one unified diff.
//!
//! The prompt holds the failure message, the trace, the code around the location with line
//! numbers, the culprit commit and the constraints; secrets are redacted from all of it and the
//! API key is read from the environment at call time, never logged. The answer's diff must apply
//! to the source commit: it is applied to a scratch index (never the work tree) and the
//! candidate is the diff git itself produces from that index, so the safety gate gets an exact,
//! `git apply`-able patch. Anything else — timeout, HTTP error, malformed JSON, no diff, a diff
//! that does not apply or is too large — becomes a note and the other strategies stand.

use std::ffi::OsStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Candidate, Strategy, Target, candidate_id, place, short};
use crate::config::LlmConfig;
use crate::error::Error;
use crate::git::RepoPath;

/// Characters of the trace and of the culprit's diff put in a prompt.
const MAX_TRACE_CHARS: usize = 6_000;
const MAX_CULPRIT_DIFF_CHARS: usize = 4_000;
/// Lines of context shown around the location.
const SNIPPET_CONTEXT: u32 = 15;
/// The longest range shown whole.
const MAX_SNIPPET_LINES: u32 = 160;

/// A configured chat-completions endpoint.
#[derive(Clone, Debug)]
pub struct LlmProvider {
    client: reqwest::Client,
    config: LlmConfig,
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: Vec<Message>,
    max_tokens: u32,
    temperature: f32,
}

#[derive(Serialize, Deserialize, Debug)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize, Debug)]
struct ChatResponse {
    choices: Vec<Choice>,
}

#[derive(Deserialize, Debug)]
struct Choice {
    message: Message,
}

impl LlmProvider {
    /// A provider for `config` (whose `enabled` flag the caller has checked).
    pub fn new(config: LlmConfig) -> Result<Self, Error> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| Error::InvalidInput(format!("llm: cannot build the HTTP client: {e}")))?;
        Ok(Self { client, config })
    }

    /// One candidate from the model, or the note saying why there is none.
    pub(super) async fn candidate(&self, target: &Target<'_>) -> Result<Candidate, String> {
        let prompt = prompt(target, self.config.max_changed_lines).await;
        let answer = self.complete(&prompt).await?;
        let diff = extract_diff(&answer)
            .ok_or_else(|| "llm: the answer holds no unified diff; dropped".to_owned())?;
        let changed = diff
            .lines()
            .filter(|l| {
                (l.starts_with('+') && !l.starts_with("+++"))
                    || (l.starts_with('-') && !l.starts_with("---"))
            })
            .count();
        if changed > self.config.max_changed_lines as usize {
            return Err(format!(
                "llm: the answer's diff changes {changed} lines, more than the {} allowed; dropped",
                self.config.max_changed_lines
            ));
        }
        for file in diff_files(&diff) {
            RepoPath::parse(&file)
                .map_err(|_| format!("llm: the answer's diff names the path {file:?}; dropped"))?;
        }
        let (diff, files) = canonical(target, &diff).await?;
        let (added, removed) = count(&diff);
        Ok(Candidate {
            id: candidate_id(Strategy::Llm, &diff),
            strategy: Strategy::Llm,
            rationale: format!(
                "proposed by the model {} for the failure at {}; the diff applies cleanly to {}, \
                 but nothing but the gate's tests vouches for it",
                self.config.model,
                place(target),
                short(&target.commit)
            ),
            confidence: 0.55,
            files,
            lines_added: added,
            lines_removed: removed,
            template: String::new(),
            diff,
        })
    }

    async fn complete(&self, prompt: &str) -> Result<String, String> {
        let url = format!(
            "{}/chat/completions",
            self.config.base_url.trim_end_matches('/')
        );
        let body = ChatRequest {
            model: &self.config.model,
            messages: vec![
                Message {
                    role: "system".into(),
                    content: Some(SYSTEM.into()),
                },
                Message {
                    role: "user".into(),
                    content: Some(prompt.to_owned()),
                },
            ],
            max_tokens: self.config.max_tokens,
            temperature: 0.0,
        };
        let mut request = self.client.post(&url).json(&body);
        if !self.config.api_key_env.is_empty() {
            let key = std::env::var(&self.config.api_key_env).map_err(|_| {
                format!(
                    "llm: environment variable {} is not set; skipped",
                    self.config.api_key_env
                )
            })?;
            request = request.bearer_auth(key);
        }
        let failed = |error: reqwest::Error| {
            if error.is_timeout() {
                format!("llm: timed out after {}", seconds(self.config.timeout))
            } else if error.is_connect() {
                format!("llm: cannot connect to {url}: {}", root_cause(&error))
            } else {
                format!("llm: request to {url} failed: {}", root_cause(&error))
            }
        };
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        let text = response.text().await.map_err(failed)?;
        if !status.is_success() {
            return Err(format!(
                "llm: the provider answered {status}: {}",
                excerpt(&text, 200)
            ));
        }
        let parsed: ChatResponse = serde_json::from_str(&text)
            .map_err(|e| format!("llm: malformed answer ({e}): {}", excerpt(&text, 120)))?;
        parsed
            .choices
            .into_iter()
            .next()
            .and_then(|choice| choice.message.content)
            .filter(|content| !content.trim().is_empty())
            .ok_or_else(|| "llm: the answer has no message content".to_owned())
    }
}

const SYSTEM: &str = "You fix production incidents. You receive a failure and the code that \
failed. Answer with exactly one unified diff in git format (paths relative to the repository \
root with a/ and b/ prefixes, correct @@ hunk headers, three lines of context) and nothing else.";

async fn prompt(target: &Target<'_>, max_lines: u32) -> String {
    let request = target.request;
    let (first, last) = target.range;
    let lines: Vec<&str> = target.source.lines().collect();
    let shown_last = last.min(first + MAX_SNIPPET_LINES);
    let from = first.saturating_sub(SNIPPET_CONTEXT).max(1);
    let to = (shown_last + SNIPPET_CONTEXT).min(lines.len() as u32);
    let mut snippet = String::new();
    for number in from..=to {
        let marker = if (first..=last).contains(&number) {
            ">"
        } else {
            " "
        };
        let text = lines.get(number as usize - 1).copied().unwrap_or_default();
        snippet.push_str(&format!("{marker}{number:>5} | {text}\n"));
    }
    let culprit = match &target.culprit {
        Some(sha) => culprit_text(target, sha).await,
        None => "unknown".to_owned(),
    };
    let trace = excerpt(&request.trace_text, MAX_TRACE_CHARS);
    let text = format!(
        "Service: {service}\n\
         Failure: {message}\n\n\
         Trace:\n{trace}\n\n\
         Location: {place} (lines marked >)\n\
         File {file} at commit {commit}:\n{snippet}\n\
         Culprit commit (git blame of the location): {culprit}\n\n\
         Constraints:\n\
         - answer with one unified diff only, no prose;\n\
         - touch at most {max_lines} lines (added plus removed);\n\
         - no new dependencies, no changes to build files, manifests or tests;\n\
         - keep the behaviour for requests that work today.\n",
        service = request.service,
        message = request.failure_message.trim(),
        place = place(target),
        file = target.path.as_str(),
        commit = target.commit,
    );
    redact(&text)
}

async fn culprit_text(target: &Target<'_>, sha: &str) -> String {
    let subject = target
        .repo
        .git(&["log", "-1", "--format=%h %an: %s", sha])
        .await
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| short(sha).to_owned());
    let diff = target
        .repo
        .git(&[
            "show",
            "--format=",
            "--no-color",
            "--no-ext-diff",
            sha,
            "--",
            target.path.as_str(),
        ])
        .await
        .unwrap_or_default();
    format!(
        "{subject}\nIts change to {}:\n{}",
        target.path.as_str(),
        excerpt(&diff, MAX_CULPRIT_DIFF_CHARS)
    )
}

/// The first unified diff in a model's answer: a fenced block holding one, or the text from the
/// first `diff --git` / `--- ` line.
fn extract_diff(answer: &str) -> Option<String> {
    let looks_like_diff = |text: &str| text.contains("\n+++ ") && text.contains("\n@@");
    let mut body: Option<String> = None;
    let mut rest = answer;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        let Some(newline) = after.find('\n') else {
            break;
        };
        let content = &after[newline + 1..];
        let Some(close) = content.find("```") else {
            break;
        };
        let block = &content[..close];
        if looks_like_diff(&format!("\n{block}")) {
            body = Some(block.to_owned());
            break;
        }
        rest = &content[close + 3..];
    }
    let body = match body {
        Some(body) => body,
        None => {
            let start = answer
                .match_indices("diff --git ")
                .chain(answer.match_indices("--- "))
                .map(|(at, _)| at)
                .filter(|at| *at == 0 || answer.as_bytes()[at - 1] == b'\n')
                .min()?;
            answer[start..].to_owned()
        }
    };
    if !looks_like_diff(&format!("\n{body}")) {
        return None;
    }
    // Only line ends are trimmed: a last context line may be a single space.
    let mut body = body.trim_end_matches(['\n', '\r']).to_owned();
    body.push('\n');
    Some(body)
}

/// The paths a diff names (old and new), without their `a/`/`b/` prefixes.
fn diff_files(diff: &str) -> Vec<String> {
    diff.lines()
        .filter_map(|l| l.strip_prefix("--- ").or_else(|| l.strip_prefix("+++ ")))
        .map(|p| p.split('\t').next().unwrap_or(p).trim())
        .filter(|p| *p != "/dev/null")
        .map(|p| {
            p.strip_prefix("a/")
                .or_else(|| p.strip_prefix("b/"))
                .unwrap_or(p)
                .to_owned()
        })
        .collect()
}

/// Applies `diff` to a scratch index of the source commit and returns git's own diff of the
/// result with the files it touches, or why it does not apply.
async fn canonical(target: &Target<'_>, diff: &str) -> Result<(String, Vec<String>), String> {
    let scratch =
        tempfile::tempdir().map_err(|e| format!("llm: cannot create a scratch directory: {e}"))?;
    let index = scratch.path().join("index");
    let env = [("GIT_INDEX_FILE", index.as_os_str())];
    let repo = &target.repo;
    let commit = target.commit.as_str();
    let git_error = |e: Error| format!("llm: cannot check the answer's diff: {e}");
    repo.git_with(&["read-tree", commit], &env, None)
        .await
        .map_err(git_error)?;
    let applied = repo
        .git_with(
            &["apply", "--cached", "--recount", "--whitespace=nowarn", "-"],
            &env,
            Some(diff.as_bytes()),
        )
        .await;
    if let Err(error) = applied {
        let reason = match error {
            Error::Git { message, .. } => message,
            other => other.to_string(),
        };
        return Err(format!(
            "llm: the answer's diff does not apply to {}: {}; dropped",
            short(commit),
            excerpt(&reason, 300)
        ));
    }
    let env: [(&str, &OsStr); 1] = [("GIT_INDEX_FILE", index.as_os_str())];
    let canonical = repo
        .git_with(
            &["diff", "--cached", "--no-color", "--no-ext-diff", commit],
            &env,
            None,
        )
        .await
        .map_err(git_error)?;
    let files: Vec<String> = repo
        .git_with(&["diff", "--cached", "--name-only", commit], &env, None)
        .await
        .map_err(git_error)?
        .lines()
        .map(str::to_owned)
        .collect();
    if canonical.trim().is_empty() {
        return Err("llm: the answer's diff changes nothing; dropped".into());
    }
    Ok((canonical, files))
}

fn count(diff: &str) -> (u32, u32) {
    diff.lines().fold((0, 0), |(a, r), line| {
        if line.starts_with('+') && !line.starts_with("+++") {
            (a + 1, r)
        } else if line.starts_with('-') && !line.starts_with("---") {
            (a, r + 1)
        } else {
            (a, r)
        }
    })
}

fn seconds(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// At most `max` characters of `text`, cut at a character boundary, marked when cut.
fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Words that name a secret when followed by `=` or `:`.
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "private_key",
];
/// Prefixes of well-known credential formats.
const SECRET_PREFIXES: &[&str] = &[
    "sk-",
    "ghp_",
    "gho_",
    "github_pat_",
    "xoxb-",
    "xoxp-",
    "AKIA",
];
const REDACTED: &str = "[redacted]";

/// `text` with credentials replaced: values of `password=`/`token:`-style pairs, bearer tokens
/// and tokens in well-known key formats. Secrets never reach a prompt.
pub(crate) fn redact(text: &str) -> String {
    text.split_inclusive('\n')
        .map(redact_line)
        .collect::<Vec<_>>()
        .concat()
}

fn redact_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut redact_next = false;
    for piece in line.split_inclusive(' ') {
        let word = piece.trim_end();
        let spacing = &piece[word.len()..];
        let bare = word.trim_matches(|c: char| "\"'`,;()[]{}<>".contains(c));
        let lower = bare.to_ascii_lowercase();
        if lower == "bearer" {
            out.push_str(piece);
            redact_next = true;
            continue;
        }
        if redact_next && !bare.is_empty() {
            out.push_str(REDACTED);
            out.push_str(spacing);
            redact_next = false;
            continue;
        }
        if SECRET_PREFIXES
            .iter()
            .any(|p| bare.starts_with(p) && bare.len() >= p.len() + 12)
        {
            out.push_str(REDACTED);
            out.push_str(spacing);
            continue;
        }
        let key_end = lower.find(['=', ':']);
        match key_end {
            Some(at) if SECRET_KEYS.iter().any(|k| lower[..at].ends_with(k)) => {
                let start = word.len()
                    - word
                        .trim_start_matches(|c: char| "\"'`,;([{<".contains(c))
                        .len();
                let split = start + at + 1;
                let value = &word[split.min(word.len())..];
                out.push_str(&word[..split.min(word.len())]);
                if value.trim_matches(|c: char| "\"'".contains(c)).is_empty() {
                    redact_next = true;
                } else {
                    out.push_str(REDACTED);
                }
                out.push_str(spacing);
            }
            _ => {
                out.push_str(piece);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_a_fenced_or_bare_diff() {
        let fenced =
            "Here is the fix:\n```diff\n--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a\n+b\n```\nDone.";
        assert_eq!(
            extract_diff(fenced).unwrap(),
            "--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a\n+b\n"
        );
        let bare = "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b";
        assert!(extract_diff(bare).unwrap().starts_with("diff --git"));
        let blank_context = "--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n-a\n+b\n \n\n";
        assert!(extract_diff(blank_context).unwrap().ends_with("+b\n \n"));
        assert!(extract_diff("I cannot help with that.").is_none());
        assert!(extract_diff("```\nprint('hi')\n```").is_none());
    }

    #[test]
    fn names_the_files_of_a_diff() {
        let diff = "--- a/src/x.rs\n+++ b/src/x.rs\n@@ -1 +1 @@\n-a\n+b\n--- /dev/null\n+++ b/../../etc/passwd\n";
        assert_eq!(
            diff_files(diff),
            ["src/x.rs", "src/x.rs", "../../etc/passwd"]
        );
    }

    #[test]
    fn redacts_credentials() {
        let text = "connect password=hunter2 user=bob\nAuthorization: Bearer abc.def.ghi\nkey sk-abcdefghijklmnopqrstu and token: \"s3cr3t\" ok\n";
        let redacted = redact(text);
        for secret in [
            "hunter2",
            "abc.def.ghi",
            "sk-abcdefghijklmnopqrstu",
            "s3cr3t",
        ] {
            assert!(!redacted.contains(secret), "{secret} in {redacted}");
        }
        assert!(
            redacted.contains("user=bob") && redacted.contains(" ok\n"),
            "{redacted}"
        );
    }

    #[test]
    fn excerpts_cut_at_character_boundaries() {
        assert_eq!(excerpt("héllo", 2), "hé…");
        assert_eq!(excerpt("hi", 5), "hi");
        assert_eq!(seconds(Duration::from_secs(10)), "10s");
        assert_eq!(seconds(Duration::from_millis(300)), "300ms");
    }
}

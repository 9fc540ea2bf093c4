//! Code localisation: stack trace → the first frame in the service's own code → file:line in the
//! repository at the deployed commit → `git blame` → the commit that last changed that line.
//!
//! The parsers in [`trace`] are pure; [`paths`] decides, from the commit's tree alone, which
//! repository file a frame's (untrusted) path names; [`git`] reads objects through the git CLI in
//! child processes. Nothing here reads the working tree or any file outside the repository.

pub mod error;
pub mod git;
pub mod paths;
pub mod trace;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

pub use self::error::LocalizeError;
use self::git::{CommitInfo, GitRepo};
use self::paths::{EntryKind, Rejection};

/// Lines of context on each side of the faulty line in a snippet.
const SNIPPET_CONTEXT: u32 = 3;
/// Blobs larger than this are blamed but not read for a snippet.
const MAX_SNIPPET_BLOB_BYTES: u64 = 8 * 1024 * 1024;

/// The language a trace was written by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Language {
    Rust,
    Python,
    Java,
    Go,
    Node,
}

impl Language {
    /// The language's name, lowercase.
    pub fn name(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::Java => "java",
            Language::Go => "go",
            Language::Node => "node",
        }
    }
}

/// One frame of a stack trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub function: String,
    /// The path as the trace printed it.
    pub file: String,
    pub line: u32,
    /// 0 when the trace gives none.
    pub column: u32,
    /// Whether the frame is in the service's own code: not a standard library, runtime or
    /// dependency path, and (after localisation) a file of the repository.
    pub in_app: bool,
}

/// A point in the repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeLocation {
    /// Relative to the repository root.
    pub file: String,
    pub line: u32,
    pub end_line: u32,
    pub column: u32,
    pub function: String,
    /// The lines around `line`, each as `NNNN | text`, the faulty one marked with `>`.
    pub snippet: String,
}

/// What to localise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalizeQuery {
    pub service: String,
    pub trace_text: String,
    /// Absolute path of a local git repository.
    pub repository: String,
    /// The deployed revision.
    pub commit: String,
    /// The last revision known good, when there is one.
    pub last_good_commit: Option<String>,
}

/// Where a failure is and which commit introduced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Localization {
    pub language: Language,
    pub message: String,
    /// The frames of the trace localised, innermost first.
    pub frames: Vec<Frame>,
    pub location: CodeLocation,
    pub culprit: CommitInfo,
    /// The culprit is in the deployed commit's history and not in the last good one's.
    pub culprit_in_range: bool,
}

/// Limits of one localisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalizeSettings {
    /// Longer trace texts are refused.
    pub max_trace_bytes: usize,
    /// Deadline of each git command.
    pub git_timeout: Duration,
    /// Localisations running at once; more wait their turn, so git processes stay bounded.
    pub max_concurrent: usize,
}

impl Default for LocalizeSettings {
    fn default() -> Self {
        LocalizeSettings {
            max_trace_bytes: 1024 * 1024,
            git_timeout: Duration::from_secs(10),
            max_concurrent: 8,
        }
    }
}

/// Localises failures from their stack traces.
#[derive(Clone, Debug)]
pub struct Localizer {
    settings: LocalizeSettings,
    permits: Arc<Semaphore>,
}

impl Default for Localizer {
    fn default() -> Self {
        Localizer::new(LocalizeSettings::default())
    }
}

impl Localizer {
    pub fn new(settings: LocalizeSettings) -> Self {
        let permits = Arc::new(Semaphore::new(settings.max_concurrent.max(1)));
        Localizer { settings, permits }
    }

    /// Finds the faulty line of `query`'s trace in its repository and the commit that wrote it.
    pub async fn localize(&self, query: LocalizeQuery) -> Result<Localization, LocalizeError> {
        let size = query.trace_text.len();
        if size > self.settings.max_trace_bytes {
            return Err(LocalizeError::TraceTooLarge {
                size,
                limit: self.settings.max_trace_bytes,
            });
        }
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the localizer never closes its semaphore");
        let text = query.trace_text;
        let traces = tokio::task::spawn_blocking(move || trace::parse(&text))
            .await
            .map_err(|_| LocalizeError::ParserStopped)?;
        if traces.is_empty() {
            return Err(LocalizeError::NoStackFrame);
        }

        let repo = GitRepo::open(&query.repository, self.settings.git_timeout).await?;
        let (deployed, last_good) =
            tokio::try_join!(repo.resolve_commit("commit", &query.commit), async {
                match query.last_good_commit.as_deref() {
                    Some(revision) => repo
                        .resolve_commit("last_good_commit", revision)
                        .await
                        .map(Some),
                    None => Ok(None),
                }
            },)?;
        let tree = repo.tree(&deployed).await?;
        let roots = [
            query.repository.clone(),
            repo.root().to_string_lossy().into_owned(),
        ];

        // The first trace, in order of relevance, with a frame in the repository.
        let mut first_rejection: Option<(String, Rejection)> = None;
        let mut chosen = None;
        for mut parsed in traces.iter().cloned() {
            let mut found = None;
            for (index, frame) in parsed.frames.iter_mut().enumerate() {
                if !frame.in_app {
                    continue;
                }
                match tree.resolve(&frame.file, &roots) {
                    Ok(path) => {
                        if found.is_none() {
                            found = Some((index, path));
                        }
                    }
                    Err(rejection) => {
                        frame.in_app = false;
                        if first_rejection.is_none() {
                            first_rejection = Some((frame.file.clone(), rejection));
                        }
                    }
                }
            }
            if let Some(found) = found {
                chosen = Some((parsed, found));
                break;
            }
        }
        let Some((parsed, (index, path))) = chosen else {
            let first = &traces[0];
            let detail = match first_rejection {
                Some((file, rejection)) => format!("{}: {rejection}", printable(&file)),
                None => "every frame is in a standard library, runtime or dependency".to_owned(),
            };
            return Err(LocalizeError::NoAppFrame {
                language: first.language.name(),
                frames: first.frames.len(),
                detail,
            });
        };
        let frame = &parsed.frames[index];
        tracing::debug!(
            service = %query.service,
            language = parsed.language.name(),
            file = %path,
            line = frame.line,
            "localised frame"
        );

        let entry = tree
            .get(&path)
            .filter(|entry| entry.kind == EntryKind::File)
            .expect("resolve returns only paths of regular files in the tree");
        // Reading the file and blaming the line are independent; the line check on the file
        // decides first, so a stale trace is reported as such rather than as a blame failure.
        let read_snippet = async {
            if entry.size > MAX_SNIPPET_BLOB_BYTES {
                return Ok((String::new(), frame.function.clone()));
            }
            let blob = repo.blob(&entry.object).await?;
            let text = String::from_utf8_lossy(&blob);
            let lines: Vec<&str> = text.lines().collect();
            if frame.line == 0 || frame.line as usize > lines.len() {
                return Err(LocalizeError::LineOutOfRange {
                    file: path.clone(),
                    line: frame.line,
                    lines: lines.len(),
                    commit: deployed.clone(),
                });
            }
            let function = if frame.function.is_empty() {
                enclosing_function(&lines, frame.line, parsed.language)
            } else {
                frame.function.clone()
            };
            Ok((snippet(&lines, frame.line), function))
        };
        let (snippet, culprit_sha) =
            tokio::join!(read_snippet, repo.blame_line(&deployed, &path, frame.line));
        let ((snippet, function), culprit_sha) = (snippet?, culprit_sha?);

        let in_range = async {
            let Some(good) = &last_good else {
                return Ok(false);
            };
            let (in_deployed, in_good) = tokio::try_join!(
                repo.is_ancestor(&culprit_sha, &deployed),
                repo.is_ancestor(&culprit_sha, good),
            )?;
            Ok(in_deployed && !in_good)
        };
        let (culprit, culprit_in_range) = tokio::try_join!(repo.commit(&culprit_sha), in_range)?;

        let location = CodeLocation {
            file: path,
            line: frame.line,
            end_line: frame.line,
            column: frame.column,
            function,
            snippet,
        };
        Ok(Localization {
            language: parsed.language,
            message: parsed.message,
            frames: parsed.frames,
            location,
            culprit,
            culprit_in_range,
        })
    }
}

/// `line` and [`SNIPPET_CONTEXT`] lines either side, numbered, the faulty one marked.
fn snippet(lines: &[&str], line: u32) -> String {
    let first = line.saturating_sub(SNIPPET_CONTEXT).max(1);
    let last = line
        .saturating_add(SNIPPET_CONTEXT)
        .min(u32::try_from(lines.len()).unwrap_or(u32::MAX));
    let width = last.to_string().len();
    (first..=last)
        .filter_map(|number| {
            let text = lines.get(number as usize - 1)?;
            let marker = if number == line { '>' } else { ' ' };
            Some(format!("{marker} {number:>width$} | {text}"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The name of the function whose definition is the nearest above `line` (for traces that name
/// only a file and line, such as a Rust panic without a backtrace). Empty when none is found.
fn enclosing_function(lines: &[&str], line: u32, language: Language) -> String {
    let keyword = match language {
        Language::Rust => "fn ",
        Language::Python => "def ",
        Language::Go => "func ",
        Language::Java | Language::Node => return String::new(),
    };
    let end = (line as usize).min(lines.len());
    for text in lines[..end].iter().rev() {
        let code = text.trim_start();
        let Some(at) = code.find(keyword) else {
            continue;
        };
        // `fn` must start the line or follow qualifiers (`pub`, `async`, `pub(crate)`, …).
        let before = &code[..at];
        if !before.split_whitespace().all(|w| {
            matches!(
                w,
                "pub" | "async" | "const" | "unsafe" | "extern" | "static"
            ) || w.starts_with("pub(")
        }) {
            continue;
        }
        let mut rest = &code[at + keyword.len()..];
        if language == Language::Go && rest.starts_with('(') {
            // A method: skip the receiver.
            rest = rest.split_once(')').map_or("", |(_, r)| r.trim_start());
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            return name;
        }
    }
    String::new()
}

/// A path from a trace, shortened and without control characters, for an error message.
fn printable(path: &str) -> String {
    path.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_enclosing_function_is_the_nearest_definition_above() {
        let rust = [
            "use x;",
            "pub fn process_payment(",
            "    a: u32,",
            ") {",
            "    x.unwrap()",
            "}",
        ];
        assert_eq!(
            enclosing_function(&rust, 5, Language::Rust),
            "process_payment"
        );
        assert_eq!(enclosing_function(&rust, 1, Language::Rust), "");
        let go = [
            "func (s *Server) Pay(w http.ResponseWriter) {",
            "\tpanic(1)",
        ];
        assert_eq!(enclosing_function(&go, 2, Language::Go), "Pay");
        let python = ["def handle(request):", "    return request['x']"];
        assert_eq!(enclosing_function(&python, 2, Language::Python), "handle");
    }

    #[test]
    fn snippets_stay_inside_the_file() {
        let lines = ["a", "b", "c", "d", "e"];
        assert_eq!(snippet(&lines, 1), "> 1 | a\n  2 | b\n  3 | c\n  4 | d");
        assert_eq!(snippet(&lines, 5), "  2 | b\n  3 | c\n  4 | d\n> 5 | e");
    }
}

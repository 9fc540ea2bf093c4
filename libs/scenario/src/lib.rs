//! Builds the demo's git history for an example service, deterministically.
//!
//! An example service (for instance `examples/payment-service`) carries its history as data in
//! `scenario/scenario.toml`: an ordered list of commits, the first a snapshot of the example's own
//! files, the later ones unified diffs applied with `git apply`. One commit is marked as the bug;
//! its parent is the good commit. The file also records where the bug is (`bug_file`, `bug_line`).
//!
//! [`build`] replays that history into a fresh repository with the `git` CLI. Authors, emails and
//! dates come from the scenario file and git runs with a clean environment, so the same data
//! always gives the same commit ids. After building, the recorded bug location is checked against
//! the history: the line must contain the scenario's `bug_marker` (`.unwrap()` unless the file
//! names another) and `git blame` must attribute it to the bug commit. Otherwise building fails,
//! so the data cannot silently drift from the code it describes.
//!
//! An example may describe more than one history. Besides `scenario.toml`, every other
//! `scenario/<variant>.toml` is a named variant (for instance a memory leak or a hang instead of a
//! crash) in the same format, built with [`build_variant`]; [`variants`] lists them.
//!
//! ```no_run
//! let example = selfheal_scenario::examples_dir().join("payment-service");
//! let dest = std::env::temp_dir().join("payment-service-demo");
//! let scenario = selfheal_scenario::build(&example, &dest)?;
//! let (file, line) = (scenario.bug_file.display(), scenario.bug_line);
//! println!("{file}:{line} broken by {}", scenario.bad_commit);
//! # Ok::<(), selfheal_scenario::ScenarioError>(())
//! ```

mod error;
mod git;
mod spec;

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::error::ScenarioError;
use crate::git::{Git, Identity};
use crate::spec::{Change, ScenarioSpec};

/// The directory of an example that holds its scenario data; never copied into the history.
pub const SCENARIO_DIR: &str = "scenario";

/// The scenario file inside [`SCENARIO_DIR`].
pub const SCENARIO_FILE: &str = "scenario.toml";

/// The example's selfheal manifest, read for the service name.
pub const MANIFEST_FILE: &str = "selfheal.toml";

/// The variant name of [`SCENARIO_FILE`]: `build_variant(dir, DEFAULT_VARIANT, dest)` is
/// `build(dir, dest)`.
pub const DEFAULT_VARIANT: &str = "scenario";

/// The marker the recorded bug line must contain when the scenario file names no `bug_marker`.
pub const BUG_MARKER: &str = ".unwrap()";

/// Top-level entries of an example that the snapshot commit leaves out.
const SNAPSHOT_EXCLUDED: &[&str] = &[SCENARIO_DIR, "target", ".git"];

/// A built demo history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scenario {
    /// The repository the history was built in: the `dest` given to [`build`], made absolute.
    pub repo: PathBuf,
    /// Every commit, oldest first. `HEAD` (branch `main`) is the last one.
    pub commits: Vec<ScenarioCommit>,
    /// The last commit before the bug: the version to fall back to.
    pub good_commit: String,
    /// The commit that introduces the bug.
    pub bad_commit: String,
    /// The file holding the bug, relative to [`Scenario::repo`].
    pub bug_file: PathBuf,
    /// The 1-based line of the bug in [`Scenario::bug_file`] at [`Scenario::bad_commit`].
    pub bug_line: u32,
    /// The service name, from `[service] name` in the example's `selfheal.toml`.
    pub service: String,
}

/// One commit of a built history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScenarioCommit {
    /// The full commit id.
    pub sha: String,
    /// The commit message, as given in the scenario file.
    pub message: String,
}

/// The `examples` directory of the selfheal repository this crate was built from.
///
/// The path is derived from this crate's manifest directory at compile time
/// (`<workspace root>/libs/scenario`), so it points into the source checkout.
pub fn examples_dir() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // This crate lives at <workspace root>/libs/scenario.
    let root = manifest_dir
        .ancestors()
        .nth(2)
        .map_or_else(|| manifest_dir.join("..").join(".."), Path::to_path_buf);
    root.join("examples")
}

/// The target directory every build of an example shares, so repeated builds are incremental:
/// `CARGO_TARGET_DIR` when it is set, else `<workspace root>/target/examples`.
pub fn example_target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => examples_dir().join("..").join("target").join("examples"),
    }
}

/// Builds the history described by `example_dir/scenario/scenario.toml` in a new repository at
/// `dest`.
///
/// `dest` must not exist or be an empty directory. On error, `dest` may be left partly built.
pub fn build(example_dir: &Path, dest: &Path) -> Result<Scenario, ScenarioError> {
    build_from(example_dir, SCENARIO_FILE, dest)
}

/// Builds the history described by `example_dir/scenario/<variant>.toml` in a new repository at
/// `dest`, with the same rules and checks as [`build`]; `variant` [`DEFAULT_VARIANT`] is
/// `scenario.toml` itself.
///
/// An unknown variant is an [`ScenarioError::UnknownVariant`] listing the available ones, and
/// leaves `dest` untouched.
pub fn build_variant(
    example_dir: &Path,
    variant: &str,
    dest: &Path,
) -> Result<Scenario, ScenarioError> {
    let file = format!("{variant}.toml");
    let path = example_dir.join(SCENARIO_DIR).join(&file);
    if !is_variant_name(variant) || !path.is_file() {
        return Err(ScenarioError::UnknownVariant {
            example: example_dir.to_path_buf(),
            variant: variant.to_owned(),
            file: path,
            available: variants(example_dir)?,
        });
    }
    build_from(example_dir, &file, dest)
}

/// The scenario variants of an example, sorted: the stem of every `scenario/*.toml` file whose
/// name is a valid variant name, [`DEFAULT_VARIANT`] among them when `scenario.toml` exists.
pub fn variants(example_dir: &Path) -> Result<Vec<String>, ScenarioError> {
    let dir = example_dir.join(SCENARIO_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ScenarioError::Io {
                action: "list",
                path: dir,
                source,
            });
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ScenarioError::Io {
            action: "list",
            path: dir.clone(),
            source,
        })?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".toml")) else {
            continue;
        };
        if is_variant_name(stem) && entry.path().is_file() {
            names.push(stem.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// True for a non-empty name of ASCII letters, digits, `-` and `_`: never a path.
fn is_variant_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Builds the history described by `example_dir/scenario/<file>`.
fn build_from(example_dir: &Path, file: &str, dest: &Path) -> Result<Scenario, ScenarioError> {
    let scenario_dir = example_dir.join(SCENARIO_DIR);
    let spec = ScenarioSpec::load(&scenario_dir.join(file))?;

    prepare_destination(dest)?;
    let repo = std::path::absolute(dest).map_err(|source| ScenarioError::Io {
        action: "resolve",
        path: dest.to_path_buf(),
        source,
    })?;
    let git = Git::new(&repo);
    git.run(["init", "--quiet", "--template=", "--initial-branch=main"])?;

    let mut commits = Vec::with_capacity(spec.commits.len());
    for commit in &spec.commits {
        match commit.change() {
            Change::Snapshot => {
                copy_snapshot(example_dir, &repo)?;
                git.run(["add", "--all"])?;
            }
            Change::Patch(patch) => {
                let patch = scenario_dir.join(patch);
                let patch = std::path::absolute(&patch).map_err(|source| ScenarioError::Io {
                    action: "resolve",
                    path: patch.clone(),
                    source,
                })?;
                git.run([
                    "apply".as_ref(),
                    "--index".as_ref(),
                    "--whitespace=nowarn".as_ref(),
                    patch.as_os_str(),
                ])?;
            }
        }
        let identity = Identity {
            name: &commit.author_name,
            email: &commit.author_email,
            date: &commit.date,
        };
        git.run_as(
            [
                "commit",
                "--quiet",
                "--no-verify",
                "--cleanup=verbatim",
                "--message",
                commit.message.as_str(),
            ],
            Some(identity),
        )?;
        commits.push(ScenarioCommit {
            sha: git.rev_parse("HEAD")?,
            message: commit.message.clone(),
        });
    }

    let bug = spec.bug_index();
    let (bad_commit, good_commit) = match (commits.get(bug), bug.checked_sub(1)) {
        (Some(bad), Some(good)) => match commits.get(good) {
            Some(good) => (bad.sha.clone(), good.sha.clone()),
            None => return Err(missing_bug_commit(&scenario_dir, file)),
        },
        _ => return Err(missing_bug_commit(&scenario_dir, file)),
    };
    verify_bug_location(
        &git,
        &bad_commit,
        &spec.bug_file,
        spec.bug_line,
        spec.bug_marker(),
    )?;
    let service = service_name(&repo.join(MANIFEST_FILE))?;

    Ok(Scenario {
        repo,
        commits,
        good_commit,
        bad_commit,
        bug_file: spec.bug_file,
        bug_line: spec.bug_line,
        service,
    })
}

fn missing_bug_commit(scenario_dir: &Path, file: &str) -> ScenarioError {
    ScenarioError::Invalid {
        path: scenario_dir.join(file),
        reason: "the bug commit or its parent is missing".to_owned(),
    }
}

/// Creates `dest` if needed and checks that it is an empty directory.
fn prepare_destination(dest: &Path) -> Result<(), ScenarioError> {
    let io = |action: &'static str| {
        move |source| ScenarioError::Io {
            action,
            path: dest.to_path_buf(),
            source,
        }
    };
    if dest.exists() {
        if !dest.is_dir() {
            return Err(ScenarioError::DestinationNotEmpty {
                path: dest.to_path_buf(),
            });
        }
        if fs::read_dir(dest).map_err(io("list"))?.next().is_some() {
            return Err(ScenarioError::DestinationNotEmpty {
                path: dest.to_path_buf(),
            });
        }
        Ok(())
    } else {
        fs::create_dir_all(dest).map_err(io("create directory"))
    }
}

/// Copies the example's files into `repo`, in sorted order, leaving out [`SNAPSHOT_EXCLUDED`].
///
/// Files are read and written rather than copied, so their permissions are the process defaults
/// (never executable) whatever the source checkout says.
fn copy_snapshot(example_dir: &Path, repo: &Path) -> Result<(), ScenarioError> {
    copy_dir(example_dir, repo, true)
}

fn copy_dir(from: &Path, to: &Path, top_level: bool) -> Result<(), ScenarioError> {
    let mut entries = fs::read_dir(from)
        .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
        .map_err(|source| ScenarioError::Io {
            action: "list",
            path: from.to_path_buf(),
            source,
        })?;
    entries.sort_by_key(fs::DirEntry::file_name);

    for entry in entries {
        let name = entry.file_name();
        if top_level && SNAPSHOT_EXCLUDED.iter().any(|excluded| name == *excluded) {
            continue;
        }
        let source = entry.path();
        let target = to.join(&name);
        let file_type = entry.file_type().map_err(|e| ScenarioError::Io {
            action: "inspect",
            path: source.clone(),
            source: e,
        })?;
        if file_type.is_dir() {
            if name == ".git" {
                continue;
            }
            fs::create_dir(&target).map_err(|e| ScenarioError::Io {
                action: "create directory",
                path: target.clone(),
                source: e,
            })?;
            copy_dir(&source, &target, false)?;
        } else if file_type.is_file() {
            let bytes = fs::read(&source).map_err(|e| ScenarioError::Io {
                action: "read",
                path: source.clone(),
                source: e,
            })?;
            fs::write(&target, bytes).map_err(|e| ScenarioError::Io {
                action: "write",
                path: target.clone(),
                source: e,
            })?;
        } else {
            return Err(ScenarioError::Io {
                action: "copy",
                path: source,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "only regular files and directories can be part of a snapshot",
                ),
            });
        }
    }
    Ok(())
}

/// Checks that `file:line` at `bad_commit` contains `marker` and was written by that commit.
fn verify_bug_location(
    git: &Git,
    bad_commit: &str,
    file: &Path,
    line: u32,
    marker: &str,
) -> Result<(), ScenarioError> {
    let mismatch = |reason: String| ScenarioError::BugLocation {
        file: file.to_path_buf(),
        line,
        reason,
    };
    let file_arg = file.to_string_lossy().replace('\\', "/");

    let contents = git
        .run(["show", &format!("{bad_commit}:{file_arg}")])
        .map_err(|e| mismatch(format!("the file is not in the bug commit ({e})")))?;
    let index = usize::try_from(line - 1).map_err(|_| mismatch("line out of range".to_owned()))?;
    let Some(text) = contents.lines().nth(index) else {
        let count = contents.lines().count();
        return Err(mismatch(format!("the file has only {count} lines")));
    };
    if !text.contains(marker) {
        return Err(mismatch(format!(
            "the line is {:?}, which does not contain `{marker}`",
            text.trim()
        )));
    }

    let range = format!("{line},{line}");
    let blame = git.run([
        "blame",
        "--porcelain",
        "-L",
        range.as_str(),
        bad_commit,
        "--",
        file_arg.as_str(),
    ])?;
    let author = blame.split_whitespace().next().unwrap_or_default();
    if author != bad_commit {
        return Err(mismatch(format!(
            "git blame attributes the line to {author}, not to the bug commit {bad_commit}"
        )));
    }
    Ok(())
}

/// Reads `[service] name` from a selfheal manifest.
fn service_name(manifest: &Path) -> Result<String, ScenarioError> {
    #[derive(Deserialize)]
    struct Manifest {
        service: Service,
    }
    #[derive(Deserialize)]
    struct Service {
        name: String,
    }
    let text = fs::read_to_string(manifest).map_err(|source| ScenarioError::Io {
        action: "read",
        path: manifest.to_path_buf(),
        source,
    })?;
    let parsed: Manifest = toml::from_str(&text).map_err(|source| ScenarioError::Parse {
        path: manifest.to_path_buf(),
        source: Box::new(source),
    })?;
    Ok(parsed.service.name)
}

//! The gate's pipeline. For each candidate, in a fresh `git worktree --detach` at the source
//! commit: apply → policy → build → test → replay, stopping at the first failing stage; then the
//! risk score, the outcome and a decision record. Candidates run one after another (builds share
//! one `CARGO_TARGET_DIR` and use both cores), and one evaluation runs at a time per process.
//!
//! The unpatched build that passing requests are compared against is built once per commit and
//! kept under the work dir, like the deployer's builds.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::LazyLock;
use std::time::Instant;

use selfheal_manifest::{MANIFEST_FILE, Manifest};
use tokio::process::Command;

use crate::config::GateConfig;
use crate::diff::{self, DiffSummary};
use crate::error::Error;
use crate::model::{
    Alternative, Candidate, Check, CheckStatus, Decision, Evaluated, Evaluation, Input, Outcome,
    ReplayRequest, Strategy, Verdict,
};
use crate::policy;
use crate::replay::{self, Answer, Launch};
use crate::risk::{self, OutcomeRules, ReplayFacts, RiskInputs};
use crate::sandbox::{Limits, Sandbox};

/// One evaluation at a time per process: two cores are fully used by one build.
static EVALUATIONS: LazyLock<tokio::sync::Mutex<()>> =
    LazyLock::new(|| tokio::sync::Mutex::new(()));

/// Output patterns that mean a process tried to reach the network.
const NETWORK_FAILURE_MARKERS: &[&str] = &[
    "Connection refused",
    "Network is unreachable",
    "os error 111",
    "os error 101",
    "ConnectionRefused",
    "NetworkUnreachable",
    "Temporary failure in name resolution",
];

/// The safety gate.
#[derive(Debug)]
pub(crate) struct Gate {
    config: GateConfig,
    sandbox: Sandbox,
    target_dir: PathBuf,
}

/// Everything shared by the candidates of one evaluation.
struct Context<'a> {
    input: &'a Evaluation,
    manifest: Manifest,
    limits: policy::Limits,
    worktree: PathBuf,
    /// The unpatched build's answers to the passing requests, once computed.
    baseline: Option<Result<Vec<Answer>, String>>,
}

/// What a candidate's stages found.
#[derive(Default)]
struct StageResults {
    checks: Vec<Check>,
    tests: Option<CheckStatus>,
    replay: Option<ReplayFacts>,
    behaviour_changes: Vec<String>,
    warnings: Vec<String>,
}

impl Gate {
    /// Probes the sandbox and prepares the work dir.
    pub(crate) async fn new(config: GateConfig) -> Result<Self, Error> {
        let sandbox = Sandbox::probe(config.sandbox, &config.env_allow).await?;
        for dir in ["worktrees", "logs", "artifacts", "baselines", "patches"] {
            tokio::fs::create_dir_all(config.work_dir.join(dir))
                .await
                .map_err(Error::io("cannot create the gate's work dir"))?;
        }
        let target_dir = config.build_target_dir();
        Ok(Self {
            config,
            sandbox,
            target_dir,
        })
    }

    /// Whether untrusted processes get no network.
    pub(crate) fn isolates_network(&self) -> bool {
        self.sandbox.isolates_network()
    }

    /// Evaluates every candidate and picks the one to ship.
    pub(crate) async fn evaluate(&self, input: Evaluation) -> Result<Evaluated, Error> {
        let diffs = validate(&input)?;
        let commit = resolve(&input.repository, &input.commit).await?;
        let manifest_text = git(
            &input.repository,
            &["show", &format!("{commit}:{MANIFEST_FILE}")],
        )
        .await?
        .map_err(|_| {
            Error::Manifest(selfheal_manifest::ManifestError {
                path: PathBuf::from(MANIFEST_FILE),
                reason: format!("there is no {MANIFEST_FILE} at {commit}"),
            })
        })?;
        let manifest = Manifest::parse(&manifest_text, Path::new(MANIFEST_FILE))?;
        let limits = policy::Limits::combine(
            &manifest.policy,
            self.config.max_changed_lines,
            &self.config.forbidden_paths,
            &self.config.allowed_paths,
        );

        let _one_at_a_time = EVALUATIONS.lock().await;
        let input = Evaluation { commit, ..input };
        let mut context = Context {
            input: &input,
            manifest,
            limits,
            worktree: self
                .config
                .work_dir
                .join("worktrees")
                .join(dir_name(&input.service)),
            baseline: None,
        };
        let mut verdicts = Vec::new();
        let mut skipped = Vec::new();
        for (index, (candidate, summary)) in input.candidates.iter().zip(&diffs).enumerate() {
            if index >= self.config.max_candidates {
                skipped.push(candidate.id.clone());
                continue;
            }
            let started = Instant::now();
            let verdict = self
                .evaluate_candidate(&mut context, index, candidate, summary)
                .await?;
            tracing::info!(
                incident = %input.incident_id,
                candidate = %candidate.id,
                outcome = verdict.outcome.label(),
                risk = verdict.risk,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "candidate evaluated"
            );
            verdicts.push(verdict);
        }
        Ok(select(&input, verdicts, &skipped, &self.config))
    }

    async fn evaluate_candidate(
        &self,
        context: &mut Context<'_>,
        index: usize,
        candidate: &Candidate,
        summary: &DiffSummary,
    ) -> Result<Verdict, Error> {
        let input = context.input;
        let worktree = context.worktree.clone();
        self.add_worktree(&input.repository, &worktree, &input.commit)
            .await?;
        let tmp = tempfile::Builder::new()
            .prefix("tmp-")
            .tempdir_in(&self.config.work_dir)
            .map_err(Error::io("cannot create a temp dir"))?;
        let stages = self
            .stages(context, index, candidate, summary, tmp.path())
            .await;
        self.remove_worktree(&input.repository, &worktree).await;
        let mut stages = stages?;

        let factors = risk::factors(&RiskInputs {
            changed_lines: summary.changed_lines(),
            max_changed_lines: context.limits.max_changed_lines,
            files: summary.files.len(),
            strategy: candidate.strategy,
            tests: stages.tests,
            replay: stages.replay,
            criticality: input.criticality,
            dependents: input.dependents,
        });
        let risk = risk::score(&factors);
        if let Some(warning) = self.sandbox.warning() {
            stages.warnings.insert(0, warning.to_owned());
        }
        let failed = stages
            .checks
            .iter()
            .find(|c| c.status == CheckStatus::Failed)
            .map(|c| c.name);
        let (outcome, why) = risk::outcome(
            OutcomeRules {
                approve_threshold: self.config.approve_threshold,
                reject_threshold: self.config.reject_threshold,
            },
            risk,
            failed,
            self.sandbox.isolates_network(),
            stages.behaviour_changes.len(),
        );
        let decision = self.verdict_decision(
            context, candidate, summary, &stages, &factors, risk, outcome, &why,
        );
        Ok(Verdict {
            candidate_id: candidate.id.clone(),
            strategy: candidate.strategy,
            outcome,
            risk,
            factors,
            checks: stages.checks,
            decision,
            warnings: stages.warnings,
            behaviour_changes: stages.behaviour_changes,
        })
    }

    /// apply → policy → build → test → replay, up to the first failure.
    async fn stages(
        &self,
        context: &mut Context<'_>,
        index: usize,
        candidate: &Candidate,
        summary: &DiffSummary,
        tmp: &Path,
    ) -> Result<StageResults, Error> {
        let mut results = StageResults::default();
        let worktree = context.worktree.clone();
        let short = &context.input.commit[..context.input.commit.len().min(12)];

        // apply
        let started = Instant::now();
        let patch = self
            .config
            .work_dir
            .join("patches")
            .join(format!("{index}.patch"));
        tokio::fs::write(&patch, &candidate.diff)
            .await
            .map_err(Error::io("cannot write the patch"))?;
        let patch_arg = patch.to_string_lossy().into_owned();
        let mut applied = git(
            &worktree,
            &["apply", "--check", "--whitespace=nowarn", &patch_arg],
        )
        .await?;
        if applied.is_ok() {
            applied = git(&worktree, &["apply", "--whitespace=nowarn", &patch_arg]).await?;
        }
        let _ = tokio::fs::remove_file(&patch).await;
        match applied {
            Ok(_) => results.checks.push(passed(
                "apply",
                format!(
                    "applies cleanly to {short}: {} file(s), +{} -{}",
                    summary.files.len(),
                    summary.added,
                    summary.removed
                ),
                started,
            )),
            Err(stderr) => {
                results.checks.push(failed(
                    "apply",
                    format!("the diff does not apply to {short}"),
                    stderr,
                    started,
                ));
                return Ok(results);
            }
        }

        // policy
        let started = Instant::now();
        let violations = policy::violations(summary, &context.limits);
        if violations.is_empty() {
            results.checks.push(passed(
                "policy",
                format!(
                    "{} changed lines within the limit of {}; no forbidden path, dependency change, secret or unsafe code",
                    summary.changed_lines(),
                    context.limits.max_changed_lines
                ),
                started,
            ));
        } else {
            results.checks.push(failed(
                "policy",
                format!("the fix breaks policy: it {}", violations.join("; it ")),
                String::new(),
                started,
            ));
            return Ok(results);
        }

        // build
        let artifact = match self
            .build(
                &context.manifest,
                &worktree,
                tmp,
                &self
                    .config
                    .work_dir
                    .join("artifacts")
                    .join(index.to_string()),
                &format!("{index}-build"),
            )
            .await?
        {
            Ok((check, artifact)) => {
                results.checks.push(check);
                artifact
            }
            Err(check) => {
                results.checks.push(check);
                return Ok(results);
            }
        };

        // test
        let started = Instant::now();
        match &context.manifest.test_command {
            None => {
                results.tests = Some(CheckStatus::Skipped);
                results.checks.push(Check {
                    name: "test",
                    status: CheckStatus::Skipped,
                    detail: "the manifest has no [test] command".into(),
                    duration: started.elapsed(),
                    log_tail: String::new(),
                });
            }
            Some(command) => {
                let limits = Limits {
                    wall: self.config.test_timeout,
                    memory_mib: self.config.build_memory_mib,
                };
                let log = self.log_path(&format!("{index}-test"));
                let outcome = self
                    .sandbox
                    .run(command, &worktree, tmp, &self.build_env(), limits, &log)
                    .await?;
                let tail = replay::tail(&log, self.config.log_tail_lines);
                if outcome.success() {
                    results.tests = Some(CheckStatus::Passed);
                    results.checks.push(passed(
                        "test",
                        format!("`{}` passed", command.join(" ")),
                        started,
                    ));
                } else {
                    results.tests = Some(CheckStatus::Failed);
                    let mut detail = format!(
                        "`{}` failed ({})",
                        command.join(" "),
                        outcome.describe(&limits)
                    );
                    let whole = std::fs::read_to_string(&log).unwrap_or_default();
                    if self.sandbox.isolates_network()
                        && NETWORK_FAILURE_MARKERS.iter().any(|m| whole.contains(m))
                    {
                        detail.push_str(
                            "; the output shows a refused or unreachable network connection: the sandbox has no network, so code that needs one fails here",
                        );
                    }
                    if outcome.sandbox_failed {
                        detail.push_str("; the sandbox could not be set up");
                    }
                    results.checks.push(failed("test", detail, tail, started));
                    return Ok(results);
                }
            }
        }

        // replay
        let started = Instant::now();
        let input = context.input;
        if input.failing.is_empty() && input.passing.is_empty() {
            results.replay = Some(ReplayFacts::default());
            results.checks.push(Check {
                name: "replay",
                status: CheckStatus::Skipped,
                detail: "no captured requests to replay".into(),
                duration: started.elapsed(),
                log_tail: String::new(),
            });
            return Ok(results);
        }
        let baseline = if input.passing.is_empty() {
            None
        } else {
            if context.baseline.is_none() {
                context.baseline = Some(self.baseline_answers(context, tmp).await?);
            }
            match context.baseline.as_ref() {
                Some(Ok(answers)) => Some(answers.clone()),
                Some(Err(reason)) => {
                    results.warnings.push(format!(
                        "passing requests were not compared: the unpatched build could not answer them: {reason}"
                    ));
                    None
                }
                None => None,
            }
        };
        let passing: Vec<ReplayRequest> = if baseline.is_some() {
            input.passing.clone()
        } else {
            Vec::new()
        };
        let requests: Vec<ReplayRequest> = passing.iter().chain(&input.failing).cloned().collect();
        let launch = self.launch(
            &context.manifest,
            &artifact,
            tmp,
            &format!("{index}-replay"),
        );
        let answers = match replay::run(&self.sandbox, &launch, requests).await {
            Ok(answers) => answers,
            Err(error) => {
                results.replay = None;
                results.checks.push(failed(
                    "replay",
                    error.to_string(),
                    replay::tail(&launch.log, self.config.log_tail_lines),
                    started,
                ));
                return Ok(results);
            }
        };
        let (passing_answers, failing_answers) = answers.split_at(passing.len());
        let mut facts = ReplayFacts {
            failing: input.failing.len(),
            passing: passing.len(),
            ..ReplayFacts::default()
        };
        let mut still_failing = Vec::new();
        for (request, answer) in input.failing.iter().zip(failing_answers) {
            if answer.fails() {
                still_failing.push(format!("{} → {}", request.label(), answer.describe()));
            } else {
                facts.fixed += 1;
            }
        }
        if let Some(baseline) = &baseline {
            for ((request, before), after) in passing.iter().zip(baseline).zip(passing_answers) {
                if before.fails() {
                    // Captured while another version served (the router keeps samples across
                    // releases): the unpatched build fails it, so it is one more failing
                    // request for this commit, which the candidate must not fail.
                    facts.failing += 1;
                    facts.passing -= 1;
                    if after.fails() {
                        still_failing.push(format!("{} → {}", request.label(), after.describe()));
                    } else {
                        facts.fixed += 1;
                    }
                    continue;
                }
                if !after.same_as(before) {
                    facts.changed += 1;
                    results.behaviour_changes.push(format!(
                        "{}: was {}, now {}",
                        request.label(),
                        before.describe(),
                        after.describe()
                    ));
                }
            }
        }
        results.replay = Some(facts);
        if !still_failing.is_empty() {
            results.checks.push(failed(
                "replay",
                format!(
                    "{} of {} captured failing requests still fail: {}",
                    still_failing.len(),
                    facts.failing,
                    still_failing.join("; ")
                ),
                replay::tail(&launch.log, self.config.log_tail_lines),
                started,
            ));
            return Ok(results);
        }
        let mut detail = format!(
            "{} of {} failing requests now succeed; {} of {} passing requests answer as the unpatched build does",
            facts.fixed,
            facts.failing,
            facts.passing - facts.changed,
            facts.passing
        );
        if !results.behaviour_changes.is_empty() {
            detail.push_str(&format!(
                "; behaviour change: {}",
                results.behaviour_changes.join("; ")
            ));
        }
        results.checks.push(passed("replay", detail, started));
        Ok(results)
    }

    /// Builds the worktree in the sandbox and copies the artifact to `artifact_dir`, so a later
    /// build cannot overwrite it. `Err` carries the failed check.
    async fn build(
        &self,
        manifest: &Manifest,
        worktree: &Path,
        tmp: &Path,
        artifact_dir: &Path,
        log_name: &str,
    ) -> Result<Result<(Check, PathBuf), Check>, Error> {
        let started = Instant::now();
        let limits = Limits {
            wall: self.config.build_timeout,
            memory_mib: self.config.build_memory_mib,
        };
        let log = self.log_path(log_name);
        let outcome = self
            .sandbox
            .run(
                &manifest.build_command,
                worktree,
                tmp,
                &self.build_env(),
                limits,
                &log,
            )
            .await?;
        let command = manifest.build_command.join(" ");
        if !outcome.success() {
            let mut detail = format!("`{command}` failed ({})", outcome.describe(&limits));
            if outcome.sandbox_failed {
                detail.push_str("; the sandbox could not be set up");
            }
            return Ok(Err(failed(
                "build",
                detail,
                replay::tail(&log, self.config.log_tail_lines),
                started,
            )));
        }
        let built = manifest.artifact_path(worktree, &self.target_dir);
        let name = built.file_name().map(ToOwned::to_owned).unwrap_or_default();
        let _ = tokio::fs::remove_dir_all(artifact_dir).await;
        tokio::fs::create_dir_all(artifact_dir)
            .await
            .map_err(Error::io("cannot create the artifact directory"))?;
        let copy = artifact_dir.join(&name);
        if name.is_empty() || tokio::fs::copy(&built, &copy).await.is_err() {
            return Ok(Err(failed(
                "build",
                format!(
                    "`{command}` succeeded but left no artifact at {}",
                    manifest.artifact.display()
                ),
                replay::tail(&log, self.config.log_tail_lines),
                started,
            )));
        }
        Ok(Ok((
            passed("build", format!("`{command}` succeeded"), started),
            copy,
        )))
    }

    /// The unpatched build's answers to the passing requests; built once per commit.
    async fn baseline_answers(
        &self,
        context: &Context<'_>,
        tmp: &Path,
    ) -> Result<Result<Vec<Answer>, String>, Error> {
        let input = context.input;
        let dir = self.config.work_dir.join("baselines").join(&input.commit);
        let name = context
            .manifest
            .artifact
            .file_name()
            .map(ToOwned::to_owned)
            .unwrap_or_default();
        let artifact = dir.join(&name);
        if !tokio::fs::try_exists(&artifact).await.unwrap_or(false) {
            let worktree = &context.worktree;
            // The candidate's worktree is in use; the baseline gets one next to it.
            let baseline_tree = worktree.with_extension("baseline");
            self.add_worktree(&input.repository, &baseline_tree, &input.commit)
                .await?;
            let staging = dir.with_extension("staging");
            let built = self
                .build(
                    &context.manifest,
                    &baseline_tree,
                    tmp,
                    &staging,
                    "baseline-build",
                )
                .await;
            self.remove_worktree(&input.repository, &baseline_tree)
                .await;
            match built? {
                Ok(_) => {
                    let _ = tokio::fs::remove_dir_all(&dir).await;
                    tokio::fs::rename(&staging, &dir)
                        .await
                        .map_err(Error::io("cannot keep the baseline build"))?;
                }
                Err(check) => return Ok(Err(format!("{}: {}", check.detail, check.log_tail))),
            }
        }
        let launch = self.launch(&context.manifest, &artifact, tmp, "baseline-replay");
        Ok(replay::run(&self.sandbox, &launch, input.passing.clone())
            .await
            .map_err(|e| e.to_string()))
    }

    fn launch(&self, manifest: &Manifest, artifact: &Path, tmp: &Path, log: &str) -> Launch {
        Launch {
            argv: manifest.run_argv(artifact),
            cwd: artifact
                .parent()
                .map_or_else(|| tmp.to_path_buf(), Path::to_path_buf),
            tmp: tmp.to_path_buf(),
            port_env: manifest.port_env.clone(),
            health_path: manifest.health_path.clone(),
            memory_mib: self.config.run_memory_mib,
            startup_timeout: self.config.startup_timeout,
            request_timeout: self.config.request_timeout,
            log: self.log_path(log),
        }
    }

    fn build_env(&self) -> Vec<(String, String)> {
        vec![(
            "CARGO_TARGET_DIR".into(),
            self.target_dir.to_string_lossy().into_owned(),
        )]
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.config
            .work_dir
            .join("logs")
            .join(format!("{name}.log"))
    }

    async fn add_worktree(&self, repo: &Path, worktree: &Path, commit: &str) -> Result<(), Error> {
        // A worktree left by a crashed run is removed first.
        if tokio::fs::try_exists(worktree).await.unwrap_or(false) {
            self.remove_worktree(repo, worktree).await;
        }
        let _ = git(repo, &["worktree", "prune"]).await?;
        let arg = worktree.to_string_lossy().into_owned();
        git(
            repo,
            &["worktree", "add", "--detach", "--force", &arg, commit],
        )
        .await?
        .map_err(|stderr| Error::Repository {
            path: repo.to_path_buf(),
            reason: format!("cannot check out {commit}: {stderr}"),
        })?;
        Ok(())
    }

    async fn remove_worktree(&self, repo: &Path, worktree: &Path) {
        let arg = worktree.to_string_lossy().into_owned();
        let removed = git(repo, &["worktree", "remove", "--force", &arg]).await;
        if !matches!(removed, Ok(Ok(_))) {
            let _ = tokio::fs::remove_dir_all(worktree).await;
            let _ = git(repo, &["worktree", "prune"]).await;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn verdict_decision(
        &self,
        context: &Context<'_>,
        candidate: &Candidate,
        summary: &DiffSummary,
        stages: &StageResults,
        factors: &[crate::model::Factor],
        risk: f64,
        outcome: Outcome,
        why: &str,
    ) -> Decision {
        let input = context.input;
        let mut inputs = vec![
            Input {
                name: "candidate".into(),
                value: format!("{} ({})", candidate.id, candidate.strategy.label()),
                note: format!(
                    "{} (the patcher's confidence {:.2})",
                    if candidate.rationale.is_empty() {
                        "no rationale given"
                    } else {
                        &candidate.rationale
                    },
                    candidate.confidence
                ),
            },
            Input {
                name: "diff".into(),
                value: format!(
                    "{} file(s), +{} -{}",
                    summary.files.len(),
                    summary.added,
                    summary.removed
                ),
                note: summary.paths().collect::<Vec<_>>().join(", "),
            },
            Input {
                name: "source".into(),
                value: format!("{}@{}", input.repository.display(), input.commit),
                note: "the deployed stable commit the fix is applied to".into(),
            },
            Input {
                name: "failing_requests".into(),
                value: input.failing.len().to_string(),
                note: "captured requests that failed; each must succeed after the fix".into(),
            },
            Input {
                name: "passing_requests".into(),
                value: input.passing.len().to_string(),
                note: "captured requests that worked; each must get the same answer as the unpatched build gives".into(),
            },
            Input {
                name: "service_criticality".into(),
                value: format!("{:.2}", input.criticality),
                note: "from the service's configuration".into(),
            },
            Input {
                name: "dependents".into(),
                value: input.dependents.to_string(),
                note: "services that call this one (blast radius)".into(),
            },
            Input {
                name: "sandbox".into(),
                value: if self.sandbox.isolates_network() {
                    "network isolated".into()
                } else {
                    "network NOT isolated".into()
                },
                note: format!(
                    "environment passed: {}; CARGO_TARGET_DIR and TMPDIR set by the gate",
                    self.sandbox.inherited_env_names().join(", ")
                ),
            },
        ];
        if !candidate.template.is_empty() {
            inputs.push(Input {
                name: "template".into(),
                value: candidate.template.clone(),
                note: "the rewrite rule that produced the fix".into(),
            });
        }
        let constraints = self.constraints(context);
        let checks: Vec<String> = stages
            .checks
            .iter()
            .map(|c| {
                format!(
                    "{} {}: {}",
                    c.name,
                    match c.status {
                        CheckStatus::Passed => "passed",
                        CheckStatus::Failed => "FAILED",
                        CheckStatus::Skipped => "skipped",
                    },
                    c.detail
                )
            })
            .collect();
        let alternatives = [Outcome::Approve, Outcome::NeedsHuman, Outcome::Reject]
            .into_iter()
            .filter(|o| *o != outcome)
            .map(|o| Alternative {
                option: o.label().into(),
                why_not: format!("not chosen: {why}"),
                score: 0.0,
            })
            .collect();
        let confidence = match (outcome, self.sandbox.isolates_network()) {
            (Outcome::Reject, _) => 0.95,
            (_, false) => 0.5,
            (Outcome::Approve, true) => (0.95 - risk / 2.0).clamp(0.5, 0.95),
            (Outcome::NeedsHuman, true) => 0.6,
        };
        Decision {
            id: uuid::Uuid::now_v7().to_string(),
            subject: format!(
                "may candidate {} ({}) ship for {} (incident {})?",
                candidate.id,
                candidate.strategy.label(),
                input.service,
                input.incident_id
            ),
            inputs,
            factors: factors.to_vec(),
            constraints,
            alternatives,
            outcome: outcome.label().into(),
            reasoning: format!(
                "{}: {why}. Checks: {}. Risk {risk:.2}.",
                outcome.label(),
                checks.join(" | ")
            ),
            confidence,
        }
    }

    fn constraints(&self, context: &Context<'_>) -> Vec<String> {
        let mut constraints = vec![
            format!(
                "approve only when every check passes, no working request changes its answer, the sandbox isolated the network and risk ≤ {:.2}",
                self.config.approve_threshold
            ),
            format!(
                "reject when a check fails or risk > {:.2}",
                self.config.reject_threshold
            ),
            format!("at most {} changed lines", context.limits.max_changed_lines),
            "no dependency manifest or lockfile change, no secret, no new unsafe code".into(),
            format!(
                "builds and tests: no network, {} MiB address space, {} wall time; the service: {} MiB",
                self.config.build_memory_mib,
                humantime::format_duration(self.config.build_timeout),
                self.config.run_memory_mib
            ),
        ];
        if !context.limits.forbidden_paths.is_empty() {
            constraints.push(format!(
                "forbidden paths: {}",
                context.limits.forbidden_paths.join(", ")
            ));
        }
        if !context.limits.allowed_paths.is_empty() {
            constraints.push(format!(
                "allowed paths: {}",
                context.limits.allowed_paths.join(", ")
            ));
        }
        constraints
    }
}

/// Picks the approved candidate with the lowest risk and explains why it beats the others.
fn select(
    input: &Evaluation,
    verdicts: Vec<Verdict>,
    skipped: &[String],
    config: &GateConfig,
) -> Evaluated {
    let best = |outcome: Outcome| {
        verdicts
            .iter()
            .filter(|v| v.outcome == outcome)
            .min_by(|a, b| a.risk.total_cmp(&b.risk))
            .cloned()
    };
    let approved = best(Outcome::Approve);
    let human = best(Outcome::NeedsHuman);
    let (outcome, chosen) = match (&approved, &human) {
        (Some(v), _) => (Outcome::Approve, Some(v.clone())),
        (None, Some(v)) => (Outcome::NeedsHuman, Some(v.clone())),
        (None, None) => (Outcome::Reject, None),
    };
    let mut alternatives: Vec<Alternative> = verdicts
        .iter()
        .filter(|v| {
            chosen
                .as_ref()
                .is_none_or(|c| c.candidate_id != v.candidate_id)
        })
        .map(|v| Alternative {
            option: format!("{} ({})", v.candidate_id, v.strategy.label()),
            why_not: why_not(v, chosen.as_ref()),
            score: 1.0 - v.risk,
        })
        .collect();
    alternatives.extend(skipped.iter().map(|id| Alternative {
        option: id.clone(),
        why_not: format!(
            "not evaluated: only the first {} candidates are (gate.max_candidates)",
            config.max_candidates
        ),
        score: 0.0,
    }));
    let inputs = verdicts
        .iter()
        .map(|v| Input {
            name: v.candidate_id.clone(),
            value: format!("{} (risk {:.2})", v.outcome.label(), v.risk),
            note: v.strategy.label().into(),
        })
        .collect();
    let (decision_outcome, reasoning) = match (&outcome, &chosen) {
        (Outcome::Approve, Some(c)) => (
            format!("ship {}", c.candidate_id),
            format!(
                "{} ({}) is approved with the lowest risk, {:.2}: {}. {}",
                c.candidate_id,
                c.strategy.label(),
                c.risk,
                c.checks
                    .iter()
                    .map(|k| format!("{} passed", k.name))
                    .collect::<Vec<_>>()
                    .join(", "),
                beats(&alternatives)
            ),
        ),
        (Outcome::NeedsHuman, Some(c)) => (
            format!("ask a human to approve {}", c.candidate_id),
            format!(
                "no candidate is approved outright; {} ({}) has the lowest risk, {:.2}, of those that pass every check, but needs a human: {}. {}",
                c.candidate_id,
                c.strategy.label(),
                c.risk,
                c.decision.reasoning,
                beats(&alternatives)
            ),
        ),
        _ => (
            "no candidate may ship".to_owned(),
            format!(
                "every candidate was rejected: {}",
                alternatives
                    .iter()
                    .map(|a| format!("{}: {}", a.option, a.why_not))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ),
    };
    let decision = Decision {
        id: uuid::Uuid::now_v7().to_string(),
        subject: format!(
            "which candidate ships for {} (incident {})",
            input.service, input.incident_id
        ),
        inputs,
        factors: chosen
            .as_ref()
            .map(|c| c.factors.clone())
            .unwrap_or_default(),
        constraints: vec![
            "only an approved candidate ships without a human".into(),
            "among approved candidates the lowest risk wins".into(),
        ],
        alternatives,
        outcome: decision_outcome,
        reasoning,
        confidence: chosen.as_ref().map_or(0.9, |c| c.decision.confidence),
    };
    Evaluated {
        selected: approved.as_ref().map(|v| v.candidate_id.clone()),
        recommended: chosen.map(|v| v.candidate_id),
        outcome,
        verdicts,
        decision,
    }
}

/// Why `other` was not chosen over `chosen`.
fn why_not(other: &Verdict, chosen: Option<&Verdict>) -> String {
    if let Some(check) = other.failed_check() {
        return format!(
            "rejected: the {} check failed: {}",
            check.name, check.detail
        );
    }
    let drops_feature = matches!(
        other.strategy,
        Strategy::FullRevert | Strategy::PartialRevert
    );
    if !other.behaviour_changes.is_empty() {
        let mut text = format!(
            "the {} also passes every check but changes the answers of {} request(s) that worked (e.g. {})",
            other.strategy.label(),
            other.behaviour_changes.len(),
            other.behaviour_changes[0]
        );
        if drops_feature {
            text.push_str(": it drops the feature the commit added");
        }
        return text;
    }
    match chosen {
        Some(c) => format!(
            "{}, risk {:.2} against {:.2} for {}{}",
            other.outcome.label(),
            other.risk,
            c.risk,
            c.candidate_id,
            if drops_feature {
                "; a revert drops what the reverted change added"
            } else {
                ""
            }
        ),
        None => format!("{}, risk {:.2}", other.outcome.label(), other.risk),
    }
}

fn beats(alternatives: &[Alternative]) -> String {
    if alternatives.is_empty() {
        return "It was the only candidate.".into();
    }
    format!(
        "It beats the others: {}.",
        alternatives
            .iter()
            .map(|a| format!("{}: {}", a.option, a.why_not))
            .collect::<Vec<_>>()
            .join("; ")
    )
}

fn passed(name: &'static str, detail: String, started: Instant) -> Check {
    Check {
        name,
        status: CheckStatus::Passed,
        detail,
        duration: started.elapsed(),
        log_tail: String::new(),
    }
}

fn failed(name: &'static str, detail: String, log_tail: String, started: Instant) -> Check {
    Check {
        name,
        status: CheckStatus::Failed,
        detail,
        duration: started.elapsed(),
        log_tail,
    }
}

/// Checks the request before any work: candidates present with unique ids, diffs that parse
/// and stay inside the repository, sane numbers. Returns each candidate's diff summary.
fn validate(input: &Evaluation) -> Result<Vec<DiffSummary>, Error> {
    let invalid = |field: &str, reason: String| Error::InvalidArgument {
        field: field.to_owned(),
        reason,
    };
    if input.candidates.is_empty() {
        return Err(invalid(
            "candidates",
            "at least one candidate is needed".into(),
        ));
    }
    if !(0.0..=1.0).contains(&input.criticality) {
        return Err(invalid(
            "service_criticality",
            format!("{} is not within 0..1", input.criticality),
        ));
    }
    if input.repository.as_os_str().is_empty() {
        return Err(invalid("source.repository", "must not be empty".into()));
    }
    let mut ids = HashSet::new();
    let mut summaries = Vec::with_capacity(input.candidates.len());
    for (i, candidate) in input.candidates.iter().enumerate() {
        if candidate.id.trim().is_empty() {
            return Err(invalid(
                &format!("candidates[{i}].id"),
                "must not be empty".into(),
            ));
        }
        if !ids.insert(candidate.id.as_str()) {
            return Err(invalid(
                &format!("candidates[{i}].id"),
                format!("{:?} is used twice", candidate.id),
            ));
        }
        let summary = diff::parse(&candidate.diff).map_err(|e| {
            invalid(
                &format!("candidates[{i}].diff ({})", candidate.id),
                e.to_string(),
            )
        })?;
        summaries.push(summary);
    }
    for (field, request) in input
        .failing
        .iter()
        .map(|r| ("failing_requests", r))
        .chain(input.passing.iter().map(|r| ("passing_requests", r)))
    {
        if !request.path.starts_with('/') {
            return Err(invalid(
                field,
                format!("path {:?} must start with /", request.path),
            ));
        }
        if request.method.is_empty() || !request.method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(invalid(
                field,
                format!("method {:?} is not an HTTP method", request.method),
            ));
        }
    }
    Ok(summaries)
}

/// The full commit id `commit` names in `repo`.
async fn resolve(repo: &Path, commit: &str) -> Result<String, Error> {
    if !tokio::fs::metadata(repo).await.is_ok_and(|m| m.is_dir()) {
        return Err(Error::Repository {
            path: repo.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    if commit.is_empty() || commit.starts_with('-') || commit.chars().any(char::is_whitespace) {
        return Err(Error::InvalidArgument {
            field: "source.commit".into(),
            reason: format!("{commit:?} is not a revision"),
        });
    }
    let rev = format!("{commit}^{{commit}}");
    match git(repo, &["rev-parse", "--verify", "--quiet", &rev]).await? {
        Ok(sha) => Ok(sha.trim().to_owned()),
        Err(_) => {
            if git(repo, &["rev-parse", "--git-dir"]).await?.is_err() {
                return Err(Error::Repository {
                    path: repo.to_path_buf(),
                    reason: "not a git repository".into(),
                });
            }
            Err(Error::UnknownCommit {
                repository: repo.to_path_buf(),
                commit: commit.to_owned(),
            })
        }
    }
}

/// A directory name for a service: safe characters only.
fn dir_name(service: &str) -> String {
    let name: String = service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "target".into()
    } else {
        name
    }
}

/// Runs git in `dir`: `Ok(Ok(stdout))` on success, `Ok(Err(stderr))` when git refused.
async fn git(dir: &Path, args: &[&str]) -> Result<Result<String, String>, Error> {
    let output = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .args([
            "-c",
            "advice.detachedHead=false",
            "-c",
            "core.hooksPath=/dev/null",
        ])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(Error::io("cannot run git"))?;
    if output.status.success() {
        Ok(Ok(String::from_utf8_lossy(&output.stdout).into_owned()))
    } else {
        Ok(Err(String::from_utf8_lossy(&output.stderr)
            .trim()
            .to_owned()))
    }
}

//! The LLM strategy against a local server speaking the OpenAI chat-completions wire format:
//! a good answer becomes a candidate that applies; malformed JSON, a diff that does not apply,
//! an HTTP 500, an answer without a diff and a hang past the timeout all fall back to the other
//! strategies with a note.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::{applies, git, patcher};
use selfheal_patcher::{Config, LlmConfig};
use selfheal_proto::v1::{
    CodeLocation, Commit, GenerateCandidatesRequest, GenerateCandidatesResponse, PatchStrategy,
    SourceRef,
};
use selfheal_scenario::Scenario;
use serde_json::{Value, json};

/// One request the provider received: its `Authorization` header and its JSON body.
type Seen = (Option<String>, Value);

/// What the fake provider saw and what it answers.
#[derive(Clone)]
struct Provider {
    seen: Arc<Mutex<Vec<Seen>>>,
    good_answer: String,
    stale_answer: String,
}

fn completion(content: &str) -> Value {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "test-model",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 812, "completion_tokens": 64, "total_tokens": 876}
    })
}

async fn chat(
    State(provider): State<Provider>,
    Path(mode): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    provider.seen.lock().unwrap().push((auth, parsed));
    match mode.as_str() {
        "good" => axum::Json(completion(&provider.good_answer)).into_response(),
        "stale" => axum::Json(completion(&provider.stale_answer)).into_response(),
        "prose" => axum::Json(completion("I would add a null check.")).into_response(),
        "malformed" => (
            [("content-type", "application/json")],
            r#"{"id": "chatcmpl-test", "object": "chat.completion", "choices": [{"index": 0, "#,
        )
            .into_response(),
        "error" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(
                json!({"error": {"message": "the model is overloaded", "type": "server_error"}}),
            ),
        )
            .into_response(),
        "hang" => {
            tokio::time::sleep(Duration::from_secs(120)).await;
            axum::Json(completion(&provider.good_answer)).into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    scenario: Scenario,
    provider: Provider,
    base: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let scenario = selfheal_scenario::build(
        &common::examples_dir().join("payment-service"),
        &dir.path().join("repo"),
    )
    .unwrap();
    let file = scenario.bug_file.display().to_string();
    let source = git(
        &scenario.repo,
        &["show", &format!("{}:{file}", scenario.bad_commit)],
    );
    let lines: Vec<&str> = source.lines().collect();
    let at = scenario.bug_line as usize;
    let (before, bug, after) = (lines[at - 2], lines[at - 1], lines[at]);
    assert!(bug.contains(".unwrap()"), "{bug}");
    // A model's answer: prose around a fenced diff whose hunk header counts are wrong.
    let good_answer = format!(
        "The customer may have no preferred method. Fall back to card:\n\n```diff\n--- a/{file}\n+++ b/{file}\n@@ -{start},7 +{start},7 @@\n {before}\n-{bug}\n+{fixed}\n {after}\n```\n\nThis keeps the old behaviour for those customers.\n",
        start = at - 1,
        fixed = bug.replace(".unwrap()", ".unwrap_or(PaymentMethod::Card)"),
    );
    let stale_answer = format!(
        "```diff\n--- a/{file}\n+++ b/{file}\n@@ -10,3 +10,3 @@\n fn this_line_is_not_in_the_file() {{\n-    let method = customer.method.unwrap();\n+    let method = customer.method.unwrap_or_default();\n }}\n```\n"
    );
    let provider = Provider {
        seen: Arc::default(),
        good_answer,
        stale_answer,
    };
    let app = axum::Router::new()
        .route("/{mode}/v1/chat/completions", post(chat))
        .with_state(provider.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Fixture {
        _dir: dir,
        scenario,
        provider,
        base,
        server,
    }
}

fn config(fixture: &Fixture, mode: &str, api_key_env: &str) -> Config {
    Config {
        llm: LlmConfig {
            enabled: true,
            base_url: format!("{}/{mode}/v1", fixture.base),
            model: "test-model".into(),
            api_key_env: api_key_env.into(),
            timeout: Duration::from_secs(1),
            max_tokens: 512,
            max_changed_lines: 20,
        },
        ..Config::default()
    }
}

fn request(scenario: &Scenario) -> GenerateCandidatesRequest {
    GenerateCandidatesRequest {
        incident_id: "inc-llm".into(),
        service: scenario.service.clone(),
        source: Some(SourceRef {
            repository: scenario.repo.display().to_string(),
            commit: scenario.bad_commit.clone(),
        }),
        location: Some(CodeLocation {
            file: scenario.bug_file.display().to_string(),
            line: scenario.bug_line,
            ..Default::default()
        }),
        culprit: Some(Commit {
            sha: scenario.bad_commit.clone(),
            ..Default::default()
        }),
        failure_message: "called `Option::unwrap()` on a `None` value".into(),
        trace_text: "thread 'tokio-runtime-worker' panicked at src/payments.rs:237:52:\ncalled `Option::unwrap()` on a `None` value\nconnect password=hunter2\n".into(),
        ..Default::default()
    }
}

async fn generate(
    config: Config,
    request: GenerateCandidatesRequest,
) -> GenerateCandidatesResponse {
    let (service, mut client) = patcher(config).await;
    let response = client
        .generate_candidates(request)
        .await
        .unwrap()
        .into_inner();
    service.stop().await.unwrap();
    response
}

/// The other strategies still answer in full.
fn assert_fallback_complete(response: &GenerateCandidatesResponse) {
    let strategies: Vec<_> = response.candidates.iter().map(|c| c.strategy()).collect();
    assert!(
        strategies.contains(&PatchStrategy::Template)
            && strategies.contains(&PatchStrategy::PartialRevert),
        "{strategies:?}"
    );
    assert!(!strategies.contains(&PatchStrategy::Llm), "{strategies:?}");
    assert!(
        response.candidates[0]
            .diff
            .contains("unwrap_or(DEFAULT_METHOD)")
    );
}

#[tokio::test]
async fn a_good_answer_becomes_an_llm_candidate_that_applies() {
    let fixture = fixture().await;
    // Cargo sets CARGO_PKG_NAME for test runs: an environment variable that exists, so its value
    // must arrive as the bearer key.
    let key = std::env::var("CARGO_PKG_NAME").expect("cargo sets CARGO_PKG_NAME for tests");
    let response = generate(
        config(&fixture, "good", "CARGO_PKG_NAME"),
        request(&fixture.scenario),
    )
    .await;
    let llm = response
        .candidates
        .iter()
        .find(|c| c.strategy() == PatchStrategy::Llm)
        .unwrap_or_else(|| panic!("no LLM candidate: {:?}", response.notes));
    assert!(
        llm.diff.contains(
            "+    let method = customer.preferred_method.unwrap_or(PaymentMethod::Card);"
        ),
        "{}",
        llm.diff
    );
    assert!(
        llm.diff
            .starts_with("diff --git a/src/payments.rs b/src/payments.rs"),
        "{}",
        llm.diff
    );
    assert_eq!((llm.lines_added, llm.lines_removed), (1, 1));
    assert_eq!(llm.files, ["src/payments.rs"]);
    assert!(llm.rationale.contains("test-model"), "{}", llm.rationale);
    applies(
        &fixture.scenario.repo,
        &fixture.scenario.bad_commit,
        &llm.diff,
    )
    .unwrap();
    assert_eq!(
        response.candidates[0].template, "rust.option_unwrap.unwrap_or",
        "the template still ranks first"
    );

    let seen = fixture.provider.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let (auth, body) = &seen[0];
    assert_eq!(auth.as_deref(), Some(format!("Bearer {key}").as_str()));
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["max_tokens"], 512);
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["messages"][1]["role"], "user");
    let prompt = body["messages"][1]["content"].as_str().unwrap();
    for expected in [
        "called `Option::unwrap()` on a `None` value",
        "panicked at src/payments.rs:237:52",
        ">  237 |     let method = customer.preferred_method.unwrap();",
        "use the customer's preferred payment method",
        "answer with one unified diff only",
        "touch at most 20 lines",
        "no new dependencies",
    ] {
        assert!(
            prompt.contains(expected),
            "{expected:?} in the prompt:\n{prompt}"
        );
    }
    assert!(
        !prompt.contains("hunter2"),
        "secrets are redacted from the prompt"
    );
}

#[tokio::test]
async fn failing_providers_fall_back_to_the_other_strategies_with_a_note() {
    let fixture = fixture().await;
    for (mode, note) in [
        ("malformed", "llm: malformed answer"),
        ("stale", "llm: the answer's diff does not apply to"),
        (
            "error",
            "llm: the provider answered 500 Internal Server Error",
        ),
        ("prose", "llm: the answer holds no unified diff"),
        ("hang", "llm: timed out after 1s"),
    ] {
        let response = generate(config(&fixture, mode, ""), request(&fixture.scenario)).await;
        assert!(
            response.notes.iter().any(|n| n.starts_with(note)),
            "{mode}: {note:?} in {:?}",
            response.notes
        );
        assert_fallback_complete(&response);
    }
    let error = generate(config(&fixture, "error", ""), request(&fixture.scenario)).await;
    assert!(
        error
            .notes
            .iter()
            .any(|n| n.contains("the model is overloaded")),
        "the provider's reason is kept: {:?}",
        error.notes
    );
}

#[tokio::test]
async fn a_missing_key_or_an_exclusion_skips_the_provider() {
    let fixture = fixture().await;
    let response = generate(
        config(&fixture, "good", "SELFHEAL_TEST_UNSET_LLM_KEY"),
        request(&fixture.scenario),
    )
    .await;
    assert!(
        response
            .notes
            .iter()
            .any(|n| n
                == "llm: environment variable SELFHEAL_TEST_UNSET_LLM_KEY is not set; skipped"),
        "{:?}",
        response.notes
    );
    assert_fallback_complete(&response);

    let mut excluded = request(&fixture.scenario);
    excluded.exclude = vec![PatchStrategy::Llm.into()];
    let response = generate(config(&fixture, "good", ""), excluded).await;
    assert!(
        response
            .notes
            .iter()
            .any(|n| n == "llm: excluded by the request")
    );
    assert_fallback_complete(&response);
    assert!(
        fixture.provider.seen.lock().unwrap().is_empty(),
        "the provider is never called"
    );

    // Off by default: no note, no call.
    let response = generate(Config::default(), request(&fixture.scenario)).await;
    assert!(
        !response.notes.iter().any(|n| n.starts_with("llm")),
        "{:?}",
        response.notes
    );
}

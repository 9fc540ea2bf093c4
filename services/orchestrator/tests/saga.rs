//! The saga engine against fake peers (in-process tonic servers), the real audit service on a
//! file store, and — for the lock cases — the real Redis.

mod common;

use std::time::Duration;

use common::{Behaviour, Harness, incident, kinds, payload_str, poll, steps_finished_twice};
use futures::StreamExt;
use selfheal_orchestrator::LockBackend;
use selfheal_orchestrator::lock::{LockStore, RedisLockStore};
use selfheal_proto::v1 as pb;
use selfheal_proto::v1::RecordKind as K;
use selfheal_service::testkit::DEADLINE;

fn redis_lock(config: &mut selfheal_orchestrator::Config, prefix: &str) {
    config.lock.backend = LockBackend::Redis;
    config.lock.redis_url = common::redis_url();
    config.lock.key_prefix = prefix.to_owned();
}

/// The position of the record of `kind` for `step`.
fn position(records: &[pb::AuditRecord], kind: K, step: &str) -> usize {
    records
        .iter()
        .position(|r| r.kind() == kind && r.step == step)
        .unwrap_or_else(|| panic!("no {kind:?} for {step} in {:#?}", kinds(records)))
}

#[tokio::test]
async fn resolves_journaling_every_step_before_the_next_and_releases_the_lock() {
    let prefix = common::unique_prefix();
    let mut h = Harness::start(Behaviour::default(), |c| redis_lock(c, &prefix)).await;
    let reported = h.report(incident("inc-1", "payment-service")).await;
    assert!(!reported.joined);
    let saga = h
        .wait_state(&reported.saga_id, pb::SagaState::Resolved)
        .await;
    assert_eq!(saga.incident_ids, ["inc-1"]);
    assert!(saga.fencing_token > 0);
    assert!(!saga.decisions.is_empty(), "decisions attached");

    let records = h.journal(&reported.saga_id).await;
    let steps = [
        "lock",
        "analyze",
        "plan",
        "patch",
        "gate",
        "deploy",
        "verify",
        "record_fix",
        "release",
    ];
    let mut previous_end = 0;
    for step in steps {
        let start = position(&records, K::StepStarted, step);
        let end = position(&records, K::StepFinished, step);
        assert!(start < end, "{step} starts before it ends");
        assert!(
            previous_end <= start,
            "{step} starts after the previous step ended"
        );
        previous_end = end;
    }
    let last = records.last().unwrap();
    assert_eq!(last.kind(), K::SagaState);
    assert_eq!(payload_str(last, "state"), "RESOLVED");
    assert!(steps_finished_twice(&records).is_empty());
    for kind in [
        pb::DecisionKind::RootCause,
        pb::DecisionKind::FixPlan,
        pb::DecisionKind::SafetyGate,
        pb::DecisionKind::Verification,
    ] {
        assert!(
            records.iter().any(|r| r.kind() == K::Decision
                && r.decision.as_ref().is_some_and(|d| d.kind() == kind)),
            "decision {kind:?} journaled"
        );
    }

    // The deploy carried the lease's token and the step's key, and the fix was recorded.
    let deploys = h.fakes.calls("Deploy");
    assert_eq!(deploys.len(), 1);
    assert_eq!(deploys[0].token, saga.fencing_token);
    assert_eq!(deploys[0].key, format!("{}:deploy", reported.saga_id));
    assert_eq!(h.fakes.calls("RecordFix")[0].key, "template");
    assert_eq!(
        h.fakes.calls("RecordDeployment").len(),
        2,
        "previous and current stable"
    );
    assert!(
        h.fakes.calls("Rollback").is_empty(),
        "nothing to compensate"
    );

    let store =
        RedisLockStore::connect(&common::redis_url(), &prefix, Duration::from_secs(2)).unwrap();
    assert_eq!(
        store.holder("payment-service").await.unwrap(),
        None,
        "lock released"
    );
}

#[tokio::test]
async fn a_second_incident_of_the_service_joins_the_running_saga() {
    let mut h = Harness::start(
        Behaviour {
            hold_gate: true,
            ..Behaviour::default()
        },
        |_| {},
    )
    .await;
    let first = h.report(incident("inc-a", "cart")).await;
    h.fakes.wait_calls("Evaluate", 1).await;
    let second = h.report(incident("inc-b", "cart")).await;
    assert!(second.joined);
    assert_eq!(second.saga_id, first.saga_id);
    // Reporting the same incident again gives the same answer.
    let again = h.report(incident("inc-b", "cart")).await;
    assert_eq!(
        (again.saga_id.as_str(), again.joined),
        (first.saga_id.as_str(), true)
    );
    let by_incident = common::get(&mut h.client, "inc-b").await;
    assert_eq!(by_incident.id, first.saga_id);
    assert_eq!(by_incident.incident_ids, ["inc-a", "inc-b"]);

    h.fakes.state.gate_permits.add_permits(1);
    h.wait_state(&first.saga_id, pb::SagaState::Resolved).await;
    assert_eq!(
        h.fakes.calls("Analyze").len(),
        1,
        "one saga for the service"
    );
    let records = h.journal(&first.saga_id).await;
    assert!(
        records
            .iter()
            .any(|r| r.kind() == K::Note && r.incident_id == "inc-b")
    );
}

#[tokio::test]
async fn sagas_of_different_services_run_in_parallel_up_to_the_bound() {
    let mut h = Harness::start(
        Behaviour {
            hold_analyze: true,
            ..Behaviour::default()
        },
        |c| {
            c.saga.max_parallel = 2;
        },
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(
            h.report(incident(&format!("inc-{n}"), &format!("svc-{n}")))
                .await
                .saga_id,
        );
    }
    h.fakes.wait_calls("Analyze", 2).await;
    let listed = h
        .client
        .list_sagas(pb::ListSagasRequest {
            state: pb::SagaState::Detected.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .sagas;
    assert_eq!(listed.len(), 2, "two sagas queue in DETECTED: {listed:#?}");
    assert_eq!(h.fakes.calls("Analyze").len(), 2, "no third saga runs");

    h.fakes.state.analyze_permits.add_permits(4);
    for id in &ids {
        h.wait_state(id, pb::SagaState::Resolved).await;
    }
    assert_eq!(
        h.fakes
            .state
            .max_analyzing
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    let only_svc_1 = h
        .client
        .list_sagas(pb::ListSagasRequest {
            service: "svc-1".into(),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .sagas;
    assert_eq!(only_svc_1.len(), 1);
}

#[tokio::test]
async fn candidates_touching_the_same_files_deploy_one_after_the_other() {
    let behaviour = Behaviour {
        shared_repository: Some("/repos/monorepo".into()),
        hold_deploy: true,
        ..Behaviour::default()
    };
    let mut h = Harness::start(behaviour, |_| {}).await;
    let first = h.report(incident("inc-1", "orders")).await;
    h.fakes.wait_calls("Deploy", 1).await;
    let second = h.report(incident("inc-2", "billing")).await;
    // The second saga reaches DEPLOYING and waits for the first, without calling Deploy.
    let waiting = poll(DEADLINE, || {
        let mut client = h.client.clone();
        let id = second.saga_id.clone();
        async move {
            let mut events = client
                .watch_saga(pb::WatchSagaRequest { id })
                .await
                .unwrap()
                .into_inner();
            while let Some(Ok(response)) =
                tokio::time::timeout(Duration::from_millis(200), events.next())
                    .await
                    .ok()
                    .flatten()
            {
                let event = response.event.unwrap();
                if event.message.contains("touches the same files") {
                    return Some(event);
                }
            }
            None
        }
    })
    .await;
    assert!(
        waiting.message.contains(&first.saga_id),
        "{}",
        waiting.message
    );
    assert_eq!(
        h.fakes.calls("Deploy").len(),
        1,
        "no second deploy while the first runs"
    );

    h.fakes.state.deploy_permits.add_permits(2);
    h.wait_state(&first.saga_id, pb::SagaState::Resolved).await;
    h.wait_state(&second.saga_id, pb::SagaState::Resolved).await;
    let deploys = h.fakes.calls("Deploy");
    let first_done = h.fakes.calls("DeployDone")[0].at;
    assert_eq!(deploys.len(), 2);
    assert_eq!(deploys[1].service, "billing");
    assert!(
        deploys[1].at >= first_done,
        "billing deployed after orders finished"
    );
}

#[tokio::test]
async fn needs_human_waits_for_approve_then_resolves() {
    let mut h = Harness::start(
        Behaviour {
            gate: pb::GateOutcome::NeedsHuman,
            ..Behaviour::default()
        },
        |_| {},
    )
    .await;
    let reported = h.report(incident("inc-h", "search")).await;
    h.wait_state(&reported.saga_id, pb::SagaState::AwaitingApproval)
        .await;
    assert!(h.fakes.calls("Deploy").is_empty());
    // Approving a saga that waits for nobody is refused.
    let refused = h
        .client
        .approve(pb::ApproveRequest {
            saga_id: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);

    let approved = h
        .client
        .approve(pb::ApproveRequest {
            saga_id: reported.saga_id.clone(),
            approver: "ana".into(),
            comment: "looks right".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(approved.state(), pb::SagaState::AwaitingApproval);
    h.wait_state(&reported.saga_id, pb::SagaState::Resolved)
        .await;
    assert_eq!(
        h.fakes.calls("Deploy")[0].key,
        format!("{}:deploy", reported.saga_id)
    );
    let records = h.journal(&reported.saga_id).await;
    assert!(
        records
            .iter()
            .any(|r| r.kind() == K::Note && payload_str(r, "approved_by") == "ana")
    );
}

#[tokio::test]
async fn abort_during_the_rollout_compensates_with_a_rollback() {
    let mut h = Harness::start(
        Behaviour {
            hold_deploy: true,
            ..Behaviour::default()
        },
        |_| {},
    )
    .await;
    let reported = h.report(incident("inc-x", "inventory")).await;
    h.fakes.wait_calls("Deploy", 1).await;
    let aborted = h
        .client
        .abort(pb::AbortRequest {
            saga_id: reported.saga_id.clone(),
            actor: "oncall".into(),
            reason: "manual fix".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(aborted.state(), pb::SagaState::Aborted);
    let saga = common::get(&mut h.client, &reported.saga_id).await;
    assert!(
        saga.outcome.contains("oncall") && saga.outcome.contains("manual fix"),
        "{}",
        saga.outcome
    );
    let rollbacks = h.fakes.calls("Rollback");
    assert_eq!(rollbacks.len(), 1);
    assert_eq!(
        rollbacks[0].key,
        format!("{}:compensate:deploy", reported.saga_id)
    );
    assert_eq!(rollbacks[0].token, saga.fencing_token);
    let records = h.journal(&reported.saga_id).await;
    let compensation = position(&records, K::Compensation, "deploy");
    assert!(position(&records, K::StepStarted, "deploy") < compensation);
    assert_eq!(payload_str(records.last().unwrap(), "state"), "ABORTED");
    // A finished saga cannot be aborted again.
    let again = h
        .client
        .abort(pb::AbortRequest {
            saga_id: reported.saga_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test]
async fn escalation_posts_the_report_and_pauses_the_service_until_acknowledged() {
    let (url, received) = common::webhook(1).await;
    let mut h = Harness::start(
        Behaviour {
            confidence: 0.3,
            ..Behaviour::default()
        },
        |c| {
            c.escalation.webhook_url = url.clone();
            c.escalation.timeout = Duration::from_secs(2);
        },
    )
    .await;
    let first = h.report(incident("inc-e1", "ledger")).await;
    let saga = h.wait_state(&first.saga_id, pb::SagaState::Escalated).await;
    assert!(saga.outcome.contains("confidence"), "{}", saga.outcome);
    let report = poll(DEADLINE, || {
        let received = received.clone();
        async move { received.lock().unwrap().first().cloned() }
    })
    .await;
    assert_eq!(report["saga_id"], first.saga_id);
    assert_eq!(report["incident"]["id"], "inc-e1");
    assert!(report["reason"].as_str().unwrap().contains("confidence"));
    assert_eq!(report["evidence"]["top_cause"]["kind"], "code_defect");
    assert!(
        report["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["kind"] == "Escalation")
    );
    assert!(
        h.fakes.calls("GenerateCandidates").is_empty(),
        "nothing patched"
    );

    // While escalated, a new incident of the service is recorded but not acted on.
    let paused = h.report(incident("inc-e2", "ledger")).await;
    assert_ne!(paused.saga_id, first.saga_id);
    let paused_saga = h
        .wait_state(&paused.saga_id, pb::SagaState::Escalated)
        .await;
    assert!(
        paused_saga.outcome.contains("automation paused"),
        "{}",
        paused_saga.outcome
    );
    assert_eq!(h.fakes.calls("Analyze").len(), 1);

    h.client
        .approve(pb::ApproveRequest {
            saga_id: first.saga_id.clone(),
            approver: "lead".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    h.fakes.set(|b| b.confidence = 0.95);
    let third = h.report(incident("inc-e3", "ledger")).await;
    h.wait_state(&third.saga_id, pb::SagaState::Resolved).await;
}

#[tokio::test]
async fn a_canary_the_deployer_rolled_back_ends_rolled_back_with_its_compensation_recorded() {
    let mut h = Harness::start(
        Behaviour {
            deploy_outcome: pb::RolloutEventKind::RolledBack,
            ..Behaviour::default()
        },
        |_| {},
    )
    .await;
    let reported = h.report(incident("inc-r", "profile")).await;
    let saga = h
        .wait_state(&reported.saga_id, pb::SagaState::RolledBack)
        .await;
    assert!(saga.outcome.contains("rolled_back"), "{}", saga.outcome);
    assert!(
        h.fakes.calls("Rollback").is_empty(),
        "the deployer already returned traffic; no second rollback"
    );
    assert!(h.fakes.calls("Verify").is_empty());
    let records = h.journal(&reported.saga_id).await;
    let compensation = &records[position(&records, K::Compensation, "deploy")];
    assert_eq!(payload_str(compensation, "by"), "deployer");
    assert_eq!(payload_str(records.last().unwrap(), "state"), "ROLLED_BACK");
    let deploy = saga.steps.iter().find(|s| s.name == "deploy").unwrap();
    assert_eq!(deploy.status(), pb::StepStatus::Compensated);
}

#[tokio::test]
async fn a_rolled_back_saga_posts_the_report_and_pauses_the_service_until_acknowledged() {
    let (url, received) = common::webhook(0).await;
    let mut h = Harness::start(
        Behaviour {
            deploy_outcome: pb::RolloutEventKind::RolledBack,
            ..Behaviour::default()
        },
        |c| {
            c.escalation.webhook_url = url.clone();
            c.escalation.timeout = Duration::from_secs(2);
        },
    )
    .await;
    let first = h.report(incident("inc-rb1", "billing")).await;
    let saga = h
        .wait_state(&first.saga_id, pb::SagaState::RolledBack)
        .await;
    assert!(
        saga.decisions
            .iter()
            .any(|d| d.kind() == pb::DecisionKind::Escalation),
        "{:?}",
        saga.decisions
    );
    let report = poll(DEADLINE, || {
        let received = received.clone();
        async move { received.lock().unwrap().first().cloned() }
    })
    .await;
    assert_eq!(report["saga_id"], first.saga_id);
    assert_eq!(report["state"], "ROLLED_BACK");
    assert_eq!(report["incident"]["id"], "inc-rb1");
    let records = h.journal(&first.saga_id).await;
    assert_eq!(payload_str(records.last().unwrap(), "state"), "ROLLED_BACK");
    assert!(
        records
            .iter()
            .any(|r| r.kind() == K::Note && payload_str(r, "escalation_report") == "delivered")
    );

    // The service still fails: a new incident is recorded but not acted on until a person
    // acknowledges the rollback.
    let paused = h.report(incident("inc-rb2", "billing")).await;
    let paused_saga = h
        .wait_state(&paused.saga_id, pb::SagaState::Escalated)
        .await;
    assert!(
        paused_saga.outcome.contains("automation paused"),
        "{}",
        paused_saga.outcome
    );
    assert_eq!(h.fakes.calls("Deploy").len(), 1);
    // The detector reporting the first incident again changes nothing while paused.
    let repeated = h.report(incident("inc-rb1", "billing")).await;
    assert_eq!(repeated.saga_id, first.saga_id);
    let acknowledged = h
        .client
        .approve(pb::ApproveRequest {
            saga_id: first.saga_id.clone(),
            approver: "lead".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acknowledged.state(), pb::SagaState::RolledBack);
    h.fakes
        .set(|b| b.deploy_outcome = pb::RolloutEventKind::Promoted);
    // Once acknowledged, the still-failing incident reported again gets a new saga.
    let retried = h.report(incident("inc-rb1", "billing")).await;
    assert_ne!(retried.saga_id, first.saga_id);
    assert!(!retried.joined);
    h.wait_state(&retried.saga_id, pb::SagaState::Resolved)
        .await;
    assert_eq!(h.fakes.calls("Deploy").len(), 2);
    // A resolved saga stands for its incident: reporting it again is answered, not acted on.
    let again = h.report(incident("inc-rb1", "billing")).await;
    assert_eq!(again.saga_id, retried.saga_id);
    let third = h.report(incident("inc-rb3", "billing")).await;
    h.wait_state(&third.saga_id, pb::SagaState::Resolved).await;
}

#[tokio::test]
async fn errors_persisting_after_promotion_roll_back() {
    let mut h = Harness::start(
        Behaviour {
            healthy: false,
            ..Behaviour::default()
        },
        |_| {},
    )
    .await;
    let reported = h.report(incident("inc-v", "email")).await;
    h.wait_state(&reported.saga_id, pb::SagaState::RolledBack)
        .await;
    let rollbacks = h.fakes.calls("Rollback");
    assert_eq!(rollbacks.len(), 1);
    assert_eq!(
        rollbacks[0].key,
        format!("{}:compensate:deploy", reported.saga_id)
    );
    assert!(h.fakes.calls("RecordFix").is_empty());
}

#[tokio::test]
async fn a_bad_deploy_without_a_location_returns_to_the_previous_stable() {
    let behaviour = Behaviour {
        cause_kind: pb::CauseKind::BadDeploy,
        located: false,
        ..Behaviour::default()
    };
    let mut h = Harness::start(behaviour, |_| {}).await;
    let reported = h.report(incident("inc-b", "gateway")).await;
    let saga = h
        .wait_state(&reported.saga_id, pb::SagaState::Resolved)
        .await;
    assert!(h.fakes.calls("GenerateCandidates").is_empty() && h.fakes.calls("Deploy").is_empty());
    let rollbacks = h.fakes.calls("Rollback");
    assert_eq!(rollbacks.len(), 1);
    assert_eq!(rollbacks[0].key, format!("{}:rollback", reported.saga_id));
    assert_eq!(h.fakes.calls("RecordFix")[0].key, "rollback");
    assert!(
        saga.decisions
            .iter()
            .any(|d| d.kind() == pb::DecisionKind::FixPlan && d.outcome.contains("roll back"))
    );
}

#[tokio::test]
async fn losing_the_lease_stops_the_saga_and_compensates() {
    let prefix = common::unique_prefix();
    let mut h = Harness::start(
        Behaviour {
            hold_gate: true,
            ..Behaviour::default()
        },
        |c| {
            redis_lock(c, &prefix);
            c.lock.ttl = Duration::from_millis(900);
        },
    )
    .await;
    let reported = h.report(incident("inc-l", "payments")).await;
    h.fakes.wait_calls("Evaluate", 1).await;
    // Someone deletes the lease; the next renewal finds it gone.
    let client = redis::Client::open(common::redis_url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let deleted: i64 = redis::cmd("DEL")
        .arg(format!("{prefix}lock:payments"))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let saga = poll(DEADLINE, || {
        let mut client = h.client.clone();
        let id = reported.saga_id.clone();
        async move {
            Some(common::get(&mut client, &id).await)
                .filter(|s| s.state() == pb::SagaState::Aborted)
        }
    })
    .await;
    assert!(saga.outcome.contains("lease lost"), "{}", saga.outcome);
    h.fakes.state.gate_permits.add_permits(1);
    assert!(
        h.fakes.calls("Deploy").is_empty(),
        "no deploy without the lease"
    );
    let records = h.journal(&reported.saga_id).await;
    assert!(
        records
            .iter()
            .any(|r| r.kind() == K::Note && payload_str(r, "stopping").contains("lease lost"))
    );
    assert_eq!(payload_str(records.last().unwrap(), "state"), "ABORTED");
}

#[tokio::test]
async fn redis_going_away_mid_saga_fails_closed_without_deploying() {
    let (proxy, link) = common::redis_proxy().await;
    let prefix = common::unique_prefix();
    let mut h = Harness::start(
        Behaviour {
            hold_gate: true,
            ..Behaviour::default()
        },
        |c| {
            redis_lock(c, &prefix);
            c.lock.redis_url = proxy.clone();
            c.lock.ttl = Duration::from_secs(2);
            c.lock.timeout = Duration::from_millis(300);
        },
    )
    .await;
    let reported = h.report(incident("inc-g", "checkout")).await;
    h.fakes.wait_calls("Evaluate", 1).await;
    link.cut();
    h.fakes.state.gate_permits.add_permits(1);
    let saga = poll(DEADLINE, || {
        let mut client = h.client.clone();
        let id = reported.saga_id.clone();
        async move {
            Some(common::get(&mut client, &id).await)
                .filter(|s| s.state() == pb::SagaState::Aborted)
        }
    })
    .await;
    assert!(
        saga.outcome.contains("lock") || saga.outcome.contains("lease"),
        "{}",
        saga.outcome
    );
    assert!(
        h.fakes.calls("Deploy").is_empty(),
        "no Deploy call without a lock"
    );
}

#[tokio::test]
async fn an_unreachable_journal_stops_the_saga_before_the_next_step() {
    let mut h = Harness::start(
        Behaviour {
            hold_gate: true,
            ..Behaviour::default()
        },
        |c| {
            c.saga.deadlines.journal = Duration::from_millis(800);
        },
    )
    .await;
    let reported = h.report(incident("inc-j", "notify")).await;
    h.fakes.wait_calls("Evaluate", 1).await;
    let audit = std::mem::replace(
        &mut h.audit,
        common::start_audit(tempfile::tempdir().unwrap().path()).await,
    );
    audit.stop().await.unwrap();
    h.fakes.state.gate_permits.add_permits(1);
    let saga = poll(DEADLINE, || {
        let mut client = h.client.clone();
        let id = reported.saga_id.clone();
        async move {
            Some(common::get(&mut client, &id).await)
                .filter(|s| s.state() == pb::SagaState::Aborted)
        }
    })
    .await;
    assert!(saga.outcome.contains("journal"), "{}", saga.outcome);
    assert!(
        h.fakes.calls("Deploy").is_empty(),
        "nothing runs unrecorded"
    );
}

#[tokio::test]
async fn watch_streams_past_events_then_live_ones_and_ends_with_the_saga() {
    let mut h = Harness::start(
        Behaviour {
            hold_deploy: true,
            ..Behaviour::default()
        },
        |_| {},
    )
    .await;
    let reported = h.report(incident("inc-w", "catalog")).await;
    h.fakes.wait_calls("Deploy", 1).await;
    let mut events = h
        .client
        .watch_saga(pb::WatchSagaRequest { id: "inc-w".into() })
        .await
        .unwrap()
        .into_inner();
    h.fakes.state.deploy_permits.add_permits(1);
    let collected = tokio::time::timeout(DEADLINE, async {
        let mut collected = Vec::new();
        while let Some(event) = events.next().await {
            collected.push(event.unwrap().event.unwrap());
        }
        collected
    })
    .await
    .expect("the stream ends when the saga ends");
    assert_eq!(collected.first().unwrap().step, "lock", "past events first");
    assert!(
        collected.iter().any(|e| e.message.contains("PROMOTED")),
        "rollout events"
    );
    assert_eq!(collected.last().unwrap().state(), pb::SagaState::Resolved);
    assert!(collected.iter().all(|e| e.saga_id == reported.saga_id));
}

#[tokio::test]
async fn bad_requests_are_invalid_arguments() {
    let mut h = Harness::start(Behaviour::default(), |_| {}).await;
    let bad = |incident: pb::Incident| {
        let mut client = h.client.clone();
        async move {
            client
                .report_incident(pb::ReportIncidentRequest {
                    incident: Some(incident),
                })
                .await
                .unwrap_err()
                .code()
        }
    };
    assert_eq!(bad(incident("", "svc")).await, tonic::Code::InvalidArgument);
    assert_eq!(bad(incident("i", "")).await, tonic::Code::InvalidArgument);
    assert_eq!(
        bad(incident("i", "two words")).await,
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        bad(pb::Incident {
            signal: 99,
            ..incident("i", "svc")
        })
        .await,
        tonic::Code::InvalidArgument
    );
    let missing = h
        .client
        .report_incident(pb::ReportIncidentRequest { incident: None })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::InvalidArgument);
    let unknown = h
        .client
        .get_saga(pb::GetSagaRequest {
            id: "nothing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let state = h
        .client
        .list_sagas(pb::ListSagasRequest {
            state: 77,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(state.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn no_candidate_or_every_candidate_rejected_escalates_without_deploying() {
    let mut h = Harness::start(
        Behaviour {
            candidates: 0,
            ..Behaviour::default()
        },
        |_| {},
    )
    .await;
    let none = h.report(incident("inc-n", "fraud")).await;
    let saga = h.wait_state(&none.saga_id, pb::SagaState::Escalated).await;
    assert!(saga.outcome.contains("no candidate"), "{}", saga.outcome);
    assert!(h.fakes.calls("Evaluate").is_empty());

    h.fakes.set(|b| {
        b.candidates = 2;
        b.gate = pb::GateOutcome::Reject;
    });
    let rejected = h.report(incident("inc-rj", "risk")).await;
    let saga = h
        .wait_state(&rejected.saga_id, pb::SagaState::Escalated)
        .await;
    assert!(saga.outcome.contains("rejected"), "{}", saga.outcome);
    assert!(h.fakes.calls("Deploy").is_empty());
}

//! Killing the orchestrator mid-saga (its runtime dropped, nothing cleaned up) and starting a new
//! one against the same audit service: the saga continues from the journal and completes, and
//! no step finishes twice.

mod common;

use std::time::Duration;

use common::{Behaviour, Fakes, incident, kinds, payload_str, steps_finished_twice};
use selfheal_orchestrator::{Config, LockBackend};
use selfheal_proto::v1 as pb;
use selfheal_proto::v1::orchestrator_client::OrchestratorClient;
use selfheal_service::Listeners;
use selfheal_service::testkit::wait_serving;
use tokio_util::sync::CancellationToken;

/// Runs an orchestrator in a runtime of its own, so the test can kill it by dropping that runtime.
async fn start_in_own_runtime(config: Config) -> (tokio::runtime::Runtime, String) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (bound, address) = tokio::sync::oneshot::channel();
    runtime.spawn(async move {
        let listeners = Listeners::ephemeral().await.unwrap();
        bound.send(listeners.grpc_addr()).unwrap();
        let _ = selfheal_orchestrator::run(config, listeners, CancellationToken::new()).await;
    });
    let address = address.await.unwrap();
    wait_serving(address, selfheal_proto::service_names::ORCHESTRATOR).await;
    (runtime, format!("http://{address}"))
}

fn restart_config(fakes_url: &str, audit_url: &str, prefix: &str) -> Config {
    let mut config = common::config(fakes_url, audit_url);
    config.lock.backend = LockBackend::Redis;
    config.lock.redis_url = common::redis_url();
    config.lock.key_prefix = prefix.to_owned();
    config.lock.ttl = Duration::from_secs(1);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_killed_mid_deploy_completes_after_a_restart_without_any_step_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (fakes, fakes_url) = Fakes::start(Behaviour {
        hold_deploy: true,
        ..Behaviour::default()
    })
    .await;
    let audit = common::start_audit(dir.path()).await;
    let prefix = common::unique_prefix();
    let config = restart_config(&fakes_url, &audit.grpc_url(), &prefix);

    let (first, url) = start_in_own_runtime(config.clone()).await;
    let mut client = OrchestratorClient::new(common::channel(&url).await);
    let saga_id = common::report(&mut client, incident("inc-crash", "payment-service"))
        .await
        .saga_id;
    let deploy = fakes.wait_calls("Deploy", 1).await.remove(0);
    // Crash: every task of the first orchestrator is dropped where it is; its lease lapses.
    first.shutdown_background();

    let second = common::start_orchestrator(config).await;
    let mut client = OrchestratorClient::new(common::channel(&second.grpc_url()).await);
    // The rebuilt saga takes a new lease and repeats the started deploy with the same key.
    let replay = fakes.wait_calls("DeployReplay", 1).await.remove(0);
    assert_eq!(replay.key, deploy.key, "same idempotency key");
    assert!(
        replay.token > deploy.token,
        "a new lease, a higher fencing token"
    );
    fakes.state.deploy_permits.add_permits(1);
    let saga = common::wait_state(&mut client, &saga_id, pb::SagaState::Resolved).await;
    assert_eq!(saga.incident_ids, ["inc-crash"]);

    assert_eq!(
        fakes.calls("Deploy").len(),
        1,
        "the rollout took effect once"
    );
    assert_eq!(
        fakes.calls("Analyze").len(),
        1,
        "finished steps are not run again"
    );
    assert_eq!(fakes.calls("GenerateCandidates").len(), 1);
    assert_eq!(fakes.calls("Evaluate").len(), 1);
    let records = common::journal(&audit.grpc_url(), &saga_id).await;
    assert!(
        steps_finished_twice(&records).is_empty(),
        "{:#?}",
        kinds(&records)
    );
    let started_deploys = records
        .iter()
        .filter(|r| r.kind() == pb::RecordKind::StepStarted && r.step == "deploy")
        .count();
    assert_eq!(
        started_deploys, 1,
        "the re-run reuses the start record's key"
    );
    assert!(records.iter().any(
        |r| r.kind() == pb::RecordKind::Note && payload_str(r, "lease").contains("re-acquired")
    ));
    assert_eq!(payload_str(records.last().unwrap(), "state"), "RESOLVED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_killed_while_awaiting_approval_still_waits_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let behaviour = Behaviour {
        gate: pb::GateOutcome::NeedsHuman,
        ..Behaviour::default()
    };
    let (fakes, fakes_url) = Fakes::start(behaviour).await;
    let audit = common::start_audit(dir.path()).await;
    let config = restart_config(&fakes_url, &audit.grpc_url(), &common::unique_prefix());

    let (first, url) = start_in_own_runtime(config.clone()).await;
    let mut client = OrchestratorClient::new(common::channel(&url).await);
    let saga_id = common::report(&mut client, incident("inc-wait", "search"))
        .await
        .saga_id;
    common::wait_state(&mut client, &saga_id, pb::SagaState::AwaitingApproval).await;
    first.shutdown_background();

    let second = common::start_orchestrator(config).await;
    let mut client = OrchestratorClient::new(common::channel(&second.grpc_url()).await);
    common::wait_state(&mut client, &saga_id, pb::SagaState::AwaitingApproval).await;
    // Approval reaches the resumed saga once it holds the lease again.
    common::poll(selfheal_service::testkit::DEADLINE, || {
        let mut client = client.clone();
        let saga_id = saga_id.clone();
        async move {
            client
                .approve(pb::ApproveRequest {
                    saga_id,
                    approver: "ana".into(),
                    ..Default::default()
                })
                .await
                .ok()
        }
    })
    .await;
    common::wait_state(&mut client, &saga_id, pb::SagaState::Resolved).await;
    assert_eq!(
        fakes.calls("Evaluate").len(),
        1,
        "the gate is not asked again"
    );
    assert_eq!(fakes.calls("Deploy").len(), 1);
    let records = common::journal(&audit.grpc_url(), &saga_id).await;
    assert!(steps_finished_twice(&records).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_killed_while_compensating_an_abort_finishes_compensating_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let behaviour = Behaviour {
        hold_deploy: true,
        hold_rollback: true,
        ..Behaviour::default()
    };
    let (fakes, fakes_url) = Fakes::start(behaviour).await;
    let audit = common::start_audit(dir.path()).await;
    let config = restart_config(&fakes_url, &audit.grpc_url(), &common::unique_prefix());

    let (first, url) = start_in_own_runtime(config.clone()).await;
    let mut client = OrchestratorClient::new(common::channel(&url).await);
    let saga_id = common::report(&mut client, incident("inc-abort", "orders"))
        .await
        .saga_id;
    fakes.wait_calls("Deploy", 1).await;
    let abort = {
        let mut client = client.clone();
        let saga_id = saga_id.clone();
        tokio::spawn(async move {
            client
                .abort(pb::AbortRequest {
                    saga_id,
                    actor: "oncall".into(),
                    reason: "wrong fix".into(),
                })
                .await
        })
    };
    // The compensation is under way (the rollback hangs); the orchestrator dies.
    fakes.wait_calls("Rollback", 1).await;
    first.shutdown_background();
    abort.abort();

    let second = common::start_orchestrator(config).await;
    let mut client = OrchestratorClient::new(common::channel(&second.grpc_url()).await);
    let again = fakes.wait_calls("Rollback", 2).await;
    assert_eq!(
        again[0].key, again[1].key,
        "the same compensation, the same key"
    );
    assert!(again[1].token > again[0].token, "under the new lease");
    fakes.state.rollback_permits.add_permits(2);
    let saga = common::wait_state(&mut client, &saga_id, pb::SagaState::Aborted).await;
    assert!(saga.outcome.contains("wrong fix"), "{}", saga.outcome);
    let records = common::journal(&audit.grpc_url(), &saga_id).await;
    let compensations = records
        .iter()
        .filter(|r| r.kind() == pb::RecordKind::Compensation && r.step == "deploy")
        .count();
    assert_eq!(compensations, 1);
    assert!(steps_finished_twice(&records).is_empty());
    assert_eq!(payload_str(records.last().unwrap(), "state"), "ABORTED");
}

//! The behaviour every [`GraphStore`] must have. Run against [`super::EmbeddedGraph`] in
//! `tests/graph_embedded.rs` and against a real Neo4j in `tests/graph_neo4j.rs`. Every service,
//! incident and commit name starts with `prefix`, so runs sharing one server never collide.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{
    CallEdge, CauseKind, CommitRecord, DeploymentRecord, FixQuery, FixRecord, GraphStore,
    IncidentRecord,
};

/// Runs every check; names start with `prefix`.
pub async fn run_all<S: GraphStore + ?Sized>(store: &S, prefix: &str) {
    topology_is_a_set_of_calls_edges(store, prefix).await;
    deployments_are_idempotent_and_answer_windows_newest_first(store, prefix).await;
    commits_come_with_their_deployment(store, prefix).await;
    past_fixes_match_service_or_cause_kind_newest_first(store, prefix).await;
    describe_names_the_store(store);
}

/// A fixed instant, whole seconds so every store keeps it exactly.
fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_750_000_000 + seconds)
}

async fn topology_is_a_set_of_calls_edges<S: GraphStore + ?Sized>(store: &S, prefix: &str) {
    let name = |s: &str| format!("{prefix}-topo-{s}");
    let (checkout, payment, customer, fraud) = (
        name("checkout"),
        name("payment"),
        name("customer"),
        name("fraud"),
    );
    let edges = vec![
        CallEdge::new(&checkout, &payment),
        CallEdge::new(&payment, &customer),
        CallEdge::new(&payment, &fraud),
        CallEdge::new(&checkout, &payment),
    ];
    store.record_calls(&edges).await.expect("edges recorded");
    // Recording again adds nothing.
    store
        .record_calls(&edges)
        .await
        .expect("edges recorded again");
    store.record_calls(&[]).await.expect("nothing to record");

    let mine: Vec<CallEdge> = store
        .topology()
        .await
        .expect("topology")
        .into_iter()
        .filter(|e| e.caller.starts_with(&name("")))
        .collect();
    let mut expected = vec![
        CallEdge::new(&checkout, &payment),
        CallEdge::new(&payment, &customer),
        CallEdge::new(&payment, &fraud),
    ];
    expected.sort();
    assert_eq!(mine, expected, "one edge per pair, sorted");

    assert_eq!(
        store.callees(&payment).await.expect("callees"),
        vec![customer.clone(), fraud.clone()]
    );
    assert_eq!(
        store.dependents(&payment).await.expect("dependents"),
        vec![checkout.clone()]
    );
    assert!(store.callees(&customer).await.expect("callees").is_empty());
    assert!(
        store
            .dependents(&checkout)
            .await
            .expect("dependents")
            .is_empty()
    );
    assert!(
        store
            .dependents(&name("unknown"))
            .await
            .expect("an unknown service has no dependents")
            .is_empty()
    );
}

fn deployment(service: &str, version: &str, commit: &str, seconds: u64) -> DeploymentRecord {
    DeploymentRecord {
        service: service.to_owned(),
        version: version.to_owned(),
        commit: commit.to_owned(),
        repository: "/srv/repos/payment".to_owned(),
        deployed_at: at(seconds),
    }
}

async fn deployments_are_idempotent_and_answer_windows_newest_first<S: GraphStore + ?Sized>(
    store: &S,
    prefix: &str,
) {
    let service = format!("{prefix}-deploy-payment");
    let other = format!("{prefix}-deploy-other");
    let v1 = deployment(&service, "v1", &format!("{prefix}-c1"), 0);
    let v2 = deployment(&service, "v2", &format!("{prefix}-c2"), 60);
    let v3 = deployment(&service, "v3", &format!("{prefix}-c3"), 120);
    for d in [&v1, &v2, &v3, &v2, &v1] {
        store.record_deployment(d, None).await.expect("recorded");
    }
    store
        .record_deployment(&deployment(&other, "v9", "zzz", 90), None)
        .await
        .expect("recorded");

    let all = store
        .deployments(&service, at(0), at(1_000))
        .await
        .expect("window");
    assert_eq!(
        all,
        vec![v3.clone(), v2.clone(), v1.clone()],
        "newest first, once each"
    );

    // Both ends of the window are inclusive.
    let middle = store
        .deployments(&service, at(60), at(120))
        .await
        .expect("window");
    assert_eq!(middle, vec![v3.clone(), v2.clone()]);
    assert!(
        store
            .deployments(&service, at(200), at(300))
            .await
            .expect("empty window")
            .is_empty()
    );

    assert_eq!(
        store
            .latest_deployment_before(&service, at(119))
            .await
            .expect("latest"),
        Some(v2.clone())
    );
    assert_eq!(
        store
            .latest_deployment_before(&service, at(120))
            .await
            .expect("latest"),
        Some(v3.clone())
    );
    assert_eq!(
        store
            .latest_deployment_before(&service, at(0) - Duration::from_secs(1))
            .await
            .expect("latest"),
        None
    );

    // Recording a version again corrects it in place.
    let corrected = DeploymentRecord {
        commit: format!("{prefix}-c2-rebuilt"),
        deployed_at: at(61),
        ..v2.clone()
    };
    store
        .record_deployment(&corrected, None)
        .await
        .expect("re-recorded");
    let all = store
        .deployments(&service, at(0), at(1_000))
        .await
        .expect("window");
    assert_eq!(all, vec![v3, corrected, v1]);
}

async fn commits_come_with_their_deployment<S: GraphStore + ?Sized>(store: &S, prefix: &str) {
    let service = format!("{prefix}-commits-payment");
    let commit = CommitRecord {
        sha: format!("{prefix}-sha-bad"),
        author: "Tomasz Reyes".to_owned(),
        author_email: "tomasz.reyes@payments.example".to_owned(),
        message: "use the customer's preferred payment method".to_owned(),
        time: at(30),
        files: vec!["src/payments.rs".to_owned(), "src/lib.rs".to_owned()],
    };
    let good = CommitRecord {
        sha: format!("{prefix}-sha-good"),
        files: Vec::new(),
        ..commit.clone()
    };
    let d = deployment(&service, "v2", &commit.sha, 40);
    store
        .record_deployment(&d, Some(&commit))
        .await
        .expect("recorded with commit");
    store
        .record_deployment(&deployment(&service, "v1", &good.sha, 10), Some(&good))
        .await
        .expect("recorded with commit");
    // A deployment whose commit is not described adds no commit record.
    store
        .record_deployment(
            &deployment(&service, "v3", &format!("{prefix}-sha-bare"), 50),
            None,
        )
        .await
        .expect("recorded without commit");
    let asked = vec![
        good.sha.clone(),
        format!("{prefix}-sha-bare"),
        format!("{prefix}-sha-unknown"),
        commit.sha.clone(),
    ];
    assert_eq!(
        store.commits(&asked).await.expect("commits"),
        vec![good, commit],
        "known commits in the order asked"
    );
    assert!(store.commits(&[]).await.expect("none asked").is_empty());
}

async fn past_fixes_match_service_or_cause_kind_newest_first<S: GraphStore + ?Sized>(
    store: &S,
    prefix: &str,
) {
    let payment = format!("{prefix}-fix-payment");
    let cache = format!("{prefix}-fix-cache");
    let fix = |incident: &str, service: &str, kind, strategy: &str, seconds| FixRecord {
        incident_id: format!("{prefix}-{incident}"),
        service: service.to_owned(),
        cause_kind: kind,
        strategy: strategy.to_owned(),
        template: if strategy == "template" {
            "rust.option_unwrap.unwrap_or".to_owned()
        } else {
            String::new()
        },
        commit: format!("{prefix}-{incident}-fix"),
        recorded_at: at(seconds),
    };
    let oldest = fix("inc-1", &payment, CauseKind::CodeDefect, "revert", 100);
    let newer = fix("inc-2", &payment, CauseKind::CodeDefect, "template", 200);
    let leak = fix("inc-3", &cache, CauseKind::Resource, "revert", 300);
    store
        .record_incident(&IncidentRecord {
            id: format!("{prefix}-inc-1"),
            service: payment.clone(),
            signal: "error_rate".to_owned(),
            first_bad_at: Some(at(90)),
        })
        .await
        .expect("incident recorded");
    for f in [&oldest, &newer, &leak] {
        store.record_fix(f).await.expect("fix recorded");
    }
    // Recording a fix again (even later) keeps one record with its first time.
    store
        .record_fix(&FixRecord {
            recorded_at: at(999),
            ..oldest.clone()
        })
        .await
        .expect("fix recorded again");

    let of_payment = store
        .past_fixes(&FixQuery {
            service: Some(payment.clone()),
            cause_kind: None,
            limit: 10,
        })
        .await
        .expect("fixes");
    assert_eq!(of_payment, vec![newer.clone(), oldest.clone()]);

    let of_resource = store
        .past_fixes(&FixQuery {
            service: Some(format!("{prefix}-fix-nobody")),
            cause_kind: Some(CauseKind::Resource),
            limit: 10,
        })
        .await
        .expect("fixes");
    assert_eq!(of_resource, vec![leak.clone()]);

    let either = store
        .past_fixes(&FixQuery {
            service: Some(cache.clone()),
            cause_kind: Some(CauseKind::CodeDefect),
            limit: 10,
        })
        .await
        .expect("fixes");
    let mine: Vec<FixRecord> = either
        .into_iter()
        .filter(|f| f.incident_id.starts_with(prefix))
        .collect();
    assert_eq!(mine, vec![leak, newer.clone(), oldest]);

    let limited = store
        .past_fixes(&FixQuery {
            service: Some(payment),
            cause_kind: None,
            limit: 1,
        })
        .await
        .expect("fixes");
    assert_eq!(limited, vec![newer]);
}

fn describe_names_the_store<S: GraphStore + ?Sized>(store: &S) {
    assert!(!store.describe().is_empty());
}

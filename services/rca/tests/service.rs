//! The rca service started in-process on 127.0.0.1:0.

use selfheal_service::testkit::ServiceUnderTest;

#[tokio::test]
async fn serves_health_reflection_and_metrics_then_stops_cleanly() {
    let service = ServiceUnderTest::start(|listeners, shutdown| {
        selfheal_rca::run(Default::default(), listeners, shutdown)
    })
    .await;
    service
        .assert_standard_endpoints(selfheal_proto::service_names::RCA)
        .await;
    service.stop().await.expect("clean shutdown");
}

mod localize_over_grpc {
    use selfheal_proto::v1::rca_client::RcaClient;
    use selfheal_proto::v1::{LocalizeRequest, SourceRef, TraceLanguage};
    use selfheal_service::testkit::{ServiceUnderTest, channel, wait_serving};

    const DEMO_BACKTRACE: &str = "\
thread 'tokio-rt-worker' (15641) panicked at src/payments.rs:237:44:
called `Option::unwrap()` on a `None` value
stack backtrace:
   3: core::option::unwrap_failed
             at /rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/core/src/option.rs:2236:5
  12: payment_service::payments::process_payment
             at ./src/payments.rs:237:44
note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.
";

    #[tokio::test]
    async fn localizes_the_demo_panic_and_maps_errors_to_status_codes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let example = selfheal_scenario::examples_dir().join("payment-service");
        let scenario =
            selfheal_scenario::build(&example, &dir.path().join("repo")).expect("scenario");
        let service = ServiceUnderTest::start(|listeners, shutdown| {
            selfheal_rca::run(Default::default(), listeners, shutdown)
        })
        .await;
        wait_serving(service.grpc_addr, selfheal_proto::service_names::RCA).await;
        let mut client = RcaClient::new(channel(service.grpc_addr).await.expect("connects"));
        let request = LocalizeRequest {
            service: scenario.service.clone(),
            trace_text: DEMO_BACKTRACE.to_owned(),
            source: Some(SourceRef {
                repository: scenario.repo.to_string_lossy().into_owned(),
                commit: scenario.bad_commit.clone(),
            }),
            last_good_commit: scenario.good_commit.clone(),
        };

        let response = client
            .localize(request.clone())
            .await
            .expect("localised")
            .into_inner();
        assert_eq!(response.language(), TraceLanguage::Rust);
        let location = response.location.expect("location");
        assert_eq!(
            (location.file.as_str(), location.line),
            ("src/payments.rs", 237)
        );
        assert_eq!(
            location.function,
            "payment_service::payments::process_payment"
        );
        let culprit = response.culprit.expect("culprit");
        assert_eq!(culprit.sha, scenario.bad_commit);
        assert!(culprit.time.is_some_and(|t| t.seconds > 0));
        assert!(response.culprit_in_range);
        assert_eq!(response.frames.iter().filter(|f| f.in_app).count(), 1);

        let mut no_source = request.clone();
        no_source.source = None;
        let status = client.localize(no_source).await.expect_err("no source");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "missing field source");

        let mut garbled = request.clone();
        garbled.trace_text = "thread 'main' panicked at".to_owned();
        let status = client.localize(garbled).await.expect_err("garbled");
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), "no stack frame found in the trace");

        let mut escape = request.clone();
        escape.trace_text = "thread 'main' (1) panicked at ../../etc/passwd:1:1:\nboom\n".into();
        let status = client.localize(escape).await.expect_err("escape");
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert!(
            status.message().contains("climbs out"),
            "{}",
            status.message()
        );

        let mut oversized = request;
        oversized.trace_text = "x".repeat(2 * 1024 * 1024);
        let status = client.localize(oversized).await.expect_err("oversized");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);

        service.stop().await.expect("clean shutdown");
    }
}

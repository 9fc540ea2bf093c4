//! The detector service started in-process on 127.0.0.1:0.

use selfheal_service::testkit::ServiceUnderTest;

#[tokio::test]
async fn serves_health_reflection_and_metrics_then_stops_cleanly() {
    let service = ServiceUnderTest::start(|listeners, shutdown| {
        selfheal_detector::run(Default::default(), listeners, shutdown)
    })
    .await;
    service
        .assert_standard_endpoints(selfheal_proto::service_names::DETECTOR)
        .await;
    service.stop().await.expect("clean shutdown");
}

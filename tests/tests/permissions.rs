//! The ordinary test fabric runs under the Helm chart's permissions
//! (`danmu_tests::nats::permissions`, the same lists `chart_fabric.rs` checks the chart renders):
//! every test server requires a user, every service connects as its own, and each is held to
//! its subjects. Here, beside a running distributor and gateway:
//!
//! - a client without credentials is refused;
//! - the business publisher's JetStream publish is stored, but it may not subscribe to edge
//!   subjects (what the distributor sends gateways);
//! - the gateway's user may not write into a push stream, directly or through the business
//!   subjects (checked after the mapping, as the ingest subject), nor delete one; with the demo
//!   echo its user may publish low-priority room messages, still not high-priority ones;
//! - the distributor's user may not publish business pushes.

use danmu_tests::fabric::SingleRegion;
use danmu_tests::nats::permissions::Role;
use danmu_tests::nats::users::{publish_refused, refusal, test_user_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_user_of_the_test_fabric_is_held_to_its_subjects() -> anyhow::Result<()> {
    let f = SingleRegion::start().await?;
    let url = f.url();

    assert!(
        async_nats::connect(url.as_str()).await.is_err(),
        "an anonymous client was let in"
    );

    // The business publisher: stored, but no edge subjects.
    let (business, mut business_errors) = test_user_of(Role::Publisher, "A")
        .connect_watching(&url)
        .await?;
    let ack = async_nats::jetstream::new(business.clone())
        .publish("danmu.push.lo.room.7", "{\"cmd\":\"DANMU_MSG\"}".into())
        .await?
        .await?;
    assert_eq!(ack.stream, "PUSH_LO_A");
    let _edge = business.subscribe("danmu.edge.lo.room.7").await?;
    let refused = refusal(&mut business_errors).await?;
    assert!(
        refused.contains("Permissions Violation for Subscription to \"danmu.edge.lo.room.7\""),
        "{refused}"
    );

    // The gateway's user: no writes into a push stream, no deleting one.
    let (gateway, mut gateway_errors) = test_user_of(Role::Gateway, "A")
        .connect_watching(&url)
        .await?;
    for (subject, checked_as) in [
        ("danmu.in.A.lo.room.7", "danmu.in.A.lo.room.7"),
        ("danmu.push.hi.room.7", "danmu.in.A.hi.room.7"),
        ("danmu.push.lo.room.7", "danmu.in.A.lo.room.7"),
        ("danmu.edge.lo.room.7", "danmu.edge.lo.room.7"),
    ] {
        publish_refused(&gateway, &mut gateway_errors, subject, checked_as).await?;
    }
    let deleted = async_nats::jetstream::new(gateway)
        .delete_stream("PUSH_LO_A")
        .await;
    assert!(deleted.is_err(), "the gateway's user deleted a push stream");
    let refused = refusal(&mut gateway_errors).await?;
    assert!(
        refused.contains("$JS.API.STREAM.DELETE.PUSH_LO_A"),
        "{refused}"
    );

    // The echo gateway's user: low-priority room messages are stored, high priority refused.
    let (echo, mut echo_errors) = test_user_of(Role::GatewayEcho, "A")
        .connect_watching(&url)
        .await?;
    let ack = async_nats::jetstream::new(echo.clone())
        .publish("danmu.push.lo.room.7", "{\"cmd\":\"DANMU_MSG\"}".into())
        .await?
        .await?;
    assert_eq!(ack.stream, "PUSH_LO_A");
    publish_refused(
        &echo,
        &mut echo_errors,
        "danmu.push.hi.room.7",
        "danmu.in.A.hi.room.7",
    )
    .await?;

    // The distributor's user: no business pushes.
    let (distributor, mut distributor_errors) = test_user_of(Role::Distributor, "A")
        .connect_watching(&url)
        .await?;
    publish_refused(
        &distributor,
        &mut distributor_errors,
        "danmu.push.lo.room.7",
        "danmu.in.A.lo.room.7",
    )
    .await?;
    Ok(())
}

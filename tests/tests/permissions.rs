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
//! - the distributor's user may not publish business pushes;
//! - nobody reads another's replies: each user subscribes under its own inbox prefix only, and
//!   no user publishes into inboxes (`a_publisher_reads_its_own_replies_and_no_one_elses`).

use danmu_tests::fabric::SingleRegion;
use danmu_tests::nats::permissions::{Role, inbox_prefix};
use danmu_tests::nats::users::{publish_refused, refusal, test_user_of};

/// A JetStream publish by `client` on a room is acked by region A's low-priority push stream:
/// the ack is a reply, so it also shows `client` reads its own inbox.
async fn assert_stored(client: &async_nats::Client) -> anyhow::Result<()> {
    let ack = async_nats::jetstream::new(client.clone())
        .publish("danmu.push.lo.room.7", "{\"cmd\":\"DANMU_MSG\"}".into())
        .await?
        .await?;
    assert_eq!(ack.stream, "PUSH_LO_A");
    Ok(())
}

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
    assert_stored(&business).await?;
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
    assert_stored(&echo).await?;
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

/// JetStream and KV answers, the distributor's pulled pushes, users' offline pushes and the
/// gateways' node reports all travel on inboxes. A business publisher used to be allowed
/// `_INBOX.>` both ways, so it could read all of them and answer in a service's place. Now it
/// reads replies under its own prefix only and publishes into no inbox; the services likewise
/// each read their own prefix only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_reads_its_own_replies_and_no_one_elses() -> anyhow::Result<()> {
    let f = SingleRegion::start().await?;
    let url = f.url();
    let (business, mut errors) = test_user_of(Role::Publisher, "A")
        .connect_watching(&url)
        .await?;

    // Its own replies arrive: a JetStream publish is acked on its inbox.
    assert_stored(&business).await?;

    // Nobody else's: not every inbox, not a service's, not another publisher's.
    let others = [
        "_INBOX.>".to_owned(),
        "_INBOX.*".to_owned(),
        "_INBOX.someone-else.>".to_owned(),
        format!("{}.>", inbox_prefix(Role::Distributor)),
        format!("{}.>", inbox_prefix(Role::Gateway)),
        format!("{}.>", inbox_prefix(Role::Control)),
        ">".to_owned(),
    ];
    for subject in &others {
        let _subscription = business.subscribe(subject.clone()).await?;
        let refused = refusal(&mut errors).await?;
        assert!(
            refused.contains(&format!(
                "Permissions Violation for Subscription to \"{subject}\""
            )),
            "{subject}: {refused}"
        );
    }
    // Nor may it answer in a service's place.
    for subject in [
        format!("{}.forged.1", inbox_prefix(Role::Distributor)),
        format!("{}.forged.1", inbox_prefix(Role::Gateway)),
        "_INBOX.someone-else.1".to_owned(),
    ] {
        publish_refused(&business, &mut errors, &subject, &subject).await?;
    }

    // The services are held to their own prefixes too.
    for (role, foreign) in [
        (Role::Gateway, inbox_prefix(Role::Distributor)),
        (Role::Distributor, inbox_prefix(Role::Gateway)),
        (Role::Control, inbox_prefix(Role::Publisher)),
    ] {
        let (client, mut errors) = test_user_of(role, "A").connect_watching(&url).await?;
        let subject = format!("{foreign}.>");
        let _subscription = client.subscribe(subject.clone()).await?;
        let refused = refusal(&mut errors).await?;
        assert!(
            refused.contains(&format!(
                "Permissions Violation for Subscription to \"{subject}\""
            )),
            "{}: {subject}: {refused}",
            role.name()
        );
    }
    Ok(())
}

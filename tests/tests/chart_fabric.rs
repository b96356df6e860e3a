//! The fabric under the Helm chart's NATS users and permissions
//! (`charts/danmu/templates/nats-auth.yaml`, rendered by the real helm):
//!
//! - the chart's subject mapping is the one the test servers and `dev/` use;
//! - gateway, distributor and control each connect with their own nkey, and the chart's
//!   `helm test` script (`charts/danmu/files/smoke.py`) passes against them: a token from
//!   control, a node list, a TCP client that receives a message published by the test's user,
//!   which may publish on its one room only;
//! - a business publisher's JetStream publish is stored (acked);
//! - the gateway's user cannot publish into a push stream, directly or through the business
//!   subjects (the chart's default leaves the demo echo off);
//! - the business user cannot subscribe to edge subjects;
//! - the chart's permissions, for every region's values file, are exactly those the test and
//!   dev fabrics run with (`danmu_tests::nats::permissions`).

use std::process::Command;
use std::time::Duration;

use async_nats::ConnectOptions;
use danmu_tests::chart::{self, ServiceUsers};
use danmu_tests::fabric::{self, Keys};
use danmu_tests::nats::mappings_block;
use danmu_tests::nats::permissions::{Role, inbox_prefix, permissions};
use danmu_tests::nats::users::{connect_watching, publish_refused, refusal};
use tokio::sync::mpsc::UnboundedReceiver;

const SMOKE_ROOM: u64 = 990_001;
const SMOKE_PASSWORD: &str = "smoke-test-password";

fn squash(text: &str) -> String {
    text.split_whitespace().collect()
}

/// A connection as `seed`'s user in `role`, its replies under the role's inbox prefix (the
/// only one its permissions let it read), whose server errors (permission violations) arrive
/// on the returned channel.
async fn connect_as(
    url: &str,
    seed: &nkeys::KeyPair,
    role: Role,
) -> anyhow::Result<(async_nats::Client, UnboundedReceiver<String>)> {
    let options = ConnectOptions::with_nkey(seed.seed()?).custom_inbox_prefix(inbox_prefix(role));
    connect_watching(options, url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fabric_runs_under_the_charts_users_and_permissions() -> anyhow::Result<()> {
    let users = ServiceUsers::generate();
    let dir = tempfile::tempdir()?;
    let [gateway_seed, distributor_seed, control_seed, _] = users.write_seeds(dir.path())?;
    let conf = chart::render_nats_auth("A", &["A"], &users, SMOKE_PASSWORD, SMOKE_ROOM)?;
    assert_eq!(
        squash(&chart::mappings_block(&conf)?),
        squash(&mappings_block(&["A"])),
        "the chart's mapping differs from the one dev/ and the tests use"
    );
    let server = danmu_tests::nats::single_with(chart::authorization_block(&conf)?, false).await?;
    let url = server.client_url();

    // Nobody gets in without a user.
    assert!(
        async_nats::connect(url.as_str()).await.is_err(),
        "an anonymous client was let in"
    );

    let keys = Keys::generate();
    let mut distributor = fabric::distributor_config(&url, "A");
    distributor.nats_nkey_seed = Some(distributor_seed);
    let distributor = danmu_distributor::start(distributor).await?;
    let mut gateway = fabric::gateway_config(&url, "A", &keys);
    gateway.nats_nkey_seed = Some(gateway_seed.to_string_lossy().into_owned());
    let gateway = fabric::start_gateway(gateway).await?;
    let mut control = fabric::control_config(&url, "A", &keys);
    control.nats_nkey_seed = Some(control_seed);
    control.api_keys = vec!["chart-test-api-key".to_owned().into()];
    let control = fabric::start_control(control).await?;

    // The helm test's command, against this fabric: the smoke user's URL credentials.
    let smoke_url = url.replacen(
        "nats://",
        &format!("nats://danmu-smoke:{SMOKE_PASSWORD}@"),
        1,
    );
    let script = chart::chart_dir().join("files").join("smoke.py");
    let control_url = format!("http://{}", control.addr);
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .args(["--control", &control_url, "--nats", &smoke_url])
            .args(["--api-keys", "chart-test-api-key", "--region", "A"])
            .args(["--room", &SMOKE_ROOM.to_string(), "--timeout", "30"])
            .output()
    })
    .await??;
    assert!(
        output.status.success(),
        "smoke.py failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("ok: "));

    // A business publisher: a JetStream publish is acked by the region's push stream.
    let (business, mut business_errors) =
        connect_as(&url, &users.publisher, Role::Publisher).await?;
    let ack = async_nats::jetstream::new(business.clone())
        .publish("danmu.push.lo.room.7", "{\"cmd\":\"DANMU_MSG\"}".into())
        .await?
        .await?;
    assert_eq!(ack.stream, "PUSH_LO_A");

    // The business user may not read what the distributor sends gateways.
    let _edge = business.subscribe("danmu.edge.lo.room.7").await?;
    let refused = refusal(&mut business_errors).await?;
    assert!(
        refused.contains("Permissions Violation for Subscription to \"danmu.edge.lo.room.7\""),
        "{refused}"
    );

    // The gateway's user may not write into a push stream: not directly, not through the
    // business subject (nats-server checks the subject after the mapping, so that publish is
    // refused as its ingest subject).
    let (as_gateway, mut gateway_errors) = connect_as(&url, &users.gateway, Role::Gateway).await?;
    for (subject, checked_as) in [
        ("danmu.in.A.lo.room.7", "danmu.in.A.lo.room.7"),
        ("danmu.push.hi.room.7", "danmu.in.A.hi.room.7"),
        ("danmu.push.lo.room.7", "danmu.in.A.lo.room.7"),
    ] {
        publish_refused(&as_gateway, &mut gateway_errors, subject, checked_as).await?;
    }
    // Nor delete one.
    let deleted = async_nats::jetstream::new(as_gateway)
        .delete_stream("PUSH_LO_A")
        .await;
    assert!(deleted.is_err(), "the gateway's user deleted a push stream");
    let refused = refusal(&mut gateway_errors).await?;
    assert!(
        refused.contains("$JS.API.STREAM.DELETE.PUSH_LO_A"),
        "{refused}"
    );

    control.stop().await?;
    gateway.shutdown(Duration::from_millis(200)).await;
    distributor.shutdown().await?;
    Ok(())
}

/// What the chart writes into the services' TOML configs loads and validates in the services
/// themselves (unknown keys, types, ranges), for every region's values file.
#[test]
fn the_charts_service_configs_load_in_the_services() -> anyhow::Result<()> {
    for region in ["eu", "us", "ap"] {
        let values = format!("values-{region}.yaml");
        let yaml = chart::render(
            "templates/config.yaml",
            &[&values, "ci/secrets-values.yaml"],
            &[],
        )?;
        let dir = tempfile::tempdir()?;
        let write = |key: &str| -> anyhow::Result<std::path::PathBuf> {
            let path = dir.path().join(key);
            std::fs::write(&path, chart::config_map_file(&yaml, key)?)?;
            Ok(path)
        };
        // The pod's environment: the node id and instance from the pod name, the API keys.
        let pod = |name: &str, value: &str| vec![(name.to_owned(), value.to_owned())];
        let gateway = danmu_gateway::Config::load(
            Some(&write("gateway.toml")?),
            pod("DANMU_GATEWAY__NODE_ID", "danmu-gateway-7d9f-x2"),
        )
        .map_err(|e| anyhow::anyhow!("{region} gateway.toml: {e}"))?;
        assert_eq!(gateway.region, region);
        assert_eq!(gateway.node_id, "danmu-gateway-7d9f-x2");
        assert!(gateway.health_listen.is_some() && gateway.nats_nkey_seed.is_some());
        let distributor = danmu_distributor::Config::load(
            Some(&write("distributor.toml")?),
            pod("DANMU_DISTRIBUTOR__INSTANCE", "danmu-distributor-0"),
        )
        .map_err(|e| anyhow::anyhow!("{region} distributor.toml: {e}"))?;
        assert_eq!(distributor.region, region);
        assert!(distributor.health_listen.is_some() && distributor.nats_nkey_seed.is_some());
        let control = danmu_control::Config::load(
            Some(&write("control.toml")?),
            pod(
                "DANMU_CONTROL__API_KEYS",
                "k1-0123456789abcdef,k2-0123456789abcdef",
            ),
        )
        .map_err(|e| anyhow::anyhow!("{region} control.toml: {e}"))?;
        assert_eq!(control.region.as_deref(), Some(region));
        assert_eq!(control.api_keys.len(), 2);
        assert_eq!(control.regions, ["eu", "us", "ap"]);
    }
    Ok(())
}

/// The chart's rendered permissions are, user for user, the lists the test servers and
/// `local-nats` run with (`danmu_tests::nats::permissions`), for every region's values file,
/// with the demo echo off (the chart's default) and on: the two cannot drift apart.
#[test]
fn the_charts_permissions_are_the_ones_the_test_and_dev_fabrics_run_with() -> anyhow::Result<()> {
    let files = chart::region_values_files()?;
    assert!(files.len() >= 3, "{files:?}");
    let users = ServiceUsers::generate();
    for file in &files {
        let (region, regions) = chart::values_regions(file)?;
        let regions: Vec<&str> = regions.iter().map(String::as_str).collect();
        assert!(
            regions.contains(&region.as_str()),
            "{file}: {region} not in {regions:?}"
        );
        for echo in [false, true] {
            let rendered = chart::rendered_nkey_users(file, &users, echo)?;
            let gateway = if echo {
                Role::GatewayEcho
            } else {
                Role::Gateway
            };
            let expected = [
                (&users.gateway, gateway),
                (&users.distributor, Role::Distributor),
                (&users.control, Role::Control),
                (&users.publisher, Role::Publisher),
            ]
            .map(|(key, role)| {
                (
                    key.public_key(),
                    permissions(role, &region, &regions).to_json(),
                )
            });
            assert_eq!(
                rendered.len(),
                expected.len(),
                "{file} (echo {echo}): {rendered:#?}"
            );
            for ((nkey, got), (key, want)) in rendered.iter().zip(&expected) {
                assert_eq!(nkey, key, "{file} (echo {echo}): the users' order");
                assert_eq!(
                    got, want,
                    "{file} (echo {echo}): user {nkey}: the chart's permissions differ from \
                     danmu_tests::nats::permissions"
                );
            }
        }
    }
    Ok(())
}

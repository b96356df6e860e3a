//! The README's examples work against a running fabric: the publishing ones, Python (nats-py) and
//! Rust, each reaching a member of the room (publishing the same `Nats-Msg-Id` twice delivers
//! once), and the Python viewer (websockets) that watches a room over the raw protocol.
//!
//! The publishing examples connect without credentials, as the README runs them against
//! `scripts/up`'s fabric, whose servers take such clients as the business publisher
//! (`no_auth_user`, [`FabricUsers::anonymous_publisher`]): so does this test's server, and so the
//! examples publish under the publisher's permissions.

use std::process::Command;
use std::time::Duration;

use danmu_tests::client::Transport;
use danmu_tests::fabric::SingleRegion;
use danmu_tests::nats::{FabricUsers, single_with};
use danmu_tests::room;

const WAIT: Duration = Duration::from_secs(20);

fn text_of(payload: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(payload).expect("JSON payload");
    value["info"][1].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_and_rust_examples_reach_the_room_once() -> anyhow::Result<()> {
    // Region A's test users, and anonymous clients taken as the publisher, as local-nats does.
    let mut users = FabricUsers::for_tests(&["A"])?;
    users.anonymous_publisher = true;
    let server = single_with(users.authorization_block("A"), false).await?;
    let f = SingleRegion::start_on(server, |_, _| {}).await?;
    let url = f.url();
    let mut member = f.join(Transport::WebSocket, 5, 1001, 3).await?;
    room::warm_up(&f.business, 1001, &mut [&mut member], WAIT).await?;

    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let python = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new("python3")
            .arg(format!("{root}/publish.py"))
            .arg(&url)
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "publish.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // A given message id twice: stored once, and the second run says so.
    let first = python(&["1001", "hello from Python", "readme-test-1"])?;
    assert!(first.contains("stored in PUSH_LO_A"), "{first}");
    let again = python(&["1001", "hello from Python", "readme-test-1"])?;
    assert!(again.starts_with("duplicate of #"), "{again}");
    // Without an id each run is a new message (the README's command, run twice, delivers twice).
    let fresh = python(&["1001", "again from Python"])?;
    assert!(fresh.contains("stored in PUSH_LO_A"), "{fresh}");
    // `cargo test` builds the examples next to the test binaries: target/<profile>/examples.
    let example = std::env::current_exe()?
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples/publish"))
        .filter(|path| path.exists())
        .ok_or_else(|| {
            anyhow::anyhow!("build the example first: cargo build -p danmu-tests --example publish")
        })?;
    let out = Command::new(example)
        .args([&url, "1001", "hello from Rust"])
        .output()?;
    assert!(
        out.status.success(),
        "publish example failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut texts = Vec::new();
    while texts.len() < 3 {
        for payload in member.messages(1, WAIT).await? {
            let text = text_of(&payload);
            if !text.is_empty() {
                texts.push(text);
            }
        }
    }
    assert_eq!(
        texts,
        ["hello from Python", "again from Python", "hello from Rust"]
    );
    member.expect_silence(Duration::from_millis(500)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_viewer_prints_what_the_room_receives() -> anyhow::Result<()> {
    use std::io::{BufRead as _, BufReader};

    let f = SingleRegion::start().await?;
    let mut config = danmu_tests::fabric::control_config(&f.url(), "A", &f.keys);
    config.node_ttl = Duration::from_secs(5);
    let control = danmu_tests::fabric::start_control(config).await?;
    danmu_tests::eventually("control lists the gateway", WAIT, async || {
        let (_, body) = danmu_tests::http::get(control.addr, "/v1/nodes")
            .await
            .ok()?;
        String::from_utf8_lossy(&body)
            .contains("\"ws\":\"127.0.0.1")
            .then_some(())
    })
    .await?;

    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut viewer = std::process::Command::new("python3")
        .arg(format!("{root}/viewer.py"))
        .args([&format!("http://{}", control.addr), "1001", "--count", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = viewer.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    async fn next_line(
        lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    ) -> anyhow::Result<String> {
        tokio::time::timeout(WAIT, lines.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("viewer.py ended early"))
    }
    let joined = next_line(&mut lines).await?;
    assert!(joined.starts_with("joined room 1001"), "{joined}");
    assert!(joined.ends_with(r#"{"code":0}"#), "{joined}");
    let online = next_line(&mut lines).await?;
    assert_eq!(online, "online: 1");
    // Published after the join: core NATS, as business may.
    let payload = r#"{"cmd":"DANMU_MSG","info":[[0,1,25,16777215],"hi viewer",[1,"b"]]}"#;
    let deadline = tokio::time::Instant::now() + WAIT;
    let message = loop {
        f.business
            .publish("danmu.push.lo.room.1001", payload.into())
            .await?;
        f.business.flush().await?;
        match tokio::time::timeout(Duration::from_secs(1), lines.recv()).await {
            Ok(Some(line)) => break line,
            Ok(None) => anyhow::bail!("viewer.py ended without a message"),
            Err(_) if tokio::time::Instant::now() < deadline => continue,
            Err(_) => anyhow::bail!("viewer.py printed no message within {WAIT:?}"),
        }
    };
    assert_eq!(message, format!("message: {payload}"));
    let status = tokio::task::spawn_blocking(move || viewer.wait()).await??;
    assert!(status.success(), "viewer.py exited with {status}");
    control.stop().await?;
    Ok(())
}

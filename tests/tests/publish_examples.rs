//! The README's publishing examples work against a running fabric: the Python one (nats-py) and
//! the Rust one, each reaching a member of the room. Publishing the same `Nats-Msg-Id` twice
//! delivers once.

use std::process::Command;
use std::time::Duration;

use danmu_tests::client::Transport;
use danmu_tests::fabric::SingleRegion;
use danmu_tests::room;

const WAIT: Duration = Duration::from_secs(20);

fn text_of(payload: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(payload).expect("JSON payload");
    value["info"][1].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_and_rust_examples_reach_the_room_once() -> anyhow::Result<()> {
    let f = SingleRegion::start().await?;
    let url = f.url();
    let mut member = f.join(Transport::WebSocket, 5, 1001, 3).await?;
    room::warm_up(&f.business, 1001, &mut [&mut member], WAIT).await?;

    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    // The same text gives the same Nats-Msg-Id, so the second run is a duplicate.
    for _ in 0..2 {
        let out = Command::new("python3")
            .arg(format!("{root}/publish.py"))
            .args([&url, "1001", "hello from Python"])
            .output()?;
        assert!(
            out.status.success(),
            "publish.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("stored in PUSH_LO_A"));
    }
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
    while texts.len() < 2 {
        for payload in member.messages(1, WAIT).await? {
            let text = text_of(&payload);
            if !text.is_empty() {
                texts.push(text);
            }
        }
    }
    assert_eq!(texts, ["hello from Python", "hello from Rust"]);
    member.expect_silence(Duration::from_millis(500)).await?;
    Ok(())
}

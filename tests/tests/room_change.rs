//! ROOM_CHANGE (op 1002) moves a connection to another room its token allows, without
//! reconnecting: it gets the new room's messages and no longer the old one's; a room the token
//! does not allow is refused with -103 and the connection stays where it was.

use std::time::Duration;

use danmu_tests::client::{Client, Transport};
use danmu_tests::fabric::SingleRegion;
use danmu_tests::room::{self, danmu, receive_sequences};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_changes_rooms_within_its_token() -> anyhow::Result<()> {
    let f = SingleRegion::start().await?;
    let (keys, gateway, business) = (&f.keys, &f.gateway, &f.business);
    let mut mover = Client::connect(Transport::WebSocket, gateway.ws_addr.unwrap()).await?;
    let token = keys.token(4, Some(vec![1, 2]), Duration::from_secs(600));
    assert_eq!(mover.auth(4, 1, 3, &token).await?, 0);
    let mut stayer = f.join(Transport::Tcp, 5, 1, 3).await?;
    room::warm_up(business, 1, &mut [&mut mover, &mut stayer], WAIT).await?;

    assert_eq!(
        mover.change_room(2).await?,
        serde_json::json!({"code": 0, "roomid": 2})
    );
    assert_eq!(gateway.online(1), 1);
    assert_eq!(gateway.online(2), 1);
    assert_eq!(mover.heartbeat().await?, 1, "online count of the new room");
    room::warm_up(business, 2, &mut [&mut mover], WAIT).await?;

    room::publish(business, 1, danmu(10)).await?;
    room::publish(business, 2, danmu(20)).await?;
    assert_eq!(receive_sequences(&mut mover, 1, WAIT).await?, [20]);
    assert_eq!(receive_sequences(&mut stayer, 1, WAIT).await?, [10]);

    // Room 3 is not in the token: refused, and the connection stays in room 2.
    let refused = mover.change_room(3).await?;
    assert_eq!(refused, serde_json::json!({"code": -103, "roomid": 2}));
    room::publish(business, 2, danmu(21)).await?;
    assert_eq!(receive_sequences(&mut mover, 1, WAIT).await?, [21]);
    mover.expect_silence(Duration::from_millis(300)).await?;
    Ok(())
}

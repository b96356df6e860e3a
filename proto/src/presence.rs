//! Enter and exit events, and the online-count query: JSON business reads and writes over NATS
//! (`docs/architecture.md`, "Presence"). Plain data; gateways emit the events, control emits the
//! exits of a gateway that died, and answers the query.

use serde::{Deserialize, Serialize};

/// Whether a connection entered or left a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The connection joined the room (AUTH, or a room change into it).
    Enter,
    /// The connection left the room (close, timeout, room change away, or its gateway died).
    Exit,
}

impl EventKind {
    /// The subject token: `enter` or `exit`.
    pub fn token(self) -> &'static str {
        match self {
            EventKind::Enter => "enter",
            EventKind::Exit => "exit",
        }
    }
}

/// Reason of an exit emitted by control for a connection whose gateway stopped reporting.
pub const GATEWAY_LOST: &str = "gateway_lost";

/// One enter or exit, published on `danmu.presence.<region>.<kind>.<room>`.
///
/// Idempotent: `(conn, seq)` identifies the event (and is its `Nats-Msg-Id`), so a consumer
/// drops repeats by remembering the last `seq` per `conn`. A connection's events alternate
/// enter, exit, enter (after a room change), exit...; every enter is followed by exactly one
/// exit for the same room.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEvent {
    /// `enter` or `exit`.
    pub event: EventKind,
    /// Globally unique connection id: `<gateway node id>/<connection number>`.
    pub conn: String,
    /// 1 for the first event of the connection, then +1 per event.
    pub seq: u64,
    /// The user of the connection.
    pub uid: u64,
    /// Its device id (buvid), possibly empty.
    pub device: String,
    /// The room entered or left.
    pub room: u64,
    /// The gateway holding (or that held) the connection.
    pub gateway: String,
    /// That gateway's region.
    pub region: String,
    /// Exits only: why (`peer_closed`, `heartbeat_timeout`, `room_change`, `drain`,
    /// `slow_consumer`, `gateway_lost`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it happened, unix milliseconds, by the emitter's clock.
    pub ts_ms: u64,
}

impl PresenceEvent {
    /// The subject it is published on.
    pub fn subject(&self) -> String {
        crate::subjects::presence(&self.region, self.event.token(), self.room)
    }

    /// The `Nats-Msg-Id`: a stream's duplicate window drops a second copy (control replicas
    /// that both saw a gateway die emit the same ids).
    pub fn message_id(&self) -> String {
        format!("{}#{}", self.conn, self.seq)
    }
}

/// A request on `danmu.online.query`: counts for these rooms, or the top rooms when empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineQuery {
    /// Rooms asked for; empty asks for the `top` most populated.
    #[serde(default)]
    pub rooms: Vec<u64>,
    /// How many top rooms (when `rooms` is empty); at most the server's limit.
    #[serde(default)]
    pub top: Option<usize>,
}

/// The reply to an [`OnlineQuery`]. Rooms nobody is in count 0.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineReply {
    /// `[room, count]` pairs: in the order asked, or most populated first.
    pub rooms: Vec<(u64, u32)>,
    /// Connections in every room, every gateway.
    pub total: u64,
    /// Gateways whose reports are in the sums.
    pub gateways: u32,
    /// Age of the sums, milliseconds.
    pub age_ms: u64,
    /// Set when the query could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_has_the_documented_json_subject_and_id() {
        let event = PresenceEvent {
            event: EventKind::Exit,
            conn: "A-gw1-42/7".into(),
            seq: 2,
            uid: 1001,
            device: "buvid-1".into(),
            room: 5,
            gateway: "A-gw1-42".into(),
            region: "A".into(),
            reason: Some("heartbeat_timeout".into()),
            ts_ms: 1_700_000_000_000,
        };
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"event":"exit","conn":"A-gw1-42/7","seq":2,"uid":1001,"device":"buvid-1","room":5,"gateway":"A-gw1-42","region":"A","reason":"heartbeat_timeout","ts_ms":1700000000000}"#
        );
        assert_eq!(event.subject(), "danmu.presence.A.exit.5");
        assert_eq!(event.message_id(), "A-gw1-42/7#2");
        let back: PresenceEvent =
            serde_json::from_str(&serde_json::to_string(&event).unwrap()).expect("round trip");
        assert_eq!(back, event);
    }

    #[test]
    fn a_query_defaults_to_the_top_rooms() {
        let query: OnlineQuery = serde_json::from_str("{}").unwrap();
        assert_eq!(query, OnlineQuery::default());
        let query: OnlineQuery = serde_json::from_str(r#"{"rooms":[1,2]}"#).unwrap();
        assert_eq!(query.rooms, vec![1, 2]);
    }
}

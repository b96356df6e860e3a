//! Enter and exit events of one connection, as plain code: the session's actions (join, room
//! change, close) in, events out, each numbered so business can drop repeats. No IO and no
//! clock: the caller passes the time the event carries.
//!
//! ```text
//!   Outside ──join(room)──▶ Inside(room) ──room change──▶ exit(room, "room_change"), Inside(new)
//!                               │
//!                               └──close(reason)──▶ exit(room, reason), Outside (for good)
//! ```
//!
//! Every enter is followed by exactly one exit for the same room, whatever ends the connection:
//! a close the gateway sees (peer closed, heartbeat timeout, drain, slow consumer, bad input)
//! exits here; a gateway that dies exits its connections through control's sweeper, which
//! continues the same `seq`.

use danmu_proto::presence::{EventKind, PresenceEvent};

/// Who emits: the gateway's node id and region, stamped on every event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub gateway: String,
    pub region: String,
}

impl Origin {
    /// The globally unique id of a connection of this gateway.
    pub fn conn_id(&self, conn: u64) -> String {
        format!("{}/{conn}", self.gateway)
    }
}

/// One joined connection's place in the event sequence.
#[derive(Debug)]
pub struct Presence {
    conn: u64,
    uid: u64,
    device: String,
    /// The room it is in; `None` once it has left for good.
    room: Option<u64>,
    /// The last event's sequence number.
    seq: u64,
}

impl Presence {
    /// The device (buvid) it connected with.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// A connection that just authenticated into `room`, and its enter event.
    pub fn enter(
        conn: u64,
        uid: u64,
        device: String,
        room: u64,
        origin: &Origin,
        now_ms: u64,
    ) -> (Presence, PresenceEvent) {
        let mut presence = Presence {
            conn,
            uid,
            device,
            room: Some(room),
            seq: 0,
        };
        let event = presence.event(EventKind::Enter, room, None, origin, now_ms);
        (presence, event)
    }

    /// Moves to `room`: an exit from the current room, then an enter into the new one. Nothing
    /// when it is already there or has left.
    pub fn change_room(&mut self, room: u64, origin: &Origin, now_ms: u64) -> Vec<PresenceEvent> {
        match self.room {
            Some(current) if current != room => {
                let exit = self.event(
                    EventKind::Exit,
                    current,
                    Some("room_change"),
                    origin,
                    now_ms,
                );
                let enter = self.event(EventKind::Enter, room, None, origin, now_ms);
                self.room = Some(room);
                vec![exit, enter]
            }
            _ => Vec::new(),
        }
    }

    /// The connection closed: its exit, once. Later calls return nothing.
    pub fn close(&mut self, reason: &str, origin: &Origin, now_ms: u64) -> Option<PresenceEvent> {
        let room = self.room.take()?;
        Some(self.event(EventKind::Exit, room, Some(reason), origin, now_ms))
    }

    fn event(
        &mut self,
        kind: EventKind,
        room: u64,
        reason: Option<&str>,
        origin: &Origin,
        now_ms: u64,
    ) -> PresenceEvent {
        self.seq += 1;
        PresenceEvent {
            event: kind,
            conn: origin.conn_id(self.conn),
            seq: self.seq,
            uid: self.uid,
            device: self.device.clone(),
            room,
            gateway: origin.gateway.clone(),
            region: origin.region.clone(),
            reason: reason.map(str::to_owned),
            ts_ms: now_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use danmu_proto::frame::{Frame, op, version};
    use danmu_proto::token::{self, Claims, TokenIssuer, TokenVerifier};

    use super::*;
    use crate::connection::session::{Action, Session, SessionConfig};

    fn origin() -> Origin {
        Origin {
            gateway: "A-gw-1".into(),
            region: "A".into(),
        }
    }

    fn summary(events: &[PresenceEvent]) -> Vec<(EventKind, u64, u64, Option<&str>)> {
        events
            .iter()
            .map(|e| (e.event, e.seq, e.room, e.reason.as_deref()))
            .collect()
    }

    #[test]
    fn enter_then_close_exits_once_from_the_same_room() {
        let (mut presence, enter) = Presence::enter(7, 1001, "dev".into(), 5, &origin(), 10);
        let exit = presence.close("peer_closed", &origin(), 20);
        assert!(presence.close("shutdown", &origin(), 30).is_none());
        let events = [enter, exit.expect("one exit")];
        assert_eq!(
            summary(&events),
            [
                (EventKind::Enter, 1, 5, None),
                (EventKind::Exit, 2, 5, Some("peer_closed"))
            ]
        );
        assert!(events.iter().all(|e| e.conn == "A-gw-1/7" && e.uid == 1001));
        assert_eq!(events[1].ts_ms, 20);
    }

    #[test]
    fn a_room_change_exits_the_old_room_and_enters_the_new_one() {
        let (mut presence, enter) = Presence::enter(7, 1001, "dev".into(), 5, &origin(), 0);
        let mut events = vec![enter];
        events.extend(presence.change_room(5, &origin(), 1)); // already there: nothing
        events.extend(presence.change_room(6, &origin(), 2));
        events.extend(presence.close("drain", &origin(), 3));
        events.extend(presence.change_room(8, &origin(), 4)); // gone: nothing
        assert_eq!(
            summary(&events),
            [
                (EventKind::Enter, 1, 5, None),
                (EventKind::Exit, 2, 5, Some("room_change")),
                (EventKind::Enter, 3, 6, None),
                (EventKind::Exit, 4, 6, Some("drain")),
            ]
        );
    }

    /// The session decides a silent connection is dead on its own clock; the exit carries why.
    #[test]
    fn a_heartbeat_timeout_ends_in_an_exit_without_sleeping() {
        let pair = token::generate_keypair();
        let issuer = TokenIssuer::from_private_pem(&pair.private_pem).unwrap();
        let verifier = TokenVerifier::from_public_pem(&pair.public_pem).unwrap();
        let now_unix = 1_700_000_000;
        let key = issuer
            .issue(&Claims {
                sub: "1001".into(),
                uid: 1001,
                dev: "dev".into(),
                rooms: None,
                iat: now_unix,
                exp: now_unix + 60,
                iss: token::ISSUER.into(),
                aud: token::AUDIENCE.into(),
            })
            .unwrap();
        let config = SessionConfig {
            auth_timeout: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(60),
        };
        let start = Instant::now();
        let mut session = Session::new(config, start);
        let body = format!(r#"{{"uid":1001,"roomid":5,"protover":3,"key":"{key}"}}"#);
        let mut actions = Vec::new();
        session.on_frame(
            Frame::new(version::CONTROL, op::AUTH, 1, body.into_bytes()),
            start,
            now_unix,
            &verifier,
            &mut actions,
        );
        let Some(Action::Join(identity)) = actions
            .iter()
            .find(|a| matches!(a, Action::Join(_)))
            .cloned()
        else {
            panic!("no join in {actions:?}");
        };
        let (mut presence, enter) = Presence::enter(
            1,
            identity.uid,
            identity.device,
            identity.room,
            &origin(),
            0,
        );
        assert_eq!(session.on_tick(start + Duration::from_secs(59)), None);
        let Some(Action::Close(reason)) = session.on_tick(start + Duration::from_secs(61)) else {
            panic!("the session should time out");
        };
        let exit = presence
            .close(reason.label(), &origin(), 61_000)
            .expect("an exit");
        assert_eq!(
            summary(&[enter, exit]),
            [
                (EventKind::Enter, 1, 5, None),
                (EventKind::Exit, 2, 5, Some("heartbeat_timeout"))
            ]
        );
    }
}

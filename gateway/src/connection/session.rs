//! One client connection's protocol state, as plain code: frames and ticks in, actions out.
//! No sockets and no clock of its own (the caller passes `now`), so every rule here is tested
//! in microseconds without sleeping.
//!
//! ```text
//!   AwaitingAuth ──AUTH ok──▶ Joined ──close / timeout / bad input──▶ Closed
//!        │                      │ HEARTBEAT → HEARTBEAT_REPLY(online)
//!        └──bad token, timeout, anything but AUTH──▶ Closed
//! ```

use std::time::{Duration, Instant};

use bytes::Bytes;
use danmu_proto::auth::{self, AuthRequest};
use danmu_proto::frame::{self, Frame, op};
use danmu_proto::token::TokenVerifier;

use crate::connection::CloseReason;

/// Timeouts of a session.
#[derive(Clone, Copy, Debug)]
pub struct SessionConfig {
    /// A connection must authenticate within this time.
    pub auth_timeout: Duration,
    /// A joined connection that sends nothing (heartbeats are every ~30 s) for this long is dead.
    pub heartbeat_timeout: Duration,
}

/// Who an authenticated connection is, and what it can decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u64,
    pub device: String,
    pub room: u64,
    /// 0 (raw), 2 (zlib) or 3 (brotli): the batch encoding this client decodes.
    pub protover: u16,
    /// Opted in to high reach: high-priority batches carry delivery ids to acknowledge.
    pub ack: bool,
    /// Opted in to DRAIN: told to reconnect elsewhere before a shutdown closes it.
    pub drain: bool,
    /// Rooms the token allows (`None`: any), checked again on a room change.
    pub allowed_rooms: Option<Vec<u64>>,
    /// The token's `exp` (unix seconds): a room change at or after it is refused with -102,
    /// as a new AUTH with the same token would be.
    pub expires_at: u64,
}

/// What the IO layer must do after an input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write this GOIM frame to the client.
    Send(Bytes),
    /// Authenticated: add the connection to its room.
    Join(Identity),
    /// Answer a heartbeat with the room's online count (the IO layer knows the count).
    HeartbeatReply,
    /// The client acknowledged a high-priority batch's delivery id.
    Ack(u32),
    /// Move the connection from its room to this one (the reply is sent separately).
    ChangeRoom(u64),
    /// An upstream danmu from the connection in `room` (the IO layer decides and replies, see
    /// `crate::upstream`); `seq` is echoed in the reply.
    Upstream { seq: u32, room: u64, body: Bytes },
    /// Close, after writing what was queued before.
    Close(CloseReason),
}

enum Phase {
    AwaitingAuth,
    Joined(Identity),
    Closed,
}

pub struct Session {
    config: SessionConfig,
    phase: Phase,
    opened_at: Instant,
    last_heard: Instant,
}

impl Session {
    pub fn new(config: SessionConfig, now: Instant) -> Self {
        Session {
            config,
            phase: Phase::AwaitingAuth,
            opened_at: now,
            last_heard: now,
        }
    }

    pub fn identity(&self) -> Option<&Identity> {
        match &self.phase {
            Phase::Joined(identity) => Some(identity),
            _ => None,
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// When `on_tick` must next be called.
    pub fn deadline(&self) -> Instant {
        match self.phase {
            Phase::AwaitingAuth => self.opened_at + self.config.auth_timeout,
            Phase::Joined(_) | Phase::Closed => self.last_heard + self.config.heartbeat_timeout,
        }
    }

    /// Checks timeouts.
    pub fn on_tick(&mut self, now: Instant) -> Option<Action> {
        if self.is_closed() || now < self.deadline() {
            return None;
        }
        let reason = match self.phase {
            Phase::AwaitingAuth => CloseReason::AuthTimeout,
            _ => CloseReason::HeartbeatTimeout,
        };
        Some(self.close(reason))
    }

    /// Handles one complete frame from the client.
    pub fn on_frame(
        &mut self,
        frame: Frame,
        now: Instant,
        now_unix: u64,
        verifier: &TokenVerifier,
        out: &mut Vec<Action>,
    ) {
        self.last_heard = now;
        match (&self.phase, frame.op) {
            (Phase::Closed, _) => {}
            (Phase::AwaitingAuth, op::AUTH) => {
                self.authenticate(&frame.body, now_unix, verifier, out)
            }
            (Phase::AwaitingAuth, other) => out.push(self.close(CloseReason::Protocol(format!(
                "operation {other} before AUTH"
            )))),
            (Phase::Joined(_), op::HEARTBEAT) => out.push(Action::HeartbeatReply),
            (Phase::Joined(_), op::ACK) => out.push(Action::Ack(frame.seq)),
            (Phase::Joined(_), op::ROOM_CHANGE) => self.change_room(&frame, now_unix, out),
            (Phase::Joined(identity), op::UPSTREAM) => out.push(Action::Upstream {
                seq: frame.seq,
                room: identity.room,
                body: frame.body,
            }),
            (Phase::Joined(_), op::AUTH) => {
                out.push(self.close(CloseReason::Protocol("second AUTH".into())))
            }
            (Phase::Joined(_), other) => {
                out.push(self.close(CloseReason::Protocol(format!("unknown operation {other}"))))
            }
        }
    }

    /// ROOM_CHANGE: `{"roomid":N}`, allowed by the same token. Answered with ROOM_CHANGE_REPLY
    /// `{"code":C,"roomid":R}` (R is the room the connection is in afterwards), echoing the
    /// request's sequence; a refused change keeps the current room.
    fn change_room(&mut self, frame: &Frame, now_unix: u64, out: &mut Vec<Action>) {
        let Phase::Joined(identity) = &mut self.phase else {
            return;
        };
        #[derive(serde::Deserialize)]
        struct RoomChange {
            roomid: u64,
        }
        let code = match serde_json::from_slice::<RoomChange>(&frame.body) {
            Err(_) => auth::code::BAD_REQUEST,
            // The token's time claims hold for the whole connection's use of it, not only at
            // AUTH (JWT `exp`, RFC 7519 4.1.4).
            Ok(_) if now_unix >= identity.expires_at => auth::code::TOKEN_EXPIRED,
            Ok(change)
                if !identity
                    .allowed_rooms
                    .as_ref()
                    .is_none_or(|r| r.contains(&change.roomid)) =>
            {
                auth::code::ROOM_NOT_ALLOWED
            }
            Ok(change) => {
                if change.roomid != identity.room {
                    identity.room = change.roomid;
                    out.push(Action::ChangeRoom(change.roomid));
                }
                auth::code::OK
            }
        };
        let body = serde_json::json!({"code": code, "roomid": identity.room}).to_string();
        let reply = Frame::new(
            frame::version::CONTROL,
            op::ROOM_CHANGE_REPLY,
            frame.seq,
            body.into_bytes(),
        );
        out.push(Action::Send(reply.to_bytes()));
    }

    /// Marks the session closed and returns the close action.
    pub fn close(&mut self, reason: CloseReason) -> Action {
        self.phase = Phase::Closed;
        Action::Close(reason)
    }

    fn authenticate(
        &mut self,
        body: &[u8],
        now_unix: u64,
        verifier: &TokenVerifier,
        out: &mut Vec<Action>,
    ) {
        match check_auth(body, now_unix, verifier) {
            Ok(identity) => {
                out.push(Action::Send(frame::auth_reply(auth::code::OK)));
                out.push(Action::Join(identity.clone()));
                self.phase = Phase::Joined(identity);
            }
            Err(code) => {
                // The reply comes first so the client learns why before the close.
                out.push(Action::Send(frame::auth_reply(code)));
                out.push(self.close(CloseReason::AuthFailed(code)));
            }
        }
    }
}

/// Validates an AUTH body against its token; the error is the AUTH_REPLY code.
fn check_auth(body: &[u8], now_unix: u64, verifier: &TokenVerifier) -> Result<Identity, i32> {
    let request = AuthRequest::parse(body).map_err(|_| auth::code::BAD_REQUEST)?;
    let protover = match request.protover {
        // Version 1 is the control version; clients sending it decode raw JSON.
        0 | 1 => frame::version::RAW,
        2 => frame::version::ZLIB,
        3 => frame::version::BROTLI,
        _ => return Err(auth::code::UNSUPPORTED_PROTOVER),
    };
    let claims = verifier
        .verify(&request.key, now_unix)
        .map_err(|error| error.auth_code())?;
    if request.uid != claims.uid {
        return Err(auth::code::UID_MISMATCH);
    }
    if !claims.allows_room(request.roomid) {
        return Err(auth::code::ROOM_NOT_ALLOWED);
    }
    let device = if claims.dev.is_empty() {
        request.buvid
    } else {
        claims.dev
    };
    Ok(Identity {
        uid: claims.uid,
        device,
        room: request.roomid,
        protover,
        ack: request.ack,
        drain: request.drain,
        allowed_rooms: claims.rooms,
        expires_at: claims.exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use danmu_proto::token::{self, Claims, TokenIssuer};

    const NOW: u64 = 1_700_000_000;

    struct Keys {
        issuer: TokenIssuer,
        verifier: TokenVerifier,
    }

    fn keys() -> Keys {
        let pair = token::generate_keypair();
        Keys {
            issuer: TokenIssuer::from_private_pem(&pair.private_pem).unwrap(),
            verifier: TokenVerifier::from_public_pem(&pair.public_pem).unwrap(),
        }
    }

    fn token(keys: &Keys, uid: u64, rooms: Option<Vec<u64>>, exp: u64) -> String {
        keys.issuer
            .issue(&Claims {
                sub: uid.to_string(),
                uid,
                dev: "dev-1".into(),
                rooms,
                iat: NOW - 10,
                exp,
                iss: token::ISSUER.into(),
                aud: token::AUDIENCE.into(),
            })
            .unwrap()
    }

    fn auth_frame(uid: u64, room: u64, protover: u16, key: &str) -> Frame {
        let body = format!(
            r#"{{"uid":{uid},"roomid":{room},"protover":{protover},"platform":"web","type":2,"key":"{key}"}}"#
        );
        Frame::new(frame::version::CONTROL, op::AUTH, 1, body.into_bytes())
    }

    fn config() -> SessionConfig {
        SessionConfig {
            auth_timeout: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(90),
        }
    }

    fn feed(session: &mut Session, keys: &Keys, frame: Frame, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        session.on_frame(frame, now, NOW, &keys.verifier, &mut out);
        out
    }

    #[test]
    fn a_valid_auth_replies_code_0_and_joins() {
        let keys = keys();
        let t0 = Instant::now();
        let mut session = Session::new(config(), t0);
        let key = token(&keys, 42, Some(vec![1001]), NOW + 60);
        let actions = feed(&mut session, &keys, auth_frame(42, 1001, 3, &key), t0);
        assert_eq!(
            actions,
            [
                Action::Send(frame::auth_reply(0)),
                Action::Join(Identity {
                    uid: 42,
                    device: "dev-1".into(),
                    room: 1001,
                    protover: 3,
                    ack: false,
                    drain: false,
                    allowed_rooms: Some(vec![1001]),
                    expires_at: NOW + 60,
                })
            ]
        );
        let heartbeat = Frame::new(frame::version::CONTROL, op::HEARTBEAT, 2, Bytes::new());
        assert_eq!(
            feed(&mut session, &keys, heartbeat, t0),
            [Action::HeartbeatReply]
        );
    }

    fn rejected_with(frame: Frame, keys: &Keys) -> i32 {
        let t0 = Instant::now();
        let mut session = Session::new(config(), t0);
        let actions = feed(&mut session, keys, frame, t0);
        assert!(session.is_closed());
        match actions.as_slice() {
            [
                Action::Send(reply),
                Action::Close(CloseReason::AuthFailed(code)),
            ] => {
                assert_eq!(reply, &frame::auth_reply(*code));
                *code
            }
            other => panic!("unexpected actions {other:?}"),
        }
    }

    #[test]
    fn bad_auths_get_their_code_then_a_close() {
        let keys = keys();
        let other_keys = self::keys();
        let good = token(&keys, 42, Some(vec![1001]), NOW + 60);
        assert_eq!(
            rejected_with(auth_frame(42, 1001, 3, "garbage"), &keys),
            -101
        );
        let forged = token(&other_keys, 42, Some(vec![1001]), NOW + 60);
        assert_eq!(rejected_with(auth_frame(42, 1001, 3, &forged), &keys), -101);
        let expired = token(&keys, 42, Some(vec![1001]), NOW);
        assert_eq!(
            rejected_with(auth_frame(42, 1001, 3, &expired), &keys),
            -102
        );
        assert_eq!(rejected_with(auth_frame(42, 1002, 3, &good), &keys), -103);
        assert_eq!(rejected_with(auth_frame(43, 1001, 3, &good), &keys), -105);
        assert_eq!(rejected_with(auth_frame(42, 1001, 9, &good), &keys), -106);
        let not_json = Frame::new(1, op::AUTH, 1, &b"{uid:"[..]);
        assert_eq!(rejected_with(not_json, &keys), -104);
    }

    #[test]
    fn any_room_token_allows_every_room() {
        let keys = keys();
        let t0 = Instant::now();
        let mut session = Session::new(config(), t0);
        let key = token(&keys, 7, None, NOW + 60);
        let actions = feed(&mut session, &keys, auth_frame(7, 99, 0, &key), t0);
        assert_eq!(actions[0], Action::Send(frame::auth_reply(0)));
        assert_eq!(session.identity().unwrap().protover, 0);
    }

    #[test]
    fn only_auth_is_accepted_before_auth_and_unknown_ops_close() {
        let keys = keys();
        let t0 = Instant::now();
        let mut session = Session::new(config(), t0);
        let heartbeat = Frame::new(1, op::HEARTBEAT, 1, Bytes::new());
        let actions = feed(&mut session, &keys, heartbeat, t0);
        assert!(matches!(
            actions[..],
            [Action::Close(CloseReason::Protocol(_))]
        ));

        let mut session = Session::new(config(), t0);
        let key = token(&keys, 1, None, NOW + 60);
        feed(&mut session, &keys, auth_frame(1, 5, 3, &key), t0);
        let actions = feed(
            &mut session,
            &keys,
            Frame::new(1, 4242, 1, Bytes::new()),
            t0,
        );
        assert!(
            matches!(&actions[..], [Action::Close(CloseReason::Protocol(why))] if why.contains("4242"))
        );
        assert!(
            feed(
                &mut session,
                &keys,
                Frame::new(1, op::HEARTBEAT, 1, Bytes::new()),
                t0
            )
            .is_empty()
        );
    }

    #[test]
    fn room_changes_follow_the_token_and_are_answered() {
        let keys = keys();
        let t0 = Instant::now();
        let mut session = Session::new(config(), t0);
        let key = token(&keys, 5, Some(vec![1, 2]), NOW + 60);
        feed(&mut session, &keys, auth_frame(5, 1, 3, &key), t0);
        let change = |room: &str| {
            Frame::new(
                1,
                op::ROOM_CHANGE,
                9,
                format!("{{\"roomid\":{room}}}").into_bytes(),
            )
        };
        let reply = |code: i32, room: u64| {
            let body = format!("{{\"code\":{code},\"roomid\":{room}}}");
            Action::Send(Frame::new(1, op::ROOM_CHANGE_REPLY, 9, body.into_bytes()).to_bytes())
        };
        assert_eq!(
            feed(&mut session, &keys, change("2"), t0),
            [Action::ChangeRoom(2), reply(0, 2)]
        );
        assert_eq!(feed(&mut session, &keys, change("3"), t0), [reply(-103, 2)]);
        assert_eq!(
            feed(&mut session, &keys, change("\"x\""), t0),
            [reply(-104, 2)]
        );
        assert_eq!(session.identity().unwrap().room, 2);
    }

    #[test]
    fn a_room_change_after_the_token_expired_is_refused_with_102() {
        let keys = keys();
        let t0 = Instant::now();
        let mut session = Session::new(config(), t0);
        let key = token(&keys, 5, None, NOW + 60);
        feed(&mut session, &keys, auth_frame(5, 1, 3, &key), t0);
        let change = Frame::new(1, op::ROOM_CHANGE, 9, &b"{\"roomid\":2}"[..]);
        let mut out = Vec::new();
        session.on_frame(change, t0, NOW + 60, &keys.verifier, &mut out);
        let body = br#"{"code":-102,"roomid":1}"#;
        let reply = Frame::new(1, op::ROOM_CHANGE_REPLY, 9, &body[..]).to_bytes();
        assert_eq!(out, [Action::Send(reply)], "refused, still in room 1");
        assert_eq!(session.identity().unwrap().room, 1);
    }

    #[test]
    fn upstream_is_handed_on_after_auth_and_a_protocol_error_before() {
        let keys = keys();
        let t0 = Instant::now();
        let upstream = || Frame::new(1, op::UPSTREAM, 7, &br#"{"msg":"hi"}"#[..]);
        let mut session = Session::new(config(), t0);
        assert!(matches!(
            &feed(&mut session, &keys, upstream(), t0)[..],
            [Action::Close(CloseReason::Protocol(_))]
        ));

        let mut session = Session::new(config(), t0);
        let key = token(&keys, 3, None, NOW + 60);
        feed(&mut session, &keys, auth_frame(3, 5, 3, &key), t0);
        // Even a body that is not JSON: the upstream path answers it, the session never closes.
        let not_json = Frame::new(1, op::UPSTREAM, 8, &b"{msg"[..]);
        assert_eq!(
            feed(&mut session, &keys, not_json, t0),
            [Action::Upstream {
                seq: 8,
                room: 5,
                body: Bytes::from_static(b"{msg")
            }]
        );
        assert!(matches!(
            &feed(&mut session, &keys, upstream(), t0)[..],
            [Action::Upstream {
                seq: 7,
                room: 5,
                ..
            }]
        ));
        assert!(!session.is_closed());
    }

    #[test]
    fn auth_and_heartbeat_timeouts() {
        let keys = keys();
        let t0 = Instant::now();
        let mut session = Session::new(config(), t0);
        assert_eq!(session.deadline(), t0 + Duration::from_secs(10));
        assert_eq!(session.on_tick(t0 + Duration::from_secs(9)), None);
        assert_eq!(
            session.on_tick(t0 + Duration::from_secs(10)),
            Some(Action::Close(CloseReason::AuthTimeout))
        );

        let mut session = Session::new(config(), t0);
        let key = token(&keys, 1, None, NOW + 60);
        feed(
            &mut session,
            &keys,
            auth_frame(1, 5, 3, &key),
            t0 + Duration::from_secs(1),
        );
        let heartbeat = Frame::new(1, op::HEARTBEAT, 2, Bytes::new());
        feed(&mut session, &keys, heartbeat, t0 + Duration::from_secs(60));
        assert_eq!(session.deadline(), t0 + Duration::from_secs(150));
        assert_eq!(session.on_tick(t0 + Duration::from_secs(149)), None);
        assert_eq!(
            session.on_tick(t0 + Duration::from_secs(150)),
            Some(Action::Close(CloseReason::HeartbeatTimeout))
        );
        assert_eq!(
            session.on_tick(t0 + Duration::from_secs(500)),
            None,
            "closes once"
        );
    }
}

//! Exits for the connections of a gateway that died, as plain code.
//!
//! A gateway emits an exit for each of its connections as it closes them, even while draining.
//! A gateway that crashes (killed, out of memory, machine gone) emits nothing more; its health
//! report stops and the connections it held are gone. The sweeper follows the region's enter and
//! exit events, so it knows which connections each gateway still holds; once a gateway has been
//! silent (no fresh health report, no event) for the node TTL, it emits their exits, continuing
//! each connection's `seq` so they carry the same ids whichever control replica emits them
//! (the stream's duplicate window keeps one).

use std::collections::HashMap;

use danmu_proto::presence::{EventKind, GATEWAY_LOST, PresenceEvent};

/// A connection inside a room, as its last event left it.
struct Live {
    seq: u64,
    uid: u64,
    device: String,
    room: u64,
}

#[derive(Default)]
struct GatewayConns {
    region: String,
    conns: HashMap<String, Live>,
    /// Last event from this gateway, unix milliseconds by its clock.
    last_event_ms: u64,
}

#[derive(Default)]
pub struct Sweeper {
    gateways: HashMap<String, GatewayConns>,
}

impl Sweeper {
    /// Follows one event (from the stream, in order; repeats and stale ones are harmless).
    pub fn apply(&mut self, event: &PresenceEvent) {
        let gateway = self.gateways.entry(event.gateway.clone()).or_default();
        gateway.region.clone_from(&event.region);
        if event.reason.as_deref() != Some(GATEWAY_LOST) {
            gateway.last_event_ms = gateway.last_event_ms.max(event.ts_ms);
        }
        let newer = gateway
            .conns
            .get(&event.conn)
            .is_none_or(|live| event.seq > live.seq);
        match event.event {
            EventKind::Enter if newer => {
                gateway.conns.insert(
                    event.conn.clone(),
                    Live {
                        seq: event.seq,
                        uid: event.uid,
                        device: event.device.clone(),
                        room: event.room,
                    },
                );
            }
            EventKind::Exit if newer => {
                gateway.conns.remove(&event.conn);
            }
            _ => {}
        }
        if gateway.conns.is_empty() {
            self.gateways.remove(&event.gateway);
        }
    }

    /// Connections held, over all gateways.
    pub fn live(&self) -> usize {
        self.gateways.values().map(|g| g.conns.len()).sum()
    }

    /// Exits for every connection of each gateway that is not `alive` and has sent no event for
    /// `silence_ms`; those gateways are forgotten.
    pub fn sweep(
        &mut self,
        alive: impl Fn(&str) -> bool,
        now_ms: u64,
        silence_ms: u64,
    ) -> Vec<PresenceEvent> {
        let lost: Vec<String> = self
            .gateways
            .iter()
            .filter(|(id, gateway)| {
                !alive(id) && now_ms.saturating_sub(gateway.last_event_ms) >= silence_ms
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut exits = Vec::new();
        for id in lost {
            let Some(gateway) = self.gateways.remove(&id) else {
                continue;
            };
            let mut conns: Vec<_> = gateway.conns.into_iter().collect();
            conns.sort_by(|a, b| a.0.cmp(&b.0));
            exits.extend(conns.into_iter().map(|(conn, live)| PresenceEvent {
                event: EventKind::Exit,
                conn,
                seq: live.seq + 1,
                uid: live.uid,
                device: live.device,
                room: live.room,
                gateway: id.clone(),
                region: gateway.region.clone(),
                reason: Some(GATEWAY_LOST.into()),
                ts_ms: now_ms,
            }));
        }
        exits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, gateway: &str, conn: u64, seq: u64, room: u64) -> PresenceEvent {
        PresenceEvent {
            event: kind,
            conn: format!("{gateway}/{conn}"),
            seq,
            uid: 1000 + conn,
            device: String::new(),
            room,
            gateway: gateway.into(),
            region: "A".into(),
            reason: None,
            ts_ms: 1_000,
        }
    }

    #[test]
    fn a_dead_gateways_open_connections_exit_once_with_the_next_seq() {
        let mut sweeper = Sweeper::default();
        for e in [
            event(EventKind::Enter, "gw1", 1, 1, 5),
            event(EventKind::Enter, "gw1", 2, 1, 5),
            event(EventKind::Exit, "gw1", 2, 2, 5),
            event(EventKind::Exit, "gw1", 1, 2, 5),
            event(EventKind::Enter, "gw1", 1, 3, 6), // room change: exit 2, enter 3
            event(EventKind::Enter, "gw1", 3, 1, 5),
            event(EventKind::Enter, "gw2", 1, 1, 5),
        ] {
            sweeper.apply(&e);
        }
        assert_eq!(sweeper.live(), 3);
        let alive = |id: &str| id == "gw2";
        assert!(
            sweeper.sweep(alive, 1_500, 1_000).is_empty(),
            "heard 0.5 s ago"
        );
        let exits = sweeper.sweep(alive, 2_000, 1_000);
        let got: Vec<_> = exits
            .iter()
            .map(|e| (e.conn.as_str(), e.seq, e.room, e.reason.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("gw1/1", 4, 6, Some(GATEWAY_LOST)),
                ("gw1/3", 2, 5, Some(GATEWAY_LOST))
            ]
        );
        assert!(sweeper.sweep(alive, 9_000, 1_000).is_empty(), "once");
        assert_eq!(sweeper.live(), 1);
    }

    #[test]
    fn repeats_stale_events_and_its_own_exits_read_back_change_nothing() {
        let mut sweeper = Sweeper::default();
        let enter = event(EventKind::Enter, "gw1", 1, 3, 5);
        sweeper.apply(&enter);
        sweeper.apply(&enter);
        sweeper.apply(&event(EventKind::Exit, "gw1", 1, 2, 5)); // older than the enter
        assert_eq!(sweeper.live(), 1);
        let exits = sweeper.sweep(|_| false, 5_000, 1_000);
        assert_eq!(exits.len(), 1);
        assert_eq!(exits[0].seq, 4);
        sweeper.apply(&exits[0]); // read back from the stream
        assert_eq!(sweeper.live(), 0);
        assert!(sweeper.sweep(|_| false, 9_000, 1_000).is_empty());
    }
}

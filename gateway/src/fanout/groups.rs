//! Which connections belong to which push target, and the fan-out of a batch to its members.
//!
//! A group is everything one edge subject reaches on this gateway: a room's members, a user's
//! connections, a device's, the whole region's, everyone's. A group exists only while it has
//! local members: the first join subscribes to its edge subjects and the last leave
//! unsubscribes, both under the registry lock so a join can never land in a group that is being
//! torn down. A user-scope push thus reaches only the gateways holding that user: NATS interest
//! is the session router.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use danmu_proto::internal::{self, EdgeBatch};
use danmu_proto::subjects::{Priority, Scope};
use smallvec::SmallVec;

use crate::connection::Framing;
use crate::fanout::edge::{self, Dedup, Fresh, Variants};
use crate::fanout::outbound::{Outbound, Push};
use crate::stats::{Delivery, Stats, scope_label};

/// A joined connection as the fan-out sees it.
pub struct Member {
    pub conn_id: u64,
    pub framing: Framing,
    pub protover: u16,
    pub outbound: Outbound,
}

/// Starts the delivery of a group's edge batches to `Group::deliver`, and stops it by the id
/// `subscribe` returned. NATS in production, a recorder in tests.
pub trait EdgeSource: Send + Sync + 'static {
    fn subscribe(&self, group: Arc<Group>) -> u64;
    fn unsubscribe(&self, id: u64);
}

/// Limits applied while delivering.
#[derive(Clone, Copy, Debug)]
pub struct DeliveryLimits {
    /// Largest decompressed batch accepted (guards against decompression bombs).
    pub max_raw_batch: usize,
    /// Quality used when a batch must be re-encoded (only after a distributor failover).
    pub brotli_quality: u32,
}

pub struct Group {
    pub scope: Scope,
    members: Mutex<Members>,
    dedup: Mutex<Dedup>,
    /// The edge subscription's id while subscribed (ids start at 1); set and taken under the
    /// registry lock.
    subscription: AtomicU64,
}

/// A group's members: a vector the fan-out walks in one pass over contiguous pointers, with an
/// index by connection id only once the group is big enough that finding a leaving member by a
/// scan would cost. Most groups (a user's, a device's) hold one member, kept inline: no
/// allocation and no hash table for them (idle memory per connection).
#[derive(Default)]
struct Members {
    list: SmallVec<[Arc<Member>; 1]>,
    /// conn_id -> position in `list`; present while `list` is longer than `INDEX_FROM / 2`
    /// after having grown past `INDEX_FROM`. Boxed so the groups that never have one (nearly
    /// all) pay a pointer for it, not an empty table's 48 bytes.
    #[allow(clippy::box_collection)]
    index: Option<Box<HashMap<u64, usize>>>,
}

/// Members from which a group keeps an index by connection id.
const INDEX_FROM: usize = 32;

impl Members {
    fn position(&self, conn_id: u64) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(&conn_id).copied(),
            None => self.list.iter().position(|m| m.conn_id == conn_id),
        }
    }

    /// Adds a member, or replaces the one with the same connection id.
    fn insert(&mut self, member: Arc<Member>) {
        if let Some(at) = self.position(member.conn_id) {
            self.list[at] = member;
            return;
        }
        if let Some(index) = &mut self.index {
            index.insert(member.conn_id, self.list.len());
        }
        self.list.push(member);
        if self.index.is_none() && self.list.len() > INDEX_FROM {
            self.index = Some(Box::new(
                self.list
                    .iter()
                    .enumerate()
                    .map(|(at, m)| (m.conn_id, at))
                    .collect(),
            ));
        }
    }

    /// Removes a member; says whether it was there.
    fn remove(&mut self, conn_id: u64) -> bool {
        let Some(at) = self.position(conn_id) else {
            return false;
        };
        self.list.swap_remove(at);
        if let Some(index) = &mut self.index {
            index.remove(&conn_id);
            if let Some(moved) = self.list.get(at) {
                index.insert(moved.conn_id, at);
            }
            if self.list.len() <= INDEX_FROM / 2 {
                self.index = None;
            }
        }
        if self.list.is_empty() && self.list.spilled() {
            self.list = SmallVec::new();
        }
        true
    }

    fn len(&self) -> usize {
        self.list.len()
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

impl Group {
    fn new(scope: Scope) -> Self {
        Group {
            scope,
            members: Mutex::new(Members::default()),
            dedup: Mutex::new(Dedup::default()),
            subscription: AtomicU64::new(0),
        }
    }

    /// Members on this gateway (a room's online count here).
    pub fn online(&self) -> u32 {
        self.members.lock().expect("group lock").len() as u32
    }

    /// Queues one batch for every member, high priority ahead of low. A member whose queue is
    /// full sheds low priority (counted); one that cannot take high priority is cut off.
    ///
    /// Returns whether the group has the batch: at least one member queued it now, or it is a
    /// duplicate of one already delivered. `false` when no member took it (none left, every
    /// queue full or closed, or the batch is corrupt).
    pub fn deliver(&self, batch: EdgeBatch, limits: DeliveryLimits, stats: &Stats) -> bool {
        let high = batch.priority == internal::Priority::High as i32;
        let messages = batch.message_count.max(1);
        let fresh = self.dedup.lock().expect("dedup lock").check(&batch);
        let packet = match fresh {
            Fresh::Nothing => {
                stats.batch_received("duplicate");
                return true;
            }
            Fresh::All => {
                stats.batch_received("ok");
                batch.packet
            }
            Fresh::From(from) => {
                stats.batch_received("trimmed");
                match edge::trim(
                    &batch.packet,
                    from,
                    limits.max_raw_batch,
                    limits.brotli_quality,
                ) {
                    Some(packet) => packet,
                    None => {
                        stats.batch_received("corrupt");
                        return false;
                    }
                }
            }
        };
        let mut variants = Variants::new(packet, limits.max_raw_batch, stats);
        let (mut frames, mut bytes, mut shed) = (0u64, 0u64, 0u64);
        {
            let members = self.members.lock().expect("group lock");
            for member in &members.list {
                let Some(encoded) = variants.get(member.protover, member.framing) else {
                    continue;
                };
                let len = encoded.len() as u64;
                match member.outbound.push(encoded, high, messages) {
                    Push::Queued { shed: dropped } => {
                        frames += 1;
                        bytes += len;
                        shed += u64::from(dropped);
                    }
                    Push::Shed { shed: dropped } => shed += u64::from(dropped),
                    Push::Overflow { shed: dropped } => {
                        // The connection closes itself as a slow consumer, counted there.
                        shed += u64::from(dropped);
                    }
                    Push::Closed => {}
                }
            }
        }
        if shed > 0 {
            stats.shed("queue_full", shed);
        }
        let delay = (batch.oldest_publish_unix_micros > 0).then(|| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_micros() as i64;
            (now - batch.oldest_publish_unix_micros).max(0) as f64 / 1e6
        });
        stats.delivered(
            Delivery {
                frames,
                messages: frames * u64::from(messages),
                batch_messages: messages,
                bytes,
                priority: if high {
                    Priority::High.token()
                } else {
                    Priority::Low.token()
                },
                scope: scope_label(&self.scope),
            },
            delay,
        );
        frames > 0
    }
}

/// Every group with local members.
pub struct Groups {
    groups: Mutex<HashMap<Scope, Arc<Group>>>,
    source: Box<dyn EdgeSource>,
    stats: Arc<Stats>,
}

impl Groups {
    pub fn new(source: Box<dyn EdgeSource>, stats: Arc<Stats>) -> Self {
        Groups {
            groups: Mutex::new(HashMap::new()),
            source,
            stats,
        }
    }

    /// Adds a member; the group's first member starts its subscription.
    pub fn join(&self, scope: Scope, member: Arc<Member>) -> Arc<Group> {
        let mut groups = self.groups.lock().expect("groups lock");
        let group = groups.entry(scope.clone()).or_insert_with(|| {
            let group = Arc::new(Group::new(scope));
            group
                .subscription
                .store(self.source.subscribe(group.clone()), Ordering::Relaxed);
            if matches!(group.scope, Scope::Room(_)) {
                self.stats.room_count(1);
            }
            group
        });
        group.members.lock().expect("group lock").insert(member);
        group.clone()
    }

    /// Removes a member; the group's last member stops its subscription.
    pub fn leave(&self, scope: &Scope, conn_id: u64) {
        let mut groups = self.groups.lock().expect("groups lock");
        let Some(group) = groups.get(scope) else {
            return;
        };
        let empty = {
            let mut members = group.members.lock().expect("group lock");
            members.remove(conn_id);
            members.is_empty()
        };
        if empty {
            let subscription = group.subscription.swap(0, Ordering::Relaxed);
            if subscription != 0 {
                self.source.unsubscribe(subscription);
            }
            if matches!(scope, Scope::Room(_)) {
                self.stats.room_count(-1);
            }
            groups.remove(scope);
        }
    }

    /// Every room with local members and how many: what the online report carries.
    pub fn room_counts(&self) -> Vec<(u64, u32)> {
        let rooms: Vec<(u64, Arc<Group>)> = {
            let groups = self.groups.lock().expect("groups lock");
            groups
                .iter()
                .filter_map(|(scope, group)| match scope {
                    Scope::Room(room) => Some((*room, group.clone())),
                    _ => None,
                })
                .collect()
        };
        // Counted outside the registry lock: joins and leaves elsewhere go on meanwhile.
        rooms
            .into_iter()
            .map(|(room, group)| (room, group.online()))
            .filter(|&(_, count)| count > 0)
            .collect()
    }

    pub fn get(&self, scope: &Scope) -> Option<Arc<Group>> {
        self.groups.lock().expect("groups lock").get(scope).cloned()
    }

    pub fn len(&self) -> usize {
        self.groups.lock().expect("groups lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Default)]
    struct Recorder {
        subscribed: Arc<AtomicUsize>,
    }

    impl EdgeSource for Recorder {
        fn subscribe(&self, _group: Arc<Group>) -> u64 {
            self.subscribed.fetch_add(1, Ordering::SeqCst) as u64
        }

        fn unsubscribe(&self, _id: u64) {}
    }

    fn member(conn_id: u64, protover: u16) -> Arc<Member> {
        Arc::new(Member {
            conn_id,
            framing: Framing::Stream,
            protover,
            outbound: Outbound::new(1 << 20),
        })
    }

    #[test]
    fn members_keep_their_index_right_through_growth_and_shrinking() {
        let mut members = Members::default();
        let mut expected: Vec<u64> = Vec::new();
        for id in 0..100u64 {
            members.insert(member(id, 3));
            expected.push(id);
        }
        assert!(members.index.is_some(), "indexed past {INDEX_FROM}");
        members.insert(member(5, 0));
        assert_eq!(
            members.len(),
            100,
            "a second join of a connection replaces it"
        );
        for id in (0..100u64).filter(|id| id % 3 != 0) {
            assert!(members.remove(id));
            expected.retain(|&e| e != id);
            assert!(!members.remove(id), "removed once");
            for &left in &expected {
                let at = members.position(left).expect("still found");
                assert_eq!(members.list[at].conn_id, left);
            }
        }
        assert_eq!(members.len(), 34);
        for id in (0..100u64).filter(|id| id % 3 == 0) {
            assert!(members.remove(id));
        }
        assert!(members.is_empty());
        assert!(members.index.is_none());
        assert!(
            !members.list.spilled(),
            "an empty group gives its memory back"
        );
    }

    #[tokio::test]
    async fn subscribes_on_first_join_and_unsubscribes_on_last_leave() {
        let recorder = Recorder::default();
        let subscribed = recorder.subscribed.clone();
        let stats = Arc::new(Stats::default());
        let rooms = Groups::new(Box::new(recorder), stats.clone());
        let room = rooms.join(Scope::Room(7), member(1, 3));
        rooms.join(Scope::Room(7), member(2, 3));
        assert_eq!(subscribed.load(Ordering::SeqCst), 1);
        assert_eq!(room.online(), 2);
        rooms.leave(&Scope::Room(7), 1);
        assert_eq!(rooms.len(), 1);
        rooms.leave(&Scope::Room(7), 2);
        assert!(rooms.is_empty());
        assert_eq!(stats.rooms.load(Ordering::SeqCst), 0);
        rooms.join(Scope::Room(7), member(3, 3));
        assert_eq!(
            subscribed.load(Ordering::SeqCst),
            2,
            "a new room subscribes again"
        );
    }

    #[tokio::test]
    async fn a_batch_reaches_every_member_once_and_duplicates_are_dropped() {
        let stats = Arc::new(Stats::default());
        let rooms = Groups::new(Box::new(Recorder::default()), stats.clone());
        let members: Vec<_> = (0..5)
            .map(|i| member(i, [0, 2, 3][i as usize % 3]))
            .collect();
        let mut room = None;
        for m in &members {
            room = Some(rooms.join(Scope::Room(9), m.clone()));
        }
        let raw = danmu_proto::batch::encode_messages([&b"{\"cmd\":\"DANMU_MSG\"}"[..]]);
        let edge = EdgeBatch {
            packet: danmu_proto::batch::compressed_packet(
                3,
                &danmu_proto::batch::brotli_compress(&raw, 5),
            ),
            stream: "PUSH_LO_A".into(),
            first_stream_seq: 1,
            last_stream_seq: 1,
            message_count: 1,
            stream_seqs: vec![1],
            ..Default::default()
        };
        let limits = DeliveryLimits {
            max_raw_batch: 1 << 20,
            brotli_quality: 5,
        };
        let room = room.unwrap();
        assert!(room.deliver(edge.clone(), limits, &stats), "queued");
        assert!(
            room.deliver(edge, limits, &stats),
            "a duplicate was delivered before"
        );
        assert_eq!(crate::stats::get(&stats.deliveries), 5);
        assert_eq!(crate::stats::get(&stats.batches_duplicate), 1);
        assert_eq!(crate::stats::get(&stats.zlib_encodes), 1);
        for m in &members {
            let mut out = Vec::new();
            m.outbound.drain_into(0, usize::MAX, |b, _| out.push(b));
            assert_eq!(out.len(), 1);
        }
    }

    #[tokio::test]
    async fn deliver_says_whether_a_member_queued_the_batch() {
        let stats = Arc::new(Stats::default());
        let rooms = Groups::new(Box::new(Recorder::default()), stats.clone());
        let limits = DeliveryLimits {
            max_raw_batch: 1 << 20,
            brotli_quality: 5,
        };
        let raw = danmu_proto::batch::encode_messages([&b"{\"cmd\":\"X\"}"[..]]);
        let packet =
            danmu_proto::batch::compressed_packet(3, &danmu_proto::batch::brotli_compress(&raw, 5));
        let batch = |seq: u64| EdgeBatch {
            packet: packet.clone(),
            priority: internal::Priority::High as i32,
            stream: "PUSH_HI_A".into(),
            first_stream_seq: seq,
            last_stream_seq: seq,
            message_count: 1,
            stream_seqs: vec![seq],
            ..Default::default()
        };
        let m = member(1, 3);
        let group = rooms.join(Scope::User(5), m.clone());
        rooms.leave(&Scope::User(5), 1);
        assert!(!group.deliver(batch(1), limits, &stats), "no member left");
        let m = member(2, 3);
        let group = rooms.join(Scope::User(5), m.clone());
        m.outbound.close();
        assert!(
            !group.deliver(batch(2), limits, &stats),
            "the only member is closed"
        );
        let group = rooms.join(Scope::User(5), member(3, 3));
        assert!(group.deliver(batch(3), limits, &stats));
    }
}

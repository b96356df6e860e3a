//! Live-delivery confirmations for user-scope high-priority batches, as plain state with an
//! explicit clock.
//!
//! Such a batch is published with a reply subject of ours (`<prefix>.<id>`), in order, without
//! waiting. Every gateway holding the user answers once it has queued the batch; when no gateway
//! holds the user anywhere, NATS answers at once with a "no responders" status. The batch's
//! messages are acked on the first answer, or stored for the user's next connect on "no
//! responders" or when no answer came in time.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

struct Awaiting<M> {
    uid: u64,
    messages: Vec<M>,
}

pub struct Confirmations<M> {
    prefix: String,
    timeout: Duration,
    next_id: u64,
    awaiting: HashMap<u64, Awaiting<M>>,
    /// Ids by deadline; every entry waits the same timeout, so pushing keeps it sorted.
    deadlines: VecDeque<(Instant, u64)>,
}

impl<M> Confirmations<M> {
    pub fn new(prefix: String, timeout: Duration) -> Self {
        Confirmations {
            prefix,
            timeout,
            next_id: 0,
            awaiting: HashMap::new(),
            deadlines: VecDeque::new(),
        }
    }

    /// The wildcard to subscribe to for answers.
    pub fn subscription(&self) -> String {
        format!("{}.*", self.prefix)
    }

    /// Registers a batch for `uid` and returns the reply subject to publish it with.
    pub fn expect(&mut self, uid: u64, messages: Vec<M>, now: Instant) -> String {
        self.next_id += 1;
        let id = self.next_id;
        self.awaiting.insert(id, Awaiting { uid, messages });
        self.deadlines.push_back((now + self.timeout, id));
        format!("{}.{id}", self.prefix)
    }

    /// Takes the batch an answer on `subject` is about; `None` for later answers to a batch
    /// already settled (the user is connected in several places).
    pub fn answered(&mut self, subject: &str) -> Option<(u64, Vec<M>)> {
        let id = subject.rsplit('.').next()?.parse().ok()?;
        self.awaiting.remove(&id).map(|a| (a.uid, a.messages))
    }

    /// When the oldest unanswered batch times out.
    pub fn deadline(&mut self) -> Option<Instant> {
        while let Some((at, id)) = self.deadlines.front() {
            if self.awaiting.contains_key(id) {
                return Some(*at);
            }
            self.deadlines.pop_front();
        }
        None
    }

    /// Batches whose answer did not come in time.
    pub fn timed_out(&mut self, now: Instant) -> Vec<(u64, Vec<M>)> {
        let mut out = Vec::new();
        while let Some(&(at, id)) = self.deadlines.front() {
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            if let Some(a) = self.awaiting.remove(&id) {
                out.push((a.uid, a.messages));
            }
        }
        out
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.awaiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_answer_settles_a_batch_and_later_ones_are_ignored() {
        let mut c = Confirmations::new("_R.x".into(), Duration::from_secs(1));
        let t0 = Instant::now();
        let reply = c.expect(7, vec!["a"], t0);
        assert_eq!(reply, "_R.x.1");
        assert_eq!(c.answered(&reply), Some((7, vec!["a"])));
        assert_eq!(c.answered(&reply), None);
        assert_eq!(c.deadline(), None);
    }

    #[test]
    fn unanswered_batches_time_out_in_order() {
        let mut c = Confirmations::new("_R.x".into(), Duration::from_secs(1));
        let t0 = Instant::now();
        c.expect(1, vec![1], t0);
        let second = c.expect(2, vec![2], t0 + Duration::from_millis(10));
        c.expect(3, vec![3], t0 + Duration::from_millis(20));
        c.answered(&second);
        assert_eq!(c.deadline(), Some(t0 + Duration::from_secs(1)));
        assert!(c.timed_out(t0 + Duration::from_millis(999)).is_empty());
        assert_eq!(
            c.timed_out(t0 + Duration::from_millis(1020)),
            [(1, vec![1]), (3, vec![3])]
        );
        assert!(c.is_empty());
        assert_eq!(c.answered("_R.x.nonsense"), None);
    }
}

//! One timer table per connection (the shape of quinn-proto's `connection/timer.rs`): each
//! kind of deadline has a slot, the connection sets and stops slots as its state changes, and
//! the IO side keeps a single `Sleep` reset to the earliest one.

use std::time::Instant;

/// The deadlines a connection can wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// AUTH (and the WebSocket upgrade) must arrive by then; after AUTH, the heartbeat timeout.
    Idle,
    /// The next high-reach retry is due.
    Retry,
    /// Nothing written since the stall began: cut off as a slow consumer.
    Stall,
    /// The gateway drains: this connection's moment to leave.
    Drain,
    /// Closing: stop flushing the last bytes.
    Linger,
}

impl Timer {
    const ALL: [Timer; 5] = [
        Timer::Idle,
        Timer::Retry,
        Timer::Stall,
        Timer::Drain,
        Timer::Linger,
    ];
}

/// A deadline per [`Timer`].
#[derive(Clone, Copy, Debug, Default)]
pub struct TimerTable {
    slots: [Option<Instant>; 5],
}

impl TimerTable {
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.slots[timer as usize] = Some(at);
    }

    pub fn stop(&mut self, timer: Timer) {
        self.slots[timer as usize] = None;
    }

    pub fn get(&self, timer: Timer) -> Option<Instant> {
        self.slots[timer as usize]
    }

    /// Sets or stops `timer`.
    pub fn put(&mut self, timer: Timer, at: Option<Instant>) {
        self.slots[timer as usize] = at;
    }

    /// The earliest deadline, if any.
    pub fn next(&self) -> Option<Instant> {
        self.slots.iter().flatten().min().copied()
    }

    /// Whether `timer` is set and due at `now`.
    pub fn is_due(&self, timer: Timer, now: Instant) -> bool {
        self.get(timer).is_some_and(|at| at <= now)
    }

    /// The timers due at `now`, in table order.
    pub fn due(&self, now: Instant) -> impl Iterator<Item = Timer> + '_ {
        Timer::ALL
            .into_iter()
            .filter(move |&timer| self.is_due(timer, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn next_is_the_earliest_set_slot() {
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        assert_eq!(table.next(), None);
        table.set(Timer::Idle, t0 + Duration::from_secs(90));
        table.set(Timer::Retry, t0 + Duration::from_secs(1));
        assert_eq!(table.next(), Some(t0 + Duration::from_secs(1)));
        table.stop(Timer::Retry);
        assert_eq!(table.next(), Some(t0 + Duration::from_secs(90)));
        let due: Vec<_> = table.due(t0 + Duration::from_secs(90)).collect();
        assert_eq!(due, [Timer::Idle]);
    }
}

//! Free loopback ports for servers started by tests.
//!
//! A port is found by binding `127.0.0.1:0` and releasing it, so another process can take it before
//! our server binds it: callers that start a process on such a port retry the whole start when the
//! bind fails (see `nats::SuperclusterBuilder::start`).

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, OnceLock};

/// How many times to ask the kernel before giving up on a port this process has not handed out yet.
const ATTEMPTS: usize = 64;

/// A loopback TCP port that is free right now and that this process has not handed out before.
///
/// Remembering what was handed out keeps tests running in parallel in one process from getting the
/// same port between release and bind.
pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(Default::default);
    for _ in 0..ATTEMPTS {
        let port = free_tcp_listener()
            .local_addr()
            .expect("local_addr of a bound listener")
            .port();
        let mut seen = handed_out.lock().unwrap_or_else(|e| e.into_inner());
        if seen.insert(port) {
            return port;
        }
    }
    panic!("no free loopback port after {ATTEMPTS} attempts")
}

/// A listener bound to a free loopback port: hand it to an in-process server so the port cannot be
/// lost between choosing and binding it.
pub fn free_tcp_listener() -> TcpListener {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_never_handed_out_twice() {
        // Only distinctness is checked: whether a released port is still free later depends on
        // every other test binding ports in parallel, which is why servers retry their start.
        let ports: HashSet<u16> = (0..32).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 32);
    }

    #[test]
    fn listener_is_on_loopback() {
        let listener = free_tcp_listener();
        assert!(listener.local_addr().unwrap().ip().is_loopback());
    }
}

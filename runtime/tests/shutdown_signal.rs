//! `shutdown_signal` keeps a signal that arrives before its future is first polled. A service
//! calls it first thing and awaits it only once started; with handlers installed at the first
//! poll instead (as before), the SIGTERM below would take the default action and kill this test
//! process. Its own test binary: the handler stays installed for the rest of the process.

use std::time::Duration;

#[tokio::test]
async fn a_sigterm_before_the_first_poll_is_kept_and_resolves_it() {
    let shutdown = danmu_runtime::shutdown_signal();
    // SAFETY: kill(2) on our own pid with a signal whose handler is now installed.
    let rc = unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    // Let the signal be delivered before the future is first polled.
    std::thread::sleep(Duration::from_millis(50));
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("the SIGTERM sent before the first poll resolves the shutdown future");
}

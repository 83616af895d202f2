use std::os::unix::net::UnixDatagram;

use super::*;

#[test]
fn messages_reach_the_socket_and_pings_are_rate_limited() {
    let dir = std::env::temp_dir().join(format!("retina-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_nonblocking(true).unwrap();
    // The crate reads NOTIFY_SOCKET itself; the notifier is built by hand so the
    // test's own environment is not changed for other tests.
    let mut n = Notifier {
        socket: Some(path.clone().into()),
        watchdog: Some(Duration::from_secs(3600)),
        last_ping: None,
        failing: AtomicBool::new(false),
    };
    // SAFETY: no other test reads or writes NOTIFY_SOCKET.
    unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
    n.ready("collecting every 10s");
    n.cycle_done(); // within half the period of the ready ping: nothing
    n.stopping("SIGTERM");
    // SAFETY: as above.
    unsafe { std::env::remove_var("NOTIFY_SOCKET") };
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(len) = sock.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..len]).into_owned());
    }
    assert_eq!(
        got,
        [
            "READY=1\nSTATUS=collecting every 10s\n",
            "WATCHDOG=1\n",
            "STOPPING=1\nSTATUS=SIGTERM\n"
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

use super::*;

#[test]
fn mounts() {
    let text = "sysfs /sys sysfs rw 0 0\nbpf /sys/fs/bpf bpf rw,relatime 0 0\n\
                    none /sys/kernel/tracing tracefs rw 0 0\n";
    assert_eq!(mount_points(text, "bpf"), vec!["/sys/fs/bpf"]);
    assert_eq!(mount_points(text, "tracefs"), vec!["/sys/kernel/tracing"]);
    assert!(mount_points("", "bpf").is_empty());
    assert_eq!(mount("", "bpffs", "bpf", "h").status, Status::Warn);
    assert_eq!(mount(text, "bpffs", "bpf", "h").status, Status::Pass);
}

#[test]
fn reachability_and_bind() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ok = otlp(&format!("http://127.0.0.1:{port}"), CONNECT_TIMEOUT);
    assert_eq!(ok.status, Status::Pass, "{ok:?}");
    // The port is taken: binding it fails with a hint.
    let taken = prometheus(listener.local_addr().unwrap());
    assert_eq!(taken.status, Status::Fail);
    assert!(taken.hint.unwrap().contains("already running"));
    drop(listener);
    // A port bound but not listening refuses connections, and no other process on the
    // machine can take it between the two steps (as it could a port just closed).
    let holder = tokio::net::TcpSocket::new_v4().unwrap();
    holder.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = holder.local_addr().unwrap().port();
    let closed = otlp(&format!("http://127.0.0.1:{port}"), CONNECT_TIMEOUT);
    assert_eq!(closed.status, Status::Warn, "{closed:?}");
    assert_eq!(
        prometheus("127.0.0.1:0".parse().unwrap()).status,
        Status::Pass
    );
}

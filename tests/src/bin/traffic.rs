//! Test traffic generator: `traffic udp ADDR:PORT COUNT [PAYLOAD_BYTES]` sends COUNT UDP
//! datagrams of PAYLOAD_BYTES (default 32) and exits 0 once all were handed to the kernel.
//! `traffic udp ADDR:PORT COUNT PAYLOAD_BYTES SRC_PORT` sends them from source port
//! SRC_PORT. `traffic tcp ADDR:PORT COUNT SRC_PORT` makes COUNT connection attempts
//! (one SYN each, to a closed port) from source port SRC_PORT. `traffic icmp ADDR COUNT`
//! sends COUNT ICMP (IPv4) echo requests through a raw socket (needs CAP_NET_RAW).
//! `traffic raw IFACE COUNT ETHERTYPE` sends COUNT minimal Ethernet frames (broadcast,
//! 46 zero bytes of payload) with the hexadecimal ETHERTYPE out of IFACE (AF_PACKET).
//! `traffic sink ADDR:PORT RCVBUF` binds a UDP socket with SO_RCVBUF set to RCVBUF, prints
//! its port on a line and then sleeps without ever reading, so its receive buffer fills.
//! `traffic flood [PASSES]`, run as an unprivileged user: the EtherType flood of issue 26
//! (`retina_tests::flood`) from a user and network namespace of its own; prints
//! `netns <inode>` after the first pass, then goes on (forever without PASSES).
//! `traffic connect ADDR:PORT COUNT TIMEOUT_MS` makes COUNT TCP connects one after the
//! other, each given up (the socket closed) after TIMEOUT_MS; prints `connected N failed M`.
//! `traffic reset-server ADDR:PORT COUNT` listens, prints its port on a line, and answers
//! each of COUNT connections with a reset (SO_LINGER 0, then close).
//! `traffic reset-client ADDR:PORT COUNT` connects COUNT times and reads each connection
//! until it ends; prints `reset N` (how many ended with ECONNRESET).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is the test failing, with its message"
)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() <= 3 && args.get(1).is_some_and(|a| a == "flood") {
        let passes = args.get(2).map(|n| n.parse().expect("PASSES"));
        if let Err(e) = retina_tests::flood::run(passes) {
            eprintln!("traffic flood: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    if args.len() == 5 && args[1] == "raw" {
        raw(&args[2], args[3].parse().expect("COUNT"), &args[4]);
        return;
    }
    if args.len() == 4 && args[1] == "sink" {
        sink(&args[2], args[3].parse().expect("RCVBUF"));
    }
    if args.len() == 5 && args[1] == "connect" {
        tcp_connect(
            &args[2],
            args[3].parse().expect("COUNT"),
            args[4].parse().expect("TIMEOUT_MS"),
        );
        return;
    }
    if args.len() == 4 && args[1] == "reset-server" {
        reset_server(&args[2], args[3].parse().expect("COUNT"));
        return;
    }
    if args.len() == 4 && args[1] == "reset-client" {
        reset_client(&args[2], args[3].parse().expect("COUNT"));
        return;
    }
    if args.len() == 5 && args[1] == "tcp" {
        tcp(
            &args[2],
            args[3].parse().expect("COUNT"),
            args[4].parse().expect("SRC_PORT"),
        );
        return;
    }
    if args.len() == 4 && args[1] == "icmp" {
        icmp(&args[2], args[3].parse().expect("COUNT"));
        return;
    }
    if args.len() < 4 || args[1] != "udp" {
        eprintln!("usage: traffic udp ADDR:PORT COUNT [PAYLOAD_BYTES]");
        std::process::exit(2);
    }
    let dst: SocketAddr = args[2].parse().expect("ADDR:PORT");
    let count: u64 = args[3].parse().expect("COUNT");
    let size: usize = args
        .get(4)
        .map_or(32, |s| s.parse().expect("PAYLOAD_BYTES"));
    let src_port: u16 = args.get(5).map_or(0, |s| s.parse().expect("SRC_PORT"));
    let bind = if dst.is_ipv4() {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, src_port))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, src_port))
    };
    let socket = UdpSocket::bind(bind).expect("bind");
    let payload = vec![0x5a_u8; size];
    let mut sent = 0;
    while sent < count {
        match socket.send_to(&payload, dst) {
            Ok(_) => sent += 1,
            // A previous datagram's ICMP error can surface on a later send; the datagram
            // was not sent, so try again.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(e) => {
                eprintln!("send {sent}: {e}");
                std::process::exit(1);
            }
        }
    }
}

fn raw(iface: &str, count: u64, ethertype: &str) {
    let ethertype = u16::from_str_radix(ethertype.trim_start_matches("0x"), 16).expect("ETHERTYPE");
    let name = std::ffi::CString::new(iface).expect("IFACE");
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert!(ifindex != 0, "no interface {iface}");
    // SAFETY: plain socket(2); the descriptor is checked below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    let mut frame = [0u8; 60];
    frame[..6].fill(0xff);
    frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    addr.sll_addr[..6].fill(0xff);
    for i in 0..count {
        // SAFETY: `frame` and `addr` outlive the call; the lengths are theirs.
        let r = unsafe {
            libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r != frame.len() as isize {
            eprintln!("send {i}: {}", std::io::Error::last_os_error());
            std::process::exit(1);
        }
    }
    // SAFETY: our descriptor, closed once.
    unsafe { libc::close(fd) };
}

fn sink(addr: &str, rcvbuf: i32) -> ! {
    use std::{io::Write as _, os::fd::AsRawFd as _};
    let socket = UdpSocket::bind(addr.parse::<SocketAddr>().expect("ADDR:PORT")).expect("bind");
    // SAFETY: setsockopt on our own socket with a pointer to a live i32 and its size.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const rcvbuf).cast(),
            std::mem::size_of::<i32>() as u32,
        )
    };
    assert!(r == 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
    let port = socket.local_addr().expect("local_addr").port();
    let mut out = std::io::stdout();
    writeln!(out, "{port}").expect("stdout");
    out.flush().expect("stdout");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

fn tcp_connect(addr: &str, count: u32, timeout_ms: u64) {
    let dst: SocketAddr = addr.parse().expect("ADDR:PORT");
    let timeout = std::time::Duration::from_millis(timeout_ms);
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..count {
        // On a timeout the socket (still SYN_SENT) is closed when dropped.
        match std::net::TcpStream::connect_timeout(&dst, timeout) {
            Ok(_) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    println!("connected {ok} failed {failed}");
}

fn reset_server(addr: &str, count: u32) {
    use std::io::Write as _;
    use std::os::fd::AsRawFd as _;
    let listener = std::net::TcpListener::bind(addr).expect("bind");
    println!("{}", listener.local_addr().expect("local address").port());
    std::io::stdout().flush().expect("stdout");
    for _ in 0..count {
        let (stream, _) = listener.accept().expect("accept");
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on a live socket with a `struct linger` of the right size.
        let r = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
        // Closing with a zero linger time sends a reset instead of a FIN.
        drop(stream);
    }
}

fn reset_client(addr: &str, count: u32) {
    use std::io::Read as _;
    let dst: SocketAddr = addr.parse().expect("ADDR:PORT");
    let mut reset = 0;
    for _ in 0..count {
        let mut stream = match std::net::TcpStream::connect(dst) {
            Ok(s) => s,
            // The server's reset can reach the socket before connect returns (a slow
            // guest): it was received all the same.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                reset += 1;
                continue;
            }
            Err(e) => panic!("connect: {e}"),
        };
        let mut buf = [0u8; 64];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    reset += 1;
                    break;
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    }
    println!("reset {reset}");
}

/// COUNT connection attempts to ADDR from SRC_PORT; each must be refused (a closed port).
fn tcp(addr: &str, count: u64, src_port: u16) {
    use socket2::{Domain, Socket, Type};
    let dst: SocketAddr = addr.parse().expect("ADDR:PORT");
    let src = match dst {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, src_port)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, src_port)),
    };
    for i in 0..count {
        let s = Socket::new(Domain::for_address(dst), Type::STREAM, None).expect("socket");
        s.set_reuse_address(true).expect("SO_REUSEADDR");
        s.bind(&src.into()).expect("bind");
        match s.connect(&dst.into()) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            other => {
                eprintln!("connect {i}: expected a refusal, got {other:?}");
                std::process::exit(1);
            }
        }
    }
}

/// COUNT ICMP echo requests to ADDR (IPv4) through a raw socket.
fn icmp(addr: &str, count: u64) {
    use socket2::{Domain, Protocol, Socket, Type};
    let dst: Ipv4Addr = addr.parse().expect("ADDR");
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).expect("raw socket");
    for seq in 0..count {
        // Echo request: type 8, code 0, checksum, id, sequence, 8 bytes of payload.
        let mut p = [8u8, 0, 0, 0, 0x12, 0x34, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        p[6..8].copy_from_slice(&(seq as u16).to_be_bytes());
        let sum = p
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum::<u32>();
        let sum = (sum & 0xffff) + (sum >> 16);
        let sum = !((sum & 0xffff) + (sum >> 16)) as u16;
        p[2..4].copy_from_slice(&sum.to_be_bytes());
        s.send_to(&p, &SocketAddr::from((dst, 0)).into())
            .expect("send");
    }
}

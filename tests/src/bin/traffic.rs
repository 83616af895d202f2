//! Test traffic generator: `traffic udp ADDR:PORT COUNT [PAYLOAD_BYTES]` sends COUNT UDP
//! datagrams of PAYLOAD_BYTES (default 32) and exits 0 once all were handed to the kernel.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 || args[1] != "udp" {
        eprintln!("usage: traffic udp ADDR:PORT COUNT [PAYLOAD_BYTES]");
        std::process::exit(2);
    }
    let dst: SocketAddr = args[2].parse().expect("ADDR:PORT");
    let count: u64 = args[3].parse().expect("COUNT");
    let size: usize = args
        .get(4)
        .map_or(32, |s| s.parse().expect("PAYLOAD_BYTES"));
    let bind = if dst.is_ipv4() {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
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

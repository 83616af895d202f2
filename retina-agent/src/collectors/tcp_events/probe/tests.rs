use retina_ebpf_common::tcp::TCP_OFFSETS_RETRANSMIT_ERR;

use super::*;

#[test]
fn this_kernel_has_every_tracepoint_and_the_fields() {
    let btf = Btf::from_sys().unwrap();
    let s = support(&btf, 42).unwrap();
    assert!(s.missing.is_empty(), "{:?}", s.missing);
    assert_eq!(s.present.len(), TCP_PROGRAMS.len());
    let o = s.offsets;
    assert_eq!(o.host_netns, 42);
    assert!(o.flags & TCP_OFFSETS_VALID != 0);
    // 6.18's tcp_retransmit_skb(sk, skb, err); 6.1 and 6.12 have (sk, skb).
    let args = btf.tracepoint_args("tcp_retransmit_skb").unwrap();
    assert_eq!(o.flags & TCP_OFFSETS_RETRANSMIT_ERR != 0, args >= 3);
    // skc_state is in struct sock_common, at the start of struct sock; sk_protocol and
    // the cgroup pointer come after it.
    assert!(o.sk_state < o.sk_protocol && o.sk_state < o.sk_cgroup);
    assert!(o.cgroup_kn > 0 && o.kn_id > 0 && o.net_inum > 0);
}

#[test]
fn missing_tracepoints_are_named() {
    let (present, missing) = split(|tp| tp != "tcp_receive_reset");
    assert_eq!(missing, ["tcp_receive_reset"]);
    assert_eq!(present.len(), 3);
    let (present, missing) = split(|_| false);
    assert!(present.is_empty() && missing.len() == 4);
    let e = TcpProbeError::NoTracepoint.to_string();
    assert!(
        e.contains("tcp_retransmit_skb, inet_sock_set_state, tcp_send_reset, tcp_receive_reset"),
        "{e}"
    );
}

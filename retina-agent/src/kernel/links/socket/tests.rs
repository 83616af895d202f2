//! Dump datagrams fed to the table: building, updating and pruning it, control messages,
//! broken framing, and the identity of links.

use std::sync::Arc;

use super::Step;
use crate::kernel::links::{
    Link, LinkError, Links, Malformed, OperState, lossy_eq, parse::parse_link, table::Table,
    tests::*, uapi::*,
};

#[test]
fn every_truncation_of_a_message_is_an_error_not_a_panic() {
    let full = nlmsg(RTM_NEWLINK, &link_payload(3, "eth0", 10));
    for cut in 0..full.len() {
        let mut t = Table::default();
        let mut d = dump();
        let step = d.feed(&mut t, &full[..cut]);
        if cut == 0 {
            assert_eq!(step, Step::More);
            continue;
        }
        assert_eq!(step, Step::Abort, "cut at {cut}");
        assert!(d.error.is_some(), "cut at {cut}");
        assert!(t.entries.is_empty(), "cut at {cut}");
    }
    // The same message with nlmsg_len shrunk to each length: the framing is intact, the
    // payload is cut.
    for len in NLMSG_HDRLEN..full.len() {
        let mut m = full[..len].to_vec();
        m[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        let mut t = Table::default();
        let mut d = dump();
        d.feed(&mut t, &m);
        assert!(d.error.is_some(), "len {len}");
        assert!(t.entries.is_empty(), "len {len}");
    }
}

#[test]
fn random_garbage_never_panics() {
    // A small xorshift generator: deterministic, no dependency.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let good = nlmsg(RTM_NEWLINK, &link_payload(3, "eth0", 10));
    for _ in 0..20_000 {
        let mut m = good.clone();
        for _ in 0..(rnd() % 4 + 1) {
            let i = (rnd() as usize) % m.len();
            m[i] = rnd() as u8;
        }
        let mut t = Table::default();
        let mut d = dump();
        let _ = d.feed(&mut t, &m);
    }
}

#[test]
fn dump_builds_updates_and_prunes_the_table() {
    let mut t = Table::default();
    // Two datagrams, the second ending with DONE.
    let dg1 = [
        nlmsg(RTM_NEWLINK, &link_payload(1, "lo", 0)),
        nlmsg(RTM_NEWLINK, &link_payload(3, "eth0", 1000)),
    ]
    .concat();
    let dg2 = [nlmsg(RTM_NEWLINK, &link_payload(2, "eth1", 500)), done()].concat();
    let (d, step) = run_dump(&mut t, &[dg1.clone(), dg2.clone()]);
    assert_eq!(step, Step::Done);
    assert!(d.error.is_none());
    assert_eq!(
        names(&t),
        [(1, "lo".into()), (2, "eth1".into()), (3, "eth0".into())]
    );
    let eth0 = &t.get(3).unwrap();
    assert_eq!(eth0.stats.rx_packets, 1000);
    assert_eq!(eth0.operstate, OperState::Up);
    assert_eq!(eth0.mtu, Some(1500));
    let (inst_lo, inst_eth0) = (t.get(1).unwrap().instance, eth0.instance);
    let name_ptr = Arc::as_ptr(&eth0.name);
    let gen1 = t.generation;

    // Same interfaces, counters up: updated in place, same names, same instances.
    let dg = [
        nlmsg(RTM_NEWLINK, &link_payload(1, "lo", 5)),
        nlmsg(RTM_NEWLINK, &link_payload(2, "eth1", 600)),
        nlmsg(RTM_NEWLINK, &link_payload(3, "eth0", 2000)),
        done(),
    ]
    .concat();
    run_dump(&mut t, &[dg]);
    let eth0 = t.get(3).unwrap();
    assert_eq!(eth0.stats.rx_packets, 2000);
    assert_eq!(eth0.instance, inst_eth0);
    assert_eq!(Arc::as_ptr(&eth0.name), name_ptr);
    assert_eq!(t.get(1).unwrap().instance, inst_lo);
    assert_eq!(t.generation, gen1);

    // eth1 vanished, eth0 renamed, ifindex 4 appeared.
    let dg = [
        nlmsg(RTM_NEWLINK, &link_payload(1, "lo", 6)),
        nlmsg(RTM_NEWLINK, &link_payload(3, "wan0", 2001)),
        nlmsg(RTM_NEWLINK, &link_payload(4, "eth2", 0)),
        done(),
    ]
    .concat();
    run_dump(&mut t, &[dg]);
    assert_eq!(
        names(&t),
        [(1, "lo".into()), (3, "wan0".into()), (4, "eth2".into())]
    );
    assert_ne!(t.get(3).unwrap().instance, inst_eth0);
    assert_eq!(t.get(1).unwrap().instance, inst_lo);
    assert!(t.generation > gen1);

    // Counters going back mean a new device behind the same index and name.
    let inst = t.get(4).unwrap().instance;
    let generation = t.generation;
    let dg = [
        nlmsg(RTM_NEWLINK, &link_payload(1, "lo", 6)),
        nlmsg(RTM_NEWLINK, &link_payload(3, "wan0", 2001)),
        nlmsg(RTM_NEWLINK, &link_payload(4, "eth2", 0)),
        done(),
    ]
    .concat();
    run_dump(&mut t, &[dg]);
    assert_eq!(t.get(4).unwrap().instance, inst);
    assert_eq!(t.generation, generation);
    let dg = [
        nlmsg(RTM_NEWLINK, &link_payload(1, "lo", 0)),
        nlmsg(RTM_NEWLINK, &link_payload(3, "wan0", 2001)),
        nlmsg(RTM_NEWLINK, &link_payload(4, "eth2", 0)),
        done(),
    ]
    .concat();
    run_dump(&mut t, &[dg]);
    assert_ne!(t.get(1).unwrap().instance, inst_lo);

    // Everything gone.
    run_dump(&mut t, &[done()]);
    assert!(t.entries.is_empty());
}

#[test]
fn failed_dump_removes_nothing_and_keeps_bad_links_old_values() {
    let mut t = Table::default();
    let dg = [
        nlmsg(RTM_NEWLINK, &link_payload(1, "lo", 0)),
        nlmsg(RTM_NEWLINK, &link_payload(2, "eth0", 10)),
        done(),
    ]
    .concat();
    run_dump(&mut t, &[dg]);
    // eth0's message lacks its stats, and lo is missing from this dump.
    let dg = [
        nlmsg(RTM_NEWLINK, &ifinfo(2, 0, &[attr(IFLA_IFNAME, b"eth0\0")])),
        done(),
    ]
    .concat();
    let (d, step) = run_dump(&mut t, &[dg]);
    assert_eq!(step, Step::Done);
    let err = d.error.unwrap();
    assert!(matches!(
        err,
        LinkError::MalformedLink {
            ifindex: 2,
            what: Malformed::Missing("IFLA_STATS64"),
            ..
        }
    ));
    let msg = err.to_string();
    assert!(msg.contains("interface 2 (eth0)"), "{msg}");
    assert_eq!(names(&t), [(1, "lo".into()), (2, "eth0".into())]);
    assert_eq!(t.get(2).unwrap().stats.rx_packets, 10);
}

#[test]
fn control_messages() {
    // Kernel error for our request.
    let mut t = Table::default();
    let mut d = dump();
    let err = nlmsg(
        NLMSG_ERROR,
        &[(-libc::EBUSY).to_ne_bytes(), [0; 4]].concat(),
    );
    assert_eq!(d.feed(&mut t, &err), Step::Done);
    match d.error {
        Some(LinkError::Kernel { source, .. }) => {
            assert_eq!(source.raw_os_error(), Some(libc::EBUSY))
        }
        other => panic!("{other:?}"),
    }
    // DONE carrying an error.
    let mut d = dump();
    let m = nlmsg(NLMSG_DONE, &(-libc::EMSGSIZE).to_ne_bytes());
    assert_eq!(d.feed(&mut t, &m), Step::Done);
    assert!(matches!(d.error, Some(LinkError::Kernel { .. })));
    // DONE and ERROR carrying i32::MIN, which has no positive errno (found by fuzzing).
    for ty in [NLMSG_DONE, NLMSG_ERROR] {
        let mut d = dump();
        let m = nlmsg(ty, &[i32::MIN.to_ne_bytes(), [0; 4]].concat());
        assert_eq!(d.feed(&mut t, &m), Step::Done);
        match d.error {
            Some(LinkError::Kernel { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(i32::MAX))
            }
            other => panic!("{other:?}"),
        }
    }
    // Truncated NLMSG_ERROR.
    let mut d = dump();
    assert_eq!(d.feed(&mut t, &nlmsg(NLMSG_ERROR, &[1, 2])), Step::Done);
    assert!(matches!(d.error, Some(LinkError::Malformed { .. })));
    // Overrun.
    let mut d = dump();
    assert_eq!(d.feed(&mut t, &nlmsg(NLMSG_OVERRUN, &[])), Step::Abort);
    // Replies to other requests (stale sequence, other port) are skipped, even DONE.
    let mut d = dump();
    let dg = [
        nlmsg_full(RTM_NEWLINK, 2, SEQ - 1, PID, &link_payload(9, "old", 0)),
        nlmsg_full(NLMSG_DONE, 2, SEQ - 1, PID, &[0; 4]),
        nlmsg_full(NLMSG_DONE, 2, SEQ, PID + 1, &[0; 4]),
        nlmsg(NLMSG_NOOP, &[]),
        nlmsg(77, b"unknown type"),
    ]
    .concat();
    assert_eq!(d.feed(&mut t, &dg), Step::More);
    assert!(d.error.is_none());
    assert!(t.entries.is_empty());
    // NLM_F_DUMP_INTR marks the dump inconsistent.
    let mut d = dump();
    let m = nlmsg_full(
        RTM_NEWLINK,
        2 | NLM_F_DUMP_INTR,
        SEQ,
        PID,
        &link_payload(1, "lo", 0),
    );
    d.feed(&mut t, &m);
    assert!(d.interrupted);
}

#[test]
fn non_utf8_names_are_stored_lossily_and_compared_without_churn() {
    let raw = b"et\xffh0";
    assert!(lossy_eq(raw, "et\u{FFFD}h0"));
    assert!(!lossy_eq(raw, "et\u{FFFD}h"));
    assert!(!lossy_eq(raw, "eth0"));
    assert!(lossy_eq(b"", ""));
    assert!(!lossy_eq(b"a", ""));
    let mut t = Table::default();
    let mut payload = link_payload(2, "xxxxx", 0);
    // Overwrite the name bytes in place ("xxxxx" -> "et\xffh0").
    let pos = payload.windows(5).position(|w| w == b"xxxxx").unwrap();
    payload[pos..pos + 5].copy_from_slice(raw);
    let dg = [nlmsg(RTM_NEWLINK, &payload), done()].concat();
    run_dump(&mut t, std::slice::from_ref(&dg));
    let inst = t.get(2).unwrap().instance;
    assert_eq!(&*t.get(2).unwrap().name, "et\u{FFFD}h0");
    run_dump(&mut t, &[dg]);
    assert_eq!(t.get(2).unwrap().instance, inst);
}

#[test]
fn truncated_or_garbled_stats_datagrams_never_panic_or_apply() {
    let mut base = Table::default();
    run_dump(
        &mut base,
        &[[nlmsg(RTM_NEWLINK, &link_payload(4, "eth0", 10)), done()].concat()],
    );
    let full = nlmsg(RTM_NEWSTATS, &stats_payload(4, 50));
    for cut in 1..full.len() {
        let mut t = Table::default();
        run_dump(
            &mut t,
            &[[nlmsg(RTM_NEWLINK, &link_payload(4, "eth0", 10)), done()].concat()],
        );
        let mut d = stats_dump();
        assert_eq!(d.feed(&mut t, &full[..cut]), Step::Abort, "cut at {cut}");
        assert!(d.error.is_some(), "cut at {cut}");
        assert_eq!(t.get(4).unwrap().stats.rx_packets, 10, "cut at {cut}");
    }
    // nlmsg_len shrunk: framing intact, payload cut.
    for len in NLMSG_HDRLEN..full.len() {
        let mut m = full[..len].to_vec();
        m[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        let mut t = Table::default();
        run_dump(
            &mut t,
            &[[nlmsg(RTM_NEWLINK, &link_payload(4, "eth0", 10)), done()].concat()],
        );
        let mut d = stats_dump();
        d.feed(&mut t, &m);
        assert!(d.error.is_some(), "len {len}");
        assert_eq!(t.get(4).unwrap().stats.rx_packets, 10, "len {len}");
    }
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..20_000 {
        let mut m = full.clone();
        for _ in 0..(rnd() % 4 + 1) {
            let i = (rnd() as usize) % m.len();
            m[i] = rnd() as u8;
        }
        let mut d = stats_dump();
        let _ = d.feed(&mut base, &m);
    }
}

#[test]
fn stats_dump_updates_counters_and_detects_disagreement() {
    let mut t = Table::default();
    run_dump(
        &mut t,
        &[[
            nlmsg(RTM_NEWLINK, &link_payload(1, "lo", 0)),
            nlmsg(RTM_NEWLINK, &link_payload(3, "eth0", 1000)),
            done(),
        ]
        .concat()],
    );
    let (inst_lo, inst_eth0) = (t.get(1).unwrap().instance, t.get(3).unwrap().instance);
    let name_ptr = Arc::as_ptr(&t.get(3).unwrap().name);
    let generation = t.generation;

    // Counters up, in two datagrams: updated in place, nothing else touched.
    let (d, ok) = run_stats(
        &mut t,
        &[
            nlmsg(RTM_NEWSTATS, &stats_payload(1, 5)),
            [nlmsg(RTM_NEWSTATS, &stats_payload(3, 2000)), done()].concat(),
        ],
    );
    assert!(ok, "{d:?}");
    let eth0 = t.get(3).unwrap();
    assert_eq!(eth0.stats.rx_packets, 2000);
    assert_eq!(eth0.detail.multicast, 2008);
    assert_eq!(eth0.detail.rx_otherhost_dropped, Some(2024));
    assert_eq!((eth0.instance, &*eth0.name), (inst_eth0, "eth0"));
    assert_eq!(Arc::as_ptr(&eth0.name), name_ptr);
    assert_eq!(eth0.mtu, Some(1500));
    assert_eq!(eth0.operstate, OperState::Up);
    assert_eq!(t.get(1).unwrap().instance, inst_lo);
    assert_eq!(t.generation, generation);

    // RTM_NEWLINK messages in a stats dump (and vice versa) are ignored.
    let (_, ok) = run_stats(
        &mut t,
        &[[
            nlmsg(RTM_NEWSTATS, &stats_payload(1, 5)),
            nlmsg(RTM_NEWLINK, &link_payload(3, "evil", 1)),
            nlmsg(RTM_NEWSTATS, &stats_payload(3, 2000)),
            done(),
        ]
        .concat()],
    );
    assert!(ok);
    assert_eq!(&*t.get(3).unwrap().name, "eth0");
    assert_eq!(t.get(3).unwrap().stats.rx_packets, 2000);

    // A known interface missing: not consistent, nothing removed.
    let (_, ok) = run_stats(
        &mut t,
        &[[nlmsg(RTM_NEWSTATS, &stats_payload(1, 6)), done()].concat()],
    );
    assert!(!ok);
    assert_eq!(t.entries.len(), 2);

    // An unknown interface: not consistent, not inserted.
    let (d, ok) = run_stats(
        &mut t,
        &[[
            nlmsg(RTM_NEWSTATS, &stats_payload(1, 6)),
            nlmsg(RTM_NEWSTATS, &stats_payload(3, 2001)),
            nlmsg(RTM_NEWSTATS, &stats_payload(9, 0)),
            done(),
        ]
        .concat()],
    );
    assert!(!ok && d.unknown);
    assert!(t.get(9).is_none());
    assert_eq!(t.get(3).unwrap().stats.rx_packets, 2001);

    // Counters going backwards: new instance, new generation, and a full dump asked.
    let (d, ok) = run_stats(
        &mut t,
        &[[
            nlmsg(RTM_NEWSTATS, &stats_payload(1, 6)),
            nlmsg(RTM_NEWSTATS, &stats_payload(3, 0)),
            done(),
        ]
        .concat()],
    );
    assert!(!ok && d.went_back);
    assert_ne!(t.get(3).unwrap().instance, inst_eth0);
    assert_eq!(t.get(1).unwrap().instance, inst_lo);
    assert!(t.generation > generation);

    // Interrupted dump.
    let (d, ok) = run_stats(
        &mut t,
        &[[
            nlmsg_full(
                RTM_NEWSTATS,
                2 | NLM_F_DUMP_INTR,
                SEQ,
                PID,
                &stats_payload(1, 6),
            ),
            nlmsg(RTM_NEWSTATS, &stats_payload(3, 0)),
            done(),
        ]
        .concat()],
    );
    assert!(!ok && d.interrupted);

    // A malformed message: a typed error naming the interface; the others applied.
    let (d, ok) = run_stats(
        &mut t,
        &[[
            nlmsg(RTM_NEWSTATS, &stats_msg(3, &[])),
            nlmsg(RTM_NEWSTATS, &stats_payload(1, 7)),
            done(),
        ]
        .concat()],
    );
    assert!(!ok);
    let err = d.error.unwrap();
    assert!(matches!(
        err,
        LinkError::MalformedLink {
            ifindex: 3,
            what: Malformed::Missing("IFLA_STATS_LINK_64"),
            ..
        }
    ));
    assert!(err.to_string().contains("interface 3 (eth0)"), "{err}");
    assert_eq!(t.get(1).unwrap().stats.rx_packets, 7);
    assert_eq!(t.get(3).unwrap().stats.rx_packets, 0);

    // The kernel refusing the request.
    let mut d = stats_dump();
    let m = nlmsg(
        NLMSG_ERROR,
        &[(-libc::EOPNOTSUPP).to_ne_bytes(), [0; 4]].concat(),
    );
    assert_eq!(d.feed(&mut t, &m), Step::Done);
    assert!(matches!(d.error, Some(LinkError::Kernel { .. })));
}

#[test]
fn detached_table() {
    let mut l = Links::from_links([Link::new(3, "b"), Link::new(1, "a")]);
    assert_eq!(l.iter().map(|l| l.ifindex).collect::<Vec<_>>(), [1, 3]);
    assert_eq!(l.get_by_name("b").unwrap().ifindex, 3);
    assert!(matches!(l.refresh(), Err(LinkError::Detached)));
    l.remove(1);
    assert_eq!(l.len(), 1);
}

#[test]
fn the_peer_namespace_id_of_a_veth() {
    let msg = |nsid: &[u8]| {
        ifinfo(
            7,
            0,
            &[
                attr(IFLA_IFNAME, b"veth7\0"),
                stats_attr(1),
                attr(IFLA_LINK_NETNSID, nsid),
            ],
        )
    };
    assert_eq!(
        parse_link(&msg(&3i32.to_ne_bytes())).unwrap().link_netnsid,
        Some(3)
    );
    // NETNSA_NSID_NOT_ASSIGNED, and an attribute of the wrong size: no peer namespace,
    // the interface itself still parses.
    assert_eq!(
        parse_link(&msg(&(-1i32).to_ne_bytes()))
            .unwrap()
            .link_netnsid,
        None
    );
    assert_eq!(parse_link(&msg(&[1, 2])).unwrap().link_netnsid, None);
    // The peer moving to another namespace makes it another interface for collectors.
    let mut t = Table::default();
    run_dump(&mut t, &[nlmsg(RTM_NEWLINK, &msg(&3i32.to_ne_bytes()))]);
    let (instance, generation) = (t.entries[0].link.instance, t.generation);
    run_dump(&mut t, &[nlmsg(RTM_NEWLINK, &msg(&3i32.to_ne_bytes()))]);
    assert_eq!(t.entries[0].link.instance, instance);
    run_dump(&mut t, &[nlmsg(RTM_NEWLINK, &msg(&4i32.to_ne_bytes()))]);
    assert_eq!(t.entries[0].link.link_netnsid, Some(4));
    assert_ne!(t.entries[0].link.instance, instance);
    assert!(t.generation > generation);
}

#[test]
fn setting_a_workload_makes_a_new_instance() {
    let mut l = Links::from_links([Link::new(4, "veth4")]);
    let w = Arc::new(crate::model::Workload {
        pod_uid: Some(Arc::from("0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0")),
        ..Default::default()
    });
    let (i0, g0) = (l.get(4).unwrap().instance, l.generation());
    assert!(l.set_workload(4, Some(w.clone())));
    assert_ne!(l.get(4).unwrap().instance, i0);
    assert!(l.generation() > g0);
    let (i1, g1) = (l.get(4).unwrap().instance, l.generation());
    // The same workload again (another Arc): nothing changes.
    assert!(!l.set_workload(4, Some(Arc::new((*w).clone()))));
    assert_eq!((l.get(4).unwrap().instance, l.generation()), (i1, g1));
    assert!(l.set_workload(4, None));
    assert!(!l.set_workload(99, None));
}

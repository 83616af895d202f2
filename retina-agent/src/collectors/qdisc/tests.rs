use super::{
    msg::{
        RTM_NEWQDISC, TC_H_ROOT, TCA_KIND, TCA_STATS_BASIC, TCA_STATS_QUEUE, TCA_STATS2, build::*,
    },
    *,
};
use crate::kernel::links::{NLMSG_DONE, NLMSG_HDRLEN};

/// One netlink message of type `ty` around `payload`.
fn nlmsg(out: &mut Vec<u8>, ty: u16, seq: u32, payload: &[u8]) {
    let len = NLMSG_HDRLEN + payload.len();
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&0u16.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&7u32.to_ne_bytes());
    out.extend_from_slice(payload);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// The value of attribute `key` (the sets are in key order, not in the order built).
fn value(attrs: &[opentelemetry::KeyValue], key: &str) -> String {
    attrs
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
        .unwrap_or_default()
}

fn qdisc_msg(ifindex: i32, handle: u32, parent: u32, kind: &[u8], drops: u32) -> Vec<u8> {
    let mut p = tcmsg(ifindex, handle, parent);
    nla(&mut p, TCA_KIND, kind);
    let mut nested = Vec::new();
    nla(&mut nested, TCA_STATS_BASIC, &basic(100, 10));
    nla(&mut nested, TCA_STATS_QUEUE, &queue([0, 0, drops, 0, 0]));
    nla(&mut p, TCA_STATS2, &nested);
    p
}

fn feed(t: &mut Table, links: &Links, seq: u32, msgs: &[Vec<u8>]) -> bool {
    let mut data = Vec::new();
    for m in msgs {
        nlmsg(&mut data, RTM_NEWQDISC, seq, m);
    }
    nlmsg(&mut data, NLMSG_DONE, seq, &0i32.to_ne_bytes());
    let mut dump = Dump {
        op: "test",
        seq,
        portid: 7,
        class: false,
        interrupted: false,
        error: None,
    };
    t.stamp += 1;
    t.cursor = 0;
    t.classful.clear();
    let done = matches!(t.feed(links, &mut dump, &data), Step::Done);
    done && dump.error.is_none()
}

#[test]
fn series_are_updated_in_place_and_rebuilt_on_change() {
    let mut links = Links::from_links([
        crate::kernel::links::Link::new(2, "eth0"),
        crate::kernel::links::Link::new(3, "veth1"),
    ]);
    let mut t = Table {
        classes: true,
        ..Table::default()
    };
    let msgs = |drops| {
        vec![
            qdisc_msg(2, 0x10000, TC_H_ROOT, b"htb\0", drops),
            qdisc_msg(2, 0x100000, 0x10010, b"pfifo\0", drops),
            qdisc_msg(3, 0, TC_H_ROOT, b"noqueue\0", 0),
            // An interface the link table does not know: skipped.
            qdisc_msg(9, 0, TC_H_ROOT, b"noqueue\0", 0),
        ]
    };
    assert!(feed(&mut t, &links, 1, &msgs(1)));
    assert_eq!(t.series.len(), 3);
    assert_eq!(t.classful, [2]);
    let attrs_ptr = t.series[0].attrs.as_ptr();
    let handle = value(&t.series[1].attrs, ATTR_HANDLE);
    assert_eq!(handle, "10:");
    assert_eq!(value(&t.series[1].attrs, ATTR_PARENT), "1:10");
    assert!(feed(&mut t, &links, 2, &msgs(5)));
    assert_eq!(t.series[0].stats.drops, 5);
    assert_eq!(
        t.series[0].attrs.as_ptr(),
        attrs_ptr,
        "rebuilt without a change"
    );
    assert!(t.series.iter().all(|s| s.seen == t.stamp));
    // The root qdisc replaced by another kind, and eth0 renamed: rebuilt.
    links.upsert(crate::kernel::links::Link::new(2, "wan0"));
    let mut m = msgs(0);
    m[0] = qdisc_msg(2, 0x10000, TC_H_ROOT, b"prio\0", 0);
    assert!(feed(&mut t, &links, 3, &m));
    assert_eq!(value(&t.series[0].attrs, ATTR_KIND), "prio");
    assert_eq!(value(&t.series[0].attrs, crate::model::attr::INTERFACE_NAME), "wan0");
    assert_eq!(value(&t.series[1].attrs, crate::model::attr::INTERFACE_NAME), "wan0");
    // A reply to another request is ignored; a malformed message is an error.
    let mut data = Vec::new();
    nlmsg(
        &mut data,
        RTM_NEWQDISC,
        99,
        &qdisc_msg(2, 0x20000, TC_H_ROOT, b"tbf\0", 0),
    );
    nlmsg(&mut data, RTM_NEWQDISC, 4, &[0; 8]);
    nlmsg(&mut data, NLMSG_DONE, 4, &0i32.to_ne_bytes());
    let mut dump = Dump {
        op: "RTM_GETQDISC dump",
        seq: 4,
        portid: 7,
        class: false,
        interrupted: false,
        error: None,
    };
    assert!(matches!(t.feed(&links, &mut dump, &data), Step::Done));
    let err = dump.error.expect("malformed message").to_string();
    assert!(
        err.contains("RTM_GETQDISC dump") && err.contains("shorter"),
        "{err}"
    );
    assert_eq!(t.series.len(), 3);
}

#[test]
fn config_defaults() {
    let c = QdiscConfig::default();
    assert!(c.enabled && c.classes);
    assert!(serde_json::from_str::<QdiscConfig>(r#"{"class": true}"#).is_err());
}

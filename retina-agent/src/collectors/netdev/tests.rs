use std::collections::BTreeMap;

use super::*;

fn link(ifindex: u32, name: &str, base: u64) -> Link {
    let mut l = Link::new(ifindex, name);
    l.stats = LinkStats {
        rx_packets: base,
        tx_packets: base + 1,
        rx_bytes: base + 2,
        tx_bytes: base + 3,
        rx_errors: base + 4,
        tx_errors: base + 5,
        rx_dropped: base + 6,
        tx_dropped: base + 7,
    };
    l
}

/// (metric, interface, direction) -> value.
fn points(c: &NetdevCollector) -> BTreeMap<(&'static str, String, String), u64> {
    let mut out = BTreeMap::new();
    c.visit(&mut |m: &'static Metric, attrs: &[KeyValue], v: Number| {
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0].key.as_str(), attr::INTERFACE_NAME);
        assert_eq!(attrs[1].key.as_str(), attr::IO_DIRECTION);
        let Number::U64(v) = v else { panic!("{v:?}") };
        let prev = out.insert(
            (
                m.name,
                attrs[0].value.to_string(),
                attrs[1].value.to_string(),
            ),
            v,
        );
        assert!(prev.is_none(), "duplicate point");
    });
    out
}

fn key(m: &'static str, i: &str, d: &str) -> (&'static str, String, String) {
    (m, i.to_string(), d.to_string())
}

#[test]
fn exports_every_counter_with_direction() {
    let links = Links::from_links([link(1, "lo", 0), link(2, "eth0", 100)]);
    let mut c = NetdevCollector::new(&NetdevConfig::default());
    c.collect(&links).unwrap();
    let p = points(&c);
    assert_eq!(p.len(), 16);
    assert_eq!(
        p[&key("system.network.packet.count", "eth0", "receive")],
        100
    );
    assert_eq!(
        p[&key("system.network.packet.count", "eth0", "transmit")],
        101
    );
    assert_eq!(p[&key("system.network.io", "eth0", "receive")], 102);
    assert_eq!(p[&key("system.network.io", "eth0", "transmit")], 103);
    assert_eq!(p[&key("system.network.errors", "eth0", "receive")], 104);
    assert_eq!(p[&key("system.network.errors", "eth0", "transmit")], 105);
    assert_eq!(
        p[&key("system.network.packet.dropped", "eth0", "receive")],
        106
    );
    assert_eq!(
        p[&key("system.network.packet.dropped", "eth0", "transmit")],
        107
    );
    assert_eq!(p[&key("system.network.io", "lo", "receive")], 2);
    assert_eq!(c.name(), "netdev");
    assert_eq!(c.metrics().len(), 4);
}

#[test]
fn filter_and_churn() {
    let config = NetdevConfig {
        enabled: true,
        include: Pattern::list(&["eth.*|veth.*"]).unwrap(),
        exclude: Pattern::list(&["veth9"]).unwrap(),
    };
    let mut c = NetdevCollector::new(&config);
    let mut links = Links::from_links([
        link(1, "lo", 0),
        link(2, "eth0", 10),
        link(5, "veth1", 20),
        link(6, "veth9", 30),
    ]);
    c.collect(&links).unwrap();
    let names = |c: &NetdevCollector| {
        let n: std::collections::BTreeSet<String> =
            points(c).keys().map(|k| k.1.clone()).collect();
        n.into_iter().collect::<Vec<_>>()
    };
    assert_eq!(names(&c), ["eth0", "veth1"]);
    assert_eq!(c.exported(), 2);

    // veth1 deleted, ifindex 2 recreated as "eth7", a new veth appears.
    links.remove(5);
    links.upsert(link(2, "eth7", 0));
    links.upsert(link(8, "veth2", 0));
    c.collect(&links).unwrap();
    assert_eq!(names(&c), ["eth7", "veth2"]);
    // Nothing stale is kept, not even for rejected interfaces.
    assert_eq!(c.ifaces.len(), 4);
    assert_eq!(c.ifaces.ifindexes().collect::<Vec<_>>(), [1, 2, 6, 8]);

    // Renamed so the filter now rejects it: ifindex 2 stops being exported.
    links.upsert(link(2, "wan0", 0));
    c.collect(&links).unwrap();
    assert_eq!(names(&c), ["veth2"]);
}

#[test]
fn counters_follow_the_table_and_attributes_are_kept() {
    let mut links = Links::from_links([link(2, "eth0", 10)]);
    let mut c = NetdevCollector::with_filter(NameFilter::all());
    c.collect(&links).unwrap();
    let name_ptr = match &c.ifaces.get(2).unwrap().as_ref().unwrap().receive[0].value {
        opentelemetry::Value::String(s) => s.as_str().as_ptr(),
        v => panic!("{v:?}"),
    };
    // Same device (same instance), new counters.
    let mut l = links.get(2).unwrap().clone();
    l.stats.rx_bytes = 5000;
    links.upsert(l);
    c.collect(&links).unwrap();
    assert_eq!(
        points(&c)[&key("system.network.io", "eth0", "receive")],
        5000
    );
    let again = match &c.ifaces.get(2).unwrap().as_ref().unwrap().receive[0].value {
        opentelemetry::Value::String(s) => s.as_str().as_ptr(),
        v => panic!("{v:?}"),
    };
    assert_eq!(
        name_ptr, again,
        "attributes rebuilt for an unchanged interface"
    );
}

#[test]
fn config_defaults_and_errors() {
    let c = NetdevConfig::default();
    assert!(c.enabled);
    assert!(c.include.is_empty() && c.exclude.is_empty());
    let err = serde_json::from_str::<NetdevConfig>(r#"{"include": ["("]}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid regular expression \"(\""), "{err}");
    let c: NetdevConfig = serde_json::from_str(r#"{"exclude": ["veth.*"]}"#).unwrap();
    assert!(c.enabled);
    assert_eq!(c.exclude, ["veth.*"]);
    assert!(serde_json::from_str::<NetdevConfig>(r#"{"inclde": []}"#).is_err());
}

use super::*;

fn metric(name: &'static str, unit: &'static str, kind: Kind) -> Metric {
    Metric {
        name,
        unit,
        description: "d",
        kind,
    }
}

#[test]
fn family_names_follow_the_otel_rules() {
    let cases = [
        (
            "retina.drop.bytes",
            "By",
            Kind::Counter,
            "retina_drop_bytes_total",
        ),
        (
            "retina.drop.count",
            "{packet}",
            Kind::Counter,
            "retina_drop_count_total",
        ),
        (
            "retina.netstat.stat",
            "1",
            Kind::Counter,
            "retina_netstat_stat_total",
        ),
        ("retina.x.level", "1", Kind::Gauge, "retina_x_level_ratio"),
        (
            "system.network.io",
            "By",
            Kind::Counter,
            "system_network_io_bytes_total",
        ),
        (
            "retina.agent.collect.duration",
            "s",
            Kind::Gauge,
            "retina_agent_collect_duration_seconds",
        ),
        (
            "retina.nic.link.speed",
            "bit/s",
            Kind::Gauge,
            "retina_nic_link_speed_bits_per_second",
        ),
        ("x_seconds", "s", Kind::Gauge, "x_seconds"),
        ("xbytes", "By", Kind::Gauge, "xbytes_bytes"),
        ("a-b.c_total", "{x}", Kind::Counter, "a_b_c_total"),
        ("9lives", "", Kind::Gauge, "_9lives"),
    ];
    for (name, unit, kind, want) in cases {
        let m = metric(name, unit, kind);
        assert_eq!(family_name(&m), want, "{name} {unit}");
        let d = descriptor_name(&m);
        assert_eq!(
            d,
            want.strip_suffix("_total")
                .filter(|_| kind == Kind::Counter)
                .unwrap_or(want)
        );
    }
}

/// Encodes samples of one family through the crate's text encoder.
fn encode(kind: Kind, points: &[(&[KeyValue], Number)]) -> String {
    #[derive(Debug)]
    struct One(Kind, Vec<(Vec<KeyValue>, Number)>);
    impl Collector for One {
        fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            let mut f = encoder.encode_descriptor("m", "help", None, metric_type(self.0))?;
            for (a, v) in &self.1 {
                put_sample(&mut f, self.0, a, *v)?;
            }
            Ok(())
        }
    }
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(One(
        kind,
        points.iter().map(|(a, v)| (a.to_vec(), *v)).collect(),
    )));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
    out
}

#[test]
fn samples_escape_labels_and_format_values() {
    let attrs = [
        KeyValue::new("network.interface.name", "a\"b\\c\nd"),
        KeyValue::new("idx", 3i64),
        KeyValue::new("up", true),
    ];
    let out = encode(Kind::Gauge, &[(&attrs, Number::F64(0.25))]);
    assert!(
        out.contains(
            "m{network_interface_name=\"a\\\"b\\\\c\\nd\",idx=\"3\",up=\"true\"} 0.25\n"
        ),
        "{out}"
    );
    assert!(out.ends_with("# EOF\n"), "{out}");
    let out = encode(
        Kind::Counter,
        &[
            (&[], Number::U64(7)),
            (&[], Number::F64(-1.0)),
            (&[], Number::F64(2.9)),
        ],
    );
    assert!(out.contains("# TYPE m counter\n"), "{out}");
    assert!(out.contains("m_total 7\n"), "{out}");
    assert!(out.contains("m_total 2\n"), "{out}");
    assert_eq!(
        out.matches("m_total").count(),
        2,
        "a negative counter is left out: {out}"
    );
}

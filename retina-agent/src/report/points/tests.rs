use super::*;

static C: Metric = Metric {
    name: "c",
    unit: "1",
    description: "",
    kind: Kind::Counter,
};
static G: Metric = Metric {
    name: "g",
    unit: "1",
    description: "",
    kind: Kind::Gauge,
};

fn p(metric: &'static Metric, a: &str, v: u64) -> Point {
    Point {
        metric,
        attributes: vec![("k".into(), Json::from(a))],
        value: Number::U64(v),
    }
}

#[test]
fn deltas_of_counters_gauges_as_they_are() {
    let before = vec![
        p(&C, "x", 10),
        p(&C, "y", 5),
        p(&C, "r", 100),
        p(&G, "x", 7),
    ];
    let after = vec![
        p(&C, "x", 15),
        p(&C, "y", 5),
        p(&C, "r", 3),
        p(&C, "new", 4),
        p(&G, "x", 2),
    ];
    let d = deltas(&before, after);
    let got: Vec<(&str, String, u64)> = d
        .iter()
        .map(|p| {
            let Number::U64(v) = p.value else { panic!() };
            (p.metric.name, p.attributes[0].1.to_string(), v)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("c", "\"x\"".into(), 5),
            ("c", "\"r\"".into(), 3),
            ("c", "\"new\"".into(), 4),
            ("g", "\"x\"".into(), 2)
        ]
    );
}

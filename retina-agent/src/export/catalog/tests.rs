use super::*;
use crate::{
    collectors::{CollectError, Collector},
    kernel::links::Links,
    model::Visitor,
};

static COUNTER: Metric = Metric {
    name: "test.counter",
    unit: "{packet}",
    description: "",
    kind: Kind::Counter,
};
static METRICS: &[&Metric] = &[&COUNTER];

/// One counter with five series, valued 0 to 4.
struct Five;

impl Collector for Five {
    fn name(&self) -> &'static str {
        "five"
    }
    fn metrics(&self) -> &'static [&'static Metric] {
        METRICS
    }
    fn collect(&mut self, _: &Links) -> Result<(), CollectError> {
        Ok(())
    }
    fn visit(&self, v: &mut dyn Visitor) {
        for i in 0..5u64 {
            v.point(&COUNTER, &[KeyValue::new("i", i as i64)], Number::U64(i));
        }
    }
}

fn agent() -> Agent {
    let mut config = crate::config::Config::default();
    config.drops.enabled = false;
    config.ethtool.enabled = false;
    config.netdev.enabled = false;
    config.netstat.enabled = false;
    config.softnet.enabled = false;
    config.qdisc.enabled = false;
    config.conntrack.enabled = false;
    let mut a = Agent::new(&config).unwrap();
    a.add(Box::new(Five));
    a
}

/// What `visit_capped` hands out for metric `name`, then the capped gauge's points.
fn exported(c: &Catalog, a: &Agent, name: &str) -> (Vec<(String, f64)>, Vec<f64>) {
    let index = |n: &str| c.metrics().position(|m| m.name == n).unwrap();
    let mut points = Vec::new();
    c.visit_capped(index(name), a, None, &mut |attrs, v| {
        points.push((format!("{}={}", attrs[0].key, attrs[0].value), v.as_f64()));
    });
    let mut capped = Vec::new();
    c.visit_capped(index(SERIES_CAPPED.name), a, None, &mut |attrs, v| {
        assert_eq!(attrs[0].value.as_str(), name);
        capped.push(v.as_f64());
    });
    (points, capped)
}

#[test]
fn policy_and_caps_shape_what_is_exported() {
    let a = agent();
    let none = BTreeMap::new();
    let caps = BTreeMap::from([("test.counter".to_string(), 2)]);

    // Informative, no cap: the zero series is left out; no capped gauge.
    let c = Catalog::new(&a, false, SeriesPolicy::Informative, &none);
    let (points, capped) = exported(&c, &a, "test.counter");
    assert_eq!(points.len(), 4, "{points:?}");
    assert!(capped.is_empty());
    assert_eq!(c.count_points(&a, None)[0], 4);
    assert_eq!(c.count_held(&a, None)[0], 5);

    // Everything, capped at 2: two series, then the overflow one with the last value.
    let c = Catalog::new(&a, false, SeriesPolicy::Everything, &caps);
    let (points, capped) = exported(&c, &a, "test.counter");
    assert_eq!(
        points,
        [
            ("i=0".to_string(), 0.0),
            ("i=1".to_string(), 1.0),
            ("otel.metric.overflow=true".to_string(), 4.0)
        ]
    );
    assert_eq!(capped, [3.0]);

    // Informative, capped at 2: series 1 and 2 fit, 3 and 4 do not.
    let c = Catalog::new(&a, false, SeriesPolicy::Informative, &caps);
    let (points, capped) = exported(&c, &a, "test.counter");
    assert_eq!(points.len(), 3, "{points:?}");
    assert_eq!(points[0], ("i=1".to_string(), 1.0));
    assert_eq!(capped, [2.0]);
}

#[test]
fn counter_values() {
    assert_eq!(counter_value(Number::U64(7)), Some(7));
    assert_eq!(counter_value(Number::F64(7.9)), Some(7));
    assert_eq!(counter_value(Number::F64(-1.0)), None);
    assert_eq!(counter_value(Number::F64(f64::NAN)), None);
}

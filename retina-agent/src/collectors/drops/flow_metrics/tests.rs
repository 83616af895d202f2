use super::*;
use opentelemetry::KeyValue;

#[derive(Default)]
struct Points(Vec<(&'static str, u64)>);

impl Visitor for Points {
    fn point(&mut self, metric: &'static Metric, _attrs: &[KeyValue], value: Number) {
        if let Number::U64(v) = value {
            self.0.push((metric.name, v));
        }
    }
}

#[test]
fn counters_are_visited_and_evictions_never_go_back() {
    let counters = Arc::new(FlowCounters::default());
    let c = FlowCollector::new(counters.clone(), None);
    assert_eq!(c.metrics().len(), 4);
    counters.store(&FlowStats {
        evicted: 5,
        sent: 100,
        suppressed: 900,
        unparsed: 3,
        ..FlowStats::default()
    });
    // A later walk that saw fewer (an entry counted twice as missing before) keeps 5.
    counters.store(&FlowStats {
        evicted: 4,
        sent: 101,
        suppressed: 901,
        unparsed: 4,
        ..FlowStats::default()
    });
    let mut p = Points::default();
    c.visit(&mut p);
    assert_eq!(
        p.0,
        vec![
            ("retina.drop.sample.sent", 101),
            ("retina.drop.sample.suppressed", 901),
            ("retina.drop.sample.unparsed", 4),
            ("retina.drop.flow.evicted", 5),
        ]
    );
}

#[test]
fn log_counters_come_with_the_log_output() {
    let logs = Arc::new(LogStats::default());
    logs.dropped.store(7, Ordering::Relaxed);
    let c = FlowCollector::new(Arc::default(), Some(logs));
    let names: Vec<&str> = c.metrics().iter().map(|m| m.name).collect();
    assert!(names.contains(&"retina.agent.export.logs.dropped"), "{names:?}");
    let mut p = Points::default();
    c.visit(&mut p);
    assert!(p.0.contains(&("retina.agent.export.logs.dropped", 7)), "{:?}", p.0);
}

use std::sync::Arc;

use super::*;
use crate::collectors::drops::flow_metrics::FlowCollector;

fn names(a: &Agent) -> Vec<&'static str> {
    a.collectors().map(|(c, _)| c.name()).collect()
}

#[test]
fn a_reload_keeps_the_drop_flows_collector_in_its_place() {
    let mut old = Config::default();
    old.drops.enabled = false;
    old.ethtool.enabled = false;
    old.netdev.enabled = false;
    old.netstat.enabled = false;
    old.softnet.enabled = false;
    old.qdisc.enabled = false;
    old.conntrack.enabled = false;
    let mut a = Agent::new(&old).unwrap();
    a.add_flow_collector(FlowCollector::new(Arc::default(), None));
    assert_eq!(names(&a), ["drop_flows"]);
    let mut new = old.clone();
    new.softnet.enabled = true;
    assert_eq!(a.reconfigure(&old, &new).unwrap(), ["softnet"]);
    assert_eq!(names(&a), ["drop_flows", "softnet"]);
    assert_eq!(a.reconfigure(&new, &old).unwrap(), ["softnet"]);
    assert_eq!(names(&a), ["drop_flows"]);
}

//! rtnetlink replies: interface dumps (`RTM_GETLINK`), counters dumps (`RTM_GETSTATS`),
//! qdisc and class dumps (`RTM_GETQDISC`, `RTM_GETTCLASS`), applied as the interface table
//! and the qdisc collector apply them, then read by the interface-counters collector.
//!
//! Input: records (see `src/lib.rs`); tag % 4: 0 a datagram of a link dump, 1 of a
//! counters dump, 2 of the qdisc dump, 3 of a class dump. Consecutive records of one tag
//! are one dump, applied in order to one table.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retina_agent::{
    collectors::{ethtool::IfName, netdev::NetdevCollector, qdisc::QdiscCollector},
    filter::NameFilter,
    kernel::links::Links,
};
use retina_agent_fuzz::{records, runs};

fuzz_target!(|data: &[u8]| {
    let records = records(data);
    let mut links = Links::from_links(std::iter::empty());
    let mut qdiscs: Vec<&[u8]> = Vec::new();
    let mut classes: Vec<Vec<&[u8]>> = Vec::new();
    for (tag, group) in runs(&records) {
        match tag % 4 {
            0 => drop(links.apply_replies(false, &group)),
            1 => drop(links.apply_replies(true, &group)),
            2 => qdiscs.extend(group),
            _ => classes.push(group),
        }
    }
    for link in links.iter() {
        // The table never holds an interface without a name or index.
        assert!(link.ifindex > 0);
        assert!(!link.name_bytes().is_empty());
        let _ = IfName::from_bytes(link.name_bytes());
    }
    let classes: Vec<&[&[u8]]> = classes.iter().map(Vec::as_slice).collect();
    let _ = QdiscCollector::apply_replies(&links, &qdiscs, &classes);
    let mut netdev = NetdevCollector::with_filter(NameFilter::all());
    netdev.update(&links);
    assert!(netdev.exported() <= 12 * links.len());
});

//! The softnet collector on this kernel's real `/proc/net/softnet_stat`: the column count
//! it found is the file's, every CPU row is exported under the CPU number the kernel
//! prints, the series present are those the layout has, and every counter lies between
//! the file's values read just before and just after the collector's read (the kernel
//! keeps counting meanwhile), with traffic flowing so the counters move.

use std::collections::BTreeMap;

use anyhow::{Context, Result, ensure};
use opentelemetry::KeyValue;
use retina_agent::{
    collectors::{
        Collector,
        softnet::{SoftnetCollector, SoftnetConfig},
    },
    kernel::links::Links,
    model::{Metric, Number},
};
use retina_tests::*;

/// The file's rows: tokens parsed as hexadecimal.
fn read_file() -> Result<Vec<Vec<u64>>> {
    let text = std::fs::read_to_string("/proc/net/softnet_stat")?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split_whitespace()
                .map(|t| u64::from_str_radix(t, 16).with_context(|| format!("{t:?}")))
                .collect()
        })
        .collect()
}

#[test]
fn real_file_parses_with_its_columns_and_values() -> Result<()> {
    require_root();
    let mut c = SoftnetCollector::new(&SoftnetConfig::default())?;
    let links = Links::from_links([]);
    // Loopback traffic in a namespace of its own, so `processed` moves between reads.
    let ns = NetNs::new("rsn")?;
    let t = traffic();
    ns.exec(&t, &["udp", "127.0.0.1:9", "2000", "32"])?;
    let before = read_file()?;
    c.collect(&links).map_err(|e| anyhow::anyhow!("{e}"))?;
    ns.exec(&t, &["udp", "127.0.0.1:9", "2000", "32"])?;
    c.collect(&links).map_err(|e| anyhow::anyhow!("{e}"))?;
    let after = read_file()?;

    let columns = before[0].len();
    ensure!(before.iter().chain(&after).all(|r| r.len() == columns));
    assert_eq!(c.columns(), columns, "columns the collector found");
    assert_eq!(c.cpus(), before.len());
    // This machine's 6.18 kernel prints 15 columns (toolchain notes).
    assert!(columns >= 13, "{columns} columns on a 6.18 kernel");

    let mut ours: BTreeMap<(&'static str, i64), u64> = BTreeMap::new();
    c.visit(&mut |m: &'static Metric, a: &[KeyValue], v: Number| {
        let opentelemetry::Value::I64(cpu) = a[0].value else {
            panic!("cpu attribute {a:?}")
        };
        let Number::U64(v) = v else { panic!("{v:?}") };
        assert!(ours.insert((m.name, cpu), v).is_none(), "duplicate point");
    });
    let series = [
        ("retina.softnet.processed", 0),
        ("retina.softnet.dropped", 1),
        ("retina.softnet.time_squeeze", 2),
        ("retina.softnet.received_rps", 9),
        ("retina.softnet.flow_limit_count", 10),
    ];
    for (row, (b, a)) in before.iter().zip(&after).enumerate() {
        // Column 13 is the CPU number on 5.10+.
        let cpu = b[12] as i64;
        assert_eq!(cpu, a[12] as i64, "row {row}");
        for (name, col) in series {
            let v = ours[&(name, cpu)];
            assert!(
                b[col] <= v && v <= a[col],
                "{name} cpu {cpu}: {} <= {v} <= {} does not hold",
                b[col],
                a[col]
            );
        }
        assert!(ours.contains_key(&("retina.softnet.backlog.length", cpu)));
    }
    assert_eq!(ours.len(), before.len() * 6, "{ours:?}");
    let processed: u64 =
        after.iter().map(|r| r[0]).sum::<u64>() - before.iter().map(|r| r[0]).sum::<u64>();
    assert!(
        processed >= 2000,
        "loopback traffic moved processed by {processed}"
    );
    Ok(())
}

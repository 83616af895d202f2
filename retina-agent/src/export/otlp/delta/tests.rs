use std::{collections::BTreeMap, sync::Arc};

use opentelemetry::{KeyValue, metrics::MeterProvider as _};
use opentelemetry_sdk::metrics::{
    ManualReader, SdkMeterProvider, Temporality,
    data::{AggregatedMetrics, MetricData, ResourceMetrics},
    reader::MetricReader as _,
};

use super::{super::pipeline::SharedReader, *};

/// A delta pipeline with one synchronous counter, as the exporter builds it.
struct Sdk {
    _provider: SdkMeterProvider,
    reader: Arc<ManualReader>,
    counter: Counter<u64>,
}

impl Sdk {
    fn new() -> Sdk {
        let reader = Arc::new(
            ManualReader::builder()
                .with_temporality(Temporality::Delta)
                .build(),
        );
        let provider = SdkMeterProvider::builder()
            .with_reader(SharedReader(reader.clone()))
            .build();
        let counter = provider.meter("test").u64_counter("c").build();
        Sdk {
            _provider: provider,
            reader,
            counter,
        }
    }

    /// The points of the next collect, by interface name.
    fn collect(&self) -> BTreeMap<String, u64> {
        let mut rm = ResourceMetrics::default();
        self.reader.collect(&mut rm).expect("collect");
        let mut out = BTreeMap::new();
        for m in rm.scope_metrics().flat_map(|s| s.metrics()) {
            let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() else {
                panic!("not a u64 sum: {m:?}");
            };
            assert_eq!(sum.temporality(), Temporality::Delta);
            for p in sum.data_points() {
                let name = p
                    .attributes()
                    .find(|kv| kv.key.as_str() == "name")
                    .map(|kv| kv.value.to_string())
                    .expect("name attribute");
                out.insert(name, p.value());
            }
        }
        out
    }
}

fn attrs(name: &'static str) -> [KeyValue; 1] {
    [KeyValue::new("name", name)]
}

/// Feeds metric 0 with `points`.
fn feed(c: &mut Changes, points: &[(&'static str, u64)]) -> usize {
    c.begin();
    c.feed(0, |f| {
        for &(name, v) in points {
            f(&attrs(name), Number::U64(v));
        }
    })
}

fn points(p: &[(&str, u64)]) -> BTreeMap<String, u64> {
    p.iter().map(|&(k, v)| (k.to_string(), v)).collect()
}

#[test]
fn only_series_that_moved_send_a_point_and_the_deltas_add_up() {
    let sdk = Sdk::new();
    let mut c = Changes::new(1);
    c.attach(vec![Some(sdk.counter.clone())]);
    // First sight: the whole value (as the observable path's first delta); a zero sends
    // nothing.
    assert_eq!(feed(&mut c, &[("a", 10), ("b", 5), ("z", 0)]), 3);
    assert_eq!(sdk.collect(), points(&[("a", 10), ("b", 5)]));
    // Only `a` moved.
    feed(&mut c, &[("a", 17), ("b", 5), ("z", 0)]);
    assert_eq!(sdk.collect(), points(&[("a", 7)]));
    // Nothing moved: no point at all.
    feed(&mut c, &[("a", 17), ("b", 5), ("z", 0)]);
    assert_eq!(sdk.collect(), points(&[]));
    // `b` restarted from zero (below its last value): its new value is the change; `z`
    // counts for the first time.
    feed(&mut c, &[("a", 17), ("b", 2), ("z", 4)]);
    assert_eq!(sdk.collect(), points(&[("b", 2), ("z", 4)]));
    // `a` is gone: forgotten here, and its handle with it.
    assert_eq!(feed(&mut c, &[("b", 3), ("z", 4)]), 2);
    assert_eq!(c.held(0), 2);
    assert_eq!(sdk.collect(), points(&[("b", 1)]));
    // Back with a value: a new series, whose first delta is its value.
    feed(&mut c, &[("a", 20), ("b", 3), ("z", 4)]);
    assert_eq!(sdk.collect(), points(&[("a", 20)]));
}

#[test]
fn a_rebuilt_pipeline_carries_on_without_loss_or_double_count() {
    let old = Sdk::new();
    let mut c = Changes::new(2);
    // Metric 1 is a gauge here: no counter, nothing fed.
    c.attach(vec![Some(old.counter.clone()), None]);
    c.begin();
    assert_eq!(c.feed(1, |f| f(&attrs("g"), Number::U64(9))), 0);
    assert_eq!(c.held(1), 0);
    assert_eq!(feed(&mut c, &[("a", 10), ("b", 5)]), 2);
    assert_eq!(old.collect(), points(&[("a", 10), ("b", 5)]));
    // A feed whose export is thrown away (the pipeline outgrew its limits), with a new
    // series in it: taken back, then fed again into the new pipeline's counter.
    feed(&mut c, &[("a", 12), ("b", 5), ("n", 3)]);
    c.rewind();
    assert_eq!(c.held(0), 2, "the series new in the taken-back feed is forgotten");
    let new = Sdk::new();
    c.attach(vec![Some(new.counter.clone()), None]);
    feed(&mut c, &[("a", 13), ("b", 5), ("n", 3)]);
    assert_eq!(new.collect(), points(&[("a", 3), ("n", 3)]));
    feed(&mut c, &[("a", 14), ("b", 6), ("n", 3)]);
    assert_eq!(new.collect(), points(&[("a", 1), ("b", 1)]));
}

//! Issue 21 item 2: what the SDK's collect costs per series with an observable counter (what
//! the agent uses: `PrecomputedSum`, drained and rebuilt every collect) against bound
//! synchronous counters (`Counter::bind`, feature `experimental_metrics_bound_instruments`),
//! cumulative and delta, for N series of two attributes of which `moving` change between
//! collects. N = 120 is the agent's host-level series at 256 veths (netstat/snmp, softnet,
//! its own counters: the series that could be bound because they never leave the export);
//! N = 4250 is every point the default policy exports there. CPU of `collect` alone (the
//! process CPU clock), median of 200 collects after 5 warm-up ones. `unsorted` is the
//! observable counter with each series' two attributes given out of key order: the SDK
//! then stores every series under both orders (issue 21, session 11). `owned` is the
//! observable counter with its string value an owned `String` instead of an `Arc<str>`: the
//! SDK clones each set twice per observation, so an owned value is copied each time.
use opentelemetry::{KeyValue, metrics::MeterProvider as _};
use opentelemetry_sdk::metrics::{
    ManualReader, SdkMeterProvider, Temporality, data::ResourceMetrics, reader::MetricReader,
};
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

#[derive(Clone, Debug)]
struct R(Arc<ManualReader>);
impl MetricReader for R {
    fn register_pipeline(&self, p: std::sync::Weak<opentelemetry_sdk::metrics::Pipeline>) {
        self.0.register_pipeline(p)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(
        &self,
        t: std::time::Duration,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(t)
    }
    fn temporality(&self, k: opentelemetry_sdk::metrics::InstrumentKind) -> Temporality {
        self.0.temporality(k)
    }
}
fn cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}
fn attrs(n: usize, sorted: bool, owned: bool) -> Vec<Vec<KeyValue>> {
    (0..n)
        .map(|i| {
            let value = format!("TcpExtStat{i}");
            let name = if owned {
                KeyValue::new("name", value)
            } else {
                KeyValue::new("name", Arc::<str>::from(value))
            };
            let protocol = KeyValue::new("protocol", "tcp");
            if sorted {
                vec![name, protocol]
            } else {
                vec![protocol, name]
            }
        })
        .collect()
}
fn points(rm: &ResourceMetrics) -> usize {
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    rm.scope_metrics()
        .flat_map(|s| s.metrics())
        .map(|m| match m.data() {
            AggregatedMetrics::U64(MetricData::Sum(s)) => s.data_points().count(),
            _ => 0,
        })
        .sum()
}
fn run(kind: &str, temp: Temporality, n: usize, moving: usize, iters: usize) {
    let reader = R(Arc::new(
        ManualReader::builder().with_temporality(temp).build(),
    ));
    let provider = SdkMeterProvider::builder()
        .with_reader(reader.clone())
        .with_view(|_: &opentelemetry_sdk::metrics::Instrument| {
            opentelemetry_sdk::metrics::Stream::builder()
                .with_cardinality_limit(10_000)
                .build()
                .ok()
        })
        .build();
    let meter = provider.meter("b");
    let a = Arc::new(attrs(n, kind != "unsorted", kind == "owned"));
    let vals: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|i| AtomicU64::new(i as u64)).collect());
    let mut bound = Vec::new();
    let _obs;
    if kind != "bound" {
        let (a, v) = (a.clone(), vals.clone());
        _obs = Some(
            meter
                .u64_observable_counter("c")
                .with_callback(move |o| {
                    for (i, kv) in a.iter().enumerate() {
                        o.observe(v[i].load(Ordering::Relaxed), kv)
                    }
                })
                .build(),
        );
    } else {
        _obs = None;
        let c = meter.u64_counter("c").build();
        for (i, kv) in a.iter().enumerate() {
            let b = c.bind(kv);
            b.add(i as u64);
            bound.push(b);
        }
    }
    let mut rm = ResourceMetrics::default();
    let mut samples = Vec::new();
    let mut pts = 0;
    for it in 0..iters {
        // The collection cycle: `moving` series advance.
        for i in 0..moving {
            let j = (it * 7919 + i * 31) % n;
            vals[j].fetch_add(3, Ordering::Relaxed);
            if let Some(b) = bound.get(j) {
                b.add(3)
            }
        }
        let t = cpu_ns();
        reader.collect(&mut rm).unwrap();
        let d = cpu_ns() - t;
        if it >= 5 {
            samples.push(d);
            pts = points(&rm);
        }
    }
    samples.sort();
    let med = samples[samples.len() / 2] as f64;
    println!(
        "{kind:10} {:10} n={n:5} moving={moving:4}: collect median {:8.1} us, {:5} points, {:6.3} us per series",
        format!("{temp:?}"),
        med / 1e3,
        pts,
        med / 1e3 / n as f64
    );
}
fn main() {
    for &(n, moving) in &[(120usize, 6usize), (4250, 212)] {
        for temp in [Temporality::Cumulative, Temporality::Delta] {
            for kind in ["observable", "unsorted", "owned", "bound"] {
                run(kind, temp, n, moving, 205);
            }
        }
    }
}

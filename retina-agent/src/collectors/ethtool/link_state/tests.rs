use super::*;
use crate::collectors::ethtool::netlink::LinkState;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn an_interval_past_the_clock_s_end_does_not_kill_the_task() {
    // The configuration caps link_state_interval at a day; the task must not rely on it.
    let config = EthtoolConfig {
        link_state_interval: Duration::MAX,
        ..EthtoolConfig::default()
    };
    let rt = runtime();
    let mut c = {
        let _rt = rt.enter();
        LinkStateCollector::new(&config).unwrap()
    };
    let links = Links::from_links([]);
    for _ in 0..2 {
        if let Err(e) = rt.block_on(c.refresh(&links, Duration::from_secs(30))) {
            assert!(!matches!(e, LinkStateError::Worker(_)), "{e}");
        }
        assert!(!c.task.is_finished());
    }
}

#[test]
fn no_runtime_is_an_error() {
    let err = LinkStateCollector::new(&EthtoolConfig::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("tokio runtime"), "{err}");
}

#[test]
fn dropping_the_collector_stops_the_task() {
    let rt = runtime();
    let c = {
        let _rt = rt.enter();
        LinkStateCollector::new(&EthtoolConfig::default()).unwrap()
    };
    let mut done = c.done.clone();
    drop(c);
    // The task saw its shutdown: its end closes the channel.
    rt.block_on(async { while done.changed().await.is_ok() {} });
}

#[test]
fn a_task_that_ends_is_reported_every_cycle() {
    let rt = runtime();
    let (finished, done) = watch::channel(0);
    let task = rt.spawn(async move {
        let _finished = finished;
        panic!("injected task failure");
    });
    rt.block_on(async {
        while !task.is_finished() {
            tokio::task::yield_now().await;
        }
    });
    let (stop, _) = oneshot::channel();
    let mut c = LinkStateCollector::with_task(
        NameFilter::all(),
        Arc::new(Shared::default()),
        task,
        done,
        stop,
    );
    c.table = prepare(LinkStateTable::from([(
        1,
        LinkState {
            name: "eth0".into(),
            speed_mbps: Some(1000),
            ..LinkState::default()
        },
    )]));
    let links = Links::from_links([crate::kernel::links::Link::new(1, "eth0")]);
    for _ in 0..3 {
        let e = c.collect(&links).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ethtool link state: the refresh task has ended"
        );
        // Nothing stale is left to export.
        assert_eq!(c.interfaces(), 0);
    }
    assert!(c.exit_logged);
    let e = rt.block_on(c.refresh(&links, Duration::MAX)).unwrap_err();
    assert!(matches!(e, LinkStateError::Worker(_)), "{e}");
}

#[test]
fn prepare_builds_points() {
    let mut t = LinkStateTable::new();
    t.insert(
        3,
        LinkState {
            name: "veth0".into(),
            speed_mbps: Some(10_000),
            duplex_full: Some(true),
            rings: vec![("rx", "current", 256), ("rx", "max", 4096)],
            channels: vec![("combined", "current", 4)],
        },
    );
    t.insert(
        4,
        LinkState {
            name: "eth0".into(),
            ..Default::default()
        },
    );
    let p = prepare(t);
    let v = &p[&3].points;
    assert_eq!(v.len(), 5);
    assert_eq!(v[0].0.name, "retina.nic.link.speed");
    assert_eq!(v[0].2, 10_000_000_000);
    assert_eq!(v[1].2, 1);
    assert_eq!(v[3].1[2], KeyValue::new(attr::RING_SETTING, "max"));
    assert!(p[&4].points.is_empty());
}

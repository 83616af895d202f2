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

/// The link state of a veth named `name` at `index`: what `veth_get_link_ksettings` and
/// `veth_get_channels` answer.
fn veth_state(name: &str) -> LinkState {
    LinkState {
        name: name.into(),
        speed_mbps: Some(10_000),
        duplex_full: Some(true),
        rings: Vec::new(),
        channels: vec![
            ("rx", "max", 2),
            ("rx", "current", 1),
            ("tx", "max", 2),
            ("tx", "current", 1),
        ],
    }
}

/// (interface, metric, channel setting) of every point `c` exports.
fn exported(c: &LinkStateCollector) -> Vec<(String, &'static str, String)> {
    let mut out = Vec::new();
    c.visit(&mut |m: &'static Metric, attrs: &[KeyValue], _: Number| {
        let get = |key: &str| {
            attrs
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map_or(String::new(), |kv| kv.value.to_string())
        };
        out.push((get(INTERFACE_NAME), m.name, get(attr::CHANNEL_SETTING)));
    });
    out
}

#[test]
fn a_veths_driver_constants_are_left_out_only_when_asked() {
    let rt = runtime();
    for hide in [true, false] {
        let mut c = {
            let _rt = rt.enter();
            LinkStateCollector::new(&EthtoolConfig::default())
                .unwrap()
                .hiding_driver_constants(hide)
        };
        {
            let mut s = c.shared.lock();
            s.published = Some(prepare(LinkStateTable::from([
                (5, veth_state("veth5")),
                (6, veth_state("eth6")),
            ])));
            s.generation = 1;
        }
        let mut veth = crate::kernel::links::Link::new(5, "veth5");
        veth.kind = Some("veth".into());
        // No kind: a physical NIC, whose settings are the hardware's.
        let nic = crate::kernel::links::Link::new(6, "eth6");
        assert!(c.install(&Links::from_links([veth, nic])).is_none());
        let all = exported(&c);
        let of = |name: &str| -> Vec<(&'static str, String)> {
            all.iter()
                .filter(|p| p.0 == name)
                .map(|p| (p.1, p.2.clone()))
                .collect()
        };
        assert_eq!(of("eth6").len(), 6, "{all:?}");
        if hide {
            // Speed, duplex and the channel maximums go; the current counts can change
            // (`ethtool -L`) and stay.
            assert_eq!(
                of("veth5"),
                vec![("retina.nic.channels", "current".to_string()); 2],
                "{all:?}"
            );
        } else {
            assert_eq!(of("veth5").len(), 6, "{all:?}");
        }
    }
}

use super::*;

#[test]
fn config_defaults_and_parsing() {
    let c: EthtoolConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(c, EthtoolConfig::default());
    assert_eq!(c.per_queue, QueueMode::Sum);
    assert_eq!(c.interfaces_exclude, ["lo"]);
    let c: EthtoolConfig = serde_json::from_str(
        r#"{"per_queue": "split", "link_state_interval": "5m", "stats_exclude": ["peer_ifindex"]}"#,
    )
    .unwrap();
    assert_eq!(c.per_queue, QueueMode::Split);
    assert_eq!(c.link_state_interval, Duration::from_secs(300));
    let c: EthtoolConfig = serde_json::from_str(r#"{"link_state_interval": 15}"#).unwrap();
    assert_eq!(c.link_state_interval, Duration::from_secs(15));
    assert!(serde_json::from_str::<EthtoolConfig>(r#"{"per_queue": "all"}"#).is_err());
    assert!(serde_json::from_str::<EthtoolConfig>(r#"{"bogus": 1}"#).is_err());
    assert!(
        serde_json::from_str::<EthtoolConfig>(r#"{"link_state_interval": "5 parsecs"}"#)
            .is_err()
    );
    assert!(serde_json::from_str::<EthtoolConfig>(r#"{"link_state_interval": "0s"}"#).is_err());
    let c: EthtoolConfig =
        serde_json::from_str(r#"{"link_state_interval": "1m 30s"}"#).unwrap();
    assert_eq!(c.link_state_interval, Duration::from_secs(90));
}

#[test]
fn bad_patterns_are_refused_when_read() {
    let err = serde_json::from_str::<EthtoolConfig>(r#"{"stats_exclude": ["rx["]}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid regular expression \"rx[\""), "{err}");
}

#[test]
fn empty_driver_info_values_are_left_out_of_the_info_series() {
    let keys = |kv: &[opentelemetry::KeyValue]| -> Vec<String> {
        kv.iter().map(|k| k.key.as_str().to_owned()).collect()
    };
    let name: std::sync::Arc<str> = "veth0".into();
    // What veth's driver answers: a name and a version, no firmware, no bus.
    let veth = ioctl::DrvInfo {
        driver: "veth".into(),
        version: "1.0".into(),
        ..Default::default()
    };
    let kv = driver::info_attributes(&name, &veth, None);
    assert_eq!(
        keys(&kv),
        ["network.interface.name", "nic.driver", "nic.driver.version"]
    );
    // A PCI NIC answers all four, in key order.
    let nic = ioctl::DrvInfo {
        driver: "ixgbe".into(),
        version: "6.18".into(),
        fw_version: "0x800009e0".into(),
        bus_info: "0000:03:00.0".into(),
        n_stats: 0,
    };
    let kv = driver::info_attributes(&name, &nic, None);
    assert_eq!(
        keys(&kv),
        [
            "network.interface.name",
            "nic.bus_info",
            "nic.driver",
            "nic.driver.version",
            "nic.firmware.version"
        ]
    );
    assert_eq!(kv[1].value.as_str(), "0000:03:00.0");
}

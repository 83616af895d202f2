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

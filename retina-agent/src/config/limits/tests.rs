//! Hostile values: every duration and size outside its range, endpoints that only look
//! like URLs, special files, environment values that are not UTF-8 (issue 14).

use std::{collections::HashMap, ffi::OsString, os::unix::ffi::OsStringExt, path::Path};

use crate::config::*;

const FILE: &str = "/etc/retina-agent/hostile.toml";

/// `text` parsed and checked, without environment and flags.
fn check(text: &str) -> Result<Config, ConfigError> {
    resolve(
        Some(parse(text, Path::new(FILE))?),
        &|_: &str| None,
        &Overrides::default(),
    )
}

fn refused(text: &str, key: &str, reason: &str) {
    let err = check(text).expect_err(text);
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{FILE}: key `{key}`: ")) && msg.contains(reason),
        "{text:?}: {msg:?} should name {key} and contain {reason:?}"
    );
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

#[test]
fn durations_and_sizes_out_of_range_are_refused() {
    for (text, key) in [
        ("interval = \"1ns\"", "interval"),
        ("interval = \"99ms\"", "interval"),
        ("interval = \"25h\"", "interval"),
        ("interval = \"18446744073709551615s\"", "interval"),
        (
            "[export]\ntimeout = \"18446744073709551615s\"",
            "export.timeout",
        ),
        ("[export]\ntimeout = \"20000y\"", "export.timeout"),
        ("[export]\ntimeout = \"11m\"", "export.timeout"),
        (
            "[ethtool]\nlink_state_interval = \"20000y\"",
            "ethtool.link_state_interval",
        ),
        (
            "[ethtool]\nlink_state_interval = 18446744073709551615",
            "ethtool.link_state_interval",
        ),
        (
            "[ethtool]\nlink_state_interval = \"500ms\"",
            "ethtool.link_state_interval",
        ),
        (
            "[ethtool]\nunsupported_retry_cycles = 0",
            "ethtool.unsupported_retry_cycles",
        ),
        (
            "[ethtool]\nunsupported_retry_cycles = 1000001",
            "ethtool.unsupported_retry_cycles",
        ),
        ("[ethtool]\nmax_interfaces = 0", "ethtool.max_interfaces"),
        (
            "[ethtool]\nmax_interfaces = 1048577",
            "ethtool.max_interfaces",
        ),
        ("[drops]\nmap_entries = 1048577", "drops.map_entries"),
        ("[drops]\nflows_capacity = 0", "drops.flows_capacity"),
        ("[drops]\nflows_capacity = 1048577", "drops.flows_capacity"),
        ("[drops]\nflow_events_per_second = 0", "drops.flow_events_per_second"),
        (
            "[drops]\nflow_events_per_second = 1000001",
            "drops.flow_events_per_second",
        ),
        ("[drops]\nflow_snaplen = 129", "drops.flow_snaplen"),
        (
            "[export]\nseries_caps = { \"retina.nic.driver.stat\" = 0 }",
            "export.series_caps",
        ),
        (
            "[export]\nseries_caps = { \"system.network.io\" = 1048577 }",
            "export.series_caps",
        ),
    ] {
        let err = check(text).expect_err(text);
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("{FILE}: key `{key}`: ")),
            "{text:?}: {msg}"
        );
        assert!(
            msg.contains("out of range") || msg.contains("invalid duration"),
            "{text:?}: {msg}"
        );
    }
    refused(
        "interval = \"1ns\"",
        "interval",
        "1ns is out of range: must be between 100ms and 1day",
    );
    // The ends of each range are accepted.
    for text in [
        "interval = \"100ms\"",
        "interval = \"24h\"",
        "[export]\ntimeout = \"10m\"",
        "[ethtool]\nlink_state_interval = \"1s\"\nmax_interfaces = 1048576",
        "[drops]\nmap_entries = 1048576",
        "[drops]\nflows = true\nflows_capacity = 1048576\nflow_events_per_second = 1000000\nflow_snaplen = 128",
        "[drops]\nflows_capacity = 1\nflow_events_per_second = 1\nflow_snaplen = 0",
        "[export]\nseries = \"everything\"\nseries_caps = { \"system.network.io\" = 1 }",
    ] {
        check(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    }
}

#[test]
fn environment_and_flags_are_held_to_the_same_ranges() {
    for (name, value) in [
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "18446744073709551615"),
        ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "600001"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "18446744073709551615"),
    ] {
        let err = resolve(None, &env_of(&[(name, value)]), &Overrides::default()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("out of range"), "{name}={value}: {msg}");
        assert!(
            msg.contains(name) || msg.contains("export.timeout"),
            "{name}={value}: {msg}"
        );
    }
    let flags = Overrides {
        interval: Some(Duration::from_nanos(1)),
        ..Overrides::default()
    };
    let msg = resolve(None, &env_of(&[]), &flags).unwrap_err().to_string();
    assert!(
        msg.contains("key `interval`") && msg.contains("out of range"),
        "{msg}"
    );
    assert!(parse_interval("1ns").is_err());
    assert!(parse_interval("100ms").is_ok());
}

#[test]
fn rust_log_is_checked_like_the_file() {
    refused(
        "[log]\nlevel = \"inf\"",
        "log.level",
        "`inf` is not a level",
    );
    let err = resolve(None, &env_of(&[("RUST_LOG", "inf")]), &Overrides::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("RUST_LOG") && msg.contains("`inf` is not a level"),
        "{msg}"
    );
    resolve(
        None,
        &env_of(&[("RUST_LOG", "info,retina_agent=debug")]),
        &Overrides::default(),
    )
    .unwrap();
}

#[test]
fn non_utf8_environment_values_are_an_error_naming_the_variable() {
    let bad = OsString::from_vec(b"authorization=Bearer \xff".to_vec());
    let err = check_env_utf8([
        (OsString::from("PATH"), OsString::from("/usr/bin")),
        (OsString::from("OTEL_EXPORTER_OTLP_HEADERS"), bad.clone()),
    ])
    .unwrap_err();
    let msg = err.to_string();
    assert_eq!(
        msg,
        "environment variable OTEL_EXPORTER_OTLP_HEADERS: the value is not valid UTF-8"
    );
    assert!(!msg.contains("Bearer"));
    for name in ["RUST_LOG", "RETINA_LOG_FORMAT", "OTEL_SERVICE_NAME"] {
        assert!(check_env_utf8([(OsString::from(name), bad.clone())]).is_err());
    }
    // Paths and variables the agent does not read may be any bytes.
    check_env_utf8([
        (OsString::from("RETINA_CONFIG"), bad.clone()),
        (OsString::from("RETINA_BTF"), bad.clone()),
        (OsString::from("LANG"), bad),
    ])
    .unwrap();
}

#[test]
fn endpoints_that_only_look_like_urls_are_refused() {
    for (endpoint, reason) in [
        ("http://host:99999", "port is not a number from 1 to 65535"),
        ("http://host:65536", "port is not a number from 1 to 65535"),
        (" ", "blank"),
        ("", "blank"),
        ("http://host:4317#frag", "fragment"),
        ("http://host:4317/#", "fragment"),
    ] {
        refused(
            &format!("[export]\nendpoint = {endpoint:?}"),
            "export.endpoint",
            reason,
        );
    }
    check("[export]\nendpoint = \"http://host:65535\"").unwrap();
}

#[test]
fn tls_files_must_be_regular_files() {
    for (path, what) in [
        ("/etc", "not a regular file (a directory)"),
        ("/dev/zero", "not a regular file (a character device)"),
    ] {
        refused(
            &format!("[export]\nendpoint = \"https://c:4317\"\nca_file = {path:?}"),
            "export.ca_file",
            what,
        );
    }
}

#[test]
fn configuration_files_are_regular_and_capped() {
    let dir = std::env::temp_dir().join(format!("retina-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.toml");
    // A 50 MB value: refused by the size cap, before any parsing.
    let mut text = String::from("[export]\nservice_name = \"");
    text.push_str(&"x".repeat(50_000_000));
    text.push_str("\"\n");
    std::fs::write(&big, &text).unwrap();
    drop(text);
    let msg = load(Some(&big), &|_: &str| None, &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("big.toml") && msg.contains("larger than the limit of 1048576 bytes"),
        "{msg}"
    );
    std::fs::remove_file(&big).unwrap();
    for (path, what) in [
        (Path::new("/dev/zero"), "a character device"),
        (Path::new("/etc"), "a directory"),
    ] {
        let msg = load(Some(path), &|_: &str| None, &Overrides::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            format!(
                "{}: cannot read the configuration file: not a regular file ({what})",
                path.display()
            )
        );
    }
    std::fs::remove_dir(&dir).unwrap();
}

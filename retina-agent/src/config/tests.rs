//! The file, the environment and the flags together: keys, reasons and positions of what
//! is refused, precedence, and the packaged file.

use std::collections::HashMap;

use super::*;

const FILE: &str = "/etc/retina-agent/test.toml";

fn parse_str(text: &str) -> Result<FileConfig, ConfigError> {
    parse(text, Path::new(FILE))
}

/// `text` as `check` and `run` take it, without environment and flags: parsed, then
/// checked.
fn check_str(text: &str) -> Result<Config, ConfigError> {
    resolve(Some(parse_str(text)?), &no_env, &Overrides::default())
}

/// Checks `text`, expecting an error; returns it after checking it names the file.
fn invalid(text: &str) -> (Invalid, String) {
    let err = check_str(text).expect_err("config should be rejected");
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("{FILE}: ")), "{msg}");
    (err.invalid().expect("an Invalid error").clone(), msg)
}

fn assert_invalid(text: &str, key: &str, reason: &str) -> Invalid {
    let (inv, msg) = invalid(text);
    assert_eq!(inv.key.as_deref(), Some(key), "{msg}");
    assert!(msg.contains(&format!("key `{key}`: ")), "{msg}");
    assert!(msg.contains(reason), "{msg:?} should contain {reason:?}");
    inv
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

#[test]
fn empty_file_is_the_defaults() {
    let f = parse_str("").unwrap();
    assert_eq!(f.config, Config::default());
    assert!(!f.sets_interval);
    assert_eq!(Config::default().interval, Duration::from_secs(10));
    assert_eq!(Config::default().log.level, "info");
    assert_eq!(Config::default().drops.map_entries, 16384);
}

#[test]
fn values_are_read() {
    let f = parse_str(
        "interval = \"2s\"\n[log]\nlevel = \"debug\"\nformat = \"json\"\n\
         [drops]\nenabled = false\nmap_entries = 8\n\
         [netdev]\ninclude = [\"eth.*\"]\n",
    )
    .unwrap();
    assert!(f.sets_interval);
    let c = f.config;
    assert_eq!(c.interval, Duration::from_secs(2));
    assert_eq!(c.log.level, "debug");
    assert_eq!(c.log.format, LogFormat::Json);
    assert!(!c.drops.enabled);
    assert_eq!(c.drops.map_entries, 8);
    assert_eq!(c.netdev.include, ["eth.*"]);
}

#[test]
fn unknown_top_level_key() {
    let inv = assert_invalid(
        "interval = \"5s\"\nintervall = \"5s\"\n",
        "intervall",
        "unknown field `intervall`",
    );
    assert_eq!(inv.position.map(|p| p.0), Some(2));
}

#[test]
fn unknown_nested_key() {
    assert_invalid(
        "[drops]\nmap_entires = 5\n",
        "drops.map_entires",
        "unknown field `map_entires`, expected",
    );
    assert_invalid(
        "[netdev]\nenabled = true\nincludes = []\n",
        "netdev.includes",
        "unknown field `includes`",
    );
}

#[test]
fn unknown_section() {
    assert_invalid("[colectors]\n", "colectors", "unknown field `colectors`");
}

#[test]
fn bad_duration() {
    let inv = assert_invalid(
        "interval = \"10 parsecs\"\n",
        "interval",
        "invalid duration \"10 parsecs\" (examples: 10s, 500ms, 1m)",
    );
    assert_eq!(inv.position, Some((1, 12)));
    assert_invalid("interval = \"0s\"\n", "interval", "greater than zero");
    assert_invalid(
        "interval = true\n",
        "interval",
        "expected a duration such as",
    );
    assert_invalid("interval = 0\n", "interval", "greater than zero");
    assert_eq!(
        check_str("interval = 15\n").unwrap().interval,
        Duration::from_secs(15)
    );
}

#[test]
fn bad_regex() {
    let inv = assert_invalid(
        "[netdev]\ninclude = [\"eth0\", \"lo\", \"veth[0-\"]\n",
        "netdev.include[2]",
        "invalid regular expression \"veth[0-\"",
    );
    assert_eq!(inv.position.map(|p| p.0), Some(2));
    assert_invalid(
        "[ethtool]\nstats_include = [\"rx_.*\", \"tx_.*\", \"*bad\"]\n",
        "ethtool.stats_include[2]",
        "invalid regular expression \"*bad\"",
    );
    assert_invalid(
        "[netstat]\nexclude = [\"(Tcp\"]\n",
        "netstat.exclude[0]",
        "invalid regular expression \"(Tcp\"",
    );    assert_invalid(
        "[netstat.workloads]\ninclude = [\"Tcp:.*\", \"Udp:(NoPorts\"]\n",
        "netstat.workloads.include[1]",
        "invalid regular expression \"Udp:(NoPorts\"",
    );
    assert_invalid(
        "[netstat.workloads]\nfields = []\n",
        "netstat.workloads.fields",
        "unknown field `fields`",
    );
}

#[test]
fn wrong_type() {
    assert_invalid(
        "[drops]\nmap_entries = \"many\"\n",
        "drops.map_entries",
        "invalid type: string \"many\", expected u32",
    );
    assert_invalid(
        "[drops]\nenabled = 1\n",
        "drops.enabled",
        "invalid type: integer `1`, expected a boolean",
    );
    assert_invalid("log = \"debug\"\n", "log", "invalid type: string");
    assert_invalid(
        "[netdev]\ninclude = \"eth.*\"\n",
        "netdev.include",
        "expected a sequence",
    );
    assert_invalid(
        "[log]\nformat = \"xml\"\n",
        "log.format",
        "unknown variant `xml`, expected `text` or `json`",
    );
}

#[test]
fn out_of_range() {
    assert_invalid(
        "[drops]\nmap_entries = 0\n",
        "drops.map_entries",
        "must be at least 1",
    );
    assert_invalid(
        "[drops]\nmap_entries = -1\n",
        "drops.map_entries",
        "invalid value: integer `-1`, expected u32",
    );
    assert_invalid(
        "[log]\nlevel = \"loud\"\n",
        "log.level",
        "invalid log filter \"loud\"",
    );
}

#[test]
fn syntax_error_names_file_and_line() {
    let (inv, msg) = invalid("interval = \"5s\"\n[drops\n");
    assert_eq!(inv.key, None);
    assert!(msg.contains("TOML syntax"), "{msg}");
    assert_eq!(inv.position.map(|p| p.0), Some(2), "{msg}");
}

#[test]
fn missing_default_file_is_fine_missing_explicit_file_is_not() {
    let dir = std::env::temp_dir().join(format!("retina-config-{}", std::process::id()));
    let missing = dir.join("nope.toml");
    let err = load(Some(&missing), &no_env, &Overrides::default()).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    assert!(err.to_string().contains("nope.toml"), "{err}");
    if !Path::new(DEFAULT_PATH).exists() {
        let loaded = load(None, &no_env, &Overrides::default()).unwrap();
        assert_eq!(loaded.config, Config::default());
        assert!(matches!(loaded.origin, Origin::Defaults { .. }));
    }
}

#[test]
fn precedence_file_env_flag() {
    let file = || Some(parse_str("[log]\nformat = \"json\"\nlevel = \"warn\"\n").unwrap());
    // File alone.
    let c = resolve(file(), &no_env, &Overrides::default()).unwrap();
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.log.level, "warn");
    // Environment over file.
    let env = env_of(&[
        (env::LOG_FORMAT, "text"),
        (env::RUST_LOG, "retina_agent=debug"),
    ]);
    let c = resolve(file(), &env, &Overrides::default()).unwrap();
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.log.level, "retina_agent=debug");
    // Flag over environment.
    let flags = Overrides {
        log_format: Some(LogFormat::Json),
        ..Overrides::default()
    };
    let c = resolve(file(), &env, &flags).unwrap();
    assert_eq!(c.log.format, LogFormat::Json);
}

#[test]
fn transport_crates_stay_quiet_unless_named() {
    assert_eq!(
        log_filter("info"),
        "info,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,reqwest=off,opentelemetry=off"
    );
    let f = log_filter("debug,tonic=debug,hyper_util::client=trace");
    assert!(
        f.starts_with("debug,tonic=debug,hyper_util::client=trace,"),
        "{f}"
    );
    assert!(
        !f.contains("tonic=off") && !f.contains("hyper_util=off"),
        "{f}"
    );
    assert!(f.contains("hyper=off") && f.contains("h2=off"), "{f}");
    for level in ["info", "warn,retina_agent=debug", &log_filter("info")] {
        tracing_subscriber::EnvFilter::builder()
            .parse(log_filter(level))
            .unwrap();
    }
}

#[test]
fn bad_address() {
    assert_invalid(
        "[prometheus]\nlisten = \"localhost\"\n",
        "prometheus.listen",
        "invalid socket address syntax",
    );
    assert_invalid(
        "[prometheus]\nlisten = \"127.0.0.1:99999\"\n",
        "prometheus.listen",
        "invalid socket address",
    );
}

#[test]
fn bad_endpoint() {
    let inv = assert_invalid(
        "[export]\nendpoint = \"ftp://collector:21\"\n",
        "export.endpoint",
        "not http or https",
    );
    assert_eq!(inv.position, Some((2, 12)));
    assert_invalid(
        "[export]\nendpoint = \"http://c:4318/v1/metrics\"\n",
        "export.endpoint",
        "gRPC endpoint has no path",
    );
    assert_invalid(
        "[export]\nendpoint = \"http://c:4317\"\ntimeout = \"0s\"\n",
        "export.timeout",
        "greater than zero",
    );
    assert_invalid(
        "[export]\nprotocol = \"http\"\n",
        "export.protocol",
        "unknown variant `http`",
    );
    assert_invalid(
        "[export.headers]\nx-token = 5\n",
        "export.headers.x-token",
        "invalid type: integer",
    );
    // Disabled export is not checked.
    check_str("[export]\nenabled = false\nendpoint = \"ftp://x\"\n").unwrap();
    assert!(parse_endpoint("collector:4317").is_ok());
    assert!(parse_endpoint("http://127.0.0.1:4317").is_ok());
    assert!(parse_endpoint("ftp://c").is_err());
    assert!(parse_endpoint("http://").is_err());
    assert!(parse_endpoint("").is_err());
    assert!(parse_endpoint("http://u:pw@c:1").is_err());
    assert_eq!(
        endpoint_host_port("https://c.example/v1/metrics"),
        Some(("c.example".to_string(), 443))
    );
    assert_eq!(
        endpoint_host_port("http://[::1]:4317"),
        Some(("::1".to_string(), 4317))
    );
}

#[test]
fn export_precedence_file_env_flag() {
    let file = || {
        Some(
            parse_str(
                "[export]\nendpoint = \"http://file:4317\"\n\
                 [prometheus]\nlisten = \"127.0.0.1:9001\"\n",
            )
            .unwrap(),
        )
    };
    let c = resolve(file(), &no_env, &Overrides::default()).unwrap();
    assert_eq!(c.export.endpoint.as_deref(), Some("http://file:4317"));
    assert_eq!(c.prometheus.listen.port(), 9001);
    let env = env_of(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317"),
        ("OTEL_EXPORTER_PROMETHEUS_PORT", "9002"),
    ]);
    let c = resolve(file(), &env, &Overrides::default()).unwrap();
    assert_eq!(c.export.endpoint.as_deref(), Some("http://env:4317"));
    assert_eq!(c.prometheus.listen.port(), 9002);
    let flags = Overrides {
        otlp_endpoint: Some("http://flag:4318".into()),
        otlp_protocol: Some(Protocol::HttpProtobuf),
        prometheus_listen: Some("127.0.0.1:9003".parse().unwrap()),
        ..Overrides::default()
    };
    let c = resolve(file(), &env, &flags).unwrap();
    assert_eq!(c.export.resolved_endpoint(), "http://flag:4318/v1/metrics");
    assert_eq!(c.prometheus.listen.port(), 9003);
    assert!(c.prometheus.enabled);
    let flags = Overrides {
        no_prometheus: true,
        ..Overrides::default()
    };
    assert!(!resolve(file(), &env, &flags).unwrap().prometheus.enabled);
}

/// Field names a section of [`Config`] accepts, from the `deny_unknown_fields` error
/// (so it works for every section, whoever owns its type).
fn fields_of(section: Option<&str>) -> Vec<String> {
    let text = match section {
        Some(s) => format!("[{s}]\n__probe__ = 0\n"),
        None => "__probe__ = 0\n".to_string(),
    };
    let msg = parse_str(&text).unwrap_err().to_string();
    let expected = msg
        .split_once("expected")
        .unwrap_or_else(|| panic!("{msg}"))
        .1;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

const PACKAGED: &str = include_str!("../../../packaging/config.toml");

#[test]
fn packaged_config_is_the_defaults() {
    let f = parse(PACKAGED, Path::new("packaging/config.toml")).unwrap();
    assert_eq!(f.config, Config::default());
}

#[test]
fn packaged_config_lists_every_key() {
    // Text of each section: from its header to the next.
    let mut sections: HashMap<Option<String>, String> = HashMap::new();
    let mut current = None;
    for line in PACKAGED.lines() {
        let t = line.trim();
        if t.starts_with('[') && !t.starts_with("[[") {
            current = Some(t.trim_matches(['[', ']']).to_string());
            continue;
        }
        sections
            .entry(current.clone())
            .or_default()
            .push_str(&format!("{line}\n"));
    }
    let top = fields_of(None);
    assert!(top.contains(&"interval".to_string()), "{top:?}");
    for field in top {
        // A key is listed as `key = value` (or commented out when it has no default
        // value), or as a `[key]` section.
        let text = &sections[&None];
        let listed = sections.contains_key(&Some(field.clone()))
            || text.lines().any(|l| is_key_line(l, &field));
        assert!(listed, "packaging/config.toml does not list `{field}`");
        if let Some(section_text) = sections.get(&Some(field.clone())) {
            for key in fields_of(Some(&field)) {
                assert!(
                    section_text.lines().any(|l| is_key_line(l, &key)),
                    "packaging/config.toml does not list `{field}.{key}`"
                );
            }
        }
    }
}

fn is_key_line(line: &str, key: &str) -> bool {
    let l = line.trim_start().trim_start_matches('#').trim_start();
    l.strip_prefix(key)
        .is_some_and(|rest| rest.trim_start().starts_with('='))
}

#[test]
fn drop_map_entries_flag_overrides_file() {
    let file = parse_str("[drops]\nmap_entries = 100\n").unwrap();
    let flags = Overrides {
        drop_map_entries: Some(7),
        ..Overrides::default()
    };
    assert_eq!(
        resolve(Some(file), &no_env, &flags)
            .unwrap()
            .drops
            .map_entries,
        7
    );
}

#[test]
fn interval_precedence() {
    let env = env_of(&[(env::METRIC_EXPORT_INTERVAL, "2500")]);
    // Neither file nor flag: the environment applies.
    let c = resolve(Some(parse_str("").unwrap()), &env, &Overrides::default()).unwrap();
    assert_eq!(c.interval, Duration::from_millis(2500));
    let c = resolve(None, &env, &Overrides::default()).unwrap();
    assert_eq!(c.interval, Duration::from_millis(2500));
    // The file wins over the environment.
    let file = || Some(parse_str("interval = \"30s\"").unwrap());
    let c = resolve(file(), &env, &Overrides::default()).unwrap();
    assert_eq!(c.interval, Duration::from_secs(30));
    // The flag wins over both.
    let flags = Overrides {
        interval: Some(Duration::from_secs(1)),
        ..Overrides::default()
    };
    assert_eq!(
        resolve(file(), &env, &flags).unwrap().interval,
        Duration::from_secs(1)
    );
    assert_eq!(
        resolve(None, &env, &flags).unwrap().interval,
        Duration::from_secs(1)
    );
}

#[test]
fn bad_environment_values_are_rejected() {
    for (name, value, reason) in [
        (env::METRIC_EXPORT_INTERVAL, "10s", "milliseconds"),
        (env::METRIC_EXPORT_INTERVAL, "0", "greater than zero"),
        (env::LOG_FORMAT, "xml", "xml"),
        (env::RUST_LOG, "info,[==", "invalid log filter"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "not supported"),
        ("OTEL_EXPORTER_PROMETHEUS_PORT", "http", "not a port number"),
    ] {
        let env = env_of(&[(name, value)]);
        let err = resolve(None, &env, &Overrides::default()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(name) && msg.contains(reason), "{msg}");
    }
    // An endpoint from the environment that only the resolved configuration rejects.
    let env = env_of(&[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "ftp://c:21")]);
    let msg = resolve(None, &env, &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("key `export.endpoint` (after environment and flags)")
            && msg.contains("not http or https"),
        "{msg}"
    );
}

#[test]
fn a_refused_value_is_blamed_on_whoever_set_it() {
    // The file's endpoint, checked with the protocol the environment chose: the
    // environment made it wrong.
    let file = || Some(parse_str("[export]\nendpoint = \"http://c:4318/v1/metrics\"\n").unwrap());
    let env = env_of(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]);
    let msg = resolve(file(), &env, &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("key `export.endpoint` (after environment and flags): ")
            && msg.contains("gRPC endpoint has no path"),
        "{msg}"
    );
    // A variable that has nothing to do with the refused value: still the file's, with
    // its position.
    let file = || Some(parse_str("[export]\nendpoint = \"ftp://c:21\"\n").unwrap());
    let env = env_of(&[("OTEL_SERVICE_NAME", "svc")]);
    let err = resolve(file(), &env, &Overrides::default()).unwrap_err();
    let inv = err.invalid().expect("the file's error");
    assert_eq!(inv.key.as_deref(), Some("export.endpoint"));
    assert_eq!(inv.position, Some((2, 12)));
    // A flag that replaces the file's endpoint: the file's value is not used, not refused.
    let flags = Overrides {
        otlp_endpoint: Some("http://flag:4317".into()),
        ..Overrides::default()
    };
    let c = resolve(file(), &no_env, &flags).unwrap();
    assert_eq!(c.export.resolved_endpoint(), "http://flag:4317");
    // A bad flag value against a good file.
    let flags = Overrides {
        drop_map_entries: Some(limits::MAP_ENTRIES.1 + 1),
        ..Overrides::default()
    };
    let msg = resolve(Some(parse_str("").unwrap()), &no_env, &flags)
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("key `drops.map_entries` (after environment and flags): ")
            && msg.contains("out of range"),
        "{msg}"
    );
}

#[test]
fn environment_errors_are_one_type() {
    // An OTEL_* variable that may hold a secret: named, its value not shown.
    let env = env_of(&[("OTEL_EXPORTER_OTLP_HEADERS", "Bearer-s3cret")]);
    let err = resolve(None, &env, &Overrides::default()).unwrap_err();
    assert!(
        matches!(err, ConfigError::Env { value: None, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("environment variable OTEL_EXPORTER_OTLP_HEADERS: ")
            && !msg.contains("s3cret"),
        "{msg}"
    );
    // One of the agent's own variables: its value is shown.
    let env = env_of(&[(env::LOG_FORMAT, "xml")]);
    let msg = resolve(None, &env, &Overrides::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        "environment variable RETINA_LOG_FORMAT=\"xml\": expected `text` or `json`"
    );
}

#[test]
fn patterns_are_compiled_when_read() {
    let c = check_str("[netdev]\ninclude = [\"eth.*\"]\nexclude = [\"eth1\"]\n").unwrap();
    let f = crate::filter::NameFilter::new(&c.netdev.include, &c.netdev.exclude);
    assert!(f.matches("eth0") && !f.matches("eth1") && !f.matches("veth0"));
}

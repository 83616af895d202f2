use super::*;

fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("retina-agent").chain(args.iter().copied()))
}

#[test]
fn run_flags_become_overrides() {
    let c = cli(&[
        "run",
        "--config",
        "/tmp/c.toml",
        "--interval",
        "2s",
        "--prometheus-listen",
        "127.0.0.1:9999",
        "--otlp-endpoint",
        "http://collector:4317",
        "--otlp-protocol",
        "http/protobuf",
        "--log-format",
        "json",
        "--drop-map-entries",
        "9",
    ])
    .unwrap();
    assert_eq!(
        c.config.as_deref(),
        Some(std::path::Path::new("/tmp/c.toml"))
    );
    let o = c.overrides();
    assert_eq!(o.interval, Some(Duration::from_secs(2)));
    assert_eq!(o.prometheus_listen, Some("127.0.0.1:9999".parse().unwrap()));
    assert_eq!(o.otlp_endpoint.as_deref(), Some("http://collector:4317"));
    assert_eq!(o.otlp_protocol, Some(Protocol::HttpProtobuf));
    assert_eq!(o.log_format, Some(LogFormat::Json));
    assert_eq!(o.drop_map_entries, Some(9));
    assert!(!o.no_prometheus);
}

#[test]
fn nothing_given_overrides_nothing() {
    let c = cli(&["run"]).unwrap();
    assert_eq!(c.overrides(), Overrides::default());
    let Command::Run(args) = &c.command else {
        panic!()
    };
    assert_eq!(args.summary(), None);
}

#[test]
fn summary_flags() {
    let summary = |args: &[&str]| match cli(args).unwrap().command {
        Command::Run(r) => r.summary(),
        _ => panic!(),
    };
    assert_eq!(summary(&["run", "--summary"]), Some(true));
    assert_eq!(summary(&["run", "--no-summary"]), Some(false));
    assert_eq!(summary(&["run", "--summary", "--no-summary"]), Some(false));
    assert_eq!(summary(&["run", "--no-summary", "--summary"]), Some(true));
}

#[test]
fn bad_flag_values_are_usage_errors() {
    for args in [
        &["run", "--interval", "10 parsecs"][..],
        &["run", "--interval", "0s"],
        &["run", "--prometheus-listen", "localhost"],
        &["run", "--otlp-endpoint", "ftp://collector:4317"],
        &["run", "--otlp-protocol", "http"],
        &[
            "run",
            "--no-prometheus",
            "--prometheus-listen",
            "127.0.0.1:1",
        ],
        &["run", "--drop-map-entries", "0"],
        &["run", "--drop-map-entries", "1048577"],
        &["run", "--interval", "1ns"],
        &["run", "--interval", "99ms"],
        &["run", "--interval", "18446744073709551615s"],
        &["snapshot", "--duration", "20000y"],
        &["snapshot", "--settle", "2m"],
    ] {
        assert!(cli(args).is_err(), "{args:?} should be rejected");
    }
}

#[test]
fn check_takes_export_flags() {
    let c = cli(&["check", "--format", "json", "--no-prometheus"]).unwrap();
    assert!(c.overrides().no_prometheus);
    assert!(matches!(
        c.command,
        Command::Check(CheckArgs {
            format: CheckFormat::Json,
            ..
        })
    ));
}

//! `[export]` and `[prometheus]`: the `OTEL_*` variables and the checks.

use std::{collections::HashMap, time::Duration};

use serde::Deserialize;

use crate::config::{error::Violation, *};

/// One section with the environment applied, as [`resolve`] does.
trait ApplyEnv {
    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError>;
}

impl ApplyEnv for ExportConfig {
    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        crate::config::env::export(self, &env, &mut Overridden::default())
    }
}

impl ApplyEnv for PrometheusConfig {
    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        crate::config::env::prometheus(self, &env, &mut Overridden::default())
    }
}

/// The checks of `[export]` alone.
trait Validate {
    fn validate(&self) -> Result<(), Violation>;
}

impl Validate for ExportConfig {
    fn validate(&self) -> Result<(), Violation> {
        crate::config::validate::export(self)
    }
}

/// The interval with the environment `pairs`, no file, no flags.
fn interval_from_env(env: impl Fn(&str) -> Option<String>) -> Result<Duration, ConfigError> {
    resolve(None, &env, &Overrides::default()).map(|c| c.interval)
}

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

fn applied(pairs: &[(&str, &str)]) -> ExportConfig {
    let mut c = ExportConfig::default();
    c.apply_env(env(pairs)).unwrap();
    c
}

#[test]
fn defaults() {
    let c = ExportConfig::default();
    assert!(c.enabled);
    assert_eq!(c.resolved_endpoint(), "http://localhost:4317");
    c.validate().unwrap();
    let http = ExportConfig {
        protocol: Protocol::HttpProtobuf,
        ..ExportConfig::default()
    };
    assert_eq!(http.resolved_endpoint(), "http://localhost:4318/v1/metrics");
    http.validate().unwrap();
    let p = PrometheusConfig::default();
    assert!(p.enabled);
    assert_eq!(p.listen.to_string(), "127.0.0.1:9465");
}

#[test]
fn logs_endpoint_follows_the_metrics_one() {
    let grpc = ExportConfig {
        endpoint: Some("collector:4317".into()),
        insecure: true,
        ..ExportConfig::default()
    };
    assert_eq!(grpc.resolved_logs_endpoint(), "http://collector:4317");
    let http = |endpoint: &str| ExportConfig {
        protocol: Protocol::HttpProtobuf,
        endpoint: Some(endpoint.into()),
        ..ExportConfig::default()
    };
    assert_eq!(
        http("https://otel.example:4318").resolved_logs_endpoint(),
        "https://otel.example:4318/v1/logs"
    );
    assert_eq!(
        http("https://otel.example:4318/v1/metrics").resolved_logs_endpoint(),
        "https://otel.example:4318/v1/logs"
    );
    // Another path is the user's choice: taken as it is.
    assert_eq!(
        http("https://otel.example/ingest").resolved_logs_endpoint(),
        "https://otel.example/ingest"
    );
}

#[test]
fn deserializes_with_humantime_and_protocol_names() {
    #[derive(Deserialize)]
    struct File {
        export: ExportConfig,
        prometheus: PrometheusConfig,
    }
    let f: File = toml::from_str(
        r#"
        [export]
        endpoint = "https://otel.example:4318"
        protocol = "http/protobuf"
        timeout = "2s 500ms"
        temporality = "delta"
        headers = { authorization = "Bearer s3cret" }
        [prometheus]
        listen = "0.0.0.0:9999"
        "#,
    )
    .unwrap();
    assert_eq!(f.export.protocol, Protocol::HttpProtobuf);
    assert_eq!(f.export.timeout, Duration::from_millis(2500));
    assert_eq!(f.export.temporality, Temporality::Delta);
    assert_eq!(
        f.export.resolved_endpoint(),
        "https://otel.example:4318/v1/metrics"
    );
    assert_eq!(f.prometheus.listen.to_string(), "0.0.0.0:9999");
    assert!(f.prometheus.enabled);
    let dbg = format!("{:?}", f.export);
    assert!(!dbg.contains("s3cret"), "{dbg}");
    assert!(dbg.contains("authorization"), "{dbg}");
    assert!(toml::from_str::<File>("[export]\nbogus = 1\n[prometheus]\n").is_err());
}

#[test]
fn env_overrides_and_precedence() {
    let c = applied(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4317"),
        ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://metrics:4317"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "1500"),
        ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "2500"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,b=2"),
        (
            "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
            "b=3, Authorization=Bearer%20tok",
        ),
        ("OTEL_SERVICE_NAME", "svc"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.name=ignored,k8s.node.name=n1",
        ),
        ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "Delta"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
    ]);
    assert_eq!(c.endpoint.as_deref(), Some("http://metrics:4317"));
    assert_eq!(c.timeout, Duration::from_millis(2500));
    assert_eq!(c.headers["a"], "1");
    assert_eq!(c.headers["b"], "3");
    assert_eq!(c.headers["authorization"], "Bearer tok");
    assert_eq!(c.service_name, "svc");
    assert_eq!(c.resource_attributes["k8s.node.name"], "n1");
    assert!(!c.resource_attributes.contains_key("service.name"));
    assert_eq!(c.temporality, Temporality::Delta);
    assert_eq!(c.compression, Compression::Gzip);
    let c = applied(&[("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs")]);
    assert_eq!(c.service_name, "from-attrs");
}

#[test]
fn generic_endpoint_is_a_base_for_http() {
    let c = applied(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
    ]);
    assert_eq!(c.resolved_endpoint(), "http://c:4318/v1/metrics");
    let c = applied(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://gw.example/otlp/"),
    ]);
    assert_eq!(c.resolved_endpoint(), "https://gw.example/otlp/v1/metrics");
    // The signal-specific variable is used as is.
    let c = applied(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        (
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "https://gw.example/custom",
        ),
    ]);
    assert_eq!(c.resolved_endpoint(), "https://gw.example/custom");
    // A protocol switched after the environment (a flag) still gets the path.
    let mut c = applied(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]);
    c.protocol = Protocol::HttpProtobuf;
    assert_eq!(c.resolved_endpoint(), "http://c:4318/v1/metrics");
}

#[test]
fn schemeless_endpoint_uses_insecure() {
    let mut c = applied(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")]);
    assert_eq!(c.resolved_endpoint(), "https://collector:4317");
    c.apply_env(env(&[("OTEL_EXPORTER_OTLP_INSECURE", "true")]))
        .unwrap();
    assert_eq!(c.resolved_endpoint(), "http://collector:4317");
    c.validate().unwrap();
}

#[test]
fn bad_env_values_name_the_variable_but_never_a_header_value() {
    let mut c = ExportConfig::default();
    let e = c
        .apply_env(env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && e.contains("not supported"),
        "{e}"
    );
    let e = c
        .apply_env(env(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("milliseconds"), "{e}");
    let e = c
        .apply_env(env(&[("OTEL_EXPORTER_OTLP_HEADERS", "Bearer-s3cret")]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("OTEL_EXPORTER_OTLP_HEADERS") && !e.contains("s3cret"),
        "{e}"
    );
    let e = c
        .apply_env(env(&[("OTEL_EXPORTER_OTLP_HEADERS", "k=%zzs3cret")]))
        .unwrap_err()
        .to_string();
    assert!(!e.contains("s3cret"), "{e}");
    assert!(interval_from_env(env(&[("OTEL_METRIC_EXPORT_INTERVAL", "0")])).is_err());
    assert_eq!(
        interval_from_env(env(&[("OTEL_METRIC_EXPORT_INTERVAL", "2500")])).unwrap(),
        Duration::from_millis(2500)
    );
    assert_eq!(interval_from_env(env(&[])).unwrap(), DEFAULT_INTERVAL);
    let c = applied(&[("OTEL_SDK_DISABLED", "true")]);
    assert!(!c.enabled);
}

#[test]
fn validation_reasons() {
    let check = |endpoint: &str, protocol: Protocol| {
        ExportConfig {
            endpoint: Some(endpoint.into()),
            protocol,
            ..ExportConfig::default()
        }
        .validate()
        .map_err(|e| e.to_string())
    };
    check("http://127.0.0.1:4317", Protocol::Grpc).unwrap();
    check("https://c.example", Protocol::HttpProtobuf).unwrap();
    let e = check("http://c:4318/v1/metrics", Protocol::Grpc).unwrap_err();
    assert!(e.contains("gRPC endpoint has no path"), "{e}");
    let e = check("ftp://c:21", Protocol::Grpc).unwrap_err();
    assert!(e.contains("not http or https"), "{e}");
    let e = check("http://user:pw@c:4317", Protocol::Grpc).unwrap_err();
    assert!(e.contains("credentials") && !e.contains("pw"), "{e}");
    let e = check("http://c:0", Protocol::Grpc).unwrap_err();
    assert!(e.contains("port 0"), "{e}");
    let e = check("http://", Protocol::Grpc).unwrap_err();
    assert!(e.contains("export.endpoint"), "{e}");
    let mut c = ExportConfig::default();
    c.headers.insert("x-token".into(), "bad\nvalue".into());
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("x-token") && !e.contains("bad"), "{e}");
    let c = ExportConfig {
        ca_file: Some("/nonexistent/ca.pem".into()),
        endpoint: Some("https://c:4317".into()),
        ..ExportConfig::default()
    };
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("export.ca_file") && e.contains("/nonexistent/ca.pem"),
        "{e}"
    );
    let c = ExportConfig {
        enabled: false,
        endpoint: Some("garbage://".into()),
        ..ExportConfig::default()
    };
    c.validate().unwrap();
}

#[test]
fn prometheus_env() {
    let mut p = PrometheusConfig::default();
    p.apply_env(env(&[
        ("OTEL_EXPORTER_PROMETHEUS_HOST", "0.0.0.0"),
        ("OTEL_EXPORTER_PROMETHEUS_PORT", "9100"),
    ]))
    .unwrap();
    assert_eq!(p.listen.to_string(), "0.0.0.0:9100");
    assert!(
        p.apply_env(env(&[("OTEL_EXPORTER_PROMETHEUS_PORT", "x")]))
            .is_err()
    );
}

#[test]
fn logs_variables_set_the_log_export_only() {
    let c = applied(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,b=2"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "1500"),
        // Used as is: no `/v1/logs` after it, even without a path.
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://logs:4318"),
        ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "B=3,x-logs=s3cret"),
        ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "700"),
    ]);
    assert_eq!(c.resolved_endpoint(), "http://c:4318/v1/metrics");
    assert_eq!(c.resolved_logs_endpoint(), "http://logs:4318");
    assert_eq!(c.timeout, Duration::from_millis(1500));
    assert_eq!(c.headers.len(), 2, "{c:?}");
    let logs = c.for_logs();
    assert_eq!(logs.timeout, Duration::from_millis(700));
    assert_eq!(logs.headers["a"], "1");
    assert_eq!(logs.headers["b"], "3");
    assert_eq!(logs.headers["x-logs"], "s3cret");
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("s3cret") && dbg.contains("x-logs"), "{dbg}");
    // A path of its own is kept, gRPC too; without a scheme, `insecure` decides.
    let c = applied(&[(
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
        "https://gw.example/ingest/logs",
    )]);
    assert_eq!(c.resolved_logs_endpoint(), "https://gw.example/ingest/logs");
    let c = applied(&[
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "logs:4317"),
        ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
    ]);
    assert_eq!(c.resolved_logs_endpoint(), "http://logs:4317");
    // Without it, the logs go where the metrics go.
    let c = applied(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]);
    assert_eq!(c.resolved_logs_endpoint(), "http://c:4317");
    assert_eq!(c.for_logs(), c);
}

#[test]
fn bad_logs_variables_name_the_variable() {
    for (var, value, want) in [
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "ftp://c:21", "not http or https"),
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://u:pw@c:4318", "credentials"),
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://c:4318/?a=b", "query"),
        ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "0", "greater than zero"),
        ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "10s", "milliseconds"),
        ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "bad name=s3cret", "header name"),
        ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "k=%zzs3cret", "%-escape"),
    ] {
        let e = ExportConfig::default()
            .apply_env(env(&[(var, value)]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(var) && e.contains(want), "{var}={value}: {e}");
        assert!(!e.contains("s3cret"), "{e}");
    }
}

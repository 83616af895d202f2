//! The OpenTelemetry resource: who is reporting (service, host, OS).

use opentelemetry::KeyValue;
use opentelemetry_sdk::{Resource, resource::TelemetryResourceDetector};

use crate::{config::ExportConfig, kernel::sys::uname};

/// `host.arch` per the semantic conventions.
fn host_arch(machine: &str) -> &str {
    match machine {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "i386" | "i686" => "x86",
        "ppc64le" => "ppc64",
        "s390x" => "s390x",
        other => other,
    }
}

/// `/etc/machine-id` (systemd), else D-Bus's copy.
fn machine_id() -> Option<String> {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
}

/// Builds the resource: `service.name`, `service.version`, `host.name`, `host.id`,
/// `host.arch`, `os.type`, `os.version` (kernel release), the SDK's `telemetry.sdk.*`,
/// then the configured `resource_attributes` over them (except `service.name`, which is
/// `service_name`).
pub fn build(config: &ExportConfig) -> Resource {
    let mut attrs = vec![
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("os.type", "linux"),
    ];
    if let Some(u) = uname() {
        attrs.push(KeyValue::new("os.version", u.release));
        attrs.push(KeyValue::new(
            "host.arch",
            host_arch(&u.machine).to_string(),
        ));
        attrs.push(KeyValue::new("host.name", u.nodename));
    }
    if let Some(id) = machine_id() {
        attrs.push(KeyValue::new("host.id", id));
    }
    for (k, v) in &config.resource_attributes {
        if k != "service.name" {
            attrs.push(KeyValue::new(k.clone(), v.clone()));
        }
    }
    attrs.push(KeyValue::new("service.name", config.service_name.clone()));
    // Later attributes replace earlier ones of the same key.
    Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes(attrs)
        .build()
}

/// The resource's attributes sorted by key (the Prometheus `target_info` labels).
pub fn sorted_attributes(resource: &Resource) -> Vec<KeyValue> {
    let mut attrs: Vec<KeyValue> = resource
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    attrs.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
    attrs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_host_and_service_attributes() {
        let mut config = ExportConfig::default();
        config
            .resource_attributes
            .insert("deployment.environment.name".into(), "test".into());
        config
            .resource_attributes
            .insert("service.name".into(), "ignored".into());
        let r = sorted_attributes(&build(&config));
        let get = |k: &str| {
            r.iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(get("service.name").as_deref(), Some("retina-agent"));
        assert_eq!(get("os.type").as_deref(), Some("linux"));
        assert!(get("os.version").is_some_and(|v| !v.is_empty()));
        assert!(get("host.name").is_some());
        assert_eq!(get("deployment.environment.name").as_deref(), Some("test"));
        assert_eq!(get("telemetry.sdk.language").as_deref(), Some("rust"));
        assert_eq!(get("telemetry.sdk.name").as_deref(), Some("opentelemetry"));
    }
}

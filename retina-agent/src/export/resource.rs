//! The OpenTelemetry resource: who is reporting (service, host, OS).

use std::collections::BTreeMap;

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
pub(crate) fn build(config: &ExportConfig) -> Resource {
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

/// The resource keys the agent sets itself (the SDK's `telemetry.sdk.*` included). A
/// configured attribute of the same key replaces the agent's value.
pub(crate) const AGENT_KEYS: [&str; 10] = [
    "service.name",
    "service.version",
    "os.type",
    "os.version",
    "host.arch",
    "host.name",
    "host.id",
    "telemetry.sdk.language",
    "telemetry.sdk.name",
    "telemetry.sdk.version",
];

/// Why the configured resource attributes cannot all be labels of the Prometheus
/// `target_info`, if they cannot: a key that becomes a label reserved by Prometheus
/// (`__name__`, anything starting with `__`), or two keys (configured, or configured and
/// the agent's own, [`AGENT_KEYS`]) that become the same label (`host_name` and
/// `host.name`; `a.b` and `a_b`). Prometheus refuses such a scrape whole ("label name is
/// not unique"), so they are refused at load rather than renamed behind the user's back.
pub(crate) fn check_attributes(attributes: &BTreeMap<String, String>) -> Result<(), String> {
    let mut labels: BTreeMap<String, &str> = AGENT_KEYS
        .iter()
        .map(|k| (super::prometheus::label_name(k), *k))
        .collect();
    for key in attributes.keys() {
        if key.is_empty() {
            return Err("an attribute has an empty key".into());
        }
        let label = super::prometheus::label_name(key);
        if label.starts_with("__") {
            return Err(format!(
                "{key:?} becomes the Prometheus label {label}, and names starting with `__` are \
                 reserved by Prometheus; rename it"
            ));
        }
        match labels.get(&label) {
            // The same key as one of the agent's: it replaces the agent's value.
            Some(other) if *other == key.as_str() => {}
            Some(other) => {
                let whose = if AGENT_KEYS.contains(other) && !attributes.contains_key(*other) {
                    "the agent's own"
                } else {
                    "the attribute"
                };
                return Err(format!(
                    "{key:?} and {whose} {other:?} both become the Prometheus label {label} of \
                     target_info, which Prometheus refuses (\"label name is not unique\"); \
                     rename or remove {key:?}"
                ));
            }
            None => {}
        }
        labels.insert(label, key.as_str());
    }
    Ok(())
}

/// The resource's attributes sorted by key (the Prometheus `target_info` labels).
pub(crate) fn sorted_attributes(resource: &Resource) -> Vec<KeyValue> {
    let mut attrs: Vec<KeyValue> = resource
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    attrs.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
    attrs
}

#[cfg(test)]
mod tests;

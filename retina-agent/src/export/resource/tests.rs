use super::*;

fn check(pairs: &[(&str, &str)]) -> Result<(), String> {
    check_attributes(
        &pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

#[test]
fn colliding_or_reserved_attributes_are_refused() {
    check(&[("host.name", "n"), ("k8s.node.name", "n"), ("env", "x")]).unwrap();
    let e = check(&[("host_name", "node-7")]).unwrap_err();
    assert!(
        e.contains("\"host_name\" and the agent's own \"host.name\"") && e.contains("host_name"),
        "{e}"
    );
    let e = check(&[("a.b", "1"), ("a_b", "2")]).unwrap_err();
    assert!(e.contains("\"a_b\" and the attribute \"a.b\""), "{e}");
    let e = check(&[("__name__", "x")]).unwrap_err();
    assert!(e.contains("\"__name__\"") && e.contains("reserved"), "{e}");
    assert!(check(&[("..x", "x")]).unwrap_err().contains("reserved"));
    assert!(check(&[("", "x")]).is_err());
    // Collides only with the agent's key it also replaces: both set by the user.
    let e = check(&[("host.name", "a"), ("host_name", "b")]).unwrap_err();
    assert!(e.contains("\"host_name\" and the attribute \"host.name\""), "{e}");
}

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

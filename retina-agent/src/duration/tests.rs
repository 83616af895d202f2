use super::*;

#[derive(Debug, serde::Deserialize)]
struct Key(#[serde(deserialize_with = "deserialize")] Duration);

fn key(json: &str) -> Result<Duration, String> {
    serde_json::from_str::<Key>(json)
        .map(|k| k.0)
        .map_err(|e| e.to_string())
}

#[test]
fn strings_and_whole_seconds_never_zero() {
    assert_eq!(parse("1m 30s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(
        parse("10 parsecs"),
        Err("invalid duration \"10 parsecs\" (examples: 10s, 500ms, 1m)".into())
    );
    assert_eq!(
        parse("0s"),
        Err("invalid duration \"0s\": must be greater than zero".into())
    );
    assert_eq!(key("\"5m\""), Ok(Duration::from_secs(300)));
    assert_eq!(key("15"), Ok(Duration::from_secs(15)));
    for bad in ["0", "-3", "\"0s\""] {
        let e = key(bad).unwrap_err();
        assert!(e.contains("must be greater than zero"), "{bad}: {e}");
    }
    let e = key("true").unwrap_err();
    assert!(e.contains("expected a duration such as"), "{e}");
}

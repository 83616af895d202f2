use super::*;

#[test]
fn bad_config_fails_the_config_check() {
    let err = crate::config::parse("intervall = 1", Path::new("/x.toml")).unwrap_err();
    let c = config_check(Err(&err));
    assert_eq!(c.status, Status::Fail);
    assert!(c.detail.contains("/x.toml: key `intervall`"), "{c:?}");
}

#[test]
fn text_and_json_output() {
    let checks = vec![
        Check::pass("a", "fine"),
        Check::warn("b", "meh", "do x"),
        Check::fail("c", "broken", "do y"),
    ];
    let text = render_text(&checks);
    assert_eq!(
        text,
        "PASS  a: fine\nWARN  b: meh\n      hint: do x\nFAIL  c: broken\n      hint: do y\n\
             1 passed, 1 warnings, 1 failed\n"
    );
    assert!(!passed(&checks));
    assert!(passed(&checks[..2]));
    let j = render_json(&checks);
    assert_eq!(j["ok"], false);
    assert_eq!(j["checks"][2]["status"], "FAIL");
    assert_eq!(j["checks"][1]["hint"], "do x");
    assert_eq!(j["checks"][0]["hint"], serde_json::Value::Null);
}

use super::*;

fn s(v: &[&str]) -> Vec<Pattern> {
    Pattern::list(v).unwrap()
}

#[test]
fn empty_selects_everything() {
    let f = NameFilter::new(&[], &[]);
    assert!(f.is_all());
    assert!(f.matches("eth0"));
    assert!(f.matches(""));
    assert!(NameFilter::all().matches("lo"));
}

#[test]
fn patterns_are_anchored() {
    let f = NameFilter::new(&s(&["eth.*"]), &[]);
    assert!(f.matches("eth0"));
    assert!(!f.matches("veth0"));
    let f = NameFilter::new(&s(&["eth0"]), &[]);
    assert!(!f.matches("eth01"));
    // Alternation inside a pattern stays anchored as a whole.
    let f = NameFilter::new(&s(&["lo|eth0"]), &[]);
    assert!(f.matches("lo"));
    assert!(f.matches("eth0"));
    assert!(!f.matches("lo0"));
    assert!(!f.matches("xeth0"));
}

#[test]
fn exclude_wins_over_include() {
    let f = NameFilter::new(&s(&["eth.*", "lo"]), &s(&["eth1", "veth.*"]));
    assert!(f.matches("eth0"));
    assert!(!f.matches("eth1"));
    assert!(f.matches("lo"));
    assert!(!f.matches("veth9"));
    assert!(!f.matches("docker0"));
    let f = NameFilter::new(&[], &s(&["veth.*"]));
    assert!(f.matches("eth0"));
    assert!(!f.matches("veth0"));
}

#[test]
fn bad_pattern_is_named_in_the_error() {
    let err = Pattern::list(&["ok", "eth[0-"]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("invalid regular expression \"eth[0-\": ") && !msg.contains("^(?:"),
        "{msg}"
    );
    assert_eq!(Pattern::new("eth.*").unwrap(), "eth.*");
    let p: Vec<Pattern> = serde_json::from_str(r#"["lo", "eth.*"]"#).unwrap();
    assert!(p[1].is_match("eth0") && !p[1].is_match("veth0"));
    let err = serde_json::from_str::<Vec<Pattern>>(r#"["ok", "(bad"]"#).unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid regular expression \"(bad\""),
        "{err}"
    );
}

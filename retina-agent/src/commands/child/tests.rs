use super::*;

#[test]
fn root_is_found_and_an_unknown_user_named() {
    let root = lookup("root").unwrap();
    assert_eq!((root.uid, root.gid), (0, 0));
    assert!(root.groups.contains(&0));
    let err = lookup("no-such-user-retina").unwrap_err().to_string();
    assert!(err.contains("no-such-user-retina") && err.contains("no such user"), "{err}");
    assert!(matches!(lookup("a\0b"), Err(AccountError::Nul(_))));
}

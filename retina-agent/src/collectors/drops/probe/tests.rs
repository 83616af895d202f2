use super::user_ns_pool;

#[test]
fn the_user_namespace_pool_is_a_sixteenth_and_never_empty() {
    assert_eq!(user_ns_pool(16384), 1024);
    assert_eq!(user_ns_pool(64), 4);
    // A tiny map still has a pool (then shared with everyone: nothing else is left).
    assert_eq!(user_ns_pool(8), 1);
    assert_eq!(user_ns_pool(1), 1);
    assert_eq!(user_ns_pool(1 << 20), 1 << 16);
}

use super::*;

#[test]
fn limits_follow_the_series() {
    assert_eq!(limit_for(0), MIN_LIMIT);
    assert_eq!(limit_for(1000), 2000);
    assert_eq!(limit_for(usize::MAX), usize::MAX);
    assert_eq!(capped_limit(1000, None), 2000);
    assert_eq!(capped_limit(1000, Some(10)), 10);
    assert_eq!(capped_limit(10, Some(5000)), MIN_LIMIT);
}

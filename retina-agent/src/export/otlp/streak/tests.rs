use super::*;

#[test]
fn logs_first_then_rate_limited() {
    let mut s = Streak::default();
    assert_eq!(s.hit(), Some(0));
    assert_eq!(s.hit(), None);
    assert_eq!(s.hit(), None);
    assert_eq!(s.count, 3);
    s.last_logged = Instant::now().checked_sub(LOG_EVERY);
    assert_eq!(s.hit(), Some(3));
    let (n, _) = s.end().unwrap();
    assert_eq!(n, 4);
    assert!(s.end().is_none());
    assert_eq!(s.hit(), Some(0));
}

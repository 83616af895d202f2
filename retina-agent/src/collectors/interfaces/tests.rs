use super::*;
use crate::kernel::links::Links;

/// Tracks every link of `links` in one cycle, building `name#n` entries; returns what
/// happened to each.
fn cycle(t: &mut Interfaces<String>, links: &Links, n: u32) -> Vec<(u32, Change)> {
    t.begin();
    let out = links
        .iter()
        .filter_map(|l| {
            t.track(l, |l| format!("{}#{n}", l.name))
                .map(|(_, c)| (l.ifindex, c))
        })
        .collect();
    t.end();
    out
}

#[test]
fn entries_follow_the_table() {
    let mut t = Interfaces::new();
    let mut links = Links::from_links([Link::new(2, "eth0"), Link::new(1, "lo")]);
    assert_eq!(
        cycle(&mut t, &links, 1),
        [(1, Change::Added), (2, Change::Added)]
    );
    assert_eq!(t.cycle(), 1);
    assert_eq!(
        cycle(&mut t, &links, 2),
        [(1, Change::Kept), (2, Change::Kept)]
    );
    assert_eq!(t.get(2).map(String::as_str), Some("eth0#1"));
    // Recreated (new instance), renamed in place (same instance), gone, new.
    links.upsert(Link::new(1, "lo"));
    let mut renamed = links.get(2).unwrap().clone();
    renamed.name = Arc::from("wan0");
    links.upsert(renamed);
    links.upsert(Link::new(7, "veth0"));
    assert_eq!(
        cycle(&mut t, &links, 3),
        [
            (1, Change::Replaced),
            (2, Change::Replaced),
            (7, Change::Added)
        ]
    );
    assert_eq!(
        t.values().collect::<Vec<_>>(),
        ["lo#3", "wan0#3", "veth0#3"]
    );
    links.remove(2);
    t.begin();
    for l in links.iter() {
        t.track(l, |_| unreachable!());
    }
    assert_eq!(t.end(), 1);
    assert_eq!(t.ifindexes().collect::<Vec<_>>(), [1, 7]);
    assert!(t.get(2).is_none() && !t.is_empty());
    if let Some(v) = t.get_mut(7) {
        v.push('!');
    }
    assert_eq!(t.get(7).map(String::as_str), Some("veth0#3!"));
}

#[test]
fn the_limit_ignores_new_interfaces_only() {
    let mut t = Interfaces::with_limit(2);
    let mut links = Links::from_links([1, 2, 3].map(|i| Link::new(i, "x")));
    assert_eq!(
        cycle(&mut t, &links, 1),
        [(1, Change::Added), (2, Change::Added)]
    );
    // A replaced entry is not a new one: still within the limit.
    links.upsert(Link::new(2, "y"));
    assert_eq!(
        cycle(&mut t, &links, 2),
        [(1, Change::Kept), (2, Change::Replaced)]
    );
    // Room again once one is gone.
    links.remove(1);
    cycle(&mut t, &links, 3);
    assert_eq!(
        cycle(&mut t, &links, 4),
        [(2, Change::Kept), (3, Change::Added)]
    );
    assert_eq!(t.len(), 2);
}

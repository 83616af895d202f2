use super::*;

const SAMPLE: &str = "\
ffffffff81000000 T srso_alias_untrain_ret
ffffffff81000000 T _stext
ffffffff81001000 t helper_a
ffffffff820a8770 T __udp4_lib_rcv
ffffffff820a9470 T udp_v4_early_demux
ffffffff82300000 D some_data
ffffffffc0000000 t mod_func\t[nf_tables]
ffffffff820a0000 W weak_func
";

#[test]
fn names_an_address_by_the_function_it_is_in() {
    let k = Kallsyms::parse("fixture", SAMPLE).unwrap();
    assert_eq!(k.len(), 7, "data symbols are left out");
    // Inside a function, at its start, one byte before the next.
    assert_eq!(
        k.lookup(0xffffffff820a8770 + 0x4bc),
        Some((0xffffffff820a8770, "__udp4_lib_rcv"))
    );
    assert_eq!(
        k.lookup(0xffffffff820a8770),
        Some((0xffffffff820a8770, "__udp4_lib_rcv"))
    );
    assert_eq!(
        k.lookup(0xffffffff820a946f).map(|l| l.1),
        Some("__udp4_lib_rcv")
    );
    // Aliases: the first listed, as the kernel's %pS picks.
    assert_eq!(
        k.lookup(0xffffffff81000010),
        Some((0xffffffff81000000, "srso_alias_untrain_ret"))
    );
    // Out of order in the file (modules come last), a module suffix dropped.
    assert_eq!(k.lookup(0xffffffff820a0004).map(|l| l.1), Some("weak_func"));
    assert_eq!(k.lookup(0xffffffffc0000100).map(|l| l.1), Some("mod_func"));
    assert_eq!(k.lookup(0x1000), None);
}

#[test]
fn hidden_addresses_and_bad_lines_are_errors() {
    let hidden = "0000000000000000 T _stext\n0000000000000000 t foo\n";
    let err = Kallsyms::parse("/proc/kallsyms", hidden).err().unwrap();
    assert!(matches!(err, KallsymsError::Hidden { .. }), "{err}");
    assert!(err.to_string().contains("kptr_restrict"), "{err}");
    for bad in ["ffffffff81000000 T\n", "zzzz T foo\n", "ffff TT foo\n"] {
        let err = Kallsyms::parse("f", bad).err().unwrap();
        assert!(
            matches!(err, KallsymsError::Malformed { line: 1, .. }),
            "{bad}: {err}"
        );
    }
    assert!(Kallsyms::parse("f", "").unwrap().is_empty());
}

#[test]
#[ignore = "needs root (kallsyms addresses); `cargo xtask test` runs it"]
fn this_kernels_table_names_a_known_function() {
    // As root (`cargo xtask test`); unprivileged, the kernel hides the addresses.
    let k = Kallsyms::load().unwrap_or_else(|e| panic!("this test needs root: {e}"));
    assert!(k.len() > 1000, "{} symbols", k.len());
    let text = std::fs::read_to_string(PROC_KALLSYMS).unwrap();
    let (addr, name) = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let a = u64::from_str_radix(f.next()?, 16).ok()?;
            (f.next()? == "T").then_some((a, f.next()?))
        })
        .nth(500)
        .unwrap();
    let (start, found) = k.lookup(addr + 1).unwrap();
    assert_eq!(start, addr);
    // Another symbol may share the address; it must be one listed there.
    assert!(
        found == name
            || text
                .lines()
                .any(|l| l.starts_with(&format!("{addr:016x} ")) && l.ends_with(found)),
        "{found} vs {name}"
    );
}

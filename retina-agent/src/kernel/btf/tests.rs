use super::*;

/// Builds BTF blobs for tests: enough to describe structs and enums.
#[derive(Default)]
pub(crate) struct Builder {
    types: Vec<u8>,
    strings: Vec<u8>,
    next_id: u32,
}

impl Builder {
    pub(crate) fn new() -> Self {
        Builder {
            types: Vec::new(),
            strings: vec![0],
            next_id: 1,
        }
    }

    fn name(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    fn header(&mut self, name: &str, kind: u32, vlen: u32, size_or_type: u32) -> u32 {
        let n = self.name(name);
        self.types.extend_from_slice(&n.to_le_bytes());
        self.types
            .extend_from_slice(&((kind << 24) | vlen).to_le_bytes());
        self.types.extend_from_slice(&size_or_type.to_le_bytes());
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub(crate) fn int(&mut self, name: &str, size: u32) -> u32 {
        let id = self.header(name, KIND_INT, 0, size);
        self.types.extend_from_slice(&(size * 8).to_le_bytes());
        id
    }

    pub(crate) fn ptr(&mut self, to: u32) -> u32 {
        self.header("", KIND_PTR, 0, to)
    }

    /// A struct (or union) with (name, type, byte offset) members.
    pub(crate) fn composite(
        &mut self,
        union: bool,
        name: &str,
        size: u32,
        members: &[(&str, u32, u32)],
    ) -> u32 {
        let kind = if union { KIND_UNION } else { KIND_STRUCT };
        let id = self.header(name, kind, members.len() as u32, size);
        for (m, ty, off) in members {
            let n = self.name(m);
            self.types.extend_from_slice(&n.to_le_bytes());
            self.types.extend_from_slice(&ty.to_le_bytes());
            self.types.extend_from_slice(&(off * 8).to_le_bytes());
        }
        id
    }

    pub(crate) fn enumeration(&mut self, name: &str, values: &[(&str, u32)]) -> u32 {
        let id = self.header(name, KIND_ENUM, values.len() as u32, 4);
        for (v, val) in values {
            let n = self.name(v);
            self.types.extend_from_slice(&n.to_le_bytes());
            self.types.extend_from_slice(&val.to_le_bytes());
        }
        id
    }

    pub(crate) fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.push(1);
        out.push(0);
        out.extend_from_slice(&24u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(self.types.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.types.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.strings.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}

#[test]
fn offsets_through_anonymous_members() {
    let mut b = Builder::new();
    let int = b.int("int", 4);
    let dev = b.composite(false, "net_device", 64, &[("ifindex", int, 8)]);
    let devp = b.ptr(dev);
    let inner = b.composite(true, "", 8, &[("dev", devp, 0), ("dev_scratch", int, 0)]);
    let outer = b.composite(
        false,
        "",
        24,
        &[("next", int, 0), ("prev", int, 8), ("", inner, 16)],
    );
    let wrap = b.composite(true, "", 24, &[("", outer, 0)]);
    b.composite(false, "sk_buff", 128, &[("", wrap, 0), ("len", int, 112)]);
    let btf = Btf::parse("test".into(), b.build(), None).unwrap();
    assert_eq!(btf.field_offset("sk_buff", "dev").unwrap(), 16);
    assert_eq!(btf.field_offset("sk_buff", "len").unwrap(), 112);
    assert_eq!(btf.field_offset("net_device", "ifindex").unwrap(), 8);
    assert_eq!(btf.struct_size("sk_buff"), Some(128));
    let err = btf.field_offset("sk_buff", "nope").unwrap_err().to_string();
    assert!(err.contains("sk_buff.nope"), "{err}");
}

/// Member offsets whose sum passes `u32::MAX` (a malformed blob) are an error, not
/// an overflow (a panic in debug builds, a wrong offset for the eBPF program in
/// release builds).
#[test]
fn offsets_that_overflow_are_errors() {
    let mut b = Builder::new();
    let int = b.int("int", 4);
    let net = b.composite(false, "possible_net_t", 8, &[("net", int, 0x20)]);
    b.composite(false, "net_device", 64, &[("nd_net", net, 0x1fff_ffe0)]);
    let anon = b.composite(false, "", 8, &[("skc_net", int, 0x20)]);
    b.composite(false, "sock", 64, &[("", anon, 0x1fff_ffe0)]);
    let btf = Btf::parse("test".into(), b.build(), None).unwrap();
    let err = btf.field_offset("net_device", "nd_net.net").unwrap_err();
    assert!(err.to_string().contains("fits 32 bits"), "{err}");
    assert!(btf.field_offset("sock", "skc_net").is_err());
    assert_eq!(
        btf.field_offset("net_device", "nd_net").unwrap(),
        0x1fff_ffe0
    );
}

#[test]
fn enums() {
    let mut b = Builder::new();
    b.enumeration(
        "skb_drop_reason",
        &[("SKB_NOT_DROPPED_YET", 0), ("SKB_DROP_REASON_NO_SOCKET", 3)],
    );
    let btf = Btf::parse("test".into(), b.build(), None).unwrap();
    let values = btf.enum_values("skb_drop_reason").unwrap();
    assert_eq!(
        values[1],
        EnumValue {
            name: "SKB_DROP_REASON_NO_SOCKET".into(),
            value: 3
        }
    );
    assert!(btf.enum_values("missing").is_none());
}

#[test]
fn malformed_blobs_are_errors_not_panics() {
    let mut b = Builder::new();
    b.enumeration("e", &[("A", 1)]);
    let good = b.build();
    for len in 0..good.len() {
        // Every truncation either parses (when it only cut the string tail) or errors.
        let _ = Btf::parse("t".into(), good[..len].to_vec(), None);
    }
    let mut bad_magic = good.clone();
    bad_magic[0] = 0;
    let err = Btf::parse("/x/btf".into(), bad_magic, None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/x/btf") && err.contains("magic"), "{err}");
    let mut bad_kind = good.clone();
    bad_kind[24 + 7] = 0x1f; // kind 31
    assert!(Btf::parse("t".into(), bad_kind, None).is_err());
    let mut huge_vlen = good;
    huge_vlen[24 + 4] = 0xff;
    huge_vlen[24 + 5] = 0xff;
    assert!(Btf::parse("t".into(), huge_vlen, None).is_err());
}

#[test]
fn running_kernel() {
    // The machines this project runs on have BTF; its absence is a failure here.
    let btf = Btf::from_sys().expect("this kernel must expose /sys/kernel/btf/vmlinux");
    assert!(btf.field_offset("sk_buff", "dev").is_ok());
    assert!(btf.field_offset("net", "ns.inum").is_ok());
    assert!(btf.enum_values("skb_drop_reason").is_some());
    assert!(btf.tracepoint_args("kfree_skb").unwrap() >= 3);
}

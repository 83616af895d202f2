//! The BTF reader: a blob parsed as `vmlinux` BTF, then everything the agent derives from
//! it (the eBPF program's structure offsets, the drop reason names, the not-a-drop mask),
//! then the same blob as module (split) BTF on top of itself.
//!
//! Input: a BTF blob.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retina_agent::{
    kernel::btf::Btf,
    collectors::drops::{
        probe::{not_drop_reasons, offsets_from_btf},
        reasons::DropReasons,
    },
};

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = Btf::parse("fuzz".into(), data.to_vec(), None) else {
        return;
    };
    let _ = offsets_from_btf(&btf);
    let _ = not_drop_reasons(&btf);
    let _ = DropReasons::load(&btf, None);
    let _ = btf.struct_size("sk_buff");
    let _ = btf.tracepoint_args("kfree_skb");
    for id in 0..64 {
        let _ = btf.members(id);
    }
    if let Ok(split) = Btf::parse("fuzz-module".into(), data.to_vec(), Some(&btf)) {
        let _ = offsets_from_btf(&split);
        let _ = split.enums_matching(|n| n.ends_with("_drop_reason"));
        let _ = split.field_offset("sk_buff", "dev");
    }
});

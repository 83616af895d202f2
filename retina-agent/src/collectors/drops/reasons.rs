//! Drop-reason names, read from the running kernel's BTF.
//!
//! Nothing here is a table compiled into the agent: `enum skb_drop_reason` differs between
//! kernel versions (5.18 inserted a value at 0; vendors backport with other numbers), so the
//! names come from `/sys/kernel/btf/vmlinux`, plus the subsystem enums (`ovs_drop_reason`,
//! `mac80211_drop_reason`, ...) from vmlinux or module BTF, whose values live above bit 16.

use std::{collections::BTreeMap, path::Path, sync::Arc};

use crate::kernel::btf::{Btf, BtfError};

/// The enum the kernel passes to `trace_kfree_skb()`.
pub(crate) const CORE_ENUM: &str = "skb_drop_reason";
/// Subsystem reasons occupy the bits above this shift (`SKB_DROP_REASON_SUBSYS_SHIFT`).
pub(crate) const SUBSYS_SHIFT: u32 = 16;

#[derive(Debug, thiserror::Error)]
pub enum ReasonsError {
    #[error(
        "the kernel's BTF ({path}) has no `enum skb_drop_reason`: drop reasons need Linux 5.17 or newer"
    )]
    NoEnum { path: String },
    #[error(transparent)]
    Btf(#[from] BtfError),
}

/// Maps drop-reason values to the kernel's names, without the `SKB_DROP_REASON_` prefix.
#[derive(Clone, Debug, Default)]
pub struct DropReasons {
    names: BTreeMap<u32, Arc<str>>,
}

/// The kernel's name of a core reason, as the `kfree_skb` tracepoint prints it:
/// `SKB_DROP_REASON_NO_SOCKET` → `NO_SOCKET`, `SKB_CONSUMED` → `CONSUMED`.
fn core_name(name: &str) -> &str {
    name.strip_prefix("SKB_DROP_REASON_")
        .or_else(|| name.strip_prefix("SKB_"))
        .unwrap_or(name)
}

impl DropReasons {
    /// Reads the core enum from `vmlinux` and the subsystem enums from `vmlinux` and from
    /// every module BTF file in `module_dir` (usually `/sys/kernel/btf`). Module files that
    /// fail to parse are skipped with a warning: a broken module must not hide core names.
    pub fn load(vmlinux: &Btf, module_dir: Option<&Path>) -> Result<Self, ReasonsError> {
        let core = vmlinux
            .enum_values(CORE_ENUM)
            .ok_or_else(|| ReasonsError::NoEnum {
                path: vmlinux.path().display().to_string(),
            })?;
        let mut names = BTreeMap::new();
        for v in core {
            if let Ok(value) = u32::try_from(v.value) {
                names.insert(value, Arc::from(core_name(&v.name)));
            }
        }
        let mut reasons = DropReasons { names };
        reasons.add_subsystems(vmlinux);
        if let Some(dir) = module_dir
            && let Ok(entries) = std::fs::read_dir(dir)
        {
            for entry in entries.flatten() {
                if entry.file_name() == "vmlinux" {
                    continue;
                }
                match Btf::from_split_file(entry.path(), vmlinux) {
                    Ok(module) => reasons.add_subsystems(&module),
                    Err(e) => tracing::warn!("skipping module BTF: {e}"),
                }
            }
        }
        Ok(reasons)
    }

    fn add_subsystems(&mut self, btf: &Btf) {
        let enums = btf.enums_matching(|n| {
            n.ends_with("_drop_reason") && n != CORE_ENUM && !n.starts_with("skb_drop_reason")
        });
        for (_, values) in enums {
            for v in values {
                let Ok(value) = u32::try_from(v.value) else {
                    continue;
                };
                // Only the subsystem range: values below it are not drop reasons (e.g.
                // mac80211's RX_CONTINUE) and must not shadow core names.
                if value >> SUBSYS_SHIFT == 0 || v.name.starts_with("__") {
                    continue;
                }
                self.names
                    .entry(value)
                    .or_insert_with(|| Arc::from(v.name.as_str()));
            }
        }
    }

    /// The kernel's name for `value`, or `UNKNOWN_<value>` when this kernel names none.
    /// Allocates only for unknown values; callers resolve a name once per new series.
    pub(crate) fn name(&self, value: u32) -> Arc<str> {
        self.names
            .get(&value)
            .cloned()
            .unwrap_or_else(|| Arc::from(format!("UNKNOWN_{value}")))
    }

    /// Every known value and name, in value order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        self.names.iter().map(|(v, n)| (*v, &**n))
    }

}

#[cfg(test)]
mod tests;

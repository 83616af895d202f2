//! The `drop_locations` check: with `drops.locations = true`, can the agent name the kernel
//! functions that drop packets? Names come from `/proc/kallsyms`, whose addresses the kernel
//! shows only to a process with `CAP_SYSLOG` (under `kernel.kptr_restrict`), which the
//! packaged unit does not grant. Without them the agent runs with locations off and its log
//! says so; this check says it before the agent starts.

use super::Check;
use crate::{
    collectors::drops::kallsyms::{Kallsyms, KallsymsError},
    kernel::sys::error_chain,
};

const NAME: &str = "drop_locations";

/// What to do about addresses hidden from the agent.
const HINT_HIDDEN: &str = "add CAP_SYSLOG to the unit's CapabilityBoundingSet= and \
     AmbientCapabilities= (a drop-in; docs/diagnosing-drops.md), or set drops.locations = false";

/// `enabled`: `drops.enabled` and `drops.locations` (with the flags applied).
pub(super) fn drop_locations(enabled: bool) -> Check {
    if !enabled {
        return Check::pass(NAME, "off (drops.locations = false)");
    }
    judge(Kallsyms::load())
}

fn judge(loaded: Result<Kallsyms, KallsymsError>) -> Check {
    match loaded {
        Ok(symbols) => Check::pass(
            NAME,
            format!(
                "/proc/kallsyms names {} kernel functions: drops carry drop.location",
                symbols.len()
            ),
        ),
        Err(e @ KallsymsError::Hidden { .. }) => Check::warn(
            NAME,
            format!("{e}: the agent runs with drop locations off"),
            HINT_HIDDEN,
        ),
        Err(e) => Check::warn(
            NAME,
            format!(
                "{}: the agent runs with drop locations off",
                error_chain(&e)
            ),
            "set drops.locations = false if this kernel's symbols cannot be read",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::check::Status;

    #[test]
    fn hidden_addresses_are_a_warning_that_names_the_capability() {
        let hidden = Kallsyms::parse(
            "/proc/kallsyms",
            "0000000000000000 T _text\n0000000000000000 t __udp4_lib_rcv\n",
        );
        let check = judge(hidden);
        assert_eq!(check.status, Status::Warn);
        assert!(check.detail.contains("kptr_restrict"), "{}", check.detail);
        assert!(check.detail.contains("locations off"), "{}", check.detail);
        assert!(check.hint.as_deref().is_some_and(|h| h.contains("CAP_SYSLOG")));
    }

    #[test]
    fn readable_addresses_pass_with_their_count() {
        let shown = Kallsyms::parse(
            "/proc/kallsyms",
            "ffffffff81000000 T _text\nffffffff81a00000 t __udp4_lib_rcv\n",
        );
        let check = judge(shown);
        assert_eq!(check.status, Status::Pass);
        assert!(check.detail.contains("names 2 kernel functions"), "{}", check.detail);
    }

    #[test]
    fn off_is_a_pass_that_says_so() {
        let check = drop_locations(false);
        assert_eq!(check.status, Status::Pass);
        assert!(check.detail.starts_with("off"), "{}", check.detail);
    }
}

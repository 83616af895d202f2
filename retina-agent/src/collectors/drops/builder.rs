//! Builds the drop collector: the kernel's BTF and reason names, the probe, and with
//! `drops.locations` the kernel's symbol table.

use std::path::Path;

use super::{
    DropCollector,
    kallsyms::{Kallsyms, KallsymsError},
    locations::Locations,
    probe::{DropProbe, ProbeError, ProbeOptions},
    reasons::{DropReasons, ReasonsError},
};
use crate::kernel::btf::{Btf, BtfError};

/// Why the drop collector could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(transparent)]
    Reasons(#[from] ReasonsError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("/proc/self/ns/net: {0}")]
    HostNetns(#[source] std::io::Error),
}

/// The drop collector's parts, gathered in two steps so that a missing symbol table only
/// turns drop locations off: [`Builder::new`] reads the symbol table (when locations are
/// asked for), [`Builder::build`] loads the probe.
pub(crate) struct Builder<'a> {
    probe: ProbeOptions,
    locations_capacity: u32,
    btf_path: Option<&'a Path>,
    symbols: Option<Kallsyms>,
    locations_off: Option<KallsymsError>,
}

impl<'a> Builder<'a> {
    /// `probe`: how to load the probe (with `locations`, drop locations are named, up to
    /// `locations_capacity` functions); `btf_path`: a BTF file instead of the running
    /// kernel's (then no module BTF is read either).
    pub(crate) fn new(
        mut probe: ProbeOptions,
        locations_capacity: u32,
        btf_path: Option<&'a Path>,
    ) -> Self {
        // The symbol table first: without it the probe is loaded without locations.
        let (symbols, locations_off) = match probe.locations {
            false => (None, None),
            true => match Kallsyms::load() {
                Ok(k) => (Some(k), None),
                Err(e) => {
                    probe.locations = false;
                    (None, Some(e))
                }
            },
        };
        Builder {
            probe,
            locations_capacity,
            btf_path,
            symbols,
            locations_off,
        }
    }

    /// Why drop locations are off although they were asked for.
    pub(crate) fn locations_off(&self) -> Option<&KallsymsError> {
        self.locations_off.as_ref()
    }

    /// Reads BTF and the reason names, loads and attaches the probe (its log messages go
    /// to the agent's log), and makes the collector.
    pub(crate) fn build(self) -> Result<DropCollector, BuildError> {
        let btf = match self.btf_path {
            Some(path) => Btf::from_file(path),
            None => Btf::from_sys(),
        }?;
        let modules = self
            .btf_path
            .is_none()
            .then(|| Path::new("/sys/kernel/btf"));
        let reasons = DropReasons::load(&btf, modules)?;
        let mut probe = DropProbe::load(&btf, &self.probe)?;
        crate::ebpf_log::spawn(probe.ebpf_mut());
        let host = crate::kernel::netns::current_netns_inode().map_err(BuildError::HostNetns)?;
        let collector = DropCollector::new(probe, reasons, host);
        Ok(match self.symbols {
            Some(k) => collector.with_locations(Locations::new(k, self.locations_capacity)),
            None => collector,
        })
    }
}

//! Link state (speed, duplex, rings, channels) from the ethtool generic-netlink family:
//! [`query_link_state`] sends three dump requests (`ETHTOOL_MSG_LINKMODES_GET`,
//! `ETHTOOL_MSG_RINGS_GET`, `ETHTOOL_MSG_CHANNELS_GET`) over one fresh connection, each
//! answering for every interface that supports it, and [`apply_link_state`] folds each
//! reply into a [`LinkStateTable`]. The `ethtool` crate builds and parses those messages
//! with heap allocations, so this runs in the link-state task, never in a collection
//! cycle.

use std::collections::BTreeMap;

use ethtool::{
    EthtoolAttr, EthtoolChannelAttr, EthtoolHeader, EthtoolLinkModeAttr, EthtoolLinkModeDuplex,
    EthtoolRingAttr,
};
use futures_util::StreamExt;

use crate::filter::NameFilter;

/// `SPEED_UNKNOWN` in `<linux/ethtool.h>`.
const SPEED_UNKNOWN: u32 = u32::MAX;

/// Why a link-state refresh failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkStateError {
    #[error("ethtool netlink: opening the connection: {0}")]
    Connect(String),
    #[error("ethtool netlink: {request} dump: {error}")]
    Request {
        request: &'static str,
        error: String,
    },
    #[error("ethtool link state: {0}")]
    Worker(String),
    #[error("ethtool link state: no refresh within {0:?}")]
    #[cfg(any(test, feature = "internals"))]
    Timeout(std::time::Duration),
}

/// One interface's link state as the kernel reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkState {
    pub(crate) name: String,
    /// Mb/s; `None` when unknown (no carrier, virtual device without a speed).
    pub(crate) speed_mbps: Option<u32>,
    /// `Some(true)` full, `Some(false)` half, `None` unknown.
    pub(crate) duplex_full: Option<bool>,
    /// `(ring, setting, size)`: ring `rx`/`tx`/`rx_mini`/`rx_jumbo`, setting
    /// `current`/`max`. Only rings the driver has.
    pub(crate) rings: Vec<(&'static str, &'static str, u32)>,
    /// `(type, setting, count)`: type `rx`/`tx`/`other`/`combined`, setting
    /// `current`/`max`. Only channel types the driver has.
    pub(crate) channels: Vec<(&'static str, &'static str, u32)>,
}

/// Link state by ifindex.
pub type LinkStateTable = BTreeMap<u32, LinkState>;

fn header(h: &[EthtoolHeader]) -> (Option<u32>, Option<String>) {
    let mut index = None;
    let mut name = None;
    for a in h {
        match a {
            EthtoolHeader::DevIndex(i) => index = Some(*i),
            EthtoolHeader::DevName(n) => name = Some(n.clone()),
            _ => {}
        }
    }
    (index, name)
}

/// What a refresh could not read, beside the (partial) table it returns.
#[derive(Debug, Clone, Default)]
pub(crate) struct Partial {
    /// The first error that is a real failure.
    pub(crate) error: Option<LinkStateError>,
    /// The most messages of one dump that named an interface whose name is not UTF-8
    /// (the `ethtool` crate parses names as `String` and refuses those messages). Not a
    /// failure: such an interface simply has no link state.
    pub(crate) odd_names: u32,
}

/// Whether a decode error is the `ethtool` crate refusing an interface name that is not
/// UTF-8 (its header's `ETHTOOL_A_HEADER_DEV_NAME`), rather than anything else.
fn is_odd_name(e: &ethtool::EthtoolError) -> bool {
    matches!(e, ethtool::EthtoolError::Bug(detail) if detail.contains("ETHTOOL_A_HEADER_DEV_NAME"))
}

/// Reads the link state of every interface whose name `filter` selects, with three
/// dumps over a new ethtool netlink connection. Needs a tokio runtime with IO enabled.
///
/// A message that does not decode costs only its own interface: the rest of the dump is
/// still read. One refused for an interface name that is not UTF-8 is counted in
/// [`Partial::odd_names`]; the first other error is [`Partial::error`].
pub(crate) async fn query_link_state(
    filter: &NameFilter,
) -> Result<(LinkStateTable, Partial), LinkStateError> {
    let (conn, mut handle, _) =
        ethtool::new_connection().map_err(|e| LinkStateError::Connect(e.to_string()))?;
    let mut table = LinkStateTable::new();
    let mut first_error = None;
    let mut odd_names = 0;
    let work = async {
        for request in ["LINKMODES", "RINGS", "CHANNELS"] {
            let mut odd_here = 0;
            let result = match request {
                "LINKMODES" => handle
                    .link_mode()
                    .get(None)
                    .execute()
                    .await
                    .map(|s| s.boxed()),
                "RINGS" => handle.ring().get(None).execute().await.map(|s| s.boxed()),
                _ => handle
                    .channel()
                    .get(None)
                    .execute()
                    .await
                    .map(|s| s.boxed()),
            };
            let mut stream = match result {
                Ok(s) => s,
                Err(e) => {
                    first_error.get_or_insert(LinkStateError::Request {
                        request,
                        error: e.to_string(),
                    });
                    continue;
                }
            };
            while let Some(msg) = stream.next().await {
                let msg = match msg {
                    Ok(m) => m,
                    // One message the crate cannot decode spoils only that interface:
                    // the rest of the dump still comes.
                    Err(e) if is_odd_name(&e) => {
                        odd_here += 1;
                        continue;
                    }
                    Err(e) => {
                        first_error.get_or_insert(LinkStateError::Request {
                            request,
                            error: e.to_string(),
                        });
                        continue;
                    }
                };
                apply_link_state(&mut table, filter, &msg.payload.nlas);
            }
            odd_names = u32::max(odd_names, odd_here);
        }
    };
    // The connection future drives the socket; it is dropped (closing the socket) once
    // the requests are done.
    tokio::select! {
        biased;
        () = work => {}
        () = conn => {
            return Err(LinkStateError::Connect("connection closed".into()));
        }
    }
    Ok((
        table,
        Partial {
            error: first_error,
            odd_names,
        },
    ))
}

/// Folds one reply message (its attributes as the `ethtool` crate decoded them) into
/// `table`, as [`query_link_state`] does with every message of its dumps. Public as the
/// entry point of the fuzz target `ethtool` (`fuzz/`).
pub fn apply_link_state(table: &mut LinkStateTable, filter: &NameFilter, nlas: &[EthtoolAttr]) {
    let (mut index, mut name) = (None, None);
    for nla in nlas {
        let h = match nla {
            EthtoolAttr::LinkMode(EthtoolLinkModeAttr::Header(h))
            | EthtoolAttr::Ring(EthtoolRingAttr::Header(h))
            | EthtoolAttr::Channel(EthtoolChannelAttr::Header(h)) => h,
            _ => continue,
        };
        (index, name) = header(h);
    }
    let (Some(index), Some(name)) = (index, name) else {
        return;
    };
    if !filter.matches(&name) {
        return;
    }
    let state = table.entry(index).or_insert_with(|| LinkState {
        name,
        ..LinkState::default()
    });
    for nla in nlas {
        match nla {
            EthtoolAttr::LinkMode(EthtoolLinkModeAttr::Speed(s)) => {
                state.speed_mbps = (*s != SPEED_UNKNOWN && *s != 0).then_some(*s);
            }
            EthtoolAttr::LinkMode(EthtoolLinkModeAttr::Duplex(d)) => {
                state.duplex_full = match d {
                    EthtoolLinkModeDuplex::Full => Some(true),
                    EthtoolLinkModeDuplex::Half => Some(false),
                    _ => None,
                };
            }
            EthtoolAttr::Ring(r) => {
                let (ring, setting, v) = match r {
                    EthtoolRingAttr::Rx(v) => ("rx", "current", v),
                    EthtoolRingAttr::RxMax(v) => ("rx", "max", v),
                    EthtoolRingAttr::Tx(v) => ("tx", "current", v),
                    EthtoolRingAttr::TxMax(v) => ("tx", "max", v),
                    EthtoolRingAttr::RxMini(v) => ("rx_mini", "current", v),
                    EthtoolRingAttr::RxMiniMax(v) => ("rx_mini", "max", v),
                    EthtoolRingAttr::RxJumbo(v) => ("rx_jumbo", "current", v),
                    EthtoolRingAttr::RxJumboMax(v) => ("rx_jumbo", "max", v),
                    _ => continue,
                };
                state.rings.push((ring, setting, *v));
            }
            EthtoolAttr::Channel(c) => {
                let (kind, setting, v) = match c {
                    EthtoolChannelAttr::RxCount(v) => ("rx", "current", v),
                    EthtoolChannelAttr::RxMax(v) => ("rx", "max", v),
                    EthtoolChannelAttr::TxCount(v) => ("tx", "current", v),
                    EthtoolChannelAttr::TxMax(v) => ("tx", "max", v),
                    EthtoolChannelAttr::OtherCount(v) => ("other", "current", v),
                    EthtoolChannelAttr::OtherMax(v) => ("other", "max", v),
                    EthtoolChannelAttr::CombinedCount(v) => ("combined", "current", v),
                    EthtoolChannelAttr::CombinedMax(v) => ("combined", "max", v),
                    _ => continue,
                };
                state.channels.push((kind, setting, *v));
            }
            _ => {}
        }
    }
}

//! What the agent's values say to a person: the owned data points of one moment
//! ([`points`]: capture, the change between two captures) and the "where packets died" view
//! of them ([`losses`], with its per-workload TCP section, [`tcphealth`]). `snapshot` prints both; `run --summary` prints the view every
//! interval. Nothing here is on the export path, so it may allocate.

pub(crate) mod losses;
pub(crate) mod points;
pub(crate) mod tcphealth;

pub(crate) use points::{Point, capture, capture_matching, deltas, sort};

//! The pod side of a veth: a host interface whose peer lives in another namespace
//! (`IFLA_LINK_NETNSID` in the host's link dump) carries the workload of that namespace.
//!
//! The nsid is the host namespace's own number for the peer namespace. It is matched by
//! asking the kernel (`RTM_GETNSID`) for the nsid of each namespace a process runs in.
//! With the task iterator ([`super::tasks`]) the process is named by its pid
//! (`NETNSA_PID`, which the kernel resolves without the ptrace access check that
//! `/proc/PID/ns/net` needs, so it works as the unit's non-root user), and a second walk
//! confirms that each pid asked about is still in the namespace the first walk saw (a
//! recycled pid cannot lend another namespace's workload). Without it, through a
//! descriptor of the process's `/proc/PID/ns/net` whose inode is checked against the scan.
//!
//! Namespaces bound by `ip netns` or a CNI plugin (`/run/netns`, `/var/run/docker/netns`)
//! with no process in them are matched too, as having no workload.
//!
//! This runs when the link table changes (a veth appears, moves or goes), again every
//! [`PENDING_RESCAN`] for [`PENDING_FOR`] while some veth's peer namespace is not found
//! (kubelet and CNI move the veth before the containers start), and every [`SLOW_RESCAN`]
//! otherwise (a process moved to another cgroup), never per cycle. Between those the links
//! keep the workload they were given, and a steady cycle does nothing but walk the link
//! table and compare two numbers.

use std::{
    collections::{HashMap, HashSet},
    io,
    os::{
        fd::{AsRawFd, OwnedFd, RawFd},
        unix::fs::MetadataExt as _,
    },
    sync::Arc,
    time::{Duration, Instant},
};

use super::{Workload, Workloads};
use crate::fdshortage::{self, Lost};
use crate::kernel::links::{
    self, Attrs, LinkError, Links, Messages, NETNSA_FD, NETNSA_NSID, NLMSG_ERROR, NLMSG_HDRLEN,
    RTGENMSG_LEN, RTM_GETNSID, RTM_NEWNSID, read_i32,
};

/// Resolution runs again after this long while a veth's peer namespace is unknown.
pub(crate) const PENDING_RESCAN: Duration = Duration::from_secs(5);
/// ... for this long after the link table changed (a namespace kept alive only by a
/// descriptor, with no process and no bind mount, is not waited for forever) ...
pub(crate) const PENDING_FOR: Duration = Duration::from_secs(60);
/// ... and after this long otherwise.
pub(crate) const SLOW_RESCAN: Duration = Duration::from_secs(60);
/// Never more often than this, however often the link table changes.
const MIN_GAP: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("nsid lookup: {0}")]
    Socket(#[from] LinkError),
    #[error("nsid lookup of {}: {op}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error("nsid lookup of {}: malformed reply", path.display())]
    Malformed { path: std::path::PathBuf },
}

/// Gives host links whose peer lives in a workload's namespace that workload.
pub struct PeerOwners {
    sock: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
    workloads: Workloads,
    /// Link table generation after the last resolution (including its own changes).
    generation: Option<u64>,
    last: Option<Instant>,
    /// Some veth's nsid matched no namespace (no process, no bind mount) at the last
    /// resolution.
    pending: bool,
    /// When the link table last changed (as seen here): pending nsids are looked for
    /// every [`PENDING_RESCAN`] only for [`PENDING_FOR`] after it.
    changed_at: Option<Instant>,
    /// Resolutions run (for tests and the bench).
    runs: u64,
}

impl PeerOwners {
    /// A resolver for the namespace the calling thread runs in (the host's).
    pub fn new(host_netns: u32) -> Result<PeerOwners, PeerError> {
        let (sock, _) = links::open_socket(0, 0)?;
        Ok(PeerOwners {
            sock,
            seq: 0,
            buf: vec![0; 4096],
            workloads: Workloads::new(host_netns),
            generation: None,
            last: None,
            pending: false,
            changed_at: None,
            runs: 0,
        })
    }

    /// How many resolutions ran.
    #[cfg(feature = "internals")]
    pub fn runs(&self) -> u64 {
        self.runs
    }

    /// Called every cycle after the link table's refresh: resolves when it is due (see
    /// the module documentation), else returns at once.
    pub fn update(&mut self, links: &mut Links) {
        // A host without veths into other namespaces: no /proc scan at all. (A link only
        // holds a workload while it has a peer nsid.)
        if !links.iter().any(|l| l.link_netnsid.is_some()) {
            self.generation = Some(links.generation());
            return;
        }
        let changed = self.generation != Some(links.generation());
        if changed && self.changed_at.is_none_or(|t| t.elapsed() >= MIN_GAP) {
            self.changed_at = Some(Instant::now());
        }
        let waiting = self.pending && self.changed_at.is_some_and(|t| t.elapsed() < PENDING_FOR);
        let due = match self.last.map(|t| t.elapsed()) {
            None => true,
            Some(s) if s < MIN_GAP => false,
            Some(s) => changed || s >= if waiting { PENDING_RESCAN } else { SLOW_RESCAN },
        };
        if !due {
            return;
        }
        self.resolve(links);
    }

    /// Scans `/proc`, asks the nsid of each namespace found, and sets every link's
    /// workload.
    pub fn resolve(&mut self, links: &mut Links) {
        self.runs += 1;
        self.last = Some(Instant::now());
        let wanted: HashSet<i32> = links.iter().filter_map(|l| l.link_netnsid).collect();
        let mut by_nsid: HashMap<i32, Option<Arc<Workload>>> = HashMap::new();
        if !wanted.is_empty() {
            self.workloads.scan();
            let found: Vec<(u32, u32, Arc<Workload>)> = self
                .workloads
                .namespaces()
                .map(|(ns, pid, w)| (ns, pid, w.clone()))
                .collect();
            // The iterator's pids are the kernel's global ones: asked by pid only where they
            // are ours too (not inside a pid namespace, where the /proc path's inode check
            // turns a pid that is not ours into "not found").
            let by_pid = self.workloads.uses_tasks() && crate::kernel::tasks::in_initial_pid_ns();
            // (namespace, pid, nsid, workload) asked by pid, confirmed below.
            let mut asked = Vec::new();
            for (netns, pid, w) in found {
                if by_nsid.len() + asked.len() >= wanted.len() {
                    break;
                }
                let path = self.workloads.proc_root().join(format!("{pid}/ns/net"));
                let nsid = if by_pid {
                    self.nsid_of_pid(pid)
                } else {
                    self.nsid_of(&path, Some(netns))
                };
                match nsid {
                    Ok(Some(id)) if wanted.contains(&id) && by_pid => asked.push((netns, pid, id, w)),
                    Ok(Some(id)) if wanted.contains(&id) => {
                        by_nsid.insert(id, (!w.is_empty()).then_some(w));
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!("{e}"),
                }
            }
            if !asked.is_empty() && self.workloads.walk_again() {
                for (netns, pid, id, w) in asked {
                    if self.workloads.netns_of(pid) == Some(netns) {
                        by_nsid.insert(id, (!w.is_empty()).then_some(w));
                    }
                }
            }
            // Namespaces bound by `ip netns` or a CNI plugin with no process in them (yet):
            // known to have no workload, so not waited for.
            for dir in crate::kernel::netns::BIND_DIRS {
                let Ok(entries) = std::fs::read_dir(dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    if by_nsid.len() == wanted.len() {
                        break;
                    }
                    match self.nsid_of(&entry.path(), None) {
                        Ok(Some(id)) if wanted.contains(&id) => {
                            by_nsid.entry(id).or_insert(None);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!("{e}"),
                    }
                }
            }
        }
        self.pending = wanted.iter().any(|id| !by_nsid.contains_key(id));
        let updates: Vec<(u32, Option<Arc<Workload>>)> = links
            .iter()
            .map(|l| {
                let w = l
                    .link_netnsid
                    .and_then(|id| by_nsid.get(&id).cloned().flatten());
                (l.ifindex, w)
            })
            .collect();
        let mut changed = 0usize;
        for (ifindex, w) in updates {
            if links.set_workload(ifindex, w) {
                changed += 1;
            }
        }
        if changed > 0 {
            tracing::debug!(changed, "veth peers: workloads of host interfaces updated");
        }
        self.generation = Some(links.generation());
    }

    /// The nsid the host gives the namespace file `path` (a process's `ns/net`, a bind
    /// mount) refers to, if that is still `netns` (when given); `None` when the file is
    /// gone or names another namespace, or the namespace has no nsid here.
    fn nsid_of(
        &mut self,
        path: &std::path::Path,
        netns: Option<u32>,
    ) -> Result<Option<i32>, PeerError> {
        let file = match std::fs::File::open(path) {
            Ok(file) => {
                fdshortage::succeeded(Lost::Workload);
                file
            }
            // Gone meanwhile, or no descriptor left (then counted and logged).
            Err(e) => {
                fdshortage::failed(Lost::Workload, &e);
                return Ok(None);
            }
        };
        let same = netns.is_none_or(|netns| {
            file.metadata()
                .is_ok_and(|m| u32::try_from(m.ino()).ok() == Some(netns))
        });
        if !same {
            return Ok(None);
        }
        self.ask(path, NETNSA_FD, file.as_raw_fd() as u32)
    }

    /// The nsid the host gives the namespace process `pid` runs in (`NETNSA_PID`, a pid
    /// of the agent's pid namespace); `None` when the namespace has no nsid here.
    fn nsid_of_pid(&mut self, pid: u32) -> Result<Option<i32>, PeerError> {
        let path = std::path::PathBuf::from(format!("pid {pid}"));
        match self.ask(&path, NETNSA_PID, pid) {
            // The process is gone.
            Err(PeerError::Io { source, .. }) if source.raw_os_error() == Some(libc::ESRCH) => {
                Ok(None)
            }
            r => r,
        }
    }

    /// `RTM_GETNSID` with attribute `attr` = `value`; `path` names the namespace in errors.
    fn ask(
        &mut self,
        path: &std::path::Path,
        attr: u16,
        value: u32,
    ) -> Result<Option<i32>, PeerError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let io = |op, source| PeerError::Io {
            path: path.to_path_buf(),
            op,
            source,
        };
        send_getnsid(self.sock.as_raw_fd(), seq, attr, value)
            .map_err(|e| io("sending RTM_GETNSID", e))?;
        // The reply to this request; older ones (a timed-out request) are skipped.
        for _ in 0..8 {
            let n = links::recv(self.sock.as_raw_fd(), &mut self.buf, 0)
                .map_err(|e| io("receiving RTM_NEWNSID", e))?;
            let data = &self.buf[..n.min(self.buf.len())];
            match parse_reply(data, seq) {
                Reply::Other => continue,
                Reply::Nsid(id) => return Ok(id),
                Reply::Error(0) => return Ok(None),
                Reply::Error(e) => {
                    return Err(io(
                        "RTM_GETNSID",
                        io::Error::from_raw_os_error(e.saturating_neg()),
                    ));
                }
                Reply::Malformed => {
                    return Err(PeerError::Malformed {
                        path: path.to_path_buf(),
                    });
                }
            }
        }
        Ok(None)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// A message of another request.
    Other,
    /// `NETNSA_NSID`; `None` when not assigned (negative).
    Nsid(Option<i32>),
    Error(i32),
    Malformed,
}

/// The first message of a datagram read after an `RTM_GETNSID` request with sequence
/// number `seq`.
fn parse_reply(data: &[u8], seq: u32) -> Reply {
    let Some(Ok(m)) = Messages::new(data).next() else {
        return Reply::Malformed;
    };
    if m.seq != seq {
        return Reply::Other;
    }
    match m.ty {
        NLMSG_ERROR => match m.payload.get(..4) {
            Some(b) => Reply::Error(read_i32(b, 0)),
            None => Reply::Malformed,
        },
        RTM_NEWNSID => {
            let Some(attrs) = m.payload.get(RTGENMSG_LEN..) else {
                return Reply::Malformed;
            };
            for a in Attrs::new(attrs, NLMSG_HDRLEN + RTGENMSG_LEN) {
                match a {
                    Ok((NETNSA_NSID, v)) if v.len() == 4 => {
                        let id = read_i32(v, 0);
                        return Reply::Nsid((id >= 0).then_some(id));
                    }
                    Ok(_) => {}
                    Err(_) => return Reply::Malformed,
                }
            }
            Reply::Malformed
        }
        _ => Reply::Other,
    }
}

/// `NETNSA_PID` (`include/uapi/linux/net_namespace.h`): the namespace of a process.
const NETNSA_PID: u16 = 2;

/// `RTM_GETNSID` for a namespace named by a `u32` attribute (`NETNSA_FD`: a descriptor;
/// `NETNSA_PID`: a process): a `struct rtgenmsg` (`AF_UNSPEC`, padded) and the attribute.
fn send_getnsid(fd: RawFd, seq: u32, attr: u16, value: u32) -> io::Result<()> {
    const ATTR_LEN: usize = 8;
    let mut body = [0u8; RTGENMSG_LEN + ATTR_LEN];
    let a = &mut body[RTGENMSG_LEN..];
    a[0..2].copy_from_slice(&(ATTR_LEN as u16).to_ne_bytes());
    a[2..4].copy_from_slice(&attr.to_ne_bytes());
    a[4..8].copy_from_slice(&value.to_ne_bytes());
    links::send_request(fd, RTM_GETNSID, 0, seq, &body)
}

#[cfg(test)]
mod tests;

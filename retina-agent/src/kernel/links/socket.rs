//! Netlink socket I/O and the dump state machine: opening `NETLINK_ROUTE` sockets, sending
//! requests, receiving datagrams, walking each reply datagram of a dump into the table, and
//! discarding what an abandoned dump left queued.

use std::{
    io, mem,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
};

use super::{
    INITIAL_BUF, LinkError, MAX_BUF, MAX_DRAIN, Malformed, RECV_TIMEOUT,
    parse::{Messages, ParseError, is_link_event, parse_link, parse_stats_msg},
    table::{StatsApplied, Table},
    uapi::{
        IF_STATS_MSG_LEN, IFINFOMSG_LEN, IFLA_STATS_FILTER_LINK_64, NLM_F_DUMP, NLM_F_DUMP_INTR,
        NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, NLMSG_NOOP, NLMSG_OVERRUN,
        RTM_GETLINK, RTM_GETSTATS, RTM_NEWLINK, RTM_NEWSTATS, RTMGRP_LINK, align4, read_i32,
        read_u16, read_u32,
    },
};

/// What a dump asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DumpKind {
    /// `RTM_GETLINK`: every attribute of every interface.
    Links,
    /// `RTM_GETSTATS` with `IFLA_STATS_LINK_64`: counters only.
    Stats,
}

/// State of one dump request while its reply datagrams arrive.
#[derive(Debug)]
pub(super) struct Dump {
    pub(super) kind: DumpKind,
    pub(super) seq: u32,
    pub(super) portid: u32,
    pub(super) netns_inode: u64,
    /// Some message carried `NLM_F_DUMP_INTR`: the list changed while it was dumped.
    pub(super) interrupted: bool,
    /// The first error; the dump is still read to its end.
    pub(super) error: Option<LinkError>,
    /// Stats dump: a message for an ifindex the table does not have.
    pub(super) unknown: bool,
    /// Stats dump: some interface's counters went backwards.
    pub(super) went_back: bool,
    /// A datagram of this length did not fit the receive buffer (its messages are lost).
    pub(super) truncated: Option<usize>,
}

/// What a datagram told about the dump it belongs to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// More datagrams follow.
    More,
    /// `NLMSG_DONE` or the final `NLMSG_ERROR` was seen.
    Done,
    /// The datagram could not be walked to its end (its framing is broken), so whether the
    /// dump ended in it is unknown: discard whatever is still queued.
    Abort,
}

impl Dump {
    pub(super) fn new(kind: DumpKind, seq: u32, portid: u32, netns_inode: u64) -> Dump {
        Dump {
            kind,
            seq,
            portid,
            netns_inode,
            interrupted: false,
            error: None,
            unknown: false,
            went_back: false,
            truncated: None,
        }
    }

    /// Walks one reply datagram of this dump, applying every valid interface message to
    /// `table`.
    pub(super) fn feed(&mut self, table: &mut Table, data: &[u8]) -> Step {
        for m in Messages::new(data) {
            let m = match m {
                Ok(m) => m,
                Err((offset, what)) => {
                    self.error.get_or_insert(LinkError::Malformed {
                        netns_inode: self.netns_inode,
                        offset,
                        what,
                    });
                    return Step::Abort;
                }
            };
            if m.seq != self.seq || m.pid != self.portid {
                // A reply to an earlier, abandoned request.
                continue;
            }
            if m.flags & NLM_F_DUMP_INTR != 0 {
                self.interrupted = true;
            }
            let payload = m.payload;
            match m.ty {
                NLMSG_NOOP => {}
                NLMSG_DONE => {
                    // A dump that failed half-way reports its error here.
                    if let Some(err) = payload.get(..4).map(|b| read_i32(b, 0))
                        && err < 0
                    {
                        self.kernel_error(err.saturating_neg());
                    }
                    return Step::Done;
                }
                NLMSG_ERROR => {
                    let Some(b) = payload.get(..4) else {
                        self.error.get_or_insert(LinkError::Malformed {
                            netns_inode: self.netns_inode,
                            offset: m.at,
                            what: Malformed::ShortPayload {
                                len: payload.len(),
                                need: 4,
                            },
                        });
                        return Step::Done;
                    };
                    let err = read_i32(b, 0);
                    if err != 0 {
                        self.kernel_error(err.saturating_neg());
                    }
                    // An error (or an acknowledgement) ends the request.
                    return Step::Done;
                }
                NLMSG_OVERRUN => {
                    self.kernel_error(libc::ENOBUFS);
                    return Step::Abort;
                }
                RTM_NEWSTATS if self.kind == DumpKind::Stats => match parse_stats_msg(payload) {
                    Ok(msg) => match table.apply_stats(&msg) {
                        StatsApplied::Updated => {}
                        StatsApplied::WentBack => self.went_back = true,
                        StatsApplied::Unknown => self.unknown = true,
                    },
                    Err(e) => self.malformed(table, m.at, e),
                },
                RTM_NEWLINK if self.kind == DumpKind::Links => match parse_link(payload) {
                    Ok(msg) => table.apply(&msg),
                    Err(e) => self.malformed(table, m.at, e),
                },
                _ => {}
            }
        }
        Step::More
    }

    fn kernel_error(&mut self, errno: i32) {
        self.error.get_or_insert(LinkError::Kernel {
            netns_inode: self.netns_inode,
            source: io::Error::from_raw_os_error(errno),
        });
    }

    /// Records a message that does not parse (the first of the dump): named by its
    /// interface when its header could be read, else by its offset in the reply.
    fn malformed(&mut self, table: &Table, at: usize, (ifindex, what): ParseError) {
        let error = match ifindex {
            Some(ifindex) => LinkError::MalformedLink {
                netns_inode: self.netns_inode,
                ifindex,
                name: table.get(ifindex).map(|l| l.name.clone()),
                what,
            },
            None => LinkError::Malformed {
                netns_inode: self.netns_inode,
                offset: at,
                what,
            },
        };
        self.error.get_or_insert(error);
    }
}

/// The sockets of a table, bound to its namespace: one for dumps, one non-blocking and
/// subscribed to `RTNLGRP_LINK`; and the receive buffer they share.
#[derive(Debug)]
pub(super) struct Sockets {
    dump: OwnedFd,
    events: OwnedFd,
    /// The port id the kernel assigned to the dump socket.
    portid: u32,
    seq: u32,
    pub(super) buf: Vec<u8>,
    /// The dump socket may still hold datagrams of an abandoned dump.
    dirty: bool,
}

impl Sockets {
    /// Creates both sockets in the calling thread's namespace.
    pub(super) fn open() -> Result<Sockets, LinkError> {
        let (dump, portid) = open_socket(0, 0)?;
        let (events, _) = open_socket(libc::SOCK_NONBLOCK, RTMGRP_LINK)?;
        Ok(Sockets {
            dump,
            events,
            portid,
            seq: 0,
            buf: vec![0; INITIAL_BUF],
            dirty: false,
        })
    }

    /// Discards what an abandoned dump left queued on the dump socket.
    pub(super) fn discard_abandoned(&mut self) {
        if self.dirty {
            drain(self.dump.as_raw_fd(), &mut self.buf, None);
            self.dirty = false;
        }
    }

    /// Drains the notification socket without waiting; whether any link changed (or
    /// notifications were lost).
    pub(super) fn link_events(&mut self) -> bool {
        let fd = self.events.as_raw_fd();
        let mut changed = false;
        for _ in 0..MAX_DRAIN {
            match recv(fd, &mut self.buf, libc::MSG_DONTWAIT) {
                Ok(n) => {
                    // A cut datagram still had something to say.
                    if n > self.buf.len() || is_link_event(&self.buf[..n]) {
                        changed = true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return changed,
                // ENOBUFS: the queue overflowed and notifications were lost. Anything else
                // is unexpected: be safe.
                Err(_) => changed = true,
            }
        }
        true
    }

    /// Sends one dump request and feeds its replies to `table` (starting a new dump
    /// attempt there). A datagram that did not fit the buffer grows it (the dump is then
    /// marked truncated and its rest discarded).
    pub(super) fn dump(
        &mut self,
        kind: DumpKind,
        table: &mut Table,
        netns_inode: u64,
    ) -> Result<Dump, LinkError> {
        let fd = self.dump.as_raw_fd();
        self.seq = self.seq.wrapping_add(1);
        let mut dump = Dump::new(kind, self.seq, self.portid, netns_inode);
        table.begin_dump();
        let sent = match kind {
            DumpKind::Links => send_dump_request(fd, RTM_GETLINK, dump.seq, &[0; IFINFOMSG_LEN]),
            DumpKind::Stats => {
                let mut body = [0u8; IF_STATS_MSG_LEN];
                body[8..12].copy_from_slice(&IFLA_STATS_FILTER_LINK_64.to_ne_bytes());
                send_dump_request(fd, RTM_GETSTATS, dump.seq, &body)
            }
        };
        sent.map_err(|source| LinkError::Io {
            netns_inode,
            op: match kind {
                DumpKind::Links => "sending RTM_GETLINK",
                DumpKind::Stats => "sending RTM_GETSTATS",
            },
            source,
        })?;
        loop {
            let n = match recv(fd, &mut self.buf, 0) {
                Ok(n) => n,
                Err(e) => {
                    self.dirty = true;
                    return Err(recv_error(netns_inode, e));
                }
            };
            if n > self.buf.len() {
                // The datagram was cut: its messages are lost. Grow, then redo the dump.
                drain(fd, &mut self.buf, Some(dump.seq));
                if n > MAX_BUF {
                    return Err(LinkError::TooLarge {
                        netns_inode,
                        len: n,
                        max: MAX_BUF,
                    });
                }
                let grown = n.next_power_of_two().clamp(INITIAL_BUF, MAX_BUF);
                self.buf.resize(grown, 0);
                dump.truncated = Some(n);
                return Ok(dump);
            }
            match dump.feed(table, &self.buf[..n]) {
                Step::More => {}
                Step::Done => return Ok(dump),
                Step::Abort => {
                    drain(fd, &mut self.buf, Some(dump.seq));
                    return Ok(dump);
                }
            }
        }
    }
}

fn socket_err(op: &'static str) -> LinkError {
    LinkError::Socket {
        op,
        source: io::Error::last_os_error(),
    }
}

/// Creates and binds a `NETLINK_ROUTE` socket in the calling thread's namespace, member of
/// the multicast `groups`, with a [`RECV_TIMEOUT`] receive timeout; returns it with the
/// port id the kernel assigned.
pub(crate) fn open_socket(
    type_flags: libc::c_int,
    groups: u32,
) -> Result<(OwnedFd, u32), LinkError> {
    // SAFETY: plain syscalls on a descriptor we own; the structs are fully initialized.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | type_flags,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            return Err(socket_err("socket(AF_NETLINK)"));
        }
        let sock = OwnedFd::from_raw_fd(fd);
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            mem::size_of::<libc::timeval>() as libc::socklen_t,
        ) != 0
        {
            return Err(socket_err("setsockopt(SO_RCVTIMEO)"));
        }
        let mut addr: libc::sockaddr_nl = mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = groups;
        let addr_len = mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        if libc::bind(fd, (&addr as *const libc::sockaddr_nl).cast(), addr_len) != 0 {
            return Err(socket_err("bind"));
        }
        let mut len = addr_len;
        if libc::getsockname(fd, (&mut addr as *mut libc::sockaddr_nl).cast(), &mut len) != 0 {
            return Err(socket_err("getsockname"));
        }
        Ok((sock, addr.nl_pid))
    }
}

/// Room for the largest request body sent: `struct tcmsg` (20 bytes, qdisc dumps).
const MAX_BODY: usize = 20;

/// Sends a dump request (`NLM_F_DUMP`) of type `ty` whose fixed header is `body`:
/// `RTM_GETLINK` with a zeroed `ifinfomsg` (all interfaces, default attributes, which
/// include `IFLA_STATS64`), `RTM_GETSTATS` with an `if_stats_msg` (no trailing padding,
/// which the kernel would try to parse as attributes), `RTM_GETQDISC` or `RTM_GETTCLASS`
/// with a `tcmsg`.
pub(crate) fn send_dump_request(fd: RawFd, ty: u16, seq: u32, body: &[u8]) -> io::Result<()> {
    send_request(fd, ty, NLM_F_DUMP, seq, body)
}

/// Sends one request to the kernel: a `nlmsghdr` of type `ty` with flags
/// `NLM_F_REQUEST | flags`, sequence number `seq` and port id 0, followed by `body` (the
/// fixed header and attributes, at most [`MAX_BODY`] bytes). Retries on `EINTR`.
pub(crate) fn send_request(
    fd: RawFd,
    ty: u16,
    flags: u16,
    seq: u32,
    body: &[u8],
) -> io::Result<()> {
    if body.len() > MAX_BODY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("netlink request body of {} bytes", body.len()),
        ));
    }
    let len = NLMSG_HDRLEN + body.len();
    let mut buf = [0u8; NLMSG_HDRLEN + MAX_BODY];
    let req = &mut buf[..len];
    req[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&ty.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    req[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0.
    req[NLMSG_HDRLEN..].copy_from_slice(body);
    // SAFETY: sockaddr_nl is plain data; zeroed then filled.
    let mut kernel: libc::sockaddr_nl = unsafe { mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    loop {
        // SAFETY: `req` and `kernel` outlive the call; lengths match.
        let n = unsafe {
            libc::sendto(
                fd,
                req.as_ptr().cast(),
                req.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One `recv` with `MSG_TRUNC`: returns the datagram's real length, which exceeds
/// `buf.len()` when it was cut. Retries on `EINTR`.
pub(crate) fn recv(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe {
            libc::recv(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags | libc::MSG_TRUNC,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn recv_error(netns_inode: u64, e: io::Error) -> LinkError {
    if e.kind() == io::ErrorKind::WouldBlock {
        LinkError::Timeout {
            netns_inode,
            timeout: RECV_TIMEOUT,
        }
    } else {
        LinkError::Io {
            netns_inode,
            op: "receiving the dump",
            source: e,
        }
    }
}

/// Discards queued datagrams without waiting: those of the dump with sequence number `seq`
/// up to its end, or everything if `seq` is `None`. The kernel queues the next part of a
/// dump while the previous one is received, so an empty queue means the dump is over.
pub(crate) fn drain(fd: RawFd, buf: &mut [u8], seq: Option<u32>) {
    for _ in 0..MAX_DRAIN {
        let Ok(n) = recv(fd, buf, libc::MSG_DONTWAIT) else {
            return;
        };
        let Some(dump_seq) = seq else { continue };
        let data = &buf[..n.min(buf.len())];
        // Headers only, without checking that each message fits: in a datagram cut by the
        // buffer, the headers that fit still tell whether the dump ended.
        let mut off = 0;
        while data.len() - off >= NLMSG_HDRLEN {
            let len = read_u32(data, off) as usize;
            let ty = read_u16(data, off + 4);
            let seq = read_u32(data, off + 8);
            if len < NLMSG_HDRLEN {
                break;
            }
            if seq == dump_seq && (ty == NLMSG_DONE || ty == NLMSG_ERROR) {
                return;
            }
            off = off.saturating_add(align4(len));
            if off > data.len() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests;

#!/usr/bin/env python3
"""Captures the seed corpus of the fuzz targets from this machine's kernel (run as root).

Everything written is real: files read from procfs and sysfs, reply datagrams received
from rtnetlink and ethtool generic-netlink sockets, SIOCETHTOOL reply buffers, a BTF
excerpt re-encoded from /sys/kernel/btf/vmlinux (see btf_excerpt.py) and an OTLP answer
from a real collector. Usage: capture.py OUT_DIR [IFACE...] (default eth0 lo).
The container format of the multi-part targets is described in fuzz/README.md: records of
one tag byte, a little-endian u16 length and that many bytes.
"""
import ctypes, fcntl, os, socket, struct, sys

OUT = sys.argv[1]
IFACES = sys.argv[2:] or ["eth0", "lo"]


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
    print(f"{target}/{name}: {len(data)} bytes")


def record(tag, data):
    assert len(data) < 65536
    return struct.pack("<BH", tag, len(data)) + data


def read(path):
    with open(path, "rb") as f:
        return f.read()


# ---- netlink ----
NLM_F_REQUEST, NLM_F_DUMP = 1, 0x300
NLMSG_DONE, NLMSG_ERROR = 3, 2


def dump(proto, ty, body, seq, bufsize=65536):
    """Sends one dump request; returns the reply datagrams up to NLMSG_DONE."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, proto)
    s.bind((0, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.send(struct.pack("=LHHLL", 16 + len(body), ty, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
    out = []
    while True:
        d = s.recv(bufsize)
        out.append(d)
        off, done = 0, False
        while off + 16 <= len(d):
            ln, t = struct.unpack_from("=LH", d, off)
            if t in (NLMSG_DONE, NLMSG_ERROR):
                done = True
            off += (ln + 3) & ~3
        if done:
            s.close()
            return out


def genl_family(name):
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 16)
    s.bind((0, 0))
    n = name.encode() + b"\0"
    attr = struct.pack("=HH", 4 + len(n), 2) + n + b"\0" * ((4 - len(n) % 4) % 4)
    body = struct.pack("=BBH", 3, 1, 0) + attr  # CTRL_CMD_GETFAMILY, version 1
    s.send(struct.pack("=LHHLL", 16 + len(body), 0x10, NLM_F_REQUEST, 1, 0) + body)
    d = s.recv(65536)
    off = 16 + 4
    while off + 4 <= len(d):
        ln, ty = struct.unpack_from("=HH", d, off)
        if ty == 1:  # CTRL_ATTR_FAMILY_ID
            return struct.unpack_from("=H", d, off + 4)[0]
        off += (ln + 3) & ~3
    raise SystemExit(f"no genetlink family {name}")


def rtnetlink():
    links = dump(socket.NETLINK_ROUTE, 18, b"\0" * 16, 1)  # RTM_GETLINK
    stats = dump(socket.NETLINK_ROUTE, 94, struct.pack("=BBHLL", 0, 0, 0, 0, 1), 2)  # RTM_GETSTATS, IFLA_STATS_LINK_64
    qdiscs = dump(socket.NETLINK_ROUTE, 38, b"\0" * 20, 3)  # RTM_GETQDISC
    classes = []
    for idx in sorted({struct.unpack_from("=i", d, off + 16 + 4)[0] for d in qdiscs for off in offsets(d) if struct.unpack_from("=H", d, off + 4)[0] == 36}):
        c = dump(socket.NETLINK_ROUTE, 42, struct.pack("=BBHiLLL", 0, 0, 0, idx, 0, 0, 0), 10 + idx)  # RTM_GETTCLASS
        if any(struct.unpack_from("=H", d, o + 4)[0] == 40 for d in c for o in offsets(d)):
            classes.append(c)
    # Tags: 0 link dump, 1 stats dump, 2 qdisc dump, 3 class dump (one record per datagram).
    data = b"".join(record(0, d) for d in links) + b"".join(record(1, d) for d in stats)
    data += b"".join(record(2, d) for d in qdiscs)
    for c in classes:
        data += b"".join(record(3, d) for d in c)
    write("rtnetlink", "host-links-stats-qdiscs-classes", data)
    write("rtnetlink", "host-links", b"".join(record(0, d) for d in links))
    write("rtnetlink", "host-stats", b"".join(record(0, d) for d in links) + b"".join(record(1, d) for d in stats))


def offsets(d):
    off = 0
    while off + 16 <= len(d):
        ln = struct.unpack_from("=L", d, off)[0]
        if ln < 16:
            return
        yield off
        off += (ln + 3) & ~3


# ---- ethtool ----
SIOCETHTOOL = 0x8946
libc = ctypes.CDLL(None, use_errno=True)


def ethtool_ioctl(ifname, buf):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ifr = struct.pack("16sP16x", ifname.encode(), ctypes.addressof(buf))
    ifr = ctypes.create_string_buffer(ifr, 40)
    r = libc.ioctl(s.fileno(), SIOCETHTOOL, ifr)
    s.close()
    if r < 0:
        raise OSError(ctypes.get_errno(), f"SIOCETHTOOL on {ifname}")


def ethtool(ifaces):
    fam = genl_family("ethtool")
    for ifname in ifaces:
        sset = ctypes.create_string_buffer(struct.pack("=LLQL", 0x37, 0, 1 << 1, 0), 20)  # GSSET_INFO
        try:
            ethtool_ioctl(ifname, sset)
        except OSError as e:
            print(f"skipping {ifname}: {e}")
            continue
        n = struct.unpack_from("=L", sset.raw, 16)[0]
        if n == 0:
            print(f"skipping {ifname}: no driver statistics")
            continue
        names = ctypes.create_string_buffer(struct.pack("=LLL", 0x1B, 1, n) + b"\0" * (32 * n))
        ethtool_ioctl(ifname, names)
        stats = ctypes.create_string_buffer(struct.pack("=LL", 0x1D, n) + b"\0" * (8 * n))
        ethtool_ioctl(ifname, stats)
        stats2 = ctypes.create_string_buffer(struct.pack("=LL", 0x1D, n) + b"\0" * (8 * n))
        ethtool_ioctl(ifname, stats2)
        # Tags: 0 GSTRINGS reply, 1 GSTATS reply, 2 genetlink datagram.
        write("ethtool", f"{ifname}-gstrings-gstats", record(0, names.raw) + record(1, stats.raw) + record(1, stats2.raw))
    replies = b""
    for cmd, hdr_attr in ((4, 1), (15, 1), (17, 1)):  # LINKMODES_GET, RINGS_GET, CHANNELS_GET; *_HEADER = 1
        hdr = struct.pack("=HH", 4, 0x8000 | hdr_attr)  # an empty nested header
        body = struct.pack("=BBH", cmd, 1, 0) + hdr
        for d in dump(16, fam, body, 20 + cmd):
            replies += record(2, d)
            write("ethtool", f"genl-cmd{cmd}-{len(replies)}", record(2, d))
    write("ethtool", "genl-linkmodes-rings-channels", replies)


def main():
    for name, path in (("netstat", "/proc/net/netstat"), ("snmp", "/proc/net/snmp"), ("snmp6", "/proc/net/snmp6"),
                       ("softnet_stat", "/proc/net/softnet_stat"), ("nf_conntrack", "/proc/net/stat/nf_conntrack"),
                       ("cpu-online", "/sys/devices/system/cpu/online"), ("cpu-possible", "/sys/devices/system/cpu/possible"),
                       ("nf_conntrack_count", "/proc/sys/net/netfilter/nf_conntrack_count")):
        tag = {"netstat": 0, "snmp": 1, "snmp6": 2, "softnet_stat": 3, "nf_conntrack": 4}.get(name, 5 if name.startswith("cpu") else 6)
        try:
            data = read(path)
        except OSError as e:
            print(f"skipping {path}: {e}")
            continue
        # Tags: 0 netstat, 1 snmp, 2 snmp6, 3 softnet_stat, 4 nf_conntrack, 5 CPU list,
        # 6 one-number sysctl; a file twice is two collection cycles.
        write("procfs", name, record(tag, data) + record(tag, data))
    rtnetlink()
    ethtool(IFACES)


main()

#!/usr/bin/env python3
"""Writes a small, self-contained BTF blob made of real type records of a kernel's BTF.

Usage: btf_excerpt.py [VMLINUX_BTF] OUT. The records kept are those the agent reads
(`struct sk_buff`, `net_device`, `sock`, `net`, `enum skb_drop_reason`, the
`btf_trace_kfree_skb` typedef, every `*_drop_reason` enum) and, transitively, every type
they refer to that is anonymous or a typedef, pointer, qualifier or function prototype.
Other references (named member types) become `void` (id 0), so the blob stays a few tens of
kilobytes instead of the kernel's megabytes. Names are copied into a new string section.
"""
import struct, sys

src = sys.argv[1] if len(sys.argv) > 2 else "/sys/kernel/btf/vmlinux"
out = sys.argv[-1]
data = open(src, "rb").read()
magic, ver, flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", data)
assert magic == 0xEB9F
types_at, strs_at = hdr_len + type_off, hdr_len + str_off
strings = data[strs_at:strs_at + str_len]


def name(off):
    return strings[off:strings.index(b"\0", off)].decode()


# kind -> (extra bytes fixed, bytes per vlen)
EXTRA = {1: (4, 0), 2: (0, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 7: (0, 0), 8: (0, 0),
         9: (0, 0), 10: (0, 0), 11: (0, 0), 12: (0, 0), 13: (0, 8), 14: (4, 0), 15: (0, 12),
         16: (0, 0), 17: (4, 0), 18: (0, 0), 19: (0, 12)}
types = [None]  # id 0 is void
at = types_at
while at < types_at + type_len:
    name_off, info, size_or_type = struct.unpack_from("<III", data, at)
    kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
    fixed, per = EXTRA[kind]
    end = at + 12 + fixed + per * vlen
    types.append((kind, name_off, vlen, data[at:end]))
    at = end

by_name = {}
for i, t in enumerate(types[1:], 1):
    if t[1]:
        by_name.setdefault((t[0], name(t[1])), i)
roots = [by_name[(4, n)] for n in ("sk_buff", "net_device", "sock", "net")]
roots.append(by_name[(6, "skb_drop_reason")])
roots.append(by_name[(8, "btf_trace_kfree_skb")])
roots += [i for (k, n), i in by_name.items() if k in (6, 19) and n.endswith("_drop_reason")]


def refs(t):
    """(byte offset in the record, referenced id) of every type reference."""
    kind, _, vlen, rec = t
    out = []
    if kind in (2, 8, 9, 10, 11, 12, 14, 17, 18):
        out.append((8, struct.unpack_from("<I", rec, 8)[0]))
    if kind == 3:
        out += [(12, struct.unpack_from("<I", rec, 12)[0]), (16, struct.unpack_from("<I", rec, 16)[0])]
    if kind in (4, 5):
        out += [(12 + 12 * j + 4, struct.unpack_from("<I", rec, 12 + 12 * j + 4)[0]) for j in range(vlen)]
    if kind == 13:
        out.append((8, struct.unpack_from("<I", rec, 8)[0]))
        out += [(12 + 8 * j + 4, struct.unpack_from("<I", rec, 12 + 8 * j + 4)[0]) for j in range(vlen)]
    return out


keep, todo = set(), list(roots)
while todo:
    i = todo.pop()
    if i == 0 or i in keep:
        continue
    keep.add(i)
    for _, r in refs(types[i]):
        t = types[r] if r else None
        if t and (t[1] == 0 or t[0] in (2, 8, 9, 10, 11, 13, 18) or r in roots):
            todo.append(r)

order = sorted(keep)
new_id = {old: n for n, old in enumerate(order, 1)}
strtab, str_index = bytearray(b"\0"), {"": 0}


def intern(off):
    s = name(off)
    if s not in str_index:
        str_index[s] = len(strtab)
        strtab.extend(s.encode() + b"\0")
    return str_index[s]


blob = bytearray()
for old in order:
    kind, name_off, vlen, rec = types[old]
    rec = bytearray(rec)
    struct.pack_into("<I", rec, 0, intern(name_off))
    for off, r in refs(types[old]):
        struct.pack_into("<I", rec, off, new_id.get(r, 0))
    if kind in (4, 5, 6, 19):  # member / enumerator names
        stride = {4: 12, 5: 12, 6: 8, 19: 12}[kind]
        for j in range(vlen):
            o = 12 + stride * j
            struct.pack_into("<I", rec, o, intern(struct.unpack_from("<I", rec, o)[0]))
    if kind == 13:
        for j in range(vlen):
            o = 12 + 8 * j
            struct.pack_into("<I", rec, o, intern(struct.unpack_from("<I", rec, o)[0]))
    blob += rec
header = struct.pack("<HBBIIIII", 0xEB9F, ver, flags, 24, 0, len(blob), len(blob), len(strtab))
open(out, "wb").write(header + blob + strtab)
print(f"{out}: {len(order)} types, {len(header) + len(blob) + len(strtab)} bytes")

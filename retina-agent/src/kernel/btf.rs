//! A small reader for the kernel's BTF (`/sys/kernel/btf/vmlinux` and module BTF).
//!
//! The agent needs two things from BTF: the byte offsets of a few structure fields (so the
//! eBPF program works on any kernel build) and the names of enum values (so drop reasons
//! carry the running kernel's names). This reader parses just enough of the format for
//! that, checks every length against the data, and never panics on malformed input.

use std::{
    collections::HashSet,
    ops::Range,
    path::{Path, PathBuf},
    sync::Arc,
};

/// The BTF file of the running kernel.
pub(crate) const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "cannot read BTF {path}: {source} (the kernel needs CONFIG_DEBUG_INFO_BTF=y; see `retina-agent check`)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("malformed BTF in {path}: {reason}")]
    Malformed { path: PathBuf, reason: &'static str },
    #[error("BTF {path} has no {what}")]
    NotFound { path: PathBuf, what: String },
}

/// One parsed type: its kind, name and where its kind-specific data lies.
#[derive(Clone, Debug)]
struct Type {
    kind: u32,
    name_off: u32,
    vlen: u32,
    kind_flag: bool,
    /// `size` for INT/STRUCT/UNION/ENUM/DATASEC, `type` for the reference kinds.
    size_or_type: u32,
    /// Byte range of the data following the common header.
    extra: Range<usize>,
}

/// A parsed BTF blob; module BTF is split BTF on top of `vmlinux`.
pub struct Btf {
    path: PathBuf,
    data: Arc<Vec<u8>>,
    types: Vec<Type>,
    strings: Range<usize>,
    /// For split BTF: number of types and string bytes in the base.
    base_types: u32,
    base_str_len: u32,
    /// For split BTF: the base's data and string section, which its names may point into.
    base_strings: Option<(Arc<Vec<u8>>, Range<usize>)>,
}

/// A member of a struct or union.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub(crate) name: String,
    pub(crate) type_id: u32,
    /// Offset from the start of the containing type, in bits.
    pub(crate) bit_offset: u32,
}

/// One value of an enum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnumValue {
    pub(crate) name: String,
    pub(crate) value: u64,
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at.checked_add(4)?)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl Btf {
    /// Reads and parses the running kernel's BTF.
    pub fn from_sys() -> Result<Self, BtfError> {
        Self::from_file(VMLINUX_BTF)
    }

    pub(crate) fn from_file(path: impl AsRef<Path>) -> Result<Self, BtfError> {
        let path = path.as_ref().to_path_buf();
        let data =
            crate::fsutil::read_regular(&path, crate::fsutil::BTF_MAX_BYTES).map_err(|source| {
                BtfError::Read {
                    path: path.clone(),
                    source,
                }
            })?;
        Self::parse(path, data, None)
    }

    /// Parses module BTF (split BTF) whose type ids and strings continue `base`'s.
    pub(crate) fn from_split_file(path: impl AsRef<Path>, base: &Btf) -> Result<Self, BtfError> {
        let path = path.as_ref().to_path_buf();
        let data =
            crate::fsutil::read_regular(&path, crate::fsutil::BTF_MAX_BYTES).map_err(|source| {
                BtfError::Read {
                    path: path.clone(),
                    source,
                }
            })?;
        Self::parse(path, data, Some(base))
    }

    /// Parses a BTF blob; `path` only names it in errors.
    pub fn parse(path: PathBuf, data: Vec<u8>, base: Option<&Btf>) -> Result<Self, BtfError> {
        let bad = |reason| BtfError::Malformed {
            path: path.clone(),
            reason,
        };
        if data.len() < 24 {
            return Err(bad("shorter than the BTF header"));
        }
        let magic = u16::from_le_bytes([data[0], data[1]]);
        if magic != MAGIC {
            return Err(bad(if magic == MAGIC.swap_bytes() {
                "big-endian BTF is not supported"
            } else {
                "bad magic number"
            }));
        }
        let field = |at| read_u32(&data, at).ok_or_else(|| bad("truncated header"));
        let hdr_len = field(4)? as usize;
        let type_off = field(8)? as usize;
        let type_len = field(12)? as usize;
        let str_off = field(16)? as usize;
        let str_len = field(20)? as usize;
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off)?;
            let end = start.checked_add(len)?;
            (end <= data.len()).then_some(start..end)
        };
        let type_range =
            section(type_off, type_len).ok_or_else(|| bad("type section out of bounds"))?;
        let strings =
            section(str_off, str_len).ok_or_else(|| bad("string section out of bounds"))?;

        let mut types = Vec::new();
        let mut at = type_range.start;
        while at < type_range.end {
            let name_off = field(at)?;
            let info = field(at + 4)?;
            let size_or_type = field(at + 8)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = info & 0xffff;
            let kind_flag = info >> 31 == 1;
            let start = at + 12;
            let extra_len = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen as usize,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen as usize,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                _ => return Err(bad("unknown type kind")),
            };
            let end = start + extra_len;
            if end > type_range.end {
                return Err(bad("type record runs past the type section"));
            }
            types.push(Type {
                kind,
                name_off,
                vlen,
                kind_flag,
                size_or_type,
                extra: start..end,
            });
            at = end;
        }
        let (base_types, base_str_len) = match base {
            Some(b) => (b.type_count(), b.str_len()),
            None => (0, 0),
        };
        Ok(Btf {
            path,
            data: Arc::new(data),
            types,
            strings,
            base_types,
            base_str_len,
            base_strings: base.map(|b| (b.data.clone(), b.strings.clone())),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Number of type ids this BTF defines, the base's included (id 0 is `void`).
    fn type_count(&self) -> u32 {
        self.base_types + self.types.len() as u32 + u32::from(self.base_types == 0)
    }

    fn str_len(&self) -> u32 {
        self.base_str_len + self.strings.len() as u32
    }

    fn string(&self, off: u32) -> &str {
        // In split BTF, offsets below the base's string length point into the base.
        let (data, section, off) = match (off.checked_sub(self.base_str_len), &self.base_strings) {
            (Some(own), _) => (&self.data, &self.strings, own),
            (None, Some((data, section))) => (data, section, off),
            (None, None) => return "",
        };
        let start = section.start + off as usize;
        let Some(rest) = data.get(start..section.end) else {
            return "";
        };
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        let first = if self.base_types == 0 {
            1
        } else {
            self.base_types
        };
        self.types.get(id.checked_sub(first)? as usize)
    }

    fn ids(&self) -> impl Iterator<Item = (u32, &Type)> {
        let first = if self.base_types == 0 {
            1
        } else {
            self.base_types
        };
        self.types
            .iter()
            .enumerate()
            .map(move |(i, t)| (first + i as u32, t))
    }

    fn not_found(&self, what: String) -> BtfError {
        BtfError::NotFound {
            path: self.path.clone(),
            what,
        }
    }

    /// Id of the named type of the given kind (struct, union, enum, typedef).
    fn find(&self, kind: u32, name: &str) -> Option<u32> {
        self.ids()
            .find(|(_, t)| t.kind == kind && self.string(t.name_off) == name)
            .map(|(id, _)| id)
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.ty(id) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.size_or_type
                }
                _ => break,
            }
        }
        id
    }

    /// Members of a struct or union (anonymous members included, unnamed).
    pub fn members(&self, id: u32) -> Vec<Member> {
        let Some(t) = self.ty(id) else {
            return Vec::new();
        };
        if t.kind != KIND_STRUCT && t.kind != KIND_UNION {
            return Vec::new();
        }
        (0..t.vlen as usize)
            .filter_map(|i| {
                let at = t.extra.start + 12 * i;
                let name_off = read_u32(&self.data, at)?;
                let type_id = read_u32(&self.data, at + 4)?;
                let offset = read_u32(&self.data, at + 8)?;
                Some(Member {
                    name: self.string(name_off).to_string(),
                    type_id,
                    // With kind_flag the top 8 bits hold a bitfield size.
                    bit_offset: if t.kind_flag {
                        offset & 0xff_ffff
                    } else {
                        offset
                    },
                })
            })
            .collect()
    }

    /// Searches `id`'s members, descending into anonymous structs and unions, for `name`;
    /// returns the member's type and its bit offset from the start of `id`.
    fn member_in(&self, id: u32, name: &str) -> Option<(u32, u32)> {
        self.member_search(id, name, 0, &mut HashSet::new())
    }

    /// [`Btf::member_in`]'s walk. `searched` holds the types already searched for `name`
    /// on this walk: one that did not have it will not have it the next time either, and
    /// a blob whose anonymous members name the same types over and over (a fuzzer found
    /// one: 19 KB, over 10 s of search) is walked once per type, not once per path.
    fn member_search(
        &self,
        id: u32,
        name: &str,
        depth: u32,
        searched: &mut HashSet<u32>,
    ) -> Option<(u32, u32)> {
        let id = self.resolve(id);
        if depth > 8 || !searched.insert(id) {
            return None;
        }
        let members = self.members(id);
        if let Some(m) = members.iter().find(|m| m.name == name) {
            return Some((m.type_id, m.bit_offset));
        }
        // An offset past u32 (only a malformed blob has one) finds nothing.
        members.iter().filter(|m| m.name.is_empty()).find_map(|m| {
            self.member_search(m.type_id, name, depth + 1, searched)
                .and_then(|(ty, off)| Some((ty, off.checked_add(m.bit_offset)?)))
        })
    }

    /// Byte offset of a dotted field path inside `struct NAME`, e.g.
    /// `field_offset("net_device", "nd_net.net")`. Anonymous unions and structs on the
    /// way are looked through, as C does.
    pub fn field_offset(&self, struct_name: &str, path: &str) -> Result<u32, BtfError> {
        let id = self
            .find(KIND_STRUCT, struct_name)
            .ok_or_else(|| self.not_found(format!("struct {struct_name}")))?;
        let mut ty = id;
        let mut bits = 0u32;
        for part in path.split('.') {
            let (member_ty, off) = self
                .member_in(ty, part)
                .ok_or_else(|| self.not_found(format!("field {struct_name}.{path}")))?;
            bits = bits.checked_add(off).ok_or_else(|| {
                self.not_found(format!(
                    "field {struct_name}.{path} at an offset that fits 32 bits"
                ))
            })?;
            ty = member_ty;
        }
        if !bits.is_multiple_of(8) {
            return Err(self.not_found(format!("byte-aligned field {struct_name}.{path}")));
        }
        Ok(bits / 8)
    }

    /// Size in bytes of `struct NAME`.
    #[cfg(any(test, feature = "internals"))]
    pub fn struct_size(&self, name: &str) -> Option<u32> {
        self.find(KIND_STRUCT, name)
            .and_then(|id| self.ty(id))
            .map(|t| t.size_or_type)
    }

    /// Values of `enum NAME` (32- or 64-bit), or `None` when the enum does not exist.
    pub(crate) fn enum_values(&self, name: &str) -> Option<Vec<EnumValue>> {
        let (_, t) = self.ids().find(|(_, t)| {
            matches!(t.kind, KIND_ENUM | KIND_ENUM64) && self.string(t.name_off) == name
        })?;
        Some(self.values_of(t))
    }

    /// Every named enum whose name satisfies `pred`, with its values.
    pub fn enums_matching(&self, pred: impl Fn(&str) -> bool) -> Vec<(String, Vec<EnumValue>)> {
        self.ids()
            .filter(|(_, t)| matches!(t.kind, KIND_ENUM | KIND_ENUM64))
            .filter(|(_, t)| pred(self.string(t.name_off)))
            .map(|(_, t)| (self.string(t.name_off).to_string(), self.values_of(t)))
            .collect()
    }

    fn values_of(&self, t: &Type) -> Vec<EnumValue> {
        let stride = if t.kind == KIND_ENUM { 8 } else { 12 };
        (0..t.vlen as usize)
            .filter_map(|i| {
                let at = t.extra.start + stride * i;
                let name = self.string(read_u32(&self.data, at)?).to_string();
                let lo = read_u32(&self.data, at + 4)?;
                let value = if t.kind == KIND_ENUM {
                    // Unsigned enums (kind_flag clear means signed, but drop reasons are
                    // never negative); keep the 32-bit pattern.
                    u64::from(lo)
                } else {
                    u64::from(lo) | (u64::from(read_u32(&self.data, at + 8)?) << 32)
                };
                Some(EnumValue { name, value })
            })
            .collect()
    }

    /// Number of arguments of the tracepoint `NAME` as seen by raw tracepoint programs,
    /// from the `btf_trace_NAME` typedef (a pointer to a function whose first parameter is
    /// the context).
    pub fn tracepoint_args(&self, name: &str) -> Option<u32> {
        let typedef = self.find(KIND_TYPEDEF, &format!("btf_trace_{name}"))?;
        let ptr = self.ty(self.resolve(typedef))?;
        if ptr.kind != KIND_PTR {
            return None;
        }
        let proto = self.ty(ptr.size_or_type)?;
        (proto.kind == KIND_FUNC_PROTO).then(|| proto.vlen.saturating_sub(1))
    }
}

#[cfg(test)]
pub(crate) mod tests;

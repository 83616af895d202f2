//! Shared by the fuzz targets: the record container of the multi-part inputs.
//!
//! An input is a sequence of records: one tag byte, a little-endian `u16` length, then that
//! many bytes (a record cut short by the end of the input takes what is left). The tag says
//! what the bytes are (a datagram of some dump, a file of some kind); each target documents
//! its tags. `fuzz/tools/capture.py` writes real data in this format.

/// The records of `data`, in order.
pub fn records(data: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut rest = data;
    while let [tag, lo, hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        out.push((*tag, &tail[..len]));
        rest = &tail[len..];
    }
    out
}

/// Consecutive records with the same tag, grouped (a dump's datagrams).
pub fn runs<'a>(records: &[(u8, &'a [u8])]) -> Vec<(u8, Vec<&'a [u8]>)> {
    let mut out: Vec<(u8, Vec<&'a [u8]>)> = Vec::new();
    for &(tag, bytes) in records {
        match out.last_mut() {
            Some((t, group)) if *t == tag => group.push(bytes),
            _ => out.push((tag, vec![bytes])),
        }
    }
    out
}

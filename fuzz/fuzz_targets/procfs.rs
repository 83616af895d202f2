//! The procfs and sysfs parsers: `/proc/net/netstat`, `snmp`, `snmp6` (cycle after cycle,
//! so layout changes are exercised), `/proc/net/softnet_stat`, `/proc/net/stat/nf_conntrack`,
//! CPU lists (`/sys/devices/system/cpu/online`) and one-number sysctls.
//!
//! Input: records (see `src/lib.rs`); tag % 7: 0 netstat, 1 snmp, 2 snmp6, 3 softnet_stat,
//! 4 nf_conntrack, 5 a CPU list, 6 a sysctl. Records of tags 0-2 are successive reads
//! of their file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retina_agent::{
    collectors::{conntrack, netstat, procfile, softnet},
    filter::NameFilter,
};
use retina_agent_fuzz::records;

fuzz_target!(|data: &[u8]| {
    let filter = NameFilter::all();
    let mut files: [Vec<&[u8]>; 3] = Default::default();
    let mut rows = Vec::new();
    let mut values = Vec::new();
    let mut cpus = Vec::new();
    for (tag, bytes) in records(data) {
        match tag % 7 {
            t @ 0..=2 => files[usize::from(t)].push(bytes),
            3 => {
                if softnet::parse(bytes, &mut rows).is_ok() {
                    assert!(!rows.is_empty());
                    let columns = rows[0].columns;
                    assert!(rows.iter().all(|r| r.columns == columns));
                }
            }
            4 => {
                if let Ok((header, columns)) = conntrack::parse_stats(bytes, &mut values) {
                    // The collector indexes values[row * columns + column] for every
                    // column of the header and every full row.
                    assert!(columns > 0 && values.len().is_multiple_of(columns));
                    if let Ok(names) = conntrack::column_names(header) {
                        assert_eq!(names.len(), columns);
                    }
                }
            }
            5 => {
                if procfile::parse_cpu_list(bytes, &mut cpus).is_some() {
                    assert!(cpus.len() <= bytes.len().div_ceil(2) * ((1 << 16) + 1));
                }
            }
            _ => {
                let _ = procfile::dec_u64(bytes.trim_ascii());
                let _ = procfile::hex_u64(bytes.trim_ascii());
            }
        }
    }
    for (i, cycles) in files.iter().enumerate() {
        if !cycles.is_empty() {
            for r in netstat::parse_cycles(i == 2, cycles, &filter) {
                if let Err(e) = r {
                    let _ = e.to_string();
                }
            }
        }
    }
});

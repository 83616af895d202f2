//! The configuration: TOML text parsed, then resolved and checked as `check` and `run`
//! do (file, then environment), and the command-line value parsers.
//!
//! Input: the file's text, then (after the first NUL byte, optional) environment lines
//! `NAME=VALUE`, which the environment lookup answers from (the last one of a name wins;
//! a value that is not UTF-8 goes through the same UTF-8 check as the process environment).
#![no_main]

use std::{ffi::OsString, os::unix::ffi::OsStringExt as _, path::Path};

use libfuzzer_sys::fuzz_target;
use retina_agent::config::{self, Overrides, limits};

fuzz_target!(|data: &[u8]| {
    let (text, env) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let raw_vars: Vec<(OsString, OsString)> = env
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let eq = line.iter().position(|&b| b == b'=')?;
            Some((
                OsString::from_vec(line[..eq].to_vec()),
                OsString::from_vec(line[eq + 1..].to_vec()),
            ))
        })
        .collect();
    if config::check_env_utf8(raw_vars.clone()).is_err() {
        return;
    }
    let vars: Vec<(String, String)> = raw_vars
        .into_iter()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let lookup = |name: &str| {
        vars.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };

    if let Ok(s) = std::str::from_utf8(text) {
        // The flag parsers see single values; the whole text is one.
        let _ = retina_agent::duration::parse(s);
        let _ = config::parse_interval(s);
        if let Ok(e) = config::parse_endpoint(s) {
            let _ = config::endpoint_host_port(&e);
        }
        let _ = config::log_filter(s);
    }
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let file = match config::parse(text, Path::new("fuzz.toml")) {
        Ok(f) => Some(f),
        Err(e) => {
            // The message names the file and, where known, the key and position.
            let message = e.to_string();
            assert!(message.starts_with("fuzz.toml: "), "{message}");
            None
        }
    };
    if let Ok(c) = config::resolve(file, &lookup, &Overrides::default()) {
        // Whatever passes resolution is in its documented range: no later arithmetic on
        // it can overflow.
        limits::duration(c.interval, limits::INTERVAL).expect("resolved interval");
        limits::duration(c.export.timeout, limits::EXPORT_TIMEOUT).expect("resolved timeout");
        limits::duration(c.ethtool.link_state_interval, limits::LINK_STATE_INTERVAL)
            .expect("resolved link_state_interval");
        limits::size(c.drops.map_entries, limits::MAP_ENTRIES).expect("resolved map_entries");
    }
});

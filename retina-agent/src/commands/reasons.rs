//! `retina-agent reasons`: the kernel's drop reasons (`enum skb_drop_reason` from BTF), as
//! the drop series name them.

use std::{fmt::Write as _, path::Path, process::ExitCode};

use anyhow::{Context as _, Result};

use super::emit;
use crate::{cli::Format, collectors::drops::reasons::DropReasons, kernel::btf::Btf};

/// Lists the reasons of the running kernel, or of the BTF file `btf_path`.
pub(crate) fn command(btf_path: Option<&Path>, format: Format) -> Result<ExitCode> {
    let btf = match btf_path {
        Some(p) => Btf::from_file(p)?,
        None => Btf::from_sys()?,
    };
    // Module BTF only belongs to the running kernel.
    let modules = btf_path.is_none().then(|| Path::new("/sys/kernel/btf"));
    let reasons = DropReasons::load(&btf, modules)?;
    let text = match format {
        Format::Json => {
            let list: Vec<serde_json::Value> = reasons
                .iter()
                .map(|(v, n)| serde_json::json!({"value": v, "name": n}))
                .collect();
            format!("{}\n", serde_json::json!({ "reasons": list }))
        }
        Format::Table => {
            let mut text = String::new();
            for (v, n) in reasons.iter() {
                let _ = writeln!(text, "{v:>8}  {n}");
            }
            text
        }
    };
    emit(&text).context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

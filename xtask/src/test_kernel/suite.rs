//! What the guests run: the integration test binary of `retina-tests` (one binary, a module
//! per file of `tests/tests/`), the very one `cargo xtask test` runs on the host, found
//! through cargo's JSON messages. The guest runs it module by module (`--exact` with the
//! module's test names), so each file of `tests/tests/` keeps its own line in the report
//! and its own timeout.
//!
//! Every module runs in every guest unless [`EXCLUSIONS`] says why it cannot: this table
//! is the one place that names modules or tests. A new test module is picked up without a
//! change here; if it needs something the guest lacks, it fails in the guest until a line
//! is added below (with the reason, which the harness reports as "not run").

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    build::{Built, Profile},
    util::{self, Workspace},
};

const TESTS_PACKAGE: &str = "retina-tests";

/// What a test needs that a guest may lack.
pub enum Needs {
    /// A program; the exclusion holds only while the guest does not have it (the guest's
    /// programs are [`super::initramfs::GUEST_TOOLS`] and busybox).
    Tool(&'static str),
    /// The repository's files (the guest has the binaries, not the source tree).
    Workspace,
    /// Something the kernel lacks (with [`Exclusion::kernels`]): the reason, as a phrase.
    Kernel(&'static str),
    /// More time than an emulated guest can give it: why, as a phrase.
    Time(&'static str),
}

/// A test module (a file of `tests/tests/`), or some of its tests, that a guest does not
/// run, and why.
pub struct Exclusion {
    /// The module: the file name without `.rs` (`drops` for tests/tests/drops.rs), the
    /// first part of its tests' names.
    pub module: &'static str,
    /// Tests in it, by their name within the module (`tls::otlp_…` for
    /// `export::tls::otlp_…`); empty: the whole module.
    pub tests: &'static [&'static str],
    /// Kernel package name prefixes it applies to; empty: every guest kernel.
    pub kernels: &'static [&'static str],
    pub needs: Needs,
}

/// Everything the guests do not run. Keep the reasons true: a tool named here that the
/// guest gets later lifts the exclusion by itself.
pub const EXCLUSIONS: &[Exclusion] = &[
    Exclusion {
        module: "notify",
        tests: &["the_unit_uses_notify_with_a_watchdog_the_pings_fit_in"],
        kernels: &[],
        needs: Needs::Workspace,
    },
    // The TLS terminator in front of the collector is a Python script (with `openssl` for
    // the certificates); the guest has no Python standard library.
    Exclusion {
        module: "export",
        tests: &[
            "tls::otlp_grpc_over_mutual_tls_with_a_custom_ca",
            "tls::otlp_http_over_mutual_tls_with_a_custom_ca",
        ],
        kernels: &[],
        needs: Needs::Tool("python3"),
    },
    // The test fails loudly where the kernel cannot give receive drops an owner.
    Exclusion {
        module: "socket_owner",
        tests: &[
            "a_stopped_services_series_leave_the_export_within_two_intervals",
            "a_socket_that_outlives_its_cgroup_keeps_one_rising_series",
        ],
        kernels: &["linux-image-6.1."],
        needs: Needs::Kernel(
            "needs the rx_sk argument of kfree_skb (Linux 6.11+) for receive drops to have \
             an owner series",
        ),
    },
    // Its drops are receive-buffer overflows, counted under the socket's cgroup: the same
    // kernel limit. (The other test of the file, NO_SOCKET drops in a user namespace, runs.)
    Exclusion {
        module: "forged_cgroup",
        tests: &["forged_cgroups_in_a_delegated_subtree_name_only_their_user"],
        kernels: &["linux-image-6.1."],
        needs: Needs::Kernel(
            "needs the rx_sk argument of kfree_skb (Linux 6.11+) for receive drops to have \
             an owner series",
        ),
    },
    // The other drop-flow tests run (the verifier must take the flow path on every guest
    // kernel); this one reads the pcapng with Wireshark's tshark, which the guest lacks.
    Exclusion {
        module: "drop_flows",
        tests: &["pcap_of_the_sampled_drops_reads_in_tshark"],
        kernels: &[],
        needs: Needs::Tool("tshark"),
    },
    // Issue 22's flood: a million datagrams, a few seconds of sending on the host, many
    // times that under TCG, followed by waits for quiet moments of 2.5 s. The verifier's
    // acceptance of the flow path on each guest kernel is what the other drop-flow tests
    // there show; the flood adds nothing kernel-specific to it.
    Exclusion {
        module: "drop_flows",
        tests: &[
            "flood::a_million_drop_flood_stays_within_the_budget_and_every_drop_has_one_outcome",
        ],
        kernels: &[],
        needs: Needs::Time(
            "1 000 000 datagrams take a few seconds on the host and many times that under \
             TCG emulation",
        ),
    },
    // The log export's outage test floods 300 000 datagrams up to eleven times; in the
    // 6.1 guest its first flood's drops were not all counted within 40 s (TCG, two guests
    // side by side). Nothing in it depends on the kernel: the export side is user space.
    Exclusion {
        module: "drop_flows",
        tests: &[
            "logs::with_the_logs_collector_down_collection_goes_on_and_the_loss_is_counted_in_bounded_memory",
        ],
        kernels: &[],
        needs: Needs::Time(
            "up to eleven floods of 300 000 datagrams, each a fraction of a second on the \
             host and many times that under TCG emulation",
        ),
    },
    // The churn test (three rounds of 50 pod namespaces) takes about five minutes under
    // TCG. What it tests is the agent's bookkeeping of namespaces that come and go, in
    // user space; the kernel's side (setns, /proc/net of a namespace) is the same on 6.1,
    // which runs it, and on the host's kernel. Run once, not twice, it keeps CI's guests
    // side by side under the hour.
    Exclusion {
        module: "workload_netstat",
        tests: &["churned_namespaces_leave_the_export_within_two_intervals_and_rss_stays_flat"],
        kernels: &["linux-image-6.12."],
        needs: Needs::Time(
            "three rounds of 50 namespaces take about five minutes under TCG emulation; the \
             6.1 guest and the host run it",
        ),
    },
    // The export tests (OTLP over gRPC and HTTP, Prometheus, reloads, outages, series
    // policy) are user space over loopback TCP, about four minutes under TCG. The 6.12
    // guest and the host run them; the 6.1 guest, which runs the churn test above that
    // 6.12 leaves out, does not, so the two guests end about together.
    Exclusion {
        module: "export",
        tests: &[],
        kernels: &["linux-image-6.1."],
        needs: Needs::Time(
            "about four minutes under TCG emulation for user-space export over loopback; \
             the 6.12 guest and the host run it",
        ),
    },
    // The delta twin of the outage test: the same minute-long outage, with what differs
    // (which changes the agent feeds the SDK again) all in user space. Its cumulative twin
    // runs in the 6.12 guest; the host runs both.
    Exclusion {
        module: "export",
        tests: &["resilience::collector_killed_and_restarted_delta_loses_nothing"],
        kernels: &[],
        needs: Needs::Time(
            "a second collector outage of about a minute under TCG emulation, for user-space \
             bookkeeping its cumulative twin's run already covers on this kernel; the host \
             runs it",
        ),
    },
    // The hostile-input tests (special files and out-of-range values in files, flags and
    // the environment, a closed stdout, odd interface names, namespaces deleted under the
    // agent) are about the agent's parsing and bookkeeping: about five and a half minutes
    // under TCG in the 6.12 guest, which the export tests already make the longer of the
    // two. The 6.1 guest and the host (the oldest and the newest kernel) run them; 6.12
    // leaves them out, so the two guests end about together.
    Exclusion {
        module: "hostile",
        tests: &[],
        kernels: &["linux-image-6.12."],
        needs: Needs::Time(
            "about five and a half minutes under TCG emulation for the agent's own input \
             handling; the 6.1 guest and the host run it",
        ),
    },
    Exclusion {
        module: "container_runtime",
        tests: &[],
        kernels: &[],
        needs: Needs::Tool("podman"),
    },
    // Both read dashboards/*.json from the repository (the second also runs Prometheus,
    // which the guest has).
    Exclusion {
        module: "dashboard",
        tests: &[
            "dashboard_is_well_formed",
            "every_dashboard_query_returns_data_from_a_real_prometheus",
        ],
        kernels: &[],
        needs: Needs::Workspace,
    },
    // Every test reads the rules, the runbooks, the dashboard or the packaged unit and
    // configuration from the repository; the end-to-end one needs nothing of the kernel
    // that the host run does not already show.
    Exclusion {
        module: "alerts",
        tests: &[],
        kernels: &[],
        needs: Needs::Workspace,
    },
    Exclusion {
        module: "packaging",
        tests: &[],
        kernels: &[],
        needs: Needs::Tool("systemd-analyze"),
    },
    Exclusion {
        module: "deb",
        tests: &[],
        kernels: &[],
        needs: Needs::Tool("lintian"),
    },
];

impl Needs {
    fn reason(&self) -> String {
        match self {
            Needs::Tool(tool) => format!("needs `{tool}`, which the guest does not have"),
            Needs::Workspace => {
                "reads the repository's files, which the guest does not have".to_string()
            }
            Needs::Kernel(why) => (*why).to_string(),
            Needs::Time(why) => format!("too slow for an emulated guest: {why}"),
        }
    }
}

/// One module of the integration test binary (a file of `tests/tests/`), or a test binary
/// of its own (a file a branch added without declaring it in tests/tests/main.rs).
pub struct TestFile {
    /// The module (`drops` for tests/tests/drops.rs), or the binary's target name.
    pub name: String,
    pub exe: PathBuf,
    /// What the binary puts before the names in [`TestFile::tests`]: `drops::`, or nothing
    /// for a binary of its own.
    pub prefix: String,
    /// Its tests, as `--list` prints them, without [`TestFile::prefix`].
    pub tests: Vec<String>,
    /// The tests marked `#[ignore]` (not run on the host either), without the prefix.
    pub ignored: Vec<String>,
}

impl TestFile {
    /// The name libtest gives `test` (one of [`TestFile::tests`]).
    pub fn full_name(&self, test: &str) -> String {
        format!("{}{test}", self.prefix)
    }
}

pub struct Suite {
    pub files: Vec<TestFile>,
    /// The `traffic` helper the tests find next to their own directory.
    pub traffic: PathBuf,
    /// The OTLP collector the export tests run (`rotel-agent` from the venv's wheel).
    pub rotel: PathBuf,
}

/// What one guest runs of one test module.
pub struct Planned<'a> {
    pub file: &'a TestFile,
    /// Why the whole file does not run, if it does not.
    pub not_run: Option<String>,
    /// Tests left out of a file that runs, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// Builds (or finds up to date) the test binaries as `cargo xtask test` does and lists
/// their tests.
pub fn build(ws: &Workspace, profile: Profile, built: &Built, rotel: PathBuf) -> Result<Suite> {
    check_test_modules(&ws.root)?;
    let mut cmd = util::cargo();
    cmd.current_dir(&ws.root)
        .env("RETINA_EBPF_OBJECT", &built.ebpf_object)
        .args(["test", "--package", TESTS_PACKAGE, "--tests", "--no-run"])
        .args(["--message-format", "json-render-diagnostics"])
        .args(profile.flags())
        .stdout(Stdio::piped());
    eprintln!("$ {}", util::display(&cmd));
    let mut child = cmd.spawn().context("cannot start cargo")?;
    let stdout = child.stdout.take().context("no cargo stdout")?;
    let mut files = Vec::new();
    let mut traffic = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some((kind, name, exe)) = artifact(&msg) {
            match kind {
                Artifact::Test => files.push((name, exe)),
                Artifact::Bin if name == "traffic" => traffic = Some(exe),
                Artifact::Bin => {}
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("building the integration tests failed ({status})");
    }
    let traffic = traffic.context("cargo built no `traffic` helper")?;
    files.sort();
    let mut modules = Vec::new();
    for (name, exe) in files {
        modules.extend(list(&name, &exe)?);
    }
    let files = modules;
    if files.is_empty() {
        bail!("cargo reported no integration test binaries of {TESTS_PACKAGE}");
    }
    check_exclusions(&files)?;
    Ok(Suite {
        files,
        traffic,
        rotel,
    })
}

enum Artifact {
    Test,
    Bin,
}

/// `(kind, target name, executable)` of a `compiler-artifact` message with an executable.
fn artifact(msg: &serde_json::Value) -> Option<(Artifact, String, PathBuf)> {
    if msg["reason"] != "compiler-artifact" {
        return None;
    }
    let exe = PathBuf::from(msg["executable"].as_str()?);
    let target = &msg["target"];
    let name = target["name"].as_str()?.to_string();
    let kinds = target["kind"].as_array()?;
    // `--tests` also builds the unit tests of the binaries (kind `bin`, `profile.test`):
    // those are not the helpers.
    let test = msg["profile"]["test"] == true;
    let kind = if kinds.iter().any(|k| k == "test") && test {
        Artifact::Test
    } else if kinds.iter().any(|k| k == "bin") && !test {
        Artifact::Bin
    } else {
        return None;
    };
    Some((kind, name, exe))
}

fn list_names(exe: &Path, ignored: bool) -> Result<Vec<String>> {
    let mut cmd = Command::new(exe);
    cmd.args(["--list", "--format", "terse"]);
    if ignored {
        cmd.arg("--ignored");
    }
    let out = util::capture(&mut cmd)?;
    Ok(out
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect())
}

/// The modules of the test binary `exe` (target `name`) with their tests.
fn list(name: &str, exe: &Path) -> Result<Vec<TestFile>> {
    let ignored = list_names(exe, true)?;
    let tests: Vec<String> = list_names(exe, false)?
        .into_iter()
        .filter(|t| !ignored.contains(t))
        .collect();
    Ok(modules(name, exe, &tests, &ignored))
}

/// Groups the tests of one binary by their first path segment, the module of
/// tests/tests/main.rs they belong to. A test outside any module (a binary of its own) goes
/// under the binary's name, unprefixed.
fn modules(name: &str, exe: &Path, tests: &[String], ignored: &[String]) -> Vec<TestFile> {
    let mut out: Vec<TestFile> = Vec::new();
    let mut place = |test: &str, is_ignored: bool| {
        let (module, prefix, rest) = match test.split_once("::") {
            Some((module, rest)) => (module, format!("{module}::"), rest),
            None => (name, String::new(), test),
        };
        let at = match out
            .iter()
            .position(|f| f.name == module && f.prefix == prefix)
        {
            Some(at) => at,
            None => {
                out.push(TestFile {
                    name: module.to_string(),
                    exe: exe.to_path_buf(),
                    prefix,
                    tests: Vec::new(),
                    ignored: Vec::new(),
                });
                out.len() - 1
            }
        };
        let file = &mut out[at];
        if is_ignored {
            file.ignored.push(rest.to_string());
        } else {
            file.tests.push(rest.to_string());
        }
    };
    for test in tests {
        place(test, false);
    }
    for test in ignored {
        place(test, true);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// An exclusion naming a test that does not exist is an error: the table must follow
/// renames, or it would hide nothing and still read as if it did. One naming a whole module
/// this tree does not have is only a warning (a file on its way in from another branch).
fn check_exclusions(files: &[TestFile]) -> Result<()> {
    for ex in EXCLUSIONS {
        let Some(file) = files.iter().find(|f| f.name == ex.module) else {
            eprintln!(
                "warning: xtask/src/test_kernel/suite.rs excludes the test module `{}`, which \
                 this tree does not have",
                ex.module
            );
            continue;
        };
        for test in ex.tests {
            if !file.tests.iter().any(|t| t == test) {
                bail!(
                    "xtask/src/test_kernel/suite.rs excludes `{}::{test}`, which does not exist \
                     (any more): update EXCLUSIONS",
                    ex.module
                );
            }
        }
    }
    Ok(())
}

/// What a guest booting `package`, with the programs `tools`, runs of `suite`.
pub fn plan<'a>(suite: &'a Suite, package: &str, tools: &[&str]) -> Vec<Planned<'a>> {
    plan_with(EXCLUSIONS, suite, package, tools)
}

fn plan_with<'a>(
    exclusions: &[Exclusion],
    suite: &'a Suite,
    package: &str,
    tools: &[&str],
) -> Vec<Planned<'a>> {
    let applies = |ex: &Exclusion| {
        (ex.kernels.is_empty() || ex.kernels.iter().any(|k| package.starts_with(k)))
            && !matches!(ex.needs, Needs::Tool(t) if tools.contains(&t))
    };
    suite
        .files
        .iter()
        .map(|file| {
            let mut planned = Planned {
                file,
                not_run: None,
                skipped: Vec::new(),
            };
            for ex in exclusions
                .iter()
                .filter(|ex| ex.module == file.name && applies(ex))
            {
                if ex.tests.is_empty() {
                    planned.not_run = Some(ex.needs.reason());
                } else {
                    for test in ex.tests {
                        planned.skipped.push((test.to_string(), ex.needs.reason()));
                    }
                }
            }
            // A file all of whose tests are left out does not run either.
            if planned.not_run.is_none()
                && !file.tests.is_empty()
                && file
                    .tests
                    .iter()
                    .all(|t| planned.skipped.iter().any(|(s, _)| s == t))
            {
                let mut reasons: Vec<&str> =
                    planned.skipped.iter().map(|(_, r)| r.as_str()).collect();
                reasons.dedup();
                planned.not_run = Some(reasons.join("; "));
                planned.skipped.clear();
            }
            planned
        })
        .collect()
}

impl Planned<'_> {
    /// The libtest arguments that run this module's tests but [`Planned::skipped`]: a
    /// module of the one binary names each test it runs (`--exact`); a binary of its own
    /// runs everything but the skipped ones.
    pub fn args(&self) -> Vec<String> {
        let file = self.file;
        let skipped = |t: &String| self.skipped.iter().any(|(s, _)| s == t);
        let mut args = Vec::new();
        if !file.prefix.is_empty() {
            args.push("--exact".to_string());
            args.extend(
                file.tests
                    .iter()
                    .filter(|t| !skipped(t))
                    .map(|t| file.full_name(t)),
            );
        } else if !self.skipped.is_empty() {
            args.push("--exact".to_string());
            for (test, _) in &self.skipped {
                args.push("--skip".to_string());
                args.push(test.clone());
            }
        }
        args
    }
}

/// The crate root of the one integration test binary, relative to the workspace.
const TESTS_MAIN: &str = "tests/tests/main.rs";

/// Every file of `tests/tests/` (and every directory with a `mod.rs`) must be a `mod` of
/// [`TESTS_MAIN`]: with `autotests = false`, cargo would otherwise never build it, and its
/// tests would silently not run.
pub fn check_test_modules(root: &Path) -> Result<()> {
    let main = root.join(TESTS_MAIN);
    let text =
        fs::read_to_string(&main).with_context(|| format!("cannot read {}", main.display()))?;
    let dir = root.join("tests/tests");
    let mut missing = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let module = if path.is_dir() && path.join("mod.rs").is_file() {
            path.file_name()
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("main.rs") {
            path.file_stem()
        } else {
            continue;
        };
        let Some(module) = module.and_then(|m| m.to_str()) else {
            continue;
        };
        if !declares(&text, module) {
            missing.push(module.to_string());
        }
    }
    if !missing.is_empty() {
        missing.sort();
        bail!(
            "{TESTS_MAIN} does not declare {}: add `mod NAME;` for each, or its tests never \
             build nor run",
            missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// Whether `main` has a `mod NAME;` line.
fn declares(main: &str, module: &str) -> bool {
    main.lines().any(|l| {
        l.trim()
            .strip_prefix("mod ")
            .and_then(|r| r.strip_suffix(';'))
            == Some(module)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_test_file_is_a_module_of_the_one_binary() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        check_test_modules(&root).unwrap();
        assert!(declares("//! x\nmod drops;\nmod export;\n", "export"));
        assert!(!declares("// mod drops;\nmod drops_x;\n", "drops"));
    }

    /// A module of the one test binary.
    fn file(name: &str, tests: &[&str]) -> TestFile {
        TestFile {
            name: name.to_string(),
            exe: PathBuf::from("integration"),
            prefix: format!("{name}::"),
            tests: tests.iter().map(|t| t.to_string()).collect(),
            ignored: Vec::new(),
        }
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn one_binary_is_split_into_its_modules() {
        let tests = strings(&["drops::a", "export::tls::t", "export::otlp::o", "drops::b"]);
        let ignored = strings(&["drops::slow"]);
        let files = modules(
            "integration",
            Path::new("/x/integration-1"),
            &tests,
            &ignored,
        );
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["drops", "export"]);
        assert_eq!(files[0].tests, ["a", "b"]);
        assert_eq!(files[0].ignored, ["slow"]);
        assert_eq!(files[1].tests, ["tls::t", "otlp::o"]);
        assert_eq!(files[1].full_name("tls::t"), "export::tls::t");
        // A binary of its own (an undeclared file): its tests under its name, unprefixed.
        let own = modules("stray", Path::new("/x/stray-2"), &strings(&["a"]), &[]);
        assert_eq!(
            (own[0].name.as_str(), own[0].prefix.as_str()),
            ("stray", "")
        );
        let planned = Planned {
            file: &own[0],
            not_run: None,
            skipped: Vec::new(),
        };
        assert!(planned.args().is_empty());
    }

    #[test]
    fn exclusions_by_file_test_and_tool() {
        let tls = [
            "tls::otlp_grpc_over_mutual_tls_with_a_custom_ca",
            "tls::otlp_http_over_mutual_tls_with_a_custom_ca",
        ];
        let delta = "resilience::collector_killed_and_restarted_delta_loses_nothing";
        let suite = Suite {
            files: vec![
                file("drops", &["a", "b"]),
                file("export", &["otlp::x", tls[0], tls[1], delta]),
                file(
                    "dashboard",
                    &[
                        "dashboard_is_well_formed",
                        "every_dashboard_query_returns_data_from_a_real_prometheus",
                    ],
                ),
                file("packaging", &["p"]),
            ],
            traffic: PathBuf::new(),
            rotel: PathBuf::new(),
        };
        check_exclusions(&suite.files).unwrap();
        let guest = ["ip", "rotel-agent", "prometheus"];
        // The 6.1 guest leaves the export tests to the 6.12 guest and the host.
        let on_61 = plan(&suite, "linux-image-6.1.0-57-cloud-amd64-unsigned", &guest);
        assert!(on_61[1].not_run.as_deref().unwrap().contains("TCG"));
        let plan = plan(
            &suite,
            "linux-image-6.12.118+deb12-cloud-amd64-unsigned",
            &guest,
        );
        assert!(plan[0].not_run.is_none() && plan[0].skipped.is_empty());
        // Each module runs exactly its own tests.
        assert_eq!(plan[0].args(), ["--exact", "drops::a", "drops::b"]);
        // The export tests run, but for the two that need Python and the delta outage
        // test (too slow under TCG).
        assert!(plan[1].not_run.is_none());
        assert_eq!(plan[1].args(), ["--exact", "export::otlp::x"]);
        assert_eq!(plan[1].skipped.len(), 3);
        for (t, r) in &plan[1].skipped {
            let want = if *t == delta { "TCG" } else { "python3" };
            assert!(r.contains(want), "{t}: {r}");
        }
        // Every test of the file is out: the file does not run.
        let dash = plan[2].not_run.as_deref().unwrap();
        assert!(dash.contains("repository"), "{dash}");
        assert!(
            plan[3]
                .not_run
                .as_deref()
                .unwrap()
                .contains("systemd-analyze")
        );
        // With the tool in the guest, its exclusion no longer applies.
        let plan = super::plan(&suite, "k", &["python3"]);
        assert!(plan[1].not_run.is_none() && plan[1].skipped.len() == 1);
        assert_eq!(plan[1].args().len(), 4);
        // A kernel-specific exclusion applies to that kernel's packages only.
        let only_61 = [Exclusion {
            module: "drops",
            tests: &["a"],
            kernels: &["linux-image-6.1."],
            needs: Needs::Workspace,
        }];
        let on_61 = plan_with(
            &only_61,
            &suite,
            "linux-image-6.1.0-57-cloud-amd64-unsigned",
            &[],
        );
        assert_eq!(on_61[0].args(), ["--exact", "drops::b"]);
        let on_612 = plan_with(
            &only_61,
            &suite,
            "linux-image-6.12.118+deb12-cloud-amd64-unsigned",
            &[],
        );
        assert!(on_612[0].skipped.is_empty());
        // A renamed test is an error, not a silent no-op.
        let renamed = [file("dashboard", &["other"])];
        assert!(check_exclusions(&renamed).is_err());
    }

    #[test]
    fn test_artifacts_from_cargo_messages() {
        let msg: serde_json::Value = serde_json::from_str(
            r#"{"reason":"compiler-artifact","target":{"name":"drops","kind":["test"]},
                "profile":{"test":true},"executable":"/t/debug/deps/drops-1"}"#,
        )
        .unwrap();
        let (kind, name, exe) = artifact(&msg).unwrap();
        assert!(matches!(kind, Artifact::Test));
        assert_eq!(
            (name.as_str(), exe.to_str()),
            ("drops", Some("/t/debug/deps/drops-1"))
        );
        let lib: serde_json::Value = serde_json::from_str(
            r#"{"reason":"compiler-artifact","target":{"name":"retina_tests","kind":["lib"]},
                "profile":{"test":false},"executable":null}"#,
        )
        .unwrap();
        assert!(artifact(&lib).is_none());
        let bin_tests: serde_json::Value = serde_json::from_str(
            r#"{"reason":"compiler-artifact","target":{"name":"traffic","kind":["bin"]},
                "profile":{"test":true},"executable":"/t/debug/deps/traffic-2"}"#,
        )
        .unwrap();
        assert!(artifact(&bin_tests).is_none());
    }
}

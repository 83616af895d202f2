//! Which commit the agent is built from, for `retina-agent --version`. Used by the build
//! script (`#[path]`-included, so it has no crate dependencies) and unit-tested by the lib.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// What `git` says about the sources in a directory.
#[derive(Debug, PartialEq, Eq)]
pub enum Source {
    /// A git checkout that tracks the crate: the commit (12 hex digits) and whether tracked
    /// files differ from it.
    Commit { hash: String, dirty: bool },
    /// Not a git checkout (a source tarball, a vendored copy), no git, or a repository that
    /// does not track the crate.
    NoCheckout,
}

impl Source {
    /// The text `--version` shows after the version number, in parentheses.
    pub fn describe(&self) -> String {
        match self {
            Source::Commit { hash, dirty: false } => format!("git commit {hash}"),
            Source::Commit { hash, dirty: true } => {
                format!("git commit {hash} with uncommitted changes")
            }
            Source::NoCheckout => "not built from a git checkout".to_owned(),
        }
    }
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        // Never write the index (a status refresh would), so a build changes nothing.
        .arg("--no-optional-locks")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The commit of the checkout at `root` (the workspace root), if git tracks `paths` there
/// (the sources the binary is built from, relative to `root`); dirty if any of them differ
/// from that commit.
pub fn source(root: &Path, paths: &[&str]) -> Source {
    // A tarball unpacked inside some other repository must not report that one's commit.
    let mut tracked = vec!["ls-files", "--error-unmatch", "--"];
    tracked.extend(paths);
    if git(root, &tracked).is_none() {
        return Source::NoCheckout;
    }
    let Some(hash) = git(root, &["rev-parse", "--short=12", "HEAD"]) else {
        return Source::NoCheckout;
    };
    let mut status = vec!["status", "--porcelain", "--untracked-files=no", "--"];
    status.extend(paths);
    let dirty = git(root, &status).is_some_and(|changes| !changes.is_empty());
    Source::Commit { hash, dirty }
}

/// The files whose change means another commit or another dirty state: HEAD, the branch it
/// points to, packed refs, the index (staged changes) and `paths` themselves (cargo scans
/// a directory recursively). Empty outside a checkout.
pub fn watched(root: &Path, paths: &[&str]) -> Vec<PathBuf> {
    let (Some(git_dir), Some(common)) = (
        git(root, &["rev-parse", "--absolute-git-dir"]),
        git(
            root,
            &["rev-parse", "--path-format=absolute", "--git-common-dir"],
        ),
    ) else {
        return Vec::new();
    };
    let (git_dir, common) = (PathBuf::from(git_dir), PathBuf::from(common));
    let mut files = vec![
        git_dir.join("HEAD"),
        git_dir.join("index"),
        common.join("packed-refs"),
    ];
    if let Some(branch) = git(root, &["symbolic-ref", "-q", "HEAD"]) {
        files.push(common.join(branch));
    }
    files.extend(paths.iter().map(|p| root.join(p)));
    files.retain(|f| f.exists());
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATHS: &[&str] = &["Cargo.toml"];

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("Cargo.toml"), "[package]\n").unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn run_git(dir: &Path, args: &[&str]) {
        let status = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }

    #[test]
    fn outside_a_checkout_the_version_says_so() {
        let dir = TempDir::new("retina-git-none");
        assert!(
            git(&dir.0, &["rev-parse", "--is-inside-work-tree"]).is_none(),
            "{} is inside a git checkout: point TMPDIR elsewhere",
            dir.0.display()
        );
        assert_eq!(source(&dir.0, PATHS), Source::NoCheckout);
        assert!(watched(&dir.0, PATHS).is_empty());
        assert_eq!(
            Source::NoCheckout.describe(),
            "not built from a git checkout"
        );
    }

    #[test]
    fn a_commit_is_named_and_a_dirty_tree_flagged() {
        let dir = TempDir::new("retina-git-repo");
        run_git(&dir.0, &["init", "-q", "-b", "main"]);
        // A repository that does not track the sources is not their checkout.
        assert_eq!(source(&dir.0, PATHS), Source::NoCheckout);
        run_git(&dir.0, &["add", "Cargo.toml"]);
        run_git(&dir.0, &["commit", "-q", "-m", "first"]);
        let Source::Commit { hash, dirty } = source(&dir.0, PATHS) else {
            panic!("no commit found in {}", dir.0.display());
        };
        assert_eq!(hash.len(), 12);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{hash}");
        assert!(!dirty);
        assert_eq!(
            Source::Commit {
                hash: hash.clone(),
                dirty
            }
            .describe(),
            format!("git commit {hash}")
        );
        let watched = watched(&dir.0, PATHS);
        for file in [
            ".git/HEAD",
            ".git/index",
            ".git/refs/heads/main",
            "Cargo.toml",
        ] {
            assert!(watched.contains(&dir.0.join(file)), "{file} in {watched:?}");
        }

        // An untracked file is not a change; an edited tracked one is.
        std::fs::write(dir.0.join("other"), "x").unwrap();
        assert_eq!(
            source(&dir.0, PATHS),
            Source::Commit {
                hash: hash.clone(),
                dirty: false
            }
        );
        std::fs::write(dir.0.join("Cargo.toml"), "[package]\nname = \"x\"\n").unwrap();
        let changed = source(&dir.0, PATHS);
        assert_eq!(
            changed,
            Source::Commit {
                hash: hash.clone(),
                dirty: true
            }
        );
        assert_eq!(
            changed.describe(),
            format!("git commit {hash} with uncommitted changes")
        );
    }
}

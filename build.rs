//! Records the commit wsedge is built from, for `--version` and `wsedge_build_info`.
//!
//! `WSEDGE_COMMIT` wins (an image build without `.git` passes it); otherwise `git rev-parse`
//! of the source tree, else `unknown`. The script reruns when the checked-out commit moves
//! (the HEAD file and the branch it names), so a rebuild after a commit reports the new one.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=WSEDGE_COMMIT");
    println!("cargo:rerun-if-changed=build.rs");
    let commit = std::env::var("WSEDGE_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    // Rerun when HEAD moves: the HEAD file (a checkout), the ref it points to (a commit) and
    // packed-refs. Only files that exist: cargo reruns a script on every build while a
    // rerun-if-changed path is missing.
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
    }
    watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    for path in watched.into_iter().flatten() {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rustc-env=WSEDGE_COMMIT={commit}");
}

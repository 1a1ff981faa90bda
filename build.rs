//! Build information for `vodhook --version`: the commit (`git rev-parse
//! --short HEAD` when building from this repository's checkout, "unknown"
//! from a tarball or without git) and the build date (UTC; the
//! `SOURCE_DATE_EPOCH` of reproducible builds when set).

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let commit = git(&manifest_dir, &["rev-parse", "--short", "HEAD"]);
    // A tarball unpacked inside some other repository must not take that
    // repository's commit: only a checkout whose top is this package counts.
    let ours = git(&manifest_dir, &["rev-parse", "--show-toplevel"])
        .is_some_and(|top| same_dir(Path::new(&top), Path::new(&manifest_dir)));
    let commit = commit
        .filter(|_| ours)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=VODHOOK_COMMIT={commit}");

    let seconds = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|value| value.parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|elapsed| elapsed.as_secs())
                .unwrap_or(0)
        });
    println!("cargo:rustc-env=VODHOOK_BUILD_DATE={}", date(seconds));

    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=build.rs");
    if ours {
        let mut paths = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
        paths.extend(git(&manifest_dir, &["symbolic-ref", "-q", "HEAD"]));
        for path in &paths {
            if let Some(file) = git(&manifest_dir, &["rev-parse", "--git-path", path]) {
                watch(Path::new(&absolute(&manifest_dir, &file)), path);
            }
        }
    }
}

/// Asks cargo to run this script again when `file` (the git file `name`)
/// changes. A file that does not exist would make every build run it
/// again (cargo counts a missing file as changed): a fresh clone has no
/// `packed-refs`, and a packed branch no file of its own. For a missing
/// branch file the nearest folder of it that exists is watched instead
/// (cargo looks through a folder's files), where a commit creates it:
/// `refs/heads` at most, also for a branch named `a/b`. A missing
/// `packed-refs` appears only with a `git pack-refs`, which also deletes
/// the watched branch file.
fn watch(file: &Path, name: &str) {
    if file.exists() {
        println!("cargo:rerun-if-changed={}", file.display());
    } else if let Some(branch) = name.strip_prefix("refs/") {
        let depth = branch.matches('/').count();
        if let Some(folder) = file.ancestors().skip(1).take(depth).find(|f| f.is_dir()) {
            println!("cargo:rerun-if-changed={}", folder.display());
        }
    }
}

/// The trimmed output of a successful `git` command run in `dir`.
fn git(dir: &str, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (output.status.success() && !text.is_empty()).then(|| text.to_owned())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn absolute(dir: &str, path: &str) -> String {
    Path::new(dir).join(path).display().to_string()
}

/// `YYYY-MM-DD` of a Unix time (UTC), by Howard Hinnant's civil-from-days.
fn date(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

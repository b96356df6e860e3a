//! The Helm chart's NATS users and permissions (`charts/danmu/templates/nats-auth.yaml`),
//! rendered by the real helm for tests, so the integration tests run the fabric under exactly
//! the permissions a cluster gets.
//!
//! helm comes from `scripts/check-chart --helm`, which installs it once (pinned, cached in
//! `~/.cache/danmu`) the way SPEC says.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// The repository root (this crate is `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts").join("danmu")
}

/// The helm binary, installed by `scripts/check-chart --helm` when missing.
pub fn helm() -> anyhow::Result<PathBuf> {
    let output = Command::new(repo_root().join("scripts").join("check-chart"))
        .arg("--helm")
        .output()
        .context("running scripts/check-chart --helm")?;
    if !output.status.success() {
        bail!(
            "scripts/check-chart --helm failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    ))
}

/// One nkey user per role, as the chart takes them.
pub struct ServiceUsers {
    pub gateway: nkeys::KeyPair,
    pub distributor: nkeys::KeyPair,
    pub control: nkeys::KeyPair,
    /// A business publisher (`natsAuth.publishers[0]`).
    pub publisher: nkeys::KeyPair,
}

impl ServiceUsers {
    pub fn generate() -> ServiceUsers {
        ServiceUsers {
            gateway: nkeys::KeyPair::new_user(),
            distributor: nkeys::KeyPair::new_user(),
            control: nkeys::KeyPair::new_user(),
            publisher: nkeys::KeyPair::new_user(),
        }
    }

    /// Writes each seed to `<dir>/<role>.nk` (as the chart mounts them) and returns the paths
    /// in the order gateway, distributor, control, publisher.
    pub fn write_seeds(&self, dir: &Path) -> anyhow::Result<[PathBuf; 4]> {
        let write = |name: &str, key: &nkeys::KeyPair| -> anyhow::Result<PathBuf> {
            let path = dir.join(format!("{name}.nk"));
            std::fs::write(&path, key.seed()?)?;
            Ok(path)
        };
        Ok([
            write("gateway", &self.gateway)?,
            write("distributor", &self.distributor)?,
            write("control", &self.control)?,
            write("publisher", &self.publisher)?,
        ])
    }
}

/// The chart's `danmu.conf` (mappings and `authorization` block) for `region` of `regions`,
/// with `users` and the `helm test` user's password `smoke_password`, rendered by helm.
pub fn render_nats_auth(
    region: &str,
    regions: &[&str],
    users: &ServiceUsers,
    smoke_password: &str,
    smoke_room: u64,
) -> anyhow::Result<String> {
    let mut set = nkey_values(users);
    set.extend([
        format!("region={region}"),
        format!("regions={{{}}}", regions.join(",")),
        format!("tests.natsPassword={smoke_password}"),
        format!("tests.room={smoke_room}"),
        "gateway.advertiseHost=127.0.0.1".into(),
        // Secrets the render needs but this file does not use.
        "signingKey.existingSecret=unused".into(),
        "natsAuth.existingSecret=unused".into(),
    ]);
    let yaml = render("templates/nats-auth.yaml", &[], &set)?;
    config_map_file(&yaml, "danmu.conf")
}

/// The `--set` values naming `users`' public keys: one nkey per service, one publisher.
fn nkey_values(users: &ServiceUsers) -> Vec<String> {
    vec![
        format!("natsAuth.gateway.nkey={}", users.gateway.public_key()),
        format!(
            "natsAuth.distributor.nkey={}",
            users.distributor.public_key()
        ),
        format!("natsAuth.control.nkey={}", users.control.public_key()),
        "natsAuth.publishers[0].name=backend".into(),
        format!(
            "natsAuth.publishers[0].nkey={}",
            users.publisher.public_key()
        ),
    ]
}

/// The nkey users of the chart's `danmu.conf` for a values file (relative to the chart) with
/// `users`' public keys (and `ci/secrets-values.yaml` for the secrets the render needs), the
/// demo echo on or off: each user's `nkey` and `permissions` as JSON, in the chart's order.
pub fn rendered_nkey_users(
    values_file: &str,
    users: &ServiceUsers,
    echo_to_room: bool,
) -> anyhow::Result<Vec<(String, serde_json::Value)>> {
    let mut set = nkey_values(users);
    set.push(format!(
        "gateway.config.upstream.echo_to_room={echo_to_room}"
    ));
    let yaml = render(
        "templates/nats-auth.yaml",
        &[values_file, "ci/secrets-values.yaml"],
        &set,
    )?;
    let conf = config_map_file(&yaml, "danmu.conf")?;
    let mut out = Vec::new();
    for line in authorization_block(&conf)?.lines() {
        let line = line.trim();
        if !line.starts_with('{') {
            continue;
        }
        let user: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("a user line: {line}"))?;
        if let Some(nkey) = user["nkey"].as_str() {
            out.push((nkey.to_owned(), user["permissions"].clone()));
        }
    }
    Ok(out)
}

/// The `region` and `regions` of a values file (relative to the chart), read from its
/// top-level `region: x` and `regions: [x, y]` lines.
pub fn values_regions(values_file: &str) -> anyhow::Result<(String, Vec<String>)> {
    let path = chart_dir().join(values_file);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let value = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key))
            .map(|rest| rest.trim().to_owned())
            .with_context(|| format!("{values_file} has no top-level `{key}` line"))
    };
    let region = value("region:")?;
    let regions = value("regions:")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .collect();
    Ok((region, regions))
}

/// The chart's per-region values files (`values-*.yaml`), sorted.
pub fn region_values_files() -> anyhow::Result<Vec<String>> {
    let mut files: Vec<String> = std::fs::read_dir(chart_dir())?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("values-") && name.ends_with(".yaml"))
        .collect();
    files.sort();
    Ok(files)
}

/// One template of the chart rendered by `helm template`, with values files (relative to the
/// chart) and `--set` values.
pub fn render(template: &str, values_files: &[&str], set: &[String]) -> anyhow::Result<String> {
    let mut command = Command::new(helm()?);
    command
        .arg("template")
        .arg("t")
        .arg(chart_dir())
        .args(["-s", template]);
    for file in values_files {
        command.arg("-f").arg(chart_dir().join(file));
    }
    for value in set {
        command.arg("--set").arg(value);
    }
    let output = command.output().context("running helm template")?;
    if !output.status.success() {
        bail!(
            "helm template failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The text of `key` in a rendered ConfigMap written as a `key: |` block (indented 4).
pub fn config_map_file(yaml: &str, key: &str) -> anyhow::Result<String> {
    let header = format!("  {key}: |");
    let mut lines = yaml.lines().skip_while(|line| line.trim_end() != header);
    lines
        .next()
        .with_context(|| format!("no {key} in the rendered ConfigMap:\n{yaml}"))?;
    let mut out = String::new();
    for line in lines {
        match line.strip_prefix("    ") {
            Some(text) => out.push_str(text),
            None if line.trim().is_empty() => {}
            None => break,
        }
        out.push('\n');
    }
    Ok(out)
}

/// The `authorization { ... }` block of a rendered `danmu.conf` (to put next to a test
/// server's own mappings).
pub fn authorization_block(danmu_conf: &str) -> anyhow::Result<String> {
    let start = danmu_conf
        .find("authorization {")
        .context("danmu.conf has no authorization block")?;
    Ok(danmu_conf[start..].to_owned())
}

/// The `mappings { ... }` block of a rendered `danmu.conf`.
pub fn mappings_block(danmu_conf: &str) -> anyhow::Result<String> {
    let start = danmu_conf
        .find("mappings {")
        .context("danmu.conf has no mappings block")?;
    let end = danmu_conf[start..]
        .find("\n}\n")
        .context("unterminated mappings block")?;
    Ok(danmu_conf[start..start + end + 3].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_config_map_block() {
        let yaml = "data:\n  a.conf: |\n    x {\n\n      y: 1\n    }\n  b.conf: |\n    z\n";
        assert_eq!(
            config_map_file(yaml, "a.conf").unwrap(),
            "x {\n\n  y: 1\n}\n"
        );
        assert!(config_map_file(yaml, "c.conf").is_err());
    }
}

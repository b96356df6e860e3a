//! Rendering nats-server configuration files: one source for tests and `local-nats`.

use std::fmt::Write as _;
use std::path::PathBuf;

/// Where businesses publish: `danmu.push.<prio>.<scope>.<target>`, in any region.
pub const PUBLISH_SUBJECTS: &str = "danmu.push.*.*.*";

/// Prefix of the region-local ingest subjects: each cluster maps [`PUBLISH_SUBJECTS`] to
/// `danmu.in.<region>.<prio>.<scope>.<target>`, so a region's PUSH streams capture what was
/// published in that region only.
pub const INGEST_PREFIX: &str = "danmu.in";

/// The ingest subject a message published on `danmu.push.<rest>` in `region` is mapped to.
pub fn ingest_subject(region: &str, rest: &str) -> String {
    format!("{INGEST_PREFIX}.{region}.{rest}")
}

/// The loopback ports of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerPorts {
    pub client: u16,
    /// HTTP monitoring (`/healthz`, `/varz`, `/jsz`, `/gatewayz`).
    pub monitor: u16,
    /// nats-server's own WebSocket listener: the peer our gateway is benchmarked against.
    pub websocket: u16,
    /// Cluster (route) port; only listened on by a server that is part of a supercluster.
    pub route: u16,
    /// Gateway port; only listened on by a server that is part of a supercluster.
    pub gateway: u16,
}

impl ServerPorts {
    /// Free loopback ports (see [`crate::ports::free_port`]).
    pub fn free() -> Self {
        use crate::ports::free_port;
        Self {
            client: free_port(),
            monitor: free_port(),
            websocket: free_port(),
            route: free_port(),
            gateway: free_port(),
        }
    }

    /// The fixed development layout of `local-nats`: region number `index` (0 = A) gets client
    /// 4222+i, monitor 8222+i, WebSocket 4242+i, route 6222+i and gateway 7222+i.
    pub fn dev(index: u16) -> Self {
        Self {
            client: 4222 + index,
            monitor: 8222 + index,
            websocket: 4242 + index,
            route: 6222 + index,
            gateway: 7222 + index,
        }
    }
}

/// A gateway to one region of a supercluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    pub region: String,
    pub port: u16,
}

/// Everything that tells one nats-server how to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// `server_name`, unique in the supercluster.
    pub name: String,
    /// The region, which is the cluster name (and so what scopes the region mappings).
    pub region: String,
    pub ports: ServerPorts,
    /// JetStream's `store_dir`.
    pub store_dir: PathBuf,
    /// Every region of the supercluster with its gateway port, this one included. Empty: a
    /// standalone server, whose JetStream is not clustered (a clustered JetStream on one server
    /// never elects a meta leader: it waits for a route, gateway or leaf connection, and a route
    /// to itself is closed as a duplicate); its cluster name still scopes the mappings.
    pub gateways: Vec<Gateway>,
    /// Appended to the rendered config as it is: TLS, `authorization`, operator blocks
    /// (see [`crate::nats::security`]).
    pub extra: String,
    /// `extra` puts the server in operator mode: then the `mappings` block is left out
    /// (nats-server refuses account configuration outside the account JWTs).
    pub operator_mode: bool,
}

impl ServerSpec {
    /// The regions whose ingest subjects the mappings name: all of the supercluster's, or just
    /// this server's own when standalone.
    pub fn regions(&self) -> Vec<&str> {
        if self.gateways.is_empty() {
            vec![self.region.as_str()]
        } else {
            self.gateways.iter().map(|g| g.region.as_str()).collect()
        }
    }
}

/// The nats-server configuration file for `spec`.
pub fn server_config(spec: &ServerSpec) -> String {
    let ServerPorts {
        client,
        monitor,
        websocket,
        route,
        gateway,
    } = spec.ports;
    let mut out = String::new();
    let w = &mut out;
    // Writing to a String cannot fail.
    let _ = writeln!(w, "server_name: {}", quote(&spec.name));
    let _ = writeln!(w, "listen: \"127.0.0.1:{client}\"");
    let _ = writeln!(w, "http: \"127.0.0.1:{monitor}\"");
    let _ = writeln!(
        w,
        "jetstream {{ store_dir: {} }}",
        quote(&spec.store_dir.to_string_lossy())
    );
    let _ = writeln!(
        w,
        "websocket {{ listen: \"127.0.0.1:{websocket}\", no_tls: true }}"
    );
    if spec.gateways.is_empty() {
        // A cluster name without a listen port: the server stays standalone.
        let _ = writeln!(w, "cluster {{ name: {} }}", quote(&spec.region));
    } else {
        // Clustered JetStream requires a configured route; pointing it at ourselves satisfies that.
        let _ = writeln!(
            w,
            "cluster {{ name: {region}, listen: \"127.0.0.1:{route}\", routes: [\"nats://127.0.0.1:{route}\"] }}",
            region = quote(&spec.region)
        );
        let _ = writeln!(w, "gateway {{");
        let _ = writeln!(w, "  name: {}", quote(&spec.region));
        let _ = writeln!(w, "  listen: \"127.0.0.1:{gateway}\"");
        let _ = writeln!(w, "  gateways: [");
        for g in &spec.gateways {
            let _ = writeln!(
                w,
                "    {{ name: {}, urls: [\"nats://127.0.0.1:{}\"] }}",
                quote(&g.region),
                g.port
            );
        }
        let _ = writeln!(w, "  ]");
        let _ = writeln!(w, "}}");
    }
    if !spec.operator_mode {
        out.push_str(&mappings_block(&spec.regions()));
    }
    out.push_str(&spec.extra);
    out
}

/// The `mappings` block that sends `danmu.push.<prio>.<scope>.<target>` to each cluster's own
/// `danmu.in.<region>.<prio>.<scope>.<target>` (cluster-scoped mappings, nats-server 2.10+).
pub fn mappings_block(regions: &[&str]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "mappings {{");
    let _ = writeln!(out, "  {}: [", quote(PUBLISH_SUBJECTS));
    for region in regions {
        let destination = ingest_subject(region, "{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}");
        let _ = writeln!(
            out,
            "    {{ destination: {}, weight: 100%, cluster: {} }}",
            quote(&destination),
            quote(region)
        );
    }
    let _ = writeln!(out, "  ]");
    let _ = writeln!(out, "}}");
    out
}

/// A double-quoted config string.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(gateways: Vec<Gateway>) -> ServerSpec {
        ServerSpec {
            name: "sB".into(),
            region: "B".into(),
            ports: ServerPorts::dev(1),
            store_dir: "/tmp/store".into(),
            gateways,
            extra: String::new(),
            operator_mode: false,
        }
    }

    #[test]
    fn mappings_send_each_cluster_to_its_own_region() {
        let block = mappings_block(&["A", "B"]);
        assert_eq!(
            block,
            r#"mappings {
  "danmu.push.*.*.*": [
    { destination: "danmu.in.A.{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}", weight: 100%, cluster: "A" }
    { destination: "danmu.in.B.{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}", weight: 100%, cluster: "B" }
  ]
}
"#
        );
    }

    #[test]
    fn region_server_has_self_route_and_gateways_to_all() {
        let config = server_config(&spec(vec![
            Gateway {
                region: "A".into(),
                port: 7222,
            },
            Gateway {
                region: "B".into(),
                port: 7223,
            },
        ]));
        assert!(config.contains("listen: \"127.0.0.1:4223\""), "{config}");
        assert!(config.contains("http: \"127.0.0.1:8223\""), "{config}");
        assert!(
            config.contains("websocket { listen: \"127.0.0.1:4243\", no_tls: true }"),
            "{config}"
        );
        assert!(
            config.contains(r#"routes: ["nats://127.0.0.1:6223"]"#),
            "{config}"
        );
        assert!(
            config.contains(r#"{ name: "A", urls: ["nats://127.0.0.1:7222"] }"#),
            "{config}"
        );
        assert!(config.contains(r#"cluster: "A""#) && config.contains(r#"cluster: "B""#));
    }

    #[test]
    fn standalone_server_names_its_cluster_without_routes() {
        let config = server_config(&spec(vec![]));
        assert!(config.contains("cluster { name: \"B\" }"), "{config}");
        assert!(!config.contains("gateway"), "{config}");
        assert!(!config.contains("routes"), "{config}");
        assert!(config.contains(r#"cluster: "B""#) && !config.contains(r#"cluster: "A""#));
    }

    #[test]
    fn paths_are_quoted() {
        let mut s = spec(vec![]);
        s.store_dir = r#"/tmp/a "b"\c"#.into();
        assert!(server_config(&s).contains(r#"store_dir: "/tmp/a \"b\"\\c""#));
    }
}

//! The NATS permissions of every role of the fabric, on the Rust side: the same lists the Helm
//! chart renders (`charts/danmu/templates/nats-auth.yaml`), so the test servers and `local-nats`
//! run the fabric under the chart's permissions. `tests/tests/chart_fabric.rs` checks that the
//! chart renders exactly these lists for every region's values file.
//!
//! Shapes and rules are nats-server's authorization (docs.nats.io, "Authorization"): a user's
//! `permissions` has `publish` and `subscribe`, each with `allow` and `deny` subject lists
//! (wildcards allowed; deny wins over allow; a missing `allow` allows everything not denied), and
//! `allow_responses: true` lets a user publish one reply to each request it received. Publish
//! permissions are checked on the subject **after** the account's subject mapping: a publish on
//! `danmu.push.<rest>` is checked as `danmu.in.<region>.<rest>`, so whoever may publish on
//! `danmu.push` needs the mapped subject too.

use serde_json::{Map, Value, json};

/// The roles that connect to NATS, one nkey user each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A gateway whose demo echo (`upstream.echo_to_room`) is off, as in the chart's default.
    Gateway,
    /// A gateway with the demo echo on: may also publish low-priority room messages.
    GatewayEcho,
    Distributor,
    Control,
    /// A business publisher (`natsAuth.publishers[]`).
    Publisher,
}

impl Role {
    /// Every role, in a fixed order.
    pub const ALL: [Role; 5] = [
        Role::Gateway,
        Role::GatewayEcho,
        Role::Distributor,
        Role::Control,
        Role::Publisher,
    ];

    /// A short name for files and logs: `gateway`, `gateway-echo`, `distributor`, `control`,
    /// `publisher`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::GatewayEcho => "gateway-echo",
            Role::Distributor => "distributor",
            Role::Control => "control",
            Role::Publisher => "publisher",
        }
    }
}

/// One direction's subject lists. An empty `allow` is left out of the rendered permissions
/// (nats-server then allows everything not denied); an empty `deny` too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

/// A user's `permissions` block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Rules,
    pub subscribe: Rules,
    /// `allow_responses: true`: may reply to requests it received (control answers
    /// `danmu.online.query`).
    pub allow_responses: bool,
}

impl Permissions {
    /// The block as nats-server's config takes it (and as the chart renders it with
    /// `toRawJson`): `{"publish":{"allow":[...],"deny":[...]},"subscribe":{...},
    /// "allow_responses":true}`, empty lists and a false `allow_responses` left out.
    pub fn to_json(&self) -> Value {
        let rules = |r: &Rules| {
            let mut map = Map::new();
            if !r.allow.is_empty() {
                map.insert("allow".into(), json!(r.allow));
            }
            if !r.deny.is_empty() {
                map.insert("deny".into(), json!(r.deny));
            }
            Value::Object(map)
        };
        let mut map = Map::new();
        map.insert("publish".into(), rules(&self.publish));
        map.insert("subscribe".into(), rules(&self.subscribe));
        if self.allow_responses {
            map.insert("allow_responses".into(), Value::Bool(true));
        }
        Value::Object(map)
    }
}

/// The nodes KV bucket's subjects (gateways report, control reads and removes).
const NODES_KV: &str = "$KV.danmu_nodes.>";
/// JetStream API and acks: every service uses JetStream.
const JETSTREAM: [&str; 2] = ["$JS.API.>", "$JS.ACK.>"];

/// The name of the test business publisher (the chart's `natsAuth.publishers[].name`; the
/// chart tests render `backend` too).
pub const TEST_PUBLISHER: &str = "backend";

/// Where a service role's replies arrive: its own inbox prefix
/// (`danmu_runtime::nats::inbox_prefix`, the services' `nats_inbox_prefix` default), so no
/// other user can read them. Business publishers have theirs under [`publisher_inbox_prefix`].
pub fn service_inbox_prefix(role: Role) -> String {
    let service = match role {
        Role::Gateway | Role::GatewayEcho => "gateway",
        Role::Distributor => "distributor",
        Role::Control => "control",
        Role::Publisher => unreachable!("publishers have their own prefix, by name"),
    };
    danmu_runtime::nats::inbox_prefix(service)
}

/// Where the business publisher `name` must have its client put its replies: `_INBOX.<name>`
/// (nats.go `nats.CustomInboxPrefix`, async-nats `ConnectOptions::custom_inbox_prefix`). Its
/// user may subscribe there and nowhere else under `_INBOX`, so it reads its own replies only.
pub fn publisher_inbox_prefix(name: &str) -> String {
    format!("_INBOX.{name}")
}

/// The user of `role`'s inbox prefix: [`service_inbox_prefix`], or the test publisher's.
pub fn inbox_prefix(role: Role) -> String {
    match role {
        Role::Publisher => publisher_inbox_prefix(TEST_PUBLISHER),
        service => service_inbox_prefix(service),
    }
}

/// Purging the offline stream: the gateway's one exception to [`stream_admin_subjects`].
pub const OFFLINE_PURGE: &str = "$JS.API.STREAM.PURGE.DANMU_OFFLINE";

/// The JetStream API calls that create, change or remove the push streams of `regions` and the
/// offline stream: only the distributor, which owns them, may make them. (Gateways and control
/// may create the nodes KV bucket, whichever starts first.)
pub fn stream_admin_subjects(regions: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for op in ["CREATE", "UPDATE", "DELETE", "PURGE"] {
        for region in regions {
            let region = region.to_uppercase();
            out.push(format!("$JS.API.STREAM.{op}.PUSH_LO_{region}"));
            out.push(format!("$JS.API.STREAM.{op}.PUSH_HI_{region}"));
        }
        out.push(format!("$JS.API.STREAM.{op}.DANMU_OFFLINE"));
    }
    out
}

fn strings(subjects: &[&str]) -> Vec<String> {
    subjects.iter().map(|s| (*s).to_owned()).collect()
}

/// The permissions of `role` in `region` of a fabric of `regions` (all of them, `region`
/// included): the chart's lists for that region, item for item.
pub fn permissions(role: Role, region: &str, regions: &[&str]) -> Permissions {
    match role {
        Role::Gateway | Role::GatewayEcho => {
            let mut allow = vec![
                "danmu.upstream.>".to_owned(),
                format!("danmu.presence.{region}.>"),
                format!("danmu.online.report.{region}"),
                "danmu.online.query".to_owned(),
                "_DANMU_CONFIRM.>".to_owned(),
                NODES_KV.to_owned(),
            ];
            allow.extend(strings(&JETSTREAM));
            if role == Role::GatewayEcho {
                // The demo echo publishes low-priority room messages (and so their mapped
                // ingest subjects).
                allow.push("danmu.push.lo.room.*".to_owned());
                allow.push(format!("danmu.in.{region}.lo.room.*"));
            }
            let mut deny = strings(&[
                "danmu.push.hi.>",
                "danmu.in.*.hi.>",
                "danmu.edge.>",
                "danmu.hist.>",
                "danmu.offline.>",
            ]);
            // The gateway removes the offline pushes it handed to a connecting user with a
            // purge of DANMU_OFFLINE filtered to the user's subject (gateway/src/offline.rs);
            // nats-server cannot tell that from a whole purge, so the gateway may purge it.
            deny.extend(
                stream_admin_subjects(regions)
                    .into_iter()
                    .filter(|s| s != OFFLINE_PURGE),
            );
            Permissions {
                publish: Rules { allow, deny },
                subscribe: Rules {
                    allow: vec![
                        "danmu.edge.>".to_owned(),
                        format!("danmu.online.totals.{region}"),
                        format!("{}.>", service_inbox_prefix(role)),
                    ],
                    deny: Vec::new(),
                },
                allow_responses: false,
            }
        }
        Role::Distributor => {
            let mut allow = vec![
                "danmu.edge.>".to_owned(),
                format!("danmu.hist.{region}.>"),
                "danmu.offline.>".to_owned(),
            ];
            allow.extend(strings(&JETSTREAM));
            Permissions {
                publish: Rules {
                    allow,
                    deny: strings(&[
                        "danmu.push.>",
                        "danmu.in.>",
                        "danmu.upstream.>",
                        "danmu.presence.>",
                    ]),
                },
                subscribe: Rules {
                    allow: vec![
                        "_DANMU_CONFIRM.>".to_owned(),
                        format!("{}.>", service_inbox_prefix(role)),
                    ],
                    deny: Vec::new(),
                },
                allow_responses: false,
            }
        }
        Role::Control => {
            let mut allow = vec![
                format!("danmu.online.totals.{region}"),
                "danmu.presence.*.exit.*".to_owned(),
                NODES_KV.to_owned(),
            ];
            allow.extend(strings(&JETSTREAM));
            let mut deny = strings(&["danmu.push.>", "danmu.in.>", "danmu.edge.>"]);
            deny.extend(stream_admin_subjects(regions));
            Permissions {
                publish: Rules { allow, deny },
                subscribe: Rules {
                    allow: vec![
                        "danmu.online.report.*".to_owned(),
                        "danmu.online.query".to_owned(),
                        format!("{}.>", service_inbox_prefix(role)),
                    ],
                    deny: Vec::new(),
                },
                allow_responses: true,
            }
        }
        Role::Publisher => publisher_permissions(TEST_PUBLISHER, region),
    }
}

/// The permissions of the business publisher `name` in `region` (one user per entry of the
/// chart's `natsAuth.publishers`): push, ask for online counts and stream info, read upstream
/// and presence events, and read replies under its own [`publisher_inbox_prefix`] only. It may
/// publish into no inbox: with `_INBOX.>` it could answer other clients' requests in their
/// services' place.
pub fn publisher_permissions(name: &str, region: &str) -> Permissions {
    Permissions {
        publish: Rules {
            allow: vec![
                "danmu.push.>".to_owned(),
                format!("danmu.in.{region}.>"),
                "danmu.online.query".to_owned(),
                "$JS.API.STREAM.INFO.>".to_owned(),
            ],
            deny: strings(&["danmu.edge.>"]),
        },
        subscribe: Rules {
            allow: vec![
                "danmu.upstream.>".to_owned(),
                "danmu.presence.>".to_owned(),
                format!("{}.>", publisher_inbox_prefix(name)),
            ],
            deny: strings(&["danmu.edge.>", "danmu.hist.>", "danmu.offline.>"]),
        },
        allow_responses: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_may_not_write_push_streams_and_echo_adds_low_room_messages() {
        let gateway = permissions(Role::Gateway, "B", &["A", "B"]);
        assert!(gateway.publish.deny.contains(&"danmu.in.*.hi.>".to_owned()));
        assert!(
            gateway
                .publish
                .deny
                .contains(&"$JS.API.STREAM.DELETE.PUSH_LO_A".to_owned())
        );
        assert!(
            !gateway
                .publish
                .allow
                .iter()
                .any(|s| s.starts_with("danmu.push"))
        );
        assert!(!gateway.publish.deny.contains(&OFFLINE_PURGE.to_owned()));
        assert!(
            permissions(Role::Control, "B", &["A", "B"])
                .publish
                .deny
                .contains(&OFFLINE_PURGE.to_owned())
        );
        let echo = permissions(Role::GatewayEcho, "B", &["A", "B"]);
        assert!(
            echo.publish
                .allow
                .contains(&"danmu.in.B.lo.room.*".to_owned())
        );
        // Nobody may read or write every inbox: each reads its own prefix's replies.
        for role in Role::ALL {
            let p = permissions(role, "A", &["A"]);
            let everything = [p.publish.allow, p.subscribe.allow].concat();
            assert!(
                !everything.iter().any(|s| s == "_INBOX.>"),
                "{}: {everything:?}",
                role.name()
            );
            assert!(
                everything.contains(&format!("{}.>", inbox_prefix(role))),
                "{}",
                role.name()
            );
        }
        let json = permissions(Role::Control, "A", &["A"]).to_json();
        assert_eq!(json["allow_responses"], true);
        assert!(json["subscribe"].get("deny").is_none());
    }
}

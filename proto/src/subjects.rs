//! NATS subject and stream names: the contract between business backends, distributors and
//! gateways. `docs/architecture.md` explains the design; this module is its single source.
//!
//! ```text
//! business publishes   danmu.push.<prio>.<scope>.<target>        (any region, core or JetStream)
//! cluster mapping  ->  danmu.in.<region>.<prio>.<scope>.<target>  (captured by PUSH_<PRIO>_<REGION>)
//! distributor      ->  danmu.edge.<prio>.<scope>.<target>         (core NATS, EdgeBatch)
//! gateway          ->  danmu.upstream.<room>                      (core NATS, viewers' danmu)
//! ```
//!
//! Each region's NATS cluster maps the business subject onto its own region's ingest subjects,
//! so a message is stored once, in the region where it was published, and its edge batch crosses
//! each inter-region link once (NATS gateways forward one copy per interested cluster).

use std::fmt;

/// Subject prefix every business publish starts with.
pub const PUSH_PREFIX: &str = "danmu.push";
/// Prefix of the region-qualified ingest subjects the push streams capture.
pub const INGEST_PREFIX: &str = "danmu.in";
/// Prefix of the subjects distributors publish pre-encoded batches on.
pub const EDGE_PREFIX: &str = "danmu.edge";
/// The stream holding user-scope high-priority pushes for users who were offline.
pub const OFFLINE_STREAM: &str = "DANMU_OFFLINE";

/// What the offline stream captures.
pub const OFFLINE_FILTER: &str = "danmu.offline.user.*";

/// `danmu.offline.user.<uid>`: where an offline user's pushes wait for the next connect.
pub fn offline(uid: u64) -> String {
    format!("danmu.offline.user.{uid}")
}

/// Prefix of the subjects gateways publish viewers' accepted danmu on, for business.
pub const UPSTREAM_PREFIX: &str = "danmu.upstream";
/// What a business consumer of every room's upstream danmu subscribes to.
pub const UPSTREAM_FILTER: &str = "danmu.upstream.>";

/// `danmu.upstream.<room>`: a viewer's danmu that passed the gateway's moderation (JSON, see
/// `crate::upstream::UpstreamDanmu`).
pub fn upstream(room: u64) -> String {
    format!("{UPSTREAM_PREFIX}.{room}")
}

/// Default JetStream KV bucket gateways report their health into.
pub const NODES_BUCKET: &str = "danmu_nodes";
/// Target token used for the `all` scope, which has no target of its own.
pub const ALL_TARGET: &str = "_";

/// Delivery priority. Each has its own stream, consumer and distributor worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Priority {
    /// Danmu, gifts, likes: aggregated, shed first under congestion.
    Low,
    /// Invitations, notices: never aggregated for long, never shed.
    High,
}

impl Priority {
    /// Both priorities, high first.
    pub const ALL: [Priority; 2] = [Priority::High, Priority::Low];

    /// The subject token: `hi` or `lo`.
    pub fn token(self) -> &'static str {
        match self {
            Priority::Low => "lo",
            Priority::High => "hi",
        }
    }

    /// Parses `hi` or `lo`.
    pub fn from_token(token: &str) -> Option<Self> {
        match token {
            "lo" => Some(Priority::Low),
            "hi" => Some(Priority::High),
            _ => None,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// Who a push is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Every member of a room.
    Room(u64),
    /// Every connection of a user, in every region.
    User(u64),
    /// One device (buvid).
    Device(String),
    /// Every connection on one region's gateways.
    Region(String),
    /// Everyone.
    All,
}

impl Scope {
    /// Parses the `<scope>.<target>` tokens of a subject. Only the canonical spelling is
    /// accepted, the one [`Display`](fmt::Display) writes: rooms and users in plain decimal
    /// (no sign, no leading zero), `all` with target `_`. Otherwise `room.+7` and `room.07`
    /// would reach room 7 while a NATS permission or mapping written for `danmu.push.*.room.7`
    /// never sees them.
    pub fn from_tokens(scope: &str, target: &str) -> Result<Self, SubjectError> {
        let bad = || SubjectError::BadTarget(format!("{scope}.{target}"));
        let number = || {
            target
                .parse::<u64>()
                .ok()
                .filter(|n| n.to_string() == target)
                .ok_or_else(bad)
        };
        match scope {
            "room" => Ok(Scope::Room(number()?)),
            "user" => Ok(Scope::User(number()?)),
            "device" if is_valid_token(target) => Ok(Scope::Device(target.to_owned())),
            "region" if is_valid_token(target) => Ok(Scope::Region(target.to_owned())),
            "all" if target == ALL_TARGET => Ok(Scope::All),
            "device" | "region" | "all" => Err(bad()),
            other => Err(SubjectError::UnknownScope(other.to_owned())),
        }
    }

    fn write_tokens(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Room(room) => write!(f, "room.{room}"),
            Scope::User(uid) => write!(f, "user.{uid}"),
            Scope::Device(device) => write!(f, "device.{device}"),
            Scope::Region(region) => write!(f, "region.{region}"),
            Scope::All => write!(f, "all.{ALL_TARGET}"),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_tokens(f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
/// Why a subject is not one of ours.
pub enum SubjectError {
    /// Wrong prefix or token count.
    #[error("subject `{0}` is not danmu.in.<region>.<hi|lo>.<scope>.<target>")]
    Malformed(String),
    /// A scope token we do not know.
    #[error("unknown scope `{0}` (expected room, user, device, region or all)")]
    UnknownScope(String),
    /// A target that does not fit its scope.
    #[error(
        "bad target `{0}`: rooms and users are unsigned integers in plain decimal (no sign, no leading zero); devices and regions are single subject tokens; `all` takes `_`"
    )]
    BadTarget(String),
}

/// A NATS subject token must be non-empty and free of separators and wildcards.
pub fn is_valid_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| !matches!(b, b'.' | b'*' | b'>' | b' ' | b'\t' | b'\r' | b'\n'))
}

/// `danmu.push.<prio>.<scope>.<target>`: what business backends publish on.
pub fn push(priority: Priority, scope: &Scope) -> String {
    format!("{PUSH_PREFIX}.{priority}.{scope}")
}

/// `danmu.in.<region>.<prio>.<scope>.<target>`: what the region's cluster mapping produces.
pub fn ingest(region: &str, priority: Priority, scope: &Scope) -> String {
    format!("{INGEST_PREFIX}.{region}.{priority}.{scope}")
}

/// The filter a push stream captures: `danmu.in.<region>.<prio>.>`.
pub fn ingest_filter(region: &str, priority: Priority) -> String {
    format!("{INGEST_PREFIX}.{region}.{priority}.>")
}

/// Stream name for a region and priority: `PUSH_LO_A`, `PUSH_HI_A`. Stream names are unique
/// across a supercluster, hence the region suffix.
pub fn push_stream(region: &str, priority: Priority) -> String {
    let prio = match priority {
        Priority::Low => "LO",
        Priority::High => "HI",
    };
    format!("PUSH_{prio}_{}", region.to_ascii_uppercase())
}

/// `danmu.edge.<prio>.<scope>.<target>`: where the distributor publishes a scope's batches.
/// The priority is part of the subject so gateways receive each priority on its own
/// subscription (and NATS connection): a low-priority flood never queues ahead of high priority.
pub fn edge(priority: Priority, scope: &Scope) -> String {
    format!("{EDGE_PREFIX}.{priority}.{scope}")
}

/// `danmu.presence.<region>.<enter|exit>.<room>`: a connection entered or left a room on one of
/// the region's gateways. Business subscribes to `danmu.presence.>`, to `danmu.presence.*.exit.>`,
/// or to one room's events everywhere with `danmu.presence.*.*.<room>`.
pub fn presence(region: &str, kind: &str, room: u64) -> String {
    format!("danmu.presence.{region}.{kind}.{room}")
}

/// What a region's presence stream captures: `danmu.presence.<region>.>`.
pub fn presence_filter(region: &str) -> String {
    format!("danmu.presence.{region}.>")
}

/// The region's stream of enter and exit events (`PRESENCE_A`), kept for business consumers and
/// for control's sweeper, which exits the connections of a gateway that died.
pub fn presence_stream(region: &str) -> String {
    format!("PRESENCE_{}", region.to_ascii_uppercase())
}

/// What gateways' online reports are published on, all regions: control sums them.
pub const ONLINE_REPORTS: &str = "danmu.online.report.*";

/// `danmu.online.report.<region>`: a gateway's per-room member counts (`OnlineReport`).
pub fn online_report(region: &str) -> String {
    format!("danmu.online.report.{region}")
}

/// `danmu.online.totals.<region>`: per-room counts summed over every gateway of every region
/// (`OnlineTotals`), published by the region's control for its own gateways.
pub fn online_totals(region: &str) -> String {
    format!("danmu.online.totals.{region}")
}

/// Request/reply subject where business asks for online counts (JSON; see `presence`).
pub const ONLINE_QUERY: &str = "danmu.online.query";

/// A parsed ingest subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingest {
    /// Region whose cluster stored it.
    pub region: String,
    /// Which stream family.
    pub priority: Priority,
    /// Who it is for.
    pub scope: Scope,
}

/// Parses `danmu.in.<region>.<prio>.<scope>.<target>`.
pub fn parse_ingest(subject: &str) -> Result<Ingest, SubjectError> {
    let malformed = || SubjectError::Malformed(subject.to_owned());
    let rest = subject
        .strip_prefix(INGEST_PREFIX)
        .and_then(|r| r.strip_prefix('.'))
        .ok_or_else(malformed)?;
    let mut tokens = rest.split('.');
    let (Some(region), Some(prio), Some(scope), Some(target), None) = (
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
    ) else {
        return Err(malformed());
    };
    let priority = Priority::from_token(prio).ok_or_else(malformed)?;
    Ok(Ingest {
        region: region.to_owned(),
        priority,
        scope: Scope::from_tokens(scope, target)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_have_the_documented_shape() {
        let room = Scope::Room(1001);
        assert_eq!(push(Priority::Low, &room), "danmu.push.lo.room.1001");
        assert_eq!(
            ingest("A", Priority::High, &room),
            "danmu.in.A.hi.room.1001"
        );
        assert_eq!(edge(Priority::Low, &room), "danmu.edge.lo.room.1001");
        assert_eq!(edge(Priority::High, &Scope::All), "danmu.edge.hi.all._");
        assert_eq!(ingest_filter("B", Priority::Low), "danmu.in.B.lo.>");
        assert_eq!(push_stream("a", Priority::Low), "PUSH_LO_A");
        assert_eq!(presence("A", "exit", 1001), "danmu.presence.A.exit.1001");
        assert_eq!(presence_filter("A"), "danmu.presence.A.>");
        assert_eq!(presence_stream("a"), "PRESENCE_A");
        assert_eq!(online_report("B"), "danmu.online.report.B");
        assert_eq!(online_totals("A"), "danmu.online.totals.A");
        assert_eq!(upstream(1001), "danmu.upstream.1001");
    }

    #[test]
    fn ingest_subjects_round_trip() {
        for scope in [
            Scope::Room(7),
            Scope::User(42),
            Scope::Device("buvid-x".into()),
            Scope::Region("B".into()),
            Scope::All,
        ] {
            let parsed = parse_ingest(&ingest("A", Priority::Low, &scope)).unwrap();
            assert_eq!(parsed.scope, scope);
            assert_eq!(parsed.region, "A");
            assert_eq!(parsed.priority, Priority::Low);
        }
    }

    /// `room.+7` and `room.07` parsed as room 7, past any rule written for `room.7`.
    #[test]
    fn only_canonical_targets_are_accepted() {
        for subject in [
            "danmu.in.A.lo.room.+7",
            "danmu.in.A.lo.room.07",
            "danmu.in.A.lo.room.00",
            "danmu.in.A.hi.user.+1",
            "danmu.in.A.hi.user.01",
            "danmu.in.A.lo.all.x",
            "danmu.in.A.lo.all.",
        ] {
            assert!(
                matches!(parse_ingest(subject), Err(SubjectError::BadTarget(_))),
                "{subject}: {:?}",
                parse_ingest(subject)
            );
        }
        assert_eq!(
            parse_ingest("danmu.in.A.lo.room.0").unwrap().scope,
            Scope::Room(0)
        );
        assert_eq!(
            parse_ingest(&format!("danmu.in.A.lo.room.{}", u64::MAX))
                .unwrap()
                .scope,
            Scope::Room(u64::MAX)
        );
        assert_eq!(
            parse_ingest("danmu.in.A.lo.all._").unwrap().scope,
            Scope::All
        );
    }

    #[test]
    fn bad_ingest_subjects_are_rejected_with_the_reason() {
        assert!(matches!(
            parse_ingest("danmu.in.A.lo.room.abc"),
            Err(SubjectError::BadTarget(_))
        ));
        assert!(matches!(
            parse_ingest("danmu.in.A.lo.planet.3"),
            Err(SubjectError::UnknownScope(_))
        ));
        assert!(matches!(
            parse_ingest("danmu.in.A.mid.room.3"),
            Err(SubjectError::Malformed(_))
        ));
        assert!(matches!(
            parse_ingest("danmu.in.A.lo.room.3.extra"),
            Err(SubjectError::Malformed(_))
        ));
        assert!(matches!(
            parse_ingest("other.in.A.lo.room.3"),
            Err(SubjectError::Malformed(_))
        ));
    }
}

//! Deny lists (uids, IP addresses and CIDR blocks) and the sensitive-word filter. Plain code:
//! built once from the configuration, then read-only.

use std::collections::HashSet;
use std::net::IpAddr;

use aho_corasick::AhoCorasick;
use ipnet::IpNet;

use super::config::WordAction;

/// Parses addresses and CIDR blocks; a bare address is a block of one.
pub fn parse_nets(entries: &[String]) -> Result<Vec<IpNet>, String> {
    entries
        .iter()
        .map(|entry| {
            let entry = entry.trim();
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| format!("`{entry}` is neither an IP address nor a CIDR block"))
        })
        .collect()
}

#[derive(Debug, Default)]
pub struct DenyList {
    uids: HashSet<u64>,
    nets: Vec<IpNet>,
}

impl DenyList {
    pub fn new(uids: &[u64], nets: Vec<IpNet>) -> Self {
        DenyList {
            uids: uids.iter().copied().collect(),
            nets,
        }
    }

    pub fn denies_uid(&self, uid: u64) -> bool {
        self.uids.contains(&uid)
    }

    /// IPv4 peers reaching a dual-stack listener appear as `::ffff:a.b.c.d`; they match IPv4
    /// entries.
    pub fn denies_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }
}

/// What the word filter makes of a text.
#[derive(Debug, PartialEq, Eq)]
pub enum Filtered {
    Clean,
    /// The text with every matched character replaced by `*`.
    Masked(String),
    Blocked,
}

/// Case-insensitive (Unicode lowercase) substring matching with one Aho-Corasick automaton.
#[derive(Debug)]
pub struct WordFilter {
    matcher: Option<AhoCorasick>,
    action: WordAction,
}

impl WordFilter {
    pub fn new(words: &[String], action: WordAction) -> Result<Self, aho_corasick::BuildError> {
        let folded: Vec<String> = words
            .iter()
            .map(|w| fold(w.trim()).0)
            .filter(|w| !w.is_empty())
            .collect();
        let matcher = if folded.is_empty() {
            None
        } else {
            Some(AhoCorasick::new(&folded)?)
        };
        Ok(WordFilter { matcher, action })
    }

    pub fn check(&self, text: &str) -> Filtered {
        let Some(matcher) = &self.matcher else {
            return Filtered::Clean;
        };
        let (folded, owner) = fold(text);
        if !matcher.is_match(&folded) {
            return Filtered::Clean;
        }
        if self.action == WordAction::Reject {
            return Filtered::Blocked;
        }
        // Overlapping matches: "ab" and "bc" in "abc" mask all three characters.
        let mut masked = vec![false; text.chars().count()];
        for found in matcher.find_overlapping_iter(&folded) {
            for flag in &mut masked[owner[found.start()]..=owner[found.end() - 1]] {
                *flag = true;
            }
        }
        Filtered::Masked(
            text.chars()
                .zip(masked)
                .map(|(c, mask)| if mask { '*' } else { c })
                .collect(),
        )
    }
}

/// Lowercases `text` and says, for each byte of the result, which character of `text` it came
/// from (lowercasing may change lengths, e.g. `İ` becomes two characters).
fn fold(text: &str) -> (String, Vec<usize>) {
    let mut folded = String::with_capacity(text.len());
    let mut owner = Vec::with_capacity(text.len());
    for (index, c) in text.chars().enumerate() {
        let before = folded.len();
        folded.extend(c.to_lowercase());
        owner.resize(folded.len(), index);
        debug_assert!(folded.len() > before);
    }
    (folded, owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str], action: WordAction) -> WordFilter {
        let list: Vec<String> = list.iter().map(|w| w.to_string()).collect();
        WordFilter::new(&list, action).unwrap()
    }

    #[test]
    fn rejects_any_case() {
        let filter = words(&["spam", "坏词"], WordAction::Reject);
        assert_eq!(filter.check("hello"), Filtered::Clean);
        assert_eq!(filter.check("buy SPAM now"), Filtered::Blocked);
        assert_eq!(filter.check("SpAmMy"), Filtered::Blocked);
        assert_eq!(filter.check("这是坏词吗"), Filtered::Blocked);
    }

    #[test]
    fn masks_one_star_per_character() {
        let filter = words(&["Spam", "坏词", "ab", "bc"], WordAction::Mask);
        assert_eq!(
            filter.check("SPAM and spam"),
            Filtered::Masked("**** and ****".into())
        );
        assert_eq!(
            filter.check("这是坏词吗"),
            Filtered::Masked("这是**吗".into())
        );
        assert_eq!(filter.check("xabcx"), Filtered::Masked("x***x".into()));
        assert_eq!(filter.check("clean"), Filtered::Clean);
        // Lowercasing that changes length keeps the mask on the original characters.
        let filter = words(&["i\u{307}x"], WordAction::Mask);
        assert_eq!(filter.check("a\u{130}xb"), Filtered::Masked("a**b".into()));
    }

    #[test]
    fn an_empty_list_passes_everything() {
        let filter = words(&["", "  "], WordAction::Reject);
        assert_eq!(filter.check("anything"), Filtered::Clean);
    }

    #[test]
    fn deny_lists_match_uids_addresses_and_blocks() {
        let nets = parse_nets(&[
            "10.1.0.0/16".into(),
            "192.0.2.7".into(),
            "2001:db8::/32".into(),
            "127.0.0.9/24".into(),
        ])
        .unwrap();
        let deny = DenyList::new(&[666], nets);
        assert!(deny.denies_uid(666) && !deny.denies_uid(667));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(deny.denies_ip(ip("10.1.200.3")));
        assert!(!deny.denies_ip(ip("10.2.0.1")));
        assert!(deny.denies_ip(ip("192.0.2.7")));
        assert!(!deny.denies_ip(ip("192.0.2.8")));
        assert!(deny.denies_ip(ip("2001:db8:1::5")));
        assert!(deny.denies_ip(ip("::ffff:10.1.0.1")), "IPv4-mapped IPv6");
        assert!(
            deny.denies_ip(ip("127.0.0.1")),
            "host bits of an entry are ignored"
        );
        assert!(parse_nets(&["10.0.0.0/33".into()]).is_err());
        assert!(parse_nets(&["example.com".into()]).is_err());
    }
}

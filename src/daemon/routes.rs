//! Which relays serve a sender: the routes. Route 0 is the default ([relay] and its
//! [[fallback_relay]]s); route `n + 1` is `[[sender_relay]]` number `n` (its relay, then its
//! own fallbacks). A message goes by its envelope sender as relayq sends it (after local-
//! sender rewriting; bounces and delay warnings by theirs): a full address listed in some
//! entry wins, then the sender's domain (`*@domain` or `@domain`), then the default, as
//! Postfix's `sender_dependent_relayhost_maps` looks up. Case does not matter.
//!
//! This file owns the sender patterns (`SenderMap`: their syntax, that no two entries claim
//! the same one, the lookup) and the daemon's ready queue kept per route (`Ready`): a worker
//! serves one route, its connections carry only that route's mail, and a route's failover
//! never reaches another route's relays or credentials.

use super::worker::Job;
use crate::config::SenderRelay;
use std::collections::{HashMap, VecDeque};

/// One sender pattern, normalised (lower case).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// `alerts@example.org`: that address.
    Address(String),
    /// `*@shop.example` or `@shop.example`: any address at that domain.
    Domain(String),
}

impl Pattern {
    /// Parse one `senders` entry; Err says what is wrong with it.
    pub fn parse(s: &str) -> Result<Pattern, String> {
        let t = s.trim();
        let domain = t.strip_prefix("*@").or_else(|| t.strip_prefix('@'));
        if let Some(d) = domain {
            if crate::address::is_valid_domain(d) && !d.contains('*') {
                return Ok(Pattern::Domain(d.to_ascii_lowercase()));
            }
            return Err(format!("{s:?}: {d:?} is not a domain name"));
        }
        if !t.contains('*') && crate::address::is_valid_mailbox(t) {
            return Ok(Pattern::Address(t.to_ascii_lowercase()));
        }
        Err(format!(
            "{s:?} is not a sender pattern: write a full address (alerts@example.org), or a domain as *@example.org or @example.org"
        ))
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pattern::Address(a) => f.write_str(a),
            Pattern::Domain(d) => write!(f, "*@{d}"),
        }
    }
}

/// Envelope sender → route: full addresses first, then domains; route 0 for the rest.
#[derive(Debug, Clone, Default)]
pub struct SenderMap {
    exact: HashMap<String, usize>,
    domains: HashMap<String, usize>,
    /// Each route's patterns as written in run/relay and shown by `relayq status` (route 0:
    /// empty).
    labels: Vec<String>,
}

impl SenderMap {
    /// From the config's `[[sender_relay]]` entries. Err on a malformed pattern, an entry
    /// without any, or one pattern claimed twice (by one entry or two).
    pub fn new(entries: &[SenderRelay]) -> Result<SenderMap, String> {
        let lists: Vec<&[String]> = entries.iter().map(|e| e.senders.as_slice()).collect();
        SenderMap::from_lists(&lists)
    }

    /// From each route's patterns (route `i + 1` for `lists[i]`).
    pub fn from_lists(lists: &[&[String]]) -> Result<SenderMap, String> {
        let mut m = SenderMap {
            labels: vec![String::new()],
            ..SenderMap::default()
        };
        let mut owner: HashMap<Pattern, usize> = HashMap::new();
        for (n, list) in lists.iter().enumerate() {
            if list.is_empty() {
                return Err(format!("[{n}].senders is empty: name at least one sender"));
            }
            let mut label = Vec::new();
            for s in list.iter() {
                let p = Pattern::parse(s).map_err(|e| format!("[{n}].senders: {e}"))?;
                if let Some(o) = owner.insert(p.clone(), n) {
                    let other = if o == n {
                        "twice in this entry".to_string()
                    } else {
                        format!("already in sender_relay[{o}]")
                    };
                    return Err(format!(
                        "[{n}].senders: {p} is {other}: each sender maps to one relay"
                    ));
                }
                label.push(p.to_string());
                match p {
                    Pattern::Address(a) => m.exact.insert(a, n + 1),
                    Pattern::Domain(d) => m.domains.insert(d, n + 1),
                };
            }
            m.labels.push(label.join(","));
        }
        Ok(m)
    }

    /// The route for envelope sender `sender` (0: the default; so is the null sender).
    pub fn route(&self, sender: &str) -> usize {
        if self.exact.is_empty() && self.domains.is_empty() {
            return 0;
        }
        let s = sender.to_ascii_lowercase();
        if let Some(&r) = self.exact.get(&s) {
            return r;
        }
        s.rsplit_once('@')
            .and_then(|(_, d)| self.domains.get(d.trim_end_matches('.')))
            .copied()
            .unwrap_or(0)
    }

    /// Route `r`'s patterns, comma-separated (empty for the default route).
    pub fn label(&self, r: usize) -> &str {
        self.labels.get(r).map_or("", String::as_str)
    }
}

/// The ready queue, one queue per route: a job goes to its sender's route.
#[derive(Default)]
pub(super) struct Ready {
    map: SenderMap,
    queues: Vec<VecDeque<Job>>,
    len: usize,
}

impl Ready {
    pub(super) fn new(map: SenderMap) -> Ready {
        let mut r = Ready::default();
        r.reroute(map);
        r
    }

    /// A new sender map (a reload): every waiting job goes to its route under it.
    pub(super) fn reroute(&mut self, map: SenderMap) {
        let jobs = self.drain_all();
        self.queues = (0..map.labels.len().max(1))
            .map(|_| VecDeque::new())
            .collect();
        self.map = map;
        self.extend(jobs);
    }

    pub(super) fn map(&self) -> &SenderMap {
        &self.map
    }

    fn queue(&mut self, job: &Job) -> &mut VecDeque<Job> {
        let r = self.map.route(&job.env.sender).min(self.queues.len() - 1);
        &mut self.queues[r]
    }

    pub(super) fn push_back(&mut self, job: Job) {
        self.queue(&job).push_back(job);
        self.len += 1;
    }

    pub(super) fn push_front(&mut self, job: Job) {
        self.queue(&job).push_front(job);
        self.len += 1;
    }

    pub(super) fn extend(&mut self, jobs: impl IntoIterator<Item = Job>) {
        for j in jobs {
            self.push_back(j);
        }
    }

    /// The next job of route `r`.
    pub(super) fn pop_front(&mut self, r: usize) -> Option<Job> {
        let j = self.queues.get_mut(r)?.pop_front()?;
        self.len -= 1;
        Some(j)
    }

    pub(super) fn drain_all(&mut self) -> Vec<Job> {
        self.len = 0;
        self.queues.iter_mut().flat_map(|q| q.drain(..)).collect()
    }

    /// Jobs waiting, all routes.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Jobs waiting for route `r`.
    pub(super) fn len_of(&self, r: usize) -> usize {
        self.queues.get(r).map_or(0, VecDeque::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(lists: &[&[&str]]) -> Result<SenderMap, String> {
        let owned: Vec<Vec<String>> = lists
            .iter()
            .map(|l| l.iter().map(|s| s.to_string()).collect())
            .collect();
        let refs: Vec<&[String]> = owned.iter().map(Vec::as_slice).collect();
        SenderMap::from_lists(&refs)
    }

    #[test]
    fn the_most_specific_pattern_wins_case_insensitively() {
        let m = map(&[
            &["*@shop.example", "@example.net"],
            &["alerts@example.org", "ops@shop.example"],
        ])
        .unwrap();
        assert_eq!(m.route("orders@shop.example"), 1);
        assert_eq!(m.route("Orders@SHOP.Example"), 1);
        assert_eq!(m.route("x@example.net"), 1);
        assert_eq!(m.route("ops@shop.example"), 2, "address before domain");
        assert_eq!(m.route("OPS@Shop.Example"), 2);
        assert_eq!(m.route("alerts@example.org"), 2);
        assert_eq!(
            m.route("other@example.org"),
            0,
            "the default takes the rest"
        );
        assert_eq!(
            m.route("x@sub.shop.example"),
            0,
            "a domain is that domain only"
        );
        assert_eq!(m.route(""), 0, "the null sender");
        assert_eq!(m.route("root"), 0);
        assert_eq!(m.label(1), "*@shop.example,*@example.net");
        assert_eq!(m.label(0), "");
    }

    #[test]
    fn malformed_or_overlapping_patterns_are_refused() {
        for bad in [
            "",
            "shop.example",
            "*",
            "*@",
            "@",
            "a*@x.example",
            "*@*.example",
            "a@b@c",
            "a b@x.example",
        ] {
            let e = map(&[&[bad]]).unwrap_err();
            assert!(e.contains("senders"), "{bad}: {e}");
        }
        let e = map(&[&["*@shop.example"], &["@SHOP.example"]]).unwrap_err();
        assert!(
            e.contains("*@shop.example is already in sender_relay[0]"),
            "{e}"
        );
        let e = map(&[&["a@x.example", "A@x.example"]]).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        assert!(map(&[&[]]).unwrap_err().contains("empty"));
        // An address and its domain in two entries do not overlap: the address wins.
        assert!(map(&[&["*@x.example"], &["a@x.example"]]).is_ok());
    }
}

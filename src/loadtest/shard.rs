//! `--shard I/N` and `--source-ips`: how one load generator takes its slice of a run that
//! several generators share. A shard is a deterministic subset of the run's session ids, so
//! the union of the N shards is exactly the unsharded run: the same ids, keys, start times
//! and sequence numbers.
//!
//! Sessions sharing an affinity key stay on one shard (session `i` has key `k{i mod keys}`,
//! and key `k{j}` belongs to shard `j mod N`), so no key is driven from two generators; with
//! no keys, session `i` belongs to shard `i mod N`. Sequence numbers of session `i` start at
//! `i · 2^32` (see `session.rs`), so no two sessions of any shard share a number.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Most shards one run may be split into: far more generators than anyone runs, and small
/// enough that a typo like `3/40000` is caught.
pub const MAX_SHARDS: usize = 10_000;
/// Most addresses `--source-ips` may name (a /20): each gives ~28,000 ephemeral ports to one
/// target port, so 4,096 cover far more connections than a process can hold.
pub const MAX_SOURCE_IPS: u32 = 4096;

/// The `I`-th of `N` slices (`I` from 0, like a Kubernetes Job's completion index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole run.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Whether session `id` of a run with `keys` affinity keys belongs to this shard.
    pub fn owns(&self, id: usize, keys: usize) -> bool {
        let group = if keys > 0 { id % keys } else { id };
        group % self.count == self.index
    }

    /// This shard's session ids among `connections`, in order.
    pub fn ids(&self, connections: usize, keys: usize) -> impl Iterator<Item = usize> + '_ {
        (0..connections).filter(move |&id| self.owns(id, keys))
    }

    /// Refuses a split that leaves this shard without sessions (fewer sessions or keys than
    /// shards), so a mistyped job fails at once instead of reporting an empty run.
    pub fn check(&self, connections: usize, keys: usize) -> Result<(), String> {
        if self.ids(connections, keys).next().is_none() {
            let groups = if keys > 0 {
                format!("{} keys", keys.min(connections))
            } else {
                format!("{connections} sessions")
            };
            return Err(format!(
                "--shard {self}: this shard has no sessions ({groups} split {} ways; sessions \
                 sharing a key stay on one shard)",
                self.count
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Shard, String> {
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}`: write I/N, e.g. 0/4 (the first of 4 shards)"))?;
        let num = |s: &str, what: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("`{text}`: {what} `{s}` is not a whole number"))
        };
        let (index, count) = (num(i, "the index")?, num(n, "the count")?);
        if count == 0 {
            return Err(format!("`{text}`: the count of shards must be at least 1"));
        }
        if count > MAX_SHARDS {
            return Err(format!("`{text}`: at most {MAX_SHARDS} shards"));
        }
        if index >= count {
            return Err(format!(
                "`{text}`: shards are numbered from 0, so the last of {count} is {}/{count}",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }
}

/// `--source-ips`: local IPv4 addresses a shard's connections are spread over (session `j`
/// of the shard binds the `j mod len`-th one before connecting). Kept as ranges, never
/// expanded into a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIps {
    /// Inclusive ranges, in the order given.
    ranges: Vec<(u32, u32)>,
    len: u32,
    text: String,
}

impl SourceIps {
    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `n mod len`-th address.
    pub fn nth(&self, n: usize) -> Ipv4Addr {
        let mut k = (n % self.len as usize) as u32;
        for &(a, b) in &self.ranges {
            let size = b - a + 1;
            if k < size {
                return Ipv4Addr::from(a + k);
            }
            k -= size;
        }
        unreachable!("k < len")
    }

    /// Every address, in order (at most [`MAX_SOURCE_IPS`]).
    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.ranges
            .iter()
            .flat_map(|&(a, b)| (a..=b).map(Ipv4Addr::from))
    }

    /// Binds a socket to each address (port 0), so an address this machine does not have
    /// fails here, by name, instead of as thousands of `bind` handshake failures.
    pub fn check_local(&self) -> Result<(), String> {
        for ip in self.iter() {
            let socket = tokio::net::TcpSocket::new_v4()
                .map_err(|e| format!("--source-ips: cannot open a socket: {e}"))?;
            socket
                .bind((ip, 0).into())
                .map_err(|e| format!("--source-ips: {ip} is not usable here: {e}"))?;
        }
        Ok(())
    }
}

impl fmt::Display for SourceIps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for SourceIps {
    type Err = String;

    /// Comma-separated items, each `A.B.C.D`, `A.B.C.D-E.F.G.H` (inclusive) or `A.B.C.D/P`.
    fn from_str(text: &str) -> Result<SourceIps, String> {
        let ip = |s: &str| {
            s.trim()
                .parse::<Ipv4Addr>()
                .map(u32::from)
                .map_err(|_| format!("`{}` is not an IPv4 address", s.trim()))
        };
        let mut ranges = Vec::new();
        let mut len: u64 = 0;
        for item in text.split(',') {
            let item = item.trim();
            let (a, b) =
                if let Some((a, b)) = item.split_once('-') {
                    let (a, b) = (ip(a)?, ip(b)?);
                    if a > b {
                        return Err(format!("`{item}`: the range ends before it starts"));
                    }
                    (a, b)
                } else if let Some((a, p)) = item.split_once('/') {
                    let prefix: u32 =
                        p.trim().parse().ok().filter(|p| *p <= 32).ok_or_else(|| {
                            format!("`{item}`: the prefix length must be 0 to 32")
                        })?;
                    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
                    let base = ip(a)? & mask;
                    (base, base | !mask)
                } else if item.is_empty() {
                    return Err("an empty item: write A.B.C.D, A.B.C.D-E.F.G.H or A.B.C.D/P".into());
                } else {
                    let a = ip(item)?;
                    (a, a)
                };
            if [a, b].iter().any(|&x| Ipv4Addr::from(x).is_unspecified()) {
                return Err(format!("`{item}`: 0.0.0.0 is not a source address"));
            }
            len += u64::from(b - a) + 1;
            if len > u64::from(MAX_SOURCE_IPS) {
                return Err(format!(
                    "`{text}`: at least {len} addresses, at most {MAX_SOURCE_IPS} (a /20); one address \
                     already gives ~28,000 connections to one target port"
                ));
            }
            ranges.push((a, b));
        }
        Ok(SourceIps {
            ranges,
            len: len as u32,
            text: text.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_parses_and_explains_mistakes() {
        assert_eq!("0/4".parse(), Ok(Shard { index: 0, count: 4 }));
        assert_eq!("3/4".parse(), Ok(Shard { index: 3, count: 4 }));
        let err = |t: &str| t.parse::<Shard>().unwrap_err();
        assert!(err("4/4").contains("numbered from 0, so the last of 4 is 3/4"));
        assert!(err("1/0").contains("at least 1"));
        assert!(err("2").contains("write I/N"));
        assert!(err("a/4").contains("the index `a`"));
        assert!(err("-1/4").contains("not a whole number"));
        assert!(err("0/10001").contains("at most 10000"));
    }

    #[test]
    fn shards_partition_the_sessions_and_keep_keys_together() {
        for (connections, keys) in [(1200, 200), (1200, 0), (30, 30), (100, 7), (10, 1000)] {
            let mut seen = vec![0u32; connections];
            let mut key_shard = std::collections::BTreeMap::new();
            for index in 0..4 {
                let shard = Shard { index, count: 4 };
                for id in shard.ids(connections, keys) {
                    seen[id] += 1;
                    if keys > 0 {
                        let prev = key_shard.insert(id % keys, index);
                        assert!(prev.is_none_or(|p| p == index), "key {} split", id % keys);
                    }
                }
            }
            assert!(
                seen.iter().all(|&n| n == 1),
                "{connections}/{keys}: {seen:?}"
            );
        }
        let sizes: Vec<usize> = (0..4)
            .map(|index| Shard { index, count: 4 }.ids(1200, 200).count())
            .collect();
        assert_eq!(sizes, [300, 300, 300, 300]);
        assert_eq!(Shard::ALL.ids(5, 2).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_shard_without_sessions_is_refused() {
        let s = Shard { index: 3, count: 4 };
        assert!(s
            .check(3, 0)
            .unwrap_err()
            .contains("3 sessions split 4 ways"));
        assert!(s.check(100, 3).unwrap_err().contains("3 keys split 4 ways"));
        assert!(s.check(100, 4).is_ok());
    }

    #[test]
    fn source_ips_ranges_cidrs_and_lists() {
        let r: SourceIps = "127.0.0.2-127.0.0.9".parse().unwrap();
        assert_eq!(r.len(), 8);
        assert_eq!(r.nth(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(r.nth(7), Ipv4Addr::new(127, 0, 0, 9));
        assert_eq!(r.nth(8), Ipv4Addr::new(127, 0, 0, 2));
        let c: SourceIps = "127.0.1.77/29".parse().unwrap();
        assert_eq!(c.len(), 8);
        assert_eq!(c.nth(0), Ipv4Addr::new(127, 0, 1, 72));
        let l: SourceIps = "127.0.0.5, 127.0.2.0/31,127.0.3.1-127.0.3.2"
            .parse()
            .unwrap();
        let all: Vec<String> = l.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            all,
            [
                "127.0.0.5",
                "127.0.2.0",
                "127.0.2.1",
                "127.0.3.1",
                "127.0.3.2"
            ]
        );
        assert_eq!(l.nth(4), Ipv4Addr::new(127, 0, 3, 2));
    }

    #[test]
    fn source_ips_mistakes_are_named() {
        let err = |t: &str| t.parse::<SourceIps>().unwrap_err();
        assert!(err("127.0.0.9-127.0.0.2").contains("ends before it starts"));
        assert!(err("127.0.0.0/33").contains("0 to 32"));
        assert!(err("10.0.0.0/8").contains("at most 4096"));
        assert!(err("127.0.0.0/20,127.1.0.1").contains("at most 4096"));
        assert!(err("::1").contains("not an IPv4 address"));
        assert!(err("127.0.0.1,").contains("empty item"));
        assert!(err("0.0.0.0").contains("not a source address"));
        assert_eq!("127.0.0.0/20".parse::<SourceIps>().unwrap().len(), 4096);
    }

    #[tokio::test]
    async fn an_address_this_machine_lacks_is_named() {
        let ok: SourceIps = "127.0.0.2-127.0.0.4".parse().unwrap();
        assert_eq!(ok.check_local(), Ok(()));
        // TEST-NET-1 (RFC 5737): never assigned to a host.
        let bad: SourceIps = "192.0.2.1".parse().unwrap();
        assert!(bad.check_local().unwrap_err().contains("192.0.2.1"));
    }
}

//! The immutable route table: (listener, host, path) → route index.
//!
//! Precedence, as nginx server names and Envoy virtual hosts do it: the most specific host
//! wins first (exact > longest `*.suffix` > `*`), then the longest `path_prefix` on a `/`
//! boundary within that host. A host that matches but has no matching path is a 404; wsedge
//! does not fall back to a less specific host.

use std::collections::HashMap;

use crate::config::{Config, HostMatch};

/// Route indices (into `Config::routes`) for one host pattern, longest path prefix first.
#[derive(Debug, Default, Clone)]
struct PathTable {
    by_prefix: Vec<(String, usize)>,
}

impl PathTable {
    fn insert(&mut self, prefix: &str, route: usize) {
        self.by_prefix.push((prefix.to_owned(), route));
        self.by_prefix
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
    }

    fn lookup(&self, path: &str) -> Option<usize> {
        self.by_prefix
            .iter()
            .find(|(prefix, _)| path_has_prefix(path, prefix))
            .map(|(_, r)| *r)
    }
}

#[derive(Debug, Default, Clone)]
struct HostTable {
    exact: HashMap<String, PathTable>,
    /// `(".example.com", paths)`, longest suffix first.
    suffixes: Vec<(String, PathTable)>,
    any: Option<PathTable>,
}

impl HostTable {
    fn paths_for(&self, host: &str) -> Option<&PathTable> {
        if let Some(t) = self.exact.get(host) {
            return Some(t);
        }
        if let Some((_, t)) = self
            .suffixes
            .iter()
            .find(|(s, _)| host.ends_with(s.as_str()))
        {
            return Some(t);
        }
        self.any.as_ref()
    }
}

/// Built once per config generation; lookups never allocate.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    listeners: HashMap<String, HostTable>,
}

impl RouteTable {
    pub fn new(config: &Config) -> Self {
        let mut listeners: HashMap<String, HostTable> = HashMap::new();
        for (idx, route) in config.routes.iter().enumerate() {
            let hosts = listeners.entry(route.listener.clone()).or_default();
            let paths = match &route.host {
                HostMatch::Any => hosts.any.get_or_insert_with(PathTable::default),
                HostMatch::Exact(h) => hosts.exact.entry(h.clone()).or_default(),
                HostMatch::Suffix(s) => {
                    let dotted = format!(".{s}");
                    match hosts.suffixes.iter().position(|(x, _)| *x == dotted) {
                        Some(i) => &mut hosts.suffixes[i].1,
                        None => {
                            hosts.suffixes.push((dotted, PathTable::default()));
                            &mut hosts.suffixes.last_mut().expect("just pushed").1
                        }
                    }
                }
            };
            paths.insert(&route.path_prefix, idx);
        }
        for hosts in listeners.values_mut() {
            hosts
                .suffixes
                .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        }
        RouteTable { listeners }
    }

    /// `host` is the raw Host header value; it is lower-cased and its port removed here.
    pub fn lookup(&self, listener: &str, host: &str, path: &str) -> Option<usize> {
        let host = normalize_host(host);
        self.listeners.get(listener)?.paths_for(&host)?.lookup(path)
    }
}

/// Lower-cases and removes the port and one trailing dot (the root label):
/// `Chat.Example.com.:8443` → `chat.example.com`, `[::1]:80` → `[::1]`. Two dots are not a
/// spelling of the name and stay (no route matches them).
pub fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let without_port = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        }
    };
    let without_dot = without_port.strip_suffix('.').unwrap_or(without_port);
    without_dot.to_ascii_lowercase()
}

/// `/chat` matches `/chat` and `/chat/x`, never `/chatty`; `/` matches everything.
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_on_slash_boundary() {
        for (path, prefix, want) in [
            ("/chat", "/chat", true),
            ("/chat/x", "/chat", true),
            ("/chatty", "/chat", false),
            ("/", "/", true),
            ("/anything", "/", true),
            ("/cha", "/chat", false),
            ("/chat/", "/chat", true),
        ] {
            assert_eq!(path_has_prefix(path, prefix), want, "{path} ~ {prefix}");
        }
    }

    #[test]
    fn host_normalised() {
        for (raw, want) in [
            ("Chat.Example.COM", "chat.example.com"),
            ("chat.example.com:8443", "chat.example.com"),
            ("[::1]:8080", "[::1]"),
            ("[::1]", "[::1]"),
            ("example.com.", "example.com"),
            ("example.com..", "example.com."),
            ("Example.COM.:443", "example.com"),
        ] {
            assert_eq!(normalize_host(raw), want);
        }
    }
}

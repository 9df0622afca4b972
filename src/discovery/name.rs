//! Endpoint names: stable, valid backend names (1–64 of letters, digits, `-`, `_`, `.`), so
//! every replica names — and so places on its ring — the same endpoints the same way, whatever
//! order DNS answers in.

use std::net::IpAddr;

/// The longest backend name (see `config::validate::fields::name`).
pub const MAX_NAME: usize = 64;

/// `{backend}-{address with . and : as -}-{port}`: `chat-10-1-2-3-9001`, `chat---1-9001`.
pub fn for_address(backend: &str, ip: IpAddr, port: u16) -> String {
    let addr = ip.to_string().replace(['.', ':'], "-");
    bounded(format!("{backend}-{addr}-{port}"))
}

/// `{backend}-{first label of the SRV target}`: `chat-chat-0`.
pub fn for_target(backend: &str, target: &str) -> String {
    let label = target.trim_end_matches('.').split('.').next().unwrap_or("");
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    bounded(format!("{backend}-{label}"))
}

/// Over [`MAX_NAME`]: the first 55 characters, `-`, and 8 hex digits of the full name's
/// FNV-1a hash (distinct long names stay distinct, and stay the same on every replica).
pub fn bounded(name: String) -> String {
    if name.len() <= MAX_NAME {
        return name;
    }
    let hash = crate::balance::key::hash_key(name.as_bytes());
    // Names are ASCII (built from a validated backend name and sanitised labels).
    format!("{}-{:08x}", &name[..MAX_NAME - 9], hash as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_names_follow_the_rule() {
        assert_eq!(
            for_address("chat", "10.1.2.3".parse().unwrap(), 9001),
            "chat-10-1-2-3-9001"
        );
        assert_eq!(
            for_address("chat", "::1".parse().unwrap(), 9001),
            "chat---1-9001"
        );
        assert_eq!(
            for_address("c", "fd00::a:1".parse().unwrap(), 80),
            "c-fd00--a-1-80"
        );
    }

    #[test]
    fn target_names_use_the_first_label() {
        assert_eq!(
            for_target("chat", "chat-0.chat.prod.svc.cluster.local."),
            "chat-chat-0"
        );
        assert_eq!(for_target("chat", "Chat_1.x"), "chat-Chat_1");
    }

    #[test]
    fn long_names_are_truncated_with_a_hash_and_stay_valid_and_distinct() {
        let long = "b".repeat(60);
        let a = for_target(&long, "pod-a.x");
        let b = for_target(&long, "pod-b.x");
        assert_eq!(a.len(), MAX_NAME);
        assert_ne!(a, b);
        assert_eq!(a, for_target(&long, "pod-a.x"), "stable");
        assert!(crate::config::validate::fields::name(&a).is_ok(), "{a}");
        let v6 = for_address(
            &"x".repeat(40),
            "2001:db8:1:2:3:4:5:6".parse().unwrap(),
            65535,
        );
        assert_eq!(v6.len(), MAX_NAME);
        assert!(crate::config::validate::fields::name(&v6).is_ok(), "{v6}");
    }
}

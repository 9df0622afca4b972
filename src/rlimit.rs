//! Raises the soft open-file limit to the hard limit at start-up: a proxy holds two sockets per
//! session, so the usual soft default of 1024 caps it near 500 sessions.
//!
//! Uses the `rlimit` crate, whose safe wrappers keep `#![forbid(unsafe_code)]` intact.

use rlimit::Resource;

/// Sets the soft `RLIMIT_NOFILE` to the hard limit; returns `(old_soft, new_soft)`.
/// When the soft limit already equals the hard limit nothing is changed.
pub fn raise_nofile() -> std::io::Result<(u64, u64)> {
    let (soft, hard) = rlimit::getrlimit(Resource::NOFILE)?;
    if soft >= hard {
        return Ok((soft, soft));
    }
    rlimit::setrlimit(Resource::NOFILE, hard, hard)?;
    let (now, _) = rlimit::getrlimit(Resource::NOFILE)?;
    Ok((soft, now))
}

#[cfg(test)]
mod tests {
    #[test]
    fn raise_nofile_reaches_the_hard_limit() {
        let (old, new) = super::raise_nofile().expect("getrlimit/setrlimit");
        let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        assert!(new >= old);
        assert_eq!(soft, new);
        assert_eq!(soft, hard);
    }
}

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

/// Descriptors kept out of every listener's default `max_connections`: for the admin endpoint,
/// health probes, config and certificate reads, DNS, logs.
pub const FD_MARGIN: u64 = 1_000;

/// The default `listeners[].max_connections`: (open-file soft limit − [`FD_MARGIN`]) ÷ 2, as a
/// session holds two sockets (client and backend) — but at least a quarter of the limit, so a
/// small limit still serves. Read once (after `raise_nofile`, at the first accept).
pub fn default_max_connections() -> usize {
    static DEFAULT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *DEFAULT.get_or_init(|| {
        let soft = rlimit::getrlimit(Resource::NOFILE).map_or(1024, |(soft, _)| soft);
        let n = (soft.saturating_sub(FD_MARGIN) / 2).max(soft / 4).max(1);
        usize::try_from(n).unwrap_or(usize::MAX)
    })
}

/// Descriptors the admin endpoint keeps in hand: when traffic has used every other one, an
/// admin accept that fails with EMFILE/ENFILE closes one of these and accepts into its place,
/// so `/healthz` still answers (a liveness probe that cannot connect would restart the process
/// and drop every session). Refilled as descriptors free up.
pub struct FdReserve {
    held: Vec<std::fs::File>,
    want: usize,
}

impl FdReserve {
    /// Opens `n` descriptors on `/dev/null` (as many as the process can now).
    pub fn new(n: usize) -> FdReserve {
        let mut r = FdReserve {
            held: Vec::with_capacity(n),
            want: n,
        };
        r.refill();
        r
    }

    /// Tops the reserve up again; quietly keeps fewer while the descriptor table is full.
    pub fn refill(&mut self) {
        while self.held.len() < self.want {
            match std::fs::File::open("/dev/null") {
                Ok(f) => self.held.push(f),
                Err(_) => break,
            }
        }
    }

    /// Closes one reserved descriptor; false when none is left.
    pub fn release_one(&mut self) -> bool {
        self.held.pop().is_some()
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }
}

/// EMFILE or ENFILE: the process (or the system) is out of descriptors.
pub fn is_fd_exhaustion(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_reserve_holds_releases_and_refills() {
        let mut r = super::FdReserve::new(3);
        assert_eq!(r.held(), 3);
        assert!(r.release_one());
        assert_eq!(r.held(), 2);
        r.refill();
        assert_eq!(r.held(), 3);
        assert!(super::is_fd_exhaustion(&std::io::Error::from_raw_os_error(
            24
        )));
        assert!(!super::is_fd_exhaustion(
            &std::io::Error::from_raw_os_error(104)
        ));
    }

    #[test]
    fn raise_nofile_reaches_the_hard_limit() {
        let (old, new) = super::raise_nofile().expect("getrlimit/setrlimit");
        let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        assert!(new >= old);
        assert_eq!(soft, new);
        assert_eq!(soft, hard);
    }
}

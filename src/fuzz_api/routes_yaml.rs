//! routes.yaml text through parsing and validation, then each route's balancer (the ring is
//! built from validated weights and virtual nodes), with no file access: validation reads no
//! file (certificates are loaded when a listener starts, which this target never does).
//!
//! Invariants: no panic; an invalid file yields at least one error and every error names the
//! file and carries a line and column ≥ 1; warnings too; no time or memory blow-up (anchors
//! and aliases are bounded by the parser's budget, ring sizes by validation).

use std::path::Path;

use crate::balance::Balancer;
use crate::config::{Config, ConfigError};

/// Where the fuzzed text claims to live (absolute: resolving it reads no working directory).
const FILE: &str = "/fuzz/routes.yaml";

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_yaml(Path::new(FILE), text) {
        Ok((config, warnings)) => {
            for w in &warnings {
                positioned(&w.0);
            }
            for route in &config.routes {
                let balancer = Balancer::new(route);
                assert!(!route.backends.is_empty());
                let _ = balancer;
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "refused without an error");
            for e in &errors.0 {
                positioned(e);
            }
        }
    }
}

fn positioned(e: &ConfigError) {
    assert_eq!(e.file, Path::new(FILE), "{e}");
    assert!(e.line >= 1 && e.column >= 1, "no position: {e}");
    assert!(!e.message.is_empty(), "no message: {e:?}");
}

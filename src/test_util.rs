//! Fixtures shared by the unit tests, the integration tests (`tests/support`) and the benches:
//! the one-listener, one-catch-all-route config most of them start from. Compiled only for
//! tests and with the `test-util` feature, which every test, bench and example build turns on
//! (Cargo.toml's dev-dependency on wsedge itself); never in a release binary.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::backend::BackendState;
use crate::config::{Config, Route};

pub mod jwt;

/// The route's name in every fixture.
pub const ROUTE: &str = "r";

/// One listener `edge` on 127.0.0.1:0 and one catch-all route `r` to `backends`
/// (name, address) over `ws://`, with `route_extra` (YAML lines for the route mapping, not
/// indented) appended to the route. Append top-level sections (`admin:`, …) to the result.
pub fn single_route_yaml(backends: &[(&str, SocketAddr)], route_extra: &str) -> String {
    let mut y = String::from(
        "listeners:\n  - name: edge\n    bind: 127.0.0.1:0\nroutes:\n  - name: r\n    \
         match: {host: \"*\", path_prefix: /}\n    backends:\n",
    );
    for (name, addr) in backends {
        let _ = writeln!(y, "      - {{name: {name}, url: \"ws://{addr}\"}}");
    }
    for line in route_extra.lines() {
        let _ = writeln!(y, "    {line}");
    }
    y
}

/// `yaml` (from [`single_route_yaml`]) with the listener's per-address pending limit off: for
/// tests that open hundreds of concurrent handshakes from 127.0.0.1, which is exactly what
/// `max_pending_per_ip` refuses at the edge (tests/hostile/limits.rs tests the limit itself).
pub fn without_pending_limit(yaml: &str) -> String {
    yaml.replacen(
        "    bind: 127.0.0.1:0\n",
        "    bind: 127.0.0.1:0\n    max_pending_per_ip: 0\n",
        1,
    )
}

/// `n` backends named `b0`, `b1`, … at 127.0.0.1:9000+i. Nothing listens there: for tests and
/// benches that build routes and balancers without dialing.
pub fn placeholder_backends(n: usize) -> Vec<(String, SocketAddr)> {
    (0..n)
        .map(|i| {
            let port = 9000 + u16::try_from(i).expect("fewer than 56536 backends");
            (format!("b{i}"), SocketAddr::from(([127, 0, 0, 1], port)))
        })
        .collect()
}

/// The validated route of [`single_route_yaml`] over `n` [`placeholder_backends`].
pub fn route(n: usize, route_extra: &str) -> Route {
    let backends = placeholder_backends(n);
    let named: Vec<(&str, SocketAddr)> = backends.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    let yaml = single_route_yaml(&named, route_extra);
    match Config::from_yaml("test-util.yaml".as_ref(), &yaml) {
        Ok((config, _)) => (*config.routes[0]).clone(),
        Err(e) => panic!("fixture config is invalid: {e:?}\n{yaml}"),
    }
}

/// Fresh live state for each of `route`'s backends, in order.
pub fn backend_states(route: &Route) -> Vec<Arc<BackendState>> {
    route
        .backends
        .iter()
        .map(|b| Arc::new(BackendState::new(&route.name, &b.name)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_route_is_valid_and_in_order() {
        let r = route(3, "balance: {load_factor: 1.25}");
        assert_eq!(r.name, ROUTE);
        let names: Vec<&str> = r.backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["b0", "b1", "b2"]);
        let states = backend_states(&r);
        assert_eq!(&*states[2].name, "b2");
    }
}

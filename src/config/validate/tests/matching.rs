//! Validation tests of what a route matches and forwards: path prefixes, host and origin
//! patterns, subprotocols, header edits, affinity keys.

use super::*;

#[test]
fn path_prefix_without_slash() {
    err(
        &with_route("    match: {path_prefix: chat}\n"),
        "routes[0].match.path_prefix",
        "start with `/`",
    );
}

#[test]
fn path_prefix_normalised() {
    let c = ok(&with_route("    match: {path_prefix: /chat/}\n"));
    assert_eq!(c.routes[0].path_prefix, "/chat");
}

#[test]
fn path_prefix_must_be_in_normal_form() {
    for prefix in ["/a/../admin", "//admin", "/%61dmin", "/admin;x"] {
        err(
            &with_route(&format!("    match: {{path_prefix: \"{prefix}\"}}\n")),
            "routes[0].match.path_prefix",
            "not a normal path",
        );
    }
    err(
        &with_route("    match: {path_prefix: \"/a%2Fb\"}\n"),
        "routes[0].match.path_prefix",
        "encoded slash",
    );
}

#[test]
fn host_pattern() {
    err(
        &with_route("    match: {host: \"a.*.com\"}\n"),
        "routes[0].match.host",
        "leftmost label",
    );
    let c = ok(&with_route("    match: {host: \"*.Example.COM\"}\n"));
    assert_eq!(c.routes[0].host, HostMatch::Suffix("example.com".into()));
}

#[test]
fn origin_pattern() {
    err(
        &with_route("    origins: [\"https://a.*.example.com\"]\n")
            .replace("    origins: [\"https://a.example.com\"]\n", ""),
        "routes[0].origins[0]",
        "leftmost label",
    );
}

#[test]
fn subprotocol_token() {
    err(
        &with_route("    subprotocols: [\"chat v2\"]\n"),
        "routes[0].subprotocols[0]",
        "not a valid token",
    );
}

#[test]
fn header_name_and_value() {
    let t = with_route("    request_headers: {add: {\"Bad Name\": x, X-Ok: \"bad\\u0001value\"}, remove: [\"a:b\"]}\n");
    err(
        &t,
        "routes[0].request_headers.add.Bad Name",
        "not a valid header name",
    );
    err(
        &t,
        "routes[0].request_headers.add.X-Ok",
        "not a valid header value",
    );
    err(
        &t,
        "routes[0].request_headers.remove[0]",
        "not a valid header name",
    );
}

#[test]
fn managed_header_not_editable() {
    let t =
        with_route("    request_headers: {add: {Upgrade: x}, remove: [Sec-WebSocket-Protocol]}\n");
    err(
        &t,
        "routes[0].request_headers.add.Upgrade",
        "managed by wsedge",
    );
    err(
        &t,
        "routes[0].request_headers.remove[0]",
        "managed by wsedge",
    );
    // Probes may set Host (virtual hosts behind the backend).
    ok(&with_route(
        "    health_check: {headers: {Host: chat.example.com}}\n",
    ));
}

#[test]
fn require_subprotocol_with_empty_list() {
    err(
        &with_route("    require_subprotocol: true\n"),
        "routes[0].require_subprotocol",
        "`subprotocols` is empty",
    );
}

#[test]
fn affinity_key_syntax() {
    err(
        &with_route("    affinity: {key: \"room\"}\n"),
        "routes[0].affinity.key",
        "expected header:NAME",
    );
    err(
        &with_route("    affinity: {key: random}\n"),
        "routes[0].affinity.key",
        "only a fallback",
    );
    err(
        &with_route("    affinity: {key: \"query:room\", fallback: \"query:room\"}\n"),
        "routes[0].affinity.fallback",
        "same as `key`",
    );
    let c = ok(&with_route(
        "    affinity: {key: \"cookie:sid\", fallback: random}\n",
    ));
    assert_eq!(c.routes[0].affinity.fallback, AffinityKey::Random);
    let c = ok(&with_route("    affinity: {key: \"query:room\"}\n"));
    assert_eq!(c.routes[0].affinity.fallback, AffinityKey::ClientIp);
}

use super::*;
use proptest::prelude::*;

fn norm(path: &str) -> Result<String, PathError> {
    normalize(path, &Options::default()).map(Cow::into_owned)
}

#[test]
fn attack_spellings_of_admin_all_become_admin() {
    for p in [
        "/admin",
        "/%61dmin",
        "//admin",
        "/x/../admin",
        "/%2e%2e/admin",
        "/%2E%2E/admin",
        "/ADMIN/../admin",
        "/./admin",
        "/a/b/../../admin",
        "/../../admin",
        "///admin",
        "/x/%2e%2e/admin",
        "/x/.%2e/admin",
    ] {
        assert_eq!(norm(p).as_deref(), Ok("/admin"), "{p}");
    }
}

#[test]
fn refused_before_routing() {
    for (p, want) in [
        ("/%2Fadmin", PathError::EscapedSlash),
        ("/%2fadmin", PathError::EscapedSlash),
        ("/%5Cadmin", PathError::EscapedSlash),
        ("/\\admin", PathError::EscapedSlash),
        ("/a%00", PathError::Nul),
        ("/a%zz", PathError::BadEscape),
        ("/a%4", PathError::BadEscape),
        ("/a%", PathError::BadEscape),
        ("/a\x01", PathError::Control),
        ("/a\x7f", PathError::Control),
        ("/a b", PathError::Control),
        ("/caf\u{e9}", PathError::NonAscii),
        ("*", PathError::NotAbsolute),
        ("", PathError::NotAbsolute),
    ] {
        assert_eq!(norm(p), Err(want), "{p:?}");
    }
}

#[test]
fn decodes_unreserved_once_and_keeps_reserved_escaped() {
    for (p, want) in [
        // %25 is '%' (reserved): stays encoded, so `%252e` never becomes `.`.
        ("/%252e%252e/admin", "/%252e%252e/admin"),
        ("/a%7eb%2D%5f", "/a~b-_"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/q%3fx", "/q%3Fx"),
        ("/a%3Bb", "/a%3Bb"),
    ] {
        assert_eq!(norm(p).as_deref(), Ok(want), "{p}");
    }
}

#[test]
fn dot_segments_per_rfc3986() {
    // RFC 3986 §5.2.4 examples and trailing forms.
    for (p, want) in [
        ("/a/b/c/./../../g", "/a/g"),
        ("/mid/content=5/../6", "/mid/6"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/..", "/"),
        ("/.", "/"),
        ("/", "/"),
        ("/a/", "/a/"),
        ("/a..b/.c", "/a..b/.c"),
    ] {
        assert_eq!(norm(p).as_deref(), Ok(want), "{p}");
    }
}

#[test]
fn merge_slashes_off_keeps_empty_segments() {
    let opts = Options {
        merge_slashes: false,
        ..Options::default()
    };
    assert_eq!(normalize("//admin", &opts).as_deref(), Ok("//admin"));
    assert_eq!(normalize("/a//b/", &opts).as_deref(), Ok("/a//b/"));
    assert_eq!(norm("/a//b//").as_deref(), Ok("/a/b/"));
}

#[test]
fn escaped_slashes_keep_leaves_them_encoded() {
    let opts = Options {
        escaped_slashes: EscapedSlashes::Keep,
        ..Options::default()
    };
    assert_eq!(normalize("/%2fadmin", &opts).as_deref(), Ok("/%2Fadmin"));
    assert_eq!(normalize("/a\\b", &opts).as_deref(), Ok("/a%5Cb"));
    // Kept escapes are not separators: `..%2F` is not a dot-segment.
    assert_eq!(
        normalize("/x/..%2Fadmin", &opts).as_deref(),
        Ok("/x/..%2Fadmin")
    );
}

#[test]
fn path_params_ignored_for_matching_only() {
    let o = Options::default();
    assert_eq!(norm("/admin;x").as_deref(), Ok("/admin;x"));
    assert_eq!(match_path("/admin;x", &o).as_deref(), Ok("/admin"));
    assert_eq!(match_path("/a;x/b;y=1", &o).as_deref(), Ok("/a/b"));
    assert_eq!(match_path("/;x/admin", &o).as_deref(), Ok("/admin"));
    assert_eq!(match_path("/admin", &o).as_deref(), Ok("/admin"));
    assert_eq!(match_path("/x/..;/admin", &o), Err(PathError::DotParams));
    assert_eq!(match_path("/x/.;a/admin", &o), Err(PathError::DotParams));
    let reject = Options {
        path_params: PathParams::Reject,
        ..o
    };
    assert_eq!(normalize("/admin;x", &reject), Err(PathError::PathParams));
}

#[test]
fn action_reject_refuses_what_normalize_would_change() {
    let opts = Options {
        action: Action::Reject,
        ..Options::default()
    };
    assert!(matches!(
        normalize("/admin/x", &opts),
        Ok(Cow::Borrowed("/admin/x"))
    ));
    for p in ["/x/../admin", "//admin", "/%61dmin", "/a%3f"] {
        assert_eq!(normalize(p, &opts), Err(PathError::NotNormal), "{p}");
    }
    assert_eq!(normalize("/%2F", &opts), Err(PathError::EscapedSlash));
}

#[test]
fn disabled_passes_everything_through() {
    let opts = Options {
        enabled: false,
        ..Options::default()
    };
    for p in ["/%2Fadmin", "//x/../a", "*", "/a;b"] {
        assert_eq!(normalize(p, &opts).as_deref(), Ok(p));
        assert_eq!(match_path(p, &opts).as_deref(), Ok(p));
    }
}

#[test]
fn a_normal_path_is_borrowed() {
    assert!(matches!(norm_cow("/chat/room-1"), Ok(Cow::Borrowed(_))));
}

fn norm_cow(p: &str) -> Result<Cow<'_, str>, PathError> {
    normalize(p, &Options::default())
}

/// Request targets built from the pieces that matter to normalisation.
fn path_strategy() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just("//".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("/../".to_owned()),
        Just("/./".to_owned()),
        Just(";".to_owned()),
        Just("\\".to_owned()),
        Just("%2e".to_owned()),
        Just("%2E".to_owned()),
        Just("%2f".to_owned()),
        Just("%5c".to_owned()),
        Just("%25".to_owned()),
        Just("%3b".to_owned()),
        Just("%41".to_owned()),
        Just("%c3%a9".to_owned()),
        "[a-zA-Z0-9~_-]{1,4}",
        "%[0-9a-fA-F]{2}",
        "[!-~]",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| format!("/{}", v.concat()))
}

fn options_strategy() -> impl Strategy<Value = Options> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(k, m, p, a)| Options {
        enabled: true,
        escaped_slashes: if k {
            EscapedSlashes::Keep
        } else {
            EscapedSlashes::Reject
        },
        merge_slashes: m,
        path_params: if p {
            PathParams::Ignore
        } else {
            PathParams::Reject
        },
        action: if a { Action::Normalize } else { Action::Reject },
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// normalise(normalise(p)) == normalise(p): a normalised path is accepted unchanged (so
    /// `action: reject` accepts it, and decoding never happens twice).
    #[test]
    fn normalize_is_idempotent(p in path_strategy(), opts in options_strategy()) {
        if let Ok(once) = normalize(&p, &opts) {
            let twice = normalize(&once, &opts);
            prop_assert_eq!(twice.as_deref(), Ok(&*once));
            if let Ok(m) = match_path(&once, &opts) {
                prop_assert!(m.starts_with('/'));
                prop_assert!(!m.split('/').any(|s| s == "." || s == ".."));
            }
        }
    }

    /// A normalised path never holds a dot-segment, a backslash or (merging) an empty segment
    /// before its end.
    #[test]
    fn normal_form_has_no_dot_segments(p in path_strategy()) {
        if let Ok(n) = norm(&p) {
            prop_assert!(n.starts_with('/'));
            prop_assert!(!n.split('/').any(|s| s == "." || s == ".."));
            prop_assert!(!n.contains('\\') && !n.contains("//"));
        }
    }
}

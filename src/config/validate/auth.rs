//! `routes[].auth` rules: JWT keys, algorithms, claims, token sources, `close_at_expiry`, and
//! forward auth. Part of [`super::validate`].

use std::time::Duration;

use super::raw::{self, Spanned};
use super::{fields, Validator};
use crate::config::auth::*;
use crate::config::units;

pub(super) fn auth(cx: &mut Validator<'_>, a: &Spanned<raw::RawAuth>, p: &str) -> Option<Auth> {
    let at = a.referenced;
    let jwt = a
        .value
        .jwt
        .as_ref()
        .and_then(|j| jwt(cx, j, &format!("{p}.jwt")));
    let forward = a
        .value
        .forward
        .as_ref()
        .and_then(|f| forward(cx, f, &format!("{p}.forward")));
    if a.value.jwt.is_none() && a.value.forward.is_none() {
        cx.error(&at, p, "needs `jwt`, `forward` or both");
        return None;
    }
    Some(Auth { jwt, forward })
}

/// `ES256` → the algorithm; `none` and unknown names refused.
pub fn algorithm(s: &str) -> Result<Algorithm, String> {
    use std::str::FromStr;
    if s.eq_ignore_ascii_case("none") {
        return Err("`none` is never accepted (an unsigned token proves nothing)".into());
    }
    let alg = Algorithm::from_str(s).map_err(|_| {
        format!("`{s}`: expected RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256, HS384 or HS512")
    })?;
    Ok(alg)
}

/// `header:NAME`, `cookie:NAME`, `query:NAME` or `subprotocol:PREFIX`.
pub fn token_source(s: &str) -> Result<TokenSource, String> {
    let syntax = "expected header:NAME, cookie:NAME, query:NAME or subprotocol:PREFIX";
    let Some((kind, arg)) = s.split_once(':') else {
        return Err(format!("`{s}`: {syntax}"));
    };
    match kind {
        "header" => fields::header_name(arg).map(TokenSource::Header),
        "cookie" => fields::token(arg).map(TokenSource::Cookie),
        "query" if !arg.is_empty() && !arg.contains(['&', '=', '#', ' ']) => {
            Ok(TokenSource::Query(arg.to_string()))
        }
        "query" => Err(format!("`{s}`: `{arg}` is not a query parameter name")),
        "subprotocol" => fields::token(arg).map(TokenSource::Subprotocol),
        _ => Err(format!("`{s}`: {syntax}")),
    }
}

fn jwt(cx: &mut Validator<'_>, j: &Spanned<raw::RawJwt>, p: &str) -> Option<Jwt> {
    let at = j.referenced;
    let j = &j.value;
    let jwks_file = cx.file_path(&j.jwks_file, &format!("{p}.jwks_file"));
    let jwks_url = j.jwks_url.as_ref().and_then(|u| {
        cx.check(u, &format!("{p}.jwks_url"), |s| {
            let url = url::Url::parse(s.trim()).map_err(|e| format!("`{s}` is not a URL: {e}"))?;
            if url.scheme() != "https" {
                return Err(format!("`{s}`: keys are fetched over https:// only"));
            }
            Ok(url)
        })
    });
    let jwks_ca = cx.file_path(&j.jwks_ca, &format!("{p}.jwks_ca"));
    if let (Some(v), None) = (&j.jwks_ca, &j.jwks_url) {
        cx.error(&v.referenced, &format!("{p}.jwks_ca"), "needs `jwks_url`");
    }
    let jwks_refresh = j.jwks_refresh.as_ref().map(|_| {
        cx.positive_duration(
            &j.jwks_refresh,
            &format!("{p}.jwks_refresh"),
            JWKS_MIN_MAX_AGE,
        )
    });
    let jwks_min_refetch = cx.positive_duration(
        &j.jwks_min_refetch,
        &format!("{p}.jwks_min_refetch"),
        DEFAULT_JWKS_MIN_REFETCH,
    );
    if let (Some(f), Some(u)) = (&j.jwks_file, &j.jwks_url) {
        let _ = f;
        cx.error(
            &u.referenced,
            &format!("{p}.jwks_url"),
            "use either `jwks_file` or `jwks_url`, not both",
        );
    }
    let hs_secret_file = cx.file_path(&j.hs_secret_file, &format!("{p}.hs_secret_file"));

    let mut algorithms = Vec::new();
    match &j.algorithms {
        None => cx.error(
            &at,
            &format!("{p}.algorithms"),
            "missing required field `algorithms` (e.g. [ES256])",
        ),
        Some(list) => {
            if list.value.is_empty() {
                cx.error(
                    &list.referenced,
                    &format!("{p}.algorithms"),
                    "must list at least one algorithm",
                );
            }
            for (i, a) in list.value.iter().enumerate() {
                let ap = format!("{p}.algorithms[{i}]");
                if let Some(alg) = cx.check(a, &ap, algorithm) {
                    if algorithms.contains(&alg) {
                        cx.error(&a.referenced, &ap, format!("`{}` is listed twice", a.value));
                    }
                    let hmac =
                        matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
                    if hmac && j.hs_secret_file.is_none() {
                        cx.error(&a.referenced, &ap, "an HS algorithm needs `hs_secret_file` (symmetric keys never come from a JWKS)");
                    }
                    if !hmac && j.jwks_file.is_none() && j.jwks_url.is_none() {
                        cx.error(
                            &a.referenced,
                            &ap,
                            "needs `jwks_file` or `jwks_url` (public keys come from a JWKS)",
                        );
                    }
                    algorithms.push(alg);
                }
            }
        }
    }
    if let Some(v) = &j.hs_secret_file {
        if !algorithms
            .iter()
            .any(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
        {
            cx.error(
                &v.referenced,
                &format!("{p}.hs_secret_file"),
                "no HS algorithm in `algorithms` uses it",
            );
        }
    }
    if j.jwks_file.is_none() && j.jwks_url.is_none() && j.hs_secret_file.is_none() {
        cx.error(
            &at,
            p,
            "needs a key source: `jwks_file`, `jwks_url` or `hs_secret_file`",
        );
    }

    let issuer = j.issuer.as_ref().map(|v| v.value.clone());
    let audiences = j
        .audiences
        .iter()
        .flat_map(|l| l.value.iter())
        .map(|a| a.value.clone())
        .collect();
    let leeway = cx.duration(&j.leeway, &format!("{p}.leeway"), DEFAULT_LEEWAY);
    let require_claims = j
        .require_claims
        .iter()
        .flat_map(|x| x.0.iter())
        .map(|(k, v)| (k.value.clone(), v.value.clone()))
        .collect();
    let require_typ = j.require_typ.as_ref().map(|v| v.value.clone());

    let mut token_from = Vec::new();
    for (i, s) in j.token_from.iter().flat_map(|l| l.value.iter()).enumerate() {
        if let Some(t) = cx.check(s, &format!("{p}.token_from[{i}]"), token_source) {
            token_from.push(t);
        }
    }
    if let Some(l) = &j.token_from {
        if l.value.is_empty() {
            cx.error(
                &l.referenced,
                &format!("{p}.token_from"),
                "must list at least one place",
            );
        }
    } else {
        token_from.push(TokenSource::Header(http::header::AUTHORIZATION));
    }
    let max_token_bytes = match &j.max_token_bytes {
        None => DEFAULT_MAX_TOKEN_BYTES,
        Some(v) => match units::parse_size(&v.value) {
            Ok(0) => {
                cx.error(
                    &v.referenced,
                    &format!("{p}.max_token_bytes"),
                    "must be more than 0",
                );
                DEFAULT_MAX_TOKEN_BYTES
            }
            Ok(n) => usize::try_from(n).unwrap_or(usize::MAX),
            Err(m) => {
                cx.error(&v.referenced, &format!("{p}.max_token_bytes"), m);
                DEFAULT_MAX_TOKEN_BYTES
            }
        },
    };
    let mut claims_to_headers = Vec::new();
    for (k, v) in j.claims_to_headers.iter().flat_map(|x| x.0.iter()) {
        let hp = format!("{p}.claims_to_headers.{}", k.value);
        if let Some(h) = cx.check(v, &hp, fields::header_name) {
            cx.check(v, &hp, fields::managed_header);
            claims_to_headers.push((k.value.clone(), h));
        }
    }
    let close_at_expiry = j
        .close_at_expiry
        .as_ref()
        .map(|c| close_at_expiry(cx, c, &format!("{p}.close_at_expiry")));

    Some(Jwt {
        jwks_file,
        jwks_url,
        jwks_ca,
        jwks_refresh,
        jwks_min_refetch,
        hs_secret_file,
        algorithms,
        issuer,
        audiences,
        leeway,
        require_claims,
        require_typ,
        token_from,
        max_token_bytes,
        forward_token: j.forward_token.unwrap_or(false),
        claims_to_headers,
        close_at_expiry,
    })
}

fn close_at_expiry(
    cx: &mut Validator<'_>,
    c: &Spanned<raw::RawCloseAtExpiry>,
    p: &str,
) -> CloseAtExpiry {
    let c = &c.value;
    let grace = cx.duration(&c.grace, &format!("{p}.grace"), DEFAULT_EXPIRY_GRACE);
    let spread = cx.duration(&c.spread, &format!("{p}.spread"), DEFAULT_EXPIRY_SPREAD);
    let code = match &c.code {
        None => DEFAULT_EXPIRY_CODE,
        Some(v) if v.value == 1008 || (3000..=4999).contains(&v.value) => v.value as u16,
        Some(v) => {
            cx.error(
                &v.referenced,
                &format!("{p}.code"),
                format!("{} must be 1008 or 3000–4999", v.value),
            );
            DEFAULT_EXPIRY_CODE
        }
    };
    let reason = match &c.reason {
        None => DEFAULT_EXPIRY_REASON.to_string(),
        // A Close payload is at most 125 bytes, two of them the code.
        Some(v) if v.value.len() > 123 => {
            cx.error(
                &v.referenced,
                &format!("{p}.reason"),
                "is longer than 123 bytes (a Close frame holds 125, with the code)",
            );
            String::new()
        }
        Some(v) => v.value.clone(),
    };
    CloseAtExpiry {
        grace,
        spread,
        code,
        reason,
    }
}

fn forward(
    cx: &mut Validator<'_>,
    f: &Spanned<raw::RawForwardAuth>,
    p: &str,
) -> Option<ForwardAuth> {
    let at = f.referenced;
    let f = &f.value;
    let url = cx
        .required(&f.url, &at, &format!("{p}.url"))
        .cloned()
        .and_then(|u| {
            cx.check(&u, &format!("{p}.url"), |s| {
                let url =
                    url::Url::parse(s.trim()).map_err(|e| format!("`{s}` is not a URL: {e}"))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(format!("`{s}`: expected http:// or https://"));
                }
                if !url.username().is_empty() || url.password().is_some() {
                    return Err(format!("`{s}` must not carry credentials"));
                }
                Ok(url)
            })
        });
    let timeout =
        cx.positive_duration(&f.timeout, &format!("{p}.timeout"), DEFAULT_FORWARD_TIMEOUT);
    let headers = |cx: &mut Validator<'_>, l: &raw::List<String>, what: &str| {
        let mut out = Vec::new();
        for (i, h) in l.iter().flat_map(|l| l.value.iter()).enumerate() {
            let hp = format!("{p}.{what}[{i}]");
            if let Some(n) = cx.check(h, &hp, fields::header_name) {
                cx.check(h, &hp, fields::managed_header);
                out.push(n);
            }
        }
        out
    };
    let send_headers = headers(cx, &f.send_headers, "send_headers");
    let copy_headers = headers(cx, &f.copy_headers, "copy_headers");
    let failure_mode = match &f.failure_mode {
        None => FailureMode::Deny,
        Some(v) => cx
            .check(v, &format!("{p}.failure_mode"), |s| match s {
                "deny" => Ok(FailureMode::Deny),
                "allow" => Ok(FailureMode::Allow),
                _ => Err(format!("`{s}`: expected deny or allow")),
            })
            .unwrap_or(FailureMode::Deny),
    };
    let cache = f.cache.as_ref().map(|c| {
        let max_entries = match &c.value.max_entries {
            Some(v) if v.value == 0 => {
                cx.error(
                    &v.referenced,
                    &format!("{p}.cache.max_entries"),
                    "must be at least 1 (omit `cache` to cache nothing)",
                );
                1
            }
            Some(v) => v.value as usize,
            None => 10_000,
        };
        let max_ttl = cx.positive_duration(
            &c.value.max_ttl,
            &format!("{p}.cache.max_ttl"),
            Duration::from_secs(60),
        );
        ForwardCache {
            max_entries,
            max_ttl,
        }
    });
    Some(ForwardAuth {
        url: url?,
        timeout,
        send_headers,
        copy_headers,
        failure_mode,
        cache,
    })
}

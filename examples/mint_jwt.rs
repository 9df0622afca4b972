//! Test tokens for scripts that drive a real browser or a benchmark through `auth.jwt`
//! (tests/browser/auth_bearer.sh, `AUTH=es256 benches/upgrade_cost.sh`): a fresh ES256 key, its
//! JWKS and tokens signed with it. Test tooling only; keys live in the directory given.
//!
//! Usage: `mint_jwt DIR` writes `DIR/jwks.json` (kid `bench-1`), `DIR/valid.jwt` (expires in one
//! hour) and `DIR/expired.jwt` (expired ten minutes ago), all with `iss: https://issuer.test`,
//! `aud: chat`, `sub: browser`.

use anyhow::Context;
use serde_json::json;
use wsedge::config::auth::Algorithm;
use wsedge::test_util::jwt::{jwks, now, TestKey};

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .context("usage: mint_jwt DIR (writes jwks.json, valid.jwt, expired.jwt)")?;
    let dir = std::path::Path::new(&dir);
    let key = TestKey::new(Algorithm::ES256, "bench-1");
    let token = |exp: i64| {
        key.sign(
            &json!({"sub": "browser", "iss": "https://issuer.test", "aud": "chat", "exp": exp}),
        )
    };
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text)
            .with_context(|| format!("write {}", dir.join(name).display()))
    };
    write("jwks.json", &jwks(&[&key]))?;
    write("valid.jwt", &token(now() + 3600))?;
    write("expired.jwt", &token(now() - 600))?;
    Ok(())
}

//! Request-path normalisation, before routing: the path a route is chosen by is the path the
//! backend receives, so no spelling of a path can pick a more lenient route than the one the
//! backend will serve (`/%61dmin`, `//admin`, `/x/../admin` all become `/admin`).
//!
//! A pure function of the path and the listener's options ([`normalize`]); the matching form
//! (path parameters ignored) is [`match_path`]. Steps, in this order:
//! 1. refuse an invalid `%XX`, `%00`, control bytes and non-ASCII;
//! 2. decode percent-encoded unreserved characters, once (other escapes get upper-case hex);
//! 3. refuse `%2F`, `%5C` and `\` (or, with `escaped_slashes: keep`, leave them encoded);
//! 4. remove dot-segments (RFC 3986 §5.2.4);
//! 5. merge repeated slashes (`merge_slashes`);
//! 6. for matching only, ignore `;…` path parameters (`path_params: ignore`) or refuse them.

use std::borrow::Cow;

/// `listeners[].path_normalization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Options {
    /// `false`: the path is routed and forwarded exactly as received.
    pub enabled: bool,
    pub escaped_slashes: EscapedSlashes,
    pub merge_slashes: bool,
    pub path_params: PathParams,
    pub action: Action,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            enabled: true,
            escaped_slashes: EscapedSlashes::Reject,
            merge_slashes: true,
            path_params: PathParams::Ignore,
            action: Action::Normalize,
        }
    }
}

/// `%2F`, `%5C` and a bare `\`: one server's separator is another's literal character.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EscapedSlashes {
    Reject,
    /// Left encoded (`\` becomes `%5C`): routed as one segment, forwarded as sent.
    Keep,
}

/// `;…` path parameters (`/admin;jsessionid=1`), which some servers strip before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathParams {
    /// Matching ignores them; the backend receives them.
    Ignore,
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Route and forward the normalised path.
    Normalize,
    /// Refuse a path that is not already normal.
    Reject,
}

/// Why a path was refused (every one is a 400 `bad_path`; this is the log detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path does not start with `/`")]
    NotAbsolute,
    #[error("an invalid percent-escape")]
    BadEscape,
    #[error("an encoded NUL (%00)")]
    Nul,
    #[error("a control character or space")]
    Control,
    #[error("a non-ASCII byte")]
    NonAscii,
    #[error("an encoded slash or a backslash (%2F, %5C, \\)")]
    EscapedSlash,
    #[error("path parameters (`;`) are refused on this listener")]
    PathParams,
    #[error("a dot-segment carrying path parameters (`..;`)")]
    DotParams,
    #[error("the path is not normal and this listener refuses such paths")]
    NotNormal,
}

/// Steps 1–5 (and step 6's refusal): the path that routing, logs and the backend see.
/// Borrowed when the path is already normal.
pub fn normalize<'a>(path: &'a str, opts: &Options) -> Result<Cow<'a, str>, PathError> {
    if !opts.enabled {
        return Ok(Cow::Borrowed(path));
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode(path, opts.escaped_slashes)?;
    let normal = segments(&decoded, opts.merge_slashes);
    if opts.path_params == PathParams::Reject && normal.contains(';') {
        return Err(PathError::PathParams);
    }
    if normal == path {
        return Ok(Cow::Borrowed(path));
    }
    if opts.action == Action::Reject {
        return Err(PathError::NotNormal);
    }
    Ok(Cow::Owned(normal))
}

/// Step 6: the form of a normalised path that routes are matched against — each segment's
/// `;…` parameters removed. A segment that is a dot-segment once its parameters are gone
/// (`..;x`) is refused: a server that strips parameters would climb a directory there.
pub fn match_path<'a>(normal: &'a str, opts: &Options) -> Result<Cow<'a, str>, PathError> {
    if !opts.enabled || !normal.contains(';') {
        return Ok(Cow::Borrowed(normal));
    }
    let mut out = String::with_capacity(normal.len());
    let mut segs = normal.split('/').skip(1).peekable();
    while let Some(seg) = segs.next() {
        let bare = seg.split(';').next().unwrap_or("");
        if bare == "." || bare == ".." {
            return Err(PathError::DotParams);
        }
        let last = segs.peek().is_none();
        if bare.is_empty() && opts.merge_slashes && !last {
            continue;
        }
        out.push('/');
        out.push_str(bare);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// Steps 1–3 in one pass.
fn decode(path: &str, escaped_slashes: EscapedSlashes) -> Result<String, PathError> {
    let b = path.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    b.get(i + 1).and_then(|h| hex(*h)),
                    b.get(i + 2).and_then(|l| hex(*l)),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = hi << 4 | lo;
                match v {
                    0 => return Err(PathError::Nul),
                    b'/' | b'\\' if escaped_slashes == EscapedSlashes::Reject => {
                        return Err(PathError::EscapedSlash)
                    }
                    _ if is_unreserved(v) => out.push(char::from(v)),
                    _ => push_escape(&mut out, v),
                }
                i += 3;
                continue;
            }
            b'\\' if escaped_slashes == EscapedSlashes::Reject => {
                return Err(PathError::EscapedSlash)
            }
            b'\\' => push_escape(&mut out, c),
            0..=0x20 | 0x7f => return Err(PathError::Control),
            0x80.. => return Err(PathError::NonAscii),
            _ => out.push(char::from(c)),
        }
        i += 1;
    }
    Ok(out)
}

/// Steps 4 and 5 on a decoded path that starts with `/`: dot-segments removed the way
/// RFC 3986 §5.2.4 does (a trailing `.` or `..` leaves a trailing `/`), then empty segments
/// dropped except a trailing one.
fn segments(path: &str, merge_slashes: bool) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut segs = path.split('/').skip(1).peekable();
    while let Some(seg) = segs.next() {
        let last = segs.peek().is_none();
        match seg {
            "." => {}
            ".." => {
                out.pop();
            }
            s => {
                out.push(s);
                continue;
            }
        }
        if last {
            out.push("");
        }
    }
    if merge_slashes {
        let n = out.len();
        let mut i = 0;
        out.retain(|s| {
            i += 1;
            !s.is_empty() || i == n
        });
    }
    if out.is_empty() {
        return "/".to_owned();
    }
    let mut normal = String::with_capacity(path.len());
    for s in out {
        normal.push('/');
        normal.push_str(s);
    }
    normal
}

/// RFC 3986 §2.3.
fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// `%XX` with upper-case hex (RFC 3986 §6.2.2.1), so that one byte has one spelling.
fn push_escape(out: &mut String, v: u8) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(DIGITS[usize::from(v >> 4)]));
    out.push(char::from(DIGITS[usize::from(v & 0xf)]));
}

#[cfg(test)]
mod tests;

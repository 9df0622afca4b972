use std::io;
use std::sync::{Arc, Mutex};

use super::*;
use crate::access::{self, Ended, RequestFacts, Upgraded};
use crate::splice::SessionEnd;

/// Lines written by a text subscriber (no timestamps), to a buffer.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What `f` logs through a text subscriber with `DefaultFields` (`fast` false) or
/// [`FastFields`], ANSI on or off.
fn render(fast: bool, ansi: bool, f: impl FnOnce()) -> String {
    let buf = Buf::default();
    let out = buf.clone();
    let builder = tracing_subscriber::fmt()
        .without_time()
        .with_ansi(ansi)
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || out.clone());
    if fast {
        tracing::subscriber::with_default(builder.fmt_fields(FastFields).finish(), f);
    } else {
        tracing::subscriber::with_default(builder.finish(), f);
    }
    let bytes = buf.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

/// Strings that exercise every branch of the escaper.
const TRICKY: [&str; 12] = [
    "",
    "plain ascii 'single' quotes",
    "a\"quote and a \\ backslash",
    "new\nline\r\ttab\0nul",
    "esc \x1b[31mred\x1b[0m bel \x07 del \x7f",
    "C1 \u{85} \u{9b}31m",
    "non-ASCII é ü 日本 🦀",
    "combining e\u{301} at start: \u{301}x",
    "zero width \u{200b} bidi \u{202e} bom \u{feff}",
    "unpaired\u{fffd}replacement",
    "\"",
    "trailing \\",
];

#[derive(Debug)]
struct Oops(Option<Box<Oops>>, &'static str);
impl fmt::Display for Oops {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.1)
    }
}
impl std::error::Error for Oops {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.as_deref().map(|e| e as _)
    }
}

fn everything() {
    for s in TRICKY {
        tracing::info!(
            target: "wsedge::access",
            kind = "session",
            value = s,
            r#type = s,
            display = %s,
            debug = ?s,
            "message {s} with \x1b[1m ansi"
        );
        tracing::warn!("{s}");
    }
    tracing::info!(
        u = u64::MAX,
        zero = 0u64,
        i = i64::MIN,
        neg = -42i64,
        pos = 7i64,
        yes = true,
        no = false,
        ms = 1.25f64,
        whole = 3.0f64,
        big = 123_456_789u128,
    );
    let chained = Oops(Some(Box::new(Oops(None, "inner \x1b cause"))), "outer");
    let e: &(dyn std::error::Error + 'static) = &chained;
    tracing::error!(error = e, "chained");
    let plain = Oops(None, "plain");
    let e: &(dyn std::error::Error + 'static) = &plain;
    tracing::error!(error = e);
    let span = tracing::info_span!(
        "session",
        conn_id = 7u64,
        request_id = TRICKY[2],
        client_ip = %"127.0.0.1",
        late = tracing::field::Empty,
    );
    let _g = span.enter();
    span.record("late", TRICKY[3]);
    tracing::info!(target: "wsedge::access", "in the span");
    let inner = tracing::info_span!("inner", x = TRICKY[6]);
    let _i = inner.enter();
    tracing::info!("nested");
}

#[test]
fn same_bytes_as_default_fields_ansi_off_and_on() {
    for ansi in [false, true] {
        let default = render(false, ansi, everything);
        let fast = render(true, ansi, everything);
        assert!(default.lines().count() >= 25, "{default}");
        for (d, f) in default.lines().zip(fast.lines()) {
            assert_eq!(d, f, "ansi {ansi}");
        }
        assert_eq!(default, fast, "ansi {ansi}");
    }
}

#[test]
fn debug_str_matches_std() {
    for s in TRICKY {
        let mut out = String::new();
        write_debug_str(&mut out, s).unwrap();
        assert_eq!(out, format!("{s:?}"));
    }
}

/// Splits the fields after the message of a text line: `name=value` with a value either
/// bare or `"…"` with backslash escapes. Returns (name, raw value) pairs.
fn fields_of(line: &str) -> Vec<(String, String)> {
    let (_, rest) = line.split_once("session closed ").expect(line);
    let mut out = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            value.push(chars.next().unwrap());
            while let Some(c) = chars.next() {
                value.push(c);
                if c == '\\' {
                    value.push(chars.next().expect("escape at the end of the line"));
                } else if c == '"' {
                    break;
                }
            }
            assert!(matches!(chars.next(), None | Some(' ')), "{line}");
        } else {
            value = chars.by_ref().take_while(|c| *c != ' ').collect();
        }
        out.push((name, value));
    }
    out
}

/// Undoes `write_debug_str` for the escapes it writes.
fn unescape(quoted: &str) -> String {
    let inner = &quoted[1..quoted.len() - 1];
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next().unwrap() {
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            '0' => out.push('\0'),
            'u' => {
                let hex: String = chars.by_ref().skip(1).take_while(|c| *c != '}').collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
            }
            other => out.push(other),
        }
    }
    out
}

/// A User-Agent with a newline, quotes, a backslash, an ESC byte and non-ASCII, written raw
/// (as if `access::clean` were bypassed) and cleaned: one line, the same 28 fields, the
/// value read back intact.
#[test]
fn a_hostile_user_agent_cannot_forge_a_line_or_a_field() {
    let hostile =
        "ua\" forged=\"1\nINFO wsedge::access: session closed kind=\"session\" \\\" \x1b[2J é 🦀\\";
    for user_agent in [hostile.to_owned(), access::clean(hostile)] {
        let up = Upgraded {
            request: RequestFacts {
                user_agent: user_agent.clone(),
                ..RequestFacts::default()
            },
            ..Upgraded::default()
        };
        let end = SessionEnd::IdleTimeout;
        let ended = Ended {
            route: "r",
            backend: "b1",
            backend_addr: None,
            end: &end,
            code: "1001",
            initiator: "proxy",
            duration: std::time::Duration::from_millis(5),
            c2b: (1, 2),
            b2c: (3, 4),
            hard_closed: false,
        };
        let text = render(true, false, || access::session(&up, &ended));
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        assert!(text.ends_with('\n'), "{text}");
        assert!(!text.contains('\x1b'), "{text}");
        let fields = fields_of(text.trim_end());
        let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), 28, "{text}");
        assert_eq!(names.iter().filter(|n| **n == "kind").count(), 1, "{text}");
        assert!(!names.contains(&"forged"), "{text}");
        let ua = &fields.iter().find(|(n, _)| n == "user_agent").unwrap().1;
        assert_eq!(unescape(ua), user_agent, "{text}");
        // The default formatter writes the same line.
        assert_eq!(text, render(false, false, || access::session(&up, &ended)));
    }
}

#[test]
fn addresses_written_as_display_writes_them() {
    let addrs: [SocketAddr; 6] = [
        "127.0.0.1:39002".parse().unwrap(),
        "0.0.0.0:0".parse().unwrap(),
        "255.255.255.255:65535".parse().unwrap(),
        "10.20.3.4:80".parse().unwrap(),
        "[::1]:443".parse().unwrap(),
        "[2001:db8::7%3]:8080".parse().unwrap(),
    ];
    for a in addrs {
        assert_eq!(AddrText(a).to_text(), a.to_string());
        assert_eq!(AddrText(a.ip()).to_text(), a.ip().to_string());
        assert_eq!(AddrText(Some(a)).to_text(), a.to_string());
    }
    assert_eq!(AddrText(None::<SocketAddr>).to_text(), "");
}

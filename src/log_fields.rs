//! The text log's field formatter (`--log-format text`, the default): writes an event's or a
//! span's fields exactly as tracing-subscriber's `DefaultFields` does (`message name=value …`,
//! strings quoted and escaped as `Debug` escapes them, the message stripped of ANSI escapes),
//! at a fraction of its cost. Issue 21: the default formatter spent ≈ 34,000 instructions on
//! the 28 fields of one `session closed` line (every name and `=` through `nu_ansi_term`'s
//! `Display`, every value through `core::fmt`, the message a `char` at a time); here safe
//! bytes are copied in runs and only quotes, backslashes, control and non-printable
//! characters are escaped, so a client's string can never end a line or a quoted field early.
//! [`AddrText`] writes addresses for log lines without std's padding pass.

use std::fmt::{self, Write};
use std::net::{IpAddr, SocketAddr};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;

/// `DefaultFields`' output, faster (see the module docs). `tests` compares the two byte for
/// byte.
#[derive(Debug, Default, Clone, Copy)]
pub struct FastFields;

impl<'w> FormatFields<'w> for FastFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = Visitor {
            ansi: writer.has_ansi_escapes(),
            sanitize: writer.sanitizes_ansi_escapes(),
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

struct Visitor<'w> {
    writer: Writer<'w>,
    ansi: bool,
    /// The message's ANSI escapes written out as text (tracing-subscriber's default).
    sanitize: bool,
    is_empty: bool,
    result: fmt::Result,
}

impl Visitor<'_> {
    /// Writes the separator and `name=` of a field; `None` when the field is skipped (an error
    /// earlier, or `log.` metadata that tracing-log already placed).
    fn begin(&mut self, field: &Field) -> Option<()> {
        if self.result.is_err() {
            return None;
        }
        let name = field.name();
        if name.starts_with("log.") {
            return None;
        }
        if self.is_empty {
            self.is_empty = false;
        } else if let Err(e) = self.writer.write_char(' ') {
            self.result = Err(e);
            return None;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        let r = if self.ansi {
            // nu_ansi_term's italic name and dimmed `=`.
            self.writer
                .write_str("\x1b[3m")
                .and_then(|_| self.writer.write_str(name))
                .and_then(|_| self.writer.write_str("\x1b[0m\x1b[2m=\x1b[0m"))
        } else {
            self.writer
                .write_str(name)
                .and_then(|_| self.writer.write_char('='))
        };
        self.result = r;
        r.ok()
    }

    fn message(&mut self, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        if self.is_empty {
            self.is_empty = false;
        } else if let Err(e) = self.writer.write_char(' ') {
            self.result = Err(e);
            return;
        }
        self.result = if self.sanitize {
            write!(AnsiEscaping(&mut self.writer), "{value:?}")
        } else {
            write!(self.writer, "{value:?}")
        };
    }
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            return self.message(&format_args!("{value}"));
        }
        if self.begin(field).is_some() {
            self.result = write_debug_str(&mut self.writer, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "message" {
            return self.message(&value);
        }
        if self.begin(field).is_some() {
            self.result = write_u64(&mut self.writer, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "message" {
            return self.message(&value);
        }
        if self.begin(field).is_some() {
            self.result = if value < 0 {
                self.writer
                    .write_char('-')
                    .and_then(|_| write_u64(&mut self.writer, value.unsigned_abs()))
            } else {
                write_u64(&mut self.writer, value.unsigned_abs())
            };
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "message" {
            return self.message(&value);
        }
        if self.begin(field).is_some() {
            self.result = self.writer.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // As `DefaultVisitor`: the error's text, then its sources as `name.sources=[a, b]`.
        let sanitize = self.sanitize;
        let text = Sanitized(value, sanitize);
        match value.source() {
            None => self.record_debug(field, &format_args!("{text}")),
            Some(source) => {
                let (i, d, r) = if self.ansi {
                    ("\x1b[3m", "\x1b[2m", "\x1b[0m")
                } else {
                    ("", "", "")
                };
                let sources = Sources(source, sanitize);
                self.record_debug(
                    field,
                    &format_args!(
                        "{text} {i}{}{r}{i}.sources{r}{d}={r}{sources}",
                        field.name()
                    ),
                )
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            return self.message(value);
        }
        if self.begin(field).is_some() {
            self.result = write!(self.writer, "{value:?}");
        }
    }
}

/// `<str as Debug>`'s output: runs of printable ASCII copied whole; `"` and `\` escaped;
/// control characters, grapheme extenders and other non-printable characters as `char`'s
/// `escape_debug` writes them (`\n`, `\u{1b}`, …); printable non-ASCII kept.
pub fn write_debug_str(w: &mut impl Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    let bytes = s.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        let b = bytes[i];
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            i += 1;
            continue;
        }
        // `i` is on a char boundary: every byte before it was ASCII or a whole char.
        let c = s[i..].chars().next().unwrap_or_default();
        let escaped = c.escape_debug();
        if escaped.len() != 1 {
            w.write_str(&s[start..i])?;
            for e in escaped {
                w.write_char(e)?;
            }
            start = i + c.len_utf8();
        }
        i += c.len_utf8();
    }
    w.write_str(&s[start..])?;
    w.write_char('"')
}

/// An address as its `Display` writes it (no padding or width), IPv4 without `core::fmt`:
/// std formats an `Ipv4Addr` into a buffer and then pads it, ≈ 1,200 instructions each, and a
/// session's log lines write several (issue 21). `None` writes nothing.
#[derive(Debug, Clone, Copy)]
pub struct AddrText<T>(pub T);

impl fmt::Display for AddrText<IpAddr> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_ip(f, self.0)
    }
}

impl fmt::Display for AddrText<SocketAddr> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            SocketAddr::V4(a) => {
                write_ip(f, IpAddr::V4(*a.ip()))?;
                f.write_char(':')?;
                write_u64(f, u64::from(a.port()))
            }
            SocketAddr::V6(a) => write!(f, "{a}"),
        }
    }
}

impl fmt::Display for AddrText<Option<SocketAddr>> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.map_or(Ok(()), |a| AddrText(a).fmt(f))
    }
}

impl<T> AddrText<T>
where
    Self: fmt::Display,
{
    /// The text in a new `String`, sized for it.
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(24);
        let _ = write!(s, "{self}");
        s
    }
}

fn write_ip(w: &mut impl Write, ip: IpAddr) -> fmt::Result {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            write_u64(w, u64::from(a))?;
            for o in [b, c, d] {
                w.write_char('.')?;
                write_u64(w, u64::from(o))?;
            }
            Ok(())
        }
        IpAddr::V6(v6) => write!(w, "{v6}"),
    }
}

fn write_u64(w: &mut impl Write, mut v: u64) -> fmt::Result {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    w.write_str(std::str::from_utf8(&buf[at..]).unwrap_or_default())
}

/// Writes through, with the C0 and C1 controls a terminal acts on spelled out as text, as
/// tracing-subscriber's ANSI sanitising does (ESC, BEL, BS, FF, DEL as `\x1b`…, U+0080 to
/// U+009F as `\u{85}`…); everything else copied in runs.
struct AnsiEscaping<'a, W: Write>(&'a mut W);

impl<W: Write> Write for AnsiEscaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let bytes = s.as_bytes();
        let (mut start, mut i) = (0, 0);
        while i < bytes.len() {
            let b = bytes[i];
            let (escape, len): (Option<&str>, usize) = match b {
                0x1b => (Some("\\x1b"), 1),
                0x07 => (Some("\\x07"), 1),
                0x08 => (Some("\\x08"), 1),
                0x0c => (Some("\\x0c"), 1),
                0x7f => (Some("\\x7f"), 1),
                // U+0080..=U+009F: 0xC2 then 0x80..=0x9F.
                0xc2 if matches!(bytes.get(i + 1), Some(0x80..=0x9f)) => (None, 2),
                _ => {
                    i += 1;
                    continue;
                }
            };
            self.0.write_str(&s[start..i])?;
            match escape {
                Some(e) => self.0.write_str(e)?,
                None => write!(self.0, "\\u{{{:x}}}", bytes[i + 1])?,
            }
            i += len;
            start = i;
        }
        self.0.write_str(&s[start..])
    }
}

/// An error's text, ANSI-sanitised if the writer asks.
struct Sanitized<'a>(&'a (dyn std::error::Error + 'static), bool);

impl fmt::Display for Sanitized<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.1 {
            write!(AnsiEscaping(f), "{}", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// `[source, its source, …]`, as `DefaultVisitor` lists them.
struct Sources<'a>(&'a (dyn std::error::Error + 'static), bool);

impl fmt::Display for Sources<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        let mut next = Some(self.0);
        while let Some(e) = next {
            list.entry(&format_args!("{}", Sanitized(e, self.1)));
            next = e.source();
        }
        list.finish()
    }
}

#[cfg(test)]
mod tests;

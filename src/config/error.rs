//! Config errors and warnings: each names the file, line, column and field path.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a config file, printed as `FILE:LINE:COLUMN: field.path: what is wrong`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no position (the file cannot be read).
    pub line: usize,
    pub column: usize,
    /// Dotted field path, e.g. `routes[0].backends[1].weight`; empty for the whole file.
    pub path: String,
    pub message: String,
}

/// The longest part of an offending value an error quotes: a 50 MB scalar must not become a
/// 50 MB log line.
pub const MAX_QUOTED_BYTES: usize = 100;
/// A message is cut here whatever it holds (the quoted spans are clipped first).
const MAX_MESSAGE_BYTES: usize = 1000;

/// Clips every `` `…` `` or `"…"` span of `message` longer than [`MAX_QUOTED_BYTES`] to that
/// many bytes plus the value's full length, then the message itself to
/// [`MAX_MESSAGE_BYTES`]. Every config error passes here once, when it is made.
pub fn clip_quotes(message: String) -> String {
    if message.len() <= MAX_QUOTED_BYTES {
        return message;
    }
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE_BYTES + 16));
    let mut rest = message.as_str();
    while let Some(open) = rest.find(['`', '"']) {
        let quote = &rest[open..=open];
        out.push_str(&rest[..=open]);
        let inner = &rest[open + 1..];
        let Some(close) = inner.find(quote) else {
            rest = inner;
            break;
        };
        let value = &inner[..close];
        if value.len() > MAX_QUOTED_BYTES {
            let mut cut = MAX_QUOTED_BYTES;
            while !value.is_char_boundary(cut) {
                cut -= 1;
            }
            out.push_str(&value[..cut]);
            out.push_str(&format!("…({} bytes)", value.len()));
        } else {
            out.push_str(value);
        }
        out.push_str(quote);
        rest = &inner[close + 1..];
    }
    out.push_str(rest);
    if out.len() > MAX_MESSAGE_BYTES {
        let mut cut = MAX_MESSAGE_BYTES;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one file (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The file is larger than `--max-config-bytes`: refused before it is read.
    pub fn too_large(path: &Path, size: u64, max: u64) -> Self {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            path: String::new(),
            message: format!(
                "the file is {size} bytes, over the {max}-byte limit (--max-config-bytes)"
            ),
        }])
    }

    pub fn io(path: &Path, err: &std::io::Error) -> Self {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            path: String::new(),
            message: format!("cannot read: {err}"),
        }])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Something legal but probably unintended (a route with no origin list). Same format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning(pub ConfigError);

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "warning: {}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_quoted_values_are_clipped_and_short_messages_kept() {
        let short = "`ws://a:1` is not a valid URL".to_owned();
        assert_eq!(clip_quotes(short.clone()), short);
        let huge = "é".repeat(600_000);
        let clipped = clip_quotes(format!("`{huge}` is not a valid URL: \"{huge}\""));
        assert!(clipped.len() < 400, "{} bytes", clipped.len());
        assert!(
            clipped.contains("…(1200000 bytes)` is not a valid URL: \""),
            "{clipped}"
        );
        let unquoted = clip_quotes("x".repeat(5000));
        assert!(unquoted.len() <= MAX_MESSAGE_BYTES + '…'.len_utf8());
    }
}

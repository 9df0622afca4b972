//! The chunked body of a backend's refusal (RFC 9112 §7.1), decoded as it arrives: chunk
//! sizes, extensions (skipped), data, and trailers (skipped). Part of the hand-written
//! upgrade exchange (`upstream/response.rs`); the rules and limits follow hyper's decoder,
//! which read these bodies before, so the same bodies are relayed whole or cut short.

/// Most bytes of chunk extensions in one body (hyper's limit): past it the body is broken.
const MAX_EXTENSION_BYTES: u64 = 16 * 1024;
/// Most bytes of trailers: they are skipped, but not without end.
const MAX_TRAILER_BYTES: usize = 64 * 1024;

/// Where the decoder stands between two pieces of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The first digit of a chunk size.
    Start,
    Size,
    /// Spaces or tabs after the size.
    SizeLws,
    Extension,
    SizeLf,
    Body,
    BodyCr,
    BodyLf,
    /// After the last chunk: a CR (no trailers) or the first byte of a trailer line.
    EndCr,
    EndLf,
    Trailer,
    TrailerLf,
    Done,
}

/// What one call made of its input.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// All input used; the body goes on.
    More,
    /// The body ended (the rest of the input, if any, is not part of it).
    End,
    /// The sink refused more data.
    Stopped,
}

/// A chunked body's decoder, fed pieces of any size.
#[derive(Debug)]
pub struct Chunked {
    state: State,
    /// The size being read, then what is left of the chunk's data.
    size: u64,
    extension_bytes: u64,
    trailer_bytes: usize,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: State::Start,
            size: 0,
            extension_bytes: 0,
            trailer_bytes: 0,
        }
    }
}

impl Chunked {
    /// Decodes `input`, handing each piece of data to `sink` (which answers `false` to stop).
    /// An error names the broken rule; what the sink got before it stands.
    pub fn decode(
        &mut self,
        mut input: &[u8],
        sink: &mut impl FnMut(&[u8]) -> bool,
    ) -> Result<Decoded, &'static str> {
        while let Some((&b, rest)) = input.split_first() {
            if self.state == State::Body {
                // Data goes out in slices, not byte by byte.
                let n = input
                    .len()
                    .min(usize::try_from(self.size).unwrap_or(usize::MAX));
                let (data, rest) = input.split_at(n);
                input = rest;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = State::BodyCr;
                }
                if !sink(data) {
                    return Ok(Decoded::Stopped);
                }
                continue;
            }
            input = rest;
            self.state = self.step(b)?;
            if self.state == State::Done {
                return Ok(Decoded::End);
            }
        }
        Ok(Decoded::More)
    }

    /// One byte outside chunk data.
    fn step(&mut self, b: u8) -> Result<State, &'static str> {
        use State::*;
        Ok(match (self.state, b) {
            (Start | Size, b) if b.is_ascii_hexdigit() => {
                let digit = (b as char).to_digit(16).expect("a hex digit") as u64;
                self.size = self
                    .size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(digit))
                    .ok_or("chunk size overflows")?;
                Size
            }
            (Start, _) => return Err("chunk size without a digit"),
            (Size | SizeLws, b'\t' | b' ') => SizeLws,
            (Size | SizeLws, b';') => Extension,
            (Size | SizeLws | Extension, b'\r') => SizeLf,
            (Size | SizeLws, _) => return Err("invalid chunk size line"),
            (Extension, b'\n') => return Err("chunk extension holds a bare LF"),
            (Extension, _) => {
                self.extension_bytes += 1;
                if self.extension_bytes >= MAX_EXTENSION_BYTES {
                    return Err("chunk extensions over their limit");
                }
                Extension
            }
            (SizeLf, b'\n') if self.size == 0 => EndCr,
            (SizeLf, b'\n') => Body,
            (SizeLf, _) => return Err("chunk size line without its LF"),
            (BodyCr, b'\r') => BodyLf,
            (BodyCr, _) => return Err("chunk data longer than its size"),
            (BodyLf, b'\n') => Start,
            (BodyLf, _) => return Err("chunk data without its LF"),
            (EndCr, b'\r') => EndLf,
            (EndLf, b'\n') => Done,
            (EndLf, _) => return Err("last chunk without its final LF"),
            (EndCr | Trailer, b) => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > MAX_TRAILER_BYTES {
                    return Err("trailers over their limit");
                }
                if b == b'\r' {
                    TrailerLf
                } else {
                    Trailer
                }
            }
            (TrailerLf, b'\n') => EndCr,
            (TrailerLf, _) => return Err("trailer line without its LF"),
            (Body | Done, _) => unreachable!("handled by decode"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An input, the data it decodes to, and the verdict.
    type Case<'a> = (&'a [u8], &'a [u8], Result<Decoded, &'static str>);

    /// Decodes `input` fed in pieces of `step` bytes: the data, and the verdict.
    fn run(input: &[u8], step: usize) -> (Vec<u8>, Result<Decoded, &'static str>) {
        let mut d = Chunked::default();
        let mut out = Vec::new();
        let mut last = Ok(Decoded::More);
        for piece in input.chunks(step.max(1)) {
            last = d.decode(piece, &mut |data| {
                out.extend_from_slice(data);
                true
            });
            if last != Ok(Decoded::More) {
                break;
            }
        }
        (out, last)
    }

    #[test]
    fn bodies_decode_the_same_whatever_the_split() {
        let cases: &[Case<'_>] = &[
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello", Ok(Decoded::End)),
            (
                b"5;ext=1\r\nhello\r\n6 \r\n world\r\n0\r\n\r\n",
                b"hello world",
                Ok(Decoded::End),
            ),
            (
                b"A\r\n0123456789\r\n0\r\nExpires: never\r\nX: y\r\n\r\n",
                b"0123456789",
                Ok(Decoded::End),
            ),
            (b"5\r\nhel", b"hel", Ok(Decoded::More)),
            (b"x\r\n", b"", Err("chunk size without a digit")),
            (
                b"5\r\nhelloX",
                b"hello",
                Err("chunk data longer than its size"),
            ),
            (b"5;a\nhello", b"", Err("chunk extension holds a bare LF")),
            (b"fffffffffffffffff\r\n", b"", Err("chunk size overflows")),
            (b"5\nhello", b"", Err("invalid chunk size line")),
            (b"5\r\rhello", b"", Err("chunk size line without its LF")),
        ];
        for (input, data, verdict) in cases {
            for step in [1, 2, 3, 7, input.len()] {
                let (out, got) = run(input, step);
                assert_eq!((&out[..], &got), (*data, verdict), "{input:?} by {step}");
            }
        }
    }

    #[test]
    fn a_refusing_sink_stops_the_decoder() {
        let mut d = Chunked::default();
        let got = d.decode(b"5\r\nhello\r\n0\r\n\r\n", &mut |_| false);
        assert_eq!(got, Ok(Decoded::Stopped));
    }
}

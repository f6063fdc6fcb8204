//! The one frame codec of the socket protocol, used by the server, both clients, the CLI, the
//! load test, the benches and the tests.
//!
//! Two framings:
//! - **binary**: a 4-byte big-endian payload length, then the payload (postcard);
//! - **JSON lines**: one JSON document per line, ended by `\n` (a `\r` before it is dropped).
//!
//! Decoding is incremental and pure: [`split`] looks at the bytes received so far and says
//! where the first complete frame's payload lies and how many bytes it takes, or that more are
//! needed. An announced length over the bound is an error as soon as its 4 bytes are in, before
//! anything is allocated; nothing is ever allocated for the announced length. [`FrameBuf`] adds
//! an owned buffer for callers that read from a stream.

use std::io::Read;
use std::ops::Range;

/// The largest request frame (payload bytes) a server accepts: a binary payload or a JSON line
/// (without its newline).
pub const MAX_FRAME: usize = 64 * 1024;

/// The largest response frame a client accepts. A response carries one DNS answer (at most
/// 65,535 bytes of message) parsed, with its diagnostics: a small multiple of [`MAX_FRAME`].
pub const MAX_RESPONSE_FRAME: usize = 16 * MAX_FRAME;

/// The length prefix of a binary frame.
pub const HEADER_LEN: usize = 4;

/// How a connection's frames are delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Length prefix and postcard.
    Binary,
    /// Newline-delimited JSON.
    Json,
}

impl Framing {
    /// The framing a connection speaks, from its first byte: `{` is JSON, anything else binary.
    pub fn detect(first: u8) -> Framing {
        if first == b'{' {
            Framing::Json
        } else {
            Framing::Binary
        }
    }
}

/// A frame over the bound (both are fatal to the connection: `frame_too_large`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A binary frame announcing more than the bound.
    #[error("a frame of {len} bytes; the limit is {max}")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A JSON line longer than the bound (or that many bytes with no newline yet).
    #[error("a JSON line over {max} bytes")]
    LineTooLong {
        /// The bound.
        max: usize,
    },
}

impl FrameError {
    /// The wire error code of this error.
    pub fn code(&self) -> super::ErrorCode {
        super::ErrorCode::FrameTooLarge
    }
}

/// Where the first complete frame of a buffer lies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// The payload's bytes (without prefix, newline or `\r`).
    pub payload: Range<usize>,
    /// The bytes the whole frame takes from the start of the buffer.
    pub consumed: usize,
}

/// The first complete frame at the start of `buf`, `None` when more bytes are needed, or an
/// error when it is (or is announced to be) over `max` payload bytes. Pure: no allocation.
pub fn split(framing: Framing, buf: &[u8], max: usize) -> Result<Option<Split>, FrameError> {
    match framing {
        Framing::Binary => {
            let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
                return Ok(None);
            };
            let len = u32::from_be_bytes(*head) as usize;
            if len > max {
                return Err(FrameError::TooLarge { len, max });
            }
            let end = HEADER_LEN + len;
            Ok((buf.len() >= end).then_some(Split {
                payload: HEADER_LEN..end,
                consumed: end,
            }))
        }
        Framing::Json => {
            let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
                return if buf.len() > max {
                    Err(FrameError::LineTooLong { max })
                } else {
                    Ok(None)
                };
            };
            if nl > max {
                return Err(FrameError::LineTooLong { max });
            }
            let end = if nl > 0 && buf[nl - 1] == b'\r' {
                nl - 1
            } else {
                nl
            };
            Ok(Some(Split {
                payload: 0..end,
                consumed: nl + 1,
            }))
        }
    }
}

/// Appends one binary frame: the length prefix, then what `payload` appends to the buffer
/// (whose length it returns, or `None` when it could not be written; the buffer is then left as
/// it was). A payload over `u32::MAX` bytes is refused the same way.
pub fn encode_binary<E>(
    out: &mut Vec<u8>,
    payload: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), Option<E>> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    if let Err(e) = payload(out) {
        out.truncate(start);
        return Err(Some(e));
    }
    let Ok(len) = u32::try_from(out.len() - start - HEADER_LEN) else {
        out.truncate(start);
        return Err(None);
    };
    out[start..start + HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// An owned, growing buffer of received bytes, cut into frames: for a client or a test that
/// reads a stream. Holds at most one partial frame plus what one read brought.
#[derive(Debug)]
pub struct FrameBuf {
    buf: Vec<u8>,
    /// The first byte not yet handed out.
    start: usize,
    framing: Framing,
    max: usize,
}

impl FrameBuf {
    /// An empty buffer for `framing`, refusing frames over `max` payload bytes.
    pub fn new(framing: Framing, max: usize) -> FrameBuf {
        FrameBuf {
            buf: Vec::with_capacity(16 * 1024),
            start: 0,
            framing,
            max,
        }
    }

    /// Appends received bytes (first dropping the frames already handed out).
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet handed out as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// How many more bytes the next frame needs at least (0: it is whole, or it is over the
    /// bound and [`FrameBuf::next_frame`] says so), for a reader that must not read past it.
    /// Never more than the bound plus the prefix.
    pub fn wanted(&self) -> usize {
        let rest = &self.buf[self.start..];
        match self.framing {
            Framing::Binary => match rest.first_chunk::<HEADER_LEN>() {
                None => HEADER_LEN - rest.len(),
                Some(head) => match u32::from_be_bytes(*head) as usize {
                    len if len > self.max => 0,
                    len => (HEADER_LEN + len).saturating_sub(rest.len()),
                },
            },
            Framing::Json => usize::from(!rest.contains(&b'\n') && rest.len() <= self.max),
        }
    }

    /// The next complete frame's payload, `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        Ok(self.next_range()?.map(|r| &self.buf[r]))
    }

    fn next_range(&mut self) -> Result<Option<Range<usize>>, FrameError> {
        let from = self.start;
        Ok(split(self.framing, &self.buf[from..], self.max)?.map(|s| {
            self.start += s.consumed;
            from + s.payload.start..from + s.payload.end
        }))
    }

    /// Reads from `r` (blocking) until a whole frame is in and returns its payload. End of file
    /// is `UnexpectedEof`; a frame over the bound is `InvalidData`.
    pub fn read_frame(&mut self, r: &mut impl Read) -> std::io::Result<&[u8]> {
        let mut chunk = [0u8; 8 * 1024];
        loop {
            match self.next_range() {
                Ok(Some(range)) => return Ok(&self.buf[range]),
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            }
            let n = match r.read(&mut chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => r?,
            };
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.feed(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode_binary::<()>(&mut out, |o| {
                o.extend_from_slice(p);
                Ok(())
            })
            .unwrap();
        }
        out
    }

    /// Feeds `wire` cut at `at` and collects every frame.
    fn frames_cut_at(framing: Framing, wire: &[u8], at: usize) -> Vec<Vec<u8>> {
        let mut fb = FrameBuf::new(framing, MAX_FRAME);
        let mut got = Vec::new();
        for part in [&wire[..at], &wire[at..]] {
            fb.feed(part);
            while let Some(p) = fb.next_frame().unwrap() {
                got.push(p.to_vec());
            }
        }
        assert_eq!(fb.buffered(), 0);
        got
    }

    #[test]
    fn binary_frames_split_at_every_byte() {
        let payloads: [&[u8]; 4] = [b"one", b"", &[0u8; 300], b"\n{x"];
        let wire = binary(&payloads);
        for at in 0..=wire.len() {
            let got = frames_cut_at(Framing::Binary, &wire, at);
            assert_eq!(got, payloads.map(<[u8]>::to_vec), "cut at {at}");
        }
    }

    #[test]
    fn json_lines_split_at_every_byte_crlf_included() {
        let wire = b"{\"id\":1}\n{\"id\":2}\r\n\n{}\r\n";
        let want: Vec<Vec<u8>> = [&b"{\"id\":1}"[..], b"{\"id\":2}", b"", b"{}"]
            .map(<[u8]>::to_vec)
            .into();
        for at in 0..=wire.len() {
            assert_eq!(frames_cut_at(Framing::Json, wire, at), want, "cut at {at}");
        }
    }

    #[test]
    fn zero_length_frame_is_a_frame() {
        let s = split(Framing::Binary, &[0, 0, 0, 0, 9], MAX_FRAME).unwrap();
        assert_eq!(
            s,
            Some(Split {
                payload: 4..4,
                consumed: 4
            })
        );
    }

    #[test]
    fn oversize_is_refused_from_the_prefix_alone() {
        // Only the 4-byte prefix is in: the announced length is refused before any payload.
        let len = (MAX_FRAME as u32 + 1).to_be_bytes();
        assert_eq!(
            split(Framing::Binary, &len, MAX_FRAME),
            Err(FrameError::TooLarge {
                len: MAX_FRAME + 1,
                max: MAX_FRAME
            })
        );
        assert_eq!(
            split(Framing::Binary, &u32::MAX.to_be_bytes(), MAX_FRAME)
                .unwrap_err()
                .to_string(),
            format!("a frame of {} bytes; the limit is {MAX_FRAME}", u32::MAX)
        );
        // Exactly the bound is fine (and needs its bytes).
        let len = (MAX_FRAME as u32).to_be_bytes();
        assert_eq!(split(Framing::Binary, &len, MAX_FRAME), Ok(None));
        // A reader never allocates the announced length.
        let mut fb = FrameBuf::new(Framing::Binary, MAX_FRAME);
        let err = fb.read_frame(&mut &u32::MAX.to_be_bytes()[..]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(fb.buf.capacity() < MAX_FRAME);
    }

    #[test]
    fn json_line_too_long() {
        let mut long = vec![b'x'; MAX_FRAME];
        assert_eq!(split(Framing::Json, &long, MAX_FRAME), Ok(None));
        long.push(b'x');
        assert_eq!(
            split(Framing::Json, &long, MAX_FRAME),
            Err(FrameError::LineTooLong { max: MAX_FRAME })
        );
        long.push(b'\n');
        assert_eq!(
            split(Framing::Json, &long, MAX_FRAME),
            Err(FrameError::LineTooLong { max: MAX_FRAME })
        );
        let mut fits = vec![b'x'; MAX_FRAME];
        fits.push(b'\n');
        assert_eq!(
            split(Framing::Json, &fits, MAX_FRAME)
                .unwrap()
                .unwrap()
                .consumed,
            MAX_FRAME + 1
        );
    }

    #[test]
    fn reads_frames_from_a_stream_and_reports_eof() {
        let wire = binary(&[b"a", b"bc"]);
        let mut rd = &wire[..];
        let mut fb = FrameBuf::new(Framing::Binary, MAX_FRAME);
        assert_eq!(fb.read_frame(&mut rd).unwrap(), b"a");
        assert_eq!(fb.read_frame(&mut rd).unwrap(), b"bc");
        assert_eq!(
            fb.read_frame(&mut rd).unwrap_err().kind(),
            std::io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn wanted_reads_exactly_one_frame() {
        let wire = binary(&[b"abc", b"de"]);
        let mut fb = FrameBuf::new(Framing::Binary, MAX_FRAME);
        let mut at = 0;
        let mut got = Vec::new();
        while at < wire.len() {
            match fb.next_frame().unwrap() {
                Some(p) => got.push(p.to_vec()),
                None => {
                    let n = fb.wanted();
                    assert!(n > 0);
                    fb.feed(&wire[at..at + n]);
                    at += n;
                }
            }
        }
        got.extend(fb.next_frame().unwrap().map(<[u8]>::to_vec));
        assert_eq!(got, [b"abc".to_vec(), b"de".to_vec()]);
        let mut fb = FrameBuf::new(Framing::Binary, MAX_FRAME);
        fb.feed(&u32::MAX.to_be_bytes());
        assert_eq!(fb.wanted(), 0);
        assert!(fb.next_frame().is_err());
        let mut fb = FrameBuf::new(Framing::Json, MAX_FRAME);
        fb.feed(b"{");
        assert_eq!(fb.wanted(), 1);
        fb.feed(b"}\n");
        assert_eq!(fb.wanted(), 0);
    }

    #[test]
    fn framing_by_first_byte() {
        assert_eq!(Framing::detect(b'{'), Framing::Json);
        assert_eq!(Framing::detect(0), Framing::Binary);
    }
}

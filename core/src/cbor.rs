//! The subset of CBOR (RFC 8949) the wire uses, in its deterministic form: definite lengths
//! only, every head in its shortest form, unsigned integers, byte strings, text strings,
//! arrays, `null`. Nothing else is accepted.
//!
//! The codec is written against the schema rather than through a generic CBOR value type so
//! that decoding can never recurse, never allocate because of a declared length (every length
//! is checked against the bytes actually present first), and never accept two encodings of one
//! message. Any off-the-shelf CBOR library reads what this writes (the tests check that with
//! ciborium).

use bytes::Bytes;

/// CBOR major types used on the wire.
pub(crate) const MAJOR_UINT: u8 = 0;
pub(crate) const MAJOR_BYTES: u8 = 2;
pub(crate) const MAJOR_TEXT: u8 = 3;
pub(crate) const MAJOR_ARRAY: u8 = 4;
pub(crate) const MAJOR_SIMPLE: u8 = 7;
/// The encoding of `null` (major 7, simple value 22).
pub(crate) const NULL: u8 = 0xf6;

/// Why bytes are not a valid encoding. Carried inside [`crate::message::DecodeError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CborError {
    /// The input ended inside an item.
    #[error("truncated CBOR item")]
    Truncated,
    /// A head used a longer form than needed (the wire is deterministic CBOR).
    #[error("non-shortest CBOR head")]
    NonCanonical,
    /// An indefinite length or a reserved additional-information value.
    #[error("indefinite-length or reserved CBOR head")]
    Indefinite,
    /// An item of another major type than the schema requires.
    #[error("expected CBOR major type {expected}, found {found}")]
    UnexpectedType {
        /// The required major type.
        expected: u8,
        /// The major type present.
        found: u8,
    },
    /// A declared length larger than the bytes left in the frame.
    #[error("declared length {declared} exceeds the {available} bytes left")]
    LengthBeyondInput {
        /// The declared length (items or bytes).
        declared: u64,
        /// Bytes left in the input.
        available: usize,
    },
    /// A text string that is not UTF-8.
    #[error("text string is not UTF-8")]
    InvalidUtf8,
}

/// Length of the shortest head carrying `arg`.
pub(crate) const fn head_len(arg: u64) -> usize {
    if arg < 24 {
        1
    } else if arg < 0x100 {
        2
    } else if arg < 0x1_0000 {
        3
    } else if arg < 0x1_0000_0000 {
        5
    } else {
        9
    }
}

/// Appends the shortest head for `major` with argument `arg`.
#[inline]
pub(crate) fn put_head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    if arg < 24 {
        out.push(m | arg as u8);
    } else if arg < 0x100 {
        out.extend_from_slice(&[m | 24, arg as u8]);
    } else if arg < 0x1_0000 {
        out.push(m | 25);
        out.extend_from_slice(&(arg as u16).to_be_bytes());
    } else if arg < 0x1_0000_0000 {
        out.push(m | 26);
        out.extend_from_slice(&(arg as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&arg.to_be_bytes());
    }
}

#[inline]
pub(crate) fn put_uint(out: &mut Vec<u8>, v: u64) {
    put_head(out, MAJOR_UINT, v);
}

#[inline]
pub(crate) fn put_array(out: &mut Vec<u8>, len: usize) {
    put_head(out, MAJOR_ARRAY, len as u64);
}

#[inline]
pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_head(out, MAJOR_BYTES, b.len() as u64);
    out.extend_from_slice(b);
}

#[inline]
pub(crate) fn put_text(out: &mut Vec<u8>, s: &str) {
    put_head(out, MAJOR_TEXT, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Encoded length of a byte or text string of `len` bytes.
pub(crate) const fn string_len(len: usize) -> usize {
    head_len(len as u64) + len
}

/// A cursor over one buffer of CBOR items. Byte strings come back as zero-copy slices of the
/// shared buffer.
pub(crate) struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Reads one head: (major type, argument).
    #[inline]
    pub(crate) fn head(&mut self) -> Result<(u8, u64), CborError> {
        let b = *self.buf.get(self.pos).ok_or(CborError::Truncated)?;
        let major = b >> 5;
        let info = b & 0x1f;
        let extra = match info {
            0..=23 => {
                self.pos += 1;
                return Ok((major, u64::from(info)));
            }
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            _ => return Err(CborError::Indefinite),
        };
        let start = self.pos + 1;
        let bytes = self
            .buf
            .get(start..start + extra)
            .ok_or(CborError::Truncated)?;
        let mut arg = 0u64;
        for &x in bytes {
            arg = (arg << 8) | u64::from(x);
        }
        if head_len(arg) != 1 + extra || (major == MAJOR_SIMPLE) {
            // Major 7 with a following byte would be a float or a two-byte simple value:
            // neither is part of the schema.
            return Err(if major == MAJOR_SIMPLE {
                CborError::UnexpectedType {
                    expected: MAJOR_SIMPLE,
                    found: MAJOR_SIMPLE,
                }
            } else {
                CborError::NonCanonical
            });
        }
        self.pos = start + extra;
        Ok((major, arg))
    }

    fn expect(&mut self, major: u8) -> Result<u64, CborError> {
        let save = self.pos;
        let (m, arg) = self.head()?;
        if m != major {
            self.pos = save;
            return Err(CborError::UnexpectedType {
                expected: major,
                found: m,
            });
        }
        Ok(arg)
    }

    /// An unsigned integer.
    #[inline]
    pub(crate) fn uint(&mut self) -> Result<u64, CborError> {
        self.expect(MAJOR_UINT)
    }

    /// An array head; returns the item count, which is at most the bytes left (every item is
    /// at least one byte), so a caller may size a vector by it.
    pub(crate) fn array(&mut self) -> Result<usize, CborError> {
        let n = self.expect(MAJOR_ARRAY)?;
        if n > self.remaining() as u64 {
            return Err(CborError::LengthBeyondInput {
                declared: n,
                available: self.remaining(),
            });
        }
        Ok(n as usize)
    }

    fn string_body(&mut self, major: u8) -> Result<core::ops::Range<usize>, CborError> {
        let n = self.expect(major)?;
        if n > self.remaining() as u64 {
            return Err(CborError::LengthBeyondInput {
                declared: n,
                available: self.remaining(),
            });
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(start..self.pos)
    }

    /// A byte string, as a zero-copy slice of the buffer.
    #[inline]
    pub(crate) fn bytes(&mut self) -> Result<Bytes, CborError> {
        let r = self.string_body(MAJOR_BYTES)?;
        Ok(self.buf.slice(r))
    }

    /// A byte string, borrowed.
    pub(crate) fn bytes_ref(&mut self) -> Result<&'a [u8], CborError> {
        let r = self.string_body(MAJOR_BYTES)?;
        Ok(&self.buf[r])
    }

    /// A UTF-8 text string.
    pub(crate) fn text(&mut self) -> Result<&'a str, CborError> {
        let r = self.string_body(MAJOR_TEXT)?;
        core::str::from_utf8(&self.buf[r]).map_err(|_| CborError::InvalidUtf8)
    }

    /// Consumes a `null` if one is next.
    pub(crate) fn null(&mut self) -> bool {
        if self.buf.get(self.pos) == Some(&NULL) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_shortest_and_checked() {
        for v in [
            0u64,
            23,
            24,
            255,
            256,
            65535,
            65536,
            u32::MAX as u64,
            u32::MAX as u64 + 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_uint(&mut out, v);
            assert_eq!(out.len(), head_len(v));
            let b = Bytes::from(out);
            let mut r = Reader::new(&b);
            assert_eq!(r.uint(), Ok(v));
            assert!(r.is_empty());
        }
        // 5 encoded in the two-byte form is rejected.
        let b = Bytes::from_static(&[0x18, 5]);
        assert_eq!(Reader::new(&b).uint(), Err(CborError::NonCanonical));
        let b = Bytes::from_static(&[0x9f]);
        assert_eq!(Reader::new(&b).array(), Err(CborError::Indefinite));
    }

    #[test]
    fn declared_lengths_are_checked_before_use() {
        // Array declaring 2^64-1 items.
        let b = Bytes::from_static(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            Reader::new(&b).array(),
            Err(CborError::LengthBeyondInput { .. })
        ));
        // Byte string declaring 4 GiB.
        let b = Bytes::from_static(&[0x5a, 0xff, 0xff, 0xff, 0xff, 1]);
        assert!(matches!(
            Reader::new(&b).bytes(),
            Err(CborError::LengthBeyondInput { .. })
        ));
    }

    #[test]
    fn our_encoding_is_read_by_an_off_the_shelf_decoder() {
        let mut out = Vec::new();
        put_array(&mut out, 4);
        put_uint(&mut out, 300);
        put_bytes(&mut out, &[1, 2, 3]);
        put_text(&mut out, "hi");
        out.push(NULL);
        let v: ciborium::Value = ciborium::from_reader(&out[..]).unwrap();
        assert_eq!(
            v,
            ciborium::Value::Array(vec![
                ciborium::Value::Integer(300.into()),
                ciborium::Value::Bytes(vec![1, 2, 3]),
                ciborium::Value::Text("hi".into()),
                ciborium::Value::Null,
            ])
        );
    }
}

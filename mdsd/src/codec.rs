//! A small little-endian binary codec for WAL records and checkpoints.
//!
//! Hand-written rather than serde: the on-disk format is versioned by the superblock and must not
//! change when a dependency does. Decoding is bounded: every length is checked against the input.

use thiserror::Error;

/// Decoding failed: the bytes are not a valid encoding.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("corrupt {what} at byte {at}")]
pub struct DecodeError {
    /// What was being decoded.
    pub what: &'static str,
    /// Byte offset in the input.
    pub at: usize,
}

/// Appends little-endian values to a byte vector.
#[derive(Debug, Default)]
pub struct Enc {
    /// The encoded bytes.
    pub buf: Vec<u8>,
}

impl Enc {
    /// An empty encoder.
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends a byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    /// Appends a u16.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends a u32.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends a u64.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends an i64.
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends an i32.
    pub fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends a length-prefixed byte string.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
    }
    /// Appends a length-prefixed UTF-8 string.
    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    /// Appends an optional u64 (presence byte then value).
    pub fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            Some(x) => {
                self.u8(1);
                self.u64(x);
            }
            None => self.u8(0),
        }
    }
    /// Appends an optional u32.
    pub fn opt_u32(&mut self, v: Option<u32>) {
        match v {
            Some(x) => {
                self.u8(1);
                self.u32(x);
            }
            None => self.u8(0),
        }
    }
    /// Appends an optional i64.
    pub fn opt_i64(&mut self, v: Option<i64>) {
        self.opt_u64(v.map(|x| x as u64));
    }
}

/// Reads little-endian values from a byte slice, failing on truncation.
#[derive(Debug)]
pub struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Dec<'a> {
    /// A decoder over `buf`; `what` names the structure in errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }
    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// Current offset.
    pub fn pos(&self) -> usize {
        self.pos
    }
    /// An error at the current position.
    pub fn err(&self) -> DecodeError {
        DecodeError {
            what: self.what,
            at: self.pos,
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(self.err());
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    /// Reads a byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    /// Reads a u16.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    /// Reads a u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    /// Reads a u64.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    /// Reads an i64.
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.arr()?))
    }
    /// Reads an i32.
    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_le_bytes(self.arr()?))
    }
    /// Reads a length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    /// Reads a length-prefixed UTF-8 string.
    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        let at = self.pos;
        let b = self.bytes()?;
        std::str::from_utf8(b).map_err(|_| DecodeError { what: self.what, at })
    }
    /// Reads an optional u64.
    pub fn opt_u64(&mut self) -> Result<Option<u64>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u64()?)),
            _ => Err(self.err()),
        }
    }
    /// Reads an optional u32.
    pub fn opt_u32(&mut self) -> Result<Option<u32>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u32()?)),
            _ => Err(self.err()),
        }
    }
    /// Reads an optional i64.
    pub fn opt_i64(&mut self) -> Result<Option<i64>, DecodeError> {
        Ok(self.opt_u64()?.map(|x| x as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_truncation() {
        let mut e = Enc::new();
        e.u8(7);
        e.u64(u64::MAX);
        e.str("héllo");
        e.opt_u32(Some(5));
        e.opt_i64(None);
        let mut d = Dec::new(&e.buf, "t");
        assert_eq!(d.u8().unwrap(), 7);
        assert_eq!(d.u64().unwrap(), u64::MAX);
        assert_eq!(d.str().unwrap(), "héllo");
        assert_eq!(d.opt_u32().unwrap(), Some(5));
        assert_eq!(d.opt_i64().unwrap(), None);
        assert_eq!(d.remaining(), 0);
        for cut in 0..e.buf.len() {
            let mut d = Dec::new(&e.buf[..cut], "t");
            let r = (|| -> Result<(), DecodeError> {
                d.u8()?;
                d.u64()?;
                d.str()?;
                d.opt_u32()?;
                d.opt_i64()?;
                Ok(())
            })();
            assert!(r.is_err(), "cut {cut}");
        }
    }
}

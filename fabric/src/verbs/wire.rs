//! What travels in one SEND, and the other fixed layouts of the verbs provider.
//!
//! Every SEND carries 32 bits of immediate data: the low 16 bits return receive credits to the
//! peer (buffers reposted since the last report), bits 16..18 say what the payload is: an explicit
//! credit message (no payload), the first fragment of a frame (starting with the 32-byte
//! `FrameHeader`), a continuation fragment, or a bulk exposure announcing the client memory of the
//! request that follows. A frame longer than one receive buffer travels as several fragments, back
//! to back (RC keeps them in order; credit messages may come in between).

use rdma_sys::*;
use rustre_proto::frame::HEADER_LEN;

pub(super) const TAG_RECV: u64 = 1;

pub(super) const TAG_SEND: u64 = 2;

pub(super) const TAG_CREDIT: u64 = 3;

pub(super) const TAG_RDMA: u64 = 4;

pub(super) const TAG_SHIFT: u32 = 56;

pub(super) const VALUE_MASK: u64 = (1 << TAG_SHIFT) - 1;

/// Builds a work request id from a tag and a value.
pub(super) fn wr_id(tag: u64, value: u64) -> u64 {
    (tag << TAG_SHIFT) | (value & VALUE_MASK)
}

pub(super) const KIND_CREDIT: u32 = 0;

pub(super) const KIND_FIRST: u32 = 1;

pub(super) const KIND_CONT: u32 = 2;

pub(super) const KIND_BULK: u32 = 3;

/// Client memory exposed with one request, announced by the client's provider right before the
/// request so that the server's provider can refuse a pull/push outside it, of the wrong
/// direction or with a key of a call that has already returned (instead of letting the RDMA
/// operation fail, which would break the queue pair).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Exposure {
    pub(super) addr: u64,
    pub(super) len: u64,
    pub(super) rkey: u32,
    /// The server may push (RDMA WRITE) into it; else it may only pull.
    pub(super) writable: bool,
}

pub(super) const EXPOSURE_LEN: usize = 24;

impl Exposure {
    pub(super) fn encode(&self) -> [u8; EXPOSURE_LEN] {
        let mut b = [0u8; EXPOSURE_LEN];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..16].copy_from_slice(&self.len.to_le_bytes());
        b[16..20].copy_from_slice(&self.rkey.to_le_bytes());
        b[20] = u8::from(self.writable);
        b
    }

    pub(super) fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != EXPOSURE_LEN || b[20] > 1 {
            return None;
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
        Some(Exposure {
            addr: u64_at(0),
            len: u64_at(8),
            rkey: u32::from_le_bytes(b[16..20].try_into().unwrap_or([0; 4])),
            writable: b[20] == 1,
        })
    }

    /// True if `[addr, addr+len)` lies inside this exposure.
    pub(super) fn covers(&self, addr: u64, len: u64) -> bool {
        addr >= self.addr
            && addr
                .checked_add(len)
                .is_some_and(|end| end <= self.addr.saturating_add(self.len))
    }
}

pub(super) fn imm(kind: u32, credits: u16) -> u32 {
    (kind << 16) | u32::from(credits)
}

/// Connection parameters exchanged as rdma_cm private data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Hello {
    /// Receive buffers the sender posted (the peer's initial credits).
    pub(super) recv_count: u32,
    /// Size of each of them.
    pub(super) recv_size: u32,
}

pub(super) const HELLO_MAGIC: [u8; 4] = *b"RSTV";

pub(super) const HELLO_VERSION: u16 = 1;

pub(super) const HELLO_LEN: usize = 16;

impl Hello {
    pub(super) fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[0..4].copy_from_slice(&HELLO_MAGIC);
        b[4..6].copy_from_slice(&HELLO_VERSION.to_le_bytes());
        b[8..12].copy_from_slice(&self.recv_count.to_le_bytes());
        b[12..16].copy_from_slice(&self.recv_size.to_le_bytes());
        b
    }

    pub(super) fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() < HELLO_LEN || b[0..4] != HELLO_MAGIC {
            return Err(format!(
                "connection private data is not a rustre hello ({} bytes)",
                b.len()
            ));
        }
        let version = u16::from_le_bytes([b[4], b[5]]);
        if version != HELLO_VERSION {
            return Err(format!("hello version {version}, expected {HELLO_VERSION}"));
        }
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let hello = Hello {
            recv_count: u32_at(8),
            recv_size: u32_at(12),
        };
        if !(1..=65535).contains(&hello.recv_count) {
            return Err(format!("hello.recv_count {} outside 1..=65535", hello.recv_count));
        }
        if !(HEADER_LEN as u32..=(1 << 24)).contains(&hello.recv_size) {
            return Err(format!(
                "hello.recv_size {} outside {HEADER_LEN}..=16 MiB",
                hello.recv_size
            ));
        }
        Ok(hello)
    }
}

/// A zeroed send work request with one scatter/gather list.
pub(super) fn send_wr(id: u64, sge: *mut ibv_sge, num_sge: i32) -> ibv_send_wr {
    // SAFETY: ibv_send_wr is plain old data (pointers, integers, unions of them); zero is valid.
    let mut wr: ibv_send_wr = unsafe { std::mem::zeroed() };
    wr.wr_id = id;
    wr.sg_list = sge;
    wr.num_sge = num_sge;
    wr.send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
    wr
}

/// Copies bytes `off..off+n` of the frame `hdr ++ body` to `dst`.
///
/// # Safety
/// `dst` must be valid for `n` writes and not overlap `hdr` or `body`.
pub(super) unsafe fn copy_frame_range(hdr: &[u8; HEADER_LEN], body: &[u8], off: usize, n: usize, dst: *mut u8) {
    let mut written = 0;
    if off < HEADER_LEN {
        let h = (HEADER_LEN - off).min(n);
        // SAFETY: h ≤ n bytes into dst; the source range is inside `hdr`.
        unsafe { std::ptr::copy_nonoverlapping(hdr.as_ptr().add(off), dst, h) };
        written = h;
    }
    if written < n {
        let body_off = off + written - HEADER_LEN;
        // SAFETY: the caller sized n to the frame, so body_off + (n - written) ≤ body.len().
        unsafe { std::ptr::copy_nonoverlapping(body.as_ptr().add(body_off), dst.add(written), n - written) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_rejects_garbage() {
        let h = Hello {
            recv_count: 64,
            recv_size: 16384,
        };
        assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
        assert!(Hello::decode(b"nonsense").is_err());
        let mut bad = h.encode();
        bad[8..12].copy_from_slice(&0u32.to_le_bytes());
        assert!(Hello::decode(&bad).unwrap_err().contains("recv_count"));
    }

    #[test]
    fn frame_ranges_are_copied_across_the_header_boundary() {
        let hdr = [7u8; HEADER_LEN];
        let body: Vec<u8> = (0..100u8).collect();
        let mut out = vec![0u8; HEADER_LEN + body.len()];
        let mut off = 0;
        while off < out.len() {
            let n = 20.min(out.len() - off);
            // SAFETY: `out` has room for off + n bytes and does not overlap the sources.
            unsafe { copy_frame_range(&hdr, &body, off, n, out.as_mut_ptr().add(off)) };
            off += n;
        }
        assert_eq!(&out[..HEADER_LEN], &hdr);
        assert_eq!(&out[HEADER_LEN..], &body[..]);
    }

    #[test]
    fn exposures_round_trip_and_bound_their_range() {
        let e = Exposure {
            addr: 0x1000,
            len: 4096,
            rkey: 77,
            writable: true,
        };
        assert_eq!(Exposure::decode(&e.encode()), Some(e));
        assert_eq!(Exposure::decode(&[0u8; 23]), None);
        assert!(e.covers(0x1000, 4096));
        assert!(e.covers(0x1800, 0x800));
        assert!(!e.covers(0x1800, 0x801));
        assert!(!e.covers(0xfff, 2));
        assert!(!e.covers(u64::MAX, 2));
    }
}

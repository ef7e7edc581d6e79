//! The tcp-to-device ceiling: what any server storing what it receives over tcp (or sending what
//! it reads) can reach on this machine, when its clients, the transport and the device share the
//! same CPUs.
//!
//! The fabric bench's socket loop measures the transport alone, with a buffer that stays in the
//! caches; fio measures the device alone. On one host a tcp write to a file-backed device pays both
//! copies at once (and a loop device's worker adds its own), so min(device, transport) is not
//! reachable there: this pipeline, doing only the work no server can skip, measures the real
//! ceiling beside them.

use anyhow::Context;
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

/// `streams` loopback connections moving `bs`-byte messages between `device` and the client
/// threads, with no checksum, no metadata, no commit and no hand-off between threads. Writing,
/// each server thread receives a message into an aligned buffer, writes it with O_DIRECT to the
/// device and acknowledges it with one byte; reading, it waits for a one-byte request, reads the
/// message with O_DIRECT from the device and sends it. Stream `t` uses its own stretch of the
/// device, the first `total` bytes over all; client `t` sends bytes of value `t + 1`. Returns GiB/s over `total` bytes (rounded down to
/// whole messages per stream).
pub fn tcp_device(device: &Path, bs: usize, streams: u64, total: u64, write: bool) -> anyhow::Result<f64> {
    anyhow::ensure!(
        bs > 0 && bs.is_multiple_of(4096) && streams > 0,
        "ceiling: {bs}-byte messages over {streams} streams (need a multiple of 4096 bytes, one stream at least)"
    );
    let per = total / (bs as u64 * streams);
    anyhow::ensure!(
        per > 0,
        "ceiling: {total} bytes is less than one {bs}-byte message per stream"
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("ceiling: bind")?;
    let at = listener.local_addr()?;
    let t0 = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let mut hs = Vec::new();
        for t in 0..streams {
            let listener = &listener;
            hs.push(s.spawn(move || -> anyhow::Result<()> {
                let (mut c, _) = listener.accept().context("ceiling: accept")?;
                c.set_nodelay(true)?;
                let dev = std::fs::OpenOptions::new()
                    .read(true)
                    .write(write)
                    .custom_flags(libc::O_DIRECT)
                    .open(device)
                    .with_context(|| format!("ceiling: opening {} with O_DIRECT", device.display()))?;
                let mut buf = rustre_fabric::aligned::AlignedBuf::new(bs);
                let mut ask = [0u8; 1];
                for k in 0..per {
                    let at = (t * per + k) * bs as u64;
                    if write {
                        c.read_exact(&mut buf).context("ceiling: recv")?;
                        dev.write_all_at(&buf, at)
                            .with_context(|| format!("ceiling: writing {}", device.display()))?;
                        c.write_all(&[1]).context("ceiling: ack")?;
                    } else {
                        c.read_exact(&mut ask).context("ceiling: request")?;
                        dev.read_exact_at(&mut buf, at)
                            .with_context(|| format!("ceiling: reading {}", device.display()))?;
                        c.write_all(&buf).context("ceiling: send")?;
                    }
                }
                Ok(())
            }));
        }
        for t in 0..streams {
            hs.push(s.spawn(move || -> anyhow::Result<()> {
                let mut c = std::net::TcpStream::connect(at).context("ceiling: connect")?;
                c.set_nodelay(true)?;
                let mut buf = vec![t as u8 + 1; bs];
                let mut ack = [0u8; 1];
                for _ in 0..per {
                    if write {
                        c.write_all(&buf).context("ceiling: send")?;
                        c.read_exact(&mut ack).context("ceiling: ack")?;
                    } else {
                        c.write_all(&[1]).context("ceiling: request")?;
                        c.read_exact(&mut buf).context("ceiling: recv")?;
                    }
                }
                Ok(())
            }));
        }
        for h in hs {
            h.join().map_err(|_| anyhow::anyhow!("ceiling thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(crate::ost::gib_s(per * bs as u64 * streams, t0.elapsed()))
}

/// `rounds` rounds of [`tcp_device`], each a write pass then a read pass: the GiB/s of every
/// round's writes and of its reads.
pub fn tcp_device_rounds(
    device: &Path,
    bs: usize,
    streams: u64,
    total: u64,
    rounds: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let (mut ws, mut rs) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for _ in 0..rounds {
        ws.push(tcp_device(device, bs, streams, total, true)?);
        rs.push(tcp_device(device, bs, streams, total, false)?);
    }
    Ok((ws, rs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_every_byte_both_ways_and_refuses_bad_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.img");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(4 << 20).unwrap();
        drop(f);
        // Direct I/O needs a file system that takes it (tmpfs and most disks do; skip elsewhere).
        if std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .is_err()
        {
            eprintln!("skipped: {} refuses O_DIRECT", dir.path().display());
            return;
        }
        let w = tcp_device(&path, 64 << 10, 4, 4 << 20, true).unwrap();
        assert!(w > 0.0 && w.is_finite(), "{w}");
        // Each stream wrote its own stretch (a MiB) with its client's byte, 1 to 4, whichever
        // server thread accepted it.
        let bytes = std::fs::read(&path).unwrap();
        let mut seen: Vec<u8> = bytes
            .chunks(1 << 20)
            .map(|s| {
                assert!(s.iter().all(|&b| b == s[0]), "a stretch written by one stream");
                s[0]
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, [1, 2, 3, 4]);
        let r = tcp_device(&path, 64 << 10, 4, 4 << 20, false).unwrap();
        assert!(r > 0.0 && r.is_finite(), "{r}");
        assert!(tcp_device(&path, 1000, 4, 4 << 20, true).is_err(), "unaligned messages");
        assert!(tcp_device(&path, 64 << 10, 0, 4 << 20, true).is_err(), "no streams");
        assert!(
            tcp_device(&path, 1 << 20, 8, 4 << 20, true).is_err(),
            "less than a message a stream"
        );
        assert!(tcp_device(&dir.path().join("none"), 64 << 10, 1, 1 << 20, false).is_err());
    }
}

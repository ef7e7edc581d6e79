//! The RPC engine: typed calls over a fabric connection, one [`Endpoint`] per server (the MDS,
//! each OST) with lazy connect, handshake, failover to the next address and a bound on the bulk
//! RPCs in flight.

use crate::error::{ClientError, Result};
use parking_lot::{Condvar, Mutex};
use prost::Message;
use rustre_fabric::{Address, Bulk, BulkDesc, ClientConn, ConnOptions, FabricError, Reply};
use rustre_proto::frame::FLAG_ERROR;
use rustre_proto::limits::{Bounded, decoded_size};
use rustre_proto::{Opcode, ProtocolError, RemoteError, pb};
use std::sync::Arc;

/// Largest heap a decoded reply may take (a readdir page of long names is the biggest).
const MAX_DECODED_REPLY: usize = 8 << 20;

/// Decodes a reply body (or its error reply) of `op` from `peer`.
pub(crate) fn decode_reply<T: Message + Default + Bounded>(op: Opcode, peer: &str, reply: &Reply) -> Result<T> {
    let proto = |source: ProtocolError| ClientError::Protocol {
        op,
        peer: peer.to_string(),
        source,
    };
    if reply.header.flags & FLAG_ERROR != 0 {
        let e: pb::ErrorReply = decode_body(&reply.body).map_err(proto)?;
        let source = RemoteError::try_from(e).map_err(proto)?;
        return Err(ClientError::Server {
            op,
            peer: peer.to_string(),
            source,
        });
    }
    if reply.header.opcode != op.as_u16() {
        return Err(proto(ProtocolError::invalid(
            "header.opcode",
            format!("reply opcode {}", reply.header.opcode),
        )));
    }
    decode_body(&reply.body).map_err(proto)
}

fn decode_body<T: Message + Default + Bounded>(body: &[u8]) -> std::result::Result<T, ProtocolError> {
    let shape = T::shape();
    let need = decoded_size(shape, body, MAX_DECODED_REPLY).map_err(|reason| ProtocolError::Decode {
        message: shape.name,
        reason,
    })?;
    if need > MAX_DECODED_REPLY {
        return Err(ProtocolError::Decode {
            message: shape.name,
            reason: format!("would take {need} bytes decoded, more than {MAX_DECODED_REPLY}"),
        });
    }
    T::decode(body).map_err(|e| ProtocolError::Decode {
        message: shape.name,
        reason: e.to_string(),
    })
}

/// A counting semaphore bounding the bulk RPCs in flight to one server.
pub(crate) struct Permits {
    free: Mutex<u32>,
    freed: Condvar,
}

/// Holds one permit until dropped.
pub(crate) struct Permit<'a>(&'a Permits);

impl Permits {
    pub(crate) fn new(n: u32) -> Self {
        Self {
            free: Mutex::new(n),
            freed: Condvar::new(),
        }
    }

    pub(crate) fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock();
        while *free == 0 {
            self.freed.wait(&mut free);
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock() += 1;
        self.0.freed.notify_one();
    }
}

/// What to say in the handshake of a new connection.
#[derive(Debug, Clone)]
pub(crate) struct Hello {
    pub(crate) cluster_name: String,
    pub(crate) client_id: u64,
    pub(crate) node_name: String,
    /// Job id for the servers' per-job statistics ([`job_id`]).
    pub(crate) job_id: String,
    /// Cluster secret (authenticated handshake) or `None`.
    pub(crate) secret: Option<rustre_proto::auth::ClusterSecret>,
}

/// The job this process works for, as the servers' per-job statistics label it:
/// `RUSTRE_JOBID`, else `SLURM_JOB_ID`, else `PBS_JOBID`, else the process name. Bytes that are
/// not printable ASCII become `_`; the result is cut to the protocol's limit.
pub(crate) fn job_id() -> String {
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
    job_id_from(|k| std::env::var(k).ok(), comm.trim())
}

fn job_id_from(var: impl Fn(&str) -> Option<String>, process: &str) -> String {
    let raw = ["RUSTRE_JOBID", "SLURM_JOB_ID", "PBS_JOBID"]
        .iter()
        .filter_map(|k| var(k))
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| process.to_owned());
    raw.trim()
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(rustre_proto::request::handshake::MAX_JOB_ID)
        .collect()
}

/// First xid an endpoint assigns itself: clear of the ones a connection assigns (from 1).
const OWN_XID_BASE: u64 = 1 << 48;

/// First pause between two rounds of reconnection attempts; doubled up to [`BACKOFF_MAX`].
const BACKOFF_MIN: std::time::Duration = std::time::Duration::from_millis(20);
/// Longest pause between two rounds of reconnection attempts.
const BACKOFF_MAX: std::time::Duration = std::time::Duration::from_millis(500);

/// True when connections to `addr` send requests under caller-chosen xids: every provider
/// does (`ClientConn::call_with_xid`), verbs and auto (verbs or tcp) included. A provider that
/// did not would make its endpoint speak under a new client id per connection instead.
fn takes_own_xids(addr: &Address) -> bool {
    matches!(
        addr,
        Address::Tcp(_) | Address::Sim(_) | Address::Verbs(_) | Address::Auto(_)
    )
}

/// One server (an MDS pair or one OST): its addresses, the live connection, the bulk bound.
///
/// Failover: a call that meets a broken connection reconnects (every address in turn, starting
/// with the next one, pausing with exponential backoff between rounds) and resends, until it
/// succeeds or the call timeout has passed since it started; the application sees a delay, not
/// an error. When every address takes caller-chosen xids (every provider), the endpoint speaks under
/// one client id on all its connections and numbers its non-bulk requests itself, so a resend
/// carries the original client id and xid and a server that had executed it answers from its
/// reply cache (exactly once). Bulk calls keep connection-assigned xids (the servers of bulk
/// operations, the OSTs, keep no reply cache: their writes and reads are idempotent).
pub(crate) struct Endpoint {
    /// Name for errors (`MDS`, `OST3`).
    pub(crate) name: String,
    addresses: Vec<Address>,
    opts: ConnOptions,
    hello: Hello,
    /// The live connection and the index of the address it goes to.
    conn: Mutex<Option<(usize, Arc<dyn ClientConn>)>>,
    /// Index of the address to try first on the next connect.
    preferred: Mutex<usize>,
    /// Connections made so far (each speaks under its own client id unless `own_xids`).
    connections: std::sync::atomic::AtomicU64,
    /// Whether this endpoint numbers its requests itself (see the type's documentation).
    own_xids: bool,
    /// The next of those numbers.
    next_xid: std::sync::atomic::AtomicU64,
    /// `HandshakeReply.features` of the server last connected to.
    features: std::sync::atomic::AtomicU32,
    pub(crate) permits: Permits,
}

impl Endpoint {
    pub(crate) fn new(name: String, addresses: Vec<Address>, opts: ConnOptions, hello: Hello, inflight: u32) -> Self {
        let own_xids = !addresses.is_empty() && addresses.iter().all(takes_own_xids);
        Self {
            name,
            addresses,
            opts,
            hello,
            conn: Mutex::new(None),
            preferred: Mutex::new(0),
            connections: std::sync::atomic::AtomicU64::new(0),
            own_xids,
            next_xid: std::sync::atomic::AtomicU64::new(OWN_XID_BASE),
            features: std::sync::atomic::AtomicU32::new(0),
            permits: Permits::new(inflight),
        }
    }

    /// Whether the server last connected to announced `feature` in its handshake (false before
    /// any connection).
    pub(crate) fn has(&self, feature: pb::ServerFeature) -> bool {
        self.features.load(std::sync::atomic::Ordering::Acquire) & feature as u32 != 0
    }

    /// The live connection, connecting (and handshaking) first if there is none. Tries every
    /// address once, starting with the preferred one.
    pub(crate) fn conn(&self) -> Result<(Arc<dyn ClientConn>, pb::HandshakeReply)> {
        let mut slot = self.conn.lock();
        if let Some((_, c)) = slot.as_ref() {
            return Ok((c.clone(), pb::HandshakeReply::default()));
        }
        let (i, c, hs) = self.connect_any()?;
        *slot = Some((i, c.clone()));
        Ok((c, hs))
    }

    /// Connects to the first address that answers the handshake.
    pub(crate) fn connect_any(&self) -> Result<(usize, Arc<dyn ClientConn>, pb::HandshakeReply)> {
        if self.addresses.is_empty() {
            return Err(ClientError::other(
                rustre_proto::Errno::ENODEV,
                format!("{} has no address", self.name),
            ));
        }
        let first = *self.preferred.lock() % self.addresses.len();
        let mut last_err = None;
        for k in 0..self.addresses.len() {
            let i = (first + k) % self.addresses.len();
            let addr = &self.addresses[i];
            match self.connect_one(addr) {
                Ok((c, hs)) => {
                    *self.preferred.lock() = i;
                    return Ok((i, c, hs));
                }
                Err(e) => {
                    tracing::debug!("{}: {addr}: {e}", self.name);
                    last_err = Some(e);
                }
            }
        }
        *self.preferred.lock() = first + 1;
        Err(last_err.unwrap_or_else(|| ClientError::other(rustre_proto::Errno::EIO, "no address")))
    }

    fn connect_one(&self, addr: &Address) -> Result<(Arc<dyn ClientConn>, pb::HandshakeReply)> {
        let op = Opcode::Handshake;
        let peer = addr.to_string();
        // Servers keep replies by (client id, xid). An endpoint numbering its requests itself
        // keeps one client id (its xids never repeat, so a resend finds its reply). Otherwise
        // xids restart on every connection: a reconnection then speaks under a client id of
        // its own, so that no new request is answered from the cache with an old reply. Both
        // keep the client's identity (the low bits), which the capabilities the MDS issues are
        // bound to, so open files stay usable across reconnections to the MDS and the OSTs.
        let generation = self.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let generation = if self.own_xids { 0 } else { generation };
        let client_id = rustre_proto::auth::connection_client_id(self.hello.client_id, generation);
        let opts = ConnOptions {
            client_id,
            ..self.opts.clone()
        };
        let conn = rustre_fabric::connect(addr, &opts).map_err(|source| ClientError::Fabric {
            op,
            peer: peer.clone(),
            source,
        })?;
        let req = pb::HandshakeRequest {
            cluster_name: self.hello.cluster_name.clone(),
            protocol_version: u32::from(rustre_proto::frame::VERSION),
            client_id,
            node_name: self.hello.node_name.clone(),
            role: pb::PeerRole::Client as i32,
            job_id: self.hello.job_id.clone(),
            ..Default::default()
        };
        // With a secret: challenge, then proof (two round trips); failures are EACCES.
        struct AuthFailed(ClientError);
        impl From<rustre_proto::auth::AuthError> for AuthFailed {
            fn from(e: rustre_proto::auth::AuthError) -> Self {
                AuthFailed(ClientError::other(rustre_proto::Errno::EACCES, e.to_string()))
            }
        }
        let call = |r: &pb::HandshakeRequest| {
            self.send_numbered(&conn, &mut None, op, &r.encode_to_vec())
                .map_err(|source| ClientError::Fabric {
                    op,
                    peer: peer.clone(),
                    source,
                })
                .and_then(|r| decode_reply::<pb::HandshakeReply>(op, &peer, &r))
                .map_err(AuthFailed)
        };
        let now = rustre_proto::auth::now_unix_ms();
        let hs = rustre_proto::auth::client_handshake(self.hello.secret.as_ref(), req, now, call).map_err(
            |AuthFailed(e)| match e {
                ClientError::Other { errno, message } => {
                    ClientError::other(errno, format!("handshake with {} at {peer}: {message}", self.name))
                }
                e => e,
            },
        );
        match hs {
            Ok(hs) => {
                self.features.store(hs.features, std::sync::atomic::Ordering::Release);
                Ok((conn, hs))
            }
            Err(e) => {
                conn.close();
                Err(e)
            }
        }
    }

    /// Drops `broken` if it is still the live connection, so the next call reconnects (to the
    /// next address first).
    fn invalidate(&self, broken: &Arc<dyn ClientConn>) {
        let mut slot = self.conn.lock();
        if let Some((i, c)) = slot.as_ref()
            && Arc::ptr_eq(c, broken)
        {
            *self.preferred.lock() = i + 1;
            c.close();
            *slot = None;
        }
    }

    /// Closes the live connection.
    pub(crate) fn close(&self) {
        if let Some((_, c)) = self.conn.lock().take() {
            c.close();
        }
    }

    /// Sends `body` under this endpoint's own xid (`xid`, assigned on first use and kept for the
    /// resends) when it numbers its requests itself, else under the connection's next xid.
    fn send_numbered(
        &self,
        conn: &Arc<dyn ClientConn>,
        xid: &mut Option<u64>,
        op: Opcode,
        body: &[u8],
    ) -> std::result::Result<Reply, FabricError> {
        if self.own_xids {
            let x = *xid.get_or_insert_with(|| self.next_xid.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            if let Some(r) = conn.call_with_xid(x, op.as_u16(), body) {
                return r;
            }
        }
        conn.call(op.as_u16(), body)
    }

    /// A typed RPC; on a broken connection it fails over and resends (same xid when the endpoint
    /// numbers its requests itself) until the call timeout.
    pub(crate) fn call<Req: Message, Rep: Message + Default + Bounded>(&self, op: Opcode, req: &Req) -> Result<Rep> {
        let body = req.encode_to_vec();
        let mut xid = None;
        self.retrying(op, |conn| self.send_numbered(conn, &mut xid, op, &body))
    }

    /// A typed RPC whose reply carries data (a short read): counted against the bulk bound like
    /// a bulk call.
    pub(crate) fn call_counted<Req: Message, Rep: Message + Default + Bounded>(
        &self,
        op: Opcode,
        req: &Req,
    ) -> Result<Rep> {
        let _permit = self.permits.acquire();
        self.call(op, req)
    }

    /// True when bulk may go by RDMA on this endpoint (a verbs address, or auto, which may pick
    /// verbs): a push is then one RDMA WRITE. Over tcp and sim a push costs a round trip on the
    /// stream, so small reads ask for their bytes in the reply instead.
    pub(crate) fn bulk_by_rdma(&self) -> bool {
        self.addresses
            .iter()
            .any(|a| matches!(a, Address::Verbs(_) | Address::Auto(_)))
    }

    /// A typed RPC exposing `bulk`; `body` builds the request from the descriptor.
    pub(crate) fn call_bulk<Rep: Message + Default + Bounded>(
        &self,
        op: Opcode,
        bulk: &mut BulkBuf<'_>,
        body: &dyn Fn(BulkDesc) -> Vec<u8>,
    ) -> Result<Rep> {
        let _permit = self.permits.acquire();
        self.retrying(op, |conn| {
            let b = match bulk {
                BulkBuf::Source(s) => Bulk::Source(s),
                BulkBuf::Sink(s) => Bulk::Sink(s),
            };
            conn.call_bulk(op.as_u16(), b, &mut |d| body(d))
        })
    }

    fn retrying<Rep: Message + Default + Bounded>(
        &self,
        op: Opcode,
        mut send: impl FnMut(&Arc<dyn ClientConn>) -> std::result::Result<Reply, FabricError>,
    ) -> Result<Rep> {
        let deadline = std::time::Instant::now() + self.opts.call_timeout;
        let mut backoff = BACKOFF_MIN;
        let mut pause = |err: ClientError| -> Result<()> {
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(err);
            }
            tracing::debug!("{}: failing over after {err}", self.name);
            std::thread::sleep(backoff.min(deadline - now));
            backoff = (backoff * 2).min(BACKOFF_MAX);
            Ok(())
        };
        loop {
            let conn = match self.conn() {
                Ok((c, _)) => c,
                Err(e) if e.is_disconnect() => {
                    pause(e)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match send(&conn) {
                Ok(reply) => return decode_reply(op, &conn.peer(), &reply),
                Err(source) => {
                    let disconnect = source.is_disconnect();
                    let err = ClientError::Fabric {
                        op,
                        peer: conn.peer(),
                        source,
                    };
                    if !disconnect {
                        return Err(err);
                    }
                    self.invalidate(&conn);
                    pause(err)?;
                }
            }
        }
    }
}

/// The caller's memory lent to one bulk RPC.
pub(crate) enum BulkBuf<'a> {
    /// Bytes the server pulls (a write).
    Source(&'a [u8]),
    /// Where the server pushes (a read).
    Sink(&'a mut [u8]),
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustre_proto::FrameHeader;

    fn reply(opcode: u16, flags: u32, body: Vec<u8>) -> Reply {
        let mut header = FrameHeader::request(opcode, 1, 0, body.len() as u32);
        header.flags = flags;
        Reply { header, body }
    }

    #[test]
    fn every_provider_resends_under_the_original_xid() {
        for a in [
            "tcp://127.0.0.1:7000",
            "sim://mds",
            "verbs://10.0.0.1:7000",
            "auto://10.0.0.1:7000",
        ] {
            let addr: Address = a.parse().unwrap();
            assert!(takes_own_xids(&addr), "{a}");
        }
    }

    #[test]
    fn decodes_replies_and_error_replies() {
        let ok = pb::MdsStatfsReply {
            fsname: "demo".into(),
            ..Default::default()
        };
        let r = reply(Opcode::MdsStatfs.as_u16(), 0, ok.encode_to_vec());
        let got: pb::MdsStatfsReply = decode_reply(Opcode::MdsStatfs, "p", &r).unwrap();
        assert_eq!(got.fsname, "demo");

        let e = pb::ErrorReply {
            errno: 17,
            message: "exists".into(),
            field: String::new(),
        };
        let r = reply(Opcode::MdsCreate.as_u16(), FLAG_ERROR, e.encode_to_vec());
        let err = decode_reply::<pb::MdsCreateReply>(Opcode::MdsCreate, "p", &r).unwrap_err();
        assert_eq!(err.errno(), 17);

        let r = reply(Opcode::MdsCreate.as_u16(), 0, vec![0xff, 0xff, 0xff]);
        let err = decode_reply::<pb::MdsCreateReply>(Opcode::MdsCreate, "p", &r).unwrap_err();
        assert_eq!(err.errno(), 71);

        let r = reply(Opcode::MdsLookup.as_u16(), 0, Vec::new());
        assert!(decode_reply::<pb::MdsCreateReply>(Opcode::MdsCreate, "p", &r).is_err());
    }

    #[test]
    fn permits_bound_concurrency() {
        let p = Permits::new(2);
        let a = p.acquire();
        let _b = p.acquire();
        assert_eq!(*p.free.lock(), 0);
        drop(a);
        assert_eq!(*p.free.lock(), 1);
    }
}

#[cfg(test)]
mod job_id_tests {
    use super::job_id_from;

    #[test]
    fn job_id_comes_from_the_first_set_variable_then_the_process_name() {
        let env = |set: &'static [(&'static str, &'static str)]| {
            move |k: &str| set.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert_eq!(job_id_from(env(&[]), "fio"), "fio");
        assert_eq!(job_id_from(env(&[("PBS_JOBID", "77.pbs")]), "fio"), "77.pbs");
        assert_eq!(
            job_id_from(env(&[("PBS_JOBID", "77.pbs"), ("SLURM_JOB_ID", "1234")]), "fio"),
            "1234"
        );
        assert_eq!(
            job_id_from(env(&[("RUSTRE_JOBID", "ior.alice"), ("SLURM_JOB_ID", "1234")]), "fio"),
            "ior.alice"
        );
        assert_eq!(job_id_from(env(&[("RUSTRE_JOBID", "  ")]), "fio"), "fio");
        assert_eq!(job_id_from(env(&[("RUSTRE_JOBID", "a b\tcé")]), "x"), "a_b_c_");
        let long = |k: &str| (k == "RUSTRE_JOBID").then(|| "j".repeat(100));
        assert_eq!(job_id_from(long, "x").len(), 64);
    }
}

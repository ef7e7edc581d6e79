//! Cluster authentication: the shared secret, the handshake challenge–response and capability
//! MACs. Everything here is sans-I/O except [`ClusterSecret::load`], which reads the secret file.
//!
//! Handshake (HMAC-SHA-256, mutual, two round trips on a fresh connection):
//!
//! 1. client → server: `HandshakeRequest { auth_nonce = Nc, auth_time_unix_ms = T, auth_mac = ∅ }`
//! 2. server → client: `HandshakeReply { auth_nonce = Ns, auth_mac = MAC("server", transcript) }`
//!    (nothing else: no cluster map before the client has proved itself)
//! 3. client verifies the server MAC, then → server: the same request with
//!    `auth_mac = MAC("client", transcript)`
//! 4. server verifies it and answers with the ordinary handshake reply.
//!
//! The transcript is `cluster ‖ client_id ‖ role ‖ Nc ‖ Ns ‖ T`, every field length-prefixed. A
//! captured proof is worthless on another connection because the server draws a fresh `Ns` for
//! each; captured first messages are refused once their `Nc` has been seen (bounded cache) or `T`
//! is outside the time window. Capabilities are `MAC("capability", object ‖ rights ‖ expiry ‖ fid
//! ‖ client_id)`.

use crate::pb;
use crate::types::{ObjectRef, Rights};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of a handshake nonce.
pub const NONCE_LEN: usize = 32;
/// Bytes of an HMAC-SHA-256 tag.
pub const MAC_LEN: usize = 32;
/// Shortest accepted cluster secret.
pub const MIN_SECRET_LEN: usize = 32;
/// Longest accepted secret file.
pub const MAX_SECRET_FILE: u64 = 4096;
/// Default tolerated clock difference between the two ends of a handshake.
pub const DEFAULT_WINDOW_MS: u64 = 5 * 60 * 1000;
/// Default capacity of the recently-seen client nonce cache.
pub const DEFAULT_NONCE_CACHE: usize = 65_536;

/// Why a secret could not be loaded, a handshake failed or a capability was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The secret file cannot be read.
    #[error("secret file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The secret file is accessible to others than its owner.
    #[error("secret file {}: mode {mode:04o} lets group or others access it; run `chmod 600 {}`", path.display(), path.display())]
    Mode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The secret file belongs to another user.
    #[error("secret file {}: owned by uid {owner}, but this process runs as uid {uid}", path.display())]
    Owner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        uid: u32,
    },
    /// The secret is too short (or the file too long).
    #[error("secret file {}: {len} bytes of secret, need {MIN_SECRET_LEN}..={MAX_SECRET_FILE}", path.display())]
    Length {
        /// The file.
        path: PathBuf,
        /// Bytes found.
        len: u64,
    },
    /// No randomness from the operating system.
    #[error("no random bytes from the operating system: {0}")]
    Random(String),
    /// The handshake was refused; the text says why.
    #[error("authentication failed: {0}")]
    Handshake(String),
    /// A capability was refused; the text says why.
    #[error("capability refused: {0}")]
    Capability(String),
}

/// The shared cluster secret. Its `Debug` output never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(Box<[u8]>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterSecret({} bytes)", self.0.len())
    }
}

impl ClusterSecret {
    /// A secret from raw bytes (at least [`MIN_SECRET_LEN`]).
    pub fn from_bytes(b: &[u8]) -> Result<Self, AuthError> {
        if b.len() < MIN_SECRET_LEN {
            return Err(AuthError::Length {
                path: PathBuf::from("<memory>"),
                len: b.len() as u64,
            });
        }
        Ok(Self(b.into()))
    }

    /// A fresh random secret of `len` bytes.
    pub fn generate(len: usize) -> Result<Self, AuthError> {
        let mut b = vec![0u8; len.max(MIN_SECRET_LEN)];
        getrandom::fill(&mut b).map_err(|e| AuthError::Random(e.to_string()))?;
        Ok(Self(b.into()))
    }

    /// The secret as the text a secret file holds: lower-case hex and a newline.
    pub fn to_file_text(&self) -> String {
        let mut s = hex(&self.0);
        s.push('\n');
        s
    }

    /// Parses the contents of a secret file: hex text (surrounding white space ignored) or, if
    /// it is not hex, the raw bytes.
    pub fn parse(path: &Path, data: &[u8]) -> Result<Self, AuthError> {
        let text = data.trim_ascii();
        let bytes = unhex(text).unwrap_or_else(|| data.to_vec());
        if bytes.len() < MIN_SECRET_LEN {
            return Err(AuthError::Length {
                path: path.to_owned(),
                len: bytes.len() as u64,
            });
        }
        Ok(Self(bytes.into()))
    }

    /// Loads a secret file. It must be a regular file owned by the effective user with no group
    /// or other permission bits (0600 or 0400), holding at least [`MIN_SECRET_LEN`] bytes.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let io = |source| AuthError::Io {
            path: path.to_owned(),
            source,
        };
        let f = std::fs::File::open(path).map_err(io)?;
        let md = f.metadata().map_err(io)?;
        if !md.is_file() {
            return Err(io(std::io::Error::other("not a regular file")));
        }
        let mode = md.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(AuthError::Mode {
                path: path.to_owned(),
                mode,
            });
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        if md.uid() != uid {
            return Err(AuthError::Owner {
                path: path.to_owned(),
                owner: md.uid(),
                uid,
            });
        }
        if md.len() > MAX_SECRET_FILE {
            return Err(AuthError::Length {
                path: path.to_owned(),
                len: md.len(),
            });
        }
        let mut data = Vec::new();
        f.take(MAX_SECRET_FILE + 1).read_to_end(&mut data).map_err(io)?;
        Self::parse(path, &data)
    }

    fn mac(&self, label: &[u8], parts: &[&[u8]]) -> HmacSha256 {
        // HMAC accepts keys of any length (longer ones are hashed), so `new_from_slice` cannot
        // fail; the fallback only satisfies the type and is never taken.
        let mut m = <HmacSha256 as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default()));
        for p in std::iter::once(label).chain(parts.iter().copied()) {
            m.update(&(p.len() as u32).to_le_bytes());
            m.update(p);
        }
        m
    }

    fn tag(&self, label: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        self.mac(label, parts).finalize().into_bytes().to_vec()
    }

    fn check(&self, label: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
        self.mac(label, parts).verify_slice(tag).is_ok()
    }
}

fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    b.iter()
        .flat_map(|x| [D[usize::from(x >> 4)] as char, D[usize::from(x & 15)] as char])
        .collect()
}

fn unhex(t: &[u8]) -> Option<Vec<u8>> {
    if t.is_empty() || !t.len().is_multiple_of(2) {
        return None;
    }
    let v = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    t.chunks_exact(2).map(|p| Some(v(p[0])? << 4 | v(p[1])?)).collect()
}

fn random_nonce() -> Result<Vec<u8>, AuthError> {
    let mut n = vec![0u8; NONCE_LEN];
    getrandom::fill(&mut n).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(n)
}

/// The fields both MACs of a handshake cover.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Transcript {
    cluster: String,
    client_id: u64,
    role: i32,
    nonce_c: Vec<u8>,
    time_ms: u64,
}

impl Transcript {
    fn of(req: &pb::HandshakeRequest) -> Self {
        Self {
            cluster: req.cluster_name.clone(),
            client_id: req.client_id,
            role: req.role,
            nonce_c: req.auth_nonce.clone(),
            time_ms: req.auth_time_unix_ms,
        }
    }

    fn parts<'a>(&'a self, id: &'a [u8; 8], role: &'a [u8; 4], t: &'a [u8; 8], ns: &'a [u8]) -> [&'a [u8]; 6] {
        [self.cluster.as_bytes(), id, role, &self.nonce_c, ns, t]
    }

    fn tag(&self, secret: &ClusterSecret, label: &[u8], ns: &[u8]) -> Vec<u8> {
        let (id, role, t) = (
            self.client_id.to_le_bytes(),
            self.role.to_le_bytes(),
            self.time_ms.to_le_bytes(),
        );
        secret.tag(label, &self.parts(&id, &role, &t, ns))
    }

    fn check(&self, secret: &ClusterSecret, label: &[u8], ns: &[u8], tag: &[u8]) -> bool {
        let (id, role, t) = (
            self.client_id.to_le_bytes(),
            self.role.to_le_bytes(),
            self.time_ms.to_le_bytes(),
        );
        secret.check(label, &self.parts(&id, &role, &t, ns), tag)
    }
}

const SERVER_LABEL: &[u8] = b"rustre-v1 handshake server";
const CLIENT_LABEL: &[u8] = b"rustre-v1 handshake client";
const CAP_LABEL: &[u8] = b"rustre-v1 capability";

/// The connecting side of an authenticated handshake.
#[derive(Debug)]
pub struct ClientHandshake {
    secret: ClusterSecret,
    nonce: Vec<u8>,
    time_ms: u64,
}

impl ClientHandshake {
    /// Starts a handshake at `now_ms` (ms since the epoch) with a fresh nonce.
    pub fn new(secret: &ClusterSecret, now_ms: u64) -> Result<Self, AuthError> {
        Ok(Self {
            secret: secret.clone(),
            nonce: random_nonce()?,
            time_ms: now_ms,
        })
    }

    /// Fills the authentication fields of the first request (`auth_mac` empty).
    pub fn hello(&self, req: &mut pb::HandshakeRequest) {
        req.auth_nonce = self.nonce.clone();
        req.auth_time_unix_ms = self.time_ms;
        req.auth_mac.clear();
    }

    /// Checks the server's challenge reply to `req` (as built by [`Self::hello`]) and turns
    /// `req` into the proof request.
    pub fn prove(&self, req: &mut pb::HandshakeRequest, challenge: &pb::HandshakeReply) -> Result<(), AuthError> {
        if challenge.auth_mac.is_empty() {
            return Err(AuthError::Handshake(
                "the server did not authenticate itself (is it running without --secret?)".into(),
            ));
        }
        if challenge.auth_nonce.len() != NONCE_LEN {
            return Err(AuthError::Handshake(format!(
                "server nonce is {} bytes, not {NONCE_LEN}",
                challenge.auth_nonce.len()
            )));
        }
        self.hello(req);
        let t = Transcript::of(req);
        if !t.check(&self.secret, SERVER_LABEL, &challenge.auth_nonce, &challenge.auth_mac) {
            return Err(AuthError::Handshake(
                "the server's proof is wrong (it holds a different cluster secret)".into(),
            ));
        }
        req.auth_mac = t.tag(&self.secret, CLIENT_LABEL, &challenge.auth_nonce);
        Ok(())
    }
}

/// What a server makes of one handshake request on a connection.
#[derive(Debug)]
pub enum ServerStep {
    /// Send this challenge reply and wait for the proof.
    Challenge(Box<pb::HandshakeReply>),
    /// The peer is authenticated: serve this handshake normally.
    Authenticated,
}

/// A bounded memory of recently seen client nonces.
#[derive(Debug)]
struct NonceCache {
    capacity: usize,
    order: VecDeque<(u64, Vec<u8>)>,
    set: HashSet<Vec<u8>>,
}

impl NonceCache {
    /// Records `nonce` seen at `now_ms`; false if it was already seen or the cache is full of
    /// entries still inside the window.
    fn insert(&mut self, nonce: &[u8], now_ms: u64, window_ms: u64) -> Result<(), &'static str> {
        while let Some((t, _)) = self.order.front() {
            if now_ms.saturating_sub(*t) > 2 * window_ms {
                if let Some((_, n)) = self.order.pop_front() {
                    self.set.remove(&n);
                }
            } else {
                break;
            }
        }
        if self.set.contains(nonce) {
            return Err("replayed handshake (client nonce already used)");
        }
        if self.order.len() >= self.capacity {
            return Err("too many handshakes within the replay window");
        }
        self.set.insert(nonce.to_vec());
        self.order.push_back((now_ms, nonce.to_vec()));
        Ok(())
    }
}

/// The accepting side: the secret, the time window and the replay cache, shared by every
/// connection of a server.
#[derive(Debug)]
pub struct ServerAuth {
    secret: ClusterSecret,
    window_ms: u64,
    seen: std::sync::Mutex<NonceCache>,
}

/// Per-connection handshake state of a server.
#[derive(Debug, Default)]
pub struct ServerSession {
    pending: Option<(Transcript, Vec<u8>)>,
    authenticated: bool,
    role: i32,
    client_id: u64,
}

impl ServerSession {
    /// True once the peer has proved it holds the secret.
    pub fn authenticated(&self) -> bool {
        self.authenticated
    }

    /// The role the peer proved itself under (`pb::PeerRole` value), once authenticated.
    pub fn role(&self) -> Option<i32> {
        self.authenticated.then_some(self.role)
    }

    /// The client id the peer proved itself under, once authenticated. Every later frame of
    /// the connection must carry it (see [`ServerAuth::gate`]).
    pub fn client_id(&self) -> Option<u64> {
        self.authenticated.then_some(self.client_id)
    }
}

impl ServerAuth {
    /// Accepts handshakes proved with `secret`, with clocks at most `window_ms` apart and at most
    /// `cache` handshakes per window.
    pub fn new(secret: ClusterSecret, window_ms: u64, cache: usize) -> Self {
        Self {
            secret,
            window_ms,
            seen: std::sync::Mutex::new(NonceCache {
                capacity: cache.max(1),
                order: VecDeque::new(),
                set: HashSet::new(),
            }),
        }
    }

    /// The secret (for capabilities).
    pub fn secret(&self) -> &ClusterSecret {
        &self.secret
    }

    /// Handles one handshake request of a connection at `now_ms`. The caller has checked that
    /// `req.client_id` matches the frame header.
    pub fn step(
        &self,
        session: &mut ServerSession,
        req: &pb::HandshakeRequest,
        now_ms: u64,
    ) -> Result<ServerStep, AuthError> {
        if session.authenticated {
            return Ok(ServerStep::Authenticated);
        }
        if req.auth_nonce.is_empty() {
            return Err(AuthError::Handshake(
                "the peer sent no authentication (is it configured without the cluster secret?)".into(),
            ));
        }
        if req.auth_nonce.len() != NONCE_LEN {
            return Err(AuthError::Handshake(format!(
                "client nonce is {} bytes, not {NONCE_LEN}",
                req.auth_nonce.len()
            )));
        }
        if req.auth_mac.is_empty() {
            if session.pending.is_some() {
                return Err(AuthError::Handshake("a second challenge on one connection".into()));
            }
            let skew = now_ms.abs_diff(req.auth_time_unix_ms);
            if skew > self.window_ms {
                return Err(AuthError::Handshake(format!(
                    "peer clock differs by {skew} ms (more than {} ms)",
                    self.window_ms
                )));
            }
            self.seen
                .lock()
                .map_err(|_| AuthError::Handshake("nonce cache poisoned".into()))?
                .insert(&req.auth_nonce, now_ms, self.window_ms)
                .map_err(|m| AuthError::Handshake(m.into()))?;
            let t = Transcript::of(req);
            let ns = random_nonce()?;
            let reply = pb::HandshakeReply {
                cluster_name: req.cluster_name.clone(),
                protocol_version: req.protocol_version,
                auth_mac: t.tag(&self.secret, SERVER_LABEL, &ns),
                auth_nonce: ns.clone(),
                ..Default::default()
            };
            session.pending = Some((t, ns));
            return Ok(ServerStep::Challenge(Box::new(reply)));
        }
        let Some((t, ns)) = session.pending.take() else {
            return Err(AuthError::Handshake(
                "a proof without a challenge on this connection (replayed handshake?)".into(),
            ));
        };
        if Transcript::of(req) != t {
            return Err(AuthError::Handshake(
                "the proof does not repeat the first request".into(),
            ));
        }
        if !t.check(&self.secret, CLIENT_LABEL, &ns, &req.auth_mac) {
            return Err(AuthError::Handshake(
                "the peer's proof is wrong (it holds a different cluster secret)".into(),
            ));
        }
        session.authenticated = true;
        session.role = t.role;
        session.client_id = t.client_id;
        Ok(ServerStep::Authenticated)
    }
}

/// What a server does with one incoming frame of a connection, given its handshake state.
#[derive(Debug)]
pub enum Gate {
    /// Serve the frame normally (authenticated, or the proof handshake to answer with the map).
    Pass,
    /// Answer with this `HandshakeReply` body (the challenge) and wait for the next frame.
    Challenge(Vec<u8>),
    /// Answer with this `ErrorReply` body (EACCES), log `reason` and close the connection.
    Refuse {
        /// The encoded `ErrorReply`.
        reply: Vec<u8>,
        /// Why, for the log line.
        reason: String,
    },
}

impl ServerAuth {
    /// Decides about one frame of a connection at `now_ms`: until the peer has completed the
    /// handshake only Handshake requests are looked at, anything else is refused. Afterwards
    /// every frame must carry the client id the handshake proved, so the header's client id is
    /// the connection's authenticated identity (capabilities are bound to it).
    pub fn gate(&self, session: &mut ServerSession, header: &crate::FrameHeader, body: &[u8], now_ms: u64) -> Gate {
        use prost::Message;
        if session.authenticated && header.client_id == session.client_id {
            return Gate::Pass;
        }
        let refuse = |reason: String| Gate::Refuse {
            reply: crate::pb::ErrorReply {
                errno: crate::Errno::EACCES.get(),
                message: format!("authentication failed: {reason}"),
                field: "handshake.auth_mac".into(),
            }
            .encode_to_vec(),
            reason,
        };
        if session.authenticated {
            return refuse(format!(
                "frame under client id {:#x} on a connection authenticated as client {:#x}",
                header.client_id, session.client_id
            ));
        }
        let op = crate::Opcode::try_from(header.opcode);
        if op != Ok(crate::Opcode::Handshake) {
            return refuse(format!(
                "request {} (opcode {}) before the authentication handshake",
                op.map_or("unknown", |o| o.name()),
                header.opcode
            ));
        }
        let req = match crate::codec::decode_body::<pb::HandshakeRequest>(crate::Opcode::Handshake, body) {
            Ok(r) => r,
            Err(e) => return refuse(format!("undecodable handshake: {e}")),
        };
        if req.client_id != header.client_id {
            return refuse(format!(
                "handshake client id {:#x} differs from the frame's {:#x}",
                req.client_id, header.client_id
            ));
        }
        match self.step(session, &req, now_ms) {
            Ok(ServerStep::Challenge(reply)) => Gate::Challenge(reply.encode_to_vec()),
            Ok(ServerStep::Authenticated) => Gate::Pass,
            Err(e) => refuse(e.to_string()),
        }
    }
}

/// Runs the connecting side of a handshake through `call` (one request, one decoded reply):
/// without a secret the plain one-round-trip handshake, with one the challenge and the proof.
/// Returns the server's final reply (the cluster map from an MDS).
pub fn client_handshake<E: From<AuthError>>(
    secret: Option<&ClusterSecret>,
    mut req: pb::HandshakeRequest,
    now_ms: u64,
    mut call: impl FnMut(&pb::HandshakeRequest) -> Result<pb::HandshakeReply, E>,
) -> Result<pb::HandshakeReply, E> {
    let Some(secret) = secret else {
        return call(&req);
    };
    let hs = ClientHandshake::new(secret, now_ms)?;
    hs.hello(&mut req);
    let challenge = call(&req)?;
    hs.prove(&mut req, &challenge)?;
    call(&req)
}

fn cap_parts(object: &pb::ObjectRef, rights: u32, expiry: u64, fid: Option<&pb::Fid>, client_id: u64) -> [Vec<u8>; 7] {
    let (ino, gen_) = fid.map_or((0, 0), |f| (f.ino, f.generation));
    [
        object.ost_index.to_le_bytes().to_vec(),
        object.object_id.to_le_bytes().to_vec(),
        rights.to_le_bytes().to_vec(),
        expiry.to_le_bytes().to_vec(),
        ino.to_le_bytes().to_vec(),
        gen_.to_le_bytes().to_vec(),
        client_id.to_le_bytes().to_vec(),
    ]
}

/// Issues a capability for `object` granting `rights` until `expiry_unix_ms` to `client_id`
/// (0 = any authenticated peer).
pub fn issue_capability(
    secret: &ClusterSecret,
    object: pb::ObjectRef,
    fid: Option<pb::Fid>,
    rights: Rights,
    expiry_unix_ms: u64,
    client_id: u64,
) -> pb::Capability {
    let p = cap_parts(&object, rights.bits(), expiry_unix_ms, fid.as_ref(), client_id);
    let refs: Vec<&[u8]> = p.iter().map(Vec::as_slice).collect();
    pb::Capability {
        mac: secret.tag(CAP_LABEL, &refs),
        object: Some(object),
        rights: rights.bits(),
        expiry_unix_ms,
        fid,
        client_id,
    }
}

/// Checks a capability presented by `client_id` at `now_ms` for `needed` rights on `object`.
pub fn verify_capability(
    secret: &ClusterSecret,
    cap: Option<&crate::types::Capability>,
    object: ObjectRef,
    needed: Rights,
    client_id: u64,
    now_ms: u64,
) -> Result<(), AuthError> {
    let Some(cap) = cap else {
        return Err(AuthError::Capability(format!("no capability for object {object}")));
    };
    let pcap = pb::Capability::from(cap);
    let Some(pobj) = pcap.object.as_ref() else {
        return Err(AuthError::Capability("capability names no object".into()));
    };
    let p = cap_parts(
        pobj,
        pcap.rights,
        pcap.expiry_unix_ms,
        pcap.fid.as_ref(),
        pcap.client_id,
    );
    let refs: Vec<&[u8]> = p.iter().map(Vec::as_slice).collect();
    if !secret.check(CAP_LABEL, &refs, &cap.mac) {
        return Err(AuthError::Capability(format!(
            "forged capability for object {} (MAC does not match)",
            cap.object
        )));
    }
    if cap.object != object {
        return Err(AuthError::Capability(format!(
            "capability is for object {}, the request is for {object}",
            cap.object
        )));
    }
    if !cap.rights.contains(needed) {
        return Err(AuthError::Capability(format!(
            "capability grants rights {:#x}, the request needs {:#x}",
            cap.rights.bits(),
            needed.bits()
        )));
    }
    if cap.expiry_unix_ms <= now_ms {
        return Err(AuthError::Capability(format!(
            "capability for object {object} expired {} ms ago",
            now_ms - cap.expiry_unix_ms
        )));
    }
    if cap.client_id != 0 && client_identity(cap.client_id) != client_identity(client_id) {
        return Err(AuthError::Capability(format!(
            "capability was issued to client {:#x}, presented by client {client_id:#x}",
            cap.client_id
        )));
    }
    Ok(())
}

/// Bits of a client id, from the top, that number a client's successive connections to one
/// server (see [`connection_client_id`]); the rest is the client's identity.
pub const CONNECTION_GENERATION_BITS: u32 = 16;

const IDENTITY_MASK: u64 = u64::MAX >> CONNECTION_GENERATION_BITS;

/// The identity part of a client id: what capabilities are bound to. All the connections of
/// one client (to the MDS and to every OST, before and after reconnections) share it.
pub fn client_identity(client_id: u64) -> u64 {
    client_id & IDENTITY_MASK
}

/// The client id a client whose first connection speaks under `base` uses on its `generation`th
/// connection to one server (0 = `base` itself): the same identity, the generation (modulo
/// 2^[`CONNECTION_GENERATION_BITS`]) mixed into the top bits, so that a server keying replies by
/// client id tells the connections apart while capabilities stay valid across reconnections.
pub fn connection_client_id(base: u64, generation: u64) -> u64 {
    base ^ ((generation & (u64::MAX >> (64 - CONNECTION_GENERATION_BITS))) << (64 - CONNECTION_GENERATION_BITS))
}

/// Milliseconds since the epoch now (0 if the clock is before it).
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn secret(b: u8) -> ClusterSecret {
        ClusterSecret::from_bytes(&[b; 32]).unwrap()
    }

    fn req() -> pb::HandshakeRequest {
        pb::HandshakeRequest {
            cluster_name: "fs".into(),
            protocol_version: 1,
            client_id: 7,
            role: pb::PeerRole::Client as i32,
            ..Default::default()
        }
    }

    /// Runs a handshake; returns the server's verdict on the proof.
    fn run(cs: &ClusterSecret, server: &ServerAuth, now: u64) -> Result<(), AuthError> {
        let c = ClientHandshake::new(cs, now)?;
        let mut r = req();
        c.hello(&mut r);
        let mut sess = ServerSession::default();
        let ServerStep::Challenge(ch) = server.step(&mut sess, &r, now)? else {
            panic!("no challenge")
        };
        assert!(ch.osts.is_empty() && ch.mds_addresses.is_empty());
        c.prove(&mut r, &ch)?;
        match server.step(&mut sess, &r, now)? {
            ServerStep::Authenticated => {
                assert!(sess.authenticated());
                assert_eq!(sess.role(), Some(pb::PeerRole::Client as i32));
                Ok(())
            }
            ServerStep::Challenge(_) => panic!("challenge twice"),
        }
    }

    #[test]
    fn good_handshake() {
        let s = ServerAuth::new(secret(1), DEFAULT_WINDOW_MS, 16);
        run(&secret(1), &s, 1_000_000).unwrap();
        run(&secret(1), &s, 1_000_001).unwrap();
    }

    #[test]
    fn wrong_secret_fails_both_ways() {
        let s = ServerAuth::new(secret(1), DEFAULT_WINDOW_MS, 16);
        // The client notices the server's wrong proof first.
        let e = run(&secret(2), &s, 1000).unwrap_err();
        assert!(e.to_string().contains("server's proof is wrong"), "{e}");
        // A client that skips the check still cannot prove itself.
        let c = ClientHandshake::new(&secret(2), 1000).unwrap();
        let mut r = req();
        c.hello(&mut r);
        let mut sess = ServerSession::default();
        let ServerStep::Challenge(ch) = s.step(&mut sess, &r, 1000).unwrap() else {
            panic!()
        };
        let t = Transcript::of(&r);
        r.auth_mac = t.tag(&secret(2), CLIENT_LABEL, &ch.auth_nonce);
        let e = s.step(&mut sess, &r, 1000).unwrap_err();
        assert!(e.to_string().contains("peer's proof is wrong"), "{e}");
        assert!(!sess.authenticated());
    }

    #[test]
    fn unauthenticated_peers_refused() {
        let s = ServerAuth::new(secret(1), DEFAULT_WINDOW_MS, 16);
        let e = s.step(&mut ServerSession::default(), &req(), 0).unwrap_err();
        assert!(e.to_string().contains("no authentication"), "{e}");
        let c = ClientHandshake::new(&secret(1), 0).unwrap();
        let mut r = req();
        c.hello(&mut r);
        let e = c.prove(&mut r, &pb::HandshakeReply::default()).unwrap_err();
        assert!(e.to_string().contains("did not authenticate"), "{e}");
    }

    #[test]
    fn replayed_handshake_fails() {
        let s = ServerAuth::new(secret(1), DEFAULT_WINDOW_MS, 16);
        let c = ClientHandshake::new(&secret(1), 5000).unwrap();
        let mut r1 = req();
        c.hello(&mut r1);
        let mut sess = ServerSession::default();
        let ServerStep::Challenge(ch) = s.step(&mut sess, &r1, 5000).unwrap() else {
            panic!()
        };
        let mut r2 = r1.clone();
        c.prove(&mut r2, &ch).unwrap();
        s.step(&mut sess, &r2, 5000).unwrap();
        // Replaying the first message on a new connection: the nonce was seen.
        let mut fresh = ServerSession::default();
        let e = s.step(&mut fresh, &r1, 5001).unwrap_err();
        assert!(e.to_string().contains("replayed"), "{e}");
        // Replaying the proof alone: no challenge on that connection.
        let e = s.step(&mut ServerSession::default(), &r2, 5001).unwrap_err();
        assert!(e.to_string().contains("without a challenge"), "{e}");
        // A server that forgot the nonce (restart) still draws a fresh server nonce: the old
        // proof does not match it.
        let s2 = ServerAuth::new(secret(1), DEFAULT_WINDOW_MS, 16);
        let mut sess = ServerSession::default();
        assert!(matches!(
            s2.step(&mut sess, &r1, 5002).unwrap(),
            ServerStep::Challenge(_)
        ));
        let e = s2.step(&mut sess, &r2, 5002).unwrap_err();
        assert!(e.to_string().contains("proof is wrong"), "{e}");
    }

    #[test]
    fn stale_clock_and_tampering_refused() {
        let s = ServerAuth::new(secret(1), 1000, 16);
        let c = ClientHandshake::new(&secret(1), 0).unwrap();
        let mut r = req();
        c.hello(&mut r);
        let e = s.step(&mut ServerSession::default(), &r, 5000).unwrap_err();
        assert!(e.to_string().contains("clock differs"), "{e}");
        // Changing the client id between challenge and proof.
        let c = ClientHandshake::new(&secret(1), 5000).unwrap();
        let mut r = req();
        c.hello(&mut r);
        let mut sess = ServerSession::default();
        let ServerStep::Challenge(ch) = s.step(&mut sess, &r, 5000).unwrap() else {
            panic!()
        };
        c.prove(&mut r, &ch).unwrap();
        r.client_id = 8;
        assert!(s.step(&mut sess, &r, 5000).is_err());
        assert!(!sess.authenticated());
    }

    #[test]
    fn nonce_cache_is_bounded() {
        let s = ServerAuth::new(secret(1), 1000, 2);
        for i in 0..2 {
            let c = ClientHandshake::new(&secret(1), 10).unwrap();
            let mut r = req();
            c.hello(&mut r);
            s.step(&mut ServerSession::default(), &r, 10 + i).unwrap();
        }
        let c = ClientHandshake::new(&secret(1), 10).unwrap();
        let mut r = req();
        c.hello(&mut r);
        let e = s.step(&mut ServerSession::default(), &r, 12).unwrap_err();
        assert!(e.to_string().contains("too many"), "{e}");
        // Old entries age out.
        let c = ClientHandshake::new(&secret(1), 3000).unwrap();
        c.hello(&mut r);
        s.step(&mut ServerSession::default(), &r, 3000).unwrap();
    }

    fn obj(ost: u32, id: u64) -> pb::ObjectRef {
        pb::ObjectRef {
            ost_index: ost,
            object_id: id,
        }
    }

    fn typed(c: pb::Capability) -> crate::types::Capability {
        crate::types::Capability::try_from(c).unwrap()
    }

    #[test]
    fn capabilities() {
        let k = secret(3);
        let o = ObjectRef::from_field(Some(obj(1, 9)), "o").unwrap();
        let fid = Some(pb::Fid { ino: 5, generation: 1 });
        let rw = Rights::READ | Rights::WRITE;
        let cap = typed(issue_capability(&k, obj(1, 9), fid, rw, 2000, 42));
        verify_capability(&k, Some(&cap), o, Rights::WRITE, 42, 1000).unwrap();
        verify_capability(&k, Some(&cap), o, Rights::READ, 42, 1000).unwrap();
        let msg = |r: Result<(), AuthError>| r.unwrap_err().to_string();
        assert!(msg(verify_capability(&k, None, o, Rights::READ, 42, 1000)).contains("no capability"));
        assert!(msg(verify_capability(&k, Some(&cap), o, Rights::READ, 42, 2000)).contains("expired"));
        assert!(msg(verify_capability(&k, Some(&cap), o, Rights::PUNCH, 42, 1000)).contains("needs"));
        assert!(msg(verify_capability(&k, Some(&cap), o, Rights::READ, 43, 1000)).contains("issued to client"));
        let other = ObjectRef::from_field(Some(obj(1, 10)), "o").unwrap();
        assert!(msg(verify_capability(&k, Some(&cap), other, Rights::READ, 42, 1000)).contains("request is for"));
        assert!(msg(verify_capability(&secret(4), Some(&cap), o, Rights::READ, 42, 1000)).contains("forged"));
        // Tampering with any field breaks the MAC.
        for f in 0..5 {
            let mut c = cap.clone();
            match f {
                0 => c.expiry_unix_ms += 1,
                1 => c.rights = Rights::READ | Rights::WRITE | Rights::PUNCH,
                2 => c.client_id = 0,
                3 => c.fid = None,
                _ => c.mac[0] ^= 1,
            }
            assert!(msg(verify_capability(&k, Some(&c), o, Rights::READ, 42, 1000)).contains("forged"));
        }
        // Client 0 means any client.
        let any = typed(issue_capability(&k, obj(1, 9), None, Rights::READ, 2000, 0));
        verify_capability(&k, Some(&any), o, Rights::READ, 99, 1000).unwrap();
        // A capability stays valid on the client's later connections (same identity, other
        // generation), not for another client.
        let base = 0x0000_1234_5678_9abc_u64;
        let bound = typed(issue_capability(&k, obj(1, 9), fid, rw, 2000, base));
        for g in [0, 1, 2, 0xffff, 0x1_0000] {
            let id = connection_client_id(base, g);
            assert_eq!(client_identity(id), client_identity(base));
            verify_capability(&k, Some(&bound), o, Rights::READ, id, 1000).unwrap();
        }
        assert_ne!(connection_client_id(base, 1), base);
        assert_ne!(connection_client_id(base, 1), connection_client_id(base, 2));
        assert!(msg(verify_capability(&k, Some(&bound), o, Rights::READ, base + 1, 1000)).contains("issued to client"));
        let later = typed(issue_capability(
            &k,
            obj(1, 9),
            fid,
            rw,
            2000,
            connection_client_id(base, 3),
        ));
        verify_capability(&k, Some(&later), o, Rights::READ, base, 1000).unwrap();
    }

    #[test]
    fn secret_file_checks() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("secret");
        let s = ClusterSecret::generate(32).unwrap();
        std::fs::write(&p, s.to_file_text()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = ClusterSecret::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("secret") && e.contains("0644") && e.contains("chmod 600"),
            "{e}"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(ClusterSecret::load(&p).unwrap(), s);
        std::fs::write(&p, "abcd\n").unwrap();
        let e = ClusterSecret::load(&p).unwrap_err().to_string();
        assert!(e.contains("2 bytes"), "{e}");
        let e = ClusterSecret::load(&d.path().join("missing")).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
        // Raw (non-hex) secrets work too.
        std::fs::write(&p, [0xffu8; 40]).unwrap();
        assert_eq!(
            ClusterSecret::load(&p).unwrap(),
            ClusterSecret::from_bytes(&[0xff; 40]).unwrap()
        );
        assert!(!format!("{s:?}").contains(&s.to_file_text()[..8]));
    }

    #[test]
    fn gate_runs_the_handshake_and_refuses_everything_else() {
        use prost::Message;
        let s = ServerAuth::new(secret(1), DEFAULT_WINDOW_MS, 16);
        let mut sess = ServerSession::default();
        let h = |op: crate::Opcode, id: u64| crate::FrameHeader::request(op.as_u16(), 1, id, 0);
        let Gate::Refuse { reason, .. } = s.gate(&mut sess, &h(crate::Opcode::MdsGetattr, 7), &[], 0) else {
            panic!()
        };
        assert!(reason.contains("before the authentication"), "{reason}");
        let mut rounds = 0;
        let r = client_handshake::<AuthError>(Some(&secret(1)), req(), 100, |r| {
            rounds += 1;
            match s.gate(&mut sess, &h(crate::Opcode::Handshake, 7), &r.encode_to_vec(), 100) {
                Gate::Challenge(b) => Ok(pb::HandshakeReply::decode(b.as_slice()).unwrap()),
                Gate::Pass => Ok(pb::HandshakeReply {
                    server_id: 99,
                    ..Default::default()
                }),
                Gate::Refuse { reason, .. } => Err(AuthError::Handshake(reason)),
            }
        })
        .unwrap();
        assert_eq!((r.server_id, rounds), (99, 2));
        assert!(matches!(
            s.gate(&mut sess, &h(crate::Opcode::MdsGetattr, 7), &[], 0),
            Gate::Pass
        ));
        assert_eq!(sess.client_id(), Some(7));
        // After the handshake a frame under another client id is refused: the header's id is
        // the connection's proved identity.
        let Gate::Refuse { reason, .. } = s.gate(&mut sess, &h(crate::Opcode::MdsGetattr, 8), &[], 0) else {
            panic!("a frame under another client id passed")
        };
        assert!(reason.contains("authenticated as client 0x7"), "{reason}");
        // A frame whose client id differs from the handshake's is refused.
        let mut fresh = ServerSession::default();
        let c = ClientHandshake::new(&secret(1), 100).unwrap();
        let mut r = req();
        c.hello(&mut r);
        let g = s.gate(&mut fresh, &h(crate::Opcode::Handshake, 8), &r.encode_to_vec(), 100);
        assert!(matches!(g, Gate::Refuse { .. }));
    }

    #[test]
    fn arbitrary_frames_never_authenticate() {
        use prost::Message;
        let s = ServerAuth::new(secret(1), DEFAULT_WINDOW_MS, 1 << 16);
        let mut x: u64 = 0x243F_6A88_85A3_08D3;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let bytes = |n: u64, next: &mut dyn FnMut() -> u64| -> Vec<u8> {
            let len = next() % (n + 1);
            (0..len).map(|_| next() as u8).collect()
        };
        let mut challenged = 0;
        for round in 0..20_000u64 {
            let mut sess = ServerSession::default();
            for _ in 0..3 {
                let id = next() % 4;
                let op = if next() % 4 == 0 {
                    next() as u16
                } else {
                    crate::Opcode::Handshake.as_u16()
                };
                let body = if next() % 2 == 0 {
                    bytes(300, &mut next)
                } else {
                    pb::HandshakeRequest {
                        cluster_name: "fs".into(),
                        protocol_version: 1,
                        client_id: id,
                        role: (next() % 5) as i32,
                        auth_nonce: bytes(40, &mut next),
                        auth_mac: if next() % 2 == 0 {
                            Vec::new()
                        } else {
                            bytes(40, &mut next)
                        },
                        auth_time_unix_ms: round,
                        ..Default::default()
                    }
                    .encode_to_vec()
                };
                let h = crate::FrameHeader::request(op, 1, id, body.len() as u32);
                match s.gate(&mut sess, &h, &body, round) {
                    Gate::Pass => panic!("round {round}: an arbitrary frame passed the gate"),
                    Gate::Challenge(_) => challenged += 1,
                    Gate::Refuse { .. } => {}
                }
                assert!(!sess.authenticated());
            }
        }
        assert!(challenged > 0);
    }
}

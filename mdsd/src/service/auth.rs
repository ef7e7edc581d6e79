//! Authentication of connections and the capabilities the MDS issues at open.
//!
//! With a cluster secret every connection must complete the handshake of
//! [`rustre_proto::auth`] before anything reaches the event loop: the receiver thread of the
//! connection answers the challenge itself, refuses every other frame (EACCES, a log line
//! naming the peer, the connection closed) and forwards only the proved handshake, so a peer
//! without the secret never creates any state.

use prost::Message;
use rustre_fabric::{Incoming, ServerConn};
use rustre_proto::auth::{Gate, ServerAuth, ServerSession, issue_capability, now_unix_ms};
use rustre_proto::types::{OpenFlags, Rights};
use rustre_proto::{Opcode, pb};
use std::time::Duration;

/// What the receiver does with one frame.
pub(crate) enum Admit {
    /// Forward it to the loop.
    Forward,
    /// Answered here; read the next frame.
    Answered,
    /// Refused; the connection is closed.
    Closed,
}

/// Runs one incoming frame through the handshake gate of its connection.
pub(crate) fn admit(auth: &ServerAuth, session: &mut ServerSession, conn: &dyn ServerConn, inc: &Incoming) -> Admit {
    match auth.gate(session, &inc.header, &inc.body, now_unix_ms()) {
        Gate::Pass => Admit::Forward,
        Gate::Challenge(body) => {
            if let Err(e) = conn.reply(&inc.header, inc.header.opcode, &body, false) {
                tracing::debug!("handshake challenge to {}: {e}", conn.peer());
                conn.close();
                return Admit::Closed;
            }
            Admit::Answered
        }
        Gate::Refuse { reply, reason } => {
            tracing::warn!(
                "refusing connection from {} (client id {:#x}): {reason}",
                conn.peer(),
                inc.header.client_id
            );
            let _ = conn.reply(&inc.header, inc.header.opcode, &reply, true);
            conn.close();
            Admit::Closed
        }
    }
}

/// Logs once per process that the service runs without authentication.
pub(crate) fn warn_unauthenticated() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            "no cluster secret (--secret): connections are not authenticated and OST capabilities are not issued"
        );
    });
}

/// Adds one capability per object of the opened file to a successful `MdsCreate` reply: read
/// when opened for reading, write and punch when opened for writing, getattr always, bound to
/// `client_id` (the authenticated client id of the connection that opened the file: the gate
/// refuses frames under any other). Returns `None` (send the reply as it is) when there is
/// nothing to add.
pub(crate) fn with_capabilities(
    auth: &ServerAuth,
    lifetime: Duration,
    client_id: u64,
    request: &[u8],
    reply: &[u8],
) -> Option<Vec<u8>> {
    if client_id == 0 {
        // Client id 0 is "any client" in a capability: a peer that calls itself 0 gets none.
        return None;
    }
    let req = pb::MdsCreateRequest::decode(request).ok()?;
    let mut rep = pb::MdsCreateReply::decode(reply).ok()?;
    let objects = rep.attr.as_ref()?.layout.as_ref()?.objects.clone();
    if objects.is_empty() {
        return None;
    }
    let flags = req.flags;
    let writing = flags & OpenFlags::WRITE.bits() != 0;
    let mut rights = Rights::GETATTR;
    if flags & OpenFlags::READ.bits() != 0 || !writing {
        rights = rights | Rights::READ;
    }
    if writing {
        rights = rights | Rights::WRITE | Rights::PUNCH;
    }
    let expiry = now_unix_ms().saturating_add(u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX));
    let fid = rep.attr.as_ref().and_then(|a| a.fid);
    rep.capabilities = objects
        .into_iter()
        .map(|o| issue_capability(auth.secret(), o, fid, rights, expiry, client_id))
        .collect();
    Some(rep.encode_to_vec())
}

/// True for the replies that get capabilities.
pub(crate) fn issues_capabilities(opcode: u16, error: bool) -> bool {
    !error && opcode == Opcode::MdsCreate.as_u16()
}

/// The MDS's side of the handshake with an OST: authenticated when `secret` is given. `call`
/// sends one handshake request and decodes the reply.
pub(crate) fn handshake(
    secret: Option<&rustre_proto::auth::ClusterSecret>,
    req: pb::HandshakeRequest,
    call: impl FnMut(&pb::HandshakeRequest) -> Result<pb::HandshakeReply, String>,
) -> Result<pb::HandshakeReply, String> {
    struct E(String);
    impl From<rustre_proto::auth::AuthError> for E {
        fn from(e: rustre_proto::auth::AuthError) -> Self {
            E(e.to_string())
        }
    }
    let mut call = call;
    rustre_proto::auth::client_handshake::<E>(secret, req, now_unix_ms(), |r| call(r).map_err(E)).map_err(|E(s)| s)
}

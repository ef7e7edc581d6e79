//! Authentication of connections and capability checks.
//!
//! With a cluster secret, the receiver thread of every connection runs the handshake of
//! [`rustre_proto::auth`] before any request reaches the workers: a peer that does not prove it
//! holds the secret gets EACCES, a log line naming it, and its connection closed. Requests of
//! authenticated clients that touch an object's data or attributes must carry a valid
//! capability issued by the MDS; the MDS itself (and other servers) need none.

use parking_lot::Mutex;
use rustre_fabric::{Incoming, ServerConn};
use rustre_proto::auth::{Gate, ServerAuth, ServerSession, now_unix_ms, verify_capability};
use rustre_proto::pb;
use rustre_proto::request::Request;
use rustre_proto::types::{Capability, ObjectRef, Rights};
use std::collections::HashSet;
use std::sync::Arc;

/// The authentication state of a serving OST.
#[derive(Debug)]
pub struct OstAuth {
    auth: Arc<ServerAuth>,
    /// Connections (by address) that proved a server role.
    servers: Mutex<HashSet<usize>>,
}

fn key(conn: &dyn ServerConn) -> usize {
    std::ptr::from_ref(conn).cast::<()>() as usize
}

/// What the receiver does with one frame.
pub(crate) enum Admit {
    /// Queue it for the workers.
    Forward,
    /// Answered here; read the next frame.
    Answered,
    /// Refused; the connection is closed.
    Closed,
}

impl OstAuth {
    /// Authentication with `auth`.
    pub fn new(auth: Arc<ServerAuth>) -> Self {
        Self {
            auth,
            servers: Mutex::new(HashSet::new()),
        }
    }

    /// Runs one incoming frame through the handshake gate of its connection.
    pub(crate) fn admit(&self, session: &mut ServerSession, conn: &dyn ServerConn, inc: &Incoming) -> Admit {
        let was = session.authenticated();
        match self.auth.gate(session, &inc.header, &inc.body, now_unix_ms()) {
            Gate::Pass => {
                if !was
                    && matches!(session.role(), Some(r) if r == pb::PeerRole::Mds as i32 || r == pb::PeerRole::Ost as i32)
                {
                    self.servers.lock().insert(key(conn));
                }
                Admit::Forward
            }
            Gate::Challenge(body) => {
                if let Err(e) = conn.reply(&inc.header, inc.header.opcode, &body, false) {
                    tracing::debug!(peer = %conn.peer(), error = %e, "handshake challenge failed");
                    conn.close();
                    return Admit::Closed;
                }
                Admit::Answered
            }
            Gate::Refuse { reply, reason } => {
                tracing::warn!(peer = %conn.peer(), client_id = inc.header.client_id, "refusing connection: {reason}");
                let _ = conn.reply(&inc.header, inc.header.opcode, &reply, true);
                conn.close();
                Admit::Closed
            }
        }
    }

    /// Forgets a connection that ended.
    pub(crate) fn forget(&self, conn: &dyn ServerConn) {
        self.servers.lock().remove(&key(conn));
    }

    /// Checks that a request of `conn` may run: servers may do anything, clients need a
    /// capability for object data and attributes and may not precreate. `client_id` is the
    /// frame's, which the handshake gate has checked is the id the connection authenticated
    /// under; a capability bound to another client's identity is refused.
    pub(crate) fn check(&self, conn: &dyn ServerConn, client_id: u64, request: &Request) -> Result<(), pb::ErrorReply> {
        if self.servers.lock().contains(&key(conn)) {
            return Ok(());
        }
        let need = |cap: Option<&Capability>, object: ObjectRef, rights: Rights, op: &str| {
            verify_capability(self.auth.secret(), cap, object, rights, client_id, now_unix_ms()).map_err(|e| {
                tracing::warn!(peer = %conn.peer(), client_id, "{op}: {e}");
                denied(op, e.to_string())
            })
        };
        match request {
            Request::OstWrite(io) => need(io.cap.as_ref(), io.object, Rights::WRITE, "ost.write"),
            Request::OstRead(io) => need(io.cap.as_ref(), io.object, Rights::READ, "ost.read"),
            Request::OstPunch(p) => need(p.cap.as_ref(), p.object, Rights::PUNCH, "ost.punch"),
            Request::OstDestroy(o) => need(o.cap.as_ref(), o.object, Rights::DESTROY, "ost.destroy"),
            Request::OstGetattr(o) => need(o.cap.as_ref(), o.object, Rights::GETATTR, "ost.getattr"),
            Request::OstPrecreate(_) => Err(denied("ost.precreate", "only the MDS precreates objects".into())),
            _ => Ok(()),
        }
    }
}

fn denied(op: &str, message: String) -> pb::ErrorReply {
    pb::ErrorReply {
        errno: libc::EACCES,
        message: format!("{op}: {message}"),
        field: format!("{op}.cap"),
    }
}

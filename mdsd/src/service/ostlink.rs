//! The MDS's link to each OST: one helper thread per OST, fed by a bounded channel, that asks the
//! OST to precreate objects and for its statfs, and destroys freed objects. Results go back to the
//! event loop through its channel; the namespace is never touched here.

use super::server::Event;
use crossbeam::channel::{Receiver, Sender, TrySendError, bounded};
use prost::Message;
use rustre_fabric::{Address, ClientConn, ConnOptions};
use rustre_proto::{Opcode, pb};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Work for one OST's helper thread.
#[derive(Debug, Clone)]
pub enum OstCommand {
    /// Precreate `count` objects.
    Precreate(u32),
    /// Refresh the statfs figures.
    Statfs,
    /// Destroy an object the namespace no longer references.
    Destroy(u64),
}

/// The loop's handle on one OST helper.
pub struct OstLink {
    /// OST index.
    pub index: u32,
    tx: Sender<OstCommand>,
    join: Option<JoinHandle<()>>,
}

impl OstLink {
    /// Starts the helper for OST `index` served at `addrs` (its server, then its failover
    /// partners: a failed connection or call moves on to the next); `queue` bounds its command
    /// channel.
    pub fn start(
        index: u32,
        addrs: Vec<Address>,
        fsname: String,
        opts: ConnOptions,
        queue: usize,
        events: Sender<Event>,
        secret: Option<rustre_proto::auth::ClusterSecret>,
    ) -> OstLink {
        let (tx, rx) = bounded(queue.max(1));
        let join = std::thread::Builder::new()
            .name(format!("mdsd-ost{index}"))
            .spawn(move || run(index, addrs, fsname, opts, rx, events, secret))
            .ok();
        OstLink { index, tx, join }
    }

    /// Queues a command; false if the queue is full (the caller retries later).
    pub fn send(&self, cmd: OstCommand) -> bool {
        match self.tx.try_send(cmd) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Stops the helper and waits for it.
    pub fn stop(mut self) {
        drop(self.tx);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// Why a call to an OST failed.
#[derive(Debug)]
enum CallError {
    /// The connection failed (closed, timed out, unreachable): try the next server.
    Transport(String),
    /// The OST answered with an error: the connection is fine.
    Remote {
        /// The errno it answered.
        errno: i32,
        /// The whole error, for the log.
        text: String,
    },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Transport(t) | CallError::Remote { text: t, .. } => f.write_str(t),
        }
    }
}

fn call<M: Message + Default>(conn: &Arc<dyn ClientConn>, op: Opcode, body: &[u8]) -> Result<M, CallError> {
    let r = conn
        .call(op.as_u16(), body)
        .map_err(|e| CallError::Transport(e.to_string()))?;
    if r.header.flags & rustre_proto::frame::FLAG_ERROR != 0 {
        let e = pb::ErrorReply::decode(&r.body[..]).map_err(|e| CallError::Transport(format!("{}: {e}", op.name())))?;
        return Err(CallError::Remote {
            errno: e.errno,
            text: format!("{}: errno {} {}", op.name(), e.errno, e.message),
        });
    }
    M::decode(&r.body[..]).map_err(|e| CallError::Transport(format!("{}: {e}", op.name())))
}

/// The errno an OST answers when its device or object table is full.
const ENOSPC: i32 = rustre_proto::Errno::ENOSPC.get();

/// Pause between connection attempts to an OST that refused one.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(500);

fn run(
    index: u32,
    addrs: Vec<Address>,
    fsname: String,
    opts: ConnOptions,
    rx: Receiver<OstCommand>,
    events: Sender<Event>,
    secret: Option<rustre_proto::auth::ClusterSecret>,
) {
    let mut conn: Option<Arc<dyn ClientConn>> = None;
    let mut down_until: Option<Instant> = None;
    // Index of the address to use next (round robin over the OST's servers on failure).
    let mut next = 0usize;
    for cmd in rx.iter() {
        let Some(addr) = addrs.get(next % addrs.len().max(1)) else {
            continue;
        };
        if conn.is_none() {
            if down_until.is_some_and(|t| Instant::now() < t) {
                // Still backing off: fail fast and quietly (destroys are dropped: the objects
                // stay as orphans on the OST, never reused).
                if matches!(cmd, OstCommand::Precreate(_)) {
                    let _ = events.send(Event::PrecreateFailed {
                        ost: index,
                        error: "OST unreachable".into(),
                        no_space: false,
                    });
                }
                continue;
            }
            match rustre_fabric::connect(addr, &opts) {
                Ok(c) => {
                    let hs = pb::HandshakeRequest {
                        client_id: opts.client_id,
                        node_name: "mdsd".into(),
                        cluster_name: fsname.clone(),
                        role: pb::PeerRole::Mds as i32,
                        protocol_version: rustre_proto::frame::VERSION as u32,
                        ..Default::default()
                    };
                    let hello = |r: &pb::HandshakeRequest| {
                        call(&c, Opcode::Handshake, &r.encode_to_vec()).map_err(|e| e.to_string())
                    };
                    if let Err(e) = super::auth::handshake(secret.as_ref(), hs, hello) {
                        tracing::warn!("OST{index} at {addr}: handshake: {e}");
                    }
                    conn = Some(c);
                    down_until = None;
                }
                Err(e) => {
                    tracing::warn!("OST{index} at {addr}: {e}");
                    next += 1;
                    // Back off once every address of the OST has refused.
                    if next.is_multiple_of(addrs.len().max(1)) {
                        down_until = Some(Instant::now() + RECONNECT_BACKOFF);
                    }
                    if matches!(cmd, OstCommand::Precreate(_)) {
                        let _ = events.send(Event::PrecreateFailed {
                            ost: index,
                            error: e.to_string(),
                            no_space: false,
                        });
                    }
                    continue;
                }
            }
        }
        let Some(c) = conn.clone() else { continue };
        let failed = match cmd {
            OstCommand::Precreate(count) => {
                let req = pb::OstPrecreateRequest {
                    ost_index: index,
                    count,
                };
                match call::<pb::OstPrecreateReply>(&c, Opcode::OstPrecreate, &req.encode_to_vec()) {
                    Ok(r) if r.first_id > 0 && r.count > 0 && r.count <= count => {
                        let _ = events.send(Event::Precreated {
                            ost: index,
                            start: r.first_id,
                            count: u64::from(r.count),
                        });
                        false
                    }
                    Ok(r) => {
                        let error = format!("bad precreate reply: first_id {} count {}", r.first_id, r.count);
                        let _ = events.send(Event::PrecreateFailed {
                            ost: index,
                            error,
                            no_space: false,
                        });
                        false
                    }
                    Err(e) => {
                        // An OST that answered (ENOSPC: its object table or device is full) is
                        // still reachable; only a transport failure moves on to its partner.
                        let no_space = matches!(e, CallError::Remote { errno, .. } if errno == ENOSPC);
                        let failed = matches!(e, CallError::Transport(_));
                        let _ = events.send(Event::PrecreateFailed {
                            ost: index,
                            error: e.to_string(),
                            no_space,
                        });
                        failed
                    }
                }
            }
            OstCommand::Statfs => {
                let req = pb::OstStatfsRequest { ost_index: index };
                match call::<pb::OstStatfsReply>(&c, Opcode::OstStatfs, &req.encode_to_vec()) {
                    Ok(r) => {
                        let _ = events.send(Event::Statfs {
                            ost: index,
                            total_bytes: r.total_bytes,
                            free_bytes: r.free_bytes,
                            objects: r.objects,
                            free_objects: r.free_objects,
                        });
                        false
                    }
                    Err(e) => {
                        tracing::warn!("OST{index}: statfs: {e}");
                        matches!(e, CallError::Transport(_))
                    }
                }
            }
            OstCommand::Destroy(oid) => {
                let req = pb::OstDestroyRequest {
                    object: Some(pb::ObjectRef {
                        ost_index: index,
                        object_id: oid,
                    }),
                    cap: None,
                };
                match call::<pb::OstDestroyReply>(&c, Opcode::OstDestroy, &req.encode_to_vec()) {
                    Ok(_) => false,
                    Err(e) => {
                        tracing::warn!("OST{index}: destroy {oid:#x}: {e}");
                        matches!(e, CallError::Transport(_))
                    }
                }
            }
        };
        if failed {
            // Reconnect on the next command, to the next server of the OST.
            c.close();
            conn = None;
            next += 1;
        }
    }
    if let Some(c) = conn {
        c.close();
    }
}

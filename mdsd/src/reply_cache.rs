//! The reply cache: recent replies per client, so a resent request is answered, not redone.
//!
//! Bounded twice: at most `per_client` replies per client (oldest dropped first) and at most
//! `max_clients` clients (the least recently active dropped first). Mutations' replies are rebuilt
//! on WAL replay (each record carries the client id and xid) and the whole cache is part of every
//! checkpoint, so a resend after a restart still finds its reply.

use crate::codec::{Dec, DecodeError, Enc};
use std::collections::{HashMap, VecDeque};

/// One cached reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedReply {
    /// Request xid.
    pub xid: u64,
    /// Reply opcode.
    pub opcode: u16,
    /// True if this is an error reply.
    pub error: bool,
    /// Encoded reply body.
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
struct ClientReplies {
    replies: VecDeque<CachedReply>,
    last_use: u64,
}

/// Recent replies per client.
#[derive(Debug, Clone)]
pub struct ReplyCache {
    clients: HashMap<u64, ClientReplies>,
    per_client: usize,
    max_clients: usize,
    clock: u64,
}

impl ReplyCache {
    /// An empty cache with the given bounds (each at least 1).
    pub fn new(per_client: usize, max_clients: usize) -> Self {
        Self {
            clients: HashMap::new(),
            per_client: per_client.max(1),
            max_clients: max_clients.max(1),
            clock: 0,
        }
    }

    /// The cached reply to `client`'s request `xid`.
    pub fn get(&self, client: u64, xid: u64) -> Option<&CachedReply> {
        self.clients.get(&client)?.replies.iter().rev().find(|r| r.xid == xid)
    }

    /// Remembers a reply.
    pub fn insert(&mut self, client: u64, reply: CachedReply) {
        self.clock += 1;
        if !self.clients.contains_key(&client)
            && self.clients.len() >= self.max_clients
            && let Some(victim) = self.clients.iter().min_by_key(|(_, c)| c.last_use).map(|(k, _)| *k)
        {
            self.clients.remove(&victim);
        }
        let c = self.clients.entry(client).or_default();
        c.last_use = self.clock;
        if let Some(old) = c.replies.iter_mut().find(|r| r.xid == reply.xid) {
            *old = reply;
            return;
        }
        if c.replies.len() >= self.per_client {
            c.replies.pop_front();
        }
        c.replies.push_back(reply);
    }

    /// Number of cached replies.
    pub fn len(&self) -> usize {
        self.clients.values().map(|c| c.replies.len()).sum()
    }

    /// True if nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the cache's encoding (for a checkpoint).
    pub fn encode(&self, e: &mut Enc) {
        let mut clients: Vec<_> = self.clients.iter().collect();
        clients.sort_by_key(|(_, c)| c.last_use);
        e.u32(clients.len() as u32);
        for (id, c) in clients {
            e.u64(*id);
            e.u32(c.replies.len() as u32);
            for r in &c.replies {
                e.u64(r.xid);
                e.u16(r.opcode);
                e.u8(r.error as u8);
                e.bytes(&r.body);
            }
        }
    }

    /// Decodes a cache, applying this cache's bounds.
    pub fn decode(d: &mut Dec<'_>, per_client: usize, max_clients: usize) -> Result<ReplyCache, DecodeError> {
        let mut c = ReplyCache::new(per_client, max_clients);
        let n = d.u32()?;
        for _ in 0..n {
            let id = d.u64()?;
            let m = d.u32()?;
            for _ in 0..m {
                let xid = d.u64()?;
                let opcode = d.u16()?;
                let error = d.u8()? != 0;
                let body = d.bytes()?.to_vec();
                c.insert(
                    id,
                    CachedReply {
                        xid,
                        opcode,
                        error,
                        body,
                    },
                );
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(xid: u64) -> CachedReply {
        CachedReply {
            xid,
            opcode: 11,
            error: false,
            body: vec![xid as u8],
        }
    }

    #[test]
    fn bounded_per_client_and_in_clients() {
        let mut c = ReplyCache::new(3, 2);
        for x in 1..=5 {
            c.insert(7, r(x));
        }
        assert!(c.get(7, 2).is_none());
        assert_eq!(c.get(7, 5).map(|r| r.body.clone()), Some(vec![5]));
        c.insert(8, r(1));
        c.insert(9, r(1));
        assert!(c.get(7, 5).is_none(), "least recently active client evicted");
        assert!(c.get(8, 1).is_some() && c.get(9, 1).is_some());
        let mut e = Enc::new();
        c.encode(&mut e);
        let back = ReplyCache::decode(&mut Dec::new(&e.buf, "cache"), 3, 2).unwrap();
        assert_eq!(back.get(9, 1), c.get(9, 1));
        assert_eq!(back.len(), 2);
    }
}

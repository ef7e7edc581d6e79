//! Request handling on the namespace thread: decode, check the reply cache, run the operation,
//! queue its WAL entry, encode the reply. No I/O: the event loop commits and sends.

use super::squash::RootSquash;
use super::wire::{self, Failure, creds, decode, fid, name, pb_attr, pb_layout, pb_template};
use crate::codec::{Dec, Enc};
use crate::errno::Errno;
use crate::ns::{self, Namespace, ObjRef, OpenFlags, SetattrRequest, WalEntry, WalRecord};
use crate::reply_cache::{CachedReply, ReplyCache};
use prost::Message;
use rustre_proto::types::{self as t, LayoutRequest};
use rustre_proto::{Opcode, pb};

/// Configuration the handler needs.
#[derive(Debug, Clone)]
pub struct HandlerConfig {
    /// File system name.
    pub fsname: String,
    /// OSTs: index and address.
    pub osts: Vec<(u32, String)>,
    /// Addresses of this MDS.
    pub mds_addresses: Vec<String>,
    /// Replies kept per client.
    pub reply_cache_per_client: usize,
    /// Clients kept in the reply cache.
    pub reply_cache_clients: usize,
    /// Largest readdir page.
    pub max_readdir: u32,
    /// Inodes the MDT can hold (statfs).
    pub inode_capacity: u64,
    /// This server's id (handshake).
    pub server_id: u64,
    /// What the handshake announces (`HandshakeReply.features`): [`FEATURES`], every feature
    /// this MDS has. Announcing fewer makes clients do without them, as with an older MDS.
    pub features: u32,
}

/// Every [`pb::ServerFeature`] this MDS implements.
pub const FEATURES: u32 = pb::ServerFeature::PathWalks as u32;

/// One request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Client id from the frame header.
    pub client: u64,
    /// Xid.
    pub xid: u64,
    /// Opcode.
    pub opcode: u16,
    /// Body.
    pub body: Vec<u8>,
}

/// The outcome of handling a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Send this reply (after the turn's group commit).
    Reply {
        /// Reply opcode.
        opcode: u16,
        /// Body.
        body: Vec<u8>,
        /// FLAG_ERROR.
        error: bool,
    },
    /// No precreated object is available yet: retry after a refill.
    NeedObjects,
}

/// The namespace, the reply cache, and what one loop turn has produced.
pub struct MdsCore {
    /// The namespace.
    pub ns: Namespace,
    /// The reply cache.
    pub cache: ReplyCache,
    /// Configuration.
    pub cfg: HandlerConfig,
    /// WAL entries produced this turn, to group-commit.
    pub pending: Vec<WalEntry>,
    /// Objects freed (to destroy on their OSTs).
    pub freed: Vec<ObjRef>,
    /// Root squash (`None` = off, the default): uid 0 is served as another user.
    pub root_squash: Option<RootSquash>,
    /// Whether the request being handled is squashed (its peer is not exempt).
    squash_request: bool,
    last_time: i64,
    /// Handles open for writing, per file (volatile: lost on restart, which only means
    /// `Attr.open_for_write` is false until the file is opened again). At most
    /// [`MAX_WRITE_OPEN_FILES`] files are tracked.
    write_opens: std::collections::HashMap<ns::Fid, u32>,
}

/// Files whose open-for-write handles the MDS counts (see `Attr.open_for_write`); past it, new
/// writers go uncounted and readers see the size recorded at close.
pub const MAX_WRITE_OPEN_FILES: usize = 1 << 20;

fn is_mutation(op: u16) -> bool {
    use Opcode::*;
    [
        MdsCreate,
        MdsClose,
        MdsMkdir,
        MdsSetattr,
        MdsRename,
        MdsUnlink,
        MdsRmdir,
        MdsSymlink,
        MdsLink,
        MdsSetstripe,
    ]
    .iter()
    .any(|o| o.as_u16() == op)
}

fn enc<M: Message>(m: &M) -> Vec<u8> {
    m.encode_to_vec()
}

impl MdsCore {
    /// A handler over `ns` and `cache`.
    pub fn new(ns: Namespace, cache: ReplyCache, cfg: HandlerConfig) -> Self {
        let mut ns = ns;
        for (ost, _) in &cfg.osts {
            ns.alloc.add_ost(*ost);
        }
        MdsCore {
            ns,
            cache,
            cfg,
            pending: Vec::new(),
            freed: Vec::new(),
            root_squash: None,
            squash_request: false,
            last_time: 0,
            write_opens: std::collections::HashMap::new(),
        }
    }

    /// The directory a request's `walk` leads to from `parent`: each name looked up in the
    /// directory the one before it found, as `Lookup` does. A symbolic link on the way is
    /// refused ([`Failure::LinkInWalk`]); a failed lookup on the way, or a name that is not a
    /// directory (`ENOTDIR`), fails the request naming `field` ([`Failure::Walk`]).
    fn walk_to(
        &self,
        c: &ns::Cred,
        parent: ns::Fid,
        walk: Vec<Vec<u8>>,
        field: &'static str,
    ) -> Result<ns::Fid, Failure> {
        if !walk.is_empty() && self.cfg.features & pb::ServerFeature::PathWalks as u32 == 0 {
            // The client was not told it could: better refused than acted on in `parent`.
            return Err(Failure::Protocol(rustre_proto::ProtocolError::invalid(
                field,
                "path walks are not announced by this server",
            )));
        }
        let mut dir = parent;
        for n in wire::walk_names(walk, field)? {
            let a = self.ns.lookup(c, dir, &n).map_err(|err| Failure::Walk(err, field))?;
            match a.kind {
                ns::Kind::Symlink => return Err(Failure::LinkInWalk(field)),
                ns::Kind::Dir => dir = a.fid,
                _ => return Err(Failure::Walk(Errno::ENOTDIR, field)),
            }
        }
        Ok(dir)
    }

    /// Request credentials as the namespace sees them: validated, and root squashed when the
    /// policy applies to the request's peer.
    fn creds(&self, p: Option<pb::Credentials>, field: &'static str) -> Result<ns::Cred, rustre_proto::ProtocolError> {
        let c = creds(p, field)?;
        Ok(match &self.root_squash {
            Some(s) if self.squash_request => s.map(c),
            _ => c,
        })
    }

    /// The checkpoint body: namespace then reply cache.
    pub fn snapshot(&self) -> Vec<u8> {
        // About 100 bytes per inode with its entry and layout: one allocation, no regrowth.
        let mut e = Enc {
            buf: Vec::with_capacity(self.ns.inode_count() * 112 + (1 << 16)),
        };
        self.ns.encode(&mut e);
        self.cache.encode(&mut e);
        e.buf
    }

    /// Decodes a checkpoint body.
    pub fn from_snapshot(body: &[u8], cfg: HandlerConfig) -> Result<MdsCore, String> {
        let mut d = Dec::new(body, "checkpoint");
        let ns = Namespace::decode(&mut d).map_err(|e| e.to_string())?;
        let cache = ReplyCache::decode(&mut d, cfg.reply_cache_per_client, cfg.reply_cache_clients)
            .map_err(|e| e.to_string())?;
        Ok(MdsCore::new(ns, cache, cfg))
    }

    /// The empty file system's checkpoint body.
    pub fn initial_snapshot(time: i64) -> Vec<u8> {
        let mut e = Enc::new();
        Namespace::new(time).encode(&mut e);
        ReplyCache::new(1, 1).encode(&mut e);
        e.buf
    }

    /// Replays one WAL entry: applies it and rebuilds its cached reply.
    pub fn replay(&mut self, e: WalEntry) -> Result<(), String> {
        let out = self
            .ns
            .apply(&e.record)
            .map_err(|err| format!("{:?}: {err}", e.record))?;
        if e.client != 0 {
            let body = self.mutation_reply(e.opcode, &e.record, out.fid);
            self.cache.insert(
                e.client,
                CachedReply {
                    xid: e.xid,
                    opcode: e.opcode,
                    error: false,
                    body,
                },
            );
        }
        Ok(())
    }

    /// Logs a server-side record (not from a client), e.g. a precreated range.
    pub fn log_internal(&mut self, record: WalRecord) -> Result<(), Errno> {
        self.ns.apply(&record)?;
        self.pending.push(WalEntry {
            client: 0,
            xid: 0,
            opcode: 0,
            record,
        });
        Ok(())
    }

    /// The reply of a mutation, from its record and the state right after it: the same bytes
    /// live and on replay.
    fn mutation_reply(&self, opcode: u16, rec: &WalRecord, fid: ns::Fid) -> Vec<u8> {
        let attr = || self.ns.getattr(fid).ok().map(|a| pb_attr(&self.ns, &a));
        match Opcode::try_from(opcode) {
            Ok(Opcode::MdsCreate) => enc(&pb::MdsCreateReply {
                attr: attr(),
                created: matches!(rec, WalRecord::Create { .. }),
                handle: fid,
                capabilities: Vec::new(),
            }),
            Ok(Opcode::MdsMkdir) => enc(&pb::MdsMkdirReply { attr: attr() }),
            Ok(Opcode::MdsSymlink) => enc(&pb::MdsSymlinkReply { attr: attr() }),
            Ok(Opcode::MdsLink) => enc(&pb::MdsLinkReply { attr: attr() }),
            Ok(Opcode::MdsSetattr) => enc(&pb::MdsSetattrReply { attr: attr() }),
            Ok(Opcode::MdsSetstripe) => {
                let layout = match self.ns.getstripe(fid) {
                    Ok((Some(l), _)) => Some(pb_layout(&l)),
                    Ok((None, Some(t))) => Some(pb_template(&t)),
                    _ => Some(pb_template(&self.ns.inherited_template(fid))),
                };
                enc(&pb::MdsSetstripeReply { layout })
            }
            _ => Vec::new(),
        }
    }

    fn now(&mut self, now: i64) -> i64 {
        // Times never go backwards, whatever the wall clock does.
        self.last_time = self.last_time.max(now);
        self.last_time
    }

    /// Handles one request from `peer` (a fabric peer address, which decides whether root
    /// squash applies) at time `now`.
    pub fn handle_from(&mut self, req: &Request, now: i64, peer: &str) -> Handled {
        self.squash_request = self.root_squash.as_ref().is_some_and(|s| s.applies_to(peer));
        let h = self.handle_inner(req, now);
        self.squash_request = false;
        h
    }

    /// Handles one request at time `now` (ns since the epoch). Root squash, when configured,
    /// applies (the peer is unknown, so no exemption can match).
    pub fn handle(&mut self, req: &Request, now: i64) -> Handled {
        self.squash_request = self.root_squash.is_some();
        let h = self.handle_inner(req, now);
        self.squash_request = false;
        h
    }

    fn handle_inner(&mut self, req: &Request, now: i64) -> Handled {
        let mutation = is_mutation(req.opcode);
        if mutation
            && req.client != 0
            && let Some(c) = self.cache.get(req.client, req.xid)
        {
            return Handled::Reply {
                opcode: c.opcode,
                body: c.body.clone(),
                error: c.error,
            };
        }
        let now = self.now(now);
        let mark = self.pending.len();
        let result = self.dispatch(req, now);
        let (body, error) = match result {
            Ok(body) => (body, false),
            Err(Failure::Errno(Errno::EAGAIN, _)) if req.opcode == Opcode::MdsCreate.as_u16() => {
                return Handled::NeedObjects;
            }
            Err(f) => (enc(&f.to_pb()), true),
        };
        if mutation && req.client != 0 && (error || self.pending.len() > mark) {
            for e in &mut self.pending[mark..] {
                e.client = req.client;
                e.xid = req.xid;
                e.opcode = req.opcode;
            }
            self.cache.insert(
                req.client,
                CachedReply {
                    xid: req.xid,
                    opcode: req.opcode,
                    error,
                    body: body.clone(),
                },
            );
        }
        Handled::Reply {
            opcode: req.opcode,
            body,
            error,
        }
    }

    fn log(&mut self, change: ns::ops::Change) -> ns::Fid {
        self.freed.extend_from_slice(&change.outcome.freed);
        self.pending.push(WalEntry {
            client: 0,
            xid: 0,
            opcode: 0,
            record: change.record,
        });
        change.outcome.fid
    }

    fn reply_for_last(&self, opcode: Opcode, fid: ns::Fid) -> Vec<u8> {
        match self.pending.last() {
            Some(e) => self.mutation_reply(opcode.as_u16(), &e.record, fid),
            None => Vec::new(),
        }
    }

    fn dispatch(&mut self, req: &Request, now: i64) -> Result<Vec<u8>, Failure> {
        let op = Opcode::try_from(req.opcode).map_err(Failure::Protocol)?;
        let b = &req.body[..];
        let e = |op: &'static str| move |err: Errno| Failure::Errno(err, op);
        match op {
            Opcode::Handshake => {
                let _r: pb::HandshakeRequest = decode(b, "HandshakeRequest")?;
                Ok(enc(&pb::HandshakeReply {
                    cluster_name: self.cfg.fsname.clone(),
                    protocol_version: rustre_proto::frame::VERSION as u32,
                    server_id: self.cfg.server_id,
                    osts: {
                        // An index listed more than once: one target with its failover servers.
                        let mut targets: Vec<pb::OstTarget> = Vec::new();
                        for (i, a) in &self.cfg.osts {
                            match targets.iter_mut().find(|t| t.index == *i) {
                                Some(t) => t.addresses.push(a.clone()),
                                None => targets.push(pb::OstTarget {
                                    index: *i,
                                    addresses: vec![a.clone()],
                                }),
                            }
                        }
                        targets
                    },
                    mds_addresses: self.cfg.mds_addresses.clone(),
                    default_layout: Some(pb_template(&self.ns.fs_default)),
                    role: pb::PeerRole::Mds as i32,
                    max_body: rustre_proto::frame::DEFAULT_MAX_BODY,
                    map_generation: 1,
                    features: self.cfg.features,
                    ..Default::default()
                }))
            }
            Opcode::MdsNull => {
                let r: pb::MdsNullRequest = decode(b, "MdsNullRequest")?;
                Ok(enc(&pb::MdsNullReply { payload: r.payload }))
            }
            Opcode::MdsLookup => {
                let r: pb::MdsLookupRequest = decode(b, "MdsLookupRequest")?;
                let c = self.creds(r.creds, "lookup.creds")?;
                let p = fid(r.parent, "lookup.parent", "lookup")?;
                let n = name(r.name, "lookup.name")?;
                let more = wire::walk_names(r.more, "lookup.more")?;
                // The walk: each name in the directory the one before it found, up to a symbolic
                // link (the client resolves it). Below a file, the next lookup fails ENOTDIR.
                let mut attrs = Vec::with_capacity(1 + more.len());
                let mut dir = p;
                for n in std::iter::once(&n).chain(&more) {
                    if attrs.last().is_some_and(|a: &ns::Attr| a.kind == ns::Kind::Symlink) {
                        break;
                    }
                    let a = self.ns.lookup(&c, dir, n).map_err(e("lookup"))?;
                    dir = a.fid;
                    attrs.push(a);
                }
                let mut attrs = attrs.iter().map(|a| {
                    let mut attr = pb_attr(&self.ns, a);
                    attr.open_for_write = self.write_opens.contains_key(&a.fid);
                    attr
                });
                Ok(enc(&pb::MdsLookupReply {
                    attr: attrs.next(),
                    more: attrs.collect(),
                }))
            }
            Opcode::MdsGetattr => {
                let r: pb::MdsGetattrRequest = decode(b, "MdsGetattrRequest")?;
                self.creds(r.creds, "getattr.creds")?;
                let f = fid(r.fid, "getattr.fid", "getattr")?;
                let a = self.ns.getattr(f).map_err(e("getattr"))?;
                let mut attr = pb_attr(&self.ns, &a);
                attr.open_for_write = self.write_opens.contains_key(&f);
                Ok(enc(&pb::MdsGetattrReply { attr: Some(attr) }))
            }
            Opcode::MdsCreate => {
                let r: pb::MdsCreateRequest = decode(b, "MdsCreateRequest")?;
                let c = self.creds(r.creds, "create.creds")?;
                let p = fid(r.parent, "create.parent", "create")?;
                let p = self.walk_to(&c, p, r.walk, "create.walk")?;
                let n = name(r.name, "create.name")?;
                let mode = t::Mode::try_from(r.mode).map_err(|x| x.at("create.mode"))?;
                let fl = t::OpenFlags::try_from(r.flags).map_err(|x| x.within("create"))?;
                let layout = match r.layout {
                    None => None,
                    Some(l) => Some(wire::template(&LayoutRequest::from_field(Some(l), "create.layout")?)),
                };
                let mut flags = 0;
                for (w, l) in [
                    (t::OpenFlags::CREATE, OpenFlags::CREAT),
                    (t::OpenFlags::EXCL, OpenFlags::EXCL),
                    (t::OpenFlags::TRUNC, OpenFlags::TRUNC),
                ] {
                    if fl.contains(w) {
                        flags |= l;
                    }
                }
                flags |= match (fl.contains(t::OpenFlags::READ), fl.contains(t::OpenFlags::WRITE)) {
                    (_, false) => OpenFlags::RDONLY,
                    (false, true) => OpenFlags::WRONLY,
                    (true, true) => OpenFlags::RDWR,
                };
                let o = self
                    .ns
                    .open(&c, now, p, &n, OpenFlags(flags), mode.bits(), layout)
                    .map_err(e("create"))?;
                if fl.contains(t::OpenFlags::WRITE)
                    && (self.write_opens.len() < MAX_WRITE_OPEN_FILES || self.write_opens.contains_key(&o.fid))
                {
                    *self.write_opens.entry(o.fid).or_insert(0) += 1;
                }
                match o.change {
                    Some(ch) => {
                        let f = self.log(ch);
                        Ok(self.reply_for_last(Opcode::MdsCreate, f))
                    }
                    None => {
                        let a = self.ns.getattr(o.fid).map_err(e("create"))?;
                        Ok(enc(&pb::MdsCreateReply {
                            attr: Some(pb_attr(&self.ns, &a)),
                            created: false,
                            handle: o.fid,
                            capabilities: Vec::new(),
                        }))
                    }
                }
            }
            Opcode::MdsClose => {
                let r: pb::MdsCloseRequest = decode(b, "MdsCloseRequest")?;
                let c = self.creds(r.creds, "close.creds")?;
                let f = fid(r.fid, "close.fid", "close")?;
                if r.writer
                    && let Some(n) = self.write_opens.get_mut(&f)
                {
                    *n -= 1;
                    if *n == 0 {
                        self.write_opens.remove(&f);
                    }
                }
                if let Some(size) = r.size {
                    if size > t::MAX_FILE_SIZE {
                        return Err(
                            rustre_proto::ProtocolError::invalid("close.size", "beyond the largest file size").into(),
                        );
                    }
                    let mtime = r.mtime_ns.unwrap_or(now);
                    let ch = self.ns.close(&c, f, size, mtime).map_err(e("close"))?;
                    self.log(ch);
                } else {
                    self.ns.getattr(f).map_err(e("close"))?;
                }
                Ok(enc(&pb::MdsCloseReply {}))
            }
            Opcode::MdsMkdir => {
                let r: pb::MdsMkdirRequest = decode(b, "MdsMkdirRequest")?;
                let c = self.creds(r.creds, "mkdir.creds")?;
                let p = fid(r.parent, "mkdir.parent", "mkdir")?;
                let p = self.walk_to(&c, p, r.walk, "mkdir.walk")?;
                let n = name(r.name, "mkdir.name")?;
                let mode = t::Mode::try_from(r.mode).map_err(|x| x.at("mkdir.mode"))?;
                let dl = match r.default_layout {
                    None => None,
                    Some(l) => Some(wire::template(&LayoutRequest::from_field(
                        Some(l),
                        "mkdir.default_layout",
                    )?)),
                };
                let ch = self.ns.mkdir(&c, now, p, &n, mode.bits()).map_err(e("mkdir"))?;
                let f = self.log(ch);
                if dl.is_some() {
                    let ch = self.ns.setstripe(&c, now, f, dl).map_err(e("mkdir"))?;
                    self.log(ch);
                }
                Ok(self.reply_for_last(Opcode::MdsMkdir, f))
            }
            Opcode::MdsReaddir => {
                let r: pb::MdsReaddirRequest = decode(b, "MdsReaddirRequest")?;
                let c = self.creds(r.creds, "readdir.creds")?;
                let d = fid(r.dir, "readdir.dir", "readdir")?;
                let max = match r.max_entries {
                    0 => self.cfg.max_readdir,
                    n => n.min(self.cfg.max_readdir),
                };
                let (ents, next) = self.ns.readdir(&c, d, r.cookie, max as usize).map_err(e("readdir"))?;
                Ok(enc(&pb::MdsReaddirReply {
                    entries: ents
                        .into_iter()
                        .map(|x| pb::DirEntry {
                            name: x.name.into_bytes(),
                            fid: Some(wire::pb_fid(x.fid)),
                            kind: wire::pb_kind(x.kind),
                        })
                        .collect(),
                    next_cookie: next,
                    eof: next == ns::COOKIE_EOF,
                }))
            }
            Opcode::MdsSetattr => {
                let r: pb::MdsSetattrRequest = decode(b, "MdsSetattrRequest")?;
                let c = self.creds(r.creds, "setattr.creds")?;
                let f = fid(r.fid, "setattr.fid", "setattr")?;
                let mode = match r.mode {
                    Some(m) => Some(t::Mode::try_from(m).map_err(|x| x.at("setattr.mode"))?.bits()),
                    None => None,
                };
                if r.size.is_some_and(|s| s > t::MAX_FILE_SIZE) {
                    return Err(
                        rustre_proto::ProtocolError::invalid("setattr.size", "beyond the largest file size").into(),
                    );
                }
                let sr = SetattrRequest {
                    mode,
                    uid: r.uid,
                    gid: r.gid,
                    size: r.size,
                    atime: r.atime_ns,
                    mtime: r.mtime_ns,
                };
                let ch = self.ns.setattr(&c, now, f, sr).map_err(e("setattr"))?;
                let f = self.log(ch);
                Ok(self.reply_for_last(Opcode::MdsSetattr, f))
            }
            Opcode::MdsRename => {
                let r: pb::MdsRenameRequest = decode(b, "MdsRenameRequest")?;
                let c = self.creds(r.creds, "rename.creds")?;
                let sp = fid(r.src_parent, "rename.src_parent", "rename")?;
                let sp = self.walk_to(&c, sp, r.src_walk, "rename.src_walk")?;
                let sn = name(r.src_name, "rename.src_name")?;
                let dp = fid(r.dst_parent, "rename.dst_parent", "rename")?;
                let dp = self.walk_to(&c, dp, r.dst_walk, "rename.dst_walk")?;
                let dn = name(r.dst_name, "rename.dst_name")?;
                let flags = t::RenameFlags::try_from(r.flags).map_err(|x| x.within("rename"))?;
                if flags.bits() & pb::RenameFlag::Noreplace as u32 != 0
                    && self.ns.dir(dp).map_err(e("rename"))?.get(&dn).is_some()
                {
                    return Err(Failure::Errno(Errno::EEXIST, "rename"));
                }
                let ch = self.ns.rename(&c, now, sp, &sn, dp, &dn).map_err(e("rename"))?;
                self.log(ch);
                Ok(enc(&pb::MdsRenameReply {}))
            }
            Opcode::MdsUnlink | Opcode::MdsRmdir => {
                let dir = op == Opcode::MdsRmdir;
                let what = if dir { "rmdir" } else { "unlink" };
                let r: pb::MdsUnlinkRequest = if dir {
                    let r: pb::MdsRmdirRequest = decode(b, "MdsRmdirRequest")?;
                    pb::MdsUnlinkRequest {
                        creds: r.creds,
                        parent: r.parent,
                        name: r.name,
                        walk: r.walk,
                    }
                } else {
                    decode(b, "MdsUnlinkRequest")?
                };
                let c = self.creds(r.creds, if dir { "rmdir.creds" } else { "unlink.creds" })?;
                let p = fid(r.parent, if dir { "rmdir.parent" } else { "unlink.parent" }, what)?;
                let p = self.walk_to(&c, p, r.walk, if dir { "rmdir.walk" } else { "unlink.walk" })?;
                let n = name(r.name, if dir { "rmdir.name" } else { "unlink.name" })?;
                let ch = self.ns.remove(&c, now, p, &n, dir).map_err(e(what))?;
                self.log(ch);
                Ok(Vec::new())
            }
            Opcode::MdsSymlink => {
                let r: pb::MdsSymlinkRequest = decode(b, "MdsSymlinkRequest")?;
                let c = self.creds(r.creds, "symlink.creds")?;
                let p = fid(r.parent, "symlink.parent", "symlink")?;
                let p = self.walk_to(&c, p, r.walk, "symlink.walk")?;
                let n = name(r.name, "symlink.name")?;
                let target = t::SymlinkTarget::from_field(r.target, "symlink.target")?;
                let target = std::str::from_utf8(target.as_bytes())
                    .map_err(|_| rustre_proto::ProtocolError::invalid("symlink.target", "not UTF-8"))?
                    .to_string();
                let ch = self.ns.symlink(&c, now, p, &n, &target).map_err(e("symlink"))?;
                let f = self.log(ch);
                Ok(self.reply_for_last(Opcode::MdsSymlink, f))
            }
            Opcode::MdsLink => {
                let r: pb::MdsLinkRequest = decode(b, "MdsLinkRequest")?;
                let c = self.creds(r.creds, "link.creds")?;
                let target = fid(r.target, "link.target", "link")?;
                let p = fid(r.parent, "link.parent", "link")?;
                let n = name(r.name, "link.name")?;
                let ch = self.ns.link(&c, now, target, p, &n).map_err(e("link"))?;
                let f = self.log(ch);
                Ok(self.reply_for_last(Opcode::MdsLink, f))
            }
            Opcode::MdsStatfs => {
                let r: pb::MdsStatfsRequest = decode(b, "MdsStatfsRequest")?;
                self.creds(r.creds, "statfs.creds")?;
                let s = self.ns.statfs();
                Ok(enc(&pb::MdsStatfsReply {
                    fsname: self.cfg.fsname.clone(),
                    total_bytes: s.total_bytes,
                    free_bytes: s.free_bytes,
                    avail_bytes: s.free_bytes,
                    total_inodes: self.cfg.inode_capacity.max(s.files),
                    free_inodes: self.cfg.inode_capacity.saturating_sub(s.files),
                    max_name_len: ns::NAME_MAX as u32,
                    osts: self
                        .ns
                        .alloc
                        .osts
                        .iter()
                        .map(|(i, p)| pb::OstStatfsEntry {
                            index: *i,
                            total_bytes: p.total_bytes,
                            free_bytes: p.free_bytes,
                            objects: p.total_objects.saturating_sub(p.free_objects),
                            available: p.total_bytes > 0,
                        })
                        .collect(),
                }))
            }
            Opcode::MdsSetstripe => {
                let r: pb::MdsSetstripeRequest = decode(b, "MdsSetstripeRequest")?;
                let c = self.creds(r.creds, "setstripe.creds")?;
                let f = fid(r.fid, "setstripe.fid", "setstripe")?;
                let tmpl = match r.layout {
                    None => None,
                    Some(l) => Some(wire::template(&LayoutRequest::from_field(Some(l), "setstripe.layout")?)),
                };
                let ch = self.ns.setstripe(&c, now, f, tmpl).map_err(e("setstripe"))?;
                let f = self.log(ch);
                Ok(self.reply_for_last(Opcode::MdsSetstripe, f))
            }
            Opcode::MdsGetstripe => {
                let r: pb::MdsGetstripeRequest = decode(b, "MdsGetstripeRequest")?;
                self.creds(r.creds, "getstripe.creds")?;
                let f = fid(r.fid, "getstripe.fid", "getstripe")?;
                let (layout, inherited) = match self.ns.getstripe(f).map_err(e("getstripe"))? {
                    (Some(l), _) => (pb_layout(&l), false),
                    (None, Some(t)) => (pb_template(&t), false),
                    (None, None) => (pb_template(&self.ns.inherited_template(f)), true),
                };
                Ok(enc(&pb::MdsGetstripeReply {
                    layout: Some(layout),
                    inherited,
                }))
            }
            Opcode::MdsReadlink => {
                let r: pb::MdsReadlinkRequest = decode(b, "MdsReadlinkRequest")?;
                self.creds(r.creds, "readlink.creds")?;
                let f = fid(r.fid, "readlink.fid", "readlink")?;
                let target = self.ns.readlink(f).map_err(e("readlink"))?;
                Ok(enc(&pb::MdsReadlinkReply {
                    target: target.as_bytes().to_vec(),
                }))
            }
            other => Err(Failure::Errno(Errno::ENOSYS, other.name())),
        }
    }
}

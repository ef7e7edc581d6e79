//! Conversions between the wire (`rustre_proto`) and the namespace's types.

use crate::errno::Errno;
use crate::ns::{self, Attr, Fid, Kind, Layout, LayoutTemplate, Namespace};
use rustre_proto::limits::{Bounded, decoded_size};
use rustre_proto::types::{self as t, LayoutRequest, StripeCountRequest};
use rustre_proto::{ProtocolError, RemoteError, pb};

/// Most heap a decoded request body may use.
pub const MAX_DECODED: usize = 1 << 20;

/// A failed request: an errno from the namespace or an invalid message.
#[derive(Debug)]
pub enum Failure {
    /// The operation failed.
    Errno(Errno, &'static str),
    /// The message was invalid.
    Protocol(ProtocolError),
    /// A request's path walk (`walk`, named by the field) met a symbolic link: the client
    /// resolves it and sends the directory it found (`ELOOP`).
    LinkInWalk(&'static str),
    /// A lookup of a request's path walk failed (the field names the walk, so that a rename
    /// tells its two sides apart).
    Walk(Errno, &'static str),
}

impl From<ProtocolError> for Failure {
    fn from(e: ProtocolError) -> Self {
        Failure::Protocol(e)
    }
}

impl Failure {
    /// The `ErrorReply` body.
    pub fn to_pb(&self) -> pb::ErrorReply {
        match self {
            Failure::Errno(e, op) => pb::ErrorReply {
                errno: e.0,
                message: format!("{op}: {e}"),
                field: String::new(),
            },
            Failure::Walk(e, field) => pb::ErrorReply {
                errno: e.0,
                message: format!("{field}: {e}"),
                field: (*field).to_string(),
            },
            Failure::Protocol(p) => RemoteError::from(p).to_pb(),
            Failure::LinkInWalk(field) => pb::ErrorReply {
                errno: Errno::ELOOP.0,
                message: format!("{field}: a symbolic link on the way; resolve it and send its directory"),
                field: (*field).to_string(),
            },
        }
    }
}

/// Decodes a request body of type `T` after checking the heap it would take.
pub fn decode<T: prost::Message + Default + Bounded>(body: &[u8], what: &'static str) -> Result<T, ProtocolError> {
    decoded_size(T::shape(), body, MAX_DECODED).map_err(|reason| ProtocolError::Decode { message: what, reason })?;
    T::decode(body).map_err(|e| ProtocolError::Decode {
        message: what,
        reason: e.to_string(),
    })
}

/// The caller's credentials from the `creds` field.
pub fn creds(p: Option<pb::Credentials>, field: &'static str) -> Result<ns::Cred, ProtocolError> {
    let c = t::Credentials::from_field(p, field)?;
    Ok(ns::Cred {
        uid: c.uid,
        gid: c.gid,
        groups: c.groups,
    })
}

/// An inode number from a wire fid. Inode numbers are never reused, so every live fid has
/// generation 0; another generation names a file that cannot exist (ESTALE).
pub fn fid(p: Option<pb::Fid>, field: &'static str, op: &'static str) -> Result<Fid, Failure> {
    let f = t::Fid::from_field(p, field)?;
    if f.generation() != 0 {
        return Err(Failure::Errno(Errno::ESTALE, op));
    }
    Ok(f.ino())
}

/// A validated entry name, as UTF-8 (the namespace stores names as strings).
pub fn name(b: Vec<u8>, field: &'static str) -> Result<String, ProtocolError> {
    let n = t::Name::from_field(b, field)?;
    String::from_utf8(n.into_bytes()).map_err(|_| ProtocolError::invalid(field, "not UTF-8"))
}

/// The validated names of a request's path walk ([`rustre_proto::request::mds::walk_names`]),
/// as UTF-8.
pub fn walk_names(names: Vec<Vec<u8>>, field: &'static str) -> Result<Vec<String>, ProtocolError> {
    rustre_proto::request::mds::walk_names(names, field)?
        .into_iter()
        .map(|n| name(n.into_bytes(), field))
        .collect()
}

/// A layout request as a template (0 / -1 = inherit).
pub fn template(r: &LayoutRequest) -> LayoutTemplate {
    LayoutTemplate {
        stripe_size: r.stripe_size.unwrap_or(0),
        stripe_count: match r.stripe_count {
            StripeCountRequest::Default => 0,
            StripeCountRequest::All => -1,
            StripeCountRequest::Count(n) => n as i32,
        },
        stripe_offset: r.stripe_offset.map_or(-1, |o| o.get() as i32),
    }
}

/// A wire fid.
pub fn pb_fid(f: Fid) -> pb::Fid {
    pb::Fid { ino: f, generation: 0 }
}

/// A file's layout on the wire.
pub fn pb_layout(l: &Layout) -> pb::Layout {
    pb::Layout {
        stripe_size: l.stripe_size,
        stripe_count: l.objects.len() as u32,
        stripe_offset: l.objects.first().map_or(-1, |o| o.ost as i32),
        objects: l
            .objects
            .iter()
            .map(|o| pb::ObjectRef {
                ost_index: o.ost,
                object_id: o.oid,
            })
            .collect(),
    }
}

/// A template (directory default) on the wire.
pub fn pb_template(t: &LayoutTemplate) -> pb::Layout {
    pb::Layout {
        stripe_size: t.stripe_size,
        stripe_count: if t.stripe_count < 0 {
            t::STRIPE_COUNT_ALL
        } else {
            t.stripe_count as u32
        },
        stripe_offset: t.stripe_offset,
        objects: Vec::new(),
    }
}

/// Wire file kind.
pub fn pb_kind(k: Kind) -> i32 {
    match k {
        Kind::File => pb::FileKind::Regular as i32,
        Kind::Dir => pb::FileKind::Directory as i32,
        Kind::Symlink => pb::FileKind::Symlink as i32,
    }
}

/// Wire attributes of `a`, with the layout of a file.
pub fn pb_attr(ns: &Namespace, a: &Attr) -> pb::Attr {
    let layout = ns.inode(a.fid).ok().and_then(|i| i.layout()).map(pb_layout);
    pb::Attr {
        fid: Some(pb_fid(a.fid)),
        kind: pb_kind(a.kind),
        mode: a.mode & ns::inode::MODE_BITS,
        uid: a.uid,
        gid: a.gid,
        nlink: a.nlink,
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime_ns: a.atime,
        mtime_ns: a.mtime,
        ctime_ns: a.ctime,
        layout,
        // Set by the lookup and getattr handlers, which know the open handles.
        open_for_write: false,
    }
}

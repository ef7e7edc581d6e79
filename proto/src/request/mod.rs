//! Validated requests: [`Request::decode`] turns a request frame into the right validated type.

pub mod handshake;
pub mod mds;
pub mod ost;

use crate::codec::decode_body;
use crate::frame::{FLAG_ERROR, FLAG_FABRIC, FLAG_REPLY};
use crate::{FrameHeader, Opcode, ProtocolError, pb};

/// Payload of a null (ping) request, echoed by the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NullProbe {
    /// Bytes to echo.
    pub payload: Vec<u8>,
}

/// A decoded and validated request, one variant per [`Opcode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Connection set-up.
    Handshake(handshake::Handshake),
    /// See [`Opcode::MdsLookup`].
    MdsLookup(mds::Lookup),
    /// See [`Opcode::MdsCreate`].
    MdsCreate(mds::Create),
    /// See [`Opcode::MdsClose`].
    MdsClose(mds::Close),
    /// See [`Opcode::MdsMkdir`].
    MdsMkdir(mds::Mkdir),
    /// See [`Opcode::MdsReaddir`].
    MdsReaddir(mds::Readdir),
    /// See [`Opcode::MdsGetattr`].
    MdsGetattr(mds::Getattr),
    /// See [`Opcode::MdsSetattr`].
    MdsSetattr(mds::Setattr),
    /// See [`Opcode::MdsRename`].
    MdsRename(mds::Rename),
    /// See [`Opcode::MdsUnlink`].
    MdsUnlink(mds::RemoveEntry),
    /// See [`Opcode::MdsRmdir`].
    MdsRmdir(mds::RemoveEntry),
    /// See [`Opcode::MdsSymlink`].
    MdsSymlink(mds::Symlink),
    /// See [`Opcode::MdsLink`].
    MdsLink(mds::Link),
    /// See [`Opcode::MdsStatfs`].
    MdsStatfs(mds::Statfs),
    /// See [`Opcode::MdsSetstripe`].
    MdsSetstripe(mds::Setstripe),
    /// See [`Opcode::MdsGetstripe`].
    MdsGetstripe(mds::FidOp),
    /// See [`Opcode::MdsReadlink`].
    MdsReadlink(mds::FidOp),
    /// See [`Opcode::MdsNull`].
    MdsNull(NullProbe),
    /// See [`Opcode::OstPrecreate`].
    OstPrecreate(ost::Precreate),
    /// See [`Opcode::OstWrite`].
    OstWrite(ost::ObjectIo),
    /// See [`Opcode::OstRead`].
    OstRead(ost::ObjectIo),
    /// See [`Opcode::OstPunch`].
    OstPunch(ost::Punch),
    /// See [`Opcode::OstDestroy`].
    OstDestroy(ost::ObjectOp),
    /// See [`Opcode::OstGetattr`].
    OstGetattr(ost::ObjectOp),
    /// See [`Opcode::OstStatfs`].
    OstStatfs(ost::Statfs),
    /// See [`Opcode::OstSync`].
    OstSync(ost::Sync),
    /// See [`Opcode::OstNull`].
    OstNull(NullProbe),
}

impl Request {
    /// Decodes and validates the body of a request frame with the protocol's default size limit.
    ///
    /// Fails on a reply or fabric frame, an unknown opcode, a malformed or oversized body, or any
    /// invalid field (named in the error). Never panics, whatever the bytes.
    pub fn decode(header: &FrameHeader, body: &[u8]) -> Result<Request, ProtocolError> {
        if header.flags & (FLAG_REPLY | FLAG_ERROR | FLAG_FABRIC) != 0 {
            return Err(ProtocolError::invalid(
                "frame.flags",
                format!("{:#x} is not a request", header.flags),
            ));
        }
        let op = Opcode::try_from(header.opcode)?;
        Ok(match op {
            Opcode::Handshake => {
                let h = handshake::Handshake::try_from(decode_body::<pb::HandshakeRequest>(op, body)?)?;
                if h.client_id != header.client_id {
                    return Err(ProtocolError::invalid(
                        "handshake.client_id",
                        format!(
                            "{} differs from the frame's client id {}",
                            h.client_id, header.client_id
                        ),
                    ));
                }
                Request::Handshake(h)
            }
            Opcode::MdsLookup => Request::MdsLookup(decode_body::<pb::MdsLookupRequest>(op, body)?.try_into()?),
            Opcode::MdsCreate => Request::MdsCreate(decode_body::<pb::MdsCreateRequest>(op, body)?.try_into()?),
            Opcode::MdsClose => Request::MdsClose(decode_body::<pb::MdsCloseRequest>(op, body)?.try_into()?),
            Opcode::MdsMkdir => Request::MdsMkdir(decode_body::<pb::MdsMkdirRequest>(op, body)?.try_into()?),
            Opcode::MdsReaddir => Request::MdsReaddir(decode_body::<pb::MdsReaddirRequest>(op, body)?.try_into()?),
            Opcode::MdsGetattr => Request::MdsGetattr(decode_body::<pb::MdsGetattrRequest>(op, body)?.try_into()?),
            Opcode::MdsSetattr => Request::MdsSetattr(decode_body::<pb::MdsSetattrRequest>(op, body)?.try_into()?),
            Opcode::MdsRename => Request::MdsRename(decode_body::<pb::MdsRenameRequest>(op, body)?.try_into()?),
            Opcode::MdsUnlink => Request::MdsUnlink(decode_body::<pb::MdsUnlinkRequest>(op, body)?.try_into()?),
            Opcode::MdsRmdir => Request::MdsRmdir(decode_body::<pb::MdsRmdirRequest>(op, body)?.try_into()?),
            Opcode::MdsSymlink => Request::MdsSymlink(decode_body::<pb::MdsSymlinkRequest>(op, body)?.try_into()?),
            Opcode::MdsLink => Request::MdsLink(decode_body::<pb::MdsLinkRequest>(op, body)?.try_into()?),
            Opcode::MdsStatfs => Request::MdsStatfs(decode_body::<pb::MdsStatfsRequest>(op, body)?.try_into()?),
            Opcode::MdsSetstripe => {
                Request::MdsSetstripe(decode_body::<pb::MdsSetstripeRequest>(op, body)?.try_into()?)
            }
            Opcode::MdsGetstripe => {
                Request::MdsGetstripe(decode_body::<pb::MdsGetstripeRequest>(op, body)?.try_into()?)
            }
            Opcode::MdsReadlink => Request::MdsReadlink(decode_body::<pb::MdsReadlinkRequest>(op, body)?.try_into()?),
            Opcode::MdsNull => Request::MdsNull(NullProbe {
                payload: decode_body::<pb::MdsNullRequest>(op, body)?.payload,
            }),
            Opcode::OstPrecreate => {
                Request::OstPrecreate(decode_body::<pb::OstPrecreateRequest>(op, body)?.try_into()?)
            }
            Opcode::OstWrite => Request::OstWrite(decode_body::<pb::OstWriteRequest>(op, body)?.try_into()?),
            Opcode::OstRead => Request::OstRead(decode_body::<pb::OstReadRequest>(op, body)?.try_into()?),
            Opcode::OstPunch => Request::OstPunch(decode_body::<pb::OstPunchRequest>(op, body)?.try_into()?),
            Opcode::OstDestroy => Request::OstDestroy(decode_body::<pb::OstDestroyRequest>(op, body)?.try_into()?),
            Opcode::OstGetattr => Request::OstGetattr(decode_body::<pb::OstGetattrRequest>(op, body)?.try_into()?),
            Opcode::OstStatfs => Request::OstStatfs(decode_body::<pb::OstStatfsRequest>(op, body)?.try_into()?),
            Opcode::OstSync => Request::OstSync(decode_body::<pb::OstSyncRequest>(op, body)?.try_into()?),
            Opcode::OstNull => Request::OstNull(NullProbe {
                payload: decode_body::<pb::OstNullRequest>(op, body)?.payload,
            }),
        })
    }

    /// The request's opcode.
    pub fn opcode(&self) -> Opcode {
        match self {
            Request::Handshake(_) => Opcode::Handshake,
            Request::MdsLookup(_) => Opcode::MdsLookup,
            Request::MdsCreate(_) => Opcode::MdsCreate,
            Request::MdsClose(_) => Opcode::MdsClose,
            Request::MdsMkdir(_) => Opcode::MdsMkdir,
            Request::MdsReaddir(_) => Opcode::MdsReaddir,
            Request::MdsGetattr(_) => Opcode::MdsGetattr,
            Request::MdsSetattr(_) => Opcode::MdsSetattr,
            Request::MdsRename(_) => Opcode::MdsRename,
            Request::MdsUnlink(_) => Opcode::MdsUnlink,
            Request::MdsRmdir(_) => Opcode::MdsRmdir,
            Request::MdsSymlink(_) => Opcode::MdsSymlink,
            Request::MdsLink(_) => Opcode::MdsLink,
            Request::MdsStatfs(_) => Opcode::MdsStatfs,
            Request::MdsSetstripe(_) => Opcode::MdsSetstripe,
            Request::MdsGetstripe(_) => Opcode::MdsGetstripe,
            Request::MdsReadlink(_) => Opcode::MdsReadlink,
            Request::MdsNull(_) => Opcode::MdsNull,
            Request::OstPrecreate(_) => Opcode::OstPrecreate,
            Request::OstWrite(_) => Opcode::OstWrite,
            Request::OstRead(_) => Opcode::OstRead,
            Request::OstPunch(_) => Opcode::OstPunch,
            Request::OstDestroy(_) => Opcode::OstDestroy,
            Request::OstGetattr(_) => Opcode::OstGetattr,
            Request::OstStatfs(_) => Opcode::OstStatfs,
            Request::OstSync(_) => Opcode::OstSync,
            Request::OstNull(_) => Opcode::OstNull,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_body;

    #[test]
    fn decodes_by_opcode_and_refuses_replies() {
        let body = encode_body(&pb::OstStatfsRequest { ost_index: 4 });
        let h = FrameHeader::request(Opcode::OstStatfs.as_u16(), 1, 9, body.len() as u32);
        let r = Request::decode(&h, &body).unwrap();
        assert_eq!(r.opcode(), Opcode::OstStatfs);
        let reply = h.reply_to(h.opcode, h.body_len, false);
        assert_eq!(Request::decode(&reply, &body).unwrap_err().field(), Some("frame.flags"));
        let unknown = FrameHeader::request(3, 1, 9, 0);
        assert_eq!(Request::decode(&unknown, &[]), Err(ProtocolError::UnknownOpcode(3)));
    }

    #[test]
    fn handshake_client_id_must_match_the_frame() {
        let hs = pb::HandshakeRequest {
            cluster_name: "lustre0".into(),
            protocol_version: u32::from(crate::frame::VERSION),
            client_id: 5,
            role: pb::PeerRole::Client as i32,
            ..Default::default()
        };
        let body = encode_body(&hs);
        let ok = FrameHeader::request(Opcode::Handshake.as_u16(), 1, 5, body.len() as u32);
        assert!(matches!(Request::decode(&ok, &body), Ok(Request::Handshake(_))));
        let bad = FrameHeader::request(Opcode::Handshake.as_u16(), 1, 6, body.len() as u32);
        assert_eq!(
            Request::decode(&bad, &body).unwrap_err().field(),
            Some("handshake.client_id")
        );
        let mut wrong = hs;
        wrong.protocol_version = 9;
        let body = encode_body(&wrong);
        assert!(matches!(
            Request::decode(&ok, &body),
            Err(ProtocolError::UnsupportedVersion { got: 9, .. })
        ));
    }

    #[test]
    fn an_empty_body_is_a_missing_field_not_a_panic() {
        for op in Opcode::ALL {
            let h = FrameHeader::request(op.as_u16(), 1, 0, 0);
            match Request::decode(&h, &[]) {
                // Their only required field is an index whose default (0) is valid.
                Ok(r) => assert!(
                    matches!(
                        r,
                        Request::MdsNull(_) | Request::OstNull(_) | Request::OstStatfs(_) | Request::OstSync(_)
                    ),
                    "{op}: {r:?}"
                ),
                Err(e) => assert!(
                    e.field().is_some() || matches!(e, ProtocolError::UnsupportedVersion { .. }),
                    "{op}: {e}"
                ),
            }
        }
    }
}

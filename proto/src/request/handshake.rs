//! The validated handshake request and reply.

use crate::frame::VERSION;
use crate::types::{OstIndex, StripeLayout};
use crate::{ProtocolError, pb};

/// Longest cluster (file system) name.
pub const MAX_CLUSTER_NAME: usize = 64;
/// Longest node name.
pub const MAX_NODE_NAME: usize = 255;
/// Longest job id (jobstats label).
pub const MAX_JOB_ID: usize = 64;
/// Longest authentication nonce or MAC.
pub const MAX_AUTH_LEN: usize = 64;
/// Most OSTs in a cluster map.
pub const MAX_MAP_OSTS: usize = 4096;
/// Most addresses of one server (primary and failover partners) or of the MDS.
pub const MAX_ADDRESSES: usize = 8;
/// Longest address string (`tcp://host:port` and the like).
pub const MAX_ADDRESS_LEN: usize = 256;

/// Role of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerRole {
    /// A client (library or mount).
    Client,
    /// The metadata server.
    Mds,
    /// An object storage server.
    Ost,
}

impl TryFrom<i32> for PeerRole {
    type Error = ProtocolError;

    fn try_from(v: i32) -> Result<Self, ProtocolError> {
        match pb::PeerRole::try_from(v) {
            Ok(pb::PeerRole::Client) => Ok(PeerRole::Client),
            Ok(pb::PeerRole::Mds) => Ok(PeerRole::Mds),
            Ok(pb::PeerRole::Ost) => Ok(PeerRole::Ost),
            Ok(pb::PeerRole::Unspecified) | Err(_) => Err(ProtocolError::invalid("role", format!("{v} is not a role"))),
        }
    }
}

impl From<PeerRole> for i32 {
    fn from(r: PeerRole) -> i32 {
        match r {
            PeerRole::Client => pb::PeerRole::Client as i32,
            PeerRole::Mds => pb::PeerRole::Mds as i32,
            PeerRole::Ost => pb::PeerRole::Ost as i32,
        }
    }
}

/// Checks a cluster name: 1..=64 bytes of `[A-Za-z0-9_.-]`.
pub fn check_cluster_name(name: &str) -> Result<(), ProtocolError> {
    if name.is_empty() || name.len() > MAX_CLUSTER_NAME {
        return Err(ProtocolError::invalid(
            "cluster_name",
            format!("{} bytes, not in 1..={MAX_CLUSTER_NAME}", name.len()),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(ProtocolError::invalid(
            "cluster_name",
            format!("character {c:?} is not allowed"),
        ));
    }
    Ok(())
}

fn check_version(v: u32) -> Result<(), ProtocolError> {
    if v != u32::from(VERSION) {
        return Err(ProtocolError::UnsupportedVersion {
            got: u16::try_from(v).unwrap_or(u16::MAX),
            supported: VERSION,
        });
    }
    Ok(())
}

fn check_auth(b: &[u8], field: &'static str) -> Result<(), ProtocolError> {
    if b.len() > MAX_AUTH_LEN {
        return Err(ProtocolError::invalid(
            field,
            format!("{} bytes, more than {MAX_AUTH_LEN}", b.len()),
        ));
    }
    Ok(())
}

fn check_addresses(a: &[String], field: &str) -> Result<(), ProtocolError> {
    if a.len() > MAX_ADDRESSES {
        return Err(ProtocolError::invalid(
            field.to_string(),
            format!("{} addresses, more than {MAX_ADDRESSES}", a.len()),
        ));
    }
    for (i, s) in a.iter().enumerate() {
        if s.is_empty() || s.len() > MAX_ADDRESS_LEN {
            return Err(ProtocolError::invalid(
                format!("{field}[{i}]"),
                format!("{} bytes, not in 1..={MAX_ADDRESS_LEN}", s.len()),
            ));
        }
    }
    Ok(())
}

/// A validated [`pb::HandshakeRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// File system the peer wants.
    pub cluster_name: String,
    /// Client id (equal to the frame header's).
    pub client_id: u64,
    /// Peer's node name (may be empty).
    pub node_name: String,
    /// Peer's role.
    pub role: PeerRole,
    /// Authentication challenge (empty when authentication is off).
    pub auth_nonce: Vec<u8>,
    /// Authentication proof (empty when authentication is off).
    pub auth_mac: Vec<u8>,
    /// Peer's clock for the proof.
    pub auth_time_unix_ms: u64,
    /// Job the client works for (may be empty).
    pub job_id: String,
}

/// Checks a job id: at most [`MAX_JOB_ID`] bytes of printable ASCII (no spaces or controls).
pub fn check_job_id(job_id: &str) -> Result<(), ProtocolError> {
    if job_id.len() > MAX_JOB_ID {
        return Err(ProtocolError::invalid(
            "job_id",
            format!("{} bytes, more than {MAX_JOB_ID}", job_id.len()),
        ));
    }
    if let Some(c) = job_id.bytes().find(|c| !c.is_ascii_graphic()) {
        return Err(ProtocolError::invalid(
            "job_id",
            format!("byte {c:#04x} is not printable ASCII"),
        ));
    }
    Ok(())
}

impl TryFrom<pb::HandshakeRequest> for Handshake {
    type Error = ProtocolError;

    fn try_from(p: pb::HandshakeRequest) -> Result<Self, ProtocolError> {
        (|| {
            check_version(p.protocol_version)?;
            check_cluster_name(&p.cluster_name)?;
            if p.node_name.len() > MAX_NODE_NAME {
                return Err(ProtocolError::invalid(
                    "node_name",
                    format!("{} bytes, more than {MAX_NODE_NAME}", p.node_name.len()),
                ));
            }
            check_auth(&p.auth_nonce, "auth_nonce")?;
            check_auth(&p.auth_mac, "auth_mac")?;
            check_job_id(&p.job_id)?;
            Ok(Handshake {
                cluster_name: p.cluster_name,
                client_id: p.client_id,
                node_name: p.node_name,
                role: PeerRole::try_from(p.role)?,
                auth_nonce: p.auth_nonce,
                auth_mac: p.auth_mac,
                auth_time_unix_ms: p.auth_time_unix_ms,
                job_id: p.job_id,
            })
        })()
        .map_err(|e| e.within("handshake"))
    }
}

/// One OST of the cluster map and its servers' addresses (primary first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OstTarget {
    /// OST index.
    pub index: OstIndex,
    /// Addresses of the servers that can serve it.
    pub addresses: Vec<String>,
}

/// A validated [`pb::HandshakeReply`]: what a client learns on connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeAccept {
    /// File system name.
    pub cluster_name: String,
    /// Server's id.
    pub server_id: u64,
    /// Server's role.
    pub role: PeerRole,
    /// Server's nonce.
    pub auth_nonce: Vec<u8>,
    /// Server's proof.
    pub auth_mac: Vec<u8>,
    /// Cluster map: OSTs by index, each index once.
    pub osts: Vec<OstTarget>,
    /// MDS addresses (active first).
    pub mds_addresses: Vec<String>,
    /// File system default layout, if the server sent one.
    pub default_layout: Option<StripeLayout>,
    /// Largest frame body the server accepts (0 = the protocol default).
    pub max_body: u32,
    /// Cluster map generation.
    pub map_generation: u64,
    /// OSTs served on this connection.
    pub served_osts: Vec<OstIndex>,
}

impl TryFrom<pb::HandshakeReply> for HandshakeAccept {
    type Error = ProtocolError;

    fn try_from(p: pb::HandshakeReply) -> Result<Self, ProtocolError> {
        (|| {
            check_version(p.protocol_version)?;
            check_cluster_name(&p.cluster_name)?;
            check_auth(&p.auth_nonce, "auth_nonce")?;
            check_auth(&p.auth_mac, "auth_mac")?;
            if p.osts.len() > MAX_MAP_OSTS {
                return Err(ProtocolError::invalid(
                    "osts",
                    format!("{} OSTs, more than {MAX_MAP_OSTS}", p.osts.len()),
                ));
            }
            let mut osts: Vec<OstTarget> = Vec::with_capacity(p.osts.len());
            for (i, t) in p.osts.into_iter().enumerate() {
                let field = format!("osts[{i}]");
                let index = OstIndex::try_from(t.index).map_err(|e| e.at(format!("{field}.index")))?;
                if osts.iter().any(|o| o.index == index) {
                    return Err(ProtocolError::invalid(
                        format!("{field}.index"),
                        format!("{index} listed twice"),
                    ));
                }
                check_addresses(&t.addresses, &format!("{field}.addresses"))?;
                osts.push(OstTarget {
                    index,
                    addresses: t.addresses,
                });
            }
            check_addresses(&p.mds_addresses, "mds_addresses")?;
            let default_layout = p
                .default_layout
                .map(|l| {
                    let l = StripeLayout::try_from(l).map_err(|e| e.within("default_layout"))?;
                    if !l.objects().is_empty() {
                        return Err(ProtocolError::invalid(
                            "default_layout.objects",
                            "a default names no objects",
                        ));
                    }
                    Ok(l)
                })
                .transpose()?;
            if p.served_osts.len() > MAX_MAP_OSTS {
                return Err(ProtocolError::invalid("served_osts", "too many OSTs"));
            }
            let served_osts = p
                .served_osts
                .iter()
                .map(|i| OstIndex::try_from(*i).map_err(|e| e.at("served_osts")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(HandshakeAccept {
                cluster_name: p.cluster_name,
                server_id: p.server_id,
                role: PeerRole::try_from(p.role)?,
                auth_nonce: p.auth_nonce,
                auth_mac: p.auth_mac,
                osts,
                mds_addresses: p.mds_addresses,
                default_layout,
                max_body: p.max_body,
                map_generation: p.map_generation,
                served_osts,
            })
        })()
        .map_err(|e| e.within("handshake_reply"))
    }
}

#[cfg(test)]
mod job_id_tests {
    use super::*;

    fn hello(job_id: &str) -> pb::HandshakeRequest {
        pb::HandshakeRequest {
            protocol_version: u32::from(VERSION),
            cluster_name: "fs".into(),
            role: pb::PeerRole::Client as i32,
            job_id: job_id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn job_ids_are_bounded_printable_ascii() {
        assert_eq!(Handshake::try_from(hello("")).unwrap().job_id, "");
        assert_eq!(Handshake::try_from(hello("slurm.1234")).unwrap().job_id, "slurm.1234");
        assert!(Handshake::try_from(hello(&"j".repeat(MAX_JOB_ID))).is_ok());
        let e = Handshake::try_from(hello(&"j".repeat(MAX_JOB_ID + 1))).unwrap_err();
        assert!(e.to_string().contains("job_id"), "{e}");
        for bad in ["a b", "a\nb", "a\u{7f}", "é"] {
            let e = Handshake::try_from(hello(bad)).unwrap_err();
            assert!(e.to_string().contains("job_id"), "{bad:?}: {e}");
        }
    }
}

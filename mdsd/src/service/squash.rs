//! Root squash (`mdsd serve --root-squash UID:GID`): requests that claim uid 0 are served as
//! UID:GID — for every permission check and as the owner of what they create — unless they come
//! from an exempt network (`--root-squash-exempt`, like Lustre's `nosquash_nids`). Off by default.

use crate::ns::Cred;
use std::net::IpAddr;

/// A network exempt from root squash: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    bits: u8,
}

impl Network {
    /// True if `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 peer reached over an IPv6 socket shows as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), self.bits),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), self.bits),
            _ => false,
        }
    }
}

fn prefix_eq(n: &[u8], a: &[u8], bits: u8) -> bool {
    let bits = usize::from(bits);
    let (whole, rest) = (bits / 8, bits % 8);
    if n[..whole] != a[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        n[whole] & mask == a[whole] & mask
    }
}

impl std::str::FromStr for Network {
    type Err = String;

    /// `IP` or `IP/BITS`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: expected IP or IP/BITS (e.g. 10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
        };
        Ok(Network { addr, bits })
    }
}

/// The root squash policy of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootSquash {
    /// The uid root is served as.
    pub uid: u32,
    /// The gid root is served as.
    pub gid: u32,
    /// Networks whose clients keep root.
    pub exempt: Vec<Network>,
}

impl std::str::FromStr for RootSquash {
    type Err = String;

    /// `UID:GID` (no exemptions; add them to [`RootSquash::exempt`]).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected UID:GID with numeric ids (e.g. 65534:65534)");
        let (u, g) = s.split_once(':').ok_or_else(bad)?;
        let uid = u.trim().parse().map_err(|_| bad())?;
        let gid = g.trim().parse().map_err(|_| bad())?;
        Ok(RootSquash {
            uid,
            gid,
            exempt: Vec::new(),
        })
    }
}

impl RootSquash {
    /// True if requests from `peer` (a fabric peer string such as `tcp://10.0.0.5:40000`) are
    /// squashed: every peer whose address is not inside an exempt network, including peers
    /// without an IP address (sim).
    pub fn applies_to(&self, peer: &str) -> bool {
        let Some(ip) = peer_ip(peer) else {
            return true;
        };
        !self.exempt.iter().any(|n| n.contains(ip))
    }

    /// The credentials a request is served with: uid 0 becomes `uid`, its gid `gid`, and its
    /// supplementary groups are dropped (they are root's).
    pub fn map(&self, cred: Cred) -> Cred {
        if cred.uid != 0 {
            return cred;
        }
        Cred {
            uid: self.uid,
            gid: self.gid,
            groups: Vec::new(),
        }
    }
}

/// The IP address in a peer string `scheme://IP:PORT` (or `IP:PORT`).
fn peer_ip(peer: &str) -> Option<IpAddr> {
    let rest = peer.split_once("://").map_or(peer, |(_, r)| r);
    let rest = rest.split_whitespace().next()?;
    if let Ok(sa) = rest.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    rest.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_maps() {
        let mut s: RootSquash = "65534:65533".parse().unwrap();
        assert_eq!((s.uid, s.gid), (65534, 65533));
        assert_eq!(s.map(Cred::root()), Cred::user(65534, 65533));
        let mut r = Cred::root();
        r.groups = vec![0, 10];
        assert_eq!(s.map(r).groups, Vec::<u32>::new());
        let u = Cred {
            uid: 1000,
            gid: 0,
            groups: vec![0],
        };
        assert_eq!(s.map(u.clone()), u, "only uid 0 is squashed");
        for bad in ["", "1", "a:b", "1:", ":2", "1:2:3", "-1:5", "4294967296:0"] {
            assert!(bad.parse::<RootSquash>().is_err(), "{bad:?}");
        }
        assert!(s.applies_to("tcp://10.1.2.3:999"));
        assert!(s.applies_to("sim://node"));
        s.exempt = vec!["10.1.0.0/16".parse().unwrap(), "fd00::1".parse().unwrap()];
        assert!(!s.applies_to("tcp://10.1.2.3:999"));
        assert!(!s.applies_to("verbs://10.1.255.1:7"));
        assert!(s.applies_to("tcp://10.2.2.3:999"));
        assert!(!s.applies_to("tcp://[fd00::1]:5"));
        assert!(s.applies_to("tcp://[fd00::2]:5"));
        assert!(!s.applies_to("tcp://[::ffff:10.1.0.9]:5"), "mapped IPv4");
        assert!(s.applies_to("sim://node"));
    }

    /// Root squash through the request handler: permission checks and ownership of created
    /// entries, exempt networks, ordinary users untouched, and off by default.
    #[test]
    fn handler_squashes_root() {
        use crate::service::{Handled, HandlerConfig, MdsCore, Request};
        use prost::Message;
        use rustre_proto::{Opcode, pb};
        let cfg = HandlerConfig {
            fsname: "sq".into(),
            osts: vec![],
            mds_addresses: vec![],
            reply_cache_per_client: 8,
            reply_cache_clients: 8,
            max_readdir: 64,
            inode_capacity: 1 << 16,
            server_id: 1,
            features: crate::service::FEATURES,
        };
        let mut core = MdsCore::from_snapshot(&MdsCore::initial_snapshot(0), cfg.clone()).unwrap();
        let mut xid = 0;
        let mut call = |core: &mut MdsCore, op: Opcode, body: Vec<u8>, peer: &str| {
            xid += 1;
            let r = Request {
                client: 7,
                xid,
                opcode: op.as_u16(),
                body,
            };
            match core.handle_from(&r, 1_000, peer) {
                Handled::Reply { error: false, body, .. } => Ok(body),
                Handled::Reply { error: true, body, .. } => Err(pb::ErrorReply::decode(&body[..]).unwrap().errno),
                Handled::NeedObjects => panic!("no objects needed"),
            }
        };
        let creds = |uid| {
            Some(pb::Credentials {
                uid,
                gid: uid,
                groups: vec![0],
            })
        };
        let root_dir = Some(pb::Fid { ino: 1, generation: 0 });
        let mkdir = |name: &str, uid| {
            pb::MdsMkdirRequest {
                creds: creds(uid),
                parent: root_dir,
                name: name.into(),
                walk: Vec::new(),
                mode: 0o755,
                default_layout: None,
            }
            .encode_to_vec()
        };
        let owner = |body: Vec<u8>| {
            let a = pb::MdsMkdirReply::decode(&body[..]).unwrap().attr.unwrap();
            (a.uid, a.gid)
        };
        let (remote, local) = ("tcp://10.0.0.1:4000", "tcp://192.168.7.7:4000");

        // Off (the default): root is root.
        assert_eq!(
            owner(call(&mut core, Opcode::MdsMkdir, mkdir("r0", 0), remote).unwrap()),
            (0, 0)
        );

        let mut squash: RootSquash = "65534:65533".parse().unwrap();
        squash.exempt = vec!["192.168.7.0/24".parse().unwrap()];
        core.root_squash = Some(squash);
        // Squashed root may not write into the root-owned 0755 root directory...
        assert_eq!(
            call(&mut core, Opcode::MdsMkdir, mkdir("r1", 0), remote),
            Err(libc::EACCES)
        );
        // ...while root from the exempt network may, and may open it up.
        assert_eq!(
            owner(call(&mut core, Opcode::MdsMkdir, mkdir("r2", 0), local).unwrap()),
            (0, 0)
        );
        let chmod = |uid, mode| {
            pb::MdsSetattrRequest {
                creds: creds(uid),
                fid: root_dir,
                mode: Some(mode),
                ..Default::default()
            }
            .encode_to_vec()
        };
        assert_eq!(
            call(&mut core, Opcode::MdsSetattr, chmod(0, 0o755), remote),
            Err(libc::EPERM)
        );
        call(&mut core, Opcode::MdsSetattr, chmod(0, 0o1777), local).unwrap();
        // What squashed root creates belongs to the squash ids.
        assert_eq!(
            owner(call(&mut core, Opcode::MdsMkdir, mkdir("s", 0), remote).unwrap()),
            (65534, 65533)
        );
        // Ordinary users are untouched.
        assert_eq!(
            owner(call(&mut core, Opcode::MdsMkdir, mkdir("u", 1000), remote).unwrap()),
            (1000, 1000)
        );
        // Squashed root cannot remove root's entry in the sticky directory, nor chown.
        let rmdir = pb::MdsRmdirRequest {
            creds: creds(0),
            parent: root_dir,
            name: b"r2".to_vec(),
            walk: Vec::new(),
        }
        .encode_to_vec();
        assert_eq!(
            call(&mut core, Opcode::MdsRmdir, rmdir.clone(), remote),
            Err(libc::EPERM)
        );
        // Without a peer (handle), squash applies.
        let r = Request {
            client: 7,
            xid: 1 << 40,
            opcode: Opcode::MdsRmdir.as_u16(),
            body: rmdir.clone(),
        };
        assert!(matches!(core.handle(&r, 1_000), Handled::Reply { error: true, .. }));
        call(&mut core, Opcode::MdsRmdir, rmdir, local).unwrap();
    }

    #[test]
    fn networks() {
        let n: Network = "192.168.1.128/25".parse().unwrap();
        assert!(n.contains("192.168.1.200".parse().unwrap()));
        assert!(!n.contains("192.168.1.127".parse().unwrap()));
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "x", "10.0.0.0/", "::/129", "10.0.0.0/-1"] {
            assert!(bad.parse::<Network>().is_err(), "{bad:?}");
        }
    }
}

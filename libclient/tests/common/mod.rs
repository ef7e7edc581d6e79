//! A whole rustre cluster in this process: one mdsd (MDT on a memory device) and N ostd (OSTs on
//! files in /dev/shm, real io_uring), on tcp (127.0.0.1, port 0) or sim addresses.

#![allow(dead_code, clippy::unwrap_used)]

use rustre::{Client, ClientConfig, ClientLimits, LayoutSpec, OpenFlags};
use rustre_fabric::Address;
use rustre_mdsd::dev::{FaultControl, FaultDevice};
use rustre_mdsd::mdt;
use rustre_mdsd::service::{HandlerConfig, MdsCore, ServeConfig as MdsServeConfig, Server as MdsServer};
use rustre_ostd::dev::{UringConfig, UringDevice};
use rustre_ostd::format::{MkfsOptions, mkfs};
use rustre_ostd::service::{ServeConfig as OstServeConfig, Server as OstServer};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub const FSNAME: &str = "clienttest";
static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Cluster {
    fabric: &'static str,
    tag: String,
    pub ost_files: Vec<tempfile::NamedTempFile>,
    osts: Vec<Option<OstServer>>,
    ost_addrs: Vec<Address>,
    mds: Option<MdsServer>,
    mdt: FaultControl,
    pub mds_addr: Address,
    /// What the MDS announces in its handshake.
    features: u32,
}

fn ost_config(path: &str, listen: Address) -> OstServeConfig {
    let mut c = OstServeConfig::new(path, listen);
    c.node = "test".into();
    c.workers = 2;
    c.pool_buffers = 8;
    c.queue = 32;
    c.mmp_interval = Duration::from_millis(20);
    c
}

fn handler(osts: &[(u32, Address)], features: u32) -> HandlerConfig {
    HandlerConfig {
        fsname: FSNAME.into(),
        osts: osts.iter().map(|(i, a)| (*i, a.to_string())).collect(),
        mds_addresses: vec![],
        reply_cache_per_client: 64,
        reply_cache_clients: 64,
        max_readdir: 1024,
        inode_capacity: 1 << 20,
        server_id: 1,
        features,
    }
}

fn mds_config() -> MdsServeConfig {
    MdsServeConfig {
        precreate_batch: 64,
        low_water: 16,
        ..MdsServeConfig::default()
    }
}

impl Cluster {
    /// Starts `n` OSTs of `ost_bytes` each and the MDS on `fabric` (`tcp` or `sim`).
    pub fn start(fabric: &'static str, n: u32, ost_bytes: u64) -> Cluster {
        Self::start_announcing(fabric, n, ost_bytes, rustre_mdsd::service::FEATURES)
    }

    /// [`Cluster::start`] with an MDS whose handshake announces only `features`.
    pub fn start_announcing(fabric: &'static str, n: u32, ost_bytes: u64, features: u32) -> Cluster {
        let tag = format!("c{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let mut ost_files = Vec::new();
        let mut osts = Vec::new();
        let mut ost_addrs = Vec::new();
        for i in 0..n {
            let f = tempfile::Builder::new()
                .prefix("rustre-client-ost-")
                .tempfile_in("/dev/shm")
                .unwrap();
            f.as_file().set_len(ost_bytes).unwrap();
            let path = f.path().to_str().unwrap().to_string();
            let dev = UringDevice::open(
                &path,
                &UringConfig {
                    rings: 1,
                    ..UringConfig::default()
                },
            )
            .unwrap();
            mkfs(&dev, &MkfsOptions::new(FSNAME, i)).unwrap();
            drop(dev);
            let listen = Self::listen_addr(fabric, &format!("{tag}-ost{i}"));
            let s = OstServer::start(ost_config(&path, listen)).unwrap();
            ost_addrs.push(s.local_addr().clone());
            osts.push(Some(s));
            ost_files.push(f);
        }
        let (mut dev, mdt) = FaultDevice::new(32 << 20, 1);
        mdt::mkfs(&mut dev, FSNAME, false, &MdsCore::initial_snapshot(0)).unwrap();
        let pairs: Vec<(u32, Address)> = ost_addrs
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, a)| (i as u32, a))
            .collect();
        let listen = Self::listen_addr(fabric, &format!("{tag}-mds"));
        let (mds, _) = MdsServer::start(
            dev,
            None,
            &listen,
            handler(&pairs, features),
            pairs.clone(),
            mds_config(),
        )
        .unwrap();
        let mds_addr = mds.local_addr().clone();
        Cluster {
            features,
            fabric,
            tag,
            ost_files,
            osts,
            ost_addrs,
            mds: Some(mds),
            mdt,
            mds_addr,
        }
    }

    fn listen_addr(fabric: &str, name: &str) -> Address {
        match fabric {
            "tcp" => "tcp://127.0.0.1:0".parse().unwrap(),
            "sim" => format!("sim://{name}").parse().unwrap(),
            other => panic!("fabric {other}"),
        }
    }

    pub fn config(&self) -> ClientConfig {
        ClientConfig {
            fsname: Some(FSNAME.into()),
            mds: vec![self.mds_addr.clone()],
            limits: ClientLimits {
                call_timeout_ms: 20_000,
                ..ClientLimits::default()
            },
            secret: None,
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.config()).unwrap()
    }

    /// Stops every server and starts them again on the same devices (same addresses on sim; the
    /// tcp ports change, so the MDS is told the new OST addresses).
    pub fn restart(&mut self) {
        self.mds.take().unwrap().stop().unwrap();
        for s in &mut self.osts {
            s.take().unwrap().shutdown().unwrap();
        }
        for (i, f) in self.ost_files.iter().enumerate() {
            let listen = if self.fabric == "sim" {
                self.ost_addrs[i].clone()
            } else {
                Self::listen_addr("tcp", "")
            };
            let s = OstServer::start(ost_config(f.path().to_str().unwrap(), listen)).unwrap();
            self.ost_addrs[i] = s.local_addr().clone();
            self.osts[i] = Some(s);
        }
        let (dev, mdt) = FaultDevice::from_image(self.mdt.image(), 2);
        self.mdt = mdt;
        let pairs: Vec<(u32, Address)> = self
            .ost_addrs
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, a)| (i as u32, a))
            .collect();
        let listen = if self.fabric == "sim" {
            self.mds_addr.clone()
        } else {
            Self::listen_addr("tcp", "")
        };
        let (mds, _) = MdsServer::start(
            dev,
            None,
            &listen,
            handler(&pairs, self.features),
            pairs.clone(),
            mds_config(),
        )
        .unwrap();
        self.mds_addr = mds.local_addr().clone();
        self.mds = Some(mds);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(m) = self.mds.take() {
            let _ = m.stop();
        }
        for s in &mut self.osts {
            if let Some(s) = s.take() {
                let _ = s.shutdown();
            }
        }
    }
}

/// Deterministic test bytes: a function of (seed, position).
pub fn pattern(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            let x = (offset + i).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed.wrapping_mul(0xD6E8_FEB8_6659_FD93);
            (x >> 29) as u8
        })
        .collect()
}

pub const RW_CREATE: OpenFlags = OpenFlags {
    read: true,
    write: true,
    create: true,
    excl: false,
    trunc: false,
    append: false,
};
pub const RW: OpenFlags = OpenFlags {
    read: true,
    write: true,
    create: false,
    excl: false,
    trunc: false,
    append: false,
};
pub const RO: OpenFlags = OpenFlags {
    read: true,
    write: false,
    create: false,
    excl: false,
    trunc: false,
    append: false,
};

pub fn layout(size_kib: u32, count: u32) -> LayoutSpec {
    LayoutSpec {
        stripe_size: size_kib * 1024,
        stripe_count: count,
        stripe_offset: -1,
    }
}

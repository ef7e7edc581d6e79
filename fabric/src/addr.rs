//! Fabric addresses: `verbs://host:port`, `tcp://host:port`, `sim://name`, `auto://host:port`.

use crate::FabricError;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// Where a peer listens; the scheme picks the provider.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// RDMA verbs, RC queue pairs set up by rdma_cm over IP.
    Verbs(SocketAddr),
    /// TCP sockets.
    Tcp(SocketAddr),
    /// The in-process simulator.
    Sim(String),
    /// Verbs when an RDMA device exists, else tcp.
    Auto(SocketAddr),
}

impl Address {
    /// The provider name: `verbs`, `tcp`, `sim` or `auto`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Address::Verbs(_) => "verbs",
            Address::Tcp(_) => "tcp",
            Address::Sim(_) => "sim",
            Address::Auto(_) => "auto",
        }
    }

    /// The same address with a different port (for sockets); sim names are unchanged.
    pub fn with_port(&self, port: u16) -> Address {
        let set = |mut sa: SocketAddr| {
            sa.set_port(port);
            sa
        };
        match self {
            Address::Verbs(sa) => Address::Verbs(set(*sa)),
            Address::Tcp(sa) => Address::Tcp(set(*sa)),
            Address::Auto(sa) => Address::Auto(set(*sa)),
            Address::Sim(n) => Address::Sim(n.clone()),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Verbs(sa) => write!(f, "verbs://{sa}"),
            Address::Tcp(sa) => write!(f, "tcp://{sa}"),
            Address::Sim(n) => write!(f, "sim://{n}"),
            Address::Auto(sa) => write!(f, "auto://{sa}"),
        }
    }
}

fn resolve(s: &str, whole: &str) -> Result<SocketAddr, FabricError> {
    let mut addrs = s.to_socket_addrs().map_err(|e| FabricError::BadAddress {
        addr: whole.to_string(),
        reason: e.to_string(),
    })?;
    addrs.next().ok_or_else(|| FabricError::BadAddress {
        addr: whole.to_string(),
        reason: "resolves to nothing".into(),
    })
}

impl FromStr for Address {
    type Err = FabricError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = s.split_once("://").ok_or_else(|| FabricError::BadAddress {
            addr: s.to_string(),
            reason: "expected SCHEME://… with scheme verbs, tcp, sim or auto".into(),
        })?;
        match scheme {
            "tcp" => Ok(Address::Tcp(resolve(rest, s)?)),
            "verbs" => Ok(Address::Verbs(resolve(rest, s)?)),
            "auto" => Ok(Address::Auto(resolve(rest, s)?)),
            "sim" if !rest.is_empty() && rest.len() <= 255 => Ok(Address::Sim(rest.to_string())),
            "sim" => Err(FabricError::BadAddress {
                addr: s.to_string(),
                reason: "sim name must be 1..=255 bytes".into(),
            }),
            other => Err(FabricError::BadAddress {
                addr: s.to_string(),
                reason: format!("unknown scheme {other:?}; use verbs, tcp, sim or auto"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        assert_eq!("tcp://127.0.0.1:9000".parse::<Address>().unwrap().scheme(), "tcp");
        assert_eq!("verbs://127.0.0.1:9000".parse::<Address>().unwrap().scheme(), "verbs");
        assert_eq!("auto://127.0.0.1:0".parse::<Address>().unwrap().scheme(), "auto");
        assert_eq!("sim://mds0".parse::<Address>().unwrap(), Address::Sim("mds0".into()));
        assert_eq!(
            "tcp://127.0.0.1:9000".parse::<Address>().unwrap().to_string(),
            "tcp://127.0.0.1:9000"
        );
    }

    #[test]
    fn bad_addresses_say_why() {
        let e = "udp://1.2.3.4:5".parse::<Address>().unwrap_err().to_string();
        assert!(e.contains("unknown scheme"), "{e}");
        assert!("127.0.0.1:5".parse::<Address>().is_err());
        assert!("sim://".parse::<Address>().is_err());
        assert!("tcp://nonsense".parse::<Address>().is_err());
    }
}

//! Choosing the ports the daemons listen on.

use crate::error::CliError;
use std::net::{IpAddr, SocketAddr, TcpListener};

/// Picks one port per daemon in `names` on `host`.
///
/// With `base`, the ports are `base`, `base + 1`, … and each must be free. Otherwise the `previous`
/// ports (from an earlier `up` of the same data directory) are kept when all are still free, so
/// the client configuration stays the same across restarts; failing that, the kernel hands out
/// free ports (bind to port 0). All probe sockets stay open until every port is chosen, so no two
/// daemons get the same one. A port can still be taken by someone else between the probe and
/// the daemon's own bind; the daemon then fails to start and `up` reports its log.
pub fn pick_ports(
    host: IpAddr,
    names: &[String],
    base: Option<u16>,
    previous: Option<&[u16]>,
) -> Result<Vec<u16>, CliError> {
    if let Some(base) = base {
        let mut held = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let port = u16::try_from(u32::from(base) + i as u32).map_err(|_| CliError::PortInUse {
                host: host.to_string(),
                port: u16::MAX,
                daemon: name.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "port number above 65535"),
            })?;
            let sock = TcpListener::bind(SocketAddr::new(host, port)).map_err(|source| CliError::PortInUse {
                host: host.to_string(),
                port,
                daemon: name.clone(),
                source,
            })?;
            held.push(sock);
        }
        return Ok((0..names.len()).map(|i| base + i as u16).collect());
    }
    if let Some(prev) = previous.filter(|p| p.len() == names.len() && p.iter().all(|&p| p != 0)) {
        let held: Result<Vec<TcpListener>, _> = prev
            .iter()
            .map(|&p| TcpListener::bind(SocketAddr::new(host, p)))
            .collect();
        if held.is_ok() {
            return Ok(prev.to_vec());
        }
    }
    let mut held = Vec::with_capacity(names.len());
    let mut ports = Vec::with_capacity(names.len());
    for _ in names {
        let sock = TcpListener::bind(SocketAddr::new(host, 0)).map_err(|source| CliError::NoFreePort {
            host: host.to_string(),
            source,
        })?;
        let port = sock
            .local_addr()
            .map_err(|source| CliError::NoFreePort {
                host: host.to_string(),
                source,
            })?
            .port();
        ports.push(port);
        held.push(sock);
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("d{i}")).collect()
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = pick_ports(LOCAL, &names(5), None, None).unwrap();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 5);
    }

    #[test]
    fn base_port_in_use_is_named() {
        let taken = TcpListener::bind((LOCAL, 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = pick_ports(LOCAL, &names(2), Some(port), None).unwrap_err().to_string();
        assert!(
            err.contains(&port.to_string()) && err.contains("d0") && err.contains("--base-port"),
            "{err}"
        );
    }

    #[test]
    fn previous_ports_kept_when_free_else_replaced() {
        let first = pick_ports(LOCAL, &names(3), None, None).unwrap();
        assert_eq!(pick_ports(LOCAL, &names(3), None, Some(&first)).unwrap(), first);
        let _taken = TcpListener::bind((LOCAL, first[1])).unwrap();
        let again = pick_ports(LOCAL, &names(3), None, Some(&first)).unwrap();
        assert_ne!(again, first);
        assert!(!again.contains(&first[1]));
    }
}

//! Peer addresses: a socket address, optionally pinned to the identity expected there.

use core::fmt;
use core::str::FromStr;
use std::net::{IpAddr, SocketAddr};

use crate::identity::{PeerId, PeerIdParseError};

/// Where to reach a peer, and optionally who must answer there.
///
/// Text form: `host:port`, `[v6]:port`, or `<peer-id>@host:port`. With a pinned id the
/// handshake fails with an identity mismatch unless the remote static key is that id. The core
/// does not resolve host names (that is IO): hosts are IP literals.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerAddr {
    /// The identity expected at this address, if pinned.
    pub peer_id: Option<PeerId>,
    /// The TCP address.
    pub socket: SocketAddr,
}

impl PeerAddr {
    /// An unpinned address.
    pub fn new(socket: SocketAddr) -> Self {
        PeerAddr {
            peer_id: None,
            socket,
        }
    }

    /// An address pinned to `peer_id`.
    pub fn pinned(peer_id: PeerId, socket: SocketAddr) -> Self {
        PeerAddr {
            peer_id: Some(peer_id),
            socket,
        }
    }

    /// The IP address.
    pub fn ip(&self) -> IpAddr {
        self.socket.ip()
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(socket: SocketAddr) -> Self {
        PeerAddr::new(socket)
    }
}

/// Why a string is not a valid [`PeerAddr`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerAddrParseError {
    /// The part before `@` is not a peer id.
    #[error("invalid peer id before '@': {0}")]
    PeerId(#[from] PeerIdParseError),
    /// The address part is not `ip:port` or `[ipv6]:port`.
    #[error("invalid socket address {0:?} (expected ip:port or [ipv6]:port; host names are not resolved here)")]
    Socket(String),
}

impl FromStr for PeerAddr {
    type Err = PeerAddrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (peer_id, rest) = match s.split_once('@') {
            Some((id, rest)) => (Some(id.parse::<PeerId>()?), rest),
            None => (None, s),
        };
        let socket = rest
            .parse::<SocketAddr>()
            .map_err(|_| PeerAddrParseError::Socket(rest.to_string()))?;
        Ok(PeerAddr { peer_id, socket })
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.peer_id {
            Some(id) => write!(f, "{id}@{}", self.socket),
            None => write!(f, "{}", self.socket),
        }
    }
}

impl fmt::Debug for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.peer_id {
            Some(id) => write!(f, "{}@{}", id.short(), self.socket),
            None => write!(f, "{}", self.socket),
        }
    }
}

impl serde::Serialize for PeerAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PeerAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_pinned_and_ipv6() {
        let a: PeerAddr = "127.0.0.1:9000".parse().unwrap();
        assert_eq!(a.peer_id, None);
        assert_eq!(a.socket.port(), 9000);
        let id = "ab".repeat(32);
        let b: PeerAddr = format!("{id}@[::1]:7").parse().unwrap();
        assert_eq!(b.peer_id.unwrap().to_string(), id);
        assert!(b.socket.is_ipv6());
        assert_eq!(b.to_string().parse::<PeerAddr>().unwrap(), b);
    }

    #[test]
    fn rejects_bad_addresses_with_reasons() {
        assert!(matches!(
            "localhost:80".parse::<PeerAddr>(),
            Err(PeerAddrParseError::Socket(_))
        ));
        assert!(matches!(
            "xyz@127.0.0.1:80".parse::<PeerAddr>(),
            Err(PeerAddrParseError::PeerId(_))
        ));
    }
}

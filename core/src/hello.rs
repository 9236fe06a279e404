//! The Hello each side sends inside the handshake (responder in message 2, initiator in
//! message 3), and protocol version negotiation.

use bytes::Bytes;

use crate::addr::PeerAddr;
use crate::cbor::{self, Reader};
use crate::message::{encoded_addr_len, read_addr, write_addr, DecodeError};

/// Longest network id.
pub const MAX_NETWORK_ID_LEN: usize = 64;
/// Longest agent string.
pub const MAX_AGENT_LEN: usize = 64;
/// Most protocol versions one Hello may list.
pub const MAX_VERSIONS: usize = 16;
/// Most listen addresses one Hello may list.
pub const MAX_LISTEN_ADDRS: usize = 16;

/// Feature bits a node advertises. Unknown bits are kept and ignored.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct Capabilities(pub u64);

impl Capabilities {
    /// Relays gossip (transactions, blocks, application broadcasts).
    pub const GOSSIP: Capabilities = Capabilities(1);
    /// Answers GetBlock.
    pub const SERVE_BLOCKS: Capabilities = Capabilities(1 << 1);
    /// Answers GetTransaction.
    pub const SERVE_TRANSACTIONS: Capabilities = Capabilities(1 << 2);
    /// Answers GetPeers.
    pub const PEER_EXCHANGE: Capabilities = Capabilities(1 << 3);
    /// Understands lazy gossip: IHave, IWant and Prune (tree gossip).
    pub const LAZY_GOSSIP: Capabilities = Capabilities(1 << 4);
    /// Asks for AES-256-GCM as the transport cipher (a node sets it when its `cipher`
    /// setting comes to `aes-256-gcm`: by default, where its CPU has AES instructions). A
    /// connection uses AES-256-GCM when both Hellos carry this bit and the negotiated
    /// version is at least [`AES_GCM_SINCE_VERSION`], ChaCha20-Poly1305 otherwise: see
    /// [`crate::handshake::TransportSuite::negotiate`].
    pub const AES_GCM: Capabilities = Capabilities(1 << 5);
    /// Everything this version knows, [`Capabilities::AES_GCM`] included: a Hello built with
    /// it outside [`crate::node::Node`] (which sets that bit from its `cipher` setting) asks
    /// for AES-256-GCM.
    pub const ALL: Capabilities = Capabilities(0b11_1111);

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    /// These bits with every bit of `other` cleared.
    pub fn without(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 & !other.0)
    }
}

impl core::ops::BitOr for Capabilities {
    type Output = Capabilities;
    fn bitor(self, rhs: Self) -> Self {
        Capabilities(self.0 | rhs.0)
    }
}

/// What a node says about itself during the handshake.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hello {
    /// Nodes on different networks never talk (compared byte for byte).
    pub network_id: String,
    /// Protocol versions the node speaks; the highest common one is used.
    pub versions: Vec<u32>,
    /// Feature bits.
    pub capabilities: Capabilities,
    /// Addresses on which the node accepts connections (without peer ids: the handshake
    /// already authenticated who sent them).
    pub listen_addrs: Vec<std::net::SocketAddr>,
    /// Free-form software name and version.
    pub agent: String,
}

/// The newest protocol version this software speaks.
pub const PROTOCOL_VERSION: u32 = 2;

/// Every protocol version this software speaks, and so what a node lists in its Hello.
/// Version 2 differs from version 1 only in giving [`Capabilities::AES_GCM`] a meaning.
pub const SUPPORTED_VERSIONS: &[u32] = &[1, 2];

/// The first version in which [`Capabilities::AES_GCM`] selects the transport cipher. In
/// version 1 the bit was undefined, so a version-1 peer might set it without speaking
/// AES-256-GCM; a connection that negotiates version 1 ignores it.
pub const AES_GCM_SINCE_VERSION: u32 = 2;

impl Hello {
    /// Checks the limits a receiver enforces; returns the offending field.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.network_id.len() > MAX_NETWORK_ID_LEN {
            return Err("network_id");
        }
        if self.versions.is_empty() || self.versions.len() > MAX_VERSIONS {
            return Err("versions");
        }
        if self.listen_addrs.len() > MAX_LISTEN_ADDRS {
            return Err("listen_addrs");
        }
        if self.agent.len() > MAX_AGENT_LEN {
            return Err("agent");
        }
        Ok(())
    }

    /// The CBOR encoding: `[network_id, [versions…], capabilities, [addresses…], agent]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        cbor::put_array(&mut out, 5);
        cbor::put_text(&mut out, &self.network_id);
        cbor::put_array(&mut out, self.versions.len());
        for v in &self.versions {
            cbor::put_uint(&mut out, u64::from(*v));
        }
        cbor::put_uint(&mut out, self.capabilities.0);
        cbor::put_array(&mut out, self.listen_addrs.len());
        for a in &self.listen_addrs {
            write_addr(&mut out, &PeerAddr::new(*a));
        }
        cbor::put_text(&mut out, &self.agent);
        out
    }

    /// Length of [`Hello::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        1 + cbor::string_len(self.network_id.len())
            + cbor::head_len(self.versions.len() as u64)
            + self
                .versions
                .iter()
                .map(|v| cbor::head_len(u64::from(*v)))
                .sum::<usize>()
            + cbor::head_len(self.capabilities.0)
            + cbor::head_len(self.listen_addrs.len() as u64)
            + self
                .listen_addrs
                .iter()
                .map(|a| encoded_addr_len(&PeerAddr::new(*a)))
                .sum::<usize>()
            + cbor::string_len(self.agent.len())
    }

    /// Decodes a Hello occupying all of `payload`, enforcing every limit.
    pub fn decode(payload: &[u8]) -> Result<Hello, DecodeError> {
        let buf = Bytes::copy_from_slice(payload);
        let mut r = Reader::new(&buf);
        if r.array()? != 5 {
            return Err(DecodeError::OutOfRange { field: "hello" });
        }
        let network_id = r.text()?;
        if network_id.len() > MAX_NETWORK_ID_LEN {
            return Err(DecodeError::OutOfRange {
                field: "network_id",
            });
        }
        let n = r.array()?;
        if n == 0 || n > MAX_VERSIONS {
            return Err(DecodeError::OutOfRange { field: "versions" });
        }
        let mut versions = Vec::with_capacity(n);
        for _ in 0..n {
            versions.push(
                u32::try_from(r.uint()?)
                    .map_err(|_| DecodeError::OutOfRange { field: "versions" })?,
            );
        }
        let capabilities = Capabilities(r.uint()?);
        let n = r.array()?;
        if n > MAX_LISTEN_ADDRS {
            return Err(DecodeError::OutOfRange {
                field: "listen_addrs",
            });
        }
        let mut listen_addrs = Vec::with_capacity(n);
        for _ in 0..n {
            let a = read_addr(&mut r)?;
            if a.peer_id.is_some() {
                return Err(DecodeError::OutOfRange {
                    field: "listen_addrs",
                });
            }
            listen_addrs.push(a.socket);
        }
        let agent = r.text()?;
        if agent.len() > MAX_AGENT_LEN {
            return Err(DecodeError::OutOfRange { field: "agent" });
        }
        if !r.is_empty() {
            return Err(DecodeError::TrailingBytes(r.remaining()));
        }
        Ok(Hello {
            network_id: network_id.to_string(),
            versions,
            capabilities,
            listen_addrs,
            agent: agent.to_string(),
        })
    }
}

/// The highest version both lists contain, if any.
pub fn negotiate_version(ours: &[u32], theirs: &[u32]) -> Option<u32> {
    ours.iter().filter(|v| theirs.contains(v)).max().copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Hello {
        Hello {
            network_id: "silver-mainnet".into(),
            versions: vec![1, 2],
            capabilities: Capabilities::ALL,
            listen_addrs: vec![
                "127.0.0.1:9000".parse().unwrap(),
                "[::1]:9000".parse().unwrap(),
            ],
            agent: "silver-p2p/0.1.0".into(),
        }
    }

    #[test]
    fn round_trips_and_knows_its_length() {
        let h = sample();
        let b = h.encode();
        assert_eq!(b.len(), h.encoded_len());
        assert_eq!(Hello::decode(&b).unwrap(), h);
    }

    #[test]
    fn limits_are_enforced_on_decode() {
        let mut h = sample();
        h.agent = "x".repeat(65);
        assert_eq!(
            Hello::decode(&h.encode()),
            Err(DecodeError::OutOfRange { field: "agent" })
        );
        let mut h = sample();
        h.versions.clear();
        assert_eq!(
            Hello::decode(&h.encode()),
            Err(DecodeError::OutOfRange { field: "versions" })
        );
    }

    #[test]
    fn highest_common_version_wins() {
        assert_eq!(negotiate_version(&[1, 2, 3], &[2, 3, 4]), Some(3));
        assert_eq!(negotiate_version(&[1], &[2]), None);
    }

    proptest! {
        #[test]
        fn arbitrary_payloads_never_panic(b in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = Hello::decode(&b);
        }
    }
}

//! Node identity: a static X25519 key pair (the Noise static key) and the printable
//! [`PeerId`] derived from its public half.

use core::fmt;
use core::str::FromStr;

use crate::rng::SeededRng;

/// Length in bytes of a public key, a private key and a peer id.
pub const KEY_LEN: usize = 32;

/// The identity of a node: its static X25519 public key.
///
/// Printed as 64 lowercase hex characters (parsed in either case), the form used in pinned addresses
/// (`<peer-id>@host:port`). Two nodes have the same `PeerId` exactly when they hold the same
/// static key, so a pinned id authenticates the peer through the Noise handshake.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerId([u8; KEY_LEN]);

/// Orders 32-byte keys (peer ids, message ids) lexicographically, as the derived order
/// would, but a word at a time: the derived order calls `memcmp` for every comparison, a
/// measurable share of the time a node spends in its maps keyed by these ids (the first
/// word nearly always decides).
pub(crate) fn cmp_key(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> core::cmp::Ordering {
    let word = |k: &[u8; KEY_LEN], i: usize| {
        u64::from_be_bytes(k[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
    };
    (0..KEY_LEN / 8)
        .map(|i| word(a, i).cmp(&word(b, i)))
        .find(|o| o.is_ne())
        .unwrap_or(core::cmp::Ordering::Equal)
}

impl Ord for PeerId {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        cmp_key(&self.0, &other.0)
    }
}

impl PartialOrd for PeerId {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PeerId {
    /// The peer id of the given static public key.
    pub const fn from_public_key(key: [u8; KEY_LEN]) -> Self {
        PeerId(key)
    }

    /// The static public key behind this id.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The id from its raw bytes, if `bytes` has the right length.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; KEY_LEN]>::try_from(bytes).ok().map(PeerId)
    }

    /// A short form (first 8 hex characters) for logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.short())
    }
}

/// Why a string is not a valid [`PeerId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerIdParseError {
    /// The string is not 64 characters long.
    #[error("a peer id is 64 hex characters, got {0}")]
    Length(usize),
    /// The string holds a character that is not a hex digit.
    #[error("a peer id is hex, got a non-hex character")]
    NotHex,
}

impl FromStr for PeerId {
    type Err = PeerIdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != KEY_LEN * 2 {
            return Err(PeerIdParseError::Length(s.len()));
        }
        let mut out = [0u8; KEY_LEN];
        hex::decode_to_slice(s, &mut out).map_err(|_| PeerIdParseError::NotHex)?;
        Ok(PeerId(out))
    }
}

impl serde::Serialize for PeerId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PeerId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A node's static key pair. The private half never leaves this type except through
/// [`Keypair::private_key`], which adapters call to persist it.
#[derive(Clone)]
pub struct Keypair {
    private: [u8; KEY_LEN],
    public: [u8; KEY_LEN],
}

impl Keypair {
    /// A new key pair drawn from `rng`. Adapters pass a generator seeded from OS entropy;
    /// a fixed seed gives a fixed key, which is only right in tests and simulations.
    pub fn generate(rng: &mut SeededRng) -> Self {
        let mut private = [0u8; KEY_LEN];
        rng.fill_bytes(&mut private);
        Self::from_private_key(private)
    }

    /// The key pair whose private key is `private` (for example, loaded from a key file).
    /// Any 32 bytes are a valid X25519 private key (clamping is part of the function).
    pub fn from_private_key(private: [u8; KEY_LEN]) -> Self {
        let public = crate::x25519::public_key(&private);
        Keypair { private, public }
    }

    /// The private key, for persisting to a key file. Treat it as a secret.
    pub fn private_key(&self) -> &[u8; KEY_LEN] {
        &self.private
    }

    /// The public key (the Noise static key peers see).
    pub fn public_key(&self) -> &[u8; KEY_LEN] {
        &self.public
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        PeerId(self.public)
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the private key.
        f.debug_struct("Keypair")
            .field("peer_id", &self.peer_id())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Maps keyed by ids iterate in byte order, as before the word-wise comparison:
        /// the two orders agree on any pair, including pairs equal up to any byte.
        #[test]
        fn key_order_is_byte_order(
            a in proptest::array::uniform32(proptest::num::u8::ANY),
            b in proptest::array::uniform32(proptest::num::u8::ANY),
            shared in 0usize..=KEY_LEN,
        ) {
            let mut b = b;
            b[..shared].copy_from_slice(&a[..shared]);
            proptest::prop_assert_eq!(cmp_key(&a, &b), a.cmp(&b));
            proptest::prop_assert_eq!(PeerId(a).cmp(&PeerId(b)), a.cmp(&b));
            proptest::prop_assert_eq!(
                crate::node::MessageId(a).cmp(&crate::node::MessageId(b)),
                a.cmp(&b)
            );
        }
    }

    #[test]
    fn peer_id_round_trips_through_text() {
        let kp = Keypair::generate(&mut SeededRng::from_seed([3; 32]));
        let text = kp.peer_id().to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<PeerId>().unwrap(), kp.peer_id());
        assert_eq!("abc".parse::<PeerId>(), Err(PeerIdParseError::Length(3)));
        assert_eq!(
            "zz".repeat(32).parse::<PeerId>(),
            Err(PeerIdParseError::NotHex)
        );
    }

    #[test]
    fn public_key_is_derived_from_private_key() {
        let a = Keypair::generate(&mut SeededRng::from_seed([3; 32]));
        let b = Keypair::from_private_key(*a.private_key());
        assert_eq!(a.public_key(), b.public_key());
        let c = Keypair::generate(&mut SeededRng::from_seed([4; 32]));
        assert_ne!(a.peer_id(), c.peer_id());
        assert!(!format!("{a:?}").contains(&hex::encode(a.private_key())));
    }
}

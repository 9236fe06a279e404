//! The Noise handshake, `Noise_XX_25519_ChaChaPoly_BLAKE2s` with prologue `silver-p2p/1`.
//!
//! This module only wraps snow: it builds the handshake state from our key and a seeded
//! resolver, and turns snow's errors into ours. The connection drives the message sequence
//! (message 1 empty; message 2 carries the responder's Hello; message 3 the initiator's).

use crate::identity::{Keypair, PeerId, KEY_LEN};
use crate::rng::{SeededResolver, SeededRng};

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// The Noise prologue: both sides must use the same bytes or the handshake fails.
pub const PROLOGUE: &[u8] = b"silver-p2p/1";
/// Bytes the AEAD tag adds to every encrypted payload.
pub const TAG_LEN: usize = 16;
/// Largest Noise message (and so the largest packet body).
pub const MAX_NOISE_MESSAGE: usize = 65535;
/// Largest plaintext of one transport message.
pub const MAX_FRAME_PLAINTEXT: usize = MAX_NOISE_MESSAGE - TAG_LEN;
/// Bytes handshake message 2 adds around its payload (ephemeral key, encrypted static key
/// with its tag, payload tag); message 3 adds 64, message 1 is 32 bytes.
pub const HANDSHAKE_OVERHEAD: usize = 32 + 32 + TAG_LEN + TAG_LEN;

/// Which side of the handshake we are. The dialer is always the initiator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// We dialed.
    Initiator,
    /// We accepted.
    Responder,
}

/// A failure inside Noise: the peer sent bytes that do not authenticate, or is not speaking
/// this protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("noise: {0}")]
pub struct NoiseError(pub String);

impl From<snow::Error> for NoiseError {
    fn from(e: snow::Error) -> Self {
        NoiseError(e.to_string())
    }
}

fn params() -> snow::params::NoiseParams {
    NOISE_PARAMS
        .parse()
        .expect("the constant protocol name is valid")
}

/// Starts a handshake in `role` with our static key, drawing ephemeral keys from `rng`.
pub(crate) fn start(
    role: Role,
    keypair: &Keypair,
    rng: SeededRng,
) -> Result<snow::HandshakeState, NoiseError> {
    let builder = snow::Builder::with_resolver(params(), Box::new(SeededResolver::new(rng)))
        .prologue(PROLOGUE)?
        .local_private_key(keypair.private_key())?;
    Ok(match role {
        Role::Initiator => builder.build_initiator()?,
        Role::Responder => builder.build_responder()?,
    })
}

/// The remote static key, once the handshake message carrying it was read.
pub(crate) fn remote_peer_id(state: &snow::HandshakeState) -> Option<PeerId> {
    state
        .get_remote_static()
        .and_then(|k| <[u8; KEY_LEN]>::try_from(k).ok())
        .map(PeerId::from_public_key)
}

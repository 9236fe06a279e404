//! The Noise handshake, `Noise_XX_25519_ChaChaPoly_BLAKE2s` with prologue `silver-p2p/1`.
//!
//! This module wraps snow: it builds the handshake state from our key and a seeded
//! resolver, and turns snow's errors into ours. The connection drives the message sequence
//! (message 1 empty; message 2 carries the responder's Hello; message 3 the initiator's).
//! After the handshake, [`TransportCipher`] takes the keys of Noise's `Split()` and seals
//! and opens transport messages in place (the same nonces and empty associated data as
//! snow's transport mode, without its copies), with the AEAD both Hellos agreed on
//! ([`TransportSuite`]): ChaCha20-Poly1305, or AES-256-GCM when both sides prefer it.

use crate::hello::{negotiate_version, Capabilities, Hello, AES_GCM_SINCE_VERSION};
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

/// The cryptography behind every handshake and transport cipher of the node, for snow:
/// ring's ChaCha20-Poly1305, the X25519 of `x25519` (aws-lc's with the default `aws-lc`
/// feature, which refuses small-order keys either way), and ephemeral keys
/// drawn from `rng` rather than the OS. Call it to run a bare snow handshake that matches
/// the node's byte for byte and costs what the node's costs (the benchmarks' connect
/// floor does); a node never needs it.
pub fn noise_resolver(rng: SeededRng) -> Box<dyn snow::resolvers::CryptoResolver + Send> {
    Box::new(SeededResolver::new(rng))
}

/// Starts a handshake in `role` with our static key, drawing ephemeral keys from `rng`.
pub(crate) fn start(
    role: Role,
    keypair: &Keypair,
    rng: SeededRng,
) -> Result<snow::HandshakeState, NoiseError> {
    let builder = snow::Builder::with_resolver(params(), noise_resolver(rng))
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

/// The AEAD that protects a connection's transport packets once the handshake is done.
///
/// The handshake itself always runs `Noise_XX_25519_ChaChaPoly_BLAKE2s`; the transport
/// suite is agreed inside it, from the capabilities of the two (authenticated) Hellos, and
/// keyed with the two keys of Noise's `Split()`. Both suites are Noise cipher functions used
/// exactly as Noise's transport `CipherState` uses them (the nonce layouts differ, see
/// PROTOCOL.md section 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum TransportSuite {
    /// ChaCha20-Poly1305: every implementation's suite, fast on any CPU.
    #[serde(rename = "chacha20-poly1305")]
    ChaCha20Poly1305,
    /// AES-256-GCM: about three times ChaCha20-Poly1305's speed where the CPU has AES and
    /// carry-less multiply instructions, and much slower where it has not, so a connection
    /// uses it only when both sides ask for it.
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
}

impl TransportSuite {
    /// The suite for a connection between the senders of Hellos `ours` and `theirs`:
    /// AES-256-GCM when both carry [`Capabilities::AES_GCM`] and the version they share gives
    /// the bit its meaning (at least [`AES_GCM_SINCE_VERSION`]), ChaCha20-Poly1305 otherwise
    /// (with no shared version too: the connection then closes, in ChaCha20-Poly1305). Both
    /// sides compute the same answer from the same two authenticated Hellos; a peer that
    /// knows nothing of the bit speaks only version 1, so it gets ChaCha20-Poly1305 whatever
    /// bits it sets.
    pub fn negotiate(ours: &Hello, theirs: &Hello) -> TransportSuite {
        let version = negotiate_version(&ours.versions, &theirs.versions).unwrap_or(0);
        if version >= AES_GCM_SINCE_VERSION
            && ours.capabilities.contains(Capabilities::AES_GCM)
            && theirs.capabilities.contains(Capabilities::AES_GCM)
        {
            TransportSuite::Aes256Gcm
        } else {
            TransportSuite::ChaCha20Poly1305
        }
    }

    fn algorithm(self) -> &'static ring::aead::Algorithm {
        match self {
            TransportSuite::ChaCha20Poly1305 => &ring::aead::CHACHA20_POLY1305,
            TransportSuite::Aes256Gcm => &ring::aead::AES_256_GCM,
        }
    }

    /// Noise's nonce for counter `n`: 4 zero bytes, then the counter as 8 bytes,
    /// little-endian for ChaChaPoly and big-endian for AESGCM (Noise section 12).
    fn nonce(self, n: u64) -> ring::aead::Nonce {
        let mut bytes = [0u8; 12];
        bytes[4..].copy_from_slice(&match self {
            TransportSuite::ChaCha20Poly1305 => n.to_le_bytes(),
            TransportSuite::Aes256Gcm => n.to_be_bytes(),
        });
        ring::aead::Nonce::assume_unique_for_key(bytes)
    }

    /// The suite's name, as configuration files and serialized statistics spell it.
    pub fn name(self) -> &'static str {
        match self {
            TransportSuite::ChaCha20Poly1305 => "chacha20-poly1305",
            TransportSuite::Aes256Gcm => "aes-256-gcm",
        }
    }
}

impl core::fmt::Display for TransportSuite {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Most bytes one AES-256-GCM key may seal: the bound of the Noise specification's security
/// considerations ("data volumes"), past which AES-GCM's security wears down. About a year
/// of 2 GB/s on one connection; ChaCha20-Poly1305 has no such bound short of its nonces.
pub const AES_GCM_MAX_BYTES_PER_KEY: u64 = 1 << 56;

/// The transport phase of one connection: a key and nonce counter per direction in the
/// agreed [`TransportSuite`], exactly Noise's transport `CipherState`s (empty associated
/// data), but sealing and opening in the caller's buffer.
pub(crate) struct TransportCipher {
    suite: TransportSuite,
    send: ring::aead::LessSafeKey,
    recv: ring::aead::LessSafeKey,
    send_nonce: u64,
    recv_nonce: u64,
    /// Plaintext bytes sealed with `send` (bounded for AES-256-GCM).
    sealed_bytes: u64,
}

impl core::fmt::Debug for TransportCipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never the keys.
        f.debug_struct("TransportCipher")
            .field("suite", &self.suite)
            .field("send_nonce", &self.send_nonce)
            .field("recv_nonce", &self.recv_nonce)
            .finish_non_exhaustive()
    }
}

impl TransportCipher {
    /// The transport keys of a finished handshake (Noise `Split()`: the initiator sends
    /// with the first key and receives with the second; the responder the other way), for
    /// `suite`'s AEAD.
    pub(crate) fn from_handshake(
        mut hs: snow::HandshakeState,
        suite: TransportSuite,
    ) -> Result<Self, NoiseError> {
        if !hs.is_handshake_finished() {
            return Err(NoiseError("handshake not finished".into()));
        }
        let (k1, k2) = hs.dangerously_get_raw_split();
        let (send, recv) = if hs.is_initiator() {
            (k1, k2)
        } else {
            (k2, k1)
        };
        let key = |k: [u8; 32]| {
            ring::aead::UnboundKey::new(suite.algorithm(), &k)
                .map(ring::aead::LessSafeKey::new)
                .map_err(|_| NoiseError("invalid transport key".into()))
        };
        Ok(TransportCipher {
            suite,
            send: key(send)?,
            recv: key(recv)?,
            send_nonce: 0,
            recv_nonce: 0,
            sealed_bytes: 0,
        })
    }

    /// Encrypts `buf[start..]` in place and appends its tag. False (and `buf` unchanged)
    /// only when the key is worn out: its nonces exhausted after 2^64 − 1 messages, or, for
    /// AES-256-GCM, [`AES_GCM_MAX_BYTES_PER_KEY`] sealed. The connection then sends nothing
    /// more, and the peer's idle timeout ends it.
    pub(crate) fn seal(&mut self, buf: &mut Vec<u8>, start: usize) -> bool {
        if self.send_nonce == u64::MAX {
            return false;
        }
        let sealed = self
            .sealed_bytes
            .saturating_add(buf.len().saturating_sub(start) as u64);
        if self.suite == TransportSuite::Aes256Gcm && sealed > AES_GCM_MAX_BYTES_PER_KEY {
            return false;
        }
        let nonce = self.suite.nonce(self.send_nonce);
        let Ok(tag) = self.send.seal_in_place_separate_tag(
            nonce,
            ring::aead::Aad::empty(),
            &mut buf[start..],
        ) else {
            return false;
        };
        self.send_nonce += 1;
        self.sealed_bytes = sealed;
        buf.extend_from_slice(tag.as_ref());
        true
    }

    /// Decrypts `message` (ciphertext and tag) in place; the plaintext's length, or an
    /// error if it does not authenticate. A failed message consumes no nonce.
    pub(crate) fn open(&mut self, message: &mut [u8]) -> Result<usize, NoiseError> {
        if self.recv_nonce == u64::MAX {
            return Err(NoiseError("nonce exhausted".into()));
        }
        let nonce = self.suite.nonce(self.recv_nonce);
        let n = self
            .recv
            .open_in_place(nonce, ring::aead::Aad::empty(), message)
            .map_err(|_| NoiseError(snow::Error::Decrypt.to_string()))?
            .len();
        self.recv_nonce += 1;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the three XX messages between `i` and `r` (payloads: none, then two short ones).
    fn complete(
        mut i: snow::HandshakeState,
        mut r: snow::HandshakeState,
    ) -> (snow::HandshakeState, snow::HandshakeState) {
        let (mut buf, mut payload) = ([0u8; 1024], [0u8; 1024]);
        let n = i.write_message(&[], &mut buf).unwrap();
        r.read_message(&buf[..n], &mut payload).unwrap();
        let n = r.write_message(b"hello 2", &mut buf).unwrap();
        i.read_message(&buf[..n], &mut payload).unwrap();
        let n = i.write_message(b"hello 3", &mut buf).unwrap();
        r.read_message(&buf[..n], &mut payload).unwrap();
        (i, r)
    }

    /// Both sides of a finished handshake: ours as `TransportCipher`s in `suite`, and the
    /// same handshakes continued by snow's own transport mode. For AES-256-GCM the
    /// handshakes run under Noise's AESGCM name, so that snow's transport uses that cipher
    /// and the comparison checks our nonce layout and key order against Noise's.
    fn handshake_pair(suite: TransportSuite) -> [(TransportCipher, snow::TransportState); 2] {
        let name = match suite {
            TransportSuite::ChaCha20Poly1305 => NOISE_PARAMS,
            TransportSuite::Aes256Gcm => "Noise_XX_25519_AESGCM_BLAKE2s",
        };
        let build = |key: &Keypair, seed: u8, initiator: bool| {
            let b = snow::Builder::with_resolver(
                name.parse().unwrap(),
                noise_resolver(SeededRng::from_seed([seed; 32])),
            )
            .prologue(PROLOGUE)
            .unwrap()
            .local_private_key(key.private_key())
            .unwrap();
            if initiator {
                b.build_initiator().unwrap()
            } else {
                b.build_responder().unwrap()
            }
        };
        let run = || {
            let ki = Keypair::from_private_key([1; 32]);
            let kr = Keypair::from_private_key([2; 32]);
            complete(build(&ki, 3, true), build(&kr, 4, false))
        };
        // Seeded, so both runs derive the same keys.
        let (i1, r1) = run();
        let (i2, r2) = run();
        [
            (
                TransportCipher::from_handshake(i1, suite).unwrap(),
                i2.into_transport_mode().unwrap(),
            ),
            (
                TransportCipher::from_handshake(r1, suite).unwrap(),
                r2.into_transport_mode().unwrap(),
            ),
        ]
    }

    #[test]
    fn transport_cipher_is_byte_for_byte_snows_transport_mode() {
        for suite in [TransportSuite::ChaCha20Poly1305, TransportSuite::Aes256Gcm] {
            let [(mut i, mut i_snow), (mut r, mut r_snow)] = handshake_pair(suite);
            assert_eq!(i.suite, suite);
            // Past the first nonce byte, so little- and big-endian counters differ.
            for (round, len) in [0usize, 1, 100, 1000, MAX_FRAME_PLAINTEXT, 7, 0, 9]
                .into_iter()
                .cycle()
                .take(300)
                .enumerate()
            {
                let plain: Vec<u8> = (0..len).map(|b| (b + round) as u8).collect();
                // Initiator to responder: ours seals what snow would have sent.
                let mut ours = plain.clone();
                assert!(i.seal(&mut ours, 0));
                let mut theirs = vec![0u8; len + TAG_LEN];
                let n = i_snow.write_message(&plain, &mut theirs).unwrap();
                assert_eq!(ours, theirs[..n], "{suite}: sealed bytes differ at {round}");
                // Responder opens it in place; snow's responder reads the same message.
                let mut opened = ours.clone();
                assert_eq!(r.open(&mut opened).unwrap(), len);
                assert_eq!(opened[..len], plain[..]);
                let mut out = vec![0u8; len + TAG_LEN];
                assert_eq!(r_snow.read_message(&ours, &mut out).unwrap(), len);
                // And back, with a prefix before the sealed region left untouched.
                let mut back = b"prefix".to_vec();
                back.extend_from_slice(&plain);
                assert!(r.seal(&mut back, 6));
                assert_eq!(&back[..6], b"prefix");
                let n = r_snow.write_message(&plain, &mut theirs).unwrap();
                assert_eq!(
                    back[6..],
                    theirs[..n],
                    "{suite}: sealed bytes differ at {round}"
                );
                let mut opened = back[6..].to_vec();
                assert_eq!(i.open(&mut opened).unwrap(), len);
                assert_eq!(i_snow.read_message(&back[6..], &mut out).unwrap(), len);
            }
        }
    }

    /// The production path (the real ChaChaPoly handshake, then the AES-256-GCM transport)
    /// against snow's own AESGCM cipher function keyed with the same `Split()` keys: snow
    /// lays out the nonce itself, so this checks ours independently.
    #[test]
    fn aes_transport_after_the_real_handshake_is_snows_aesgcm_cipher() {
        use snow::resolvers::CryptoResolver;
        let run = || {
            let ki = Keypair::from_private_key([1; 32]);
            let kr = Keypair::from_private_key([2; 32]);
            complete(
                start(Role::Initiator, &ki, SeededRng::from_seed([3; 32])).unwrap(),
                start(Role::Responder, &kr, SeededRng::from_seed([4; 32])).unwrap(),
            )
        };
        let (i1, r1) = run();
        let (mut i2, _) = run();
        let mut initiator = TransportCipher::from_handshake(i1, TransportSuite::Aes256Gcm).unwrap();
        let mut responder = TransportCipher::from_handshake(r1, TransportSuite::Aes256Gcm).unwrap();
        let (k1, k2) = i2.dangerously_get_raw_split();
        let snow_cipher = |key: &[u8; 32]| {
            let mut c = snow::resolvers::RingResolver
                .resolve_cipher(&snow::params::CipherChoice::AESGCM)
                .unwrap();
            c.set(key);
            c
        };
        let (to_responder, to_initiator) = (snow_cipher(&k1), snow_cipher(&k2));
        for n in 0..300u64 {
            let plain: Vec<u8> = (0..(n as usize * 7) % 1500).map(|b| b as u8).collect();
            let mut expected = vec![0u8; plain.len() + TAG_LEN];
            // Initiator to responder with the first key, and back with the second.
            let mut sealed = plain.clone();
            assert!(initiator.seal(&mut sealed, 0));
            to_responder.encrypt(n, &[], &plain, &mut expected);
            assert_eq!(sealed, expected, "initiator's packet {n}");
            assert_eq!(responder.open(&mut sealed).unwrap(), plain.len());
            let mut sealed = plain.clone();
            assert!(responder.seal(&mut sealed, 0));
            to_initiator.encrypt(n, &[], &plain, &mut expected);
            assert_eq!(sealed, expected, "responder's packet {n}");
            assert_eq!(initiator.open(&mut sealed).unwrap(), plain.len());
        }
    }

    #[test]
    fn aes_gcm_only_when_both_hellos_ask_for_it_in_version_2() {
        let hello = |versions: &[u32], capabilities| Hello {
            network_id: "n".into(),
            versions: versions.to_vec(),
            capabilities,
            listen_addrs: vec![],
            agent: "a".into(),
        };
        let aes = Capabilities::GOSSIP | Capabilities::AES_GCM;
        let plain = Capabilities::GOSSIP;
        assert_eq!(
            TransportSuite::negotiate(&hello(&[1, 2], aes), &hello(&[2], aes)),
            TransportSuite::Aes256Gcm
        );
        for (ours, theirs) in [(aes, plain), (plain, aes), (plain, plain)] {
            assert_eq!(
                TransportSuite::negotiate(&hello(&[1, 2], ours), &hello(&[1, 2], theirs)),
                TransportSuite::ChaCha20Poly1305
            );
        }
        // In version 1 the bit meant nothing: a version-1 peer that happens to set it is not
        // taken to speak AES-256-GCM.
        assert_eq!(
            TransportSuite::negotiate(&hello(&[1, 2], aes), &hello(&[1], aes)),
            TransportSuite::ChaCha20Poly1305
        );
        // Nor is a peer that shares no version at all.
        assert_eq!(
            TransportSuite::negotiate(&hello(&[2], aes), &hello(&[3], aes)),
            TransportSuite::ChaCha20Poly1305
        );
    }

    #[test]
    fn suites_serialize_under_their_configuration_names() {
        for suite in [TransportSuite::ChaCha20Poly1305, TransportSuite::Aes256Gcm] {
            let json = serialized_name(&suite);
            assert_eq!(json, suite.name());
        }
    }

    /// The name serde gives `suite` (through the TOML serializer, which the core has).
    fn serialized_name(suite: &TransportSuite) -> String {
        #[derive(serde::Serialize)]
        struct Wrap<'a> {
            suite: &'a TransportSuite,
        }
        let text = toml::to_string(&Wrap { suite }).unwrap();
        text.trim()
            .trim_start_matches("suite = ")
            .trim_matches('"')
            .to_string()
    }

    /// A cipher in `suite` keyed with `key` in both directions, at nonce 0.
    fn cipher(suite: TransportSuite, key: [u8; 32]) -> TransportCipher {
        let k = || {
            ring::aead::LessSafeKey::new(
                ring::aead::UnboundKey::new(suite.algorithm(), &key).unwrap(),
            )
        };
        TransportCipher {
            suite,
            send: k(),
            recv: k(),
            send_nonce: 0,
            recv_nonce: 0,
            sealed_bytes: 0,
        }
    }

    #[test]
    fn an_aes_key_seals_no_more_than_the_noise_bound() {
        let mut aes = cipher(TransportSuite::Aes256Gcm, [7; 32]);
        aes.sealed_bytes = AES_GCM_MAX_BYTES_PER_KEY - 10;
        let mut fits = vec![1u8; 10];
        assert!(aes.seal(&mut fits, 0));
        let mut over = vec![1u8; 1];
        assert!(!aes.seal(&mut over, 0));
        assert_eq!(over, [1], "a refused seal leaves the buffer as it was");
        // ChaCha20-Poly1305 has no such bound.
        let mut chacha = cipher(TransportSuite::ChaCha20Poly1305, [7; 32]);
        chacha.sealed_bytes = AES_GCM_MAX_BYTES_PER_KEY;
        assert!(chacha.seal(&mut vec![1u8; 10], 0));
    }

    #[test]
    fn one_suite_does_not_open_the_others_packets() {
        for (sender, receiver) in [
            (TransportSuite::ChaCha20Poly1305, TransportSuite::Aes256Gcm),
            (TransportSuite::Aes256Gcm, TransportSuite::ChaCha20Poly1305),
        ] {
            let mut sealed = b"payload".to_vec();
            assert!(cipher(sender, [7; 32]).seal(&mut sealed, 0));
            let mut copy = sealed.clone();
            assert!(cipher(receiver, [7; 32]).open(&mut copy).is_err());
            assert_eq!(cipher(sender, [7; 32]).open(&mut sealed).unwrap(), 7);
        }
    }

    #[test]
    fn a_tampered_or_replayed_message_does_not_open() {
        let [(mut i, _), (mut r, _)] = handshake_pair(TransportSuite::ChaCha20Poly1305);
        let mut sealed = b"payload".to_vec();
        assert!(i.seal(&mut sealed, 0));
        let mut tampered = sealed.clone();
        tampered[0] ^= 1;
        assert!(r.open(&mut tampered).is_err());
        // A failed open consumes no nonce: the genuine message still opens, once.
        let mut genuine = sealed.clone();
        assert_eq!(r.open(&mut genuine).unwrap(), 7);
        let mut replayed = sealed.clone();
        assert!(r.open(&mut replayed).is_err(), "nonce moved on");
    }

    #[test]
    fn a_small_order_ephemeral_key_fails_the_handshake() {
        let kr = Keypair::from_private_key([2; 32]);
        let mut r = start(Role::Responder, &kr, SeededRng::from_seed([4; 32])).unwrap();
        let mut payload = [0u8; 1024];
        // Message 1 of XX is the initiator's ephemeral key in the clear: here u = 0, whose
        // shared secret with any key is zero. Message 2's `ee` must refuse it.
        r.read_message(&[0u8; 32], &mut payload).unwrap();
        let mut buf = [0u8; 1024];
        assert!(matches!(
            r.write_message(b"", &mut buf),
            Err(snow::Error::Dh)
        ));
    }
}

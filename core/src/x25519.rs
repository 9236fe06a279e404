//! X25519 for the Noise handshake and for deriving a key pair's public key.
//!
//! A handshake computes ten X25519 operations (each side derives its static and ephemeral
//! public keys and computes three shared secrets), most of them one after the other, so
//! their speed is most of the time a connection takes to open. With the `aws-lc` feature
//! (on by default) they run on aws-lc's X25519, which uses the CPU's wide multiply
//! instructions and is about 2.2 times as fast as the portable curve25519-dalek ladder snow
//! ships (README, Performance). Without the feature, for targets without a C toolchain,
//! snow's own implementation is used.
//!
//! Both builds compute the same function and refuse the same keys: a Diffie-Hellman whose
//! result is all zeros (the peer sent a point of small order, which no honest peer does)
//! fails the handshake, instead of keying it with a secret any observer knows and letting
//! the peer claim an identity without its private key. aws-lc refuses such results itself;
//! snow's implementation is wrapped to do the same.

use crate::identity::KEY_LEN;

/// A fresh X25519 implementation for snow, without a key yet.
pub(crate) fn dh() -> Box<dyn snow::types::Dh> {
    #[cfg(feature = "aws-lc")]
    {
        Box::<aws::AwsLcX25519>::default()
    }
    #[cfg(not(feature = "aws-lc"))]
    {
        Box::new(portable::RejectZero(portable::snow_x25519()))
    }
}

/// The public key of the X25519 private key `private`.
pub(crate) fn public_key(private: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    let mut dh = dh();
    dh.set(private);
    let mut public = [0u8; KEY_LEN];
    public.copy_from_slice(&dh.pubkey()[..KEY_LEN]);
    public
}

#[cfg(feature = "aws-lc")]
mod aws {
    use super::KEY_LEN;
    use aws_lc_rs::agreement::{agree, PrivateKey, UnparsedPublicKey, X25519};

    /// snow's `Dh` on aws-lc. The parsed private key is kept, because parsing it also
    /// derives the public key: a Diffie-Hellman then costs one scalar multiplication.
    #[derive(Default)]
    pub(super) struct AwsLcX25519 {
        key: Option<PrivateKey>,
        private: [u8; KEY_LEN],
        public: [u8; KEY_LEN],
    }

    impl AwsLcX25519 {
        fn load(&mut self) {
            // Any 32 bytes are a valid X25519 private key, so this does not fail in
            // practice; if it ever did, the key stays unset and `dh` reports an error
            // rather than the handshake going on with a wrong key.
            self.key = PrivateKey::from_private_key(&X25519, &self.private).ok();
            debug_assert!(self.key.is_some(), "aws-lc refused a 32-byte X25519 key");
            self.public = [0; KEY_LEN];
            if let Some(public) = self.key.as_ref().and_then(|k| k.compute_public_key().ok()) {
                self.public.copy_from_slice(public.as_ref());
            }
        }
    }

    impl snow::types::Dh for AwsLcX25519 {
        fn name(&self) -> &'static str {
            "25519"
        }

        fn pub_len(&self) -> usize {
            KEY_LEN
        }

        fn priv_len(&self) -> usize {
            KEY_LEN
        }

        fn set(&mut self, privkey: &[u8]) {
            debug_assert_eq!(privkey.len(), KEY_LEN, "an X25519 private key is 32 bytes");
            let n = privkey.len().min(KEY_LEN);
            self.private = [0; KEY_LEN];
            self.private[..n].copy_from_slice(&privkey[..n]);
            self.load();
        }

        fn generate(&mut self, rng: &mut dyn snow::types::Random) -> Result<(), snow::Error> {
            // Into a fresh array first: a failed draw leaves the old key whole.
            let mut private = [0u8; KEY_LEN];
            rng.try_fill_bytes(&mut private)?;
            self.private = private;
            self.load();
            Ok(())
        }

        fn pubkey(&self) -> &[u8] {
            &self.public
        }

        fn privkey(&self) -> &[u8] {
            &self.private
        }

        fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
            let (Some(key), Some(pubkey)) = (self.key.as_ref(), pubkey.get(..KEY_LEN)) else {
                return Err(snow::Error::Dh);
            };
            let out = out.get_mut(..KEY_LEN).ok_or(snow::Error::Dh)?;
            agree(
                key,
                UnparsedPublicKey::new(&X25519, pubkey),
                snow::Error::Dh,
                |secret| {
                    out.copy_from_slice(secret);
                    Ok(())
                },
            )
        }
    }
}

#[cfg(any(test, not(feature = "aws-lc")))]
mod portable {
    use super::KEY_LEN;

    /// snow's own X25519 (curve25519-dalek).
    pub(super) fn snow_x25519() -> Box<dyn snow::types::Dh> {
        snow::resolvers::CryptoResolver::resolve_dh(
            &snow::resolvers::DefaultResolver,
            &snow::params::DHChoice::Curve25519,
        )
        .expect("snow is built with its X25519 implementation")
    }

    /// Wraps snow's X25519 so an all-zero shared secret fails, as aws-lc's does, and a
    /// short peer key or output buffer is an error rather than snow's panic.
    pub(super) struct RejectZero(pub(super) Box<dyn snow::types::Dh>);

    impl snow::types::Dh for RejectZero {
        fn name(&self) -> &'static str {
            self.0.name()
        }

        fn pub_len(&self) -> usize {
            self.0.pub_len()
        }

        fn priv_len(&self) -> usize {
            self.0.priv_len()
        }

        fn set(&mut self, privkey: &[u8]) {
            self.0.set(privkey)
        }

        fn generate(&mut self, rng: &mut dyn snow::types::Random) -> Result<(), snow::Error> {
            self.0.generate(rng)
        }

        fn pubkey(&self) -> &[u8] {
            self.0.pubkey()
        }

        fn privkey(&self) -> &[u8] {
            self.0.privkey()
        }

        fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
            if pubkey.len() < KEY_LEN || out.len() < KEY_LEN {
                return Err(snow::Error::Dh);
            }
            self.0.dh(pubkey, out)?;
            // Every byte is looked at whatever their values, so the time taken does not
            // tell how much of the secret is zero.
            if out[..KEY_LEN].iter().fold(0u8, |acc, b| acc | b) == 0 {
                return Err(snow::Error::Dh);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeededRng;

    /// snow's own X25519, unwrapped: the reference every build must agree with.
    fn reference() -> Box<dyn snow::types::Dh> {
        portable::snow_x25519()
    }

    /// Both builds' implementations: the one in use, and the wrapped portable one.
    fn both() -> [Box<dyn snow::types::Dh>; 2] {
        [
            dh(),
            Box::new(portable::RejectZero(portable::snow_x25519())),
        ]
    }

    fn key(hex_text: &str) -> [u8; KEY_LEN] {
        hex::decode(hex_text).unwrap().try_into().unwrap()
    }

    #[test]
    fn matches_the_reference_on_public_keys_and_shared_secrets() {
        let mut rng = SeededRng::from_seed([3; 32]);
        for _ in 0..64 {
            // Unclamped random bytes on purpose: clamping is part of the function.
            let mut a = [0u8; KEY_LEN];
            let mut b = [0u8; KEY_LEN];
            rng.fill_bytes(&mut a);
            rng.fill_bytes(&mut b);
            let mut theirs = reference();
            theirs.set(&a);
            let peer = public_key(&b);
            let mut want = [0u8; 56];
            theirs.dh(&peer, &mut want).expect("an honest key agrees");
            for mut ours in both() {
                ours.set(&a);
                assert_eq!(ours.pubkey(), theirs.pubkey());
                let mut got = [0u8; 56];
                ours.dh(&peer, &mut got).expect("an honest key agrees");
                assert_eq!(got, want);
            }
            assert_eq!(public_key(&a)[..], *theirs.pubkey());
        }
    }

    #[test]
    fn the_rfc_7748_test_vectors_hold() {
        // Section 5.2: scalar, u-coordinate (the second with its top bit set, which the
        // function must ignore), result.
        let scalar_mult = [
            (
                "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
                "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
                "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
            ),
            (
                "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
                "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
                "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
            ),
        ];
        // Section 6.1: Alice's private and public keys, Bob's public key, their secret.
        let alice = key("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let alice_public = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
        let bob_public = key("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        let shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";
        for mut d in both() {
            for (scalar, u, result) in scalar_mult {
                d.set(&key(scalar));
                let mut out = [0u8; KEY_LEN];
                d.dh(&key(u), &mut out).unwrap();
                assert_eq!(hex::encode(out), result);
            }
            d.set(&alice);
            assert_eq!(hex::encode(d.pubkey()), alice_public);
            let mut out = [0u8; KEY_LEN];
            d.dh(&bob_public, &mut out).unwrap();
            assert_eq!(hex::encode(out), shared);
        }
    }

    #[test]
    fn a_short_peer_key_or_output_is_an_error_not_a_panic() {
        let peer = public_key(&[5; KEY_LEN]);
        for mut d in both() {
            d.set(&[9; KEY_LEN]);
            let mut out = [0u8; KEY_LEN];
            assert!(d.dh(&[1; 31], &mut out).is_err());
            assert!(d.dh(&peer, &mut [0u8; 16]).is_err());
            assert!(d.dh(&peer, &mut out).is_ok());
        }
    }

    #[test]
    fn a_small_order_peer_key_is_refused_by_both_builds() {
        // u = 0 and u = 1 are points of small order: every shared secret with them is
        // zero. snow's implementation alone accepts them; both of ours refuse.
        let mut one = [0u8; KEY_LEN];
        one[0] = 1;
        let mut raw = reference();
        raw.set(&[9; KEY_LEN]);
        assert!(raw.dh(&[0; KEY_LEN], &mut [0u8; KEY_LEN]).is_ok());
        for mut d in both() {
            d.set(&[9; KEY_LEN]);
            let mut out = [0u8; KEY_LEN];
            assert!(d.dh(&[0; KEY_LEN], &mut out).is_err());
            assert!(d.dh(&one, &mut out).is_err());
        }
    }
}

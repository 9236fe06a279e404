//! X25519 for the Noise handshake and for deriving a key pair's public key.
//!
//! A handshake's critical path is eight X25519 operations (each side derives its static and
//! ephemeral public keys and computes three shared secrets), so their speed is most of the
//! time a connection takes to open. With the `aws-lc` feature (on by default) they run on
//! aws-lc's X25519, which uses the CPU's wide multiply instructions and is about 2.2 times
//! as fast as the portable curve25519-dalek ladder snow ships (README, Performance). Without
//! the feature, for targets without a C toolchain, snow's own implementation is used. Both
//! compute the same function, so nodes built either way interoperate; the only difference
//! is that aws-lc refuses a peer key whose shared secret is all zeros (a point of small
//! order, which no honest peer sends), failing the handshake instead of deriving keys from
//! a secret any observer knows.

use crate::identity::KEY_LEN;

/// A fresh X25519 implementation for snow, without a key yet.
pub(crate) fn dh() -> Box<dyn snow::types::Dh> {
    #[cfg(feature = "aws-lc")]
    {
        Box::<aws::AwsLcX25519>::default()
    }
    #[cfg(not(feature = "aws-lc"))]
    {
        snow::resolvers::CryptoResolver::resolve_dh(
            &snow::resolvers::DefaultResolver,
            &snow::params::DHChoice::Curve25519,
        )
        .expect("snow is built with its X25519 implementation")
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
            let n = privkey.len().min(KEY_LEN);
            self.private = [0; KEY_LEN];
            self.private[..n].copy_from_slice(&privkey[..n]);
            self.load();
        }

        fn generate(&mut self, rng: &mut dyn snow::types::Random) -> Result<(), snow::Error> {
            rng.try_fill_bytes(&mut self.private)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeededRng;

    /// snow's own X25519, the reference every implementation must agree with.
    fn reference() -> Box<dyn snow::types::Dh> {
        snow::resolvers::CryptoResolver::resolve_dh(
            &snow::resolvers::DefaultResolver,
            &snow::params::DHChoice::Curve25519,
        )
        .expect("snow is built with its X25519 implementation")
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
            let (mut ours, mut theirs) = (dh(), reference());
            ours.set(&a);
            theirs.set(&a);
            assert_eq!(ours.pubkey(), theirs.pubkey());
            assert_eq!(public_key(&a)[..], *theirs.pubkey());
            let peer = public_key(&b);
            let (mut x, mut y) = ([0u8; 56], [0u8; 56]);
            ours.dh(&peer, &mut x).expect("an honest key agrees");
            theirs.dh(&peer, &mut y).expect("an honest key agrees");
            assert_eq!(x, y);
            assert_ne!(x[..KEY_LEN], [0u8; KEY_LEN]);
        }
    }

    #[test]
    fn the_rfc_7748_test_vector_holds() {
        // RFC 7748, section 6.1: Alice's and Bob's keys and their shared secret.
        let alice: [u8; KEY_LEN] =
            hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .unwrap()
                .try_into()
                .unwrap();
        let bob_public =
            hex::decode("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
                .unwrap();
        let mut d = dh();
        d.set(&alice);
        assert_eq!(
            hex::encode(d.pubkey()),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
        let mut out = [0u8; KEY_LEN];
        d.dh(&bob_public, &mut out).unwrap();
        assert_eq!(
            hex::encode(out),
            "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
        );
    }

    #[test]
    fn a_short_peer_key_or_output_is_an_error_not_a_panic() {
        let mut d = dh();
        d.set(&[9; KEY_LEN]);
        let mut out = [0u8; KEY_LEN];
        #[cfg(feature = "aws-lc")]
        {
            assert!(d.dh(&[1; 31], &mut out).is_err());
            assert!(d.dh(&public_key(&[5; KEY_LEN]), &mut [0u8; 16]).is_err());
        }
        assert!(d.dh(&public_key(&[5; KEY_LEN]), &mut out).is_ok());
    }

    #[cfg(feature = "aws-lc")]
    #[test]
    fn a_small_order_peer_key_is_refused() {
        let mut d = dh();
        d.set(&[9; KEY_LEN]);
        let mut out = [0u8; KEY_LEN];
        // u = 0 and u = 1 are points of small order: every shared secret with them is zero.
        assert!(d.dh(&[0; KEY_LEN], &mut out).is_err());
        let mut one = [0u8; KEY_LEN];
        one[0] = 1;
        assert!(d.dh(&one, &mut out).is_err());
    }
}

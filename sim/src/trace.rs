//! The trace hash: a running 128-bit digest of every event the simulator processes (its
//! time, kind, node, connection and sizes) and every event the nodes emit. Two runs with the
//! same seed and scenario produce the same digest; any divergence changes it.
//!
//! The digest is not cryptographic: it only has to make accidental collisions between
//! different traces vanishingly unlikely, at a cost of a few nanoseconds per event.

/// A running digest of the event trace. Feed it with [`TraceHash::word`].
#[derive(Debug, Clone)]
pub struct TraceHash {
    a: u64,
    b: u64,
    words: u64,
}

impl Default for TraceHash {
    fn default() -> Self {
        TraceHash {
            a: 0x6a09_e667_f3bc_c908,
            b: 0xbb67_ae85_84ca_a73b,
            words: 0,
        }
    }
}

impl TraceHash {
    /// Mixes one 64-bit word into the digest.
    #[inline]
    pub fn word(&mut self, x: u64) {
        self.a = (self.a ^ x)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
        self.b = (self.b.wrapping_add(x) ^ (self.b >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        self.words += 1;
    }

    /// Mixes a byte string (its length, then 8-byte words).
    pub fn bytes(&mut self, data: &[u8]) {
        self.word(data.len() as u64);
        for c in data.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.word(u64::from_le_bytes(w));
        }
    }

    /// The digest so far, as 32 hex characters.
    pub fn hex(&self) -> String {
        // A final avalanche so that the last few words affect every output bit.
        let mut a = self.a ^ self.words;
        let mut b = self.b ^ self.a.rotate_left(17);
        for _ in 0..2 {
            a = (a ^ (a >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
            b = (b ^ (b >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
            a ^= b.rotate_left(7);
            b ^= a.rotate_left(13);
        }
        format!("{a:016x}{b:016x}")
    }

    /// Words mixed in so far (the trace's length).
    pub fn len(&self) -> u64 {
        self.words
    }

    /// Whether nothing was mixed in yet.
    pub fn is_empty(&self) -> bool {
        self.words == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_input_same_digest_and_order_matters() {
        let mut a = TraceHash::default();
        let mut b = TraceHash::default();
        for x in [1, 2, 3] {
            a.word(x);
            b.word(x);
        }
        assert_eq!(a.hex(), b.hex());
        let mut c = TraceHash::default();
        for x in [2, 1, 3] {
            c.word(x);
        }
        assert_ne!(a.hex(), c.hex());
        assert_eq!(a.len(), 3);
        assert!(TraceHash::default().is_empty());
    }
}

//! What the adapters learn from the CPU before they start a node: the one hardware fact the
//! node's configuration depends on (whether `cipher = "auto"` asks for AES-256-GCM). The
//! core reads nothing from its environment, so the answer is handed to it here.

/// Whether this CPU has the instructions that make AES-256-GCM fast: AES and carry-less
/// multiplication (x86: AES-NI and PCLMULQDQ; 64-bit Arm: AES and PMULL). Without them ring
/// falls back to a constant-time software AES that is several times slower than
/// ChaCha20-Poly1305, so a node on such a CPU keeps to ChaCha20-Poly1305. Detected at run
/// time (the standard library caches the answer).
pub fn has_aes_instructions() -> bool {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

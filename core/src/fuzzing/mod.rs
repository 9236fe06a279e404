//! The bodies of the fuzz targets, compiled with the `fuzzing` feature.
//!
//! Each target is a function from arbitrary bytes to `()` that drives one parser or state
//! machine of the core and **asserts properties** on what it sees, so a violated invariant is
//! a crash the fuzzer reports, exactly like a panic inside the core. The same functions run
//! in two places:
//!
//! * under cargo-fuzz (libFuzzer, nightly): `fuzz/fuzz_targets/<name>.rs` is a one-line
//!   wrapper around the function named here;
//! * under `cargo test` on stable: `core/tests/fuzz_replay.rs` replays the committed corpus
//!   in `fuzz/corpus/<name>/` and a few thousand generated inputs per target, so CI exercises
//!   every target without nightly.
//!
//! Structured targets decode their input with [`arbitrary::Unstructured`]: every byte string
//! is a valid program of inputs, commands and time steps, so the fuzzer spends its time in
//! the state machine rather than in an input format.
//!
//! Properties asserted (besides "no panic, no unbounded memory"):
//! * parsers are canonical: where decoding succeeds, encoding the result gives the input back;
//! * the streaming packet decoder yields the same packets however the stream is split;
//! * the core's memory accounting ([`crate::Connection::buffered_bytes`],
//!   [`crate::node::Node::buffered_bytes`]) stays within [`ConnectionConfig::max_buffered_bytes`];
//! * no application message is delivered before the handshake completes, and nothing after
//!   the connection closed;
//! * every connection that closes reports exactly one [`crate::CloseReason`];
//! * the node's peer events are consistent (connected before messages, one disconnect each);
//! * the address book and configuration round-trip through their persistent forms.
//!
//! [`ConnectionConfig::max_buffered_bytes`]: crate::ConnectionConfig::max_buffered_bytes

mod book;
mod conn;
mod node;
mod wire;

pub use book::{address_book, config};
pub use conn::{connection_inputs, handshake_initiator, handshake_responder};
pub use node::node_inputs;
pub use wire::{chunk_reassembly, frame_decoder, message_decode};

/// The next step of a structured program, or `None` once the input is used up or `max`
/// steps were taken. (An exhausted [`arbitrary::Unstructured`] keeps decoding default values,
/// so programs must stop on emptiness, not on a decoding error.)
pub(crate) fn next_step<'a, T: arbitrary::Arbitrary<'a>>(
    u: &mut arbitrary::Unstructured<'a>,
    taken: &mut usize,
    max: usize,
) -> Option<T> {
    if u.is_empty() || *taken >= max {
        return None;
    }
    *taken += 1;
    T::arbitrary(u).ok()
}

/// One fuzz target: its name (the file under `fuzz/fuzz_targets/` and the corpus folder) and
/// its body.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The target's name.
    pub name: &'static str,
    /// The body: panics when a property fails.
    pub run: fn(&[u8]),
}

/// Every target of the core, for replay tests and tools that iterate over them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "frame_decoder",
        run: frame_decoder,
    },
    Target {
        name: "message_decode",
        run: message_decode,
    },
    Target {
        name: "chunk_reassembly",
        run: chunk_reassembly,
    },
    Target {
        name: "handshake_initiator",
        run: handshake_initiator,
    },
    Target {
        name: "handshake_responder",
        run: handshake_responder,
    },
    Target {
        name: "connection_inputs",
        run: connection_inputs,
    },
    Target {
        name: "node_inputs",
        run: node_inputs,
    },
    Target {
        name: "address_book",
        run: address_book,
    },
    Target {
        name: "config",
        run: config,
    },
];

/// Seed inputs for the targets whose input is a plain format (messages, snapshots, TOML),
/// so a fuzzing run starts from valid examples instead of rediscovering the format. Targets
/// driven by [`arbitrary::Unstructured`] need none: any bytes are a valid program.
pub fn seed_inputs(target: &str) -> Vec<Vec<u8>> {
    match target {
        "message_decode" => wire::message_seeds(),
        "config" => book::config_seeds(),
        "address_book" => book::address_book_seeds(),
        _ => Vec::new(),
    }
}

/// Runs `target` on every `known` input (named, for the failure message), then on
/// `generated` inputs drawn from `seed`: random bytes of skewed lengths, or mutations of the
/// known inputs. This is how `cargo test` exercises the targets without libFuzzer; a failure
/// prints the input's name (or generated index) and its bytes in hex before re-panicking.
pub fn replay(target: &Target, known: &[(String, Vec<u8>)], generated: usize, seed: [u8; 32]) {
    for (name, input) in known {
        run_named(target, name, input);
    }
    let mut rng = crate::SeededRng::from_seed(seed);
    for i in 0..generated {
        let input = generate(&mut rng, known);
        run_named(target, &format!("generated input {i}"), &input);
    }
}

fn run_named(target: &Target, what: &str, input: &[u8]) {
    use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| (target.run)(input))) {
        let shown: String = input.iter().take(512).map(|b| format!("{b:02x}")).collect();
        eprintln!(
            "fuzz target {} failed on {what} ({} bytes): {shown}{}",
            target.name,
            input.len(),
            if input.len() > 512 { "…" } else { "" }
        );
        resume_unwind(panic);
    }
}

/// A random input: fresh bytes (lengths skewed small), or a mutation of a known input.
fn generate(rng: &mut crate::SeededRng, known: &[(String, Vec<u8>)]) -> Vec<u8> {
    if !known.is_empty() && rng.below(2) == 0 {
        let mut input = known[rng.below(known.len() as u64) as usize].1.clone();
        for _ in 0..=rng.below(8) {
            let at = rng.below(input.len() as u64 + 1) as usize;
            match rng.below(4) {
                0 if at < input.len() => input[at] ^= 1 << rng.below(8),
                1 if at < input.len() => input[at] = rng.next_u32() as u8,
                2 => input.insert(at, rng.next_u32() as u8),
                _ if at < input.len() => {
                    input.remove(at);
                }
                _ => {}
            }
        }
        return input;
    }
    let len = match rng.below(4) {
        0 => rng.below(16),
        1 => rng.below(128),
        2 => rng.below(1024),
        _ => rng.below(8192),
    } as usize;
    let mut input = vec![0; len];
    rng.fill_bytes(&mut input);
    input
}

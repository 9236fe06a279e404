//! # silver-p2p-core
//!
//! The sans-IO protocol core of silver-p2p. It never reads a clock, opens a socket, spawns a
//! thread or draws OS entropy: time and randomness are inputs, bytes to send and sockets to
//! close are outputs. The same core runs under any async runtime, a plain thread, a fuzzer
//! and a deterministic simulator.
//!
//! This crate holds the per-connection machine, [`Connection`]: the Noise XX handshake with
//! Hello exchange, packet framing, CBOR messages, coalescing, chunking, keepalive,
//! back-pressure and closing. PROTOCOL.md at the repository root specifies the wire byte for
//! byte.
//!
//! ## The run-loop contract
//!
//! 1. Apply one input: [`Connection::handle_connected`], [`Connection::handle_bytes`],
//!    [`Connection::handle_written`], [`Connection::handle_closed`] or
//!    [`Connection::handle_timeout`], or a command such as [`Connection::send`], each with the
//!    current [`Timestamp`] from your monotonic clock.
//! 2. Drain [`Connection::poll_output`] until it returns `None`, acting on each output:
//!    write `Transmit` bytes in order (then report them with `handle_written`), stop or resume
//!    reading on `PauseRead`/`ResumeRead`, close the socket on `Close` after writing what came
//!    before it, and hand `Event`s to the application.
//! 3. Read [`Connection::poll_timeout`]: the instant at which to call `handle_timeout`.
//! 4. Wait for the next socket event, command, or that deadline. On waking, pass the clock's
//!    current reading (never the old deadline), and check `now >= deadline` yourself rather
//!    than trusting the timer.
//! 5. Repeat from 1.
//!
//! ```
//! use std::sync::Arc;
//! use silver_p2p_core::*;
//!
//! // Two connections in memory: a dialer and a listener, joined by a loop that moves bytes.
//! let config = Arc::new(ConnectionConfig::default());
//! let hello = |n: &str| Arc::new(Hello {
//!     network_id: "example".into(),
//!     versions: vec![PROTOCOL_VERSION],
//!     capabilities: Capabilities::ALL,
//!     listen_addrs: vec![],
//!     agent: n.into(),
//! });
//! let key_a = Keypair::generate(&mut SeededRng::from_seed([1; 32]));
//! let key_b = Keypair::generate(&mut SeededRng::from_seed([2; 32]));
//! let now = Timestamp::ZERO;
//! let mut a = Connection::new(Role::Initiator, config.clone(), hello("a"), &key_a, None, [3; 32], now);
//! let mut b = Connection::new(Role::Responder, config, hello("b"), &key_b, None, [4; 32], now);
//!
//! a.handle_connected(now); // the TCP connect completed
//! a.send(Message::Transaction { data: b"tx".to_vec().into() }).unwrap(); // leaves after the handshake
//! // One step of the run loop for one side: drain its outputs, act on each.
//! fn drain(from: &mut Connection, to: &mut Connection, now: Timestamp, got: &mut Vec<Message>) -> bool {
//!     let mut moved = false;
//!     while let Some(out) = from.poll_output() {
//!         match out {
//!             ConnectionOutput::Transmit(bytes) => {
//!                 from.handle_written(now, bytes.len()); // "written to the socket"
//!                 to.handle_bytes(now, &bytes);
//!                 moved = true;
//!             }
//!             ConnectionOutput::Event(ConnectionEvent::Message(m)) => got.push(m),
//!             _ => {}
//!         }
//!     }
//!     moved
//! }
//! let mut received = Vec::new();
//! while drain(&mut a, &mut b, now, &mut received) | drain(&mut b, &mut a, now, &mut received) {}
//! assert_eq!(b.state(), ConnectionState::Connected);
//! assert_eq!(b.peer_id(), Some(key_a.peer_id()));
//! assert_eq!(received, vec![Message::Transaction { data: b"tx".to_vec().into() }]);
//! ```
//!
//! ## Errors by blame
//!
//! Local misuse (a message too large, a full queue) is a synchronous `Result` from the command.
//! A peer's misbehaviour or an IO failure is never an error the caller handles: the connection
//! closes with a [`CloseReason`] in a [`ConnectionEvent::Closed`] event.
//!
//! ## Randomness
//!
//! Every random choice comes from the seed passed to [`Connection::new`] through a ChaCha20
//! generator. **A fixed seed in production means key reuse**: seed from OS entropy there.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod addr;
mod cbor;
pub mod chunk;
mod config;
mod connection;
pub mod frame;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod handshake;
mod hello;
mod identity;
pub mod message;
pub mod node;
mod queue;
mod rng;
mod time;
mod x25519;

pub use addr::{PeerAddr, PeerAddrParseError};
pub use cbor::CborError;
pub use config::{ConfigError, ConnectionConfig};
pub use connection::{
    CloseReason, Connection, ConnectionEvent, ConnectionOutput, ConnectionState, ConnectionStats,
    SendError, Violation,
};
pub use handshake::{
    noise_resolver, NoiseError, Role, TransportSuite, HANDSHAKE_OVERHEAD, MAX_FRAME_PLAINTEXT,
    MAX_NOISE_MESSAGE, NOISE_PARAMS, PROLOGUE, TAG_LEN,
};
pub use hello::{
    negotiate_version, Capabilities, Hello, AES_GCM_SINCE_VERSION, PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
};
pub use identity::{Keypair, PeerId, PeerIdParseError, KEY_LEN};
pub use message::{
    AppKind, Chunk, DecodeError, EncodedMessage, GoodbyeReason, Message, MessageKind, Priority,
};
pub use rng::SeededRng;
pub use time::Timestamp;

//! Micro-benchmarks of the sans-IO core alone, with no sockets and no runtime.
//!
//! Run with `cargo bench -p silver-p2p-bench --bench core`. Groups:
//!
//! - `raw_snow`: snow's transport encrypt+decrypt with the backend the core uses
//!   (`Noise_XX_25519_ChaChaPoly_BLAKE2s`, ring preferred, snow's own primitives as fallback),
//!   the baseline the core is compared with.
//! - `core_roundtrip`: `send` a batch on connection A, drain A's `Transmit`s into B with
//!   `handle_bytes`, drain B's `Message` events: encode, coalesce, encrypt, frame, decrypt,
//!   decode, both sides on one thread. Reported per payload byte and per message.
//! - `core_send` / `core_receive`: the two halves of that round trip measured separately.
//! - `codec`: message encode alone and frame decode alone.
//! - `handshake`: two connections from creation to both established, and snow's bare XX
//!   handshake for comparison.
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use silver_p2p_core::message::decode_frame;
use silver_p2p_core::{
    Capabilities, Connection, ConnectionConfig, ConnectionEvent, ConnectionOutput, ConnectionState,
    Hello, Keypair, Message, Role, SeededRng, Timestamp, NOISE_PARAMS, PROLOGUE, PROTOCOL_VERSION,
};
use snow::resolvers::{DefaultResolver, FallbackResolver, RingResolver};

/// Largest plaintext of one Noise transport message (65535 − 16-byte tag).
const FRAME_PLAINTEXT: usize = 65_519;
const NOW: Timestamp = Timestamp::ZERO;

/// Payload sizes and how many messages one iteration sends: enough that every iteration
/// moves at least 256 KiB, so coalescing of small messages has room to work.
const SIZES: [(&str, usize, usize); 4] = [
    ("256B", 256, 1000),
    ("1KiB", 1024, 1000),
    ("64KiB", 64 << 10, 32),
    ("1MiB", 1 << 20, 4),
];

// ----- raw snow -----

fn snow_builder() -> snow::Builder<'static> {
    let resolver = FallbackResolver::new(Box::new(RingResolver), Box::new(DefaultResolver));
    snow::Builder::with_resolver(NOISE_PARAMS.parse().unwrap(), Box::new(resolver))
        .prologue(PROLOGUE)
        .unwrap()
}

/// A completed in-memory XX handshake with bare snow: (initiator, responder).
fn snow_pair() -> (snow::TransportState, snow::TransportState) {
    let ka = snow_builder().generate_keypair().unwrap();
    let kb = snow_builder().generate_keypair().unwrap();
    snow_handshake(&ka.private, &kb.private)
}

fn snow_handshake(ka: &[u8], kb: &[u8]) -> (snow::TransportState, snow::TransportState) {
    let mut i = snow_builder()
        .local_private_key(ka)
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut r = snow_builder()
        .local_private_key(kb)
        .unwrap()
        .build_responder()
        .unwrap();
    let mut msg = [0u8; 1024];
    let mut payload = [0u8; 1024];
    let n = i.write_message(&[], &mut msg).unwrap();
    r.read_message(&msg[..n], &mut payload).unwrap();
    let n = r.write_message(&[], &mut msg).unwrap();
    i.read_message(&msg[..n], &mut payload).unwrap();
    let n = i.write_message(&[], &mut msg).unwrap();
    r.read_message(&msg[..n], &mut payload).unwrap();
    (
        i.into_transport_mode().unwrap(),
        r.into_transport_mode().unwrap(),
    )
}

fn bench_raw_snow(c: &mut Criterion) {
    let mut g = c.benchmark_group("raw_snow");
    for len in [FRAME_PLAINTEXT, 256] {
        let (mut a, mut b) = snow_pair();
        let plain = vec![0x5a_u8; len];
        let mut cipher = vec![0u8; len + 16];
        // Room for the tag too: ring then decrypts in place in the caller's buffer.
        let mut out = vec![0u8; len + 16];
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("encrypt_decrypt/{len}"), |bench| {
            bench.iter(|| {
                let n = a.write_message(black_box(&plain), &mut cipher).unwrap();
                let m = b.read_message(&cipher[..n], &mut out).unwrap();
                black_box(&out[..m]);
            })
        });
        // The output buffer sized to the plaintext exactly, as `Connection` sizes it: snow's
        // ring backend then decrypts into a temporary copy of the ciphertext.
        let mut exact = vec![0u8; len];
        g.bench_function(format!("encrypt_decrypt_exact_out/{len}"), |bench| {
            bench.iter(|| {
                let n = a.write_message(black_box(&plain), &mut cipher).unwrap();
                let m = b.read_message(&cipher[..n], &mut exact).unwrap();
                black_box(&exact[..m]);
            })
        });
    }
    g.finish();
}

// ----- connections in memory -----

/// A Hello without `AES_GCM`: the connections here run ChaCha20-Poly1305, what a node whose
/// `cipher` is unresolved or has no AES instructions uses, and what the README's figures
/// were measured with.
fn hello(name: &str) -> Arc<Hello> {
    Arc::new(Hello {
        network_id: "bench".into(),
        versions: vec![PROTOCOL_VERSION],
        capabilities: Capabilities::ALL.without(Capabilities::AES_GCM),
        listen_addrs: vec![],
        agent: name.into(),
    })
}

struct Fixture {
    config: Arc<ConnectionConfig>,
    hello_a: Arc<Hello>,
    hello_b: Arc<Hello>,
    key_a: Keypair,
    key_b: Keypair,
}

impl Fixture {
    fn new() -> Self {
        // The defaults are enough: the largest batch (4 × 1 MiB) is under the 16 MiB queue
        // bound and 1000 messages under the 65,536-message bound, and every `Transmit` is
        // reported written at once, so the 1 MiB in-flight window never closes.
        let config = Arc::new(ConnectionConfig::default());
        config.validate().unwrap();
        Fixture {
            config,
            hello_a: hello("a"),
            hello_b: hello("b"),
            key_a: Keypair::generate(&mut SeededRng::from_seed([1; 32])),
            key_b: Keypair::generate(&mut SeededRng::from_seed([2; 32])),
        }
    }

    /// Two connections from creation to both established.
    fn handshake(&self) -> (Connection, Connection) {
        let mut a = Connection::new(
            Role::Initiator,
            self.config.clone(),
            self.hello_a.clone(),
            &self.key_a,
            None,
            [3; 32],
            NOW,
        );
        let mut b = Connection::new(
            Role::Responder,
            self.config.clone(),
            self.hello_b.clone(),
            &self.key_b,
            None,
            [4; 32],
            NOW,
        );
        a.handle_connected(NOW);
        let mut established = 0;
        while pump_handshake(&mut a, &mut b, &mut established)
            | pump_handshake(&mut b, &mut a, &mut established)
        {}
        assert_eq!(established, 2);
        (a, b)
    }
}

/// Moves `from`'s output into `to`, counting `Established` events.
fn pump_handshake(from: &mut Connection, to: &mut Connection, established: &mut u32) -> bool {
    let mut moved = false;
    while let Some(out) = from.poll_output() {
        match out {
            ConnectionOutput::Transmit(bytes) => {
                from.handle_written(NOW, bytes.len());
                to.handle_bytes(NOW, &bytes);
                moved = true;
            }
            ConnectionOutput::Event(ConnectionEvent::Established { .. }) => *established += 1,
            other => panic!("unexpected output during the handshake: {other:?}"),
        }
    }
    moved
}

/// Drains `b`'s outputs; returns the number of application messages and their payload bytes.
fn drain_messages(b: &mut Connection) -> (usize, usize) {
    let (mut n, mut bytes) = (0, 0);
    while let Some(out) = b.poll_output() {
        match out {
            ConnectionOutput::Event(ConnectionEvent::Message(Message::App { data, .. })) => {
                n += 1;
                bytes += data.len();
                black_box(data);
            }
            other => panic!("unexpected output on the receiver: {other:?}"),
        }
    }
    (n, bytes)
}

fn queue_batch(a: &mut Connection, payload: &Bytes, count: usize) {
    for _ in 0..count {
        a.send(Message::App {
            kind: 1,
            data: payload.clone(),
        })
        .unwrap();
    }
}

/// One round trip of a batch: send on A, move every `Transmit` to B, drain B.
fn roundtrip(a: &mut Connection, b: &mut Connection, payload: &Bytes, count: usize) {
    queue_batch(a, payload, count);
    let mut got = 0;
    while let Some(out) = a.poll_output() {
        match out {
            ConnectionOutput::Transmit(bytes) => {
                a.handle_written(NOW, bytes.len());
                b.handle_bytes(NOW, &bytes);
                got += drain_messages(b).0;
            }
            other => panic!("unexpected output on the sender: {other:?}"),
        }
    }
    assert_eq!(got, count);
}

/// The sender half: send a batch and drain the `Transmit`s. Returns them.
fn send_side(a: &mut Connection, payload: &Bytes, count: usize, sink: &mut Vec<Vec<u8>>) {
    queue_batch(a, payload, count);
    while let Some(out) = a.poll_output() {
        match out {
            ConnectionOutput::Transmit(bytes) => {
                a.handle_written(NOW, bytes.len());
                sink.push(bytes);
            }
            other => panic!("unexpected output on the sender: {other:?}"),
        }
    }
}

fn payload(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (i * 31 + 7) as u8).collect::<Vec<u8>>())
}

fn bench_core_roundtrip(c: &mut Criterion) {
    let fx = Fixture::new();
    let mut g = c.benchmark_group("core_roundtrip");
    // Iterations of a few milliseconds: fewer samples keep the run short.
    g.sample_size(30);
    for (name, len, count) in SIZES {
        let data = payload(len);
        let (mut a, mut b) = fx.handshake();
        g.throughput(Throughput::Bytes((len * count) as u64));
        g.bench_function(format!("bytes/{name}x{count}"), |bench| {
            bench.iter(|| roundtrip(&mut a, &mut b, &data, count))
        });
        g.throughput(Throughput::Elements(count as u64));
        g.bench_function(format!("msgs/{name}x{count}"), |bench| {
            bench.iter(|| roundtrip(&mut a, &mut b, &data, count))
        });
        assert_eq!(a.state(), ConnectionState::Connected);
        assert_eq!(b.state(), ConnectionState::Connected);
    }
    g.finish();
}

fn bench_core_halves(c: &mut Criterion) {
    let fx = Fixture::new();
    let mut g = c.benchmark_group("core_send");
    // Iterations of a few milliseconds: fewer samples keep the run short.
    g.sample_size(30);
    for (name, len, count) in SIZES {
        let data = payload(len);
        let (mut a, _b) = fx.handshake();
        let mut sink = Vec::new();
        g.throughput(Throughput::Bytes((len * count) as u64));
        g.bench_function(format!("{name}x{count}"), |bench| {
            bench.iter(|| {
                send_side(&mut a, &data, count, &mut sink);
                sink.clear();
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("core_receive");
    // Iterations of a few milliseconds: fewer samples keep the run short.
    g.sample_size(30);
    for (name, len, count) in SIZES {
        let data = payload(len);
        let (mut a, mut b) = fx.handshake();
        let mut wire = Vec::new();
        g.throughput(Throughput::Bytes((len * count) as u64));
        g.bench_function(format!("{name}x{count}"), |bench| {
            // The sender's work happens outside the timed span; B must see A's frames in
            // nonce order, so each iteration receives exactly the batch just produced.
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    wire.clear();
                    send_side(&mut a, &data, count, &mut wire);
                    let start = Instant::now();
                    let mut got = 0;
                    for bytes in &wire {
                        b.handle_bytes(NOW, bytes);
                        got += drain_messages(&mut b).0;
                    }
                    total += start.elapsed();
                    assert_eq!(got, count);
                }
                total
            })
        });
    }
    g.finish();
}

fn bench_codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    for (name, len, count) in SIZES.into_iter().take(2) {
        let data = payload(len);
        let msgs: Vec<Message> = (0..count)
            .map(|_| Message::App {
                kind: 1,
                data: data.clone(),
            })
            .collect();
        let mut buf = Vec::with_capacity(count * (len + 8));
        g.throughput(Throughput::Elements(count as u64));
        g.bench_function(format!("encode/{name}x{count}"), |bench| {
            bench.iter(|| {
                buf.clear();
                for m in &msgs {
                    m.encode(&mut buf);
                }
                black_box(&buf);
            })
        });
        // One full frame's worth of messages, as the receiver decodes it.
        let per_frame = FRAME_PLAINTEXT / msgs[0].encoded_len();
        let mut frame = Vec::new();
        for m in &msgs[..per_frame] {
            m.encode(&mut frame);
        }
        let frame = Bytes::from(frame);
        g.throughput(Throughput::Elements(per_frame as u64));
        g.bench_function(format!("decode_frame/{name}x{per_frame}"), |bench| {
            bench.iter(|| {
                let n = decode_frame(black_box(&frame), |m| {
                    black_box(m);
                })
                .unwrap();
                assert_eq!(n, per_frame);
            })
        });
        // Building and dropping the messages `send` takes by value (Bytes refcounting).
        g.throughput(Throughput::Elements(count as u64));
        g.bench_function(format!("make_and_drop/{name}x{count}"), |bench| {
            bench.iter(|| {
                for _ in 0..count {
                    black_box(Message::App {
                        kind: 1,
                        data: data.clone(),
                    });
                }
            })
        });
    }
    g.finish();
}

fn bench_handshake(c: &mut Criterion) {
    let fx = Fixture::new();
    let mut g = c.benchmark_group("handshake");
    g.bench_function("connection_pair", |bench| {
        bench.iter_batched(
            || (),
            |()| fx.handshake(),
            // Dropping the pair is left out of the timing.
            BatchSize::SmallInput,
        )
    });
    let ka = snow_builder().generate_keypair().unwrap();
    let kb = snow_builder().generate_keypair().unwrap();
    g.bench_function("raw_snow_xx", |bench| {
        bench.iter_batched(
            || (),
            |()| snow_handshake(&ka.private, &kb.private),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_raw_snow,
    bench_core_roundtrip,
    bench_core_halves,
    bench_codec,
    bench_handshake
);
criterion_main!(benches);

//! Floors: the same measurements as `connect`, `rtt` and `broadcast`, done with nothing but
//! the runtime, loopback TCP and (for `floor-connect`) snow, in the same process shape (one
//! tokio runtime with the same workers). They contain no library code, so each tells how
//! much of the library's figure is the machine's: system calls, wake-ups and X25519. The
//! library cannot be faster than its floor; the ratio to it is what the library adds.
//! Each takes the options of the scenario it is the floor of (`broadcast`'s `--pubsub`
//! does not apply).
//!
//! * `floor-connect`: TCP connect and accept, then a bare Noise XX handshake with snow
//!   (the library's pattern and cryptography, static keys made beforehand, no payloads)
//!   over 2-byte length-prefixed packets, until the dialer has written message 3.
//! * `floor-rtt`: a 64-byte ping answered by a 64-byte pong over one socket, one in flight,
//!   the answering side a task that echoes (the library's server is its node's loop).
//! * `floor-broadcast`: one task writes the same 1 KiB to P sockets; each receiving socket
//!   is read by its own task, and the round ends when the last one has its copy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::{broadcast, connect, rtt, Report};
use crate::common::{self, micros, millis};

async fn listener() -> std::io::Result<(TcpListener, std::net::SocketAddr)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

async fn write_packet(s: &mut TcpStream, body: &[u8]) -> std::io::Result<()> {
    s.write_all(&silver_p2p_core::frame::encode_packet(body))
        .await
}

async fn read_packet(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await?;
    let n = u16::from_be_bytes(len) as usize;
    s.read_exact(&mut buf[..n]).await?;
    Ok(n)
}

/// A snow builder with the library's own cryptography (its X25519 and AEAD), so the floor
/// measures the machine's cost of the same handshake, not a slower implementation of it.
/// Each builder draws its keys from its own seed.
fn noise_builder() -> snow::Builder<'static> {
    static SEEDS: AtomicUsize = AtomicUsize::new(1);
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(SEEDS.fetch_add(1, Ordering::Relaxed) as u64).to_le_bytes());
    snow::Builder::with_resolver(
        silver_p2p_core::NOISE_PARAMS
            .parse()
            .expect("valid pattern"),
        silver_p2p_core::noise_resolver(silver_p2p_core::SeededRng::from_seed(seed)),
    )
}

/// Runs `floor-connect`.
pub async fn run_connect(o: connect::Opts, budget: Duration) -> Report {
    let deadline = Instant::now() + budget;
    let (l, addr) = listener().await.expect("bind");
    let responder_key = noise_builder().generate_keypair().expect("keypair");
    let initiator_key = noise_builder().generate_keypair().expect("keypair");
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let _ = s.set_nodelay(true);
            let key = responder_key.private.clone();
            tokio::spawn(async move {
                let mut hs = noise_builder()
                    .local_private_key(&key)
                    .expect("key")
                    .build_responder()
                    .expect("responder");
                let (mut buf, mut out) = (vec![0u8; 1024], vec![0u8; 1024]);
                let result: Result<(), Box<dyn std::error::Error + Send + Sync>> = async {
                    let n = read_packet(&mut s, &mut buf).await?;
                    hs.read_message(&buf[..n], &mut out)?;
                    let n = hs.write_message(&[], &mut out)?;
                    write_packet(&mut s, &out[..n]).await?;
                    let n = read_packet(&mut s, &mut buf).await?;
                    hs.read_message(&buf[..n], &mut out)?;
                    Ok(())
                }
                .await;
                drop(result);
            });
        }
    });
    let mut samples = Vec::with_capacity(o.n);
    let mut failure = None;
    for i in 0..(o.warmup + o.n) {
        if Instant::now() > deadline {
            failure = Some(format!("time budget exhausted after {i} connections"));
            break;
        }
        let t0 = Instant::now();
        let result: Result<TcpStream, Box<dyn std::error::Error + Send + Sync>> = async {
            let mut s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            let mut hs = noise_builder()
                .local_private_key(&initiator_key.private)?
                .build_initiator()?;
            let (mut buf, mut out) = (vec![0u8; 1024], vec![0u8; 1024]);
            let n = hs.write_message(&[], &mut out)?;
            write_packet(&mut s, &out[..n]).await?;
            let n = read_packet(&mut s, &mut buf).await?;
            hs.read_message(&buf[..n], &mut out)?;
            let n = hs.write_message(&[], &mut out)?;
            write_packet(&mut s, &out[..n]).await?;
            Ok(s)
        }
        .await;
        match result {
            Ok(s) => {
                if i >= o.warmup {
                    samples.push(micros(t0.elapsed()));
                }
                drop(s);
            }
            Err(e) => {
                failure = Some(format!("connection {i}: {e}"));
                break;
            }
        }
    }
    server.abort();
    Report {
        scenario: "floor-connect",
        params: json!({
            "n": o.n,
            "warmup": o.warmup,
            "mechanism": "tokio TCP connect + accept (nodelay), then snow Noise_XX_25519_ChaChaPoly_BLAKE2s through the library's crypto resolver (silver_p2p_core::noise_resolver) with empty payloads over 2-byte length-prefixed packets; timed until the dialer has written message 3",
        }),
        completed: failure.is_none() && samples.len() == o.n,
        failure,
        results: json!({ "connect_us": common::summarize(&samples) }),
    }
}

/// Runs `floor-rtt`.
pub async fn run_rtt(o: rtt::Opts, budget: Duration) -> Report {
    let deadline = Instant::now() + budget;
    let (l, addr) = listener().await.expect("bind");
    let size = o.size.max(1);
    let server = tokio::spawn(async move {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        let _ = s.set_nodelay(true);
        let mut buf = vec![0u8; size];
        while s.read_exact(&mut buf).await.is_ok() {
            if s.write_all(&buf).await.is_err() {
                return;
            }
        }
    });
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let (ping, mut pong) = (vec![0xa5u8; size], vec![0u8; size]);
    let mut samples = Vec::with_capacity(o.n);
    let mut failure = None;
    for i in 0..(o.warmup + o.n) {
        if Instant::now() > deadline {
            failure = Some(format!("time budget exhausted after {i} round trips"));
            break;
        }
        let t0 = Instant::now();
        if let Err(e) = async {
            s.write_all(&ping).await?;
            s.read_exact(&mut pong).await.map(|_| ())
        }
        .await
        {
            failure = Some(format!("round trip {i}: {e}"));
            break;
        }
        if i >= o.warmup {
            samples.push(micros(t0.elapsed()));
        }
    }
    drop(s);
    server.abort();
    let summary = common::summarize(&samples);
    let median = summary["median"].as_f64().unwrap_or(f64::NAN);
    Report {
        scenario: "floor-rtt",
        params: json!({
            "n": o.n,
            "warmup": o.warmup,
            "size": size,
            "mechanism": "tokio TCP over loopback (nodelay), no encryption or framing: write_all(ping) then read_exact(pong); the far side is a task that reads and writes back",
        }),
        completed: failure.is_none() && samples.len() == o.n,
        failure,
        results: json!({
            "rtt_us": summary,
            "round_trips_per_sec": common::round3(1e6 / median),
        }),
    }
}

/// Runs `floor-broadcast`.
pub async fn run_broadcast(o: broadcast::Opts, budget: Duration) -> Report {
    let deadline = Instant::now() + budget;
    let (l, addr) = listener().await.expect("bind");
    let size = o.size.max(1);
    let received = Arc::new(AtomicUsize::new(0));
    let all_in = Arc::new(Notify::new());
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..o.subscribers {
        let mut r = TcpStream::connect(addr).await.expect("connect");
        r.set_nodelay(true).expect("nodelay");
        let (w, _) = l.accept().await.expect("accept");
        w.set_nodelay(true).expect("nodelay");
        writers.push(w);
        let (received, all_in, subscribers) = (received.clone(), all_in.clone(), o.subscribers);
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; size];
            while r.read_exact(&mut buf).await.is_ok() {
                if received.fetch_add(1, Ordering::AcqRel) + 1 == subscribers {
                    all_in.notify_one();
                }
            }
        }));
    }
    let copy = vec![0x42u8; size];
    let mut samples = Vec::with_capacity(o.rounds);
    let mut failure = None;
    for round in 0..(o.warmup + o.rounds) {
        if Instant::now() > deadline {
            failure = Some(format!("time budget exhausted after {round} rounds"));
            break;
        }
        received.store(0, Ordering::Release);
        let t0 = Instant::now();
        for w in &mut writers {
            if let Err(e) = w.write_all(&copy).await {
                failure = Some(format!("round {round}: {e}"));
                break;
            }
        }
        if failure.is_some() {
            break;
        }
        let round_timeout = Duration::from_secs_f64(o.round_timeout_s);
        if tokio::time::timeout(round_timeout, all_in.notified())
            .await
            .is_err()
        {
            failure = Some(format!("round {round}: not every copy arrived"));
            break;
        }
        if round >= o.warmup {
            samples.push(millis(t0.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(o.gap_ms)).await;
    }
    for r in readers {
        r.abort();
    }
    Report {
        scenario: "floor-broadcast",
        params: json!({
            "subscribers": o.subscribers,
            "rounds": o.rounds,
            "warmup": o.warmup,
            "size": size,
            "mechanism": "one task write_all()s the same bytes to P loopback TCP sockets (nodelay) in turn; each receiving socket has its own reader task; the round ends when the last reader has its copy",
        }),
        completed: failure.is_none() && samples.len() == o.rounds,
        failure,
        results: json!({ "all_received_ms": common::summarize(&samples) }),
    }
}

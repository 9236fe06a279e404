//! Two silver-p2p cores in one process, joined by an in-memory link in virtual time: they
//! handshake, exchange every message kind (a chunked 2 MiB block included), measure RTT with
//! keepalive pings and say goodbye. Every step is printed.
//!
//! Run: `cargo run -p silver-p2p-core --example in_memory_pair`

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use silver_p2p_core::*;

struct Node {
    name: &'static str,
    conn: Connection,
}

/// Drains `from`'s outputs, delivering bytes to `to`. Returns whether anything happened.
fn pump(from: &mut Node, to: &mut Node, now: Timestamp) -> bool {
    let mut any = false;
    while let Some(out) = from.conn.poll_output() {
        any = true;
        match out {
            ConnectionOutput::Transmit(bytes) => {
                println!(
                    "  {} -> {}: {} bytes on the wire",
                    from.name,
                    to.name,
                    bytes.len()
                );
                from.conn.handle_written(now, bytes.len());
                to.conn.handle_bytes(now, &bytes);
            }
            ConnectionOutput::Event(ConnectionEvent::Established {
                peer,
                hello,
                version,
            }) => println!(
                "  {}: connected to {} ({}, network {:?}, protocol v{version})",
                from.name,
                peer.short(),
                hello.agent,
                hello.network_id
            ),
            ConnectionOutput::Event(ConnectionEvent::Message(m)) => {
                println!("  {}: received {}", from.name, describe(&m))
            }
            ConnectionOutput::Event(ConnectionEvent::Closed(reason)) => {
                println!("  {}: closed ({reason})", from.name)
            }
            ConnectionOutput::Close => println!("  {}: closes its socket", from.name),
            other => println!("  {}: {other:?}", from.name),
        }
    }
    any
}

fn describe(m: &Message) -> String {
    match m {
        Message::Block { data } if data.len() > 64 => format!("Block of {} bytes", data.len()),
        other => format!("{other:?}"),
    }
}

fn run(a: &mut Node, b: &mut Node, now: Timestamp) {
    while pump(a, b, now) | pump(b, a, now) {}
}

fn main() {
    let config = Arc::new(ConnectionConfig::default());
    let hello = |agent: &str| {
        Arc::new(Hello {
            network_id: "silver-devnet".into(),
            versions: vec![PROTOCOL_VERSION],
            capabilities: Capabilities::ALL,
            listen_addrs: vec!["127.0.0.1:7000".parse().unwrap()],
            agent: agent.into(),
        })
    };
    // Fixed seeds make this run reproducible; real nodes seed from OS entropy.
    let key_a = Keypair::generate(&mut SeededRng::from_seed([1; 32]));
    let key_b = Keypair::generate(&mut SeededRng::from_seed([2; 32]));
    println!("alice is {}\nbob   is {}", key_a.peer_id(), key_b.peer_id());
    let mut now = Timestamp::ZERO;
    let mut alice = Node {
        name: "alice",
        conn: Connection::new(
            Role::Initiator,
            config.clone(),
            hello("alice/0.1"),
            &key_a,
            Some(key_b.peer_id()), // alice dials bob's pinned identity
            [3; 32],
            now,
        ),
    };
    let mut bob = Node {
        name: "bob",
        conn: Connection::new(
            Role::Responder,
            config,
            hello("bob/0.1"),
            &key_b,
            None,
            [4; 32],
            now,
        ),
    };

    println!("\n== handshake (Noise XX, Hellos in messages 2 and 3)");
    alice.conn.handle_connected(now);
    run(&mut alice, &mut bob, now);

    println!("\n== every message kind, coalesced into one frame each way");
    let b = |s: &'static str| Bytes::from_static(s.as_bytes());
    let messages = vec![
        Message::GetPeers { max: 100 },
        Message::Peers {
            addrs: vec!["10.0.0.1:7000".parse().unwrap()],
        },
        Message::Transaction { data: b("tx-1") },
        Message::Block { data: b("block-1") },
        Message::GetBlock {
            request_id: 1,
            hash: b("hash-1"),
        },
        Message::GetTransaction {
            request_id: 2,
            hash: b("hash-2"),
        },
        Message::Response {
            request_id: 1,
            data: b("block-1"),
        },
        Message::NotFound { request_id: 2 },
        Message::Request {
            request_id: 3,
            kind: 100,
            data: b("app-request"),
        },
        Message::Unicast {
            message_id: 4,
            kind: 101,
            data: b("hello bob"),
        },
        Message::Ack { message_id: 4 },
        Message::App {
            kind: 102,
            data: b("app-gossip"),
        },
    ];
    for m in messages {
        alice.conn.send(m).expect("queue has room");
    }
    run(&mut alice, &mut bob, now);

    println!("\n== a 2 MiB block travels as chunks and arrives whole");
    alice
        .conn
        .send(Message::Block {
            data: Bytes::from(vec![7u8; 2 << 20]),
        })
        .unwrap();
    run(&mut alice, &mut bob, now);

    println!("\n== keepalive: a minute of virtual time, pings every 30 s");
    for _ in 0..2 {
        now += Duration::from_secs(30);
        alice.conn.handle_timeout(now);
        bob.conn.handle_timeout(now);
        run(&mut alice, &mut bob, now);
    }
    println!(
        "  alice: {} pings sent, {} pongs matched",
        alice.conn.stats().pings_sent,
        alice.conn.stats().pongs_matched
    );

    println!("\n== goodbye");
    alice.conn.close(now, GoodbyeReason::Normal);
    run(&mut alice, &mut bob, now);

    let s = alice.conn.stats();
    println!(
        "\nalice sent {} messages in {} frames ({} bytes); bob received {} messages",
        s.messages_sent,
        s.frames_sent,
        s.bytes_sent,
        bob.conn.stats().messages_received
    );
}

//! A peer that completes the handshake and then never reads: our memory for it stays within
//! the configured bounds, its copies of gossip are dropped (and counted), and other peers
//! keep being served.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use silver_p2p::driver::testing::{test_config, wait_for, within};
use silver_p2p::node::{Event, GossipMessage};
use silver_p2p::tokio::NetworkManager;
use silver_p2p::{
    Capabilities, Connection, ConnectionConfig, ConnectionEvent, ConnectionOutput, Hello, Keypair,
    Role, SeededRng, Timestamp, PROTOCOL_VERSION,
};

/// Handshakes with the node at `addr` using the core's own `Connection` over a blocking
/// socket, then returns the socket, which the caller never reads again.
fn stalled_peer(addr: SocketAddr, network: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    let key = Keypair::generate(&mut SeededRng::from_seed([77; 32]));
    let hello = Arc::new(Hello {
        network_id: network.into(),
        versions: vec![PROTOCOL_VERSION],
        capabilities: Capabilities::ALL,
        listen_addrs: vec![],
        agent: "stalled".into(),
    });
    let now = Timestamp::ZERO;
    let mut c = Connection::new(
        Role::Initiator,
        Arc::new(ConnectionConfig::default()),
        hello,
        &key,
        None,
        [5; 32],
        now,
    );
    c.handle_connected(now);
    let mut buf = vec![0u8; 4096];
    loop {
        while let Some(o) = c.poll_output() {
            match o {
                ConnectionOutput::Transmit(b) => s.write_all(&b).unwrap(),
                ConnectionOutput::Event(ConnectionEvent::Established { .. }) => return s,
                ConnectionOutput::Event(ConnectionEvent::Closed(r)) => {
                    panic!("handshake failed: {r}")
                }
                _ => {}
            }
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed during handshake");
        c.handle_bytes(now, &buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_cannot_grow_our_memory() {
    const QUEUE: usize = 2 << 20;
    const WINDOW: usize = 256 << 10;
    let mut config = test_config();
    config.connection.max_queued_bytes = QUEUE;
    config.connection.max_message_size = 1 << 20;
    config.connection.max_in_flight_bytes = WINDOW;
    config.rate_limit.byte_burst = 4 << 20;
    let a = NetworkManager::new(config, vec!["127.0.0.1:0".parse().unwrap()])
        .start()
        .await
        .unwrap();
    let c = NetworkManager::new(test_config(), vec!["127.0.0.1:0".parse().unwrap()])
        .start()
        .await
        .unwrap();
    let mut c_events = c.events();
    c.connect_to_peer(a.dial_addr().unwrap()).await.unwrap();
    let addr = a.listen_addrs()[0];
    let stalled = tokio::task::spawn_blocking(move || stalled_peer(addr, "adapter-test"))
        .await
        .unwrap();
    within("both peers connected", async {
        while a.peers().await.unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    // 40 MB of gossip in batches of 1 MB; c, a healthy peer, takes each batch before the
    // next, while the stalled peer can take at most its queue and window of it all.
    let mut peak = 0;
    for batch in 0..40u32 {
        for i in 0..10u32 {
            let mut data = vec![0u8; 100_000];
            data[..4].copy_from_slice(&(batch * 10 + i).to_be_bytes());
            a.broadcast(GossipMessage::Block(Bytes::from(data)))
                .await
                .unwrap();
        }
        peak = peak.max(a.stats().await.unwrap().buffered_bytes);
        within("c receives the batch", async {
            for _ in 0..10 {
                wait_for(&mut c_events, |e| {
                    matches!(e, Event::Gossip { .. }).then_some(())
                })
                .await;
            }
        })
        .await;
    }
    let stats = a.stats().await.unwrap();
    peak = peak.max(stats.buffered_bytes);
    assert!(
        stats.counters.gossip_dropped_queue_full > 0,
        "the stalled peer lost gossip"
    );
    // The stalled peer's queue and window, plus c's window and one frame of slack each.
    let bound = QUEUE + 2 * (WINDOW + 70_000) + (1 << 20);
    assert!(peak <= bound, "peak {peak} above {bound}");
    drop(stalled);
    a.stop(Duration::from_secs(1)).await.unwrap();
    c.stop(Duration::from_secs(1)).await.unwrap();
}

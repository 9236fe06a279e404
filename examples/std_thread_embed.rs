//! Embedding silver-p2p with plain threads and a blocking handle, no async runtime.
//! Run: `cargo run --example std_thread_embed --features std-thread`
use std::time::Duration;

use bytes::Bytes;
use silver_p2p::node::{Event, GossipMessage, NodeConfig};
use silver_p2p::std_thread::NetworkManager;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = || vec!["127.0.0.1:0".parse().unwrap()];
    let alice = NetworkManager::new(NodeConfig::default(), listen()).start()?;
    let bob = NetworkManager::new(NodeConfig::default(), listen()).start()?;
    let mut events = bob.events();
    alice.connect_to_peer(bob.dial_addr().unwrap())?;
    while let Some(e) = events.recv_blocking() {
        match e {
            Event::PeerConnected { .. } => {
                alice.broadcast(GossipMessage::Transaction(Bytes::from_static(b"tx")))?;
            }
            Event::Gossip { message, .. } => {
                println!("bob got {message:?}");
                break;
            }
            _ => {}
        }
    }
    alice.unicast(bob.peer_id(), 1, Bytes::from_static(b"hello bob"))?; // blocks until acked
    println!("{:?}", alice.stop(Duration::from_secs(2))?);
    Ok(())
}

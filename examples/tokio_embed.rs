//! Embedding silver-p2p in a tokio application. Run: `cargo run --example tokio_embed`
use std::time::Duration;

use bytes::Bytes;
use silver_p2p::node::{Event, GossipMessage, NodeConfig};
use silver_p2p::tokio::NetworkManager;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = || vec!["127.0.0.1:0".parse().unwrap()];
    let alice = NetworkManager::new(NodeConfig::default(), listen())
        .start()
        .await?;
    let bob = NetworkManager::new(NodeConfig::default(), listen())
        .start()
        .await?;
    let mut events = bob.events();
    alice.connect_to_peer(bob.dial_addr().unwrap()).await?;
    while let Some(e) = events.next().await {
        match e {
            Event::PeerConnected { .. } => {
                alice
                    .broadcast(GossipMessage::Transaction(Bytes::from_static(b"tx")))
                    .await?;
            }
            Event::Gossip { message, from, .. } => {
                println!("bob got {message:?} from {}", from.short());
                break;
            }
            _ => {}
        }
    }
    alice
        .unicast(bob.peer_id(), 1, Bytes::from_static(b"hello bob"))
        .await?; // acknowledged
    alice
        .send(bob.peer_id(), 2, Bytes::from_static(b"tick"))
        .await?; // queued; no acknowledgement
    let frame = *b"tock";
    alice.send_slice(bob.peer_id(), 2, &frame).await?; // the same from a borrowed buffer (copied)
    let mut direct = 0;
    while direct < 2 {
        match events.next().await {
            Some(Event::Direct { data, .. }) => {
                println!("bob got {data:?}");
                direct += 1;
            }
            Some(_) => {}
            None => break,
        }
    }
    println!("{:?}", alice.stop(Duration::from_secs(2)).await?);
    Ok(())
}

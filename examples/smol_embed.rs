//! Embedding silver-p2p in a smol application. Run: `cargo run --example smol_embed --features smol`
use std::time::Duration;

use bytes::Bytes;
use silver_p2p::node::{Event, GossipMessage, NodeConfig};
use silver_p2p::smol::NetworkManager;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(async {
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
                Event::Gossip { message, .. } => {
                    println!("bob got {message:?}");
                    break;
                }
                _ => {}
            }
        }
        println!("{:?}", alice.stop(Duration::from_secs(2)).await?);
        Ok(())
    })
}

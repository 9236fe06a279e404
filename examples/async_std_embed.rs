//! Embedding silver-p2p in an async-std application (async-std is discontinued
//! upstream; the smol example is the same code with `smol::block_on`).
//! Run: `cargo run --example async_std_embed --features async-std`
use std::time::Duration;

use bytes::Bytes;
use silver_p2p::async_std::NetworkManager;
use silver_p2p::node::{Event, GossipMessage, NodeConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    async_std::task::block_on(async {
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

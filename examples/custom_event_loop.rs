//! Write your own adapter: a complete single-threaded event loop over mio driving the
//! sans-IO `Node` directly — no async runtime, no driver crate. Two nodes run in two
//! threads, connect, and one broadcasts a block to the other.
//!
//! Run: `cargo run --example custom_event_loop`

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use silver_p2p::node::*;
use silver_p2p::{Keypair, PeerAddr, SeededRng, Timestamp};

const LISTENER: Token = Token(usize::MAX);

struct Socket {
    stream: TcpStream,
    out: Vec<u8>,
    connecting: bool,
    close_when_flushed: bool,
    paused: bool,
}

/// Runs one node until `stop` returns true for an event, or `limit` passes. `seed` must be
/// fresh OS entropy in production; fixed here to keep the example self-contained.
pub fn run_node(
    seed: u8,
    listener: std::net::TcpListener,
    dial: Option<PeerAddr>,
    mut on_event: impl FnMut(&mut Node, Timestamp, &Event) -> bool,
    limit: Duration,
) -> std::io::Result<()> {
    let epoch = Instant::now();
    let clock = || Timestamp::from_nanos(epoch.elapsed().as_nanos() as u64);
    let key = Keypair::generate(&mut SeededRng::from_seed([seed; 32]));
    let config = NodeConfig {
        listen_addrs: vec![listener.local_addr()?],
        ..Default::default()
    };
    let mut node =
        Node::new(config, key, [seed.wrapping_add(100); 32], clock()).expect("valid config");
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut sockets: BTreeMap<ConnectionId, Socket> = BTreeMap::new();
    let mut events = Events::with_capacity(256);
    let mut buf = vec![0u8; 64 * 1024];
    if let Some(addr) = dial {
        node.connect(clock(), addr).expect("dial allowed");
    }
    loop {
        // 1. Drain the node's outputs and act on each.
        while let Some(out) = node.poll_output() {
            match out {
                Output::Dial { conn, addr } => {
                    let mut stream = TcpStream::connect(addr)?;
                    poll.registry().register(
                        &mut stream,
                        Token(conn.0 as usize),
                        Interest::WRITABLE,
                    )?;
                    sockets.insert(
                        conn,
                        Socket {
                            stream,
                            out: Vec::new(),
                            connecting: true,
                            close_when_flushed: false,
                            paused: false,
                        },
                    );
                }
                Output::Transmit { conn, bytes } => {
                    if let Some(s) = sockets.get_mut(&conn) {
                        s.out.extend_from_slice(&bytes);
                    }
                }
                Output::Close { conn } => {
                    if let Some(s) = sockets.get_mut(&conn) {
                        s.close_when_flushed = true;
                    }
                }
                Output::PauseRead { conn } | Output::ResumeRead { conn } => {
                    if let Some(s) = sockets.get_mut(&conn) {
                        s.paused = !s.paused;
                    }
                }
                Output::Event(e) if on_event(&mut node, clock(), &e) => return Ok(()),
                _ => {}
            }
        }
        // Write what we can; report it; close flushed sockets.
        let mut done = Vec::new();
        for (conn, s) in sockets.iter_mut() {
            if s.connecting {
                continue;
            }
            while !s.out.is_empty() {
                match s.stream.write(&s.out) {
                    Ok(n) => {
                        s.out.drain(..n);
                        node.handle_input(
                            clock(),
                            Input::Written {
                                conn: *conn,
                                bytes: n,
                            },
                        );
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => {
                        node.handle_input(
                            clock(),
                            Input::Closed {
                                conn: *conn,
                                error: Some(e.to_string()),
                            },
                        );
                        done.push(*conn);
                        break;
                    }
                }
            }
            if s.out.is_empty() && s.close_when_flushed {
                done.push(*conn);
            }
            let mut interest = if s.paused {
                Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if !s.out.is_empty() && !s.paused {
                interest = interest.add(Interest::WRITABLE);
            }
            poll.registry()
                .reregister(&mut s.stream, Token(conn.0 as usize), interest)?;
        }
        for conn in done {
            sockets.remove(&conn);
        }
        if epoch.elapsed() > limit {
            return Err(std::io::Error::new(
                ErrorKind::TimedOut,
                "example ran out of time",
            ));
        }
        // 2. Wait for sockets or the node's next deadline (never past our own limit).
        let now = clock();
        let wait = node
            .poll_timeout()
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or(limit)
            .min(Duration::from_millis(100));
        poll.poll(&mut events, Some(wait))?;
        // 3. Apply what happened, with the time read now.
        for ev in events.iter() {
            if ev.token() == LISTENER {
                while let Ok((mut stream, remote)) = listener.accept() {
                    if let Ok(conn) = node.accept(clock(), remote) {
                        poll.registry().register(
                            &mut stream,
                            Token(conn.0 as usize),
                            Interest::READABLE,
                        )?;
                        sockets.insert(
                            conn,
                            Socket {
                                stream,
                                out: Vec::new(),
                                connecting: false,
                                close_when_flushed: false,
                                paused: false,
                            },
                        );
                    }
                }
                continue;
            }
            let conn = ConnectionId(ev.token().0 as u64);
            let Some(s) = sockets.get_mut(&conn) else {
                continue;
            };
            if s.connecting && ev.is_writable() {
                s.connecting = false;
                let _ = s.stream.set_nodelay(true);
                match s.stream.peer_addr() {
                    Ok(_) => node.handle_input(clock(), Input::Connected { conn }),
                    Err(e) => node.handle_input(
                        clock(),
                        Input::Closed {
                            conn,
                            error: Some(e.to_string()),
                        },
                    ),
                }
            }
            if ev.is_readable() && !s.paused {
                loop {
                    match s.stream.read(&mut buf) {
                        Ok(0) => {
                            node.handle_input(clock(), Input::Closed { conn, error: None });
                            break;
                        }
                        Ok(n) => node.handle_input(
                            clock(),
                            Input::Received {
                                conn,
                                bytes: &buf[..n],
                            },
                        ),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            node.handle_input(
                                clock(),
                                Input::Closed {
                                    conn,
                                    error: Some(e.to_string()),
                                },
                            );
                            break;
                        }
                    }
                }
            }
        }
        // The deadline may have passed while we waited for sockets: check the clock ourselves.
        if node.poll_timeout().is_some_and(|t| t <= clock()) {
            node.handle_input(clock(), Input::Timeout);
        }
    }
}

/// Two nodes: the second dials the first and broadcasts a block once connected; returns when
/// the first node's application has it.
pub fn run_pair() -> std::io::Result<()> {
    let l1 = std::net::TcpListener::bind("127.0.0.1:0")?;
    let l2 = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr1: SocketAddr = l1.local_addr()?;
    let id1 = Keypair::generate(&mut SeededRng::from_seed([1; 32])).peer_id();
    let receiver = std::thread::spawn(move || {
        run_node(
            1,
            l1,
            None,
            |_, _, e| {
                if let Event::Gossip { message, from, .. } = e {
                    println!("node 1 received {message:?} from {}", from.short());
                    return true;
                }
                false
            },
            Duration::from_secs(10),
        )
    });
    run_node(
        2,
        l2,
        Some(PeerAddr::pinned(id1, addr1)),
        |node, now, e| {
            match e {
                Event::PeerConnected { peer, .. } => {
                    println!("node 2 connected to {}", peer.short());
                    let block =
                        GossipMessage::Block(Bytes::from_static(b"block from a hand-written loop"));
                    node.broadcast(now, block, BroadcastOptions::default())
                        .expect("connected");
                    false
                }
                // The receiver stops once it has the block, which closes our connection.
                Event::PeerDisconnected { .. } => true,
                _ => false,
            }
        },
        Duration::from_secs(10),
    )?;
    receiver.join().expect("receiver thread")
}

#[allow(dead_code)] // also compiled into the test that runs `run_pair`
fn main() -> std::io::Result<()> {
    run_pair()
}

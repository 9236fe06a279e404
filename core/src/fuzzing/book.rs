//! Targets over the persistent and operator-facing formats: the address book (operations
//! and snapshots) and the node configuration (TOML).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use arbitrary::{Arbitrary, Unstructured};

use crate::node::addrbook::{AddrSource, AddressBook, AddressBookConfig};
use crate::node::NodeConfig;
use crate::{PeerAddr, SeededRng, Timestamp};

/// An address the fuzzer picks from a small space, so operations hit the same entries,
/// buckets and netgroups often.
#[derive(Debug, Arbitrary)]
struct FuzzAddr {
    v6: bool,
    group: u8,
    host: u8,
    port: u8,
    pinned: Option<u8>,
}

impl FuzzAddr {
    fn socket(&self) -> SocketAddr {
        let ip = if self.v6 {
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                u16::from(self.group),
                0,
                0,
                0,
                0,
                u16::from(self.host),
            ))
        } else {
            IpAddr::V4(Ipv4Addr::new(10, self.group % 8, 0, self.host))
        };
        // Port 0 is undialable: the book must reject it.
        SocketAddr::new(ip, u16::from(self.port % 4) * 1000)
    }

    fn peer_addr(&self) -> PeerAddr {
        match self.pinned {
            Some(k) => PeerAddr::pinned(super::conn::keypair(k % 4 + 1).peer_id(), self.socket()),
            None => PeerAddr::new(self.socket()),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum BookOp {
    Add {
        addr: FuzzAddr,
        source: u8,
        from: u8,
    },
    Attempt(FuzzAddr),
    Success(FuzzAddr),
    Failure(FuzzAddr),
    Remove(FuzzAddr),
    Select {
        avoid_first: bool,
    },
    Sample(u16),
    Advance(u32),
    RoundTrip,
}

/// `address_book`: with first byte even, the rest is snapshot bytes given to
/// [`AddressBook::restore`]; otherwise it is a program of operations on a book with small
/// fuzzer-chosen bounds. Either way the book must stay within its configured bounds, its
/// counters must agree with its contents, answers (`select`, `sample`) must come from the
/// book, and a snapshot must restore to the same entries.
pub fn address_book(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let config = AddressBookConfig::default();
        if let Ok(book) = AddressBook::restore(config, [1; 32], rest) {
            check_book(&book);
            check_round_trip(&book, [1; 32]);
        }
        return;
    }
    let mut u = Unstructured::new(rest);
    let config = small_book_config(&mut u);
    let mut book = AddressBook::new(config, [2; 32]);
    let mut rng = SeededRng::from_seed([3; 32]);
    let mut now = Timestamp::from_secs(1);
    let mut taken = 0;
    while let Some(op) = super::next_step::<BookOp>(&mut u, &mut taken, 512) {
        match op {
            BookOp::Add { addr, source, from } => {
                let source = match source % 4 {
                    0 => AddrSource::Bootstrap,
                    1 => AddrSource::Manual,
                    2 => AddrSource::Inbound,
                    _ => AddrSource::Peer(IpAddr::V4(Ipv4Addr::new(172, from % 8, 0, from))),
                };
                if book.add(now, addr.peer_addr(), source) {
                    assert!(book.contains(&addr.socket()), "an added address is missing");
                }
            }
            BookOp::Attempt(a) => book.mark_attempt(now, &a.socket()),
            BookOp::Success(a) => {
                let id = super::conn::keypair(a.pinned.unwrap_or(0) % 4 + 1).peer_id();
                book.mark_success(now, &a.socket(), id);
            }
            BookOp::Failure(a) => book.mark_failure(now, &a.socket()),
            BookOp::Remove(a) => {
                book.remove(&a.socket());
                assert!(!book.contains(&a.socket()), "a removed address remains");
            }
            BookOp::Select { avoid_first } => {
                let avoid = BTreeSet::new();
                let first = book.iter().next().map(|(s, _)| s);
                let exclude = |a: &PeerAddr| avoid_first && Some(a.socket) == first;
                if let Some(picked) = book.select(now, &mut rng, exclude, &avoid) {
                    assert!(book.contains(&picked.socket), "select invented an address");
                    assert!(!exclude(&picked), "select returned an excluded address");
                }
            }
            BookOp::Sample(max) => {
                let max = usize::from(max % 2048);
                let sample = book.sample(&mut rng, max);
                assert!(sample.len() <= max);
                let distinct: BTreeSet<_> = sample.iter().map(|a| a.socket).collect();
                assert_eq!(distinct.len(), sample.len(), "sample repeats an address");
                assert!(sample.iter().all(|a| book.contains(&a.socket)));
            }
            BookOp::Advance(secs) => now += std::time::Duration::from_secs(u64::from(secs)),
            BookOp::RoundTrip => check_round_trip(&book, [2; 32]),
        }
        check_book(&book);
    }
}

fn small_book_config(u: &mut Unstructured<'_>) -> AddressBookConfig {
    let mut draw = || -> arbitrary::Result<AddressBookConfig> {
        let max_new = u.int_in_range(1..=64usize)?;
        let max_tried = u.int_in_range(1..=32usize)?;
        Ok(AddressBookConfig {
            max_new,
            max_tried,
            new_buckets: u.int_in_range(1..=max_new.min(8))?,
            tried_buckets: u.int_in_range(1..=max_tried.min(4))?,
            max_per_source_group: u.int_in_range(1..=16)?,
            max_failures: u.int_in_range(1..=5)?,
            horizon_secs: u.int_in_range(1..=100_000)?,
            retry_interval_secs: u.int_in_range(0..=120)?,
        })
    };
    match draw() {
        Ok(c) if c.validate().is_ok() => c,
        _ => AddressBookConfig::default(),
    }
}

fn check_book(book: &AddressBook) {
    let config = book.config();
    let stats = book.stats();
    assert_eq!(stats.known, book.len());
    assert_eq!(
        stats.new + stats.tried,
        book.len(),
        "tables disagree with entries"
    );
    assert!(
        stats.new <= config.max_new,
        "{} new, max {}",
        stats.new,
        config.max_new
    );
    assert!(
        stats.tried <= config.max_tried,
        "{} tried, max {}",
        stats.tried,
        config.max_tried
    );
    assert_eq!(
        stats.bootstrap + stats.manual + stats.peer + stats.inbound,
        book.len(),
        "sources disagree with entries"
    );
    for (socket, _) in book.iter() {
        assert!(socket.port() != 0, "an undialable address was kept");
    }
}

/// Restoring a book's snapshot with the same configuration and placement seed must give
/// back the same entries (with another seed, buckets collide differently and entries may
/// rightly be refused).
fn check_round_trip(book: &AddressBook, seed: [u8; 32]) {
    let snapshot = book.snapshot();
    let restored = match AddressBook::restore(book.config().clone(), seed, &snapshot) {
        Ok(b) => b,
        Err(e) => panic!("a book rejects its own snapshot: {e}"),
    };
    let entries = |b: &AddressBook| -> Vec<(SocketAddr, String)> {
        b.iter()
            .map(|(s, i)| (s, format!("{:?}/{:?}/{}", i.source, i.peer_id, i.failures)))
            .collect()
    };
    assert_eq!(
        entries(&restored),
        entries(book),
        "snapshot round trip changed the book"
    );
}

/// Snapshot bytes of a small book (mode byte 0 first): a seed for `address_book`.
pub(super) fn address_book_seeds() -> Vec<Vec<u8>> {
    let mut book = AddressBook::new(AddressBookConfig::default(), [4; 32]);
    let now = Timestamp::from_secs(10);
    for i in 1..6u8 {
        let addr = PeerAddr::new(SocketAddr::from((Ipv4Addr::new(10, i, 0, 1), 7000)));
        book.add(
            now,
            addr,
            AddrSource::Peer(IpAddr::V4(Ipv4Addr::new(172, i, 0, 1))),
        );
        if i % 2 == 0 {
            book.mark_attempt(now, &addr.socket);
            book.mark_success(now, &addr.socket, super::conn::keypair(i).peer_id());
        }
    }
    let mut seed = vec![0];
    seed.extend(book.snapshot());
    vec![seed]
}

/// `config`: arbitrary text as a node configuration. Text that parses must be valid, and
/// printing it and parsing that again must give the same configuration.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = NodeConfig::from_toml(text) else {
        return;
    };
    assert_eq!(
        config.validate(),
        Ok(()),
        "from_toml accepted an invalid config"
    );
    let printed = config.to_toml();
    match NodeConfig::from_toml(&printed) {
        Ok(again) => assert_eq!(again, config, "TOML round trip changed the config"),
        Err(e) => panic!("a printed config does not parse: {e}\n{printed}"),
    }
}

/// Configuration texts: the defaults, and a small one with every section touched.
pub(super) fn config_seeds() -> Vec<Vec<u8>> {
    let small = "network_id = \"seed\"\nlisten_addrs = [\"127.0.0.1:7000\"]\n\
                 bootstrap = [\"10.0.0.1:7000\"]\n\n[limits]\nmax_connections = 10\n\
                 max_outbound = 4\ntarget_outbound = 2\n\n[connection]\n\
                 ping_interval_ms = 1000\nidle_timeout_ms = 5000\n";
    vec![
        NodeConfig::default().to_toml().into_bytes(),
        small.as_bytes().to_vec(),
    ]
}

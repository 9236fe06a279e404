//! Keeps PROTOCOL.md (at the repository root) honest.
//!
//! * `test_vectors_section_is_current` regenerates the "Test vectors" section with the real
//!   code (two in-memory [`Connection`]s with fixed keys and seeds, every `Transmit` captured)
//!   and fails unless PROTOCOL.md holds exactly that text between `<!-- vectors:begin -->`
//!   and `<!-- vectors:end -->`. Along the way it re-derives every handshake packet and
//!   decrypts every transport packet with a second, independent snow handshake built only from
//!   the keys the section prints, the way a peer in another language would, and decodes every
//!   plaintext with an off-the-shelf CBOR library (ciborium). Its AESGCM section is opened
//!   the same way: snow's own AESGCM cipher function keyed with the printed `Split()` keys.
//! * The other tests parse the tables of PROTOCOL.md (message kinds, Goodbye reasons,
//!   capabilities, constants, configuration defaults) and compare them with the code.
//!
//! After an intentional change to the wire or to the code paths the vectors exercise,
//! regenerate the section and review the diff of PROTOCOL.md:
//!
//! ```text
//! UPDATE_PROTOCOL_VECTORS=1 cargo test -p silver-p2p-core --test protocol_vectors
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use silver_p2p_core::message::{MAX_GOODBYE_DETAIL, MAX_HASH_LEN, MAX_PEERS_PER_MESSAGE};
use silver_p2p_core::*;

const UPDATE_ENV: &str = "UPDATE_PROTOCOL_VECTORS";

fn protocol_md_path() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../PROTOCOL.md"))
}

fn read_doc() -> String {
    let path = protocol_md_path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Byte range of the text between `<!-- {name}:begin -->` and `<!-- {name}:end -->`.
fn marked_range(doc: &str, name: &str) -> std::ops::Range<usize> {
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let start = doc
        .find(&begin)
        .unwrap_or_else(|| panic!("PROTOCOL.md lacks the marker {begin}"))
        + begin.len();
    let stop = doc[start..]
        .find(&end)
        .unwrap_or_else(|| panic!("PROTOCOL.md lacks the marker {end} after {begin}"))
        + start;
    start..stop
}

/// The rows of the first Markdown table between the `name` markers: cells trimmed, backticks
/// removed, header and separator rows skipped.
fn table(doc: &str, name: &str) -> Vec<Vec<String>> {
    let text = &doc[marked_range(doc, name)];
    let rows: Vec<Vec<String>> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().replace('`', ""))
                .collect()
        })
        .collect();
    assert!(rows.len() >= 2, "table {name} has no rows");
    rows.into_iter()
        .skip(1)
        .filter(|r| {
            !r.iter()
                .all(|c| c.chars().all(|ch| matches!(ch, '-' | ':')))
        })
        .collect()
}

fn parse_uint(cell: &str) -> u64 {
    let digits: String = cell
        .chars()
        .filter(|c| !matches!(c, '_' | ' ' | ','))
        .collect();
    if let Some(h) = digits.strip_prefix("0x") {
        return u64::from_str_radix(h, 16).unwrap_or_else(|_| panic!("not a number: {cell:?}"));
    }
    digits
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {cell:?}"))
}

// ----------------------------------------------------------------------------------------
// Tables
// ----------------------------------------------------------------------------------------

#[test]
fn message_kind_table_matches_the_code() {
    let doc = read_doc();
    let rows = table(&doc, "kinds");
    let mut seen = Vec::new();
    for row in &rows {
        assert!(
            row.len() >= 5,
            "kinds row {row:?} needs code, kind, items, class, layout"
        );
        let code = parse_uint(&row[0]);
        let kind = MessageKind::from_code(code).unwrap_or_else(|| {
            panic!("PROTOCOL.md lists code {code}, which the code does not know")
        });
        assert_eq!(format!("{kind:?}"), row[1], "name of kind code {code}");
        assert_eq!(
            parse_uint(&row[2]) as usize,
            kind.arity(),
            "array items of {kind:?}"
        );
        // Chunks are never queued by kind: they are cut from messages in the bulk class.
        let class = match (kind, kind.priority()) {
            (MessageKind::Chunk, _) => "bulk",
            (_, Priority::Control) => "control",
            (_, Priority::Data) => "data",
        };
        assert_eq!(row[3], class, "priority class of {kind:?}");
        let layout = &row[4];
        assert!(
            layout.starts_with(&format!("[{code}")),
            "layout of {kind:?} must start with its code: {layout}"
        );
        seen.push(kind);
    }
    assert_eq!(
        seen,
        MessageKind::ALL.to_vec(),
        "PROTOCOL.md must list every kind of MessageKind::ALL once, in code order"
    );
}

#[test]
fn goodbye_reason_table_matches_the_code() {
    let doc = read_doc();
    let rows = table(&doc, "goodbye");
    let mut codes = Vec::new();
    for row in &rows {
        let code = parse_uint(&row[0]) as u16;
        let reason = GoodbyeReason::from_code(code);
        assert_eq!(format!("{reason:?}"), row[1], "Goodbye reason code {code}");
        assert_eq!(reason.code(), code);
        codes.push(code);
    }
    let known = (0..=u16::MAX)
        .take_while(|c| !matches!(GoodbyeReason::from_code(*c), GoodbyeReason::Other(_)))
        .count() as u16;
    assert_eq!(
        codes,
        (0..known).collect::<Vec<_>>(),
        "PROTOCOL.md must list every known Goodbye reason code, in order"
    );
}

#[test]
fn capability_table_matches_the_code() {
    let doc = read_doc();
    let rows = table(&doc, "capabilities");
    let mut all = 0u64;
    for row in &rows {
        let value = parse_uint(&row[1]);
        let expected = match row[2].as_str() {
            "GOSSIP" => Capabilities::GOSSIP,
            "SERVE_BLOCKS" => Capabilities::SERVE_BLOCKS,
            "SERVE_TRANSACTIONS" => Capabilities::SERVE_TRANSACTIONS,
            "PEER_EXCHANGE" => Capabilities::PEER_EXCHANGE,
            "LAZY_GOSSIP" => Capabilities::LAZY_GOSSIP,
            "AES_GCM" => Capabilities::AES_GCM,
            other => panic!("PROTOCOL.md lists an unknown capability {other}"),
        };
        assert_eq!(value, expected.0, "value of capability {}", row[2]);
        assert_eq!(
            1u64 << parse_uint(&row[0]),
            value,
            "bit of capability {}",
            row[2]
        );
        all |= value;
    }
    assert_eq!(
        all,
        Capabilities::ALL.0,
        "PROTOCOL.md must list every capability bit"
    );
}

/// The largest `n` for which a Hello built by `make(n)` decodes.
fn largest_accepted(make: impl Fn(usize) -> Hello) -> usize {
    (0..=300)
        .filter(|n| Hello::decode(&make(*n).encode()).is_ok())
        .max()
        .expect("some size decodes")
}

fn plain_hello() -> Hello {
    Hello {
        network_id: "n".into(),
        versions: vec![PROTOCOL_VERSION],
        capabilities: Capabilities::ALL,
        listen_addrs: vec![],
        agent: String::new(),
    }
}

#[test]
fn constants_table_matches_the_code() {
    let doc = read_doc();
    let rows = table(&doc, "constants");
    let mut names = Vec::new();
    for row in &rows {
        let name = row[0].as_str();
        let actual = match name {
            "MAX_PACKET_LEN" => frame::MAX_PACKET_LEN,
            "LEN_PREFIX" => frame::LEN_PREFIX,
            "TAG_LEN" => TAG_LEN,
            "MAX_NOISE_MESSAGE" => MAX_NOISE_MESSAGE,
            "MAX_FRAME_PLAINTEXT" => MAX_FRAME_PLAINTEXT,
            "HANDSHAKE_OVERHEAD" => HANDSHAKE_OVERHEAD,
            "KEY_LEN" => KEY_LEN,
            "PROTOCOL_VERSION" => PROTOCOL_VERSION as usize,
            "AES_GCM_SINCE_VERSION" => AES_GCM_SINCE_VERSION as usize,
            "MAX_PEERS_PER_MESSAGE" => MAX_PEERS_PER_MESSAGE,
            "MAX_HASH_LEN" => MAX_HASH_LEN,
            "MAX_GOODBYE_DETAIL" => MAX_GOODBYE_DETAIL,
            // The Hello limits are private to the crate: measure what the decoder accepts.
            "MAX_NETWORK_ID_LEN" => largest_accepted(|n| Hello {
                network_id: "n".repeat(n),
                ..plain_hello()
            }),
            "MAX_AGENT_LEN" => largest_accepted(|n| Hello {
                agent: "a".repeat(n),
                ..plain_hello()
            }),
            "MAX_VERSIONS" => largest_accepted(|n| Hello {
                versions: (1..=n as u32).collect(),
                ..plain_hello()
            }),
            "MAX_LISTEN_ADDRS" => largest_accepted(|n| Hello {
                listen_addrs: (0..n)
                    .map(|i| SocketAddr::from(([10, 0, 0, 1], i as u16)))
                    .collect(),
                ..plain_hello()
            }),
            other => panic!("PROTOCOL.md lists a constant the test does not know: {other}"),
        };
        assert_eq!(parse_uint(&row[1]) as usize, actual, "value of {name}");
        names.push(name.to_string());
    }
    assert_eq!(NOISE_PARAMS, "Noise_XX_25519_ChaChaPoly_BLAKE2s");
    assert_eq!(PROLOGUE, b"silver-p2p/1");
    assert!(doc.contains(NOISE_PARAMS) && doc.contains("`silver-p2p/1`"));
    assert!(
        names.len() >= 15,
        "the constants table lost rows: {names:?}"
    );
}

#[test]
fn largest_valid_hello_is_as_documented() {
    let hello = Hello {
        network_id: "n".repeat(64),
        versions: (0..16).map(|i| u32::MAX - i).collect(),
        capabilities: Capabilities(u64::MAX),
        listen_addrs: (0..16u16)
            .map(|i| SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, i], 65535 - i)))
            .collect(),
        agent: "a".repeat(64),
    };
    assert_eq!(Hello::decode(&hello.encode()).as_ref(), Ok(&hello));
    let len = hello.encode().len();
    assert_eq!(len, 576);
    let doc = read_doc();
    assert!(
        doc.contains(&format!("The largest valid Hello is {len} bytes")),
        "PROTOCOL.md must state the largest valid Hello ({len} bytes)"
    );
}

#[test]
fn configuration_table_matches_the_defaults() {
    let doc = read_doc();
    let rows = table(&doc, "config");
    // ConnectionConfig serializes durations as milliseconds and sizes as plain integers.
    let mut encoded = Vec::new();
    ciborium::into_writer(&ConnectionConfig::default(), &mut encoded).unwrap();
    let value: ciborium::Value = ciborium::from_reader(&encoded[..]).unwrap();
    let mut defaults = BTreeMap::new();
    for (k, v) in value.as_map().expect("a map") {
        // Serialized duration keys may carry a unit suffix (`ping_interval_ms`); the table
        // names the Rust fields.
        let k = k.as_text().expect("text keys");
        let k = k.strip_suffix("_ms").unwrap_or(k).to_string();
        let v = u64::try_from(v.as_integer().expect("integer values")).unwrap();
        defaults.insert(k, v);
    }
    let mut documented = BTreeMap::new();
    for row in &rows {
        documented.insert(row[0].clone(), parse_uint(&row[1]));
    }
    assert_eq!(
        documented, defaults,
        "PROTOCOL.md's configuration table (field, default in ms or units) must list every \
         ConnectionConfig field with its default"
    );
}

// ----------------------------------------------------------------------------------------
// Test vectors
// ----------------------------------------------------------------------------------------

const INITIATOR_KEY_SEED: [u8; 32] = [1; 32];
const RESPONDER_KEY_SEED: [u8; 32] = [2; 32];
const INITIATOR_CONN_SEED: [u8; 32] = [3; 32];
const RESPONDER_CONN_SEED: [u8; 32] = [4; 32];

/// The first ephemeral private key a connection created with `seed` uses: the core derives
/// its snow RNG as `seed → derive("handshake") → derive("snow")` and snow draws the key first.
fn ephemeral_private_key(seed: [u8; 32]) -> [u8; 32] {
    let mut conn_rng = SeededRng::from_seed(seed);
    let mut hs_rng = conn_rng.derive(b"handshake");
    let mut snow_rng = hs_rng.derive(b"snow");
    let mut e = [0u8; 32];
    snow_rng.fill_bytes(&mut e);
    e
}

/// A snow resolver without entropy: the independent peer only uses fixed keys.
struct NoEntropy;

struct FailingRng;

impl snow::types::Random for FailingRng {
    fn try_fill_bytes(&mut self, _dest: &mut [u8]) -> Result<(), snow::Error> {
        Err(snow::Error::Rng)
    }
}

impl snow::resolvers::CryptoResolver for NoEntropy {
    fn resolve_rng(&self) -> Option<Box<dyn snow::types::Random>> {
        Some(Box::new(FailingRng))
    }
    fn resolve_dh(&self, choice: &snow::params::DHChoice) -> Option<Box<dyn snow::types::Dh>> {
        snow::resolvers::DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(
        &self,
        choice: &snow::params::HashChoice,
    ) -> Option<Box<dyn snow::types::Hash>> {
        snow::resolvers::DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(
        &self,
        choice: &snow::params::CipherChoice,
    ) -> Option<Box<dyn snow::types::Cipher>> {
        snow::resolvers::DefaultResolver.resolve_cipher(choice)
    }
}

/// A handshake state built only from what PROTOCOL.md prints: protocol name, prologue, static
/// private key and (fixed) ephemeral private key.
fn independent_handshake(
    initiator: bool,
    static_key: &[u8; 32],
    ephemeral: &[u8; 32],
) -> snow::HandshakeState {
    let builder = snow::Builder::with_resolver(
        "Noise_XX_25519_ChaChaPoly_BLAKE2s".parse().unwrap(),
        Box::new(NoEntropy),
    )
    .prologue(b"silver-p2p/1")
    .unwrap()
    .local_private_key(static_key)
    .unwrap()
    .fixed_ephemeral_key_for_testing_only(ephemeral);
    if initiator {
        builder.build_initiator().unwrap()
    } else {
        builder.build_responder().unwrap()
    }
}

fn hex_block(out: &mut String, bytes: &[u8]) {
    out.push_str("```text\n");
    for line in bytes.chunks(32) {
        out.push_str(&hex::encode(line));
        out.push('\n');
    }
    out.push_str("```\n\n");
}

/// CBOR diagnostic notation (RFC 8949 §8) for the value types the wire uses; byte strings
/// longer than 32 bytes are abbreviated.
fn diag(v: &ciborium::Value) -> String {
    use ciborium::Value;
    match v {
        Value::Integer(i) => i128::from(*i).to_string(),
        Value::Bytes(b) if b.len() > 32 => format!(
            "h'{}…{}' ({} bytes)",
            hex::encode(&b[..8]),
            hex::encode(&b[b.len() - 4..]),
            b.len()
        ),
        Value::Bytes(b) => format!("h'{}'", hex::encode(b)),
        Value::Text(t) => format!("{t:?}"),
        Value::Null => "null".into(),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(diag).collect();
            format!("[{}]", inner.join(", "))
        }
        other => panic!("the wire never carries {other:?}"),
    }
}

/// Decodes a CBOR sequence with ciborium (an off-the-shelf decoder), item by item.
fn cbor_sequence(mut bytes: &[u8]) -> Vec<ciborium::Value> {
    let mut items = Vec::new();
    while !bytes.is_empty() {
        let v: ciborium::Value = ciborium::from_reader(&mut bytes).expect("valid CBOR");
        items.push(v);
    }
    items
}

fn message_line(m: &Message) -> String {
    let items = cbor_sequence(&m.to_bytes());
    assert_eq!(items.len(), 1);
    format!("{:?} `{}`", m.kind(), diag(&items[0]))
}

/// What one side emitted after one input.
#[derive(Default)]
struct Drained {
    transmits: Vec<Vec<u8>>,
    events: Vec<ConnectionEvent>,
    closed: bool,
}

fn drain(conn: &mut Connection, now: Timestamp) -> Drained {
    let mut d = Drained::default();
    while let Some(out) = conn.poll_output() {
        match out {
            ConnectionOutput::Transmit(bytes) => {
                conn.handle_written(now, bytes.len());
                d.transmits.push(bytes);
            }
            ConnectionOutput::Event(e) => d.events.push(e),
            ConnectionOutput::Close => d.closed = true,
            _ => {}
        }
    }
    d
}

fn only_transmit(d: &Drained) -> Vec<u8> {
    assert_eq!(d.transmits.len(), 1, "expected exactly one Transmit");
    d.transmits[0].clone()
}

/// Carries `from`'s one pending transmit to `to`: returns the packet and what `to` delivered.
fn carry(from: &mut Connection, to: &mut Connection, now: Timestamp) -> (Vec<u8>, Vec<Message>) {
    let packet = only_transmit(&drain(from, now));
    to.handle_bytes(now, &packet);
    let delivered = delivered_messages(&drain(to, now));
    (packet, delivered)
}

fn delivered_messages(d: &Drained) -> Vec<Message> {
    d.events
        .iter()
        .filter_map(|e| match e {
            ConnectionEvent::Message(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn bytes_of(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

/// One transport packet of the transcript.
struct FrameVector {
    title: &'static str,
    from_initiator: bool,
    nonce: u64,
    note: &'static str,
    messages: Vec<Message>,
    plaintext: Vec<u8>,
    packet: Vec<u8>,
}

/// The independent peer's transport states, one per side.
struct Independent {
    initiator: snow::TransportState,
    responder: snow::TransportState,
    /// Packets opened so far in each direction (initiator → responder, responder → initiator).
    sent: [u64; 2],
}

impl Independent {
    fn receiver(&mut self, from_initiator: bool) -> &mut snow::TransportState {
        if from_initiator {
            &mut self.responder
        } else {
            &mut self.initiator
        }
    }

    /// Decrypts the next packet of a direction without consuming its nonce.
    fn peek(&mut self, from_initiator: bool, packet: &[u8]) -> Vec<u8> {
        let nonce = self.sent[usize::from(!from_initiator)];
        let receiver = self.receiver(from_initiator);
        receiver.set_receiving_nonce(nonce);
        let mut plain = vec![0u8; packet.len()];
        let n = receiver.read_message(&packet[2..], &mut plain).unwrap();
        receiver.set_receiving_nonce(nonce);
        plain.truncate(n);
        plain
    }

    /// Decrypts the next packet of a direction and checks it holds exactly `messages`.
    fn frame(
        &mut self,
        title: &'static str,
        from_initiator: bool,
        note: &'static str,
        messages: Vec<Message>,
        packet: &[u8],
    ) -> FrameVector {
        assert_eq!(
            u16::from_be_bytes([packet[0], packet[1]]) as usize,
            packet.len() - 2,
            "{title}: one packet per Transmit"
        );
        let dir = usize::from(!from_initiator);
        let nonce = self.sent[dir];
        self.sent[dir] += 1;
        let mut plain = vec![0u8; packet.len()];
        let n = self
            .receiver(from_initiator)
            .read_message(&packet[2..], &mut plain)
            .unwrap_or_else(|e| panic!("{title}: {e}"));
        plain.truncate(n);
        let expected: Vec<u8> = messages.iter().flat_map(|m| m.to_bytes()).collect();
        assert_eq!(plain, expected, "{title}: plaintext");
        assert_eq!(cbor_sequence(&plain).len(), messages.len());
        FrameVector {
            title,
            from_initiator,
            nonce,
            note,
            messages,
            plaintext: plain,
            packet: packet.to_vec(),
        }
    }
}

/// The vectors' two connections, from the fixed keys and seeds; the initiator pins the
/// responder's identity, as when dialing an address with a peer id.
fn vector_connections(
    config_i: ConnectionConfig,
    hello_i: &Hello,
    hello_r: &Hello,
) -> (Connection, Connection) {
    let key_i = Keypair::generate(&mut SeededRng::from_seed(INITIATOR_KEY_SEED));
    let key_r = Keypair::generate(&mut SeededRng::from_seed(RESPONDER_KEY_SEED));
    let ini = Connection::new(
        Role::Initiator,
        Arc::new(config_i),
        Arc::new(hello_i.clone()),
        &key_i,
        Some(key_r.peer_id()),
        INITIATOR_CONN_SEED,
        Timestamp::ZERO,
    );
    let res = Connection::new(
        Role::Responder,
        Arc::new(ConnectionConfig::default()),
        Arc::new(hello_r.clone()),
        &key_r,
        None,
        RESPONDER_CONN_SEED,
        Timestamp::ZERO,
    );
    (ini, res)
}

/// Runs the handshake up to the initiator's reading of message 2: messages 1 and 2, and what
/// the initiator then emits (message 3 first, then any frames queued before it).
fn vector_handshake(ini: &mut Connection, res: &mut Connection) -> (Vec<u8>, Vec<u8>, Drained) {
    let t0 = Timestamp::ZERO;
    ini.handle_connected(t0);
    let msg1 = only_transmit(&drain(ini, t0));
    res.handle_bytes(t0, &msg1);
    let msg2 = only_transmit(&drain(res, t0));
    ini.handle_bytes(t0, &msg2);
    let first = drain(ini, t0);
    assert_eq!(first.transmits.len(), 2, "message 3, then the first frame");
    (msg1, msg2, first)
}

/// The independent peer re-creates the handshake from the printed keys alone, checks that
/// it produces exactly `msgs` (messages 1, 2 and 3) and reads each side's Hello, and returns
/// both finished handshake states.
fn independent_replay(
    hello_i: &Hello,
    hello_r: &Hello,
    msgs: [&[u8]; 3],
) -> (snow::HandshakeState, snow::HandshakeState) {
    let key_i = Keypair::generate(&mut SeededRng::from_seed(INITIATOR_KEY_SEED));
    let key_r = Keypair::generate(&mut SeededRng::from_seed(RESPONDER_KEY_SEED));
    let eph_i = ephemeral_private_key(INITIATOR_CONN_SEED);
    let eph_r = ephemeral_private_key(RESPONDER_CONN_SEED);
    let [msg1, msg2, msg3] = msgs;
    assert_eq!(
        Keypair::from_private_key(eph_i).public_key()[..],
        msg1[2..34],
        "the initiator's ephemeral key is not derived as ephemeral_private_key() assumes"
    );
    assert_eq!(
        Keypair::from_private_key(eph_r).public_key()[..],
        msg2[2..34],
        "the responder's ephemeral key is not derived as ephemeral_private_key() assumes"
    );
    let mut hs_i = independent_handshake(true, key_i.private_key(), &eph_i);
    let mut hs_r = independent_handshake(false, key_r.private_key(), &eph_r);
    let mut buf = vec![0u8; 65535];
    let mut payload = vec![0u8; 65535];
    let n = hs_i.write_message(&[], &mut buf).unwrap();
    assert_eq!(frame::encode_packet(&buf[..n]), msg1, "message 1");
    let n = hs_r.read_message(&msg1[2..], &mut payload).unwrap();
    assert_eq!(n, 0);
    let hello_r_bytes = hello_r.encode();
    let n = hs_r.write_message(&hello_r_bytes, &mut buf).unwrap();
    assert_eq!(frame::encode_packet(&buf[..n]), msg2, "message 2");
    let n = hs_i.read_message(&msg2[2..], &mut payload).unwrap();
    assert_eq!(payload[..n], hello_r_bytes[..]);
    let hello_i_bytes = hello_i.encode();
    let n = hs_i.write_message(&hello_i_bytes, &mut buf).unwrap();
    assert_eq!(frame::encode_packet(&buf[..n]), msg3, "message 3");
    let n = hs_r.read_message(&msg3[2..], &mut payload).unwrap();
    assert_eq!(payload[..n], hello_i_bytes[..]);
    assert_eq!(hs_i.get_handshake_hash(), hs_r.get_handshake_hash());
    assert_eq!(hs_i.get_remote_static().unwrap(), key_r.public_key());
    assert_eq!(hs_r.get_remote_static().unwrap(), key_i.public_key());
    (hs_i, hs_r)
}

fn control_first(batch: &[Message]) -> Vec<Message> {
    let (mut control, data): (Vec<_>, Vec<_>) = batch
        .iter()
        .cloned()
        .partition(|m| m.kind().priority() == Priority::Control);
    control.extend(data);
    control
}

fn hello_description(out: &mut String, h: &Hello) {
    let addrs: Vec<String> = h.listen_addrs.iter().map(|a| a.to_string()).collect();
    let _ = writeln!(out, "- network id `{:?}`", h.network_id);
    let _ = writeln!(out, "- versions `{:?}`", h.versions);
    let _ = writeln!(out, "- capabilities `{}`", h.capabilities.0);
    let _ = writeln!(out, "- listen addresses `{addrs:?}`");
    let _ = writeln!(out, "- agent `{:?}`", h.agent);
}

/// Generates the text between the vectors markers.
fn vectors() -> String {
    let key_i = Keypair::generate(&mut SeededRng::from_seed(INITIATOR_KEY_SEED));
    let key_r = Keypair::generate(&mut SeededRng::from_seed(RESPONDER_KEY_SEED));
    let eph_i = ephemeral_private_key(INITIATOR_CONN_SEED);
    let eph_r = ephemeral_private_key(RESPONDER_CONN_SEED);

    let hello_i = Hello {
        network_id: "silver-vectors".into(),
        versions: vec![1],
        capabilities: Capabilities::ALL,
        listen_addrs: vec!["192.0.2.10:9000".parse().unwrap()],
        agent: "vectors-initiator/1".into(),
    };
    let hello_r = Hello {
        network_id: "silver-vectors".into(),
        versions: vec![1, 2],
        capabilities: Capabilities::GOSSIP | Capabilities::PEER_EXCHANGE,
        listen_addrs: vec![
            "[2001:db8::20]:9001".parse().unwrap(),
            "198.51.100.20:9001".parse().unwrap(),
        ],
        agent: "vectors-responder/1".into(),
    };
    // The initiator sends with a small chunk size so that a chunked message fits on a page;
    // the chunk size is the sender's choice and not negotiated.
    let config_i = ConnectionConfig {
        chunk_size: 512,
        ..ConnectionConfig::default()
    };
    let t0 = Timestamp::ZERO;
    let (mut ini, mut res) = vector_connections(config_i, &hello_i, &hello_r);

    // Queued before the TCP connect completes: leaves in the first frame after message 3.
    let first_batch = vec![
        Message::Transaction {
            data: bytes_of(b"tx-1"),
        },
        Message::GetBlock {
            request_id: 1,
            hash: Bytes::from(vec![0xaa; 32]),
        },
        Message::GetTransaction {
            request_id: 2,
            hash: Bytes::from(vec![0xbb; 32]),
        },
        Message::App {
            kind: 300,
            data: bytes_of(b"app"),
        },
        Message::GetPeers { max: 16 },
    ];
    for m in &first_batch {
        ini.send(m.clone()).unwrap();
    }

    // Handshake.
    let (msg1, msg2, first) = vector_handshake(&mut ini, &mut res);
    let msg3 = first.transmits[0].clone();
    assert!(matches!(
        first.events.first(),
        Some(ConnectionEvent::Established { version: 1, .. })
    ));
    assert_eq!(ini.peer_id(), Some(key_r.peer_id()));

    // The independent peer re-creates the handshake from the printed keys alone.
    let (hs_i, hs_r) = independent_replay(&hello_i, &hello_r, [&msg1, &msg2, &msg3]);
    let handshake_hash = hs_i.get_handshake_hash().to_vec();
    let (hello_i_bytes, hello_r_bytes) = (hello_i.encode(), hello_r.encode());
    let mut indep = Independent {
        initiator: hs_i.into_transport_mode().unwrap(),
        responder: hs_r.into_transport_mode().unwrap(),
        sent: [0, 0],
    };
    let mut frames = Vec::new();

    res.handle_bytes(t0, &msg3);
    res.handle_bytes(t0, &first.transmits[1]);
    frames.push(indep.frame(
        "F1: the initiator's first frame",
        true,
        "Queued before the handshake as Transaction, GetBlock, GetTransaction, App, GetPeers; \
         sent right after message 3, control messages first.",
        control_first(&first_batch),
        &first.transmits[1],
    ));
    let d = drain(&mut res, t0);
    assert!(d.transmits.is_empty());
    assert!(matches!(
        d.events.first(),
        Some(ConnectionEvent::Established { version: 1, .. })
    ));
    assert_eq!(delivered_messages(&d), control_first(&first_batch));

    // The responder's application answers.
    let answers = vec![
        Message::Response {
            request_id: 1,
            data: bytes_of(b"block-bytes"),
        },
        Message::NotFound { request_id: 2 },
        Message::Peers {
            addrs: vec![
                PeerAddr::pinned(key_i.peer_id(), "203.0.113.5:9000".parse().unwrap()),
                PeerAddr::new("[2001:db8::5]:9002".parse().unwrap()),
            ],
        },
    ];
    for m in &answers {
        res.send(m.clone()).unwrap();
    }
    let (packet, delivered) = carry(&mut res, &mut ini, t0);
    assert_eq!(delivered, control_first(&answers));
    frames.push(indep.frame(
        "F2: the responder's answers",
        false,
        "Sent by the application as Response, NotFound, Peers; NotFound is control and \
         overtakes.",
        control_first(&answers),
        &packet,
    ));

    // Keepalive: the initiator's first Ping is due one ping interval after the handshake.
    let t1 = t0 + Duration::from_secs(30);
    assert_eq!(ini.poll_timeout(), Some(t1));
    ini.handle_timeout(t1);
    let packet = only_transmit(&drain(&mut ini, t1));
    let nonce = match Message::decode(&Bytes::from(indep.peek(true, &packet))) {
        Ok(Message::Ping { nonce }) => nonce,
        other => panic!("expected a Ping, got {other:?}"),
    };
    res.handle_bytes(t1, &packet);
    frames.push(indep.frame(
        "F3: keepalive Ping",
        true,
        "Sent by the initiator's keepalive at 30 s (ping_interval); the nonce is random.",
        vec![Message::Ping { nonce }],
        &packet,
    ));
    let d = drain(&mut res, t1);
    assert!(
        delivered_messages(&d).is_empty(),
        "Ping is handled by the core"
    );
    let packet = only_transmit(&d);
    ini.handle_bytes(t1, &packet);
    assert!(
        drain(&mut ini, t1).events.is_empty(),
        "Pong is handled by the core"
    );
    assert_eq!(ini.stats().pongs_matched, 1);
    frames.push(indep.frame(
        "F4: Pong",
        false,
        "The responder's core answers the Ping by itself, echoing the nonce.",
        vec![Message::Pong { nonce }],
        &packet,
    ));

    // Unicast and Request; the application answers with Ack and Response.
    let asks = vec![
        Message::Unicast {
            message_id: 7,
            kind: 42,
            data: bytes_of(b"direct"),
        },
        Message::Request {
            request_id: 3,
            kind: 5,
            data: bytes_of(b"query"),
        },
    ];
    for m in &asks {
        ini.send(m.clone()).unwrap();
    }
    let packet = only_transmit(&drain(&mut ini, t1));
    res.handle_bytes(t1, &packet);
    assert_eq!(delivered_messages(&drain(&mut res, t1)), asks);
    frames.push(indep.frame(
        "F5: Unicast and Request",
        true,
        "Both are data messages and keep their order.",
        asks,
        &packet,
    ));
    let replies = vec![
        Message::Response {
            request_id: 3,
            data: bytes_of(b"answer"),
        },
        Message::Ack { message_id: 7 },
    ];
    for m in &replies {
        res.send(m.clone()).unwrap();
    }
    let packet = only_transmit(&drain(&mut res, t1));
    ini.handle_bytes(t1, &packet);
    assert_eq!(
        delivered_messages(&drain(&mut ini, t1)),
        control_first(&replies)
    );
    frames.push(indep.frame(
        "F6: Ack and Response",
        false,
        "Sent by the application as Response, Ack; Ack is control and overtakes.",
        control_first(&replies),
        &packet,
    ));

    // A message larger than the initiator's chunk size (512) travels as chunks.
    let block = Message::Block {
        data: (0..600u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into(),
    };
    let small = Message::Transaction {
        data: bytes_of(b"tx-2"),
    };
    ini.send(block.clone()).unwrap();
    ini.send(small.clone()).unwrap();
    let packet = only_transmit(&drain(&mut ini, t1));
    res.handle_bytes(t1, &packet);
    assert_eq!(
        delivered_messages(&drain(&mut res, t1)),
        vec![small.clone(), block.clone()]
    );
    let whole = Bytes::from(block.to_bytes());
    assert_eq!(whole.len(), 605);
    let chunk = |index: u32, range: std::ops::Range<usize>| {
        Message::Chunk(Chunk {
            message_id: 0,
            index,
            count: 2,
            total_len: whole.len() as u64,
            data: whole.slice(range),
        })
    };
    frames.push(indep.frame(
        "F7: a chunked Block behind a Transaction",
        true,
        "The application sent a Block of 600 bytes (605 encoded, over the initiator's 512-byte \
         chunk size), then a small Transaction. The Transaction leaves first; the Block's \
         encoding travels as two chunks (512 + 93 bytes) in the same frame.",
        vec![small, chunk(0, 0..512), chunk(1, 512..605)],
        &packet,
    ));

    // Closing.
    ini.close(t1, GoodbyeReason::Normal);
    let d = drain(&mut ini, t1);
    assert!(d.closed);
    let packet = only_transmit(&d);
    // The detail is the implementation's free text: take it from the packet.
    let goodbye = Message::decode(&Bytes::from(indep.peek(true, &packet))).unwrap();
    assert!(matches!(
        goodbye,
        Message::Goodbye {
            reason: GoodbyeReason::Normal,
            ..
        }
    ));
    res.handle_bytes(t1, &packet);
    let d = drain(&mut res, t1);
    assert!(
        d.closed && d.transmits.is_empty(),
        "the receiver of a Goodbye just closes"
    );
    frames.push(indep.frame(
        "F8: Goodbye",
        true,
        "The initiator closes (reason Normal); the detail text is informative only.",
        vec![goodbye],
        &packet,
    ));

    // ---- The text. ----
    let mut out = String::new();
    out.push_str(
        "_Generated by `core/tests/protocol_vectors.rs`; do not edit by hand. After an \
         intentional change run `UPDATE_PROTOCOL_VECTORS=1 cargo test -p silver-p2p-core \
         --test protocol_vectors` and review the diff._\n\n",
    );
    out.push_str(
        "Hex is lowercase, 32 bytes per line. CBOR is shown in diagnostic notation \
         (RFC 8949 §8), with byte strings over 32 bytes abbreviated to their first 8 and last \
         4 bytes. The test that generates this section also re-creates every handshake packet \
         and decrypts every transport packet with a separate Noise handshake built only from \
         the protocol name, the prologue and the keys below, as an independent implementation \
         would.\n\n",
    );

    out.push_str("### Keys\n\n");
    out.push_str(
        "X25519 private keys as stored (the DH function clamps them). The Rust code draws \
         each from a ChaCha20 generator with a fixed seed (static keys: 32 bytes of `01` and \
         `02`; connection seeds: `03` and `04`); only the keys matter on the wire, and a fixed \
         seed outside tests means key reuse.\n\n",
    );
    let _ = writeln!(out, "| Key | Private | Public |");
    let _ = writeln!(out, "|---|---|---|");
    for (name, private, public) in [
        (
            "initiator static",
            *key_i.private_key(),
            *key_i.public_key(),
        ),
        (
            "initiator ephemeral",
            eph_i,
            *Keypair::from_private_key(eph_i).public_key(),
        ),
        (
            "responder static",
            *key_r.private_key(),
            *key_r.public_key(),
        ),
        (
            "responder ephemeral",
            eph_r,
            *Keypair::from_private_key(eph_r).public_key(),
        ),
    ] {
        let _ = writeln!(
            out,
            "| {name} | `{}` | `{}` |",
            hex::encode(private),
            hex::encode(public)
        );
    }
    let _ = writeln!(
        out,
        "\nPeer ids: initiator `{}`, responder `{}`. The initiator pinned the responder's id, as \
         when dialing `{}@127.0.0.1:9001`.\n",
        key_i.peer_id(),
        key_r.peer_id(),
        key_r.peer_id()
    );

    out.push_str("### Hellos\n\n");
    for (who, h, bytes) in [
        ("Initiator", &hello_i, &hello_i_bytes),
        ("Responder", &hello_r, &hello_r_bytes),
    ] {
        let _ = writeln!(out, "{who} Hello ({} bytes):\n", bytes.len());
        hello_description(&mut out, h);
        let items = cbor_sequence(bytes);
        let _ = writeln!(out, "\n`{}`\n", diag(&items[0]));
        hex_block(&mut out, bytes);
    }
    out.push_str(
        "The network ids are equal and the highest common version is 1, so both sides \
         reach `Connected` with version 1. The transport cipher is ChaChaPoly: the \
         initiator's Hello carries `AES_GCM` (in 63), but the responder's does not, and in \
         version 1 the bit means nothing anyway (section 8).\n\n",
    );

    out.push_str("### Handshake packets\n\n");
    let _ = writeln!(
        out,
        "Message 1, initiator → responder ({} bytes: prefix, `e`, empty payload):\n",
        msg1.len()
    );
    hex_block(&mut out, &msg1);
    let _ = writeln!(
        out,
        "Message 2, responder → initiator ({} bytes: prefix, `e` (32), encrypted `s` (48), \
         encrypted responder Hello ({} + 16)):\n",
        msg2.len(),
        hello_r_bytes.len()
    );
    hex_block(&mut out, &msg2);
    let _ = writeln!(
        out,
        "Message 3, initiator → responder ({} bytes: prefix, encrypted `s` (48), encrypted \
         initiator Hello ({} + 16)):\n",
        msg3.len(),
        hello_i_bytes.len()
    );
    hex_block(&mut out, &msg3);
    out.push_str("Handshake hash after message 3 (both sides):\n\n");
    hex_block(&mut out, &handshake_hash);

    out.push_str("### Transport packets\n\n");
    out.push_str(
        "In the order they were sent. The nonce is the Noise transport nonce of the \
         sending direction (each direction counts from 0).\n\n",
    );
    for f in &frames {
        let plain = &f.plaintext;
        let dir = if f.from_initiator {
            "initiator → responder"
        } else {
            "responder → initiator"
        };
        let _ = writeln!(out, "#### {}\n", f.title);
        let _ = writeln!(out, "{dir}, nonce {}. {}\n", f.nonce, f.note);
        for m in &f.messages {
            let _ = writeln!(out, "- {}", message_line(m));
        }
        let _ = writeln!(out, "\nPlaintext frame ({} bytes):\n", plain.len());
        hex_block(&mut out, plain);
        let _ = writeln!(
            out,
            "Packet ({} bytes: prefix, ciphertext, 16-byte tag):\n",
            f.packet.len()
        );
        hex_block(&mut out, &f.packet);
    }

    aes_vectors(&mut out);

    out.push_str("### One message of each kind\n\n");
    out.push_str("`Message::to_bytes()` of one example per kind.\n\n");
    for m in example_messages(&key_r) {
        let _ = writeln!(out, "{}\n", message_line(&m));
        hex_block(&mut out, &m.to_bytes());
    }
    out
}

/// A second, shorter transcript: the same keys and seeds, but both Hellos ask for AESGCM
/// and share version 2, so the transport is AES-256-GCM. An independent snow handshake from
/// the printed keys reproduces the handshake, and snow's own AESGCM cipher function, keyed
/// with the raw `Split()` keys, opens both frames.
fn aes_vectors(out: &mut String) {
    let hello_i = Hello {
        network_id: "silver-vectors".into(),
        versions: vec![1, 2],
        capabilities: Capabilities::ALL,
        listen_addrs: vec![],
        agent: "vectors-initiator/2".into(),
    };
    let hello_r = Hello {
        network_id: "silver-vectors".into(),
        versions: vec![2],
        capabilities: Capabilities::GOSSIP | Capabilities::AES_GCM,
        listen_addrs: vec![],
        agent: "vectors-responder/2".into(),
    };
    let t0 = Timestamp::ZERO;
    let (mut ini, mut res) = vector_connections(ConnectionConfig::default(), &hello_i, &hello_r);
    let to_responder = Message::Transaction {
        data: bytes_of(b"tx-aes"),
    };
    let to_initiator = Message::App {
        kind: 7,
        data: bytes_of(b"app-aes"),
    };
    ini.send(to_responder.clone()).unwrap();
    let (msg1, msg2, first) = vector_handshake(&mut ini, &mut res);
    let (msg3, f1) = (first.transmits[0].clone(), first.transmits[1].clone());
    res.handle_bytes(t0, &msg3);
    res.handle_bytes(t0, &f1);
    let d = drain(&mut res, t0);
    assert!(matches!(
        d.events.first(),
        Some(ConnectionEvent::Established { version: 2, .. })
    ));
    assert_eq!(delivered_messages(&d), vec![to_responder.clone()]);
    for side in [&ini, &res] {
        assert_eq!(
            side.stats().transport_suite,
            Some(TransportSuite::Aes256Gcm)
        );
    }
    res.send(to_initiator.clone()).unwrap();
    let (f2, delivered) = carry(&mut res, &mut ini, t0);
    assert_eq!(delivered, vec![to_initiator.clone()]);
    // A second packet in one direction: nonce 1, where the byte order shows.
    let second = Message::Transaction {
        data: bytes_of(b"tx-aes-2"),
    };
    ini.send(second.clone()).unwrap();
    let (f3, delivered) = carry(&mut ini, &mut res, t0);
    assert_eq!(delivered, vec![second.clone()]);

    // The independent side: the handshake from the printed keys, then AESGCM by hand.
    let (mut hs_i, _) = independent_replay(&hello_i, &hello_r, [&msg1, &msg2, &msg3]);
    let (k1, k2) = hs_i.dangerously_get_raw_split();
    let open = |key: &[u8; 32], nonce: u64, packet: &[u8]| {
        use snow::resolvers::CryptoResolver;
        let mut cipher = snow::resolvers::RingResolver
            .resolve_cipher(&snow::params::CipherChoice::AESGCM)
            .unwrap();
        cipher.set(key);
        let mut plain = vec![0u8; packet.len()];
        let n = cipher
            .decrypt(nonce, &[], &packet[2..], &mut plain)
            .unwrap();
        plain.truncate(n);
        plain
    };
    let p1 = open(&k1, 0, &f1);
    let p2 = open(&k2, 0, &f2);
    let p3 = open(&k1, 1, &f3);
    assert_eq!(p1, to_responder.to_bytes());
    assert_eq!(p2, to_initiator.to_bytes());
    assert_eq!(p3, second.to_bytes());

    out.push_str("### The same with AESGCM\n\n");
    out.push_str(
        "A second, shorter connection with the same keys and seeds (so message 1 is the same) \
         whose Hellos both carry `AES_GCM` and share version 2: its transport is AESGCM \
         (section 8), keyed with the raw keys of `Split()` below (k1 initiator → responder, \
         k2 responder → initiator) and Noise's AESGCM nonce (4 zero bytes, then the counter \
         big-endian).\n\n",
    );
    for (who, h) in [("Initiator", &hello_i), ("Responder", &hello_r)] {
        let bytes = h.encode();
        let _ = writeln!(out, "{who} Hello ({} bytes):\n", bytes.len());
        let items = cbor_sequence(&bytes);
        let _ = writeln!(out, "`{}`\n", diag(&items[0]));
        hex_block(out, &bytes);
    }
    for (name, packet) in [
        ("Message 1", &msg1),
        ("Message 2", &msg2),
        ("Message 3", &msg3),
    ] {
        let _ = writeln!(out, "{name} ({} bytes):\n", packet.len());
        hex_block(out, packet);
    }
    out.push_str("`Split()` key k1 (initiator → responder):\n\n");
    hex_block(out, &k1);
    out.push_str("`Split()` key k2 (responder → initiator):\n\n");
    hex_block(out, &k2);
    for (title, dir, m, plain, packet) in [
        (
            "FA1",
            "initiator → responder, nonce 0, queued before the handshake",
            &to_responder,
            &p1,
            &f1,
        ),
        (
            "FA2",
            "responder → initiator, nonce 0",
            &to_initiator,
            &p2,
            &f2,
        ),
        (
            "FA3",
            "initiator → responder, nonce 1 (nonce bytes `000000000000000000000001`)",
            &second,
            &p3,
            &f3,
        ),
    ] {
        let _ = writeln!(out, "#### {title}\n\n{dir}.\n\n- {}\n", message_line(m));
        let _ = writeln!(out, "Plaintext frame ({} bytes):\n", plain.len());
        hex_block(out, plain);
        let _ = writeln!(
            out,
            "Packet ({} bytes: prefix, ciphertext, 16-byte tag):\n",
            packet.len()
        );
        hex_block(out, packet);
    }
}

fn example_messages(peer: &Keypair) -> Vec<Message> {
    vec![
        Message::Ping {
            nonce: 0x0123_4567_89ab_cdef,
        },
        Message::Pong {
            nonce: 0x0123_4567_89ab_cdef,
        },
        Message::GetPeers { max: 32 },
        Message::Peers {
            addrs: vec![
                PeerAddr::pinned(peer.peer_id(), "198.51.100.7:9000".parse().unwrap()),
                PeerAddr::new("[2001:db8::1]:30303".parse().unwrap()),
            ],
        },
        Message::Transaction {
            data: bytes_of(b"tx"),
        },
        Message::Block {
            data: bytes_of(&[0x00, 0x01, 0x02]),
        },
        Message::GetBlock {
            request_id: 1,
            hash: Bytes::from(vec![0xaa; 32]),
        },
        Message::GetTransaction {
            request_id: 24,
            hash: Bytes::from(vec![0xbb; 32]),
        },
        Message::Response {
            request_id: 1,
            data: bytes_of(b"block"),
        },
        Message::NotFound { request_id: 24 },
        Message::Request {
            request_id: 256,
            kind: 1000,
            data: bytes_of(b"q"),
        },
        Message::Unicast {
            message_id: 4,
            kind: 7,
            data: bytes_of(b"hello"),
        },
        Message::Ack { message_id: 4 },
        Message::App {
            kind: 65536,
            data: Bytes::new(),
        },
        Message::Chunk(Chunk {
            message_id: 0,
            index: 1,
            count: 2,
            total_len: 605,
            data: bytes_of(&[0xde, 0xad]),
        }),
        Message::Goodbye {
            reason: GoodbyeReason::VersionMismatch,
            detail: "no common version".into(),
        },
        Message::Direct {
            kind: 7,
            data: bytes_of(b"hi"),
        },
        Message::IHave {
            ids: vec![[0xaa; 32]],
        },
        Message::IWant {
            ids: vec![[0xaa; 32], [0xbb; 32]],
        },
        Message::Prune,
    ]
}

#[test]
fn test_vectors_section_is_current() {
    let generated = format!("\n{}", vectors());
    let doc = read_doc();
    let range = marked_range(&doc, "vectors");
    if std::env::var(UPDATE_ENV).as_deref() == Ok("1") {
        let mut updated = doc.clone();
        updated.replace_range(range, &generated);
        if updated != doc {
            std::fs::write(protocol_md_path(), updated).unwrap();
        }
        return;
    }
    let current = &doc[range];
    if current != generated {
        let first_diff = current
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| current.lines().count().min(generated.lines().count()));
        panic!(
            "PROTOCOL.md's test vectors are stale (first difference at line {} of the \
             section):\n  doc:       {:?}\n  generated: {:?}\nIf the change is intended, run \
             {UPDATE_ENV}=1 cargo test -p silver-p2p-core --test protocol_vectors and review \
             the diff.",
            first_diff + 1,
            current.lines().nth(first_diff).unwrap_or("<end>"),
            generated.lines().nth(first_diff).unwrap_or("<end>"),
        );
    }
}

//! The messages peers exchange after the handshake, and their CBOR encoding.
//!
//! Each message is a CBOR array whose first item is the kind code (see [`MessageKind`]) and
//! whose remaining items are the fields in the order listed on each variant. A frame (the
//! plaintext of one Noise transport message) is a CBOR sequence of one or more messages.
//! PROTOCOL.md gives the byte-exact layout; the tests keep the two in step.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;

use crate::addr::PeerAddr;
use crate::cbor::{self, CborError, Reader};
use crate::identity::PeerId;

/// Most addresses one [`Message::Peers`] may carry.
pub const MAX_PEERS_PER_MESSAGE: usize = 1000;
/// Longest block or transaction hash [`Message::GetBlock`] and [`Message::GetTransaction`] carry.
pub const MAX_HASH_LEN: usize = 64;
/// Longest human-readable detail in a [`Message::Goodbye`].
pub const MAX_GOODBYE_DETAIL: usize = 256;
/// Most message ids in one IHave or IWant.
pub const MAX_IDS_PER_MESSAGE: usize = 256;

/// Application-defined message kinds: opaque to the library, meaningful to the application.
pub type AppKind = u32;

/// The kind code of each message, the first item of its CBOR array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum MessageKind {
    /// Keepalive probe.
    Ping = 0,
    /// Keepalive answer.
    Pong = 1,
    /// Ask for addresses.
    GetPeers = 2,
    /// Addresses.
    Peers = 3,
    /// A transaction (gossip).
    Transaction = 4,
    /// A block (gossip).
    Block = 5,
    /// Request a block by hash.
    GetBlock = 6,
    /// Request a transaction by hash.
    GetTransaction = 7,
    /// Answer to a request.
    Response = 8,
    /// Negative answer to a request.
    NotFound = 9,
    /// Application request.
    Request = 10,
    /// Application message that wants an acknowledgement.
    Unicast = 11,
    /// Acknowledgement of a unicast.
    Ack = 12,
    /// Application message without acknowledgement.
    App = 13,
    /// A piece of a large message.
    Chunk = 14,
    /// Clean close with a reason.
    Goodbye = 15,
    /// Application message for the receiving peer only: not acknowledged, not relayed.
    Direct = 16,
    /// Ids of gossip messages the sender can send on request (tree gossip).
    IHave = 17,
    /// Request for announced gossip messages; the sender wants pushes again.
    IWant = 18,
    /// The sender wants announcements instead of pushes.
    Prune = 19,
}

impl MessageKind {
    /// The kind with wire code `code`, if any.
    pub fn from_code(code: u64) -> Option<Self> {
        use MessageKind::*;
        Some(match code {
            0 => Ping,
            1 => Pong,
            2 => GetPeers,
            3 => Peers,
            4 => Transaction,
            5 => Block,
            6 => GetBlock,
            7 => GetTransaction,
            8 => Response,
            9 => NotFound,
            10 => Request,
            11 => Unicast,
            12 => Ack,
            13 => App,
            14 => Chunk,
            15 => Goodbye,
            16 => Direct,
            17 => IHave,
            18 => IWant,
            19 => Prune,
            _ => return None,
        })
    }

    /// Every kind, in code order.
    pub const ALL: [MessageKind; 20] = {
        use MessageKind::*;
        [
            Ping,
            Pong,
            GetPeers,
            Peers,
            Transaction,
            Block,
            GetBlock,
            GetTransaction,
            Response,
            NotFound,
            Request,
            Unicast,
            Ack,
            App,
            Chunk,
            Goodbye,
            Direct,
            IHave,
            IWant,
            Prune,
        ]
    };

    /// Number of items in this kind's CBOR array, the code included.
    pub const fn arity(self) -> usize {
        use MessageKind::*;
        match self {
            Prune => 1,
            Ping | Pong | GetPeers | Peers | Transaction | Block | NotFound | Ack | IHave
            | IWant => 2,
            GetBlock | GetTransaction | Response | App | Goodbye | Direct => 3,
            Request | Unicast => 4,
            Chunk => 6,
        }
    }

    /// The sending priority of this kind: control traffic overtakes data.
    pub const fn priority(self) -> Priority {
        use MessageKind::*;
        match self {
            Ping | Pong | Goodbye | Ack | NotFound | GetPeers | GetBlock | GetTransaction
            | IHave | IWant | Prune => Priority::Control,
            _ => Priority::Data,
        }
    }
}

/// Sending classes, highest first. Messages larger than one chunk travel in a third class,
/// bulk, after both (see the connection's outbound queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Small, latency-sensitive protocol traffic: Ping, Pong, Ack, Goodbye, GetPeers,
    /// GetBlock, GetTransaction, NotFound.
    Control,
    /// Everything else that fits in one chunk.
    Data,
}

/// Why a peer said goodbye (or why we did). Codes are stable on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum GoodbyeReason {
    /// The sender is closing by choice (shutdown, local request).
    Normal,
    /// The receiver broke the protocol.
    ProtocolViolation,
    /// The networks differ.
    NetworkMismatch,
    /// No protocol version in common.
    VersionMismatch,
    /// The receiver was silent for too long.
    Timeout,
    /// The receiver is banned by the sender.
    Banned,
    /// The sender has no room for another connection.
    TooManyConnections,
    /// The sender already has a connection to the receiver's identity.
    DuplicateConnection,
    /// The sender evicted this connection to make room.
    Evicted,
    /// The receiver exceeded the sender's rate limits.
    RateLimited,
    /// A code this version does not know (codes 0..=9 always decode to the named reasons).
    Other(u16),
}

impl GoodbyeReason {
    /// The wire code.
    pub fn code(self) -> u16 {
        use GoodbyeReason::*;
        match self {
            Normal => 0,
            ProtocolViolation => 1,
            NetworkMismatch => 2,
            VersionMismatch => 3,
            Timeout => 4,
            Banned => 5,
            TooManyConnections => 6,
            DuplicateConnection => 7,
            Evicted => 8,
            RateLimited => 9,
            Other(c) => c,
        }
    }

    /// The reason with wire code `code` (unknown codes are kept as [`GoodbyeReason::Other`]).
    pub fn from_code(code: u16) -> Self {
        use GoodbyeReason::*;
        match code {
            0 => Normal,
            1 => ProtocolViolation,
            2 => NetworkMismatch,
            3 => VersionMismatch,
            4 => Timeout,
            5 => Banned,
            6 => TooManyConnections,
            7 => DuplicateConnection,
            8 => Evicted,
            9 => RateLimited,
            c => Other(c),
        }
    }
}

/// One piece of a message too large for one frame. See the chunking rules in
/// [`crate::chunk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Sender-chosen id of the large message, unique among its partial messages.
    pub message_id: u64,
    /// Position of this piece, from 0.
    pub index: u32,
    /// Number of pieces.
    pub count: u32,
    /// Length in bytes of the whole encoded message.
    pub total_len: u64,
    /// This piece's bytes.
    pub data: Bytes,
}

/// A message between peers. Payloads of data messages are opaque bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// Keepalive probe; the receiver answers with a Pong carrying the same nonce.
    Ping {
        /// Random value the Pong must echo.
        nonce: u64,
    },
    /// Answer to a Ping.
    Pong {
        /// The Ping's nonce.
        nonce: u64,
    },
    /// Ask the peer for up to `max` addresses it knows.
    GetPeers {
        /// Most addresses wanted (the answer is also capped by [`MAX_PEERS_PER_MESSAGE`]).
        max: u32,
    },
    /// Addresses of other peers.
    Peers {
        /// At most [`MAX_PEERS_PER_MESSAGE`] addresses.
        addrs: Vec<PeerAddr>,
    },
    /// A transaction, gossiped.
    Transaction {
        /// The opaque transaction bytes.
        data: Bytes,
    },
    /// A block, gossiped.
    Block {
        /// The opaque block bytes.
        data: Bytes,
    },
    /// Request one block by hash.
    GetBlock {
        /// Sender-chosen id the answer echoes.
        request_id: u64,
        /// The block hash (at most [`MAX_HASH_LEN`] bytes).
        hash: Bytes,
    },
    /// Request one transaction by hash.
    GetTransaction {
        /// Sender-chosen id the answer echoes.
        request_id: u64,
        /// The transaction hash (at most [`MAX_HASH_LEN`] bytes).
        hash: Bytes,
    },
    /// Successful answer to a GetBlock, GetTransaction or Request.
    Response {
        /// The request's id.
        request_id: u64,
        /// The answer's bytes.
        data: Bytes,
    },
    /// The requested item is unknown to the peer.
    NotFound {
        /// The request's id.
        request_id: u64,
    },
    /// Application-defined request.
    Request {
        /// Sender-chosen id the answer echoes.
        request_id: u64,
        /// Application-defined kind.
        kind: AppKind,
        /// The request's bytes.
        data: Bytes,
    },
    /// Application message that the receiver acknowledges once its application has it.
    Unicast {
        /// Sender-chosen id the Ack echoes; a retry reuses it so the receiver can de-duplicate.
        message_id: u64,
        /// Application-defined kind.
        kind: AppKind,
        /// The message's bytes.
        data: Bytes,
    },
    /// Acknowledgement of a Unicast.
    Ack {
        /// The Unicast's id.
        message_id: u64,
    },
    /// Application-defined message without acknowledgement (also used for gossip).
    App {
        /// Application-defined kind.
        kind: AppKind,
        /// The message's bytes.
        data: Bytes,
    },
    /// A piece of a large message.
    Chunk(Chunk),
    /// Application message for the receiving peer only: neither acknowledged nor relayed.
    Direct {
        /// Application-defined kind.
        kind: AppKind,
        /// The message's bytes.
        data: Bytes,
    },
    /// Lazy gossip: ids of gossip messages the sender has and can send on request (tree
    /// gossip, see [`crate::node::GossipMode`]).
    IHave {
        /// At most [`MAX_IDS_PER_MESSAGE`] message ids.
        ids: Vec<[u8; 32]>,
    },
    /// Asks for the gossip messages with these ids (announced by an IHave), and asks the
    /// receiver to push future gossip to the sender eagerly.
    IWant {
        /// At most [`MAX_IDS_PER_MESSAGE`] message ids.
        ids: Vec<[u8; 32]>,
    },
    /// Asks the receiver to stop pushing gossip to the sender and to announce it with IHave
    /// instead (the sender got a message twice).
    Prune,
    /// Clean close: the sender closes the connection after this message.
    Goodbye {
        /// Why.
        reason: GoodbyeReason,
        /// Human-readable detail, at most [`MAX_GOODBYE_DETAIL`] bytes.
        detail: String,
    },
}

/// A message already encoded, to queue on many connections without encoding it for each
/// (see [`crate::Connection::send_encoded`]). Cheap to clone: the bytes are shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedMessage {
    kind: MessageKind,
    bytes: Bytes,
}

impl EncodedMessage {
    /// The message's kind.
    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    /// The encoding.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

/// Why a frame or message could not be decoded. Every rejection carries one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes are not valid deterministic CBOR of the expected shape.
    #[error("malformed CBOR: {0}")]
    Cbor(#[from] CborError),
    /// A frame with no message in it.
    #[error("empty frame")]
    EmptyFrame,
    /// A kind code this version does not know.
    #[error("unknown message kind {0}")]
    UnknownKind(u64),
    /// A message array with the wrong number of items for its kind.
    #[error("{kind:?} has {expected} items, got {found}")]
    WrongArity {
        /// The kind.
        kind: MessageKind,
        /// Items it must have.
        expected: usize,
        /// Items present.
        found: usize,
    },
    /// A field outside its allowed range.
    #[error("field {field} out of range")]
    OutOfRange {
        /// Which field.
        field: &'static str,
    },
    /// A chunk inside a reassembled message (chunks do not nest).
    #[error("a reassembled message is itself a chunk")]
    NestedChunk,
    /// Bytes left over after the item that should have been the last one.
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
}

fn put_addr(out: &mut Vec<u8>, a: &PeerAddr) {
    cbor::put_array(out, 3);
    match a.socket.ip() {
        IpAddr::V4(ip) => cbor::put_bytes(out, &ip.octets()),
        IpAddr::V6(ip) => cbor::put_bytes(out, &ip.octets()),
    }
    cbor::put_uint(out, u64::from(a.socket.port()));
    match &a.peer_id {
        Some(id) => cbor::put_bytes(out, id.as_bytes()),
        None => out.push(cbor::NULL),
    }
}

fn addr_len(a: &PeerAddr) -> usize {
    let ip = if a.socket.is_ipv4() { 4 } else { 16 };
    1 + cbor::string_len(ip)
        + cbor::head_len(u64::from(a.socket.port()))
        + if a.peer_id.is_some() {
            cbor::string_len(32)
        } else {
            1
        }
}

/// Reads one address (`[ip, port, peer-id or null]`) as used in Hello and Peers.
pub(crate) fn read_addr(r: &mut Reader<'_>) -> Result<PeerAddr, DecodeError> {
    if r.array()? != 3 {
        return Err(DecodeError::OutOfRange { field: "address" });
    }
    let ip = r.bytes_ref()?;
    let ip = match ip.len() {
        4 => IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])),
        16 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(ip);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => {
            return Err(DecodeError::OutOfRange {
                field: "address.ip",
            })
        }
    };
    let port = u16::try_from(r.uint()?).map_err(|_| DecodeError::OutOfRange {
        field: "address.port",
    })?;
    let peer_id = if r.null() {
        None
    } else {
        Some(
            PeerId::from_slice(r.bytes_ref()?).ok_or(DecodeError::OutOfRange {
                field: "address.peer_id",
            })?,
        )
    };
    Ok(PeerAddr {
        peer_id,
        socket: SocketAddr::new(ip, port),
    })
}

/// Writes one address (see [`read_addr`]).
pub(crate) fn write_addr(out: &mut Vec<u8>, a: &PeerAddr) {
    put_addr(out, a)
}

/// Encoded length of one address.
pub(crate) fn encoded_addr_len(a: &PeerAddr) -> usize {
    addr_len(a)
}

impl Message {
    /// This message's kind.
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Ping { .. } => MessageKind::Ping,
            Message::Pong { .. } => MessageKind::Pong,
            Message::GetPeers { .. } => MessageKind::GetPeers,
            Message::Peers { .. } => MessageKind::Peers,
            Message::Transaction { .. } => MessageKind::Transaction,
            Message::Block { .. } => MessageKind::Block,
            Message::GetBlock { .. } => MessageKind::GetBlock,
            Message::GetTransaction { .. } => MessageKind::GetTransaction,
            Message::Response { .. } => MessageKind::Response,
            Message::NotFound { .. } => MessageKind::NotFound,
            Message::Request { .. } => MessageKind::Request,
            Message::Unicast { .. } => MessageKind::Unicast,
            Message::Ack { .. } => MessageKind::Ack,
            Message::App { .. } => MessageKind::App,
            Message::Direct { .. } => MessageKind::Direct,
            Message::Chunk(_) => MessageKind::Chunk,
            Message::Goodbye { .. } => MessageKind::Goodbye,
            Message::IHave { .. } => MessageKind::IHave,
            Message::IWant { .. } => MessageKind::IWant,
            Message::Prune => MessageKind::Prune,
        }
    }

    /// Checks the limits the decoder enforces, so that nothing we send is something a peer
    /// would reject. Returns the offending field.
    pub fn validate(&self) -> Result<(), &'static str> {
        match self {
            Message::Peers { addrs } if addrs.len() > MAX_PEERS_PER_MESSAGE => Err("addrs"),
            Message::GetBlock { hash, .. } | Message::GetTransaction { hash, .. }
                if hash.len() > MAX_HASH_LEN =>
            {
                Err("hash")
            }
            Message::Goodbye { detail, .. } if detail.len() > MAX_GOODBYE_DETAIL => Err("detail"),
            Message::IHave { ids } | Message::IWant { ids } if ids.len() > MAX_IDS_PER_MESSAGE => {
                Err("ids")
            }
            _ => Ok(()),
        }
    }

    /// Exact length of [`Message::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        use cbor::{head_len, string_len};
        let body = match self {
            Message::Ping { nonce } | Message::Pong { nonce } => head_len(*nonce),
            Message::GetPeers { max } => head_len(u64::from(*max)),
            Message::Peers { addrs } => {
                head_len(addrs.len() as u64) + addrs.iter().map(addr_len).sum::<usize>()
            }
            Message::Transaction { data } | Message::Block { data } => string_len(data.len()),
            Message::GetBlock { request_id, hash }
            | Message::GetTransaction { request_id, hash } => {
                head_len(*request_id) + string_len(hash.len())
            }
            Message::Response { request_id, data } => {
                head_len(*request_id) + string_len(data.len())
            }
            Message::NotFound { request_id } => head_len(*request_id),
            Message::Request {
                request_id,
                kind,
                data,
            } => head_len(*request_id) + head_len(u64::from(*kind)) + string_len(data.len()),
            Message::Unicast {
                message_id,
                kind,
                data,
            } => head_len(*message_id) + head_len(u64::from(*kind)) + string_len(data.len()),
            Message::Ack { message_id } => head_len(*message_id),
            Message::App { kind, data } => head_len(u64::from(*kind)) + string_len(data.len()),
            Message::Direct { kind, data } => return Message::direct_len(*kind, data.len()),
            Message::Chunk(c) => {
                head_len(c.message_id)
                    + head_len(u64::from(c.index))
                    + head_len(u64::from(c.count))
                    + head_len(c.total_len)
                    + string_len(c.data.len())
            }
            Message::Goodbye { reason, detail } => {
                head_len(u64::from(reason.code())) + string_len(detail.len())
            }
            Message::IHave { ids } | Message::IWant { ids } => {
                head_len(ids.len() as u64) + ids.len() * string_len(32)
            }
            Message::Prune => 0,
        };
        // Array head (arity < 24: one byte) and kind code (< 24: one byte).
        2 + body
    }

    /// The encoded length of a [`Message::Direct`] of `kind` with `payload_len` bytes,
    /// without building one (so a caller can check a size limit before handing over the
    /// payload).
    pub const fn direct_len(kind: AppKind, payload_len: usize) -> usize {
        2 + cbor::head_len(kind as u64) + cbor::string_len(payload_len)
    }

    /// Appends this message's CBOR encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        use cbor::{put_bytes, put_text, put_uint};
        let kind = self.kind();
        cbor::put_array(out, kind.arity());
        put_uint(out, kind as u64);
        match self {
            Message::Ping { nonce } | Message::Pong { nonce } => put_uint(out, *nonce),
            Message::GetPeers { max } => put_uint(out, u64::from(*max)),
            Message::Peers { addrs } => {
                cbor::put_array(out, addrs.len());
                for a in addrs {
                    put_addr(out, a);
                }
            }
            Message::Transaction { data } | Message::Block { data } => put_bytes(out, data),
            Message::GetBlock { request_id, hash }
            | Message::GetTransaction { request_id, hash } => {
                put_uint(out, *request_id);
                put_bytes(out, hash);
            }
            Message::Response { request_id, data } => {
                put_uint(out, *request_id);
                put_bytes(out, data);
            }
            Message::NotFound { request_id } => put_uint(out, *request_id),
            Message::Request {
                request_id,
                kind,
                data,
            } => {
                put_uint(out, *request_id);
                put_uint(out, u64::from(*kind));
                put_bytes(out, data);
            }
            Message::Unicast {
                message_id,
                kind,
                data,
            } => {
                put_uint(out, *message_id);
                put_uint(out, u64::from(*kind));
                put_bytes(out, data);
            }
            Message::Ack { message_id } => put_uint(out, *message_id),
            Message::App { kind, data } | Message::Direct { kind, data } => {
                put_uint(out, u64::from(*kind));
                put_bytes(out, data);
            }
            Message::Chunk(c) => {
                put_uint(out, c.message_id);
                put_uint(out, u64::from(c.index));
                put_uint(out, u64::from(c.count));
                put_uint(out, c.total_len);
                put_bytes(out, &c.data);
            }
            Message::Goodbye { reason, detail } => {
                put_uint(out, u64::from(reason.code()));
                put_text(out, detail);
            }
            Message::IHave { ids } | Message::IWant { ids } => {
                cbor::put_array(out, ids.len());
                for id in ids {
                    put_bytes(out, id);
                }
            }
            Message::Prune => {}
        }
    }

    /// The encoding split as (everything before the trailing byte string, that string's
    /// bytes), for kinds whose last field is opaque data.
    pub(crate) fn split_tail(&self) -> Option<(Vec<u8>, Bytes)> {
        let (data, empty) = match self {
            Message::Transaction { data } => (data, Message::Transaction { data: Bytes::new() }),
            Message::Block { data } => (data, Message::Block { data: Bytes::new() }),
            Message::Response { request_id, data } => (
                data,
                Message::Response {
                    request_id: *request_id,
                    data: Bytes::new(),
                },
            ),
            Message::Request {
                request_id,
                kind,
                data,
            } => (
                data,
                Message::Request {
                    request_id: *request_id,
                    kind: *kind,
                    data: Bytes::new(),
                },
            ),
            Message::Unicast {
                message_id,
                kind,
                data,
            } => (
                data,
                Message::Unicast {
                    message_id: *message_id,
                    kind: *kind,
                    data: Bytes::new(),
                },
            ),
            Message::App { kind, data } => (
                data,
                Message::App {
                    kind: *kind,
                    data: Bytes::new(),
                },
            ),
            Message::Direct { kind, data } => (
                data,
                Message::Direct {
                    kind: *kind,
                    data: Bytes::new(),
                },
            ),
            _ => return None,
        };
        let mut head = Vec::with_capacity(24);
        empty.encode(&mut head);
        head.pop();
        cbor::put_head(&mut head, cbor::MAJOR_BYTES, data.len() as u64);
        Some((head, data.clone()))
    }

    /// Encodes once for sending on many connections; fails (naming the field) if the message
    /// breaks a protocol limit.
    pub fn encoded(&self) -> Result<EncodedMessage, &'static str> {
        self.validate()?;
        Ok(EncodedMessage {
            kind: self.kind(),
            bytes: Bytes::from(self.to_bytes()),
        })
    }

    /// This message's encoding in a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }

    /// Decodes exactly one message occupying all of `buf`.
    pub fn decode(buf: &Bytes) -> Result<Message, DecodeError> {
        let mut r = Reader::new(buf);
        let m = Self::read(&mut r)?;
        if !r.is_empty() {
            return Err(DecodeError::TrailingBytes(r.remaining()));
        }
        Ok(m)
    }

    /// Reads the next message from a frame.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Message, DecodeError> {
        let n = r.array()?;
        let code = r.uint()?;
        let kind = MessageKind::from_code(code).ok_or(DecodeError::UnknownKind(code))?;
        if n != kind.arity() {
            return Err(DecodeError::WrongArity {
                kind,
                expected: kind.arity(),
                found: n,
            });
        }
        fn u32_field(r: &mut Reader<'_>, field: &'static str) -> Result<u32, DecodeError> {
            u32::try_from(r.uint()?).map_err(|_| DecodeError::OutOfRange { field })
        }
        fn hash(r: &mut Reader<'_>) -> Result<Bytes, DecodeError> {
            let h = r.bytes()?;
            if h.len() > MAX_HASH_LEN {
                return Err(DecodeError::OutOfRange { field: "hash" });
            }
            Ok(h)
        }
        Ok(match kind {
            MessageKind::Ping => Message::Ping { nonce: r.uint()? },
            MessageKind::Pong => Message::Pong { nonce: r.uint()? },
            MessageKind::GetPeers => Message::GetPeers {
                max: u32_field(r, "max")?,
            },
            MessageKind::Peers => {
                let count = r.array()?;
                if count > MAX_PEERS_PER_MESSAGE {
                    return Err(DecodeError::OutOfRange { field: "addrs" });
                }
                let mut addrs = Vec::with_capacity(count);
                for _ in 0..count {
                    addrs.push(read_addr(r)?);
                }
                Message::Peers { addrs }
            }
            MessageKind::Transaction => Message::Transaction { data: r.bytes()? },
            MessageKind::Block => Message::Block { data: r.bytes()? },
            MessageKind::GetBlock => Message::GetBlock {
                request_id: r.uint()?,
                hash: hash(r)?,
            },
            MessageKind::GetTransaction => Message::GetTransaction {
                request_id: r.uint()?,
                hash: hash(r)?,
            },
            MessageKind::Response => Message::Response {
                request_id: r.uint()?,
                data: r.bytes()?,
            },
            MessageKind::NotFound => Message::NotFound {
                request_id: r.uint()?,
            },
            MessageKind::Request => Message::Request {
                request_id: r.uint()?,
                kind: u32_field(r, "kind")?,
                data: r.bytes()?,
            },
            MessageKind::Unicast => Message::Unicast {
                message_id: r.uint()?,
                kind: u32_field(r, "kind")?,
                data: r.bytes()?,
            },
            MessageKind::Ack => Message::Ack {
                message_id: r.uint()?,
            },
            MessageKind::App => Message::App {
                kind: u32_field(r, "kind")?,
                data: r.bytes()?,
            },
            MessageKind::Direct => Message::Direct {
                kind: u32_field(r, "kind")?,
                data: r.bytes()?,
            },
            MessageKind::Chunk => Message::Chunk(Chunk {
                message_id: r.uint()?,
                index: u32_field(r, "index")?,
                count: u32_field(r, "count")?,
                total_len: r.uint()?,
                data: r.bytes()?,
            }),
            MessageKind::Goodbye => {
                let code = u16::try_from(r.uint()?)
                    .map_err(|_| DecodeError::OutOfRange { field: "reason" })?;
                let detail = r.text()?;
                if detail.len() > MAX_GOODBYE_DETAIL {
                    return Err(DecodeError::OutOfRange { field: "detail" });
                }
                Message::Goodbye {
                    reason: GoodbyeReason::from_code(code),
                    detail: detail.to_string(),
                }
            }
            MessageKind::IHave => Message::IHave { ids: read_ids(r)? },
            MessageKind::IWant => Message::IWant { ids: read_ids(r)? },
            MessageKind::Prune => Message::Prune,
        })
    }
}

/// Reads the id list of an IHave or IWant: at most [`MAX_IDS_PER_MESSAGE`] byte strings of
/// exactly 32 bytes.
fn read_ids(r: &mut Reader<'_>) -> Result<Vec<[u8; 32]>, DecodeError> {
    let count = r.array()?;
    if count > MAX_IDS_PER_MESSAGE {
        return Err(DecodeError::OutOfRange { field: "ids" });
    }
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let id: [u8; 32] = r
            .bytes_ref()?
            .try_into()
            .map_err(|_| DecodeError::OutOfRange { field: "ids" })?;
        ids.push(id);
    }
    Ok(ids)
}

/// Decodes every message in a frame, in order, calling `f` for each. Stops at the first
/// invalid message and returns its error; messages before it were already handed to `f`.
pub fn decode_frame(frame: &Bytes, mut f: impl FnMut(Message)) -> Result<usize, DecodeError> {
    let mut r = Reader::new(frame);
    if r.is_empty() {
        return Err(DecodeError::EmptyFrame);
    }
    let mut n = 0;
    while !r.is_empty() {
        f(Message::read(&mut r)?);
        n += 1;
    }
    Ok(n)
}

/// Decodes every message in a frame into a vector (convenience for tests and tools).
pub fn decode_frame_to_vec(frame: &Bytes) -> Result<Vec<Message>, DecodeError> {
    let mut v = Vec::new();
    decode_frame(frame, |m| v.push(m))?;
    Ok(v)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Strategies producing every message kind, for property tests in this crate and others.
    use super::*;
    use proptest::prelude::*;

    /// Any address, pinned or not, IPv4 or IPv6.
    pub fn any_addr() -> impl Strategy<Value = PeerAddr> {
        (
            prop_oneof![
                any::<[u8; 4]>().prop_map(|o| IpAddr::V4(o.into())),
                any::<[u8; 16]>().prop_map(|o| IpAddr::V6(o.into()))
            ],
            any::<u16>(),
            proptest::option::of(any::<[u8; 32]>()),
        )
            .prop_map(|(ip, port, id)| PeerAddr {
                peer_id: id.map(PeerId::from_public_key),
                socket: SocketAddr::new(ip, port),
            })
    }

    fn payload(max: usize) -> impl Strategy<Value = Bytes> {
        prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
    }

    /// Any valid message of any kind.
    pub fn any_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            any::<u64>().prop_map(|nonce| Message::Ping { nonce }),
            any::<u64>().prop_map(|nonce| Message::Pong { nonce }),
            any::<u32>().prop_map(|max| Message::GetPeers { max }),
            prop::collection::vec(any_addr(), 0..20).prop_map(|addrs| Message::Peers { addrs }),
            payload(600).prop_map(|data| Message::Transaction { data }),
            payload(600).prop_map(|data| Message::Block { data }),
            (any::<u64>(), payload(MAX_HASH_LEN))
                .prop_map(|(request_id, hash)| Message::GetBlock { request_id, hash }),
            (any::<u64>(), payload(MAX_HASH_LEN))
                .prop_map(|(request_id, hash)| Message::GetTransaction { request_id, hash }),
            (any::<u64>(), payload(300))
                .prop_map(|(request_id, data)| Message::Response { request_id, data }),
            any::<u64>().prop_map(|request_id| Message::NotFound { request_id }),
            (any::<u64>(), any::<u32>(), payload(300)).prop_map(|(request_id, kind, data)| {
                Message::Request {
                    request_id,
                    kind,
                    data,
                }
            }),
            (any::<u64>(), any::<u32>(), payload(300)).prop_map(|(message_id, kind, data)| {
                Message::Unicast {
                    message_id,
                    kind,
                    data,
                }
            }),
            any::<u64>().prop_map(|message_id| Message::Ack { message_id }),
            (any::<u32>(), payload(300)).prop_map(|(kind, data)| Message::App { kind, data }),
            (any::<u32>(), payload(300)).prop_map(|(kind, data)| Message::Direct { kind, data }),
            (
                any::<u64>(),
                any::<u32>(),
                any::<u32>(),
                any::<u64>(),
                payload(300)
            )
                .prop_map(
                    |(message_id, index, count, total_len, data)| Message::Chunk(Chunk {
                        message_id,
                        index,
                        count,
                        total_len,
                        data
                    })
                ),
            (any::<u16>(), "[a-z ]{0,40}").prop_map(|(code, detail)| Message::Goodbye {
                reason: GoodbyeReason::from_code(code),
                detail
            }),
            prop::collection::vec(any::<[u8; 32]>(), 0..20).prop_map(|ids| Message::IHave { ids }),
            prop::collection::vec(any::<[u8; 32]>(), 0..20).prop_map(|ids| Message::IWant { ids }),
            Just(Message::Prune),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_kind_has_a_unique_code_and_round_trips() {
        for (i, k) in MessageKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
            assert_eq!(MessageKind::from_code(i as u64), Some(*k));
        }
        assert_eq!(MessageKind::from_code(MessageKind::ALL.len() as u64), None);
    }

    #[test]
    fn deep_nesting_is_rejected_without_recursion() {
        // 10,000 nested arrays: the decoder wants a uint kind after the first array head.
        let mut b = vec![0x81u8; 10_000];
        b.push(0x00);
        let b = Bytes::from(b);
        assert!(matches!(
            decode_frame_to_vec(&b),
            Err(DecodeError::Cbor(CborError::UnexpectedType { .. }))
        ));
    }

    #[test]
    fn huge_declared_element_count_is_rejected_before_allocation() {
        // Peers message declaring 2^64-1 addresses.
        let mut b = vec![0x82, 0x03, 0x9b];
        b.extend_from_slice(&[0xff; 8]);
        let b = Bytes::from(b);
        assert!(matches!(
            decode_frame_to_vec(&b),
            Err(DecodeError::Cbor(CborError::LengthBeyondInput { .. }))
        ));
        // Peers message declaring 1001 addresses with enough bytes to look plausible.
        let mut b = vec![0x82, 0x03, 0x99, 0x03, 0xe9];
        b.extend_from_slice(&[0u8; 1001]);
        assert_eq!(
            decode_frame_to_vec(&Bytes::from(b)),
            Err(DecodeError::OutOfRange { field: "addrs" })
        );
    }

    #[test]
    fn wrong_arity_and_unknown_kinds_are_named() {
        let b = Bytes::from_static(&[0x83, 0x00, 0x01, 0x02]);
        assert!(matches!(
            decode_frame_to_vec(&b),
            Err(DecodeError::WrongArity {
                kind: MessageKind::Ping,
                ..
            })
        ));
        let b = Bytes::from_static(&[0x81, 0x18, 99]);
        assert_eq!(decode_frame_to_vec(&b), Err(DecodeError::UnknownKind(99)));
        assert_eq!(
            decode_frame_to_vec(&Bytes::new()),
            Err(DecodeError::EmptyFrame)
        );
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(msgs in prop::collection::vec(any_message(), 1..8)) {
            let mut frame = Vec::new();
            for m in &msgs {
                let before = frame.len();
                m.encode(&mut frame);
                prop_assert_eq!(frame.len() - before, m.encoded_len());
            }
            let frame = Bytes::from(frame);
            prop_assert_eq!(decode_frame_to_vec(&frame).unwrap(), msgs);
        }

        #[test]
        fn decoding_is_canonical(m in any_message()) {
            // Re-encoding a decoded message gives back the same bytes.
            let bytes = Bytes::from(m.to_bytes());
            let again = Message::decode(&bytes).unwrap().to_bytes();
            prop_assert_eq!(&bytes[..], &again[..]);
        }

        #[test]
        fn an_off_the_shelf_cbor_library_reads_every_message(m in any_message()) {
            let bytes = m.to_bytes();
            let v: ciborium::Value = ciborium::from_reader(&bytes[..]).unwrap();
            let items = v.as_array().unwrap();
            prop_assert_eq!(items.len(), m.kind().arity());
            prop_assert_eq!(items[0].as_integer().unwrap(), ciborium::value::Integer::from(m.kind() as u8));
        }

        #[test]
        fn split_tail_is_the_encoding_in_two_parts(m in any_message()) {
            if let Some((head, body)) = m.split_tail() {
                let mut joined = head;
                joined.extend_from_slice(&body);
                prop_assert_eq!(joined, m.to_bytes());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(b in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frame_to_vec(&Bytes::from(b));
        }
    }
}

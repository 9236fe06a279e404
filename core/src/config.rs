//! Per-connection limits and intervals, with documented defaults and validation.

use std::time::Duration;

use crate::handshake::MAX_FRAME_PLAINTEXT;

/// Every bound and interval a [`crate::Connection`] enforces. Share one instance between
/// connections through an `Arc`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Time from creating the connection to completing the handshake. Incoming bytes do not
    /// extend it. Default 10 s.
    #[serde(with = "crate::config::duration_ms", rename = "handshake_timeout_ms")]
    pub handshake_timeout: Duration,
    /// Longest the peer may stay silent before we send it a keepalive Ping; a silent link
    /// is pinged at this interval. Default 30 s.
    #[serde(with = "crate::config::duration_ms", rename = "ping_interval_ms")]
    pub ping_interval: Duration,
    /// Longest interval between Pings on a link that carries other traffic (and so needs no
    /// keepalive): each Pong is a round-trip sample for the peer's health score and for
    /// eviction, so this bounds how stale that sample gets. The first Ping still goes out
    /// `ping_interval` after the handshake. Equal to `ping_interval`, every link is pinged
    /// at that interval whatever its traffic. Default 120 s.
    #[serde(with = "crate::config::duration_ms", rename = "rtt_sample_interval_ms")]
    pub rtt_sample_interval: Duration,
    /// A connected peer that sends nothing at all for this long is closed. Must exceed
    /// `ping_interval` (an honest peer answers every Ping). Default 90 s.
    #[serde(with = "crate::config::duration_ms", rename = "idle_timeout_ms")]
    pub idle_timeout: Duration,
    /// Bound on handshake packets before authentication: no packet may be larger than this
    /// plus the Noise overhead (96 bytes), which bounds the peer's Hello. At least 1024 (the
    /// largest valid Hello is 576 bytes). Default 2048 bytes.
    pub max_hello_size: usize,
    /// Largest encoded message, chunked or not, in either direction. Default 8 MiB.
    pub max_message_size: usize,
    /// Messages whose encoding exceeds this travel as chunks of this many bytes. At most
    /// 65,519 − 64 so a chunk fits a frame. Default 16,256 (four chunks per full frame).
    pub chunk_size: usize,
    /// Most chunked messages a peer may have partially sent at once. Default 4.
    pub max_partial_messages: usize,
    /// Time from a chunked message's first chunk to its last. Default 120 s.
    #[serde(with = "crate::config::duration_ms", rename = "reassembly_timeout_ms")]
    pub reassembly_timeout: Duration,
    /// Encoded bytes that may wait in the outbound queue; `send` fails with `QueueFull`
    /// beyond it. At least `max_message_size`. Default 16 MiB.
    pub max_queued_bytes: usize,
    /// Messages that may wait in the outbound queue. Default 65,536.
    pub max_queued_messages: usize,
    /// Bytes handed to the adapter and not yet reported written. No new frames are built
    /// past it (one frame may overshoot it). Default 1 MiB.
    pub max_in_flight_bytes: usize,
    /// Largest single `Transmit` (several frames coalesced for one write). Default 256 KiB.
    pub max_transmit_bytes: usize,
    /// Queued replies to this peer (pongs, responses, acks, peer lists) above which we stop
    /// reading from it until half of them are written: a peer that asks without reading the
    /// answers gets TCP back-pressure. Default 1 MiB.
    pub reply_backlog_limit: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            rtt_sample_interval: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(90),
            max_hello_size: 2048,
            max_message_size: 8 << 20,
            chunk_size: 16_256,
            max_partial_messages: 4,
            reassembly_timeout: Duration::from_secs(120),
            max_queued_bytes: 16 << 20,
            max_queued_messages: 65_536,
            max_in_flight_bytes: 1 << 20,
            max_transmit_bytes: 256 << 10,
            reply_backlog_limit: 1 << 20,
        }
    }
}

/// A configuration value that breaks a rule. The message names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct ConfigError {
    /// The field (dotted path for nested sections).
    pub field: String,
    /// The rule it breaks, with the values involved.
    pub rule: String,
}

impl ConfigError {
    /// An error for `field` breaking `rule`.
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

impl ConnectionConfig {
    /// The most bytes one [`crate::Connection`] may hold by its own accounting
    /// ([`crate::Connection::buffered_bytes`]) under this configuration, whatever the peer
    /// sends, as long as the adapter honours `PauseRead`:
    ///
    /// one partial packet (2 + 65,535) + `max_partial_messages × max_message_size` of partial
    /// chunked messages + `max_queued_bytes` of outbound queue + `max_in_flight_bytes` of
    /// undrained transmits, plus two packets for the frame a transmit may overshoot by and the
    /// handshake. With the defaults: about 50 MiB, dominated by reassembly (4 × 8 MiB) and
    /// the queue (16 MiB); lower those two for nodes with many peers.
    ///
    /// The fuzz targets assert this bound after every input.
    pub fn max_buffered_bytes(&self) -> usize {
        let packet = crate::frame::LEN_PREFIX + crate::frame::MAX_PACKET_LEN;
        packet
            .saturating_add(
                self.max_partial_messages
                    .saturating_mul(self.max_message_size),
            )
            .saturating_add(self.max_queued_bytes)
            .saturating_add(self.max_in_flight_bytes)
            .saturating_add(2 * packet)
    }

    /// Checks every rule; the first broken one is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let nonzero = |field: &str, v: Duration| {
            if v.is_zero() {
                Err(ConfigError::new(field, "must be greater than zero"))
            } else {
                Ok(())
            }
        };
        nonzero("handshake_timeout_ms", self.handshake_timeout)?;
        nonzero("ping_interval_ms", self.ping_interval)?;
        nonzero("rtt_sample_interval_ms", self.rtt_sample_interval)?;
        nonzero("reassembly_timeout_ms", self.reassembly_timeout)?;
        if self.idle_timeout <= self.ping_interval {
            return Err(ConfigError::new(
                "idle_timeout_ms",
                format!(
                    "idle_timeout ({:?}) must exceed ping_interval ({:?})",
                    self.idle_timeout, self.ping_interval
                ),
            ));
        }
        if !(1024..=16_384).contains(&self.max_hello_size) {
            return Err(ConfigError::new(
                "max_hello_size",
                format!("{} is outside 1024..=16384", self.max_hello_size),
            ));
        }
        let max_chunk = MAX_FRAME_PLAINTEXT - 64;
        if !(512..=max_chunk).contains(&self.chunk_size) {
            return Err(ConfigError::new(
                "chunk_size",
                format!("{} is outside 512..={max_chunk}", self.chunk_size),
            ));
        }
        if self.max_message_size < self.chunk_size || self.max_message_size > (u32::MAX as usize) {
            return Err(ConfigError::new(
                "max_message_size",
                format!(
                    "{} must be between chunk_size ({}) and 4 GiB",
                    self.max_message_size, self.chunk_size
                ),
            ));
        }
        if self.max_partial_messages == 0 {
            return Err(ConfigError::new(
                "max_partial_messages",
                "must be at least 1",
            ));
        }
        if self.max_queued_bytes < self.max_message_size {
            return Err(ConfigError::new(
                "max_queued_bytes",
                format!(
                    "max_queued_bytes ({}) is below max_message_size ({})",
                    self.max_queued_bytes, self.max_message_size
                ),
            ));
        }
        if self.max_queued_messages == 0 {
            return Err(ConfigError::new(
                "max_queued_messages",
                "must be at least 1",
            ));
        }
        if self.max_in_flight_bytes < 1024 {
            return Err(ConfigError::new(
                "max_in_flight_bytes",
                "must be at least 1024",
            ));
        }
        if self.max_transmit_bytes < 1024 {
            return Err(ConfigError::new(
                "max_transmit_bytes",
                "must be at least 1024",
            ));
        }
        if self.reply_backlog_limit < 1024 {
            return Err(ConfigError::new(
                "reply_backlog_limit",
                "must be at least 1024",
            ));
        }
        Ok(())
    }
}

/// Serde helper: durations as whole milliseconds (`ping_interval_ms = 30000`).
pub(crate) mod duration_ms {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u128::from(u64::MAX)) as u64)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = <u64 as serde::Deserialize>::deserialize(d)?;
        Ok(Duration::from_millis(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ConnectionConfig::default().validate().unwrap();
    }

    #[test]
    fn errors_name_the_field_and_rule() {
        let c = ConnectionConfig {
            idle_timeout: Duration::from_secs(10),
            ..Default::default()
        };
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "idle_timeout_ms");
        assert!(e.to_string().contains("must exceed ping_interval"), "{e}");
        let c = ConnectionConfig {
            chunk_size: 70_000,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "chunk_size");
    }
}

//! The read buffer every adapter's reader uses, so thousands of idle connections do not
//! each hold a buffer sized for bulk transfer.

/// A connection's read buffer, sized to its traffic: an idle connection (most of them, in a
/// node with hundreds of peers) waits on a small buffer, and a connection whose reads fill
/// that buffer reads through a large one until its reads turn small again.
///
/// A reader calls [`ReadBuffer::for_read`] for the buffer of each read and then
/// [`ReadBuffer::take`] with the count the read returned; nothing read is ever lost when the
/// size changes, since `take` copies the bytes out first.
#[derive(Debug, Default)]
pub struct ReadBuffer {
    small: Vec<u8>,
    large: Option<Vec<u8>>,
}

impl ReadBuffer {
    /// What an idle connection holds while it waits: enough for a keepalive, a handshake
    /// message or a small request in one read.
    pub const SMALL: usize = 2 * 1024;
    /// What a busy connection reads into: many frames per read system call.
    pub const LARGE: usize = 64 * 1024;
    /// A read into the large buffer shorter than this means the burst is over.
    pub const SHRINK_BELOW: usize = Self::LARGE / 16;

    /// The buffer for the next read.
    pub fn for_read(&mut self) -> &mut [u8] {
        match &mut self.large {
            Some(large) => large,
            None => {
                if self.small.is_empty() {
                    self.small = vec![0; Self::SMALL];
                }
                &mut self.small
            }
        }
    }

    /// The `n` bytes just read, copied out; adapts the buffer size for the next read.
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        match self.large.take() {
            Some(large) => {
                let bytes = large[..n].to_vec();
                if n >= Self::SHRINK_BELOW {
                    self.large = Some(large);
                }
                bytes
            }
            None => {
                let bytes = self.small[..n].to_vec();
                if n == self.small.len() {
                    // More is probably waiting in the socket: read it in large pieces.
                    self.large = Some(vec![0; Self::LARGE]);
                }
                bytes
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ReadBuffer;

    #[test]
    fn read_buffer_grows_for_bursts_and_shrinks_when_they_end() {
        let mut b = ReadBuffer::default();
        assert_eq!(b.for_read().len(), ReadBuffer::SMALL, "idle: small buffer");
        b.for_read()[..3].copy_from_slice(b"abc");
        assert_eq!(b.take(3), b"abc", "a short read stays small");
        assert_eq!(b.for_read().len(), ReadBuffer::SMALL);

        // A read that fills the small buffer switches to the large one.
        let n = ReadBuffer::SMALL;
        b.for_read().fill(7);
        assert_eq!(b.take(n), vec![7; n]);
        assert_eq!(b.for_read().len(), ReadBuffer::LARGE);

        // Large reads keep it; a short one ends the burst.
        b.for_read()[..ReadBuffer::SHRINK_BELOW].fill(1);
        assert_eq!(
            b.take(ReadBuffer::SHRINK_BELOW).len(),
            ReadBuffer::SHRINK_BELOW
        );
        assert_eq!(b.for_read().len(), ReadBuffer::LARGE);
        b.for_read()[..10].fill(2);
        assert_eq!(b.take(10), vec![2; 10]);
        assert_eq!(b.for_read().len(), ReadBuffer::SMALL, "back to small");
    }
}

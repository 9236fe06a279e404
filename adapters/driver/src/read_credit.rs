//! [`ReadCredit`]: how far a connection's reader may run ahead of the loop.
//!
//! A reader hands what it read to the loop through a channel and reads on. Without a bound,
//! a peer that sends faster than the loop processes (a busy loop, a slow application
//! handler) would pile its bytes up in that channel without limit. The reader therefore
//! counts the bytes it handed over, the loop counts the bytes it processed, and the reader
//! waits while the difference is above [`crate::NodeOptions::max_unprocessed_read_bytes`].
//! TCP flow control then slows the peer down: nothing is lost, memory stays bounded.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;

use futures::task::AtomicWaker;

/// The shared count between one connection's reader and the loop. See the module docs.
#[derive(Debug)]
pub struct ReadCredit {
    unprocessed: AtomicUsize,
    limit: usize,
    closed: AtomicBool,
    waker: AtomicWaker,
}

impl ReadCredit {
    /// A credit letting the reader run at most `limit` bytes ahead (at least 1).
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(ReadCredit {
            unprocessed: AtomicUsize::new(0),
            limit: limit.max(1),
            closed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        })
    }

    /// The reader handed `n` bytes to the loop.
    pub fn handed(&self, n: usize) {
        self.unprocessed.fetch_add(n, Ordering::AcqRel);
    }

    /// The loop processed `n` bytes of this connection; wakes the reader if that brought
    /// it back under the limit.
    pub fn processed(&self, n: usize) {
        let before = self.unprocessed.fetch_sub(n, Ordering::AcqRel);
        if before > self.limit && before - n <= self.limit {
            self.waker.wake();
        }
    }

    /// The connection is gone: a waiting reader stops waiting (and then ends).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether the reader must wait before reading again.
    pub fn exhausted(&self) -> bool {
        self.unprocessed.load(Ordering::Acquire) > self.limit
            && !self.closed.load(Ordering::Acquire)
    }

    /// Completes once the reader may read again (or the connection was closed).
    pub fn wait(&self) -> impl Future<Output = ()> + Send + '_ {
        futures::future::poll_fn(move |cx| {
            // Registered before the check: a `processed` between the two still wakes us.
            self.waker.register(cx.waker());
            if self.exhausted() {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
    }
}

impl ReadCredit {
    /// [`ReadCredit::wait`] for a reader on its own thread: blocks it.
    pub fn wait_blocking(&self) {
        futures::executor::block_on(self.wait());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_waits_above_the_limit_until_the_loop_catches_up() {
        let credit = ReadCredit::new(100);
        credit.handed(60);
        assert!(!credit.exhausted(), "up to the limit the reader goes on");
        credit.handed(60);
        assert!(credit.exhausted());
        let waiter = {
            let credit = credit.clone();
            std::thread::spawn(move || credit.wait_blocking())
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(
            !waiter.is_finished(),
            "120 bytes unprocessed: the reader waits"
        );
        credit.processed(60);
        waiter.join().unwrap();
        assert!(!credit.exhausted());
    }

    #[test]
    fn closing_releases_a_waiting_reader() {
        let credit = ReadCredit::new(10);
        credit.handed(11);
        let waiter = {
            let credit = credit.clone();
            std::thread::spawn(move || credit.wait_blocking())
        };
        credit.close();
        waiter.join().unwrap();
    }
}

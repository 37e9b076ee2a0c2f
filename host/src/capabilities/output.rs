//! The guest's stdout and stderr (`wasi:cli/stdout`, `wasi:cli/stderr`):
//! captured for the call log, never passed to kubelet, and bounded.
//!
//! A write never fails: Rust's `println!` panics when a write fails, so a
//! capped pipe that refuses bytes would turn a chatty plugin into a crashed
//! one. Instead the first half of the cap and the last half are kept (the
//! start says what the plugin was doing, the end holds a panic message) and
//! the bytes between are counted and dropped, so a flood costs the host
//! nothing but a counter.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The note that replaces dropped bytes starts and ends with these.
pub const DROP_NOTE_START: &str = "\n[… ";
pub const DROP_NOTE_END: &str = " bytes dropped: over the output limit …]\n";

/// How much one `check-write` permits; any amount is accepted anyway.
const PERMIT: usize = 64 << 10;

#[derive(Clone)]
pub struct CappedOutput {
    inner: Arc<Mutex<Captured>>,
}

struct Captured {
    head_cap: usize,
    tail_cap: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    dropped: u64,
}

impl CappedOutput {
    /// Keeps at most `capacity` bytes: the first and the last half.
    pub fn new(capacity: usize) -> Self {
        let head_cap = capacity / 2;
        CappedOutput {
            inner: Arc::new(Mutex::new(Captured {
                head_cap,
                tail_cap: capacity - head_cap,
                head: Vec::new(),
                tail: VecDeque::new(),
                dropped: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Captured> {
        // A poisoned lock only means a panic elsewhere; the bytes are fine.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, mut bytes: &[u8]) {
        let mut c = self.lock();
        let room = c.head_cap - c.head.len();
        let n = room.min(bytes.len());
        c.head.extend_from_slice(&bytes[..n]);
        bytes = &bytes[n..];
        if bytes.len() > c.tail_cap {
            // Only the end of this write can stay; so can none of the tail.
            let skip = bytes.len() - c.tail_cap;
            c.dropped += (skip + c.tail.len()) as u64;
            c.tail.clear();
            bytes = &bytes[skip..];
        }
        let overflow = (c.tail.len() + bytes.len()).saturating_sub(c.tail_cap);
        c.tail.drain(..overflow);
        c.dropped += overflow as u64;
        c.tail.extend(bytes);
    }

    /// What was kept, with a note where bytes were dropped.
    pub fn contents(&self) -> Vec<u8> {
        let c = self.lock();
        let mut out = c.head.clone();
        if c.dropped > 0 {
            out.extend_from_slice(
                format!("{DROP_NOTE_START}{}{DROP_NOTE_END}", c.dropped).as_bytes(),
            );
        }
        out.extend(c.tail.iter());
        out
    }

    /// Bytes written but not kept.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }
}

impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(PERMIT)
    }
}

impl Pollable for CappedOutput {
    // What `#[async_trait]` expands to: always ready.
    fn ready<'a, 'b>(&'a mut self) -> Pin<Box<dyn Future<Output = ()> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async {})
    }
}

impl AsyncWrite for CappedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_head_and_tail_and_counts_the_rest() {
        let out = CappedOutput::new(8);
        out.push(b"abcdefgh");
        assert_eq!(out.contents(), b"abcdefgh");
        out.push(b"ij");
        assert_eq!(out.dropped(), 2);
        out.push(&[b'x'; 1000]);
        out.push(b"END");
        // 1013 bytes written, 8 kept.
        assert_eq!(out.dropped(), 1013 - 8);
        let text = String::from_utf8(out.contents()).unwrap();
        assert!(text.starts_with("abcd\n[… "), "{text}");
        assert!(text.ends_with(" …]\nxEND"), "{text}");
    }

    #[test]
    fn empty_and_small_writes_are_kept_whole() {
        let out = CappedOutput::new(64 << 10);
        for i in 0..100 {
            out.push(format!("line {i}\n").as_bytes());
        }
        assert_eq!(out.dropped(), 0);
        assert!(
            String::from_utf8(out.contents())
                .unwrap()
                .ends_with("line 99\n")
        );
    }
}

//! `wasi:io/poll` and `wasi:io/streams`, bounded by the call's deadline.
//!
//! The guest's deadline is enforced by epoch interruption, which stops
//! running wasm code but cannot interrupt a host function. A guest that
//! *waits* — `std::thread::sleep`, blocking on an HTTP response, a blocking
//! read of a body — runs no wasm at all: it sits in one of these host
//! functions. wasmtime-wasi's own implementations wait as long as the
//! guest asks (a plugin sleeping for an hour ran 17 s past a 2 s deadline,
//! until the process watchdog killed it). Here every function that can
//! wait races the wait against the deadline, and when the deadline wins
//! the guest is trapped with [`DeadlineReached`], which the runtime reports
//! as the plugin exceeding its deadline.
//!
//! Functions that cannot wait are passed straight to wasmtime-wasi.

use std::time::Instant;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, StreamError, StreamResult};
use wasmtime_wasi::runtime::in_tokio;
use wasmtime_wasi_io::bindings::wasi::io::poll::{
    Host as AsyncPoll, HostPollable as AsyncPollable,
};
use wasmtime_wasi_io::bindings::wasi::io::streams::{
    HostInputStream as AsyncInput, HostOutputStream as AsyncOutput,
};

/// The trap a guest gets when its deadline passes while it waits in the
/// host.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineReached;

impl std::fmt::Display for DeadlineReached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the call's deadline passed while the plugin was waiting in the host")
    }
}

impl std::error::Error for DeadlineReached {}

/// The resource table and the deadline its waits are bounded by.
pub struct BoundedIo<'a> {
    table: &'a mut ResourceTable,
    deadline: Instant,
}

impl<'a> BoundedIo<'a> {
    /// The store's resource table, bounded by the call's `deadline`.
    pub fn new(table: &'a mut ResourceTable, deadline: Instant) -> Self {
        BoundedIo { table, deadline }
    }
}

struct HasBoundedIo;
impl HasData for HasBoundedIo {
    type Data<'a> = BoundedIo<'a>;
}

impl BoundedIo<'_> {
    /// Run `wait` until it finishes or the deadline passes.
    fn bounded<T>(
        &mut self,
        wait: impl AsyncFnOnce(&mut ResourceTable) -> T,
    ) -> Result<T, DeadlineReached> {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        let table = &mut *self.table;
        in_tokio(async move {
            tokio::time::timeout_at(deadline, wait(table))
                .await
                .map_err(|_| DeadlineReached)
        })
    }
}

fn trap(e: DeadlineReached) -> wasmtime::Error {
    wasmtime::Error::new(e)
}

fn stream_trap(e: DeadlineReached) -> StreamError {
    StreamError::Trap(trap(e))
}

impl poll::Host for BoundedIo<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        self.bounded(async |t| AsyncPoll::poll(t, pollables).await)
            .map_err(trap)?
    }
}

impl poll::HostPollable for BoundedIo<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        self.bounded(async |t| AsyncPollable::ready(t, pollable).await)
            .map_err(trap)?
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        self.bounded(async |t| AsyncPollable::block(t, pollable).await)
            .map_err(trap)?
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        poll::HostPollable::drop(self.table, pollable)
    }
}

impl streams::Host for BoundedIo<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        streams::Host::convert_stream_error(self.table, err)
    }
}

impl streams::HostOutputStream for BoundedIo<'_> {
    fn drop(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<()> {
        self.bounded(async |t| AsyncOutput::drop(t, stream).await)
            .map_err(trap)?
    }

    fn check_write(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<u64> {
        streams::HostOutputStream::check_write(self.table, stream)
    }

    fn write(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        streams::HostOutputStream::write(self.table, stream, bytes)
    }

    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        self.bounded(async |t| AsyncOutput::blocking_write_and_flush(t, stream, bytes).await)
            .map_err(stream_trap)?
    }

    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        self.bounded(async |t| AsyncOutput::blocking_write_zeroes_and_flush(t, stream, len).await)
            .map_err(stream_trap)?
    }

    fn subscribe(
        &mut self,
        stream: Resource<DynOutputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        streams::HostOutputStream::subscribe(self.table, stream)
    }

    fn write_zeroes(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        streams::HostOutputStream::write_zeroes(self.table, stream, len)
    }

    fn flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        streams::HostOutputStream::flush(self.table, stream)
    }

    fn blocking_flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        self.bounded(async |t| {
            AsyncOutput::blocking_flush(t, Resource::new_borrow(stream.rep())).await
        })
        .map_err(stream_trap)?
    }

    fn splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        streams::HostOutputStream::splice(self.table, dst, src, len)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        self.bounded(async |t| AsyncOutput::blocking_splice(t, dst, src, len).await)
            .map_err(stream_trap)?
    }
}

impl streams::HostInputStream for BoundedIo<'_> {
    fn drop(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<()> {
        self.bounded(async |t| AsyncInput::drop(t, stream).await)
            .map_err(trap)?
    }

    fn read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        streams::HostInputStream::read(self.table, stream, len)
    }

    fn blocking_read(
        &mut self,
        stream: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<Vec<u8>> {
        self.bounded(async |t| AsyncInput::blocking_read(t, stream, len).await)
            .map_err(stream_trap)?
    }

    fn skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        streams::HostInputStream::skip(self.table, stream, len)
    }

    fn blocking_skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        self.bounded(async |t| AsyncInput::blocking_skip(t, stream, len).await)
            .map_err(stream_trap)?
    }

    fn subscribe(
        &mut self,
        stream: Resource<DynInputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        streams::HostInputStream::subscribe(self.table, stream)
    }
}

/// Link `wasi:io/poll`; `view` gives the store's table and deadline.
pub fn add_poll_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> BoundedIo<'_>,
) -> wasmtime::Result<()> {
    poll::add_to_linker::<T, HasBoundedIo>(linker, view)
}

/// Link `wasi:io/streams`; `view` gives the store's table and deadline.
pub fn add_streams_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> BoundedIo<'_>,
) -> wasmtime::Result<()> {
    streams::add_to_linker::<T, HasBoundedIo>(linker, view)
}

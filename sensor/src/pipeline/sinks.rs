//! Sinks that watch the analysed exchanges go by: the `run --dump` lines and the `import --ndjson`
//! stream. The store is the pipeline's last sink and takes the records themselves (see
//! [`super::writer`]); these only read them.

use std::{
    cell::RefCell,
    io::{self, Write},
    rc::Rc,
};

use crate::{
    dump,
    exchange::Exchange,
    record::{Assignment, StoredExchange},
};

/// Something that sees every analysed exchange, in order.
pub trait Sink {
    /// One exchange, with its record and session. An error stops the pipeline (see
    /// [`super::Pipeline::push`]): return one only when going on would lose data silently.
    fn exchange(
        &mut self,
        exchange: &Exchange,
        record: &StoredExchange,
        assignment: &Assignment,
    ) -> io::Result<()>;

    /// Once a second on a live host, and at the end.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One line per exchange (`run --dump`): time, client, method, uri, status, timings, sizes and
/// flags, and the first eight digits of its session id.
pub struct DumpLines<W: Write> {
    out: W,
    /// False once the reader went away (e.g. `| head`): that is not the daemon's error.
    open: bool,
}

impl<W: Write> DumpLines<W> {
    pub fn new(out: W) -> Self {
        Self { out, open: true }
    }
}

impl<W: Write> Sink for DumpLines<W> {
    fn exchange(
        &mut self,
        exchange: &Exchange,
        _record: &StoredExchange,
        assignment: &Assignment,
    ) -> io::Result<()> {
        if self.open {
            let line = dump::exchange_line(exchange);
            let id = &assignment.session_id;
            let session = id.get(..8).unwrap_or(id);
            self.open = writeln!(self.out, "{line} session={session}").is_ok();
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.open {
            self.open = self.out.flush().is_ok();
        }
        Ok(())
    }
}

/// One JSON object per exchange and line, in the export's vocabulary (`import --ndjson`).
pub struct NdjsonLines<W: Write> {
    out: W,
}

impl<W: Write> NdjsonLines<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

impl<W: Write> Sink for NdjsonLines<W> {
    fn exchange(
        &mut self,
        _exchange: &Exchange,
        record: &StoredExchange,
        assignment: &Assignment,
    ) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, &record.to_json(&assignment.session_id))?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Keeps every exchange in memory, for tests and tools that read a capture's exchanges back
/// ([`Collect::take`] on a clone of the sink handed to the pipeline).
#[derive(Clone, Default)]
pub struct Collect(Rc<RefCell<Vec<Exchange>>>);

impl Collect {
    /// The exchanges collected so far, in order.
    pub fn take(&self) -> Vec<Exchange> {
        std::mem::take(&mut self.0.borrow_mut())
    }
}

impl Sink for Collect {
    fn exchange(
        &mut self,
        exchange: &Exchange,
        _record: &StoredExchange,
        _assignment: &Assignment,
    ) -> io::Result<()> {
        self.0.borrow_mut().push(exchange.clone());
        Ok(())
    }
}

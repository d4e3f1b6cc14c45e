//! A bounded in-memory output pipe that remembers whether the guest wrote too much.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use super::Meter;

/// Captures up to `capacity` bytes. A write past the cap is refused with an I/O error and
/// sets [`CappedOutput::overflowed`], so the task can be failed with `output_limit` whatever
/// the guest does with the error. Accepted bytes are counted in the task's [`Meter`].
#[derive(Debug, Clone)]
pub struct CappedOutput {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    capacity: usize,
    buffer: Mutex<Vec<u8>>,
    overflowed: AtomicBool,
    meter: Arc<Meter>,
    echo: Option<Echo>,
}

/// Where a local run (`proplet run`) copies what a guest writes, as it writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// This process's stdout.
    Stdout,
    /// This process's stderr.
    Stderr,
}

impl Echo {
    /// Copies `bytes` out. A closed terminal or pipe is no reason to fail the guest.
    fn write(self, bytes: &[u8]) {
        use std::io::Write as _;
        let written = match self {
            Echo::Stdout => std::io::stdout().lock().write_all(bytes),
            Echo::Stderr => std::io::stderr().lock().write_all(bytes),
        };
        written.ok();
    }
}

impl CappedOutput {
    /// A pipe that keeps at most `capacity` bytes and counts them in `meter`.
    pub fn new(capacity: usize, meter: Arc<Meter>) -> Self {
        Self::echoing(capacity, meter, None)
    }

    /// A pipe like [`CappedOutput::new`] that also copies each accepted write to `echo`.
    pub fn echoing(capacity: usize, meter: Arc<Meter>, echo: Option<Echo>) -> Self {
        CappedOutput {
            inner: Arc::new(Inner {
                capacity,
                buffer: Mutex::new(Vec::new()),
                overflowed: AtomicBool::new(false),
                meter,
                echo,
            }),
        }
    }

    /// Whether the guest tried to write more than the cap.
    pub fn overflowed(&self) -> bool {
        self.inner.overflowed.load(Ordering::Relaxed)
    }

    /// What was captured, as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.lock()).into_owned()
    }

    /// The cap, in bytes.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Bytes captured so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing was captured.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `bytes`, or refuses them all if they do not fit.
    pub fn write_bytes(&self, bytes: &[u8]) -> io::Result<usize> {
        let mut buf = self.lock();
        if bytes.len() > self.inner.capacity - buf.len() {
            self.inner.overflowed.store(true, Ordering::Relaxed);
            return Err(io::Error::other(format!(
                "output limit of {} bytes exceeded",
                self.inner.capacity
            )));
        }
        buf.extend_from_slice(bytes);
        self.inner.meter.output(bytes.len());
        if let Some(echo) = self.inner.echo {
            echo.write(bytes);
        }
        Ok(bytes.len())
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A poisoned lock only means another writer panicked mid-append; the bytes are
        // still a valid prefix of the output.
        self.inner.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl AsyncWrite for CappedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.write_bytes(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_output_up_to_the_cap() {
        let meter = Arc::new(Meter::default());
        let out = CappedOutput::new(5, meter.clone());
        assert_eq!(out.write_bytes(b"abc").ok(), Some(3));
        assert!(!out.overflowed());
        assert!(out.write_bytes(b"def").is_err());
        assert!(out.overflowed());
        assert_eq!(out.text(), "abc");
        assert_eq!(out.write_bytes(b"de").ok(), Some(2));
        assert_eq!(out.len(), 5);
        assert_eq!(meter.read().output_bytes, 5);
    }
}

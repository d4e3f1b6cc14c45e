//! The host's power management: a CPU wake-up latency limit, held for as long as the
//! daemon runs (`PROPLET_CPU_LATENCY`, off unless set).
//!
//! A round trip hands its work from thread to thread (the MQTT session, a runtime worker,
//! the journal's writer, the session again), and each hand-off to a thread on an idle core
//! waits for that core to wake. Where idle cores sleep deeply, and above all on a VM whose
//! kernel halts an idle virtual CPU at once (guest halt polling off), that wake-up costs
//! tens of microseconds, several times per round trip. Linux's PM QoS takes a limit on it:
//! a value written to [`DEVICE`] holds for as long as the file stays open, and the idle
//! governor then picks only idle states that wake within it (polling, at a limit of 0).
//! Idle cores then burn power, machine-wide: this is for hosts given over to the worker.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::time::Duration;

/// Where Linux takes CPU wake-up latency limits (root only, unless an operator grants it).
pub const DEVICE: &str = "/dev/cpu_dma_latency";

/// A limit held; withdrawn when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct LatencyLimit {
    _device: File,
    limit: Duration,
}

impl LatencyLimit {
    /// Asks that no core take longer than `limit` to wake, until the value is dropped.
    /// Fails if the limit is beyond what PM QoS takes (`i32::MAX` µs) or the device cannot
    /// be opened (no such device, or no permission).
    pub fn hold(limit: Duration) -> io::Result<LatencyLimit> {
        let micros = pm_qos_micros(limit)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the limit is too long"))?;
        let mut device = open()?;
        device.write_all(&micros.to_ne_bytes())?;
        Ok(LatencyLimit {
            _device: device,
            limit,
        })
    }

    /// The limit asked for.
    pub fn limit(&self) -> Duration {
        self.limit
    }
}

/// `limit` in the microseconds PM QoS takes, if it takes it (at most `i32::MAX`).
pub fn pm_qos_micros(limit: Duration) -> Option<i32> {
    i32::try_from(limit.as_micros()).ok()
}

/// Whether this process may hold a limit: the device is there and it may write to it.
pub fn can_hold() -> io::Result<()> {
    open().map(drop)
}

fn open() -> io::Result<File> {
    OpenOptions::new().write(true).open(DEVICE)
}

/// The limit in force now, every process's requests taken together (the device reads
/// back the strictest; with none held it reads a default of about 2,000 s).
pub fn in_force() -> io::Result<Duration> {
    let mut value = [0u8; 4];
    File::open(DEVICE)?.read_exact(&mut value)?;
    let micros = i32::from_ne_bytes(value);
    Ok(Duration::from_micros(u64::try_from(micros).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_beyond_pm_qos_is_refused_before_the_device_is_touched() {
        let too_long = Duration::from_micros(u64::from(i32::MAX.unsigned_abs()) + 1);
        let e = LatencyLimit::hold(too_long).expect_err("refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}

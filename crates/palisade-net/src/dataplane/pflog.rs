//! pflog buffering: the records (DLT_PFLOG) of packets pf's rules log,
//! kept between two calls of `Dataplane::take_log`, 65,536 at most (then
//! counted as lost, `log_dropped`), and only while logging is on (a pflog
//! file or a `palisade log --follow` client).
//!
//! Owns the buffer. It does not build the records (palisade-filter does,
//! from pf's decision) nor write them (the daemon's worker 0 does).

/// pflog records waiting to be written, at most.
const LOG_MAX: usize = 65_536;

/// A record and when its packet was decided (since the Unix epoch): pf
/// stamps each as it logs it, and tcpdump -ttt shows the gaps between
/// packets, so the time is not the time the batch is written (up to a
/// poll late, packets 40 ms apart read as one).
pub type LogRecord = (std::time::Duration, Vec<u8>);

#[derive(Default)]
pub(crate) struct LogBuffer {
    on: bool,
    records: Vec<LogRecord>,
}

/// The buffer is full: the record was not kept.
pub(super) struct Lost;

impl LogBuffer {
    pub(super) fn set(&mut self, on: bool) {
        self.on = on;
    }

    pub(super) fn is_on(&self) -> bool {
        self.on
    }

    pub(super) fn push(&mut self, record: Vec<u8>) -> Result<(), Lost> {
        if self.records.len() < LOG_MAX {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            self.records.push((now, record));
            Ok(())
        } else {
            Err(Lost)
        }
    }

    pub(super) fn take(&mut self) -> Vec<LogRecord> {
        std::mem::take(&mut self.records)
    }
}

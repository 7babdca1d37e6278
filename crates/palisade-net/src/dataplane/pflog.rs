//! pflog buffering: the records (DLT_PFLOG) of packets pf's rules log,
//! kept between two calls of `Dataplane::take_log`, 65,536 at most (then
//! counted as lost, `log_dropped`), and only while logging is on (a pflog
//! file or a `palisade log --follow` client).
//!
//! Owns the buffer. It does not build the records (palisade-filter does,
//! from pf's decision) nor write them (the daemon's worker 0 does).

/// pflog records waiting to be written, at most.
const LOG_MAX: usize = 65_536;

#[derive(Default)]
pub(super) struct LogBuffer {
    on: bool,
    records: Vec<Vec<u8>>,
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
            self.records.push(record);
            Ok(())
        } else {
            Err(Lost)
        }
    }

    pub(super) fn take(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.records)
    }
}

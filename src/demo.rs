//! The demo: an embedded broker, a worker and a small submitter, all in one process.

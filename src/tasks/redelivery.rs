//! Redelivery is not a re-run (docs/protocol.md §5.10). A start that may be a copy of one
//! this proplet — or the one before it on this state directory — has already taken (see
//! [`crate::protocol::StartRequest::may_be_a_copy`]: the broker redelivered it, or the
//! manager still waits for its answer) is not run again:
//! - while the task is active, it is ignored (as any duplicate start is);
//! - once answered, its last answer is published again (while remembered: see
//!   [`crate::state::recent`]);
//! - a task the previous process left unanswered is answered `interrupted` by recovery,
//!   and a copy that comes before that answer is stored is ignored.
//!
//! A start of a finished task sent again as such (`state` 3 or 4, or no state) is the
//! manager's deliberate re-run, and runs again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tracing::{Instrument as _, info, warn};

use super::admission::JobKey;
use super::job::Context;

/// Tasks the previous process left unanswered (answered `interrupted` by recovery).
#[derive(Debug, Default)]
pub(super) struct Recovered {
    tasks: Mutex<HashSet<String>>,
}

impl Recovered {
    /// Remembers that `task` was left unanswered by the previous process.
    pub(super) fn insert(&self, task: &str) {
        self.lock().insert(task.to_owned());
    }

    fn contains(&self, task: &str) -> bool {
        self.lock().contains(task)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // Only inserted into and read: a poisoned set is still consistent.
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether the start of `task`, possibly a copy, was handled here (ignored, or answered
/// again) rather than to be run: `false` for a task never taken.
pub(super) fn handled(cx: &Arc<Context>, task: &str) -> bool {
    if cx.admissions.is_active(&JobKey::Task(task.to_owned())) {
        info!(task_id = %task, "copy of the start of an active task ignored");
        return true;
    }
    if let Some(seq) = cx.journal.answered_lately(task, None) {
        info!(task_id = %task, "copy of the start of a task already answered: its answer is published again, it is not run again");
        answer_again(cx, task, seq);
        return true;
    }
    if cx.recovered.contains(task) {
        info!(task_id = %task, "copy of the start of a task the previous process left ignored: it is answered interrupted");
        return true;
    }
    false
}

/// Publishes again, in the background, the answer stored as `seq` for `task`.
fn answer_again(cx: &Arc<Context>, task: &str, seq: u64) {
    let (cx2, id) = (cx.clone(), task.to_owned());
    let again = async move {
        match cx2.journal.recall(seq).await {
            Some((topic, payload)) => cx2.answers.again(&id, &topic, payload).await,
            None => warn!(task_id = %id, "the answer to publish again is no longer remembered"),
        }
    };
    cx.admissions
        .tracker()
        .spawn(again.instrument(tracing::Span::current()));
}

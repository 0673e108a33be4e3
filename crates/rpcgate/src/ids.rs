//! Connection ids: one number per accepted or opened connection, printed on every log line of
//! that connection so that one `grep conn=42` tells its whole story.

use std::sync::atomic::{AtomicU64, Ordering};

static NEXT: AtomicU64 = AtomicU64::new(1);

/// A fresh, process-unique connection id.
pub fn next_conn_id() -> u64 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

//! Task scopes: every task a component (a proxy, an endpoint, the demo service) spawns, so
//! that [`TaskScope::shutdown`] can stop all of them (listeners, connection drivers, writer
//! tasks) and know when the last one has ended.
//!
//! A task spawned with [`TaskScope::spawn`] runs with its scope installed as a task-local, and
//! [`spawn`] (used by shared helpers such as [`crate::framed::spawn_writer`]) spawns into the
//! scope of the calling task. Helpers therefore need no scope parameter, and nothing a scoped
//! task starts can escape its scope's shutdown. Outside any scope (rpcgate's client, tests)
//! [`spawn`] is a plain `tokio::spawn`.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{TaskTracker, task_tracker::TaskTrackerToken};

tokio::task_local! {
    static CURRENT: TaskScope;
}

/// The tasks of one component: a cancellation token and a tracker of everything spawned.
#[derive(Debug, Clone, Default)]
pub struct TaskScope {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl TaskScope {
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `fut` in this scope: it ends with `None` when the scope shuts down first.
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(self.run(fut))
    }

    /// Runs `fut` in this scope on the calling task (not tracked: the caller owns it), ending
    /// with `None` when the scope shuts down first.
    pub fn run<F: Future>(&self, fut: F) -> impl Future<Output = Option<F::Output>> + use<F> {
        let cancel = self.cancel.clone();
        CURRENT.scope(self.clone(), async move {
            tokio::select! {
                biased;
                () = cancel.cancelled() => None,
                out = fut => Some(out),
            }
        })
    }

    /// Counts the calling task as one of the scope's until the guard is dropped, so that
    /// [`TaskScope::shutdown`] also waits for a loop the caller spawned itself (a listener's
    /// accept loop) to notice the shutdown and return.
    pub fn enter(&self) -> TaskTrackerToken {
        self.tracker.token()
    }

    /// Resolves when the scope starts shutting down (accept loops select on it).
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    pub fn is_shut_down(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Tasks of this scope still running.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }

    /// Cancels every task of the scope (their sockets close as they are dropped) and waits
    /// up to `within` for the last one to end. Returns whether they all did.
    pub async fn shutdown(&self, within: Duration) -> bool {
        self.cancel.cancel();
        self.tracker.close();
        tokio::time::timeout(within, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// Spawns `fut` in the calling task's scope, or as a plain task outside any scope.
pub fn spawn<F>(fut: F) -> JoinHandle<Option<F::Output>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match CURRENT.try_with(Clone::clone) {
        Ok(scope) => scope.spawn(fut),
        Err(_) => tokio::spawn(async move { Some(fut.await) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_ends_nested_tasks_and_reports_it() {
        let scope = TaskScope::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        scope.spawn(async move {
            // A helper spawning "unscoped" from inside a scoped task lands in the scope.
            let _inner = spawn(async move {
                let _tx = tx;
                std::future::pending::<()>().await;
            });
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
        assert_eq!(scope.len(), 2);
        assert!(scope.shutdown(Duration::from_secs(1)).await);
        assert!(scope.is_empty());
        // The inner task's sender was dropped with it.
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn outside_a_scope_spawn_is_plain() {
        let handle = spawn(async { 7 });
        assert_eq!(handle.await.unwrap(), Some(7));
    }

    #[tokio::test]
    async fn a_scoped_task_returns_its_output_and_none_after_shutdown() {
        let scope = TaskScope::new();
        assert_eq!(scope.spawn(async { 1 }).await.unwrap(), Some(1));
        assert!(scope.shutdown(Duration::from_millis(10)).await);
        assert_eq!(scope.spawn(async { 2 }).await.unwrap(), None);
    }
}

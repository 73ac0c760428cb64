//! The sync API's runtime: each blocking call runs its future on a current-thread tokio
//! runtime in a thread of its own (blocking store work on that runtime's blocking pool),
//! so it works from any caller, also one inside another runtime, and leaves nothing
//! running when it returns.

use std::future::Future;

use crate::error::RegistryError;

pub(crate) fn block_on<T: Send>(
    name: &str,
    fut: impl Future<Output = Result<T, RegistryError>> + Send,
) -> Result<T, RegistryError> {
    let task_err = |reason: String| RegistryError::Task {
        reference: name.to_owned(),
        reason,
    };
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("molde-registry".into())
            .spawn_scoped(s, || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| task_err(format!("starting a runtime: {e}")))?;
                rt.block_on(fut)
            })
            .map_err(|e| task_err(format!("starting a thread: {e}")))?;
        handle
            .join()
            .unwrap_or_else(|_| Err(task_err("the transfer thread panicked".into())))
    })
}

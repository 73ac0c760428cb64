//! The sync API's runtime: each blocking call runs its future on a tokio runtime of its own,
//! started in a thread of its own, so it works from any caller, also one inside another
//! runtime, and leaves nothing running when it returns (dropping the runtime waits for its
//! blocking tasks). Multi-threaded: a few connections receive at once on their workers
//! while each layer's store-and-unpack runs on a blocking thread of its own (two more
//! threads inside apply), so on a multi-core host downloads and unpacks overlap.

use std::future::Future;

use crate::error::RegistryError;

/// Worker threads of the sync API's runtime: they only move bytes from connections to the
/// blocking threads that hash, write and unpack them.
const WORKERS: usize = 2;

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
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(WORKERS)
                    .thread_name("molde-registry-io")
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

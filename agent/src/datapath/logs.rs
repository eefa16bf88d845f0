//! Forwarding the kernel programs' aya-log records into `tracing`.

use aya_log::EbpfLogger;
use tokio::io::unix::AsyncFd;

/// Reads log records the kernel programs emit and writes them through the
/// `log` facade, which the agent's subscriber bridges into `tracing`.
/// Runs until the task is dropped.
pub async fn forward_kernel_logs(logger: EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the AsyncFd owns the logger, and with it the ring buffer's
    // descriptor, for as long as the registration lives.
    let registered =
        unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(error) => {
            tracing::warn!(%error, "kernel log forwarding unavailable");
            return;
        }
    };
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(g) => g,
            Err(error) => {
                tracing::warn!(%error, "kernel log forwarding stopped");
                return;
            }
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

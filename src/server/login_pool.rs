//! The threads that do a login's cryptography (SAML signatures and their verification,
//! PIN hashes), apart from everything else: a pool of its own whose threads run at a lower
//! CPU priority than the request workers (`server.login_threads_nice`, issue 16: logins
//! never slow the proxy). Only this work goes there; the workers' own blocking threads (the
//! DNS lookups of new upstream, directory and Redis connections) keep the workers'
//! priority, so a busy gateway never starves a proxied request's lookup.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::task::JoinHandle;

/// At most this many threads run login cryptography at once (the callers' semaphores
/// bound each kind further).
const MAX_THREADS: usize = 16;

static NICE: AtomicU8 = AtomicU8::new(19);
static CPUS: OnceLock<Vec<usize>> = OnceLock::new();
static POOL: OnceLock<Option<Runtime>> = OnceLock::new();

/// Sets how much lower the pool's threads run (`server.login_threads_nice`) and on which
/// CPUs (`server.login_cpus`, empty = anywhere); read when the pool starts, at the first
/// login, so set it before serving (the CPUs once per process).
pub fn configure(nice: u8, cpus: Vec<usize>) {
    NICE.store(nice, Ordering::Relaxed);
    let _ = CPUS.set(cpus);
}

/// Runs `job` on the login pool (or, if the pool could not be started, on the caller's
/// runtime's blocking pool, as any blocking job).
pub fn spawn<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    match pool() {
        Some(h) => h.spawn_blocking(job),
        None => tokio::task::spawn_blocking(job),
    }
}

fn pool() -> Option<&'static Handle> {
    POOL.get_or_init(|| {
        let nice = NICE.load(Ordering::Relaxed);
        match Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(MAX_THREADS)
            .thread_name("varco-login")
            .on_thread_start(move || {
                lower_priority(nice);
                if let Some(cpus) = CPUS.get() {
                    super::cpus::pin_current_thread(cpus);
                }
            })
            .build()
        {
            Ok(rt) => Some(rt),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the login threads; logins use the workers' blocking threads");
                None
            }
        }
    })
    .as_ref()
    .map(Runtime::handle)
}

/// Makes the calling thread `nice` steps less favoured than the process (its nice value
/// raised to at least the process's own plus `nice`, at most 19). On Linux the nice value
/// is the thread's own (setpriority on the calling thread). Raising it needs no privilege;
/// a failure (a sandbox that forbids the call) leaves the thread as it was and is reported
/// once.
fn lower_priority(nice: u8) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        let result = getpriority_process(None).and_then(|current| {
            let target = current.saturating_add(i32::from(nice)).min(19);
            if target > current {
                setpriority_process(None, target)
            } else {
                Ok(())
            }
        });
        if let Err(e) = result {
            static REPORTED: std::sync::Once = std::sync::Once::new();
            REPORTED.call_once(|| {
                tracing::warn!(error = %e, nice, "cannot lower the priority of the login threads");
            });
        }
    }
}

//! Which CPUs the threads run on (`server.login_cpus`, issue 16: logins never slow the
//! proxy). Unset, every thread may run anywhere the process may. Set, the login threads
//! (a login's signatures and PIN hashes) run only on those CPUs and the request workers
//! only on the others, so a login's cryptography never holds a core a worker is waiting
//! for: a lower priority alone does not do that, since a login thread that has the core
//! keeps it until its job (a few milliseconds) ends or the scheduler's next tick.
//! Linux only (thread affinity).

/// The CPUs the process may run on now, ascending (`None` off Linux or if the system does
/// not say).
pub fn allowed() -> Option<Vec<usize>> {
    #[cfg(target_os = "linux")]
    {
        use rustix::thread::{CpuSet, sched_getaffinity};
        let set = sched_getaffinity(None).ok()?;
        Some((0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect())
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Why `login` cannot be the login threads' CPUs here, if it cannot: each must be one the
/// process may run on, listed once, and at least one must be left for the workers.
pub fn check(login: &[usize]) -> Result<(), String> {
    if login.is_empty() {
        return Ok(());
    }
    let Some(allowed) = allowed() else {
        return Err("thread affinity is supported on Linux only".into());
    };
    let list = allowed
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    for (i, cpu) in login.iter().enumerate() {
        if !allowed.contains(cpu) {
            return Err(format!(
                "CPU {cpu} is not one this process may run on ({list})"
            ));
        }
        if login[..i].contains(cpu) {
            return Err(format!("CPU {cpu} is listed twice"));
        }
    }
    if workers(login).is_empty() {
        return Err(format!(
            "leaves no CPU for the request workers (the process may run on {list})"
        ));
    }
    Ok(())
}

/// The workers' CPUs: those the process may run on, less the login threads'.
pub fn workers(login: &[usize]) -> Vec<usize> {
    allowed()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| !login.contains(c))
        .collect()
}

/// Keeps the calling thread (and the threads it starts) on `cpus`. A failure (a sandbox
/// that forbids the call, CPUs gone from the cpuset) leaves it where it was and is
/// reported once per kind of thread (the thread's name up to its number).
pub fn pin_current_thread(cpus: &[usize]) {
    if cpus.is_empty() {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        use rustix::thread::{CpuSet, sched_setaffinity};
        let mut set = CpuSet::new();
        for &c in cpus.iter().filter(|&&c| c < CpuSet::MAX_CPU) {
            set.set(c);
        }
        if let Err(e) = sched_setaffinity(None, &set) {
            static WORKER: std::sync::Once = std::sync::Once::new();
            static LOGIN: std::sync::Once = std::sync::Once::new();
            let current = std::thread::current();
            let name = current.name().unwrap_or("");
            let once = if name.starts_with("varco-worker") {
                &WORKER
            } else {
                &LOGIN
            };
            once.call_once(|| {
                tracing::warn!(error = %e, ?cpus, thread = name, "cannot keep a thread on its CPUs");
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_cpus_must_be_the_processs_and_leave_one_for_the_workers() {
        assert_eq!(check(&[]), Ok(()));
        let Some(allowed) = allowed() else {
            assert!(check(&[0]).is_err());
            return;
        };
        assert!(!allowed.is_empty());
        let outside = allowed.last().copied().unwrap_or(0) + 1;
        assert!(
            check(&[outside])
                .unwrap_err()
                .contains("not one this process")
        );
        assert!(check(&allowed).unwrap_err().contains("leaves no CPU"));
        if let [first, _, ..] = allowed[..] {
            assert_eq!(check(&[first]), Ok(()));
            assert!(check(&[first, first]).unwrap_err().contains("twice"));
            assert!(!workers(&[first]).contains(&first));
            assert_eq!(workers(&[first]).len(), allowed.len() - 1);
        }
    }
}

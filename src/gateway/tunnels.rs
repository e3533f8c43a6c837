//! The WebSocket tunnels relayed for each session, so that a session's end ends them: a
//! logout, a Single Logout or a new login of the same browser ends the session's tunnels
//! at once; an idle or absolute expiry (and, with a shared store, a logout elsewhere) is
//! noticed by the tunnel's own periodic check of the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// One session's open tunnels: each one's number and the sender that ends it.
type SessionTunnels = Vec<(u64, watch::Sender<bool>)>;

/// Open tunnels by session (`sid`, the hash of the session id).
#[derive(Default)]
pub struct Tunnels {
    next: AtomicU64,
    open: Mutex<HashMap<String, SessionTunnels>>,
}

/// A tunnel's place in the registry; dropped when the tunnel ends.
pub struct TunnelGuard {
    tunnels: Arc<Tunnels>,
    sid: String,
    id: u64,
    /// Turns `true` (or closes) when the session ended.
    pub ended: watch::Receiver<bool>,
}

impl Tunnels {
    /// Registers a tunnel of session `sid`.
    pub fn open(self: &Arc<Self>, sid: &str) -> TunnelGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(false);
        if let Ok(mut open) = self.open.lock() {
            open.entry(sid.to_string()).or_default().push((id, tx));
        }
        TunnelGuard {
            tunnels: self.clone(),
            sid: sid.to_string(),
            id,
            ended: rx,
        }
    }

    /// Ends every tunnel of session `sid`; returns how many there were.
    pub fn end(&self, sid: &str) -> usize {
        let Some(list) = self.open.lock().ok().and_then(|mut o| o.remove(sid)) else {
            return 0;
        };
        for (_, tx) in &list {
            let _ = tx.send(true);
        }
        list.len()
    }

    /// Tunnels open now (all sessions).
    pub fn count(&self) -> usize {
        self.open
            .lock()
            .map_or(0, |o| o.values().map(Vec::len).sum())
    }
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        if let Ok(mut open) = self.tunnels.open.lock()
            && let Some(list) = open.get_mut(&self.sid)
        {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                open.remove(&self.sid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ending_a_session_ends_its_tunnels_only() {
        let t = Arc::new(Tunnels::default());
        let mut a1 = t.open("a");
        let mut a2 = t.open("a");
        let b = t.open("b");
        assert_eq!(t.count(), 3);
        assert_eq!(t.end("a"), 2);
        a1.ended.changed().await.unwrap();
        assert!(*a1.ended.borrow());
        a2.ended.changed().await.unwrap();
        assert!(!*b.ended.borrow());
        drop((a1, a2));
        assert_eq!(t.count(), 1);
        drop(b);
        assert_eq!(t.count(), 0);
        assert_eq!(t.end("b"), 0);
    }
}

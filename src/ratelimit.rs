//! Rate limits: attempts counted in fixed windows, one [`Limiter`] per kind of limit, each
//! keyed by its own type ([`ClientAddress`], a fiscal code). A limit counts exactly what its
//! key says and nothing else: the SAML login starts of one client address never use up
//! another's, and no shared key (a constant, "malformed") can be exhausted by one client
//! for everyone. A site-wide ceiling, if ever wanted, is a limiter of its own with its own
//! setting.
//!
//! An attempt is counted before the work it guards (parallel requests cannot get more than
//! the limit); once a count reaches the limit, attempts are refused until the window that
//! began with the key's first counted attempt ends. Counters live in a bounded cache with
//! LRU eviction: a new key is always admitted (under pressure the least recently used
//! counters go, never the newest).

use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use moka::policy::EvictionPolicy;
use moka::sync::Cache;

use crate::identity::FiscalCode;
use crate::session::redis_store::RedisStore;
use crate::session::{Store, StoreError};

/// A client address as rate limits count it: an IPv4 address, or the /64 prefix of an
/// IPv6 one (a host usually holds a whole /64). IPv4-mapped IPv6 counts as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddress(IpAddr);

impl ClientAddress {
    pub fn of(ip: IpAddr) -> ClientAddress {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientAddress(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                ClientAddress(IpAddr::V6(Ipv6Addr::new(
                    s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                )))
            }
        }
    }
}

/// The address in one `X-Forwarded-For` entry as proxies write it: `1.2.3.4`,
/// `1.2.3.4:4711`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:4711`.
pub fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = e.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    e.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse().ok())
}

impl std::fmt::Display for ClientAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// A key of one kind of limit: its kind appears in logs and metrics; its name keys the
/// shared counter (hashed there).
pub trait LimitKey: Hash + Eq + Clone + Send + Sync + 'static {
    const KIND: &'static str;
    fn name(&self) -> String;
}

impl LimitKey for ClientAddress {
    const KIND: &'static str = "address";
    fn name(&self) -> String {
        self.to_string()
    }
}

impl LimitKey for FiscalCode {
    const KIND: &'static str = "fiscal_code";
    fn name(&self) -> String {
        self.as_str().to_string()
    }
}

/// A limit reached: which kind, and how long the window is (`Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub kind: &'static str,
    pub window: Duration,
}

/// Counters bounded by this many keys per limiter (LRU beyond it).
const CAPACITY: u64 = 1_000_000;

/// Where a limiter counts: in this process, or in Redis shared by the replicas.
#[derive(Clone)]
enum Counts<K: LimitKey> {
    Local(Cache<K, Arc<AtomicU32>>),
    Shared(Arc<RedisStore>),
}

/// At most `max` attempts per key in a window of `window`.
pub struct Limiter<K: LimitKey> {
    /// The limit's own name (`saml_login`, `pin_address`, ...): two limits over the same
    /// kind of key never share a shared counter.
    name: &'static str,
    max: u32,
    window: Duration,
    counts: Counts<K>,
}

impl<K: LimitKey> Limiter<K> {
    /// A limit counted in this process.
    pub fn new(name: &'static str, max: u32, window: Duration) -> Limiter<K> {
        Limiter {
            name,
            max,
            window,
            counts: Counts::Local(
                Cache::builder()
                    .max_capacity(CAPACITY)
                    .eviction_policy(EvictionPolicy::lru())
                    .time_to_live(window)
                    .build(),
            ),
        }
    }

    /// A limit counted in Redis when the replicas share one (`store`), else in this
    /// process: every replica then sees the same count (atomic `INCR` + `PEXPIRE`).
    pub fn in_store(name: &'static str, max: u32, window: Duration, store: &Store) -> Limiter<K> {
        match store.shared() {
            Some(redis) => Limiter {
                name,
                max,
                window,
                counts: Counts::Shared(redis),
            },
            None => Limiter::new(name, max, window),
        }
    }

    fn shared_name(&self, key: &K) -> String {
        format!("{}:{}", self.name, key.name())
    }

    /// Counts an attempt for `key`; `Ok(Err)` when the key had already reached the limit,
    /// `Err` when the shared store does not answer (the caller refuses: fail closed).
    pub async fn hit(&self, key: &K) -> Result<Result<(), Exceeded>, StoreError> {
        let over = match &self.counts {
            Counts::Local(counts) => {
                let before = counts
                    .get_with_by_ref(key, || Arc::new(AtomicU32::new(0)))
                    .fetch_add(1, Ordering::AcqRel);
                before >= self.max
            }
            Counts::Shared(redis) => {
                let n = redis.count(&self.shared_name(key), self.window).await?;
                n > u64::from(self.max)
            }
        };
        Ok(if over {
            Err(Exceeded {
                kind: K::KIND,
                window: self.window,
            })
        } else {
            Ok(())
        })
    }

    /// Takes one counted attempt back (a success that should not count against the key).
    /// A shared store that does not answer leaves the count as it is.
    pub async fn forgive(&self, key: &K) {
        match &self.counts {
            Counts::Local(counts) => {
                if let Some(c) = counts.get(key) {
                    let _ =
                        c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
                }
            }
            Counts::Shared(redis) => {
                if let Err(e) = redis.forgive(&self.shared_name(key)).await {
                    tracing::warn!(limit = self.name, error = %e, "an attempt could not be taken back");
                }
            }
        }
    }

    /// Forgets the key's count (a shared store that does not answer keeps it).
    pub async fn reset(&self, key: &K) {
        match &self.counts {
            Counts::Local(counts) => counts.invalidate(key),
            Counts::Shared(redis) => {
                if let Err(e) = redis.reset(&self.shared_name(key)).await {
                    tracing::warn!(limit = self.name, error = %e, "a count could not be reset");
                }
            }
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// This limiter, or `previous` when it counts the same limit the same way (a reload
    /// keeps the counts: a configuration change does not give an attacker new attempts).
    pub fn carried_over_from(self, previous: &Limiter<K>) -> Limiter<K> {
        let same_place = matches!(
            (&self.counts, &previous.counts),
            (Counts::Local(_), Counts::Local(_)) | (Counts::Shared(_), Counts::Shared(_))
        );
        if same_place
            && self.name == previous.name
            && self.max == previous.max
            && self.window == previous.window
        {
            Limiter {
                name: previous.name,
                max: previous.max,
                window: previous.window,
                counts: previous.counts.clone(),
            }
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> ClientAddress {
        ClientAddress::of(s.parse().unwrap())
    }

    /// The outcome of a local limiter's hit (it cannot fail to answer).
    fn hit<K: LimitKey>(l: &Limiter<K>, k: &K) -> Result<(), Exceeded> {
        block(l.hit(k)).unwrap()
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn each_address_has_its_own_count() {
        let l: Limiter<ClientAddress> = Limiter::new("t", 3, Duration::from_secs(60));
        // Many addresses, each under the limit: all pass, however many there are.
        for i in 0..200u32 {
            let a = addr(&format!("10.0.{}.{}", i / 250, i % 250 + 1));
            for _ in 0..3 {
                assert_eq!(hit(&l, &a), Ok(()));
            }
        }
        // One over it is limited; the others are not.
        let noisy = addr("192.0.2.7");
        for _ in 0..3 {
            hit(&l, &noisy).unwrap();
        }
        let e = hit(&l, &noisy).unwrap_err();
        assert_eq!(e.kind, "address");
        assert_eq!(e.window, Duration::from_secs(60));
        assert_eq!(hit(&l, &addr("192.0.2.8")), Ok(()));
        // A success taken back makes room; a reset forgets.
        block(l.forgive(&noisy));
        block(l.forgive(&noisy));
        assert_eq!(hit(&l, &noisy), Ok(()));
        block(l.reset(&noisy));
        assert_eq!(hit(&l, &noisy), Ok(()));
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(addr("2001:db8:1:2::1"), addr("2001:db8:1:2:ffff::9"));
        assert_ne!(addr("2001:db8:1:2::1"), addr("2001:db8:1:3::1"));
        assert_eq!(addr("::ffff:192.0.2.1"), addr("192.0.2.1"));
        assert_eq!(addr("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        let l: Limiter<ClientAddress> = Limiter::new("t", 1, Duration::from_secs(60));
        hit(&l, &addr("2001:db8::1")).unwrap();
        assert!(hit(&l, &addr("2001:db8::2")).is_err());
        assert!(hit(&l, &addr("2001:db8:0:1::2")).is_ok());
    }

    #[test]
    fn forwarded_entries_as_proxies_write_them() {
        for (entry, ip) in [
            ("203.0.113.9", "203.0.113.9"),
            (" 203.0.113.9:4711", "203.0.113.9"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
        ] {
            assert_eq!(forwarded_ip(entry), Some(ip.parse().unwrap()), "{entry}");
        }
        for junk in ["", "unknown", "_hidden", "1.2.3", "[1.2.3.4"] {
            assert_eq!(forwarded_ip(junk), None, "{junk}");
        }
    }

    #[test]
    fn a_reload_keeps_the_counts_of_an_unchanged_limit() {
        let a = addr("192.0.2.1");
        let old: Limiter<ClientAddress> = Limiter::new("t", 2, Duration::from_secs(60));
        hit(&old, &a).unwrap();
        hit(&old, &a).unwrap();
        let same = Limiter::new("t", 2, Duration::from_secs(60)).carried_over_from(&old);
        assert!(hit(&same, &a).is_err());
        // Another limit starts afresh.
        let other = Limiter::new("t", 3, Duration::from_secs(60)).carried_over_from(&old);
        assert_eq!(hit(&other, &a), Ok(()));
    }

    #[test]
    fn windows_end() {
        let l: Limiter<ClientAddress> = Limiter::new("t", 1, Duration::from_millis(200));
        let a = addr("192.0.2.1");
        hit(&l, &a).unwrap();
        assert!(hit(&l, &a).is_err());
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(hit(&l, &a), Ok(()));
    }
}

//! PIN attempts, counted per fiscal code and per client address in fixed windows. An
//! attempt is counted before the PIN is checked (parallel requests cannot get more
//! guesses than the limit) and a success takes it back; once a count reaches its limit,
//! further attempts are refused (429) without asking the verifier, until the window that
//! began with the first counted attempt ends.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use moka::sync::Cache;
use serde::Deserialize;

/// `[pin.rate_limit]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub max_failures_per_fiscal_code: u32,
    pub max_failures_per_address: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            max_failures_per_fiscal_code: 5,
            max_failures_per_address: 20,
            window: Duration::from_secs(15 * 60),
        }
    }
}

/// Which limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    FiscalCode,
    Address,
}

impl Limited {
    pub fn as_str(self) -> &'static str {
        match self {
            Limited::FiscalCode => "fiscal_code",
            Limited::Address => "address",
        }
    }
}

pub struct Limiter {
    cfg: RateLimitConfig,
    failures: Cache<String, Arc<AtomicU32>>,
}

/// IPv6 clients are counted by /64 (one host usually holds a whole /64).
fn address_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

impl Limiter {
    pub fn new(cfg: &RateLimitConfig) -> Limiter {
        Limiter {
            cfg: cfg.clone(),
            failures: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(cfg.window)
                .build(),
        }
    }

    fn counter(&self, key: String) -> Arc<AtomicU32> {
        self.failures.get_with(key, || Arc::new(AtomicU32::new(0)))
    }

    /// Counts an attempt for `subject` (a namespaced key, e.g. `cf:RSSMRA...`) from
    /// `addr`, or refuses it when a limit is already reached. `addr: None` skips the
    /// address limit (a trusted caller).
    pub fn begin(&self, subject: &str, addr: Option<IpAddr>) -> Result<(), Limited> {
        let before = self
            .counter(subject.to_string())
            .fetch_add(1, Ordering::AcqRel);
        let addr_before = addr.map(|a| self.counter(address_key(a)).fetch_add(1, Ordering::AcqRel));
        if before >= self.cfg.max_failures_per_fiscal_code {
            return Err(Limited::FiscalCode);
        }
        if addr_before.is_some_and(|n| n >= self.cfg.max_failures_per_address) {
            return Err(Limited::Address);
        }
        Ok(())
    }

    /// A success: the subject's count is cleared and the address's attempt taken back.
    pub fn succeed(&self, subject: &str, addr: Option<IpAddr>) {
        self.failures.invalidate(subject);
        if let Some(a) = addr
            && let Some(c) = self.failures.get(&address_key(a))
        {
            let _ = c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }

    pub fn window(&self) -> Duration {
        self.cfg.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_subject_and_per_address() {
        let l = Limiter::new(&RateLimitConfig {
            max_failures_per_fiscal_code: 3,
            max_failures_per_address: 5,
            window: Duration::from_secs(60),
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(l.begin("cf:A", Some(a)), Ok(()));
        }
        assert_eq!(l.begin("cf:A", Some(a)), Err(Limited::FiscalCode));
        // That refused attempt counted for the address too: 4; one more reaches 5.
        assert_eq!(l.begin("cf:B", Some(a)), Ok(()));
        assert_eq!(l.begin("cf:C", Some(a)), Err(Limited::Address));
        // Elsewhere, cf:C is fine (its count is 1 of 3).
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(l.begin("cf:C", Some(b)), Ok(()));
        // A success clears its subject and takes its address attempt back.
        l.succeed("cf:C", Some(b));
        l.succeed("cf:A", None);
        assert_eq!(l.begin("cf:A", None), Ok(()));
        // An IPv6 /64 counts as one client.
        for i in 0..4 {
            let ip: IpAddr = format!("2001:db8::{i}").parse().unwrap();
            assert_eq!(l.begin(&format!("cf:X{i}"), Some(ip)), Ok(()));
        }
        let other: IpAddr = "2001:db8::ffff".parse().unwrap();
        assert_eq!(l.begin("cf:Y", Some(other)), Ok(()));
        assert_eq!(l.begin("cf:Z", Some(other)), Err(Limited::Address));
    }
}

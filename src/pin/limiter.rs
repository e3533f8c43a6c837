//! Failed PIN attempts, counted per fiscal code and per client address in fixed windows:
//! once a count reaches its limit, further attempts are refused (429) without asking the
//! verifier, until the window that began with the first failure ends.

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

    fn count(&self, key: &str) -> u32 {
        self.failures
            .get(key)
            .map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// Whether an attempt for `subject` (a namespaced key, e.g. `cf:RSSMRA...`) from
    /// `addr` may go ahead. `addr: None` skips the address limit (a trusted caller).
    pub fn check(&self, subject: &str, addr: Option<IpAddr>) -> Result<(), Limited> {
        if self.count(subject) >= self.cfg.max_failures_per_fiscal_code {
            return Err(Limited::FiscalCode);
        }
        if let Some(a) = addr
            && self.count(&address_key(a)) >= self.cfg.max_failures_per_address
        {
            return Err(Limited::Address);
        }
        Ok(())
    }

    /// Counts a failure for `subject` and `addr`.
    pub fn fail(&self, subject: &str, addr: Option<IpAddr>) {
        let keys = std::iter::once(subject.to_string()).chain(addr.map(address_key));
        for key in keys {
            self.failures
                .get_with(key, || Arc::new(AtomicU32::new(0)))
                .fetch_add(1, Ordering::AcqRel);
        }
    }

    /// A success clears the subject's count (not the address's).
    pub fn succeed(&self, subject: &str) {
        self.failures.invalidate(subject);
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
            assert_eq!(l.check("cf:A", Some(a)), Ok(()));
            l.fail("cf:A", Some(a));
        }
        assert_eq!(l.check("cf:A", Some(a)), Err(Limited::FiscalCode));
        // Another fiscal code from the same address: two more failures reach 5.
        l.fail("cf:B", Some(a));
        assert_eq!(l.check("cf:B", Some(a)), Ok(()));
        l.fail("cf:B", Some(a));
        assert_eq!(l.check("cf:C", Some(a)), Err(Limited::Address));
        // Elsewhere, cf:C is fine; a success clears a subject.
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(l.check("cf:C", Some(b)), Ok(()));
        l.succeed("cf:A");
        assert_eq!(l.check("cf:A", None), Ok(()));
        // An IPv6 /64 counts as one client.
        for i in 0..5 {
            let ip: IpAddr = format!("2001:db8::{i}").parse().unwrap();
            l.fail(&format!("cf:X{i}"), Some(ip));
        }
        let other: IpAddr = "2001:db8::ffff".parse().unwrap();
        assert_eq!(l.check("cf:Y", Some(other)), Err(Limited::Address));
    }
}

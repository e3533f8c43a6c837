//! PIN attempts (see [`crate::ratelimit`]): per fiscal code and per client address for the
//! PIN form and HTTP Basic, per fiscal code for the contact centre's telephone-PIN checks.
//! An attempt is counted before the PIN is checked (parallel requests cannot get more
//! guesses than the limit) and a success takes it back; once a count reaches its limit,
//! further attempts are refused (429) without asking the verifier, until the window that
//! began with the first counted attempt ends.

use std::time::Duration;

use serde::Deserialize;

use crate::identity::FiscalCode;
use crate::ratelimit::{ClientAddress, Exceeded, Limiter};

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

/// The PIN's three limits, each with its own key type.
pub struct PinLimits {
    fiscal_code: Limiter<FiscalCode>,
    address: Limiter<ClientAddress>,
    /// The telephone PIN's checks, per fiscal code (the caller is the contact centre).
    telephone: Limiter<FiscalCode>,
}

impl PinLimits {
    pub fn new(cfg: &RateLimitConfig) -> PinLimits {
        PinLimits {
            fiscal_code: Limiter::new(cfg.max_failures_per_fiscal_code, cfg.window),
            address: Limiter::new(cfg.max_failures_per_address, cfg.window),
            telephone: Limiter::new(cfg.max_failures_per_fiscal_code, cfg.window),
        }
    }

    /// Counts a PIN attempt for `subject` from `addr` (both are counted), or refuses it
    /// when either limit is already reached.
    pub fn begin(&self, subject: &FiscalCode, addr: ClientAddress) -> Result<(), Exceeded> {
        let by_code = self.fiscal_code.hit(subject);
        let by_addr = self.address.hit(&addr);
        by_code.and(by_addr)
    }

    /// Counts input that names no fiscal code (malformed) against the address alone.
    pub fn begin_malformed(&self, addr: ClientAddress) -> Result<(), Exceeded> {
        self.address.hit(&addr)
    }

    /// A success: the subject's count is cleared and the address's attempt taken back.
    pub fn succeed(&self, subject: &FiscalCode, addr: ClientAddress) {
        self.fiscal_code.reset(subject);
        self.address.forgive(&addr);
    }

    pub fn begin_telephone(&self, subject: &FiscalCode) -> Result<(), Exceeded> {
        self.telephone.hit(subject)
    }

    pub fn succeed_telephone(&self, subject: &FiscalCode) {
        self.telephone.reset(subject);
    }

    pub fn window(&self) -> Duration {
        self.address.window()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::fiscal_code::check_character;

    fn cf(first15: &str) -> FiscalCode {
        let c = check_character(first15.as_bytes()) as char;
        FiscalCode::parse(&format!("{first15}{c}")).unwrap()
    }

    fn ip(s: &str) -> ClientAddress {
        ClientAddress::of(s.parse().unwrap())
    }

    #[test]
    fn limits_per_subject_and_per_address() {
        let l = PinLimits::new(&RateLimitConfig {
            max_failures_per_fiscal_code: 3,
            max_failures_per_address: 5,
            window: Duration::from_secs(60),
        });
        let (a, b, c) = (
            cf("RSSMRA80A01H501"),
            cf("VRDGPP70B02F205"),
            cf("BNCGLI85C52H501"),
        );
        let here = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(l.begin(&a, here), Ok(()));
        }
        assert_eq!(l.begin(&a, here).unwrap_err().kind, "fiscal_code");
        // That refused attempt counted for the address too: 4; one more reaches 5.
        assert_eq!(l.begin(&b, here), Ok(()));
        assert_eq!(l.begin(&c, here).unwrap_err().kind, "address");
        // Elsewhere, c is fine (its count is 1 of 3).
        let there = ip("2001:db8::1");
        assert_eq!(l.begin(&c, there), Ok(()));
        // A success clears its subject and takes its address attempt back.
        l.succeed(&c, there);
        l.succeed(&a, there);
        assert_eq!(l.begin(&a, there), Ok(()));
        // Malformed input counts against its own address only: other clients are not
        // refused because one client sent garbage (issue 11).
        let noisy = ip("198.51.100.1");
        for _ in 0..5 {
            assert_eq!(l.begin_malformed(noisy), Ok(()));
        }
        assert!(l.begin_malformed(noisy).is_err());
        for i in 0..50 {
            assert_eq!(
                l.begin_malformed(ip(&format!("198.51.100.{}", i + 2))),
                Ok(())
            );
        }
        // The telephone checks have their own count.
        for _ in 0..3 {
            assert_eq!(l.begin_telephone(&b), Ok(()));
        }
        assert!(l.begin_telephone(&b).is_err());
        l.succeed_telephone(&b);
        assert_eq!(l.begin_telephone(&b), Ok(()));
    }
}

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
use crate::session::{Store, StoreError};

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
    /// The limits counted in this process.
    pub fn new(cfg: &RateLimitConfig) -> PinLimits {
        PinLimits {
            fiscal_code: Limiter::new(
                "pin_fiscal_code",
                cfg.max_failures_per_fiscal_code,
                cfg.window,
            ),
            address: Limiter::new("pin_address", cfg.max_failures_per_address, cfg.window),
            telephone: Limiter::new(
                "pin_telephone",
                cfg.max_failures_per_fiscal_code,
                cfg.window,
            ),
        }
    }

    /// The limits counted in `store` when it is shared by the replicas (Redis).
    pub fn in_store(cfg: &RateLimitConfig, store: &Store) -> PinLimits {
        PinLimits {
            fiscal_code: Limiter::in_store(
                "pin_fiscal_code",
                cfg.max_failures_per_fiscal_code,
                cfg.window,
                store,
            ),
            address: Limiter::in_store(
                "pin_address",
                cfg.max_failures_per_address,
                cfg.window,
                store,
            ),
            telephone: Limiter::in_store(
                "pin_telephone",
                cfg.max_failures_per_fiscal_code,
                cfg.window,
                store,
            ),
        }
    }

    /// Counts a PIN attempt for `subject` from `addr` (both are counted), or refuses it
    /// when either limit is already reached; `Err` when the shared store does not answer.
    pub async fn begin(
        &self,
        subject: &FiscalCode,
        addr: ClientAddress,
    ) -> Result<Result<(), Exceeded>, StoreError> {
        let by_code = self.fiscal_code.hit(subject).await?;
        let by_addr = self.address.hit(&addr).await?;
        Ok(by_code.and(by_addr))
    }

    /// Counts input that names no fiscal code (malformed) against the address alone.
    pub async fn begin_malformed(
        &self,
        addr: ClientAddress,
    ) -> Result<Result<(), Exceeded>, StoreError> {
        self.address.hit(&addr).await
    }

    /// A success: the subject's count is cleared and the address's attempt taken back.
    pub async fn succeed(&self, subject: &FiscalCode, addr: ClientAddress) {
        self.fiscal_code.reset(subject).await;
        self.address.forgive(&addr).await;
    }

    pub async fn begin_telephone(
        &self,
        subject: &FiscalCode,
    ) -> Result<Result<(), Exceeded>, StoreError> {
        self.telephone.hit(subject).await
    }

    pub async fn succeed_telephone(&self, subject: &FiscalCode) {
        self.telephone.reset(subject).await;
    }

    pub fn window(&self) -> Duration {
        self.address.window()
    }

    /// Keeps `previous`'s counts where a limit did not change (a reload).
    pub fn carried_over_from(self, previous: &PinLimits) -> PinLimits {
        PinLimits {
            fiscal_code: self.fiscal_code.carried_over_from(&previous.fiscal_code),
            address: self.address.carried_over_from(&previous.address),
            telephone: self.telephone.carried_over_from(&previous.telephone),
        }
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

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
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
            assert_eq!(block(l.begin(&a, here)).unwrap(), Ok(()));
        }
        assert_eq!(
            block(l.begin(&a, here)).unwrap().unwrap_err().kind,
            "fiscal_code"
        );
        // That refused attempt counted for the address too: 4; one more reaches 5.
        assert_eq!(block(l.begin(&b, here)).unwrap(), Ok(()));
        assert_eq!(
            block(l.begin(&c, here)).unwrap().unwrap_err().kind,
            "address"
        );
        // Elsewhere, c is fine (its count is 1 of 3).
        let there = ip("2001:db8::1");
        assert_eq!(block(l.begin(&c, there)).unwrap(), Ok(()));
        // A success clears its subject and takes its address attempt back.
        block(l.succeed(&c, there));
        block(l.succeed(&a, there));
        assert_eq!(block(l.begin(&a, there)).unwrap(), Ok(()));
        // Malformed input counts against its own address only: other clients are not
        // refused because one client sent garbage (issue 11).
        let noisy = ip("198.51.100.1");
        for _ in 0..5 {
            assert_eq!(block(l.begin_malformed(noisy)).unwrap(), Ok(()));
        }
        assert!(block(l.begin_malformed(noisy)).unwrap().is_err());
        for i in 0..50 {
            assert_eq!(
                block(l.begin_malformed(ip(&format!("198.51.100.{}", i + 2)))).unwrap(),
                Ok(())
            );
        }
        // The telephone checks have their own count.
        for _ in 0..3 {
            assert_eq!(block(l.begin_telephone(&b)).unwrap(), Ok(()));
        }
        assert!(block(l.begin_telephone(&b)).unwrap().is_err());
        block(l.succeed_telephone(&b));
        assert_eq!(block(l.begin_telephone(&b)).unwrap(), Ok(()));
    }
}

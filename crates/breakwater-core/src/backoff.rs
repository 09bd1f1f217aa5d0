//! How long a breaker stays OPEN: a fixed wait, or an exponential backoff that grows with each
//! consecutive re-open and starts over once the breaker closes.

use std::time::Duration;

use crate::config::ConfigError;

/// How long to stay OPEN before probing.
#[derive(Debug, Clone, PartialEq)]
pub enum WaitInOpen {
    /// The same wait every time.
    Fixed(Duration),
    /// `initial * multiplier^(n-1)` for the n-th consecutive opening, at most `max`, then
    /// spread by `jitter` (a fraction in `[0, 1)`: the wait is drawn uniformly from
    /// `wait * (1 ± jitter)`, still at most `max`).
    Exponential {
        /// The first wait.
        initial: Duration,
        /// Growth per consecutive re-open (>= 1).
        multiplier: f64,
        /// The longest wait.
        max: Duration,
        /// Random spread, a fraction in `[0, 1)`.
        jitter: f64,
    },
}

impl From<Duration> for WaitInOpen {
    fn from(d: Duration) -> Self {
        WaitInOpen::Fixed(d)
    }
}

impl WaitInOpen {
    /// Exponential backoff without jitter.
    pub fn exponential(initial: Duration, multiplier: f64, max: Duration) -> Self {
        WaitInOpen::Exponential {
            initial,
            multiplier,
            max,
            jitter: 0.0,
        }
    }

    /// The same backoff with `jitter` (a fraction in `[0, 1)`); a fixed wait is unchanged.
    #[must_use]
    pub fn with_jitter(self, jitter: f64) -> Self {
        match self {
            WaitInOpen::Exponential {
                initial,
                multiplier,
                max,
                ..
            } => WaitInOpen::Exponential {
                initial,
                multiplier,
                max,
                jitter,
            },
            fixed => fixed,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        match self {
            WaitInOpen::Fixed(d) if d.is_zero() => Err(ConfigError::new(
                "wait_in_open",
                "must be greater than zero",
            )),
            WaitInOpen::Fixed(_) => Ok(()),
            WaitInOpen::Exponential {
                initial,
                multiplier,
                max,
                jitter,
            } => {
                if initial.is_zero() {
                    return Err(ConfigError::new(
                        "wait_in_open",
                        "the initial wait must be greater than zero",
                    ));
                }
                if !(multiplier.is_finite() && *multiplier >= 1.0) {
                    return Err(ConfigError::new(
                        "wait_in_open",
                        format!("the multiplier must be a finite number >= 1, got {multiplier}"),
                    ));
                }
                if max < initial {
                    return Err(ConfigError::new(
                        "wait_in_open",
                        format!(
                            "the max wait ({max:?}) is less than the initial wait ({initial:?})"
                        ),
                    ));
                }
                if !(*jitter >= 0.0 && *jitter < 1.0) {
                    return Err(ConfigError::new(
                        "wait_in_open",
                        format!("jitter must be a fraction in [0, 1), got {jitter}"),
                    ));
                }
                Ok(())
            }
        }
    }

    /// The wait for the `attempt`-th consecutive opening (1-based).
    pub fn wait_for(&self, attempt: u32) -> Duration {
        match self {
            WaitInOpen::Fixed(d) => *d,
            WaitInOpen::Exponential {
                initial,
                multiplier,
                max,
                jitter,
            } => {
                let exp = attempt.saturating_sub(1).min(1_000) as i32;
                let secs = (initial.as_secs_f64() * multiplier.powi(exp)).min(max.as_secs_f64());
                // (`>= 0.0` here would be the same: with no jitter the spread is exactly 1.)
                let secs = if *jitter > 0.0 {
                    let spread = 1.0 - jitter + 2.0 * jitter * fastrand::f64();
                    (secs * spread).min(max.as_secs_f64())
                } else {
                    secs
                };
                Duration::from_secs_f64(secs.max(0.0))
            }
        }
    }

    /// The longest wait this policy can produce.
    pub fn max(&self) -> Duration {
        match self {
            WaitInOpen::Fixed(d) => *d,
            WaitInOpen::Exponential { max, .. } => *max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_refuses_each_bad_field_and_takes_the_edges() {
        let exp = |initial: u64, multiplier: f64, max: u64, jitter: f64| WaitInOpen::Exponential {
            initial: Duration::from_secs(initial),
            multiplier,
            max: Duration::from_secs(max),
            jitter,
        };
        // At the edges: a max equal to the initial wait, a multiplier of 1, jitter 0.
        assert!(exp(3, 1.0, 3, 0.0).validate().is_ok());
        assert!(exp(3, 2.0, 30, 0.999).validate().is_ok());
        for bad in [
            exp(0, 2.0, 30, 0.0),
            exp(3, 0.5, 30, 0.0),
            exp(3, f64::INFINITY, 30, 0.0),
            exp(3, f64::NAN, 30, 0.0),
            exp(3, 2.0, 2, 0.0),
            exp(3, 2.0, 30, 1.0),
            exp(3, 2.0, 30, 1.5),
            exp(3, 2.0, 30, -0.1),
            exp(3, 2.0, 30, f64::NAN),
        ] {
            assert_eq!(
                bad.validate().unwrap_err().field(),
                "wait_in_open",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn max_is_the_longest_wait() {
        assert_eq!(
            WaitInOpen::Fixed(Duration::from_secs(7)).max(),
            Duration::from_secs(7)
        );
        let w = WaitInOpen::Exponential {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(9),
            jitter: 0.0,
        };
        assert_eq!(w.max(), Duration::from_secs(9));
    }

    #[test]
    fn exponential_grows_then_caps() {
        let w = WaitInOpen::exponential(Duration::from_secs(3), 2.0, Duration::from_secs(15));
        let got: Vec<u64> = (1..=5).map(|n| w.wait_for(n).as_secs()).collect();
        assert_eq!(got, vec![3, 6, 12, 15, 15]);
        assert_eq!(w.wait_for(u32::MAX), Duration::from_secs(15));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let w = WaitInOpen::exponential(Duration::from_secs(10), 2.0, Duration::from_secs(100))
            .with_jitter(0.5);
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..1_000 {
            let d = w.wait_for(1).as_secs_f64();
            assert!((5.0..=15.0).contains(&d), "{d}");
            seen_low |= d < 9.0;
            seen_high |= d > 11.0;
            assert!(w.wait_for(10) <= Duration::from_secs(100));
        }
        assert!(seen_low && seen_high, "jitter spreads both ways");
    }
}

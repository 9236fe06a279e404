//! Random distributions for link properties and fault timings, sampled from the simulator's
//! seeded generator so that every draw is reproducible from the run's seed.

use silver_p2p_core::SeededRng;

/// A distribution of non-negative real values (milliseconds, seconds or bytes per second,
/// as the field that holds it says). Every sample is clamped at zero.
///
/// Sampling uses only the generator passed in, so the same seed gives the same samples.
/// `Exp` and `Pareto` use `f64::ln`/`powf`: traces are reproducible on one platform and
/// toolchain, which is what the determinism tests check.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dist {
    /// Always this value.
    Const(f64),
    /// Uniform in `[lo, hi)`.
    Uniform {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
    },
    /// Exponential with this mean (memoryless waits, Poisson processes).
    Exp {
        /// Mean.
        mean: f64,
    },
    /// Pareto with minimum `scale` and tail index `shape` (heavy tails: rare long jitter).
    Pareto {
        /// Minimum value.
        scale: f64,
        /// Tail index; smaller is heavier. Must be positive.
        shape: f64,
    },
}

impl Dist {
    /// The constant zero.
    pub const ZERO: Dist = Dist::Const(0.0);

    /// Draws one value (never negative, never NaN).
    pub fn sample(&self, rng: &mut SeededRng) -> f64 {
        let v = match *self {
            Dist::Const(c) => c,
            Dist::Uniform { lo, hi } => lo + (hi - lo) * unit(rng),
            Dist::Exp { mean } => -mean * (1.0 - unit(rng)).ln(),
            Dist::Pareto { scale, shape } => {
                if shape <= 0.0 {
                    scale
                } else {
                    scale / (1.0 - unit(rng)).powf(1.0 / shape)
                }
            }
        };
        if v.is_finite() && v > 0.0 {
            v
        } else {
            0.0
        }
    }

    /// Checks that the parameters are finite and not negative, values (a constant, a range's
    /// ends, a mean, a Pareto minimum) at most `max`, a uniform range not reversed and a
    /// Pareto tail index positive; `what` names the setting in the error.
    pub fn validate(&self, what: &str, max: f64) -> Result<(), String> {
        let (values, shape): (&[f64], f64) = match self {
            Dist::Const(c) => (&[*c], 1.0),
            Dist::Uniform { lo, hi } => (&[*lo, *hi], 1.0),
            Dist::Exp { mean } => (&[*mean], 1.0),
            Dist::Pareto { scale, shape } => (&[*scale], *shape),
        };
        if values
            .iter()
            .chain([&shape])
            .any(|p| !p.is_finite() || *p < 0.0)
        {
            return Err(format!(
                "{what}: parameters must be finite and not negative"
            ));
        }
        if values.iter().any(|v| *v > max) {
            return Err(format!("{what}: values must be at most {max}"));
        }
        match *self {
            Dist::Uniform { lo, hi } if lo > hi => {
                Err(format!("{what}: uniform lo ({lo}) is above hi ({hi})"))
            }
            _ if shape == 0.0 => Err(format!("{what}: the Pareto tail index must be positive")),
            _ => Ok(()),
        }
    }

    /// Whether every sample is zero (lets the simulator skip the draw).
    pub fn is_zero(&self) -> bool {
        match *self {
            Dist::Const(c) => c <= 0.0,
            Dist::Uniform { lo, hi } => lo <= 0.0 && hi <= 0.0,
            Dist::Exp { mean } => mean <= 0.0,
            Dist::Pareto { scale, .. } => scale <= 0.0,
        }
    }

    /// The distribution's mean (infinite for a Pareto tail index at most 1).
    pub fn mean(&self) -> f64 {
        match *self {
            Dist::Const(c) => c.max(0.0),
            Dist::Uniform { lo, hi } => ((lo + hi) / 2.0).max(0.0),
            Dist::Exp { mean } => mean.max(0.0),
            Dist::Pareto { scale, shape } => {
                if shape > 1.0 {
                    scale * shape / (shape - 1.0)
                } else {
                    f64::INFINITY
                }
            }
        }
    }
}

/// A uniform value in `[0, 1)` with 53 bits of precision.
pub(crate) fn unit(rng: &mut SeededRng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Whether an event of probability `p` happens.
pub(crate) fn chance(rng: &mut SeededRng, p: f64) -> bool {
    p > 0.0 && unit(rng) < p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_reproducible_and_within_bounds() {
        let d = Dist::Uniform { lo: 5.0, hi: 10.0 };
        let mut a = SeededRng::from_seed([1; 32]);
        let mut b = SeededRng::from_seed([1; 32]);
        for _ in 0..1000 {
            let x = d.sample(&mut a);
            assert_eq!(x, d.sample(&mut b));
            assert!((5.0..10.0).contains(&x));
        }
        let e = Dist::Exp { mean: 3.0 };
        let mean = (0..20_000).map(|_| e.sample(&mut a)).sum::<f64>() / 20_000.0;
        assert!((2.7..3.3).contains(&mean), "{mean}");
        let p = Dist::Pareto {
            scale: 1.0,
            shape: 2.0,
        };
        assert!((0..1000).all(|_| p.sample(&mut a) >= 1.0));
        assert_eq!(Dist::Const(-1.0).sample(&mut a), 0.0);
        assert!(Dist::ZERO.is_zero() && !e.is_zero());
    }
}

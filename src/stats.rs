//! Confidence intervals: the one place that computes a mean and its 95% half-width.

use serde::{Deserialize, Serialize};

/// Which critical value a 95% interval uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Critical {
    /// The normal approximation, z = 1.96: for means over many episodes (evaluation
    /// returns, paired differences). Fewer than two values give a half-width of 0 (and an
    /// empty sample a mean of 0), as every table written so far shows.
    Normal,
    /// Student's t with n - 1 degrees of freedom: for means over a few seeds or runs.
    /// Fewer than two values give a NaN half-width (and an empty sample a NaN mean).
    StudentT,
}

/// The two-sided 95% critical value of Student's t with `df` degrees of freedom (NaN for
/// 0; tabulated to 30, then the usual coarse steps down to the normal 1.96).
pub fn t95(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110,
        2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => T[df - 1],
        31..=60 => 2.000,
        61..=120 => 1.980,
        _ => 1.960,
    }
}

/// The normal distribution's two-sided 95% critical value.
pub const Z95: f64 = 1.96;

/// The mean of `xs` and the half-width of its 95% interval (sample standard deviation over
/// the square root of n, times the critical value of `critical`).
pub fn mean_ci(xs: &[f64], critical: Critical) -> (f64, f64) {
    let n = xs.len();
    let degenerate = match critical {
        Critical::Normal => 0.0,
        Critical::StudentT => f64::NAN,
    };
    if n == 0 {
        return (degenerate, degenerate);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, degenerate);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let c = match critical {
        Critical::Normal => Z95,
        Critical::StudentT => t95(n - 1),
    };
    (mean, c * (var / n as f64).sqrt())
}

/// A mean and the half-width of its 95% interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub mean: f64,
    pub ci95: f64,
}

impl Interval {
    /// The Student-t interval of `xs` (across seeds or runs).
    pub fn of(xs: &[f64]) -> Interval {
        Interval::with(xs, Critical::StudentT)
    }

    /// The interval of `xs` with the given critical value.
    pub fn with(xs: &[f64], critical: Critical) -> Interval {
        let (mean, ci95) = mean_ci(xs, critical);
        Interval { mean, ci95 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_interval_of_four_values() {
        let (m, c) = mean_ci(&[1.0, 2.0, 3.0, 4.0], Critical::StudentT);
        assert_eq!(m, 2.5);
        // sd = 1.2910, se = 0.6455, t(3) = 3.182
        assert!((c - 3.182 * (5.0f64 / 3.0 / 4.0).sqrt()).abs() < 1e-12);
        assert!(mean_ci(&[1.0], Critical::StudentT).1.is_nan());
        assert!(mean_ci(&[], Critical::StudentT).0.is_nan());
    }

    #[test]
    fn normal_interval_keeps_its_zero_width_for_degenerate_samples() {
        assert_eq!(mean_ci(&[], Critical::Normal), (0.0, 0.0));
        assert_eq!(mean_ci(&[3.0], Critical::Normal), (3.0, 0.0));
        let (m, c) = mean_ci(&[1.0, 3.0], Critical::Normal);
        assert_eq!(m, 2.0);
        assert_eq!(c, 1.96 * (2.0f64 / 2.0).sqrt());
    }
}

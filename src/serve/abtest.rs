//! The statistics of an online A/B test with users as the unit of randomisation: a stable
//! hash assignment of users to arms, per-arm means per session with intervals that
//! account for a user's sessions being correlated (the delta method for a ratio of sums
//! over users), the difference between arms with its interval and p-value, the power the
//! test has for a given effect, and a sample-ratio-mismatch check of the assignment.
//! The groundwork of the served A/B experiment; every function is pure and seeded.

use sha2::{Digest, Sha256};

/// The share in [0, 1) that the stable hash of (experiment salt, user) gives: the same
/// user always lands on the same share, a new salt reshuffles everyone.
pub fn hash_share(salt: &str, user: u64) -> f64 {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0u8]);
    h.update(user.to_le_bytes());
    let d = h.finalize();
    let x = u64::from_le_bytes(d[..8].try_into().expect("8 bytes"));
    // The top 53 bits as a uniform double in [0, 1).
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Arm B when the user's share falls below `share_b` (the share of traffic arm B gets),
/// else arm A. Returns true for B.
pub fn in_arm_b(salt: &str, user: u64, share_b: f64) -> bool {
    hash_share(salt, user) < share_b
}

/// One user's totals in an experiment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct UserTotals {
    pub sessions: f64,
    pub value: f64,
}

/// An arm's mean value per session with the delta-method standard error of the ratio of
/// sums over users (users independent, sessions within a user not).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArmEstimate {
    pub users: usize,
    pub sessions: f64,
    pub mean: f64,
    pub se: f64,
}

/// The ratio estimate sum(value) / sum(sessions) over `users` and its standard error:
/// var ≈ sum((y_i − r n_i)^2) / (m (m − 1) n̄^2) for m users with n_i sessions and y_i
/// value each.
pub fn arm_estimate(users: &[UserTotals]) -> ArmEstimate {
    let m = users.len();
    let n: f64 = users.iter().map(|u| u.sessions).sum();
    let y: f64 = users.iter().map(|u| u.value).sum();
    if m == 0 || n <= 0.0 {
        return ArmEstimate { users: m, sessions: n, mean: f64::NAN, se: f64::NAN };
    }
    let r = y / n;
    if m < 2 {
        return ArmEstimate { users: m, sessions: n, mean: r, se: f64::NAN };
    }
    let nbar = n / m as f64;
    let ss: f64 = users.iter().map(|u| (u.value - r * u.sessions).powi(2)).sum();
    let se = (ss / (m as f64 * (m as f64 - 1.0)) / (nbar * nbar)).sqrt();
    ArmEstimate { users: m, sessions: n, mean: r, se }
}

/// Arm B minus arm A with its 95% interval and two-sided p-value (normal approximation,
/// fine at the hundreds of users an online test has).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Difference {
    pub diff: f64,
    pub se: f64,
    pub ci95: [f64; 2],
    pub p_value: f64,
}

pub fn difference(a: &ArmEstimate, b: &ArmEstimate) -> Difference {
    let diff = b.mean - a.mean;
    let se = (a.se * a.se + b.se * b.se).sqrt();
    let z = diff / se;
    Difference { diff, se, ci95: [diff - 1.96 * se, diff + 1.96 * se], p_value: 2.0 * normal_sf(z.abs()) }
}

/// The chance that the two-sided 5% test detects a true difference `effect` when its
/// standard error is `se`.
pub fn power(effect: f64, se: f64) -> f64 {
    let k = effect.abs() / se;
    normal_sf(1.96 - k) + normal_sf(1.96 + k)
}

/// The sample-ratio-mismatch check: the chi-square test (one degree of freedom) of `a`
/// and `b` users against the configured share of B. A small p-value (the usual alarm is
/// below 0.001) says the assignment or the logging is broken, and no difference between
/// the arms can be trusted.
pub fn srm_p_value(a: usize, b: usize, share_b: f64) -> f64 {
    srm_p_value_k(&[a, b], &[1.0 - share_b, share_b])
}

/// The sample-ratio-mismatch check of k arms: the chi-square test (k - 1 degrees of
/// freedom) of the users per arm against the configured shares. NaN where an expected
/// count is not positive.
pub fn srm_p_value_k(users: &[usize], shares: &[f64]) -> f64 {
    let n: f64 = users.iter().sum::<usize>() as f64;
    let mut chi2 = 0.0;
    for (&u, &s) in users.iter().zip(shares) {
        let e = n * s;
        if e <= 0.0 {
            return f64::NAN;
        }
        chi2 += (u as f64 - e).powi(2) / e;
    }
    chi2_sf(chi2, users.len().saturating_sub(1))
}

/// P(X > x) for X chi-square with `dof` degrees of freedom (an integer), in closed form
/// (Abramowitz and Stegun 26.4.4 and 26.4.5): for an even dof 2m,
/// e^(-x/2) sum_{j<m} (x/2)^j / j!; for an odd one, 2 P(Z > sqrt x) plus
/// sqrt(2x/pi) e^(-x/2) sum_{j=1}^{(dof-1)/2} x^(j-1) / (1 3 5 ... (2j-1)). NaN for dof 0.
pub fn chi2_sf(x: f64, dof: usize) -> f64 {
    if dof == 0 || x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 1.0;
    }
    let half = 0.5 * x;
    if dof.is_multiple_of(2) {
        let (mut term, mut sum) = (1.0, 1.0);
        for j in 1..dof / 2 {
            term *= half / j as f64;
            sum += term;
        }
        ((-half).exp() * sum).min(1.0)
    } else {
        let mut tail = 2.0 * normal_sf(x.sqrt());
        let (mut term, mut sum) = (1.0, 0.0);
        for j in 1..=(dof - 1) / 2 {
            if j > 1 {
                term *= x / (2 * j - 1) as f64;
            }
            sum += term;
        }
        tail += (2.0 * x / std::f64::consts::PI).sqrt() * (-half).exp() * sum;
        tail.min(1.0)
    }
}

/// P(Z > z) for a standard normal Z, from erfc (Numerical Recipes' erfcc: relative error
/// below 1.2e-7 everywhere).
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use rand_distr::{Distribution, Poisson};

    #[test]
    fn the_normal_tail_is_right() {
        assert!((normal_sf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_sf(1.96) - 0.024_997_9).abs() < 1e-6);
        assert!((normal_sf(-1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((normal_sf(3.0) - 0.001_349_9).abs() < 1e-6);
    }

    #[test]
    fn assignment_is_stable_follows_the_split_and_a_new_salt_reshuffles() {
        let users = 20_000u64;
        let b: Vec<bool> = (0..users).map(|u| in_arm_b("exp-1", u, 0.3)).collect();
        assert_eq!(b, (0..users).map(|u| in_arm_b("exp-1", u, 0.3)).collect::<Vec<_>>());
        let share = b.iter().filter(|&&x| x).count() as f64 / users as f64;
        // 0.3 within 5 standard errors.
        assert!((share - 0.3).abs() < 5.0 * (0.3f64 * 0.7 / users as f64).sqrt(), "{share}");
        let moved = (0..users).filter(|&u| in_arm_b("exp-2", u, 0.3) != b[u as usize]).count() as f64 / users as f64;
        // Independent reshuffle: 2 * 0.3 * 0.7 = 0.42 change arms.
        assert!((moved - 0.42).abs() < 0.02, "{moved}");
        assert!(srm_p_value(b.iter().filter(|&&x| !x).count(), b.iter().filter(|&&x| x).count(), 0.3) > 0.001);
        assert!(srm_p_value(10_000, 10_600, 0.5) < 0.001);
    }

    /// The chi-square tail at its tabulated 5% and 0.1% points, for 1 to 7 degrees of
    /// freedom; the k-arm check of two arms is the two-arm check.
    #[test]
    fn chi_square_tails_match_the_tables() {
        let five = [3.841, 5.991, 7.815, 9.488, 11.070, 12.592, 14.067];
        let tenth = [10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322];
        for dof in 1..=7 {
            assert!((chi2_sf(five[dof - 1], dof) - 0.05).abs() < 2e-4, "dof {dof}: {}", chi2_sf(five[dof - 1], dof));
            assert!((chi2_sf(tenth[dof - 1], dof) - 0.001).abs() < 1e-5, "dof {dof}: {}", chi2_sf(tenth[dof - 1], dof));
        }
        assert_eq!(chi2_sf(0.0, 3), 1.0);
        assert!(chi2_sf(1.0, 0).is_nan());
        assert!((srm_p_value_k(&[480, 520], &[0.5, 0.5]) - srm_p_value(480, 520, 0.5)).abs() < 1e-15);
        assert!((srm_p_value_k(&[1000, 1000, 1060], &[1.0 / 3.0; 3]) - (-2.3529_f64 / 2.0).exp()).abs() < 1e-4);
        assert!(srm_p_value_k(&[1000, 1000, 1300], &[1.0 / 3.0; 3]) < 0.001);
    }

    /// A population of users with a persistent taste (so a user's sessions correlate)
    /// and a varying number of sessions: the setting where treating sessions as
    /// independent understates the error.
    fn population(n: usize, seed: u64) -> Vec<(f64, Vec<f64>)> {
        let mut rng = crate::rng::substream(seed, crate::rng::Stream::Learn, 3);
        let poisson = Poisson::new(3.0).unwrap();
        (0..n)
            .map(|_| {
                let taste: f64 = rng.random::<f64>() * 4.0;
                let k = 1 + poisson.sample(&mut rng) as usize;
                (taste, (0..k).map(|_| taste + rng.random::<f64>() * 2.0 - 1.0).collect())
            })
            .collect()
    }

    /// Runs `experiments` A/A (or A/B with `effect` added to arm B's sessions) experiments
    /// over one population, each with its own salt; returns the rejection rate at 5% and
    /// the mean power the test claims for `effect`.
    fn experiments(pop: &[(f64, Vec<f64>)], experiments: usize, effect: f64) -> (f64, f64) {
        let mut rejected = 0;
        let mut claimed = 0.0;
        for e in 0..experiments {
            let salt = format!("aa-{e}");
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for (u, (_, sessions)) in pop.iter().enumerate() {
                let to_b = in_arm_b(&salt, u as u64, 0.5);
                let add = if to_b { effect } else { 0.0 };
                let t = UserTotals { sessions: sessions.len() as f64, value: sessions.iter().map(|s| s + add).sum() };
                if to_b {
                    b.push(t)
                } else {
                    a.push(t)
                }
            }
            let (ea, eb) = (arm_estimate(&a), arm_estimate(&b));
            let d = difference(&ea, &eb);
            rejected += usize::from(d.p_value < 0.05);
            claimed += power(effect, d.se);
        }
        (rejected as f64 / experiments as f64, claimed / experiments as f64)
    }

    #[test]
    fn a_a_experiments_reject_at_the_nominal_rate_and_a_planted_effect_at_the_claimed_power() {
        let pop = population(400, 1);
        let n = 1000;
        let (fpr, _) = experiments(&pop, n, 0.0);
        // The binomial 99.9% interval of 5% over 1,000 experiments: about ±2.3 points.
        let half = 3.29 * (0.05f64 * 0.95 / n as f64).sqrt();
        assert!((fpr - 0.05).abs() < half, "A/A false-positive rate {fpr}");
        // A planted effect of 0.25 per session: detected about as often as claimed.
        let (hit, claimed) = experiments(&pop, n, 0.25);
        let half = 3.29 * (claimed * (1.0 - claimed) / n as f64).sqrt();
        assert!(claimed > 0.3 && claimed < 0.95, "claimed power {claimed}");
        assert!((hit - claimed).abs() < half + 0.02, "detected {hit}, claimed {claimed}");
        // Treating sessions as independent units would reject far too often under A/A:
        // the correlated sessions are why users are the unit.
        let (naive, _) = {
            let mut rejected = 0;
            for e in 0..n {
                let salt = format!("aa-{e}");
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for (u, (_, sessions)) in pop.iter().enumerate() {
                    let side = if in_arm_b(&salt, u as u64, 0.5) { &mut b } else { &mut a };
                    side.extend(sessions.iter().map(|&s| UserTotals { sessions: 1.0, value: s }));
                }
                rejected += usize::from(difference(&arm_estimate(&a), &arm_estimate(&b)).p_value < 0.05);
            }
            (rejected as f64 / n as f64, 0.0)
        };
        assert!(naive > 0.1, "sessions as units: {naive}");
        eprintln!(
            "A/A false positives {fpr:.3}; effect 0.25 detected {hit:.3}, claimed {claimed:.3}; sessions as units {naive:.3}"
        );
    }
}

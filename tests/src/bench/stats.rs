//! Percentiles of a sample, by nearest rank: the p99 of 100 samples is the
//! 99th smallest, the p99 of 20 samples is the largest. No interpolation, so
//! every reported figure is one that was actually measured.

use std::time::Duration;

/// p50, p99 and max of one sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// The value of nearest rank `q` (0 < q <= 1) in `sorted`, which is not empty.
fn rank(sorted: &[f64], q: f64) -> f64 {
    let k = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[k - 1]
}

/// The summary of `samples`; `None` when there are none.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    Some(Summary {
        n: sorted.len(),
        p50: rank(&sorted, 0.50),
        p99: rank(&sorted, 0.99),
        max: sorted[sorted.len() - 1],
    })
}

/// The median (nearest rank, so of 3 runs the middle one).
pub fn median(samples: &[f64]) -> Option<f64> {
    summarize(samples).map(|s| s.p50)
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summarize(&v).unwrap();
        assert_eq!((s.n, s.p50, s.p99, s.max), (100, 50.0, 99.0, 100.0));
        let s = summarize(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.p50, s.p99, s.max), (2.0, 3.0, 3.0));
        assert_eq!(median(&[5.0]), Some(5.0));
        assert!(summarize(&[]).is_none());
    }
}

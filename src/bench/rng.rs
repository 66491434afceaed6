//! Cheap randomness for the load generator: a SplitMix64 generator per client (no shared
//! state, no locks on the request path) and a Zipf sampler over key ranks, built once per
//! scenario as a cumulative table and shared read-only.

use std::sync::Arc;

/// SplitMix64: fast, good enough to pick keys and account ids, seedable per client.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n.max(1) as u128) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True `percent`% of the time.
    pub fn percent(&mut self, percent: u32) -> bool {
        self.below(100) < u64::from(percent)
    }
}

/// Zipf(s) over ranks `0..n`: rank 0 is the hottest. Sampling is a binary search in the
/// cumulative table (n floats, built once).
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Arc<Vec<f64>>,
}

impl Zipf {
    pub fn new(n: u64, s: f64) -> Zipf {
        let n = n.max(1) as usize;
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / (k as f64).powf(s);
            cdf.push(total);
        }
        for v in &mut cdf {
            *v /= total;
        }
        Zipf { cdf: Arc::new(cdf) }
    }

    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        let i = self.cdf.partition_point(|&c| c < u);
        i.min(self.cdf.len() - 1) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range() {
        let mut r = Rng::new(7);
        for _ in 0..10_000 {
            assert!(r.below(13) < 13);
        }
    }

    #[test]
    fn zipf_favours_low_ranks() {
        let z = Zipf::new(10_000, 0.99);
        let mut r = Rng::new(1);
        let mut hot = 0;
        let n = 100_000;
        for _ in 0..n {
            let k = z.sample(&mut r);
            assert!(k < 10_000);
            if k < 100 {
                hot += 1;
            }
        }
        // with s = 0.99 the top 1% of 10k keys take roughly half the requests
        assert!(hot > n / 3 && hot < n * 3 / 4, "hot share {hot}/{n}");
    }

    #[test]
    fn zipf_zero_is_uniform() {
        let z = Zipf::new(4, 0.0);
        let mut r = Rng::new(3);
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            counts[z.sample(&mut r) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
    }
}

//! A Zipf(s) key sampler for skewed workloads (tests, load comparisons): rank `i` (0-based)
//! is drawn with weight `1 / (i + 1)^s` by a binary search over the cumulative weights, from
//! a small deterministic xorshift generator so runs are repeatable per seed.

pub struct Zipf {
    cdf: Vec<f64>,
    state: u64,
}

impl Zipf {
    pub fn new(n: usize, s: f64, seed: u64) -> Zipf {
        let weights: Vec<f64> = (1..=n.max(1)).map(|i| 1.0 / (i as f64).powf(s)).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let cdf = weights
            .into_iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        Zipf {
            cdf,
            state: seed | 1,
        }
    }

    /// A uniform draw in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The next rank.
    pub fn next_rank(&mut self) -> usize {
        let u = self.uniform();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skewed_towards_low_ranks() {
        let mut z = Zipf::new(1000, 0.99, 7);
        let draws: Vec<usize> = (0..20_000).map(|_| z.next_rank()).collect();
        let top10 = draws.iter().filter(|&&r| r < 10).count() as f64 / draws.len() as f64;
        // the top 1% of keys take about 38% of draws under Zipf(0.99) over 1000 keys
        assert!((0.33..0.43).contains(&top10), "{top10}");
        assert!(draws.iter().all(|&r| r < 1000));
    }
}

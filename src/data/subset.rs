//! The lab's seeded class choice, bit for bit as numpy does it:
//! `np.random.seed(seed); np.random.choice(np.arange(0, 100), k)`, then `np.unique`.
//!
//! `seed` initialises MT19937 with `init_genrand(seed)`; `choice` with replacement draws
//! `randint(0, 100, k)`, which in numpy's legacy generator takes 32-bit outputs masked to
//! the smallest `2^b − 1 ≥ 99` (127) and rejects values above 99.

use super::DataError;
use rand_mt::Mt;

/// numpy's legacy `RandomState`, as far as the lab needs it.
pub struct NumpyRandomState {
    mt: Mt,
}

impl NumpyRandomState {
    /// `np.random.seed(seed)` for an integer seed.
    pub fn seed(seed: u32) -> Self {
        Self { mt: Mt::new(seed) }
    }

    /// `randint(0, high)`: one integer in `[0, high)` by masked rejection.
    ///
    /// # Panics
    /// If `high` is 0 or above 2³².
    pub fn randint(&mut self, high: u64) -> u64 {
        assert!(
            high > 0 && high <= 1 << 32,
            "randint: high must be in 1..=2^32"
        );
        let max = high - 1;
        if max == 0 {
            return 0;
        }
        let mask = u64::MAX >> max.leading_zeros();
        loop {
            let v = u64::from(self.mt.next_u32()) & mask;
            if v <= max {
                return v;
            }
        }
    }
}

/// The lab's choice: the raw draw and the distinct classes, ascending.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ClassChoice {
    /// The seed.
    pub seed: u64,
    /// `np.random.choice(np.arange(0, total), k)` in draw order (may repeat).
    pub draw: Vec<usize>,
    /// `np.unique(draw)`: the classes used, ascending; labels are their positions.
    pub classes: Vec<usize>,
}

impl ClassChoice {
    /// Whether the draw repeated a class (so fewer than `k` classes are used).
    pub fn has_repeats(&self) -> bool {
        self.classes.len() < self.draw.len()
    }
}

/// Draws `k` of `total` classes with `seed` exactly as the lab's Python loader does.
pub fn choose_classes(seed: u64, k: usize, total: usize) -> Result<ClassChoice, DataError> {
    let seed32 = u32::try_from(seed).map_err(|_| {
        DataError::Invalid(format!(
            "seed {seed} is out of range: numpy's seed must be between 0 and 2**32 - 1"
        ))
    })?;
    if k == 0 || total == 0 {
        return Err(DataError::Invalid(format!(
            "cannot choose {k} of {total} classes (expected at least 1 of at least 1)"
        )));
    }
    let mut rs = NumpyRandomState::seed(seed32);
    let draw: Vec<usize> = (0..k).map(|_| rs.randint(total as u64) as usize).collect();
    let mut classes = draw.clone();
    classes.sort_unstable();
    classes.dedup();
    Ok(ClassChoice {
        seed,
        draw,
        classes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference draws computed with numpy (`np.random.seed(s); np.random.choice(np.arange(0, 100), 3)`).
    #[test]
    fn matches_numpy_reference_draws() {
        for (seed, draw) in [
            (0, [44, 47, 64]),
            (1, [37, 12, 72]),
            (42, [51, 92, 14]),
            (1213346041, [28, 49, 47]),
        ] {
            let c = choose_classes(seed, 3, 100).unwrap();
            assert_eq!(c.draw, draw, "seed {seed}");
            let mut sorted = draw.to_vec();
            sorted.sort();
            assert_eq!(c.classes, sorted);
            assert!(!c.has_repeats());
        }
    }

    #[test]
    fn mt19937_matches_the_reference_generator() {
        // First outputs of init_genrand(5489), the reference implementation's default seed.
        let mut rs = NumpyRandomState::seed(5489);
        assert_eq!(rs.mt.next_u32(), 3499211612);
        assert_eq!(rs.mt.next_u32(), 581869302);
    }

    #[test]
    fn repeats_are_reported_and_merged() {
        // Drawing many classes from few must repeat.
        let c = choose_classes(3, 20, 5).unwrap();
        assert!(c.has_repeats());
        assert!(c.classes.windows(2).all(|w| w[0] < w[1]));
        assert!(c.classes.iter().all(|&x| x < 5));
    }

    #[test]
    fn out_of_range_seed_is_refused() {
        let err = choose_classes(1 << 32, 3, 100).unwrap_err().to_string();
        assert!(err.contains("seed 4294967296 is out of range"), "{err}");
    }
}

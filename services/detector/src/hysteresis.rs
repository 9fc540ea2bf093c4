//! The hysteresis state machine behind every rule: a signal opens only after it stayed above the
//! open threshold for `open_after` consecutive evaluations, and closes only after it stayed below
//! the (lower) close threshold for `close_after` consecutive evaluations. A flapping signal
//! therefore makes one incident, not one per flap.
//!
//! Transition table (`v` is the evaluated value, `None` when the window held too little data):
//!
//! | phase   | input                 | next phase / effect                                  |
//! |---------|-----------------------|------------------------------------------------------|
//! | Healthy | v > open              | streak + 1 (first bad time kept); at `open_after`: Firing, **Open** |
//! | Healthy | v ≤ open or None      | streak reset                                         |
//! | Firing  | v < close             | good streak + 1; at `close_after`: Healthy, **Close** |
//! | Firing  | v ≥ close             | good streak reset                                    |
//! | Firing  | None                  | unchanged: no data is no evidence of recovery        |

/// The thresholds of one evaluation (they may move with a baseline).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    pub open_above: f64,
    pub close_below: f64,
}

/// What one evaluation changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition<T> {
    None,
    /// The signal is confirmed bad; `first_bad_at` is the first evaluation of the bad streak.
    Open {
        first_bad_at: T,
    },
    Close,
}

/// Where the machine is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase<T> {
    Healthy {
        bad_streak: u32,
        first_bad_at: Option<T>,
    },
    Firing {
        good_streak: u32,
    },
}

/// One signal's hysteresis.
#[derive(Clone, Debug)]
pub struct Hysteresis<T> {
    open_after: u32,
    close_after: u32,
    phase: Phase<T>,
}

impl<T: Copy> Hysteresis<T> {
    /// `open_after` and `close_after` are clamped to at least 1.
    pub fn new(open_after: u32, close_after: u32) -> Self {
        Self {
            open_after: open_after.max(1),
            close_after: close_after.max(1),
            phase: Phase::Healthy {
                bad_streak: 0,
                first_bad_at: None,
            },
        }
    }

    pub fn phase(&self) -> Phase<T> {
        self.phase
    }

    pub fn is_firing(&self) -> bool {
        matches!(self.phase, Phase::Firing { .. })
    }

    /// Feeds one evaluation made at `at`.
    pub fn step(&mut self, at: T, value: Option<f64>, thresholds: Thresholds) -> Transition<T> {
        match (&mut self.phase, value) {
            (
                Phase::Healthy {
                    bad_streak,
                    first_bad_at,
                },
                Some(v),
            ) if v > thresholds.open_above => {
                *bad_streak += 1;
                let first = *first_bad_at.get_or_insert(at);
                if *bad_streak >= self.open_after {
                    self.phase = Phase::Firing { good_streak: 0 };
                    return Transition::Open {
                        first_bad_at: first,
                    };
                }
                Transition::None
            }
            (Phase::Healthy { .. }, _) => {
                self.phase = Phase::Healthy {
                    bad_streak: 0,
                    first_bad_at: None,
                };
                Transition::None
            }
            (Phase::Firing { good_streak }, Some(v)) if v < thresholds.close_below => {
                *good_streak += 1;
                if *good_streak >= self.close_after {
                    self.phase = Phase::Healthy {
                        bad_streak: 0,
                        first_bad_at: None,
                    };
                    return Transition::Close;
                }
                Transition::None
            }
            (Phase::Firing { good_streak }, Some(_)) => {
                *good_streak = 0;
                Transition::None
            }
            (Phase::Firing { .. }, None) => Transition::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: Thresholds = Thresholds {
        open_above: 0.05,
        close_below: 0.025,
    };

    fn run(values: &[Option<f64>], open_after: u32, close_after: u32) -> Vec<Transition<usize>> {
        let mut machine = Hysteresis::new(open_after, close_after);
        values
            .iter()
            .enumerate()
            .map(|(i, v)| machine.step(i, *v, T))
            .collect()
    }

    #[test]
    fn opens_after_consecutive_bad_evaluations_with_the_first_bad_time() {
        let out = run(&[Some(0.0), Some(0.1), Some(0.2), Some(0.3)], 3, 2);
        assert_eq!(out[3], Transition::Open { first_bad_at: 1 });
    }

    #[test]
    fn a_good_evaluation_restarts_the_bad_streak() {
        let out = run(&[Some(0.1), Some(0.0), Some(0.1), Some(0.1)], 2, 2);
        assert_eq!(out[3], Transition::Open { first_bad_at: 2 });
        assert!(out[..3].iter().all(|t| *t == Transition::None));
    }

    #[test]
    fn flapping_between_the_thresholds_keeps_one_incident_open() {
        let mut values = vec![Some(0.1), Some(0.1)];
        for _ in 0..20 {
            values.push(Some(0.01));
            values.push(Some(0.1));
        }
        let out = run(&values, 2, 2);
        let opens = out
            .iter()
            .filter(|t| matches!(t, Transition::Open { .. }))
            .count();
        assert_eq!(opens, 1);
        assert!(!out.contains(&Transition::Close));
    }

    #[test]
    fn no_data_does_not_resolve() {
        let out = run(&[Some(0.1), None, None, None, Some(0.0)], 1, 1);
        assert_eq!(out[0], Transition::Open { first_bad_at: 0 });
        assert_eq!(&out[1..4], &[Transition::None; 3]);
        assert_eq!(out[4], Transition::Close);
    }

    fn value() -> impl Strategy<Value = Option<f64>> {
        prop_oneof![
            1 => Just(None),
            4 => (0.0f64..0.2).prop_map(Some),
            1 => prop_oneof![Just(0.05), Just(0.025)].prop_map(Some),
        ]
    }

    proptest! {
        #[test]
        fn at_most_one_open_at_a_time_and_only_after_n_bad_evaluations(
            values in proptest::collection::vec(value(), 0..200),
            open_after in 1u32..6,
            close_after in 1u32..6,
        ) {
            let mut machine = Hysteresis::new(open_after, close_after);
            let mut open = false;
            for (i, v) in values.iter().enumerate() {
                match machine.step(i, *v, T) {
                    Transition::Open { first_bad_at } => {
                        prop_assert!(!open, "opened twice without closing");
                        open = true;
                        let n = open_after as usize;
                        prop_assert!(i + 1 >= n);
                        prop_assert_eq!(first_bad_at, i + 1 - n);
                        for previous in &values[i + 1 - n..=i] {
                            prop_assert!(previous.is_some_and(|p| p > T.open_above));
                        }
                    }
                    Transition::Close => {
                        prop_assert!(open, "closed without being open");
                        open = false;
                        let n = close_after as usize;
                        let good = values[..=i]
                            .iter()
                            .rev()
                            .filter(|p| p.is_some())
                            .take(n)
                            .all(|p| p.is_some_and(|p| p < T.close_below));
                        prop_assert!(good);
                    }
                    Transition::None => {}
                }
                prop_assert_eq!(open, machine.is_firing());
            }
        }
    }
}

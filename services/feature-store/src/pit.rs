//! Point-in-time lookups over one entity's history: for a time `t`, each feature's latest value with an
//! event time at or before `t` and (with a ttl) no older than `t - ttl`. Rows with the same event time are
//! ordered by created time, then by the order they were written, as the online store orders them.

use crate::schema::{Row, Value};

/// One entity's history, per feature, sorted.
pub struct History {
    /// Per feature: (event time, created time, write order, value), ascending.
    per_feature: Vec<Vec<(i64, i64, usize, Value)>>,
}

impl History {
    /// Indexes `rows` (in the order they were written) for `features` features.
    pub fn new(rows: &[Row], features: usize) -> Self {
        let mut per_feature: Vec<Vec<(i64, i64, usize, Value)>> = vec![Vec::new(); features];
        for (order, row) in rows.iter().enumerate() {
            for (index, value) in &row.values {
                if let Some(list) = per_feature.get_mut(*index as usize) {
                    list.push((row.event_micros, row.created_micros, order, value.clone()));
                }
            }
        }
        for list in &mut per_feature {
            list.sort_by_key(|(event, created, order, _)| (*event, *created, *order));
        }
        Self { per_feature }
    }

    /// Feature `feature`'s value as of `at` and its event time, if there is one within `ttl`.
    pub fn as_of(&self, feature: usize, at: i64, ttl: Option<i64>) -> Option<(&Value, i64)> {
        let list = self.per_feature.get(feature)?;
        let upto = list.partition_point(|(event, ..)| *event <= at);
        let (event, _, _, value) = list.get(upto.checked_sub(1)?)?;
        if ttl.is_some_and(|ttl| *event < at.saturating_sub(ttl)) {
            return None;
        }
        Some((value, *event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Key;
    use rand::{Rng, SeedableRng};

    /// The reference: every row looked at, the winner kept.
    fn brute_force(rows: &[Row], feature: u16, at: i64, ttl: Option<i64>) -> Option<(Value, i64)> {
        let mut best: Option<((i64, i64, usize), Value)> = None;
        for (order, row) in rows.iter().enumerate() {
            if row.event_micros > at || ttl.is_some_and(|t| row.event_micros < at - t) {
                continue;
            }
            for (i, v) in &row.values {
                let rank = (row.event_micros, row.created_micros, order);
                if *i == feature && best.as_ref().is_none_or(|(b, _)| rank > *b) {
                    best = Some((rank, v.clone()));
                }
            }
        }
        best.map(|((event, ..), v)| (v, event))
    }

    /// Random histories with ties (few distinct times), late rows (written out of time order), rows that
    /// carry only some features, and ttl boundaries (queried exactly at `event + ttl`).
    #[test]
    fn as_of_matches_brute_force_on_random_histories() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut checked = 0;
        for _ in 0..2000 {
            let features = 3usize;
            let rows: Vec<Row> = (0..rng.random_range(0..40))
                .map(|_| Row {
                    key: Key::Int(1),
                    event_micros: rng.random_range(0..20) * 10,
                    created_micros: rng.random_range(0..3),
                    values: (0..features as u16)
                        .filter_map(|i| {
                            let value =
                                if rng.random_bool(0.1) { Value::Null } else { Value::Int(rng.random()) };
                            rng.random_bool(0.6).then_some((i, value))
                        })
                        .collect(),
                })
                .collect();
            let history = History::new(&rows, features);
            let ttl = [None, Some(0), Some(30), Some(55)][rng.random_range(0..4)];
            let mut times: Vec<i64> = (0..10).map(|_| rng.random_range(-10..220)).collect();
            times.extend(rows.iter().map(|r| r.event_micros + ttl.unwrap_or(0)));
            for at in times {
                for f in 0..features as u16 {
                    let got = history.as_of(f as usize, at, ttl).map(|(v, e)| (v.clone(), e));
                    assert_eq!(
                        got,
                        brute_force(&rows, f, at, ttl),
                        "feature {f} at {at} ttl {ttl:?}: {rows:?}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 50_000, "{checked}");
    }
}

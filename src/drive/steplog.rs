//! The columns of a steps table, declared once: `steps.parquet` (written by the `tables`
//! layer) and the step log of the public API (read from Python as a dataframe) are both
//! built from [`step_columns`], so the two have the same names, types and codes.

use crate::drive::train::{StepDetail, StepRecord};

/// One column's values, in a form any table library can take.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    U32(Vec<u32>),
    F64(Vec<f64>),
    /// Null where a row has no value (a step without the detail columns).
    OptF64(Vec<Option<f64>>),
    OptBool(Vec<Option<bool>>),
    Str(Vec<&'static str>),
    /// Names (categories) borrowed from the config.
    Name(Vec<String>),
    /// A list per row (empty where a row has no value).
    ListU32(Vec<Vec<u32>>),
}

/// The detail columns' names, in table order (after the base columns).
pub const OUTCOME_COLUMNS: [&str; 4] = ["p_watched", "p_skipped", "p_liked", "p_left"];

/// The steps table: episode, t, user, video, slot, category (its name), response (its
/// name), reward; and, when any row has the user model's detail (a dynamic on, or
/// `output.step_detail`), watch_s, expected_p, expected_reward, satiation, propensity,
/// left, offered, time_s and the four true outcome probabilities.
pub fn step_columns(rows: &[StepRecord], categories: &[String]) -> Vec<(&'static str, Column)> {
    let mut cols = vec![
        ("episode", Column::U32(rows.iter().map(|r| r.episode).collect())),
        ("t", Column::U32(rows.iter().map(|r| r.t).collect())),
        ("user", Column::U32(rows.iter().map(|r| r.user).collect())),
        ("video", Column::U32(rows.iter().map(|r| r.video).collect())),
        ("slot", Column::U32(rows.iter().map(|r| r.slot).collect())),
        ("category", Column::Name(rows.iter().map(|r| categories[r.category as usize].clone()).collect())),
        ("response", Column::Str(rows.iter().map(|r| r.response.name()).collect())),
        ("reward", Column::F64(rows.iter().map(|r| r.reward).collect())),
    ];
    if rows.iter().any(|r| r.detail.is_some()) {
        let d = |f: fn(&StepDetail) -> f64| Column::OptF64(rows.iter().map(|r| r.detail.as_ref().map(|d| f(d))).collect());
        cols.push(("watch_s", d(|d| d.watch_s)));
        cols.push(("expected_p", d(|d| d.expected_p)));
        cols.push(("expected_reward", d(|d| d.expected_reward)));
        cols.push(("satiation", d(|d| d.satiation)));
        cols.push(("propensity", d(|d| d.propensity)));
        // Only where some propensity is an estimate: the tables of every other run keep
        // their columns.
        if rows.iter().any(|r| r.detail.as_ref().is_some_and(|d| d.propensity_estimated)) {
            cols.push((
                "propensity_estimated",
                Column::OptBool(rows.iter().map(|r| r.detail.as_ref().map(|d| d.propensity_estimated)).collect()),
            ));
        }
        cols.push(("left", Column::OptBool(rows.iter().map(|r| r.detail.as_ref().map(|d| d.left)).collect())));
        cols.push((
            "offered",
            Column::ListU32(rows.iter().map(|r| r.detail.as_ref().map_or_else(Vec::new, |d| d.offered.clone())).collect()),
        ));
        cols.push(("time_s", d(|d| d.time_s)));
        for (k, name) in OUTCOME_COLUMNS.into_iter().enumerate() {
            cols.push((name, Column::OptF64(rows.iter().map(|r| r.detail.as_ref().map(|d| d.outcome_p[k])).collect())));
        }
    }
    cols
}

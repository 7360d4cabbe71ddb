//! Typed rows -> polars DataFrames -> CSV and Parquet files.

use std::fs::File;
use std::path::Path;

use polars::prelude::*;

use crate::config::Checked;
use crate::drive::train::{EpisodeRecord, StepRecord};
use crate::world::World;
use crate::{Error, Result};

pub(crate) fn table_err<'a>(action: &'static str, path: &'a Path) -> impl Fn(PolarsError) -> Error + 'a {
    move |source| Error::Table { action, path: path.to_path_buf(), source }
}

/// The episodes table: episode, user, steps, return, mean_loss, epsilon and, when
/// `wall_time` is on, wall_s.
pub fn episodes_frame(rows: &[EpisodeRecord], wall_time: bool) -> PolarsResult<DataFrame> {
    let mut df = df!(
        "episode" => rows.iter().map(|r| r.episode).collect::<Vec<_>>(),
        "user" => rows.iter().map(|r| r.user).collect::<Vec<_>>(),
        "steps" => rows.iter().map(|r| r.steps).collect::<Vec<_>>(),
        "return" => rows.iter().map(|r| r.episode_return).collect::<Vec<_>>(),
        "mean_loss" => rows.iter().map(|r| r.mean_loss).collect::<Vec<_>>(),
        "epsilon" => rows.iter().map(|r| r.epsilon).collect::<Vec<_>>(),
    )?;
    if wall_time {
        df.with_column(Column::new("wall_s".into(), rows.iter().map(|r| r.wall_s).collect::<Vec<_>>()))?;
    }
    Ok(df)
}

/// The steps table: the columns of [`crate::drive::steplog::step_columns`].
pub fn steps_frame(rows: &[StepRecord], config: &Checked) -> PolarsResult<DataFrame> {
    use crate::drive::steplog::{step_columns, Column as C};
    let columns: Vec<Column> = step_columns(rows, &config.world.categories)
        .into_iter()
        .map(|(name, values)| match values {
            C::U32(v) => Column::new(name.into(), v),
            C::F64(v) => Column::new(name.into(), v),
            C::OptF64(v) => Column::new(name.into(), v),
            C::OptBool(v) => Column::new(name.into(), v),
            C::Str(v) => Column::new(name.into(), v),
            C::Name(v) => Column::new(name.into(), v),
            C::ListU32(v) => Column::new(name.into(), v.iter().map(|l| Series::new("".into(), &l[..])).collect::<Vec<Series>>()),
        })
        .collect();
    DataFrame::new(rows.len(), columns)
}

/// sessions.parquet of a population run: one row per session and policy.
pub fn sessions_frame(pops: &[crate::drive::calendar::Population]) -> PolarsResult<DataFrame> {
    let rows: Vec<(&str, &crate::drive::calendar::SessionRow)> =
        pops.iter().flat_map(|p| p.sessions.iter().map(move |s| (p.policy.name(), s))).collect();
    df!(
        "policy" => rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        "user" => rows.iter().map(|r| r.1.user).collect::<Vec<_>>(),
        "session" => rows.iter().map(|r| r.1.session).collect::<Vec<_>>(),
        "start_s" => rows.iter().map(|r| r.1.start_s).collect::<Vec<_>>(),
        "end_s" => rows.iter().map(|r| r.1.end_s).collect::<Vec<_>>(),
        "day" => rows.iter().map(|r| crate::drive::calendar::day_of(r.1.start_s) as u32).collect::<Vec<_>>(),
        "hour" => rows.iter().map(|r| crate::drive::calendar::hour_of(r.1.start_s)).collect::<Vec<_>>(),
        "steps" => rows.iter().map(|r| r.1.steps).collect::<Vec<_>>(),
        "watch_s" => rows.iter().map(|r| r.1.watch_s).collect::<Vec<_>>(),
        "reward" => rows.iter().map(|r| r.1.reward).collect::<Vec<_>>(),
        "likes" => rows.iter().map(|r| r.1.likes).collect::<Vec<_>>(),
        "skips" => rows.iter().map(|r| r.1.skips).collect::<Vec<_>>(),
        "gap_s" => rows.iter().map(|r| r.1.gap_s).collect::<Vec<_>>(),
        "reactivated" => rows.iter().map(|r| r.1.reactivated).collect::<Vec<_>>(),
    )
}

/// days.parquet and days.csv of a population run: per policy and day, the daily figures
/// (`daily`, one per population), the share of all users active and the day-0 cohort's
/// retention.
pub fn days_frame(
    pops: &[crate::drive::calendar::Population],
    daily: &[crate::drive::calendar::Daily],
) -> PolarsResult<DataFrame> {
    let mut rows = Vec::new();
    for (p, d) in pops.iter().zip(daily) {
        let share = d.share_active();
        for (k, day) in d.rows.iter().enumerate() {
            rows.push((p.policy.name(), day, share[k], d.retention.get(k).copied()));
        }
    }
    df!(
        "policy" => rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        "day" => rows.iter().map(|r| r.1.day).collect::<Vec<_>>(),
        "active_users" => rows.iter().map(|r| r.1.active_users).collect::<Vec<_>>(),
        "sessions" => rows.iter().map(|r| r.1.sessions).collect::<Vec<_>>(),
        "watch_s" => rows.iter().map(|r| r.1.watch_s).collect::<Vec<_>>(),
        "reward" => rows.iter().map(|r| r.1.reward).collect::<Vec<_>>(),
        "churned" => rows.iter().map(|r| r.1.churned).collect::<Vec<_>>(),
        "reactivated" => rows.iter().map(|r| r.1.reactivated).collect::<Vec<_>>(),
        "share_active" => rows.iter().map(|r| r.2).collect::<Vec<_>>(),
        "cohort_retention" => rows.iter().map(|r| r.3).collect::<Vec<_>>(),
        "users" => rows.iter().map(|r| r.1.users).collect::<Vec<_>>(),
        "new_users" => rows.iter().map(|r| r.1.new_users).collect::<Vec<_>>(),
        "uploads" => rows.iter().map(|r| r.1.uploads).collect::<Vec<_>>(),
        "views" => rows.iter().map(|r| r.1.views).collect::<Vec<_>>(),
        "new_video_share" => rows.iter().map(|r| r.1.new_video_share).collect::<Vec<_>>(),
        "exposure_gini" => rows.iter().map(|r| r.1.exposure_gini).collect::<Vec<_>>(),
        "creator_earnings" => rows.iter().map(|r| r.1.creator_earnings).collect::<Vec<_>>(),
    )
}

/// calendar_training.csv: per population run of learning across sessions, its figures.
pub fn calendar_training_frame(runs: &[crate::drive::calendar::CalendarRun]) -> PolarsResult<DataFrame> {
    df!(
        "run" => runs.iter().map(|r| r.run).collect::<Vec<_>>(),
        "sessions_per_user_day" => runs.iter().map(|r| r.sessions_per_user_day).collect::<Vec<_>>(),
        "watch_s_per_user" => runs.iter().map(|r| r.watch_s_per_user).collect::<Vec<_>>(),
        "reward_per_session" => runs.iter().map(|r| r.reward_per_session).collect::<Vec<_>>(),
        "day7_retention" => runs.iter().map(|r| r.day7_retention).collect::<Vec<_>>(),
        "steps" => runs.iter().map(|r| r.steps).collect::<Vec<_>>(),
        "updates" => runs.iter().map(|r| r.updates).collect::<Vec<_>>(),
        "mean_loss" => runs.iter().map(|r| r.mean_loss).collect::<Vec<_>>(),
        "epsilon" => runs.iter().map(|r| r.epsilon).collect::<Vec<_>>(),
    )
}

/// cohorts.csv of a population run: per policy and cohort (the day-0 cohort, then each
/// day's sign-ups), its size and its retention 1, 7 and 28 days on.
pub fn cohorts_frame(
    pops: &[crate::drive::calendar::Population],
    daily: &[crate::drive::calendar::Daily],
) -> PolarsResult<DataFrame> {
    let rows: Vec<(&str, &crate::drive::calendar::CohortRow)> =
        pops.iter().zip(daily).flat_map(|(p, d)| d.cohorts.iter().map(move |c| (p.policy.name(), c))).collect();
    df!(
        "policy" => rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        "signup_day" => rows.iter().map(|r| r.1.signup_day).collect::<Vec<_>>(),
        "users" => rows.iter().map(|r| r.1.users).collect::<Vec<_>>(),
        "day1_retention" => rows.iter().map(|r| r.1.day1).collect::<Vec<_>>(),
        "day7_retention" => rows.iter().map(|r| r.1.day7).collect::<Vec<_>>(),
        "day28_retention" => rows.iter().map(|r| r.1.day28).collect::<Vec<_>>(),
    )
}

/// creators.parquet of a population run: per policy, day and creator, the uploads, views,
/// seconds watched and earnings (views x `pay_per_view`).
pub fn creators_frame(pops: &[crate::drive::calendar::Population], pay_per_view: f64) -> PolarsResult<DataFrame> {
    let mut rows: Vec<(&str, u32, u32, u32, u32, f64)> = Vec::new();
    for p in pops {
        let c = &p.creators;
        for d in 0..p.days {
            for k in 0..c.n {
                let i = d * c.n + k;
                rows.push((p.policy.name(), d as u32, k as u32, c.uploads[i], c.views[i], c.watch_s[i]));
            }
        }
    }
    df!(
        "policy" => rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        "day" => rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        "creator" => rows.iter().map(|r| r.2).collect::<Vec<_>>(),
        "uploads" => rows.iter().map(|r| r.3).collect::<Vec<_>>(),
        "views" => rows.iter().map(|r| r.4).collect::<Vec<_>>(),
        "watch_s" => rows.iter().map(|r| r.5).collect::<Vec<_>>(),
        "earnings" => rows.iter().map(|r| r.4 as f64 * pay_per_view).collect::<Vec<_>>(),
    )
}

/// user_weeks.parquet of a population run: per policy, user and whole week, the activity
/// aggregates and the week-ahead churn label.
pub fn user_weeks_frame(pops: &[crate::drive::calendar::Population]) -> PolarsResult<DataFrame> {
    let rows: Vec<(&str, crate::drive::calendar::UserWeek)> =
        pops.iter().flat_map(|p| crate::drive::calendar::user_weeks(p).into_iter().map(move |w| (p.policy.name(), w))).collect();
    df!(
        "policy" => rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        "user" => rows.iter().map(|r| r.1.user).collect::<Vec<_>>(),
        "week" => rows.iter().map(|r| r.1.week).collect::<Vec<_>>(),
        "sessions" => rows.iter().map(|r| r.1.sessions).collect::<Vec<_>>(),
        "active_days" => rows.iter().map(|r| r.1.active_days).collect::<Vec<_>>(),
        "watch_s" => rows.iter().map(|r| r.1.watch_s).collect::<Vec<_>>(),
        "likes" => rows.iter().map(|r| r.1.likes).collect::<Vec<_>>(),
        "skips" => rows.iter().map(|r| r.1.skips).collect::<Vec<_>>(),
        "days_since_last_visit" => rows.iter().map(|r| r.1.days_since_last_visit).collect::<Vec<_>>(),
        "inactive_next_week" => rows.iter().map(|r| r.1.inactive_next_week).collect::<Vec<_>>(),
    )
}

/// users.csv of `fypsim world`.
pub fn users_frame(world: &World, config: &Checked) -> PolarsResult<DataFrame> {
    let w = &config.world;
    let u = &world.users;
    df!(
        "user" => u.iter().map(|x| x.id).collect::<Vec<_>>(),
        "age" => u.iter().map(|x| x.age).collect::<Vec<_>>(),
        "gender" => u.iter().map(|x| w.genders[x.gender as usize].as_str()).collect::<Vec<_>>(),
        "region" => u.iter().map(|x| w.regions[x.region as usize].as_str()).collect::<Vec<_>>(),
        "interest_1" => u.iter().map(|x| w.categories[x.interests[0] as usize].as_str()).collect::<Vec<_>>(),
        "interest_2" => u.iter().map(|x| w.categories[x.interests[1] as usize].as_str()).collect::<Vec<_>>(),
    )
}

/// videos.csv of `fypsim world` (views after the logged history).
pub fn videos_frame(world: &World, config: &Checked) -> PolarsResult<DataFrame> {
    let v = &world.videos;
    df!(
        "video" => v.iter().map(|x| x.id).collect::<Vec<_>>(),
        "category" => v.iter().map(|x| config.world.categories[x.category as usize].as_str()).collect::<Vec<_>>(),
        "creator" => v.iter().map(|x| x.creator).collect::<Vec<_>>(),
        "duration_s" => v.iter().map(|x| x.duration_s).collect::<Vec<_>>(),
        "views" => v.iter().map(|x| x.views).collect::<Vec<_>>(),
    )
}

/// interactions.csv of `fypsim world`: the logged history.
pub fn interactions_frame(world: &World) -> PolarsResult<DataFrame> {
    let h = &world.history;
    df!(
        "user" => h.iter().map(|x| x.user).collect::<Vec<_>>(),
        "video" => h.iter().map(|x| x.video).collect::<Vec<_>>(),
        "session" => h.iter().map(|x| x.session).collect::<Vec<_>>(),
        "action" => h.iter().map(|x| x.action.name()).collect::<Vec<_>>(),
        "score" => h.iter().map(|x| x.score).collect::<Vec<_>>(),
        "timestamp" => h.iter().map(|x| x.timestamp).collect::<Vec<_>>(),
    )
}

/// Writes a frame as CSV with a header.
pub fn write_csv(df: &mut DataFrame, path: &Path) -> Result<()> {
    let file = File::create(path).map_err(Error::io("create", path))?;
    CsvWriter::new(file).include_header(true).finish(df).map_err(table_err("write", path))
}

/// Writes a frame as Parquet (zstd).
pub fn write_parquet(df: &mut DataFrame, path: &Path) -> Result<()> {
    let file = File::create(path).map_err(Error::io("create", path))?;
    ParquetWriter::new(file).finish(df).map(|_| ()).map_err(table_err("write", path))
}

/// Reads a CSV file with a header.
pub fn read_csv(path: &Path) -> Result<DataFrame> {
    CsvReadOptions::default()
        .with_has_header(true)
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .and_then(|r| r.finish())
        .map_err(table_err("read", path))
}

/// Reads a Parquet file.
pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    let file = File::open(path).map_err(Error::io("open", path))?;
    ParquetReader::new(file).finish().map_err(table_err("read", path))
}

/// Wraps a frame-building error with the file it was meant for.
pub fn frame<T>(r: PolarsResult<T>, path: &Path) -> Result<T> {
    r.map_err(table_err("build", path))
}

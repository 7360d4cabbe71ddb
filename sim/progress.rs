//! Progress rendering: the bars and lines shown while runs, sweeps and `learn` work.

use fypsim::drive::train::EpisodeRecord;
use fypsim::experiment::run::RunObserver;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// The progress display of `fypsim learn`: a bar per epoch, a line per finished epoch.
pub(crate) struct LearnProgress {
    pub(crate) bar: Option<ProgressBar>,
    pub(crate) quiet: bool,
}

impl fypsim::learn::LearnObserver for LearnProgress {
    fn stage(&mut self, message: &str) {
        if !self.quiet {
            eprintln!("fypsim: {message}");
        }
    }

    fn epoch_started(&mut self, epoch: usize, epochs: usize, batches: usize) {
        let bar = ProgressBar::new(batches as u64);
        if self.quiet || !std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} epoch {epoch}/{epochs} [{{bar:30.cyan/blue}}] batch {{pos}}/{{len}} {{msg}} [{{elapsed_precise}}]"
            ))
            .expect("a valid template")
            .progress_chars("=> "),
        );
        self.bar = Some(bar);
    }

    fn batch(&mut self, loss: f64) {
        if let Some(b) = &self.bar {
            b.set_message(format!("| loss {loss:.4}"));
            b.inc(1);
        }
    }

    fn epoch_done(&mut self, r: &fypsim::learn::EpochRow) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if !self.quiet {
            eprintln!(
                "fypsim: {} epoch {}: training loss {:.4}, validation loss {:.4}, validation metric {:.4}{}",
                r.model,
                r.epoch,
                r.train_loss,
                r.valid_loss,
                r.valid_metric,
                if r.best { " (best so far)" } else { "" }
            );
        }
    }
}

/// The progress display of a run: a bar with episode, mean return, epsilon and loss.
pub(crate) struct Progress {
    pub(crate) bar: Option<ProgressBar>,
    /// The last `window` returns.
    pub(crate) returns: std::collections::VecDeque<f64>,
    pub(crate) window: usize,
    pub(crate) quiet: bool,
}

impl Progress {
    pub(crate) fn new(quiet: bool, window: usize) -> Progress {
        Progress { bar: None, returns: std::collections::VecDeque::new(), window, quiet }
    }
}

impl RunObserver for Progress {
    fn stage(&mut self, message: &str) {
        if !self.quiet {
            eprintln!("fypsim: {message}");
        }
    }

    fn training_started(&mut self, episodes: usize, done: usize) {
        let bar = ProgressBar::new(episodes as u64);
        bar.set_position(done as u64);
        if self.quiet || !std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} training [{bar:30.cyan/blue}] episode {pos}/{len} {msg} [{elapsed_precise}, eta {eta}]",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bar = Some(bar);
        if !self.quiet {
            eprintln!("fypsim: training for {} episodes", episodes - done);
        }
    }

    fn episode(&mut self, r: &EpisodeRecord) {
        if self.returns.len() == self.window {
            self.returns.pop_front();
        }
        self.returns.push_back(r.episode_return);
        let avg = self.returns.iter().sum::<f64>() / self.returns.len() as f64;
        let loss = r.mean_loss.map_or("-".to_string(), |l| format!("{l:.4}"));
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "| return {:.2} (avg {}: {:.2}) | epsilon {:.3} | loss {loss}",
                r.episode_return, self.window, avg, r.epsilon
            ));
            bar.inc(1);
        }
        // Without a terminal, a plain line every tenth of the run.
        let n = self.bar.as_ref().map_or(0, |b| b.length().unwrap_or(0));
        if !self.quiet && !std::io::stderr().is_terminal() && n >= 10 && (r.episode as u64 + 1).is_multiple_of(n / 10) {
            eprintln!(
                "fypsim: episode {}/{n}: mean return (last {}) {:.2}, epsilon {:.3}, loss {loss}",
                r.episode + 1,
                self.window,
                avg,
                r.epsilon
            );
        }
    }

    fn training_finished(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn calendar_started(&mut self, policy: &str, days: usize) {
        let bar = ProgressBar::new(days as u64);
        if self.quiet || !std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{bar:30.cyan/blue}] day {pos}/{len} [{elapsed_precise}, eta {eta}]")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_message(format!("population under {policy}"));
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bar = Some(bar);
        if !self.quiet {
            eprintln!("fypsim: the whole population lives {days} days under {policy}");
        }
    }

    fn calendar_day(&mut self, day: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(day as u64);
            // Without a terminal, a plain line every week.
            if !self.quiet && !std::io::stderr().is_terminal() && day.is_multiple_of(7) {
                eprintln!("fypsim: day {day}/{} done after {:.0} s", bar.length().unwrap_or(0), bar.elapsed().as_secs_f64());
            }
        }
    }

    fn calendar_finished(&mut self) {
        self.training_finished();
    }
}

/// The progress of many runs at once (a sweep, a multi-seed run): training episodes summed
/// over the runs, as a bar on a terminal and, without one, a line at every tenth.
pub(crate) struct EpisodeBar {
    pub(crate) bar: ProgressBar,
    pub(crate) total: u64,
    pub(crate) done: std::sync::atomic::AtomicU64,
    /// The last tenth reported by a line.
    pub(crate) tenth: std::sync::atomic::AtomicU64,
    pub(crate) lines: bool,
    pub(crate) quiet: bool,
    pub(crate) started: Instant,
}

impl EpisodeBar {
    pub(crate) fn new(total: u64, runs: &str, quiet: bool) -> EpisodeBar {
        let bar = ProgressBar::new(total);
        let terminal = std::io::stderr().is_terminal();
        if quiet || !terminal {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} {runs} [{{bar:30.cyan/blue}}] {{pos}}/{{len}} training episodes [{{elapsed_precise}}, eta {{eta}}]"
            ))
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        EpisodeBar {
            bar,
            total: total.max(1),
            done: Default::default(),
            tenth: Default::default(),
            lines: !quiet && !terminal,
            quiet,
            started: Instant::now(),
        }
    }

    /// `n` more training episodes are done.
    pub(crate) fn add(&self, n: u64) {
        use std::sync::atomic::Ordering::SeqCst;
        self.bar.inc(n);
        let done = self.done.fetch_add(n, SeqCst) + n;
        let tenth = (done * 10 / self.total).min(10);
        if self.lines && self.tenth.fetch_max(tenth, SeqCst) < tenth {
            eprintln!(
                "fypsim: {}% of the training episodes done ({done} of {}) after {:.0} s",
                tenth * 10,
                self.total,
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    /// Prints a line above the bar.
    pub(crate) fn line(&self, text: &str) {
        if !self.quiet {
            self.bar.suspend(|| eprintln!("{text}"));
        }
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

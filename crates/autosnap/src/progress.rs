//! Progress while waiting on AWS: a bar on a terminal, periodic log lines
//! otherwise (cron, CI, pipes).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use autosnap_aws::ami::StoreTask;
use autosnap_aws::WaitObserver;
use autosnap_core::ami::ImageDetails;
use autosnap_core::model::{Snapshot, Volume};
use indicatif::{ProgressBar, ProgressStyle};

pub struct WaitProgress {
    bar: Option<ProgressBar>,
    last_line: Mutex<String>,
}

impl WaitProgress {
    /// `allowed` is false with `--no-progress` or `-q`.
    pub fn new(what: &str, allowed: bool) -> WaitProgress {
        let bar = (allowed && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(100);
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos:>3}% ({elapsed})")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_message(what.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        WaitProgress {
            bar,
            last_line: Mutex::new(String::new()),
        }
    }

    fn report(&self, percent: u64, line: String) {
        match &self.bar {
            Some(bar) => bar.set_position(percent),
            None => {
                // One log line per change, not per poll.
                let mut last = self.last_line.lock().expect("not poisoned");
                if *last != line {
                    tracing::info!("{line}");
                    *last = line;
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for WaitProgress {
    fn drop(&mut self) {
        self.finish();
    }
}

impl WaitObserver for WaitProgress {
    fn snapshots_polled(&self, snapshots: &[Snapshot]) {
        if snapshots.is_empty() {
            return;
        }
        let done = snapshots.iter().filter(|s| s.is_completed()).count();
        let sum: u64 = snapshots
            .iter()
            .map(|s| {
                if s.is_completed() {
                    100
                } else {
                    u64::from(s.progress_percent().unwrap_or(0))
                }
            })
            .sum();
        let percent = sum / snapshots.len() as u64;
        self.report(
            percent,
            format!(
                "waiting for snapshots: {done}/{} completed, {percent}% overall",
                snapshots.len()
            ),
        );
    }

    fn volume_polled(&self, volume: &Volume) {
        let percent = if volume.state == "available" { 100 } else { 0 };
        self.report(
            percent,
            format!("waiting for volume {}: {}", volume.volume_id, volume.state),
        );
    }

    fn image_polled(&self, image: &ImageDetails) {
        let percent = if image.state == "available" { 100 } else { 0 };
        self.report(
            percent,
            format!("waiting for AMI {}: {}", image.image_id, image.state),
        );
    }

    fn store_task_polled(&self, task: &StoreTask) {
        let p = task.progress_percent.unwrap_or(0).clamp(0, 100);
        self.report(
            p as u64,
            format!("storing AMI {} in S3: {} {p}%", task.image_id, task.state),
        );
    }
}

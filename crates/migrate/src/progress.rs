//! Progress on stderr while a migration runs: an indicatif bar on a terminal (objects, bytes,
//! rate, errors), else one line every five seconds for logs.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::Progress;
use crate::copy::Stats;

pub struct Shown {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Shown {
    pub async fn finish(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

fn line(s: &Stats, secs: f64) -> String {
    let bytes = s.bytes.load(Ordering::Relaxed);
    format!(
        "{} listed, {} copied ({:.1} MiB, {:.1} MiB/s), {} unchanged, {} deleted, {} failed",
        s.listed.load(Ordering::Relaxed),
        s.copied.load(Ordering::Relaxed),
        bytes as f64 / 1048576.0,
        bytes as f64 / 1048576.0 / secs.max(0.001),
        s.skipped.load(Ordering::Relaxed),
        s.deleted.load(Ordering::Relaxed),
        s.failed.load(Ordering::Relaxed) + s.problems.load(Ordering::Relaxed),
    )
}

pub fn show(mode: Progress, stats: Arc<Stats>) -> Shown {
    if mode == Progress::Off {
        return Shown {
            stop: None,
            task: None,
        };
    }
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let start = std::time::Instant::now();
        let bar = (mode == Progress::Bar).then(|| {
            let b = indicatif::ProgressBar::new(0);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({binary_bytes_per_sec}, ETA {eta}) {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        let tick = if bar.is_some() {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        loop {
            tokio::select! {
                _ = &mut rx => break,
                _ = tokio::time::sleep(tick) => {}
            }
            let secs = start.elapsed().as_secs_f64();
            match &bar {
                Some(b) => {
                    b.set_length(stats.planned_bytes.load(Ordering::Relaxed));
                    b.set_position(stats.bytes.load(Ordering::Relaxed));
                    b.set_message(format!(
                        "{} objects copied, {} unchanged, {} errors",
                        stats.copied.load(Ordering::Relaxed),
                        stats.skipped.load(Ordering::Relaxed),
                        stats.failed.load(Ordering::Relaxed)
                            + stats.problems.load(Ordering::Relaxed)
                    ));
                }
                None => eprintln!("migrate: {}", line(&stats, secs)),
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
    });
    Shown {
        stop: Some(tx),
        task: Some(task),
    }
}

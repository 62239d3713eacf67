//! Memory of the process under load, sampled from /proc/PID/status.

use std::time::Duration;

#[derive(Clone, Debug, Default)]
pub struct RssStats {
    pub pid: u32,
    pub samples: u64,
    /// Largest VmRSS sampled (kB).
    pub max_rss_kb: u64,
    /// Mean of the VmRSS samples (kB).
    pub mean_rss_kb: f64,
    /// Last VmRSS (kB).
    pub last_rss_kb: u64,
    /// VmHWM (peak RSS as the kernel counts it) at the last sample (kB).
    pub hwm_kb: u64,
    /// The process was gone at some sample.
    pub exited: bool,
}

/// (VmRSS, VmHWM) in kB.
pub fn read(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Samples every `every` until `stop` flips; returns the statistics.
pub async fn sample(
    pid: u32,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> RssStats {
    let mut s = RssStats {
        pid,
        ..RssStats::default()
    };
    let mut sum = 0f64;
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {}
        }
        match read(pid) {
            Some((rss, hwm)) => {
                s.samples += 1;
                s.max_rss_kb = s.max_rss_kb.max(rss);
                s.last_rss_kb = rss;
                s.hwm_kb = hwm;
                sum += rss as f64;
                s.mean_rss_kb = sum / s.samples as f64;
            }
            None => s.exited = true,
        }
        if *stop.borrow() || s.exited {
            return s;
        }
    }
}

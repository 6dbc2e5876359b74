//! The kernel profile: which kernels ran, how often, and on a device for how long.
//!
//! Every [`Gpu::launch`](super::Gpu::launch) and [`Gpu::gemm`](super::Gpu::gemm) (named
//! `gemm_<operands>_<output>`, e.g. `gemm_bf16_f32`) is recorded, after it was launched:
//! - by each live [`Recorder`] of the launching thread (tests assert through these which
//!   kernels an op ran);
//! - by the process-wide profile once [`enable`]d (the CLI's `--profile`), from any thread;
//!   on a CUDA device each launch is then also timed between two events on the stream,
//!   read back only in [`report`], so the host never waits for a timing.
//!
//! With no Recorder on the thread and the profile off, a launch pays one thread-local read
//! and one relaxed atomic load.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::Result;

/// Kernel names with their launch counts, in order of first launch.
type Counts = Vec<(String, usize)>;

thread_local! {
    static RECORDERS: RefCell<Vec<Rc<RefCell<Counts>>>> = const { RefCell::new(Vec::new()) };
    static LIVE_RECORDERS: Cell<usize> = const { Cell::new(0) };
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static PROFILE: Mutex<Profile> = Mutex::new(Profile {
    rows: Vec::new(),
    pending: VecDeque::new(),
    timing_errors: 0,
});

/// Timings not read yet, past which the ones already finished are folded in at each launch
/// (so a long profiled run does not hold millions of events).
const PENDING_FOLD: usize = 4096;

/// Records the kernels launched on the current thread while alive (for tests).
pub struct Recorder {
    counts: Rc<RefCell<Counts>>,
}

impl Recorder {
    pub fn start() -> Recorder {
        let counts = Rc::new(RefCell::new(Vec::new()));
        RECORDERS.with(|r| r.borrow_mut().push(counts.clone()));
        LIVE_RECORDERS.with(|n| n.set(n.get() + 1));
        Recorder { counts }
    }

    /// Launches of the kernel named exactly `name` since start.
    pub fn launches(&self, name: &str) -> usize {
        self.counts
            .borrow()
            .iter()
            .find(|(k, _)| k == name)
            .map_or(0, |&(_, n)| n)
    }

    /// Every kernel launched since start with its count, in order of first launch.
    pub fn kernels(&self) -> Vec<(String, usize)> {
        self.counts.borrow().clone()
    }

    /// Total launches since start.
    pub fn total(&self) -> usize {
        self.counts.borrow().iter().map(|&(_, n)| n).sum()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        RECORDERS.with(|r| r.borrow_mut().retain(|c| !Rc::ptr_eq(c, &self.counts)));
        LIVE_RECORDERS.with(|n| n.set(n.get() - 1));
    }
}

/// Turns on the process-wide profile (the CLI's --profile): every launch on any thread is
/// counted; on a CUDA device each launch is also timed between two CUDA events.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether a launch on this thread is to be recorded at all.
pub(super) fn recording() -> bool {
    LIVE_RECORDERS.with(|n| n.get() > 0) || is_enabled()
}

/// A launch's device time, readable once the device has run it.
pub(super) trait Timing: Send {
    /// Whether the launch has finished (never waits).
    fn finished(&self) -> bool;
    /// Milliseconds between the events around the launch (waits for the launch).
    fn elapsed_ms(&self) -> Result<f64>;
}

/// Records one launch of `kernel`, after it was launched; `device` names the GPU and
/// `timing` times the launch when the profile is enabled on a device.
pub(super) fn record(
    kernel: &str,
    device: impl FnOnce() -> String,
    timing: Option<Box<dyn Timing>>,
) {
    if LIVE_RECORDERS.with(|n| n.get() > 0) {
        RECORDERS.with(|recorders| {
            for counts in recorders.borrow().iter() {
                let mut counts = counts.borrow_mut();
                match counts.iter_mut().find(|(k, _)| k == kernel) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((kernel.to_string(), 1)),
                }
            }
        });
    }
    if is_enabled() {
        let device = device();
        let mut profile = PROFILE.lock().expect("profile lock");
        let row = profile.row(&device, kernel);
        profile.rows[row].launches += 1;
        if let Some(timing) = timing {
            profile.pending.push_back((row, timing));
            if profile.pending.len() > PENDING_FOLD {
                profile.fold(false);
            }
        }
    }
}

/// The process-wide profile so far (waits for the device to finish timed launches); None
/// when not enabled.
pub fn report() -> Option<ProfileReport> {
    if !is_enabled() {
        return None;
    }
    let mut profile = PROFILE.lock().expect("profile lock");
    profile.fold(true);
    Some(ProfileReport {
        kernels: profile.rows.clone(),
        timing_errors: profile.timing_errors,
    })
}

struct Profile {
    rows: Vec<KernelProfile>,
    /// Timed launches not read yet, in launch order, with their row.
    pending: VecDeque<(usize, Box<dyn Timing>)>,
    timing_errors: usize,
}

impl Profile {
    fn row(&mut self, device: &str, kernel: &str) -> usize {
        if let Some(i) = self
            .rows
            .iter()
            .position(|r| r.name == kernel && r.device == device)
        {
            return i;
        }
        self.rows.push(KernelProfile {
            name: kernel.to_string(),
            device: device.to_string(),
            launches: 0,
            device_ms: None,
        });
        self.rows.len() - 1
    }

    /// Adds the pending timings to their rows: every one when `wait`, otherwise those of
    /// launches already finished (one stream runs them in order, so the finished ones are a
    /// prefix).
    fn fold(&mut self, wait: bool) {
        while let Some((_, timing)) = self.pending.front() {
            if !wait && !timing.finished() {
                break;
            }
            let (row, timing) = self.pending.pop_front().expect("a front element");
            match timing.elapsed_ms() {
                Ok(ms) => *self.rows[row].device_ms.get_or_insert(0.0) += ms,
                Err(_) => self.timing_errors += 1,
            }
        }
    }
}

/// One kernel on one GPU in the profile.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelProfile {
    pub name: String,
    /// The GPU it ran on, as [`Gpu::describe`](super::Gpu::describe) names it.
    pub device: String,
    pub launches: usize,
    /// Total device time of its launches; None when untimed (the emulator).
    pub device_ms: Option<f64>,
}

/// The process-wide profile at one moment: per kernel (and GPU), its launches and device
/// time. Displays as an aligned table sorted by time, or by count when untimed.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileReport {
    kernels: Vec<KernelProfile>,
    timing_errors: usize,
}

impl ProfileReport {
    /// The kernels by total device time (untimed ones after, by launches), then by name.
    pub fn kernels(&self) -> Vec<&KernelProfile> {
        let mut rows: Vec<&KernelProfile> = self.kernels.iter().collect();
        rows.sort_by(|a, b| {
            let time = |r: &KernelProfile| r.device_ms.unwrap_or(f64::NEG_INFINITY);
            time(b)
                .total_cmp(&time(a))
                .then(b.launches.cmp(&a.launches))
                .then(a.name.cmp(&b.name))
                .then(a.device.cmp(&b.device))
        });
        rows
    }

    /// The GPUs that ran kernels, in order of their first launch.
    pub fn devices(&self) -> Vec<&str> {
        let mut devices: Vec<&str> = Vec::new();
        for r in &self.kernels {
            if !devices.contains(&r.device.as_str()) {
                devices.push(&r.device);
            }
        }
        devices
    }

    pub fn total_launches(&self) -> usize {
        self.kernels.iter().map(|r| r.launches).sum()
    }

    /// Total device time; None when nothing was timed.
    pub fn total_ms(&self) -> Option<f64> {
        self.kernels
            .iter()
            .filter_map(|r| r.device_ms)
            .reduce(|a, b| a + b)
    }
}

impl fmt::Display for ProfileReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let devices = self.devices();
        if devices.is_empty() {
            return write!(
                f,
                "kernel profile: no GPU kernel ran (the work ran on the CPU)"
            );
        }
        writeln!(f, "kernel profile on {}", devices.join(", "))?;
        let total_ms = self.total_ms();
        let total_launches = self.total_launches();
        // Columns: the device only when there are several, the times only when timed.
        let mut header = vec!["kernel"];
        if devices.len() > 1 {
            header.push("device");
        }
        header.push("launches");
        if total_ms.is_some() {
            header.extend(["total ms", "mean us"]);
        }
        header.push("share");
        let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
        for r in self.kernels() {
            let mut line = vec![r.name.clone()];
            if devices.len() > 1 {
                line.push(r.device.clone());
            }
            line.push(r.launches.to_string());
            match total_ms {
                Some(total) => {
                    let ms = r.device_ms;
                    line.push(ms.map_or("-".into(), |v| format!("{v:.3}")));
                    line.push(ms.map_or("-".into(), |v| {
                        format!("{:.1}", v * 1e3 / r.launches as f64)
                    }));
                    line.push(ms.map_or("-".into(), |v| percent(v / total)));
                }
                None => line.push(percent(r.launches as f64 / total_launches as f64)),
            }
            table.push(line);
        }
        let mut total = vec!["total".to_string()];
        if devices.len() > 1 {
            total.push(String::new());
        }
        total.push(total_launches.to_string());
        if let Some(ms) = total_ms {
            total.push(format!("{ms:.3}"));
        }
        table.push(total);
        let mut widths = vec![0usize; header.len()];
        for line in &table {
            for (w, cell) in widths.iter_mut().zip(line) {
                *w = (*w).max(cell.len());
            }
        }
        // Names and devices left-aligned, numbers right-aligned.
        let text_columns = if devices.len() > 1 { 2 } else { 1 };
        for line in &table {
            let mut out = String::new();
            for (i, (cell, &w)) in line.iter().zip(&widths).enumerate() {
                if i > 0 {
                    out.push_str("  ");
                }
                if i < text_columns {
                    out.push_str(&format!("{cell:<w$}"));
                } else {
                    out.push_str(&format!("{cell:>w$}"));
                }
            }
            writeln!(f, "{}", out.trim_end())?;
        }
        if self.timing_errors > 0 {
            writeln!(
                f,
                "({} launches could not be timed: their events failed)",
                self.timing_errors
            )?;
        }
        Ok(())
    }
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::Gpu;
    use crate::ops::rmsnorm::cuda::{rmsnorm_backward, rmsnorm_forward};

    #[test]
    fn a_recorder_sees_exactly_the_kernels_an_op_launches() {
        let gpu = Gpu::emulated().unwrap();
        let (x, w) = (
            gpu.upload(&[1.0f32, 2.0, 3.0, 4.0]).unwrap(),
            gpu.upload(&[1.0f32, 1.0]).unwrap(),
        );
        let recorder = Recorder::start();
        let (y, rstd) = rmsnorm_forward(&gpu, &x, &w, 2, 1e-6).unwrap();
        assert_eq!(recorder.kernels(), [("rmsnorm_forward_f32".to_string(), 1)]);
        let mut dw = gpu.zeros::<f32>(2).unwrap();
        rmsnorm_backward(&gpu, &y, &x, &w, &rstd, 2, &mut dw, false).unwrap();
        assert_eq!(
            recorder.kernels(),
            [
                ("rmsnorm_forward_f32".to_string(), 1),
                ("rmsnorm_backward_f32".to_string(), 1),
                ("rmsnorm_dw_reduce".to_string(), 1),
            ]
        );
        let mut c = gpu.zeros::<f32>(4).unwrap();
        gpu.gemm(&mut c, &x, false, &x, true, (2, 2, 2), false)
            .unwrap();
        gpu.gemm(&mut c, &x, false, &x, true, (2, 2, 2), true)
            .unwrap();
        assert_eq!(recorder.launches("gemm_f32_f32"), 2);
        assert_eq!(
            recorder.launches("rmsnorm_forward"),
            0,
            "names match exactly"
        );
        assert_eq!(recorder.total(), 5);
    }

    #[test]
    fn a_refused_launch_is_not_recorded() {
        let gpu = Gpu::emulated().unwrap();
        let recorder = Recorder::start();
        let cfg = crate::backend::cuda::LaunchConfig::linear(1, 2048, 0);
        // SAFETY: refused before anything runs.
        assert!(unsafe { gpu.launch("rmsnorm_dw_reduce", cfg, &[]) }.is_err());
        assert_eq!(recorder.total(), 0);
    }

    #[test]
    fn nested_recorders_both_see_a_launch_and_each_counts_from_its_start() {
        let gpu = Gpu::emulated().unwrap();
        let x = gpu.upload(&[1.0f32, 2.0]).unwrap();
        let w = gpu.upload(&[1.0f32, 1.0]).unwrap();
        let outer = Recorder::start();
        rmsnorm_forward(&gpu, &x, &w, 2, 1e-6).unwrap();
        {
            let inner = Recorder::start();
            rmsnorm_forward(&gpu, &x, &w, 2, 1e-6).unwrap();
            assert_eq!(inner.launches("rmsnorm_forward_f32"), 1);
            assert_eq!(outer.launches("rmsnorm_forward_f32"), 2);
        }
        rmsnorm_forward(&gpu, &x, &w, 2, 1e-6).unwrap();
        assert_eq!(outer.launches("rmsnorm_forward_f32"), 3);
    }

    #[test]
    fn a_recorder_does_not_see_launches_of_another_thread() {
        // Both recorders are alive during both launches: the barrier is passed only once
        // each thread has started its recorder, and each one reads only after both launched.
        let (started, launched) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        let (here, there) = std::thread::scope(|s| {
            let other = s.spawn(|| {
                let there = Recorder::start();
                started.wait();
                let gpu = Gpu::emulated().unwrap();
                let a = gpu.upload(&[1.0f32]).unwrap();
                let mut c = gpu.zeros::<f32>(1).unwrap();
                gpu.gemm(&mut c, &a, false, &a, false, (1, 1, 1), false)
                    .unwrap();
                launched.wait();
                there.kernels()
            });
            let here = Recorder::start();
            started.wait();
            let gpu = Gpu::emulated().unwrap();
            let x = gpu.upload(&[1.0f32, 2.0]).unwrap();
            let w = gpu.upload(&[1.0f32, 1.0]).unwrap();
            rmsnorm_forward(&gpu, &x, &w, 2, 1e-6).unwrap();
            launched.wait();
            (here.kernels(), other.join().unwrap())
        });
        assert_eq!(here, [("rmsnorm_forward_f32".to_string(), 1)]);
        assert_eq!(there, [("gemm_f32_f32".to_string(), 1)]);
    }

    #[test]
    fn the_enabled_profile_counts_launches_of_every_thread_untimed_on_the_emulator() {
        enable();
        let gpu = Gpu::emulated().unwrap();
        let x = gpu.upload(&[1.0f32, 2.0]).unwrap();
        let w = gpu.upload(&[1.0f32, 1.0]).unwrap();
        let launches = |report: &ProfileReport| {
            report
                .kernels()
                .iter()
                .find(|r| r.name == "rmsnorm_forward_f32" && r.device == "CPU emulator")
                .map_or(0, |r| r.launches)
        };
        // Other tests of this process may launch it too: only the increase is ours.
        let before = launches(&report().unwrap());
        std::thread::spawn(|| {
            let gpu = Gpu::emulated().unwrap();
            let x = gpu.upload(&[1.0f32, 2.0]).unwrap();
            let w = gpu.upload(&[1.0f32, 1.0]).unwrap();
            rmsnorm_forward(&gpu, &x, &w, 2, 1e-6).unwrap();
        })
        .join()
        .unwrap();
        rmsnorm_forward(&gpu, &x, &w, 2, 1e-6).unwrap();
        let report = report().unwrap();
        assert!(launches(&report) >= before + 2);
        let row = report
            .kernels()
            .into_iter()
            .find(|r| r.name == "rmsnorm_forward_f32")
            .unwrap();
        assert_eq!(row.device_ms, None);
    }

    fn row(name: &str, device: &str, launches: usize, device_ms: Option<f64>) -> KernelProfile {
        KernelProfile {
            name: name.into(),
            device: device.into(),
            launches,
            device_ms,
        }
    }

    #[test]
    fn a_timed_report_is_a_table_sorted_by_time_with_a_total() {
        let report = ProfileReport {
            kernels: vec![
                row("rmsnorm_forward_bf16", "H100 (sm_90)", 48, Some(1.5)),
                row("gemm_bf16_f32", "H100 (sm_90)", 96, Some(6.0)),
                row("adamw_update", "H100 (sm_90)", 1, Some(0.5)),
            ],
            timing_errors: 0,
        };
        assert_eq!(
            report.to_string(),
            "kernel profile on H100 (sm_90)\n\
             kernel                launches  total ms  mean us  share\n\
             gemm_bf16_f32               96     6.000     62.5  75.0%\n\
             rmsnorm_forward_bf16        48     1.500     31.2  18.8%\n\
             adamw_update                 1     0.500    500.0   6.2%\n\
             total                      145     8.000\n"
        );
    }

    #[test]
    fn an_untimed_report_is_sorted_by_count_and_names_each_device() {
        let report = ProfileReport {
            kernels: vec![
                row("rope_bf16", "CPU emulator", 2, None),
                row("add_forward_f32", "CPU emulator", 6, None),
                row("rope_bf16", "CPU emulator (schedule 7)", 2, None),
            ],
            timing_errors: 1,
        };
        assert_eq!(
            report.devices(),
            ["CPU emulator", "CPU emulator (schedule 7)"]
        );
        assert_eq!(
            report.to_string(),
            "kernel profile on CPU emulator, CPU emulator (schedule 7)\n\
             kernel           device                     launches  share\n\
             add_forward_f32  CPU emulator                      6  60.0%\n\
             rope_bf16        CPU emulator                      2  20.0%\n\
             rope_bf16        CPU emulator (schedule 7)         2  20.0%\n\
             total                                             10\n\
             (1 launches could not be timed: their events failed)\n"
        );
    }
}

//! Training curves from a metrics JSONL file: the loss (and the eval loss when logged)
//! and the learning rate against the step, drawn into one PNG with two panels; or
//! several runs side by side ([`plot_runs`]): their training losses in one panel, their
//! held-out losses (each dataset's, when logged) in the other.
//!
//! Each line is a JSON object with an integer `step` and any of `loss`, `lr` and
//! `eval_loss` (numbers) and `eval_loss_by_dataset` (an object of numbers); other fields
//! (tokens, grad_norm, ...) are ignored. Text is drawn with DejaVu Sans embedded in the
//! binary, so no system fonts are needed.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::{Map, Value};

use crate::{Error, Result};

/// The curves of one metrics file, as (step, value) points in file order.
#[derive(Debug, Default, PartialEq)]
pub struct Metrics {
    pub loss: Vec<(f64, f64)>,
    pub eval_loss: Vec<(f64, f64)>,
    pub lr: Vec<(f64, f64)>,
    /// Each dataset's eval loss, by dataset name.
    pub eval_by_dataset: BTreeMap<String, Vec<(f64, f64)>>,
}

/// Reads a metrics JSONL file. A malformed line is an error naming `file:line` and the
/// field; blank lines are skipped.
pub fn read_metrics(path: &Path) -> Result<Metrics> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut metrics = Metrics::default();
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if !line.trim().is_empty() {
            let at = PathBuf::from(format!("{}:{}", path.display(), index + 1));
            metrics.add_line(&line, &at)?;
        }
    }
    if metrics.loss.is_empty() && metrics.eval_loss.is_empty() {
        return Err(Error::format(
            path,
            "loss",
            "no line has a loss or an eval_loss: nothing to plot",
        ));
    }
    Ok(metrics)
}

impl Metrics {
    /// Adds one JSONL line; `at` (file:line) names it in errors.
    fn add_line(&mut self, line: &str, at: &Path) -> Result<()> {
        let obj = match serde_json::from_str(line) {
            Ok(Value::Object(obj)) => obj,
            Ok(_) => return Err(Error::format(at, "(json)", "expected a JSON object")),
            Err(e) => return Err(Error::format(at, "(json)", e.to_string())),
        };
        let step = match obj.get("step").and_then(Value::as_u64) {
            Some(step) => step as f64,
            None => {
                let got = obj.get("step").map_or("nothing".into(), Value::to_string);
                let msg = format!("expected a non-negative integer, got {got}");
                return Err(Error::format(at, "step", msg));
            }
        };
        for (field, series) in [
            ("loss", &mut self.loss),
            ("eval_loss", &mut self.eval_loss),
            ("lr", &mut self.lr),
        ] {
            if let Some(value) = number(&obj, field, at)? {
                series.push((step, value));
            }
        }
        match obj.get("eval_loss_by_dataset") {
            None | Some(Value::Null) => {}
            Some(Value::Object(by_dataset)) => {
                for name in by_dataset.keys() {
                    let field = format!("eval_loss_by_dataset.{name}");
                    let value = number(by_dataset, name, at)?
                        .ok_or_else(|| Error::format(at, &field, "expected a number, got null"))?;
                    let series = self.eval_by_dataset.entry(name.clone()).or_default();
                    series.push((step, value));
                }
            }
            Some(other) => {
                let msg = format!("expected an object of numbers, got {other}");
                return Err(Error::format(at, "eval_loss_by_dataset", msg));
            }
        }
        Ok(())
    }

    /// The held-out curves: each dataset's, or the overall eval loss when the run logged
    /// no per-dataset ones.
    fn held_out_curves(&self) -> Vec<(String, &[(f64, f64)])> {
        if self.eval_by_dataset.is_empty() {
            return vec![("held-out".to_string(), &self.eval_loss[..])];
        }
        self.eval_by_dataset
            .iter()
            .map(|(name, series)| (format!("held-out {name}"), &series[..]))
            .collect()
    }
}

/// An optional numeric field (absent or null: None).
fn number(obj: &Map<String, Value>, field: &str, at: &Path) -> Result<Option<f64>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| Error::format(at, field, format!("expected a number, got {v}"))),
    }
}

/// Draws `metrics` into the PNG file `out`, `size` = (width, height) in pixels, written
/// through a temporary file renamed into place.
pub fn plot_metrics(metrics: &Metrics, out: &Path, size: (u32, u32)) -> Result<()> {
    write_png(out, size, |tmp| draw(metrics, tmp, size))
}

/// Several runs side by side in the PNG file `out`: the training losses in the top panel,
/// the held-out losses in the bottom one; `runs` are (label, metrics).
pub fn plot_runs(runs: &[(String, Metrics)], out: &Path, size: (u32, u32)) -> Result<()> {
    if runs.is_empty() {
        return Err(Error::format(out, "(runs)", "no run to plot"));
    }
    write_png(out, size, |tmp| draw_runs(runs, tmp, size))
}

/// A PNG drawn by `draw` into a temporary file (its path given) and renamed to `out`;
/// `size` in pixels, 200 to 10000 each way. The embedded font is registered first.
pub(crate) fn write_png(
    out: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Path) -> std::result::Result<(), String>,
) -> Result<()> {
    let is_png = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !is_png {
        return Err(Error::format(out, "(path)", "expected a .png file name"));
    }
    let (width, height) = size;
    if !(200..=10_000).contains(&width) || !(200..=10_000).contains(&height) {
        let msg = format!("{width}x{height} pixels, expected 200 to 10000 each way");
        return Err(Error::format(out, "(size)", msg));
    }
    register_font()?;
    // The temporary name keeps the .png extension: the encoder picks the format by it.
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = out.with_file_name(format!(
        ".{}.tmp{}.png",
        name.unwrap_or_default(),
        std::process::id()
    ));
    let drawn = draw(&tmp).map_err(|e| Error::format(out, "(drawing)", e));
    let result = drawn.and_then(|()| std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// plotters looks fonts up by family name; ours is registered once per process.
fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .is_ok()
    });
    if !ok {
        let msg = "the embedded font does not parse";
        return Err(Error::format("DejaVuSans.ttf", "(font)", msg));
    }
    Ok(())
}

/// Everything that can fail inside plotters, as text (its errors are generic over the
/// backend).
fn draw(metrics: &Metrics, path: &Path, size: (u32, u32)) -> std::result::Result<(), String> {
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let panels = root.split_evenly((2, 1));
    let steps = step_range(metrics);
    draw_loss(&panels[0], metrics, steps.clone()).map_err(|e| e.to_string())?;
    draw_lr(&panels[1], &metrics.lr, steps).map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

fn draw_runs(
    runs: &[(String, Metrics)],
    path: &Path,
    size: (u32, u32),
) -> std::result::Result<(), String> {
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let panels = root.split_evenly((2, 1));
    let train: Vec<(String, &[(f64, f64)])> = runs
        .iter()
        .map(|(label, m)| (format!("{label} train"), &m.loss[..]))
        .collect();
    let held_out: Vec<(String, &[(f64, f64)])> = runs
        .iter()
        .flat_map(|(label, m)| {
            m.held_out_curves()
                .into_iter()
                .map(move |(name, series)| (format!("{label} {name}"), series))
        })
        .collect();
    let steps = padded_range(
        train
            .iter()
            .chain(&held_out)
            .flat_map(|(_, s)| s.iter().map(|p| p.0)),
        0.0,
    );
    draw_curves(&panels[0], "training loss", &train, steps.clone(), false)
        .map_err(|e| e.to_string())?;
    draw_curves(&panels[1], "held-out loss", &held_out, steps, true).map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// Distinct colours for the curves of a comparison (matplotlib's tab10).
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// One panel of labelled curves; `markers` puts a dot on every point (sparse evals).
fn draw_curves<'a>(
    panel: &Panel<'a>,
    title: &str,
    curves: &[(String, &[(f64, f64)])],
    steps: std::ops::Range<f64>,
    markers: bool,
) -> DrawResult<'a> {
    let values = curves.iter().flat_map(|(_, s)| s.iter().map(|p| p.1));
    let mut chart = loss_chart(panel, title, steps, values)?;
    for (i, (label, series)) in curves.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                series.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        if markers {
            chart.draw_series(series.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
    }
    draw_legend(&mut chart)
}

type LossChart<'a, 'b> =
    ChartContext<'b, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A panel's chart of loss against step, its axes drawn.
fn loss_chart<'a, 'b>(
    panel: &'b Panel<'a>,
    title: &str,
    steps: std::ops::Range<f64>,
    values: impl Iterator<Item = f64>,
) -> std::result::Result<LossChart<'a, 'b>, DrawError<'a>> {
    let mut chart = ChartBuilder::on(panel)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .margin_right(28)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(steps, value_range(values))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|step| format!("{step:.0}"))
        .y_desc("loss")
        .label_style(("sans-serif", 14))
        .draw()?;
    Ok(chart)
}

fn draw_legend<'a: 'b, 'b>(chart: &mut LossChart<'a, 'b>) -> DrawResult<'a> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
}

type Panel<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type DrawError<'a> = DrawingAreaErrorKind<<BitMapBackend<'a> as DrawingBackend>::ErrorType>;
type DrawResult<'a> = std::result::Result<(), DrawError<'a>>;

const LOSS_COLOR: RGBColor = RGBColor(31, 119, 180);
const EVAL_COLOR: RGBColor = RGBColor(214, 39, 40);
const LR_COLOR: RGBColor = RGBColor(44, 160, 44);

fn draw_loss<'a>(
    panel: &Panel<'a>,
    metrics: &Metrics,
    steps: std::ops::Range<f64>,
) -> DrawResult<'a> {
    let values = metrics.loss.iter().chain(&metrics.eval_loss).map(|p| p.1);
    let mut chart = loss_chart(panel, "loss", steps, values)?;
    chart
        .draw_series(LineSeries::new(
            metrics.loss.iter().copied(),
            LOSS_COLOR.stroke_width(2),
        ))?
        .label("train loss")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], LOSS_COLOR.stroke_width(2)));
    if !metrics.eval_loss.is_empty() {
        let points = metrics.eval_loss.iter().copied();
        chart.draw_series(LineSeries::new(points.clone(), EVAL_COLOR.stroke_width(2)))?;
        chart
            .draw_series(points.map(|p| Circle::new(p, 4, EVAL_COLOR.filled())))?
            .label("eval loss")
            .legend(|(x, y)| Circle::new((x + 10, y), 4, EVAL_COLOR.filled()));
    }
    draw_legend(&mut chart)
}

fn draw_lr<'a>(
    panel: &Panel<'a>,
    lr: &[(f64, f64)],
    steps: std::ops::Range<f64>,
) -> DrawResult<'a> {
    let mut chart = ChartBuilder::on(panel)
        .caption("learning rate", ("sans-serif", 22))
        .margin(12)
        .margin_right(28)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(steps, value_range(lr.iter().map(|p| p.1)))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|step| format!("{step:.0}"))
        .y_desc("lr")
        .y_label_formatter(&|v| format!("{v:.1e}"))
        .label_style(("sans-serif", 14))
        .draw()?;
    chart.draw_series(LineSeries::new(
        lr.iter().copied(),
        LR_COLOR.stroke_width(2),
    ))?;
    Ok(())
}

/// The steps both panels share, so their x axes line up.
fn step_range(metrics: &Metrics) -> std::ops::Range<f64> {
    let steps = [&metrics.loss, &metrics.eval_loss, &metrics.lr]
        .into_iter()
        .flatten()
        .map(|p| p.0);
    padded_range(steps, 0.0)
}

/// The values' range with a 5% margin, so curves do not touch the frame.
fn value_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    padded_range(values, 0.05)
}

/// min..max of the values widened by `margin` of the span; a single value (or none)
/// still gets a range plotters can draw.
fn padded_range(values: impl Iterator<Item = f64>, margin: f64) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo > hi {
        return 0.0..1.0;
    }
    let span = hi - lo;
    if span == 0.0 {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return lo - pad..hi + pad;
    }
    lo - span * margin..hi + span * margin
}

//! The probes' pictures: heat maps with labelled rows and columns (attention maps, the
//! logit lens, patching effects) and a line per layer (linear-probe accuracy).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::train::plot::write_png;
use crate::Result;

/// Pixels of one heat-map cell, and of the label margins.
const CELL: u32 = 26;
const LABEL_MARGIN: u32 = 150;
const TITLE_MARGIN: u32 = 40;

/// A matrix to draw: `values` row-major, `rows` × `cols`, with a label per row and per
/// column and, optionally, a short text in every cell.
pub struct Heatmap<'a> {
    pub title: &'a str,
    pub values: &'a [f32],
    pub row_labels: &'a [String],
    pub col_labels: &'a [String],
    pub cell_text: Option<&'a [String]>,
}

/// Draws `map` into the PNG `out`: white at the smallest value, dark blue at the largest
/// (dark red for negatives, when there are any).
pub fn heatmap(out: &Path, map: &Heatmap) -> Result<()> {
    let (rows, cols) = (map.row_labels.len() as u32, map.col_labels.len() as u32);
    let size = (
        (LABEL_MARGIN + cols * CELL + 20).max(200),
        (TITLE_MARGIN + LABEL_MARGIN + rows * CELL).max(200),
    );
    write_png(out, size, |tmp| {
        draw_heatmap(tmp, size, map).map_err(|e| e.to_string())
    })
}

fn draw_heatmap(
    path: &Path,
    size: (u32, u32),
    map: &Heatmap,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    root.draw(&Text::new(map.title, (10, 10), ("sans-serif", 18)))?;
    let scale = map
        .values
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()))
        .max(1e-12);
    let cols = map.col_labels.len();
    let origin = (LABEL_MARGIN as i32, (TITLE_MARGIN + LABEL_MARGIN) as i32);
    for (i, v) in map.values.iter().enumerate() {
        let (r, c) = ((i / cols) as i32, (i % cols) as i32);
        let x0 = origin.0 + c * CELL as i32;
        let y0 = origin.1 + r * CELL as i32;
        let cell = [(x0, y0), (x0 + CELL as i32, y0 + CELL as i32)];
        root.draw(&Rectangle::new(cell, colour(v / scale).filled()))?;
        if let Some(text) = map.cell_text {
            let style = TextStyle::from(("sans-serif", 9).into_font())
                .pos(Pos::new(HPos::Center, VPos::Center))
                .color(if v.abs() / scale > 0.6 {
                    &WHITE
                } else {
                    &BLACK
                });
            let centre = (x0 + CELL as i32 / 2, y0 + CELL as i32 / 2);
            root.draw(&Text::new(short(&text[i], 5), centre, style))?;
        }
    }
    let label = ("sans-serif", 11).into_font();
    for (r, text) in map.row_labels.iter().enumerate() {
        let y = origin.1 + r as i32 * CELL as i32 + CELL as i32 / 2;
        let style = TextStyle::from(label.clone()).pos(Pos::new(HPos::Right, VPos::Center));
        root.draw(&Text::new(short(text, 20), (origin.0 - 4, y), style))?;
    }
    for (c, text) in map.col_labels.iter().enumerate() {
        let x = origin.0 + c as i32 * CELL as i32 + CELL as i32 / 2;
        let style = TextStyle::from(label.clone().transform(FontTransform::Rotate270))
            .pos(Pos::new(HPos::Left, VPos::Center));
        root.draw(&Text::new(short(text, 20), (x, origin.1 - 4), style))?;
    }
    root.present()?;
    Ok(())
}

/// White to dark blue for 0..1, white to dark red for 0..-1.
fn colour(x: f32) -> RGBColor {
    let t = x.abs().clamp(0.0, 1.0);
    let fade = |full: u8| (255.0 - t * (255.0 - full as f32)) as u8;
    if x >= 0.0 {
        RGBColor(fade(8), fade(48), fade(107))
    } else {
        RGBColor(fade(103), fade(0), fade(13))
    }
}

/// At most `n` characters, visible whitespace, for labels.
fn short(text: &str, n: usize) -> String {
    let shown: String = text.replace('\n', "⏎").replace(' ', "·");
    shown.chars().take(n).collect()
}

/// One line of `ys` over `xs` (e.g. held-out accuracy per layer) into the PNG `out`.
pub fn line(
    out: &Path,
    title: &str,
    (x_label, y_label): (&str, &str),
    points: &[(f64, f64)],
) -> Result<()> {
    let size = (800, 500);
    write_png(out, size, |tmp| {
        draw_line(tmp, size, title, (x_label, y_label), points).map_err(|e| e.to_string())
    })
}

fn draw_line(
    path: &Path,
    size: (u32, u32),
    title: &str,
    (x_label, y_label): (&str, &str),
    points: &[(f64, f64)],
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let (y_min, y_max) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let pad = ((y_max - y_min) * 0.1).max(0.01);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, (y_min - pad)..(y_max + pad))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()?;
    chart.draw_series(LineSeries::new(points.iter().copied(), &BLUE))?;
    chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))?;
    root.present()?;
    Ok(())
}

//! `scotd plot`'s library side: metrics JSONL in, a readable two-panel PNG of the
//! requested size out; malformed lines are errors naming file:line and the field.

use std::path::{Path, PathBuf};

use scotd::train::plot::{plot_metrics, read_metrics};

fn fixture_metrics() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plot/metrics.jsonl")
}

fn metrics_file(dir: &Path, lines: &str) -> PathBuf {
    let path = dir.join("metrics.jsonl");
    std::fs::write(&path, lines).unwrap();
    path
}

fn read_err(lines: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = metrics_file(dir.path(), lines);
    read_metrics(&path).unwrap_err().to_string()
}

/// Pixels of exactly this colour in rows [top, bottom).
fn count_color(img: &image::RgbImage, rgb: [u8; 3], rows: std::ops::Range<u32>) -> usize {
    rows.flat_map(|y| (0..img.width()).map(move |x| (x, y)))
        .filter(|&(x, y)| img.get_pixel(x, y).0 == rgb)
        .count()
}

#[test]
fn the_fixture_plots_to_a_png_of_the_requested_size() {
    let metrics = read_metrics(&fixture_metrics()).unwrap();
    assert_eq!(
        (
            metrics.loss.len(),
            metrics.eval_loss.len(),
            metrics.lr.len()
        ),
        (60, 3, 60)
    );
    assert_eq!(metrics.eval_loss[0], (20.0, 1.6163));

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("loss.png");
    plot_metrics(&metrics, &out, (900, 700)).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .unwrap()
        .to_rgb8();
    assert_eq!(img.dimensions(), (900, 700));

    // The loss curves are in the top panel, the learning rate in the bottom one.
    let (top, bottom) = (0..350, 350..700);
    let (blue, red, green) = ([31, 119, 180], [214, 39, 40], [44, 160, 44]);
    assert!(
        count_color(&img, blue, top.clone()) > 500,
        "no train loss curve"
    );
    assert!(
        count_color(&img, red, top.clone()) > 100,
        "no eval loss curve"
    );
    assert!(
        count_color(&img, green, bottom.clone()) > 500,
        "no lr curve"
    );
    assert_eq!(count_color(&img, green, top), 0);
    assert_eq!(count_color(&img, blue, bottom), 0);
    // Text (titles, tick labels) is drawn: dark pixels beyond the axes and grid.
    let dark = img.pixels().filter(|p| p.0.iter().all(|&c| c < 60)).count();
    assert!(dark > 2000, "only {dark} dark pixels: no text?");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "a temporary file was left behind");
}

#[test]
fn eval_lines_alone_still_plot() {
    let dir = tempfile::tempdir().unwrap();
    let path = metrics_file(dir.path(), "{\"step\": 5, \"eval_loss\": 2.0}\n\n");
    let metrics = read_metrics(&path).unwrap();
    let out = dir.path().join("eval.png");
    plot_metrics(&metrics, &out, (400, 300)).unwrap();
    assert!(out.is_file());
}

#[test]
fn malformed_lines_name_file_line_and_field() {
    let ok = "{\"step\": 1, \"loss\": 2.0, \"lr\": 1e-5}\n";
    let cases = [
        (format!("{ok}not json\n"), "metrics.jsonl:2: (json)"),
        (
            format!("{ok}[1, 2]\n"),
            "metrics.jsonl:2: (json): expected a JSON object",
        ),
        (
            format!("{ok}\n{{\"loss\": 2.0}}\n"),
            "metrics.jsonl:3: step: expected a non-negative integer, got nothing",
        ),
        (
            "{\"step\": -1, \"loss\": 2.0}\n".to_string(),
            "metrics.jsonl:1: step",
        ),
        (
            format!("{ok}{{\"step\": 2, \"loss\": \"high\"}}\n"),
            "metrics.jsonl:2: loss: expected a number, got \"high\"",
        ),
        (
            format!("{ok}{{\"step\": 2, \"lr\": [1]}}\n"),
            "metrics.jsonl:2: lr: expected a number",
        ),
        (
            "{\"step\": 2, \"lr\": 1e-5}\n".to_string(),
            "metrics.jsonl: loss: no line has a loss",
        ),
    ];
    for (lines, want) in cases {
        let err = read_err(&lines);
        assert!(err.contains(want), "{lines:?}: got {err:?}, want {want:?}");
    }
}

#[test]
fn bad_outputs_are_refused() {
    let metrics = read_metrics(&fixture_metrics()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = plot_metrics(&metrics, &dir.path().join("loss.jpg"), (800, 600)).unwrap_err();
    assert!(err.to_string().contains("expected a .png"), "{err}");
    let err = plot_metrics(&metrics, &dir.path().join("loss.png"), (10, 600)).unwrap_err();
    assert!(err.to_string().contains("10x600"), "{err}");
    let missing = dir.path().join("no/such/folder/loss.png");
    assert!(plot_metrics(&metrics, &missing, (800, 600)).is_err());
}

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

#[test]
fn runs_side_by_side_with_each_datasets_held_out_loss() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("v1.jsonl");
    let v2 = dir.path().join("v2.jsonl");
    let train = |loss: f64| {
        (1..=30)
            .map(|s| format!("{{\"step\": {s}, \"loss\": {}}}\n", loss - 0.01 * s as f64))
            .collect::<String>()
    };
    std::fs::write(
        &v1,
        train(2.0) + "{\"step\": 10, \"eval_loss\": 1.5}\n{\"step\": 30, \"eval_loss\": 1.2}\n",
    )
    .unwrap();
    std::fs::write(
        &v2,
        train(2.5)
            + "{\"step\": 10, \"eval_loss\": 1.6, \"eval_loss_by_dataset\": {\"chat\": 1.9, \"traces\": 1.4}}\n\
               {\"step\": 30, \"eval_loss\": 1.4, \"eval_loss_by_dataset\": {\"chat\": 1.8, \"traces\": 1.1}}\n",
    )
    .unwrap();
    let runs: Vec<(String, scotd::train::plot::Metrics)> = [("v1", &v1), ("v2", &v2)]
        .into_iter()
        .map(|(label, path)| (label.to_string(), read_metrics(path).unwrap()))
        .collect();
    assert_eq!(runs[0].1.eval_by_dataset.len(), 0);
    assert_eq!(
        runs[1].1.eval_by_dataset["traces"],
        [(10.0, 1.4), (30.0, 1.1)]
    );
    let out = dir.path().join("runs.png");
    scotd::train::plot::plot_runs(&runs, &out, (800, 600)).unwrap();
    let img = image::open(&out).unwrap().to_rgb8();
    let (top, bottom) = (0..300, 300..600);
    // Training losses: v1 blue, v2 orange on top; held-out: v1, v2 chat, v2 traces below.
    let (blue, orange, green, red) = ([31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40]);
    assert!(
        count_color(&img, blue, top.clone()) > 300,
        "no v1 train curve"
    );
    assert!(
        count_color(&img, orange, top.clone()) > 300,
        "no v2 train curve"
    );
    for (color, what) in [
        (blue, "v1 held-out"),
        (orange, "v2 chat"),
        (green, "v2 traces"),
    ] {
        assert!(
            count_color(&img, color, bottom.clone()) > 100,
            "no {what} curve"
        );
    }
    assert_eq!(count_color(&img, red, 0..600), 0, "a fourth held-out curve");

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"step\": 1, \"eval_loss_by_dataset\": {\"chat\": \"x\"}}\n",
    )
    .unwrap();
    let err = read_metrics(&bad).unwrap_err().to_string();
    assert!(err.contains("bad.jsonl:1") && err.contains("chat"), "{err}");
}

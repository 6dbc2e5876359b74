//! Parity with Hugging Face transformers on tiny random Qwen2 and Llama models:
//! logits, loss and every parameter gradient, against fixtures made by
//! tools/make_goldens.py (committed under tests/fixtures/golden).

use std::path::{Path, PathBuf};

use scotd::model::{Batch, Model, Weights};
use scotd::ops::Reduction;

struct Inputs {
    batch: Batch,
    targets: Vec<i64>,
}

fn matrix(v: &serde_json::Value, key: &str) -> (Vec<i64>, usize, usize) {
    let rows = v[key]
        .as_array()
        .unwrap_or_else(|| panic!("inputs.json: {key} missing"));
    let t = rows[0].as_array().unwrap().len();
    let flat: Vec<i64> = rows
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()))
        .collect();
    (flat, rows.len(), t)
}

fn read_inputs(dir: &Path) -> Inputs {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("inputs.json")).unwrap()).unwrap();
    let (ids, b, t) = matrix(&v, "input_ids");
    let (positions, ..) = matrix(&v, "position_ids");
    let (segments, ..) = matrix(&v, "segment_ids");
    let (targets, ..) = matrix(&v, "targets");
    let to_u32 = |x: Vec<i64>| x.into_iter().map(|i| i as u32).collect::<Vec<u32>>();
    let batch =
        Batch::packed(to_u32(ids), b, t, to_u32(positions), Some(to_u32(segments))).unwrap();
    Inputs { batch, targets }
}

/// Largest |a - b| relative to the largest |b| (so near-zero entries do not dominate).
fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b
        .iter()
        .fold(0.0f64, |m, &x| m.max(x.abs() as f64))
        .max(1e-30);
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .fold(0.0, f64::max)
        / scale
}

fn check_case(name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden")
        .join(name);
    let model = Model::load(&dir).unwrap();
    let inputs = read_inputs(&dir);
    let expected = Weights::open_file(&dir.join("expected.safetensors")).unwrap_or_else(|_| {
        panic!("{name}: expected.safetensors missing; rerun tools/make_goldens.py")
    });

    let logits = model.forward(&inputs.batch).unwrap();
    let want_logits = expected.read_as_stored("logits").unwrap();
    let logits_err = relative_error(
        &logits.to_vec_f32().unwrap(),
        &want_logits.to_vec_f32().unwrap(),
    );
    assert!(
        logits_err < 1e-5,
        "{name}: logits relative error {logits_err:e}"
    );

    let loss = scotd::ops::cross_entropy(&logits, &inputs.targets, Reduction::Mean).unwrap();
    let want_loss = expected
        .read_as_stored("loss")
        .unwrap()
        .to_vec_f32()
        .unwrap()[0];
    let got_loss = loss.to_scalar().unwrap();
    let loss_err = ((got_loss - want_loss) / want_loss).abs();
    assert!(
        loss_err < 1e-5,
        "{name}: loss {got_loss} vs transformers {want_loss}"
    );

    let grads = loss.backward().unwrap();
    let params = model.parameters();
    let mut worst_grad = 0.0f64;
    for (pname, p) in &params {
        let want = expected.read_as_stored(&format!("grad.{pname}")).unwrap();
        let got = grads
            .get(p)
            .unwrap_or_else(|| panic!("{name}: no gradient for {pname}"));
        let err = relative_error(&got.to_vec_f32().unwrap(), &want.to_vec_f32().unwrap());
        assert!(
            err < 1e-4,
            "{name}: gradient of {pname} relative error {err:e}"
        );
        worst_grad = worst_grad.max(err);
    }
    eprintln!("{name}: logits {logits_err:.1e}, loss {loss_err:.1e}, worst gradient {worst_grad:.1e} (relative)");
    assert_eq!(
        grads.len(),
        params.len(),
        "{name}: a gradient for every parameter, no more"
    );
}

#[test]
fn qwen2_tied_matches_transformers() {
    check_case("qwen2_tied");
}

#[test]
fn llama_untied_matches_transformers() {
    check_case("llama_untied");
}

#[test]
fn qwen2_packed_with_padding_matches_transformers() {
    check_case("qwen2_packed");
}

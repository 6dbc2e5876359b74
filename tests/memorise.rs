//! The whole loop end to end without AdamW: a tiny model memorises a handful of
//! sequences with plain SGD, so forward, loss, backward and the update all work together.

use std::path::Path;

use scotd::model::{Batch, Model, ModelConfig};
use scotd::ops::Reduction;
use scotd::optim::sgd_step;

#[test]
fn tiny_llama_memorises_four_sequences_with_sgd() {
    let config = ModelConfig::from_json(
        r#"{"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48,
            "vocab_size": 23, "tie_word_embeddings": true}"#,
        Path::new("inline.json"),
    )
    .unwrap();
    let model = Model::random(config, 3);
    let params: Vec<_> = model.parameters().into_iter().map(|(_, t)| t).collect();
    let (b, t) = (4, 9);
    let ids: Vec<u32> = (0..b * t)
        .map(|i| ((i * 7 + i / t * 3) % 23) as u32)
        .collect();
    let targets: Vec<i64> = (0..b * t)
        .map(|i| {
            if (i + 1) % t == 0 {
                -100
            } else {
                ids[i + 1] as i64
            }
        })
        .collect();
    let batch = Batch::new(ids, b, t).unwrap();

    let mut first = None;
    let mut last = f32::MAX;
    for _ in 0..300 {
        let loss = model.loss(&batch, &targets, Reduction::Mean).unwrap();
        last = loss.to_scalar().unwrap();
        first.get_or_insert(last);
        let grads = loss.backward().unwrap();
        assert_eq!(sgd_step(&params, &grads, 0.5).unwrap(), params.len());
    }
    let first = first.unwrap();
    assert!(
        first > 2.5,
        "random init should start near ln(23) = 3.1, got {first}"
    );
    assert!(
        last < 0.05,
        "loss should fall to near zero, from {first} to {last}"
    );
}

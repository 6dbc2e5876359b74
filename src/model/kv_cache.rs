//! The key/value cache of one sequence: every layer's rotated keys and values so far,
//! so each generated token costs one row of work instead of a whole forward.

use super::ModelConfig;

#[derive(Clone, Debug)]
pub struct KvCache {
    /// Per layer: keys and values, each [len, Hkv, Dh] row-major.
    layers: Vec<(Vec<f32>, Vec<f32>)>,
    row_width: usize,
}

impl KvCache {
    pub fn new(config: &ModelConfig) -> Self {
        KvCache {
            layers: vec![(Vec::new(), Vec::new()); config.num_hidden_layers],
            row_width: config.num_key_value_heads * config.head_dim,
        }
    }

    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .map_or(0, |(k, _)| k.len() / self.row_width)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn append(&mut self, layer: usize, keys: &[f32], values: &[f32]) {
        let (k, v) = &mut self.layers[layer];
        k.extend_from_slice(keys);
        v.extend_from_slice(values);
    }

    pub(crate) fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        let (k, v) = &self.layers[layer];
        (k, v)
    }
}

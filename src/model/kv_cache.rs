//! The key/value cache of one sequence: every layer's rotated keys and values so far, so
//! each generated token costs one row of work instead of a whole forward. The rows live
//! on the model's device, in its dtype, in buffers that grow by doubling.

use super::ModelConfig;
use crate::{Result, Tensor};

/// Rows a cache reserves at least when it first grows.
const MIN_CAPACITY: usize = 64;

#[derive(Clone, Debug)]
pub struct KvCache {
    /// Per layer: keys and values, each [capacity, Hkv, Dh]; the first `len` rows hold
    /// the sequence. Empty until the first write.
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    capacity: usize,
    row_width: usize,
    heads_dims: [usize; 2],
}

impl KvCache {
    pub fn new(config: &ModelConfig) -> Self {
        KvCache {
            layers: vec![None; config.num_hidden_layers],
            len: 0,
            capacity: 0,
            row_width: config.num_key_value_heads * config.head_dim,
            heads_dims: [config.num_key_value_heads, config.head_dim],
        }
    }

    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes layer `layer`'s keys and values [n, Hkv, Dh] of the next `n` positions (at
    /// rows len..len + n); [`KvCache::advance`] counts them once every layer has them.
    pub(crate) fn write(&mut self, layer: usize, keys: &Tensor, values: &Tensor) -> Result<()> {
        let n = keys.elem_count() / self.row_width;
        self.reserve(self.len + n, keys)?;
        let (k, v) = self.layers[layer]
            .as_ref()
            .expect("reserve allocated every layer");
        let start = self.len * self.row_width;
        k.view_of_flat(start, [keys.elem_count()])?
            .copy_from(keys)?;
        v.view_of_flat(start, [values.elem_count()])?
            .copy_from(values)?;
        Ok(())
    }

    /// Counts `n` more cached positions (after every layer wrote them).
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Layer `layer`'s first `rows` rows of keys and values, [rows, Hkv, Dh] each.
    pub(crate) fn layer(&self, layer: usize, rows: usize) -> Result<(Tensor, Tensor)> {
        let (k, v) = self.layers[layer]
            .as_ref()
            .expect("a layer is read only after it was written");
        let [heads, dim] = self.heads_dims;
        Ok((
            k.view_of_flat(0, [rows, heads, dim])?,
            v.view_of_flat(0, [rows, heads, dim])?,
        ))
    }

    /// Room for `rows` rows in every layer, on the device and in the dtype of `like`:
    /// the buffers double (copying the rows so far) when they are too small.
    fn reserve(&mut self, rows: usize, like: &Tensor) -> Result<()> {
        if rows <= self.capacity {
            return Ok(());
        }
        let capacity = rows.max(2 * self.capacity).max(MIN_CAPACITY);
        let [heads, dim] = self.heads_dims;
        let kept = self.len * self.row_width;
        for slot in &mut self.layers {
            let grown = |old: Option<&Tensor>| -> Result<Tensor> {
                let t = Tensor::zeros_on([capacity, heads, dim], like.dtype(), like.device())?;
                if let Some(old) = old.filter(|_| kept > 0) {
                    t.view_of_flat(0, [kept])?
                        .copy_from(&old.view_of_flat(0, [kept])?)?;
                }
                Ok(t)
            };
            let (k, v) = match slot {
                Some((k, v)) => (grown(Some(k))?, grown(Some(v))?),
                None => (grown(None)?, grown(None)?),
            };
            *slot = Some((k, v));
        }
        self.capacity = capacity;
        Ok(())
    }
}

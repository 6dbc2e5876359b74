//! The key/value cache of generation: every layer's rotated keys and values of every
//! sequence being decoded, so each new token costs one row of work instead of a whole
//! forward. Paged: a layer's cache is one pool of blocks of [`KV_BLOCK`] positions on
//! the model's device, in its activations' dtype (bf16 on a GPU running bf16), reserved
//! whole when the cache is made; a sequence owns the blocks its table lists, so
//! sequences of any lengths share the pool without padding, and a finished sequence
//! hands its blocks back for the next one (continuous batching).

use super::{Model, ModelConfig};
use crate::ops::PagedRows;
use crate::{DType, Device, Error, Result, Tensor};

/// Positions a block holds.
pub const KV_BLOCK: usize = 16;

/// A sequence of a [`KvCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SeqId(usize);

struct Sequence {
    blocks: Vec<u32>,
    len: usize,
}

pub struct KvCache {
    /// Per layer: keys and values, each [blocks, KV_BLOCK, Hkv, Dh].
    layers: Vec<(Tensor, Tensor)>,
    free: Vec<u32>,
    sequences: Vec<Option<Sequence>>,
    blocks: usize,
}

impl KvCache {
    /// A cache of `tokens` positions (rounded up to whole blocks) for models of `config`,
    /// on `device` in `dtype`, all of it allocated now.
    pub fn new(
        config: &ModelConfig,
        device: Device,
        dtype: DType,
        tokens: usize,
    ) -> Result<KvCache> {
        let blocks = tokens.div_ceil(KV_BLOCK).max(1);
        if u32::try_from(blocks).is_err() {
            return Err(Error::shape(
                "KvCache",
                format!("{tokens} positions are too many"),
            ));
        }
        let shape = [
            blocks,
            KV_BLOCK,
            config.num_key_value_heads,
            config.head_dim,
        ];
        let layers = (0..config.num_hidden_layers)
            .map(|_| {
                Ok((
                    Tensor::zeros_on(shape, dtype, device)?,
                    Tensor::zeros_on(shape, dtype, device)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(KvCache {
            layers,
            free: (0..blocks as u32).rev().collect(),
            sequences: Vec::new(),
            blocks,
        })
    }

    /// A cache of `tokens` positions for `model`, where its forward puts keys: its device,
    /// in the dtype of its activations there.
    pub fn for_model(model: &Model, tokens: usize) -> Result<KvCache> {
        KvCache::new(
            &model.config,
            model.device(),
            model.activation_dtype(),
            tokens,
        )
    }

    /// Bytes one cached position takes over all layers: keys and values of every KV head.
    pub fn bytes_per_token(config: &ModelConfig, dtype: DType) -> usize {
        2 * config.num_hidden_layers
            * config.num_key_value_heads
            * config.head_dim
            * dtype.size_in_bytes()
    }

    /// Blocks `tokens` positions need.
    pub fn blocks_for(tokens: usize) -> usize {
        tokens.div_ceil(KV_BLOCK)
    }

    /// Blocks of the pool, and those no sequence holds.
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// A new, empty sequence with room for `reserve` positions taken from the pool now
    /// (so it cannot run out mid-decode); an error when the pool has not that many free.
    pub fn add_sequence(&mut self, reserve: usize) -> Result<SeqId> {
        let mut sequence = Sequence {
            blocks: Vec::new(),
            len: 0,
        };
        self.grow(&mut sequence, reserve)?;
        let id = match self.sequences.iter().position(Option::is_none) {
            Some(free_slot) => free_slot,
            None => {
                self.sequences.push(None);
                self.sequences.len() - 1
            }
        };
        self.sequences[id] = Some(sequence);
        Ok(SeqId(id))
    }

    /// Ends a sequence, its blocks back in the pool.
    pub fn remove_sequence(&mut self, id: SeqId) {
        if let Some(sequence) = self.sequences.get_mut(id.0).and_then(Option::take) {
            self.free.extend(sequence.blocks);
        }
    }

    /// Positions cached of sequence `id`.
    pub fn len(&self, id: SeqId) -> Result<usize> {
        Ok(self.sequence(id)?.len)
    }

    /// Makes room for sequence `id` to hold `tokens` positions (more blocks from the pool
    /// when its reservation is short).
    pub(crate) fn ensure(&mut self, id: SeqId, tokens: usize) -> Result<()> {
        let index = self.index(id)?;
        let mut sequence = self.sequences[index].take().expect("index checked it");
        let grown = self.grow(&mut sequence, tokens);
        self.sequences[index] = Some(sequence);
        grown
    }

    fn grow(&mut self, sequence: &mut Sequence, tokens: usize) -> Result<()> {
        let needed = Self::blocks_for(tokens).saturating_sub(sequence.blocks.len());
        if needed > self.free.len() {
            return Err(Error::shape(
                "KvCache",
                format!(
                    "{tokens} positions need {needed} more blocks of {KV_BLOCK}; {} of the pool's {} are free",
                    self.free.len(),
                    self.blocks
                ),
            ));
        }
        let at = self.free.len() - needed;
        sequence.blocks.extend(self.free.drain(at..).rev());
        Ok(())
    }

    /// Counts `n` more cached positions of sequence `id` (after every layer wrote them).
    pub(crate) fn advance(&mut self, id: SeqId, n: usize) -> Result<()> {
        let index = self.index(id)?;
        let sequence = self.sequences[index].as_mut().expect("index checked it");
        sequence.len += n;
        Ok(())
    }

    /// Sequence `id`'s block table.
    pub(crate) fn table(&self, id: SeqId) -> Result<&[u32]> {
        Ok(&self.sequence(id)?.blocks)
    }

    /// The rows of a step over this cache: `rows[r] = (i, p)`, query row r at position p of
    /// sequence `sequences[i]`.
    pub(crate) fn paged_rows(
        &self,
        sequences: &[SeqId],
        rows: &[(usize, usize)],
    ) -> Result<PagedRows> {
        let tables = sequences
            .iter()
            .map(|&s| self.table(s))
            .collect::<Result<Vec<_>>>()?;
        PagedRows::new(KV_BLOCK, &tables, rows)
    }

    /// Layer `layer`'s pools of keys and values, [blocks, KV_BLOCK, Hkv, Dh] each.
    pub(crate) fn layer(&self, layer: usize) -> (&Tensor, &Tensor) {
        let (k, v) = &self.layers[layer];
        (k, v)
    }

    fn index(&self, id: SeqId) -> Result<usize> {
        self.sequence(id).map(|_| id.0)
    }

    fn sequence(&self, id: SeqId) -> Result<&Sequence> {
        self.sequences
            .get(id.0)
            .and_then(Option::as_ref)
            .ok_or_else(|| {
                Error::shape("KvCache", format!("sequence {} is not in the cache", id.0))
            })
    }
}

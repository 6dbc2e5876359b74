//! CPU reference for embedding: a row gather forward, a deterministic scatter-add
//! backward. Ids are checked against the vocabulary before these run.

use rayon::prelude::*;

use crate::backend::cpu::Element;

/// Row `p` of the output is row `ids[p]` of `weight` (`[vocab, dim]`, row-major),
/// widened to f32.
pub fn embedding_forward<T: Element>(weight: &[T], dim: usize, ids: &[u32]) -> Vec<f32> {
    let mut out = vec![0.0; ids.len() * dim];
    if dim == 0 {
        return out;
    }
    out.par_chunks_mut(dim)
        .zip(ids.par_iter())
        .for_each(|(row, &id)| {
            let start = id as usize * dim;
            for (o, w) in row.iter_mut().zip(&weight[start..start + dim]) {
                *o = w.widen();
            }
        });
    out
}

/// `dweight[v] = Σ grad[p]` over the positions `p` with `ids[p] == v`. Each vocabulary
/// row is owned by one task and sums its positions in ascending order in f64, so
/// repeated ids give the same bits however the work is split.
pub fn embedding_weight_grad(grad: &[f32], ids: &[u32], vocab: usize, dim: usize) -> Vec<f32> {
    let mut dweight = vec![0.0; vocab * dim];
    if dim == 0 {
        return dweight;
    }
    let (offsets, positions) = positions_by_id(ids, vocab);
    dweight
        .par_chunks_mut(dim)
        .enumerate()
        .for_each(|(id, row)| {
            let hits = &positions[offsets[id]..offsets[id + 1]];
            if hits.is_empty() {
                return;
            }
            let mut sum = vec![0.0f64; dim];
            for &p in hits {
                for (s, &g) in sum.iter_mut().zip(&grad[p * dim..(p + 1) * dim]) {
                    *s += g as f64;
                }
            }
            for (d, s) in row.iter_mut().zip(sum) {
                *d = s as f32;
            }
        });
    dweight
}

/// A counting sort of positions by id: `positions[offsets[v]..offsets[v + 1]]` are the
/// positions holding id `v`, ascending.
fn positions_by_id(ids: &[u32], vocab: usize) -> (Vec<usize>, Vec<usize>) {
    let mut offsets = vec![0usize; vocab + 1];
    for &id in ids {
        offsets[id as usize + 1] += 1;
    }
    for v in 0..vocab {
        offsets[v + 1] += offsets[v];
    }
    let mut cursor = offsets.clone();
    let mut positions = vec![0usize; ids.len()];
    for (p, &id) in ids.iter().enumerate() {
        positions[cursor[id as usize]] = p;
        cursor[id as usize] += 1;
    }
    (offsets, positions)
}

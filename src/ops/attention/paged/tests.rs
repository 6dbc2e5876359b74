//! paged attention and the cache write: against attention written out from its
//! definition over each sequence's keys gathered in order, on every device, with block
//! tables out of order, several rows of one sequence, contexts of several parts (the
//! combine kernel), GQA groups wider than a block serves, and bf16; and the errors.

use super::*;
use crate::backend::cuda::profile::Recorder;
use crate::ops::attention::paged_cuda::SPLIT_KEYS;
use crate::rng::Rng;
use crate::DType;

const BLOCK: usize = 4;

/// A pool of `blocks` blocks and the tables of sequences of `lens` positions, each
/// sequence's blocks scattered through the pool.
struct Pools {
    k: Vec<f32>,
    v: Vec<f32>,
    tables: Vec<Vec<u32>>,
    blocks: usize,
}

fn pools(rng: &mut Rng, lens: &[usize], width: usize) -> Pools {
    let needed: usize = lens.iter().map(|l| l.div_ceil(BLOCK)).sum();
    let blocks = needed + 3; // some never used
    let mut ids: Vec<u32> = (0..blocks as u32).collect();
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.below(i + 1));
    }
    let mut next = ids.into_iter();
    let tables = lens
        .iter()
        .map(|l| {
            (0..l.div_ceil(BLOCK))
                .map(|_| next.next().unwrap())
                .collect()
        })
        .collect();
    let n = blocks * BLOCK * width;
    Pools {
        k: rng.normal_vec(n, 1.0),
        v: rng.normal_vec(n, 1.0),
        tables,
        blocks,
    }
}

/// Query row (s, p) from the definition, in f64: softmax over sequence s's positions
/// 0..=p, read in order through its table.
fn definition(q: &[f32], pools: &Pools, (s, p): (usize, usize), dims: PagedDims) -> Vec<f32> {
    let (dh, group) = (dims.head_dim, dims.q_heads / dims.kv_heads);
    let row = |pool: &[f32], j: usize, g: usize| {
        let slot = pools.tables[s][j / BLOCK] as usize * BLOCK + j % BLOCK;
        pool[(slot * dims.kv_heads + g) * dh..][..dh].to_vec()
    };
    let mut out = Vec::new();
    for h in 0..dims.q_heads {
        let qh = &q[h * dh..][..dh];
        let scores: Vec<f64> = (0..=p)
            .map(|j| {
                let k = row(&pools.k, j, h / group);
                qh.iter()
                    .zip(&k)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>()
                    / (dh as f64).sqrt()
            })
            .collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
        let total: f64 = weights.iter().sum();
        let mut o = vec![0.0f64; dh];
        for (j, w) in weights.iter().enumerate() {
            for (o, v) in o.iter_mut().zip(row(&pools.v, j, h / group)) {
                *o += w / total * v as f64;
            }
        }
        out.extend(o.into_iter().map(|x| x as f32));
    }
    out
}

/// Paged attention of `rows` over sequences of `lens` on `device` in `dtype`, against the
/// definition: within 1e-5 in f32, within bf16's rounding of the inputs otherwise.
fn check(device: Device, dtype: DType, lens: &[usize], rows: &[(usize, usize)], dims: PagedDims) {
    let mut rng = Rng::new(lens.iter().sum::<usize>() as u64);
    let width = dims.kv_heads * dims.head_dim;
    let mut pools = pools(&mut rng, lens, width);
    let mut q = rng.normal_vec(rows.len() * dims.q_heads * dims.head_dim, 1.0);
    if dtype == DType::BF16 {
        for x in pools
            .k
            .iter_mut()
            .chain(pools.v.iter_mut())
            .chain(q.iter_mut())
        {
            *x = half::bf16::from_f32(*x).to_f32();
        }
    }
    let on = |data: &[f32], shape: Vec<usize>| {
        Tensor::from_vec(data.to_vec(), shape)
            .unwrap()
            .to(device)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    };
    let pool_shape = vec![pools.blocks, BLOCK, dims.kv_heads, dims.head_dim];
    let (k, v) = (on(&pools.k, pool_shape.clone()), on(&pools.v, pool_shape));
    let tables: Vec<&[u32]> = pools.tables.iter().map(Vec::as_slice).collect();
    let layout = PagedRows::new(BLOCK, &tables, rows).unwrap();
    let recorder = Recorder::start();
    let got = paged_attention(
        &on(&q, vec![rows.len(), dims.q_heads, dims.head_dim]),
        &k,
        &v,
        &layout,
    )
    .unwrap()
    .to_vec_f32()
    .unwrap();
    if device.is_gpu() {
        let suffix = if dtype == DType::BF16 { "bf16" } else { "f32" };
        assert_eq!(
            recorder.launches(&format!("paged_attention_decode_{suffix}")),
            1
        );
        let parts = layout.max_context().div_ceil(SPLIT_KEYS);
        let combined = recorder.launches(&format!("paged_attention_combine_{suffix}"));
        assert_eq!(combined, usize::from(parts > 1), "{:?}", recorder.kernels());
    }
    let tolerance = if dtype == DType::BF16 { 8e-3 } else { 1e-5 };
    let row_width = dims.q_heads * dims.head_dim;
    for (r, &place) in rows.iter().enumerate() {
        let want = definition(&q[r * row_width..][..row_width], &pools, place, dims);
        for (i, (g, w)) in got[r * row_width..][..row_width]
            .iter()
            .zip(&want)
            .enumerate()
        {
            assert!(
                (g - w).abs() <= tolerance,
                "{device} {dtype:?} row {r} {place:?} [{i}]: {g} vs {w}"
            );
        }
    }
}

const GQA: PagedDims = PagedDims {
    q_heads: 6,
    kv_heads: 2,
    head_dim: 8,
};

crate::device_tests! {
    /// Three sequences: one decoding, one with three rows continuing its cache, one at
    /// position 0; head dims 8 and 64 (two columns a lane).
    fn paged_attention_follows_the_definition(device: Device) {
        let rows = [(0, 10), (1, 3), (1, 4), (1, 5), (2, 0)];
        for head_dim in [8, 64] {
            check(device, DType::F32, &[11, 6, 1], &rows, PagedDims { head_dim, ..GQA });
        }
    }
}

crate::device_tests! {
    /// Contexts of one, two and three parts in one call: the parts merged by their
    /// maxima and sums, and the short rows unchanged by the grid's extra parts.
    fn paged_attention_over_contexts_of_several_parts(device: Device) {
        let long = 2 * SPLIT_KEYS + 37;
        let rows = [(0, long - 1), (1, SPLIT_KEYS), (2, 5)];
        check(device, DType::F32, &[long, SPLIT_KEYS + 1, 6], &rows, GQA);
    }
}

crate::device_tests! {
    /// 20 query heads on one KV head (three chunks of at most 8 a block), and multi-head
    /// attention at head dim 128.
    fn paged_attention_with_wide_groups_and_head_dim_128(device: Device) {
        let wide = PagedDims { q_heads: 20, kv_heads: 1, head_dim: 16 };
        check(device, DType::F32, &[9, 3], &[(0, 8), (1, 2)], wide);
        let mha = PagedDims { q_heads: 3, kv_heads: 3, head_dim: 128 };
        check(device, DType::F32, &[7], &[(0, 6)], mha);
    }
}

crate::gpu_tests! {
    fn paged_attention_in_bf16(device: Device) {
        let long = SPLIT_KEYS + 20;
        check(device, DType::BF16, &[long, 5], &[(0, long - 1), (1, 4)], PagedDims { head_dim: 64, ..GQA });
    }
}

crate::device_tests! {
    /// Each new row lands at its position's pool row; the rest of the pool is untouched.
    fn kv_cache_write_puts_rows_at_their_slots(device: Device) {
        let (kv_heads, head_dim, blocks) = (2, 3, 4);
        let width = kv_heads * head_dim;
        let tables: [&[u32]; 2] = [&[2, 0], &[3]];
        let rows = [(0, 3), (0, 4), (1, 1)]; // pool rows 2·4+3, 0·4+0, 3·4+1
        let layout = PagedRows::new(BLOCK, &tables, &rows).unwrap();
        let pool = || Tensor::zeros_on([blocks, BLOCK, kv_heads, head_dim], DType::F32, device).unwrap();
        let (k_pool, v_pool) = (pool(), pool());
        let new = |sign: f32| {
            let data = (0..rows.len() * width).map(|i| sign * (i + 1) as f32).collect();
            Tensor::from_vec(data, [rows.len(), kv_heads, head_dim]).unwrap().to(device).unwrap()
        };
        let (k_new, v_new) = (new(1.0), new(-1.0));
        let recorder = Recorder::start();
        kv_cache_write(&k_pool, &v_pool, &k_new, &v_new, &layout).unwrap();
        let launched = recorder.launches("kv_cache_write_f32");
        assert_eq!(launched, usize::from(device.is_gpu()), "{:?}", recorder.kernels());
        let (k, v) = (k_pool.to_vec_f32().unwrap(), v_pool.to_vec_f32().unwrap());
        for (r, slot) in [11, 0, 13].into_iter().enumerate() {
            for e in 0..width {
                let want = (r * width + e + 1) as f32;
                assert_eq!((k[slot * width + e], v[slot * width + e]), (want, -want), "row {r}");
            }
        }
        let written = 3 * width;
        assert_eq!(k.iter().filter(|&&x| x != 0.0).count(), written);
    }
}

#[test]
fn rows_past_their_tables_and_tables_past_the_pool_are_errors() {
    let err = PagedRows::new(BLOCK, &[&[0]], &[(0, 4)])
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("position 4") && err.contains("1 blocks"),
        "{err}"
    );
    let err = PagedRows::new(BLOCK, &[&[0]], &[(1, 0)])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("sequence 1"), "{err}");
    let layout = PagedRows::new(BLOCK, &[&[5]], &[(0, 0)]).unwrap();
    let pool = Tensor::zeros([2, BLOCK, 1, 8], DType::F32);
    let q = Tensor::zeros([1, 2, 8], DType::F32);
    let err = paged_attention(&q, &pool, &pool, &layout)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("block 5") && err.contains("pool of 2"),
        "{err}"
    );
    let layout = PagedRows::new(BLOCK, &[&[1]], &[(0, 0)]).unwrap();
    let err = paged_attention(
        &Tensor::zeros([1, 3, 8], DType::F32),
        &Tensor::zeros([2, BLOCK, 2, 8], DType::F32),
        &Tensor::zeros([2, BLOCK, 2, 8], DType::F32),
        &layout,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("multiple"), "{err}");
}

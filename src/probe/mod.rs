//! Probes: named sites inside the model's forward that a caller can record and modify
//! (zero, replace with another run's value, add a steering vector) without touching the
//! model code. The forward passes each site's tensor through [`Probes::visit`] when it
//! was given probes, and straight on when not: an unused probe costs one branch per site.
//!
//! On top of the API: recording to safetensors (`record`), attention maps, the logit lens,
//! linear probes and activation patching (`scotd probe …`). Probes run on every device:
//! a recording is the forward's own tensor (on the model's device, in its dtype; read it
//! with [`Tensor::to_vec_f32`]), and an intervention reads the site's value back to the
//! host, changes it there and puts the result where the value was.

pub mod attention;
pub mod lens;
pub mod linear;
pub mod patch;
pub mod plot;
pub mod record;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use crate::{Error, Result, Tensor};

/// What a site holds. Rows are tokens ([B·T, …]) except for `AttnProbs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SiteKind {
    /// The residual stream entering a layer [n, hidden].
    ResidPre,
    /// Rotated queries [n, Hq·Dh] and keys [n, Hkv·Dh].
    Queries,
    Keys,
    /// Attention probabilities per head [B, Hq, T, T] (recorded only).
    AttnProbs,
    /// The attention's per-head output before o_proj [n, Hq·Dh] (heads can be patched).
    AttnHeads,
    /// The attention block's output after o_proj [n, hidden].
    AttnOut,
    /// The residual stream between the attention and the MLP [n, hidden].
    ResidMid,
    /// The MLP's output [n, hidden].
    MlpOut,
    /// The residual stream leaving a layer [n, hidden].
    ResidPost,
    /// After the final norm [n, hidden] (no layer).
    FinalNorm,
    /// The logits [n, vocab] (no layer).
    Logits,
}

const KINDS: [(&str, SiteKind); 11] = [
    ("resid_pre", SiteKind::ResidPre),
    ("q", SiteKind::Queries),
    ("k", SiteKind::Keys),
    ("attn_probs", SiteKind::AttnProbs),
    ("attn_heads", SiteKind::AttnHeads),
    ("attn_out", SiteKind::AttnOut),
    ("resid_mid", SiteKind::ResidMid),
    ("mlp_out", SiteKind::MlpOut),
    ("resid_post", SiteKind::ResidPost),
    ("final_norm", SiteKind::FinalNorm),
    ("logits", SiteKind::Logits),
];

impl SiteKind {
    pub fn name(self) -> &'static str {
        KINDS
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(n, _)| *n)
            .expect("every kind is named")
    }

    /// Whether the site belongs to a layer (all but the final norm and the logits).
    pub fn per_layer(self) -> bool {
        !matches!(self, SiteKind::FinalNorm | SiteKind::Logits)
    }
}

/// One site: a kind, and its layer when it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Site {
    pub kind: SiteKind,
    pub layer: Option<usize>,
}

impl Site {
    pub fn layer(kind: SiteKind, layer: usize) -> Site {
        Site {
            kind,
            layer: Some(layer),
        }
    }

    pub fn last(kind: SiteKind) -> Site {
        Site { kind, layer: None }
    }

    /// Every site a spec names for a model of `layers` layers: `resid_post.3`,
    /// `resid_post.*` or `resid_post` (every layer), `logits`; comma-separated lists.
    pub fn parse_list(spec: &str, layers: usize) -> Result<Vec<Site>> {
        let mut out = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, layer) = part
                .split_once('.')
                .map_or((part, None), |(n, l)| (n, Some(l)));
            let kind = kind_named(name)?;
            match (kind.per_layer(), layer) {
                (false, None) => out.push(Site::last(kind)),
                (false, Some(_)) => {
                    return Err(bad_site(part, format!("{name} has no layer")));
                }
                (true, None | Some("*")) => out.extend((0..layers).map(|l| Site::layer(kind, l))),
                (true, Some(l)) => {
                    let l: usize = l
                        .parse()
                        .map_err(|_| bad_site(part, "the layer must be a number or *".into()))?;
                    if l >= layers {
                        let msg = format!(
                            "layer {l} is out of range: the model has {layers} (0 to {})",
                            layers - 1
                        );
                        return Err(bad_site(part, msg));
                    }
                    out.push(Site::layer(kind, l));
                }
            }
        }
        if out.is_empty() {
            return Err(bad_site(spec, "no site named".into()));
        }
        Ok(out)
    }
}

fn kind_named(name: &str) -> Result<SiteKind> {
    KINDS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| *k)
        .ok_or_else(|| {
            let known: Vec<&str> = KINDS.iter().map(|(n, _)| *n).collect();
            bad_site(
                name,
                format!("unknown site, expected one of {}", known.join(", ")),
            )
        })
}

fn bad_site(what: &str, msg: String) -> Error {
    Error::format("--sites", what, msg)
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.layer {
            Some(l) => write!(f, "{}.{l}", self.kind.name()),
            None => write!(f, "{}", self.kind.name()),
        }
    }
}

impl FromStr for Site {
    type Err = Error;

    /// One site with its layer (`attn_out.2`, `logits`).
    fn from_str(s: &str) -> Result<Site> {
        let (name, layer) = s.split_once('.').map_or((s, None), |(n, l)| (n, Some(l)));
        let kind = kind_named(name)?;
        let layer = layer
            .map(|l| {
                l.parse()
                    .map_err(|_| bad_site(s, "expected a layer number".into()))
            })
            .transpose()?;
        if kind.per_layer() != layer.is_some() {
            return Err(bad_site(
                s,
                "per-layer sites take a layer, the others none".into(),
            ));
        }
        Ok(Site { kind, layer })
    }
}

/// A change made to a site's value as the forward passes it.
#[derive(Clone, Debug)]
pub enum Intervention {
    /// Every element set to zero.
    Zero,
    /// The value replaced by `value` (same shape), or, with `head`, only that head's
    /// columns of a per-head site ([n, H·Dh]).
    Replace { value: Tensor, head: Option<usize> },
    /// `scale · vector` added to every row (a steering vector of the site's width).
    Add { vector: Vec<f32>, scale: f32 },
}

/// The sites to record and to modify during one forward, and what was recorded.
#[derive(Default)]
pub struct Probes {
    record: BTreeSet<Site>,
    interventions: BTreeMap<Site, Intervention>,
    /// Each recorded site's value (after its intervention, if any), on the model's
    /// device; attention probabilities are computed on the host, in f32.
    pub recorded: BTreeMap<Site, Tensor>,
    /// The head dim of the model running the probes (set by its forward), so a head
    /// intervention knows its columns.
    pub(crate) head_dim: usize,
}

impl Probes {
    /// Probes that record `sites`.
    pub fn recording(sites: impl IntoIterator<Item = Site>) -> Probes {
        Probes {
            record: sites.into_iter().collect(),
            ..Probes::default()
        }
    }

    /// Adds an intervention at `site` (replacing any earlier one there).
    pub fn intervene(&mut self, site: Site, intervention: Intervention) -> &mut Probes {
        self.interventions.insert(site, intervention);
        self
    }

    /// Whether the forward must compute `site` (attention probabilities are computed only
    /// for this).
    pub fn wants(&self, site: Site) -> bool {
        self.record.contains(&site) || self.interventions.contains_key(&site)
    }

    /// The site's value as the forward continues with it: modified if an intervention is
    /// set there, recorded if asked.
    pub fn visit(&mut self, site: Site, value: Tensor) -> Result<Tensor> {
        let value = match self.interventions.get(&site) {
            Some(i) => apply(i, &value, site, self.head_dim)?,
            None => value,
        };
        if self.record.contains(&site) {
            self.recorded.insert(site, value.clone());
        }
        Ok(value)
    }
}

/// Passes `value` through `probes` when there are any (the model's hook at each site).
pub(crate) fn visit(probes: &mut Option<&mut Probes>, site: Site, value: Tensor) -> Result<Tensor> {
    match probes {
        Some(p) => p.visit(site, value),
        None => Ok(value),
    }
}

/// As [`visit`], for a tensor whose site is seen as rows of `shape` ([n, H·Dh] for q and
/// k, kept [n, H, Dh] by the model); nothing is reshaped without probes.
pub(crate) fn visit_rows(
    probes: &mut Option<&mut Probes>,
    site: Site,
    value: Tensor,
    shape: [usize; 2],
) -> Result<Tensor> {
    match probes {
        Some(p) => {
            let dims = value.dims().to_vec();
            p.visit(site, value.reshape(shape)?)?.reshape(dims)
        }
        None => Ok(value),
    }
}

fn apply(
    intervention: &Intervention,
    value: &Tensor,
    site: Site,
    head_dim: usize,
) -> Result<Tensor> {
    if site.kind == SiteKind::AttnProbs {
        let msg = "attention probabilities are recorded only; patch attn_heads instead";
        return Err(Error::shape("probe", format!("{site}: {msg}")));
    }
    let dims = value.dims().to_vec();
    let mut data = value.to_vec_f32()?;
    let width = *dims.last().unwrap_or(&1);
    match intervention {
        Intervention::Zero => data.fill(0.0),
        Intervention::Add { vector, scale } => {
            check_width(site, vector.len(), width)?;
            for row in data.chunks_mut(width.max(1)) {
                row.iter_mut()
                    .zip(vector)
                    .for_each(|(x, v)| *x += scale * v);
            }
        }
        Intervention::Replace { value: new, head } => {
            if new.dims() != dims.as_slice() {
                let msg = format!("the replacement is {:?}, the site {dims:?}", new.dims());
                return Err(Error::shape("probe", format!("{site}: {msg}")));
            }
            let new = new.to_vec_f32()?;
            match head {
                None => data.copy_from_slice(&new),
                Some(h) => replace_head(&mut data, &new, (*h, head_dim), width, site)?,
            }
        }
    }
    tensor_like(data, dims, value)
}

/// `data` as a tensor of `dims` on `like`'s device, in its dtype: an intervention's result
/// continues the forward where the site's value was.
fn tensor_like(data: Vec<f32>, dims: Vec<usize>, like: &Tensor) -> Result<Tensor> {
    let t = Tensor::from_vec(data, dims)?.to(like.device())?;
    if t.dtype() == like.dtype() {
        Ok(t)
    } else {
        t.to_dtype(like.dtype())
    }
}

fn check_width(site: Site, got: usize, width: usize) -> Result<()> {
    if got != width {
        let msg = format!("a steering vector of {got} for rows of {width}");
        return Err(Error::shape("probe", format!("{site}: {msg}")));
    }
    Ok(())
}

/// Head `head`'s columns of each row; the site's heads are its rows' equal parts.
fn replace_head(
    data: &mut [f32],
    new: &[f32],
    (head, head_dim): (usize, usize),
    width: usize,
    site: Site,
) -> Result<()> {
    let has_heads = matches!(
        site.kind,
        SiteKind::AttnHeads | SiteKind::Queries | SiteKind::Keys
    );
    if !has_heads {
        return Err(Error::shape(
            "probe",
            format!("{site} has no heads to patch one of"),
        ));
    }
    if head_dim == 0 || !width.is_multiple_of(head_dim) || head >= width / head_dim {
        return Err(Error::shape("probe", format!("{site}: no head {head}")));
    }
    let cols = head * head_dim..(head + 1) * head_dim;
    for (row, new_row) in data.chunks_mut(width).zip(new.chunks(width)) {
        row[cols.clone()].copy_from_slice(&new_row[cols.clone()]);
    }
    Ok(())
}

//! Loading a model directory and running its ONNX decoder with past key/values.
//!
//! The directory holds `model.onnx` in the Hugging Face Optimum decoder-with-past layout
//! (`input_ids`, `attention_mask`, optional `position_ids`, `past_key_values.N.{key,value}` →
//! `logits`, `present.N.{key,value}`), `tokenizer.json`, `config.json`, and a chat template
//! (`chat_template.jinja`, or `chat_template` in `tokenizer_config.json`). Layer count, head
//! count and head size come from `config.json` (GPT-2 and Llama key names both work) and are
//! checked against the graph's inputs.

use std::path::{Path, PathBuf};

use ort::session::{Session, SessionInputValue};
use ort::value::Tensor;
use serde_json::Value;

/// Why a model could not be loaded or run.
#[derive(Debug)]
pub enum ModelError {
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    Config(String),
    Tokenizer(String),
    Template(String),
    Runtime(String),
}

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            ModelError::Config(m) => write!(f, "model config: {m}"),
            ModelError::Tokenizer(m) => write!(f, "tokenizer: {m}"),
            ModelError::Template(m) => write!(f, "chat template: {m}"),
            ModelError::Runtime(m) => write!(f, "onnx runtime: {m}"),
        }
    }
}

impl std::error::Error for ModelError {}

impl From<ort::Error> for ModelError {
    fn from(e: ort::Error) -> Self {
        ModelError::Runtime(e.to_string())
    }
}

/// Shape facts the engine needs.
#[derive(Debug, Clone)]
pub struct ModelShape {
    pub n_layer: usize,
    /// Key/value heads (fewer than query heads for grouped-query attention).
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub max_positions: usize,
    pub eos_token_ids: Vec<u32>,
    pub has_position_ids: bool,
}

impl ModelShape {
    /// A cache with no positions yet, shaped for this model.
    pub fn empty_cache(&self) -> crate::kv::SeqKv {
        crate::kv::SeqKv::empty(self.n_layer, self.n_kv_head, self.head_dim, 0)
    }

    /// Bytes of KV cache one token occupies (keys and values, all layers, f32).
    pub fn kv_bytes_per_token(&self) -> usize {
        2 * self.n_layer * self.n_kv_head * self.head_dim * 4
    }
}

fn read(path: &Path) -> Result<String, ModelError> {
    std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn usize_of(cfg: &Value, keys: &[&str]) -> Option<usize> {
    keys.iter()
        .find_map(|k| cfg.get(*k).and_then(Value::as_u64))
        .map(|n| n as usize)
}

/// Parse `config.json` into the facts the engine needs.
pub fn read_shape(dir: &Path) -> Result<ModelShape, ModelError> {
    let cfg: Value = serde_json::from_str(&read(&dir.join("config.json"))?)
        .map_err(|e| ModelError::Config(format!("config.json: {e}")))?;
    let n_layer = usize_of(&cfg, &["n_layer", "num_hidden_layers"])
        .ok_or_else(|| ModelError::Config("no n_layer / num_hidden_layers".into()))?;
    let n_head = usize_of(&cfg, &["n_head", "num_attention_heads"])
        .ok_or_else(|| ModelError::Config("no n_head / num_attention_heads".into()))?;
    let n_kv_head = usize_of(&cfg, &["num_key_value_heads", "n_kv_head"]).unwrap_or(n_head);
    let hidden = usize_of(&cfg, &["d_model", "n_embd", "hidden_size"]);
    let head_dim = usize_of(&cfg, &["head_dim"])
        .or_else(|| hidden.map(|h| h / n_head.max(1)))
        .ok_or_else(|| ModelError::Config("no head_dim / hidden size".into()))?;
    let vocab_size = usize_of(&cfg, &["vocab_size"])
        .ok_or_else(|| ModelError::Config("no vocab_size".into()))?;
    let max_positions =
        usize_of(&cfg, &["max_position_embeddings", "n_positions", "n_ctx"]).unwrap_or(2048);
    let eos_token_ids = match cfg.get("eos_token_id") {
        Some(Value::Number(n)) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|n| n as u32)
            .collect(),
        _ => Vec::new(),
    };
    Ok(ModelShape {
        n_layer,
        n_kv_head,
        head_dim,
        vocab_size,
        max_positions,
        eos_token_ids,
        has_position_ids: true,
    })
}

/// The chat template source: `chat_template.jinja`, else `tokenizer_config.json`'s field.
pub fn read_chat_template(dir: &Path) -> Result<String, ModelError> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.exists() {
        return read(&jinja);
    }
    let tc = dir.join("tokenizer_config.json");
    if tc.exists() {
        let v: Value = serde_json::from_str(&read(&tc)?)
            .map_err(|e| ModelError::Template(format!("tokenizer_config.json: {e}")))?;
        if let Some(t) = v.get("chat_template").and_then(Value::as_str) {
            return Ok(t.to_string());
        }
    }
    Err(ModelError::Template(format!(
        "no chat_template.jinja or tokenizer_config.json chat_template in {}",
        dir.display()
    )))
}

/// What a prefill returns.
pub struct SeqOutput {
    /// Logits of the last new position.
    pub logits: Vec<f32>,
    /// `present.{layer}.{key,value}` (batch 1): the cache, `len` positions; see
    /// [`Model::cache_of`].
    pub presents: Vec<ort::value::DynValue>,
    pub len: usize,
}

/// A sequence in a decode step.
pub struct DecodeSeq<'a> {
    /// Stable id of the sequence (the engine's).
    pub id: u64,
    /// The token to feed.
    pub token: u32,
    /// The sequence's cache. While the sequence stays in an unchanged batch its cache lives in
    /// the model's resident tensors and this copy is stale; it is brought up to date
    /// (materialised) whenever the batch changes.
    pub kv: &'a mut crate::kv::SeqKv,
}

/// The previous decode step's `present` tensors, kept as they are while the batch composition
/// does not change, and fed straight back as the next step's `past` — no per-step copy of every
/// sequence's cache in and out.
struct Resident {
    ids: Vec<u64>,
    /// Each sequence's cache length in the tensors.
    lens: Vec<usize>,
    /// Padded length of the tensors (sequences are left-padded to it).
    total: usize,
    /// `present.{layer}.{key,value}` in order: index `2 * layer + pick`.
    presents: Vec<ort::value::DynValue>,
}

/// An ONNX decoder session.
pub struct Model {
    session: Session,
    pub shape: ModelShape,
    resident: Option<Resident>,
}

impl Model {
    pub fn load(
        dir: &Path,
        env: &ort::environment::Environment,
        threads: usize,
    ) -> Result<Model, ModelError> {
        let mut shape = read_shape(dir)?;
        let path = dir.join("model.onnx");
        if !path.exists() {
            return Err(ModelError::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "model.onnx not found"),
            });
        }
        // No busy-spinning between ops: the worker shares a few cores with its HTTP side (and,
        // as a sidecar, with the proxy), and spinning threads steal their time.
        let session = Session::builder(env)?
            .with_intra_threads(threads)
            .map_err(|e| ModelError::Runtime(e.to_string()))?
            .with_intra_op_spinning(false)
            .map_err(|e| ModelError::Runtime(e.to_string()))?
            .commit_from_file(&path)?;
        let names: Vec<String> = session
            .inputs()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        for required in ["input_ids", "attention_mask"] {
            if !names.iter().any(|n| n == required) {
                return Err(ModelError::Config(format!(
                    "model.onnx has no input {required:?}"
                )));
            }
        }
        shape.has_position_ids = names.iter().any(|n| n == "position_ids");
        let layers = names
            .iter()
            .filter(|n| n.starts_with("past_key_values.") && n.ends_with(".key"))
            .count();
        if layers != shape.n_layer {
            return Err(ModelError::Config(format!(
                "config.json says {} layers but model.onnx has {layers} past_key_values inputs",
                shape.n_layer
            )));
        }
        Ok(Model {
            session,
            shape,
            resident: None,
        })
    }

    /// One decode step (one new token each) for a batch, returning each sequence's logits.
    ///
    /// When the batch is the same as the previous step's (same ids, same order) the previous
    /// `present` tensors are the new `past` as they are. Otherwise the previous batch's caches are
    /// first copied out to the sequences still running, and the batch is built from their caches.
    pub fn decode(&mut self, seqs: &mut [DecodeSeq<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        let ids: Vec<u64> = seqs.iter().map(|x| x.id).collect();
        let same = self.resident.as_ref().is_some_and(|r| r.ids == ids);
        if !same {
            if let Some(r) = self.resident.take() {
                self.materialize(&r, seqs)?;
            }
        }
        let s = &self.shape;
        let (h, d) = (s.n_kv_head, s.head_dim);
        let b = seqs.len();
        let (lens, past_total, past): (Vec<usize>, usize, Vec<ort::value::DynValue>) = match self
            .resident
            .take()
        {
            Some(r) => (r.lens, r.total, r.presents),
            None => {
                let lens: Vec<usize> = seqs.iter().map(|x| x.kv.len).collect();
                let total = lens.iter().copied().max().unwrap_or(0);
                let mut past = Vec::with_capacity(2 * s.n_layer);
                for layer in 0..s.n_layer {
                    for pick in 0..2 {
                        let mut data = Vec::with_capacity(b * h * total * d);
                        for x in seqs.iter() {
                            let src = x.kv.layer(layer, pick);
                            let len = x.kv.len;
                            for head in 0..h {
                                data.resize(data.len() + (total - len) * d, 0.0);
                                data.extend_from_slice(&src[head * len * d..(head + 1) * len * d]);
                            }
                        }
                        let shape = vec![b as i64, h as i64, total as i64, d as i64];
                        past.push(Tensor::from_array((shape, data))?.into_dyn());
                    }
                }
                (lens, total, past)
            }
        };
        let total = past_total + 1;
        let mut mask = vec![0i64; b * total];
        for (i, len) in lens.iter().enumerate() {
            for m in &mut mask[i * total + (past_total - len)..(i + 1) * total] {
                *m = 1;
            }
        }
        let mut inputs: Vec<(std::borrow::Cow<'static, str>, SessionInputValue<'static>)> =
            Vec::new();
        let input_ids: Vec<i64> = seqs.iter().map(|x| i64::from(x.token)).collect();
        inputs.push((
            "input_ids".into(),
            Tensor::from_array((vec![b as i64, 1], input_ids))?.into(),
        ));
        inputs.push((
            "attention_mask".into(),
            Tensor::from_array((vec![b as i64, total as i64], mask))?.into(),
        ));
        if s.has_position_ids {
            let pos: Vec<i64> = lens.iter().map(|l| *l as i64).collect();
            inputs.push((
                "position_ids".into(),
                Tensor::from_array((vec![b as i64, 1], pos))?.into(),
            ));
        }
        let n_layer = s.n_layer;
        for (k, value) in past.into_iter().enumerate() {
            let kind = if k % 2 == 0 { "key" } else { "value" };
            inputs.push((
                format!("past_key_values.{}.{kind}", k / 2).into(),
                value.into(),
            ));
        }
        let mut outputs = self.session.run(inputs)?;
        let (lshape, logits) = outputs["logits"].try_extract_tensor::<f32>()?;
        let vocab = lshape.last().copied().unwrap_or(0) as usize;
        let per_seq: Vec<Vec<f32>> = (0..b)
            .map(|i| logits[i * vocab..(i + 1) * vocab].to_vec())
            .collect();
        let mut presents = Vec::with_capacity(2 * n_layer);
        for layer in 0..n_layer {
            for kind in ["key", "value"] {
                let name = format!("present.{layer}.{kind}");
                presents.push(outputs.remove(name.as_str()).ok_or_else(|| {
                    ModelError::Runtime(format!("model.onnx produced no {name}"))
                })?);
            }
        }
        drop(outputs);
        self.resident = Some(Resident {
            ids,
            lens: lens.iter().map(|l| l + 1).collect(),
            total,
            presents,
        });
        Ok(per_seq)
    }

    /// Copy each still-running sequence's cache out of the resident tensors.
    fn materialize(&self, r: &Resident, seqs: &mut [DecodeSeq<'_>]) -> Result<(), ModelError> {
        let (h, d, n_layer) = (
            self.shape.n_kv_head,
            self.shape.head_dim,
            self.shape.n_layer,
        );
        let tensors: Vec<&[f32]> = r
            .presents
            .iter()
            .map(|v| v.try_extract_tensor::<f32>().map(|(_, data)| data))
            .collect::<Result<_, _>>()?;
        for x in seqs.iter_mut() {
            let Some(i) = r.ids.iter().position(|id| *id == x.id) else {
                continue; // joined this step: its cache is already current
            };
            let len = r.lens[i];
            let pad = r.total - len;
            let layers = (0..n_layer)
                .map(|layer| {
                    [0, 1].map(|pick| {
                        let src = tensors[2 * layer + pick];
                        let mut out = Vec::with_capacity(h * len * d);
                        for head in 0..h {
                            let s0 = ((i * h + head) * r.total + pad) * d;
                            out.extend_from_slice(&src[s0..s0 + len * d]);
                        }
                        out
                    })
                })
                .collect();
            *x.kv = crate::kv::SeqKv::from_layers(h, d, len, layers);
        }
        Ok(())
    }

    /// Forget the resident batch (after a failed step, its tensors may not match the sequences).
    pub fn reset(&mut self) {
        self.resident = None;
    }

    /// Prefill one sequence: run `tokens` on top of `past`, whose buffers are moved into the
    /// input tensors (a single unpadded sequence already has the tensor layout), so a long cached
    /// prefix is not copied again.
    pub fn prefill(
        &mut self,
        tokens: &[u32],
        past: crate::kv::SeqKv,
    ) -> Result<SeqOutput, ModelError> {
        let s = &self.shape;
        let (h, d) = (s.n_kv_head, s.head_dim);
        let (t, past_len) = (tokens.len(), past.len);
        let total = past_len + t;
        let mut inputs: Vec<(std::borrow::Cow<'static, str>, SessionInputValue<'static>)> =
            Vec::new();
        let ids: Vec<i64> = tokens.iter().map(|&x| i64::from(x)).collect();
        inputs.push((
            "input_ids".into(),
            Tensor::from_array((vec![1, t as i64], ids))?.into(),
        ));
        inputs.push((
            "attention_mask".into(),
            Tensor::from_array((vec![1, total as i64], vec![1i64; total]))?.into(),
        ));
        if s.has_position_ids {
            let pos: Vec<i64> = (past_len..total).map(|p| p as i64).collect();
            inputs.push((
                "position_ids".into(),
                Tensor::from_array((vec![1, t as i64], pos))?.into(),
            ));
        }
        for (layer, kv) in past.into_layers().into_iter().enumerate() {
            for (kind, data) in ["key", "value"].into_iter().zip(kv) {
                let shape = vec![1, h as i64, past_len as i64, d as i64];
                inputs.push((
                    format!("past_key_values.{layer}.{kind}").into(),
                    Tensor::from_array((shape, data))?.into(),
                ));
            }
        }
        let mut outputs = self.session.run(inputs)?;
        let (lshape, logits) = outputs["logits"].try_extract_tensor::<f32>()?;
        let vocab = lshape.last().copied().unwrap_or(0) as usize;
        let row = (t - 1) * vocab;
        let logits = logits[row..row + vocab].to_vec();
        let mut presents = Vec::with_capacity(2 * s.n_layer);
        for layer in 0..s.n_layer {
            for kind in ["key", "value"] {
                let name = format!("present.{layer}.{kind}");
                presents.push(outputs.remove(name.as_str()).ok_or_else(|| {
                    ModelError::Runtime(format!("model.onnx produced no {name}"))
                })?);
            }
        }
        Ok(SeqOutput {
            logits,
            presents,
            len: total,
        })
    }

    /// The cache held in a prefill's `present` tensors, as the sequence's own buffers. Separate
    /// from [`Model::prefill`] so the first token can be sent before this copy is made.
    pub fn cache_of(&self, out: &SeqOutput) -> Result<crate::kv::SeqKv, ModelError> {
        let (h, d) = (self.shape.n_kv_head, self.shape.head_dim);
        let mut layers = Vec::with_capacity(self.shape.n_layer);
        for pair in out.presents.chunks(2) {
            let mut kv = [Vec::new(), Vec::new()];
            for (pick, value) in pair.iter().enumerate() {
                let (_, data) = value.try_extract_tensor::<f32>()?;
                kv[pick] = data[..h * out.len * d].to_vec();
            }
            layers.push(kv);
        }
        Ok(crate::kv::SeqKv::from_layers(h, d, out.len, layers))
    }
}

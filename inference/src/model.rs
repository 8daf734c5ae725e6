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

/// One sequence's input to a forward pass.
pub struct SeqInput<'a> {
    /// New tokens to run (the whole prompt remainder for a prefill, one token for a decode).
    pub tokens: &'a [u32],
    /// This sequence's cached keys/values: per layer, `[n_kv_head, past_len, head_dim]`.
    pub past: &'a crate::kv::SeqKv,
}

/// What a forward pass returns per sequence.
pub struct SeqOutput {
    /// Logits of the last new position.
    pub logits: Vec<f32>,
    /// The sequence's new cache: `past_len + tokens.len()` positions.
    pub kv: crate::kv::SeqKv,
}

/// An ONNX decoder session.
pub struct Model {
    session: Session,
    pub shape: ModelShape,
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
        let session = Session::builder(env)?
            .with_intra_threads(threads)
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
        Ok(Model { session, shape })
    }

    /// Run a batch. All sequences must have the same number of new tokens (1 for decode steps;
    /// prefills run one sequence at a time). Pasts of different lengths are left-padded and
    /// masked.
    pub fn forward(&mut self, batch: &[SeqInput<'_>]) -> Result<Vec<SeqOutput>, ModelError> {
        let s = &self.shape;
        let b = batch.len();
        let Some(first) = batch.first() else {
            return Ok(Vec::new());
        };
        let t = first.tokens.len();
        if batch.iter().any(|x| x.tokens.len() != t) || t == 0 {
            return Err(ModelError::Runtime(
                "batch sequences must share a non-zero new-token count".into(),
            ));
        }
        let past_max = batch.iter().map(|x| x.past.len).max().unwrap_or(0);
        let total = past_max + t;

        let mut input_ids = Vec::with_capacity(b * t);
        let mut position_ids = Vec::with_capacity(b * t);
        let mut mask = vec![0i64; b * total];
        for (i, x) in batch.iter().enumerate() {
            input_ids.extend(x.tokens.iter().map(|&id| i64::from(id)));
            position_ids.extend((0..t).map(|j| (x.past.len + j) as i64));
            let pad = past_max - x.past.len;
            for m in &mut mask[i * total + pad..(i + 1) * total] {
                *m = 1;
            }
        }
        let mut inputs: Vec<(std::borrow::Cow<'static, str>, SessionInputValue<'static>)> =
            Vec::new();
        inputs.push((
            "input_ids".into(),
            Tensor::from_array((vec![b as i64, t as i64], input_ids))?.into(),
        ));
        inputs.push((
            "attention_mask".into(),
            Tensor::from_array((vec![b as i64, total as i64], mask))?.into(),
        ));
        if s.has_position_ids {
            inputs.push((
                "position_ids".into(),
                Tensor::from_array((vec![b as i64, t as i64], position_ids))?.into(),
            ));
        }
        let (h, d) = (s.n_kv_head, s.head_dim);
        for layer in 0..s.n_layer {
            for (kind, pick) in [("key", 0usize), ("value", 1usize)] {
                // Built by appending, so only the left padding is written twice (it is masked).
                let mut data = Vec::with_capacity(b * h * past_max * d);
                for x in batch {
                    let src = x.past.layer(layer, pick);
                    let len = x.past.len;
                    let pad = (past_max - len) * d;
                    for head in 0..h {
                        data.resize(data.len() + pad, 0.0);
                        data.extend_from_slice(&src[head * len * d..(head + 1) * len * d]);
                    }
                }
                let shape = vec![b as i64, h as i64, past_max as i64, d as i64];
                inputs.push((
                    format!("past_key_values.{layer}.{kind}").into(),
                    Tensor::from_array((shape, data))?.into(),
                ));
            }
        }

        let outputs = self.session.run(inputs)?;
        let (lshape, logits) = outputs["logits"].try_extract_tensor::<f32>()?;
        let vocab = lshape.last().copied().unwrap_or(0) as usize;
        let mut kvs: Vec<Vec<[Vec<f32>; 2]>> = batch
            .iter()
            .map(|x| {
                let size = h * (x.past.len + t) * d;
                (0..s.n_layer)
                    .map(|_| [Vec::with_capacity(size), Vec::with_capacity(size)])
                    .collect()
            })
            .collect();
        for layer in 0..s.n_layer {
            for (kind, pick) in [("key", 0usize), ("value", 1usize)] {
                let (_, present) = outputs[format!("present.{layer}.{kind}").as_str()]
                    .try_extract_tensor::<f32>()?;
                for (i, x) in batch.iter().enumerate() {
                    let len = x.past.len + t;
                    let pad = total - len;
                    let dst = &mut kvs[i][layer][pick];
                    for head in 0..h {
                        let src0 = ((i * h + head) * total + pad) * d;
                        dst.extend_from_slice(&present[src0..src0 + len * d]);
                    }
                }
            }
        }
        let out = batch
            .iter()
            .zip(kvs)
            .enumerate()
            .map(|(i, (x, layers))| {
                let row = (i * t + (t - 1)) * vocab;
                SeqOutput {
                    logits: logits[row..row + vocab].to_vec(),
                    kv: crate::kv::SeqKv::from_layers(h, d, x.past.len + t, layers),
                }
            })
            .collect();
        Ok(out)
    }
}

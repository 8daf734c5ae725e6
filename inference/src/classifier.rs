//! The input guard's prompt-injection classifier: all-MiniLM-L6-v2 fine-tuned by
//! `guards/scripts/train_classifier.py` (mean pooling and a linear head inside the ONNX graph,
//! one logit per text), with the encoder's own WordPiece tokenizer and the training run's
//! `manifest.json` (decision threshold, window length, the prefix retrieved text carries).
//!
//! Long texts are read in sliding windows (`max_tokens` with the special tokens, half a window
//! apart; retrieved content in shorter ones where the manifest says so, `role_max_tokens`); a
//! text's score is the highest of its windows'. A caller bounds the windows per text
//! (evenly spaced over the text, first and last always among them, when there are more) and may
//! give a deadline, checked between batches of windows: what was not scored is reported, never
//! silently dropped ([`Scored::complete`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::text_model::TextModel;

/// Windows run through the model together (one session run); the deadline is checked between
/// batches. One: the int8 model quantises a run's activations with one scale, so a window's
/// score would depend on the windows run with it.
const BATCH: usize = 1;

/// Where the classifier's files are, when no directory is configured:
/// `$WARDEN_CLASSIFIER_DIR`, `models/classifier` next to the executable, or
/// `guards/models/classifier` under the working directory (where the repository ships it).
pub fn default_dir() -> Option<PathBuf> {
    crate::text_model::find_dir("WARDEN_CLASSIFIER_DIR", "classifier", &["manifest.json"])
}

/// The manifest's name for the role of a text: `tool` for retrieved content (tool output,
/// documents), `user` for the rest.
fn role(retrieved: bool) -> &'static str {
    if retrieved {
        "tool"
    } else {
        "user"
    }
}

/// What the runtime reads of the training run's `manifest.json`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Manifest {
    /// Probability at or above which a text is an injection at the shipped operating point
    /// (1% false positives on the training run's validation split).
    pub threshold: f32,
    /// Tokens per window, special tokens included.
    pub max_tokens: usize,
    /// Tokens per window for a role read in shorter windows (`tool`: retrieved content, where
    /// an instruction inside a long document must not be averaged away by the text around it),
    /// over `max_tokens`.
    #[serde(default)]
    pub role_max_tokens: std::collections::HashMap<String, usize>,
    /// Thresholds of roles held to their own operating point (`tool`: 1% false positives on
    /// the validation split's retrieved content), over `threshold`.
    #[serde(default)]
    pub role_thresholds: std::collections::HashMap<String, f32>,
    /// The prefix the model was trained to see before retrieved (tool) content.
    #[serde(default)]
    pub role_prefix: std::collections::HashMap<String, String>,
    #[serde(default)]
    pub model_sha256: String,
}

/// A text's score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// The highest injection probability of the windows scored.
    pub score: f32,
    /// Which window gave it (0 = the first).
    pub window: usize,
    /// Windows scored.
    pub scored: usize,
    /// Windows the whole text has.
    pub windows: usize,
    /// The deadline stopped the scoring before every window meant to be scored was.
    pub deadline: bool,
}

impl Scored {
    /// Every window of the text was scored (not cut by the window bound or the deadline).
    pub fn complete(&self) -> bool {
        self.scored == self.windows
    }
}

/// Why a text has no score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassifyError {
    /// The deadline passed before any window was scored.
    Deadline,
    /// Tokenizing or running the model failed.
    Failed(String),
}

impl std::fmt::Display for ClassifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClassifyError::Deadline => f.write_str("the classifier's deadline passed"),
            ClassifyError::Failed(e) => f.write_str(e),
        }
    }
}

/// One window of a text: its index among the text's windows, and its tokens ready to run.
pub type Window = (usize, Vec<u32>);

/// The loaded classifier.
pub struct Classifier {
    model: TextModel,
    manifest: Manifest,
    cls: u32,
    sep: u32,
    retrieved_prefix: Vec<u32>,
    dir: PathBuf,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("dir", &self.dir)
            .field("sessions", &self.model.sessions())
            .field("threshold", &self.manifest.threshold)
            .finish()
    }
}

impl Classifier {
    /// Loads `dir/{model.onnx,tokenizer.json,manifest.json}` with `sessions` single-threaded
    /// sessions (at least one), and scores one text to prove the model runs.
    pub fn load(dir: &Path, ort_lib: Option<&Path>, sessions: usize) -> Result<Classifier, String> {
        let manifest_path = dir.join("manifest.json");
        let manifest: Manifest = std::fs::read_to_string(&manifest_path)
            .map_err(|e| format!("{}: {e}", manifest_path.display()))
            .and_then(|s| {
                serde_json::from_str(&s).map_err(|e| format!("{}: {e}", manifest_path.display()))
            })?;
        let widths =
            std::iter::once(manifest.max_tokens).chain(manifest.role_max_tokens.values().copied());
        if !(manifest.threshold > 0.0 && manifest.threshold < 1.0)
            || widths.clone().any(|w| w < 8 || w > manifest.max_tokens)
        {
            return Err(format!(
                "{}: threshold must be in (0, 1), max_tokens at least 8 and role_max_tokens \
                 between 8 and max_tokens",
                manifest_path.display()
            ));
        }
        let mut model = TextModel::load(
            dir,
            ort_lib,
            sessions,
            "guards/scripts/train_classifier.py builds it; the repository ships it",
        )?;
        model
            .tokenizer
            .with_truncation(None)
            .map_err(|e| e.to_string())?;
        model.tokenizer.with_padding(None);
        let id = |t: &str| {
            model
                .tokenizer
                .token_to_id(t)
                .ok_or_else(|| format!("the tokenizer has no {t} token"))
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        let mut c = Classifier {
            model,
            manifest,
            cls,
            sep,
            retrieved_prefix: Vec::new(),
            dir: dir.to_path_buf(),
        };
        let prefix = c
            .manifest
            .role_prefix
            .get(role(true))
            .cloned()
            .unwrap_or_default();
        c.retrieved_prefix = c.tokens(&prefix)?;
        c.score("warden", false, 1, None)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(c)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The shipped decision threshold.
    pub fn threshold(&self) -> f32 {
        self.manifest.threshold
    }

    /// The shipped threshold for user text, or for retrieved content (tool output, documents).
    pub fn threshold_for(&self, retrieved: bool) -> f32 {
        self.manifest
            .role_thresholds
            .get(role(retrieved))
            .copied()
            .filter(|t| *t > 0.0 && *t < 1.0)
            .unwrap_or(self.manifest.threshold)
    }

    /// Tokens per window (special tokens and the retrieved prefix included) for user text, or
    /// for retrieved content.
    pub fn max_tokens_for(&self, retrieved: bool) -> usize {
        self.manifest
            .role_max_tokens
            .get(role(retrieved))
            .copied()
            .unwrap_or(self.manifest.max_tokens)
    }

    /// Tokens of `text`, without the special ones.
    pub fn token_count(&self, text: &str) -> Result<usize, String> {
        self.tokens(text).map(|t| t.len())
    }

    fn tokens(&self, text: &str) -> Result<Vec<u32>, String> {
        self.model
            .tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| format!("tokenizing: {e}"))
    }

    /// The token windows of `text` (with the retrieved-content prefix when `retrieved`), each
    /// ready to run (`[CLS] prefix window [SEP]`), and how many the whole text has; at most
    /// `max_windows` are returned, evenly spaced.
    pub fn windows(
        &self,
        text: &str,
        retrieved: bool,
        max_windows: usize,
    ) -> Result<(Vec<Window>, usize), String> {
        let ids = self.tokens(text)?;
        let prefix: &[u32] = if retrieved {
            &self.retrieved_prefix
        } else {
            &[]
        };
        let width = self
            .max_tokens_for(retrieved)
            .saturating_sub(2 + prefix.len())
            .max(4);
        let stride = (width / 2).max(1);
        // Starts 0, stride, 2·stride, ... until a window reaches the end.
        let total = if ids.len() <= width {
            1
        } else {
            (ids.len() - width).div_ceil(stride) + 1
        };
        let pick: Vec<usize> = if total <= max_windows.max(1) {
            (0..total).collect()
        } else {
            let k = max_windows.max(1);
            if k == 1 {
                vec![0]
            } else {
                let mut p: Vec<usize> = (0..k).map(|i| i * (total - 1) / (k - 1)).collect();
                p.dedup();
                p
            }
        };
        let rows = pick
            .into_iter()
            .map(|w| {
                // The last window ends at the text's end, a full window long where it can be.
                let (start, end) = if w + 1 == total {
                    (ids.len().saturating_sub(width), ids.len())
                } else {
                    (w * stride, (w * stride + width).min(ids.len()))
                };
                let mut row = Vec::with_capacity(end - start + prefix.len() + 2);
                row.push(self.cls);
                row.extend_from_slice(prefix);
                row.extend_from_slice(&ids[start..end]);
                row.push(self.sep);
                (w, row)
            })
            .collect();
        Ok((rows, total))
    }

    /// The injection probability of each token row (as [`Self::windows`] makes them).
    pub fn score_rows(&self, rows: &[&[u32]]) -> Result<Vec<f32>, String> {
        let t = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        if rows.is_empty() || t == 0 {
            return Ok(Vec::new());
        }
        let mut ids = Vec::with_capacity(rows.len() * t);
        let mut mask = Vec::with_capacity(rows.len() * t);
        for r in rows {
            ids.extend(r.iter().map(|&x| i64::from(x)));
            ids.extend(std::iter::repeat_n(0, t - r.len()));
            mask.extend(std::iter::repeat_n(1, r.len()));
            mask.extend(std::iter::repeat_n(0, t - r.len()));
        }
        let out = self.model.run(ids, mask, t, "logits")?;
        if out.values.len() != rows.len() {
            return Err(format!(
                "{}: {} logits for {} texts (shape {:?})",
                self.model.model.display(),
                out.values.len(),
                rows.len(),
                out.shape
            ));
        }
        Ok(out
            .values
            .iter()
            .map(|&l| 1.0 / (1.0 + (-l).exp()))
            .collect())
    }

    /// The score of `text`: the highest of its windows' (at most `max_windows`), with the
    /// windows run [`BATCH`] at a time and `deadline` checked before each batch.
    pub fn score(
        &self,
        text: &str,
        retrieved: bool,
        max_windows: usize,
        deadline: Option<Instant>,
    ) -> Result<Scored, ClassifyError> {
        let (rows, total) = self
            .windows(text, retrieved, max_windows)
            .map_err(ClassifyError::Failed)?;
        let mut best: Option<Scored> = None;
        let mut scored = 0;
        for batch in rows.chunks(BATCH) {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let refs: Vec<&[u32]> = batch.iter().map(|(_, r)| r.as_slice()).collect();
            let scores = self.score_rows(&refs).map_err(ClassifyError::Failed)?;
            scored += batch.len();
            for ((w, _), s) in batch.iter().zip(scores) {
                if best.is_none_or(|b| s > b.score) {
                    best = Some(Scored {
                        score: s,
                        window: *w,
                        scored: 0,
                        windows: total,
                        deadline: false,
                    });
                }
            }
        }
        let mut best = best.ok_or(ClassifyError::Deadline)?;
        best.scored = scored;
        best.deadline = scored < rows.len();
        Ok(best)
    }
}

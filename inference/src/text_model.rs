//! What the guards' text models share: a BERT-style ONNX model with its WordPiece tokenizer, on
//! the process's one ONNX Runtime environment (the worker's), in a small pool of single-threaded
//! sessions. A caller takes a free session, or waits for the first.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use ort::session::{Session, SessionInputValue};
use ort::value::Tensor;
use tokenizers::Tokenizer;

use crate::{find_ort_library, ort_environment, probe_device, WorkerError};

/// The first of `$env`, `models/<name>` next to the executable and `guards/models/<name>` under
/// the working directory that holds `model.onnx`, `tokenizer.json` and `extra`.
pub(crate) fn find_dir(env: &str, name: &str, extra: &[&str]) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os(env) {
        candidates.push(PathBuf::from(p));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        candidates.push(dir.join("models").join(name));
    }
    candidates.push(Path::new("guards/models").join(name));
    candidates.into_iter().find(|d| {
        ["model.onnx", "tokenizer.json"]
            .iter()
            .chain(extra)
            .all(|f| d.join(f).is_file())
    })
}

/// A loaded model and its tokenizer.
pub(crate) struct TextModel {
    sessions: Vec<Mutex<Session>>,
    pub(crate) tokenizer: Tokenizer,
    pub(crate) model: PathBuf,
}

/// One output of a batch run: its shape and values.
pub(crate) struct Output {
    pub(crate) shape: Vec<i64>,
    pub(crate) values: Vec<f32>,
}

impl TextModel {
    /// Loads `dir/model.onnx` and `dir/tokenizer.json` (as is: callers set truncation) with
    /// `sessions` single-threaded sessions (at least one). `missing` says where the model comes
    /// from, for the error when it is not there.
    pub(crate) fn load(
        dir: &Path,
        ort_lib: Option<&Path>,
        sessions: usize,
        missing: &str,
    ) -> Result<TextModel, String> {
        let lib = find_ort_library(ort_lib).map_err(|e| e.to_string())?;
        let env = ort_environment(&lib, &probe_device()).map_err(|e: WorkerError| e.to_string())?;
        let model = dir.join("model.onnx");
        if !model.is_file() {
            return Err(format!("{} not found ({missing})", model.display()));
        }
        let tok_path = dir.join("tokenizer.json");
        let tokenizer =
            Tokenizer::from_file(&tok_path).map_err(|e| format!("{}: {e}", tok_path.display()))?;
        let mut pool = Vec::new();
        for _ in 0..sessions.max(1) {
            let fail = |e: String| format!("{}: {e}", model.display());
            let session = Session::builder(env)
                .map_err(|e| fail(e.to_string()))?
                .with_intra_threads(1)
                .map_err(|e| fail(e.to_string()))?
                .with_intra_op_spinning(false)
                .map_err(|e| fail(e.to_string()))?
                .commit_from_file(&model)
                .map_err(|e| fail(e.to_string()))?;
            pool.push(Mutex::new(session));
        }
        Ok(TextModel {
            sessions: pool,
            tokenizer,
            model,
        })
    }

    /// Runs one batch of token rows, all of length `t` (padding marked by `mask` = 0), and
    /// returns the output named `output`.
    pub(crate) fn run(
        &self,
        ids: Vec<i64>,
        mask: Vec<i64>,
        t: usize,
        output: &str,
    ) -> Result<Output, String> {
        let b = ids.len().checked_div(t).unwrap_or(0);
        let shape = vec![b as i64, t as i64];
        let tensor = |data: Vec<i64>| -> Result<SessionInputValue<'static>, String> {
            Ok(Tensor::from_array((shape.clone(), data))
                .map_err(|e| e.to_string())?
                .into())
        };
        let inputs: Vec<(std::borrow::Cow<'static, str>, SessionInputValue<'static>)> = vec![
            ("input_ids".into(), tensor(ids)?),
            ("attention_mask".into(), tensor(mask)?),
            ("token_type_ids".into(), tensor(vec![0; b * t])?),
        ];
        let mut session = self.session();
        let outputs = session.run(inputs).map_err(|e| e.to_string())?;
        let (shape, values) = outputs
            .get(output)
            .ok_or_else(|| format!("{}: no output named {output:?}", self.model.display()))?
            .try_extract_tensor::<f32>()
            .map_err(|e| e.to_string())?;
        Ok(Output {
            shape: shape.to_vec(),
            values: values.to_vec(),
        })
    }

    /// A free session, or the first one when all are busy.
    fn session(&self) -> MutexGuard<'_, Session> {
        for s in &self.sessions {
            if let Ok(guard) = s.try_lock() {
                return guard;
            }
        }
        self.sessions[0]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn sessions(&self) -> usize {
        self.sessions.len()
    }
}

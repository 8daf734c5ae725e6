//! warden-inference: the co-located OpenAI-compatible inference worker.
//!
//! `warden worker --model DIR` serves an ONNX decoder (Hugging Face Optimum layout with past
//! key/values) with `tokenizer.json` and a chat template:
//! - [`model`]: loading the directory and running batched forward passes with KV caches;
//! - [`kv`]: per-sequence KV storage, the memory budget, and the block prefix cache;
//! - [`sampler`]: greedy / temperature / top-p sampling with seeds, log-probabilities;
//! - [`engine`]: iteration-level (continuous) batching on one engine thread;
//! - [`server`]: the HTTP API (axum), SSE streaming, cancellation on disconnect;
//! - [`metrics`]: Prometheus, including vLLM-compatible gauge names;
//! - [`encoder`]: the sentence encoder the output guard's paraphrase check runs on;
//! - [`classifier`]: the input guard's prompt-injection classifier.
//! - [`batching`]: the classifier's model threads, batching windows across requests.
//!
//! ONNX Runtime is loaded at run time (`ort` with `load-dynamic`) from `libonnxruntime.so` as
//! shipped in the PyPI `onnxruntime` wheel; `tests/scripts/setup.sh` fetches it. CPU by default;
//! the `cuda` feature adds the CUDA execution provider and sizes the KV budget from free GPU
//! memory, falling back to CPU (and saying so) when no GPU driver is present.

pub mod batching;
pub mod classifier;
pub mod encoder;
pub mod engine;
pub mod kv;
pub mod metrics;
pub mod model;
pub mod sampler;
pub mod server;
mod text_model;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The `onnxruntime` version whose library the worker expects (PyPI wheel of the same version).
pub const ORT_VERSION: &str = "1.31.1";

/// `warden worker` options.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub model_dir: PathBuf,
    pub listen: SocketAddr,
    pub served_model_name: Option<String>,
    pub ort_lib: Option<PathBuf>,
    pub threads: usize,
    /// KV budget; `None` = 25% of free GPU memory with CUDA, else 512 MiB.
    pub kv_cache_bytes: Option<usize>,
    pub prefix_cache_bytes: usize,
    pub max_waiting: usize,
    pub max_batch: usize,
}

#[derive(Debug)]
pub enum WorkerError {
    OrtLibrary(String),
    Model(model::ModelError),
    Io(std::io::Error),
    Metrics(prometheus::Error),
}

impl std::fmt::Display for WorkerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerError::OrtLibrary(m) => f.write_str(m),
            WorkerError::Model(e) => write!(f, "{e}"),
            WorkerError::Io(e) => write!(f, "{e}"),
            WorkerError::Metrics(e) => write!(f, "metrics: {e}"),
        }
    }
}

impl std::error::Error for WorkerError {}

impl From<model::ModelError> for WorkerError {
    fn from(e: model::ModelError) -> Self {
        WorkerError::Model(e)
    }
}

/// Where `libonnxruntime.so` is: the explicit path, `$ORT_DYLIB_PATH`, next to the executable,
/// or where `tests/scripts/setup.sh` puts it (`inference/.ort/` under the working directory).
pub fn find_ort_library(explicit: Option<&Path>) -> Result<PathBuf, WorkerError> {
    let name = format!("libonnxruntime.so.{ORT_VERSION}");
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = explicit {
        candidates.push(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        candidates.push(PathBuf::from(p));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        candidates.push(dir.join(&name));
    }
    candidates.push(PathBuf::from("inference/.ort").join(&name));
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    Err(WorkerError::OrtLibrary(format!(
        "ONNX Runtime library not found (looked at: {}). Run tests/scripts/setup.sh, which fetches {name} from the PyPI onnxruntime=={ORT_VERSION} wheel, or pass --ort-lib / set ORT_DYLIB_PATH.",
        candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )))
}

/// Which device the worker runs on, and the KV budget that follows.
#[derive(Debug, Clone)]
pub struct Device {
    pub description: String,
    pub free_memory: Option<usize>,
}

/// Probe for a CUDA device without panicking when no driver is present.
pub fn probe_device() -> Device {
    #[cfg(feature = "cuda")]
    {
        // SAFETY: `is_culib_present` only tries to dlopen the CUDA driver library and reports
        // whether that worked; it is `unsafe` because loading a library runs its initialisers.
        // This is the one place Warden needs it: `CudaContext::new` panics without a driver, so
        // this check must come first.
        #[allow(unsafe_code)]
        let present = unsafe { cudarc::driver::sys::is_culib_present() };
        if !present {
            return Device {
                description: "CPU (the cuda feature is on, but no CUDA driver was found: falling back to CPU)".into(),
                free_memory: None,
            };
        }
        match cudarc::driver::CudaContext::new(0) {
            Ok(ctx) => match cudarc::driver::result::mem_get_info() {
                Ok((free, total)) => {
                    drop(ctx);
                    return Device {
                        description: format!(
                            "CUDA device 0 ({} MiB free of {} MiB)",
                            free >> 20,
                            total >> 20
                        ),
                        free_memory: Some(free),
                    };
                }
                Err(e) => {
                    return Device {
                        description: format!(
                            "CPU (CUDA memory query failed: {e}; falling back to CPU)"
                        ),
                        free_memory: None,
                    }
                }
            },
            Err(e) => {
                return Device {
                    description: format!("CPU (no usable CUDA device: {e}; falling back to CPU)"),
                    free_memory: None,
                }
            }
        }
    }
    #[cfg(not(feature = "cuda"))]
    Device {
        description: "CPU (built without the cuda feature)".into(),
        free_memory: None,
    }
}

/// The process's ONNX Runtime environment. ONNX Runtime allows one per process, so it is created
/// once (from the first library path and device seen) and shared.
fn ort_environment(
    lib: &Path,
    device: &Device,
) -> Result<&'static ort::environment::Environment, WorkerError> {
    static ENV: std::sync::OnceLock<Result<ort::environment::Environment, String>> =
        std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let builder = ort::init_from(lib).map_err(|e| format!("loading {}: {e}", lib.display()))?;
        #[cfg(feature = "cuda")]
        let builder = if device.free_memory.is_some() {
            builder.with_execution_providers([ort::ep::CUDA::default().build()])
        } else {
            builder
        };
        let _ = device;
        builder
            .with_name("warden-worker")
            .build()
            .map_err(|e| format!("starting ONNX Runtime: {e}"))
    })
    .as_ref()
    .map_err(|e| WorkerError::OrtLibrary(e.clone()))
}

/// A loaded model ready to serve: the pieces [`run`] wires together, also used by tests.
pub struct Loaded {
    pub state: Arc<server::AppState>,
    pub engine_thread: std::thread::JoinHandle<()>,
    pub device: Device,
}

pub fn load(opts: &WorkerOptions) -> Result<Loaded, WorkerError> {
    let lib = find_ort_library(opts.ort_lib.as_deref())?;
    let device = probe_device();
    let env = ort_environment(&lib, &device)?;
    let dir = &opts.model_dir;
    let model = model::Model::load(dir, env, opts.threads)?;
    let tok_path = dir.join("tokenizer.json");
    let tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
        .map_err(|e| model::ModelError::Tokenizer(format!("{}: {e}", tok_path.display())))?;
    let template_src = model::read_chat_template(dir)?;
    let mut template = minijinja::Environment::new();
    template
        .add_template_owned("chat", template_src)
        .map_err(|e| model::ModelError::Template(e.to_string()))?;
    let eos = model.shape.eos_token_ids.first().copied();
    let token_text = |id: Option<u32>| {
        id.and_then(|i| tokenizer.id_to_token(i))
            .unwrap_or_default()
    };
    let (bos_token, eos_token) = (token_text(eos), token_text(eos));
    let kv_budget = opts.kv_cache_bytes.unwrap_or(match device.free_memory {
        Some(free) => free / 4,
        None => 512 << 20,
    });
    let metrics = Arc::new(metrics::WorkerMetrics::new().map_err(WorkerError::Metrics)?);
    let tokenizer = Arc::new(tokenizer);
    let name = opts.served_model_name.clone().unwrap_or_else(|| {
        dir.file_name()
            .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
    });
    let (engine, engine_thread) = engine::start(
        model,
        tokenizer.clone(),
        engine::EngineConfig {
            kv_budget_bytes: kv_budget,
            prefix_cache_bytes: opts.prefix_cache_bytes,
            max_waiting: opts.max_waiting,
            max_batch: opts.max_batch,
        },
        metrics.clone(),
    )
    .map_err(WorkerError::Io)?;
    tracing::info!(device = %device.description, kv_budget_mib = kv_budget >> 20, model = %name, "model loaded");
    Ok(Loaded {
        state: Arc::new(server::AppState {
            engine,
            tokenizer,
            template,
            model_name: name,
            metrics,
            bos_token,
            eos_token,
        }),
        engine_thread,
        device,
    })
}

/// Run the worker until SIGTERM/SIGINT.
pub fn run(opts: WorkerOptions) -> Result<(), WorkerError> {
    let loaded = load(&opts)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(WorkerError::Io)?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(WorkerError::Io)?;
        tracing::info!(listen = %opts.listen, "worker listening");
        axum::serve(listener, server::router(loaded.state))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(WorkerError::Io)
    })?;
    tracing::info!("worker stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {},
                _ = i.recv() => {},
            }
        }
        _ => std::future::pending::<()>().await,
    }
}

//! warden-inference: the co-located OpenAI-compatible worker (continuous batching, KV cache,
//! ONNX Runtime). Filled by the worker issue; intentionally empty until then.

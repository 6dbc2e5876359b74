//! Qwen2 / Llama models: config, weights, forward.

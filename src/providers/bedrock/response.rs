//! Reading Converse answers (whole or streamed): token usage, stop reason, exception status.

use super::*;

// ---------------------------------------------------------------------------------------------
// Converse response shapes
// ---------------------------------------------------------------------------------------------

/// Bedrock `usage` (TokenUsage) in OpenAI's terms: cache reads and writes are part of the prompt.
pub(super) fn token_usage(u: &Value) -> Usage {
    let get = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let (read, write) = (get("cacheReadInputTokens"), get("cacheWriteInputTokens"));
    Usage {
        prompt_tokens: get("inputTokens")
            .saturating_add(read)
            .saturating_add(write),
        completion_tokens: get("outputTokens"),
        cached_tokens: read,
        cache_creation_tokens: write,
        reasoning_tokens: 0,
    }
}

pub(super) fn str_at<'v>(v: &'v Value, pointer: &str) -> Option<&'v str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// `stopReason` → `finish_reason`; `Err` for the reasons that mean the answer is broken.
pub(super) fn finish_reason(r: Option<&str>) -> Result<&'static str, String> {
    match r {
        Some("max_tokens") | Some("model_context_window_exceeded") => Ok("length"),
        Some("tool_use") => Ok("tool_calls"),
        Some("guardrail_intervened") | Some("content_filtered") => Ok("content_filter"),
        Some(r @ ("malformed_model_output" | "malformed_tool_use")) => Err(r.to_string()),
        _ => Ok("stop"),
    }
}

/// Status of an in-stream exception (Bedrock's documented status of that exception).
pub(crate) fn exception_status(kind: &str) -> u16 {
    match kind {
        "throttlingException" => 429,
        "validationException" => 400,
        "serviceUnavailableException" => 503,
        "internalServerException" => 500,
        "modelTimeoutException" => 408,
        "modelStreamErrorException" => 424,
        _ => 502,
    }
}

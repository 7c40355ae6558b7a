//! OpenAI client → Anthropic Messages API.

use super::{ChatCall, ChatTranslator, ProviderRequest, Usage};
use crate::error::GatewayError;

#[derive(Default)]
pub struct AnthropicChat {}

impl ChatTranslator for AnthropicChat {
    fn request(&mut self, _call: &ChatCall<'_>) -> Result<ProviderRequest, GatewayError> {
        Err(GatewayError::new(
            501,
            "api_error",
            "anthropic translation not built yet",
        ))
    }
    fn response(&mut self, _body: &[u8]) -> Result<Option<Vec<u8>>, GatewayError> {
        Ok(None)
    }
    fn stream_chunk(&mut self, _chunk: &[u8], _eos: bool, _out: &mut Vec<u8>) -> bool {
        false
    }
    fn error(&self, status: u16, _body: &[u8]) -> GatewayError {
        GatewayError::new(status, "api_error", "")
    }
    fn usage(&self) -> Option<Usage> {
        None
    }
}

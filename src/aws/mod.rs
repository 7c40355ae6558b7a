//! AWS wire pieces the Bedrock translator needs: Signature Version 4 request signing
//! ([`sigv4`]) and the `application/vnd.amazon.eventstream` binary framing of streamed answers
//! ([`eventstream`]). Plain Rust, no host calls: the time to sign with comes from the caller.

pub mod eventstream;
pub mod sigv4;

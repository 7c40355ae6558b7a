//! Content parts of user messages → Gemini parts: text, images (data URLs, Files-API and
//! other http(s) URLs with the MIME type from the extension), audio and files.

use super::*;

/// One part: exactly one of the data fields is set (plus, on function calls, the signature).
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct Part<'r> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) text: Option<Text<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) inline_data: Option<Blob<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) file_data: Option<FileData<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) function_call: Option<FnCall<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) function_response: Option<FnResponse<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) thought_signature: Option<Cow<'r, str>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Blob<'r> {
    pub(super) mime_type: Cow<'r, str>,
    pub(super) data: Text<'r>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct FileData<'r> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) mime_type: Option<&'static str>,
    pub(super) file_uri: &'r str,
}

#[derive(Serialize)]
pub(super) struct FnCall<'r> {
    pub(super) name: &'r str,
    pub(super) args: &'r RawValue,
}

#[derive(Serialize)]
pub(super) struct FnResponse<'r> {
    pub(super) name: &'r str,
    pub(super) response: FnResult<'r>,
}

#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum FnResult<'r> {
    Object(&'r RawValue),
    Output { output: ToolText<'r> },
}

/// Text of a tool message: one string as the client sent it, or several text parts joined.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum ToolText<'r> {
    One(Text<'r>),
    Joined(String),
}

pub(super) fn unsupported(param: &str, what: &str) -> GatewayError {
    GatewayError::invalid_param(param, format!("{what} is not supported by gemini"))
}

pub(super) fn text(t: Text<'_>) -> Option<Part<'_>> {
    (!t.is_empty()).then(|| Part {
        text: Some(t),
        ..Default::default()
    })
}

/// A `text` (or, where allowed, `refusal`) part; `None` when empty.
pub(super) fn text_part<'r>(
    p: &'r ContentPart<'_>,
    param: &str,
    allow_refusal: bool,
) -> Result<Option<Part<'r>>, GatewayError> {
    let t = match p.kind.as_str() {
        "text" => p.text.as_ref().map(Str::text),
        "refusal" if allow_refusal => p.refusal.as_ref().map(Str::text),
        _ => None,
    };
    match t {
        Some(t) => Ok(text(t)),
        None => Err(GatewayError::invalid_param(
            param,
            format!("a `{}` part here must carry `{}`", p.kind, p.kind),
        )),
    }
}

pub(super) fn strip_prefix_ci<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

/// `data:<media type>;base64,<data>` → (media type, data).
pub(super) fn data_url<'u>(
    url_text: Text<'u>,
    param: &str,
) -> Result<(Cow<'u, str>, Text<'u>), GatewayError> {
    let url = url_text.as_str();
    let bad = |why: &str| GatewayError::invalid_param(param, format!("invalid data URL: {why}"));
    let rest = strip_prefix_ci(url, "data:").ok_or_else(|| bad("expected `data:`"))?;
    let (meta, data) = rest
        .split_once(',')
        .ok_or_else(|| bad("expected `data:<media type>;base64,<data>`"))?;
    let mut fields = meta.split(';');
    let media = fields.next().unwrap_or("").trim();
    if !fields.any(|f| f.trim().eq_ignore_ascii_case("base64")) {
        return Err(bad("only base64 data URLs are supported"));
    }
    if media.is_empty() || !media.contains('/') {
        return Err(bad("a media type is required"));
    }
    if data.is_empty() {
        return Err(bad("no data"));
    }
    let media: Cow<'u, str> = if media.eq_ignore_ascii_case("image/jpg") {
        Cow::Borrowed("image/jpeg")
    } else if media.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(media.to_ascii_lowercase())
    } else {
        Cow::Borrowed(media)
    };
    Ok((media, url_text.part(data)))
}

/// MIME type from a URL's path extension.
pub(super) fn mime_from_extension(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let last = path.rsplit('/').next().unwrap_or(path);
    let (_, ext) = last.rsplit_once('.')?;
    Some(match ext.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "gif" => "image/gif",
        "pdf" => "application/pdf",
        _ => return None,
    })
}

pub(super) const FILES_API_PREFIX: &str = "https://generativelanguage.googleapis.com/";

pub(super) fn image_part<'r>(url_text: Text<'r>, param: &str) -> Result<Part<'r>, GatewayError> {
    let url = url_text.as_str();
    if strip_prefix_ci(url, "data:").is_some() {
        let (mime_type, data) = data_url(url_text, param)?;
        return Ok(Part {
            inline_data: Some(Blob { mime_type, data }),
            ..Default::default()
        });
    }
    if strip_prefix_ci(url, "https://").is_some() || strip_prefix_ci(url, "http://").is_some() {
        let mime_type = mime_from_extension(url);
        if mime_type.is_none() && strip_prefix_ci(url, FILES_API_PREFIX).is_none() {
            return Err(GatewayError::invalid_param(
                param,
                "gemini needs the media type of an image URL: use a URL ending in .png, .jpg, .jpeg, .webp, .heic, .heif, .gif or .pdf, a Gemini Files API URI, or a base64 data URL",
            ));
        }
        return Ok(Part {
            file_data: Some(FileData {
                mime_type,
                file_uri: url,
            }),
            ..Default::default()
        });
    }
    Err(GatewayError::invalid_param(
        param,
        "`image_url.url` must be an http(s) URL or a base64 data URL",
    ))
}

pub(super) fn audio_part<'r>(
    raw: Option<&'r RawValue>,
    param: &str,
) -> Result<Part<'r>, GatewayError> {
    #[derive(Deserialize)]
    struct Audio<'a> {
        #[serde(borrow)]
        data: &'a str,
        #[serde(borrow)]
        format: &'a str,
    }
    let raw = raw.ok_or_else(|| GatewayError::invalid_param(param, "`input_audio` is required"))?;
    let a: Audio<'r> = serde_json::from_str(raw.get()).map_err(|e| {
        GatewayError::invalid_param(
            param,
            format!("`input_audio` needs string `data` (base64, no escapes) and `format`: {e}"),
        )
    })?;
    let mime: &'static str = match a.format {
        "wav" => "audio/wav",
        "mp3" => "audio/mp3",
        other => {
            return Err(GatewayError::invalid_param(
                param,
                format!("audio format `{other}` is not supported; use wav or mp3"),
            ))
        }
    };
    if a.data.is_empty() {
        return Err(GatewayError::invalid_param(param, "no audio data"));
    }
    Ok(Part {
        inline_data: Some(Blob {
            mime_type: Cow::Borrowed(mime),
            data: Text::new(a.data),
        }),
        ..Default::default()
    })
}

pub(super) fn file_part<'r>(
    raw: Option<&'r RawValue>,
    param: &str,
) -> Result<Part<'r>, GatewayError> {
    #[derive(Deserialize)]
    struct File<'a> {
        #[serde(borrow)]
        file_data: Option<&'a str>,
    }
    let raw = raw.ok_or_else(|| GatewayError::invalid_param(param, "`file` is required"))?;
    let f: File<'r> = serde_json::from_str(raw.get())
        .map_err(|e| GatewayError::invalid_param(param, format!("invalid `file`: {e}")))?;
    let Some(url) = f.file_data else {
        return Err(unsupported(
            param,
            "a `file` part without `file_data` (uploaded `file_id`)",
        ));
    };
    let (mime_type, data) = data_url(Text::new(url), param)?;
    Ok(Part {
        inline_data: Some(Blob { mime_type, data }),
        ..Default::default()
    })
}

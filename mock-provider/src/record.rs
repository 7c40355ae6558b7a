//! Ring buffer of recorded requests, served by `GET /__mock/requests`.

use hyper::body::Bytes;
use hyper::{HeaderMap, Method};
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::sync::Mutex;

pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    fn mock_id(&self) -> Option<&str> {
        self.headers
            .get("x-mock-id")
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
    }

    fn to_json(&self) -> Value {
        let mut headers = Map::new();
        for name in self.headers.keys() {
            let joined = self
                .headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(", ");
            headers.insert(name.as_str().to_string(), Value::String(joined));
        }
        let body = serde_json::from_slice::<Value>(&self.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into_owned()));
        serde_json::json!({
            "method": self.method.as_str(),
            "path": self.path,
            "query": self.query,
            "headers": headers,
            "body": body,
        })
    }
}

pub struct Recorder {
    cap: usize,
    items: Mutex<VecDeque<Recorded>>,
}

impl Recorder {
    pub fn new(cap: usize) -> Self {
        Recorder {
            cap,
            items: Mutex::new(VecDeque::with_capacity(cap.min(4096))),
        }
    }

    pub fn enabled(&self) -> bool {
        self.cap > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Recorded>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, r: Recorded) {
        if self.cap == 0 {
            return;
        }
        let mut items = self.lock();
        while items.len() >= self.cap {
            items.pop_front();
        }
        items.push_back(r);
    }

    /// JSON array of the recorded requests (oldest first), only those with `x-mock-id == id`
    /// when an id is given.
    pub fn list(&self, id: Option<&str>) -> Vec<u8> {
        let items = self.lock();
        let out: Vec<Value> = items
            .iter()
            .filter(|r| id.is_none() || r.mock_id() == id)
            .map(Recorded::to_json)
            .collect();
        Value::Array(out).to_string().into_bytes()
    }

    /// Removes everything; returns how many were removed.
    pub fn clear(&self) -> usize {
        let mut items = self.lock();
        let n = items.len();
        items.clear();
        n
    }
}

/// Value of `key` in a URL query string (`+` and `%XX` decoded).
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn query() {
        assert_eq!(
            query_param("a=1&id=x%20y+z", "id").as_deref(),
            Some("x y z")
        );
        assert_eq!(query_param("id=abc%", "id").as_deref(), Some("abc%"));
        assert_eq!(query_param("id=%e2%82%ac", "id").as_deref(), Some("€"));
        assert_eq!(query_param("a=1", "id"), None);
    }

    #[test]
    fn ring_buffer_and_filter() {
        let r = Recorder::new(2);
        for (i, id) in ["a", "b", "a"].iter().enumerate() {
            let mut h = HeaderMap::new();
            h.insert("x-mock-id", HeaderValue::from_static(id));
            h.append("x-multi", HeaderValue::from_static("1"));
            h.append("x-multi", HeaderValue::from_static("2"));
            r.push(Recorded {
                method: Method::POST,
                path: "/v1/messages".into(),
                query: None,
                headers: h,
                body: Bytes::from(if i == 2 {
                    "not json".to_string()
                } else {
                    format!("{{\"n\":{i}}}")
                }),
            });
        }
        let all: Value = serde_json::from_slice(&r.list(None)).unwrap_or(Value::Null);
        assert_eq!(all.as_array().map(Vec::len), Some(2));
        assert_eq!(all[0]["body"]["n"], serde_json::json!(1));
        assert_eq!(all[1]["body"], serde_json::json!("not json"));
        assert_eq!(all[0]["headers"]["x-multi"], serde_json::json!("1, 2"));
        let a: Value = serde_json::from_slice(&r.list(Some("a"))).unwrap_or(Value::Null);
        assert_eq!(a.as_array().map(Vec::len), Some(1));
        assert_eq!(r.clear(), 2);
        assert_eq!(r.list(None), b"[]");
    }
}

//! Starts the built `mock-provider` binary on port 0 and talks HTTP/1.1 to it over a raw
//! TcpStream (keep-alive, chunked request and response bodies, recording, reset, SIGTERM).

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mock-provider"))
            .args(["--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn mock-provider");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("ready line");
        let addr = line
            .trim_end()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected ready line {line:?}"))
            .to_string();
        assert!(addr.starts_with("127.0.0.1:"), "{addr}");
        assert!(line.ends_with('\n'));
        Server { child, addr }
    }

    fn connect(&self) -> Conn {
        let s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        Conn {
            reader: BufReader::new(s.try_clone().expect("clone")),
            writer: s,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("utf8")
    }
}

impl Conn {
    fn send(&mut self, raw: &[u8]) {
        self.writer.write_all(raw).expect("write");
    }

    fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
        let mut raw = format!("{method} {path} HTTP/1.1\r\nhost: mock\r\n");
        for (n, v) in headers {
            raw.push_str(&format!("{n}: {v}\r\n"));
        }
        raw.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
        self.send(raw.as_bytes());
        self.read_response()
    }

    fn read_response(&mut self) -> Resp {
        let mut status_line = String::new();
        self.reader
            .read_line(&mut status_line)
            .expect("status line");
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut l = String::new();
            self.reader.read_line(&mut l).expect("header");
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((n, v)) = l.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if let Some(len) = get("content-length") {
            let len: usize = len.parse().expect("content-length");
            body.resize(len, 0);
            self.reader.read_exact(&mut body).expect("body");
        } else if get("transfer-encoding").as_deref() == Some("chunked") {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size).expect("chunk size");
                let n = usize::from_str_radix(size.trim(), 16).expect("hex size");
                let mut chunk = vec![0; n + 2];
                self.reader.read_exact(&mut chunk).expect("chunk");
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        Resp {
            status,
            headers,
            body,
        }
    }
}

const ANT: &[(&str, &str)] = &[
    ("x-api-key", "ak"),
    ("anthropic-version", "2023-06-01"),
    ("content-type", "application/json"),
];

#[test]
fn end_to_end_over_tcp() {
    let server = Server::start(&["--openai-key", "sk", "--anthropic-key", "ak"]);
    let mut c = server.connect();

    assert_eq!(c.request("DELETE", "/__mock/requests", &[], "").status, 200);
    let health = c.request("GET", "/health", &[], "");
    assert_eq!((health.status, health.text().as_str()), (200, "ok"));

    // OpenAI, chunked request body, on the same keep-alive connection.
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hello there"}]}"#;
    let (a, b) = body.split_at(10);
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: mock\r\nauthorization: Bearer sk\r\nx-mock-id: it-1\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    c.send(raw.as_bytes());
    let r = c.read_response();
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from the mock! You said: Hello there"
    );
    assert_eq!(v["usage"]["prompt_tokens"], (body.len() / 4) as u64);
    assert_eq!(v["usage"]["completion_tokens"], 8);

    // OpenAI auth failure.
    let r = c.request(
        "POST",
        "/v1/chat/completions",
        &[("authorization", "Bearer nope")],
        body,
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");

    // Anthropic stream with tool calls, cut into small frames.
    let ant = r#"{"model":"claude-x","max_tokens":64,"stream":true,"tools":[{"name":"get_weather","input_schema":{"type":"object"}}],"messages":[{"role":"user","content":"weather?"}]}"#;
    let mut h = ANT.to_vec();
    h.extend([
        ("x-mock-id", "it-1"),
        ("x-mock-tool-calls", "1"),
        ("x-mock-chunk-size", "7"),
    ]);
    let r = c.request("POST", "/v1/messages", &h, ant);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    assert!(r
        .header("request-id")
        .is_some_and(|v| v.starts_with("req_mock_")));
    let text = r.text();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    let partial: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|d| d["delta"]["partial_json"].as_str().map(str::to_string))
        .collect();
    assert_eq!(partial, r#"{"city":"Paris","i":0}"#);

    // Anthropic strict validation: a leaked OpenAI field.
    let bad =
        r#"{"model":"claude-x","max_tokens":64,"n":1,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = c.request("POST", "/v1/messages", ANT, bad);
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["message"], "n: Extra inputs are not permitted");
    assert_eq!(
        Some(v["request_id"].as_str().unwrap_or("")),
        r.header("request-id")
    );

    // Injected status with retry-after.
    let mut h = ANT.to_vec();
    h.extend([("x-mock-status", "529"), ("x-mock-retry-after", "2")]);
    let r = c.request("POST", "/v1/messages", &h, bad);
    assert_eq!(r.status, 529);
    assert_eq!(r.header("retry-after"), Some("2"));
    assert_eq!(r.json()["error"]["type"], "overloaded_error");

    // Recording.
    let r = c.request("GET", "/__mock/requests?id=it-1", &[], "");
    let recorded = r.json();
    let list = recorded.as_array().expect("array");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["path"], "/v1/chat/completions");
    assert_eq!(list[0]["body"]["model"], "gpt-4o");
    assert_eq!(list[0]["headers"]["authorization"], "Bearer sk");
    assert_eq!(list[1]["body"]["model"], "claude-x");

    let r = c.request("GET", "/nope", &[], "");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["message"], "Invalid URL (GET /nope)");

    // Reset: the connection closes without any response byte.
    let mut h = ANT.to_vec();
    h.push(("x-mock-reset", "1"));
    let raw = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: mock\r\n{}content-length: 2\r\n\r\n{{}}",
        h.iter()
            .map(|(n, v)| format!("{n}: {v}\r\n"))
            .collect::<String>()
    );
    c.send(raw.as_bytes());
    let mut buf = [0u8; 16];
    match c.reader.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0, "got bytes after reset"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
}

/// `x-mock-tool-use` over OpenAI, Anthropic and Gemini: a call first, the tool result echoed once sent; the
/// Anthropic `context_management` field only with its beta.
#[test]
fn scripted_tool_use_and_context_management_beta() {
    let server = Server::start(&[]);
    let mut c = server.connect();
    let script = ("x-mock-tool-use", r#"Read {"file_path": "/tmp/a.txt"}"#);
    let oai = r#"{"model":"m","tools":[{"type":"function","function":{"name":"Read","parameters":{"type":"object"}}}],"messages":[{"role":"user","content":"read it"}]}"#;
    let r = c.request("POST", "/v1/chat/completions", &[script], oai);
    let call = &r.json()["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "Read");
    assert_eq!(
        call["function"]["arguments"],
        r#"{"file_path":"/tmp/a.txt"}"#
    );
    let oai2 = r#"{"model":"m","tools":[{"type":"function","function":{"name":"Read","parameters":{"type":"object"}}}],"messages":[{"role":"user","content":"read it"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"Read","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c1","content":"PAPAYA"}]}"#;
    let r = c.request("POST", "/v1/chat/completions", &[script], oai2);
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "The tool said: PAPAYA"
    );
    let ant = r#"{"model":"c","max_tokens":9,"tools":[{"name":"Read","input_schema":{"type":"object"}}],"messages":[{"role":"user","content":"read it"},{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"Read","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"KIWI"}]}]}"#;
    let mut h = ANT.to_vec();
    h.push(script);
    let r = c.request("POST", "/v1/messages", &h, ant);
    assert_eq!(r.json()["content"][0]["text"], "The tool said: KIWI");
    let gem = ("x-goog-api-key", "gk");
    let path = "/v1beta/models/gemini-2.5-flash:generateContent";
    let tools =
        r#""tools":[{"functionDeclarations":[{"name":"Read","parameters":{"type":"object"}}]}]"#;
    let g1 =
        format!(r#"{{{tools},"contents":[{{"role":"user","parts":[{{"text":"read it"}}]}}]}}"#);
    let r = c.request("POST", path, &[script, gem], &g1);
    let call = &r.json()["candidates"][0]["content"]["parts"][0]["functionCall"];
    assert_eq!(
        (&call["name"], &call["args"]),
        (
            &"Read".into(),
            &serde_json::json!({"file_path": "/tmp/a.txt"})
        )
    );
    let g2 = format!(
        r#"{{{tools},"contents":[{{"role":"user","parts":[{{"text":"read it"}}]}},{{"role":"model","parts":[{{"functionCall":{{"name":"Read","args":{{}}}},"thoughtSignature":"c2ln"}}]}},{{"role":"user","parts":[{{"functionResponse":{{"name":"Read","response":{{"output":"MANGO"}}}}}}]}}]}}"#
    );
    let r = c.request("POST", path, &[script, gem], &g2);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["candidates"][0]["content"]["parts"][0]["text"],
        "The tool said: MANGO"
    );

    let cm = r#"{"model":"c","max_tokens":9,"context_management":{"edits":[{"type":"clear_thinking_20251015","keep":"all"}]},"messages":[{"role":"user","content":"hi"}]}"#;
    let r = c.request("POST", "/v1/messages", &h, cm);
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .starts_with("context_management: Extra inputs"));
    h.push((
        "anthropic-beta",
        "claude-code-20250219,context-management-2025-06-27",
    ));
    assert_eq!(c.request("POST", "/v1/messages", &h, cm).status, 200);
}

#[test]
fn exits_cleanly_on_sigterm() {
    let mut server = Server::start(&[]);
    let pid = server.child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let start = Instant::now();
    loop {
        if let Some(st) = server.child.try_wait().expect("wait") {
            assert!(st.success(), "exit status {st:?}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

//! Command-line configuration.

/// Runtime configuration of the mock server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub threads: usize,
    pub openai_key: Option<String>,
    pub anthropic_key: Option<String>,
    pub gemini_key: Option<String>,
    /// A static access token Vertex routes accept.
    pub vertex_token: Option<String>,
    /// PEM file of the RSA public key that signs service-account assertions sent to `/token`.
    pub vertex_public_key: Option<String>,
    /// Size of the request ring buffer; 0 disables recording.
    pub record: usize,
    pub verbose: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "127.0.0.1".to_string(),
            port: 0,
            threads: 2,
            openai_key: None,
            anthropic_key: None,
            gemini_key: None,
            vertex_token: None,
            vertex_public_key: None,
            record: 200,
            verbose: false,
        }
    }
}

pub const USAGE: &str = "usage: mock-provider [--host 127.0.0.1] [--port 0] [--threads 2] \
[--openai-key KEY] [--anthropic-key KEY] [--gemini-key KEY] [--vertex-token TOKEN] \
[--vertex-public-key PEM_FILE] [--record 200] [--verbose]";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Cli {
    Run(Config),
    Help,
}

impl Config {
    /// Parses `--flag value` and `--flag=value` arguments (program name excluded).
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Cli, String> {
        let mut cfg = Config::default();
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            match flag.as_str() {
                "-h" | "--help" => return Ok(Cli::Help),
                "--verbose" | "-v" => cfg.verbose = true,
                "--host"
                | "--port"
                | "--threads"
                | "--openai-key"
                | "--anthropic-key"
                | "--gemini-key"
                | "--vertex-token"
                | "--vertex-public-key"
                | "--record" => {
                    let value = match inline {
                        Some(v) => v,
                        None => it
                            .next()
                            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?,
                    };
                    match flag.as_str() {
                        "--host" => cfg.host = value,
                        "--port" => cfg.port = parse_num(&flag, &value)?,
                        "--threads" => {
                            cfg.threads = parse_num(&flag, &value)?;
                            if cfg.threads == 0 {
                                return Err(format!("--threads must be at least 1\n{USAGE}"));
                            }
                        }
                        "--openai-key" => cfg.openai_key = Some(value),
                        "--anthropic-key" => cfg.anthropic_key = Some(value),
                        "--gemini-key" => cfg.gemini_key = Some(value),
                        "--vertex-token" => cfg.vertex_token = Some(value),
                        "--vertex-public-key" => cfg.vertex_public_key = Some(value),
                        _ => cfg.record = parse_num(&flag, &value)?,
                    }
                }
                _ => return Err(format!("unknown argument: {arg}\n{USAGE}")),
            }
        }
        Ok(Cli::Run(cfg))
    }

    /// `host:port` suitable for binding (IPv6 literals get brackets).
    pub fn bind_addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn parse_num<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: not a valid number: {value:?}\n{USAGE}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn defaults_and_flags() {
        assert_eq!(Config::parse(args(&[])), Ok(Cli::Run(Config::default())));
        let Ok(Cli::Run(c)) = Config::parse(args(&[
            "--port",
            "8080",
            "--threads=4",
            "--openai-key",
            "sk-1",
            "--anthropic-key=ak",
            "--gemini-key",
            "gk",
            "--record",
            "0",
            "--verbose",
        ])) else {
            panic!("parse failed")
        };
        assert_eq!(c.port, 8080);
        assert_eq!(c.threads, 4);
        assert_eq!(c.openai_key.as_deref(), Some("sk-1"));
        assert_eq!(c.anthropic_key.as_deref(), Some("ak"));
        assert_eq!(c.gemini_key.as_deref(), Some("gk"));
        assert_eq!(c.record, 0);
        assert!(c.verbose);
    }

    #[test]
    fn bad_flags() {
        assert!(Config::parse(args(&["--port", "x"])).is_err());
        assert!(Config::parse(args(&["--port"])).is_err());
        assert!(Config::parse(args(&["--threads", "0"])).is_err());
        assert!(Config::parse(args(&["--nope"])).is_err());
        assert_eq!(Config::parse(args(&["--help"])), Ok(Cli::Help));
    }

    #[test]
    fn ipv6_bind() {
        let c = Config {
            host: "::1".into(),
            port: 5,
            ..Config::default()
        };
        assert_eq!(c.bind_addr(), "[::1]:5");
    }
}

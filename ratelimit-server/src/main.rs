//! `llmux-ratelimit`: a small Envoy rate-limit service (`envoy.service.ratelimit.v3`) for LLMux
//! tests and local runs. Production deployments run envoyproxy/ratelimit (see
//! `envoy/ratelimit/`) or Limitador; this server speaks the same protocol with the subset LLMux
//! needs:
//!
//! - Limits come only from each descriptor's `limit` override (requests_per_unit + unit), so they
//!   live in the filter's config; a descriptor without one is answered OK with no limit.
//! - `hits_addend` (request level, or the descriptor's own) charges N; 0 at request level means
//!   1, as the proto says. Every hit is counted, even over the limit (as envoyproxy/ratelimit
//!   does): a charge after a response is never lost.
//! - Each descriptor is counted on its own; the answer is OVER_LIMIT when any is.
//! - Counters live in memory (one map in this process) or in Redis
//!   (`--redis redis://...`, shared by every instance). Windows start at a counter's first hit and
//!   last one unit. Redis is spoken directly, with one Lua script that adds the hits and reads
//!   the new value atomically (INCRBY, then compare): limitador's own Redis storage does not
//!   build without its RocksDB storage in 0.12-0.14, and its check-then-update takes two round
//!   trips, which can admit two racing requests for the last slot.
//!
//! In-memory checks are serialized inside the process, so a limit is never passed there either.
//!
//! Usage: `llmux-ratelimit [--port N] [--host 127.0.0.1] [--redis URL]`. `--port 0` picks a free
//! port; the first line on stdout is `listening on HOST:PORT`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    rate_limit::Unit, Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

enum Store {
    /// Counter → (hits, window start).
    Memory(std::sync::Mutex<HashMap<String, (u64, Instant)>>),
    Redis(redis::aio::MultiplexedConnection),
}

/// One counter after a hit (or a check).
struct Count {
    over: bool,
    remaining: u64,
    reset: Duration,
}

/// Redis: add the hits (always: a usage charge is never dropped), start the window on the first
/// hit, answer the new value and the window's remaining milliseconds. `ARGV[1]` 0 only reads.
const REDIS_HIT: &str = r"
local n
if ARGV[1] == '0' then
  n = tonumber(redis.call('GET', KEYS[1]) or '0')
else
  n = redis.call('INCRBY', KEYS[1], ARGV[1])
  if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
end
return {n, redis.call('PTTL', KEYS[1])}
";

impl Store {
    /// Counts `hits` (`0`: only checks that the limit is not used up) on the counter `ns`.
    async fn hit(&self, ns: String, max: u64, seconds: u64, hits: u64) -> Result<Count, String> {
        match self {
            Store::Memory(map) => {
                // The same rule as the Redis script: every hit counts, the window starts at the
                // first hit and lasts one unit.
                let key = format!("{ns}:{seconds}");
                let window = Duration::from_secs(seconds);
                let now = Instant::now();
                let mut map = map
                    .lock()
                    .map_err(|_| "counter lock poisoned".to_string())?;
                let entry = map.entry(key).or_insert((0, now));
                if now.duration_since(entry.1) >= window {
                    *entry = (0, now);
                }
                entry.0 = entry.0.saturating_add(hits);
                let n = entry.0;
                Ok(Count {
                    over: if hits == 0 { n >= max } else { n > max },
                    remaining: max.saturating_sub(n),
                    reset: window.saturating_sub(now.duration_since(entry.1)),
                })
            }
            Store::Redis(con) => {
                let mut con = con.clone();
                let key = format!("llmux-rls:{{{ns}}}:{seconds}");
                let (n, ttl_ms): (i64, i64) = redis::Script::new(REDIS_HIT)
                    .key(key)
                    .arg(hits)
                    .arg(seconds.saturating_mul(1000))
                    .invoke_async(&mut con)
                    .await
                    .map_err(|e| e.to_string())?;
                let n = u64::try_from(n).unwrap_or(0);
                let over = if hits == 0 { n >= max } else { n > max };
                Ok(Count {
                    over,
                    remaining: max.saturating_sub(n),
                    reset: Duration::from_millis(
                        u64::try_from(ttl_ms).unwrap_or(seconds.saturating_mul(1000)),
                    ),
                })
            }
        }
    }
}

struct Service {
    store: Store,
    /// Serializes check-and-charge of the in-memory store (see the module docs).
    lock: Mutex<()>,
}

/// Seconds in one `unit` (`None`: unknown unit). Month and year are fixed lengths, as in
/// envoyproxy/ratelimit.
fn unit_seconds(unit: i32) -> Option<u64> {
    Some(match Unit::try_from(unit).ok()? {
        Unit::Second => 1,
        Unit::Minute => 60,
        Unit::Hour => 3600,
        Unit::Day => 86_400,
        Unit::Week => 7 * 86_400,
        Unit::Month => 30 * 86_400,
        Unit::Year => 365 * 86_400,
        Unit::Unknown => return None,
    })
}

/// The counter's namespace: the domain and the descriptor's entries, escaped so that no two
/// descriptors share one (and with no `{`/`}`, which Redis Cluster reads as a hash tag).
fn namespace(domain: &str, d: &RateLimitDescriptor) -> String {
    fn push(out: &mut String, s: &str) {
        for c in s.chars() {
            match c {
                '%' | '|' | '=' | '{' | '}' => out.push_str(&format!("%{:02X}", c as u32)),
                c => out.push(c),
            }
        }
    }
    let mut ns = String::from("llmux-rls|");
    push(&mut ns, domain);
    for e in &d.entries {
        ns.push('|');
        push(&mut ns, &e.key);
        ns.push('=');
        push(&mut ns, &e.value);
    }
    ns
}

impl Service {
    async fn descriptor(
        &self,
        domain: &str,
        d: &RateLimitDescriptor,
        request_hits: u64,
    ) -> Result<DescriptorStatus, String> {
        let ok = DescriptorStatus {
            code: Code::Ok as i32,
            ..Default::default()
        };
        let Some(limit) = &d.limit else {
            return Ok(ok);
        };
        let Some(seconds) = unit_seconds(limit.unit) else {
            return Ok(ok);
        };
        // A descriptor's own hits_addend wins; its 0 only checks.
        let hits = d.hits_addend.map_or(request_hits, |h| h.value);
        let c = self
            .store
            .hit(
                namespace(domain, d),
                u64::from(limit.requests_per_unit),
                seconds,
                hits,
            )
            .await?;
        Ok(DescriptorStatus {
            code: if c.over {
                Code::OverLimit as i32
            } else {
                Code::Ok as i32
            },
            current_limit: Some(RateLimit {
                name: String::new(),
                requests_per_unit: limit.requests_per_unit,
                unit: limit.unit,
            }),
            limit_remaining: u32::try_from(c.remaining).unwrap_or(u32::MAX),
            duration_until_reset: Some(PbDuration {
                seconds: i64::try_from(c.reset.as_secs_f64().ceil() as u64).unwrap_or(i64::MAX),
                nanos: 0,
            }),
            quota: None,
        })
    }
}

#[tonic::async_trait]
impl RateLimitService for Service {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let req = request.into_inner();
        let hits = u64::from(req.hits_addend.max(1));
        let _guard = match self.store {
            Store::Memory(_) => Some(self.lock.lock().await),
            Store::Redis(_) => None,
        };
        let mut statuses = Vec::with_capacity(req.descriptors.len());
        for d in &req.descriptors {
            let s = self
                .descriptor(&req.domain, d, hits)
                .await
                .map_err(|e| Status::unavailable(format!("counter storage: {e}")))?;
            statuses.push(s);
        }
        let over = statuses.iter().any(|s| s.code == Code::OverLimit as i32);
        Ok(Response::new(RateLimitResponse {
            overall_code: if over {
                Code::OverLimit as i32
            } else {
                Code::Ok as i32
            },
            statuses,
            ..Default::default()
        }))
    }
}

struct Args {
    host: String,
    port: u16,
    redis: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        host: "127.0.0.1".into(),
        port: 8081,
        redis: std::env::var("REDIS_URL").ok().filter(|s| !s.is_empty()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--host" => a.host = value()?,
            "--port" => a.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--redis" => a.redis = Some(value()?),
            "-h" | "--help" => {
                return Err(
                    "usage: llmux-ratelimit [--host 127.0.0.1] [--port 8081] [--redis redis://127.0.0.1:6379]"
                        .into(),
                )
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(a)
}

async fn connect_redis(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_multiplexed_async_connection().await?;
    redis::cmd("PING").query_async::<()>(&mut con).await?;
    Ok(con)
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let store = match &args.redis {
        Some(url) => match connect_redis(url).await {
            Ok(c) => Store::Redis(c),
            Err(e) => {
                eprintln!("llmux-ratelimit: cannot use Redis at {url}: {e}");
                std::process::exit(1);
            }
        },
        None => Store::Memory(Default::default()),
    };
    let addr: SocketAddr = match format!("{}:{}", args.host, args.port).parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("llmux-ratelimit: bad address: {e}");
            std::process::exit(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("llmux-ratelimit: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    // The first stdout line tells a launcher which port was taken.
    println!("listening on {local}");
    eprintln!(
        "llmux-ratelimit: serving envoy.service.ratelimit.v3 on {local}, counters in {}",
        if args.redis.is_some() {
            "Redis"
        } else {
            "memory"
        }
    );
    let service = Service {
        store,
        lock: Mutex::new(()),
    };
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    if let Err(e) = tonic::transport::Server::builder()
        .add_service(RateLimitServiceServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
    {
        eprintln!("llmux-ratelimit: server error: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::{
        Entry, RateLimitOverride,
    };

    fn desc(key: &str, rpm: u32, hits: Option<u64>) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: vec![Entry {
                key: "k".into(),
                value: key.into(),
            }],
            limit: Some(RateLimitOverride {
                requests_per_unit: rpm,
                unit: Unit::Minute as i32,
            }),
            hits_addend: hits.map(|value| envoy_types::pb::google::protobuf::UInt64Value { value }),
            ..Default::default()
        }
    }

    fn svc() -> Service {
        Service {
            store: Store::Memory(Default::default()),
            lock: Mutex::new(()),
        }
    }

    async fn call(s: &Service, d: Vec<RateLimitDescriptor>, hits: u32) -> RateLimitResponse {
        s.should_rate_limit(Request::new(RateLimitRequest {
            domain: "llmux".into(),
            descriptors: d,
            hits_addend: hits,
        }))
        .await
        .unwrap()
        .into_inner()
    }

    #[tokio::test]
    async fn limits_charges_and_reports() {
        let s = svc();
        for i in 0..3u32 {
            let r = call(&s, vec![desc("a", 3, None)], 0).await;
            assert_eq!(r.overall_code, Code::Ok as i32);
            assert_eq!(r.statuses[0].limit_remaining, 2 - i);
            assert_eq!(
                r.statuses[0]
                    .current_limit
                    .as_ref()
                    .unwrap()
                    .requests_per_unit,
                3
            );
        }
        let r = call(&s, vec![desc("a", 3, None)], 1).await;
        assert_eq!(r.overall_code, Code::OverLimit as i32);
        assert_eq!(r.statuses[0].limit_remaining, 0);
        let reset = r.statuses[0].duration_until_reset.unwrap().seconds;
        assert!((0..=60).contains(&reset), "{reset}");
        // Another descriptor has its own counter; one without a limit is always OK.
        let mut free = desc("b", 0, None);
        free.limit = None;
        let r = call(&s, vec![desc("b", 3, None), free], 1).await;
        assert_eq!(r.overall_code, Code::Ok as i32);
        assert_eq!(r.statuses[1].current_limit, None);
    }

    #[tokio::test]
    async fn hits_addend_and_charges_past_the_limit() {
        let s = svc();
        // 80 of 100, then a charge of 50 goes over (and is counted), then 1 more is refused.
        assert_eq!(
            call(&s, vec![desc("t", 100, None)], 80).await.overall_code,
            1
        );
        assert_eq!(
            call(&s, vec![desc("t", 100, None)], 50).await.overall_code,
            2
        );
        assert_eq!(
            call(&s, vec![desc("t", 100, None)], 1).await.overall_code,
            2
        );
        // A descriptor's own hits_addend wins; its 0 only checks.
        let r = call(&s, vec![desc("u", 10, Some(10)), desc("v", 10, Some(0))], 1).await;
        assert_eq!(r.overall_code, 1);
        assert_eq!(r.statuses[0].limit_remaining, 0);
        assert_eq!(r.statuses[1].limit_remaining, 10);
        assert_eq!(
            call(&s, vec![desc("u", 10, Some(0))], 1).await.overall_code,
            2
        );
    }

    #[test]
    fn namespaces_are_distinct_and_escaped() {
        let a = namespace("d", &desc("x|k=y", 1, None));
        let b = namespace("d", &desc("x", 1, None));
        assert_ne!(a, b);
        assert!(!a.contains('{') && !namespace("{", &desc("}", 1, None)).contains('}'));
        assert_eq!(unit_seconds(Unit::Month as i32), Some(2_592_000));
        assert_eq!(unit_seconds(0), None);
    }

    /// The filter encodes requests and decodes answers by hand: prost must agree.
    #[test]
    fn filter_codec_matches_prost() {
        use llmux::limits::proto;
        use prost::Message;
        let d = proto::Descriptor {
            entries: vec![
                ("llmux_key".into(), "alice".into()),
                ("llmux_limit".into(), "tpm".into()),
            ],
            limit: Some((1000, Unit::Minute as u32)),
            hits: Some(7),
        };
        let bytes = proto::encode_request("llmux", &[d], 250);
        let r = RateLimitRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(r.domain, "llmux");
        assert_eq!(r.hits_addend, 250);
        let got = &r.descriptors[0];
        assert_eq!(got.entries[0].key, "llmux_key");
        assert_eq!(got.entries[1].value, "tpm");
        let l = got.limit.as_ref().unwrap();
        assert_eq!((l.requests_per_unit, l.unit), (1000, Unit::Minute as i32));
        assert_eq!(got.hits_addend.map(|h| h.value), Some(7));

        let resp = RateLimitResponse {
            overall_code: Code::OverLimit as i32,
            statuses: vec![DescriptorStatus {
                code: Code::OverLimit as i32,
                current_limit: Some(RateLimit {
                    name: "x".into(),
                    requests_per_unit: 3,
                    unit: Unit::Day as i32,
                }),
                limit_remaining: 0,
                duration_until_reset: Some(PbDuration {
                    seconds: 59,
                    nanos: 5,
                }),
                quota: None,
            }],
            raw_body: b"ignored".to_vec(),
            ..Default::default()
        };
        let out = proto::decode_response(&resp.encode_to_vec()).unwrap();
        assert_eq!(out.overall_code, proto::CODE_OVER_LIMIT);
        assert_eq!(
            out.statuses,
            vec![proto::Status {
                code: 2,
                limit: Some((3, Unit::Day as u32)),
                remaining: 0,
                reset_secs: Some(60),
            }]
        );
    }
}

//! Rate limits and team budgets across several real data-plane processes sharing one real
//! `redis-server` (and a three-master Redis Cluster), against the fake upstream.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use llmgate_tests::fake::FakeUpstream;
use llmgate_tests::harness::{Gateway, Reply, SseReader, UPSTREAM_KEY, sha256_hex};
use llmgate_tests::redis::{RedisCluster, RedisServer};
use llmgate_tests::webhook::Receiver;
use serde_json::{Value, json};

const ENG: &str = "sk-eng";
/// Tests that are not about Redis failing give it time: several gateways and test processes
/// share two cores here.
const PATIENT: &str = "2s";
const PRODUCT: &str = "sk-product";
const SALES: &str = "sk-sales";

fn key_yaml(name: &str, key: &str, user: &str, team: &str) -> String {
    format!(
        "---\napiVersion: llmgate.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: {name}}}\nspec: {{user: {user}, team: {team}, sha256: \"{}\"}}\n",
        sha256_hex(key)
    )
}

fn model_yaml(
    model: &str,
    upstream: &str,
    url: &str,
    input: f64,
    output: f64,
    extra: &str,
) -> String {
    format!(
        r#"---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {{name: {model}}}
spec:
  model: {model}
  provider: openai-compatible
  upstreamModel: "{upstream}"
  replicas: [{{url: "{url}"}}]
  credentials: {{apiKey: {{secretRef: {{name: upstream, key: api-key}}}}}}
  pricing: {{inputPerMillion: {input}, outputPerMillion: {output}}}
  maxOutputTokens: 16000
{extra}
"#
    )
}

const EVERYONE_EVERYTHING: &str = r#"---
apiVersion: llmgate.dev/v1alpha1
kind: AccessPolicy
metadata: {name: everyone}
spec:
  rules:
    - name: all-models
      subjects: [{authenticated: true}]
      models: ["*"]
"#;

/// The seed scenario: gpt-4 budgets per team, fallback to llama-3 then gpt-3.5-turbo.
fn teams_config(url: &str, hook: &str) -> String {
    let mut c = String::new();
    c += &model_yaml("gpt-4", "tokens:16000", url, 30.0, 60.0, "");
    c += &model_yaml("llama-3", "tokens:2000", url, 0.2, 0.2, "");
    c += &model_yaml("gpt-3.5-turbo", "tokens:1000", url, 0.5, 1.5, "");
    c += &key_yaml("eng", ENG, "ada", "llm-engineering");
    c += &key_yaml("product", PRODUCT, "pat", "product");
    c += &key_yaml("sales", SALES, "sam", "sales");
    c += EVERYONE_EVERYTHING;
    for (name, team, usd) in [
        ("llm-engineering", "llm-engineering", 100),
        ("product", "product", 30),
        ("everyone-else", "*", 20),
    ] {
        c += &format!(
            r#"---
apiVersion: llmgate.dev/v1alpha1
kind: TeamBudget
metadata: {{name: {name}}}
spec:
  team: "{team}"
  amountUsd: {usd}
  period: day
  models: [gpt-4]
  fallback: [llama-3, gpt-3.5-turbo]
  alerts: {{thresholds: [50, 80, 95], webhookUrl: "{hook}"}}
"#
        );
    }
    c
}

async fn start_replicas(config: &str, n: usize, args: &[&str]) -> Vec<Gateway> {
    let mut gws = Vec::new();
    for _ in 0..n {
        gws.push(Gateway::start(config, args).await);
    }
    gws
}

fn today() -> String {
    jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .to_string()
}

fn budget_key(team: &str, budget: &str) -> String {
    format!(
        "llmgate:v1:{{t:{team}}}:b:default/{budget}:{team}:{}",
        today()
    )
}

async fn chat(gw: &Gateway, key: &str, body: Value) -> Reply {
    gw.call_with_key("POST", "/v1/chat/completions", Some(body), Some(key))
        .await
}

/// A stream read to its end: the served model and whether it ended with [DONE].
async fn chat_streamed(gw: &Gateway, key: &str, body: Value) -> (u16, String, bool) {
    let resp = gw
        .send(
            "POST",
            "/v1/chat/completions",
            Some(body.to_string()),
            Some(key),
        )
        .await;
    let status = resp.status().as_u16();
    let model = resp
        .headers()
        .get("x-llmgate-model")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let events = SseReader::new(resp.into_body()).all().await;
    let done = events.last().is_some_and(|e| e == "[DONE]");
    (status, model, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn team_budgets_hold_across_three_replicas_and_fall_back_when_spent() {
    let redis = RedisServer::start();
    let fake = FakeUpstream::start(UPSTREAM_KEY).await.expect("fake");
    let hook = Receiver::start().await;
    let config = teams_config(&fake.base_url(), &hook.url());
    let gws = start_replicas(
        &config,
        3,
        &["--redis-url", &redis.url(), "--redis-timeout", PATIENT],
    )
    .await;

    // 450 requests at once, 150 per team, spread over the three replicas; every third streams.
    let mut tasks = Vec::new();
    for i in 0..450usize {
        let key = [ENG, PRODUCT, SALES][i % 3];
        let gw = &gws[(i / 3) % 3];
        let body = json!({"model": "gpt-4", "max_tokens": 16000, "stream": i % 9 < 3,
            "messages": [{"role": "user", "content": format!("Summarise report number {i} for the board")}]});
        tasks.push(async move {
            if body["stream"] == json!(true) {
                let (status, model, done) = chat_streamed(gw, key, body).await;
                assert!(done, "stream {i} ended with [DONE]");
                (key, status, model)
            } else {
                let r = chat(gw, key, body).await;
                (
                    key,
                    r.status.as_u16(),
                    r.header("x-llmgate-model").to_owned(),
                )
            }
        });
    }
    let results = futures_util::future::join_all(tasks).await;
    let mut served: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for (key, status, model) in &results {
        assert_eq!(*status, 200, "every request is served (no 429, no 5xx)");
        *served.entry((key, model.clone())).or_default() += 1;
    }

    // Settles are asynchronous: wait until nothing is reserved any more.
    let teams = [
        (ENG, "llm-engineering", "llm-engineering", 100_000_000i64),
        (PRODUCT, "product", "product", 30_000_000),
        (SALES, "sales", "everyone-else", 20_000_000),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    while teams
        .iter()
        .any(|(_, team, budget, _)| redis.hget_i64(&budget_key(team, budget), "reserved") != 0)
    {
        assert!(
            Instant::now() < deadline,
            "reservations were not all settled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut audit: Vec<Value> = Vec::new();
    for gw in &gws {
        audit.extend(gw.audit_until(1).await);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while audit.len() < 450 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        audit = gws.iter().flat_map(|g| g.audit()).collect();
    }
    assert_eq!(audit.len(), 450, "one audit record per request");

    // Worst case of one gpt-4 request: its prompt plus 16000 output tokens at $60/M.
    let worst = 16_000 * 60 + 100 * 30;
    for (key, team, budget, amount) in teams {
        let k = budget_key(team, budget);
        let spent = redis.hget_i64(&k, "spent");
        assert!(
            spent <= amount,
            "{team} spent {spent} of {amount}: the budget was overshot"
        );
        // Spent down to less than one request's worst case: fallbacks were needed.
        assert!(
            amount - spent < 2 * worst,
            "{team} stopped at {spent} of {amount} though more fitted"
        );
        let gpt4 = served
            .get(&(key, "gpt-4".to_string()))
            .copied()
            .unwrap_or(0);
        let fallback = served
            .get(&(key, "llama-3".to_string()))
            .copied()
            .unwrap_or(0);
        assert!(gpt4 > 0 && fallback > 0, "{team}: {served:?}");
        assert_eq!(
            gpt4 + fallback,
            150,
            "{team}: llama-3 covers the rest: {served:?}"
        );

        // Audit records of gpt-4 add up to exactly what Redis counted.
        let records: Vec<&Value> = audit.iter().filter(|r| r["team"] == team).collect();
        let charged: i64 = records
            .iter()
            .filter(|r| r["model_served"] == "gpt-4")
            .map(|r| r["budget_charged_usd_micros"].as_i64().expect("charged"))
            .sum();
        assert_eq!(
            charged, spent,
            "{team}: audit records equal the Redis counter"
        );
        for r in records.iter().filter(|r| r["model_served"] == "llama-3") {
            assert_eq!(r["fallback_from"], "gpt-4");
            assert_eq!(
                r["fallback_reason"],
                format!("budget_exhausted:default/{budget}")
            );
        }
        // Every hold was released.
        assert_eq!(redis.cli(&["ZCARD", &format!("{k}:holds")]).trim(), "0");
    }

    // Each threshold fired exactly once per team, across the three replicas.
    let deadline = Instant::now() + Duration::from_secs(10);
    while hook.received().len() < 9 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut alerts: Vec<(String, u64)> = hook
        .received()
        .iter()
        .map(|a| {
            (
                a["team"].as_str().unwrap_or("").to_owned(),
                a["threshold_percent"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    alerts.sort();
    let mut expected: Vec<(String, u64)> = ["llm-engineering", "product", "sales"]
        .iter()
        .flat_map(|t| [50, 80, 95].map(|p| (t.to_string(), p)))
        .collect();
    expected.sort();
    assert_eq!(alerts, expected);

    // The metrics say the same, summed over the replicas.
    let mut fallbacks = 0.0;
    let mut sent = 0.0;
    for gw in &gws {
        fallbacks += gw
            .metric(
                "llmgate_budget_fallbacks_total",
                &[("from", "gpt-4"), ("to", "llama-3")],
            )
            .await;
        sent += gw
            .metric("llmgate_budget_alerts_total", &[("result", "sent")])
            .await;
    }
    let fell_back: usize = served
        .iter()
        .filter(|((_, m), _)| m == "llama-3")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(fallbacks, fell_back as f64);
    assert_eq!(sent, 9.0);

    // One admission call per request; settles go in batches (seen here: 87 to 196 settle
    // calls for 450 settles, depending on load). At most 850: if fewer than 50 settles shared
    // a call, batching is broken.
    let fcalls = redis.calls("fcall");
    assert!(
        (451..=850).contains(&fcalls),
        "{fcalls} FCALLs for 450 requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_without_fallback_refuses_with_a_clear_429() {
    let redis = RedisServer::start();
    let fake = FakeUpstream::start(UPSTREAM_KEY).await.expect("fake");
    let mut c = model_yaml("gpt-4", "tokens:1000", &fake.base_url(), 30.0, 60.0, "");
    c += &key_yaml("eng", ENG, "ada", "llm-engineering");
    c += EVERYONE_EVERYTHING;
    c += "---\napiVersion: llmgate.dev/v1alpha1\nkind: TeamBudget\nmetadata: {name: tiny}\nspec: {team: llm-engineering, amountUsd: 0.1, period: month, timeZone: Europe/Berlin, models: [gpt-4]}\n";
    let gw = Gateway::start(
        &c,
        &["--redis-url", &redis.url(), "--redis-timeout", PATIENT],
    )
    .await;
    let body = json!({"model": "gpt-4", "max_tokens": 1000,
        "messages": [{"role": "user", "content": "hello"}]});
    // $0.06 reserved and charged per request: one fits in $0.10, the second does not.
    let ok = chat(&gw, ENG, body.clone()).await;
    assert_eq!(ok.status, 200, "{:?}", ok.json());
    let left: f64 = ok
        .header("x-llmgate-budget-remaining-usd")
        .parse()
        .expect("remaining");
    assert!(left > 0.03 && left < 0.05, "{left}");
    let refused = chat(&gw, ENG, body).await;
    assert_eq!(refused.status, 429);
    let e = refused.json();
    assert_eq!(e["error"]["type"], "insufficient_quota");
    assert_eq!(e["error"]["code"], "budget_exceeded");
    let msg = e["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("llm-engineering") && msg.contains("default/tiny"),
        "{msg}"
    );
    // The budget resets at the start of the next month in Berlin.
    let retry: i64 = refused.header("retry-after").parse().expect("retry-after");
    let berlin = jiff::Timestamp::now()
        .in_tz("Europe/Berlin")
        .expect("Europe/Berlin");
    let next_month = berlin
        .first_of_month()
        .and_then(|d| d.start_of_day())
        .and_then(|d| d.checked_add(jiff::Span::new().months(1)))
        .expect("next month");
    let until = (next_month.timestamp() - jiff::Timestamp::now()).get_seconds();
    assert!(
        (retry - until).abs() <= 5,
        "retry-after {retry}, {until} s to {next_month}"
    );
    assert_eq!(refused.header("x-should-retry"), "false");
    assert_eq!(
        gw.metric(
            "llmgate_budget_exhausted_total",
            &[("limit", "default/tiny")]
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_per_user_request_limit_holds_across_three_replicas() {
    let redis = RedisServer::start();
    let mut c = String::from(
        "apiVersion: llmgate.dev/v1alpha1\nkind: ModelEndpoint\nmetadata: {name: m}\nspec: {model: m, provider: mock}\n",
    );
    c += &key_yaml("eng", ENG, "ada", "llm-engineering");
    c += &key_yaml("eng2", PRODUCT, "bob", "llm-engineering");
    c += r#"---
apiVersion: llmgate.dev/v1alpha1
kind: AccessPolicy
metadata: {name: everyone}
spec:
  rules:
    - subjects: [{authenticated: true}]
      models: ["*"]
  rateLimits:
    - name: per-user
      per: [user]
      window: hour
      requests: 20
"#;
    let gws = start_replicas(
        &c,
        3,
        &["--redis-url", &redis.url(), "--redis-timeout", PATIENT],
    )
    .await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let tasks = (0..60).map(|i| chat(&gws[i % 3], ENG, body.clone()));
    let replies = futures_util::future::join_all(tasks).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        ok, 20,
        "20 per hour for this user, whichever replica answers"
    );
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(refused.len(), 40);
    let r = refused[0];
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    assert_eq!(r.json()["error"]["type"], "requests");
    assert_eq!(r.header("x-ratelimit-limit-requests"), "20");
    assert_eq!(r.header("x-ratelimit-remaining-requests"), "0");
    // A refusal names no serving model, and still has its request id.
    assert_eq!(r.header("x-llmgate-model"), "");
    assert_eq!(r.header("x-request-id").len(), 32);
    assert!(r.header("x-ratelimit-reset-requests").ends_with('s'));
    // GCRA: 20 an hour is one every 180 s; the burst was spent just now, so the next one is
    // 180 s away less the seconds this test has taken.
    let retry: u64 = r.header("retry-after").parse().expect("retry-after");
    assert!(
        (170..=180).contains(&retry),
        "one request frees up every 3 minutes: {retry}"
    );
    let retry_ms: u64 = r.header("retry-after-ms").parse().expect("retry-after-ms");
    assert!(
        retry_ms.div_ceil(1000) == retry,
        "{retry_ms} ms vs {retry} s"
    );
    // Each admitted reply says what is left, and no two say the same: the counting is atomic
    // across the replicas.
    let mut remaining: Vec<u64> = replies
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| {
            assert_eq!(r.header("x-ratelimit-limit-requests"), "20");
            r.header("x-ratelimit-remaining-requests")
                .parse()
                .expect("remaining")
        })
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..20).collect::<Vec<u64>>());
    // Another user has a counter of their own.
    assert_eq!(chat(&gws[0], PRODUCT, body).await.status, 200);
    let mut limited = 0.0;
    for gw in &gws {
        limited += gw
            .metric(
                "llmgate_rate_limited_total",
                &[("limit", "default/everyone#per-user")],
            )
            .await;
    }
    assert_eq!(limited, 40.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_team_token_limit_holds_with_streaming_and_trues_up() {
    let redis = RedisServer::start();
    let fake = FakeUpstream::start(UPSTREAM_KEY).await.expect("fake");
    let mut c = model_yaml("writer", "tokens:1000", &fake.base_url(), 1.0, 1.0, "");
    c += &key_yaml("eng", ENG, "ada", "llm-engineering");
    c += &key_yaml("research", PRODUCT, "rae", "research");
    c += r#"---
apiVersion: llmgate.dev/v1alpha1
kind: AccessPolicy
metadata: {name: everyone}
spec:
  rules:
    - subjects: [{authenticated: true}]
      models: ["*"]
  rateLimits:
    - name: team-tokens
      per: [team]
      window: hour
      tokens: 10000
"#;
    let gws = start_replicas(
        &c,
        3,
        &["--redis-url", &redis.url(), "--redis-timeout", PATIENT],
    )
    .await;
    // Each stream reserves its prompt + 2000 but the model writes 1000: without the true-up
    // only 4 would fit in 10000 tokens; with it, 8.
    let mut admitted = 0;
    let mut used = 0u64;
    for i in 0..12 {
        let body = json!({"model": "writer", "max_tokens": 2000, "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "write"}]});
        let resp = gws[i % 3]
            .send(
                "POST",
                "/v1/chat/completions",
                Some(body.to_string()),
                Some(ENG),
            )
            .await;
        if resp.status() == 429 {
            let remaining = resp
                .headers()
                .get("x-ratelimit-remaining-tokens")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .expect("remaining tokens header");
            assert!(
                remaining < 2100,
                "refused only when the reservation does not fit"
            );
            let retry: u64 = resp.headers()["retry-after"]
                .to_str()
                .ok()
                .and_then(|v| v.parse().ok())
                .expect("retry-after");
            let retry_ms: u64 = resp.headers()["retry-after-ms"]
                .to_str()
                .ok()
                .and_then(|v| v.parse().ok())
                .expect("retry-after-ms");
            assert!(
                retry >= 1 && retry_ms.div_ceil(1000) == retry,
                "{retry} s, {retry_ms} ms"
            );
            let r = Reply::read(resp).await;
            assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
            assert_eq!(r.json()["error"]["type"], "tokens");
            break;
        }
        assert_eq!(resp.status(), 200);
        let events = SseReader::new(resp.into_body()).all().await;
        let usage: Value = events
            .iter()
            .rev()
            .filter_map(|e| serde_json::from_str::<Value>(e).ok())
            .find(|v| v["usage"].is_object())
            .map(|v| v["usage"].clone())
            .expect("usage chunk");
        used += usage["total_tokens"].as_u64().expect("total");
        admitted += 1;
        // Let the settle land before the next admission.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(admitted, 8, "true-up gives back what streams did not use");
    assert!(used <= 10_000, "{used} tokens used under a 10000 limit");

    // The same limit under concurrency: 30 streams at once over the three replicas, from
    // another team (a counter of its own). Reservations are atomic across replicas, so what
    // the admitted streams used stays within the limit.
    let streams = (0..30).map(|i| {
        let gw = &gws[i % 3];
        async move {
            let body = json!({"model": "writer", "max_tokens": 2000, "stream": true,
                "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": format!("write {i}")}]});
            let resp = gw
                .send(
                    "POST",
                    "/v1/chat/completions",
                    Some(body.to_string()),
                    Some(PRODUCT),
                )
                .await;
            if resp.status() != 200 {
                assert_eq!(resp.status(), 429);
                return None;
            }
            let events = SseReader::new(resp.into_body()).all().await;
            events
                .iter()
                .filter_map(|e| serde_json::from_str::<Value>(e).ok())
                .find_map(|v| v["usage"]["total_tokens"].as_u64())
        }
    });
    let used: Vec<u64> = futures_util::future::join_all(streams)
        .await
        .into_iter()
        .flatten()
        .collect();
    let total: u64 = used.iter().sum();
    assert!(used.len() >= 4, "{} of 30 admitted", used.len());
    assert!(total <= 10_000, "{total} tokens used under a 10000 limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_data_plane_killed_mid_stream_leaves_no_reservation_after_its_hold() {
    let redis = RedisServer::start();
    let fake = FakeUpstream::start(UPSTREAM_KEY).await.expect("fake");
    // total 2s: a reservation is held 2 s + 5 s grace.
    let mut c = model_yaml(
        "slow",
        "slow-stream:300",
        &fake.base_url(),
        30.0,
        60.0,
        "  timeouts: {total: 2s}",
    );
    c += &key_yaml("eng", ENG, "ada", "llm-engineering");
    c += EVERYONE_EVERYTHING;
    c += "---\napiVersion: llmgate.dev/v1alpha1\nkind: TeamBudget\nmetadata: {name: eng}\nspec: {team: llm-engineering, amountUsd: 100, period: day}\n";
    let mut doomed = Gateway::start(
        &c,
        &["--redis-url", &redis.url(), "--redis-timeout", PATIENT],
    )
    .await;
    let survivor = Gateway::start(
        &c,
        &["--redis-url", &redis.url(), "--redis-timeout", PATIENT],
    )
    .await;
    let key = budget_key("llm-engineering", "eng");

    let body = json!({"model": "slow", "stream": true, "max_tokens": 100,
        "messages": [{"role": "user", "content": "one two three four five six"}]});
    let resp = doomed
        .send(
            "POST",
            "/v1/chat/completions",
            Some(body.to_string()),
            Some(ENG),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let mut sse = SseReader::new(resp.into_body());
    assert!(sse.next().await.is_some(), "first chunk arrived");
    let reserved = redis.hget_i64(&key, "reserved");
    assert!(reserved > 0, "the stream holds a reservation");
    doomed.kill();
    drop(sse);
    let killed_at = Instant::now();

    // Past `total` (2 s) but within its 5 s grace the reservation stands: an admission 4 s
    // after the kill, which would release an expired hold, leaves it in place.
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(killed_at.elapsed())).await;
    let r = chat(
        &survivor,
        ENG,
        json!({"model": "slow", "max_tokens": 5,
        "messages": [{"role": "user", "content": "a"}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(redis.hget_i64(&key, "reserved"), reserved);

    // After it, the next admission releases it; nothing is charged for it.
    tokio::time::sleep(
        Duration::from_secs(7).saturating_sub(killed_at.elapsed()) + Duration::from_millis(500),
    )
    .await;
    let spent_before = redis.hget_i64(&key, "spent");
    let r = chat(
        &survivor,
        ENG,
        json!({"model": "slow", "max_tokens": 5,
        "messages": [{"role": "user", "content": "a"}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.hget_i64(&key, "reserved") != 0 {
        assert!(
            Instant::now() < deadline,
            "the dead reservation was not released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(redis.cli(&["ZCARD", &format!("{key}:holds")]).trim(), "0");
    let charged = survivor.audit_until(2).await[1]["budget_charged_usd_micros"]
        .as_i64()
        .expect("charged");
    assert_eq!(redis.hget_i64(&key, "spent"), spent_before + charged);
}

/// README: while Redis is away a `failMode: open` limit admits, on each replica, at most its
/// `localAllowancePercent` of the limit; `closed` refuses with 503; what was counted locally
/// reaches Redis once it is back. Each request is priced at exactly 1 % of the budget and the
/// allowance is 5 %, so each replica admits exactly 5: an uncapped allowance admits more, a
/// shared one fewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_going_away_applies_each_fail_mode_within_each_replicas_allowance() {
    let mut redis = RedisServer::start();
    let fake = FakeUpstream::start(UPSTREAM_KEY).await.expect("fake");
    // $1000 per million output tokens and max_tokens 10: each call reserves and costs
    // 10 000 µ$, 1 % of the $1 budget.
    let mut c = model_yaml(
        "open-model",
        "tokens:1000",
        &fake.base_url(),
        0.0,
        1000.0,
        "",
    );
    c += "---\napiVersion: llmgate.dev/v1alpha1\nkind: TeamBudget\nmetadata: {name: open-budget}\nspec: {team: ml, amountUsd: 1, period: day, models: [open-model], failMode: open, localAllowancePercent: 5}\n";
    c += "---\napiVersion: llmgate.dev/v1alpha1\nkind: ModelEndpoint\nmetadata: {name: closed-model}\nspec: {model: closed-model, provider: mock, pricing: {inputPerMillion: 1000, outputPerMillion: 1000}}\n";
    c += "---\napiVersion: llmgate.dev/v1alpha1\nkind: TeamBudget\nmetadata: {name: closed-model}\nspec: {team: ml, amountUsd: 1000, period: day, models: [closed-model], failMode: closed}\n";
    for m in ["rl-open", "rl-closed"] {
        c += &format!(
            "---\napiVersion: llmgate.dev/v1alpha1\nkind: ModelEndpoint\nmetadata: {{name: {m}}}\nspec: {{model: {m}, provider: mock}}\n"
        );
    }
    c += &key_yaml("eng", ENG, "ada", "ml");
    c += &EVERYONE_EVERYTHING.replace(
        "      models: [\"*\"]\n",
        "      models: [\"*\"]\n  rateLimits:\n    - {name: per-user-open, per: [user], models: [rl-open], window: hour, requests: 100, failMode: open, localAllowancePercent: 5}\n    - {name: per-user-closed, per: [user], models: [rl-closed], window: hour, requests: 100, failMode: closed}\n",
    );
    let args = ["--redis-url", &redis.url(), "--redis-timeout", "100ms"];
    let gws = start_replicas(&c, 2, &args).await;
    let body = |m: &str| json!({"model": m, "max_tokens": 10, "messages": [{"role": "user", "content": "hello"}]});
    for gw in &gws {
        for m in ["open-model", "closed-model", "rl-open", "rl-closed"] {
            let r = chat(gw, ENG, body(m)).await;
            assert_eq!(r.status, 200, "{m}: {:?}", r.json());
        }
    }
    // 98 % spent in Redis: whatever the replicas admit alone overshoots, by a bounded amount.
    let open_key = budget_key("ml", "open-budget");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(redis.hget_i64(&open_key, "spent"), 20_000);
    redis.cli(&["HINCRBY", &open_key, "spent", "960000"]);

    // Redis stops answering (the process is paused: a partition, its data kept).
    let pid = redis_pid(&redis);
    signal(&pid, "STOP");
    let mut errors_when_degraded = Vec::new();
    for gw in &gws {
        let mut admitted = 0;
        for _ in 0..8 {
            let r = chat(gw, ENG, body("open-model")).await;
            match r.status.as_u16() {
                200 => admitted += 1,
                429 => assert_eq!(r.json()["error"]["code"], "budget_exceeded"),
                s => panic!("fail open: {s} {:?}", r.json()),
            }
        }
        assert_eq!(
            admitted, 5,
            "5 % of $1 at 1 % a call, on this replica alone"
        );
        assert_eq!(gw.readyz().await["counters"]["degraded"], true);
        errors_when_degraded.push(gw.metric("llmgate_counter_store_errors_total", &[]).await);

        let mut admitted = 0;
        for _ in 0..8 {
            let r = chat(gw, ENG, body("rl-open")).await;
            match r.status.as_u16() {
                200 => admitted += 1,
                429 => {
                    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
                    assert_eq!(r.header("x-ratelimit-limit-requests"), "100");
                }
                s => panic!("fail open: {s} {:?}", r.json()),
            }
        }
        assert_eq!(admitted, 5, "5 % of 100 requests, on this replica alone");

        for m in ["closed-model", "rl-closed"] {
            let r = chat(gw, ENG, body(m)).await;
            assert_eq!(r.status, 503, "{m} fails closed");
            assert_eq!(r.json()["error"]["code"], "counters_unavailable");
        }
    }
    for (gw, errors) in gws.iter().zip(&errors_when_degraded) {
        // Once degraded, requests no longer wait for Redis: the error count stands still.
        assert_eq!(
            gw.metric("llmgate_counter_store_errors_total", &[]).await,
            *errors
        );
        assert!(gw.metric("llmgate_counter_store_degraded", &[]).await == 1.0);
        // Every open-mode decision of the outage was taken locally: 8 budgeted, 8 rate-limited.
        assert_eq!(
            gw.metric("llmgate_counter_store_local_admissions_total", &[])
                .await,
            16.0
        );
        let local: Vec<Value> = gw
            .audit()
            .into_iter()
            .filter(|r| r["counters"] == "local" && r["status"] == 200)
            .collect();
        assert_eq!(
            local.len(),
            10,
            "5 budgeted and 5 rate-limited, counted locally"
        );
        assert!(local.iter().all(|r| r["budget_charged_usd_micros"] == 10_000
            || r["model_served"] == "rl-open"));
    }

    // Back: the local counts are replayed once, and Redis agrees with the audit records.
    signal(&pid, "CONT");
    let deadline = Instant::now() + Duration::from_secs(10);
    for gw in &gws {
        while gw.readyz().await["counters"]["degraded"] != false {
            assert!(Instant::now() < deadline, "did not leave degraded mode");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(chat(&gws[0], ENG, body("closed-model")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // 98 % + 2 replicas × 5 %: over the amount, never by more than the allowances.
    let spent = redis.hget_i64(&open_key, "spent");
    assert_eq!(spent, 980_000 + 2 * 5 * 10_000);
    assert!(spent <= 1_000_000 + 2 * 50_000);
    let charged = |model: &str| -> i64 {
        gws.iter()
            .flat_map(|g| g.audit())
            .filter(|r| r["model_served"] == model)
            .filter_map(|r| r["budget_charged_usd_micros"].as_i64())
            .sum()
    };
    assert_eq!(spent - 960_000, charged("open-model"));
    assert_eq!(
        redis.hget_i64(&budget_key("ml", "closed-model"), "spent"),
        charged("closed-model"),
        "closed-model: what was counted reached Redis, once"
    );
    // The overshoot is seen by every replica: the budget now refuses.
    let r = chat(&gws[1], ENG, body("open-model")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["code"], "budget_exceeded");
    // The 10 requests admitted locally count against the shared limit: 2 + 10 of 100 used.
    let burst = (0..100).map(|i| chat(&gws[i % 2], ENG, body("rl-open")));
    let ok = futures_util::future::join_all(burst)
        .await
        .iter()
        .filter(|r| r.status == 200)
        .count();
    assert_eq!(ok, 88);

    // Redis restarted empty: the gateway reconnects and serves again.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = chat(&gws[1], ENG, body("closed-model")).await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503);
        assert!(
            Instant::now() < deadline,
            "did not recover after a Redis restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn redis_pid(redis: &RedisServer) -> String {
    redis
        .cli(&["INFO", "server"])
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .map(|p| p.trim().to_owned())
        .expect("redis pid")
}

fn signal(pid: &str, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), pid])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_cluster_keeps_each_teams_counters_in_one_slot() {
    let cluster = RedisCluster::start();
    let fake = FakeUpstream::start(UPSTREAM_KEY).await.expect("fake");
    let hook = Receiver::start().await;
    let mut config = teams_config(&fake.base_url(), &hook.url());
    // A limit shared by everyone lives under its own tag: admitted in a second step.
    config = config.replace(
        "      models: [\"*\"]\n",
        "      models: [\"*\"]\n  rateLimits:\n    - {name: global, window: hour, requests: 100000}\n",
    );
    let gws = start_replicas(
        &config,
        2,
        &[
            "--redis-cluster-nodes",
            &cluster.seeds(),
            "--redis-timeout",
            PATIENT,
        ],
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..240usize {
        let key = [ENG, PRODUCT, SALES][i % 3];
        let gw = &gws[i % 2];
        let body = json!({"model": "gpt-4", "max_tokens": 16000,
            "messages": [{"role": "user", "content": format!("request {i}")}]});
        tasks.push(async move { (key, chat(gw, key, body).await) });
    }
    let results = futures_util::future::join_all(tasks).await;
    for (_, r) in &results {
        assert_eq!(r.status, 200, "{:?}", r.json());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (team, budget, amount) in [
        ("product", "product", 30_000_000),
        ("sales", "everyone-else", 20_000_000),
    ] {
        let k = budget_key(team, budget);
        let spent = cluster.hget_i64(&k, "spent");
        assert!(spent > 0 && spent <= amount, "{team}: {spent}");
        // Every key of the team sits on one node: one slot by its hash tag.
        let nodes: std::collections::BTreeSet<u16> = cluster
            .keys(&format!("llmgate:v1:{{t:{team}}}:*"))
            .into_iter()
            .map(|(port, _)| port)
            .collect();
        assert_eq!(nodes.len(), 1, "{team}'s keys span nodes: {nodes:?}");
        let charged: i64 = gws
            .iter()
            .flat_map(|g| g.audit())
            .filter(|r| r["team"] == team && r["model_served"] == "gpt-4")
            .filter_map(|r| r["budget_charged_usd_micros"].as_i64())
            .sum();
        assert_eq!(charged, spent);
    }
    let fallbacks = results
        .iter()
        .filter(|(k, r)| *k == SALES && r.header("x-llmgate-fallback-from") == "gpt-4")
        .count();
    assert!(fallbacks > 0, "sales ran out of its $20 and fell back");
    // The global limit counted every request once.
    let global: Vec<(u16, String)> = cluster.keys("llmgate:v1:{g:*");
    assert_eq!(global.len(), 1, "{global:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clamping_budget_shortens_the_answer_to_what_it_can_pay_for() {
    // Standalone, no Redis: the in-process store.
    clamp_scenario(&[], "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clamping_budget_in_redis_shortens_the_answer_the_same_way() {
    // The same rules in the Redis functions.
    let redis = RedisServer::start();
    clamp_scenario(
        &["--redis-url", &redis.url(), "--redis-timeout", PATIENT],
        "redis",
    )
    .await;
    let key = budget_key("llm-engineering", "eng");
    assert_eq!(redis.hget_i64(&key, "spent"), 1_000_000);
    assert_eq!(redis.hget_i64(&key, "reserved"), 0);
}

async fn clamp_scenario(args: &[&str], counters: &str) {
    let fake = FakeUpstream::start(UPSTREAM_KEY).await.expect("fake");
    let mut c = model_yaml("writer", "tokens:5000", &fake.base_url(), 0.0, 1000.0, "");
    c += &key_yaml("eng", ENG, "ada", "llm-engineering");
    c += EVERYONE_EVERYTHING;
    // $1 at $1000 per million output tokens: 1000 tokens in all.
    c += "---\napiVersion: llmgate.dev/v1alpha1\nkind: TeamBudget\nmetadata: {name: eng}\nspec: {team: llm-engineering, amountUsd: 1, period: day, clampMaxTokens: true}\n";
    let gw = Gateway::start(&c, args).await;
    let body = json!({"model": "writer", "max_tokens": 700,
        "messages": [{"role": "user", "content": "write"}]});
    let first = chat(&gw, ENG, body.clone()).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-llmgate-max-tokens-clamped"), "");
    assert_eq!(first.json()["usage"]["completion_tokens"], 700);
    assert_eq!(fake.last_request()["max_tokens"], 700);
    // 300 tokens' worth left: the next answer is cut to 300, and the upstream was told so.
    let second = chat(&gw, ENG, body.clone()).await;
    assert_eq!(second.status, 200, "{:?}", second.json());
    assert_eq!(second.header("x-llmgate-max-tokens-clamped"), "300");
    assert_eq!(second.json()["usage"]["completion_tokens"], 300);
    assert_eq!(fake.last_request()["max_tokens"], 300);
    // Nothing left: refused.
    let third = chat(&gw, ENG, body).await;
    assert_eq!(third.status, 429);
    assert_eq!(third.json()["error"]["code"], "budget_exceeded");
    let audit = gw.audit_until(3).await;
    assert_eq!(audit[1]["max_tokens_clamped"], 300);
    assert_eq!(audit[1]["budget_charged_usd_micros"], 300_000);
    assert_eq!(audit[1]["counters"], counters);
}

/// The overshoot bound, tried as a hostile caller would: 300 concurrent requests over three
/// replicas, each carrying length and choice fields a self-hosted server reads, against an
/// upstream that bills every sequence it was asked for at full length. What it billed never
/// exceeds the budget, and the budget was spent close to the end (the test is not vacuous).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn length_and_choice_fields_cannot_outrun_a_budget() {
    use std::sync::atomic::Ordering;
    let redis = RedisServer::start();
    let fake = FakeUpstream::start(UPSTREAM_KEY).await.expect("fake");
    // $1 per million prompt tokens, $10 per million output tokens (10 µ$ each); at most 2000
    // output tokens per sequence.
    let mut c = model_yaml("local", "bill-asked", &fake.base_url(), 1.0, 10.0, "")
        .replace("maxOutputTokens: 16000", "maxOutputTokens: 2000");
    c += &key_yaml("eng", ENG, "ada", "llm-engineering");
    c += EVERYONE_EVERYTHING;
    c += "---\napiVersion: llmgate.dev/v1alpha1\nkind: TeamBudget\nmetadata: {name: daily}\nspec: {team: llm-engineering, amountUsd: 0.5, period: day}\n";
    let gws = start_replicas(
        &c,
        3,
        &["--redis-url", &redis.url(), "--redis-timeout", PATIENT],
    )
    .await;
    let hostile = [
        json!({"n": 4, "max_tokens": 10}),
        json!({"max_tokens": 10, "n_predict": 2000}),
        json!({"max_completion_tokens": 1, "max_tokens": 3000}),
        json!({"max_tokens": 5, "max_new_tokens": 2500}),
        json!({"n": 3}),
        json!({"n_predict": -1}),
        json!({"max_tokens": 1, "min_tokens": 1500}),
        json!({"best_of": 5, "max_tokens": 100}),
        json!({"num_predict": 1, "options": {"num_predict": 30000}}),
        json!({"max_tokens": 20, "stream": true}),
    ];
    let mut tasks = Vec::new();
    for i in 0..300usize {
        let gw = &gws[i % 3];
        let mut body = hostile[i % hostile.len()].clone();
        body["model"] = json!("local");
        body["messages"] = json!([{"role": "user", "content": format!("request {i}")}]);
        tasks.push(async move {
            if body["stream"] == json!(true) {
                chat_streamed(gw, ENG, body).await.0
            } else {
                chat(gw, ENG, body).await.status.as_u16()
            }
        });
    }
    let statuses = futures_util::future::join_all(tasks).await;
    let served = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(served + refused, 300, "only 200 or 429: {statuses:?}");
    assert!(
        served > 5 && refused > 0,
        "{served} served, {refused} refused"
    );

    let k = budget_key("llm-engineering", "daily");
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.hget_i64(&k, "reserved") != 0 {
        assert!(Instant::now() < deadline, "reservations were not settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let prompt = fake.stats.prompt_tokens_billed.load(Ordering::Relaxed);
    let completion = fake.stats.completion_tokens_billed.load(Ordering::Relaxed);
    let billed_micros = prompt + completion * 10;
    assert!(
        billed_micros <= 500_000,
        "the upstream billed {billed_micros} µ$ ({prompt} prompt, {completion} output tokens) on a 500000 µ$ budget"
    );
    // What llmgate charged is what the upstream billed, and it reached the budget's end: the
    // largest request left unserved costs 3 × 2000 × 10 µ$.
    let spent = redis.hget_i64(&k, "spent");
    assert_eq!(spent as u64, billed_micros, "charged equals billed");
    assert!(spent > 500_000 - 60_000 - 1000, "spent only {spent}");
}

/// Token limits reserve every sequence, refuse a length no model can produce instead of
/// wrapping it into a tiny reservation, and estimate a prompt llmgate cannot fully read by its
/// bytes rather than as nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_limits_count_every_sequence_and_never_wrap() {
    let fake = FakeUpstream::start(UPSTREAM_KEY).await.expect("fake");
    let mut c = model_yaml("writer", "bill-asked", &fake.base_url(), 1.0, 1.0, "");
    c += &key_yaml("eng", ENG, "ada", "llm-engineering");
    c += r#"---
apiVersion: llmgate.dev/v1alpha1
kind: AccessPolicy
metadata: {name: everyone}
spec:
  rules:
    - subjects: [{authenticated: true}]
      models: ["*"]
  rateLimits:
    - name: team-tokens
      per: [team]
      window: hour
      tokens: 20000
"#;
    let gw = Gateway::start(&c, &[]).await;
    let msg = json!([{"role": "user", "content": "write"}]);
    let remaining = |r: &Reply| -> u64 {
        r.header("x-ratelimit-remaining-tokens")
            .parse()
            .expect("remaining tokens header")
    };

    for max in ["18446744073709551615", "18446744073709551600", "16001"] {
        let body = format!(
            r#"{{"model":"writer","max_tokens":{max},"messages":[{{"role":"user","content":"x"}}]}}"#
        );
        let r = gw
            .send("POST", "/v1/chat/completions", Some(body), Some(ENG))
            .await;
        assert_eq!(r.status(), 400, "max_tokens {max}");
        let r = Reply::read(r).await;
        assert_eq!(r.json()["error"]["param"], "max_tokens", "{:?}", r.json());
    }
    let r = chat(
        &gw,
        ENG,
        json!({"model": "writer", "messages": msg, "n": 129}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "n");

    // 8 sequences of 3000 tokens cannot fit in 20000, whatever one sequence needs.
    let r = chat(
        &gw,
        ENG,
        json!({"model": "writer", "messages": msg, "n": 8, "max_tokens": 3000}),
    )
    .await;
    assert_eq!(r.status, 429, "{:?}", r.json());
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    assert_eq!(
        fake.stats.chat.load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    // Two sequences of 100: 200 output tokens reserved, and the upstream is told 100 in both
    // fields it may read, with the alias gone.
    let r = chat(
        &gw,
        ENG,
        json!({"model": "writer", "messages": msg, "n": 2, "max_tokens": 100, "n_predict": 4000}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert!(remaining(&r) <= 20000 - 200, "{}", remaining(&r));
    let sent = fake.last_request();
    assert_eq!(sent["max_tokens"], 100);
    assert_eq!(sent["max_completion_tokens"], 100);
    assert_eq!(sent["n"], 2);
    assert!(sent.get("n_predict").is_none(), "{sent}");
    assert_eq!(r.json()["usage"]["completion_tokens"], 200);

    // 2000 words with a part nested deeper than the JSON parser follows: still ~2000 tokens.
    let deep = format!("{}0{}", "[".repeat(130), "]".repeat(130));
    let body = format!(
        r#"{{"model":"writer","max_tokens":1,"messages":[{{"role":"user","content":[{{"type":"text","text":"{}","x":{deep}}}]}}]}}"#,
        "word ".repeat(2000)
    );
    let before = {
        let r = chat(
            &gw,
            ENG,
            json!({"model": "writer", "messages": msg, "max_tokens": 1}),
        )
        .await;
        remaining(&r)
    };
    let r = Reply::read(
        gw.send("POST", "/v1/chat/completions", Some(body), Some(ENG))
            .await,
    )
    .await;
    // The fake's JSON parser stops at 128 levels where Python's (vLLM) does not: its 400 comes
    // back, after the reservation was made.
    assert_eq!(r.status, 400, "{:?}", r.json());
    assert!(
        before - remaining(&r) >= 2000,
        "the deep prompt reserved only {} tokens",
        before - remaining(&r)
    );
}

/// A caller that names no length still cannot make the model write past what was reserved:
/// the endpoint's `maxOutputTokens` is reserved and sent upstream in every field it reads.
#[tokio::test]
async fn without_max_tokens_the_model_maximum_is_reserved_and_sent_upstream() {
    let fake = FakeUpstream::start(UPSTREAM_KEY).await.expect("fake");
    // The model would write 5000 tokens if nobody told it otherwise.
    let mut c = model_yaml("writer", "tokens:5000", &fake.base_url(), 0.0, 1000.0, "")
        .replace("maxOutputTokens: 16000", "maxOutputTokens: 300");
    c += &key_yaml("eng", ENG, "ada", "llm-engineering");
    c += EVERYONE_EVERYTHING;
    // $1 at $1000 per million output tokens: 1000 tokens, three reservations of 300.
    c += "---\napiVersion: llmgate.dev/v1alpha1\nkind: TeamBudget\nmetadata: {name: eng}\nspec: {team: llm-engineering, amountUsd: 1, period: day}\n";
    let gw = Gateway::start(&c, &[]).await;
    let body = json!({"model": "writer", "messages": [{"role": "user", "content": "write"}]});
    for i in 0..3 {
        let r = chat(&gw, ENG, body.clone()).await;
        assert_eq!(r.status, 200, "call {i}: {:?}", r.body);
        assert_eq!(r.json()["usage"]["completion_tokens"], 300);
        let sent = fake.last_request();
        assert_eq!(
            (&sent["max_tokens"], &sent["max_completion_tokens"]),
            (&json!(300), &json!(300))
        );
    }
    // $0.10 left is less than one reservation of 300 tokens ($0.30): refused before upstream.
    let r = chat(&gw, ENG, body).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["code"], "budget_exceeded");
    assert_eq!(
        fake.stats.chat.load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    let audit = gw.audit_until(4).await;
    let charged: Vec<_> = audit
        .iter()
        .map(|r| r["budget_charged_usd_micros"].clone())
        .collect();
    assert_eq!(
        charged[..3],
        [json!(300_000), json!(300_000), json!(300_000)],
        "{audit:#?}"
    );
}

/// README: a spent budget falls back to "the first fallback model the caller may use and whose
/// own budget (if any) can pay". gpt-4 can pay for nothing; llama-3, first in line, has a
/// budget of its own that cannot pay either, so gpt-3.5-turbo answers. A caller whom policy
/// denies gpt-3.5-turbo has nowhere left to go: 429 `budget_exceeded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fallback_is_the_first_model_the_caller_may_use_and_can_pay_for() {
    let fake = FakeUpstream::start(UPSTREAM_KEY).await.expect("fake");
    let url = fake.base_url();
    let mut c = model_yaml("gpt-4", "tokens:100", &url, 30.0, 60.0, "");
    c += &model_yaml("llama-3", "tokens:101", &url, 0.2, 0.2, "");
    c += &model_yaml("gpt-3.5-turbo", "tokens:102", &url, 0.5, 1.5, "");
    c += &key_yaml("eng", ENG, "ada", "llm-engineering");
    c += &key_yaml("product", PRODUCT, "pat", "product");
    c += r#"---
apiVersion: llmgate.dev/v1alpha1
kind: AccessPolicy
metadata: {name: everyone}
spec:
  rules:
    - name: all-models
      subjects: [{authenticated: true}]
      models: ["*"]
    - name: no-turbo-for-pat
      effect: Deny
      subjects: [{user: pat}]
      models: [gpt-3.5-turbo]
---
apiVersion: llmgate.dev/v1alpha1
kind: TeamBudget
metadata: {name: gpt-4}
spec: {team: "*", amountUsd: 0.01, period: day, models: [gpt-4], fallback: [llama-3, gpt-3.5-turbo]}
---
apiVersion: llmgate.dev/v1alpha1
kind: TeamBudget
metadata: {name: llama}
spec: {team: "*", amountUsd: 0.000001, period: day, models: [llama-3]}
"#;
    let gw = Gateway::start(&c, &[]).await;
    // 1000 output tokens of gpt-4 reserve $0.06: more than its $0.01.
    let body = json!({"model": "gpt-4", "max_tokens": 1000,
        "messages": [{"role": "user", "content": "hello"}]});
    let r = chat(&gw, ENG, body.clone()).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.header("x-llmgate-model"), "gpt-3.5-turbo");
    assert_eq!(r.header("x-llmgate-fallback-from"), "gpt-4");
    assert_eq!(
        fake.last_request()["model"],
        "tokens:102",
        "served by gpt-3.5-turbo"
    );
    let audit = gw.audit_until(1).await;
    assert_eq!(audit[0]["model_requested"], "gpt-4");
    assert_eq!(audit[0]["model_served"], "gpt-3.5-turbo");

    let r = chat(&gw, PRODUCT, body).await;
    assert_eq!(r.status, 429, "{:?}", r.json());
    assert_eq!(r.json()["error"]["code"], "budget_exceeded");
    assert_eq!(r.header("x-llmgate-fallback-from"), "");
    assert_eq!(
        fake.stats.chat.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// In a Redis Cluster a request's team counters and a limit shared across teams live in
/// different slots, so admission takes two steps (the shared limit's group first); a refusal in
/// the second releases what the first took. A team whose budget pays for exactly 5 sends 20:
/// 15 are refused by the budget after the global limit counted them, and released. Another
/// team then gets exactly the 95 of 100 left (80 if the refused 15 had stayed counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_a_redis_cluster_a_refusal_in_the_second_step_releases_the_first() {
    let cluster = RedisCluster::start();
    let fake = FakeUpstream::start(UPSTREAM_KEY).await.expect("fake");
    // Every answer is max_tokens long: 1000 tokens at $60/M, about $0.0601 with the prompt.
    let mut c = model_yaml("gpt-4", "tokens:1000", &fake.base_url(), 30.0, 60.0, "");
    c += &key_yaml("eng", ENG, "ada", "llm-engineering");
    c += &key_yaml("product", PRODUCT, "pat", "product");
    c += &EVERYONE_EVERYTHING.replace(
        "      models: [\"*\"]\n",
        "      models: [\"*\"]\n  rateLimits:\n    - {name: global, window: hour, requests: 100}\n",
    );
    c += "---\napiVersion: llmgate.dev/v1alpha1\nkind: TeamBudget\nmetadata: {name: eng}\nspec: {team: llm-engineering, amountUsd: 0.33, period: day}\n";
    let gws = start_replicas(
        &c,
        2,
        &[
            "--redis-cluster-nodes",
            &cluster.seeds(),
            "--redis-timeout",
            PATIENT,
        ],
    )
    .await;
    let body = |i: usize| {
        json!({"model": "gpt-4", "max_tokens": 1000,
            "messages": [{"role": "user", "content": format!("request {i}")}]})
    };
    let tasks = (0..20).map(|i| chat(&gws[i % 2], ENG, body(i)));
    let replies = futures_util::future::join_all(tasks).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 5, "the budget pays for 5");
    for r in replies.iter().filter(|r| r.status != 200) {
        assert_eq!(r.status, 429);
        assert_eq!(r.json()["error"]["code"], "budget_exceeded");
    }
    let key = budget_key("llm-engineering", "eng");
    let deadline = Instant::now() + Duration::from_secs(5);
    while cluster.hget_i64(&key, "reserved") != 0 {
        assert!(Instant::now() < deadline, "a reservation stayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cluster.cli(&["ZCARD", &format!("{key}:holds")]).trim(), "0");
    let audit: Vec<Value> = gws.iter().flat_map(|g| g.audit()).collect();
    let charged: i64 = audit
        .iter()
        .filter_map(|r| r["budget_charged_usd_micros"].as_i64())
        .sum();
    assert_eq!(cluster.hget_i64(&key, "spent"), charged);
    assert!(audit.iter().all(|r| r["counters"] == "redis-cluster"));

    // The global limit kept only the 5 admitted.
    let tasks = (0..100).map(|i| chat(&gws[i % 2], PRODUCT, body(i)));
    let replies = futures_util::future::join_all(tasks).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 95, "100 an hour, 5 already used");
    let limited = replies.iter().find(|r| r.status == 429).expect("a refusal");
    assert_eq!(limited.json()["error"]["code"], "rate_limit_exceeded");
    // The audit writer is asynchronous.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let audit: Vec<Value> = gws.iter().flat_map(|g| g.audit()).collect();
    let limited: Vec<&Value> = audit
        .iter()
        .filter(|r| r["status"] == 429 && r["team"] == "product")
        .collect();
    assert_eq!(limited.len(), 5);
    assert!(
        limited
            .iter()
            .all(|r| r["rate_limit"] == "default/everyone#global")
    );
}

/// A caller leaving a budgeted stream after two chunks: the reservation is settled at once (not
/// when its hold runs out), charged in full (the upstream bills what it generated, which
/// llmgate cannot know without its usage report), and the audit record says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budgeted_stream_the_caller_leaves_is_settled_at_once() {
    let redis = RedisServer::start();
    let fake = FakeUpstream::start(UPSTREAM_KEY).await.expect("fake");
    let mut c = model_yaml("slow", "slow-stream:200", &fake.base_url(), 30.0, 60.0, "");
    c += &key_yaml("eng", ENG, "ada", "llm-engineering");
    c += EVERYONE_EVERYTHING;
    c += "---\napiVersion: llmgate.dev/v1alpha1\nkind: TeamBudget\nmetadata: {name: eng}\nspec: {team: llm-engineering, amountUsd: 100, period: day}\n";
    let gw = Gateway::start(
        &c,
        &["--redis-url", &redis.url(), "--redis-timeout", PATIENT],
    )
    .await;
    let key = budget_key("llm-engineering", "eng");
    let body = json!({"model": "slow", "stream": true, "max_tokens": 100,
        "messages": [{"role": "user", "content": "one two three four five six seven eight"}]});
    let resp = gw
        .send(
            "POST",
            "/v1/chat/completions",
            Some(body.to_string()),
            Some(ENG),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let mut sse = SseReader::new(resp.into_body());
    assert!(sse.next().await.is_some());
    assert!(sse.next().await.is_some());
    assert!(
        redis.hget_i64(&key, "reserved") > 0,
        "the stream holds a reservation"
    );
    drop(sse);
    let left = Instant::now();
    while redis.hget_i64(&key, "reserved") != 0 {
        assert!(
            left.elapsed() < Duration::from_secs(3),
            "the reservation waited for its hold instead of being settled"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(redis.cli(&["ZCARD", &format!("{key}:holds")]).trim(), "0");
    let audit = gw.audit_until(1).await;
    let r = &audit[0];
    assert_eq!(r["error_reason"], "client_disconnected");
    let charged = r["budget_charged_usd_micros"].as_i64().expect("charged");
    assert!(
        charged >= 100 * 60,
        "the 100 output tokens asked for are paid for: {charged}"
    );
    assert_eq!(redis.hget_i64(&key, "spent"), charged);
    // The upstream reports usage at the end of a stream: none had arrived.
    assert_eq!(r["usage"], Value::Null, "{r}");
}

/// Redis unreachable at start-up: the gateway becomes ready once the first attempt has ended
/// (it does not wait for Redis), degraded, and fail-open limits serve from the allowance.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_unreachable_at_start_up_serves_degraded() {
    let nowhere = format!("redis://{}", llmgate_tests::harness::free_port());
    let mut c = String::from(
        "apiVersion: llmgate.dev/v1alpha1\nkind: ModelEndpoint\nmetadata: {name: m}\nspec: {model: m, provider: mock}\n",
    );
    c += &key_yaml("eng", ENG, "ada", "llm-engineering");
    c += &EVERYONE_EVERYTHING.replace(
        "      models: [\"*\"]\n",
        "      models: [\"*\"]\n  rateLimits:\n    - {name: per-user, per: [user], window: hour, requests: 100}\n",
    );
    let gw = Gateway::start(&c, &["--redis-url", &nowhere, "--redis-timeout", "100ms"]).await;
    let ready = gw.readyz().await;
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["counters"]["store"], "redis");
    assert_eq!(ready["counters"]["degraded"], true);
    let r = chat(
        &gw,
        ENG,
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(gw.audit_until(1).await[0]["counters"], "local");
}

/// A budget alert survives a webhook that fails twice (it is retried, and lands once), and
/// carries what README says: budget, team, period, amount, spent past the threshold and what
/// is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_alert_is_retried_until_it_lands_and_says_where_the_budget_stands() {
    let redis = RedisServer::start();
    let fake = FakeUpstream::start(UPSTREAM_KEY).await.expect("fake");
    let hook = Receiver::failing(2).await;
    let mut c = model_yaml("writer", "tokens:1000", &fake.base_url(), 0.0, 1000.0, "");
    c += &key_yaml("eng", ENG, "ada", "llm-engineering");
    c += EVERYONE_EVERYTHING;
    // $1 at $1000 per million output tokens: 600 tokens cross 50 %.
    c += &format!(
        "---\napiVersion: llmgate.dev/v1alpha1\nkind: TeamBudget\nmetadata: {{name: eng}}\nspec: {{team: llm-engineering, amountUsd: 1, period: day, alerts: {{thresholds: [50], webhookUrl: \"{}\"}}}}\n",
        hook.url()
    );
    let gw = Gateway::start(
        &c,
        &["--redis-url", &redis.url(), "--redis-timeout", PATIENT],
    )
    .await;
    let r = chat(
        &gw,
        ENG,
        json!({"model": "writer", "max_tokens": 600, "messages": [{"role": "user", "content": "w"}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while hook.received().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the alert never landed ({} posts)",
            hook.posts()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hook.posts(), 3, "two refusals, then the one that landed");
    let alerts = hook.received();
    assert_eq!(alerts.len(), 1);
    let a = &alerts[0];
    assert_eq!(a["type"], "budget.threshold_crossed");
    assert_eq!(a["budget"], "default/eng");
    assert_eq!(a["team"], "llm-engineering");
    assert_eq!(a["period"], today());
    assert_eq!(a["threshold_percent"], 50);
    assert_eq!(a["amount_usd"], 1.0);
    assert_eq!(a["spent_usd"], 0.6);
    assert_eq!(a["remaining_usd"], 0.4);
    let at: jiff::Timestamp = a["at"].as_str().and_then(|t| t.parse().ok()).expect("at");
    assert!((jiff::Timestamp::now() - at).get_seconds().abs() < 30);
    assert_eq!(
        gw.metric("llmgate_budget_alerts_total", &[("result", "sent")])
            .await,
        1.0
    );
    assert_eq!(
        gw.metric("llmgate_budget_alerts_total", &[("result", "failed")])
            .await,
        0.0
    );
}

/// A budget that refuses or falls back for lack of money has crossed 100 % for its callers,
/// though spend stops short of the amount (admission refuses what it cannot pay): the 100 %
/// alert fires then, once per period across replicas, for a budget with a fallback and for
/// one without.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_100_percent_alert_fires_once_when_a_budget_first_refuses() {
    let redis = RedisServer::start();
    let fake = FakeUpstream::start(UPSTREAM_KEY).await.expect("fake");
    let hook = Receiver::start().await;
    let mut c = model_yaml("writer", "tokens:1000", &fake.base_url(), 0.0, 1000.0, "");
    c += &model_yaml("cheap", "tokens:1000", &fake.base_url(), 0.0, 0.0, "");
    c += &key_yaml("eng", ENG, "ada", "llm-engineering");
    c += &key_yaml("product", PRODUCT, "pat", "product");
    c += EVERYONE_EVERYTHING;
    // $1 at $1000 per million output tokens, 300 tokens a call: 3 calls ($0.90), then the
    // fourth cannot be paid.
    for (name, team, fallback) in [
        ("eng", "llm-engineering", "fallback: [cheap], "),
        ("product", "product", ""),
    ] {
        c += &format!(
            "---\napiVersion: llmgate.dev/v1alpha1\nkind: TeamBudget\nmetadata: {{name: {name}}}\nspec: {{team: {team}, amountUsd: 1, period: day, models: [writer], {fallback}alerts: {{thresholds: [50, 100], webhookUrl: \"{}\"}}}}\n",
            hook.url()
        );
    }
    let gws = start_replicas(
        &c,
        2,
        &["--redis-url", &redis.url(), "--redis-timeout", PATIENT],
    )
    .await;
    let body = json!({"model": "writer", "max_tokens": 300, "messages": [{"role": "user", "content": "w"}]});
    for key in [ENG, PRODUCT] {
        for i in 0..3 {
            let r = chat(&gws[i % 2], key, body.clone()).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-llmgate-model"), "writer");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Spent: $0.90. Every further call, on either replica, is refused or falls back.
        for i in 0..6 {
            let r = chat(&gws[i % 2], key, body.clone()).await;
            if key == ENG {
                assert_eq!(r.status, 200);
                assert_eq!(r.header("x-llmgate-model"), "cheap");
            } else {
                assert_eq!(r.status, 429);
                assert_eq!(r.json()["error"]["code"], "budget_exceeded");
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while hook.received().len() < 4 {
        assert!(Instant::now() < deadline, "{:?}", hook.received());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut fired: Vec<(String, u64, f64)> = hook
        .received()
        .iter()
        .map(|a| {
            (
                a["team"].as_str().unwrap_or("").to_owned(),
                a["threshold_percent"].as_u64().unwrap_or(0),
                a["spent_usd"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect();
    fired.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    assert_eq!(
        fired,
        vec![
            ("llm-engineering".to_string(), 50, 0.6),
            ("llm-engineering".to_string(), 100, 0.9),
            ("product".to_string(), 50, 0.6),
            ("product".to_string(), 100, 0.9),
        ],
        "each threshold once per team, whichever replica refused first"
    );
}

/// With two request limits on one call, the `x-ratelimit-*` headers show the tightest, and the
/// one that refuses is named in the 429 and the audit record.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_headers_show_the_tightest_limit() {
    let mut c = String::from(
        "apiVersion: llmgate.dev/v1alpha1\nkind: ModelEndpoint\nmetadata: {name: m}\nspec: {model: m, provider: mock}\n",
    );
    c += &key_yaml("eng", ENG, "ada", "llm-engineering");
    c += &EVERYONE_EVERYTHING.replace(
        "      models: [\"*\"]\n",
        "      models: [\"*\"]\n  rateLimits:\n    - {name: team-wide, per: [team], window: hour, requests: 50}\n    - {name: per-user, per: [user], window: hour, requests: 5}\n",
    );
    let gw = Gateway::start(&c, &[]).await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    for left in (0..5).rev() {
        let r = chat(&gw, ENG, body.clone()).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-limit-requests"), "5");
        assert_eq!(r.header("x-ratelimit-remaining-requests"), left.to_string());
    }
    let r = chat(&gw, ENG, body).await;
    assert_eq!(r.status, 429);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("default/everyone#per-user"),
        "{:?}",
        r.json()
    );
    let audit = gw.audit_until(6).await;
    assert_eq!(audit[5]["rate_limit"], "default/everyone#per-user");
    let retry: u64 = r.header("retry-after").parse().expect("retry-after");
    assert!(
        (715..=720).contains(&retry),
        "5 an hour: one every 720 s, {retry}"
    );
}

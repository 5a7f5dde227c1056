//! Golden tests of what other systems store or call, so a change to either shows up in review:
//! the audit record (read by log pipelines and, later, ClickHouse and S3 consumers) and the Redis
//! layout (counters outlive a deploy, and data planes of two versions share them during a
//! rollout). Regenerate after an intended change with `UPDATE_GOLDEN=1 cargo test -p
//! llmgate-dataplane --lib contracts` and say in the change why the contract moved.

use std::sync::Arc;

use llmgate_snapshot::{
    Budget, FailMode, LimitDimension, Period, Principal, RateLimit, ResourceRef, Window,
};

use crate::audit::{AuditRecord, Latency};
use crate::counters::{CheckKind, redis};
use crate::identity::Identity;
use crate::llm::types::Usage;
use crate::pipeline::budget::BudgetRt;
use crate::pipeline::ratelimit::LimitRt;
use crate::runtime::caller::team_tag;
use crate::test_support::{endpoint, golden};

fn source(kind: &str, name: &str) -> ResourceRef {
    ResourceRef {
        kind: kind.into(),
        namespace: "ai".into(),
        name: name.into(),
    }
}

/// Every field set, then every optional field absent: names, JSON types, and that absent
/// fields are `null` rather than missing.
#[test]
fn audit_record_json_is_pinned() {
    let at = |s: &str| s.parse::<jiff::Timestamp>().expect("timestamp");
    let full = AuditRecord {
        request_id: "0192f0c4-7d1e-7000-8000-000000000001".into(),
        started_at: at("2026-12-07T10:00:00.123Z"),
        finished_at: at("2026-12-07T10:00:01.456Z"),
        operation: "chat.completions",
        stream: true,
        auth_method: "oidc",
        key_id: Some(Arc::from("ai/alice")),
        identity_provider: Some(Arc::from("ai/corp")),
        groups: vec![Arc::from("ml"), Arc::from("staff")],
        user: Some(Arc::from("alice")),
        service_account: Some(Arc::from("ci")),
        team: Some(Arc::from("ml")),
        policy_rule: Some(Arc::from("ai/access#0")),
        model_requested: Some("gpt-4o".into()),
        model_served: Some(Arc::from("gpt-4o-mini")),
        provider: Some("openai"),
        replica: Some(Arc::from("api.openai.com")),
        upstream_model: Some(Arc::from("gpt-4o-mini")),
        upstream_model_version: Some("gpt-4o-mini-2024-07-18".into()),
        attempts: 2,
        status: 200,
        error_reason: Some("upstream_timeout"),
        error_message: Some("the upstream did not answer in 30s".into()),
        usage: Some(Usage {
            prompt_tokens: 12,
            completion_tokens: 34,
            total_tokens: 46,
        }),
        cost_usd: Some(0.000_022_2),
        cost_usd_micros: Some(23),
        budget_charged_usd_micros: Some(23),
        fallback_from: Some(Arc::from("gpt-4o")),
        fallback_reason: Some(Arc::from("budget_exhausted:ai/ml-daily")),
        max_tokens_clamped: Some(256),
        rate_limit: Some(Arc::from("ai/limits#per-user")),
        counters: Some("redis"),
        latency_ms: Latency {
            auth: 0.05,
            upstream_connect: 1.5,
            time_to_first_token: Some(120.25),
            total: 1333.0,
        },
        snapshot_version: Arc::from("sha256:00112233445566778899aabbccddeeff"),
    };
    let minimal = AuditRecord {
        request_id: "0192f0c4-7d1e-7000-8000-000000000002".into(),
        started_at: at("2026-12-07T10:00:00Z"),
        finished_at: at("2026-12-07T10:00:00.001Z"),
        operation: "models.list",
        auth_method: "none",
        status: 401,
        snapshot_version: Arc::from("sha256:00112233445566778899aabbccddeeff"),
        ..AuditRecord::default()
    };
    let mut out = String::new();
    for record in [&full, &minimal] {
        // As written, field order included: what a JSON-lines consumer sees.
        out += &serde_json::to_string_pretty(record).expect("record serializes");
        out.push('\n');
    }
    golden("audit-record.json", &out);
}

/// The function library, its function names, and the key of every counter kind.
#[test]
fn redis_layout_is_pinned() {
    let mut out = String::new();
    let first_line = redis::LIBRARY.lines().next().unwrap_or_default();
    out += &format!("library header: {first_line}\n");
    for name in [redis::ADMIT, redis::SETTLE] {
        assert!(
            redis::LIBRARY.contains(&format!("redis.register_function('{name}'")),
            "{name} is called but not registered by the library"
        );
        out += &format!("function: {name}\n");
    }

    let alice = Identity {
        key_id: Some(Arc::from("ai/alice")),
        principal: Principal::User("alice".into()),
        team: Some(Arc::from("ml")),
        groups: vec![],
        name: Arc::from("alice"),
        auth_method: "api_key",
        provider: None,
    };
    let tag = team_tag(alice.team.as_deref());
    let limit = |name: &str, per: Vec<LimitDimension>| RateLimit {
        source: source("AccessPolicy", "limits"),
        name: name.into(),
        subjects: vec![],
        models: vec![],
        per,
        window: Window::Minute,
        requests: Some(60),
        tokens: Some(10_000),
        fail_mode: FailMode::Open,
        local_allowance_percent: 10,
    };
    let limits = [
        limit(
            "per-user-team-model",
            vec![
                LimitDimension::User,
                LimitDimension::Team,
                LimitDimension::Model,
            ],
        ),
        limit("per-model", vec![LimitDimension::Model]),
        limit("everyone", vec![]),
    ];
    for l in &limits {
        let mut checks = Vec::new();
        LimitRt::build(l).checks(&alice, &tag, "gpt-4o", 100, &mut checks);
        for (check, unit) in checks {
            out += &format!(
                "rate limit {}, {}: key {} (hash tag {})\n",
                l.name,
                unit.as_str(),
                check.key,
                check.tag
            );
        }
    }

    let ep = endpoint("gpt-4o", "gpt-4o");
    for period in [Period::Day, Period::Month] {
        let budget = BudgetRt::build(&Budget {
            source: source("TeamBudget", "ml-budget"),
            team: "ml".into(),
            amount_micros: 50_000_000,
            period,
            time_zone: "UTC".into(),
            models: vec![],
            fallback: vec![],
            clamp_max_tokens: false,
            fail_mode: FailMode::Closed,
            local_allowance_percent: 5,
            alert_thresholds: vec![],
            alert_webhook: None,
        });
        let (check, now) = budget.check(&alice, &tag, 1_000, &ep, None);
        // The period id is today's; the golden file shows where it goes.
        let key = check.key.replace(&now.id, "<period>");
        let CheckKind::Budget { holds_key, .. } = &check.kind else {
            panic!("a budget check is a budget");
        };
        out += &format!(
            "budget {period:?}: key {key}, holds {} (hash tag {}); period id like {}\n",
            holds_key.replace(&now.id, "<period>"),
            check.tag,
            if period == Period::Day {
                "2026-12-07"
            } else {
                "2026-12"
            },
        );
        assert_eq!(
            now.id.len(),
            if period == Period::Day { 10 } else { 7 },
            "period id {:?} has the documented shape",
            now.id
        );

        let settle = check.settle("rid", 0, 1_000, 1_000).once();
        let once = match &settle {
            crate::counters::SettleItem::Budget { once, .. } => once.clone().unwrap_or_default(),
            crate::counters::SettleItem::Rate { .. } => panic!("a budget settles as a budget"),
        };
        let (prefix, id) = once.rsplit_once(':').expect("once key ends in :<id>");
        assert_eq!(id.len(), 32, "replay ids are 128-bit hex");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        if period == Period::Day {
            out += &format!("replay marker: {prefix}:<32 hex digits>\n");
        }
    }
    golden("redis-layout.txt", &out);
}

//! Rate limits (in an AccessPolicy) and TeamBudgets: compiled whole or left out whole.

use super::resources;
use llmgate_crds::compile;

#[test]
fn rate_limits_and_budgets_compile_and_broken_ones_are_left_out_whole() {
    let yaml = r#"
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: gpt-4}
spec: {model: gpt-4, provider: mock, pricing: {inputPerMillion: 30, outputPerMillion: 60}, maxOutputTokens: 8192}
---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: llama}
spec: {model: llama-3, provider: mock}
---
apiVersion: llmgate.dev/v1alpha1
kind: AccessPolicy
metadata: {name: limits}
spec:
  rateLimits:
    - name: per-user
      per: [user, model, user]
      window: minute
      requests: 60
      tokens: 100000
    - name: ghost
      subjects: [{apiKey: nobody}]
      window: hour
      requests: 1
    - name: per-user
      window: day
      requests: 5
---
apiVersion: llmgate.dev/v1alpha1
kind: TeamBudget
metadata: {name: eng}
spec:
  team: eng
  amountUsd: 100.5
  period: month
  timeZone: Europe/Berlin
  models: [gpt-4]
  fallback: [llama-3]
  alerts: {webhookUrl: "http://hooks.example/budget"}
---
apiVersion: llmgate.dev/v1alpha1
kind: TeamBudget
metadata: {name: broken}
spec:
  team: "*"
  amountUsd: 1
  period: day
  timeZone: Mars/Olympus
  models: ["gpt-*"]
  fallback: [gpt-4, nope]
"#;
    let c = compile(&resources(yaml));
    let got: Vec<_> = c
        .errors
        .iter()
        .map(|e| format!("{} {} {}", e.resource.name, e.field, e.reason.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            "limits spec.rateLimits[1].subjects[0].apiKey DanglingRef",
            "limits spec.rateLimits[2].name Conflict",
            "broken spec.fallback[0] Invalid",
            "broken spec.fallback[1] DanglingRef",
            "broken spec.timeZone Invalid",
        ]
    );
    let limits = &c.snapshot.rate_limits;
    assert_eq!(limits.len(), 1, "the broken limit is left out whole");
    assert_eq!(
        limits[0].per,
        vec![
            llmgate_snapshot::LimitDimension::User,
            llmgate_snapshot::LimitDimension::Model
        ]
    );
    assert_eq!(limits[0].fail_mode, llmgate_snapshot::FailMode::Open);
    assert_eq!(c.snapshot.budgets.len(), 1);
    let b = &c.snapshot.budgets[0];
    assert_eq!(b.amount_micros, 100_500_000);
    assert_eq!(b.fallback, vec!["llama-3".to_string()]);
    assert_eq!(b.alert_thresholds, vec![50, 80, 100]);
    assert_eq!(b.fail_mode, llmgate_snapshot::FailMode::Closed);
    assert_eq!(c.snapshot.endpoints[0].max_output_tokens, 8192);
    assert_eq!(c.snapshot.endpoints[1].max_output_tokens, 4096);
}

/// A limit of 0 on either unit refuses everything: refused, whichever unit it is on, with the
/// other unit set or not.
#[test]
fn a_zero_limit_on_either_unit_is_refused() {
    for limit in [
        "requests: 0",
        "tokens: 0",
        "requests: 0, tokens: 100",
        "requests: 5, tokens: 0",
    ] {
        let yaml = format!(
            "apiVersion: llmgate.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: limits}}\nspec:\n  rateLimits:\n    - {{name: l, window: hour, {limit}}}\n"
        );
        let c = compile(&resources(&yaml));
        let got: Vec<_> = c
            .errors
            .iter()
            .map(|e| (e.field.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![(
                "spec.rateLimits[0]",
                "a limit of 0 refuses everything; use a deny rule instead"
            )],
            "{limit}"
        );
        assert!(c.snapshot.rate_limits.is_empty(), "{limit}");
    }
}

/// A budget's amount, fallbacks and thresholds, on each side of their rules.
#[test]
fn budget_fields_are_refused_past_their_rules_only() {
    let models = "apiVersion: llmgate.dev/v1alpha1\nkind: ModelEndpoint\nmetadata: {name: big}\nspec: {model: big, provider: mock}\n---\napiVersion: llmgate.dev/v1alpha1\nkind: ModelEndpoint\nmetadata: {name: small}\nspec: {model: small, provider: mock}\n---\n";
    let budget = |spec: &str| {
        format!(
            "{models}apiVersion: llmgate.dev/v1alpha1\nkind: TeamBudget\nmetadata: {{name: b}}\nspec: {{team: t, period: day, {spec}}}\n"
        )
    };
    let cases: [(&str, Option<&str>); 11] = [
        ("amountUsd: -1", Some("spec.amountUsd")),
        ("amountUsd: 0", None),
        ("amountUsd: 5, clampMaxTokens: true", None),
        ("amountUsd: .nan", Some("spec.amountUsd")),
        ("amountUsd: 5, models: [big], fallback: [small]", None),
        // Without `models` the budget covers every model, the fallback too.
        ("amountUsd: 5, fallback: [small]", Some("spec.fallback[0]")),
        (
            "amountUsd: 5, models: [big, small], fallback: [small]",
            Some("spec.fallback[0]"),
        ),
        (
            "amountUsd: 5, models: [big], fallback: [small], clampMaxTokens: true",
            Some("spec.clampMaxTokens"),
        ),
        (
            "amountUsd: 5, models: [big], fallback: [small], clampMaxTokens: false",
            None,
        ),
        (
            "amountUsd: 5, alerts: {thresholds: [0], webhookUrl: \"http://h.example/x\"}",
            Some("spec.alerts.thresholds"),
        ),
        (
            "amountUsd: 5, alerts: {thresholds: [1, 100], webhookUrl: \"http://h.example/x\"}",
            None,
        ),
    ];
    for (spec, refused) in cases {
        let c = compile(&resources(&budget(spec)));
        let fields: Vec<&str> = c.errors.iter().map(|e| e.field.as_str()).collect();
        match refused {
            Some(f) => {
                assert_eq!(fields, vec![f], "{spec}");
                assert!(c.snapshot.budgets.is_empty(), "{spec}");
            }
            None => {
                assert_eq!(fields, Vec::<&str>::new(), "{spec}");
                assert_eq!(c.snapshot.budgets.len(), 1, "{spec}");
            }
        }
    }
}

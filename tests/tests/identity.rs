//! Identity tokens from a real OpenID Provider (panva's oidc-provider) through the real
//! gateway: services with client-credentials tokens, users with their groups and teams,
//! AccessPolicy over both, and every token that must be refused.

use std::time::{Duration, Instant};

use base64::Engine;
use llmgate_tests::harness::{Gateway, Reply};
use llmgate_tests::oidc::Idp;
use serde_json::{Value, json};

const AUD: &str = "urn:llmgate";

fn users() -> Value {
    json!({"alice": ["ml-eng"], "pat": ["product"], "mallory": ["ml-eng"]})
}

fn config(issuer: &str) -> String {
    format!(
        r#"
apiVersion: llmgate.dev/v1alpha1
kind: IdentityProvider
metadata: {{name: corp}}
spec:
  oidc:
    issuer: "{issuer}"
    audiences: ["{AUD}"]
    algorithms: [RS256]
    clockSkew: 5s
  claims: {{user: sub, groups: groups}}
  teams:
    fromGroups:
      - {{group: ml-eng, team: llm-engineering}}
      - {{group: product, team: product}}
    serviceAccounts:
      - {{serviceAccount: svc-embed, team: platform}}
---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {{name: gpt-4}}
spec: {{model: gpt-4, provider: mock}}
---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {{name: llama-3}}
spec: {{model: llama-3, provider: mock}}
---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {{name: embed}}
spec: {{model: embed, provider: mock}}
---
apiVersion: llmgate.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: models}}
spec:
  rules:
    - name: ml-eng-chat
      subjects: [{{group: ml-eng}}]
      models: [gpt-4, llama-3]
    - name: product-llama
      subjects: [{{group: product}}]
      models: [llama-3]
    - name: services-embed
      subjects: [{{serviceAccount: svc-embed}}]
      models: [embed]
    - name: no-gpt4-for-mallory
      effect: Deny
      subjects: [{{user: mallory}}]
      models: [gpt-4]
"#
    )
}

fn user_claims(idp: &Idp, user: &str) -> Value {
    let now = jiff::Timestamp::now().as_second();
    json!({"iss": idp.issuer, "sub": user, "aud": AUD, "iat": now, "exp": now + 600,
        "client_id": "gw-web", "groups": users()[user].clone()})
}

async fn chat(gw: &Gateway, token: &str, model: &str) -> Reply {
    gw.call_with_key(
        "POST",
        "/v1/chat/completions",
        Some(json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})),
        Some(token),
    )
    .await
}

async fn embed(gw: &Gateway, token: &str) -> Reply {
    gw.call_with_key(
        "POST",
        "/v1/embeddings",
        Some(json!({"model": "embed", "input": "hello"})),
        Some(token),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_groups_teams_and_services_are_authorised_by_policy() {
    let idp = Idp::start(&["k1"], &users());
    let gw = Gateway::start(&config(&idp.issuer), &[]).await;

    // A service with a client-credentials token from the provider: embeddings only.
    let svc = idp.client_credentials("svc-embed");
    assert_eq!(embed(&gw, &svc).await.status, 200);
    let denied = chat(&gw, &svc, "gpt-4").await;
    assert_eq!(denied.status, 403);
    let msg = denied.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(msg.contains("service account svc-embed"), "{msg}");
    assert!(
        !msg.contains("mallory") && !msg.contains("ml-eng"),
        "names no one else's policy: {msg}"
    );
    // Another service the policy does not name.
    assert_eq!(
        embed(&gw, &idp.client_credentials("svc-other"))
            .await
            .status,
        403
    );

    // Users: ml-eng may call gpt-4 and llama-3, product only llama-3, and a deny beats an allow.
    let alice = idp.sign("k1", &user_claims(&idp, "alice"));
    let pat = idp.sign("k1", &user_claims(&idp, "pat"));
    let mallory = idp.sign("k1", &user_claims(&idp, "mallory"));
    assert_eq!(chat(&gw, &alice, "gpt-4").await.status, 200);
    assert_eq!(chat(&gw, &alice, "llama-3").await.status, 200);
    assert_eq!(chat(&gw, &pat, "gpt-4").await.status, 403);
    assert_eq!(chat(&gw, &pat, "llama-3").await.status, 200);
    assert_eq!(chat(&gw, &mallory, "gpt-4").await.status, 403);
    assert_eq!(chat(&gw, &mallory, "llama-3").await.status, 200);

    // /v1/models lists what each may call.
    let ids = |r: Reply| -> Vec<String> {
        let mut v: Vec<String> = r.json()["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["id"].as_str().map(str::to_owned))
            .collect();
        v.sort();
        v
    };
    let list = |t: String| {
        let gw = &gw;
        async move { gw.call_with_key("GET", "/v1/models", None, Some(&t)).await }
    };
    assert_eq!(ids(list(alice.clone()).await), ["gpt-4", "llama-3"]);
    assert_eq!(ids(list(pat.clone()).await), ["llama-3"]);
    assert_eq!(ids(list(svc.clone()).await), ["embed"]);

    // The audit records carry who, how, their groups and team, and the deciding rule.
    let audit = gw.audit_until(15).await;
    let find = |user: &str, model: &str, status: u64| -> Value {
        audit
            .iter()
            .find(|r| {
                (r["user"] == user || r["service_account"] == user)
                    && r["model_requested"] == model
                    && r["status"] == status
            })
            .cloned()
            .unwrap_or_else(|| panic!("no record for {user} {model} {status}: {audit:#?}"))
    };
    let r = find("alice", "gpt-4", 200);
    assert_eq!(r["auth_method"], "oidc");
    assert_eq!(r["identity_provider"], "default/corp");
    assert_eq!(r["groups"], json!(["ml-eng"]));
    assert_eq!(r["team"], "llm-engineering");
    assert_eq!(r["policy_rule"], "default/models#ml-eng-chat");
    assert_eq!(
        find("mallory", "gpt-4", 403)["policy_rule"],
        "default/models#no-gpt4-for-mallory"
    );
    assert_eq!(find("pat", "llama-3", 200)["team"], "product");
    let s = find("svc-embed", "embed", 200);
    assert_eq!(s["team"], "platform");
    assert_eq!(s["policy_rule"], "default/models#services-embed");
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_must_be_refused_are() {
    let idp = Idp::start(&["k1"], &users());
    let gw = Gateway::start(&config(&idp.issuer), &[]).await;
    let good = user_claims(&idp, "alice");
    assert_eq!(chat(&gw, &idp.sign("k1", &good), "gpt-4").await.status, 200);

    let now = jiff::Timestamp::now().as_second();
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        idp.sign("k1", &c)
    };
    let valid = idp.sign("k1", &good);
    let (head, rest) = valid.split_once('.').expect("jwt");
    let (payload, sig) = rest.split_once('.').expect("jwt");
    // Flip a character in the middle of the signature (the last one may only hold padding bits).
    let mut tampered_sig: Vec<u8> = sig.as_bytes().to_vec();
    let mid = tampered_sig.len() / 2;
    tampered_sig[mid] = if tampered_sig[mid] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let tampered = format!(
        "{head}.{payload}.{}",
        String::from_utf8(tampered_sig).expect("ascii")
    );
    // Claims edited after signing (a group added).
    let mut more = good.clone();
    more["groups"] = json!(["ml-eng", "admins"]);
    let edited = format!("{head}.{}.{sig}", b64(more.to_string().as_bytes()));
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(good.to_string().as_bytes())
    );
    // HS256 with the provider's public key as the HMAC secret (the classic confusion attack).
    let hs = {
        let key = jsonwebtoken::EncodingKey::from_secret(&idp.public_pem("k1"));
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some("k1".into());
        jsonwebtoken::encode(&h, &good, &key).expect("hs256")
    };
    let unknown_kid = {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&idp.private_pem("k1")).expect("key");
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        h.kid = Some("not-a-key".into());
        jsonwebtoken::encode(&h, &good, &key).expect("sign")
    };

    // Validly signed, but it lists a critical header (RFC 7515 §4.1.11) llmgate does not
    // understand. The same header without `crit` is accepted, so only `crit` refuses it.
    let signed_with_header = |header: Value| {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&idp.private_pem("k1")).expect("key");
        let head = b64(header.to_string().as_bytes());
        let body = b64(good.to_string().as_bytes());
        let input = format!("{head}.{body}");
        let sig =
            jsonwebtoken::crypto::sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::RS256)
                .expect("sign");
        format!("{input}.{sig}")
    };
    let plain = signed_with_header(json!({"alg": "RS256", "kid": "k1", "typ": "JWT", "urn:x": 1}));
    assert_eq!(chat(&gw, &plain, "gpt-4").await.status, 200);
    let critical = signed_with_header(
        json!({"alg": "RS256", "kid": "k1", "typ": "JWT", "crit": ["urn:x"], "urn:x": 1}),
    );

    let cases: Vec<(&str, String, &str)> = vec![
        ("critical header", critical, "critical header"),
        ("expired", with("exp", json!(now - 60)), "expired"),
        (
            "not yet valid",
            with("nbf", json!(now + 120)),
            "not valid yet",
        ),
        (
            "wrong issuer",
            with("iss", json!("http://127.0.0.1:1")),
            "issuer is not trusted",
        ),
        (
            "wrong audience",
            with("aud", json!("urn:someone-else")),
            "audience",
        ),
        ("tampered signature", tampered, "signature"),
        ("edited claims", edited, "signature"),
        ("alg none", none, "malformed"),
        ("HS256 with the public key", hs, "algorithm"),
        ("unknown key id", unknown_kid, "signing key"),
        ("not a JWT at all", "eyJ.garbage.x".into(), "malformed"),
    ];
    for (what, token, says) in cases {
        let r = chat(&gw, &token, "gpt-4").await;
        assert_eq!(r.status, 401, "{what}: {:?}", r.json());
        let e = r.json();
        assert_eq!(e["error"]["code"], "invalid_token", "{what}");
        let msg = e["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(says), "{what}: {msg}");
        assert!(
            r.header("www-authenticate")
                .contains("error=\"invalid_token\""),
            "{what}: {:?}",
            r.headers
        );
    }
    // Within the clock skew (5 s) an expired token still passes.
    assert_eq!(
        chat(&gw, &with("exp", json!(now - 2)), "gpt-4")
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_fetched_once_without_a_storm() {
    let mut idp = Idp::start(&["k1"], &users());
    let gw = Gateway::start(&config(&idp.issuer), &[]).await;
    assert_eq!(
        embed(&gw, &idp.client_credentials("svc-embed"))
            .await
            .status,
        200
    );
    let loads = |gw: &Gateway| gw.stderr().matches("identity provider keys loaded").count();
    let before = loads(&gw);

    // The provider rotates: new tokens are signed with k2, which the gateway has not seen.
    idp.restart(&["k2", "k1"]);
    let token = idp.client_credentials("svc-embed");
    assert!(token.contains('.'));
    assert_eq!(
        embed(&gw, &token).await.status,
        200,
        "k2 was fetched on first sight"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while loads(&gw) == before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(loads(&gw), before + 1);

    // Forged key ids do not make the gateway hammer the provider: one fetch per 10 s at most.
    let forged: Vec<String> = (0..30)
        .map(|i| {
            let key = jsonwebtoken::EncodingKey::from_rsa_pem(&idp.private_pem("k2")).expect("key");
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
            h.kid = Some(format!("forged-{i}"));
            jsonwebtoken::encode(&h, &user_claims(&idp, "alice"), &key).expect("sign")
        })
        .collect();
    let replies =
        futures_util::future::join_all(forged.iter().map(|t| chat(&gw, t, "gpt-4"))).await;
    assert!(replies.iter().all(|r| r.status == 401));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        loads(&gw) <= before + 2,
        "{} key fetches",
        loads(&gw) - before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_and_limits_count_against_the_team_the_token_decides() {
    let idp = Idp::start(&["k1"], &users());
    let mut cfg = config(&idp.issuer).replace(
        "spec: {model: gpt-4, provider: mock}",
        "spec: {model: gpt-4, provider: mock, pricing: {inputPerMillion: 0, outputPerMillion: 1000000}, mock: {completionTokens: 10}}",
    );
    // $25 a day for llm-engineering: $10 per answer, two fit.
    cfg += "---\napiVersion: llmgate.dev/v1alpha1\nkind: TeamBudget\nmetadata: {name: eng}\nspec: {team: llm-engineering, amountUsd: 25, period: day, models: [gpt-4]}\n";
    // And three requests an hour per user.
    cfg += "---\napiVersion: llmgate.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: limits}\nspec:\n  rateLimits:\n    - {name: per-user, per: [user], window: hour, requests: 3}\n";
    let gw = Gateway::start(&cfg, &[]).await;
    let alice = idp.sign("k1", &user_claims(&idp, "alice"));
    let body = |max: u64| json!({"model": "gpt-4", "max_tokens": max, "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..2 {
        let r = gw
            .call_with_key("POST", "/v1/chat/completions", Some(body(10)), Some(&alice))
            .await;
        assert_eq!(r.status, 200, "{:?}", r.json());
        assert_eq!(r.header("x-llmgate-budget"), "default/eng");
    }
    let spent = gw
        .call_with_key("POST", "/v1/chat/completions", Some(body(10)), Some(&alice))
        .await;
    assert_eq!(spent.status, 429);
    let msg = spent.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        msg.contains("llm-engineering"),
        "the token's team pays: {msg}"
    );
    // The refused call did not count: one request of three is left for alice, none for a
    // fourth.
    let llama = json!({"model": "llama-3", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        gw.call_with_key(
            "POST",
            "/v1/chat/completions",
            Some(llama.clone()),
            Some(&alice)
        )
        .await
        .status,
        200
    );
    let limited = gw
        .call_with_key(
            "POST",
            "/v1/chat/completions",
            Some(llama.clone()),
            Some(&alice),
        )
        .await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json()["error"]["code"], "rate_limit_exceeded");
    // pat is another user (and team): unaffected.
    let pat = idp.sign("k1", &user_claims(&idp, "pat"));
    assert_eq!(
        gw.call_with_key("POST", "/v1/chat/completions", Some(llama), Some(&pat))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_bound_to_one_identity_provider_ignores_the_others() {
    // Two providers vouch for a user `root` in group `admins`; only `corp` is trusted with it.
    let users = json!({"root": ["admins"]});
    let corp = Idp::start(&["k1"], &users);
    let weak = Idp::start(&["k1"], &users);
    let idp = |name: &str, issuer: &str| {
        format!(
            r#"
apiVersion: llmgate.dev/v1alpha1
kind: IdentityProvider
metadata: {{name: {name}}}
spec:
  oidc: {{issuer: "{issuer}", audiences: ["{AUD}"], algorithms: [RS256]}}
  claims: {{user: sub, groups: groups}}
---"#
        )
    };
    let cfg = idp("corp", &corp.issuer)
        + &idp("weak", &weak.issuer)
        + r#"
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: gpt-4}
spec: {model: gpt-4, provider: mock}
---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: llama-3}
spec: {model: llama-3, provider: mock}
---
apiVersion: llmgate.dev/v1alpha1
kind: AccessPolicy
metadata: {name: models}
spec:
  rules:
    - name: corp-admins
      subjects: [{group: admins, identityProvider: corp}]
      models: [gpt-4]
    - name: any-admins
      subjects: [{group: admins}]
      models: [llama-3]
"#;
    let gw = Gateway::start(&cfg, &[]).await;
    let token = |idp: &Idp| {
        let now = jiff::Timestamp::now().as_second();
        idp.sign(
            "k1",
            &json!({"iss": idp.issuer, "sub": "root", "aud": AUD, "iat": now, "exp": now + 600,
                "groups": ["admins"]}),
        )
    };
    let (from_corp, from_weak) = (token(&corp), token(&weak));
    assert_eq!(chat(&gw, &from_corp, "gpt-4").await.status, 200);
    let refused = chat(&gw, &from_weak, "gpt-4").await;
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    // An unqualified subject matches a caller from either provider.
    assert_eq!(chat(&gw, &from_corp, "llama-3").await.status, 200);
    assert_eq!(chat(&gw, &from_weak, "llama-3").await.status, 200);

    let audit = gw.audit_until(4).await;
    let denied = audit
        .iter()
        .find(|r| r["status"] == 403)
        .expect("a record of the refusal");
    assert_eq!(denied["identity_provider"], "default/weak");
    assert!(denied["policy_rule"].is_null(), "{denied}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_provider_removed_stops_being_trusted_on_schedule() {
    let mut idp = Idp::start(&["k1"], &users());
    let cfg = config(&idp.issuer).replace("clockSkew: 5s", "clockSkew: 5s\n    keysRefresh: 2s");
    let gw = Gateway::start(&cfg, &[]).await;
    // A token signed with k1 now, kept by a caller (or an attacker holding k1).
    let kept = idp.sign("k1", &user_claims(&idp, "alice"));
    assert_eq!(chat(&gw, &kept, "gpt-4").await.status, 200);

    // The provider drops k1 (compromised, say) and publishes only k2. No token names an
    // unknown key, so only the schedule can notice.
    idp.restart(&["k2"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = chat(&gw, &kept, "gpt-4").await;
        if r.status == 401 {
            let msg = r.json()["error"]["message"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            assert!(msg.contains("signing key is not known"), "{msg}");
            break;
        }
        assert_eq!(r.status, 200);
        assert!(
            Instant::now() < deadline,
            "k1 still trusted:\n{}",
            gw.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Tokens of the new key pass.
    let fresh = idp.sign("k2", &user_claims(&idp, "alice"));
    assert_eq!(chat(&gw, &fresh, "gpt-4").await.status, 200);
}

/// README: when the IdP's keys cannot be fetched at all the answer is 503, not 401 — the token
/// may be good, and a client told `invalid_token` would throw it away. Once the IdP answers,
/// the same token is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_whose_idp_cannot_be_reached_is_a_503_until_it_can() {
    let mut idp = Idp::start(&["k1"], &users());
    let alice = idp.sign("k1", &user_claims(&idp, "alice"));
    idp.stop();
    let gw = Gateway::start(&config(&idp.issuer), &[]).await;
    let r = chat(&gw, &alice, "gpt-4").await;
    assert_eq!(r.status, 503, "{:?}", r.json());
    assert_eq!(r.json()["error"]["code"], "identity_provider_unavailable");
    assert_eq!(r.json()["error"]["type"], "api_error");
    assert_eq!(
        r.header("www-authenticate"),
        "",
        "not a challenge: the token may be fine"
    );
    assert_eq!(r.header("retry-after"), "5");
    let audit = gw.audit_until(1).await;
    assert_eq!(audit[0]["error_reason"], "identity_provider_unavailable");
    // /readyz says which provider and why; the replica itself stays ready (API keys work).
    let ready = gw.readyz().await;
    assert_eq!(ready["ready"], true);
    let idp_state = &ready["identity_providers"][0];
    assert_eq!(idp_state["provider"], "default/corp");
    assert_eq!(idp_state["issuer"], idp.issuer.as_str());
    assert_eq!(idp_state["keys"], 0);
    assert!(
        idp_state["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{ready}"
    );

    // A token that does not even name a trusted issuer is still a plain 401.
    let now = jiff::Timestamp::now().as_second();
    let stranger = idp.sign(
        "k1",
        &json!({"iss": "https://elsewhere.example", "sub": "x", "aud": AUD, "iat": now, "exp": now + 600}),
    );
    assert_eq!(chat(&gw, &stranger, "gpt-4").await.status, 401);

    // The IdP comes back on its port: the same token goes through.
    idp.restart(&["k1"]);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let r = chat(&gw, &alice, "gpt-4").await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{:?}", r.json());
        assert!(
            Instant::now() < deadline,
            "the IdP's keys were never fetched"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let idp_state = &gw.readyz().await["identity_providers"][0];
    assert_eq!(idp_state["keys"], 1);
    assert_eq!(idp_state["error"], Value::Null);
    assert!(idp_state["loaded_at"].is_string());
}

/// README: a token's team is its `teams.claim`, else the first `fromGroups` rule that matches
/// (in the rule's order), else `serviceAccounts`. alice is in ml-eng and product; the claim
/// wins, and without it the first rule does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokens_team_is_its_claim_then_the_first_group_rule() {
    let idp = Idp::start(&["k1"], &users());
    let cfg = config(&idp.issuer).replace("  teams:\n", "  teams:\n    claim: team\n");
    let gw = Gateway::start(&cfg, &[]).await;
    let mut claims = user_claims(&idp, "alice");
    claims["groups"] = json!(["product", "ml-eng"]);
    let grouped = idp.sign("k1", &claims);
    claims["team"] = json!("research");
    let claimed = idp.sign("k1", &claims);
    assert_eq!(chat(&gw, &claimed, "llama-3").await.status, 200);
    assert_eq!(chat(&gw, &grouped, "llama-3").await.status, 200);
    let audit = gw.audit_until(2).await;
    let teams: Vec<&str> = audit
        .iter()
        .map(|r| r["team"].as_str().unwrap_or(""))
        .collect();
    // ml-eng is the first rule of the provider, though product comes first in the token.
    assert_eq!(teams, ["research", "llm-engineering"]);
}

//! Authorize stage: may this caller use this model?
//!
//! Deny by default; a matching deny rule beats every allow. Every decision names the policy and
//! rule that made it, for the audit record. For API keys the identity is fully known at compile
//! time, so `Runtime::build` evaluates [`decide`] for every (key, model) pair
//! once per snapshot and the request path only indexes the result.

use std::sync::Arc;

use llmgate_snapshot::{Effect, Endpoint, Policy, Principal, Subject};

use crate::identity::Identity;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// `namespace/policy#rule`, or `None` for the default deny.
    pub by: Option<Arc<str>>,
}

pub fn decide(policies: &[Policy], who: &Identity, ep: &Endpoint) -> Decision {
    let mut allow: Option<Arc<str>> = None;
    for p in policies {
        for r in &p.rules {
            let applies = r.subjects.iter().any(|s| matches(s, who))
                && r.models.iter().any(|m| m.matches(&ep.model, &ep.labels));
            if !applies {
                continue;
            }
            let by = || -> Arc<str> {
                Arc::from(format!(
                    "{}/{}#{}",
                    p.source.namespace, p.source.name, r.name
                ))
            };
            match r.effect {
                Effect::Deny => {
                    return Decision {
                        allowed: false,
                        by: Some(by()),
                    };
                }
                Effect::Allow if allow.is_none() => allow = Some(by()),
                Effect::Allow => {}
            }
        }
    }
    Decision {
        allowed: allow.is_some(),
        by: allow,
    }
}

pub(crate) fn matches(s: &Subject, who: &Identity) -> bool {
    match s {
        Subject::Authenticated => true,
        Subject::User(u) => matches!(&who.principal, Principal::User(p) if p == u),
        Subject::ServiceAccount(a) => {
            matches!(&who.principal, Principal::ServiceAccount(p) if p == a)
        }
        Subject::Team(t) => who.team.as_deref() == Some(t.as_str()),
        Subject::Group(g) => who.groups.iter().any(|x| **x == **g),
        Subject::ApiKey(k) => who.key_id.as_deref() == Some(k.as_str()),
        Subject::From {
            identity_provider,
            subject,
        } => {
            who.key_id.is_none()
                && who.provider.as_deref() == Some(identity_provider.as_str())
                && matches(subject, who)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use llmgate_snapshot::{ModelSelector, ResourceRef, Rule};

    use super::*;

    fn policy(name: &str, rules: Vec<Rule>) -> Policy {
        Policy {
            source: ResourceRef {
                kind: "AccessPolicy".into(),
                namespace: "ai".into(),
                name: name.into(),
            },
            rules,
        }
    }

    fn rule(
        name: &str,
        effect: Effect,
        subjects: Vec<Subject>,
        models: Vec<ModelSelector>,
    ) -> Rule {
        Rule {
            name: name.into(),
            effect,
            subjects,
            models,
        }
    }

    fn alice() -> Identity {
        Identity {
            key_id: Some(Arc::from("ai/alice-key")),
            name: Arc::from("alice"),
            principal: Principal::User("alice".into()),
            team: Some(Arc::from("ml")),
            groups: vec![Arc::from("ml-eng")],
            auth_method: "api_key",
            provider: None,
        }
    }

    #[test]
    fn a_subject_from_one_identity_provider_matches_only_its_callers() {
        let admins = Subject::From {
            identity_provider: "ai/corp".into(),
            subject: Box::new(Subject::Group("admins".into())),
        };
        let token = |provider: &str| Identity {
            key_id: None,
            name: Arc::from("root"),
            principal: Principal::User("root".into()),
            team: None,
            groups: vec![Arc::from("admins")],
            auth_method: "oidc",
            provider: Some(Arc::from(provider)),
        };
        assert!(matches(&admins, &token("ai/corp")));
        assert!(!matches(&admins, &token("ai/weak")));
        assert!(matches(&Subject::Group("admins".into()), &token("ai/weak")));
        // The provider and the subject both must match.
        let mut outsider = token("ai/corp");
        outsider.groups = vec![Arc::from("users")];
        assert!(!matches(&admins, &outsider));
        // API keys come from no provider.
        let team = Subject::From {
            identity_provider: "ai/corp".into(),
            subject: Box::new(Subject::Team("ml".into())),
        };
        assert!(matches(&Subject::Team("ml".into()), &alice()));
        assert!(!matches(&team, &alice()));
    }

    #[test]
    fn deny_by_default() {
        let ep = crate::test_support::endpoint("gpt-4o", "gpt-4o");
        let d = decide(&[], &alice(), &ep);
        assert_eq!(
            d,
            Decision {
                allowed: false,
                by: None
            }
        );
    }

    #[test]
    fn allow_by_team_glob_and_deny_wins() {
        let mut ep = crate::test_support::endpoint("gpt-4o", "gpt-4o");
        let allow = policy(
            "ml",
            vec![rule(
                "ml-gpt",
                Effect::Allow,
                vec![Subject::Team("ml".into())],
                vec![ModelSelector::Glob("gpt-*".into())],
            )],
        );
        let d = decide(std::slice::from_ref(&allow), &alice(), &ep);
        assert!(d.allowed);
        assert_eq!(d.by.as_deref(), Some("ai/ml#ml-gpt"));

        ep.labels = BTreeMap::from([("tier".to_string(), "premium".to_string())]);
        let deny = policy(
            "no-premium",
            vec![rule(
                "block",
                Effect::Deny,
                vec![Subject::ApiKey("ai/alice-key".into())],
                vec![ModelSelector::Labels(BTreeMap::from([(
                    "tier".to_string(),
                    "premium".to_string(),
                )]))],
            )],
        );
        let d = decide(&[allow.clone(), deny], &alice(), &ep);
        assert!(!d.allowed);
        assert_eq!(d.by.as_deref(), Some("ai/no-premium#block"));

        let other = policy(
            "bob",
            vec![rule(
                "bob",
                Effect::Allow,
                vec![Subject::User("bob".into()), Subject::Group("ml".into())],
                vec![ModelSelector::Name("gpt-4o".into())],
            )],
        );
        assert!(!decide(&[other], &alice(), &ep).allowed);
    }
}

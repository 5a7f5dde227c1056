//! Status conditions from a compile: what each resource's `status` should say, so a platform
//! team sees on the object itself whether it was accepted and why not.
//!
//! Three conditions, as Gateway API does: `Accepted` (the spec is valid and claims nothing
//! already claimed), `ResolvedRefs` (every Secret, model and key it names exists), `Ready`
//! (both, so it is fully in effect). Pure: the caller passes the current status and the time,
//! and gets back only the statuses that changed, so no-op patches are never sent.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use llmgate_snapshot::ResourceRef;

use crate::compile::{CompileError, Reason};
use crate::resources::ResourceStatus;

pub const ACCEPTED: &str = "Accepted";
pub const RESOLVED_REFS: &str = "ResolvedRefs";
pub const READY: &str = "Ready";

/// One object as the caller knows it.
pub struct Observed<'a> {
    pub resource: ResourceRef,
    pub generation: Option<i64>,
    pub current: Option<&'a ResourceStatus>,
}

/// The status each object should have after this compile, for the objects whose status
/// differs from what they have now.
pub fn changed_statuses<'a>(
    objects: impl IntoIterator<Item = Observed<'a>>,
    errors: &[CompileError],
    now: jiff::Timestamp,
) -> Vec<(ResourceRef, ResourceStatus)> {
    objects
        .into_iter()
        .filter_map(|o| {
            let own: Vec<&CompileError> =
                errors.iter().filter(|e| e.resource == o.resource).collect();
            let desired = desired_status(&own, o.generation, o.current, now);
            (o.current != Some(&desired)).then_some((o.resource, desired))
        })
        .collect()
}

/// The status for one object given its compile errors.
pub fn desired_status(
    errors: &[&CompileError],
    generation: Option<i64>,
    current: Option<&ResourceStatus>,
    now: jiff::Timestamp,
) -> ResourceStatus {
    let summary = |reasons: &[Reason]| -> Option<(String, String)> {
        let hits: Vec<&&CompileError> = errors
            .iter()
            .filter(|e| reasons.contains(&e.reason))
            .collect();
        let first = hits.first()?;
        let message = hits
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        Some((first.reason.as_str().to_string(), message))
    };
    let accepted = summary(&[Reason::Invalid, Reason::Conflict]);
    let resolved = summary(&[Reason::DanglingRef, Reason::MissingSecret]);
    let ready = accepted.clone().or_else(|| resolved.clone());
    let conditions = vec![
        condition(
            ACCEPTED,
            accepted,
            "Accepted",
            "the spec is valid",
            generation,
            current,
            now,
        ),
        condition(
            RESOLVED_REFS,
            resolved,
            "ResolvedRefs",
            "every reference resolves",
            generation,
            current,
            now,
        ),
        condition(
            READY,
            ready,
            "Ready",
            "in effect in the distributed snapshot",
            generation,
            current,
            now,
        ),
    ];
    ResourceStatus {
        conditions,
        observed_generation: generation,
    }
}

fn condition(
    kind: &str,
    failure: Option<(String, String)>,
    ok_reason: &str,
    ok_message: &str,
    generation: Option<i64>,
    current: Option<&ResourceStatus>,
    now: jiff::Timestamp,
) -> Condition {
    let (status, reason, message) = match failure {
        Some((reason, message)) => ("False", reason, message),
        None => ("True", ok_reason.to_string(), ok_message.to_string()),
    };
    // The transition time moves only when the status does.
    let since = current
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == kind))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: kind.to_string(),
        status: status.to_string(),
        reason,
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(name: &str, field: &str, reason: Reason, message: &str) -> CompileError {
        CompileError {
            resource: rref(name),
            field: field.into(),
            reason,
            message: message.into(),
        }
    }

    fn rref(name: &str) -> ResourceRef {
        ResourceRef {
            kind: "ModelEndpoint".into(),
            namespace: "ai".into(),
            name: name.into(),
        }
    }

    fn cond<'a>(s: &'a ResourceStatus, kind: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == kind)
            .expect("condition present")
    }

    #[test]
    fn a_missing_secret_is_resolved_refs_false_with_an_actionable_message() {
        let e = err(
            "gpt",
            "spec.credentials.apiKey.secretRef",
            Reason::MissingSecret,
            "secret ai/llm-keys key openai-api-key has no value",
        );
        let s = desired_status(&[&e], Some(3), None, jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(cond(&s, ACCEPTED).status, "True");
        let r = cond(&s, RESOLVED_REFS);
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "MissingSecret")
        );
        assert!(
            r.message
                .contains("secret ai/llm-keys key openai-api-key has no value")
        );
        let ready = cond(&s, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "MissingSecret")
        );
    }

    #[test]
    fn invalid_beats_dangling_for_ready_and_messages_list_every_field() {
        let a = err("m", "spec.replicas[0].url", Reason::Invalid, "bad url");
        let b = err(
            "m",
            "spec.timeouts.connect",
            Reason::Invalid,
            "bad duration",
        );
        let c = err("m", "spec.credentials", Reason::DanglingRef, "nope");
        let s = desired_status(&[&a, &b, &c], None, None, jiff::Timestamp::UNIX_EPOCH);
        let acc = cond(&s, ACCEPTED);
        assert_eq!(acc.reason, "Invalid");
        assert_eq!(
            acc.message,
            "spec.replicas[0].url: bad url; spec.timeouts.connect: bad duration"
        );
        assert_eq!(cond(&s, READY).reason, "Invalid");
    }

    #[test]
    fn unchanged_statuses_are_not_patched_and_transition_times_stay() {
        let t0 = jiff::Timestamp::UNIX_EPOCH;
        let t1 = t0 + jiff::SignedDuration::from_secs(60);
        let ok = desired_status(&[], Some(1), None, t0);
        assert!(ok.conditions.iter().all(|c| c.status == "True"));
        // Same outcome later: nothing to patch.
        let observed = [Observed {
            resource: rref("m"),
            generation: Some(1),
            current: Some(&ok),
        }];
        assert!(changed_statuses(observed, &[], t1).is_empty());
        // A new generation with an error: patched; Accepted keeps its time, the rest move.
        let e = err(
            "m",
            "spec.credentials",
            Reason::MissingSecret,
            "secret x has no value",
        );
        let observed = [Observed {
            resource: rref("m"),
            generation: Some(2),
            current: Some(&ok),
        }];
        let changed = changed_statuses(observed, &[e], t1);
        assert_eq!(changed.len(), 1);
        let s = &changed[0].1;
        assert_eq!(cond(s, ACCEPTED).last_transition_time, Time(t0));
        assert_eq!(cond(s, RESOLVED_REFS).last_transition_time, Time(t1));
        assert_eq!(s.observed_generation, Some(2));
    }
}

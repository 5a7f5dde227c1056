//! Property tests of the YAML loader and `compile`: on any text, and on any mutation of the
//! sample configurations, they never panic and answer what is wrong with typed problems that
//! name a file and say something.

use std::path::Path;

use llmgate_crds::files::compile_files;
use llmgate_crds::{compile, parse_documents};
use proptest::prelude::*;
use serde_json::{Value, json};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 192,
        ..ProptestConfig::default()
    }
}

/// Every sample configuration's documents, as JSON values.
fn samples() -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut docs = Vec::new();
    for dir in [
        "quickstart",
        "samples/identity",
        "samples/teams",
        "samples/llamacpp",
        "samples/providers",
    ] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .expect("config directory")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).expect("sample");
            for d in serde_yaml::Deserializer::from_str(&text) {
                let v: Value = serde::Deserialize::deserialize(d).expect("sample YAML");
                if !v.is_null() {
                    docs.push(v);
                }
            }
        }
    }
    assert!(docs.len() > 10, "samples found: {}", docs.len());
    docs
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1.0e12f64..1.0e12).prop_map(|f| json!(f)),
        "[a-z0-9./:*-]{0,10}".prop_map(Value::String),
        prop::sample::select(
            &[
                "0s",
                "1ms",
                "99999999h",
                "5m",
                "-1s",
                "..",
                "/etc/passwd",
                "",
                "*"
            ][..]
        )
        .prop_map(|s| Value::String(s.to_owned())),
        Just(json!([])),
        Just(json!({})),
    ]
}

/// Every path to a value inside `v`.
fn paths(v: &Value, at: &mut Vec<Vec<PathStep>>, prefix: Vec<PathStep>) {
    at.push(prefix.clone());
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let mut p = prefix.clone();
                p.push(PathStep::Key(k.clone()));
                paths(x, at, p);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let mut p = prefix.clone();
                p.push(PathStep::Index(i));
                paths(x, at, p);
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn at_path<'v>(v: &'v mut Value, path: &[PathStep]) -> Option<&'v mut Value> {
    path.iter().try_fold(v, |v, s| match s {
        PathStep::Key(k) => v.get_mut(k.as_str()),
        PathStep::Index(i) => v.get_mut(*i),
    })
}

#[derive(Clone, Debug)]
enum Mutation {
    Replace(prop::sample::Index, Value),
    Remove(prop::sample::Index),
    Duplicate(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<prop::sample::Index>(), leaf()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Remove),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Duplicate),
    ]
}

fn mutate(doc: &mut Value, m: &Mutation) {
    let mut all = Vec::new();
    paths(doc, &mut all, Vec::new());
    let pick = |i: &prop::sample::Index| all[i.index(all.len())].clone();
    match m {
        Mutation::Replace(i, v) => {
            if let Some(x) = at_path(doc, &pick(i)) {
                *x = v.clone();
            }
        }
        Mutation::Remove(i) => {
            let path = pick(i);
            if let Some((last, parent)) = path.split_last()
                && let Some(p) = at_path(doc, parent)
            {
                match (last, p) {
                    (PathStep::Key(k), Value::Object(m)) => {
                        m.remove(k);
                    }
                    (PathStep::Index(i), Value::Array(a)) if *i < a.len() => {
                        a.remove(*i);
                    }
                    _ => {}
                }
            }
        }
        // A second copy of an array item: duplicate names, models, rules.
        Mutation::Duplicate(i) => {
            let path = pick(i);
            if let Some((PathStep::Index(n), parent)) = path.split_last()
                && let Some(Value::Array(a)) = at_path(doc, parent)
                && let Some(item) = a.get(*n).cloned()
            {
                a.push(item);
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_yaml_loader_never_panics_on_text(text in "(?s).{0,400}") {
        if let Err(e) = parse_documents(&text) {
            prop_assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn the_yaml_loader_never_panics_on_yamlish_text(
        lines in prop::collection::vec(prop::sample::select(&[
            "apiVersion: llmgate.dev/v1alpha1", "kind: ModelEndpoint", "kind: AccessPolicy",
            "kind: TeamBudget", "metadata: {name: a}", "spec:", "  model: m", "  provider: mock",
            "  rules:", "    - subjects: [{team: t}]", "      models: ['*']", "---", "  - a",
            "&a [*a, *a]", "!!binary aGk=", "key: &x {a: *x}", "  budgets: [{limit: 1e309}]",
            "\t", "", "'", "{", "]",
        ][..]), 0..20),
    ) {
        let text = lines.join("\n");
        if let Err(e) = parse_documents(&text) {
            prop_assert!(!e.message.is_empty());
        }
        if let Err(problems) = compile_files(&[("a.yaml".into(), text)], None) {
            prop_assert!(!problems.is_empty());
            for p in &problems {
                prop_assert!(!p.message.is_empty(), "{:?}", p);
            }
        }
    }

    /// The samples compile; with any few mutations, compile either still succeeds or says
    /// what is wrong, where.
    #[test]
    fn compile_never_panics_on_a_mutated_configuration(
        mutations in prop::collection::vec((any::<prop::sample::Index>(), mutation()), 1..5),
    ) {
        let mut docs = samples();
        for (doc, m) in &mutations {
            let n = doc.index(docs.len());
            mutate(&mut docs[n], m);
        }
        let text = docs
            .iter()
            .map(|d| serde_yaml::to_string(d).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("---\n");
        match parse_documents(&text) {
            Ok(resources) => {
                let mut r = llmgate_crds::Resources::default();
                for d in resources {
                    r.push(d);
                }
                let compiled = compile(&r);
                for e in &compiled.errors {
                    prop_assert!(!e.message.is_empty() && !e.resource.kind.is_empty(), "{:?}", e);
                }
            }
            Err(e) => prop_assert!(!e.message.is_empty()),
        }
        match compile_files(&[("all.yaml".into(), text)], None) {
            Ok(loaded) => prop_assert!(loaded.snapshot.version.starts_with("sha256:")),
            Err(problems) => {
                for p in &problems {
                    prop_assert_eq!(p.file.as_deref(), Some("all.yaml"));
                    prop_assert!(!p.message.is_empty(), "{:?}", p);
                }
            }
        }
    }
}

#[test]
fn the_samples_compile_unmutated() {
    let text = samples()
        .iter()
        .map(|d| serde_yaml::to_string(d).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("---\n");
    let loaded = compile_files(&[("all.yaml".into(), text)], None);
    // Secrets are missing here (warnings), nothing else may be wrong.
    assert!(loaded.is_ok(), "{:?}", loaded.err());
}

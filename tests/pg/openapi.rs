//! The admin API keeps the contract it publishes: every operation in `/openapi.json` is
//! called against a running Pake, every answer's status is one the document lists, and every
//! JSON body validates against the document's schema for that status. An operation added to
//! the document without a driver here fails the test, so the contract cannot go untested.
//!
//! The same run checks that query insight counts what went through Pake exactly: calls,
//! errors by SQLSTATE, slow samples with a captured plan, and statements by trace id.

use crate::harness::{eventually, http, Env, Opts};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const ADMIN: Option<(&str, &str)> = Some(("pake", "pake"));
const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

struct Contract {
    doc: Value,
    /// `(METHOD, path template)` pairs that were driven.
    driven: BTreeSet<(String, String)>,
}

impl Contract {
    /// Call `method url` (`template` is its path in the document) and check the answer
    /// against the document; returns the status and the body.
    async fn call(
        &mut self,
        env: &Env,
        method: &str,
        template: &str,
        path: &str,
        auth: Option<(&str, &str)>,
        body: Option<&str>,
    ) -> (u16, String) {
        let (status, text) = http(method, &env.admin_url(path), auth, body).await;
        let op = &self.doc["paths"][template][method.to_lowercase()];
        assert!(op.is_object(), "{method} {template} is not in the document");
        let response = &op["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{method} {path} answered {status}, which the document does not list: {text}"
        );
        if let Some(schema) = response["content"]["application/json"].get("schema") {
            let instance: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {path}: body is not JSON ({e}): {text}"));
            self.validate(schema, &instance, &format!("{method} {path} {status}"));
        }
        self.driven
            .insert((method.to_uppercase(), template.to_string()));
        (status, text)
    }

    /// Validate against a schema of the document; its `#/components/...` references resolve
    /// because the components ride along at the root.
    fn validate(&self, schema: &Value, instance: &Value, what: &str) {
        let mut root = json!({ "allOf": [schema] });
        root["components"] = self.doc["components"].clone();
        let validator = jsonschema::validator_for(&root)
            .unwrap_or_else(|e| panic!("{what}: the document's schema does not compile: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what}: body breaks the schema:\n{}\n{instance:#}",
            errors.join("\n")
        );
    }

    fn undriven(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (path, ops) in self.doc["paths"].as_object().expect("paths") {
            for method in ops.as_object().expect("operations").keys() {
                let key = (method.to_uppercase(), path.clone());
                if !self.driven.contains(&key) {
                    out.push(format!("{} {}", key.0, key.1));
                }
            }
        }
        out
    }
}

fn opts() -> Opts {
    Opts {
        tweak: |c| {
            c.general.fault_injection = true;
            c.insight.slow_query_threshold = pake::config::Dur::millis(20);
            c.insight.advisor_create_hypopg = true;
        },
        ..Opts::default()
    }
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_answers_as_documented() {
    let env = Env::with(opts()).await;
    let (status, text) = http("GET", &env.admin_url("/openapi.json"), None, None).await;
    assert_eq!(status, 200);
    let mut api = Contract {
        doc: json_of(&text),
        driven: BTreeSet::new(),
    };
    assert!(
        api.doc["openapi"].as_str().unwrap_or("").starts_with("3.1"),
        "OpenAPI 3.1"
    );
    api.call(&env, "GET", "/openapi.json", "/openapi.json", None, None)
        .await;

    // Workload through Pake: one statement 7 times (2 of them failing), one slow one, one
    // carrying a sqlcommenter traceparent.
    let app = env.client().await;
    for i in [1, 2, 0, 3, 0, 4, 5] {
        let r = app.query_one("select 10 / $1::int as tenth", &[&i]).await;
        assert_eq!(r.is_err(), i == 0, "{r:?}");
    }
    app.batch_execute("select pg_sleep(0.05) as slow_one")
        .await
        .unwrap();
    app.batch_execute(&format!(
        "select 42 as traced /*traceparent='00-{TRACE}-b7ad6b7169203331-01'*/"
    ))
    .await
    .unwrap();

    // ops
    let (status, text) = api
        .call(&env, "GET", "/metrics", "/metrics", None, None)
        .await;
    assert_eq!(status, 200);
    assert!(text.contains("pake_"), "{text}");
    let (status, text) = api
        .call(&env, "GET", "/health", "/health", None, None)
        .await;
    assert_eq!((status, text.trim()), (200, "ok"));
    let (status, text) = api.call(&env, "GET", "/ready", "/ready", None, None).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(json_of(&text)["ready"], true);

    // insight: exact counts for the statement above
    let find_tenth = || async {
        let (_, text) = http("GET", &env.admin_url("/api/queries?limit=1000"), None, None).await;
        json_of(&text)
            .as_array()
            .and_then(|qs| {
                qs.iter()
                    .find(|q| q["query"].as_str().unwrap_or("").contains("tenth"))
            })
            .cloned()
            .unwrap_or(Value::Null)
    };
    let counted = eventually(Duration::from_secs(10), || async {
        find_tenth().await["calls"] == 7
    })
    .await;
    let tenth = find_tenth().await;
    assert!(counted, "7 calls recorded: {tenth:#}");
    let (status, _) = api
        .call(
            &env,
            "GET",
            "/api/queries",
            "/api/queries?sort=calls&limit=5",
            None,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = api
        .call(
            &env,
            "GET",
            "/api/queries",
            "/api/queries?sort=bogus",
            None,
            None,
        )
        .await;
    assert_eq!(status, 400, "an unknown sort is refused");

    let id = tenth["id"].as_str().expect("fingerprint id").to_string();
    let (status, text) = api
        .call(
            &env,
            "GET",
            "/api/queries/{id}",
            &format!("/api/queries/{id}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let q = json_of(&text);
    assert_eq!(
        (q["calls"].as_u64(), q["errors"].as_u64()),
        (Some(7), Some(2)),
        "{q:#}"
    );
    assert_eq!(
        q["errors_by_sqlstate"],
        json!([{ "sqlstate": "22012", "count": 2 }]),
        "division by zero, twice"
    );
    let (status, _) = api
        .call(
            &env,
            "GET",
            "/api/queries/{id}",
            "/api/queries/00000000deadbeef",
            None,
            None,
        )
        .await;
    assert_eq!(status, 404);

    // the slow statement: a redacted sample and, soon, its plan
    let (status, text) = api
        .call(&env, "GET", "/api/slow", "/api/slow?limit=10", None, None)
        .await;
    assert_eq!(status, 200);
    let slow = json_of(&text);
    let sample = slow
        .as_array()
        .and_then(|s| s.iter().find(|s| s.to_string().contains("slow_one")))
        .unwrap_or_else(|| panic!("slow sample kept: {slow:#}"))
        .clone();
    let slow_id = sample["fingerprint"]
        .as_str()
        .or_else(|| sample["id"].as_str())
        .unwrap_or_else(|| panic!("sample names its fingerprint: {sample:#}"))
        .to_string();
    let plan_path = format!("/api/queries/{slow_id}/plan");
    let captured = eventually(Duration::from_secs(15), || async {
        http("GET", &env.admin_url(&plan_path), None, None).await.0 == 200
    })
    .await;
    assert!(captured, "the slow statement's plan is captured");
    let (status, text) = api
        .call(
            &env,
            "GET",
            "/api/queries/{id}/plan",
            &plan_path,
            None,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(text.contains("Plan"), "EXPLAIN JSON: {text}");
    let (status, _) = api
        .call(
            &env,
            "GET",
            "/api/queries/{id}/plan",
            &format!("/api/queries/{id}/plan"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 404, "a fast statement has no plan");

    // traces
    let (status, text) = api
        .call(
            &env,
            "GET",
            "/api/traces/{trace_id}",
            &format!("/api/traces/{TRACE}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let traced = json_of(&text);
    assert!(
        traced.as_array().is_some_and(
            |t| t.len() == 1 && t[0]["query"].as_str().unwrap_or("").contains("traced")
        ),
        "the traced statement, alone: {traced:#}"
    );
    let (status, _) = api
        .call(
            &env,
            "GET",
            "/api/traces/{trace_id}",
            "/api/traces/not-hex",
            None,
            None,
        )
        .await;
    assert_eq!(status, 400);

    // advice and report
    let (status, _) = api
        .call(&env, "GET", "/api/advice", "/api/advice", None, None)
        .await;
    assert_eq!(status, 200);
    let (status, text) = api
        .call(&env, "POST", "/api/advice", "/api/advice", None, None)
        .await;
    assert_eq!(status, 200, "the advisor runs against the lab: {text}");
    let (status, text) = api
        .call(
            &env,
            "GET",
            "/api/report",
            "/api/report?limit=5",
            None,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(text.contains("tenth"), "the report lists the statement");

    // faults: authenticated, validated, removable
    let (status, _) = api
        .call(&env, "GET", "/api/faults", "/api/faults", None, None)
        .await;
    assert_eq!(status, 401);
    let (status, text) = api
        .call(&env, "GET", "/api/faults", "/api/faults", ADMIN, None)
        .await;
    assert_eq!((status, text.trim()), (200, "[]"));
    let spec = r#"{"kind":{"type":"latency","millis":1},"scope":{"pool":"nowhere/nobody"},"share":1.0,"duration_seconds":60}"#;
    let (status, text) = api
        .call(
            &env,
            "POST",
            "/api/faults",
            "/api/faults",
            ADMIN,
            Some(spec),
        )
        .await;
    assert_eq!(status, 201, "{text}");
    let fault = json_of(&text);
    let (status, _) = api
        .call(
            &env,
            "POST",
            "/api/faults",
            "/api/faults",
            ADMIN,
            Some(r#"{"kind":"sideways"}"#),
        )
        .await;
    assert_eq!(status, 422);
    let gone = format!("/api/faults/{}", fault["id"]);
    let (status, _) = api
        .call(&env, "DELETE", "/api/faults/{id}", &gone, ADMIN, None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = api
        .call(&env, "DELETE", "/api/faults/{id}", &gone, ADMIN, None)
        .await;
    assert_eq!(status, 404);

    let missing = api.undriven();
    assert!(
        missing.is_empty(),
        "documented operations this test never called: {missing:?}"
    );
}

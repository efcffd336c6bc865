//! The OpenAPI description matches the route table, and the UI is served
//! from the binary.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_described_and_the_ui_works_offline() {
    let app = TestApp::start().await;
    let response = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let spec: Value = response.json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));

    let mut described = BTreeSet::new();
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            described.insert((method.to_uppercase(), path.clone()));
            let name = format!("{method} {path}");
            assert!(operation["summary"].is_string(), "{name} has no summary");
            assert!(operation["tags"].as_array().is_some_and(|t| !t.is_empty()), "{name}");
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                // 2xx, or a redirect for the browser flows.
                responses.keys().any(|s| s.starts_with('2') || s.starts_with('3')),
                "{name} has no success answer"
            );
            if path.starts_with("/api/admins") || path.starts_with("/api/runners") || path.starts_with("/api/jobs") {
                assert!(operation["security"].is_array(), "{name} says no token is needed");
                assert!(responses.contains_key("401"), "{name}");
            }
        }
    }
    // Routes and descriptions come from one list (routes/mod.rs): each
    // described operation is routed (never the unknown-route 404), and any
    // other method on its path answers 405 with the methods in `Allow`.
    assert!(described.len() >= 41, "{described:?}");
    for (method, path) in &described {
        let url = app.url(
            &path
                .replace("{id}", "00000000-0000-0000-0000-000000000000")
                .replace("{provider}", "x"),
        );
        let response = app
            .http
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), &url)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(
            body["code"] != "not_found" && status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {status} {body}"
        );
        let allowed: BTreeSet<&str> = described
            .iter()
            .filter(|(_, p)| p == path)
            .map(|(m, _)| m.as_str())
            .collect();
        let response = app.http.request(reqwest::Method::TRACE, &url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "TRACE {path}");
        let allow: BTreeSet<String> = response.headers()["allow"]
            .to_str()
            .unwrap()
            .split(", ")
            .map(str::to_owned)
            .collect();
        assert_eq!(
            allow,
            allowed.iter().map(|m| m.to_string()).collect(),
            "Allow of {path}"
        );
    }

    // The error catalogue is part of the description.
    let codes: Vec<&str> = spec["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        codes.contains(&"runner_invalidated") && codes.contains(&"method_not_allowed"),
        "{codes:?}"
    );

    // Every schema a description points to is in the spec.
    let text = spec.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &reference[..reference.find('"').unwrap()];
        assert!(spec["components"]["schemas"][name].is_object(), "missing schema {name}");
    }

    // The UI and its assets come from the binary.
    let page = app.http.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    for asset in [
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-ui.css",
        "/docs/swagger-initializer.js",
    ] {
        let response = app.http.get(app.url(asset)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        assert!(!response.bytes().await.unwrap().is_empty());
    }
    let initializer = app
        .http
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(initializer.contains("/openapi.json"), "the UI loads our spec");

    // `warden openapi` prints the same description without a server.
    let printed = warden_command().arg("openapi").output().unwrap();
    assert!(printed.status.success());
    let printed: Value = serde_json::from_slice(&printed.stdout).unwrap();
    assert_eq!(printed, spec);
    app.stop().await;
}

//! Admin read-model queries: filters, cursor pagination, dashboard counts,
//! who may read them, and clear errors for bad queries.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{json, Value};
use warden::events::user::{Role, UserOrigin};
use warden::events::Metadata;
use warden::platform::secrets::Secret;

use crate::harness::*;

const SUPPORT_EMAIL: &str = "support@example.org";
const SUPPORT_PASSWORD: &str = "support password long";

/// Every item of a list, following `next_cursor` page by page.
async fn all_pages(app: &TestApp, token: &str, path: &str, limit: usize) -> (Vec<Value>, usize) {
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut items = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{path}{separator}limit={limit}");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={}", urlencode(cursor)));
        }
        let response = app.get_json(token, &url).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {url}");
        let body: Value = response.json().await.unwrap();
        let page = body["items"].as_array().unwrap();
        assert!(page.len() <= limit);
        items.extend(page.iter().cloned());
        pages += 1;
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (items, pages),
        }
    }
}

fn ids(items: &[Value]) -> HashSet<String> {
    items.iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect()
}

async fn create_tagged_runner(app: &TestApp, admin: &str, tags: &[&str]) -> (String, String) {
    let response = app
        .post_json(admin, "/api/admins/create_runner", json!({ "tags": tags }))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    (
        body["id"].as_str().unwrap().to_owned(),
        body["token"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_lists_filter_paginate_and_count() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let user_id = app
        .get_json(&user, "/api/users/me")
        .await
        .json::<Value>()
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let metadata = Metadata::system("test");
    let add = |email: String, role: Role| {
        let state = app.state.clone();
        let metadata = metadata.clone();
        async move {
            warden::identity::accounts::add_local_user(
                &state.commands,
                &email,
                &Secret::new("a password long enough"),
                role,
                UserOrigin::CommandLine,
                &metadata,
            )
            .await
            .unwrap()
        }
    };
    warden::identity::accounts::add_local_user(
        &app.state.commands,
        SUPPORT_EMAIL,
        &Secret::new(SUPPORT_PASSWORD),
        Role::Support,
        UserOrigin::CommandLine,
        &metadata,
    )
    .await
    .unwrap();
    for n in 0..5 {
        add(format!("extra{n}@example.org"), Role::User).await;
    }
    let gone = add("gone@example.org".into(), Role::User).await;
    warden::identity::accounts::delete_user(&app.state.commands, gone, &metadata)
        .await
        .unwrap();
    app.db.settle_log().await;

    // Users: 2 provisioned + support + 5 extra; the deleted one only on request.
    let (users, pages) = all_pages(&app, &admin, "/api/admins/users", 3).await;
    assert_eq!((users.len(), pages), (8, 3));
    assert_eq!(ids(&users).len(), 8, "no user on two pages");
    let created: Vec<&str> = users.iter().map(|u| u["created_at"].as_str().unwrap()).collect();
    let mut newest_first = created.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(created, newest_first);
    let (with_deleted, _) = all_pages(&app, &admin, "/api/admins/users?include_deleted=true", 100).await;
    let deleted = with_deleted
        .iter()
        .find(|u| u["id"] == gone.to_string().as_str())
        .unwrap();
    assert_eq!(deleted["email"], Value::Null, "a deleted user's email is gone");
    let admins = app.get_items(&admin, "/api/admins/users?role=admin").await;
    assert_eq!(admins.len(), 1);
    assert_eq!(admins[0]["email"], ADMIN_EMAIL);
    assert_eq!(app.get_items(&admin, "/api/admins/users?role=support").await.len(), 1);
    assert_eq!(app.get_items(&admin, "/api/admins/users?provider=local").await.len(), 8);
    assert!(app
        .get_items(&admin, "/api/admins/users?provider=ldap")
        .await
        .is_empty());

    // Runners by status, tag and last contact.
    let before_contact = chrono::Utc::now();
    let (gpu, gpu_token) = create_tagged_runner(&app, &admin, &["gpu"]).await;
    let (cpu, _) = create_tagged_runner(&app, &admin, &["cpu"]).await;
    let (big, _) = create_tagged_runner(&app, &admin, &["gpu", "big"]).await;
    assert_eq!(app.invalidate_runner(&admin, &cpu).await.status(), StatusCode::OK);
    let jobs: Vec<String> = submit_jobs(&app, &user, 3).await;
    let taken = app.request_job(&gpu_token, "r_machine_one", 2).await.unwrap();
    assert!(app.request_job(&gpu_token, "r_machine_two", 0).await.is_some());
    app.db.settle_log().await;

    let set = |ids: &[&String]| ids.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
    let q = |path: String| {
        let app = &app;
        let admin = admin.clone();
        async move { ids(&app.get_items(&admin, &path).await) }
    };
    assert_eq!(q("/api/admins/runners?status=active".into()).await, set(&[&gpu, &big]));
    assert_eq!(q("/api/admins/runners?status=invalidated".into()).await, set(&[&cpu]));
    assert_eq!(q("/api/admins/runners?tag=gpu".into()).await, set(&[&gpu, &big]));
    let since = urlencode(&before_contact.to_rfc3339());
    assert_eq!(
        q(format!("/api/admins/runners?contacted_since={since}")).await,
        set(&[&gpu])
    );
    assert_eq!(
        q(format!("/api/admins/runners?not_contacted_since={since}")).await,
        set(&[&cpu, &big])
    );
    let (runners, pages) = all_pages(&app, &admin, "/api/admins/runners", 1).await;
    assert_eq!((runners.len(), pages), (3, 3));
    let gpu_view = runners.iter().find(|r| r["id"] == gpu.as_str()).unwrap();
    assert_eq!(gpu_view["machines"].as_array().unwrap().len(), 2);
    assert!(gpu_view["last_contact_at"].is_string());

    // Machines, by runner, paginated.
    let (machines, pages) = all_pages(&app, &admin, &format!("/api/admins/machines?runner_id={gpu}"), 1).await;
    assert_eq!((machines.len(), pages), (2, 2));
    assert!(app
        .get_items(&admin, &format!("/api/admins/machines?runner_id={big}"))
        .await
        .is_empty());

    // Jobs by status, runner and submitter.
    let assigned = app
        .get_items(&admin, &format!("/api/admins/jobs?status=assigned&runner_id={gpu}"))
        .await;
    assert_eq!(assigned.len(), 2);
    assert!(ids(&assigned).contains(taken["id"].as_str().unwrap()));
    assert_eq!(app.get_items(&admin, "/api/admins/jobs?status=queued").await.len(), 1);
    let (mine, _) = all_pages(&app, &admin, &format!("/api/admins/jobs?submitted_by={user_id}"), 2).await;
    assert_eq!(ids(&mine), jobs.iter().cloned().collect());

    // The dashboard counts the same read models.
    let dashboard: Value = app
        .get_json(&admin, "/api/admins/dashboard")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        dashboard["users"]["local"],
        json!({"admin": 1, "support": 1, "user": 6})
    );
    assert_eq!(
        dashboard["runners"],
        json!({"active": 2, "invalidated": 1, "paused": 0})
    );
    assert_eq!(dashboard["machines"]["total"], 2);
    assert_eq!(dashboard["machines"]["active"], 2);
    assert_eq!(dashboard["jobs"], json!({"assigned": 2, "queued": 1}));

    // The support role reads; a plain user does not.
    let support = app.token(SUPPORT_EMAIL, SUPPORT_PASSWORD, false).await;
    for path in [
        "/api/admins/users",
        "/api/admins/runners",
        "/api/admins/machines",
        "/api/admins/jobs",
        "/api/admins/dashboard",
    ] {
        assert_eq!(app.get_json(&support, path).await.status(), StatusCode::OK, "{path}");
        assert_eq!(
            app.get_json(&user, path).await.status(),
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    // ... but the support role changes nothing.
    assert_eq!(
        app.post_json(&support, "/api/admins/create_runner", json!({}))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );

    // Bad queries are clear 400s.
    for (path, code) in [
        ("/api/admins/users?cursor=garbage", "invalid_cursor"),
        ("/api/admins/jobs?limit=0", "invalid_query"),
        ("/api/admins/jobs?limit=1001", "invalid_query"),
        ("/api/admins/jobs?status=lost", "invalid_query"),
        ("/api/admins/runners?status=sleeping", "invalid_query"),
        ("/api/admins/users?role=root", "invalid_query"),
        ("/api/admins/runners?colour=blue", "invalid_query"),
        ("/api/admins/machines?runner_id=not-a-uuid", "invalid_query"),
        ("/api/admins/runners?contacted_since=yesterday", "invalid_query"),
        ("/api/admins/dashboard?active_within=forever", "invalid_query"),
    ] {
        assert_error(app.get_json(&admin, path).await, StatusCode::BAD_REQUEST, code).await;
    }
    app.stop().await;
}

/// Submits `n` jobs as the user of `token`, oldest first.
async fn submit_jobs(app: &TestApp, token: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(app.submit_job(token, json!({ "n": i }), &[], 0).await);
    }
    ids
}

/// Times beyond what PostgreSQL stores are the client's error (422), not a
/// server failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_times_are_refused_not_failed() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    for path in [
        "/api/admins/audit?since=-100000-01-01T00:00:00Z",
        "/api/admins/runners?contacted_since=-100000-01-01T00:00:00Z",
    ] {
        assert_error(
            app.get_json(&admin, path).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "value_out_of_range",
        )
        .await;
    }
    app.stop().await;
}

/// The dashboard's charts: per-minute counts from the log, and the queue's
/// depth worked back from today's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_counts_this_minutes_jobs_and_the_queue() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let user = app.token(USER_EMAIL, USER_PASSWORD, false).await;
    let (_, runner) = app.create_runner(&admin).await;
    for n in 0..3 {
        app.submit_job(&user, json!({"n": n}), &[], 0).await;
    }
    assert!(app.request_job(&runner, "r_activity", 0).await.is_some());
    let activity: Value = app
        .get_json(&admin, "/api/admins/activity?minutes=5")
        .await
        .json()
        .await
        .unwrap();
    let series = |name: &str| -> Vec<i64> {
        activity[name]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect()
    };
    assert_eq!(series("submitted").len(), 5);
    // The jobs may straddle a minute's end: count over the window.
    assert_eq!(series("submitted").iter().sum::<i64>(), 3, "{activity}");
    assert_eq!(series("assigned").iter().sum::<i64>(), 1, "{activity}");
    assert_eq!(series("finished").iter().sum::<i64>(), 0);
    assert_eq!(*series("queued").last().unwrap(), 2, "{activity}");
    // The machine that took the job registered this minute.
    assert_eq!(*series("machines_online").last().unwrap(), 1, "{activity}");
    assert_eq!(series("machines_online").len(), 5);
    assert_error(
        app.get_json(&user, "/api/admins/activity").await,
        StatusCode::FORBIDDEN,
        "admin_read_required",
    )
    .await;
    app.stop().await;
}

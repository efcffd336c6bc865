//! Groups and projects (issue 26) over real HTTP against real PostgreSQL:
//! which runner may take which job, what a manager may see and do, the
//! per-scope runner limit under concurrency, service accounts, and replay.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{assert_error, test_config, TestApp, USER_EMAIL};
use warden::platform::config::ProvisionedUser;
use warden::platform::secrets::Secret;

const PASSWORD: &str = "a password that is long enough";
/// Manager of the physics group (by an admin's grant).
const PHYSICS_LEAD: &str = "lead@physics.example.org";
/// Member of physics/lattice-qcd.
const QCD_MEMBER: &str = "member@physics.example.org";
/// Manager of the chemistry group.
const CHEM_LEAD: &str = "lead@chem.example.org";
/// Made a service account by the test.
const ROBOT: &str = "robot@physics.example.org";

fn config() -> warden::platform::config::Config {
    let mut config = test_config();
    for (n, email) in [PHYSICS_LEAD, QCD_MEMBER, CHEM_LEAD, ROBOT].into_iter().enumerate() {
        config.security.local_account.user_provisioning.insert(
            format!("scopes-{n}"),
            ProvisionedUser {
                email: email.into(),
                password: Secret::new(PASSWORD),
                is_admin: false,
            },
        );
    }
    config
}

/// The two teams of the documented scenario: groups physics and chem,
/// projects physics/lattice-qcd, physics/astro and chem/catalysis, a lead
/// (manager) for each group and a member of lattice-qcd.
struct Teams {
    app: TestApp,
    admin: String,
    physics_lead: String,
    chem_lead: String,
    qcd_member: String,
}

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let response = app.post_json(token, path, body).await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn put(app: &TestApp, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let response = app
        .http
        .put(app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn teams() -> Teams {
    let app = TestApp::start_with(config()).await;
    let admin = app.admin_token().await;
    for (path, body) in [
        ("/api/scopes/groups", json!({"name": "physics"})),
        ("/api/scopes/groups", json!({"name": "Chem"})),
        (
            "/api/scopes/projects",
            json!({"name": "lattice-qcd", "group": "group:physics"}),
        ),
        (
            "/api/scopes/projects",
            json!({"name": "astro", "group": "group:physics"}),
        ),
        (
            "/api/scopes/projects",
            json!({"name": "catalysis", "group": "group:chem"}),
        ),
    ] {
        let (status, body) = post(&app, &admin, path, body).await;
        assert_eq!(status, StatusCode::CREATED, "{path}: {body}");
    }
    for (scope, user, role) in [
        ("group:physics", PHYSICS_LEAD, "manager"),
        ("group:chem", CHEM_LEAD, "manager"),
    ] {
        let (status, body) = put(
            &app,
            &admin,
            "/api/scopes/members",
            json!({"scope": scope, "user": user, "role": role}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let physics_lead = app.token(PHYSICS_LEAD, PASSWORD, false).await;
    // A manager grants membership below their group.
    let (status, body) = put(
        &app,
        &physics_lead,
        "/api/scopes/members",
        json!({"scope": "project:physics/lattice-qcd", "user": QCD_MEMBER, "role": "member"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let chem_lead = app.token(CHEM_LEAD, PASSWORD, false).await;
    let qcd_member = app.token(QCD_MEMBER, PASSWORD, false).await;
    Teams {
        app,
        admin,
        physics_lead,
        chem_lead,
        qcd_member,
    }
}

async fn scoped_runner(app: &TestApp, token: &str, scope: &str) -> (String, String) {
    let (status, body) = post(app, token, "/api/scopes/runners", json!({"scope": scope})).await;
    assert_eq!(status, StatusCode::CREATED, "{scope}: {body}");
    (
        body["id"].as_str().unwrap().to_owned(),
        body["token"].as_str().unwrap().to_owned(),
    )
}

async fn submit_to(app: &TestApp, token: &str, scope: &str) -> String {
    let (status, body) = post(
        app,
        token,
        "/api/jobs",
        json!({"payload": {"scope": scope}, "scope": scope}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{scope}: {body}");
    body["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_runner_takes_the_jobs_of_its_scope_and_below_and_instance_runners_take_all() {
    let teams = teams().await;
    let app = &teams.app;
    let (_, instance) = app.create_runner(&teams.admin).await;
    let (_, physics) = scoped_runner(app, &teams.physics_lead, "group:physics").await;
    let (_, qcd) = scoped_runner(app, &teams.physics_lead, "project:physics/lattice-qcd").await;
    let (_, catalysis) = scoped_runner(app, &teams.chem_lead, "project:chem/catalysis").await;
    let runners = [
        ("instance", &instance),
        ("group:physics", &physics),
        ("project:physics/lattice-qcd", &qcd),
        ("project:chem/catalysis", &catalysis),
    ];
    // job scope -> the runners that may take it (the routing table of the
    // closing note).
    let table: [(&str, [bool; 4]); 5] = [
        ("instance", [true, false, false, false]),
        ("group:physics", [true, true, false, false]),
        ("project:physics/lattice-qcd", [true, true, true, false]),
        ("project:physics/astro", [true, true, false, false]),
        ("project:chem/catalysis", [true, false, false, true]),
    ];
    let mut machine = 0;
    for (job_scope, may_take) in table {
        for ((runner_scope, token), allowed) in runners.iter().zip(may_take) {
            let job = submit_to(app, &teams.admin, job_scope).await;
            machine += 1;
            let got = app.request_job(token, &format!("m{machine}"), 0).await;
            match (allowed, got) {
                (true, Some(assigned)) => assert_eq!(assigned["id"], job.as_str(), "{runner_scope} took another job"),
                (false, None) => {
                    let response = app
                        .post_json(&teams.admin, &format!("/api/jobs/{job}/cancel"), json!({}))
                        .await;
                    assert_eq!(response.status(), StatusCode::OK);
                }
                (true, None) => panic!("a runner of {runner_scope} was not given a job of {job_scope}"),
                (false, Some(assigned)) => {
                    panic!("a runner of {runner_scope} took a job of {job_scope}: {assigned}")
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_submit_within_their_scopes_and_managers_see_only_their_own() {
    let teams = teams().await;
    let app = &teams.app;
    // Membership decides where one may submit.
    submit_to(app, &teams.qcd_member, "project:physics/lattice-qcd").await;
    let (status, body) = post(
        app,
        &teams.qcd_member,
        "/api/jobs",
        json!({"payload": {}, "scope": "project:physics/astro"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("membership_required"))
    );
    let (status, body) = post(
        app,
        &teams.qcd_member,
        "/api/jobs",
        json!({"payload": {}, "scope": "project:nowhere/x"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("membership_required"))
    );
    let chem_job = submit_to(app, &teams.chem_lead, "project:chem/catalysis").await;
    let (physics_runner, _) = scoped_runner(app, &teams.physics_lead, "project:physics/lattice-qcd").await;
    let (chem_runner, _) = scoped_runner(app, &teams.chem_lead, "group:chem").await;

    // The chemistry lead sees and changes nothing of physics: every route
    // answers as if it did not exist.
    let lead = &teams.chem_lead;
    for path in [
        "/api/scopes/runners?scope=group:physics",
        "/api/scopes/jobs?scope=project:physics/lattice-qcd",
        "/api/scopes/members?scope=group:physics",
    ] {
        assert_error(app.get_json(lead, path).await, StatusCode::NOT_FOUND, "scope_not_found").await;
    }
    for (path, body) in [
        ("/api/scopes/runners", json!({"scope": "group:physics"})),
        (
            "/api/scopes/projects",
            json!({"name": "mine", "group": "group:physics"}),
        ),
        ("/api/scopes/change", json!({"scope": "group:physics", "archive": true})),
    ] {
        let (status, answer) = post(app, lead, path, body).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("scope_not_found")),
            "{path}"
        );
    }
    let (status, answer) = put(
        app,
        lead,
        "/api/scopes/members",
        json!({"scope": "group:physics", "user": USER_EMAIL, "role": "manager"}),
    )
    .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("scope_not_found"))
    );
    for action in ["pause", "invalidate", "reset_token"] {
        let (status, answer) = post(
            app,
            lead,
            "/api/scopes/runners/action",
            json!({"runner_id": physics_runner, "action": action}),
        )
        .await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("runner_not_found")),
            "{action}"
        );
    }
    // Lists show their own scopes only.
    let scopes: Vec<Value> = app.get_json(lead, "/api/scopes").await.json().await.unwrap();
    let paths: Vec<&str> = scopes.iter().map(|s| s["scope"].as_str().unwrap()).collect();
    assert_eq!(paths, ["group:chem", "project:chem/catalysis"]);
    let runners = app.get_items(lead, "/api/scopes/runners?scope=group:chem").await;
    let ids: Vec<&str> = runners.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [chem_runner.as_str()]);
    let jobs = app.get_items(lead, "/api/scopes/jobs?scope=group:chem").await;
    let ids: Vec<&str> = jobs.iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [chem_job.as_str()]);
    // A member is no manager.
    assert_error(
        app.get_json(
            &teams.qcd_member,
            "/api/scopes/runners?scope=project:physics/lattice-qcd",
        )
        .await,
        StatusCode::FORBIDDEN,
        "manager_required",
    )
    .await;
    // Instance runners and top-level groups are the admins'.
    let (status, answer) = post(app, lead, "/api/scopes/groups", json!({"name": "rogue"})).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("admin_scope_required"))
    );

    // The physics lead manages their runner: pause, and invalidation stops
    // its token at once.
    let (status, _) = post(
        app,
        &teams.physics_lead,
        "/api/scopes/runners/action",
        json!({"runner_id": physics_runner, "action": "invalidate"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let runners = app
        .get_items(&teams.physics_lead, "/api/scopes/runners?scope=group:physics")
        .await;
    assert_eq!(runners[0]["status"], "invalidated");

    // Removing a member takes effect with the next request.
    let (status, _) = put(
        app,
        &teams.physics_lead,
        "/api/scopes/members",
        json!({"scope": "project:physics/lattice-qcd", "user": QCD_MEMBER, "role": null}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = post(
        app,
        &teams.qcd_member,
        "/api/jobs",
        json!({"payload": {}, "scope": "project:physics/lattice-qcd"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("membership_required"))
    );

    // Names are unique among siblings, whatever their case.
    let (status, body) = post(
        app,
        &teams.admin,
        "/api/scopes/projects",
        json!({"name": "ASTRO", "group": "group:physics"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("scope_exists"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scopes_runner_limit_holds_under_parallel_creations() {
    let teams = teams().await;
    let app = &teams.app;
    let (status, body) = post(
        app,
        &teams.physics_lead,
        "/api/scopes/change",
        json!({"scope": "project:physics/astro", "runner_limit": 3}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("admin_scope_required")),
        "only admins set limits"
    );
    let (status, body) = post(
        app,
        &teams.admin,
        "/api/scopes/change",
        json!({"scope": "project:physics/astro", "runner_limit": 3}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["runner_limit"], 3);
    let attempts = (0..20).map(|_| {
        let app = app.http.clone();
        let url = teams.app.url("/api/scopes/runners");
        let token = teams.physics_lead.clone();
        tokio::spawn(async move {
            let response = app
                .post(url)
                .bearer_auth(token)
                .json(&json!({"scope": "project:physics/astro"}))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            (status, body["code"].as_str().map(str::to_owned))
        })
    });
    let mut created = 0;
    for attempt in futures_util::future::join_all(attempts).await {
        match attempt.unwrap() {
            (StatusCode::CREATED, _) => created += 1,
            (StatusCode::CONFLICT, Some(code)) if code == "runner_limit_reached" => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(created, 3);
    let runners = app
        .get_items(&teams.physics_lead, "/api/scopes/runners?scope=project:physics/astro")
        .await;
    assert_eq!(runners.len(), 3);
    // An invalidated runner frees its place.
    let (status, _) = post(
        app,
        &teams.physics_lead,
        "/api/scopes/runners/action",
        json!({"runner_id": runners[0]["id"], "action": "invalidate"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    scoped_runner(app, &teams.physics_lead, "project:physics/astro").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_account_acts_only_with_api_tokens_within_its_memberships() {
    let teams = teams().await;
    let app = &teams.app;
    let robot_id = {
        let client = app.db.client().await;
        let row = client
            .query_one("SELECT id FROM users WHERE email = $1", &[&ROBOT])
            .await
            .unwrap();
        row.get::<_, uuid::Uuid>(0)
    };
    let (status, body) = put(
        app,
        &teams.admin,
        &format!("/api/admins/users/{robot_id}/role"),
        json!({"role": "api"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // No log-in, even with the right password.
    assert_error(
        app.login(ROBOT, PASSWORD, false).await,
        StatusCode::FORBIDDEN,
        "service_account_cannot_log_in",
    )
    .await;
    // A manager of a scope it is not a member of cannot issue its tokens.
    let (status, body) = post(
        app,
        &teams.physics_lead,
        "/api/scopes/service_accounts/api_tokens",
        json!({"account": ROBOT, "name": "ci"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("user_not_found"))
    );
    let (status, _) = put(
        app,
        &teams.physics_lead,
        "/api/scopes/members",
        json!({"scope": "project:physics/astro", "user": ROBOT, "role": "member"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Now its scope's manager can; another team's manager still cannot.
    let (status, body) = post(
        app,
        &teams.chem_lead,
        "/api/scopes/service_accounts/api_tokens",
        json!({"account": ROBOT, "name": "ci"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("user_not_found"))
    );
    let (status, body) = post(
        app,
        &teams.physics_lead,
        "/api/scopes/service_accounts/api_tokens",
        json!({"account": ROBOT, "name": "ci"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let robot = body["token"].as_str().unwrap().to_owned();
    // Ordinary users get no tokens from managers.
    let (status, _) = put(
        app,
        &teams.physics_lead,
        "/api/scopes/members",
        json!({"scope": "project:physics/astro", "user": USER_EMAIL, "role": "member"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = post(
        app,
        &teams.physics_lead,
        "/api/scopes/service_accounts/api_tokens",
        json!({"account": USER_EMAIL, "name": "x"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The token acts within the account's memberships.
    submit_to(app, &robot, "project:physics/astro").await;
    let (status, body) = post(
        app,
        &robot,
        "/api/jobs",
        json!({"payload": {}, "scope": "project:physics/lattice-qcd"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("membership_required"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_rebuilds_scopes_memberships_and_scoped_runners_equal_to_the_live_ones() {
    let teams = teams().await;
    let app = &teams.app;
    scoped_runner(app, &teams.physics_lead, "group:physics").await;
    submit_to(app, &teams.qcd_member, "project:physics/lattice-qcd").await;
    let (status, _) = post(
        app,
        &teams.admin,
        "/api/scopes/change",
        json!({"scope": "project:chem/catalysis", "rename": "catalysis-2"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = post(
        app,
        &teams.admin,
        "/api/scopes/change",
        json!({"scope": "group:chem", "archive": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // An archived group closes everything below it.
    for scope in ["group:chem", "project:chem/catalysis-2"] {
        let (status, body) = post(app, &teams.chem_lead, "/api/scopes/runners", json!({"scope": scope})).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::CONFLICT, Some("scope_archived")),
            "{scope}"
        );
    }
    let report = warden::log::replay::run(&app.db.db, true, false).await.unwrap();
    assert!(report.differences.is_empty(), "{report:?}");
    let scopes = app.db.dump("scopes", "id").await;
    assert_eq!(scopes.len(), 5);
    let members = app.db.dump("scope_members", "id").await;
    assert_eq!(members.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_moved_project_takes_its_runners_and_jobs_along_and_no_scope_moves_below_itself() {
    let teams = teams().await;
    let app = &teams.app;
    let (runner, _) = scoped_runner(app, &teams.physics_lead, "project:physics/astro").await;
    let job = submit_to(app, &teams.admin, "project:physics/astro").await;
    let move_astro = json!({"scope": "project:physics/astro", "move_to": "group:chem"});
    // Moving needs the manager role on both sides.
    let (status, body) = post(app, &teams.physics_lead, "/api/scopes/change", move_astro.clone()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("scope_not_found")),
        "{body}"
    );
    let (status, body) = post(app, &teams.admin, "/api/scopes/change", move_astro).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "project:chem/astro");
    let ids =
        |items: Vec<Value>| -> Vec<String> { items.iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect() };
    assert_eq!(
        ids(app
            .get_items(&teams.chem_lead, "/api/scopes/runners?scope=group:chem")
            .await),
        [runner]
    );
    assert_eq!(
        ids(app
            .get_items(&teams.chem_lead, "/api/scopes/jobs?scope=group:chem")
            .await),
        [job]
    );
    assert!(app
        .get_items(&teams.physics_lead, "/api/scopes/runners?scope=group:physics")
        .await
        .is_empty());
    // No loops: a group cannot go below itself.
    let (status, _) = post(
        app,
        &teams.admin,
        "/api/scopes/groups",
        json!({"name": "sub", "parent": "group:physics"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    for to in ["group:physics/sub", "group:physics"] {
        let (status, body) = post(
            app,
            &teams.admin,
            "/api/scopes/change",
            json!({"scope": "group:physics", "move_to": to}),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::CONFLICT, Some("scope_loop")),
            "{to}"
        );
    }
    let report = warden::log::replay::run(&app.db.db, true, false).await.unwrap();
    assert!(report.differences.is_empty(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_membership_removed_on_one_instance_is_gone_at_the_next_request_on_another() {
    let (first, second) = TestApp::start_two(config()).await;
    let admin = first.admin_token().await;
    for (path, body) in [
        ("/api/scopes/groups", json!({"name": "physics"})),
        (
            "/api/scopes/projects",
            json!({"name": "lattice-qcd", "group": "group:physics"}),
        ),
    ] {
        assert_eq!(post(&first, &admin, path, body).await.0, StatusCode::CREATED);
    }
    let grant = json!({"scope": "project:physics/lattice-qcd", "user": QCD_MEMBER, "role": "member"});
    assert_eq!(
        put(&first, &admin, "/api/scopes/members", grant).await.0,
        StatusCode::OK
    );
    let member = second.token(QCD_MEMBER, PASSWORD, false).await;
    let job = json!({"payload": {}, "scope": "project:physics/lattice-qcd"});
    assert_eq!(
        post(&second, &member, "/api/jobs", job.clone()).await.0,
        StatusCode::CREATED
    );
    let removal = json!({"scope": "project:physics/lattice-qcd", "user": QCD_MEMBER, "role": null});
    assert_eq!(
        put(&first, &admin, "/api/scopes/members", removal).await.0,
        StatusCode::OK
    );
    // The very next request, on the other instance: refused.
    let (status, body) = post(&second, &member, "/api/jobs", job).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("membership_required"))
    );
}

/// `warden scope ...` and `warden user add --role api` while a server runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_command_line_makes_groups_projects_members_and_service_accounts() {
    let app = TestApp::start_with(config()).await;
    let url = app.db.url();
    let run = |args: &[&str]| {
        let output = crate::harness::warden_command()
            .args(["--database-url", &url])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).trim().to_owned(),
            stderr,
        )
    };
    assert_eq!(run(&["scope", "add-group", "physics"]).1, "group:physics");
    assert_eq!(
        run(&["scope", "add-project", "physics/lattice-qcd"]).1,
        "project:physics/lattice-qcd"
    );
    let (ok, _, stderr) = run(&["scope", "add-project", "nowhere/x"]);
    assert!(!ok && stderr.contains("no group:nowhere"), "{stderr}");
    assert!(run(&["scope", "add-member", "project:physics/lattice-qcd", QCD_MEMBER]).0);
    let listed = run(&["scope", "list"]).1;
    assert_eq!(listed.lines().count(), 2, "{listed}");
    // The server (another process) sees it at once.
    let member = app.token(QCD_MEMBER, PASSWORD, false).await;
    submit_to(&app, &member, "project:physics/lattice-qcd").await;
    assert!(run(&["scope", "remove-member", "project:physics/lattice-qcd", QCD_MEMBER]).0);
    let (status, body) = post(
        &app,
        &member,
        "/api/jobs",
        json!({"payload": {}, "scope": "project:physics/lattice-qcd"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("membership_required"))
    );

    // A service account needs no password and cannot log in.
    let (ok, added, stderr) = run(&["user", "add", "bot@example.org", "--role", "api"]);
    assert!(ok && added.starts_with("added user "), "{stderr}");
    let users: Vec<String> = app
        .get_items(&app.admin_token().await, "/api/admins/users?role=api")
        .await
        .iter()
        .map(|u| u["email"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(users, ["bot@example.org"]);
}

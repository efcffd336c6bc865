//! Users from `security.local_account.user_provisioning`: created once,
//! then changed only when the config differs.

use reqwest::StatusCode;
use warden::platform::secrets::Secret;

use crate::harness::*;

async fn event_types(db: &TestDb) -> Vec<String> {
    db.client()
        .await
        .query("SELECT event_type FROM events ORDER BY position", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_is_idempotent_and_follows_config_changes() {
    let app = TestApp::start().await;
    assert_eq!(event_types(&app.db).await, ["LocalUserCreated", "LocalUserCreated"]);

    // Same config again (a restart): nothing is appended.
    let changed = warden::identity::accounts::provision_from_config(&app.state.identity)
        .await
        .unwrap();
    assert!(changed.is_empty());
    let db = app.stop().await;
    let app = TestApp::start_on(db, test_config()).await;
    assert_eq!(app.db.count_events().await, 2);
    let db = app.stop().await;

    // New password and admin rights for user 1: exactly those two events.
    let mut config = test_config();
    let user = config.security.local_account.user_provisioning.get_mut("1").unwrap();
    user.password = Secret::new("a brand new long password");
    user.is_admin = true;
    let app = TestApp::start_on(db, config).await;
    assert_eq!(
        event_types(&app.db).await,
        [
            "LocalUserCreated",
            "LocalUserCreated",
            "UserPasswordChanged",
            "UserRoleChanged"
        ]
    );
    assert_eq!(
        app.login(USER_EMAIL, USER_PASSWORD, false).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login(USER_EMAIL, "a brand new long password", true).await.status(),
        StatusCode::OK
    );
    let db = app.stop().await;

    // A changed email moves the login name.
    let mut config = test_config();
    config
        .security
        .local_account
        .user_provisioning
        .get_mut("0")
        .unwrap()
        .email = "root@example.org".into();
    let app = TestApp::start_on(db, config).await;
    assert_eq!(
        app.login("root@example.org", ADMIN_PASSWORD, true).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.login(ADMIN_EMAIL, ADMIN_PASSWORD, true).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioned_email_taken_by_another_account_names_the_field() {
    let app = TestApp::start().await;
    warden::identity::accounts::add_local_user(
        &app.state.commands,
        "taken@example.org",
        &Secret::new("some long password"),
        warden::events::user::Role::User,
        warden::events::user::UserOrigin::CommandLine,
        &warden::events::Metadata::system("test"),
    )
    .await
    .unwrap();
    let db = app.stop().await;
    let mut config = test_config();
    config
        .security
        .local_account
        .user_provisioning
        .get_mut("1")
        .unwrap()
        .email = "Taken@Example.org".into();
    let (state, background) = warden::app::AppState::start(config, db.db.clone()).await.unwrap();
    let error = warden::identity::accounts::provision_from_config(&state.identity)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("security.local_account.user_provisioning.1"), "{error}");
    assert!(error.contains("email"), "{error}");
    background.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_provisioning_at_once_create_each_user_once() {
    let db = TestDb::new().await;
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(
            warden::app::AppState::start(test_config(), db.db.clone())
                .await
                .unwrap(),
        );
    }
    let runs: Vec<_> = instances
        .iter()
        .map(|(state, _)| {
            let state = std::sync::Arc::clone(state);
            tokio::spawn(async move { warden::identity::accounts::provision_from_config(&state.identity).await })
        })
        .collect();
    for run in runs {
        run.await.unwrap().unwrap();
    }
    assert_eq!(event_types(&db).await, ["LocalUserCreated", "LocalUserCreated"]);
    for (_, background) in instances {
        background.stop().await;
    }
}

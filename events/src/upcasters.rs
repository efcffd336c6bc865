//! Upcasters: each moves one event type's stored payload from version `n`
//! to `n + 1`. The codec chains them on every read, so the log is never
//! rewritten (its hash chain covers the stored bytes) and the code only
//! ever sees the current shape.
//!
//! Rule for changing an event: adding an optional field (`#[serde(default)]`)
//! needs nothing; any change an older payload would not fit (renaming,
//! nesting, a new required field, a changed meaning) bumps the version in
//! the `events!` declaration and adds one arm here, with a test that reads a
//! real old payload. Upcasters are pure: they may use only the payload and
//! the facts of the stored envelope ([`Stored`]).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::codec::DecodeError;

/// Facts of the stored envelope an upcaster may use.
#[derive(Clone, Copy, Debug)]
pub struct Stored {
    pub recorded_at: DateTime<Utc>,
}

/// Moves a payload from `version` to `version + 1`.
pub(crate) fn upcast_once(
    event_type: &str,
    version: u32,
    payload: Value,
    stored: Stored,
) -> Result<Value, DecodeError> {
    match (event_type, version) {
        ("RunnerMachineRegistered", 1) => Ok(machine_registered_v1_to_v2(payload, stored)),
        ("LocalUserCreated" | "UserPasswordChanged", 1) => Ok(plain_field_to_pii(payload, "password_hash")),
        ("ApiTokenCreated", 1) => Ok(plain_field_to_pii(payload, "name")),
        ("JobSubmitted", 1) => Ok(job_submitted_v1_to_v2(payload)),
        ("JobProgressed", 1) => Ok(plain_field_to_pii(payload, "message")),
        ("JobFinished", 1) => Ok(job_finished_v1_to_v2(payload)),
        _ => Err(DecodeError::NoUpcaster {
            event_type: event_type.to_owned(),
            version,
        }),
    }
}

/// v1 of `LocalUserCreated`/`UserPasswordChanged` (`password_hash`) and
/// `ApiTokenCreated` (`name`) kept the field as a plain string; v2 seals it
/// as personal data. An old value stays what it was: readable, now as
/// `{"plain": ...}` (the log is never rewritten; only new events are
/// sealed).
fn plain_field_to_pii(payload: Value, field: &str) -> Value {
    let Value::Object(mut fields) = payload else {
        return payload;
    };
    if let Some(Value::String(plain)) = fields.remove(field) {
        let mut pii = Map::new();
        pii.insert("plain".to_owned(), Value::String(plain));
        fields.insert(field.to_owned(), Value::Object(pii));
    }
    Value::Object(fields)
}

/// `JobSubmitted` v1 kept the payload as plain JSON and the input file's
/// name inside `input`; v2 seals both: the payload as JSON text, the name
/// as `input_name`. Old values stay readable (as `plain`).
fn job_submitted_v1_to_v2(payload: Value) -> Value {
    let Value::Object(mut fields) = payload else {
        return payload;
    };
    if let Some(settings) = fields.remove("payload") {
        let mut pii = Map::new();
        pii.insert("plain".to_owned(), Value::String(settings.to_string()));
        fields.insert("payload".to_owned(), Value::Object(pii));
    }
    let name = match fields.get_mut("input") {
        Some(Value::Object(input)) => input.remove("name"),
        _ => None,
    };
    if let Some(Value::String(name)) = name {
        let mut pii = Map::new();
        pii.insert("plain".to_owned(), Value::String(name));
        fields.insert("input_name".to_owned(), Value::Object(pii));
    }
    Value::Object(fields)
}

/// `JobFinished` v1 kept the result as plain JSON (`null` for none); v2
/// seals it as JSON text and has no field for no result. Old results stay
/// readable (as `plain`).
fn job_finished_v1_to_v2(payload: Value) -> Value {
    let Value::Object(mut fields) = payload else {
        return payload;
    };
    match fields.remove("result") {
        None | Some(Value::Null) => {}
        Some(result) => {
            let mut pii = Map::new();
            pii.insert("plain".to_owned(), Value::String(result.to_string()));
            fields.insert("result".to_owned(), Value::Object(pii));
        }
    }
    Value::Object(fields)
}

/// `RunnerMachineRegistered` v1 (the first release) had the runner's
/// description flat on the event and no contact time:
/// `{machine_id, runner_id, system_id, version?, revision?, platform?,
/// architecture?, ip_address?}`. v2 nests the description under `info`
/// (the shape `RunnerMachineContacted` shares) and records `contacted_at`;
/// for v1 the registration time is the contact time, so it is the
/// envelope's `recorded_at`.
///
/// Builds between the two labelled the nested shape v1 too; such payloads
/// already fit v2 and pass through.
fn machine_registered_v1_to_v2(payload: Value, stored: Stored) -> Value {
    let Value::Object(mut fields) = payload else {
        // Not an object: let decoding report the bad payload.
        return payload;
    };
    if !fields.contains_key("info") {
        let mut info = Map::new();
        for key in ["version", "revision", "platform", "architecture"] {
            if let Some(value) = fields.remove(key) {
                info.insert(key.to_owned(), value);
            }
        }
        fields.insert("info".to_owned(), Value::Object(info));
    }
    if !fields.contains_key("contacted_at") {
        fields.insert(
            "contacted_at".to_owned(),
            Value::String(stored.recorded_at.to_rfc3339()),
        );
    }
    Value::Object(fields)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use crate::codec::{decode, encode};
    use crate::machine::{MachineInfo, RunnerMachineRegistered};
    use crate::{Event, MachineEvent};

    use super::*;

    fn stored() -> Stored {
        Stored {
            recorded_at: "2026-01-02T03:04:05.678901Z".parse().unwrap(),
        }
    }

    #[test]
    fn a_first_release_machine_registration_reads_as_v2() {
        let (machine_id, runner_id) = (Uuid::now_v7(), Uuid::now_v7());
        // Exactly what the first release wrote (schema_version 1).
        let v1 = json!({
            "machine_id": machine_id,
            "runner_id": runner_id,
            "system_id": "r_0123456789ab",
            "version": "16.5.0",
            "platform": "linux",
            "architecture": "amd64",
            "ip_address": "10.0.0.7",
        });
        let event = decode("RunnerMachineRegistered", 1, v1, stored()).unwrap();
        assert_eq!(
            event,
            Event::Machine(MachineEvent::RunnerMachineRegistered(RunnerMachineRegistered {
                machine_id,
                runner_id,
                system_id: "r_0123456789ab".into(),
                info: MachineInfo {
                    version: Some("16.5.0".into()),
                    platform: Some("linux".into()),
                    architecture: Some("amd64".into()),
                    ..MachineInfo::default()
                },
                ip_address: Some("10.0.0.7".into()),
                contacted_at: stored().recorded_at,
            }))
        );
    }

    #[test]
    fn nested_payloads_labelled_v1_pass_through_and_v2_round_trips() {
        let event = Event::Machine(MachineEvent::RunnerMachineRegistered(RunnerMachineRegistered {
            machine_id: Uuid::now_v7(),
            runner_id: Uuid::now_v7(),
            system_id: "s_x".into(),
            info: MachineInfo {
                name: Some("host-1".into()),
                revision: Some("abc".into()),
                ..MachineInfo::default()
            },
            ip_address: None,
            contacted_at: "2026-05-05T00:00:00Z".parse().unwrap(),
        }));
        let encoded = encode(&event);
        assert_eq!(encoded.schema_version, 2);
        let as_v1 = decode(encoded.event_type, 1, encoded.payload.clone(), stored()).unwrap();
        assert_eq!(as_v1, event, "contacted_at is kept, not replaced by recorded_at");
        let as_v2 = decode(encoded.event_type, 2, encoded.payload, stored()).unwrap();
        assert_eq!(as_v2, event);
    }

    #[test]
    fn a_v1_payload_of_the_wrong_shape_is_a_decode_error() {
        assert!(matches!(
            decode("RunnerMachineRegistered", 1, json!([1, 2]), stored()),
            Err(DecodeError::BadPayload { .. })
        ));
        assert!(matches!(
            decode("RunnerMachineRegistered", 1, json!({"system_id": "x"}), stored()),
            Err(DecodeError::BadPayload { .. })
        ));
    }

    #[test]
    fn first_release_password_hashes_and_token_names_read_as_v2() {
        use crate::user::{ApiTokenCreated, LocalUserCreated, Role, UserPasswordChanged};
        use crate::{Pii, UserEvent};
        let user_id = Uuid::now_v7();
        let created = decode(
            "LocalUserCreated",
            1,
            json!({"user_id": user_id, "email": {"sealed": "AAAA"}, "password_hash": "$argon2id$x",
                   "role": "admin", "origin": {"kind": "sign_up"}}),
            stored(),
        );
        match created {
            Ok(Event::User(UserEvent::LocalUserCreated(LocalUserCreated {
                password_hash, role, ..
            }))) => {
                assert_eq!(password_hash, Pii::plain("$argon2id$x"));
                assert_eq!(role, Role::Admin);
            }
            other => panic!("{other:?}"),
        }
        let changed = decode(
            "UserPasswordChanged",
            1,
            json!({"user_id": user_id, "password_hash": "$argon2id$y"}),
            stored(),
        )
        .unwrap();
        assert_eq!(
            changed,
            Event::User(UserEvent::UserPasswordChanged(UserPasswordChanged {
                user_id,
                password_hash: Pii::plain("$argon2id$y"),
            }))
        );
        let token_id = Uuid::now_v7();
        let token = decode(
            "ApiTokenCreated",
            1,
            json!({"user_id": user_id, "token_id": token_id, "name": "laptop", "token_hash": "ab"}),
            stored(),
        )
        .unwrap();
        assert_eq!(
            token,
            Event::User(UserEvent::ApiTokenCreated(ApiTokenCreated {
                user_id,
                token_id,
                name: Pii::plain("laptop"),
                token_hash: "ab".into(),
                expires_at: None,
            }))
        );
    }

    #[test]
    fn first_release_job_payloads_and_file_names_read_as_v2() {
        use crate::job::JobSubmitted;
        use crate::JobEvent;
        let (job_id, user) = (Uuid::now_v7(), Uuid::now_v7());
        let v1 = json!({
            "job_id": job_id, "submitted_by": user, "payload": {"to": "alice@example.org"},
            "kind": "project_w",
            "input": {"file_id": Uuid::nil(), "sha256": "00", "size": 3, "media_type": "audio/mpeg", "name": "alice.mp3"},
        });
        let Event::Job(JobEvent::JobSubmitted(submitted)) = decode("JobSubmitted", 1, v1, stored()).unwrap() else {
            panic!("not a JobSubmitted");
        };
        let submitted: JobSubmitted = submitted;
        assert_eq!(submitted.payload_value(), json!({"to": "alice@example.org"}));
        assert_eq!(submitted.input.as_ref().unwrap().name, None);
        assert_eq!(submitted.input_with_name().unwrap().name.as_deref(), Some("alice.mp3"));
    }

    #[test]
    fn first_release_results_and_progress_messages_read_as_v2() {
        use crate::JobEvent;
        let (job, runner, machine) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let v1 = json!({
            "job_id": job, "runner_id": runner, "machine_id": machine, "outcome": "succeeded",
            "result": {"transcript": "hello alice"},
        });
        let Event::Job(JobEvent::JobFinished(finished)) = decode("JobFinished", 1, v1, stored()).unwrap() else {
            panic!("not a JobFinished");
        };
        assert_eq!(finished.result_value(), json!({"transcript": "hello alice"}));
        assert_eq!(finished.submitted_by, None);
        let without =
            json!({"job_id": job, "runner_id": runner, "machine_id": machine, "outcome": "failed", "result": null});
        let Event::Job(JobEvent::JobFinished(finished)) = decode("JobFinished", 1, without, stored()).unwrap() else {
            panic!("not a JobFinished");
        };
        assert_eq!(finished.result, None);
        let progressed = json!({"job_id": job, "progress": 0.5, "message": "decoding alice.mp3"});
        let Event::Job(JobEvent::JobProgressed(progressed)) = decode("JobProgressed", 1, progressed, stored()).unwrap()
        else {
            panic!("not a JobProgressed");
        };
        assert_eq!(progressed.message_text(), Some("decoding alice.mp3"));
    }
}

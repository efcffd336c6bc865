//! Sealing personal data with per-subject keys held outside the log.
//!
//! AES-256-GCM, a random nonce per value, the subject id as associated
//! data (a sealed value cannot be moved to another subject). Destroying a
//! subject's key ("crypto-shredding") makes all its sealed values
//! unreadable without touching the append-only log.

use std::collections::HashMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use deadpool_postgres::GenericClient;
use rand::RngCore;
use uuid::Uuid;
use warden_events::{Actor, Event, Metadata, Pii};

use super::StoreError;

const NONCE_LEN: usize = 12;

/// A subject's key, or `None` once it has been destroyed.
pub(super) type SubjectKeys = HashMap<Uuid, Option<Vec<u8>>>;

/// The key that seals new values of `subject`, created on first use.
pub(super) async fn key_for_sealing<C: GenericClient>(client: &C, subject: Uuid) -> Result<Vec<u8>, StoreError> {
    let mut fresh = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut fresh);
    // One round trip in the usual cases: the key just created, or one
    // committed before this statement began. A key committed concurrently
    // is not in this statement's snapshot: then read it on its own.
    let create_or_read = client
        .prepare_cached(
            "WITH created AS (
                 INSERT INTO pii_keys (subject_id, key) VALUES ($1, $2) ON CONFLICT (subject_id) DO NOTHING
                 RETURNING key
             )
             SELECT key FROM created
             UNION ALL
             SELECT key FROM pii_keys WHERE subject_id = $1 AND NOT EXISTS (SELECT 1 FROM created)",
        )
        .await?;
    let row = match client.query_opt(&create_or_read, &[&subject, &fresh]).await? {
        Some(row) => row,
        None => {
            let select = client
                .prepare_cached("SELECT key FROM pii_keys WHERE subject_id = $1")
                .await?;
            client.query_one(&select, &[&subject]).await?
        }
    };
    let key: Option<Vec<u8>> = row.get(0);
    key.ok_or(StoreError::SubjectForgotten(subject))
}

/// Destroys the key of subject `$1`; its sealed values become
/// `Pii::Forgotten`.
pub(super) const DESTROY_KEY: &str = "INSERT INTO pii_keys (subject_id, key, destroyed_at) VALUES ($1, NULL, now())
                                      ON CONFLICT (subject_id) DO UPDATE SET key = NULL, destroyed_at = now()";

pub(super) async fn keys_for_reading<C: GenericClient>(
    client: &C,
    subjects: Vec<Uuid>,
) -> Result<SubjectKeys, StoreError> {
    if subjects.is_empty() {
        return Ok(SubjectKeys::new());
    }
    let select = client
        .prepare_cached("SELECT subject_id, key FROM pii_keys WHERE subject_id = ANY($1)")
        .await?;
    let rows = client.query(&select, &[&subjects]).await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Seals every plain personal value of `event` with `key`.
pub(super) fn seal(event: &mut Event, subject: Uuid, key: &[u8]) {
    for field in event.pii_fields_mut() {
        if let Pii::Plain(value) = field {
            *field = Pii::Sealed(seal_text(value, subject, key));
        }
    }
}

fn seal_text(value: &str, subject: Uuid, key: &[u8]) -> String {
    let cipher = Aes256Gcm::new_from_slice(key).expect("keys are 32 bytes");
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: value.as_bytes(),
                aad: subject.as_bytes(),
            },
        )
        .expect("AES-GCM encryption of a short value cannot fail");
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&ciphertext);
    STANDARD.encode(sealed)
}

/// A sealed `metadata.source_ip` is stored as `sealed:<subject>:<value>`
/// (a plain address never starts so): a user's address is their personal
/// data and goes with their key.
const SEALED_ADDRESS: &str = "sealed:";

/// Whose personal data the request's source address is: the acting user,
/// else the user the events are about. Runner and system addresses are no
/// one's personal data and stay readable.
pub(super) fn address_subject(metadata: &Metadata, events: &[Event]) -> Option<Uuid> {
    metadata.source_ip.as_ref()?;
    match &metadata.actor {
        Actor::User { user_id } => Some(*user_id),
        Actor::Runner { .. } => None,
        Actor::System { .. } | Actor::CommandLine { .. } => events.iter().find_map(Event::pii_subject),
    }
}

/// `metadata` as stored, its source address sealed with `key`.
pub(super) fn seal_address(metadata: &Metadata, subject: Uuid, key: &[u8]) -> Metadata {
    let mut stored = metadata.clone();
    if let Some(address) = &metadata.source_ip {
        stored.source_ip = Some(format!(
            "{SEALED_ADDRESS}{subject}:{}",
            seal_text(address, subject, key)
        ));
    }
    stored
}

/// The subject whose key opens a stored `metadata`'s source address.
pub(super) fn sealed_address_subject(metadata: &Metadata) -> Option<Uuid> {
    let rest = metadata.source_ip.as_deref()?.strip_prefix(SEALED_ADDRESS)?;
    rest.split_once(':')?.0.parse().ok()
}

/// Opens a stored source address; once the subject's key is gone (or the
/// value does not open) the address is simply not known any more.
pub(super) fn unseal_address(metadata: &mut Metadata, keys: &SubjectKeys) {
    let Some(rest) = metadata
        .source_ip
        .as_deref()
        .and_then(|ip| ip.strip_prefix(SEALED_ADDRESS))
    else {
        return;
    };
    let opened = rest.split_once(':').and_then(|(subject, sealed)| {
        let subject: Uuid = subject.parse().ok()?;
        let key = keys.get(&subject)?.as_deref()?;
        open(sealed, subject, key)
    });
    metadata.source_ip = opened;
}

/// Unseals every sealed value of `event`; values whose key is gone
/// become `Forgotten`. Returns false if a value does not decrypt.
pub(super) fn unseal(event: &mut Event, keys: &SubjectKeys) -> bool {
    let Some(subject) = event.pii_subject() else {
        return true;
    };
    let key = keys.get(&subject).and_then(|key| key.as_deref());
    for field in event.pii_fields_mut() {
        let Pii::Sealed(sealed) = field else { continue };
        let Some(key) = key else {
            *field = Pii::Forgotten;
            continue;
        };
        match open(sealed, subject, key) {
            Some(value) => *field = Pii::Plain(value),
            None => return false,
        }
    }
    true
}

fn open(sealed: &str, subject: Uuid, key: &[u8]) -> Option<String> {
    let bytes = STANDARD.decode(sealed).ok()?;
    if bytes.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new_from_slice(key).ok()?;
    let plain = cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: subject.as_bytes(),
            },
        )
        .ok()?;
    String::from_utf8(plain).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_events::user::UserEmailChanged;
    use warden_events::UserEvent;

    /// What the store writes for `event`: sealed as `append_in` seals it.
    fn as_appended(mut event: Event) -> String {
        if let Some(subject) = event.pii_subject() {
            seal(&mut event, subject, &[9u8; 32]);
        }
        warden_events::codec::encode(&event).payload.to_string()
    }

    /// Every event type, with a personal value in each personal field:
    /// none reaches the log readable. Fails for a new event type whose
    /// personal field `pii_subject`/`pii_fields_mut` does not cover.
    #[test]
    fn pii_sealing_covers_every_event_type() {
        let plain = warden_events::samples::PLAIN_PERSONAL_VALUE;
        for event in warden_events::samples::all() {
            let event_type = event.event_type();
            let stored = as_appended(event);
            assert!(
                !stored.contains(plain),
                "{event_type} is written with readable personal data: {stored}"
            );
            assert!(
                !stored.contains("\"plain\""),
                "{event_type} has an unsealed Pii value: {stored}"
            );
        }
    }

    /// The check above would catch a forgotten field: the same samples
    /// written without sealing show the personal value.
    #[test]
    fn unsealed_samples_would_be_caught() {
        let plain = warden_events::samples::PLAIN_PERSONAL_VALUE;
        let readable = warden_events::samples::all()
            .into_iter()
            .filter(|event| warden_events::codec::encode(event).payload.to_string().contains(plain))
            .count();
        assert!(readable >= 5, "the samples carry personal values: {readable}");
    }

    fn email_event(subject: Uuid) -> Event {
        Event::User(UserEvent::UserEmailChanged(UserEmailChanged {
            user_id: subject,
            email: Pii::plain("carol@example.org"),
        }))
    }

    fn sealed_value(event: &Event) -> String {
        match event {
            Event::User(UserEvent::UserEmailChanged(e)) => match &e.email {
                Pii::Sealed(s) => s.clone(),
                other => panic!("not sealed: {other:?}"),
            },
            _ => unreachable!(),
        }
    }

    #[test]
    fn sealed_values_hide_the_plain_text_and_round_trip() {
        let subject = Uuid::now_v7();
        let key = vec![7u8; 32];
        let mut event = email_event(subject);
        seal(&mut event, subject, &key);
        let stored = event.payload().to_string();
        assert!(!stored.contains("carol"), "{stored}");

        let keys = SubjectKeys::from([(subject, Some(key))]);
        assert!(unseal(&mut event, &keys));
        assert_eq!(event, email_event(subject));
    }

    #[test]
    fn destroyed_key_forgets_and_wrong_subject_fails() {
        let subject = Uuid::now_v7();
        let mut event = email_event(subject);
        seal(&mut event, subject, &[7u8; 32]);
        let mut forgotten = event.clone();
        assert!(unseal(&mut forgotten, &SubjectKeys::from([(subject, None)])));
        assert!(matches!(forgotten, Event::User(UserEvent::UserEmailChanged(ref e)) if e.email == Pii::Forgotten));

        // The subject is bound as associated data.
        assert!(open(&sealed_value(&event), Uuid::now_v7(), &[7u8; 32]).is_none());
        assert!(open(&sealed_value(&event), subject, &[8u8; 32]).is_none());
    }
}

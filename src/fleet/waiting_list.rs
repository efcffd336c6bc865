//! The waiting list shared by all instances: which machines wait for work
//! where, so that a dispatcher honours runner priority across instances.
//!
//! Each instance publishes its idle machines (long polls and Project-W
//! machines online and not busy) in `dispatch_waiters`, rewriting only
//! what changed since its last round. Before assigning, a round reads the
//! machines waiting on *other* live instances; a job that one of them with
//! a higher priority could take is left for it (its instance hears of the
//! job by LISTEN and assigns it there). Equal priorities are not ordered
//! across instances: whoever's round comes first takes the job.
//!
//! A crashed instance's rows are ignored once the registry stops seeing it
//! (`instances::ALIVE_WITHIN`); a clean stop removes them.

use std::collections::HashMap;

use uuid::Uuid;
use warden_events::job::JobKind;

use crate::platform::db::{Database, DbError};
use crate::platform::instances::ALIVE_WITHIN;

/// One idle machine as the list shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub runner_id: Uuid,
    pub priority: i32,
    pub tags: Vec<String>,
    pub kind: JobKind,
    /// The runner's group or project; none for an instance runner.
    pub scope_id: Option<Uuid>,
}

impl Entry {
    /// Whether this machine may take a job requiring `tags`, of `kind`,
    /// submitted to the first of `job_scopes` (the job's scope and the
    /// groups above it; empty for an instance job).
    pub fn can_take(&self, tags: &[String], kind: JobKind, job_scopes: &[Uuid]) -> bool {
        self.kind == kind
            && tags.iter().all(|tag| self.tags.contains(tag))
            && self.scope_id.is_none_or(|scope| job_scopes.contains(&scope))
    }
}

/// What this instance last published, to write only the difference.
#[derive(Default)]
pub struct Published {
    entries: HashMap<String, Entry>,
}

impl Published {
    /// Makes the list show exactly `now` for `instance`.
    pub async fn sync(&mut self, db: &Database, instance: Uuid, now: HashMap<String, Entry>) -> Result<(), DbError> {
        let gone: Vec<String> = self
            .entries
            .keys()
            .filter(|key| !now.contains_key(*key))
            .cloned()
            .collect();
        let new: Vec<(&String, &Entry)> = now
            .iter()
            .filter(|(key, entry)| self.entries.get(*key) != Some(*entry))
            .collect();
        if gone.is_empty() && new.is_empty() {
            return Ok(());
        }
        let connection = db.get().await?;
        if !gone.is_empty() {
            let delete = connection
                .prepare_cached("DELETE FROM dispatch_waiters WHERE instance_id = $1 AND waiter = ANY($2)")
                .await?;
            connection.execute(&delete, &[&instance, &gone]).await?;
        }
        if !new.is_empty() {
            let keys: Vec<&str> = new.iter().map(|(key, _)| key.as_str()).collect();
            let runners: Vec<Uuid> = new.iter().map(|(_, e)| e.runner_id).collect();
            let priorities: Vec<i32> = new.iter().map(|(_, e)| e.priority).collect();
            // Arrays of arrays must be rectangular: tags travel as JSON.
            let tags: Vec<String> = new
                .iter()
                .map(|(_, e)| serde_json::to_string(&e.tags).expect("tags serialise"))
                .collect();
            let kinds: Vec<&str> = new.iter().map(|(_, e)| e.kind.as_str()).collect();
            let upsert = connection
                .prepare_cached(
                    "INSERT INTO dispatch_waiters (instance_id, waiter, runner_id, priority, tags, kind)
                     SELECT $1, w, r, p, ARRAY(SELECT jsonb_array_elements_text(t::jsonb)), k
                     FROM unnest($2::text[], $3::uuid[], $4::int[], $5::text[], $6::text[]) AS u(w, r, p, t, k)
                     ON CONFLICT (instance_id, waiter) DO UPDATE
                     SET runner_id = EXCLUDED.runner_id, priority = EXCLUDED.priority,
                         tags = EXCLUDED.tags, kind = EXCLUDED.kind",
                )
                .await?;
            connection
                .execute(&upsert, &[&instance, &keys, &runners, &priorities, &tags, &kinds])
                .await?;
        }
        self.entries = now;
        Ok(())
    }
}

/// Machines waiting on other live instances whose runner may take work.
pub async fn elsewhere(db: &Database, instance: Uuid) -> Result<Vec<Entry>, DbError> {
    let connection = db.get().await?;
    let select = connection
        .prepare_cached(
            "SELECT w.runner_id, w.priority, w.tags, w.kind, r.scope_id FROM dispatch_waiters w
             JOIN instances i ON i.id = w.instance_id AND i.last_seen_at > now() - $2::text::interval
             JOIN runners r ON r.id = w.runner_id AND r.status = 'active' AND NOT r.paused
             WHERE w.instance_id <> $1",
        )
        .await?;
    let within = format!("{} seconds", ALIVE_WITHIN.as_secs());
    Ok(connection
        .query(&select, &[&instance, &within])
        .await?
        .iter()
        .filter_map(|row| {
            Some(Entry {
                runner_id: row.get(0),
                priority: row.get(1),
                tags: row.get(2),
                kind: match row.get::<_, &str>(3) {
                    "native" => JobKind::Native,
                    "project_w" => JobKind::ProjectW,
                    _ => return None,
                },
                scope_id: row.get(4),
            })
        })
        .collect())
}

/// Removes everything `instance` published (a clean stop).
pub async fn leave(db: &Database, instance: Uuid) -> Result<(), DbError> {
    db.get()
        .await?
        .execute("DELETE FROM dispatch_waiters WHERE instance_id = $1", &[&instance])
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_takes_jobs_whose_tags_it_has_and_of_its_kind_only() {
        let entry = Entry {
            runner_id: Uuid::nil(),
            priority: 0,
            tags: vec!["gpu".into(), "linux".into()],
            kind: JobKind::Native,
            scope_id: None,
        };
        assert!(entry.can_take(&[], JobKind::Native, &[]));
        assert!(entry.can_take(&["gpu".into()], JobKind::Native, &[]));
        assert!(!entry.can_take(&["gpu".into(), "arm".into()], JobKind::Native, &[]));
        assert!(!entry.can_take(&[], JobKind::ProjectW, &[]));
    }

    #[test]
    fn a_scoped_machine_takes_jobs_of_its_scope_and_below_only() {
        let (group, project) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let entry = Entry {
            runner_id: Uuid::nil(),
            priority: 0,
            tags: vec![],
            kind: JobKind::Native,
            scope_id: Some(group),
        };
        assert!(
            entry.can_take(&[], JobKind::Native, &[project, group]),
            "a project below"
        );
        assert!(entry.can_take(&[], JobKind::Native, &[group]));
        assert!(!entry.can_take(&[], JobKind::Native, &[]), "an instance job");
        assert!(
            !entry.can_take(&[], JobKind::Native, &[Uuid::from_u128(3)]),
            "another scope"
        );
    }
}

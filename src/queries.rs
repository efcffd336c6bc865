//! Admin read-model queries: users, runners, runner machines and jobs with
//! filters and keyset (cursor) pagination, newest first, plus the counts of
//! a dashboard. Everything reads the projections, never the log.
//!
//! Every list is ordered by `(time, id) DESC` and a page's cursor is the
//! last row's key, so pages stay stable while rows are added (new rows sort
//! before the cursor and do not shift later pages). Only the filters given
//! are put in the SQL, so each query can use the index made for it
//! (migrations V5, V6).

use std::collections::BTreeMap;
use utoipa::ToSchema;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

pub use crate::api::{Page, RunnerView};
use crate::fleet::jobs::{job_view, JobView, JOB_COLUMNS};
use crate::fleet::machines::MachineView;
use crate::fleet::Fleet;
use crate::log::event_store::StoreError;

pub const MAX_PAGE: i64 = 1000;

/// Where the next page starts: the sort key of the last row sent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PageCursor {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

/// What a cursor looks like ([`PageCursor::CURSOR_PATTERN`]): every value
/// of this shape decodes, so the API can declare it exactly.
impl PageCursor {
    pub const CURSOR_PATTERN: &'static str = "^[0-9]{1,16}_[0-9a-f]{32}$";

    /// Opaque to clients: `<microseconds since 1970>_<id as 32 hex digits>`.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.at.timestamp_micros(), self.id.simple())
    }

    pub fn decode(text: &str) -> Option<PageCursor> {
        let (micros, id) = text.split_once('_')?;
        let valid = (1..=16).contains(&micros.len())
            && micros.bytes().all(|b| b.is_ascii_digit())
            && id.len() == 32
            && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return None;
        }
        Some(PageCursor {
            at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            id: Uuid::parse_str(id).ok()?,
        })
    }
}

/// A `SELECT` whose `WHERE` gets only the filters that were given.
struct Select {
    conditions: Vec<String>,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Select {
    fn new() -> Self {
        Select {
            conditions: Vec::new(),
            params: Vec::new(),
        }
    }

    /// Adds `condition` with `$` standing for `value`'s placeholder.
    fn filter(&mut self, condition: &str, value: impl ToSql + Sync + Send + 'static) {
        self.params.push(Box::new(value));
        self.conditions
            .push(condition.replace('$', &format!("${}", self.params.len())));
    }

    fn filter_opt<T: ToSql + Sync + Send + 'static>(&mut self, condition: &str, value: Option<T>) {
        if let Some(value) = value {
            self.filter(condition, value);
        }
    }

    /// Keyset pagination on `(time_column, id_column) DESC`.
    fn page(&mut self, time_column: &str, id_column: &str, cursor: Option<PageCursor>, limit: i64) -> String {
        if let Some(cursor) = cursor {
            self.params.push(Box::new(cursor.at));
            self.params.push(Box::new(cursor.id));
            let n = self.params.len();
            self.conditions
                .push(format!("({time_column}, {id_column}) < (${}, ${n})", n - 1));
        }
        // One row more than asked says whether there is a next page.
        self.params.push(Box::new(limit + 1));
        format!(
            "{} ORDER BY {time_column} DESC, {id_column} DESC LIMIT ${}",
            self.where_clause(),
            self.params.len()
        )
    }

    fn where_clause(&self) -> String {
        if self.conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.conditions.join(" AND "))
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
    }
}

fn into_page<T>(mut items: Vec<T>, limit: i64, key: impl Fn(&T) -> PageCursor) -> Page<T> {
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = if more {
        items.last().map(|item| key(item).encode())
    } else {
        None
    };
    Page { items, next_cursor }
}

#[derive(Debug, Default)]
pub struct UserFilter {
    pub provider: Option<String>,
    pub role: Option<String>,
    /// Deleted users (tombstones) are left out unless asked for.
    pub include_deleted: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserSummary {
    pub id: Uuid,
    pub provider: String,
    /// `None` once the user is deleted (the personal data is shredded).
    pub email: Option<String>,
    pub role: String,
    pub origin: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

pub async fn users<C: GenericClient>(
    client: &C,
    filter: UserFilter,
    cursor: Option<PageCursor>,
    limit: i64,
) -> Result<Page<UserSummary>, StoreError> {
    let mut select = Select::new();
    select.filter_opt("provider = $", filter.provider);
    select.filter_opt("role = $", filter.role);
    if !filter.include_deleted {
        select.conditions.push("deleted_at IS NULL".to_owned());
    }
    let tail = select.page("created_at", "id", cursor, limit);
    let sql = format!("SELECT id, provider, email, role, origin, created_at, updated_at, deleted_at FROM users {tail}");
    let rows = client.query(&sql, &select.params()).await?;
    let users = rows
        .iter()
        .map(|row| UserSummary {
            id: row.get(0),
            provider: row.get(1),
            email: row.get(2),
            role: row.get(3),
            origin: row.get(4),
            created_at: row.get(5),
            updated_at: row.get(6),
            deleted_at: row.get(7),
        })
        .collect();
    Ok(into_page(users, limit, |u: &UserSummary| PageCursor {
        at: u.created_at,
        id: u.id,
    }))
}

#[derive(Debug, Default)]
pub struct RunnerFilter {
    /// Just this runner.
    pub id: Option<Uuid>,
    pub status: Option<String>,
    pub paused: Option<bool>,
    /// Runners that have this tag.
    pub tag: Option<String>,
    /// Runners with a machine whose recorded contact is at or after this.
    pub contacted_since: Option<DateTime<Utc>>,
    /// Runners with no machine recorded in contact since this (stale or
    /// never used).
    pub not_contacted_since: Option<DateTime<Utc>>,
    /// Runners of this group or project and of every scope below it.
    pub scope_and_below: Option<Uuid>,
}

/// Latest recorded contact of any (not pruned) machine of runner `r`.
const LAST_CONTACT: &str =
    "(SELECT max(m.contacted_at) FROM runner_machines m WHERE m.runner_id = r.id AND m.pruned_at IS NULL)";

pub async fn runners<C: GenericClient>(
    fleet: &Fleet,
    connection: &C,
    filter: RunnerFilter,
    cursor: Option<PageCursor>,
    limit: i64,
) -> Result<Page<RunnerView>, StoreError> {
    let mut select = Select::new();
    select.filter_opt("r.id = $", filter.id);
    select.filter_opt("r.status = $", filter.status);
    select.filter_opt("r.paused = $", filter.paused);
    select.filter_opt("r.tags @> ARRAY[$::text]", filter.tag);
    select.filter_opt(&format!("{LAST_CONTACT} >= $"), filter.contacted_since);
    select.filter_opt(
        &format!("coalesce({LAST_CONTACT} < $, true)"),
        filter.not_contacted_since,
    );
    select.filter_opt("r.scope_id = ANY(scope_and_below($))", filter.scope_and_below);
    let tail = select.page("r.created_at", "r.id", cursor, limit);
    let sql = format!(
        "SELECT r.id, r.status, r.description, r.tags, r.priority, r.paused, r.created_by, r.created_at,
                r.invalidated_at, r.number, r.scope_id
         FROM runners r {tail}"
    );
    let rows = connection.query(&sql, &select.params()).await?;
    let ids: Vec<Uuid> = rows.iter().map(|row| row.get(0)).collect();
    let mut machines = machines_of(fleet, connection, &ids).await?;
    let runners = rows
        .iter()
        .map(|row| {
            let id: Uuid = row.get(0);
            let machines = machines.remove(&id).unwrap_or_default();
            RunnerView {
                id,
                number: row.get(9),
                status: row.get(1),
                description: row.get(2),
                tags: row.get(3),
                priority: row.get(4),
                paused: row.get(5),
                created_by: row.get(6),
                created_at: row.get(7),
                invalidated_at: row.get(8),
                last_contact_at: machines.iter().map(|m| m.contacted_at).max(),
                machines,
                scope_id: row.get(10),
            }
        })
        .collect();
    Ok(into_page(runners, limit, |r: &RunnerView| PageCursor {
        at: r.created_at,
        id: r.id,
    }))
}

/// One runner with its machines, from the primary.
pub async fn runner(fleet: &Fleet, id: Uuid) -> Result<Option<RunnerView>, StoreError> {
    let filter = RunnerFilter {
        id: Some(id),
        ..RunnerFilter::default()
    };
    let connection = fleet.db.get().await?;
    Ok(runners(fleet, &connection, filter, None, 1).await?.items.pop())
}

async fn machines_of<C: GenericClient>(
    fleet: &Fleet,
    client: &C,
    runner_ids: &[Uuid],
) -> Result<BTreeMap<Uuid, Vec<MachineView>>, StoreError> {
    let rows = client
        .query(
            &format!(
                "SELECT {} FROM runner_machines WHERE pruned_at IS NULL AND runner_id = ANY($1)
                 ORDER BY registered_at, id",
                crate::fleet::machines::MACHINE_COLUMNS
            ),
            &[&runner_ids],
        )
        .await?;
    let mut by_runner: BTreeMap<Uuid, Vec<MachineView>> = BTreeMap::new();
    for row in &rows {
        let view = crate::fleet::machines::machine_view(&fleet.presence, row);
        by_runner.entry(view.runner_id).or_default().push(view);
    }
    Ok(by_runner)
}

#[derive(Debug, Default)]
pub struct MachineFilter {
    pub runner_id: Option<Uuid>,
    pub contacted_since: Option<DateTime<Utc>>,
    pub not_contacted_since: Option<DateTime<Utc>>,
}

/// Runner machines (not pruned), newest registration first.
pub async fn machines<C: GenericClient>(
    fleet: &Fleet,
    connection: &C,
    filter: MachineFilter,
    cursor: Option<PageCursor>,
    limit: i64,
) -> Result<Page<MachineView>, StoreError> {
    let mut select = Select::new();
    select.conditions.push("pruned_at IS NULL".to_owned());
    select.filter_opt("runner_id = $", filter.runner_id);
    select.filter_opt("contacted_at >= $", filter.contacted_since);
    select.filter_opt("contacted_at < $", filter.not_contacted_since);
    let tail = select.page("registered_at", "id", cursor, limit);
    let sql = format!(
        "SELECT {} FROM runner_machines {tail}",
        crate::fleet::machines::MACHINE_COLUMNS
    );
    let rows = connection.query(&sql, &select.params()).await?;
    let machines = rows
        .iter()
        .map(|row| crate::fleet::machines::machine_view(&fleet.presence, row))
        .collect();
    Ok(into_page(machines, limit, |m: &MachineView| PageCursor {
        at: m.registered_at,
        id: m.id,
    }))
}

#[derive(Debug, Default)]
pub struct JobFilter {
    pub status: Option<String>,
    pub runner_id: Option<Uuid>,
    pub submitted_by: Option<Uuid>,
    /// Jobs of this group or project and of every scope below it.
    pub scope_and_below: Option<Uuid>,
}

/// Jobs, newest submission first.
pub async fn jobs<C: GenericClient>(
    client: &C,
    filter: JobFilter,
    cursor: Option<PageCursor>,
    limit: i64,
) -> Result<Page<JobView>, StoreError> {
    let mut select = Select::new();
    select.filter_opt("status = $", filter.status);
    select.filter_opt("runner_id = $", filter.runner_id);
    select.filter_opt("submitted_by = $", filter.submitted_by);
    select.filter_opt("scope_id = ANY(scope_and_below($))", filter.scope_and_below);
    let tail = select.page("submitted_at", "id", cursor, limit);
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs {tail}");
    let rows = client.query(&sql, &select.params()).await?;
    let jobs = rows.iter().map(job_view).collect();
    Ok(into_page(jobs, limit, |j: &JobView| PageCursor {
        at: j.submitted_at,
        id: j.id,
    }))
}

/// Counts for an admin dashboard, all from the read models.
#[derive(Debug, Serialize, ToSchema)]
pub struct Dashboard {
    /// provider -> role -> users (deleted ones left out).
    pub users: BTreeMap<String, BTreeMap<String, i64>>,
    /// status -> runners; paused active runners are also under `paused`.
    pub runners: BTreeMap<String, i64>,
    pub machines: MachineCounts,
    /// status -> jobs.
    pub jobs: BTreeMap<String, i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MachineCounts {
    pub total: i64,
    /// Machines whose recorded contact is within `active_within`.
    pub active: i64,
    pub active_within_seconds: i64,
}

pub async fn dashboard<C: GenericClient>(client: &C, active_within: chrono::Duration) -> Result<Dashboard, StoreError> {
    let mut users: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for row in client
        .query(
            "SELECT provider, role, count(*) FROM users WHERE deleted_at IS NULL GROUP BY provider, role",
            &[],
        )
        .await?
    {
        users.entry(row.get(0)).or_default().insert(row.get(1), row.get(2));
    }
    let mut runners = BTreeMap::new();
    for row in client
        .query(
            "SELECT status, count(*) FROM runners GROUP BY status
             UNION ALL SELECT 'paused', count(*) FROM runners WHERE status = 'active' AND paused",
            &[],
        )
        .await?
    {
        runners.insert(row.get::<_, String>(0), row.get::<_, i64>(1));
    }
    let since = Utc::now() - active_within;
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE contacted_at >= $1)
             FROM runner_machines WHERE pruned_at IS NULL",
            &[&since],
        )
        .await?;
    let machines = MachineCounts {
        total: row.get(0),
        active: row.get(1),
        active_within_seconds: active_within.num_seconds(),
    };
    let mut jobs = BTreeMap::new();
    for row in client
        .query("SELECT status, count(*) FROM jobs GROUP BY status", &[])
        .await?
    {
        jobs.insert(row.get::<_, String>(0), row.get::<_, i64>(1));
    }
    Ok(Dashboard {
        users,
        runners,
        machines,
        jobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = PageCursor {
            at: DateTime::parse_from_rfc3339("2026-11-22T10:00:00.123456Z")
                .unwrap()
                .with_timezone(&Utc),
            id: Uuid::now_v7(),
        };
        assert_eq!(PageCursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(PageCursor::decode("not a cursor"), None);
        for garbage in [
            "",
            "_",
            "12_",
            "1_0194",
            "12345678901234567_00000000000000000000000000000000",
            "1_0000000000000000000000000000000G",
        ] {
            assert_eq!(PageCursor::decode(garbage), None, "{garbage:?}");
        }
        // Every value of the declared shape decodes.
        assert!(PageCursor::decode("9999999999999999_ffffffffffffffffffffffffffffffff").is_some());
        assert!(PageCursor::decode("0_00000000000000000000000000000000").is_some());
    }

    #[test]
    fn filters_number_their_placeholders() {
        let mut select = Select::new();
        select.filter_opt("status = $", Some("queued".to_owned()));
        select.filter_opt::<Uuid>("runner_id = $", None);
        select.filter("submitted_by = $", Uuid::nil());
        let tail = select.page("submitted_at", "id", None, 10);
        assert_eq!(
            tail,
            "WHERE status = $1 AND submitted_by = $2 ORDER BY submitted_at DESC, id DESC LIMIT $3"
        );
        assert_eq!(select.params().len(), 3);
    }
}

/// Per minute over the last `minutes` minutes (oldest first), counted from
/// the event log (its `recorded_at` BRIN index makes the range cheap): jobs
/// submitted, assigned and finished, the queue's depth at the end of each
/// minute (worked back from today's depth through the queue's arrivals,
/// submissions and requeues, and departures, assignments and
/// cancellations), and the machines heard from within `contact_window`
/// before each minute's end (a machine's contact is logged at least every
/// `runners.contact_record_interval` while it talks to warden, so with that
/// window this counts the machines online).
#[derive(Debug, Serialize, ToSchema)]
pub struct Activity {
    /// The start of each minute.
    pub minutes: Vec<DateTime<Utc>>,
    pub submitted: Vec<i64>,
    pub assigned: Vec<i64>,
    pub finished: Vec<i64>,
    pub queued: Vec<i64>,
    pub machines_online: Vec<i64>,
}

pub async fn activity<C: GenericClient>(
    client: &C,
    minutes: i64,
    contact_window: std::time::Duration,
) -> Result<Activity, StoreError> {
    let rows = client
        .query(
            "WITH span AS (SELECT date_trunc('minute', now()) - ($1::bigint - 1) * interval '1 minute' AS since),
             counted AS (
                 SELECT date_trunc('minute', recorded_at) AS minute,
                        count(*) FILTER (WHERE event_type = 'JobSubmitted') AS submitted,
                        count(*) FILTER (WHERE event_type = 'JobAssigned') AS assigned,
                        count(*) FILTER (WHERE event_type = 'JobFinished') AS finished,
                        count(*) FILTER (WHERE event_type = 'JobRequeued') AS requeued,
                        count(*) FILTER (WHERE event_type = 'JobCancelled') AS cancelled
                 FROM events, span
                 WHERE recorded_at >= span.since
                   AND event_type IN ('JobSubmitted', 'JobAssigned', 'JobFinished', 'JobRequeued', 'JobCancelled')
                 GROUP BY 1
             )
             SELECT m, coalesce(c.submitted, 0), coalesce(c.assigned, 0), coalesce(c.finished, 0),
                    coalesce(c.submitted + c.requeued - c.assigned - c.cancelled, 0)
             FROM span, generate_series(span.since, date_trunc('minute', now()), interval '1 minute') AS m
             LEFT JOIN counted c ON c.minute = m
             ORDER BY m",
            &[&minutes],
        )
        .await?;
    let queued_now: i64 = client
        .query_one("SELECT count(*) FROM jobs WHERE status = 'queued'", &[])
        .await?
        .get(0);
    let mut activity = Activity {
        minutes: Vec::with_capacity(rows.len()),
        submitted: Vec::with_capacity(rows.len()),
        assigned: Vec::with_capacity(rows.len()),
        finished: Vec::with_capacity(rows.len()),
        queued: vec![0; rows.len()],
        machines_online: Vec::with_capacity(rows.len()),
    };
    let window = format!("{} seconds", contact_window.as_secs().max(60));
    let online = client
        .query(
            "WITH span AS (SELECT date_trunc('minute', now()) - ($1::bigint - 1) * interval '1 minute' AS since),
             contacts AS MATERIALIZED (
                 SELECT DISTINCT date_trunc('minute', recorded_at) AS minute, stream_id
                 FROM events, span
                 WHERE recorded_at >= span.since - $2::text::interval
                   AND event_type IN ('RunnerMachineRegistered', 'RunnerMachineContacted')
             )
             SELECT (SELECT count(DISTINCT stream_id) FROM contacts
                     WHERE contacts.minute > m - $2::text::interval AND contacts.minute <= m)
             FROM span, generate_series(span.since, date_trunc('minute', now()), interval '1 minute') AS m
             ORDER BY m",
            &[&minutes, &window],
        )
        .await?;
    activity.machines_online = online.iter().map(|row| row.get(0)).collect();
    for row in &rows {
        activity.minutes.push(row.get(0));
        activity.submitted.push(row.get(1));
        activity.assigned.push(row.get(2));
        activity.finished.push(row.get(3));
    }
    // Back from now: the depth at the end of a minute is the next
    // minute's end minus what that minute added.
    let mut depth = queued_now;
    for (index, row) in rows.iter().enumerate().rev() {
        activity.queued[index] = depth.max(0);
        depth -= row.get::<_, i64>(4);
    }
    Ok(activity)
}

//! What an event does to a read model, as data.
//!
//! A projector is a pure function from an event to the [`Change`]s it makes
//! to rows of the event's own stream. Two interpreters carry them out, so
//! the projectors' logic exists once:
//! - [`apply_changes`]: SQL statements, version-guarded and idempotent, on
//!   the live tables (inline in the append's transaction and in the
//!   projectors that follow the log) and on a rebuild's tables while it
//!   catches up;
//! - [`crate::fold::StreamFold`]: the same changes on rows in memory, which
//!   a rebuild folds stream by stream and writes with `COPY`.
//!
//! Every read-model table has the primary key `id` and a `version` column
//! holding the stream version of the last event that changed the row.

use std::error::Error;

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};
use uuid::Uuid;

use deadpool_postgres::GenericClient;

use crate::ProjectionError;

/// The value of one read-model column.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i32),
    BigInt(i64),
    Float(f64),
    Text(String),
    Texts(Vec<String>),
    Uuid(Uuid),
    Time(DateTime<Utc>),
    Json(serde_json::Value),
}

/// How an [`Change::Update`] sets a column; every right-hand side sees the
/// row as it was before the update, as in SQL.
#[derive(Clone, Debug, PartialEq)]
pub enum Assign {
    To(Value),
    /// The value of another column (`SET a = b`).
    CopyOf(&'static str),
    /// One more than before (`SET a = a + 1`).
    Increment,
    /// The value unless the column already has one (`SET a = coalesce(a, v)`).
    IfNull(Value),
}

/// What to do when an inserted row's `id` exists already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnConflict {
    /// Keep the existing row (a redelivered creation changes nothing).
    Keep,
    /// Overwrite the given columns if the existing row's version is older.
    ReplaceOlder,
}

/// One change to a read model.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A new row; columns not given take their defaults.
    Insert {
        table: &'static str,
        row: Vec<(&'static str, Value)>,
        on_conflict: OnConflict,
    },
    /// The rows whose `key.0` column equals `key.1` and whose version is
    /// older than `version`: `set`, and the version becomes `version`.
    Update {
        table: &'static str,
        key: (&'static str, Uuid),
        version: i64,
        set: Vec<(&'static str, Assign)>,
    },
    /// Wait for this transaction-level advisory lock first. It orders the
    /// change against concurrent transactions on the live tables; a fold
    /// in memory has none and ignores it.
    Lock(i64),
}

/// Carries out `changes` on `client` (a transaction), in order, through
/// the connection's statement cache: sent all at once, one round trip.
pub async fn apply_changes<C: GenericClient>(client: &C, changes: &[Change]) -> Result<(), ProjectionError> {
    let prepared = prepare_changes(client, changes).await?;
    execute_prepared(client, &prepared).await
}

/// One change as a prepared statement and its parameters, ready to send.
pub struct PreparedChange<'a> {
    statement: tokio_postgres::Statement,
    params: Vec<Param<'a>>,
}

/// Prepares `changes` through the connection's statement cache: a round
/// trip only for a statement this connection has not prepared before.
pub async fn prepare_changes<'a, C: GenericClient>(
    client: &C,
    changes: &'a [Change],
) -> Result<Vec<PreparedChange<'a>>, ProjectionError> {
    let mut prepared = Vec::with_capacity(changes.len());
    for change in changes {
        let (sql, params) = statement(change);
        let statement = client.prepare_cached(&sql).await?;
        prepared.push(PreparedChange { statement, params });
    }
    Ok(prepared)
}

/// Executes `prepared` in order and waits for every result. The first
/// poll of the returned future sends every statement (pipelined), so a
/// caller may queue more statements (such as COMMIT) right behind them
/// once it has polled this once; a statement that fails to encode fails
/// on that first poll.
pub async fn execute_prepared<C: GenericClient>(
    client: &C,
    prepared: &[PreparedChange<'_>],
) -> Result<(), ProjectionError> {
    futures_util::future::try_join_all(
        prepared
            .iter()
            .map(|change| client.execute(&change.statement, &change.params)),
    )
    .await?;
    Ok(())
}

type Param<'a> = &'a (dyn ToSql + Sync);

/// The SQL statement of `change` and its parameters.
fn statement(change: &Change) -> (String, Vec<Param<'_>>) {
    match change {
        Change::Insert {
            table,
            row,
            on_conflict,
        } => {
            let columns: Vec<&str> = row.iter().map(|(column, _)| *column).collect();
            let placeholders: Vec<String> = (1..=row.len()).map(|n| format!("${n}")).collect();
            let conflict = match on_conflict {
                OnConflict::Keep => "DO NOTHING".to_owned(),
                OnConflict::ReplaceOlder => {
                    let set: Vec<String> = columns
                        .iter()
                        .filter(|column| **column != "id")
                        .map(|column| format!("{column} = EXCLUDED.{column}"))
                        .collect();
                    format!(
                        "DO UPDATE SET {} WHERE {table}.version < EXCLUDED.version",
                        set.join(", ")
                    )
                }
            };
            let sql = format!(
                "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT (id) {conflict}",
                columns.join(", "),
                placeholders.join(", ")
            );
            (sql, row.iter().map(|(_, value)| value as Param).collect())
        }
        Change::Update {
            table,
            key: (key_column, key),
            version,
            set,
        } => {
            let mut params: Vec<Param> = vec![key, version];
            let mut assignments = Vec::new();
            for (column, assign) in set {
                let expression = match assign {
                    Assign::To(value) => {
                        params.push(value);
                        format!("${}", params.len())
                    }
                    Assign::CopyOf(other) => (*other).to_owned(),
                    Assign::Increment => format!("{column} + 1"),
                    Assign::IfNull(value) => {
                        params.push(value);
                        format!("coalesce({column}, ${})", params.len())
                    }
                };
                assignments.push(format!("{column} = {expression}"));
            }
            assignments.push("version = $2".to_owned());
            let sql = format!(
                "UPDATE {table} SET {} WHERE {key_column} = $1 AND version < $2",
                assignments.join(", ")
            );
            (sql, params)
        }
        Change::Lock(key) => ("SELECT pg_advisory_xact_lock($1)".to_owned(), vec![key as Param]),
    }
}

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        self.to_sql_checked(ty, out)
    }

    /// Each variant is checked against the column's type by its own
    /// `ToSql`: a projector giving the wrong type is an error in SQL and in
    /// `COPY` alike.
    fn accepts(_: &Type) -> bool {
        true
    }

    fn to_sql_checked(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Bool(v) => v.to_sql_checked(ty, out),
            Value::Int(v) => v.to_sql_checked(ty, out),
            Value::BigInt(v) => v.to_sql_checked(ty, out),
            Value::Float(v) => v.to_sql_checked(ty, out),
            Value::Text(v) => v.to_sql_checked(ty, out),
            Value::Texts(v) => v.to_sql_checked(ty, out),
            Value::Uuid(v) => v.to_sql_checked(ty, out),
            Value::Time(v) => v.to_sql_checked(ty, out),
            Value::Json(v) => v.to_sql_checked(ty, out),
        }
    }
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(match *ty {
            Type::BOOL => Value::Bool(bool::from_sql(ty, raw)?),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?),
            Type::INT8 => Value::BigInt(i64::from_sql(ty, raw)?),
            Type::FLOAT8 => Value::Float(f64::from_sql(ty, raw)?),
            Type::TEXT | Type::VARCHAR => Value::Text(String::from_sql(ty, raw)?),
            Type::TEXT_ARRAY => Value::Texts(Vec::<String>::from_sql(ty, raw)?),
            Type::UUID => Value::Uuid(Uuid::from_sql(ty, raw)?),
            Type::TIMESTAMPTZ => Value::Time(DateTime::<Utc>::from_sql(ty, raw)?),
            Type::JSON | Type::JSONB => Value::Json(serde_json::Value::from_sql(ty, raw)?),
            _ => return Err(format!("read-model columns of type {ty} are not supported").into()),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(Value::Null)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::BOOL
                | Type::INT4
                | Type::INT8
                | Type::FLOAT8
                | Type::TEXT
                | Type::VARCHAR
                | Type::TEXT_ARRAY
                | Type::UUID
                | Type::TIMESTAMPTZ
                | Type::JSON
                | Type::JSONB
        )
    }
}

macro_rules! value_from {
    ($($ty:ty => $variant:ident),* $(,)?) => {
        $(impl From<$ty> for Value {
            fn from(value: $ty) -> Value {
                Value::$variant(value.into())
            }
        })*
    };
}

value_from! {
    bool => Bool,
    i32 => Int,
    i64 => BigInt,
    f64 => Float,
    String => Text,
    &str => Text,
    Vec<String> => Texts,
    Uuid => Uuid,
    DateTime<Utc> => Time,
    serde_json::Value => Json,
}

impl From<&String> for Value {
    fn from(value: &String) -> Value {
        Value::Text(value.clone())
    }
}

impl From<&Vec<String>> for Value {
    fn from(value: &Vec<String>) -> Value {
        Value::Texts(value.clone())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Value {
        value.map_or(Value::Null, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_and_inserts_become_version_guarded_statements() {
        let key = Uuid::now_v7();
        let update = Change::Update {
            table: "things",
            key: ("owner", key),
            version: 4,
            set: vec![
                ("name", Assign::To("x".into())),
                ("old_name", Assign::CopyOf("name")),
                ("count", Assign::Increment),
                ("gone_at", Assign::IfNull(Value::BigInt(7))),
            ],
        };
        let (sql, params) = statement(&update);
        assert_eq!(
            sql,
            "UPDATE things SET name = $3, old_name = name, count = count + 1, gone_at = coalesce(gone_at, $4), \
             version = $2 WHERE owner = $1 AND version < $2"
        );
        assert_eq!(params.len(), 4);

        let insert = Change::Insert {
            table: "things",
            row: vec![("id", key.into()), ("name", "x".into()), ("version", 1i64.into())],
            on_conflict: OnConflict::ReplaceOlder,
        };
        let (sql, params) = statement(&insert);
        assert_eq!(
            sql,
            "INSERT INTO things (id, name, version) VALUES ($1, $2, $3) ON CONFLICT (id) \
             DO UPDATE SET name = EXCLUDED.name, version = EXCLUDED.version WHERE things.version < EXCLUDED.version"
        );
        assert_eq!(params.len(), 3);
        let (sql, _) = statement(&Change::Insert {
            table: "things",
            row: vec![("id", key.into())],
            on_conflict: OnConflict::Keep,
        });
        assert!(sql.ends_with("ON CONFLICT (id) DO NOTHING"), "{sql}");
    }
}

//! The projectors' changes carried out on rows in memory: how a rebuild
//! folds the log without a statement per event.
//!
//! A projector changes only rows of the event's own stream, so a stream's
//! events fold into that stream's final rows on their own: a rebuild reads
//! the log stream by stream, folds each stream here and writes the rows
//! with `COPY` ([`StreamFold::finish`] hands them over).

use crate::change::{Assign, Change, OnConflict, Value};

/// A read-model table as the fold needs it: its columns in table order
/// and their defaults (`Value::Null` where there is none).
#[derive(Clone, Debug)]
pub struct TableShape {
    pub name: String,
    pub columns: Vec<String>,
    pub defaults: Vec<Value>,
}

impl TableShape {
    fn column(&self, name: &str) -> Result<usize, FoldError> {
        self.columns
            .iter()
            .position(|column| column == name)
            .ok_or_else(|| FoldError::UnknownColumn {
                table: self.name.clone(),
                column: name.to_owned(),
            })
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FoldError {
    #[error("the fold has no read-model table `{0}`")]
    UnknownTable(String),
    #[error("read-model table `{table}` has no column `{column}`")]
    UnknownColumn { table: String, column: String },
    #[error("column `{table}.{column}` holds {value:?}, which the change cannot use")]
    BadValue {
        table: String,
        column: String,
        value: Value,
    },
}

/// The rows of one stream while its events are folded.
pub struct StreamFold<'a> {
    shapes: &'a [TableShape],
    /// (index into `shapes`, row in table column order).
    rows: Vec<(usize, Vec<Value>)>,
}

impl<'a> StreamFold<'a> {
    pub fn new(shapes: &'a [TableShape]) -> Self {
        StreamFold {
            shapes,
            rows: Vec::new(),
        }
    }

    /// Carries out `change` as the SQL interpreter would on the tables
    /// (taking it: its values move into the rows).
    pub fn apply(&mut self, change: Change) -> Result<(), FoldError> {
        match change {
            Change::Insert {
                table,
                row,
                on_conflict,
            } => self.insert(table, row, on_conflict),
            Change::Update {
                table,
                key,
                version,
                set,
            } => self.update(table, key, version, set),
            Change::Lock(_) => Ok(()),
        }
    }

    /// The stream's rows, each with the index of its table in the shapes;
    /// the fold is empty afterwards.
    pub fn finish(&mut self) -> std::vec::Drain<'_, (usize, Vec<Value>)> {
        self.rows.drain(..)
    }

    fn table(&self, name: &str) -> Result<usize, FoldError> {
        self.shapes
            .iter()
            .position(|shape| shape.name == name)
            .ok_or_else(|| FoldError::UnknownTable(name.to_owned()))
    }

    fn insert(&mut self, table: &str, given: Vec<(&str, Value)>, on_conflict: OnConflict) -> Result<(), FoldError> {
        let table = self.table(table)?;
        let shapes = self.shapes;
        let shape = &shapes[table];
        let id = shape.column("id")?;
        let version = shape.column("version")?;
        let mut assigned = Vec::with_capacity(given.len());
        for (column, value) in given {
            assigned.push((shape.column(column)?, value));
        }
        let Some(new_id) = assigned
            .iter()
            .find(|(column, _)| *column == id)
            .map(|(_, value)| value)
        else {
            return Err(FoldError::UnknownColumn {
                table: shape.name.clone(),
                column: "id (not given)".to_owned(),
            });
        };
        let existing = self.rows.iter_mut().find(|(t, row)| *t == table && &row[id] == new_id);
        match (existing, on_conflict) {
            (None, _) => {
                let mut row = shape.defaults.clone();
                for (column, value) in assigned {
                    row[column] = value;
                }
                self.rows.push((table, row));
            }
            (Some(_), OnConflict::Keep) => {}
            (Some((_, row)), OnConflict::ReplaceOlder) => {
                let new_version = assigned
                    .iter()
                    .find(|(column, _)| *column == version)
                    .map(|(_, value)| version_of(shape, value))
                    .transpose()?;
                if let Some(new_version) = new_version {
                    if version_of(shape, &row[version])? < new_version {
                        for (column, value) in assigned {
                            row[column] = value;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn update(
        &mut self,
        table: &str,
        (key_column, key): (&str, uuid::Uuid),
        new_version: i64,
        set: Vec<(&str, Assign)>,
    ) -> Result<(), FoldError> {
        let table = self.table(table)?;
        let shapes = self.shapes;
        let shape = &shapes[table];
        let key_column = shape.column(key_column)?;
        let version = shape.column("version")?;
        let mut assignments = Vec::with_capacity(set.len());
        for (column, assign) in set {
            let source = match &assign {
                Assign::CopyOf(other) => Some(shape.column(other)?),
                _ => None,
            };
            assignments.push((shape.column(column)?, assign, source));
        }
        let key = Value::Uuid(key);
        for (t, row) in &mut self.rows {
            if *t != table || row[key_column] != key || version_of(shape, &row[version])? >= new_version {
                continue;
            }
            // Every right-hand side sees the row as it was: all are
            // computed before any is assigned (the row itself is not
            // copied: it may hold a large payload).
            let mut values = Vec::with_capacity(assignments.len());
            for (column, assign, source) in &assignments {
                values.push(match assign {
                    Assign::To(value) => value.clone(),
                    Assign::CopyOf(_) => row[source.expect("resolved above")].clone(),
                    Assign::Increment => match &row[*column] {
                        Value::Int(n) => Value::Int(n + 1),
                        Value::BigInt(n) => Value::BigInt(n + 1),
                        // NULL + 1 is NULL in SQL.
                        Value::Null => Value::Null,
                        other => return Err(bad_value(shape, *column, other)),
                    },
                    Assign::IfNull(value) => match &row[*column] {
                        Value::Null => value.clone(),
                        kept => kept.clone(),
                    },
                });
            }
            for ((column, _, _), value) in assignments.iter().zip(values) {
                row[*column] = value;
            }
            row[version] = Value::BigInt(new_version);
        }
        Ok(())
    }
}

fn version_of(shape: &TableShape, value: &Value) -> Result<i64, FoldError> {
    match value {
        Value::BigInt(version) => Ok(*version),
        other => Err(FoldError::BadValue {
            table: shape.name.clone(),
            column: "version".to_owned(),
            value: other.clone(),
        }),
    }
}

fn bad_value(shape: &TableShape, column: usize, value: &Value) -> FoldError {
    FoldError::BadValue {
        table: shape.name.clone(),
        column: shape.columns[column].clone(),
        value: value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn shapes() -> Vec<TableShape> {
        vec![TableShape {
            name: "things".into(),
            columns: ["id", "owner", "name", "old_name", "count", "gone_at", "version"]
                .map(String::from)
                .to_vec(),
            defaults: vec![
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Int(0),
                Value::Null,
                Value::Null,
            ],
        }]
    }

    fn insert(id: Uuid, owner: Uuid, name: &str, version: i64, on_conflict: OnConflict) -> Change {
        Change::Insert {
            table: "things",
            row: vec![
                ("id", id.into()),
                ("owner", owner.into()),
                ("name", name.into()),
                ("version", version.into()),
            ],
            on_conflict,
        }
    }

    #[test]
    fn inserts_take_defaults_and_keep_or_replace_as_sql_would() {
        let shapes = shapes();
        let mut fold = StreamFold::new(&shapes);
        let (id, owner) = (Uuid::now_v7(), Uuid::now_v7());
        fold.apply(insert(id, owner, "a", 1, OnConflict::Keep)).unwrap();
        fold.apply(insert(id, owner, "b", 2, OnConflict::Keep)).unwrap();
        fold.apply(insert(id, owner, "c", 1, OnConflict::ReplaceOlder)).unwrap();
        let rows: Vec<_> = fold.finish().collect();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].1[2],
            Value::from("a"),
            "kept, and not replaced by an equal version"
        );
        assert_eq!(rows[0].1[4], Value::Int(0), "default");

        fold.apply(insert(id, owner, "a", 1, OnConflict::Keep)).unwrap();
        fold.apply(insert(id, owner, "b", 2, OnConflict::ReplaceOlder)).unwrap();
        let rows: Vec<_> = fold.finish().collect();
        assert_eq!(rows[0].1[2], Value::from("b"));
        assert_eq!(rows[0].1[6], Value::BigInt(2));
    }

    #[test]
    fn updates_are_version_guarded_and_see_the_row_before() {
        let shapes = shapes();
        let mut fold = StreamFold::new(&shapes);
        let owner = Uuid::now_v7();
        let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
        fold.apply(insert(first, owner, "a", 1, OnConflict::Keep)).unwrap();
        fold.apply(insert(second, owner, "x", 2, OnConflict::Keep)).unwrap();
        let update = |version| Change::Update {
            table: "things",
            key: ("owner", owner),
            version,
            set: vec![
                ("name", Assign::To("renamed".into())),
                ("old_name", Assign::CopyOf("name")),
                ("count", Assign::Increment),
                ("gone_at", Assign::IfNull(Value::BigInt(7))),
            ],
        };
        fold.apply(update(2)).unwrap();
        fold.apply(update(2)).unwrap();
        let rows: Vec<_> = fold.finish().collect();
        // The first row (version 1) changed once; the second (version 2) not.
        assert_eq!(
            rows[0].1,
            vec![
                first.into(),
                owner.into(),
                "renamed".into(),
                "a".into(),
                Value::Int(1),
                Value::BigInt(7),
                Value::BigInt(2)
            ]
        );
        assert_eq!(rows[1].1[2], Value::from("x"));
        assert_eq!(rows[1].1[4], Value::Int(0));
    }

    #[test]
    fn unknown_tables_and_columns_are_errors() {
        let shapes = shapes();
        let mut fold = StreamFold::new(&shapes);
        let bad_table = Change::Update {
            table: "nope",
            key: ("id", Uuid::nil()),
            version: 1,
            set: vec![],
        };
        assert_eq!(fold.apply(bad_table), Err(FoldError::UnknownTable("nope".into())));
        let bad_column = Change::Insert {
            table: "things",
            row: vec![("id", Uuid::nil().into()), ("colour", "red".into())],
            on_conflict: OnConflict::Keep,
        };
        assert!(matches!(fold.apply(bad_column), Err(FoldError::UnknownColumn { .. })));
    }
}

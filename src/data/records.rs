//! The records of a dataset file, each with where it came from: the lines of a JSONL file,
//! the elements of a JSON array or the rows of a parquet file. Also the field accessors every reader uses, so that an
//! error always names the file, the line (or array index) and the field.

use std::fmt;
use std::path::Path;

use serde_json::{Map, Value};

use super::formats::{BadLines, ReadReport, Skipped};
use super::parquet_rows::{is_parquet, read_parquet_records};
use crate::{Error, Result};

/// Where a record sits in its file: a JSONL line (1-based, as editors count), the index
/// of a JSON array element (0-based, as `jq '.[3]'` counts) or a parquet row (0-based, as
/// pandas and `datasets` count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    Line(usize),
    Index(usize),
    Row(usize),
}

impl Location {
    /// `file:12` for a line, `file[3]` for an array element, `file row 3` for a row.
    pub fn in_file(&self, path: &Path) -> String {
        match self {
            Location::Line(line) => format!("{}:{line}", path.display()),
            Location::Index(index) => format!("{}[{index}]", path.display()),
            Location::Row(row) => format!("{} row {row}", path.display()),
        }
    }

    /// The line, index or row number.
    pub fn number(&self) -> usize {
        match self {
            Location::Line(n) | Location::Index(n) | Location::Row(n) => *n,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(line) => write!(f, "line {line}"),
            Location::Index(index) => write!(f, "record [{index}]"),
            Location::Row(row) => write!(f, "row {row}"),
        }
    }
}

/// What is wrong with one record: the field (or "(json)" for the record as a whole) and
/// what was expected.
#[derive(Debug)]
pub(super) struct FieldError {
    pub field: String,
    pub msg: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, msg: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            msg: msg.into(),
        }
    }

    pub fn at(self, path: &Path, location: Location) -> Error {
        Error::format(location.in_file(path), self.field, self.msg)
    }
}

/// A record as read: its JSON value, or why the line is not JSON.
pub(super) struct Record {
    pub location: Location,
    pub value: std::result::Result<Value, FieldError>,
}

/// Applies the bad-record policy to one bad record: an error under `Fail`, an entry in the
/// report under `Skip`.
pub(super) fn reject(
    path: &Path,
    location: Location,
    problem: FieldError,
    bad_lines: BadLines,
    report: &mut ReadReport,
) -> Result<()> {
    let error = problem.at(path, location);
    match bad_lines {
        BadLines::Fail => Err(error),
        BadLines::Skip => {
            report.skipped.push(Skipped {
                location,
                error: error.to_string(),
            });
            Ok(())
        }
    }
}

/// Every record of the file, in file order: the rows of a parquet file (see
/// [`parquet_rows`](super::parquet_rows)), the elements of a JSON array when the file
/// starts with `[`, otherwise one JSON value per non-blank line (a line that is not JSON
/// is a record whose value is the parse error). A JSON array that does not parse is
/// always fatal: there is no line to skip.
pub(super) fn read_records(path: &Path) -> Result<Vec<Record>> {
    if is_parquet(path) {
        return read_parquet_records(path);
    }
    let text = crate::io::read_text(path)?;
    if text.trim_start().starts_with('[') {
        return json_array_records(path, &text);
    }
    let parse = |line: &str| {
        serde_json::from_str(line)
            .map_err(|e| FieldError::new("(json)", format!("not valid JSON: {e}")))
    };
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| Record {
            location: Location::Line(index + 1),
            value: parse(line),
        })
        .collect())
}

fn json_array_records(path: &Path, text: &str) -> Result<Vec<Record>> {
    let values: Vec<Value> = serde_json::from_str(text)
        .map_err(|e| Error::format(path, "(json)", format!("not a valid JSON array: {e}")))?;
    Ok(values
        .into_iter()
        .enumerate()
        .map(|(index, value)| Record {
            location: Location::Index(index),
            value: Ok(value),
        })
        .collect())
}

/// Every record of a dataset file (JSONL, a JSON array or parquet) with its location; a
/// line that is not JSON is an error naming the file and the line.
pub fn read_values(path: &Path) -> Result<Vec<(Location, Value)>> {
    read_records(path)?
        .into_iter()
        .map(|record| match record.value {
            Ok(value) => Ok((record.location, value)),
            Err(problem) => Err(problem.at(path, record.location)),
        })
        .collect()
}

/// The first record of the file, for format detection.
pub(super) fn first_record(path: &Path) -> Result<Value> {
    let first = read_records(path)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::format(path, "(records)", "the file holds no records"))?;
    first
        .value
        .map_err(|problem| problem.at(path, first.location))
}

pub(super) fn object(value: &Value) -> std::result::Result<&Map<String, Value>, FieldError> {
    value.as_object().ok_or_else(|| {
        FieldError::new(
            "(json)",
            format!("expected a JSON object, got {}", kind(value)),
        )
    })
}

/// A required string field; blank strings are refused since they can teach nothing.
pub(super) fn text<'a>(
    obj: &'a Map<String, Value>,
    field: &str,
) -> std::result::Result<&'a str, FieldError> {
    let value = string(obj, field)?;
    if value.trim().is_empty() {
        return Err(FieldError::new(field, "is empty"));
    }
    Ok(value)
}

/// A required string field that may be empty.
pub(super) fn string<'a>(
    obj: &'a Map<String, Value>,
    field: &str,
) -> std::result::Result<&'a str, FieldError> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(wrong_kind(field, "a string", other)),
        None => Err(FieldError::new(field, "missing (expected a string)")),
    }
}

/// An optional string field: absent and null both mean "none".
pub(super) fn optional_string<'a>(
    obj: &'a Map<String, Value>,
    field: &str,
) -> std::result::Result<Option<&'a str>, FieldError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_kind(field, "a string or null", other)),
    }
}

pub(super) fn boolean(
    obj: &Map<String, Value>,
    field: &str,
) -> std::result::Result<bool, FieldError> {
    match obj.get(field) {
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(wrong_kind(field, "true or false", other)),
        None => Err(FieldError::new(field, "missing (expected true or false)")),
    }
}

pub(super) fn unsigned(
    obj: &Map<String, Value>,
    field: &str,
) -> std::result::Result<u64, FieldError> {
    match obj.get(field) {
        Some(value) => value
            .as_u64()
            .ok_or_else(|| wrong_kind(field, "a non-negative integer", value)),
        None => Err(FieldError::new(
            field,
            "missing (expected a non-negative integer)",
        )),
    }
}

/// An optional `id` field, a string or an integer, as text.
pub(super) fn optional_id(
    obj: &Map<String, Value>,
) -> std::result::Result<Option<String>, FieldError> {
    match obj.get("id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        Some(other) => Err(wrong_kind("id", "a string or an integer", other)),
    }
}

pub(super) fn wrong_kind(field: &str, expected: &str, got: &Value) -> FieldError {
    FieldError::new(field, format!("expected {expected}, got {}", kind(got)))
}

fn kind(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

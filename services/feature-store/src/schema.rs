//! The served FeatureSet's schema, and the typed values that follow it: how JSON columns become rows
//! (checked, with the row number of anything wrong) and how values are stored.

use crate::Error;
use mizzen_api::v1alpha1::common::DataFormat;
use mizzen_api::v1alpha1::feature_set::{FeatureSetSpec, KeyType, ValueType};
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// A source of the FeatureSet: a batch file, and the columns its rows (or rows pushed to it) carry.
#[derive(Clone, Debug)]
pub struct SourceInfo {
    pub uri: String,
    pub parquet: bool,
    pub timestamp: String,
    pub created: Option<String>,
}

/// One FeatureSet as the store serves it.
#[derive(Clone, Debug)]
pub struct Schema {
    /// The FeatureSet's name: Feast's feature view name (`NAME:feature`).
    pub name: String,
    pub join_key: String,
    pub key_type: KeyType,
    /// Feature names and types, in the spec's order.
    pub features: Vec<(String, ValueType)>,
    /// Values older than this (event time) are stale: `OUTSIDE_MAX_AGE` online, ignored by joins.
    pub ttl_micros: Option<i64>,
    /// The sources by name; each is also a push source.
    pub sources: BTreeMap<String, SourceInfo>,
}

impl Schema {
    pub fn new(name: &str, spec: &FeatureSetSpec) -> Result<Self, String> {
        let ttl_micros = spec.ttl.as_deref().map(parse_duration_micros).transpose()?;
        let mut features = Vec::new();
        for f in &spec.features {
            if features.iter().any(|(n, _)| n == &f.name) {
                return Err(format!("feature {:?} is declared twice", f.name));
            }
            features.push((f.name.clone(), f.value_type));
        }
        let sources = spec
            .sources
            .iter()
            .map(|s| {
                let info = SourceInfo {
                    uri: s.uri.0.clone(),
                    parquet: match s.format {
                        Some(f) => f == DataFormat::Parquet,
                        None => s.uri.0.ends_with(".parquet") || s.uri.0.ends_with(".pq"),
                    },
                    timestamp: s.timestamp_column.clone(),
                    created: s.created_timestamp_column.clone(),
                };
                (s.name.clone(), info)
            })
            .collect();
        Ok(Self {
            name: name.to_string(),
            join_key: spec.entity.join_key.clone(),
            key_type: spec.entity.key_type,
            features,
            ttl_micros,
            sources,
        })
    }

    /// The index of feature `name`.
    pub fn feature(&self, name: &str) -> Option<usize> {
        self.features.iter().position(|(n, _)| n == name)
    }

    /// An entity key from JSON, as its type asks.
    pub fn key(&self, v: &Json) -> Result<Key, String> {
        match (self.key_type, v) {
            (KeyType::String, Json::String(s)) if !s.is_empty() && s.len() <= 1024 => Ok(Key::Str(s.clone())),
            (KeyType::Int64, Json::Number(n)) if n.is_i64() => Ok(Key::Int(n.as_i64().unwrap_or_default())),
            (KeyType::Int64, Json::String(s)) => {
                s.parse().map(Key::Int).map_err(|_| format!("{s:?} is not an int64 {}", self.join_key))
            }
            (KeyType::String, Json::Number(n)) => Ok(Key::Str(n.to_string())),
            _ => Err(format!("{v} is not a valid {} (a {})", self.join_key, key_type_name(self.key_type))),
        }
    }

    /// Columns (`{column: [values]}`, Feast's `df`) as rows: the join key, the event time from
    /// `timestamp_column`, an optional created time, and the features present as columns. Every row is
    /// checked before any is returned; an error names the row (`row_name` of its index from 0: a data frame's
    /// index for pushes, a line for files) and the column.
    pub fn rows(
        &self,
        df: &serde_json::Map<String, Json>,
        timestamp_column: &str,
        created_column: Option<&str>,
        row_name: fn(usize) -> String,
    ) -> Result<Vec<Row>, Error> {
        let column = |name: &str| -> Result<&Vec<Json>, Error> {
            match df.get(name) {
                Some(Json::Array(values)) => Ok(values),
                Some(_) => Err(Error::invalid(format!("column {name:?} must be a list of values"))),
                None => Err(Error::invalid(format!("the rows have no {name:?} column"))),
            }
        };
        let keys = column(&self.join_key)?;
        let times = column(timestamp_column)?;
        let created = created_column.filter(|c| df.contains_key(*c)).map(column).transpose()?;
        let mut features = Vec::new();
        for (name, values) in df {
            if name == &self.join_key || name == timestamp_column || Some(name.as_str()) == created_column {
                continue;
            }
            let Some(index) = self.feature(name) else {
                return Err(Error::invalid(format!(
                    "column {name:?} is not a feature of {} (features: {})",
                    self.name,
                    self.features.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                )));
            };
            let Json::Array(values) = values else {
                return Err(Error::invalid(format!("column {name:?} must be a list of values")));
            };
            features.push((index, values));
        }
        let n = keys.len();
        for (name, len) in [(timestamp_column, times.len())]
            .into_iter()
            .chain(created.map(|c| (created_column.unwrap_or_default(), c.len())))
            .chain(features.iter().map(|(i, v)| (self.features[*i].0.as_str(), v.len())))
        {
            if len != n {
                return Err(Error::invalid(format!(
                    "column {name:?} has {len} values but {:?} has {n}: every column needs one per row",
                    self.join_key
                )));
            }
        }
        let mut rows = Vec::with_capacity(n);
        for r in 0..n {
            let at =
                |column: &str, e: String| Error::invalid(format!("{}, column {column:?}: {e}", row_name(r)));
            let key = self.key(&keys[r]).map_err(|e| at(&self.join_key, e))?;
            let event_micros = parse_time_micros(&times[r]).map_err(|e| at(timestamp_column, e))?;
            let created_micros = match created.map(|c| &c[r]) {
                Some(Json::Null) | None => 0,
                Some(c) => parse_time_micros(c).map_err(|e| at(created_column.unwrap_or_default(), e))?,
            };
            let mut values = Vec::with_capacity(features.len());
            for (index, column) in &features {
                let (name, kind) = &self.features[*index];
                values.push((*index as u16, Value::from_json(*kind, &column[r]).map_err(|e| at(name, e))?));
            }
            rows.push(Row { key, event_micros, created_micros, values });
        }
        Ok(rows)
    }
}

fn key_type_name(t: KeyType) -> &'static str {
    match t {
        KeyType::String => "string",
        KeyType::Int64 => "int64",
    }
}

/// An entity key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Str(String),
    Int(i64),
}

impl Key {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Key::Str(s) => {
                out.push(0);
                out.extend_from_slice(s.as_bytes());
            }
            Key::Int(i) => {
                out.push(1);
                out.extend_from_slice(&i.to_be_bytes());
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        match bytes.split_first()? {
            (0, s) => Some(Key::Str(String::from_utf8(s.to_vec()).ok()?)),
            (1, i) => Some(Key::Int(i64::from_be_bytes(i.try_into().ok()?))),
            _ => None,
        }
    }

    pub fn to_json(&self) -> Json {
        match self {
            Key::Str(s) => Json::String(s.clone()),
            Key::Int(i) => Json::from(*i),
        }
    }
}

/// A pushed row's name: its index in the data frame, from 0 (as pandas numbers them).
pub fn frame_row(r: usize) -> String {
    format!("row {r}")
}

/// A CSV file's data row: counted from 1, and its line (the header is line 1).
pub fn csv_row(r: usize) -> String {
    format!("row {} (line {})", r + 1, r + 2)
}

/// A Parquet file's row, counted from 1.
pub fn parquet_row(r: usize) -> String {
    format!("row {}", r + 1)
}

/// A feature value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Float(f64),
    Int(i64),
    Str(String),
    Bool(bool),
}

impl Value {
    /// A JSON value as a feature of type `kind`: numbers for numeric types (integral for ints, in range),
    /// strings, booleans, or null.
    pub fn from_json(kind: ValueType, v: &Json) -> Result<Self, String> {
        let wrong = || format!("{v} is not a {}", type_name(kind));
        Ok(match (kind, v) {
            (_, Json::Null) => Value::Null,
            (ValueType::Float32 | ValueType::Float64, Json::Number(n)) => {
                Value::Float(n.as_f64().ok_or_else(wrong)?)
            }
            (ValueType::Int64, Json::Number(n)) => Value::Int(n.as_i64().ok_or_else(wrong)?),
            (ValueType::Int32, Json::Number(n)) => {
                Value::Int(n.as_i64().filter(|i| i32::try_from(*i).is_ok()).ok_or_else(wrong)?)
            }
            (ValueType::String, Json::String(s)) => Value::Str(s.clone()),
            (ValueType::Bool, Json::Bool(b)) => Value::Bool(*b),
            _ => return Err(wrong()),
        })
    }

    pub fn to_json(&self) -> Json {
        match self {
            Value::Null => Json::Null,
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
            Value::Int(i) => Json::from(*i),
            Value::Str(s) => Json::String(s.clone()),
            Value::Bool(b) => Json::Bool(*b),
        }
    }

    /// As a CSV field (empty for null).
    pub fn to_csv(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Float(f) => f.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Str(s) if s.contains([',', '"', '\n', '\r']) => format!("\"{}\"", s.replace('"', "\"\"")),
            Value::Str(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.push(0),
            Value::Float(f) => {
                out.push(1);
                out.extend_from_slice(&f.to_le_bytes());
            }
            Value::Int(i) => {
                out.push(2);
                out.extend_from_slice(&i.to_le_bytes());
            }
            Value::Str(s) => {
                out.push(3);
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            Value::Bool(b) => {
                out.push(4);
                out.push(u8::from(*b));
            }
        }
    }

    pub fn decode(r: &mut Reader<'_>) -> Option<Self> {
        Some(match r.u8()? {
            0 => Value::Null,
            1 => Value::Float(f64::from_le_bytes(r.array()?)),
            2 => Value::Int(i64::from_le_bytes(r.array()?)),
            3 => {
                let len = u32::from_le_bytes(r.array()?) as usize;
                Value::Str(String::from_utf8(r.take(len)?.to_vec()).ok()?)
            }
            4 => Value::Bool(r.u8()? != 0),
            _ => return None,
        })
    }
}

fn type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::Float32 => "float32",
        ValueType::Float64 => "float64",
        ValueType::Int32 => "int32",
        ValueType::Int64 => "int64",
        ValueType::String => "string",
        ValueType::Bool => "bool",
    }
}

/// A cursor over encoded bytes.
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    pub fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_le_bytes)
    }
}

/// One timestamped row for one entity: the features it carries (by index), each with its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub key: Key,
    /// Event time, microseconds since the epoch.
    pub event_micros: i64,
    /// When it was written (the source's created timestamp column), to order rows with the same event time.
    pub created_micros: i64,
    pub values: Vec<(u16, Value)>,
}

/// A timestamp from JSON: an RFC 3339 string (`2024-05-01T12:00:00Z`, an offset, or none: UTC), the
/// `2024-05-01 12:00:00` form pandas prints, a date, or a number of seconds since the epoch.
pub fn parse_time_micros(v: &Json) -> Result<i64, String> {
    match v {
        Json::Number(n) => {
            let secs = n.as_f64().ok_or_else(|| format!("{n} is not a time"))?;
            if !secs.is_finite() || secs.abs() > 1e13 {
                return Err(format!("{n} seconds since the epoch is out of range"));
            }
            Ok((secs * 1e6).round() as i64)
        }
        Json::String(s) => parse_time_str(s).ok_or_else(|| {
            format!("{s:?} is not a time: use RFC 3339 (2024-05-01T12:00:00Z) or seconds since the epoch")
        }),
        _ => Err(format!("{v} is not a time")),
    }
}

fn parse_time_str(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Some(ts.as_microsecond());
    }
    // No offset: UTC.
    let civil = s
        .parse::<jiff::civil::DateTime>()
        .ok()
        .or_else(|| s.parse::<jiff::civil::Date>().ok().map(|d| d.at(0, 0, 0, 0)))?;
    civil.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp().as_microsecond())
}

/// A time as RFC 3339 in UTC (`2024-05-01T12:00:00Z`), as Feast prints event timestamps.
pub fn format_time(micros: i64) -> String {
    jiff::Timestamp::from_microsecond(micros).map_or_else(|_| micros.to_string(), |t| t.to_string())
}

/// A duration such as `24h`, `90m`, `1h30m`, `1.5h`, `500ms` in microseconds (what the CRD's CEL rule allows).
pub fn parse_duration_micros(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?} is not a duration such as 30s, 90m or 24h");
    let mut rest = s.trim();
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (1e3, 2)
        } else if rest.starts_with('s') {
            (1e6, 1)
        } else if rest.starts_with('m') {
            (60e6, 1)
        } else if rest.starts_with('h') {
            (3600e6, 1)
        } else {
            return Err(bad());
        };
        total += number * unit;
        rest = &rest[len..];
    }
    if total <= 0.0 || total > 1e18 {
        return Err(bad());
    }
    Ok(total as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times() {
        assert_eq!(parse_duration_micros("1h30m").unwrap(), 5_400_000_000);
        assert_eq!(parse_duration_micros("1.5h").unwrap(), 5_400_000_000);
        assert_eq!(parse_duration_micros("500ms").unwrap(), 500_000);
        for bad in ["", "h", "10", "10d", "0s", "-1s"] {
            assert!(parse_duration_micros(bad).is_err(), "{bad}");
        }
        let t = |s: &str| parse_time_micros(&Json::String(s.into()));
        assert_eq!(t("2024-05-01T12:00:00Z").unwrap(), 1_714_564_800_000_000);
        assert_eq!(t("2024-05-01T14:00:00+02:00").unwrap(), 1_714_564_800_000_000);
        assert_eq!(t("2024-05-01 12:00:00").unwrap(), 1_714_564_800_000_000);
        assert_eq!(t("2024-05-01").unwrap(), 1_714_521_600_000_000);
        assert_eq!(parse_time_micros(&Json::from(1_714_564_800)).unwrap(), 1_714_564_800_000_000);
        assert!(t("yesterday").is_err());
        assert!(parse_time_micros(&Json::from(1e300)).is_err());
        assert_eq!(format_time(1_714_564_800_000_000), "2024-05-01T12:00:00Z");
    }

    #[test]
    fn values_follow_their_types() {
        assert_eq!(Value::from_json(ValueType::Int32, &Json::from(7)).unwrap(), Value::Int(7));
        assert!(Value::from_json(ValueType::Int32, &Json::from(1u64 << 40)).is_err());
        assert!(Value::from_json(ValueType::Int64, &Json::from(1.5)).is_err());
        assert!(Value::from_json(ValueType::Float64, &Json::from("1.5")).is_err());
        assert_eq!(Value::from_json(ValueType::Bool, &Json::Null).unwrap(), Value::Null);
        for v in [
            Value::Null,
            Value::Float(-2.5),
            Value::Int(i64::MIN),
            Value::Str("é,\"".into()),
            Value::Bool(true),
        ] {
            let mut out = Vec::new();
            v.encode(&mut out);
            let mut r = Reader(&out);
            assert_eq!(Value::decode(&mut r), Some(v));
            assert!(r.0.is_empty());
        }
    }
}

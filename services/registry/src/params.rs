//! A request's parameters, read one way whatever the method: the MLflow client sends a GET's as a query
//! string (lists as repeated keys, numbers as text) and the others' as a JSON body (DELETE too).

use crate::error::ApiError;
use serde_json::{Map, Value};

pub struct Params(Map<String, Value>);

impl Params {
    /// A query string's parameters (`a=1&b=x&b=y`: `b` is a list).
    pub fn from_query(query: &str) -> Self {
        let mut map = Map::new();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let v = Value::String(v.into_owned());
            match map.get_mut(k.as_ref()) {
                Some(Value::Array(a)) => a.push(v),
                Some(first) => *first = Value::Array(vec![first.take(), v]),
                None => {
                    map.insert(k.into_owned(), v);
                }
            }
        }
        Self(map)
    }

    /// A JSON object body (empty: no parameters).
    pub fn from_body(body: &[u8]) -> Result<Self, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(Map::new()));
        }
        match serde_json::from_slice(body) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(_) => Err(ApiError::invalid("the request body must be a JSON object")),
            Err(e) => Err(ApiError::invalid(format!("the request body is not valid JSON: {e}"))),
        }
    }

    /// The parameters of a JSON object inside a request (a metric of a batch).
    pub fn from_value(v: Value) -> Result<Self, ApiError> {
        match v {
            Value::Object(map) => Ok(Self(map)),
            other => Err(ApiError::invalid(format!("expected a JSON object, got {other}"))),
        }
    }

    pub fn value(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// A string parameter, if given (numbers are read as their text).
    pub fn opt_str(&self, key: &str) -> Result<Option<String>, ApiError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Array(a)) if a.len() == 1 => Ok(a[0].as_str().map(str::to_string)),
            Some(other) => Err(ApiError::invalid(format!("parameter '{key}' must be a string, got {other}"))),
        }
    }

    /// A required, non-empty string parameter.
    pub fn str(&self, key: &str) -> Result<String, ApiError> {
        match self.opt_str(key)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(ApiError::invalid(format!("Missing value for required parameter '{key}'."))),
        }
    }

    /// An integer parameter (a JSON number or its text), if given.
    pub fn opt_int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
            Some(v) => {
                let text = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
                text.trim().parse().map(Some).map_err(|_| {
                    ApiError::invalid(format!("Parameter '{key}' must be an integer, got '{text}'."))
                })
            }
        }
    }

    /// A model version number: a positive integer.
    pub fn version(&self) -> Result<u64, ApiError> {
        let text = self.str("version")?;
        text.trim().parse::<u64>().ok().filter(|&v| v > 0).ok_or_else(|| {
            ApiError::invalid(format!("Parameter 'version' must be an integer, got '{text}'."))
        })
    }

    /// A number (a JSON number, or `NaN`/`Infinity`/`-Infinity` as text, as the client sends them).
    pub fn float(&self, key: &str) -> Result<f64, ApiError> {
        match self.value(key) {
            Some(Value::Number(n)) => Ok(n.as_f64().unwrap_or(f64::NAN)),
            Some(Value::String(s)) => s
                .parse()
                .map_err(|_| ApiError::invalid(format!("Parameter '{key}' must be a number, got '{s}'."))),
            _ => Err(ApiError::invalid(format!("Missing value for required parameter '{key}'."))),
        }
    }

    /// A list parameter (a single value is a list of one).
    pub fn list(&self, key: &str) -> Vec<Value> {
        match self.value(key) {
            None => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(v) => vec![v.clone()],
        }
    }

    /// `[{"key": k, "value": v}, ...]` pairs.
    pub fn pairs(&self, key: &str) -> Result<Vec<(String, String)>, ApiError> {
        self.list(key)
            .iter()
            .map(|t| {
                let k = t.get("key").and_then(Value::as_str).filter(|k| !k.is_empty());
                let v =
                    t.get("value").map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
                match (k, v) {
                    (Some(k), Some(v)) => Ok((k.to_string(), v)),
                    (Some(k), None) => Ok((k.to_string(), String::new())),
                    _ => Err(ApiError::invalid(format!("each of '{key}' needs a 'key'"))),
                }
            })
            .collect()
    }
}

//! The `filter` of MLflow's search calls: clauses `FIELD OP VALUE` joined by `AND`, where FIELD is an
//! attribute (`name`, `run_id`, `status`, ...) or `tags.KEY`, `params.KEY`, `metrics.KEY` (a key in
//! backticks or double quotes when it has dots or spaces), OP one of `= != < <= > >= LIKE ILIKE`, and
//! VALUE a quoted string or a number.

use crate::error::ApiError;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Like,
    ILike,
}

/// A value a searched entity has for a field.
#[derive(Clone, Debug, PartialEq)]
pub enum Field {
    Str(String),
    Num(f64),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Clause {
    /// `name`, `tag.KEY`, `param.KEY`, `metric.KEY`, ... (attributes lower-cased, keys as written).
    field: String,
    op: Op,
    value: Field,
}

impl Clause {
    /// The field the clause tests (`name`, `tag.KEY`, ...).
    pub fn field_name(&self) -> String {
        self.field.clone()
    }
}

/// The clauses of `filter` (none for an empty filter).
pub fn parse(filter: &str) -> Result<Vec<Clause>, ApiError> {
    let bad = |why: &str| ApiError::invalid(format!("invalid filter {filter:?}: {why}"));
    let mut clauses = Vec::new();
    let mut rest = filter.trim();
    while !rest.is_empty() {
        let (field, after) = field(rest).ok_or_else(|| bad("expected a field such as name or tags.KEY"))?;
        let after = after.trim_start();
        let (op, after) = op(after).ok_or_else(|| bad("expected one of = != < <= > >= LIKE ILIKE"))?;
        let after = after.trim_start();
        let (value, after) = literal(after).ok_or_else(|| bad("expected a quoted string or a number"))?;
        clauses.push(Clause { field, op, value });
        rest = after.trim_start();
        if rest.is_empty() {
            break;
        }
        let word = rest.get(..3).filter(|w| w.eq_ignore_ascii_case("and"));
        rest = match word {
            Some(_) if rest[3..].starts_with(char::is_whitespace) => rest[3..].trim_start(),
            _ => return Err(bad("clauses are joined by AND")),
        };
    }
    Ok(clauses)
}

fn field(s: &str) -> Option<(String, &str)> {
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.')).unwrap_or(s.len());
    let (ident, mut rest) = s.split_at(end);
    if ident.is_empty() {
        return None;
    }
    let lower = ident.to_ascii_lowercase();
    let prefixes = [
        ("tags.", "tag."),
        ("tag.", "tag."),
        ("params.", "param."),
        ("param.", "param."),
        ("metrics.", "metric."),
        ("metric.", "metric."),
        ("attributes.", ""),
        ("attribute.", ""),
        ("attr.", ""),
    ];
    for (prefix, kind) in prefixes {
        if lower.starts_with(prefix) {
            let mut key = ident[prefix.len()..].to_string();
            if key.is_empty() {
                // A quoted key: tags.`a.b` or tags."a b".
                let quote = rest.chars().next().filter(|c| *c == '`' || *c == '"')?;
                let close = rest[1..].find(quote)? + 1;
                key = rest[1..close].to_string();
                rest = &rest[close + 1..];
            }
            return Some((
                if kind.is_empty() { key.to_ascii_lowercase() } else { format!("{kind}{key}") },
                rest,
            ));
        }
    }
    Some((lower, rest))
}

fn op(s: &str) -> Option<(Op, &str)> {
    for (text, op) in
        [("!=", Op::Ne), ("<=", Op::Le), (">=", Op::Ge), ("=", Op::Eq), ("<", Op::Lt), (">", Op::Gt)]
    {
        if let Some(rest) = s.strip_prefix(text) {
            return Some((op, rest));
        }
    }
    for (word, op) in [("ilike", Op::ILike), ("like", Op::Like)] {
        if s.len() > word.len() && s[..word.len()].eq_ignore_ascii_case(word) {
            return Some((op, &s[word.len()..]));
        }
    }
    None
}

fn literal(s: &str) -> Option<(Field, &str)> {
    let quote = s.chars().next()?;
    if quote == '\'' || quote == '"' {
        let close = s[1..].find(quote)? + 1;
        return Some((Field::Str(s[1..close].to_string()), &s[close + 1..]));
    }
    let end = s.find(|c: char| c.is_whitespace()).unwrap_or(s.len());
    s[..end].parse().ok().map(|n| (Field::Num(n), &s[end..]))
}

/// Whether an entity with fields `lookup` passes every clause. A field the entity lacks passes `!=` only.
pub fn matches(clauses: &[Clause], lookup: impl Fn(&str) -> Option<Field>) -> bool {
    clauses.iter().all(|c| match lookup(&c.field) {
        None => c.op == Op::Ne,
        Some(have) => compare(&have, c.op, &c.value),
    })
}

fn compare(have: &Field, op: Op, want: &Field) -> bool {
    let ordering = match (have, want) {
        (Field::Num(a), Field::Num(b)) => a.partial_cmp(b),
        (Field::Str(a), Field::Num(b)) => a.parse::<f64>().ok().and_then(|a| a.partial_cmp(b)),
        (Field::Num(a), Field::Str(b)) => b.parse::<f64>().ok().and_then(|b| a.partial_cmp(&b)),
        (Field::Str(a), Field::Str(b)) => match op {
            Op::Like => return like(a, b),
            Op::ILike => return like(&a.to_lowercase(), &b.to_lowercase()),
            _ => Some(a.cmp(b)),
        },
    };
    let Some(o) = ordering else { return op == Op::Ne };
    match op {
        Op::Eq => o.is_eq(),
        Op::Ne => o.is_ne(),
        Op::Lt => o.is_lt(),
        Op::Le => o.is_le(),
        Op::Gt => o.is_gt(),
        Op::Ge => o.is_ge(),
        Op::Like | Op::ILike => false,
    }
}

/// SQL LIKE: `%` any run of characters, `_` one character.
fn like(text: &str, pattern: &str) -> bool {
    let (t, p): (Vec<char>, Vec<char>) = (text.chars().collect(), pattern.chars().collect());
    // Positions of the pattern reachable after each text prefix.
    let mut states = vec![false; p.len() + 1];
    states[0] = true;
    let close = |states: &mut Vec<bool>| {
        for j in 0..p.len() {
            if states[j] && p[j] == '%' {
                states[j + 1] = true;
            }
        }
    };
    close(&mut states);
    for c in t {
        let mut next = vec![false; p.len() + 1];
        for j in 0..p.len() {
            if states[j] && (p[j] == '%' || p[j] == '_' || p[j] == c) {
                next[if p[j] == '%' { j } else { j + 1 }] = true;
            }
        }
        close(&mut next);
        states = next;
    }
    states[p.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(fields: &'a [(&'a str, Field)]) -> impl Fn(&str) -> Option<Field> + 'a {
        move |name| fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn filters_as_the_mlflow_client_writes_them() {
        let model = [("name", Field::Str("iris-mlp".into())), ("tag.team", Field::Str("ml".into()))];
        let yes = [
            "",
            "name = 'iris-mlp'",
            "name LIKE 'iris%'",
            "name ILIKE '%MLP' AND tags.team = \"ml\"",
            "tag.`mlflow.prompt.is_prompt` != 'true'",
            "name = 'iris-mlp' and tag.`mlflow.prompt.is_prompt` != 'true'",
        ];
        for f in yes {
            assert!(matches(&parse(f).unwrap(), lookup(&model)), "{f}");
        }
        for f in ["name = 'other'", "name LIKE 'mlp%'", "tags.team != 'ml'", "tags.missing = 'x'"] {
            assert!(!matches(&parse(f).unwrap(), lookup(&model)), "{f}");
        }
        let run = [("metric.acc", Field::Num(0.9)), ("param.lr", Field::Str("0.1".into()))];
        assert!(matches(&parse("metrics.acc > 0.5 AND params.lr = '0.1'").unwrap(), lookup(&run)));
        assert!(!matches(&parse("metrics.acc >= 0.95").unwrap(), lookup(&run)));
        for bad in ["name", "name ~ 'x'", "name = x", "name = 'x' OR name = 'y'", "name = 'unterminated"] {
            assert_eq!(parse(bad).unwrap_err().code, "INVALID_PARAMETER_VALUE", "{bad}");
        }
        assert!(like("abc", "a_c") && like("abc", "%") && !like("abc", "b%") && like("", "%"));
    }
}

//! Value types of query parameters and JSON body fields, inferred from the values seen, and the
//! bounded tables that keep them per endpoint.
//!
//! A field's types are a set: each value adds its type, so a field that held `42` and `"n/a"`
//! shows both, and [`TypeSet::schema_type`] says what a schema would call it.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

macro_rules! value_types {
    ($($variant:ident => $name:literal,)*) => {
        /// The type of one observed value.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum ValueType { $($variant,)* }

        impl ValueType {
            pub const ALL: &'static [ValueType] = &[$(ValueType::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $(ValueType::$variant => $name,)* }
            }

            fn from_name(name: &str) -> Option<Self> {
                match name { $($name => Some(ValueType::$variant),)* _ => None }
            }
        }
    };
}

value_types! {
    Integer => "integer",
    Number => "number",
    Boolean => "boolean",
    Uuid => "uuid",
    Email => "email",
    DateTime => "date-time",
    String => "string",
    Object => "object",
    Array => "array",
    Null => "null",
}

/// Text seen in a query string or a path: its most specific type.
pub fn infer_text(value: &str) -> ValueType {
    let v = value.trim();
    if v.is_empty() {
        return ValueType::String;
    }
    if is_integer(v) {
        return ValueType::Integer;
    }
    if v.bytes().any(|b| b.is_ascii_digit())
        && v.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
        && v.parse::<f64>().is_ok_and(f64::is_finite)
    {
        return ValueType::Number;
    }
    if v == "true" || v == "false" {
        return ValueType::Boolean;
    }
    infer_string_format(v).unwrap_or(ValueType::String)
}

/// A JSON value's type; strings get a format (uuid, email, date-time) when they have one.
pub fn infer_json(value: &serde_json::Value) -> ValueType {
    use serde_json::Value;
    match value {
        Value::Null => ValueType::Null,
        Value::Bool(_) => ValueType::Boolean,
        Value::Number(n) if n.is_i64() || n.is_u64() => ValueType::Integer,
        Value::Number(_) => ValueType::Number,
        Value::String(s) => infer_string_format(s).unwrap_or(ValueType::String),
        Value::Array(_) => ValueType::Array,
        Value::Object(_) => ValueType::Object,
    }
}

fn is_integer(v: &str) -> bool {
    let digits = v.strip_prefix('-').unwrap_or(v);
    !digits.is_empty() && digits.len() <= 19 && digits.bytes().all(|b| b.is_ascii_digit())
}

fn infer_string_format(v: &str) -> Option<ValueType> {
    let b = v.as_bytes();
    if b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
    {
        return Some(ValueType::Uuid);
    }
    if is_email(v) {
        return Some(ValueType::Email);
    }
    if is_date_time(b) {
        return Some(ValueType::DateTime);
    }
    None
}

fn is_email(v: &str) -> bool {
    let Some((local, domain)) = v.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && !local.contains(char::is_whitespace)
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
}

/// RFC 3339 full dates (`2024-01-15`) and date-times (`2024-01-15T10:00:00Z`, with fractions
/// and offsets), checked by shape and ranges.
fn is_date_time(b: &[u8]) -> bool {
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    let num = |r: std::ops::Range<usize>| {
        b.get(r)
            .map(|s| s.iter().fold(0u32, |a, d| a * 10 + u32::from(d - b'0')))
            .unwrap_or(0)
    };
    if b.len() < 10
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
    {
        return false;
    }
    if !(1..=12).contains(&num(5..7)) || !(1..=31).contains(&num(8..10)) {
        return false;
    }
    if b.len() == 10 {
        return true;
    }
    matches!(b[10], b'T' | b't' | b' ')
        && b.len() >= 19
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && num(11..13) < 24
        && num(14..16) < 60
        && num(17..19) <= 60
        && b[19..]
            .iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'Z' | b'z' | b'+' | b'-' | b':'))
}

/// The types a field was seen with, one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TypeSet(u16);

impl TypeSet {
    pub fn of(t: ValueType) -> Self {
        Self(1 << t as u8)
    }

    pub fn insert(&mut self, t: ValueType) {
        self.0 |= 1 << t as u8;
    }

    pub fn contains(self, t: ValueType) -> bool {
        self.0 & (1 << t as u8) != 0
    }

    pub fn union(self, other: TypeSet) -> TypeSet {
        TypeSet(self.0 | other.0)
    }

    pub fn iter(self) -> impl Iterator<Item = ValueType> {
        ValueType::ALL
            .iter()
            .copied()
            .filter(move |t| self.contains(*t))
    }

    /// The JSON Schema type and format of values of these types: integers widen to numbers,
    /// formatted strings to plain strings when mixed; anything else mixed has no single type
    /// (`None`). Null alone is `null`; with others it is left out (nullable is not a type).
    pub fn schema_type(self) -> Option<(&'static str, Option<&'static str>)> {
        use ValueType::*;
        let mut set = self;
        if set.0 != TypeSet::of(Null).0 {
            set.0 &= !TypeSet::of(Null).0;
        }
        let only = |types: &[ValueType]| set.iter().all(|t| types.contains(&t));
        let single = set.iter().count() == 1;
        if single {
            let t = set.iter().next()?;
            return Some(match t {
                Integer => ("integer", None),
                Number => ("number", None),
                Boolean => ("boolean", None),
                Uuid => ("string", Some("uuid")),
                Email => ("string", Some("email")),
                DateTime => ("string", Some("date-time")),
                String => ("string", None),
                Object => ("object", None),
                Array => ("array", None),
                Null => ("null", None),
            });
        }
        if only(&[Integer, Number]) {
            return Some(("number", None));
        }
        if only(&[Uuid, Email, DateTime, String]) {
            return Some(("string", None));
        }
        None
    }
}

impl Serialize for TypeSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.iter()
            .map(ValueType::name)
            .collect::<Vec<_>>()
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for TypeSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut set = TypeSet::default();
        for name in Vec::<String>::deserialize(deserializer)? {
            set.insert(
                ValueType::from_name(&name)
                    .ok_or_else(|| de::Error::custom(format!("unknown value type '{name}'")))?,
            );
        }
        Ok(set)
    }
}

/// Deepest JSON nesting flattened into field paths.
pub const MAX_DEPTH: usize = 8;
/// Most fields taken from one body (the rest are counted, not typed).
pub const MAX_FIELDS_PER_BODY: usize = 128;
/// Array elements looked at per array: their fields share one path (`items[].id`).
const ARRAY_SAMPLE: usize = 4;

/// A JSON body's fields as (path, type): object keys joined with `.`, array elements as `[]`
/// (`items[].id`); the root itself is not a field. Returns whether the bounds cut the walk.
pub fn flatten_json(root: &serde_json::Value, out: &mut Vec<(String, ValueType)>) -> bool {
    let mut cut = false;
    walk(root, &mut String::new(), 0, out, &mut cut);
    cut
}

fn walk(
    value: &serde_json::Value,
    path: &mut String,
    depth: usize,
    out: &mut Vec<(String, ValueType)>,
    cut: &mut bool,
) {
    use serde_json::Value;
    if !path.is_empty() {
        if out.len() >= MAX_FIELDS_PER_BODY {
            *cut = true;
            return;
        }
        out.push((path.clone(), infer_json(value)));
    }
    if depth >= MAX_DEPTH {
        if matches!(value, Value::Object(_) | Value::Array(_)) {
            *cut = true;
        }
        return;
    }
    let len = path.len();
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                walk(child, path, depth + 1, out, cut);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            path.push_str("[]");
            // The sampled elements share one path; the caller merges their types.
            for child in items.iter().take(ARRAY_SAMPLE) {
                walk(child, path, depth + 1, out, cut);
            }
            path.truncate(len);
        }
        _ => {}
    }
}

/// One field's statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldStats {
    pub types: TypeSet,
    /// Exchanges that carried the field.
    pub count: u64,
}

/// Fields by name, bounded: past `cap` names, new ones are only counted in `untracked`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldTable {
    pub fields: BTreeMap<String, FieldStats>,
    pub untracked: u64,
}

/// Longest field name or path kept (longer ones are probes or data, counted as untracked).
pub const MAX_FIELD_NAME: usize = 128;

impl FieldTable {
    /// One exchange carried the field with values of these types.
    pub fn observe(&mut self, name: &str, types: TypeSet, cap: usize) {
        if name.len() > MAX_FIELD_NAME {
            self.untracked += 1;
            return;
        }
        if let Some(stats) = self.fields.get_mut(name) {
            stats.types = stats.types.union(types);
            stats.count += 1;
        } else if self.fields.len() < cap {
            self.fields
                .insert(name.to_owned(), FieldStats { types, count: 1 });
        } else {
            self.untracked += 1;
        }
    }

    pub fn merge(&mut self, other: &FieldTable, cap: usize) {
        for (name, stats) in &other.fields {
            if let Some(mine) = self.fields.get_mut(name) {
                mine.types = mine.types.union(stats.types);
                mine.count += stats.count;
            } else if self.fields.len() < cap {
                self.fields.insert(name.clone(), stats.clone());
            } else {
                self.untracked += stats.count;
            }
        }
        self.untracked += other.untracked;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_types() {
        let cases = [
            ("42", ValueType::Integer),
            ("-7", ValueType::Integer),
            ("3.14", ValueType::Number),
            ("1e3", ValueType::Number),
            ("true", ValueType::Boolean),
            ("550e8400-e29b-41d4-a716-446655440000", ValueType::Uuid),
            ("jane@example.com", ValueType::Email),
            ("2024-01-15", ValueType::DateTime),
            ("2024-01-15T10:00:00Z", ValueType::DateTime),
            ("2024-01-15T10:00:00.123+02:00", ValueType::DateTime),
            ("2024-13-15", ValueType::String),
            ("available", ValueType::String),
            ("", ValueType::String),
            ("1.2.3", ValueType::String),
            ("inf", ValueType::String),
            ("NaN", ValueType::String),
            ("99999999999999999999999", ValueType::Number),
        ];
        for (text, expected) in cases {
            assert_eq!(infer_text(text), expected, "{text}");
        }
    }

    #[test]
    fn json_fields_are_flattened_and_bounded() {
        let body = json!({
            "id": 1, "price": 9.5, "name": "rex", "tags": [{"id": 2, "name": "a"}],
            "photoUrls": ["x"], "owner": {"email": "a@b.io", "since": "2024-01-01"}, "gone": null
        });
        let mut fields = Vec::new();
        assert!(!flatten_json(&body, &mut fields));
        let map: BTreeMap<_, _> = fields.into_iter().collect();
        assert_eq!(map["id"], ValueType::Integer);
        assert_eq!(map["price"], ValueType::Number);
        assert_eq!(map["tags"], ValueType::Array);
        assert_eq!(map["tags[].id"], ValueType::Integer);
        assert_eq!(map["photoUrls[]"], ValueType::String);
        assert_eq!(map["owner"], ValueType::Object);
        assert_eq!(map["owner.email"], ValueType::Email);
        assert_eq!(map["owner.since"], ValueType::DateTime);
        assert_eq!(map["gone"], ValueType::Null);

        // Deep nesting stops at the depth bound; wide objects at the field bound.
        let mut deep = json!(1);
        for _ in 0..50 {
            deep = json!({ "a": deep });
        }
        let mut fields = Vec::new();
        assert!(flatten_json(&deep, &mut fields));
        assert_eq!(fields.len(), MAX_DEPTH);
        let wide: serde_json::Map<_, _> = (0..1000).map(|i| (format!("k{i}"), json!(i))).collect();
        let mut fields = Vec::new();
        assert!(flatten_json(&serde_json::Value::Object(wide), &mut fields));
        assert_eq!(fields.len(), MAX_FIELDS_PER_BODY);
    }

    #[test]
    fn types_merge_and_tables_are_bounded() {
        let mut table = FieldTable::default();
        table.observe("id", TypeSet::of(ValueType::Integer), 2);
        table.observe("id", TypeSet::of(ValueType::Number), 2);
        table.observe("q", TypeSet::of(ValueType::String), 2);
        table.observe("extra", TypeSet::of(ValueType::String), 2);
        assert_eq!(table.fields.len(), 2);
        assert_eq!(table.untracked, 1);
        assert_eq!(table.fields["id"].count, 2);
        assert_eq!(
            table.fields["id"].types.schema_type(),
            Some(("number", None))
        );

        let mut other = FieldTable::default();
        other.observe("q", TypeSet::of(ValueType::Uuid), 8);
        other.observe("new", TypeSet::of(ValueType::Boolean), 8);
        table.merge(&other, 3);
        assert_eq!(
            table.fields["q"].types.schema_type(),
            Some(("string", None))
        );
        assert_eq!(table.fields["new"].count, 1);

        let mixed: TypeSet = {
            let mut s = TypeSet::of(ValueType::Integer);
            s.insert(ValueType::Boolean);
            s
        };
        assert_eq!(mixed.schema_type(), None);
        let mut nullable = TypeSet::of(ValueType::Null);
        assert_eq!(nullable.schema_type(), Some(("null", None)));
        nullable.insert(ValueType::Email);
        assert_eq!(nullable.schema_type(), Some(("string", Some("email"))));

        let json = serde_json::to_string(&table).unwrap();
        assert_eq!(serde_json::from_str::<FieldTable>(&json).unwrap(), table);
        let bytes = postcard::to_allocvec(&table).unwrap();
        assert_eq!(postcard::from_bytes::<FieldTable>(&bytes).unwrap(), table);
    }
}

//! A strict, error-collecting reader over a parsed TOML document.
//!
//! serde stops at the first error; an operator fixing a config wants every problem at once, each
//! with its key path and line. This reader walks a `toml_edit` document (which keeps byte spans),
//! records every type error and every unknown key (the `deny_unknown_fields` rule), and keeps
//! going.

use std::fmt;
use std::ops::Range;

use toml_edit::{Item, TableLike, Value};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path, e.g. `tenants[1].api_keys[0]`.
    pub path: String,
    /// 1-based line in the file, where the format gives one.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Collects errors while a document is read.
pub struct Errors<'s> {
    src: &'s str,
    pub list: Vec<ConfigError>,
}

impl<'s> Errors<'s> {
    pub fn new(src: &'s str) -> Self {
        Self {
            src,
            list: Vec::new(),
        }
    }

    pub fn line_of(&self, span: Option<Range<usize>>) -> Option<usize> {
        let start = span?.start.min(self.src.len());
        Some(
            self.src.as_bytes()[..start]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1,
        )
    }

    pub fn push(&mut self, path: &str, span: Option<Range<usize>>, message: impl Into<String>) {
        let line = self.line_of(span);
        self.list.push(ConfigError {
            path: path.to_string(),
            line,
            message: message.into(),
        });
    }
}

/// A table being read: every key taken is remembered, the rest are reported by [`Table::finish`].
pub struct Table<'d> {
    inner: &'d dyn TableLike,
    path: String,
    span: Option<Range<usize>>,
    taken: Vec<String>,
}

impl<'d> Table<'d> {
    pub fn root(inner: &'d dyn TableLike) -> Self {
        Self {
            inner,
            path: String::new(),
            span: None,
            taken: Vec::new(),
        }
    }

    pub fn span(&self) -> Option<Range<usize>> {
        self.span.clone()
    }

    pub fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&mut self, key: &str) -> Option<&'d Item> {
        self.taken.push(key.to_string());
        self.inner.get(key).filter(|item| !item.is_none())
    }

    /// Span of a key's value, for errors found after reading (semantic validation).
    pub fn value_span(&self, key: &str) -> Option<Range<usize>> {
        let item = self.inner.get(key)?;
        item_span(item).or_else(|| self.inner.key(key).and_then(|k| k.span()))
    }

    fn type_error(&self, errs: &mut Errors<'_>, key: &str, item: &Item, expected: &str) {
        errs.push(
            &self.child_path(key),
            item_span(item),
            format!("expected {expected}, found {}", type_name(item)),
        );
    }

    pub fn string(&mut self, errs: &mut Errors<'_>, key: &str) -> Option<String> {
        let item = self.get(key)?;
        match item.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.type_error(errs, key, item, "a string");
                None
            }
        }
    }

    pub fn boolean(&mut self, errs: &mut Errors<'_>, key: &str) -> Option<bool> {
        let item = self.get(key)?;
        match item.as_bool() {
            Some(b) => Some(b),
            None => {
                self.type_error(errs, key, item, "true or false");
                None
            }
        }
    }

    /// A non-negative integer no larger than `max`.
    pub fn uint(&mut self, errs: &mut Errors<'_>, key: &str, max: u64) -> Option<u64> {
        let item = self.get(key)?;
        match item.as_integer() {
            Some(i) if i >= 0 && (i as u64) <= max => Some(i as u64),
            Some(i) => {
                errs.push(
                    &self.child_path(key),
                    item_span(item),
                    format!("{i} is out of range (0..={max})"),
                );
                None
            }
            None => {
                self.type_error(errs, key, item, "an integer");
                None
            }
        }
    }

    /// A number (float or integer) in `range`; `hint` ends the error message, e.g. what the
    /// number means.
    pub fn number(
        &mut self,
        errs: &mut Errors<'_>,
        key: &str,
        range: std::ops::RangeInclusive<f64>,
        hint: &str,
    ) -> Option<f64> {
        let item = self.get(key)?;
        #[allow(clippy::cast_precision_loss)] // config integers are small
        let value = item
            .as_float()
            .or_else(|| item.as_integer().map(|i| i as f64));
        match value {
            Some(v) if range.contains(&v) => Some(v),
            Some(v) => {
                errs.push(
                    &self.child_path(key),
                    item_span(item),
                    format!(
                        "{v} is out of range ({}..={}){hint}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
            None => {
                self.type_error(errs, key, item, "a number");
                None
            }
        }
    }

    pub fn string_list(&mut self, errs: &mut Errors<'_>, key: &str) -> Option<Vec<String>> {
        let item = self.get(key)?;
        let Some(array) = item.as_array() else {
            self.type_error(errs, key, item, "an array of strings");
            return None;
        };
        let mut out = Vec::with_capacity(array.len());
        for (i, value) in array.iter().enumerate() {
            match value.as_str() {
                Some(s) => out.push(s.to_string()),
                None => errs.push(
                    &format!("{}[{i}]", self.child_path(key)),
                    value.span(),
                    format!("expected a string, found {}", value_type_name(value)),
                ),
            }
        }
        Some(out)
    }

    pub fn table(&mut self, errs: &mut Errors<'_>, key: &str) -> Option<Table<'d>> {
        let item = self.get(key)?;
        match item.as_table_like() {
            Some(inner) => Some(Table {
                inner,
                path: self.child_path(key),
                span: item_span(item),
                taken: Vec::new(),
            }),
            None => {
                self.type_error(errs, key, item, "a table");
                None
            }
        }
    }

    /// `[[key]]` array of tables (or an array of inline tables).
    pub fn tables(&mut self, errs: &mut Errors<'_>, key: &str) -> Vec<Table<'d>> {
        let Some(item) = self.get(key) else {
            return Vec::new();
        };
        let base = self.child_path(key);
        if let Some(aot) = item.as_array_of_tables() {
            return aot
                .iter()
                .enumerate()
                .map(|(i, t)| Table {
                    inner: t,
                    path: format!("{base}[{i}]"),
                    span: t.span(),
                    taken: Vec::new(),
                })
                .collect();
        }
        if let Some(array) = item.as_array() {
            let mut out = Vec::new();
            for (i, value) in array.iter().enumerate() {
                match value.as_inline_table() {
                    Some(t) => out.push(Table {
                        inner: t,
                        path: format!("{base}[{i}]"),
                        span: t.span(),
                        taken: Vec::new(),
                    }),
                    None => errs.push(
                        &format!("{base}[{i}]"),
                        value.span(),
                        format!("expected a table, found {}", value_type_name(value)),
                    ),
                }
            }
            return out;
        }
        self.type_error(errs, key, item, "an array of tables");
        Vec::new()
    }

    /// Report every key that was never asked for.
    pub fn finish(self, errs: &mut Errors<'_>) {
        for (key, item) in self.inner.iter() {
            if !self.taken.iter().any(|t| t == key) {
                let span = self
                    .inner
                    .key(key)
                    .and_then(|k| k.span())
                    .or_else(|| item_span(item));
                errs.push(
                    &self.child_path(key),
                    span,
                    format!("unknown key (expected one of: {})", self.taken.join(", ")),
                );
            }
        }
    }
}

fn item_span(item: &Item) -> Option<Range<usize>> {
    match item {
        Item::Value(v) => v.span(),
        Item::Table(t) => t.span(),
        Item::ArrayOfTables(a) => a.span(),
        Item::None => None,
    }
}

fn type_name(item: &Item) -> &'static str {
    match item {
        Item::Value(v) => value_type_name(v),
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
        Item::None => "nothing",
    }
}

fn value_type_name(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_take_floats_and_integers_and_report_range_and_type_with_their_line() {
        let src = "a = 0.25\nb = 1\nc = 1.5\nd = \"x\"\n";
        let doc = toml_edit::ImDocument::parse(src).unwrap();
        let mut errs = Errors::new(src);
        let mut t = Table::root(doc.as_table());
        assert_eq!(t.number(&mut errs, "a", 0.0..=1.0, ""), Some(0.25));
        assert_eq!(t.number(&mut errs, "b", 0.0..=1.0, ""), Some(1.0));
        assert_eq!(t.number(&mut errs, "c", 0.0..=1.0, ": a ratio"), None);
        assert_eq!(t.number(&mut errs, "d", 0.0..=1.0, ""), None);
        assert_eq!(t.number(&mut errs, "missing", 0.0..=1.0, ""), None);
        t.finish(&mut errs);
        let got: Vec<String> = errs.list.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "line 3: c: 1.5 is out of range (0..=1): a ratio",
                "line 4: d: expected a number, found a string",
            ],
            "{got:?}"
        );
    }
}

//! Kubernetes label and field selectors: parsing and matching, the way
//! k8s.io/apimachinery's `labels` and `fields` packages do them.
//!
//! Why: while the cloud is unreachable, yurthub answers list and watch requests
//! from its local cache, and must filter them as kube-apiserver would: the same
//! objects for the same `labelSelector` and `fieldSelector`, and a rejection
//! for a selector the apiserver would reject.
//!
//! Label selectors are parsed with kube's grammar and key and value rules
//! (qualified-name keys, label-syntax values), including the `>` and `<`
//! integer comparisons the apiserver accepts. Field selectors are split,
//! unescaped and compared like `fields.ParseSelector`; the field's value is
//! read from the object's JSON by its dotted path.
//!
//! Two limits: the apiserver also rejects field names that the resource does
//! not support (`field label not supported`), which needs per-resource
//! knowledge and is left to callers; and it reads fields from typed objects,
//! so a field the JSON omits when it holds its default (`spec.hostNetwork`
//! when false) compares here as the empty string, not as `false`.
//!
//! Pure: no I/O. Selector strings arrive already percent-decoded.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

/// A selector that cannot be parsed. Displayed as one line naming the selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError(pub String);

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SelectorError {}

/// A parsed `labelSelector`: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    /// `key=v`, `key==v`, `key in (v, ...)`: present, with one of the values.
    In(String, BTreeSet<String>),
    /// `key!=v`, `key notin (v, ...)`: absent, or present with none of the values.
    NotIn(String, BTreeSet<String>),
    /// `key`
    Exists(String),
    /// `!key`
    DoesNotExist(String),
    /// `key>n`: present, an integer, and greater than n.
    GreaterThan(String, i64),
    /// `key<n`: present, an integer, and less than n.
    LessThan(String, i64),
}

impl LabelRequirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let integer = |key: &String| labels.get(key).and_then(|v| v.parse::<i64>().ok());
        match self {
            LabelRequirement::In(key, values) => {
                labels.get(key).is_some_and(|v| values.contains(v))
            }
            LabelRequirement::NotIn(key, values) => {
                labels.get(key).is_none_or(|v| !values.contains(v))
            }
            LabelRequirement::Exists(key) => labels.contains_key(key),
            LabelRequirement::DoesNotExist(key) => !labels.contains_key(key),
            LabelRequirement::GreaterThan(key, bound) => integer(key).is_some_and(|n| n > *bound),
            LabelRequirement::LessThan(key, bound) => integer(key).is_some_and(|n| n < *bound),
        }
    }
}

impl LabelSelector {
    /// Parses the `labelSelector` query value (already percent-decoded). Empty string = everything.
    pub fn parse(text: &str) -> Result<LabelSelector, SelectorError> {
        let parser = LabelParser {
            tokens: tokenize(text),
            position: 0,
        };
        let requirements = parser.parse().map_err(|detail| {
            SelectorError(format!("invalid label selector {text:?}: {detail}"))
        })?;
        Ok(LabelSelector { requirements })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// No requirements: selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Identifier(String),
    Not,
    NotEquals,
    Equals,
    DoubleEquals,
    GreaterThan,
    LessThan,
    Open,
    Close,
    Comma,
    End,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let symbol = match self {
            Token::Identifier(text) => return write!(f, "'{text}'"),
            Token::End => return f.write_str("end of string"),
            Token::Not => "!",
            Token::NotEquals => "!=",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::GreaterThan => ">",
            Token::LessThan => "<",
            Token::Open => "(",
            Token::Close => ")",
            Token::Comma => ",",
        };
        write!(f, "'{symbol}'")
    }
}

/// Whitespace as kube's selector lexer knows it.
fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

/// Splits a label selector into tokens, ending with [`Token::End`]. An
/// identifier is any run of characters other than whitespace and symbols;
/// `in` and `notin` are identifiers the parser reads as operators where one is due.
fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(is_whitespace);
        let mut chars = rest.chars();
        let Some(first) = chars.next() else { break };
        if is_special(first) {
            let (token, len) = match (first, chars.next()) {
                ('!', Some('=')) => (Token::NotEquals, 2),
                ('=', Some('=')) => (Token::DoubleEquals, 2),
                ('!', _) => (Token::Not, 1),
                ('=', _) => (Token::Equals, 1),
                ('>', _) => (Token::GreaterThan, 1),
                ('<', _) => (Token::LessThan, 1),
                ('(', _) => (Token::Open, 1),
                (')', _) => (Token::Close, 1),
                _ => (Token::Comma, 1),
            };
            tokens.push(token);
            rest = &rest[len..];
        } else {
            let end = rest
                .find(|c| is_whitespace(c) || is_special(c))
                .unwrap_or(rest.len());
            tokens.push(Token::Identifier(rest[..end].to_string()));
            rest = &rest[end..];
        }
    }
    tokens.push(Token::End);
    tokens
}

struct LabelParser {
    /// Ends with [`Token::End`]; `position` never moves past it.
    tokens: Vec<Token>,
    position: usize,
}

impl LabelParser {
    fn peek(&self) -> &Token {
        self.tokens.get(self.position).unwrap_or(&Token::End)
    }

    fn next(&mut self) -> Token {
        let token = self.peek().clone();
        if token != Token::End {
            self.position += 1;
        }
        token
    }

    fn parse(mut self) -> Result<Vec<LabelRequirement>, String> {
        let mut requirements = Vec::new();
        if *self.peek() == Token::End {
            return Ok(requirements);
        }
        loop {
            requirements.push(self.requirement()?);
            match self.next() {
                Token::End => return Ok(requirements),
                Token::Comma => {}
                other => return Err(format!("found {other}, expected ',' or end of string")),
            }
        }
    }

    fn requirement(&mut self) -> Result<LabelRequirement, String> {
        let negated = *self.peek() == Token::Not;
        if negated {
            self.next();
        }
        let key = match self.next() {
            Token::Identifier(key) => key,
            other => return Err(format!("found {other}, expected a label key")),
        };
        validate_key(&key)?;
        if matches!(self.peek(), Token::End | Token::Comma) {
            return Ok(if negated {
                LabelRequirement::DoesNotExist(key)
            } else {
                LabelRequirement::Exists(key)
            });
        }
        if negated {
            return Err(format!(
                "found {}, expected ',' or end of string after '!{key}'",
                self.peek()
            ));
        }
        let requirement = match self.next() {
            Token::Equals | Token::DoubleEquals => {
                LabelRequirement::In(key, BTreeSet::from([self.exact_value()?]))
            }
            Token::NotEquals => LabelRequirement::NotIn(key, BTreeSet::from([self.exact_value()?])),
            Token::Identifier(word) if word == "in" => LabelRequirement::In(key, self.value_set()?),
            Token::Identifier(word) if word == "notin" => {
                LabelRequirement::NotIn(key, self.value_set()?)
            }
            Token::GreaterThan => LabelRequirement::GreaterThan(key, self.integer_value()?),
            Token::LessThan => LabelRequirement::LessThan(key, self.integer_value()?),
            other => {
                return Err(format!(
                    "found {other}, expected an operator: =, ==, !=, in, notin, >, <"
                ));
            }
        };
        Ok(requirement)
    }

    /// The value after `=`, `==`, `!=`, `>` or `<`; empty when none follows.
    fn exact_value(&mut self) -> Result<String, String> {
        if matches!(self.peek(), Token::End | Token::Comma) {
            return Ok(String::new());
        }
        match self.next() {
            Token::Identifier(value) => {
                validate_value(&value)?;
                Ok(value)
            }
            other => Err(format!("found {other}, expected a value")),
        }
    }

    fn integer_value(&mut self) -> Result<i64, String> {
        let value = self.exact_value()?;
        value
            .parse()
            .map_err(|_| format!("'{value}' is not an integer, as '>' and '<' need"))
    }

    /// `(v1, v2, ...)` after `in` or `notin`. As in kube, an empty item is
    /// the empty value: `()` is the set holding only "".
    fn value_set(&mut self) -> Result<BTreeSet<String>, String> {
        match self.next() {
            Token::Open => {}
            other => return Err(format!("found {other}, expected '('")),
        }
        let mut values = BTreeSet::new();
        loop {
            let value = match self.peek() {
                Token::Comma | Token::Close => String::new(),
                Token::Identifier(_) => self.exact_value()?,
                other => return Err(format!("found {other}, expected a value, ',' or ')'")),
            };
            values.insert(value);
            match self.next() {
                Token::Comma => {}
                Token::Close => return Ok(values),
                other => return Err(format!("found {other}, expected ',' or ')'")),
            }
        }
    }
}

/// A label key: a qualified name, `[prefix/]name`, as `validation.IsQualifiedName`.
fn validate_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let problem = if name.contains('/') {
        "at most one '/' is allowed"
    } else if prefix == Some("") {
        "the prefix before '/' must not be empty"
    } else if prefix.is_some_and(|p| !is_dns_subdomain(p)) {
        "the prefix before '/' must be a lowercase DNS subdomain of at most 253 characters"
    } else if name.is_empty() {
        "the name must not be empty"
    } else if name.len() > 63 {
        "the name must be at most 63 characters"
    } else if !is_label_word(name) {
        "the name must be alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
    } else {
        return Ok(());
    };
    Err(format!("invalid label key '{key}': {problem}"))
}

/// A label value, as `validation.IsValidLabelValue`: empty, or a label word
/// of at most 63 characters.
fn validate_value(value: &str) -> Result<(), String> {
    let problem = if value.len() > 63 {
        "must be at most 63 characters"
    } else if !value.is_empty() && !is_label_word(value) {
        "must be alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
    } else {
        return Ok(());
    };
    Err(format!("invalid label value '{value}': {problem}"))
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_label_word(text: &str) -> bool {
    let bytes = text.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// RFC 1123 subdomain: dot-separated lowercase labels of `[a-z0-9-]`, each
/// starting and ending with an alphanumeric; at most 253 characters.
fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253
        && text.split('.').all(|label| {
            let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            let bytes = label.as_bytes();
            bytes.first().is_some_and(alphanumeric)
                && bytes.last().is_some_and(alphanumeric)
                && bytes.iter().all(|b| alphanumeric(b) || *b == b'-')
        })
}

/// A parsed `fieldSelector`: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldRequirement {
    /// Dotted path into the object: `spec.nodeName`.
    field: String,
    /// Unescaped.
    value: String,
    /// `=` or `==`; otherwise `!=`.
    equal: bool,
}

impl FieldSelector {
    /// Parses the `fieldSelector` query value. Empty = everything.
    ///
    /// As in kube, terms are not trimmed (`a = b` names the field `a `, which
    /// is rejected here as the apiserver rejects it) and empty terms are skipped.
    pub fn parse(text: &str) -> Result<FieldSelector, SelectorError> {
        let fail =
            |detail: String| SelectorError(format!("invalid field selector {text:?}: {detail}"));
        let mut requirements = Vec::new();
        for term in split_terms(text).filter(|term| !term.is_empty()) {
            let (field, equal, raw_value) = split_term(term).ok_or_else(|| {
                fail(format!(
                    "can't understand '{term}', expected field=value, field==value or field!=value"
                ))
            })?;
            validate_field(field).map_err(fail)?;
            let value = unescape(raw_value).map_err(fail)?;
            requirements.push(FieldRequirement {
                field: field.to_string(),
                value,
                equal,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// Matches against a whole object as JSON. Field paths are dotted (`metadata.name`,
    /// `spec.nodeName`, `status.phase`, `involvedObject.kind`, `type`...).
    ///
    /// A missing field (or JSON null) reads as the empty string, a string as
    /// its value, anything else as its JSON text (`true`, `3`).
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements
            .iter()
            .all(|r| (field_value(object, &r.field) == r.value.as_str()) == r.equal)
    }

    /// Matches with each field's value read by `value` (a field the reader
    /// does not have reads as the empty string, as on an object).
    pub fn matches_values<'a>(&self, value: impl Fn(&str) -> &'a str) -> bool {
        self.requirements
            .iter()
            .all(|r| (value(&r.field) == r.value.as_str()) == r.equal)
    }

    /// The value required by `metadata.name=X` / `metadata.name==X`, if the selector has one.
    pub fn required_name(&self) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.equal && r.field == "metadata.name")
            .map(|r| r.value.as_str())
    }

    /// No requirements: selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The field paths the requirements name.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.requirements.iter().map(|r| r.field.as_str())
    }
}

/// Splits on commas not escaped by a backslash.
fn split_terms(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        let mut escaped = false;
        for (i, c) in current.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                ',' => {
                    rest = Some(&current[i + 1..]);
                    return Some(&current[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(current)
    })
}

/// `field op value` at the first operator (`!=`, `==`, `=`) in the term;
/// returns the field, whether the operator is an equality, and the raw value.
fn split_term(term: &str) -> Option<(&str, bool, &str)> {
    term.char_indices().find_map(|(i, _)| {
        let rest = &term[i..];
        [("!=", false), ("==", true), ("=", true)]
            .into_iter()
            .find_map(|(operator, equal)| {
                rest.strip_prefix(operator)
                    .map(|value| (&term[..i], equal, value))
            })
    })
}

/// A dotted path of names made of alphanumerics, `_` and `-`.
fn validate_field(field: &str) -> Result<(), String> {
    if field.is_empty() {
        return Err("empty field name".to_string());
    }
    let well_formed = field.split('.').all(|name| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    });
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "invalid field name '{field}', expected a dotted path such as 'spec.nodeName'"
        ))
    }
}

/// Undoes `\\`, `\,` and `\=`; an unescaped `,` or `=`, another escape, or
/// a trailing backslash is an error, as in kube's `fields.UnescapeValue`.
fn unescape(raw: &str) -> Result<String, String> {
    let mut value = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('\\' | ',' | '=')) => value.push(escaped),
                Some(other) => return Err(format!("invalid escape sequence '\\{other}'")),
                None => return Err("value ends with a lone '\\'".to_string()),
            },
            ',' | '=' => return Err(format!("unescaped '{c}' in value '{raw}'")),
            _ => value.push(c),
        }
    }
    Ok(value)
}

/// A field's value as `FieldSelector::matches` reads it: missing or null is
/// empty, a string is itself, anything else its JSON text.
pub fn field_value<'a>(object: &'a Value, path: &str) -> Cow<'a, str> {
    let mut current = object;
    for name in path.split('.') {
        match current.get(name) {
            Some(inner) => current = inner,
            None => return Cow::Borrowed(""),
        }
    }
    match current {
        Value::String(text) => Cow::Borrowed(text),
        Value::Null => Cow::Borrowed(""),
        other => Cow::Owned(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `"a=1,b="` as a label set; `""` is no labels.
    fn labels(pairs: &str) -> BTreeMap<String, String> {
        pairs
            .split(',')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    /// Parses `selector` and checks it against each `(labels, selected)` case.
    fn check(selector: &str, cases: &[(&str, bool)]) {
        let parsed = LabelSelector::parse(selector).unwrap_or_else(|e| panic!("{e}"));
        for &(set, want) in cases {
            assert_eq!(
                parsed.matches(&labels(set)),
                want,
                "{selector:?} against {{{set}}}"
            );
        }
    }

    /// `selector` is rejected with a message containing `fragment`.
    fn check_rejected(selector: &str, fragment: &str) {
        let err = LabelSelector::parse(selector).expect_err(selector);
        let prefix = format!("invalid label selector {selector:?}: ");
        assert!(err.0.starts_with(&prefix), "{selector:?}: {err}");
        assert!(err.0.contains(fragment), "{selector:?}: {err}");
    }

    #[test]
    fn empty_label_selectors_select_everything() {
        for selector in ["", "  ", "\t\n"] {
            check(selector, &[("", true), ("a=1", true)]);
            assert!(LabelSelector::parse(selector).unwrap().is_empty());
        }
        assert!(!LabelSelector::parse("a").unwrap().is_empty());
        assert!(LabelSelector::default().is_empty());
    }

    #[test]
    fn equality_operators() {
        for selector in ["app=web", "app==web"] {
            check(
                selector,
                &[
                    ("app=web", true),
                    ("app=db", false),
                    ("", false),
                    ("x=web", false),
                ],
            );
        }
        check(
            "app!=web",
            &[
                ("app=web", false),
                ("app=db", true),
                ("", true),
                ("x=web", true),
            ],
        );
        check("app=", &[("app=", true), ("app=web", false), ("", false)]);
        check("app!=", &[("app=", false), ("app=web", true), ("", true)]);
        check("app=in", &[("app=in", true)]);
    }

    #[test]
    fn set_operators() {
        let in_set = "tier in (web,db)";
        check(
            in_set,
            &[
                ("tier=web", true),
                ("tier=db", true),
                ("tier=x", false),
                ("", false),
            ],
        );
        check(
            "tier notin (web,db)",
            &[
                ("tier=web", false),
                ("tier=db", false),
                ("tier=x", true),
                ("", true),
            ],
        );
        check(
            "tier in ()",
            &[("tier=", true), ("tier=web", false), ("", false)],
        );
        check(
            "tier in (web,)",
            &[("tier=", true), ("tier=web", true), ("tier=x", false)],
        );
        check(
            "tier notin ()",
            &[("tier=", false), ("tier=web", true), ("", true)],
        );
        check("in in (in,notin)", &[("in=notin", true), ("in=x", false)]);
    }

    #[test]
    fn existence_operators() {
        check(
            "app",
            &[
                ("app=", true),
                ("app=web", true),
                ("", false),
                ("x=1", false),
            ],
        );
        check(
            "!app",
            &[
                ("app=", false),
                ("app=web", false),
                ("", true),
                ("x=1", true),
            ],
        );
    }

    #[test]
    fn integer_comparisons() {
        check(
            "replicas>2",
            &[
                ("replicas=3", true),
                ("replicas=2", false),
                ("replicas=x", false),
                ("", false),
            ],
        );
        check(
            "replicas<2",
            &[
                ("replicas=1", true),
                ("replicas=2", false),
                ("replicas=-5", true),
                ("", false),
            ],
        );
    }

    #[test]
    fn requirements_all_hold_and_sets_keep_their_commas() {
        let selector = "app=web,tier in (a,b),!canary,env notin (prod)";
        check(
            selector,
            &[
                ("app=web,tier=a", true),
                ("app=web,tier=b,env=dev", true),
                ("app=web,tier=c", false),
                ("app=web,tier=a,canary=", false),
                ("app=web,tier=a,env=prod", false),
                ("tier=a", false),
            ],
        );
    }

    #[test]
    fn prefixed_keys() {
        check(
            "app.kubernetes.io/name=coredns,node-role.kubernetes.io/edge,!node-role.kubernetes.io/control-plane",
            &[
                (
                    "app.kubernetes.io/name=coredns,node-role.kubernetes.io/edge=",
                    true,
                ),
                ("app.kubernetes.io/name=coredns", false),
                ("name=coredns,node-role.kubernetes.io/edge=", false),
                (
                    "app.kubernetes.io/name=coredns,node-role.kubernetes.io/edge=,node-role.kubernetes.io/control-plane=",
                    false,
                ),
            ],
        );
        check("my_key.x-y=v_1.2-3", &[("my_key.x-y=v_1.2-3", true)]);
    }

    #[test]
    fn whitespace_around_tokens() {
        check(
            "  app = web ,tier  in ( a , b ) ,  ! canary,\tenv!= prod ",
            &[("app=web,tier=b", true), ("app=web,tier=b,env=prod", false)],
        );
        check("app == web", &[("app=web", true)]);
        check("tier notin(a)", &[("tier=b", true), ("tier=a", false)]);
    }

    #[test]
    fn malformed_label_selectors_are_rejected() {
        for (selector, fragment) in [
            (
                "a in (",
                "found end of string, expected a value, ',' or ')'",
            ),
            ("a in (b", "found end of string, expected ',' or ')'"),
            ("a in (b c)", "found 'c', expected ',' or ')'"),
            ("a in (b))", "found ')', expected ',' or end of string"),
            ("a in b", "found 'b', expected '('"),
            ("a in", "found end of string, expected '('"),
            ("a notin", "expected '('"),
            ("a in (=)", "found '=', expected a value"),
            ("(a)", "found '(', expected a label key"),
            ("=b", "found '=', expected a label key"),
            ("!=b", "found '!=', expected a label key"),
            ("!", "found end of string, expected a label key"),
            (
                "!a=b",
                "found '=', expected ',' or end of string after '!a'",
            ),
            ("a=b,", "found end of string, expected a label key"),
            (",a=b", "found ',', expected a label key"),
            ("a=b,,c", "found ',', expected a label key"),
            ("a b", "found 'b', expected an operator"),
            ("a ~ b", "found '~', expected an operator"),
            ("a=b c", "found 'c', expected ',' or end of string"),
            ("a=b=c", "found '=', expected ',' or end of string"),
            ("a===b", "found '=', expected a value"),
            ("a=(b)", "found '(', expected a value"),
            ("a>b", "'b' is not an integer"),
            ("a>", "'' is not an integer"),
            ("a>=1", "found '=', expected a value"),
            ("a<-1", "invalid label value '-1'"),
            ("a/b/c=d", "at most one '/' is allowed"),
            ("/a=b", "prefix before '/' must not be empty"),
            ("a/=b", "name must not be empty"),
            ("Example.com/a=b", "lowercase DNS subdomain"),
            ("example..com/a=b", "lowercase DNS subdomain"),
            ("-a=b", "invalid label key '-a'"),
            ("a.=b", "invalid label key 'a.'"),
            ("ä=b", "invalid label key 'ä'"),
            ("a=-b", "invalid label value '-b'"),
            ("a in (b,c_)", "invalid label value 'c_'"),
            ("a=b:c", "invalid label value 'b:c'"),
        ] {
            check_rejected(selector, fragment);
        }
        let long = "x".repeat(64);
        check_rejected(&format!("{long}=a"), "at most 63 characters");
        check_rejected(&format!("a={long}"), "at most 63 characters");
        check(&format!("{}=a", "x".repeat(63)), &[("", false)]);
        let long_prefix = format!("{}/a", "x".repeat(254));
        check_rejected(&long_prefix, "DNS subdomain");
    }

    #[test]
    fn label_error_message_names_the_selector() {
        let err = LabelSelector::parse("a in (").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid label selector "a in (": found end of string, expected a value, ',' or ')'"#
        );
        let _: &dyn std::error::Error = &err;
    }

    fn scheduled_pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
            "spec": {"nodeName": "edge-1", "hostNetwork": true, "priority": 3},
            "status": {"phase": "Running", "nominatedNodeName": null}
        })
    }

    fn other_node_pod() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"nodeName": "edge-2"},
            "status": {"phase": "Running"}
        })
    }

    fn pending_pod() -> Value {
        json!({
            "metadata": {"name": "coredns", "namespace": "default"},
            "spec": {},
            "status": {"phase": "Pending"}
        })
    }

    fn event() -> Value {
        json!({
            "metadata": {"name": "edge-1.17a", "namespace": "default"},
            "involvedObject": {"kind": "Node", "name": "edge-1"},
            "type": "Warning",
            "reason": r"a,b=c\d"
        })
    }

    /// Parses `selector` and checks it against each `(object, selected)` case.
    fn check_field(selector: &str, cases: &[(Value, bool)]) {
        let parsed = FieldSelector::parse(selector).unwrap_or_else(|e| panic!("{e}"));
        for (object, want) in cases {
            assert_eq!(
                parsed.matches(object),
                *want,
                "{selector:?} against {object}"
            );
        }
    }

    /// `selector` is rejected with a message containing `fragment`.
    fn check_field_rejected(selector: &str, fragment: &str) {
        let err = FieldSelector::parse(selector).expect_err(selector);
        let prefix = format!("invalid field selector {selector:?}: ");
        assert!(err.0.starts_with(&prefix), "{selector:?}: {err}");
        assert!(err.0.contains(fragment), "{selector:?}: {err}");
    }

    #[test]
    fn empty_field_selectors_select_everything() {
        for selector in ["", ",", ",,"] {
            check_field(selector, &[(scheduled_pod(), true), (json!({}), true)]);
            let parsed = FieldSelector::parse(selector).unwrap();
            assert!(parsed.is_empty());
            assert_eq!(parsed.required_name(), None);
        }
        assert!(FieldSelector::default().is_empty());
    }

    #[test]
    fn kubelet_selects_its_own_pods() {
        for selector in ["spec.nodeName=edge-1", "spec.nodeName==edge-1"] {
            check_field(
                selector,
                &[
                    (scheduled_pod(), true),
                    (other_node_pod(), false),
                    (pending_pod(), false),
                ],
            );
        }
        check_field(
            "spec.nodeName!=edge-1",
            &[
                (scheduled_pod(), false),
                (other_node_pod(), true),
                (pending_pod(), true),
            ],
        );
    }

    #[test]
    fn missing_fields_compare_as_empty() {
        check_field(
            "spec.nodeName=",
            &[
                (scheduled_pod(), false),
                (pending_pod(), true),
                (json!({}), true),
            ],
        );
        check_field(
            "spec.nodeName!=",
            &[(scheduled_pod(), true), (pending_pod(), false)],
        );
        check_field("status.nominatedNodeName=", &[(scheduled_pod(), true)]);
        // Through a string: still missing.
        check_field("metadata.name.first=", &[(scheduled_pod(), true)]);
        check_field("metadata.name.first!=", &[(scheduled_pod(), false)]);
    }

    #[test]
    fn nested_and_top_level_fields() {
        check_field(
            "metadata.namespace=kube-system,metadata.name=coredns",
            &[
                (scheduled_pod(), true),
                (pending_pod(), false),
                (other_node_pod(), false),
            ],
        );
        check_field(
            "status.phase!=Running",
            &[(scheduled_pod(), false), (pending_pod(), true)],
        );
        check_field(
            "involvedObject.kind=Node,involvedObject.name=edge-1,type=Warning",
            &[(event(), true), (scheduled_pod(), false)],
        );
        check_field("type!=Normal", &[(event(), true)]);
    }

    #[test]
    fn non_string_fields_compare_by_json_text() {
        check_field(
            "spec.hostNetwork=true",
            &[(scheduled_pod(), true), (pending_pod(), false)],
        );
        check_field("spec.priority=3", &[(scheduled_pod(), true)]);
        check_field("spec.priority!=3", &[(scheduled_pod(), false)]);
        // The JSON omits a false hostNetwork; the apiserver would read "false".
        check_field("spec.hostNetwork=false", &[(pending_pod(), false)]);
    }

    #[test]
    fn field_values_are_unescaped() {
        check_field(r"reason=a\,b\=c\\d", &[(event(), true)]);
        check_field(r"reason!=a\,b\=c\\d", &[(event(), false)]);
        check_field(r"type=Warning,reason=a\,b\=c\\d", &[(event(), true)]);
        check_field(r"reason=a\,b", &[(event(), false)]);
        let parsed = FieldSelector::parse(r"metadata.name=x\\,type=y").unwrap();
        assert_eq!(parsed.required_name(), Some(r"x\"));
    }

    #[test]
    fn required_name() {
        for (selector, want) in [
            ("metadata.name=coredns", Some("coredns")),
            ("metadata.name==coredns", Some("coredns")),
            (
                "metadata.namespace=kube-system,metadata.name=coredns",
                Some("coredns"),
            ),
            ("metadata.name!=coredns", None),
            ("metadata.namespace=coredns", None),
            ("spec.nodeName=edge-1", None),
            ("metadata.name=", Some("")),
        ] {
            let parsed = FieldSelector::parse(selector).unwrap();
            assert_eq!(parsed.required_name(), want, "{selector:?}");
        }
    }

    #[test]
    fn malformed_field_selectors_are_rejected() {
        for (selector, fragment) in [
            ("spec.nodeName", "can't understand 'spec.nodeName'"),
            ("a=b,spec.nodeName", "can't understand 'spec.nodeName'"),
            (" ", "can't understand ' '"),
            ("=edge-1", "empty field name"),
            ("!=edge-1", "empty field name"),
            ("spec..nodeName=x", "invalid field name 'spec..nodeName'"),
            (".spec=x", "invalid field name '.spec'"),
            ("spec.nodeName =x", "invalid field name 'spec.nodeName '"),
            ("a!b=c", "invalid field name 'a!b'"),
            ("a=b=c", "unescaped '=' in value 'b=c'"),
            ("a===b", "unescaped '=' in value '=b'"),
            (r"a=b\", r"value ends with a lone '\'"),
            (r"a=b\x", r"invalid escape sequence '\x'"),
        ] {
            check_field_rejected(selector, fragment);
        }
        let err = FieldSelector::parse("spec.nodeName").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid field selector \"spec.nodeName\": can't understand 'spec.nodeName', \
             expected field=value, field==value or field!=value"
        );
    }

    #[test]
    fn field_terms_split_on_unescaped_commas_only() {
        let terms: Vec<&str> = split_terms(r"a=x\,y,b=z\\,c=").collect();
        assert_eq!(terms, [r"a=x\,y", r"b=z\\", "c="]);
        assert_eq!(split_terms("").collect::<Vec<_>>(), [""]);
    }

    /// Any selector text: parsing never panics, and a selector that parses
    /// gives the same answer every time it is asked.
    #[test]
    fn generated_selectors_never_panic_and_match_deterministically() {
        let label_sets = [
            labels(""),
            labels("app=web,tier=front"),
            labels("app=db,release=9223372036854775807,n=-3"),
            labels("a.b/c=x,env="),
        ];
        let objects = [
            json!({}),
            json!({"metadata": {"name": "p1", "namespace": "edge"}, "spec": {"nodeName": "edge-1", "replicas": 3}}),
            json!({"type": "Normal", "involvedObject": {"kind": "Pod"}, "status": {"phase": null}}),
        ];
        let seeds = [
            "app=web,tier in (front,back),!canary",
            "env notin (prod),release>3,n<-2,a.b/c",
            "app==web, tier!=db,example.com/key in ()",
            "metadata.name=p1,spec.nodeName!=edge-2",
            r"metadata.namespace==edge,status.phase=Running\,x,type=a\=b",
            "",
        ];
        crate::fuzz::run_text(0x5eed_0005, &seeds, 20_000, |text| {
            if let Ok(selector) = LabelSelector::parse(text) {
                for set in &label_sets {
                    assert_eq!(selector.matches(set), selector.matches(set), "{text:?}");
                }
                assert_eq!(LabelSelector::parse(text).unwrap(), selector);
            }
            if let Ok(selector) = FieldSelector::parse(text) {
                for object in &objects {
                    assert_eq!(
                        selector.matches(object),
                        selector.matches(object),
                        "{text:?}"
                    );
                }
                let _ = (selector.required_name(), selector.fields().count());
                assert_eq!(FieldSelector::parse(text).unwrap(), selector);
            }
        });
    }

    #[test]
    fn field_values_read_by_a_function_match_as_on_the_object() {
        let object = serde_json::json!({
            "metadata": {"name": "p1", "namespace": "a"},
            "spec": {"nodeName": "edge-1"}
        });
        let value = |field: &str| match field {
            "metadata.name" => "p1",
            "metadata.namespace" => "a",
            "spec.nodeName" => "edge-1",
            _ => "",
        };
        for text in [
            "",
            "spec.nodeName=edge-1",
            "spec.nodeName=edge-2",
            "spec.nodeName!=edge-1",
            "metadata.name=p1,metadata.namespace=a",
            "metadata.name==p1,spec.nodeName!=x",
            "status.phase=",
            "status.phase!=Running",
        ] {
            let selector = FieldSelector::parse(text).unwrap();
            assert_eq!(
                selector.matches_values(value),
                selector.matches(&object),
                "{text}"
            );
        }
    }
}

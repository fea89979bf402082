//! weir's selector expression language, and the conversion of Kubernetes label selectors
//! into it.
//!
//! The syntax is Calico's, so selectors written for Calico work unchanged:
//!
//! | expression                 | matches a label set that...                                |
//! |----------------------------|------------------------------------------------------------|
//! | `all()` or the empty string | always                                                    |
//! | `k == "v"`                 | has `k` with value `v`                                     |
//! | `k != "v"`                 | does not have `k` with value `v` (**absent `k` matches**)  |
//! | `k in {"a", "b"}`          | has `k` with one of the values                             |
//! | `k not in {"a", "b"}`      | has no `k`, or `k` with none of the values (**absent matches**) |
//! | `has(k)` / `!has(k)`       | has / lacks the key `k`                                    |
//! | `k starts with "p"`        | has `k` and its value starts with `p` (absent: no match)   |
//! | `k ends with "s"`          | has `k` and its value ends with `s` (absent: no match)     |
//! | `k contains "s"`           | has `k` and its value contains `s` (absent: no match)      |
//! | `!e`, `e && e`, `e \|\| e`, `(e)` | negation, conjunction, disjunction, grouping        |
//! | `global()`                 | only meaningful as a rule's `namespaceSelector`: "no namespace", i.e. the cluster-wide objects (`GlobalNetworkSet`s). As a label predicate it matches nothing. |
//!
//! Precedence, tightest first: `!`, `&&`, `||`; `&&` and `||` associate to the left.
//! String literals are in double or single quotes and have no escapes (as in Calico): a
//! value containing `"` is written in single quotes and vice versa. Label keys are runs of
//! ASCII letters, digits, `_`, `.`, `/` and `-`, which covers every Kubernetes label key
//! (`app.kubernetes.io/name`). Words such as `has`, `in` or `all` are keywords only where
//! the grammar expects them, so they also work as label keys.
//!
//! # Why a hand-written parser
//!
//! The grammar is a dozen productions, and the errors are what users see when a policy is
//! wrong: they must say at which byte the problem is, what the parser could have accepted
//! there and what it found. A recursive-descent parser gives that directly, with each
//! expected-token list written where the decision is made; a generator would add a build
//! dependency and produce errors that need translating back into this language.
//!
//! # Kubernetes label selectors
//!
//! [`from_label_selector`] turns `matchLabels` and `matchExpressions` into the same AST, so
//! the policy compiler evaluates one kind of selector. The mapping is exact, including the
//! corner that surprises people: Kubernetes `NotIn` matches objects that do not have the key
//! at all, exactly like weir's `not in`; `DoesNotExist` becomes `!has(k)`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A label set: key to value, as on a Kubernetes object's `metadata.labels`.
pub type Labels = BTreeMap<String, String>;

/// A parsed selector expression.
///
/// Build one with [`Selector::parse`] (or `str::parse`) or [`from_label_selector`]; both only
/// produce label keys made of the characters listed in the module doc, which is what makes
/// [`Display`](fmt::Display) round-trip: `Selector::parse(&s.to_string()) == Ok(s)`. The one
/// value that cannot be written down is a string containing both quote characters (the
/// language has no escapes); neither constructor can produce it, since the parser cannot
/// read it and Kubernetes label values cannot contain quotes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    /// `all()` (or the empty selector): matches every label set.
    All,
    /// `global()`: the cluster-wide scope. Matches no label set; the policy compiler gives
    /// it its meaning where it is allowed (a rule's `namespaceSelector`).
    Global,
    /// `has(key)`.
    Has(String),
    /// `key == "value"`.
    Eq(String, String),
    /// `key != "value"`; also matches when `key` is absent.
    Ne(String, String),
    /// `key in {"a", "b"}`; does not match when `key` is absent.
    In(String, BTreeSet<String>),
    /// `key not in {"a", "b"}`; also matches when `key` is absent.
    NotIn(String, BTreeSet<String>),
    /// `key starts with "prefix"`.
    StartsWith(String, String),
    /// `key ends with "suffix"`.
    EndsWith(String, String),
    /// `key contains "needle"`.
    Contains(String, String),
    /// `!expr`.
    Not(Box<Selector>),
    /// `left && right`.
    And(Box<Selector>, Box<Selector>),
    /// `left || right`.
    Or(Box<Selector>, Box<Selector>),
}

/// A selector that does not parse: where, what the parser expected there, and what it found.
///
/// Displayed as
/// `at position 4: expected "==", "!=", "in", "not in", "starts with", "ends with" or
/// "contains" but found "=" (selector: app = "x")`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at position {position}: expected {expected} but found {} (selector: {selector})", found_text(.found))]
pub struct SelectorError {
    /// Byte offset into the selector text of the token that could not be accepted.
    pub position: usize,
    /// What would have been accepted there, as a human-readable list.
    pub expected: String,
    /// The text found at `position`; empty at the end of the input.
    pub found: String,
    /// The whole selector text, for context.
    pub selector: String,
}

/// A Kubernetes label selector that is not valid per the API's validation.
///
/// `field` is relative to the selector (`matchExpressions[1].values`); the caller prefixes
/// the path of the selector inside its object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct LabelSelectorError {
    /// Path of the offending field inside the label selector.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Selector {
    /// Parses a selector expression. The empty (or all-blank) string is [`Selector::All`].
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let mut parser = Parser { src: text, pos: 0 };
        if parser.peek()?.tok == Tok::End {
            return Ok(Selector::All);
        }
        let selector = parser.or_expr()?;
        let next = parser.peek()?;
        if next.tok != Tok::End {
            return Err(parser.error(next, "\"&&\", \"||\" or the end of the selector"));
        }
        Ok(selector)
    }

    /// Whether a label set satisfies this selector. See the module doc for how each operator
    /// treats an absent key.
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Selector::All => true,
            Selector::Global => false,
            Selector::Has(key) => labels.contains_key(key),
            Selector::Eq(key, value) => labels.get(key) == Some(value),
            Selector::Ne(key, value) => labels.get(key) != Some(value),
            Selector::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Selector::NotIn(key, values) => !labels.get(key).is_some_and(|v| values.contains(v)),
            Selector::StartsWith(key, prefix) => labels
                .get(key)
                .is_some_and(|v| v.starts_with(prefix.as_str())),
            Selector::EndsWith(key, suffix) => labels
                .get(key)
                .is_some_and(|v| v.ends_with(suffix.as_str())),
            Selector::Contains(key, needle) => {
                labels.get(key).is_some_and(|v| v.contains(needle.as_str()))
            }
            Selector::Not(inner) => !inner.matches(labels),
            Selector::And(left, right) => left.matches(labels) && right.matches(labels),
            Selector::Or(left, right) => left.matches(labels) || right.matches(labels),
        }
    }

    /// Whether this is `all()`, the selector that matches everything by construction.
    pub fn is_all(&self) -> bool {
        matches!(self, Selector::All)
    }

    /// Whether `global()` appears anywhere in the expression.
    pub fn mentions_global(&self) -> bool {
        match self {
            Selector::Global => true,
            Selector::Not(inner) => inner.mentions_global(),
            Selector::And(left, right) | Selector::Or(left, right) => {
                left.mentions_global() || right.mentions_global()
            }
            _ => false,
        }
    }

    /// The label keys the expression reads. Whether it matches a label set depends on
    /// these keys' values only, so a label change that touches none of them cannot change
    /// its result: the calculation's label index rests on this.
    pub fn keys<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Selector::All | Selector::Global => {}
            Selector::Has(k)
            | Selector::Eq(k, _)
            | Selector::Ne(k, _)
            | Selector::In(k, _)
            | Selector::NotIn(k, _)
            | Selector::StartsWith(k, _)
            | Selector::EndsWith(k, _)
            | Selector::Contains(k, _) => out.push(k),
            Selector::Not(inner) => inner.keys(out),
            Selector::And(left, right) | Selector::Or(left, right) => {
                left.keys(out);
                right.keys(out);
            }
        }
    }

    /// `self && other`.
    pub fn and(self, other: Selector) -> Selector {
        Selector::And(Box::new(self), Box::new(other))
    }

    fn precedence(&self) -> u8 {
        match self {
            Selector::Or(..) => 1,
            Selector::And(..) => 2,
            _ => 3,
        }
    }

    fn fmt_at(&self, f: &mut fmt::Formatter<'_>, min_precedence: u8) -> fmt::Result {
        if self.precedence() < min_precedence {
            f.write_str("(")?;
            self.fmt_at(f, 0)?;
            return f.write_str(")");
        }
        match self {
            Selector::All => f.write_str("all()"),
            Selector::Global => f.write_str("global()"),
            Selector::Has(key) => write!(f, "has({key})"),
            Selector::Eq(key, value) => write!(f, "{key} == {}", Quoted(value)),
            Selector::Ne(key, value) => write!(f, "{key} != {}", Quoted(value)),
            Selector::In(key, values) => write!(f, "{key} in {}", QuotedSet(values)),
            Selector::NotIn(key, values) => write!(f, "{key} not in {}", QuotedSet(values)),
            Selector::StartsWith(key, value) => write!(f, "{key} starts with {}", Quoted(value)),
            Selector::EndsWith(key, value) => write!(f, "{key} ends with {}", Quoted(value)),
            Selector::Contains(key, value) => write!(f, "{key} contains {}", Quoted(value)),
            Selector::Not(inner) => {
                f.write_str("!")?;
                inner.fmt_at(f, 3)
            }
            // Left-associative: a left operand of the same operator needs no parentheses,
            // a right one does (it was grouped explicitly).
            Selector::And(left, right) => {
                left.fmt_at(f, 2)?;
                f.write_str(" && ")?;
                right.fmt_at(f, 3)
            }
            Selector::Or(left, right) => {
                left.fmt_at(f, 1)?;
                f.write_str(" || ")?;
                right.fmt_at(f, 2)
            }
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_at(f, 0)
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Selector, SelectorError> {
        Selector::parse(text)
    }
}

/// Converts a Kubernetes `LabelSelector` into a [`Selector`], validating it as the API
/// server does (`ValidateLabelSelector` in apimachinery).
///
/// - `matchLabels` entries become `key == "value"`, in key order;
/// - `matchExpressions` become, in order: `In` → `key in {...}`, `NotIn` → `key not in {...}`
///   (which, like Kubernetes, matches objects without the key), `Exists` → `has(key)`,
///   `DoesNotExist` → `!has(key)`;
/// - all of them are ANDed; a selector with neither (`{}`) is `all()`.
///
/// Errors: an unknown operator; `In`/`NotIn` with no values; `Exists`/`DoesNotExist` with
/// values; keys that are not qualified names or values that are not label values.
pub fn from_label_selector(selector: &LabelSelector) -> Result<Selector, LabelSelectorError> {
    let mut terms = Vec::new();
    if let Some(match_labels) = &selector.match_labels {
        for (key, value) in match_labels {
            let field = || format!("matchLabels.{key}");
            validate_label_key(key).map_err(|message| LabelSelectorError {
                field: field(),
                message,
            })?;
            validate_label_value(value).map_err(|message| LabelSelectorError {
                field: field(),
                message,
            })?;
            terms.push(Selector::Eq(key.clone(), value.clone()));
        }
    }
    for (i, requirement) in selector.match_expressions.iter().flatten().enumerate() {
        let at = |sub: &str| format!("matchExpressions[{i}]{sub}");
        let key = &requirement.key;
        validate_label_key(key).map_err(|message| LabelSelectorError {
            field: at(".key"),
            message,
        })?;
        let values = requirement.values.as_deref().unwrap_or_default();
        let op = requirement.operator.as_str();
        match op {
            "In" | "NotIn" => {
                if values.is_empty() {
                    return Err(LabelSelectorError {
                        field: at(".values"),
                        message: format!(
                            "must be specified when `operator` is '{op}' (an empty set would \
                             match {})",
                            if op == "In" { "nothing" } else { "everything" }
                        ),
                    });
                }
                for (j, value) in values.iter().enumerate() {
                    validate_label_value(value).map_err(|message| LabelSelectorError {
                        field: at(&format!(".values[{j}]")),
                        message,
                    })?;
                }
                let set: BTreeSet<String> = values.iter().cloned().collect();
                terms.push(if op == "In" {
                    Selector::In(key.clone(), set)
                } else {
                    Selector::NotIn(key.clone(), set)
                });
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    return Err(LabelSelectorError {
                        field: at(".values"),
                        message: format!(
                            "may not be specified when `operator` is '{op}'; remove the values"
                        ),
                    });
                }
                let has = Selector::Has(key.clone());
                terms.push(if op == "Exists" {
                    has
                } else {
                    Selector::Not(Box::new(has))
                });
            }
            other => {
                return Err(LabelSelectorError {
                    field: at(".operator"),
                    message: format!(
                        "\"{other}\" is not a valid operator: use In, NotIn, Exists or \
                         DoesNotExist (case matters)"
                    ),
                })
            }
        }
    }
    let mut terms = terms.into_iter();
    Ok(match terms.next() {
        None => Selector::All,
        Some(first) => terms.fold(first, Selector::and),
    })
}

/// Checks a label key the way Kubernetes does (`IsQualifiedName`): an optional DNS-subdomain
/// prefix of at most 253 characters and a `/`, then a name of at most 63 characters made of
/// alphanumerics, `-`, `_` and `.`, beginning and ending with an alphanumeric.
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err(format!(
                "label key \"{key}\": the prefix before '/' must not be empty"
            ));
        }
        if let Err(why) = validate_dns_subdomain(prefix) {
            return Err(format!("label key \"{key}\": prefix {why}"));
        }
    }
    if name.is_empty() {
        return Err(format!(
            "label key \"{key}\": the name part must not be empty"
        ));
    }
    if name.len() > 63 {
        return Err(format!(
            "label key \"{key}\": the name part must be at most 63 characters"
        ));
    }
    if !is_label_word(name) {
        return Err(format!(
            "label key \"{key}\": the name part must consist of alphanumeric characters, '-', \
             '_' or '.', and must start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

/// Checks a label value the way Kubernetes does (`IsValidLabelValue`): empty, or at most 63
/// characters of alphanumerics, `-`, `_` and `.`, beginning and ending with an alphanumeric.
pub fn validate_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 63 {
        return Err(format!(
            "label value \"{value}\" must be at most 63 characters"
        ));
    }
    if !is_label_word(value) {
        return Err(format!(
            "label value \"{value}\" must consist of alphanumeric characters, '-', '_' or '.', \
             and must start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

/// Checks a DNS-1123 subdomain (lower-case alphanumerics, `-` and `.`, at most 253
/// characters, each dot-separated part starting and ending with an alphanumeric).
pub fn validate_dns_subdomain(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err(format!("\"{name}\" must be at most 253 characters"));
    }
    if name.split('.').all(is_dns_label) {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" must be a DNS subdomain: lower-case alphanumeric characters, '-' and \
             '.', starting and ending with an alphanumeric character"
        ))
    }
}

/// Checks a DNS-1123 label (lower-case alphanumerics and `-`, at most 63 characters,
/// starting and ending with an alphanumeric).
pub fn validate_dns_label(name: &str) -> Result<(), String> {
    if name.len() <= 63 && is_dns_label(name) {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" must be a DNS label: at most 63 lower-case alphanumeric characters or \
             '-', starting and ending with an alphanumeric character"
        ))
    }
}

fn is_dns_label(part: &str) -> bool {
    let bytes = part.as_bytes();
    let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && bytes.iter().all(|b| edge(b) || *b == b'-')
}

fn is_label_word(word: &str) -> bool {
    let bytes = word.as_bytes();
    let edge = |b: &u8| b.is_ascii_alphanumeric();
    bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && bytes
            .iter()
            .all(|b| edge(b) || matches!(b, b'-' | b'_' | b'.'))
}

fn found_text(found: &str) -> String {
    if found.is_empty() {
        "the end of the selector".to_owned()
    } else {
        format!("\"{found}\"")
    }
}

/// A string literal, in double quotes unless it contains one.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.contains('"') {
            write!(f, "'{}'", self.0)
        } else {
            write!(f, "\"{}\"", self.0)
        }
    }
}

struct QuotedSet<'a>(&'a BTreeSet<String>);

impl fmt::Display for QuotedSet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, value) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", Quoted(value))?;
        }
        f.write_str("}")
    }
}

const OPERATORS: &str =
    "\"==\", \"!=\", \"in\", \"not in\", \"starts with\", \"ends with\" or \"contains\"";
const TERM_START: &str = "a label key, \"has(\", \"all()\", \"global()\", \"!\" or \"(\"";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    Ident(&'a str),
    Str(&'a str),
    AndAnd,
    OrOr,
    Bang,
    EqEq,
    NotEq,
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    /// Anything else: reported as found where the parser expected something.
    Other,
    End,
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    tok: Tok<'a>,
    start: usize,
    end: usize,
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-')
}

impl<'a> Parser<'a> {
    /// Lexes the token at the current position without consuming it.
    fn peek(&self) -> Result<Token<'a>, SelectorError> {
        let bytes = self.src.as_bytes();
        let mut start = self.pos;
        while start < bytes.len() && bytes[start].is_ascii_whitespace() {
            start += 1;
        }
        let Some(&first) = bytes.get(start) else {
            return Ok(Token {
                tok: Tok::End,
                start,
                end: start,
            });
        };
        let two = bytes.get(start + 1).copied();
        let simple = |tok, len| {
            Ok(Token {
                tok,
                start,
                end: start + len,
            })
        };
        match (first, two) {
            (b'&', Some(b'&')) => simple(Tok::AndAnd, 2),
            (b'|', Some(b'|')) => simple(Tok::OrOr, 2),
            (b'=', Some(b'=')) => simple(Tok::EqEq, 2),
            (b'!', Some(b'=')) => simple(Tok::NotEq, 2),
            (b'!', _) => simple(Tok::Bang, 1),
            (b'(', _) => simple(Tok::LParen, 1),
            (b')', _) => simple(Tok::RParen, 1),
            (b'{', _) => simple(Tok::LBrace, 1),
            (b'}', _) => simple(Tok::RBrace, 1),
            (b',', _) => simple(Tok::Comma, 1),
            (b'"' | b'\'', _) => match self.src[start + 1..].find(first as char) {
                Some(len) => Ok(Token {
                    tok: Tok::Str(&self.src[start + 1..start + 1 + len]),
                    start,
                    end: start + len + 2,
                }),
                None => Err(SelectorError {
                    position: self.src.len(),
                    expected: format!(
                        "the closing {} of the string that starts at position {start}",
                        if first == b'"' { "'\"'" } else { "\"'\"" }
                    ),
                    found: String::new(),
                    selector: self.src.to_owned(),
                }),
            },
            _ if is_key_byte(first) => {
                let len = bytes[start..]
                    .iter()
                    .position(|&b| !is_key_byte(b))
                    .unwrap_or(bytes.len() - start);
                Ok(Token {
                    tok: Tok::Ident(&self.src[start..start + len]),
                    start,
                    end: start + len,
                })
            }
            _ => {
                // One character, which may be multi-byte.
                let len = self.src[start..].chars().next().map_or(1, char::len_utf8);
                simple(Tok::Other, len)
            }
        }
    }

    fn bump(&mut self, token: Token<'a>) {
        self.pos = token.end;
    }

    fn error(&self, token: Token<'a>, expected: &str) -> SelectorError {
        SelectorError {
            position: token.start,
            expected: expected.to_owned(),
            found: self.src[token.start..token.end].to_owned(),
            selector: self.src.to_owned(),
        }
    }

    fn expect(&mut self, want: Tok<'static>, expected: &str) -> Result<(), SelectorError> {
        let token = self.peek()?;
        if token.tok == want {
            self.bump(token);
            Ok(())
        } else {
            Err(self.error(token, expected))
        }
    }

    fn expect_word(&mut self, word: &str) -> Result<(), SelectorError> {
        let token = self.peek()?;
        if token.tok == Tok::Ident(word) {
            self.bump(token);
            Ok(())
        } else {
            Err(self.error(token, &format!("\"{word}\"")))
        }
    }

    fn or_expr(&mut self) -> Result<Selector, SelectorError> {
        let mut left = self.and_expr()?;
        loop {
            let token = self.peek()?;
            if token.tok != Tok::OrOr {
                return Ok(left);
            }
            self.bump(token);
            let right = self.and_expr()?;
            left = Selector::Or(Box::new(left), Box::new(right));
        }
    }

    fn and_expr(&mut self) -> Result<Selector, SelectorError> {
        let mut left = self.unary()?;
        loop {
            let token = self.peek()?;
            if token.tok != Tok::AndAnd {
                return Ok(left);
            }
            self.bump(token);
            let right = self.unary()?;
            left = Selector::And(Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Selector, SelectorError> {
        let token = self.peek()?;
        match token.tok {
            Tok::Bang => {
                self.bump(token);
                Ok(Selector::Not(Box::new(self.unary()?)))
            }
            Tok::LParen => {
                self.bump(token);
                let inner = self.or_expr()?;
                self.expect(Tok::RParen, "\")\", \"&&\" or \"||\"")?;
                Ok(inner)
            }
            Tok::Ident(word) => {
                self.bump(token);
                let after = self.peek()?;
                if after.tok == Tok::LParen {
                    match word {
                        "all" | "global" => {
                            self.bump(after);
                            self.expect(Tok::RParen, "\")\"")?;
                            return Ok(if word == "all" {
                                Selector::All
                            } else {
                                Selector::Global
                            });
                        }
                        "has" => {
                            self.bump(after);
                            let key = self.peek()?;
                            let Tok::Ident(key_text) = key.tok else {
                                return Err(self.error(key, "a label key"));
                            };
                            self.bump(key);
                            self.expect(Tok::RParen, "\")\"")?;
                            return Ok(Selector::Has(key_text.to_owned()));
                        }
                        _ => {}
                    }
                }
                self.comparison(word.to_owned())
            }
            _ => Err(self.error(token, TERM_START)),
        }
    }

    /// The operator and operand after a label key.
    fn comparison(&mut self, key: String) -> Result<Selector, SelectorError> {
        let token = self.peek()?;
        match token.tok {
            Tok::EqEq => {
                self.bump(token);
                Ok(Selector::Eq(key, self.string()?))
            }
            Tok::NotEq => {
                self.bump(token);
                Ok(Selector::Ne(key, self.string()?))
            }
            Tok::Ident("in") => {
                self.bump(token);
                Ok(Selector::In(key, self.set()?))
            }
            Tok::Ident("not") => {
                self.bump(token);
                self.expect_word("in")?;
                Ok(Selector::NotIn(key, self.set()?))
            }
            Tok::Ident("starts") => {
                self.bump(token);
                self.expect_word("with")?;
                Ok(Selector::StartsWith(key, self.string()?))
            }
            Tok::Ident("ends") => {
                self.bump(token);
                self.expect_word("with")?;
                Ok(Selector::EndsWith(key, self.string()?))
            }
            Tok::Ident("contains") => {
                self.bump(token);
                Ok(Selector::Contains(key, self.string()?))
            }
            _ => Err(self.error(token, OPERATORS)),
        }
    }

    fn string(&mut self) -> Result<String, SelectorError> {
        let token = self.peek()?;
        match token.tok {
            Tok::Str(text) => {
                self.bump(token);
                Ok(text.to_owned())
            }
            _ => Err(self.error(token, "a quoted string")),
        }
    }

    fn set(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        self.expect(Tok::LBrace, "\"{\"")?;
        let mut values = BTreeSet::new();
        let first = self.peek()?;
        if first.tok == Tok::RBrace {
            self.bump(first);
            return Ok(values);
        }
        loop {
            let token = self.peek()?;
            let Tok::Str(text) = token.tok else {
                return Err(self.error(token, "a quoted string"));
            };
            self.bump(token);
            values.insert(text.to_owned());
            let sep = self.peek()?;
            match sep.tok {
                Tok::Comma => self.bump(sep),
                Tok::RBrace => {
                    self.bump(sep);
                    return Ok(values);
                }
                _ => return Err(self.error(sep, "\",\" or \"}\"")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use proptest::prelude::*;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn sel(text: &str) -> Selector {
        Selector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn set(values: &[&str]) -> BTreeSet<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    fn key(k: &str) -> String {
        k.to_owned()
    }

    #[test]
    fn empty_and_all_select_everything() {
        assert_eq!(sel(""), Selector::All);
        assert_eq!(sel("  \t "), Selector::All);
        assert_eq!(sel("all()"), Selector::All);
        assert_eq!(sel(" all ( ) "), Selector::All);
        assert!(sel("").matches(&Labels::new()));
        assert!(sel("all()").matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn global_parses_and_matches_no_labels() {
        assert_eq!(sel("global()"), Selector::Global);
        assert!(!Selector::Global.matches(&Labels::new()));
        assert!(sel("!global()").matches(&Labels::new()));
        assert!(sel("a == 'b' || global()").mentions_global());
        assert!(!sel("has(global)").mentions_global());
    }

    #[test]
    fn every_operator_parses() {
        let eq = Selector::Eq(key("app"), key("web"));
        assert_eq!(sel("app == \"web\""), eq);
        assert_eq!(sel("app=='web'"), eq);
        assert_eq!(sel("app != 'web'"), Selector::Ne(key("app"), key("web")));
        assert_eq!(
            sel("tier in {\"a\", 'b'}"),
            Selector::In(key("tier"), set(&["a", "b"]))
        );
        assert_eq!(
            sel("tier not in {'a'}"),
            Selector::NotIn(key("tier"), set(&["a"]))
        );
        assert_eq!(sel("tier in {}"), Selector::In(key("tier"), set(&[])));
        assert_eq!(sel("has(app)"), Selector::Has(key("app")));
        assert_eq!(
            sel("!has(app)"),
            Selector::Not(Box::new(Selector::Has(key("app"))))
        );
        assert_eq!(
            sel("name starts with 'fr'"),
            Selector::StartsWith(key("name"), key("fr"))
        );
        assert_eq!(
            sel("name ends with 'nd'"),
            Selector::EndsWith(key("name"), key("nd"))
        );
        assert_eq!(
            sel("name contains 'on'"),
            Selector::Contains(key("name"), key("on"))
        );
    }

    #[test]
    fn kubernetes_label_keys_are_keys() {
        assert_eq!(
            sel("app.kubernetes.io/name == 'db'"),
            Selector::Eq(key("app.kubernetes.io/name"), key("db"))
        );
        assert_eq!(
            sel("has(example.com/some_key-2)"),
            Selector::Has(key("example.com/some_key-2"))
        );
    }

    #[test]
    fn keywords_are_keys_where_a_key_is_expected() {
        assert_eq!(sel("has == 'x'"), Selector::Eq(key("has"), key("x")));
        assert_eq!(sel("all != 'x'"), Selector::Ne(key("all"), key("x")));
        assert_eq!(sel("in in {'x'}"), Selector::In(key("in"), set(&["x"])));
        assert_eq!(sel("has(all)"), Selector::Has(key("all")));
        assert_eq!(
            sel("not not in {'x'}"),
            Selector::NotIn(key("not"), set(&["x"]))
        );
    }

    #[test]
    fn quotes_of_either_kind() {
        assert_eq!(
            sel("a == 'say \"hi\"'"),
            Selector::Eq(key("a"), key("say \"hi\""))
        );
        assert_eq!(sel("a == \"it's\""), Selector::Eq(key("a"), key("it's")));
        assert_eq!(sel("a == ''"), Selector::Eq(key("a"), String::new()));
    }

    #[test]
    fn precedence_not_then_and_then_or() {
        let a = || Box::new(Selector::Has(key("a")));
        let b = || Box::new(Selector::Has(key("b")));
        let c = || Box::new(Selector::Has(key("c")));
        assert_eq!(
            sel("has(a) || has(b) && has(c)"),
            Selector::Or(a(), Box::new(Selector::And(b(), c())))
        );
        assert_eq!(
            sel("has(a) && has(b) || has(c)"),
            Selector::Or(Box::new(Selector::And(a(), b())), c())
        );
        assert_eq!(
            sel("!has(a) && has(b)"),
            Selector::And(Box::new(Selector::Not(a())), b())
        );
        assert_eq!(
            sel("!(has(a) && has(b))"),
            Selector::Not(Box::new(Selector::And(a(), b())))
        );
        assert_eq!(
            sel("(has(a) || has(b)) && has(c)"),
            Selector::And(Box::new(Selector::Or(a(), b())), c())
        );
        // Left associativity.
        assert_eq!(
            sel("has(a) && has(b) && has(c)"),
            Selector::And(Box::new(Selector::And(a(), b())), c())
        );
        assert_eq!(sel("!!has(a)"), Selector::Not(Box::new(Selector::Not(a()))));
        assert_eq!(
            sel("!a == 'x'"),
            Selector::Not(Box::new(Selector::Eq(key("a"), key("x"))))
        );
    }

    #[test]
    fn matching_semantics_including_absent_keys() {
        let web = labels(&[("app", "web"), ("tier", "front"), ("name", "frontend")]);
        let none = Labels::new();
        let cases: &[(&str, bool, bool)] = &[
            // (selector, matches `web`, matches the empty label set)
            ("app == 'web'", true, false),
            ("app == 'db'", false, false),
            ("app != 'web'", false, true),
            ("app != 'db'", true, true),
            ("tier in {'front', 'back'}", true, false),
            ("tier in {'back'}", false, false),
            ("tier in {}", false, false),
            ("tier not in {'back'}", true, true),
            ("tier not in {'front'}", false, true),
            ("tier not in {}", true, true),
            ("has(app)", true, false),
            ("!has(app)", false, true),
            ("name starts with 'fr'", true, false),
            ("name starts with 'end'", false, false),
            ("name ends with 'end'", true, false),
            ("name contains 'ont'", true, false),
            ("name contains 'x'", false, false),
            ("name starts with ''", true, false),
            ("has(app) && tier == 'front'", true, false),
            ("has(app) && tier == 'back'", false, false),
            ("app == 'db' || tier == 'front'", true, false),
            ("!(app == 'db' || tier == 'front')", false, true),
            ("all()", true, true),
            ("", true, true),
        ];
        for (text, on_web, on_none) in cases {
            let s = sel(text);
            assert_eq!(s.matches(&web), *on_web, "{text} on web");
            assert_eq!(s.matches(&none), *on_none, "{text} on no labels");
        }
    }

    fn err(text: &str) -> SelectorError {
        Selector::parse(text).expect_err(text)
    }

    #[test]
    fn errors_carry_position_expected_and_found() {
        let e = err("app = \"x\"");
        assert_eq!(e.position, 4);
        assert_eq!(e.found, "=");
        assert_eq!(
            e.to_string(),
            "at position 4: expected \"==\", \"!=\", \"in\", \"not in\", \"starts with\", \
             \"ends with\" or \"contains\" but found \"=\" (selector: app = \"x\")"
        );

        let e = err("app == web");
        assert_eq!((e.position, e.found.as_str()), (7, "web"));
        assert_eq!(e.expected, "a quoted string");

        let e = err("app == 'web");
        assert_eq!(e.position, 11);
        assert!(e.expected.contains("position 7"), "{e}");
        assert!(
            e.to_string().contains("found the end of the selector"),
            "{e}"
        );

        let e = err("has(a) &&");
        assert_eq!((e.position, e.found.as_str()), (9, ""));
        assert_eq!(e.expected, TERM_START);

        let e = err("has(a) has(b)");
        assert_eq!((e.position, e.found.as_str()), (7, "has"));

        let e = err("(has(a)");
        assert_eq!(e.position, 7);
        assert!(e.expected.starts_with("\")\""));

        let e = err("has()");
        assert_eq!((e.position, e.found.as_str()), (4, ")"));

        let e = err("a not on {}");
        assert_eq!((e.position, e.found.as_str()), (6, "on"));
        assert_eq!(e.expected, "\"in\"");

        let e = err("a starts 'x'");
        assert_eq!((e.position, e.expected.as_str()), (9, "\"with\""));

        let e = err("a in {'x' 'y'}");
        assert_eq!((e.position, e.found.as_str()), (10, "'y'"));

        let e = err("a in 'x'");
        assert_eq!((e.position, e.expected.as_str()), (5, "\"{\""));

        let e = err("a in {'x',}");
        assert_eq!((e.position, e.found.as_str()), (10, "}"));

        let e = err("a & b");
        assert_eq!((e.position, e.found.as_str()), (2, "&"));

        let e = err("all() )");
        assert_eq!((e.position, e.found.as_str()), (6, ")"));

        let e = err("é == 'x'");
        assert_eq!((e.position, e.found.as_str()), (0, "é"));

        let e = err("all(");
        assert_eq!((e.position, e.found.as_str()), (4, ""));
    }

    #[test]
    fn display_is_canonical_and_minimally_parenthesised() {
        let cases = [
            ("a=='x'", "a == \"x\""),
            ("a in {'y','x','x'}", "a in {\"x\", \"y\"}"),
            ("(has(a) && has(b)) && has(c)", "has(a) && has(b) && has(c)"),
            (
                "has(a) && (has(b) && has(c))",
                "has(a) && (has(b) && has(c))",
            ),
            ("has(a) || has(b) && has(c)", "has(a) || has(b) && has(c)"),
            (
                "(has(a) || has(b)) && has(c)",
                "(has(a) || has(b)) && has(c)",
            ),
            ("!(has(a))", "!has(a)"),
            ("!(has(a) || has(b))", "!(has(a) || has(b))"),
            ("a == 'say \"hi\"'", "a == 'say \"hi\"'"),
            ("", "all()"),
        ];
        for (input, shown) in cases {
            assert_eq!(sel(input).to_string(), shown, "{input}");
        }
    }

    fn requirement(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.to_owned(),
            operator: op.to_owned(),
            values: values.map(|v| v.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    fn label_selector(
        match_labels: &[(&str, &str)],
        expressions: Vec<LabelSelectorRequirement>,
    ) -> LabelSelector {
        LabelSelector {
            match_labels: (!match_labels.is_empty()).then(|| labels(match_labels)),
            match_expressions: (!expressions.is_empty()).then_some(expressions),
        }
    }

    #[test]
    fn empty_label_selector_selects_everything() {
        assert_eq!(
            from_label_selector(&LabelSelector::default()),
            Ok(Selector::All)
        );
        let explicit_empty = LabelSelector {
            match_labels: Some(Labels::new()),
            match_expressions: Some(Vec::new()),
        };
        assert_eq!(from_label_selector(&explicit_empty), Ok(Selector::All));
    }

    #[test]
    fn label_selector_terms_are_anded() {
        let ls = label_selector(
            &[("app", "web"), ("env", "prod")],
            vec![
                requirement("tier", "In", Some(&["a", "b"])),
                requirement("zone", "NotIn", Some(&["x"])),
                requirement("team", "Exists", None),
                requirement("legacy", "DoesNotExist", Some(&[])),
            ],
        );
        let s = from_label_selector(&ls).unwrap();
        assert_eq!(
            s.to_string(),
            "app == \"web\" && env == \"prod\" && tier in {\"a\", \"b\"} && zone not in \
             {\"x\"} && has(team) && !has(legacy)"
        );
        let mut l = labels(&[
            ("app", "web"),
            ("env", "prod"),
            ("tier", "a"),
            ("team", "t"),
        ]);
        assert!(s.matches(&l));
        l.insert(key("legacy"), String::new());
        assert!(!s.matches(&l), "DoesNotExist fails when the key is present");
        l.remove("legacy");
        l.insert(key("zone"), key("x"));
        assert!(!s.matches(&l), "NotIn fails on a listed value");
        l.insert(key("zone"), key("y"));
        assert!(s.matches(&l), "NotIn passes on another value");
    }

    #[test]
    fn notin_and_doesnotexist_match_objects_without_the_key() {
        let no_labels = Labels::new();
        let notin = from_label_selector(&label_selector(
            &[],
            vec![requirement("env", "NotIn", Some(&["prod"]))],
        ))
        .unwrap();
        assert!(notin.matches(&no_labels));
        let dne = from_label_selector(&label_selector(
            &[],
            vec![requirement("env", "DoesNotExist", None)],
        ))
        .unwrap();
        assert!(dne.matches(&no_labels));
        let exists = from_label_selector(&label_selector(
            &[],
            vec![requirement("env", "Exists", None)],
        ))
        .unwrap();
        assert!(!exists.matches(&no_labels));
        let is_in = from_label_selector(&label_selector(
            &[],
            vec![requirement("env", "In", Some(&["prod"]))],
        ))
        .unwrap();
        assert!(!is_in.matches(&no_labels));
    }

    fn label_selector_error(ls: &LabelSelector) -> LabelSelectorError {
        from_label_selector(ls).expect_err("should be invalid")
    }

    #[test]
    fn invalid_label_selectors_are_rejected() {
        let e = label_selector_error(&label_selector(
            &[],
            vec![
                requirement("ok", "Exists", None),
                requirement("env", "In", Some(&[])),
            ],
        ));
        assert_eq!(e.field, "matchExpressions[1].values");
        assert!(e.message.contains("'In'"), "{e}");

        let e = label_selector_error(&label_selector(
            &[],
            vec![requirement("env", "NotIn", None)],
        ));
        assert_eq!(e.field, "matchExpressions[0].values");

        let e = label_selector_error(&label_selector(
            &[],
            vec![requirement("env", "Exists", Some(&["x"]))],
        ));
        assert_eq!(e.field, "matchExpressions[0].values");
        assert!(e.message.contains("may not be specified"), "{e}");

        let e = label_selector_error(&label_selector(
            &[],
            vec![requirement("env", "DoesNotExist", Some(&["x"]))],
        ));
        assert_eq!(e.field, "matchExpressions[0].values");

        let e = label_selector_error(&label_selector(
            &[],
            vec![requirement("env", "in", Some(&["x"]))],
        ));
        assert_eq!(e.field, "matchExpressions[0].operator");
        assert!(e.message.contains("\"in\" is not a valid operator"), "{e}");

        let e = label_selector_error(&label_selector(
            &[],
            vec![requirement("bad key", "Exists", None)],
        ));
        assert_eq!(e.field, "matchExpressions[0].key");

        let e = label_selector_error(&label_selector(
            &[],
            vec![requirement("env", "In", Some(&["ok", "not ok"]))],
        ));
        assert_eq!(e.field, "matchExpressions[0].values[1]");

        let e = label_selector_error(&label_selector(&[("app", "-web")], vec![]));
        assert_eq!(e.field, "matchLabels.app");
        assert_eq!(
            e.to_string(),
            "matchLabels.app: label value \"-web\" must consist of alphanumeric characters, \
             '-', '_' or '.', and must start and end with an alphanumeric character"
        );
    }

    #[test]
    fn label_key_and_value_rules() {
        for good in ["a", "app.kubernetes.io/name", "A-b_c.d", "x/y", "1abc"] {
            assert_eq!(validate_label_key(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "-a",
            "a-",
            "Ex.com/a",
            "a/b/c",
            &"k".repeat(64),
        ] {
            assert!(validate_label_key(bad).is_err(), "{bad}");
        }
        for good in ["", "a", "a.b-c_d", "0"] {
            assert_eq!(validate_label_value(good), Ok(()), "{good}");
        }
        for bad in ["-", "a b", "a'", &"v".repeat(64)] {
            assert!(validate_label_value(bad).is_err(), "{bad}");
        }
    }

    fn arb_key() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9_./-]{1,12}",
            Just("has".to_owned()),
            Just("all".to_owned()),
            Just("global".to_owned()),
            Just("in".to_owned()),
            Just("not".to_owned()),
            Just("starts".to_owned()),
            Just("contains".to_owned()),
        ]
    }

    fn arb_value() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 ._'\"{}(),!&|=-]{0,8}".prop_filter("no way to write both quotes", |v| {
            !(v.contains('"') && v.contains('\''))
        })
    }

    fn arb_selector() -> impl Strategy<Value = Selector> {
        let leaf = prop_oneof![
            Just(Selector::All),
            Just(Selector::Global),
            arb_key().prop_map(Selector::Has),
            (arb_key(), arb_value()).prop_map(|(k, v)| Selector::Eq(k, v)),
            (arb_key(), arb_value()).prop_map(|(k, v)| Selector::Ne(k, v)),
            (arb_key(), prop::collection::btree_set(arb_value(), 0..4))
                .prop_map(|(k, v)| Selector::In(k, v)),
            (arb_key(), prop::collection::btree_set(arb_value(), 0..4))
                .prop_map(|(k, v)| Selector::NotIn(k, v)),
            (arb_key(), arb_value()).prop_map(|(k, v)| Selector::StartsWith(k, v)),
            (arb_key(), arb_value()).prop_map(|(k, v)| Selector::EndsWith(k, v)),
            (arb_key(), arb_value()).prop_map(|(k, v)| Selector::Contains(k, v)),
        ];
        leaf.prop_recursive(5, 32, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|s| Selector::Not(Box::new(s))),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Selector::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner).prop_map(|(a, b)| Selector::Or(Box::new(a), Box::new(b))),
            ]
        })
    }

    fn arb_labels() -> impl Strategy<Value = Labels> {
        prop::collection::btree_map("[a-c]", "[xy]{0,2}", 0..4)
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(s in arb_selector()) {
            let shown = s.to_string();
            prop_assert_eq!(Selector::parse(&shown), Ok(s), "{}", shown);
        }

        #[test]
        fn parse_never_panics_on_any_text(text in "\\PC{0,40}") {
            let _ = Selector::parse(&text);
        }

        #[test]
        fn parse_never_panics_on_selector_like_text(
            text in "[a-c !=&|(){},'\"]{0,12}|(has|all|in|not|starts|with|[a-c]|[ !=&|(){},'\"]){0,12}"
        ) {
            if let Err(e) = Selector::parse(&text) {
                prop_assert!(e.position <= text.len());
                prop_assert!(text.is_char_boundary(e.position));
            }
        }

        /// `from_label_selector` agrees with a direct reading of the Kubernetes rules.
        #[test]
        fn label_selector_matches_like_kubernetes(
            match_labels in prop::collection::btree_map("[a-c]", "[xy]", 0..3),
            expressions in prop::collection::vec(
                ("[a-c]", 0..4usize, prop::collection::vec("[xy]", 1..3)), 0..3),
            object in arb_labels(),
        ) {
            let ops = ["In", "NotIn", "Exists", "DoesNotExist"];
            let reqs: Vec<LabelSelectorRequirement> = expressions
                .iter()
                .map(|(k, op, vals)| LabelSelectorRequirement {
                    key: k.clone(),
                    operator: ops[*op].to_owned(),
                    values: (*op < 2).then(|| vals.clone()),
                })
                .collect();
            let ls = LabelSelector {
                match_labels: Some(match_labels.clone()),
                match_expressions: Some(reqs.clone()),
            };
            let naive = match_labels.iter().all(|(k, v)| object.get(k) == Some(v))
                && reqs.iter().all(|r| {
                    let vals = r.values.clone().unwrap_or_default();
                    match r.operator.as_str() {
                        "In" => object.get(&r.key).is_some_and(|v| vals.contains(v)),
                        "NotIn" => !object.get(&r.key).is_some_and(|v| vals.contains(v)),
                        "Exists" => object.contains_key(&r.key),
                        _ => !object.contains_key(&r.key),
                    }
                });
            let s = from_label_selector(&ls).unwrap();
            prop_assert_eq!(s.matches(&object), naive);
            prop_assert_eq!(Selector::parse(&s.to_string()), Ok(s));
        }
    }
}

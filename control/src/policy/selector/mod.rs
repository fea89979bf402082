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
//!
//! # Layout
//!
//! The language itself (the AST, how it matches a label set, how it is printed) is here;
//! the parser is in `parse`, and the Kubernetes side (label selectors, and the API's rules
//! for label keys, label values and DNS names) in `kubernetes`.

mod kubernetes;
mod labels;
mod parse;

use std::collections::BTreeSet;
use std::fmt;

pub use self::kubernetes::{
    from_label_selector, validate_dns_label, validate_dns_subdomain, validate_label_key,
    validate_label_value, LabelSelectorError,
};

pub use self::labels::Labels;

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

impl Selector {
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    pub(super) fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    pub(super) fn sel(text: &str) -> Selector {
        Selector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    pub(super) fn set(values: &[&str]) -> BTreeSet<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    pub(super) fn key(k: &str) -> String {
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

    proptest! {
        #[test]
        fn display_then_parse_round_trips(s in arb_selector()) {
            let shown = s.to_string();
            prop_assert_eq!(Selector::parse(&shown), Ok(s), "{}", shown);
        }
    }
}

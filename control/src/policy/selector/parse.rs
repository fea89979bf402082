//! The selector parser: recursive descent over tokens lexed on demand, one function per
//! precedence level, each naming what it could have accepted where it fails (see the module
//! doc of `selector` for why it is written by hand).

use std::collections::BTreeSet;
use std::str::FromStr;

use super::{Selector, SelectorError};

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
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Selector, SelectorError> {
        Selector::parse(text)
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
    use proptest::prelude::*;

    use super::super::tests::{key, sel, set};
    use super::*;

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

    proptest! {
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
    }
}

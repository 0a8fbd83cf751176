//! The text syntax of filters: a hand-written recursive-descent parser and the `Display`
//! that writes filters back.
//!
//! ```text
//! filter     := or
//! or         := and ("or" and)*
//! and        := unary ("and" unary)*
//! unary      := "not" unary | "(" filter ")" | "true" | "false" | consent | test
//! consent    := "consent" "(" channel "," purpose ")"
//! test       := field ( cmp value | "in" list | "all" list | "starts_with" string
//!                     | "is" ("set" | "missing") | "sounds_like" string
//!                     | "~" string ("within" integer | "jaro_winkler" number) )
//! field      := name | "attributes" "." (name | string)
//! cmp        := "=" | "!=" | "<" | "<=" | ">" | ">="
//! list       := "(" [value ("," value)*] ")"
//! value      := string | ["-"] number | date | timestamp | "true" | "false"
//!             | "now" [("+" | "-") duration]
//! duration   := integer ("s" | "m" | "h" | "d" | "w")
//! ```
//!
//! Keywords are case-insensitive. Strings are double-quoted with `\"`, `\\`, `\n`, `\t`, `\r`
//! and `\u{hex}` escapes. Dates are `YYYY-MM-DD`, timestamps RFC 3339.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rust_decimal::Decimal;

use super::{Field, Filter, Op, Operand, Similarity};
use crate::error::{Error, ErrorKind};
use crate::model::Channel;
use crate::normalize::Reason;

/// How deeply parentheses and `not` may nest: deeper input is refused rather than risking the
/// stack.
const MAX_DEPTH: usize = 64;

/// A filter that does not parse: where, what was expected there, and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParseError {
    /// Byte offset in the input where the problem starts.
    pub position: usize,
    /// What would have been accepted there (`a value`, `` `)` ``, ...).
    pub expected: String,
    /// What was there instead (`end of input`, `` `foo` ``, ...).
    pub found: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "filter syntax error at byte {}: expected {}, found {}",
            self.position, self.expected, self.found
        )
    }
}

impl std::error::Error for ParseError {}

impl From<ParseError> for Error {
    /// An [`ErrorKind::Invalid`] error for field `filter`, with the parse error as its source.
    fn from(e: ParseError) -> Self {
        let value = format!("at byte {}", e.position);
        Error::with_source(
            ErrorKind::Invalid {
                field: "filter".to_owned(),
                value,
                reason: Reason::Malformed,
            },
            e,
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A name or keyword.
    Word(String),
    /// A quoted string, unescaped.
    Str(String),
    /// A number, date, timestamp or duration, as written.
    Lit(String),
    /// Punctuation or an operator.
    Sym(&'static str),
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("`{w}`"),
            Tok::Str(_) => "a string".to_owned(),
            Tok::Lit(l) => format!("`{l}`"),
            Tok::Sym(s) => format!("`{s}`"),
            Tok::End => "end of input".to_owned(),
        }
    }

    fn is_word(&self, kw: &str) -> bool {
        matches!(self, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }
}

fn error(position: usize, expected: &str, found: String) -> ParseError {
    ParseError {
        position,
        expected: expected.to_owned(),
        found,
    }
}

/// Splits the input into tokens with their byte offsets.
fn lex(input: &str) -> Result<Vec<(usize, Tok)>, ParseError> {
    let mut out = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(pos, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let tok = if c.is_ascii_alphabetic() || c == '_' {
            let mut w = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    w.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            Tok::Word(w)
        } else if c.is_ascii_digit() {
            let mut l = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '+' | '-') {
                    l.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            Tok::Lit(l)
        } else if c == '"' {
            chars.next();
            Tok::Str(lex_string(input, &mut chars)?)
        } else {
            chars.next();
            let next = chars.peek().map(|&(_, c)| c);
            let sym = match (c, next) {
                ('!', Some('=')) => "!=",
                ('<', Some('=')) => "<=",
                ('>', Some('=')) => ">=",
                ('(', _) => "(",
                (')', _) => ")",
                (',', _) => ",",
                ('.', _) => ".",
                ('=', _) => "=",
                ('<', _) => "<",
                ('>', _) => ">",
                ('~', _) => "~",
                ('+', _) => "+",
                ('-', _) => "-",
                _ => return Err(error(pos, "a filter", format!("`{c}`"))),
            };
            if sym.len() == 2 {
                chars.next();
            }
            Tok::Sym(sym)
        };
        out.push((pos, tok));
    }
    out.push((input.len(), Tok::End));
    Ok(out)
}

/// Reads a string's body after its opening quote.
fn lex_string(
    input: &str,
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
) -> Result<String, ParseError> {
    let mut s = String::new();
    loop {
        let Some((_, c)) = chars.next() else {
            return Err(error(
                input.len(),
                "`\"` closing the string",
                "end of input".into(),
            ));
        };
        match c {
            '"' => return Ok(s),
            '\\' => {
                let Some((epos, e)) = chars.next() else {
                    return Err(error(input.len(), "an escape", "end of input".into()));
                };
                match e {
                    '"' | '\\' => s.push(e),
                    'n' => s.push('\n'),
                    't' => s.push('\t'),
                    'r' => s.push('\r'),
                    'u' => {
                        let bad = || error(epos, "`\\u{hex}`", "a malformed escape".into());
                        if chars.next().map(|(_, c)| c) != Some('{') {
                            return Err(bad());
                        }
                        let mut hex = String::new();
                        loop {
                            match chars.next() {
                                Some((_, '}')) => break,
                                Some((_, h)) if h.is_ascii_hexdigit() && hex.len() < 6 => {
                                    hex.push(h);
                                }
                                _ => return Err(bad()),
                            }
                        }
                        let ch = u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(bad)?;
                        s.push(ch);
                    }
                    other => {
                        return Err(error(
                            epos,
                            "an escape (`\\\"`, `\\\\`, `\\n`, `\\t`, `\\r`, `\\u{..}`)",
                            format!("`\\{other}`"),
                        ));
                    }
                }
            }
            c => s.push(c),
        }
    }
}

/// Parses a filter.
pub(crate) fn parse(input: &str) -> Result<Filter, ParseError> {
    let toks = lex(input)?;
    let mut p = Parser {
        toks,
        at: 0,
        depth: 0,
    };
    let f = p.or()?;
    p.expect_end()?;
    Ok(f)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        self.toks.get(self.at).map_or(&Tok::End, |(_, t)| t)
    }

    fn pos(&self) -> usize {
        self.toks.get(self.at).map_or(0, |(p, _)| *p)
    }

    fn bump(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.at < self.toks.len() {
            self.at += 1;
        }
        t
    }

    fn fail<T>(&self, expected: &str) -> Result<T, ParseError> {
        Err(error(self.pos(), expected, self.peek().describe()))
    }

    fn eat_sym(&mut self, sym: &str) -> bool {
        if matches!(self.peek(), Tok::Sym(s) if *s == sym) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect_sym(&mut self, sym: &'static str, expected: &str) -> Result<(), ParseError> {
        if self.eat_sym(sym) {
            Ok(())
        } else {
            self.fail(expected)
        }
    }

    fn eat_word(&mut self, kw: &str) -> bool {
        if self.peek().is_word(kw) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect_end(&self) -> Result<(), ParseError> {
        if *self.peek() == Tok::End {
            Ok(())
        } else {
            self.fail("`and`, `or` or end of input")
        }
    }

    fn or(&mut self) -> Result<Filter, ParseError> {
        self.chain("or", Self::and, Filter::Or)
    }

    fn and(&mut self) -> Result<Filter, ParseError> {
        self.chain("and", Self::unary, Filter::And)
    }

    /// `next (word next)*`, as one filter when there is just one.
    fn chain(
        &mut self,
        word: &str,
        next: fn(&mut Self) -> Result<Filter, ParseError>,
        wrap: fn(Vec<Filter>) -> Filter,
    ) -> Result<Filter, ParseError> {
        let first = next(self)?;
        if !self.peek().is_word(word) {
            return Ok(first);
        }
        let mut all = vec![first];
        while self.eat_word(word) {
            all.push(next(self)?);
        }
        Ok(wrap(all))
    }

    fn unary(&mut self) -> Result<Filter, ParseError> {
        if self.depth >= MAX_DEPTH {
            return self.fail("less nesting");
        }
        self.depth += 1;
        let r = self.unary_inner();
        self.depth -= 1;
        r
    }

    fn unary_inner(&mut self) -> Result<Filter, ParseError> {
        if self.eat_word("not") {
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        if self.eat_sym("(") {
            let f = self.or()?;
            self.expect_sym(")", "`)`")?;
            return Ok(f);
        }
        if self.eat_word("true") {
            return Ok(Filter::Const(true));
        }
        if self.eat_word("false") {
            return Ok(Filter::Const(false));
        }
        if self.peek().is_word("consent")
            && matches!(self.toks.get(self.at + 1), Some((_, Tok::Sym("("))))
        {
            self.bump();
            self.bump();
            return self.consent();
        }
        let field = self.field()?;
        let op = self.op()?;
        Ok(Filter::Test { field, op })
    }

    fn consent(&mut self) -> Result<Filter, ParseError> {
        let channel = match self.peek() {
            Tok::Word(w) | Tok::Str(w) => Channel::parse(w),
            _ => None,
        };
        let Some(channel) = channel else {
            return self.fail("a channel (`email`, `sms`, `phone`, `post`, `any`)");
        };
        self.bump();
        self.expect_sym(",", "`,`")?;
        let (Tok::Word(purpose) | Tok::Str(purpose)) = self.peek().clone() else {
            return self.fail("a purpose");
        };
        self.bump();
        self.expect_sym(")", "`)`")?;
        Ok(Filter::Consent { channel, purpose })
    }

    fn field(&mut self) -> Result<Field, ParseError> {
        let Tok::Word(w) = self.peek().clone() else {
            return self.fail("a field name");
        };
        if w == "attributes" && matches!(self.toks.get(self.at + 1), Some((_, Tok::Sym(".")))) {
            self.bump();
            self.bump();
            return match self.bump() {
                Tok::Word(n) | Tok::Str(n) => Ok(Field::Attribute(n)),
                _ => {
                    self.at -= 1;
                    self.fail("an attribute name")
                }
            };
        }
        match Field::builtin(&w.to_ascii_lowercase()) {
            Some(f) => {
                self.bump();
                Ok(f)
            }
            None => self.fail("a field name"),
        }
    }

    fn op(&mut self) -> Result<Op, ParseError> {
        let cmp = match self.peek() {
            Tok::Sym("=") => Some(Op::Eq as fn(Operand) -> Op),
            Tok::Sym("!=") => Some(Op::Ne as fn(Operand) -> Op),
            Tok::Sym("<") => Some(Op::Lt as fn(Operand) -> Op),
            Tok::Sym("<=") => Some(Op::Le as fn(Operand) -> Op),
            Tok::Sym(">") => Some(Op::Gt as fn(Operand) -> Op),
            Tok::Sym(">=") => Some(Op::Ge as fn(Operand) -> Op),
            _ => None,
        };
        if let Some(make) = cmp {
            self.bump();
            return Ok(make(self.value()?));
        }
        if self.eat_word("in") {
            return Ok(Op::In(self.list()?));
        }
        if self.eat_word("all") {
            return Ok(Op::All(self.list()?));
        }
        if self.eat_word("starts_with") {
            return Ok(Op::Prefix(self.string()?));
        }
        if self.eat_word("sounds_like") {
            return Ok(Op::SoundsLike(self.string()?));
        }
        if self.eat_word("is") {
            if self.eat_word("set") {
                return Ok(Op::IsSet);
            }
            if self.eat_word("missing") {
                return Ok(Op::IsMissing);
            }
            return self.fail("`set` or `missing`");
        }
        if self.eat_sym("~") {
            let text = self.string()?;
            let similarity = if self.eat_word("within") {
                let k = self.literal("a number of edits")?;
                Similarity::EditDistance(
                    k.parse::<u32>()
                        .map_err(|_| self.bad_literal(&k, "a small whole number"))?,
                )
            } else if self.eat_word("jaro_winkler") {
                let t = self.literal("a similarity from 0 to 1")?;
                match t.parse::<f64>() {
                    Ok(v) if (0.0..=1.0).contains(&v) && is_plain_number(&t) => {
                        Similarity::JaroWinkler(v)
                    }
                    _ => return Err(self.bad_literal(&t, "a similarity from 0 to 1")),
                }
            } else {
                return self.fail("`within` or `jaro_winkler`");
            };
            return Ok(Op::Fuzzy { text, similarity });
        }
        self.fail("an operator (`=`, `!=`, `<`, `<=`, `>`, `>=`, `in`, `all`, `starts_with`, `is`, `~`, `sounds_like`)")
    }

    /// A number-like literal, consumed.
    fn literal(&mut self, expected: &str) -> Result<String, ParseError> {
        let Tok::Lit(l) = self.peek().clone() else {
            return self.fail(expected);
        };
        self.bump();
        Ok(l)
    }

    /// The error for literal `l`, just consumed, which is not `expected`.
    fn bad_literal(&self, l: &str, expected: &str) -> ParseError {
        let pos = self
            .at
            .checked_sub(1)
            .and_then(|i| self.toks.get(i))
            .map_or(0, |(p, _)| *p);
        error(pos, expected, format!("`{l}`"))
    }

    fn string(&mut self) -> Result<String, ParseError> {
        match self.peek().clone() {
            Tok::Str(s) => {
                self.bump();
                Ok(s)
            }
            _ => self.fail("a string"),
        }
    }

    fn list(&mut self) -> Result<Vec<Operand>, ParseError> {
        self.expect_sym("(", "`(`")?;
        let mut out = Vec::new();
        if self.eat_sym(")") {
            return Ok(out);
        }
        loop {
            out.push(self.value()?);
            if self.eat_sym(")") {
                return Ok(out);
            }
            self.expect_sym(",", "`,` or `)`")?;
        }
    }

    fn value(&mut self) -> Result<Operand, ParseError> {
        let pos = self.pos();
        match self.peek().clone() {
            Tok::Str(s) => {
                self.bump();
                Ok(Operand::Text(s))
            }
            Tok::Word(w) if w.eq_ignore_ascii_case("true") => {
                self.bump();
                Ok(Operand::Boolean(true))
            }
            Tok::Word(w) if w.eq_ignore_ascii_case("false") => {
                self.bump();
                Ok(Operand::Boolean(false))
            }
            Tok::Word(w) if w.eq_ignore_ascii_case("now") => {
                self.bump();
                let sign = if self.eat_sym("-") {
                    -1
                } else if self.eat_sym("+") {
                    1
                } else {
                    return Ok(Operand::Relative(0));
                };
                let pos = self.pos();
                let Tok::Lit(l) = self.peek().clone() else {
                    return self.fail("a duration (`90d`, `12h`, ...)");
                };
                self.bump();
                let secs = parse_duration(&l)
                    .and_then(|s| s.checked_mul(sign))
                    .ok_or_else(|| {
                        error(pos, "a duration (`90d`, `12h`, ...)", format!("`{l}`"))
                    })?;
                Ok(Operand::Relative(secs))
            }
            Tok::Sym("-") => {
                self.bump();
                let pos = self.pos();
                let Tok::Lit(l) = self.peek().clone() else {
                    return self.fail("a number");
                };
                self.bump();
                let negated = format!("-{l}");
                parse_number(&negated).ok_or_else(|| error(pos, "a number", format!("`{l}`")))
            }
            Tok::Lit(l) => {
                self.bump();
                parse_literal(&l).ok_or_else(|| {
                    error(
                        pos,
                        "a number, date (YYYY-MM-DD) or timestamp (RFC 3339)",
                        format!("`{l}`"),
                    )
                })
            }
            _ => self.fail("a value"),
        }
    }
}

/// Digits with at most one dot: what `Display` writes for numbers.
fn is_plain_number(l: &str) -> bool {
    let mut dots = 0;
    !l.is_empty()
        && l.starts_with(|c: char| c.is_ascii_digit())
        && l.chars().all(|c| {
            if c == '.' {
                dots += 1;
            }
            c.is_ascii_digit() || c == '.'
        })
        && dots <= 1
        && !l.ends_with('.')
}

fn parse_number(l: &str) -> Option<Operand> {
    let digits = l.strip_prefix('-').unwrap_or(l);
    if !is_plain_number(digits) {
        return None;
    }
    if digits.contains('.') {
        Decimal::from_str(l).ok().map(Operand::Decimal)
    } else {
        l.parse::<i64>().ok().map(Operand::Integer)
    }
}

fn parse_literal(l: &str) -> Option<Operand> {
    if let Some(n) = parse_number(l) {
        return Some(n);
    }
    if l.len() == 10 {
        if let Ok(d) = NaiveDate::parse_from_str(l, "%Y-%m-%d") {
            return Some(Operand::Date(d));
        }
    }
    DateTime::parse_from_rfc3339(l)
        .ok()
        .map(|t| Operand::Timestamp(t.with_timezone(&Utc)))
}

/// Seconds in a duration such as `90d`.
fn parse_duration(l: &str) -> Option<i64> {
    let unit = l.chars().last()?;
    let n: i64 = l.get(..l.len() - 1)?.parse().ok()?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        'w' => 604_800,
        _ => return None,
    };
    n.checked_mul(scale)
}

// ---------------------------------------------------------------------------------------------
// Writing filters back

/// Whether `name` can be written bare (not quoted).
fn is_bare_word(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn write_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            '\r' => f.write_str("\\r")?,
            c if c.is_control() => write!(f, "\\u{{{:x}}}", u32::from(c))?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

pub(crate) fn write_field(f: &mut fmt::Formatter<'_>, field: &Field) -> fmt::Result {
    match field {
        Field::Attribute(name) if is_bare_word(name) => write!(f, "attributes.{name}"),
        Field::Attribute(name) => {
            f.write_str("attributes.")?;
            write_string(f, name)
        }
        other => f.write_str(other.name()),
    }
}

pub(crate) fn write_operand(f: &mut fmt::Formatter<'_>, v: &Operand) -> fmt::Result {
    match v {
        Operand::Text(s) => write_string(f, s),
        Operand::Integer(i) => write!(f, "{i}"),
        Operand::Decimal(d) if d.scale() == 0 => write!(f, "{d}.0"),
        Operand::Decimal(d) => write!(f, "{d}"),
        Operand::Boolean(b) => write!(f, "{b}"),
        Operand::Date(d) => write!(f, "{}", d.format("%Y-%m-%d")),
        Operand::Timestamp(t) => f.write_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        Operand::Relative(0) => f.write_str("now"),
        Operand::Relative(s) => {
            let sign = if *s < 0 { '-' } else { '+' };
            let abs = s.unsigned_abs();
            let (n, unit) = [(604_800, 'w'), (86_400, 'd'), (3_600, 'h'), (60, 'm')]
                .into_iter()
                .find(|(k, _)| abs % k == 0)
                .map_or((abs, 's'), |(k, u)| (abs / k, u));
            write!(f, "now {sign} {n}{unit}")
        }
    }
}

fn write_list(f: &mut fmt::Formatter<'_>, vs: &[Operand]) -> fmt::Result {
    f.write_char('(')?;
    for (i, v) in vs.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_operand(f, v)?;
    }
    f.write_char(')')
}

fn write_op(f: &mut fmt::Formatter<'_>, op: &Op) -> fmt::Result {
    let cmp = |f: &mut fmt::Formatter<'_>, sym: &str, v: &Operand| {
        write!(f, " {sym} ")?;
        write_operand(f, v)
    };
    match op {
        Op::Eq(v) => cmp(f, "=", v),
        Op::Ne(v) => cmp(f, "!=", v),
        Op::Lt(v) => cmp(f, "<", v),
        Op::Le(v) => cmp(f, "<=", v),
        Op::Gt(v) => cmp(f, ">", v),
        Op::Ge(v) => cmp(f, ">=", v),
        Op::In(vs) => {
            f.write_str(" in ")?;
            write_list(f, vs)
        }
        Op::All(vs) => {
            f.write_str(" all ")?;
            write_list(f, vs)
        }
        Op::Prefix(p) => {
            f.write_str(" starts_with ")?;
            write_string(f, p)
        }
        Op::IsSet => f.write_str(" is set"),
        Op::IsMissing => f.write_str(" is missing"),
        Op::SoundsLike(s) => {
            f.write_str(" sounds_like ")?;
            write_string(f, s)
        }
        Op::Fuzzy { text, similarity } => {
            f.write_str(" ~ ")?;
            write_string(f, text)?;
            match similarity {
                Similarity::EditDistance(k) => write!(f, " within {k}"),
                Similarity::JaroWinkler(t) => write!(f, " jaro_winkler {t}"),
            }
        }
    }
}

/// Writes `filter`; `nested` says it sits inside an `and`, `or` or `not`, where a compound
/// filter needs parentheses to read back the same.
fn write_nested(f: &mut fmt::Formatter<'_>, filter: &Filter, nested: bool) -> fmt::Result {
    match filter {
        Filter::Const(b) => write!(f, "{b}"),
        Filter::And(fs) | Filter::Or(fs) => {
            let (word, empty) = match filter {
                Filter::And(_) => (" and ", "true"),
                _ => (" or ", "false"),
            };
            match fs.as_slice() {
                [] => f.write_str(empty),
                [one] => write_nested(f, one, nested),
                _ => {
                    if nested {
                        f.write_char('(')?;
                    }
                    for (i, c) in fs.iter().enumerate() {
                        if i > 0 {
                            f.write_str(word)?;
                        }
                        write_nested(f, c, true)?;
                    }
                    if nested {
                        f.write_char(')')?;
                    }
                    Ok(())
                }
            }
        }
        Filter::Not(inner) => {
            f.write_str("not ")?;
            let compound = matches!(&**inner, Filter::And(v) | Filter::Or(v) if v.len() > 1);
            if compound {
                f.write_char('(')?;
                write_nested(f, inner, false)?;
                f.write_char(')')
            } else {
                write_nested(f, inner, true)
            }
        }
        Filter::Test { field, op } => {
            write_field(f, field)?;
            write_op(f, op)
        }
        Filter::Consent { channel, purpose } => {
            write!(f, "consent({}, ", channel.as_str())?;
            if is_bare_word(purpose) && !is_keyword(purpose) {
                f.write_str(purpose)?;
            } else {
                write_string(f, purpose)?;
            }
            f.write_char(')')
        }
    }
}

fn is_keyword(w: &str) -> bool {
    ["and", "or", "not", "true", "false"]
        .iter()
        .any(|k| k.eq_ignore_ascii_case(w))
}

pub(crate) fn write_filter(f: &mut fmt::Formatter<'_>, filter: &Filter) -> fmt::Result {
    write_nested(f, filter, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    #[test]
    fn parses_the_issue_examples() {
        let f = parse(
            r#"country = "DE" and order_count >= 3 and last_purchase < now - 90d and consent(email, marketing)"#,
        )
        .unwrap();
        assert_eq!(
            f,
            Field::Country.eq("DE")
                & Field::OrderCount.ge(3)
                & Field::LastPurchase.lt(Operand::days_ago(90))
                & Filter::consent(Channel::Email, "marketing")
        );
        assert_eq!(
            parse(r#"tag in ("vip","gold")"#).unwrap(),
            Field::Tag.one_of(["vip", "gold"])
        );
        assert_eq!(
            parse(r#"not (stage = "churned")"#).unwrap(),
            !Field::Stage.eq("churned")
        );
        assert_eq!(
            parse(r#"family_name ~ "Meyer" within 1"#).unwrap(),
            Field::FamilyName.within_edits("Meyer", 1)
        );
        assert_eq!(
            parse("attributes.score > 70").unwrap(),
            Field::attribute("score").gt(70)
        );
        assert_eq!(
            parse("email is missing").unwrap(),
            Field::Email.is_missing()
        );
    }

    #[test]
    fn and_binds_tighter_than_or_and_not_tighter_than_and() {
        let f = parse(r#"not tag = "a" and tag = "b" or tag = "c""#).unwrap();
        let t = |s: &str| Field::Tag.eq(s);
        assert_eq!(f, Filter::Or(vec![!t("a") & t("b"), t("c")]));
        assert_eq!(
            f.to_string(),
            r#"(not tag = "a" and tag = "b") or tag = "c""#
        );
    }

    #[test]
    fn literals_cover_dates_timestamps_decimals_and_negatives() {
        let f = parse(
            "birth_date < 1970-01-01 and created_at >= 2024-05-01T10:00:00+02:00 and attributes.x = -1.50 and attributes.y != -3",
        )
        .unwrap();
        let Filter::And(parts) = &f else { panic!() };
        assert_eq!(
            parts[0],
            Field::BirthDate.lt(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap())
        );
        assert_eq!(
            parts[1],
            Field::CreatedAt.ge(Utc.with_ymd_and_hms(2024, 5, 1, 8, 0, 0).unwrap())
        );
        assert_eq!(parts[2], Field::attribute("x").eq(Decimal::new(-150, 2)));
        assert_eq!(parts[3], Field::attribute("y").ne(-3));
        assert_eq!(parse(&f.to_string()).unwrap(), f);
    }

    #[test]
    fn errors_give_position_expected_and_found() {
        let e = parse(r#"country = "DE" and"#).unwrap_err();
        assert_eq!((e.position, e.found.as_str()), (18, "end of input"));
        assert_eq!(e.expected, "a field name");
        let e = parse(r#"country == "DE""#).unwrap_err();
        assert_eq!((e.position, e.expected.as_str()), (9, "a value"));
        let e = parse("colour = 1").unwrap_err();
        assert_eq!((e.position, e.found.as_str()), (0, "`colour`"));
        let e = parse(r#"tag in ("a" "b")"#).unwrap_err();
        assert_eq!((e.position, e.expected.as_str()), (12, "`,` or `)`"));
        let e = parse("created_at > now - 90y").unwrap_err();
        assert_eq!(e.position, 19);
        let e = parse(r#"name = "open"#).unwrap_err();
        assert_eq!(e.expected, "`\"` closing the string");
        let e = parse("order_count > 99999999999999999999").unwrap_err();
        assert_eq!(e.position, 14);
        assert_eq!(
            Error::from(e).to_string(),
            "invalid filter \"at byte 14\": the value is not in a form this field accepts"
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!("{}true{}", "(".repeat(10_000), ")".repeat(10_000));
        assert_eq!(parse(&deep).unwrap_err().expected, "less nesting");
        let nots = format!("{}true", "not ".repeat(10_000));
        assert!(parse(&nots).is_err());
        let ok = format!("{}true{}", "(".repeat(20), ")".repeat(20));
        assert_eq!(parse(&ok).unwrap(), Filter::Const(true));
    }

    #[test]
    fn strings_and_names_are_quoted_when_needed() {
        let f = Field::attribute("my-attr").eq("a \"quoted\"\\ line\nnext\u{1}")
            & Filter::consent(Channel::Any, "and so on");
        let text = f.to_string();
        assert_eq!(
            text,
            r#"attributes."my-attr" = "a \"quoted\"\\ line\nnext\u{1}" and consent(any, "and so on")"#
        );
        assert_eq!(parse(&text).unwrap(), f);
    }

    #[test]
    fn relative_times_write_back_in_the_largest_exact_unit() {
        for (secs, text) in [
            (0, "now"),
            (-90 * 86_400, "now - 90d"),
            (2 * 604_800, "now + 2w"),
            (-5_400, "now - 90m"),
            (7, "now + 7s"),
        ] {
            let f = Field::CreatedAt.lt(Operand::Relative(secs));
            assert_eq!(f.to_string(), format!("created_at < {text}"));
            assert_eq!(parse(&f.to_string()).unwrap(), f);
        }
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC{0,64}") {
            let _ = parse(&s);
        }

        #[test]
        fn parser_never_panics_on_near_filters(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("country"), Just("="), Just("\"DE\""), Just("and"), Just("or"),
                    Just("not"), Just("("), Just(")"), Just("now"), Just("-"), Just("90d"),
                    Just("in"), Just(","), Just("~"), Just("within"), Just("1"), Just("is"),
                    Just("missing"), Just("attributes"), Just("."), Just("consent"),
                    Just("\"\\u{"), Just("1970-01-01"), Just("jaro_winkler"), Just("0.5"),
                ],
                0..24,
            )
        ) {
            let text = parts.join(" ");
            if let Ok(f) = parse(&text) {
                prop_assert_eq!(parse(&f.to_string()).ok(), Some(f));
            }
        }
    }
}

//! Label and field selectors, parsed and matched as kube-apiserver does.
//!
//! The label selector parser is a port of `k8s.io/apimachinery/pkg/labels`
//! (lexer, recursive-descent parser, `NewRequirement` validation) so that
//! accepted syntax and error messages match upstream. The field selector
//! follows `k8s.io/apimachinery/pkg/fields`; the per-kind field values follow
//! the `ToSelectableFields` functions of the kube-apiserver registries.

use serde_json::{Map, Value};
use std::fmt;

// ---------------------------------------------------------------------------
// Label selectors.

/// A label selector operator (`k8s.io/apimachinery/pkg/selection`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    DoesNotExist,
    Equals,
    DoubleEquals,
    In,
    NotEquals,
    NotIn,
    Exists,
    GreaterThan,
    LessThan,
}

/// One `key op values` term of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// Sorted and de-duplicated when parsed from a string.
    pub values: Vec<String>,
}

impl Requirement {
    /// Validates and builds a requirement (upstream `labels.NewRequirement`).
    pub fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Requirement, String> {
        let mut errs: Vec<String> = Vec::new();
        if let Some(e) = validate_label_key(key, "key") {
            errs.push(e);
        }
        match operator {
            Operator::In | Operator::NotIn => {
                if values.is_empty() {
                    errs.push(invalid_strings(
                        "values",
                        &values,
                        "for 'in', 'notin' operators, values set can't be empty",
                    ));
                }
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals => {
                if values.len() != 1 {
                    errs.push(invalid_strings(
                        "values",
                        &values,
                        "exact-match compatibility requires one single value",
                    ));
                }
            }
            Operator::Exists | Operator::DoesNotExist => {
                if !values.is_empty() {
                    errs.push(invalid_strings(
                        "values",
                        &values,
                        "values set must be empty for exists and does not exist",
                    ));
                }
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(invalid_strings(
                        "values",
                        &values,
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errs.push(format!(
                            "values[{i}]: Invalid value: {}: for 'Gt', 'Lt' operators, the value must be an integer",
                            go_quote(v)
                        ));
                    }
                }
            }
        }
        for (i, v) in values.iter().enumerate() {
            let msgs = label_value_errors(v);
            if !msgs.is_empty() {
                errs.push(format!(
                    "values[{i}][{key}]: Invalid value: {}: {}",
                    go_quote(v),
                    msgs.join("; ")
                ));
            }
        }
        if errs.is_empty() {
            Ok(Requirement {
                key: key.to_string(),
                operator,
                values,
            })
        } else {
            Err(aggregate(errs))
        }
    }

    /// Upstream `Requirement.Matches`.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let value = labels.and_then(|l| l.get(&self.key)).map(label_str);
        let has = |v: &str| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => value.is_some_and(has),
            Operator::NotIn | Operator::NotEquals => !value.is_some_and(has),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(Ok(lv)) = value.map(str::parse::<i64>) else {
                    return false;
                };
                let [rv] = self.values.as_slice() else {
                    return false;
                };
                let Ok(rv) = rv.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    lv > rv
                } else {
                    lv < rv
                }
            }
        }
    }
}

fn label_str(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.operator {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
        };
        f.write_str(op)?;
        let set = matches!(self.operator, Operator::In | Operator::NotIn);
        if set {
            f.write_str("(")?;
        }
        let mut vals = self.values.clone();
        vals.sort();
        f.write_str(&vals.join(","))?;
        if set {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A parsed label selector: the AND of its requirements. The default value
/// selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    /// `labels.Nothing()`: matches no object (a nil `metav1.LabelSelector`).
    nothing: bool,
}

impl LabelSelector {
    /// The selector that matches nothing.
    pub fn nothing() -> LabelSelector {
        LabelSelector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// Parses the `labelSelector` query syntax (upstream `labels.Parse`).
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let mut p = Parser {
            items: scan(s.as_bytes()),
            pos: 0,
        };
        let mut requirements = p.parse()?;
        // Sorted by key for a deterministic form, as upstream does.
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Converts a `metav1.LabelSelector` object (upstream
    /// `metav1.LabelSelectorAsSelector`): `null` selects nothing, `{}`
    /// everything.
    pub fn from_label_selector_object(v: &Value) -> Result<LabelSelector, String> {
        let obj = match v {
            Value::Null => return Ok(LabelSelector::nothing()),
            Value::Object(m) => m,
            _ => return Err("label selector must be an object".to_string()),
        };
        let match_labels = match obj.get("matchLabels") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => return Err("matchLabels must be an object".to_string()),
        };
        let match_expressions = match obj.get("matchExpressions") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(a),
            Some(_) => return Err("matchExpressions must be an array".to_string()),
        };
        let mut requirements = Vec::new();
        for (k, v) in match_labels.into_iter().flatten() {
            let Some(v) = v.as_str() else {
                return Err(format!("matchLabels[{k}] must be a string"));
            };
            requirements.push(Requirement::new(k, Operator::Equals, vec![v.to_string()])?);
        }
        for expr in match_expressions.into_iter().flatten() {
            let key = expr.get("key").and_then(Value::as_str).unwrap_or_default();
            let op_str = expr
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let op = match op_str {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(format!(
                        "{} is not a valid label selector operator",
                        go_quote(other)
                    ));
                }
            };
            let values = match expr.get("values") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| "matchExpressions values must be strings".to_string())?,
                Some(_) => return Err("matchExpressions values must be an array".to_string()),
            };
            requirements.push(Requirement::new(key, op, values)?);
        }
        // `internalSelector.Add` keeps requirements sorted by key.
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Whether an object with these labels is selected.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True for the select-everything selector (upstream `Empty()`).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    #[allow(dead_code)] // API for callers that inspect selectors
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// The value a selector pins `label` to, if any (upstream
    /// `RequiresExactMatch`).
    #[allow(dead_code)] // API for index lookups by callers
    pub fn requires_exact_match(&self, label: &str) -> Option<&str> {
        let r = self.requirements.iter().find(|r| r.key == label)?;
        match (r.operator, r.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [v]) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

// --- lexer -------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Error,
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn literal_token(s: &[u8]) -> Option<Token> {
    Some(match s {
        b")" => Token::ClosedPar,
        b"," => Token::Comma,
        b"!" => Token::DoesNotExist,
        b"==" => Token::DoubleEquals,
        b"=" => Token::Equals,
        b">" => Token::GreaterThan,
        b"in" => Token::In,
        b"<" => Token::LessThan,
        b"!=" => Token::NotEquals,
        b"notin" => Token::NotIn,
        b"(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(ch: u8) -> bool {
    matches!(ch, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special_symbol(ch: u8) -> bool {
    matches!(ch, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Lexer<'_> {
    /// Next byte, or 0 at the end (like upstream, a NUL byte also ends input).
    fn read(&mut self) -> u8 {
        match self.s.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                b
            }
            None => 0,
        }
    }

    fn unread(&mut self) {
        self.pos = self.pos.saturating_sub(1);
    }

    fn scan_id_or_keyword(&mut self) -> (Token, String) {
        let mut buf = Vec::new();
        loop {
            let ch = self.read();
            if ch == 0 {
                break;
            }
            if is_special_symbol(ch) || is_whitespace(ch) {
                self.unread();
                break;
            }
            buf.push(ch);
        }
        let tok = literal_token(&buf).unwrap_or(Token::Identifier);
        (tok, String::from_utf8_lossy(&buf).into_owned())
    }

    fn scan_special_symbol(&mut self) -> (Token, String) {
        let mut last: Option<(Token, String)> = None;
        let mut buf = Vec::new();
        loop {
            let ch = self.read();
            if ch == 0 {
                break;
            }
            if !is_special_symbol(ch) {
                self.unread();
                break;
            }
            buf.push(ch);
            if let Some(t) = literal_token(&buf) {
                last = Some((t, String::from_utf8_lossy(&buf).into_owned()));
            } else if last.is_some() {
                self.unread();
                break;
            }
        }
        last.unwrap_or_else(|| {
            (
                Token::Error,
                format!(
                    "error expected: keyword found '{}'",
                    String::from_utf8_lossy(&buf)
                ),
            )
        })
    }

    fn lex(&mut self) -> (Token, String) {
        let mut ch = self.read();
        while is_whitespace(ch) {
            ch = self.read();
        }
        if ch == 0 {
            return (Token::EndOfString, String::new());
        }
        self.unread();
        if is_special_symbol(ch) {
            self.scan_special_symbol()
        } else {
            self.scan_id_or_keyword()
        }
    }
}

fn scan(s: &[u8]) -> Vec<(Token, String)> {
    let mut l = Lexer { s, pos: 0 };
    let mut items = Vec::new();
    loop {
        let item = l.lex();
        let end = item.0 == Token::EndOfString;
        items.push(item);
        if end {
            return items;
        }
    }
}

// --- parser ------------------------------------------------------------------

struct Parser {
    items: Vec<(Token, String)>,
    pos: usize,
}

/// In the values context `in`/`notin` are plain identifiers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    KeyAndOperator,
    Values,
}

impl Parser {
    fn item(&self, i: usize, ctx: Ctx) -> (Token, String) {
        let (tok, lit) = self
            .items
            .get(i)
            .cloned()
            .unwrap_or((Token::EndOfString, String::new()));
        let tok = match tok {
            Token::In | Token::NotIn if ctx == Ctx::Values => Token::Identifier,
            t => t,
        };
        (tok, lit)
    }

    fn lookahead(&self, ctx: Ctx) -> (Token, String) {
        self.item(self.pos, ctx)
    }

    fn consume(&mut self, ctx: Ctx) -> (Token, String) {
        let it = self.item(self.pos, ctx);
        self.pos += 1;
        it
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut reqs = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Ctx::Values);
            match tok {
                Token::Identifier | Token::DoesNotExist => {
                    let r = self
                        .parse_requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    let (t, l) = self.consume(Ctx::Values);
                    match t {
                        Token::EndOfString => return Ok(reqs),
                        Token::Comma => {
                            let (t2, l2) = self.lookahead(Ctx::Values);
                            if t2 != Token::Identifier && t2 != Token::DoesNotExist {
                                return Err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => return Err(format!("found '{l}', expected: ',' or 'end of string'")),
                    }
                }
                Token::EndOfString => return Ok(reqs),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, op) = self.parse_key_and_infer_operator()?;
        if let Some(op @ (Operator::Exists | Operator::DoesNotExist)) = op {
            return Requirement::new(&key, op, Vec::new());
        }
        let op = self.parse_operator()?;
        let values = match op {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(&key, op, values)
    }

    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut op = None;
        let (mut tok, mut lit) = self.consume(Ctx::Values);
        if tok == Token::DoesNotExist {
            op = Some(Operator::DoesNotExist);
            (tok, lit) = self.consume(Ctx::Values);
        }
        if tok != Token::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        // Upstream validates with a nil field path, which prints as "<nil>".
        if let Some(e) = validate_label_key(&lit, "<nil>") {
            return Err(e);
        }
        let (t, _) = self.lookahead(Ctx::Values);
        if matches!(t, Token::EndOfString | Token::Comma) && op != Some(Operator::DoesNotExist) {
            op = Some(Operator::Exists);
        }
        Ok((lit, op))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (tok, lit) = self.consume(Ctx::KeyAndOperator);
        Ok(match tok {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => {
                return Err(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                ));
            }
        })
    }

    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let (tok, lit) = self.consume(Ctx::Values);
        if tok != Token::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(Ctx::Values);
        match tok {
            Token::Identifier | Token::Comma => {
                let s = self.parse_identifiers_list()?;
                if self.consume(Ctx::Values).0 != Token::ClosedPar {
                    // Upstream reports the token seen before the list here.
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(s)
            }
            Token::ClosedPar => {
                self.consume(Ctx::Values);
                Ok(vec![String::new()])
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    /// A (possibly empty) comma-separated list of (possibly empty) values,
    /// returned sorted and unique like upstream's `sets.String`.
    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, String> {
        let mut s: Vec<String> = Vec::new();
        let finish = |mut s: Vec<String>| {
            s.sort();
            s.dedup();
            s
        };
        loop {
            let (tok, lit) = self.consume(Ctx::Values);
            match tok {
                Token::Identifier => {
                    s.push(lit);
                    let (tok2, lit2) = self.lookahead(Ctx::Values);
                    match tok2 {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(finish(s)),
                        _ => return Err(format!("found '{lit2}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if s.is_empty() {
                        s.push(String::new()); // "(,"
                    }
                    let (tok2, _) = self.lookahead(Ctx::Values);
                    if tok2 == Token::ClosedPar {
                        s.push(String::new()); // ",)"
                        return Ok(finish(s));
                    }
                    if tok2 == Token::Comma {
                        self.consume(Ctx::Values);
                        s.push(String::new()); // ",,"
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Vec<String>, String> {
        let (tok, _) = self.lookahead(Ctx::Values);
        if matches!(tok, Token::EndOfString | Token::Comma) {
            return Ok(vec![String::new()]);
        }
        let (tok, lit) = self.consume(Ctx::Values);
        if tok == Token::Identifier {
            return Ok(vec![lit]);
        }
        Err(format!("found '{lit}', expected: identifier"))
    }
}

// --- validation (k8s.io/apimachinery/pkg/util/validation) ----------------------

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let mut s = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            s.push_str(" or ");
        }
        s.push_str(&format!("'{e}', "));
    }
    s.push_str(&format!("regex used for validation is '{fmt}')"));
    s
}

fn is_qualified_name_syntax(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

fn is_dns1123_subdomain_syntax(s: &str) -> bool {
    s.split('.').all(|label| {
        let b = label.as_bytes();
        let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        match (b.first(), b.last()) {
            (Some(f), Some(l)) => ok(f) && ok(l) && b.iter().all(|c| ok(c) || *c == b'-'),
            _ => false,
        }
    })
}

/// Upstream `validation.IsQualifiedName`.
fn qualified_name_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                if prefix.len() > 253 {
                    errs.push("prefix part must be no more than 253 characters".to_string());
                }
                if !is_dns1123_subdomain_syntax(prefix) {
                    errs.push(format!(
                        "prefix part {}",
                        regex_error(
                            DNS1123_SUBDOMAIN_ERR_MSG,
                            DNS1123_SUBDOMAIN_FMT,
                            &["example.com"]
                        )
                    ));
                }
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_ERR_MSG,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    }
    if !is_qualified_name_syntax(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// Upstream `validation.IsValidLabelValue`.
fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !value.is_empty() && !is_qualified_name_syntax(value) {
        errs.push(regex_error(
            LABEL_VALUE_ERR_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

fn validate_label_key(key: &str, path: &str) -> Option<String> {
    let errs = qualified_name_errors(key);
    if errs.is_empty() {
        None
    } else {
        Some(format!(
            "{path}: Invalid value: {}: {}",
            go_quote(key),
            errs.join("; ")
        ))
    }
}

/// A `field.Invalid` error whose bad value is a `[]string` (printed `%#v`).
fn invalid_strings(path: &str, values: &[String], detail: &str) -> String {
    let shown = if values.is_empty() {
        // Upstream passes a nil slice here.
        "[]string(nil)".to_string()
    } else {
        let quoted: Vec<String> = values.iter().map(|v| go_quote(v)).collect();
        format!("[]string{{{}}}", quoted.join(", "))
    };
    format!("{path}: Invalid value: {shown}: {detail}")
}

/// `utilerrors.NewAggregate(...).Error()`.
fn aggregate(mut errs: Vec<String>) -> String {
    if errs.len() == 1 {
        return errs.remove(0);
    }
    let mut seen: Vec<String> = Vec::new();
    for e in errs {
        if !seen.contains(&e) {
            seen.push(e);
        }
    }
    if seen.len() == 1 {
        return seen.remove(0);
    }
    format!("[{}]", seen.join(", "))
}

/// Go's `%q` / `strconv.Quote` for the characters that can reach it here.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => {
                let n = c as u32;
                if n <= 0xffff {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------
// Field selectors.

/// One `field=value` / `field==value` / `field!=value` term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldTerm {
    pub field: String,
    /// Unescaped value.
    pub value: String,
    /// `!=` instead of `=`/`==`.
    pub negated: bool,
}

/// A parsed field selector: the AND of its terms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses the `fieldSelector` query syntax (upstream
    /// `fields.ParseSelector`).
    pub fn parse(s: &str) -> Result<FieldSelector, String> {
        let mut parts = split_terms(s);
        parts.sort();
        let mut terms = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((lhs, op, rhs)) = split_term(part) else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            let value = unescape_value(rhs)?;
            // A term with neither field nor value selects everything.
            if lhs.is_empty() && value.is_empty() {
                continue;
            }
            terms.push(FieldTerm {
                field: lhs.to_string(),
                value,
                negated: op == "!=",
            });
        }
        Ok(FieldSelector { terms })
    }

    #[allow(dead_code)] // API for callers that inspect selectors
    pub fn terms(&self) -> &[FieldTerm] {
        &self.terms
    }

    /// The field names used, for checking them against [`FieldSelector::supported`].
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(|t| t.field.as_str())
    }

    /// True when the selector selects everything.
    #[allow(dead_code)] // API for callers
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The value an `=` term pins `field` to, if any (upstream
    /// `RequiresExactMatch`, e.g. for `metadata.name` lookups).
    #[allow(dead_code)] // API for index lookups by callers
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| !t.negated && t.field == field)
            .map(|t| t.value.as_str())
    }

    /// Whether `obj` is selected; the kind is taken from `obj.kind`. Goes
    /// the way the cache does: `selectable_fields`, then `matches_fields`.
    #[cfg(test)]
    pub fn matches(&self, obj: &Value) -> bool {
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        let mut this = self.clone();
        this.canonicalize(kind);
        let fields = selectable_fields(kind, obj);
        let meta = |k: &str| obj["metadata"][k].as_str().unwrap_or("");
        this.matches_fields(|f| match f {
            "metadata.name" => meta("name"),
            "metadata.namespace" => meta("namespace"),
            f => fields
                .iter()
                .find(|(k, _)| *k == f)
                .map(|(_, v)| &**v)
                .unwrap_or(""),
        })
    }

    /// Whether `lookup` (a field's value as upstream formats it) satisfies
    /// every term; for objects whose fields were extracted beforehand.
    pub fn matches_fields<'a>(&self, lookup: impl Fn(&str) -> &'a str) -> bool {
        self.terms
            .iter()
            .all(|t| (lookup(&t.field) == t.value) != t.negated)
    }

    /// Whether kube-apiserver accepts `field` in a field selector for `kind`.
    pub fn supported(kind: &str, field: &str) -> bool {
        matches!(field, "metadata.name" | "metadata.namespace")
            || extra_fields(kind).contains(&canonical_field(kind, field))
    }

    /// Rewrites alias spellings (events.k8s.io's `regarding.*`) to the
    /// field the cache stores for `kind`.
    pub fn canonicalize(&mut self, kind: &str) {
        for t in &mut self.terms {
            t.field = canonical_field(kind, &t.field).to_string();
        }
    }
}

/// The values of `kind`'s selectable fields beyond name and namespace, as
/// field selectors compare them; empty values are left out.
pub fn selectable_fields(kind: &str, obj: &Value) -> Vec<(&'static str, Box<str>)> {
    extra_fields(kind)
        .iter()
        .filter_map(|f| {
            let v = field_value(kind, obj, f);
            (!v.is_empty()).then(|| (*f, v.into_boxed_str()))
        })
        .collect()
}

/// events.k8s.io/v1's spellings of Event fields, and the core/v1 field
/// each names: selectors are rewritten to the latter, so a cached Event
/// holds each value once.
const EVENT_FIELD_ALIASES: &[(&str, &str)] = &[
    ("regarding.kind", "involvedObject.kind"),
    ("regarding.namespace", "involvedObject.namespace"),
    ("regarding.name", "involvedObject.name"),
    ("regarding.uid", "involvedObject.uid"),
    ("regarding.apiVersion", "involvedObject.apiVersion"),
    (
        "regarding.resourceVersion",
        "involvedObject.resourceVersion",
    ),
    ("regarding.fieldPath", "involvedObject.fieldPath"),
    ("reportingController", "reportingComponent"),
];

/// The field `field` of a `kind` object is stored under.
fn canonical_field<'a>(kind: &str, field: &'a str) -> &'a str {
    if kind == "Event"
        && let Some((_, f)) = EVENT_FIELD_ALIASES.iter().find(|(a, _)| *a == field)
    {
        return f;
    }
    field
}

/// The fields kube-apiserver selects on for `kind`, beyond `metadata.name`
/// and `metadata.namespace`.
fn extra_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "Node" => &["spec.unschedulable"],
        "Namespace" => &["status.phase"],
        "Secret" => &["type"],
        "ReplicaSet" | "ReplicationController" => &["status.replicas"],
        "Job" => &["status.successful"],
        "CertificateSigningRequest" => &["spec.signerName"],
        "ResourceSlice" => &["spec.nodeName", "spec.driver"],
        _ => &[],
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = if t.negated { "!=" } else { "=" };
            write!(f, "{}{op}{}", t.field, escape_value(&t.value))?;
        }
        Ok(())
    }
}

/// Splits on commas not escaped by a backslash (escapes are kept).
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits a term at the first operator; `!=` and `==` win over `=`.
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for op in ["!=", "==", "="] {
            if let Some(rhs) = rest.strip_prefix(op) {
                return Some((&term[..i], op, rhs));
            }
        }
    }
    None
}

fn escape_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace('=', "\\=")
}

fn unescape_value(s: &str) -> Result<String, String> {
    if !s.contains(['\\', ',', '=']) {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                _ => {
                    return Err(format!(
                        "invalid field selector: invalid escape sequence: \\{c}"
                    ));
                }
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            // Go prints the rune with %v, i.e. as its code point.
            ',' | '=' => {
                return Err(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                ));
            }
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err("invalid field selector: invalid escape sequence: \\".to_string());
    }
    Ok(out)
}

/// The string value kube-apiserver's field set holds for `field`.
fn field_value(kind: &str, obj: &Value, field: &str) -> String {
    let get = |path: &str| lookup_string(obj, path);
    let or = |v: String, default: &str| if v.is_empty() { default.to_string() } else { v };
    match (kind, field) {
        // Upstream formats these from typed fields, so absent means zero.
        ("Pod", "spec.hostNetwork") | ("Node", "spec.unschedulable") => or(get(field), "false"),
        ("Pod", "status.podIP") => {
            let first = obj
                .pointer("/status/podIPs/0/ip")
                .map(scalar_string)
                .unwrap_or_default();
            or(first, &get("status.podIP"))
        }
        // Accepted by the field-label conversion but absent from the field set.
        ("Pod", "status.podIPs") => String::new(),
        ("ReplicaSet" | "ReplicationController", "status.replicas") => or(get(field), "0"),
        ("Job", "status.successful") => or(get("status.succeeded"), "0"),
        ("Event", _) => event_field_value(obj, field),
        _ => get(field),
    }
}

fn event_field_value(obj: &Value, field: &str) -> String {
    let get = |path: &str| lookup_string(obj, path);
    // events.k8s.io/v1 stores the same data under other names.
    let new_api = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .is_some_and(|v| v.starts_with("events.k8s.io/"));
    // (Selectors name the core/v1 fields: see EVENT_FIELD_ALIASES.)
    let involved = field.strip_prefix("involvedObject.");
    let reporting = || {
        if new_api {
            get("reportingController")
        } else {
            get("reportingComponent")
        }
    };
    match (field, involved) {
        (_, Some(rest)) if new_api => get(&format!("regarding.{rest}")),
        (_, Some(rest)) => get(&format!("involvedObject.{rest}")),
        ("source", _) => {
            let c = if new_api {
                get("deprecatedSource.component")
            } else {
                get("source.component")
            };
            if c.is_empty() { reporting() } else { c }
        }
        ("reportingComponent", _) => reporting(),
        (f, _) => get(f),
    }
}

/// Looks up a dotted path; missing or non-scalar values read as "".
fn lookup_string(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    scalar_string(cur)
}

fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn lmatch(sel: &str, l: Value) -> bool {
        LabelSelector::parse(sel)
            .unwrap_or_else(|e| panic!("{sel}: {e}"))
            .matches(Some(&labels(l)))
    }

    #[test]
    fn label_parse_round_trips() {
        // upstream TestSelectorParse
        for s in [
            "x=a,y=b,z=c",
            "",
            "x!=a,y=b",
            "x=",
            "x= ",
            "x=,z= ",
            "x= ,z= ",
            "!x",
            "x>1",
            "x>1,z<5",
        ] {
            let sel = LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(sel.to_string(), s.replace(' ', ""), "{s}");
        }
        for s in ["x=a||y=b", "x==a==b", "!x=a", "x<a"] {
            assert!(LabelSelector::parse(s).is_err(), "{s}");
        }
        assert_eq!(
            LabelSelector::parse("x=a,a=x").unwrap().to_string(),
            LabelSelector::parse("a=x,x=a").unwrap().to_string()
        );
    }

    #[test]
    fn label_set_syntax() {
        let cases: &[(&str, &str)] = &[
            ("\rx", "x"),
            (
                "this-is-another-dns.domain.com/key-with-dash in (so,what)",
                "this-is-another-dns.domain.com/key-with-dash in (so,what)",
            ),
            (
                "0.1.2.domain/99 notin (10.10.100.1, tick.tack.clock)",
                "0.1.2.domain/99 notin (10.10.100.1,tick.tack.clock)",
            ),
            ("foo  in\t (abc)", "foo in (abc)"),
            ("x notin\n (abc)", "x notin (abc)"),
            ("x in (abc,)", "x in (,abc)"),
            ("x in ()", "x in ()"),
            (
                "x notin (abc,,def),bar,z in (),w",
                "bar,w,x notin (,abc,def),z in ()",
            ),
            ("x notin (, a)", "x notin (,a)"),
            ("a ", "a"),
            ("a in (x,y,notin, z,in)", "a in (in,notin,x,y,z)"),
            ("notin=in", "notin=in"),
        ];
        for (input, want) in cases {
            let sel = LabelSelector::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(sel.to_string(), *want, "{input:?}");
        }
        for bad in [
            "x,,y",
            ",x,y",
            "x nott in (y)",
            "a in (xyz),",
            "a in (xyz)b notin ()",
            "a in (xyz abc)",
            "a notin(",
            "a (",
            "(",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_error_messages_match_upstream() {
        let cases: &[(&str, &str)] = &[
            (
                "a b",
                "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt",
            ),
            ("!x=a", "found '=', expected: ',' or 'end of string'"),
            ("a in (xyz),", "found '', expected: identifier after ','"),
            (
                "(",
                "found '(', expected: !, identifier, or 'end of string'",
            ),
            (
                "x in (a b)",
                "unable to parse requirement: found 'b', expected: ',' or ')'",
            ),
            (
                "x<a",
                "unable to parse requirement: values[0]: Invalid value: \"a\": for 'Gt', 'Lt' operators, the value must be an integer",
            ),
            (
                "foo@bar=1",
                "unable to parse requirement: <nil>: Invalid value: \"foo@bar\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            ),
            (
                "x in (a;b)",
                "unable to parse requirement: values[0][x]: Invalid value: \"a;b\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            ),
            (
                "Example.com/a",
                "unable to parse requirement: <nil>: Invalid value: \"Example.com/a\": prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(LabelSelector::parse(input).unwrap_err(), *want, "{input}");
        }
    }

    #[test]
    fn label_matching() {
        // upstream TestSelectorMatches
        assert!(lmatch("", json!({"x": "y"})));
        assert!(lmatch("x=y", json!({"x": "y"})));
        assert!(lmatch("x=y,z=w", json!({"x": "y", "z": "w"})));
        assert!(lmatch("x!=y,z!=w", json!({"x": "z", "z": "a"})));
        assert!(lmatch("notin=in", json!({"notin": "in"})));
        assert!(lmatch("x", json!({"x": "z"})));
        assert!(lmatch("!x", json!({"y": "z"})));
        assert!(lmatch("x>1", json!({"x": "2"})));
        assert!(lmatch("x<1", json!({"x": "0"})));
        assert!(!lmatch("x=z", json!({})));
        assert!(!lmatch("x=y", json!({"x": "z"})));
        assert!(!lmatch("x=y,z=w", json!({"x": "w", "z": "w"})));
        assert!(!lmatch("x!=y,z!=w", json!({"x": "z", "z": "w"})));
        assert!(!lmatch("x", json!({"y": "z"})));
        assert!(!lmatch("!x", json!({"x": "z"})));
        assert!(!lmatch("x>1", json!({"x": "0"})));
        assert!(!lmatch("x<1", json!({"x": "2"})));
        assert!(!lmatch("x>1", json!({"x": "abc"})));
        assert!(lmatch("x in (a,b)", json!({"x": "b"})));
        assert!(!lmatch("x in (a,b)", json!({})));
        assert!(lmatch("x notin (a,b)", json!({})));
        assert!(!lmatch("x notin (a,b)", json!({"x": "a"})));
        assert!(lmatch("x=", json!({"x": ""})));
        // No labels at all.
        let sel = LabelSelector::parse("!x").unwrap();
        assert!(sel.matches(None));
        assert!(!LabelSelector::parse("x").unwrap().matches(None));
    }

    #[test]
    fn label_emptiness_and_exact_match() {
        assert!(LabelSelector::parse("").unwrap().is_empty());
        assert!(LabelSelector::parse("  ").unwrap().is_empty());
        assert!(!LabelSelector::parse("a").unwrap().is_empty());
        let s = LabelSelector::parse("a=1,b in (2),c in (3,4),d!=5").unwrap();
        assert_eq!(s.requires_exact_match("a"), Some("1"));
        assert_eq!(s.requires_exact_match("b"), Some("2"));
        assert_eq!(s.requires_exact_match("c"), None);
        assert_eq!(s.requires_exact_match("d"), None);
        assert_eq!(s.requirements().len(), 4);
    }

    #[test]
    fn label_selector_object() {
        let l = labels(json!({"app": "web", "tier": "fe"}));
        let everything = LabelSelector::from_label_selector_object(&json!({})).unwrap();
        assert!(everything.is_empty() && everything.matches(Some(&l)));
        let nothing = LabelSelector::from_label_selector_object(&Value::Null).unwrap();
        assert!(!nothing.is_empty() && !nothing.matches(Some(&l)));

        let sel = LabelSelector::from_label_selector_object(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["fe", "be"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "app", "operator": "Exists"},
                {"key": "env", "operator": "NotIn", "values": ["prod"]}
            ]
        }))
        .unwrap();
        assert!(sel.matches(Some(&l)));
        assert_eq!(
            sel.to_string(),
            "app=web,app,!canary,env notin (prod),tier in (be,fe)"
        );
        let mut l2 = l.clone();
        l2.insert("canary".into(), json!("true"));
        assert!(!sel.matches(Some(&l2)));

        let err = |v: Value| LabelSelector::from_label_selector_object(&v).unwrap_err();
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "Foo"}]})),
            "\"Foo\" is not a valid label selector operator"
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "In"}]})),
            "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty"
        );
        assert_eq!(
            err(
                json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x", "y"]}]})
            ),
            "values: Invalid value: []string{\"x\", \"y\"}: values set must be empty for exists and does not exist"
        );
        assert!(
            err(json!({"matchLabels": {"bad key": "v"}}))
                .starts_with("key: Invalid value: \"bad key\"")
        );
    }

    #[test]
    fn field_parse_and_errors() {
        let s = FieldSelector::parse("a=b,c!=d,e==f").unwrap();
        assert_eq!(s.to_string(), "a=b,c!=d,e=f");
        assert_eq!(s.fields().collect::<Vec<_>>(), ["a", "c", "e"]);
        assert!(FieldSelector::parse("").unwrap().is_empty());
        assert!(FieldSelector::parse("=").unwrap().is_empty());
        assert_eq!(
            FieldSelector::parse("x=a\\,b").unwrap().terms()[0].value,
            "a,b"
        );
        assert_eq!(
            FieldSelector::parse("x=a\\=b\\\\").unwrap().terms()[0].value,
            "a=b\\"
        );
        let err = |s: &str| FieldSelector::parse(s).unwrap_err();
        assert_eq!(
            err("x=a,b"),
            "invalid selector: 'x=a,b'; can't understand 'b'"
        );
        assert_eq!(
            err("metadata.name"),
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
        );
        assert_eq!(
            err("x=\\q"),
            "invalid field selector: invalid escape sequence: \\q"
        );
        assert_eq!(
            err("a=b\\"),
            "invalid field selector: invalid escape sequence: \\"
        );
        assert_eq!(
            err("x=a=b"),
            "invalid field selector: unescaped character in value: 61"
        );
        let s = FieldSelector::parse("metadata.name=a,spec.nodeName!=n").unwrap();
        assert_eq!(s.requires_exact_match("metadata.name"), Some("a"));
        assert_eq!(s.requires_exact_match("spec.nodeName"), None);
    }

    #[test]
    fn field_matching() {
        let pod = json!({
            "kind": "Pod",
            "metadata": {"name": "p1", "namespace": "ns"},
            "spec": {"nodeName": "n1", "restartPolicy": "Always"},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.1"}]}
        });
        let m = |s: &str| FieldSelector::parse(s).unwrap().matches(&pod);
        assert!(m("metadata.name=p1"));
        assert!(m("metadata.name==p1,metadata.namespace=ns"));
        assert!(!m("metadata.name!=p1"));
        assert!(m("spec.nodeName=n1,status.phase!=Pending"));
        // Missing fields read as the empty string (or the zero value).
        assert!(m("spec.schedulerName="));
        assert!(!m("spec.schedulerName=x"));
        assert!(m("spec.hostNetwork=false"));
        assert!(m("status.podIP=10.0.0.1"));
        assert!(m(""));

        let node =
            json!({"kind": "Node", "metadata": {"name": "n"}, "spec": {"unschedulable": true}});
        assert!(
            FieldSelector::parse("spec.unschedulable=true")
                .unwrap()
                .matches(&node)
        );
        let node2 = json!({"kind": "Node", "metadata": {"name": "n"}});
        assert!(
            FieldSelector::parse("spec.unschedulable=false")
                .unwrap()
                .matches(&node2)
        );

        let rs = json!({"kind": "ReplicaSet", "status": {"replicas": 3}});
        assert!(
            FieldSelector::parse("status.replicas=3")
                .unwrap()
                .matches(&rs)
        );
        let job = json!({"kind": "Job", "status": {}});
        assert!(
            FieldSelector::parse("status.successful=0")
                .unwrap()
                .matches(&job)
        );

        let ev = json!({"kind": "Event", "involvedObject": {"kind": "Pod", "name": "p1"},
            "reason": "Started", "source": {"component": "kubelet"}, "type": "Normal"});
        let em = |s: &str| FieldSelector::parse(s).unwrap().matches(&ev);
        assert!(em(
            "involvedObject.kind=Pod,involvedObject.name=p1,reason=Started"
        ));
        assert!(em("source=kubelet,type=Normal"));
        let ev2 = json!({"kind": "Event", "reportingComponent": "ctrl"});
        assert!(FieldSelector::parse("source=ctrl").unwrap().matches(&ev2));

        let secret = json!({"kind": "Secret", "type": "kubernetes.io/tls"});
        assert!(
            FieldSelector::parse("type=kubernetes.io/tls")
                .unwrap()
                .matches(&secret)
        );
    }

    #[test]
    fn field_support_table() {
        assert!(FieldSelector::supported("ConfigMap", "metadata.name"));
        assert!(FieldSelector::supported("ConfigMap", "metadata.namespace"));
        assert!(!FieldSelector::supported("ConfigMap", "data.x"));
        assert!(FieldSelector::supported("Pod", "spec.nodeName"));
        assert!(FieldSelector::supported("Pod", "status.podIPs"));
        assert!(!FieldSelector::supported("Pod", "spec.foo"));
        assert!(FieldSelector::supported("Event", "involvedObject.uid"));
        assert!(FieldSelector::supported("Node", "spec.unschedulable"));
        assert!(FieldSelector::supported("Namespace", "status.phase"));
        assert!(FieldSelector::supported("Secret", "type"));
        assert!(FieldSelector::supported(
            "ReplicationController",
            "status.replicas"
        ));
        assert!(FieldSelector::supported("Job", "status.successful"));
        assert!(FieldSelector::supported(
            "CertificateSigningRequest",
            "spec.signerName"
        ));
        assert!(!FieldSelector::supported("Deployment", "status.replicas"));
    }

    #[test]
    fn event_aliases_select_both_event_apis_and_are_stored_once() {
        let core = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "e1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p1"},
            "reportingComponent": "kubelet"});
        let new = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e2", "namespace": "default"},
            "regarding": {"kind": "Pod", "name": "p1"},
            "reportingController": "kubelet"});
        for sel in [
            "regarding.name=p1",
            "involvedObject.name=p1",
            "regarding.kind=Pod,reportingController=kubelet",
            "reportingComponent=kubelet",
        ] {
            let fs = FieldSelector::parse(sel).unwrap();
            assert!(fs.fields().all(|f| FieldSelector::supported("Event", f)));
            assert!(fs.matches(&core), "{sel} on core/v1");
            assert!(fs.matches(&new), "{sel} on events.k8s.io/v1");
        }
        assert!(
            !FieldSelector::parse("regarding.name=p2")
                .unwrap()
                .matches(&new)
        );
        let stored: Vec<&str> = selectable_fields("Event", &new)
            .iter()
            .map(|(f, _)| *f)
            .collect();
        assert!(stored.contains(&"involvedObject.name"), "{stored:?}");
        assert!(
            !stored.iter().any(|f| f.starts_with("regarding.")),
            "{stored:?}"
        );
    }
}

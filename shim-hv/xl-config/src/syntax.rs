//! The `KEY = VALUE` layer: xl's config grammar (`libxlu_cfg_l.l`,
//! `libxlu_cfg_y.y`) plus the plain-value spellings of xm's Python configs.
//!
//! Grammar (newlines end statements except inside lists):
//! ```text
//! file   := { stmt }
//! stmt   := NEWLINE | ';' | KEY ('=' | '+=') value (NEWLINE | ';' | EOF)
//! value  := STRING | NUMBER | True | False | '[' { NEWLINE } [ items ] ']'
//! items  := value { NEWLINE } { ',' { NEWLINE } value { NEWLINE } } [ ',' { NEWLINE } ]
//! ```
//! `#` starts a comment to the end of the line (also between list items).
//! Strings use `'` or `"`, stay on one line and know the escapes
//! `\' \" \\ \a \b \f \n \r \t \v \xHH \ooo` (xl's lexer accepts the numeric
//! forms but drops them; we decode them, ASCII only). Numbers are kept as
//! written and read later with C `strtol(.., 0)` rules; unlike xl a leading `-`
//! is allowed (xm's `cpu = -1`). Python's `True`/`False` are read as 1/0.
//! Anything that looks like Python code is refused with [`ErrorKind::PythonCode`].

use super::error::{ConfigError, ErrorKind};

/// How an atom was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtomKind {
    /// A quoted string.
    Str,
    /// A bare number.
    Num,
    /// Python's `True` / `False` (text is `1` / `0`).
    Bool,
}

/// A single value: its text (dequoted) and the line it is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Atom {
    /// The value; for strings without quotes, escapes decoded.
    pub text: String,
    /// How it was written.
    pub kind: AtomKind,
    /// 1-based line.
    pub line: u32,
}

/// A value: one atom or a (possibly nested) list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A string, number or boolean.
    Atom(Atom),
    /// `[ ... ]`, with the line of the `[`.
    List(Vec<Value>, u32),
}

impl Value {
    /// Line where the value starts.
    pub fn line(&self) -> u32 {
        match self {
            Value::Atom(a) => a.line,
            Value::List(_, l) => *l,
        }
    }
}

/// One `KEY = VALUE` (or `KEY += VALUE`) statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The key as written.
    pub key: String,
    /// The value.
    pub value: Value,
    /// Line of the key.
    pub line: u32,
    /// Whether it was `+=`.
    pub append: bool,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Eq,
    PlusEq,
    Comma,
    LBrack,
    RBrack,
    Semi,
    Newline,
    Eof,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: u32,
    /// Byte range in the source, for error texts.
    start: usize,
    end: usize,
}

/// Python keywords that start a statement.
const PY_KEYWORDS: &[&str] = &[
    "import", "from", "def", "class", "if", "elif", "else", "for", "while", "try", "except",
    "finally", "with", "return", "print", "lambda", "global", "del", "pass", "assert", "raise",
    "exec",
];

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    line: u32,
    file: &'a str,
}

impl<'a> Lexer<'a> {
    fn err(&self, line: u32, kind: ErrorKind, start: usize, end: usize) -> ConfigError {
        let text = self.src.get(start..end).unwrap_or("").trim_end();
        ConfigError::new(self.file, line, kind, text)
    }

    fn rest_of_line_end(&self, from: usize) -> usize {
        self.src
            .get(from..)
            .and_then(|r| r.find('\n'))
            .map_or(self.src.len(), |i| from + i)
    }

    fn peek(&self) -> Option<char> {
        self.src.get(self.pos..).and_then(|r| r.chars().next())
    }

    fn peek2(&self) -> Option<char> {
        self.src.get(self.pos..).and_then(|r| r.chars().nth(1))
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn next(&mut self) -> Result<Token, ConfigError> {
        loop {
            match self.peek() {
                Some(' ' | '\t' | '\r' | '\x0c') => {
                    self.bump();
                }
                Some('#') => {
                    while !matches!(self.peek(), None | Some('\n')) {
                        self.bump();
                    }
                }
                _ => break,
            }
        }
        let start = self.pos;
        let line = self.line;
        let tok = |t, end| Token {
            tok: t,
            line,
            start,
            end,
        };
        let Some(c) = self.bump() else {
            return Ok(tok(Tok::Eof, start));
        };
        let t = match c {
            '\n' => Tok::Newline,
            '=' => Tok::Eq,
            ',' => Tok::Comma,
            '[' => Tok::LBrack,
            ']' => Tok::RBrack,
            ';' => Tok::Semi,
            '+' if self.peek() == Some('=') => {
                self.bump();
                Tok::PlusEq
            }
            '-' if self.peek().is_some_and(|c| c.is_ascii_digit()) => {
                self.take_word();
                Tok::Num(self.src.get(start..self.pos).unwrap_or("").to_owned())
            }
            '0'..='9' => {
                self.take_word();
                Tok::Num(self.src.get(start..self.pos).unwrap_or("").to_owned())
            }
            'a'..='z' | 'A'..='Z' | '_' => {
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                {
                    self.bump();
                }
                Tok::Ident(self.src.get(start..self.pos).unwrap_or("").to_owned())
            }
            '\'' | '"' => Tok::Str(self.string(c, start, line)?),
            '\\' if self.peek() == Some('\n') => {
                return Err(self.err(line, ErrorKind::PythonCode, start, self.pos));
            }
            '(' | ')' | ':' | '{' | '}' | '*' | '/' | '%' | '<' | '>' | '!' | '&' | '|' | '@'
            | '`' | '+' | '-' | '.' | '\\' | '~' | '^' => {
                let end = self.rest_of_line_end(start);
                return Err(self.err(line, ErrorKind::PythonCode, start, end));
            }
            _ => {
                return Err(self.err(
                    line,
                    ErrorKind::Syntax("unexpected character"),
                    start,
                    self.pos,
                ))
            }
        };
        Ok(tok(t, self.pos))
    }

    /// A number's characters: letters and digits (validated when used), `.`
    /// (so `1.5` is reported whole).
    fn take_word(&mut self) {
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            self.bump();
        }
    }

    fn string(&mut self, quote: char, start: usize, line: u32) -> Result<String, ConfigError> {
        // Python's triple-quoted strings.
        if self.peek() == Some(quote) && self.peek2() == Some(quote) {
            let end = self.rest_of_line_end(start);
            return Err(self.err(line, ErrorKind::PythonCode, start, end));
        }
        let mut out = String::new();
        loop {
            let esc_start = self.pos;
            match self.peek() {
                None | Some('\n') => {
                    return Err(self.err(line, ErrorKind::UnterminatedString, start, self.pos));
                }
                Some(c) if c == quote => {
                    self.bump();
                    // xl hands values to C as NUL-terminated strings: a NUL (raw or
                    // `\0`, `\x00`) would silently cut the value there.
                    if out.contains('\0') {
                        return Err(self.err(
                            line,
                            ErrorKind::Syntax("NUL byte in a string"),
                            start,
                            self.pos,
                        ));
                    }
                    return Ok(out);
                }
                Some('\\') => {
                    self.bump();
                    let Some(e) = self.peek() else {
                        return Err(self.err(line, ErrorKind::UnterminatedString, start, self.pos));
                    };
                    if e == '\n' {
                        return Err(self.err(line, ErrorKind::UnterminatedString, start, self.pos));
                    }
                    self.bump();
                    let simple = match e {
                        '\'' | '"' | '\\' => Some(e),
                        'a' => Some('\x07'),
                        'b' => Some('\x08'),
                        'f' => Some('\x0c'),
                        'n' => Some('\n'),
                        'r' => Some('\r'),
                        't' => Some('\t'),
                        'v' => Some('\x0b'),
                        _ => None,
                    };
                    if let Some(c) = simple {
                        out.push(c);
                        continue;
                    }
                    let (radix, min, max) = match e {
                        'x' => (16, 2, 2),
                        '0'..='7' => (8, 0, 2),
                        _ => return Err(self.err(line, ErrorKind::BadEscape, esc_start, self.pos)),
                    };
                    let mut v: u32 = if e == 'x' { 0 } else { e as u32 - '0' as u32 };
                    let mut n = 0;
                    while n < max {
                        match self.peek().and_then(|c| c.to_digit(radix)) {
                            Some(d) => {
                                v = v * radix + d;
                                self.bump();
                                n += 1;
                            }
                            None => break,
                        }
                    }
                    match char::from_u32(v) {
                        Some(c) if n >= min && c.is_ascii() => out.push(c),
                        _ => return Err(self.err(line, ErrorKind::BadEscape, esc_start, self.pos)),
                    }
                }
                Some(c) => {
                    self.bump();
                    out.push(c);
                }
            }
        }
    }
}

struct Parser<'a> {
    lex: Lexer<'a>,
    tok: Token,
}

impl<'a> Parser<'a> {
    fn advance(&mut self) -> Result<(), ConfigError> {
        self.tok = self.lex.next()?;
        Ok(())
    }

    fn text(&self, t: &Token) -> String {
        let s = self.lex.src.get(t.start..t.end).unwrap_or("");
        if t.tok == Tok::Newline {
            "end of line".to_owned()
        } else if t.tok == Tok::Eof {
            "end of file".to_owned()
        } else {
            s.to_owned()
        }
    }

    fn err_here(&self, kind: ErrorKind) -> ConfigError {
        ConfigError::new(self.lex.file, self.tok.line, kind, self.text(&self.tok))
    }

    fn python_here(&self) -> ConfigError {
        let end = self.lex.rest_of_line_end(self.tok.start);
        self.lex
            .err(self.tok.line, ErrorKind::PythonCode, self.tok.start, end)
    }

    fn skip_newlines(&mut self) -> Result<(), ConfigError> {
        while self.tok.tok == Tok::Newline {
            self.advance()?;
        }
        Ok(())
    }

    fn value(&mut self, depth: u32) -> Result<Value, ConfigError> {
        if depth > 32 {
            return Err(self.err_here(ErrorKind::Syntax("lists nested too deeply")));
        }
        let line = self.tok.line;
        let atom = |text: String, kind| Value::Atom(Atom { text, kind, line });
        let v = match &self.tok.tok {
            Tok::Str(s) => atom(s.clone(), AtomKind::Str),
            Tok::Num(s) => atom(s.clone(), AtomKind::Num),
            Tok::Ident(s) if s == "True" => atom("1".into(), AtomKind::Bool),
            Tok::Ident(s) if s == "False" => atom("0".into(), AtomKind::Bool),
            Tok::Ident(_) => {
                // A bare word: Python (a variable, a call, `None`) or a missing quote.
                let end = self.lex.rest_of_line_end(self.tok.start);
                let text = self.lex.src.get(self.tok.start..end).unwrap_or("");
                let kind = if text.contains('(') || text.contains('+') || text.contains('%') {
                    ErrorKind::PythonCode
                } else {
                    ErrorKind::Syntax("bare word: strings must be quoted")
                };
                return Err(self.lex.err(line, kind, self.tok.start, end));
            }
            Tok::LBrack => return self.list(depth),
            _ => return Err(self.err_here(ErrorKind::Syntax("expected a value"))),
        };
        self.advance()?;
        Ok(v)
    }

    fn list(&mut self, depth: u32) -> Result<Value, ConfigError> {
        let open = self.tok.clone();
        let unterminated = |p: &Parser<'_>| {
            ConfigError::new(
                p.lex.file,
                open.line,
                ErrorKind::UnterminatedList,
                p.lex
                    .src
                    .get(open.start..p.lex.rest_of_line_end(open.start))
                    .unwrap_or("")
                    .trim_end(),
            )
        };
        self.advance()?;
        self.skip_newlines()?;
        let mut items = Vec::new();
        loop {
            match self.tok.tok {
                Tok::RBrack => break,
                Tok::Eof => return Err(unterminated(self)),
                _ => {}
            }
            items.push(self.value(depth + 1)?);
            self.skip_newlines()?;
            match self.tok.tok {
                Tok::Comma => {
                    self.advance()?;
                    self.skip_newlines()?;
                }
                Tok::RBrack => break,
                Tok::Eof => return Err(unterminated(self)),
                _ => return Err(self.err_here(ErrorKind::Syntax("expected `,` or `]` in list"))),
            }
        }
        self.advance()?;
        Ok(Value::List(items, open.line))
    }

    fn statement(&mut self) -> Result<Option<Setting>, ConfigError> {
        match &self.tok.tok {
            Tok::Newline | Tok::Semi => {
                self.advance()?;
                return Ok(None);
            }
            Tok::Ident(_) => {}
            _ => return Err(self.err_here(ErrorKind::Syntax("expected KEY = VALUE"))),
        }
        let key_tok = self.tok.clone();
        let Tok::Ident(key) = key_tok.tok.clone() else {
            return Err(self.err_here(ErrorKind::Syntax("expected KEY = VALUE")));
        };
        self.advance()?;
        let append = match self.tok.tok {
            Tok::Eq => false,
            Tok::PlusEq => true,
            _ => {
                self.tok = key_tok;
                return Err(if PY_KEYWORDS.contains(&key.as_str()) {
                    self.python_here()
                } else {
                    let end = self.lex.rest_of_line_end(self.tok.start);
                    self.lex.err(
                        self.tok.line,
                        ErrorKind::Syntax("expected `=` after the key"),
                        self.tok.start,
                        end,
                    )
                });
            }
        };
        self.advance()?;
        let value = self.value(0)?;
        match self.tok.tok {
            Tok::Newline | Tok::Semi => self.advance()?,
            Tok::Eof => {}
            _ => {
                return Err(self.err_here(ErrorKind::Syntax(
                    "expected end of line or `;` after the value",
                )))
            }
        }
        Ok(Some(Setting {
            key,
            value,
            line: key_tok.line,
            append,
        }))
    }
}

/// Parses a whole file into settings in file order (repeats kept; the caller
/// decides what a repeat means).
pub fn parse(file: &str, src: &str) -> Result<Vec<Setting>, ConfigError> {
    let mut lex = Lexer {
        src,
        pos: 0,
        line: 1,
        file,
    };
    let tok = lex.next()?;
    let mut p = Parser { lex, tok };
    let mut out = Vec::new();
    while p.tok.tok != Tok::Eof {
        if let Some(s) = p.statement()? {
            out.push(s);
        }
    }
    Ok(out)
}

/// C `strtol(s, &end, 0)` requiring the whole string (surrounding blanks
/// allowed): optional sign, `0x` hex, leading-`0` octal, else decimal.
pub fn strtol(s: &str) -> Option<i64> {
    let t = s.trim_matches(|c: char| c == ' ' || c == '\t');
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, t.get(1..)?),
        Some(b'+') => (false, t.get(1..)?),
        _ => (false, t),
    };
    let (digits, radix) = if let Some(h) = body.strip_prefix("0x").or(body.strip_prefix("0X")) {
        (h, 16)
    } else if body.len() > 1 && body.starts_with('0') {
        (body.get(1..)?, 8)
    } else {
        (body, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let mag = i128::from_str_radix(digits, radix).ok()?;
    let v = if neg { -mag } else { mag };
    i64::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn atoms(v: &Value) -> Vec<String> {
        match v {
            Value::Atom(a) => vec![a.text.clone()],
            Value::List(items, _) => items.iter().flat_map(atoms).collect(),
        }
    }

    #[test]
    fn basic_forms() {
        let s = parse(
            "t",
            "a = 1\nb='x' ; c = \"y\" # c\n\nd = [ 'p', # one\n  'q', \n\n # between\n 'r',\n]\ne=[[1,2],[]]\nf = -1\ng += 'z'\nh = True",
        )
        .unwrap();
        let keys: Vec<_> = s.iter().map(|s| (s.key.as_str(), s.line)).collect();
        assert_eq!(
            keys,
            [
                ("a", 1),
                ("b", 2),
                ("c", 2),
                ("d", 4),
                ("e", 10),
                ("f", 11),
                ("g", 12),
                ("h", 13)
            ]
        );
        assert_eq!(atoms(&s[3].value), ["p", "q", "r"]);
        assert_eq!(s[3].value.line(), 4);
        if let Value::List(items, _) = &s[3].value {
            assert_eq!(items[2].line(), 8);
        }
        assert_eq!(atoms(&s[4].value), ["1", "2"]);
        assert_eq!(atoms(&s[5].value), ["-1"]);
        assert!(s[6].append);
        assert_eq!(atoms(&s[7].value), ["1"]);
    }

    /// Issue 17 item 13: a NUL in a string (raw or escaped) would cut the value
    /// where a C toolstack reads it: refused, naming the line.
    #[test]
    fn nul_in_a_string_is_refused_with_its_line() {
        for src in [
            "name = 'a'\nkernel = '/boot/vm\0linuz'\n",
            "name = 'a'\nkernel = \"/boot/vm\\0linuz\"\n",
            "name = 'a'\nkernel = '/boot/vm\\x00linuz'\n",
            "name = 'a'\ndisk = [ 'file:/x\0y,xvda,w' ]\n",
        ] {
            let e = parse("t.cfg", src).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Syntax("NUL byte in a string"), "{src:?}");
            assert_eq!(e.line, 2, "{src:?}");
            assert!(e.to_string().starts_with("t.cfg:2:"), "{e}");
        }
    }

    #[test]
    fn escapes() {
        let s = parse("t", r#"a = 'it\'s \"q\" \\ \t\x41\101'"#).unwrap();
        assert_eq!(atoms(&s[0].value), ["it's \"q\" \\ \tAA"]);
        let e = parse("t", r"a = 'bad \q'").unwrap_err();
        assert_eq!((e.kind, e.text.as_str()), (ErrorKind::BadEscape, r"\q"));
        let e = parse("t", r"a = '\xg1'").unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadEscape);
        let e = parse("t", r"a = '\xff'").unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadEscape);
    }

    #[test]
    fn errors_name_line_and_text() {
        let cases: &[(&str, u32, ErrorKind, &str)] = &[
            (
                "a = 1\nb = 'open\n",
                2,
                ErrorKind::UnterminatedString,
                "'open",
            ),
            (
                "a = [ 'x',\n 'y'\n",
                1,
                ErrorKind::UnterminatedList,
                "[ 'x',",
            ),
            (
                "a = [ 'x' 'y' ]",
                1,
                ErrorKind::Syntax("expected `,` or `]` in list"),
                "'y'",
            ),
            ("import os\n", 1, ErrorKind::PythonCode, "import os"),
            ("\n\ndef f(x):\n", 3, ErrorKind::PythonCode, "def f(x):"),
            ("a = foo(1)\n", 1, ErrorKind::PythonCode, "foo(1)"),
            ("a = 2 * 64\n", 1, ErrorKind::PythonCode, "* 64"),
            (
                "a = b\n",
                1,
                ErrorKind::Syntax("bare word: strings must be quoted"),
                "b",
            ),
            (
                "name\n",
                1,
                ErrorKind::Syntax("expected `=` after the key"),
                "name",
            ),
            (
                "a =\n1\n",
                1,
                ErrorKind::Syntax("expected a value"),
                "end of line",
            ),
            (
                "a = 1 2\n",
                1,
                ErrorKind::Syntax("expected end of line or `;` after the value"),
                "2",
            ),
            ("= 1\n", 1, ErrorKind::Syntax("expected KEY = VALUE"), "="),
            ("a = '''doc'''\n", 1, ErrorKind::PythonCode, "'''doc'''"),
            ("a = 'x' \\\n", 1, ErrorKind::PythonCode, "\\"),
            (
                "a = \u{e9}\n",
                1,
                ErrorKind::Syntax("unexpected character"),
                "\u{e9}",
            ),
        ];
        for (src, line, kind, text) in cases {
            let e = parse("f.cfg", src).unwrap_err();
            assert_eq!(
                (e.line, &e.kind, e.text.as_str()),
                (*line, kind, *text),
                "{src:?}"
            );
            assert!(e.to_string().starts_with(&format!("f.cfg:{line}: ")), "{e}");
        }
    }

    #[test]
    fn no_trailing_newline_and_crlf() {
        let s = parse("t", "a = 1\r\nb = [ 'x' ]").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].line, 2);
        assert!(parse("t", "").unwrap().is_empty());
        assert!(parse("t", "# only a comment").unwrap().is_empty());
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let src = format!("a = {}{}", "[".repeat(100), "]".repeat(100));
        let e = parse("t", &src).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Syntax("lists nested too deeply"));
    }

    #[test]
    fn strtol_like_c() {
        assert_eq!(strtol("0x10"), Some(16));
        assert_eq!(strtol("010"), Some(8));
        assert_eq!(strtol("-1"), Some(-1));
        assert_eq!(strtol(" 256 "), Some(256));
        assert_eq!(strtol("+7"), Some(7));
        assert_eq!(strtol("0"), Some(0));
        assert_eq!(strtol("09"), None);
        assert_eq!(strtol("0x"), None);
        assert_eq!(strtol("12a"), None);
        assert_eq!(strtol("1.5"), None);
        assert_eq!(strtol(""), None);
        assert_eq!(strtol("-"), None);
        assert_eq!(strtol("99999999999999999999"), None);
    }
}

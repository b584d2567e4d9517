//! Lexer and recursive-descent parser for the schema language (a SpiceDB subset) into an AST
//! that still carries names and positions; `schema.rs` resolves and validates it.
//!
//! Grammar (newlines are insignificant; a `;` after an item is accepted and ignored):
//!
//! ```text
//! schema     = { "definition" name "{" { relation | permission } "}" }
//! relation   = "relation" name ":" subject { "|" subject }
//! subject    = name [ "#" name | ":" "*" ]
//! permission = "permission" name "=" excl
//! excl       = inter { "-" inter }        (lowest precedence, as in SpiceDB)
//! inter      = union { "&" union }
//! union      = arrow { "+" arrow }
//! arrow      = name [ "->" name ] | "nil" | "(" excl ")"
//! ```
//!
//! Comments are `// ...` to the end of the line and `/* ... */`.

use std::fmt;

/// Longest schema text accepted, in bytes.
pub const MAX_SCHEMA_BYTES: usize = 1 << 20;

/// Deepest nesting of parentheses accepted (the parser recurses once per level).
const MAX_NESTING: u32 = 64;

/// Most operands in one permission expression (resolving recurses once per operator).
const MAX_TERMS: u32 = 256;

/// Longest type, relation or permission name, in bytes (SpiceDB's limit).
pub const MAX_NAME_BYTES: usize = 64;

/// A 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1, in characters.
    pub col: u32,
}

/// A schema that does not parse or does not validate: where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    /// The file name (or other label) the schema came from.
    pub source_name: String,
    /// Where the problem is.
    pub pos: Pos,
    /// What was expected or what is wrong, as one sentence fragment.
    pub message: String,
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.source_name, self.pos.line, self.pos.col, self.message
        )
    }
}

impl std::error::Error for SchemaError {}

/// A problem before the source name is attached.
pub(super) type Failure = (Pos, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'s> {
    Ident(&'s str),
    LBrace,
    RBrace,
    LParen,
    RParen,
    Colon,
    Semi,
    Pipe,
    Hash,
    Star,
    Eq,
    Plus,
    Amp,
    Minus,
    Arrow,
    Other(char),
    Eof,
}

impl fmt::Display for Tok<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Tok::Ident(name) => return write!(f, "'{name}'"),
            Tok::Other(c) => return write!(f, "'{c}'"),
            Tok::LBrace => "'{'",
            Tok::RBrace => "'}'",
            Tok::LParen => "'('",
            Tok::RParen => "')'",
            Tok::Colon => "':'",
            Tok::Semi => "';'",
            Tok::Pipe => "'|'",
            Tok::Hash => "'#'",
            Tok::Star => "'*'",
            Tok::Eq => "'='",
            Tok::Plus => "'+'",
            Tok::Amp => "'&'",
            Tok::Minus => "'-'",
            Tok::Arrow => "'->'",
            Tok::Eof => "the end of the schema",
        };
        f.write_str(s)
    }
}

/// Splits the text into tokens with their positions; comments and whitespace are dropped.
fn lex(text: &str) -> Result<Vec<(Tok<'_>, Pos)>, Failure> {
    let mut toks = Vec::new();
    let mut chars = text.char_indices().peekable();
    let mut pos = Pos { line: 1, col: 1 };
    // Advances past one character, keeping the position.
    let step = |pos: &mut Pos, c: char| {
        if c == '\n' {
            pos.line += 1;
            pos.col = 1;
        } else {
            pos.col += 1;
        }
    };
    while let Some(&(start, c)) = chars.peek() {
        let at = pos;
        chars.next();
        step(&mut pos, c);
        let tok = match c {
            c if c.is_whitespace() => continue,
            '/' if chars.peek().map(|&(_, n)| n) == Some('/') => {
                while let Some(&(_, n)) = chars.peek() {
                    if n == '\n' {
                        break;
                    }
                    chars.next();
                    step(&mut pos, n);
                }
                continue;
            }
            '/' if chars.peek().map(|&(_, n)| n) == Some('*') => {
                chars.next();
                step(&mut pos, '*');
                let mut prev = ' ';
                let mut closed = false;
                for (_, n) in chars.by_ref() {
                    step(&mut pos, n);
                    if prev == '*' && n == '/' {
                        closed = true;
                        break;
                    }
                    prev = n;
                }
                if !closed {
                    return Err((at, "comment opened here is never closed with '*/'".into()));
                }
                continue;
            }
            '-' if chars.peek().map(|&(_, n)| n) == Some('>') => {
                chars.next();
                step(&mut pos, '>');
                Tok::Arrow
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut end = start + c.len_utf8();
                while let Some(&(i, n)) = chars.peek() {
                    if !(n.is_ascii_alphanumeric() || n == '_') {
                        break;
                    }
                    end = i + n.len_utf8();
                    chars.next();
                    step(&mut pos, n);
                }
                Tok::Ident(text.get(start..end).unwrap_or_default())
            }
            '{' => Tok::LBrace,
            '}' => Tok::RBrace,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ':' => Tok::Colon,
            ';' => Tok::Semi,
            '|' => Tok::Pipe,
            '#' => Tok::Hash,
            '*' => Tok::Star,
            '=' => Tok::Eq,
            '+' => Tok::Plus,
            '&' => Tok::Amp,
            '-' => Tok::Minus,
            other => Tok::Other(other),
        };
        toks.push((tok, at));
    }
    toks.push((Tok::Eof, pos));
    Ok(toks)
}

/// A name with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Name {
    pub text: String,
    pub pos: Pos,
}

/// One `definition`.
#[derive(Debug)]
pub(super) struct DefAst {
    pub name: Name,
    pub items: Vec<ItemAst>,
}

/// A `relation` or `permission` inside a definition.
#[derive(Debug)]
pub(super) struct ItemAst {
    pub name: Name,
    pub body: ItemBody,
}

#[derive(Debug)]
pub(super) enum ItemBody {
    Relation(Vec<SubjectAst>),
    Permission(ExprAst),
}

/// One allowed subject type of a relation: `user`, `group#member` or `user:*`.
#[derive(Debug)]
pub(super) struct SubjectAst {
    pub ty: Name,
    pub kind: SubjectKind,
}

#[derive(Debug)]
pub(super) enum SubjectKind {
    Plain,
    Userset(Name),
    Wildcard,
}

/// A permission expression.
#[derive(Debug)]
pub(super) enum ExprAst {
    Nil,
    Ident(Name),
    Arrow(Name, Name),
    Union(Box<ExprAst>, Box<ExprAst>),
    Intersect(Box<ExprAst>, Box<ExprAst>),
    Exclude(Box<ExprAst>, Box<ExprAst>),
}

struct Parser<'s> {
    toks: Vec<(Tok<'s>, Pos)>,
    at: usize,
    nesting: u32,
    /// Operands in the current permission expression, bounded by [`MAX_TERMS`].
    terms: u32,
}

/// Parses schema text into definitions (names unresolved).
pub(super) fn parse(text: &str) -> Result<Vec<DefAst>, Failure> {
    if text.len() > MAX_SCHEMA_BYTES {
        return Err((
            Pos { line: 1, col: 1 },
            format!(
                "schema is {} bytes, over the limit of {MAX_SCHEMA_BYTES}",
                text.len()
            ),
        ));
    }
    let mut p = Parser {
        toks: lex(text)?,
        at: 0,
        nesting: 0,
        terms: 0,
    };
    let mut defs = Vec::new();
    loop {
        match p.peek() {
            Tok::Eof => return Ok(defs),
            Tok::Semi => p.bump(),
            Tok::Ident("definition") => {
                p.bump();
                defs.push(p.definition()?);
            }
            Tok::Ident("caveat") => return Err(p.fail("caveats are not supported")),
            _ => return Err(p.expected("'definition'")),
        }
    }
}

impl<'s> Parser<'s> {
    fn peek(&self) -> Tok<'s> {
        self.toks.get(self.at).map_or(Tok::Eof, |t| t.0)
    }

    fn pos(&self) -> Pos {
        self.toks
            .get(self.at)
            .or_else(|| self.toks.last())
            .map_or_else(Pos::default, |t| t.1)
    }

    fn bump(&mut self) {
        if self.at + 1 < self.toks.len() {
            self.at += 1;
        }
    }

    fn fail(&self, message: &str) -> Failure {
        (self.pos(), message.to_owned())
    }

    fn expected(&self, what: &str) -> Failure {
        (
            self.pos(),
            format!("expected {what}, found {}", self.peek()),
        )
    }

    fn eat(&mut self, tok: Tok<'_>, what: &str) -> Result<(), Failure> {
        if self.peek() == tok {
            self.bump();
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    /// A lowercase name; `what` says which kind, for the error.
    fn name(&mut self, what: &str) -> Result<Name, Failure> {
        let pos = self.pos();
        let Tok::Ident(text) = self.peek() else {
            return Err(self.expected(what));
        };
        check_name(text).map_err(|m| (pos, m))?;
        self.bump();
        if self.peek() == Tok::Other('/') {
            return Err(self.fail("prefixed names (prefix/name) are not supported"));
        }
        Ok(Name {
            text: text.to_owned(),
            pos,
        })
    }

    fn definition(&mut self) -> Result<DefAst, Failure> {
        let name = self.name("a definition name after 'definition'")?;
        self.eat(
            Tok::LBrace,
            &format!("'{{' after 'definition {}'", name.text),
        )?;
        let mut items = Vec::new();
        loop {
            match self.peek() {
                Tok::RBrace => {
                    self.bump();
                    return Ok(DefAst { name, items });
                }
                Tok::Semi => self.bump(),
                Tok::Ident("relation") => {
                    self.bump();
                    let name = self.name("a relation name after 'relation'")?;
                    self.eat(Tok::Colon, &format!("':' after 'relation {}'", name.text))?;
                    let subjects = self.subjects()?;
                    items.push(ItemAst {
                        name,
                        body: ItemBody::Relation(subjects),
                    });
                }
                Tok::Ident("permission") => {
                    self.bump();
                    let name = self.name("a permission name after 'permission'")?;
                    self.eat(Tok::Eq, &format!("'=' after 'permission {}'", name.text))?;
                    self.terms = 0;
                    let expr = self.excl()?;
                    items.push(ItemAst {
                        name,
                        body: ItemBody::Permission(expr),
                    });
                }
                _ => {
                    return Err(self.expected(&format!(
                        "'relation', 'permission' or '}}' in definition '{}'",
                        name.text
                    )))
                }
            }
        }
    }

    fn subjects(&mut self) -> Result<Vec<SubjectAst>, Failure> {
        let mut out = Vec::new();
        loop {
            let ty = self.name("a subject type")?;
            let kind = match self.peek() {
                Tok::Hash => {
                    self.bump();
                    SubjectKind::Userset(self.name("a relation name after '#'")?)
                }
                Tok::Colon => {
                    self.bump();
                    self.eat(Tok::Star, "'*' after ':' (a wildcard is written type:*)")?;
                    SubjectKind::Wildcard
                }
                _ => SubjectKind::Plain,
            };
            out.push(SubjectAst { ty, kind });
            if self.peek() == Tok::Ident("with") {
                return Err(self.fail("caveats ('with') are not supported"));
            }
            if self.peek() != Tok::Pipe {
                return Ok(out);
            }
            self.bump();
        }
    }

    fn excl(&mut self) -> Result<ExprAst, Failure> {
        let mut left = self.inter()?;
        while self.peek() == Tok::Minus {
            self.bump();
            left = ExprAst::Exclude(Box::new(left), Box::new(self.inter()?));
        }
        Ok(left)
    }

    fn inter(&mut self) -> Result<ExprAst, Failure> {
        let mut left = self.union()?;
        while self.peek() == Tok::Amp {
            self.bump();
            left = ExprAst::Intersect(Box::new(left), Box::new(self.union()?));
        }
        Ok(left)
    }

    fn union(&mut self) -> Result<ExprAst, Failure> {
        let mut left = self.arrow()?;
        while self.peek() == Tok::Plus {
            self.bump();
            left = ExprAst::Union(Box::new(left), Box::new(self.arrow()?));
        }
        Ok(left)
    }

    fn arrow(&mut self) -> Result<ExprAst, Failure> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(self.fail(&format!(
                "more than {MAX_TERMS} operands in one permission; split it into several"
            )));
        }
        match self.peek() {
            Tok::Ident("nil") => {
                self.bump();
                Ok(ExprAst::Nil)
            }
            Tok::Ident(_) => {
                let left = self.name("a relation or permission name")?;
                if self.peek() != Tok::Arrow {
                    return Ok(ExprAst::Ident(left));
                }
                self.bump();
                let right = self.name("a relation or permission name after '->'")?;
                if self.peek() == Tok::Arrow {
                    return Err(self.fail(
                        "chained arrows (a->b->c) are not supported; define a permission for b->c and arrow to it",
                    ));
                }
                Ok(ExprAst::Arrow(left, right))
            }
            Tok::LParen => {
                if self.nesting >= MAX_NESTING {
                    return Err(self.fail("parentheses nested too deeply"));
                }
                self.bump();
                self.nesting += 1;
                let inner = self.excl()?;
                self.nesting -= 1;
                self.eat(Tok::RParen, "')' to close '('")?;
                Ok(inner)
            }
            Tok::Other('!') => {
                Err(self.fail("'!' is not an operator here; write exclusion as 'a - b'"))
            }
            _ => Err(self.expected("a relation or permission name, 'nil' or '('")),
        }
    }
}

/// Checks a type, relation or permission name: `[a-z][a-z0-9_]*`, at most [`MAX_NAME_BYTES`].
pub(super) fn check_name(text: &str) -> Result<(), String> {
    let mut bytes = text.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
    if !first_ok || !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(format!(
            "'{text}' is not a valid name (lowercase letters, digits and '_', starting with a letter)"
        ));
    }
    if text.len() > MAX_NAME_BYTES {
        return Err(format!(
            "name '{text}' is {} bytes, over the limit of {MAX_NAME_BYTES}",
            text.len()
        ));
    }
    Ok(())
}

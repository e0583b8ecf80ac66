//! `?` placeholders (JDBC, ODBC and ADBC style) numbered `$1, $2, …` in
//! order of appearance, which is what DataFusion binds. The SQL tokenizer
//! finds them, so a `?` inside a string literal, a quoted identifier or a
//! comment is left alone; values are never spliced into the text.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use super::SqlError;

/// `sql` with each `?` replaced by `$n`; unchanged when it has none.
/// Mixing `?` with numbered placeholders is refused (which `?` is `$2`
/// would be a guess).
pub fn number_question_marks(sql: &str) -> Result<String, SqlError> {
    if !sql.contains('?') {
        return Ok(sql.to_string());
    }
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| SqlError::Usage(format!("cannot read the SQL: {e}")))?;
    let mut marks = Vec::new();
    let mut numbered = false;
    for t in &tokens {
        if let Token::Placeholder(p) = &t.token {
            if p == "?" {
                marks.push((t.span.start.line, t.span.start.column));
            } else {
                numbered = true;
            }
        }
    }
    if marks.is_empty() {
        return Ok(sql.to_string());
    }
    if numbered {
        return Err(SqlError::Usage(
            "use either `?` or `$1, $2, …` placeholders in one statement, not both".into(),
        ));
    }
    // Locations are 1-based lines and columns in characters.
    let mut out = String::with_capacity(sql.len() + marks.len() * 2);
    let (mut line, mut column, mut next) = (1u64, 1u64, 0usize);
    for c in sql.chars() {
        if next < marks.len() && marks[next] == (line, column) && c == '?' {
            next += 1;
            out.push_str(&format!("${next}"));
        } else {
            out.push(c);
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    Ok(out)
}

/// `sql` with each `:name` placeholder replaced by `$n`, numbered by the
/// name's position in `names` (a name used twice gets one number). The
/// tokenizer finds them, so `:x` inside a literal, a quoted identifier or a
/// comment, and `::` casts, are left alone. A `:name` not in `names` is
/// returned as the error.
pub fn number_named(sql: &str, names: &[String]) -> Result<String, NamedError> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| NamedError::Syntax(e.to_string()))?;
    // (line, column) of each ':' that starts a placeholder, with its name
    let mut marks = Vec::new();
    // `$name` is not a parameter here (only `$1`-style numbers are SQL's own)
    if let Some(dollar) = tokens.iter().find_map(|t| match &t.token {
        Token::Placeholder(p)
            if p.starts_with('$') && !p[1..].chars().all(|c| c.is_ascii_digit()) =>
        {
            Some(p[1..].to_string())
        }
        _ => None,
    }) {
        return Err(NamedError::Dollar(dollar));
    }
    for w in tokens.windows(3) {
        let (before, colon, word) = (&w[0].token, &w[1], &w[2]);
        if colon.token != Token::Colon || matches!(before, Token::Colon | Token::DoubleColon) {
            continue;
        }
        let Token::Word(word_token) = &word.token else {
            continue;
        };
        let adjacent = word.span.start.line == colon.span.start.line
            && word.span.start.column == colon.span.start.column + 1;
        if !adjacent || word_token.quote_style.is_some() {
            continue;
        }
        let name = word_token.value.clone();
        let Some(i) = names.iter().position(|n| *n == name) else {
            return Err(NamedError::Unknown(name));
        };
        marks.push((
            colon.span.start.line,
            colon.span.start.column,
            name.chars().count(),
            i + 1,
        ));
    }
    let mut out = String::with_capacity(sql.len());
    let (mut line, mut column, mut next, mut skip) = (1u64, 1u64, 0usize, 0usize);
    for c in sql.chars() {
        if skip > 0 {
            skip -= 1;
        } else if next < marks.len() && (marks[next].0, marks[next].1) == (line, column) {
            out.push_str(&format!("${}", marks[next].3));
            skip = marks[next].2;
            next += 1;
        } else {
            out.push(c);
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    Ok(out)
}

/// Why [`number_named`] refused a script.
#[derive(Debug)]
pub enum NamedError {
    /// The SQL could not be tokenized.
    Syntax(String),
    /// A `:name` that is not declared.
    Unknown(String),
    /// A `$name`: named parameters are written `:name`.
    Dollar(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_placeholders_become_numbered_outside_literals_and_casts() {
        let names = vec!["day".to_string(), "n".to_string()];
        let sql = "SELECT ':day', x::int FROM t -- :n\nWHERE d = :day AND k < :n OR e = :day";
        assert_eq!(
            number_named(sql, &names).unwrap(),
            "SELECT ':day', x::int FROM t -- :n\nWHERE d = $1 AND k < $2 OR e = $1"
        );
        assert!(matches!(
            number_named("SELECT :nope", &names),
            Err(NamedError::Unknown(n)) if n == "nope"
        ));
        assert!(matches!(
            number_named("SELECT $day", &["day".to_string()]),
            Err(NamedError::Dollar(n)) if n == "day"
        ));
        assert!(number_named("SELECT $1", &[]).is_ok());
    }

    #[test]
    fn question_marks_become_numbered_outside_literals() {
        let sql = "SELECT '?', \"a?\" FROM t -- why?\nWHERE x = ? AND y IN (?, ?)";
        assert_eq!(
            number_question_marks(sql).unwrap(),
            "SELECT '?', \"a?\" FROM t -- why?\nWHERE x = $1 AND y IN ($2, $3)"
        );
        let many: Vec<&str> = std::iter::repeat_n("?", 12).collect();
        let out = number_question_marks(&format!("VALUES ({})", many.join(","))).unwrap();
        assert!(out.ends_with("$11,$12)"), "{out}");
        assert_eq!(number_question_marks("SELECT $1").unwrap(), "SELECT $1");
        assert!(number_question_marks("SELECT ?, $1").is_err());
        assert_eq!(
            number_question_marks("SELECT 'it''s?', ?").unwrap(),
            "SELECT 'it''s?', $1"
        );
    }
}

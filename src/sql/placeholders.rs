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

#[cfg(test)]
mod tests {
    use super::*;

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

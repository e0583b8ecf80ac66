//! SQL statements that declare policies (stored as data, see `policies`):
//!
//! ```sql
//! CREATE POLICY eu_only ON sales TO analyst USING (region = 'eu');   -- row filter
//! DROP POLICY eu_only ON sales;
//! CREATE MASK email_hash ON users (email) TO analyst USING HASH;      -- HIDE | NULL | HASH
//! DROP MASK email_hash ON users;
//! CREATE CONTRACT ON sales AS '{"columns": [{"name": "id", "type": "int", "nullable": false}]}';
//! DROP CONTRACT ON sales;
//! ALTER BUCKET team_a SET ISOLATED = TRUE;
//! GRANT read ON BUCKET sales TO analyst, auditor;                    -- READ | WRITE | ADMIN
//! REVOKE write ON BUCKET sales FROM analyst;                          -- leaves read
//! SHOW GRANTS [ON BUCKET sales];
//! ```
//! Every statement but `SHOW GRANTS` needs `admin` on the bucket it changes.
//! Names are identifiers or "quoted identifiers", optionally `bucket.name`.

use std::sync::Arc;

use arrow::array::StringArray;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;

use super::SqlError;
use super::policies::{ColumnMask, Contract, MaskAction, RowFilter};
use super::session::SqlEngine;
use crate::engine::Engine;
use crate::store::{Access, list_buckets};

/// A parsed policy statement.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyStatement {
    CreateRowFilter {
        bucket: Option<String>,
        dataset: String,
        filter: RowFilter,
    },
    DropRowFilter {
        bucket: Option<String>,
        dataset: String,
        name: String,
    },
    CreateMask {
        bucket: Option<String>,
        dataset: String,
        mask: ColumnMask,
    },
    DropMask {
        bucket: Option<String>,
        dataset: String,
        name: String,
    },
    SetContract {
        bucket: Option<String>,
        dataset: String,
        contract: Option<Contract>,
    },
    IsolateBucket {
        bucket: String,
        isolated: bool,
    },
    Grant {
        bucket: String,
        roles: Vec<String>,
        privilege: Access,
    },
    Revoke {
        bucket: String,
        roles: Vec<String>,
        privilege: Access,
    },
    ShowGrants {
        bucket: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Str(String),
    Punct(char),
    /// Raw text inside balanced parentheses (only for USING).
    Group(String),
}

fn tokenize(text: &str) -> Result<Vec<Tok>, SqlError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Word(chars[start..i].iter().collect()));
        } else if c == '"' || c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(SqlError::Usage("unterminated quote".into())),
                    Some(&q) if q == c && chars.get(i + 1) == Some(&c) => {
                        s.push(c);
                        i += 2;
                    }
                    Some(&q) if q == c => {
                        i += 1;
                        break;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            out.push(if c == '"' {
                Tok::Quoted(s)
            } else {
                Tok::Str(s)
            });
        } else if c == '('
            && matches!(out.last(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case("using"))
        {
            // raw predicate text up to the matching parenthesis, outside strings
            let (mut depth, mut in_str, start) = (0, false, i + 1);
            while i < chars.len() {
                match chars[i] {
                    '\'' => in_str = !in_str,
                    '(' if !in_str => depth += 1,
                    ')' if !in_str => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            if depth != 0 {
                return Err(SqlError::Usage(
                    "unbalanced parentheses in USING (…)".into(),
                ));
            }
            out.push(Tok::Group(
                chars[start..i]
                    .iter()
                    .collect::<String>()
                    .trim()
                    .to_string(),
            ));
            i += 1;
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek_kw(&self, kw: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }
    fn kw(&mut self, kw: &str) -> Result<(), SqlError> {
        if self.peek_kw(kw) {
            self.pos += 1;
            Ok(())
        } else {
            Err(SqlError::Usage(format!(
                "expected {kw} at token {}",
                self.pos + 1
            )))
        }
    }
    fn punct(&mut self, c: char) -> Result<(), SqlError> {
        if self.toks.get(self.pos) == Some(&Tok::Punct(c)) {
            self.pos += 1;
            Ok(())
        } else {
            Err(SqlError::Usage(format!("expected '{c}'")))
        }
    }
    fn ident(&mut self) -> Result<String, SqlError> {
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Word(w)) => {
                self.pos += 1;
                Ok(w.to_lowercase())
            }
            Some(Tok::Quoted(q)) => {
                self.pos += 1;
                Ok(q)
            }
            _ => Err(SqlError::Usage("expected a name".into())),
        }
    }
    /// `[bucket.]name`
    fn dataset(&mut self) -> Result<(Option<String>, String), SqlError> {
        let first = self.ident()?;
        if self.toks.get(self.pos) == Some(&Tok::Punct('.')) {
            self.pos += 1;
            let second = self.ident()?;
            return Ok((Some(first), second));
        }
        Ok((None, first))
    }
    fn string(&mut self) -> Result<String, SqlError> {
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(s)
            }
            _ => Err(SqlError::Usage("expected a string literal".into())),
        }
    }
    fn end(&mut self) -> Result<(), SqlError> {
        if self.toks.get(self.pos) == Some(&Tok::Punct(';')) {
            self.pos += 1;
        }
        if self.pos == self.toks.len() {
            Ok(())
        } else {
            Err(SqlError::Usage(format!(
                "unexpected text after the statement (token {})",
                self.pos + 1
            )))
        }
    }
    fn role(&mut self) -> Result<String, SqlError> {
        if self.peek_kw("to") {
            self.pos += 1;
            self.ident()
        } else {
            Ok("*".into())
        }
    }
}

/// `text` without the comments and blanks in front of its first word.
fn strip_leading_comments(mut text: &str) -> &str {
    loop {
        text = text.trim_start();
        if let Some(rest) = text.strip_prefix("--") {
            text = rest.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(rest) = text.strip_prefix("/*") {
            text = rest.split_once("*/").map_or("", |(_, r)| r);
        } else {
            return text;
        }
    }
}

/// Parses a policy statement; `Ok(None)` when `text` is not one.
pub fn parse(text: &str) -> Result<Option<PolicyStatement>, SqlError> {
    // a comment in front must not hide a policy statement from this parser
    let text = strip_leading_comments(text);
    let head: Vec<String> = text
        .split_whitespace()
        .take(2)
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let ours = matches!(
        head.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
        ["create", "policy"]
            | ["drop", "policy"]
            | ["create", "mask"]
            | ["drop", "mask"]
            | ["create", "contract"]
            | ["drop", "contract"]
            | ["alter", "bucket"]
            | ["grant", _]
            | ["revoke", _]
            | ["show", "grants"]
    );
    if !ours {
        return Ok(None);
    }
    let mut p = Parser {
        toks: tokenize(text)?,
        pos: 2,
    };
    let stmt = match (head[0].as_str(), head[1].as_str()) {
        ("create", "policy") => {
            let name = p.ident()?;
            p.kw("on")?;
            let (bucket, dataset) = p.dataset()?;
            let role = p.role()?;
            p.kw("using")?;
            let predicate = match p.toks.get(p.pos).cloned() {
                Some(Tok::Group(g)) => {
                    p.pos += 1;
                    g
                }
                _ => return Err(SqlError::Usage("expected USING (predicate)".into())),
            };
            PolicyStatement::CreateRowFilter {
                bucket,
                dataset,
                filter: RowFilter {
                    name,
                    role,
                    predicate,
                },
            }
        }
        ("drop", "policy") | ("drop", "mask") => {
            let name = p.ident()?;
            p.kw("on")?;
            let (bucket, dataset) = p.dataset()?;
            if head[1] == "policy" {
                PolicyStatement::DropRowFilter {
                    bucket,
                    dataset,
                    name,
                }
            } else {
                PolicyStatement::DropMask {
                    bucket,
                    dataset,
                    name,
                }
            }
        }
        ("create", "mask") => {
            let name = p.ident()?;
            p.kw("on")?;
            let (bucket, dataset) = p.dataset()?;
            p.punct('(')?;
            let column = p.ident()?;
            p.punct(')')?;
            let role = p.role()?;
            p.kw("using")?;
            let action = match p.ident()?.as_str() {
                "hide" => MaskAction::Hide,
                "null" => MaskAction::Null,
                "hash" => MaskAction::Hash,
                other => {
                    return Err(SqlError::Usage(format!(
                        "unknown mask '{other}': use HIDE, NULL or HASH"
                    )));
                }
            };
            PolicyStatement::CreateMask {
                bucket,
                dataset,
                mask: ColumnMask {
                    name,
                    role,
                    column,
                    action,
                },
            }
        }
        ("create", "contract") | ("drop", "contract") => {
            p.kw("on")?;
            let (bucket, dataset) = p.dataset()?;
            let contract = if head[0] == "create" {
                p.kw("as")?;
                let json = p.string()?;
                Some(serde_json::from_str::<Contract>(&json).map_err(|e| {
                    SqlError::Usage(format!(
                        "the contract is not valid JSON of the form {{\"columns\": [...]}}: {e}"
                    ))
                })?)
            } else {
                None
            };
            PolicyStatement::SetContract {
                bucket,
                dataset,
                contract,
            }
        }
        ("alter", "bucket") => {
            let bucket = p.ident()?;
            p.kw("set")?;
            p.kw("isolated")?;
            p.punct('=')?;
            let isolated = match p.ident()?.as_str() {
                "true" => true,
                "false" => false,
                other => {
                    return Err(SqlError::Usage(format!(
                        "expected TRUE or FALSE, got {other}"
                    )));
                }
            };
            PolicyStatement::IsolateBucket { bucket, isolated }
        }
        ("grant", _) | ("revoke", _) => {
            let privilege = match head[1].trim_end_matches(';') {
                "read" | "select" => Access::Read,
                "write" => Access::Write,
                "admin" | "all" => Access::Admin,
                other => {
                    return Err(SqlError::Usage(format!(
                        "unknown privilege '{other}': use READ, WRITE or ADMIN"
                    )));
                }
            };
            p.kw("on")?;
            p.kw("bucket")?;
            let bucket = p.ident()?;
            p.kw(if head[0] == "grant" { "to" } else { "from" })?;
            let mut roles = vec![p.ident()?];
            while p.toks.get(p.pos) == Some(&Tok::Punct(',')) {
                p.pos += 1;
                roles.push(p.ident()?);
            }
            if head[0] == "grant" {
                PolicyStatement::Grant {
                    bucket,
                    roles,
                    privilege,
                }
            } else {
                PolicyStatement::Revoke {
                    bucket,
                    roles,
                    privilege,
                }
            }
        }
        ("show", "grants") => {
            let bucket = if p.peek_kw("on") {
                p.kw("on")?;
                p.kw("bucket")?;
                Some(p.ident()?)
            } else {
                None
            };
            PolicyStatement::ShowGrants { bucket }
        }
        _ => return Ok(None),
    };
    p.end()?;
    Ok(Some(stmt))
}

/// The bucket a statement changes (the session's when not named).
fn bucket_of(engine: &Engine, stmt: &PolicyStatement) -> Option<String> {
    use PolicyStatement::*;
    match stmt {
        CreateRowFilter { bucket, .. }
        | DropRowFilter { bucket, .. }
        | CreateMask { bucket, .. }
        | DropMask { bucket, .. }
        | SetContract { bucket, .. } => Some(
            bucket
                .clone()
                .unwrap_or_else(|| engine.bucket_name().into()),
        ),
        IsolateBucket { bucket, .. } | Grant { bucket, .. } | Revoke { bucket, .. } => {
            Some(bucket.clone())
        }
        ShowGrants { .. } => None,
    }
}

/// Stores the change a policy statement declares (after checking that the
/// session administers the bucket); `SHOW GRANTS` returns its rows.
pub async fn apply(
    engine: &Engine,
    stmt: PolicyStatement,
) -> Result<Option<RecordBatch>, SqlError> {
    if let Some(bucket) = bucket_of(engine, &stmt) {
        engine
            .bucket(&bucket)?
            .store(super::policies::POLICY_STORE)?
            .check_access("*", Access::Admin)
            .await?;
    }
    let on = |bucket: &Option<String>| -> Result<Engine, SqlError> {
        Ok(match bucket {
            Some(b) => engine.bucket(b)?,
            None => engine.clone(),
        })
    };
    match stmt {
        PolicyStatement::Grant {
            bucket,
            roles,
            privilege,
        } => {
            engine
                .bucket(&bucket)?
                .policies()
                .update_bucket(|b| {
                    for r in &roles {
                        let held = b.grants.entry(r.clone()).or_insert(privilege);
                        *held = (*held).max(privilege);
                    }
                    Ok(())
                })
                .await?
        }
        PolicyStatement::Revoke {
            bucket,
            roles,
            privilege,
        } => {
            engine
                .bucket(&bucket)?
                .policies()
                .update_bucket(|b| {
                    for r in &roles {
                        // revoking a level leaves the one below it
                        let below = match privilege {
                            Access::Read => None,
                            Access::Write => Some(Access::Read),
                            Access::Admin => Some(Access::Write),
                        };
                        match (b.grants.get(r).copied(), below) {
                            (Some(held), Some(below)) if held >= privilege => {
                                b.grants.insert(r.clone(), below);
                            }
                            (Some(held), None) if held >= privilege => {
                                b.grants.remove(r);
                            }
                            _ => {}
                        }
                    }
                    Ok(())
                })
                .await?
        }
        PolicyStatement::ShowGrants { bucket } => {
            let buckets = match bucket {
                Some(b) => vec![b],
                None => list_buckets(engine.root()).await?,
            };
            let (mut bs, mut rs, mut ps) = (Vec::new(), Vec::new(), Vec::new());
            for b in buckets {
                let policies = engine.bucket(&b)?.policies();
                // what a session may not read, it is not shown
                if engine
                    .bucket(&b)?
                    .datasets()
                    .check_access("*", Access::Read)
                    .await
                    .is_err()
                {
                    continue;
                }
                for (role, p) in policies.bucket_settings().await?.grants {
                    bs.push(b.clone());
                    rs.push(role);
                    ps.push(p.to_string());
                }
            }
            let schema = Arc::new(Schema::new(vec![
                Field::new("bucket", DataType::Utf8, false),
                Field::new("role", DataType::Utf8, false),
                Field::new("privilege", DataType::Utf8, false),
            ]));
            let batch = RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(StringArray::from(bs)),
                    Arc::new(StringArray::from(rs)),
                    Arc::new(StringArray::from(ps)),
                ],
            )
            .map_err(|e| SqlError::Usage(e.to_string()))?;
            return Ok(Some(batch));
        }
        PolicyStatement::CreateRowFilter {
            bucket,
            dataset,
            filter,
        } => {
            on(&bucket)?
                .policies()
                .update(&dataset, |p| {
                    replace_named(&mut p.row_filters, |f| &f.name, filter.clone());
                    Ok(())
                })
                .await?
        }
        PolicyStatement::DropRowFilter {
            bucket,
            dataset,
            name,
        } => {
            on(&bucket)?
                .policies()
                .update(&dataset, |p| {
                    remove_named(&mut p.row_filters, |f| &f.name, &dataset, &name, "policy")
                })
                .await?
        }
        PolicyStatement::CreateMask {
            bucket,
            dataset,
            mask,
        } => {
            on(&bucket)?
                .policies()
                .update(&dataset, |p| {
                    replace_named(&mut p.column_masks, |m| &m.name, mask.clone());
                    Ok(())
                })
                .await?
        }
        PolicyStatement::DropMask {
            bucket,
            dataset,
            name,
        } => {
            on(&bucket)?
                .policies()
                .update(&dataset, |p| {
                    remove_named(&mut p.column_masks, |m| &m.name, &dataset, &name, "mask")
                })
                .await?
        }
        PolicyStatement::SetContract {
            bucket,
            dataset,
            contract,
        } => {
            on(&bucket)?
                .policies()
                .update(&dataset, |p| {
                    p.contract = contract.clone();
                    Ok(())
                })
                .await?
        }
        PolicyStatement::IsolateBucket { bucket, isolated } => {
            engine
                .bucket(&bucket)?
                .policies()
                .set_isolated(isolated)
                .await?
        }
    }
    Ok(None)
}

/// Adds `item`, replacing an entry of the same name.
fn replace_named<T>(list: &mut Vec<T>, name_of: impl Fn(&T) -> &String, item: T) {
    let name = name_of(&item).clone();
    list.retain(|x| name_of(x) != &name);
    list.push(item);
}

/// Removes the entry called `name`; an error when there is none.
fn remove_named<T>(
    list: &mut Vec<T>,
    name_of: impl Fn(&T) -> &String,
    dataset: &str,
    name: &str,
    what: &str,
) -> crate::Result<()> {
    let before = list.len();
    list.retain(|x| name_of(x) != name);
    if list.len() == before {
        return Err(crate::StoreError::invalid_input(
            dataset,
            format!("has no {what} '{name}'"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_policy_statements() {
        let s = parse(
            "CREATE POLICY eu ON \"sales/2024\" TO analyst USING (region = 'eu' AND (x > 1))",
        )
        .unwrap()
        .unwrap();
        match s {
            PolicyStatement::CreateRowFilter {
                dataset, filter, ..
            } => {
                assert_eq!(dataset, "sales/2024");
                assert_eq!(filter.role, "analyst");
                assert_eq!(filter.predicate, "region = 'eu' AND (x > 1)");
            }
            other => panic!("{other:?}"),
        }
        let s = parse("create mask m on b.users (email) using hash;")
            .unwrap()
            .unwrap();
        assert!(matches!(
            s,
            PolicyStatement::CreateMask {
                bucket: Some(_),
                ..
            }
        ));
        assert!(parse("SELECT 1").unwrap().is_none());
        assert!(parse("CREATE MASK m ON t (c) USING BLUR").is_err());
        assert!(
            parse("ALTER BUCKET b SET ISOLATED = TRUE")
                .unwrap()
                .is_some()
        );
    }
}

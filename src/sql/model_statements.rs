//! Statements that train and drop models, in the spirit of BigQuery ML:
//!
//! ```sql
//! CREATE [OR REPLACE] MODEL churn
//!   OPTIONS (type = 'random_forest_classifier', label = 'churned', n_trees = 50, seed = 1)
//!   AS SELECT age, plan, spend, churned FROM customers;
//! DROP MODEL [IF EXISTS] churn;
//! ```
//!
//! Options: `type` (or `model_type`) names the algorithm; `label` (or
//! `input_label_cols`) the label column; `features` (a list) restricts the
//! feature columns (default: every column of the query but the label);
//! `categorical` (`one_hot` | `ordinal`) and `nulls` (`error` | `mean` |
//! `median` | `zero`) choose preprocessing; every other option is a
//! hyperparameter of the algorithm. `CREATE` fails when the model exists;
//! `OR REPLACE` fits a new version (the history is kept).

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrame;
use datafusion::sql::sqlparser::ast::{Expr, UnaryOperator, Value as SqlValue};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;
use serde_json::{Map, Value};

use super::SqlError;
use super::model_functions::model_err;
use super::session::SqlEngine;
use crate::engine::Engine;
use crate::models::{CategoricalEncoding, ModelSpec, NullStrategy, Preprocessing, TrainingData};

/// A parsed model statement.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelStatement {
    Create {
        bucket: Option<String>,
        name: String,
        or_replace: bool,
        options: Map<String, Value>,
        query: String,
    },
    Drop {
        bucket: Option<String>,
        name: String,
        if_exists: bool,
    },
}

fn is_word(t: &Token, w: &str) -> bool {
    matches!(t, Token::Word(x) if x.value.eq_ignore_ascii_case(w))
}

fn perr(e: impl std::fmt::Display) -> SqlError {
    SqlError::Usage(format!("model statement: {e}"))
}

/// Parses `CREATE [OR REPLACE] MODEL …` and `DROP MODEL …`; other
/// statements give `None`.
pub fn parse(text: &str) -> Result<Option<ModelStatement>, SqlError> {
    let dialect = GenericDialect {};
    let mut p = Parser::new(&dialect).try_with_sql(text).map_err(perr)?;
    if p.parse_keyword(Keyword::CREATE) {
        let or_replace = p.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
        if !is_word(&p.peek_token().token, "model") {
            return Ok(None);
        }
        p.next_token();
        let (bucket, name) = object_name(&mut p)?;
        p.expect_keyword(Keyword::OPTIONS).map_err(|_| {
            SqlError::Usage(format!(
                "CREATE MODEL {name} needs OPTIONS (type = '…', label = '…'): see `om models --help`"
            ))
        })?;
        p.expect_token(&Token::LParen).map_err(perr)?;
        let mut options = Map::new();
        loop {
            let key = p
                .parse_identifier()
                .map_err(perr)?
                .value
                .to_ascii_lowercase();
            p.expect_token(&Token::Eq).map_err(perr)?;
            let expr = p.parse_expr().map_err(perr)?;
            let value = json_of(&expr).ok_or_else(|| {
                SqlError::Usage(format!(
                    "option {key} = {expr}: use a string, number, boolean, NULL or a [list]"
                ))
            })?;
            options.insert(key, value);
            if p.consume_token(&Token::RParen) {
                break;
            }
            p.expect_token(&Token::Comma).map_err(perr)?;
        }
        p.expect_keyword(Keyword::AS).map_err(perr)?;
        let query = p.parse_query().map_err(perr)?.to_string();
        return Ok(Some(ModelStatement::Create {
            bucket,
            name,
            or_replace,
            options,
            query,
        }));
    }
    if p.parse_keyword(Keyword::DROP) {
        if !is_word(&p.peek_token().token, "model") {
            return Ok(None);
        }
        p.next_token();
        let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let (bucket, name) = object_name(&mut p)?;
        return Ok(Some(ModelStatement::Drop {
            bucket,
            name,
            if_exists,
        }));
    }
    Ok(None)
}

fn object_name(p: &mut Parser) -> Result<(Option<String>, String), SqlError> {
    let name = p.parse_object_name(false).map_err(perr)?;
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|part| part.as_ident().map(|i| i.value.clone()))
        .collect();
    match parts.as_slice() {
        [n] => Ok((None, n.clone())),
        [b, n] => Ok((Some(b.clone()), n.clone())),
        _ => Err(SqlError::Usage(format!(
            "model name '{name}': use name or bucket.name (quote names with / or @)"
        ))),
    }
}

fn json_of(e: &Expr) -> Option<Value> {
    match e {
        Expr::Value(v) => match &v.value {
            SqlValue::SingleQuotedString(s) | SqlValue::DoubleQuotedString(s) => {
                Some(Value::String(s.clone()))
            }
            SqlValue::Number(n, _) => serde_json::from_str(n).ok(),
            SqlValue::Boolean(b) => Some(Value::Bool(*b)),
            SqlValue::Null => Some(Value::Null),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match json_of(expr)? {
            Value::Number(n) => serde_json::from_str(&format!("-{n}")).ok(),
            _ => None,
        },
        Expr::Array(a) => a
            .elem
            .iter()
            .map(json_of)
            .collect::<Option<Vec<_>>>()
            .map(Value::Array),
        Expr::Identifier(i) => Some(Value::String(i.value.clone())),
        _ => None,
    }
}

fn take_str(options: &mut Map<String, Value>, keys: &[&str]) -> Result<Option<String>, SqlError> {
    for k in keys {
        if let Some(v) = options.remove(*k) {
            return match v {
                Value::String(s) => Ok(Some(s)),
                // BigQuery's input_label_cols is a list of one
                Value::Array(a) if a.len() == 1 && a[0].is_string() => {
                    Ok(a[0].as_str().map(str::to_string))
                }
                other => Err(SqlError::Usage(format!(
                    "option {k} = {other}: expected a string"
                ))),
            };
        }
    }
    Ok(None)
}

/// Runs a model statement; returns its one-row result.
pub async fn apply(engine: &Engine, stmt: ModelStatement) -> Result<DataFrame, SqlError> {
    match stmt {
        ModelStatement::Create {
            bucket,
            name,
            or_replace,
            mut options,
            query,
        } => {
            let om = match bucket {
                Some(b) => engine.bucket(&b)?,
                None => engine.clone(),
            };
            let models = om.models();
            if !or_replace && models.store().exists(&name).await? {
                return Err(SqlError::Usage(format!(
                    "model '{name}' already exists; CREATE OR REPLACE MODEL fits a new version of it"
                )));
            }
            let algo = take_str(&mut options, &["type", "model_type"])?.ok_or_else(|| {
                SqlError::Usage(format!(
                    "CREATE MODEL {name}: OPTIONS needs type = '<algorithm>', e.g. type = 'linear_regression'"
                ))
            })?;
            let label = take_str(&mut options, &["label", "input_label_cols"])?;
            let features = match options.remove("features") {
                None => None,
                Some(Value::Array(a)) => Some(
                    a.iter()
                        .map(|v| v.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| {
                            SqlError::Usage("option features: a list of column names".into())
                        })?,
                ),
                Some(other) => {
                    return Err(SqlError::Usage(format!(
                        "option features = {other}: use a list, e.g. features = ['a', 'b']"
                    )));
                }
            };
            let mut pre = Preprocessing::default();
            if let Some(c) = take_str(&mut options, &["categorical"])? {
                pre.categorical =
                    serde_json::from_value::<CategoricalEncoding>(Value::String(c.clone()))
                        .map_err(|_| {
                            SqlError::Usage(format!("categorical = '{c}': use one_hot or ordinal"))
                        })?;
            }
            if let Some(n) = take_str(&mut options, &["nulls"])? {
                pre.nulls = serde_json::from_value::<NullStrategy>(Value::String(n.clone()))
                    .map_err(|_| {
                        SqlError::Usage(format!("nulls = '{n}': use error, mean, median or zero"))
                    })?;
            }
            let spec = ModelSpec::new(&algo, options)
                .map_err(model_err)?
                .with_preprocessing(pre);
            let data = TrainingData {
                input: crate::models::Input::Sql(query),
                features,
                label,
            };
            let report = models
                .fit(&name, data, Some(spec), Default::default())
                .await
                .map_err(model_err)?;
            let mut fields = vec![
                Field::new("model", DataType::Utf8, false),
                Field::new("version", DataType::UInt64, false),
                Field::new("algorithm", DataType::Utf8, false),
                Field::new("rows", DataType::UInt64, false),
                Field::new("fit_seconds", DataType::Float64, false),
            ];
            let mut cols: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(vec![name.clone()])),
                Arc::new(UInt64Array::from(vec![report.meta.version])),
                Arc::new(StringArray::from(vec![algo_name(&report.meta.kind)])),
                Arc::new(UInt64Array::from(vec![report.rows as u64])),
                Arc::new(Float64Array::from(vec![report.fit_seconds])),
            ];
            for (k, v) in &report.metrics {
                fields.push(Field::new(format!("train_{k}"), DataType::Float64, false));
                cols.push(Arc::new(Float64Array::from(vec![*v])));
            }
            let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?;
            Ok(engine.session().read_batch(batch)?)
        }
        ModelStatement::Drop {
            bucket,
            name,
            if_exists,
        } => {
            let om = match bucket {
                Some(b) => engine.bucket(&b)?,
                None => engine.clone(),
            };
            let dropped = om.models().store().drop(&name, if_exists).await?;
            super::execute::count_frame(engine, dropped.len() as u64)
        }
    }
}

fn algo_name(kind: &str) -> String {
    kind.trim_start_matches(crate::models::spec::KIND_PREFIX)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_create_and_drop_model() {
        let s = parse(
            "CREATE OR REPLACE MODEL team.churn OPTIONS (type = 'random_forest_classifier', label = 'y', n_trees = 5, alpha = -0.5, priors = [0.2, 0.8], normalize = false) AS SELECT a, b, y FROM t WHERE a > 1",
        )
        .unwrap()
        .unwrap();
        let ModelStatement::Create {
            bucket,
            name,
            or_replace,
            options,
            query,
        } = s
        else {
            panic!()
        };
        assert_eq!(
            (bucket.as_deref(), name.as_str(), or_replace),
            (Some("team"), "churn", true)
        );
        assert_eq!(options["n_trees"], json!(5));
        assert_eq!(options["alpha"], json!(-0.5));
        assert_eq!(options["priors"], json!([0.2, 0.8]));
        assert_eq!(options["normalize"], json!(false));
        assert_eq!(query, "SELECT a, b, y FROM t WHERE a > 1");
        let d = parse("DROP MODEL IF EXISTS \"m/v1\"").unwrap().unwrap();
        assert_eq!(
            d,
            ModelStatement::Drop {
                bucket: None,
                name: "m/v1".into(),
                if_exists: true
            }
        );
        assert!(parse("CREATE TABLE t AS SELECT 1").unwrap().is_none());
        assert!(parse("SELECT 1").unwrap().is_none());
        assert!(parse("CREATE MODEL m AS SELECT 1").is_err());
    }
}

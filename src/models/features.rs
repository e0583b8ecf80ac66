//! Arrow columns to a numeric matrix and back.
//!
//! A [`FeatureEncoder`] is learned at fit and stored with the model:
//! numeric and boolean columns become one matrix column each (cast with
//! Arrow's kernels, a column at a time, no per-row allocation); string and
//! dictionary columns become one-hot or ordinal columns over the categories
//! seen at fit. Rule for unseen categories at predict: one-hot gives all
//! zeros, ordinal gives -1. Nulls are refused (naming the column) unless the
//! spec chose an imputation; then numeric nulls take the fitted mean, median
//! or zero and categorical nulls count as unseen.
//!
//! A [`LabelEncoder`] maps the label column to class indices (classifiers) or
//! floats (regressors), and predictions back to the label's Arrow type.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Schema};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use smartcore::linalg::basic::matrix::DenseMatrix;

use super::error::{ModelError, Result};
use super::spec::{CategoricalEncoding, NullStrategy, Preprocessing};

/// Most distinct values a column is one-hot encoded with (each becomes a
/// column of the matrix).
pub const MAX_ONE_HOT_CATEGORIES: usize = 1000;

/// Most classes a classifier is fitted with.
pub const MAX_CLASSES: usize = 10_000;

/// A dense matrix in column-major order: column `j` is
/// `data[j * rows .. (j + 1) * rows]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

impl Matrix {
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Matrix {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    pub fn column(&self, j: usize) -> &[f64] {
        &self.data[j * self.rows..(j + 1) * self.rows]
    }

    fn column_mut(&mut self, j: usize) -> &mut [f64] {
        &mut self.data[j * self.rows..(j + 1) * self.rows]
    }

    pub fn get(&self, i: usize, j: usize) -> f64 {
        self.data[j * self.rows + i]
    }

    /// Row `i` copied out (for row-wise algorithms such as kernels).
    pub fn row_into(&self, i: usize, out: &mut Vec<f64>) {
        out.clear();
        out.extend((0..self.cols).map(|j| self.data[j * self.rows + i]));
    }

    /// The given rows, in order.
    pub fn take_rows(&self, idx: &[usize]) -> Matrix {
        let mut data = Vec::with_capacity(idx.len() * self.cols);
        for j in 0..self.cols {
            let col = self.column(j);
            data.extend(idx.iter().map(|&i| col[i]));
        }
        Matrix {
            rows: idx.len(),
            cols: self.cols,
            data,
        }
    }

    /// smartcore's matrix over a copy of the data.
    pub fn to_dense(&self) -> Result<DenseMatrix<f64>> {
        DenseMatrix::new(self.rows, self.cols, self.data.clone(), true)
            .map_err(|e| ModelError::Usage(format!("cannot build a feature matrix: {e}")))
    }
}

/// How one input column was encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "encoding", rename_all = "snake_case")]
pub enum ColumnEncoding {
    /// Numbers or booleans as f64; `fill` replaces nulls (when imputing).
    Numeric {
        fill: Option<f64>,
    },
    OneHot {
        categories: Vec<String>,
    },
    Ordinal {
        categories: Vec<String>,
    },
}

/// One input column of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureColumn {
    pub name: String,
    /// The Arrow type at fit (display form).
    pub data_type: String,
    #[serde(flatten)]
    pub encoding: ColumnEncoding,
}

impl FeatureColumn {
    fn width(&self) -> usize {
        match &self.encoding {
            ColumnEncoding::OneHot { categories } => categories.len(),
            _ => 1,
        }
    }
}

/// The feature preparation a model learned at fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureEncoder {
    pub columns: Vec<FeatureColumn>,
    pub nulls: NullStrategy,
}

/// What family a column type belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Numeric,
    Categorical,
}

fn family(dt: &DataType) -> Option<Family> {
    match dt {
        DataType::Boolean => Some(Family::Numeric),
        d if d.is_numeric() => Some(Family::Numeric),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(Family::Categorical),
        DataType::Dictionary(_, v) => match family(v) {
            Some(Family::Categorical) => Some(Family::Categorical),
            _ => None,
        },
        _ => None,
    }
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::Numeric => "numeric",
        Family::Categorical => "categorical",
    }
}

/// The chunks of column `name` across batches.
pub fn column_chunks(
    batches: &[RecordBatch],
    schema: &Schema,
    name: &str,
    source: &str,
) -> Result<Vec<ArrayRef>> {
    let idx = schema
        .index_of(name)
        .map_err(|_| ModelError::MissingColumn {
            column: name.to_string(),
            source_desc: source.to_string(),
            available: schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    Ok(batches.iter().map(|b| b.column(idx).clone()).collect())
}

fn to_f64(column: &str, a: &ArrayRef) -> Result<Float64Array> {
    let c = cast(a, &DataType::Float64).map_err(|e| ModelError::UnsupportedColumn {
        column: column.to_string(),
        data_type: a.data_type().to_string(),
        role: "feature".into(),
        hint: format!("cast it to a number in SQL ({e})"),
    })?;
    Ok(c.as_primitive::<Float64Type>().clone())
}

fn to_strings(a: &ArrayRef) -> Result<StringArray> {
    let c = cast(a, &DataType::Utf8)?;
    Ok(c.as_string::<i32>().clone())
}

impl FeatureEncoder {
    /// Learns the encoding of `features` from the training data.
    pub fn fit(chunks: &[(String, Vec<ArrayRef>)], pre: &Preprocessing) -> Result<Self> {
        let mut columns = Vec::with_capacity(chunks.len());
        for (name, arrays) in chunks {
            let dt = arrays
                .first()
                .map(|a| a.data_type().clone())
                .unwrap_or(DataType::Null);
            let fam = family(&dt).ok_or_else(|| ModelError::UnsupportedColumn {
                column: name.clone(),
                data_type: dt.to_string(),
                role: "feature".into(),
                hint:
                    "use numbers, booleans or strings; convert dates and nested values in SQL first"
                        .into(),
            })?;
            let nulls: usize = arrays.iter().map(|a| a.null_count()).sum();
            if nulls > 0 && pre.nulls == NullStrategy::Error {
                return Err(ModelError::NullValues {
                    column: name.clone(),
                    count: nulls,
                });
            }
            let encoding = match fam {
                Family::Numeric => {
                    let fill = if nulls == 0 {
                        None
                    } else {
                        let mut values = Vec::new();
                        for a in arrays {
                            values.extend(to_f64(name, a)?.iter().flatten());
                        }
                        Some(impute(&mut values, pre.nulls))
                    };
                    ColumnEncoding::Numeric { fill }
                }
                Family::Categorical => {
                    let mut set = BTreeSet::new();
                    for a in arrays {
                        let s = to_strings(a)?;
                        for v in s.iter().flatten() {
                            if !set.contains(v) {
                                set.insert(v.to_string());
                            }
                        }
                    }
                    if pre.categorical == CategoricalEncoding::OneHot
                        && set.len() > MAX_ONE_HOT_CATEGORIES
                    {
                        // rows × categories of zeros would not fit in memory
                        return Err(ModelError::UnsupportedColumn {
                            column: name.clone(),
                            data_type: dt.to_string(),
                            role: "one-hot feature".into(),
                            hint: format!(
                                "it has {} distinct values (at most {MAX_ONE_HOT_CATEGORIES} are one-hot encoded); fit with categorical = ordinal, or leave the column out of the features",
                                set.len()
                            ),
                        });
                    }
                    let categories: Vec<String> = set.into_iter().collect();
                    match pre.categorical {
                        CategoricalEncoding::OneHot => ColumnEncoding::OneHot { categories },
                        CategoricalEncoding::Ordinal => ColumnEncoding::Ordinal { categories },
                    }
                }
            };
            columns.push(FeatureColumn {
                name: name.clone(),
                data_type: dt.to_string(),
                encoding,
            });
        }
        Ok(FeatureEncoder {
            columns,
            nulls: pre.nulls,
        })
    }

    /// The input column names, in order.
    pub fn names(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }

    /// Width of the encoded matrix.
    pub fn width(&self) -> usize {
        self.columns.iter().map(FeatureColumn::width).sum()
    }

    /// Names of the encoded matrix columns (`color=red` for one-hot).
    pub fn output_names(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.width());
        for c in &self.columns {
            match &c.encoding {
                ColumnEncoding::OneHot { categories } => {
                    out.extend(categories.iter().map(|v| format!("{}={v}", c.name)))
                }
                _ => out.push(c.name.clone()),
            }
        }
        out
    }

    /// Lists how `types` (one per feature, in order) differ from the training
    /// types; empty when they are compatible. Numeric widths may differ.
    pub fn mismatches(&self, types: &[(String, Option<DataType>)]) -> Vec<String> {
        let mut out = Vec::new();
        for (col, (given_name, given)) in self.columns.iter().zip(types) {
            let trained = DataType::from_str(&col.data_type).ok();
            let want = trained.as_ref().and_then(family);
            match given {
                None => out.push(format!("missing column '{}' ({})", col.name, col.data_type)),
                Some(dt) => {
                    let got = family(dt);
                    if got != want {
                        out.push(format!(
                            "'{given_name}' is {dt} ({}), trained on '{}' as {} ({})",
                            got.map_or("unsupported", family_name),
                            col.name,
                            col.data_type,
                            want.map_or("unsupported", family_name),
                        ));
                    }
                }
            }
        }
        if types.len() != self.columns.len() {
            out.push(format!(
                "{} column(s) given, the model takes {}: {}",
                types.len(),
                self.columns.len(),
                self.names().join(", ")
            ));
        }
        out
    }

    /// Encodes one chunked array per feature (in feature order, `rows` rows
    /// each) into a column-major matrix.
    pub fn encode(&self, inputs: &[Vec<ArrayRef>], rows: usize) -> Result<Matrix> {
        let mut m = Matrix::zeros(rows, self.width());
        let mut offset = 0;
        for (col, chunks) in self.columns.iter().zip(inputs) {
            let nulls: usize = chunks.iter().map(|a| a.null_count()).sum();
            if nulls > 0 && self.nulls == NullStrategy::Error {
                return Err(ModelError::NullValues {
                    column: col.name.clone(),
                    count: nulls,
                });
            }
            match &col.encoding {
                ColumnEncoding::Numeric { fill } => {
                    let out = m.column_mut(offset);
                    let mut start = 0;
                    let fill = fill.unwrap_or(0.0);
                    for a in chunks {
                        let f = to_f64(&col.name, a)?;
                        let dst = &mut out[start..start + f.len()];
                        dst.copy_from_slice(f.values());
                        if f.null_count() > 0 {
                            for (i, v) in dst.iter_mut().enumerate() {
                                if f.is_null(i) {
                                    *v = fill;
                                }
                            }
                        }
                        start += f.len();
                    }
                    offset += 1;
                }
                ColumnEncoding::OneHot { categories } | ColumnEncoding::Ordinal { categories } => {
                    let one_hot = matches!(col.encoding, ColumnEncoding::OneHot { .. });
                    let index: HashMap<&str, usize> = categories
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (c.as_str(), i))
                        .collect();
                    let mut row = 0;
                    for a in chunks {
                        let s = to_strings(a)?;
                        for v in s.iter() {
                            let hit = v.and_then(|v| index.get(v).copied());
                            if one_hot {
                                if let Some(k) = hit {
                                    m.data[(offset + k) * rows + row] = 1.0;
                                }
                            } else {
                                m.data[offset * rows + row] = hit.map_or(-1.0, |k| k as f64);
                            }
                            row += 1;
                        }
                    }
                    offset += col.width();
                }
            }
        }
        Ok(m)
    }
}

fn impute(values: &mut [f64], strategy: NullStrategy) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    match strategy {
        NullStrategy::Mean => values.iter().sum::<f64>() / values.len() as f64,
        NullStrategy::Median => {
            values.sort_by(|a, b| a.total_cmp(b));
            let n = values.len();
            if n % 2 == 1 {
                values[n / 2]
            } else {
                (values[n / 2 - 1] + values[n / 2]) / 2.0
            }
        }
        NullStrategy::Zero | NullStrategy::Error => 0.0,
    }
}

/// The label column of a supervised model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelEncoder {
    pub name: String,
    /// The Arrow type at fit (display form); predictions come back in it.
    pub data_type: String,
    /// Class values (classifiers), in index order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
}

/// Encoded labels.
#[derive(Debug, Clone)]
pub enum Target {
    /// Class indices into `LabelEncoder::classes`.
    Classes(Vec<i32>),
    Values(Vec<f64>),
}

impl Target {
    pub fn len(&self) -> usize {
        match self {
            Target::Classes(c) => c.len(),
            Target::Values(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn take(&self, idx: &[usize]) -> Target {
        match self {
            Target::Classes(c) => Target::Classes(idx.iter().map(|&i| c[i]).collect()),
            Target::Values(v) => Target::Values(idx.iter().map(|&i| v[i]).collect()),
        }
    }
}

impl LabelEncoder {
    /// Learns the label (classes for a classifier) and encodes it.
    pub fn fit(name: &str, chunks: &[ArrayRef], classify: bool) -> Result<(Self, Target)> {
        let dt = chunks
            .first()
            .map(|a| a.data_type().clone())
            .unwrap_or(DataType::Null);
        let nulls: usize = chunks.iter().map(|a| a.null_count()).sum();
        if nulls > 0 {
            return Err(ModelError::NullValues {
                column: name.to_string(),
                count: nulls,
            });
        }
        if classify {
            if family(&dt).is_none() {
                return Err(ModelError::UnsupportedColumn {
                    column: name.into(),
                    data_type: dt.to_string(),
                    role: "class label".into(),
                    hint: "use integers, booleans or strings".into(),
                });
            }
            let mut set = BTreeSet::new();
            for a in chunks {
                for v in to_strings(a)?.iter().flatten() {
                    if !set.contains(v) {
                        set.insert(v.to_string());
                    }
                }
            }
            if set.len() > MAX_CLASSES {
                return Err(ModelError::UnsupportedColumn {
                    column: name.into(),
                    data_type: dt.to_string(),
                    role: "class label".into(),
                    hint: format!(
                        "it has {} distinct values (a classifier takes at most {MAX_CLASSES}); is it a regression target?",
                        set.len()
                    ),
                });
            }
            let mut classes: Vec<String> = set.into_iter().collect();
            if family(&dt) == Some(Family::Numeric) && dt != DataType::Boolean {
                classes.sort_by(|a, b| {
                    let (x, y) = (a.parse::<f64>(), b.parse::<f64>());
                    match (x, y) {
                        (Ok(x), Ok(y)) => x.total_cmp(&y),
                        _ => a.cmp(b),
                    }
                });
            }
            let enc = LabelEncoder {
                name: name.into(),
                data_type: dt.to_string(),
                classes: Some(classes),
            };
            let target = enc.encode(chunks)?;
            Ok((enc, target))
        } else {
            if !dt.is_numeric() {
                return Err(ModelError::UnsupportedColumn {
                    column: name.into(),
                    data_type: dt.to_string(),
                    role: "regression target".into(),
                    hint: "use a numeric column, or a classifier for categories".into(),
                });
            }
            let enc = LabelEncoder {
                name: name.into(),
                data_type: dt.to_string(),
                classes: None,
            };
            let target = enc.encode(chunks)?;
            Ok((enc, target))
        }
    }

    /// Encodes label values of data to score against (classes unseen at fit
    /// become -1, which no prediction matches).
    pub fn encode(&self, chunks: &[ArrayRef]) -> Result<Target> {
        let nulls: usize = chunks.iter().map(|a| a.null_count()).sum();
        if nulls > 0 {
            return Err(ModelError::NullValues {
                column: self.name.clone(),
                count: nulls,
            });
        }
        match &self.classes {
            Some(classes) => {
                let index: HashMap<&str, i32> = classes
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.as_str(), i as i32))
                    .collect();
                let mut out = Vec::new();
                for a in chunks {
                    let s = to_strings(a)?;
                    out.extend(
                        s.iter()
                            .map(|v| v.and_then(|v| index.get(v).copied()).unwrap_or(-1)),
                    );
                }
                Ok(Target::Classes(out))
            }
            None => {
                let mut out = Vec::new();
                for a in chunks {
                    out.extend_from_slice(to_f64(&self.name, a)?.values());
                }
                Ok(Target::Values(out))
            }
        }
    }

    /// The label's Arrow type.
    pub fn arrow_type(&self) -> DataType {
        DataType::from_str(&self.data_type).unwrap_or(DataType::Utf8)
    }

    /// The type of predicted labels: the label's type (dictionary labels
    /// come back as their plain value type).
    pub fn output_type(&self) -> DataType {
        match self.arrow_type() {
            DataType::Dictionary(_, v) => *v,
            t => t,
        }
    }

    /// Class indices back to an array of [`Self::output_type`].
    pub fn decode_classes(&self, idx: &[i32]) -> Result<ArrayRef> {
        let classes = self.classes.as_deref().unwrap_or_default();
        let strings: StringArray = idx
            .iter()
            .map(|&i| classes.get(i as usize).map(String::as_str))
            .collect();
        Ok(cast(&(Arc::new(strings) as ArrayRef), &self.output_type())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BooleanArray, Int32Array};

    fn arr<A: Array + 'static>(a: A) -> Vec<ArrayRef> {
        vec![Arc::new(a)]
    }

    #[test]
    fn numeric_bool_and_one_hot_encode_column_major() {
        let inputs = vec![
            ("x".to_string(), arr(Int32Array::from(vec![1, 2, 3]))),
            (
                "b".to_string(),
                arr(BooleanArray::from(vec![true, false, true])),
            ),
            (
                "c".to_string(),
                arr(StringArray::from(vec!["red", "blue", "red"])),
            ),
        ];
        let enc = FeatureEncoder::fit(&inputs, &Preprocessing::default()).unwrap();
        assert_eq!(enc.output_names(), ["x", "b", "c=blue", "c=red"]);
        let chunks: Vec<_> = inputs.iter().map(|(_, c)| c.clone()).collect();
        let m = enc.encode(&chunks, 3).unwrap();
        assert_eq!(m.column(0), [1.0, 2.0, 3.0]);
        assert_eq!(m.column(1), [1.0, 0.0, 1.0]);
        assert_eq!(m.column(2), [0.0, 1.0, 0.0]);
        assert_eq!(m.column(3), [1.0, 0.0, 1.0]);
        // unseen category: all zeros
        let m = enc
            .encode(
                &[
                    arr(Int32Array::from(vec![0])),
                    arr(BooleanArray::from(vec![false])),
                    arr(StringArray::from(vec!["green"])),
                ],
                1,
            )
            .unwrap();
        assert_eq!(m.data, [0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn nulls_are_refused_or_imputed() {
        let inputs = vec![(
            "x".to_string(),
            arr(arrow::array::Float64Array::from(vec![
                Some(1.0),
                None,
                Some(3.0),
            ])),
        )];
        let e = FeatureEncoder::fit(&inputs, &Preprocessing::default()).unwrap_err();
        assert!(e.to_string().contains("'x' has 1 null"), "{e}");
        let pre = Preprocessing {
            nulls: NullStrategy::Mean,
            ..Default::default()
        };
        let enc = FeatureEncoder::fit(&inputs, &pre).unwrap();
        let m = enc.encode(&[inputs[0].1.clone()], 3).unwrap();
        assert_eq!(m.column(0), [1.0, 2.0, 3.0]);
    }

    #[test]
    fn labels_round_trip_in_their_type() {
        let (enc, t) =
            LabelEncoder::fit("y", &arr(Int32Array::from(vec![10, 2, 10, 2])), true).unwrap();
        assert_eq!(enc.classes.as_deref().unwrap(), ["2", "10"]);
        let Target::Classes(c) = t else { panic!() };
        assert_eq!(c, [1, 0, 1, 0]);
        let back = enc.decode_classes(&c).unwrap();
        assert_eq!(
            back.as_primitive::<arrow::datatypes::Int32Type>().values(),
            &[10, 2, 10, 2]
        );
    }
}

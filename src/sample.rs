//! Generated datasets with known structure, for the quickstart, the model
//! quality example, benchmarks and tests. Deterministic for a given seed on
//! every platform (a fixed xorshift generator, no `rand` dependency).

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;

/// A small fixed pseudo-random generator (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut s = self.0;
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        self.0 = s;
        s.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The coefficients of [`linear`]: `y = 3 + 2·x1 − 1.5·x2 + 0.5·x3 + ε`.
pub const LINEAR_INTERCEPT: f64 = 3.0;
pub const LINEAR_COEFS: [f64; 3] = [2.0, -1.5, 0.5];

/// `id, x1, x2, x3, y` with `y` linear in the x's plus N(0, noise²) noise.
pub fn linear(rows: usize, noise: f64, seed: u64) -> RecordBatch {
    let mut r = Rng::new(seed);
    let mut x = [
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
    ];
    let mut y = Vec::with_capacity(rows);
    for _ in 0..rows {
        let mut v = LINEAR_INTERCEPT;
        for (j, col) in x.iter_mut().enumerate() {
            let xi = r.uniform() * 20.0 - 10.0;
            v += LINEAR_COEFS[j] * xi;
            col.push(xi);
        }
        y.push(v + noise * r.normal());
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("x1", DataType::Float64, false),
        Field::new("x2", DataType::Float64, false),
        Field::new("x3", DataType::Float64, false),
        Field::new("y", DataType::Float64, false),
    ]));
    let [x1, x2, x3] = x;
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(0..rows as i64)),
        Arc::new(Float64Array::from(x1)),
        Arc::new(Float64Array::from(x2)),
        Arc::new(Float64Array::from(x3)),
        Arc::new(Float64Array::from(y)),
    ];
    RecordBatch::try_new(schema, cols).expect("static schema")
}

/// Class names of [`blobs`].
pub const BLOB_CLASSES: [&str; 3] = ["alpha", "beta", "gamma"];

/// `id, f1, f2, f3, f4, segment, member, label`: three Gaussian classes
/// (string labels) whose centres are `spread` standard deviations apart,
/// plus a categorical `segment` and a boolean `member` that carry some
/// signal. With `spread >= 3` the classes are close to separable.
pub fn blobs(rows: usize, spread: f64, seed: u64) -> RecordBatch {
    let mut r = Rng::new(seed);
    let centres = [
        [0.0, 0.0, 0.0, 0.0],
        [spread, spread * 0.5, 0.0, -spread * 0.5],
        [-spread * 0.5, spread, spread * 0.5, 0.0],
    ];
    let segments = ["north", "south", "east", "west"];
    let mut f: [Vec<f64>; 4] = Default::default();
    let (mut seg, mut member, mut label) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rows {
        let c = r.below(3) as usize;
        for (j, col) in f.iter_mut().enumerate() {
            col.push(centres[c][j] + r.normal());
        }
        // segment agrees with the class 60% of the time
        let s = if r.uniform() < 0.6 {
            c
        } else {
            r.below(4) as usize
        };
        seg.push(segments[s]);
        member.push(c == 1 || r.uniform() < 0.2);
        label.push(BLOB_CLASSES[c]);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("f1", DataType::Float64, false),
        Field::new("f2", DataType::Float64, false),
        Field::new("f3", DataType::Float64, false),
        Field::new("f4", DataType::Float64, false),
        Field::new("segment", DataType::Utf8, false),
        Field::new("member", DataType::Boolean, false),
        Field::new("label", DataType::Utf8, false),
    ]));
    let [f1, f2, f3, f4] = f;
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(0..rows as i64)),
        Arc::new(Float64Array::from(f1)),
        Arc::new(Float64Array::from(f2)),
        Arc::new(Float64Array::from(f3)),
        Arc::new(Float64Array::from(f4)),
        Arc::new(StringArray::from(seg)),
        Arc::new(BooleanArray::from(member)),
        Arc::new(StringArray::from(label)),
    ];
    RecordBatch::try_new(schema, cols).expect("static schema")
}

/// `id, x1..x5, y`: Friedman's regression problem #1,
/// `y = 10 sin(π x1 x2) + 20 (x3 − 0.5)² + 10 x4 + 5 x5 + ε` — nonlinear,
/// where trees and neighbours beat linear models.
pub fn friedman(rows: usize, noise: f64, seed: u64) -> RecordBatch {
    let mut r = Rng::new(seed);
    let mut x: [Vec<f64>; 5] = Default::default();
    let mut y = Vec::with_capacity(rows);
    for _ in 0..rows {
        let v: Vec<f64> = (0..5).map(|_| r.uniform()).collect();
        for (j, col) in x.iter_mut().enumerate() {
            col.push(v[j]);
        }
        y.push(
            10.0 * (std::f64::consts::PI * v[0] * v[1]).sin()
                + 20.0 * (v[2] - 0.5).powi(2)
                + 10.0 * v[3]
                + 5.0 * v[4]
                + noise * r.normal(),
        );
    }
    let mut fields = vec![Field::new("id", DataType::Int64, false)];
    let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(0..rows as i64))];
    for (j, col) in x.into_iter().enumerate() {
        fields.push(Field::new(format!("x{}", j + 1), DataType::Float64, false));
        cols.push(Arc::new(Float64Array::from(col)));
    }
    fields.push(Field::new("y", DataType::Float64, false));
    cols.push(Arc::new(Float64Array::from(y)));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("static schema")
}

/// Rows `[from, to)` of a batch (a train/test split of generated data,
/// whose rows are already in random order).
pub fn rows(batch: &RecordBatch, from: usize, to: usize) -> RecordBatch {
    let to = to.min(batch.num_rows());
    batch.slice(from.min(to), to - from.min(to))
}

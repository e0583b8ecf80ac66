//! Fitted smartcore estimators behind one enum, with the state each needs to
//! predict after a round trip through storage.
//!
//! Linear models keep only their coefficients (prediction is then a few
//! vectorized column passes); KNN, trees, naive Bayes and PCA keep
//! smartcore's own structs; the random forest classifier keeps its trees (so
//! it can give vote fractions as probabilities); SVC keeps its support
//! vectors and kernel, because smartcore's SVC borrows its parameters and
//! cannot predict after deserialization.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use smartcore::algorithm::neighbour::KNNAlgorithmName;
use smartcore::cluster::kmeans::KMeansParameters;
use smartcore::decomposition::pca::{PCA, PCAParameters};
use smartcore::ensemble::random_forest_classifier::RandomForestClassifierParameters;
use smartcore::ensemble::random_forest_regressor::{
    RandomForestRegressor, RandomForestRegressorParameters,
};
use smartcore::linalg::basic::arrays::Array;
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::linear::elastic_net::ElasticNetParameters;
use smartcore::linear::lasso::LassoParameters;
use smartcore::linear::linear_regression::{
    LinearRegressionParameters, LinearRegressionSolverName,
};
use smartcore::linear::logistic_regression::LogisticRegressionParameters;
use smartcore::linear::ridge_regression::{RidgeRegressionParameters, RidgeRegressionSolverName};
use smartcore::metrics::distance::euclidian::Euclidian;
use smartcore::naive_bayes::gaussian::{GaussianNB, GaussianNBParameters};
use smartcore::neighbors::KNNWeightFunction;
use smartcore::neighbors::knn_classifier::{KNNClassifier, KNNClassifierParameters};
use smartcore::neighbors::knn_regressor::{KNNRegressor, KNNRegressorParameters};
use smartcore::svm::Kernels;
use smartcore::svm::svc::{SVC, SVCParameters};
use smartcore::tree::decision_tree_classifier::{
    DecisionTreeClassifier, DecisionTreeClassifierParameters, SplitCriterion,
};
use smartcore::tree::decision_tree_regressor::{
    DecisionTreeRegressor, DecisionTreeRegressorParameters,
};

use super::features::{Matrix, Target};
use super::spec::{Algorithm, Params};

type X = DenseMatrix<f64>;
type Dtc = DecisionTreeClassifier<f64, i32, X, Vec<i32>>;
type KnnC = KNNClassifier<f64, i32, X, Vec<i32>, Euclidian<f64>>;
type KnnR = KNNRegressor<f64, f64, X, Vec<f64>, Euclidian<f64>>;
type Rfr = RandomForestRegressor<f64, f64, X, Vec<f64>>;

/// A fitted model's learned state.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "estimator", content = "state", rename_all = "snake_case")]
pub enum Estimator {
    /// Linear, ridge, lasso and elastic net: `y = intercept + coef · x`.
    Linear {
        coef: Vec<f64>,
        intercept: f64,
    },
    /// Logistic regression: one row of coefficients (binary, the second
    /// class's log-odds) or one per class (softmax).
    Logistic {
        coef: Vec<Vec<f64>>,
        intercept: Vec<f64>,
        n_classes: usize,
    },
    DecisionTreeClassifier(Box<Dtc>),
    DecisionTreeRegressor(Box<DecisionTreeRegressor<f64, f64, X, Vec<f64>>>),
    RandomForestClassifier {
        trees: Vec<Dtc>,
        n_classes: usize,
    },
    /// Sub-forests fitted in parallel (trees, forest); predictions are the
    /// tree-weighted mean, as one forest's would be.
    RandomForestRegressor {
        forests: Vec<(usize, Rfr)>,
    },
    KnnClassifier(Box<KnnC>),
    KnnRegressor(Box<KnnR>),
    /// smartcore's naive Bayes, predicted here with scikit-learn's variance
    /// smoothing (`epsilon` is added to every variance, so a feature that is
    /// constant within a class does not veto it).
    GaussianNb {
        model: Box<GaussianNB<f64, u32, X, Vec<u32>>>,
        epsilon: f64,
    },
    /// One-vs-one binary machines.
    Svc {
        machines: Vec<BinarySvc>,
        kernel: SvmKernel,
        n_classes: usize,
    },
    KMeans {
        centroids: Vec<Vec<f64>>,
    },
    Pca(Box<PCA<f64, X>>),
}

thread_local! {
    /// Set while a guarded call runs: a panic there is reported as an error,
    /// so the process's panic hook should not call it a bug.
    static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the current thread is inside a guarded smartcore call.
pub fn in_guarded_call() -> bool {
    GUARDED.with(|g| g.get())
}

/// Runs `f`, turning a panic inside smartcore into an error naming `what`:
/// a stored model that does not fit its data must not end the process.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    let outer = GUARDED.with(|g| g.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(outer));
    match result {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".into());
            Err(format!(
                "{what} failed inside the estimator ({msg}); refit the model on data of its schema"
            ))
        }
    }
}

/// What `predict` returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Values(Vec<f64>),
    /// Class indices (classifiers) or cluster ids (k-means).
    Classes(Vec<i32>),
}

/// A kernel, applied without allocating per row.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SvmKernel {
    Linear,
    Rbf { gamma: f64 },
    Polynomial { degree: f64, gamma: f64, coef0: f64 },
    Sigmoid { gamma: f64, coef0: f64 },
}

impl SvmKernel {
    fn apply(&self, a: &[f64], b: &[f64]) -> f64 {
        let dot = || a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        match *self {
            SvmKernel::Linear => dot(),
            SvmKernel::Rbf { gamma } => {
                let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
                (-gamma * d).exp()
            }
            SvmKernel::Polynomial {
                degree,
                gamma,
                coef0,
            } => (gamma * dot() + coef0).powf(degree),
            SvmKernel::Sigmoid { gamma, coef0 } => (gamma * dot() + coef0).tanh(),
        }
    }

    fn smartcore(&self) -> Kernels {
        match *self {
            SvmKernel::Linear => Kernels::linear(),
            SvmKernel::Rbf { gamma } => Kernels::rbf().with_gamma(gamma),
            SvmKernel::Polynomial {
                degree,
                gamma,
                coef0,
            } => Kernels::polynomial()
                .with_degree(degree)
                .with_gamma(gamma)
                .with_coef0(coef0),
            SvmKernel::Sigmoid { gamma, coef0 } => {
                Kernels::sigmoid().with_gamma(gamma).with_coef0(coef0)
            }
        }
    }
}

/// A binary SVC as smartcore learned it: `f(x) = b + Σ wᵢ K(x, svᵢ)`,
/// class `positive` when `f(x) > 0`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BinarySvc {
    pub negative: i32,
    pub positive: i32,
    pub support: Vec<Vec<f64>>,
    pub w: Vec<f64>,
    pub b: f64,
}

impl BinarySvc {
    fn decide(&self, kernel: &SvmKernel, x: &[f64]) -> i32 {
        let f: f64 = self.b
            + self
                .support
                .iter()
                .zip(&self.w)
                .map(|(sv, w)| w * kernel.apply(x, sv))
                .sum::<f64>();
        if f > 0.0 {
            self.positive
        } else {
            self.negative
        }
    }
}

/// smartcore's SVC fields, read back through serde (they are private).
#[derive(Deserialize)]
struct SvcParts {
    classes: Option<(i32, i32)>,
    instances: Option<Vec<Vec<f64>>>,
    w: Option<Vec<f64>>,
    b: Option<f64>,
}

#[derive(Deserialize)]
struct ForestParts {
    trees: Option<Vec<Dtc>>,
}

#[derive(Deserialize)]
struct KMeansParts {
    centroids: Vec<Vec<f64>>,
}

/// Reads private fields of a smartcore model through its serde form.
fn parts<T: DeserializeOwned>(model: &impl Serialize) -> Result<T, String> {
    let bytes = rmp_serde::to_vec_named(model).map_err(|e| e.to_string())?;
    rmp_serde::from_slice(&bytes).map_err(|e| e.to_string())
}

/// The values of a smartcore row or column vector, in order.
fn flat(m: &X) -> Vec<f64> {
    let (r, c) = m.shape();
    let mut out = Vec::with_capacity(r * c);
    for i in 0..r {
        for j in 0..c {
            out.push(*m.get((i, j)));
        }
    }
    out
}

fn dense_to_matrix(m: &X) -> Matrix {
    let (rows, cols) = m.shape();
    let mut out = Matrix::zeros(rows, cols);
    for j in 0..cols {
        for i in 0..rows {
            out.data[j * rows + i] = *m.get((i, j));
        }
    }
    out
}

fn criterion(p: &Params) -> SplitCriterion {
    match p.str("criterion") {
        "entropy" => SplitCriterion::Entropy,
        "classification_error" => SplitCriterion::ClassificationError,
        _ => SplitCriterion::Gini,
    }
}

fn weight(p: &Params) -> KNNWeightFunction {
    match p.str("weight") {
        "distance" => KNNWeightFunction::Distance,
        _ => KNNWeightFunction::Uniform,
    }
}

fn knn_algorithm(p: &Params) -> KNNAlgorithmName {
    match p.str("algorithm") {
        "linear_search" => KNNAlgorithmName::LinearSearch,
        _ => KNNAlgorithmName::CoverTree,
    }
}

fn max_depth(p: &Params) -> Option<u16> {
    p.opt_usize("max_depth")
        .map(|d| d.min(u16::MAX as usize) as u16)
}

fn seed(p: &Params) -> Option<u64> {
    p.opt_usize("seed").map(|s| s as u64)
}

fn values(y: &Target) -> Result<&Vec<f64>, String> {
    match y {
        Target::Values(v) => Ok(v),
        Target::Classes(_) => Err("this algorithm needs a numeric target".into()),
    }
}

fn classes(y: &Target) -> Result<&Vec<i32>, String> {
    match y {
        Target::Classes(c) => Ok(c),
        Target::Values(_) => Err("this algorithm needs class labels".into()),
    }
}

impl Estimator {
    /// Fits `params.algorithm` on `x` (and `y`, for supervised algorithms;
    /// `n_classes` is the number of classes the label encoder found).
    pub fn fit(
        params: &Params,
        x: &Matrix,
        y: Option<&Target>,
        n_classes: usize,
    ) -> Result<Estimator, String> {
        use Algorithm::*;
        if x.rows == 0 {
            return Err("no rows to fit on".into());
        }
        let algo = params.algorithm;
        let need_y = || y.ok_or_else(|| format!("{algo} needs a label column"));
        let dense = x.to_dense().map_err(|e| e.to_string())?;
        let fe = |e: smartcore::error::Failed| e.to_string();
        Ok(match algo {
            LinearRegression => {
                let y = values(need_y()?)?;
                if params.str("solver") == "cholesky"
                    && let Some((coef, intercept)) = super::solvers::least_squares(x, y)
                {
                    return Ok(Estimator::Linear { coef, intercept });
                }
                // collinear features (or another solver chosen): smartcore
                let solver = if params.str("solver") == "qr" {
                    LinearRegressionSolverName::QR
                } else {
                    LinearRegressionSolverName::SVD
                };
                let m = smartcore::linear::linear_regression::LinearRegression::fit(
                    &dense,
                    y,
                    LinearRegressionParameters::default().with_solver(solver),
                )
                .map_err(fe)?;
                linear(m.coefficients(), *m.intercept())
            }
            RidgeRegression => {
                let solver = if params.str("solver") == "svd" {
                    RidgeRegressionSolverName::SVD
                } else {
                    RidgeRegressionSolverName::Cholesky
                };
                let m = smartcore::linear::ridge_regression::RidgeRegression::fit(
                    &dense,
                    values(need_y()?)?,
                    RidgeRegressionParameters::default()
                        .with_alpha(params.f64("alpha"))
                        .with_normalize(params.bool("normalize"))
                        .with_solver(solver),
                )
                .map_err(fe)?;
                linear(m.coefficients(), *m.intercept())
            }
            Lasso => {
                let m = smartcore::linear::lasso::Lasso::fit(
                    &dense,
                    values(need_y()?)?,
                    LassoParameters::default()
                        .with_alpha(params.f64("alpha"))
                        .with_normalize(params.bool("normalize"))
                        .with_tol(params.f64("tol"))
                        .with_max_iter(params.usize("max_iter")),
                )
                .map_err(fe)?;
                linear(m.coefficients(), *m.intercept())
            }
            ElasticNet => {
                let m = smartcore::linear::elastic_net::ElasticNet::fit(
                    &dense,
                    values(need_y()?)?,
                    ElasticNetParameters::default()
                        .with_alpha(params.f64("alpha"))
                        .with_l1_ratio(params.f64("l1_ratio"))
                        .with_normalize(params.bool("normalize"))
                        .with_tol(params.f64("tol"))
                        .with_max_iter(params.usize("max_iter")),
                )
                .map_err(fe)?;
                linear(m.coefficients(), *m.intercept())
            }
            LogisticRegression => {
                let y = classes(need_y()?)?;
                check_classes(y, n_classes, 2)?;
                if params.str("solver") == "newton"
                    && n_classes == 2
                    && let Some((w, b)) = super::solvers::logistic_newton(x, y, params.f64("alpha"))
                {
                    return Ok(Estimator::Logistic {
                        coef: vec![w],
                        intercept: vec![b],
                        n_classes,
                    });
                }
                let m = smartcore::linear::logistic_regression::LogisticRegression::fit(
                    &dense,
                    y,
                    LogisticRegressionParameters::default().with_alpha(params.f64("alpha")),
                )
                .map_err(fe)?;
                let (k, p) = m.coefficients().shape();
                let coef = (0..k)
                    .map(|r| (0..p).map(|c| *m.coefficients().get((r, c))).collect())
                    .collect();
                let intercept = flat(m.intercept());
                Estimator::Logistic {
                    coef,
                    intercept,
                    n_classes,
                }
            }
            DecisionTreeClassifier => {
                let p = DecisionTreeClassifierParameters {
                    criterion: criterion(params),
                    max_depth: max_depth(params),
                    min_samples_leaf: params.usize("min_samples_leaf"),
                    min_samples_split: params.usize("min_samples_split"),
                    seed: seed(params),
                };
                let y = classes(need_y()?)?;
                Estimator::DecisionTreeClassifier(Box::new(
                    smartcore::tree::decision_tree_classifier::DecisionTreeClassifier::fit(
                        &dense, y, p,
                    )
                    .map_err(fe)?,
                ))
            }
            DecisionTreeRegressor => {
                let p = DecisionTreeRegressorParameters {
                    max_depth: max_depth(params),
                    min_samples_leaf: params.usize("min_samples_leaf"),
                    min_samples_split: params.usize("min_samples_split"),
                    seed: seed(params),
                };
                Estimator::DecisionTreeRegressor(Box::new(
                    smartcore::tree::decision_tree_regressor::DecisionTreeRegressor::fit(
                        &dense,
                        values(need_y()?)?,
                        p,
                    )
                    .map_err(fe)?,
                ))
            }
            RandomForestClassifier => {
                let y = classes(need_y()?)?;
                let trees = forest_chunks(params, |seed, n_trees| {
                    let p = RandomForestClassifierParameters {
                        criterion: criterion(params),
                        max_depth: max_depth(params),
                        min_samples_leaf: params.usize("min_samples_leaf"),
                        min_samples_split: params.usize("min_samples_split"),
                        n_trees: n_trees.min(u16::MAX as usize) as u16,
                        m: params.opt_usize("m"),
                        keep_samples: false,
                        seed,
                    };
                    let rf: smartcore::ensemble::random_forest_classifier::RandomForestClassifier<
                        f64,
                        i32,
                        X,
                        Vec<i32>,
                    > = smartcore::ensemble::random_forest_classifier::RandomForestClassifier::fit(
                        &dense, y, p,
                    )
                    .map_err(fe)?;
                    let forest: ForestParts = parts(&rf)?;
                    Ok(forest.trees.unwrap_or_default())
                })?;
                Estimator::RandomForestClassifier {
                    trees: trees.into_iter().flatten().collect(),
                    n_classes,
                }
            }
            RandomForestRegressor => {
                let y = values(need_y()?)?;
                let forests = forest_chunks(params, |seed, n_trees| {
                    let p = RandomForestRegressorParameters {
                        max_depth: max_depth(params),
                        min_samples_leaf: params.usize("min_samples_leaf"),
                        min_samples_split: params.usize("min_samples_split"),
                        n_trees,
                        m: params.opt_usize("m"),
                        keep_samples: false,
                        seed,
                    };
                    let f =
                        smartcore::ensemble::random_forest_regressor::RandomForestRegressor::fit(
                            &dense, y, p,
                        )
                        .map_err(fe)?;
                    Ok((n_trees, f))
                })?;
                Estimator::RandomForestRegressor { forests }
            }
            KnnClassifier => {
                let p = KNNClassifierParameters::default()
                    .with_k(params.usize("k"))
                    .with_weight(weight(params))
                    .with_algorithm(knn_algorithm(params));
                Estimator::KnnClassifier(Box::new(
                    KNNClassifier::fit(&dense, classes(need_y()?)?, p).map_err(fe)?,
                ))
            }
            KnnRegressor => {
                let p = KNNRegressorParameters::default()
                    .with_k(params.usize("k"))
                    .with_weight(weight(params))
                    .with_algorithm(knn_algorithm(params));
                Estimator::KnnRegressor(Box::new(
                    KNNRegressor::fit(&dense, values(need_y()?)?, p).map_err(fe)?,
                ))
            }
            GaussianNb => {
                let mut p = GaussianNBParameters::default();
                if let Some(priors) = params.floats("priors") {
                    if priors.len() != n_classes {
                        return Err(format!(
                            "priors has {} value(s) but the label has {n_classes} classes",
                            priors.len()
                        ));
                    }
                    p = p.with_priors(priors);
                }
                // smartcore's naive Bayes takes unsigned class labels
                let y: Vec<u32> = classes(need_y()?)?.iter().map(|&c| c as u32).collect();
                Estimator::GaussianNb {
                    model: Box::new(GaussianNB::fit(&dense, &y, p).map_err(fe)?),
                    epsilon: 1e-9 * max_variance(x),
                }
            }
            Svc => fit_svc(params, x, classes(need_y()?)?, n_classes)?,
            KMeans => {
                let p = KMeansParameters {
                    k: params.usize("k"),
                    max_iter: params.usize("max_iter"),
                    seed: seed(params),
                };
                if p.k > x.rows {
                    return Err(format!("k = {} is more than the {} rows", p.k, x.rows));
                }
                let m: smartcore::cluster::kmeans::KMeans<f64, i32, X, Vec<i32>> =
                    smartcore::cluster::kmeans::KMeans::fit(&dense, p).map_err(fe)?;
                let km: KMeansParts = parts(&m)?;
                Estimator::KMeans {
                    centroids: km.centroids,
                }
            }
            Pca => {
                let n = params.usize("n_components");
                if n > x.cols {
                    return Err(format!(
                        "n_components = {n} is more than the {} feature columns",
                        x.cols
                    ));
                }
                let p = PCAParameters::default()
                    .with_n_components(n)
                    .with_use_correlation_matrix(params.bool("use_correlation_matrix"));
                Estimator::Pca(Box::new(PCA::fit(&dense, p).map_err(fe)?))
            }
        })
    }

    /// Predictions for every row of `x`.
    pub fn predict(&self, x: &Matrix) -> Result<Output, String> {
        guarded("predict", || self.predict_unguarded(x))
    }

    /// Class probabilities, one column per class (in class order).
    pub fn predict_proba(&self, x: &Matrix) -> Result<Matrix, String> {
        guarded("predict_proba", || self.predict_proba_unguarded(x))
    }

    /// PCA components, or k-means distances to each centroid.
    pub fn transform(&self, x: &Matrix) -> Result<Matrix, String> {
        guarded("transform", || self.transform_unguarded(x))
    }

    /// Checks what was read from a model file against the width of its
    /// encoded features and its class count, before anything indexes with
    /// it: a damaged or foreign state is an error, never an out-of-bounds
    /// panic at predict.
    pub fn validate(&self, width: usize, n_classes: usize) -> Result<(), String> {
        let bad = |what: String| Err(format!("stored state does not fit the model: {what}"));
        match self {
            Estimator::Linear { coef, intercept } => {
                if coef.len() != width {
                    return bad(format!("{} coefficients for {width} features", coef.len()));
                }
                if !intercept.is_finite() {
                    return bad("the intercept is not a number".into());
                }
            }
            Estimator::Logistic {
                coef,
                intercept,
                n_classes: k,
            } => {
                if *k != n_classes || *k < 2 {
                    return bad(format!("{k} classes, the label has {n_classes}"));
                }
                if coef.is_empty() || coef.len() != intercept.len() {
                    return bad(format!(
                        "{} coefficient rows and {} intercepts",
                        coef.len(),
                        intercept.len()
                    ));
                }
                if let Some(row) = coef.iter().find(|r| r.len() != width) {
                    return bad(format!("{} coefficients for {width} features", row.len()));
                }
            }
            Estimator::RandomForestClassifier { n_classes: k, .. }
            | Estimator::Svc { n_classes: k, .. }
                if *k != n_classes =>
            {
                return bad(format!("{k} classes, the label has {n_classes}"));
            }
            Estimator::GaussianNb { model, epsilon } => {
                let (classes, priors) = (model.classes(), model.class_priors());
                let (theta, var) = (model.theta(), model.var());
                if classes.is_empty()
                    || classes.len() != n_classes
                    || classes.iter().any(|c| *c as usize >= n_classes)
                {
                    return bad(format!("classes {classes:?}, the label has {n_classes}"));
                }
                if priors.len() != classes.len()
                    || theta.len() != classes.len()
                    || var.len() != classes.len()
                {
                    return bad(format!(
                        "{} classes with {} priors, {} means and {} variances",
                        classes.len(),
                        priors.len(),
                        theta.len(),
                        var.len()
                    ));
                }
                if let Some(row) = theta.iter().chain(var).find(|r| r.len() != width) {
                    return bad(format!(
                        "{} values per class for {width} features",
                        row.len()
                    ));
                }
                if !epsilon.is_finite() || var.iter().flatten().any(|v| !v.is_finite() || *v < 0.0)
                {
                    return bad("a variance is negative or not a number".into());
                }
            }
            Estimator::KMeans { centroids } => {
                if centroids.is_empty() {
                    return bad("no centroids".into());
                }
                if let Some(c) = centroids.iter().find(|c| c.len() != width) {
                    return bad(format!(
                        "a centroid of {} values for {width} features",
                        c.len()
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn predict_unguarded(&self, x: &Matrix) -> Result<Output, String> {
        let fe = |e: smartcore::error::Failed| e.to_string();
        if x.rows == 0 {
            return Ok(match self {
                Estimator::Linear { .. }
                | Estimator::DecisionTreeRegressor(_)
                | Estimator::RandomForestRegressor { .. }
                | Estimator::KnnRegressor(_) => Output::Values(vec![]),
                _ => Output::Classes(vec![]),
            });
        }
        Ok(match self {
            Estimator::Linear { coef, intercept } => {
                let mut out = vec![*intercept; x.rows];
                for (j, c) in coef.iter().enumerate() {
                    for (o, v) in out.iter_mut().zip(x.column(j)) {
                        *o += c * v;
                    }
                }
                Output::Values(out)
            }
            Estimator::Logistic { .. } => {
                let p = self.predict_proba(x)?;
                Output::Classes(argmax_rows(&p))
            }
            Estimator::DecisionTreeClassifier(m) => Output::Classes(
                m.predict(&x.to_dense().map_err(|e| e.to_string())?)
                    .map_err(fe)?,
            ),
            Estimator::DecisionTreeRegressor(m) => Output::Values(
                m.predict(&x.to_dense().map_err(|e| e.to_string())?)
                    .map_err(fe)?,
            ),
            Estimator::RandomForestClassifier { .. } => {
                let p = self.predict_proba(x)?;
                Output::Classes(argmax_rows(&p))
            }
            Estimator::RandomForestRegressor { forests } => {
                let dense = x.to_dense().map_err(|e| e.to_string())?;
                let total: usize = forests.iter().map(|(n, _)| n).sum::<usize>().max(1);
                let mut out = vec![0.0; x.rows];
                for (n, f) in forests {
                    let w = *n as f64 / total as f64;
                    for (o, v) in out.iter_mut().zip(f.predict(&dense).map_err(fe)?) {
                        *o += w * v;
                    }
                }
                Output::Values(out)
            }
            Estimator::KnnClassifier(m) => Output::Classes(
                m.predict(&x.to_dense().map_err(|e| e.to_string())?)
                    .map_err(fe)?,
            ),
            Estimator::KnnRegressor(m) => Output::Values(
                m.predict(&x.to_dense().map_err(|e| e.to_string())?)
                    .map_err(fe)?,
            ),
            Estimator::GaussianNb { .. } => {
                let p = self.predict_proba(x)?;
                Output::Classes(argmax_rows(&p))
            }
            Estimator::Svc {
                machines,
                kernel,
                n_classes,
            } => {
                let mut out = Vec::with_capacity(x.rows);
                let mut row = Vec::with_capacity(x.cols);
                let mut votes = vec![0u32; *n_classes];
                for i in 0..x.rows {
                    x.row_into(i, &mut row);
                    votes.iter_mut().for_each(|v| *v = 0);
                    for m in machines {
                        votes[m.decide(kernel, &row) as usize] += 1;
                    }
                    out.push(first_max(&votes) as i32);
                }
                Output::Classes(out)
            }
            Estimator::KMeans { centroids } => {
                let d = distances(x, centroids);
                Output::Classes(argmin_rows(&d))
            }
            Estimator::Pca(_) => {
                return Err("PCA does not predict; use transform".into());
            }
        })
    }

    fn predict_proba_unguarded(&self, x: &Matrix) -> Result<Matrix, String> {
        let fe = |e: smartcore::error::Failed| e.to_string();
        match self {
            Estimator::Logistic {
                coef,
                intercept,
                n_classes,
            } => {
                let k = *n_classes;
                let mut out = Matrix::zeros(x.rows, k);
                if coef.len() == 1 {
                    // binary: coef gives the log-odds of the second class
                    let mut z = vec![intercept[0]; x.rows];
                    for (j, c) in coef[0].iter().enumerate() {
                        for (o, v) in z.iter_mut().zip(x.column(j)) {
                            *o += c * v;
                        }
                    }
                    for (i, zi) in z.iter().enumerate() {
                        let p1 = 1.0 / (1.0 + (-zi).exp());
                        out.data[i] = 1.0 - p1;
                        out.data[x.rows + i] = p1;
                    }
                } else {
                    for (c, row) in coef.iter().enumerate() {
                        let col = &mut out.data[c * x.rows..(c + 1) * x.rows];
                        col.iter_mut().for_each(|v| *v = intercept[c]);
                        for (j, w) in row.iter().enumerate() {
                            for (o, v) in col.iter_mut().zip(x.column(j)) {
                                *o += w * v;
                            }
                        }
                    }
                    softmax_rows(&mut out);
                }
                Ok(out)
            }
            Estimator::DecisionTreeClassifier(m) => Ok(dense_to_matrix(
                &m.predict_proba(&x.to_dense().map_err(|e| e.to_string())?)
                    .map_err(fe)?,
            )),
            Estimator::RandomForestClassifier { trees, n_classes } => {
                let dense = x.to_dense().map_err(|e| e.to_string())?;
                let mut out = Matrix::zeros(x.rows, *n_classes);
                for t in trees {
                    let votes = t.predict(&dense).map_err(fe)?;
                    for (i, c) in votes.into_iter().enumerate() {
                        if (c as usize) < *n_classes {
                            out.data[c as usize * x.rows + i] += 1.0;
                        }
                    }
                }
                let n = trees.len().max(1) as f64;
                out.data.iter_mut().for_each(|v| *v /= n);
                Ok(out)
            }
            Estimator::KnnClassifier(m) => {
                let rows = m
                    .predict_proba(&x.to_dense().map_err(|e| e.to_string())?)
                    .map_err(fe)?;
                let k = rows.first().map_or(0, Vec::len);
                let mut out = Matrix::zeros(x.rows, k);
                for (i, r) in rows.iter().enumerate() {
                    for (c, p) in r.iter().enumerate() {
                        out.data[c * x.rows + i] = *p;
                    }
                }
                Ok(out)
            }
            Estimator::GaussianNb { model, epsilon } => {
                // log p(c | x) ∝ log prior_c − ½ Σ_j [ln(2π σ²_cj) + (x_j − μ_cj)² / σ²_cj]
                let (theta, var, priors) = (model.theta(), model.var(), model.class_priors());
                let k = priors.len();
                let mut out = Matrix::zeros(x.rows, k);
                for c in 0..k {
                    let col = &mut out.data[c * x.rows..(c + 1) * x.rows];
                    col.iter_mut().for_each(|v| *v = priors[c].ln());
                    for j in 0..x.cols {
                        let (mu, s2) = (theta[c][j], (var[c][j] + epsilon).max(1e-300));
                        let norm = (2.0 * std::f64::consts::PI * s2).ln();
                        for (o, v) in col.iter_mut().zip(x.column(j)) {
                            *o -= 0.5 * (norm + (v - mu) * (v - mu) / s2);
                        }
                    }
                }
                softmax_rows(&mut out);
                Ok(out)
            }
            _ => Err("this algorithm gives no class probabilities".into()),
        }
    }

    fn transform_unguarded(&self, x: &Matrix) -> Result<Matrix, String> {
        match self {
            Estimator::Pca(m) => Ok(dense_to_matrix(
                &m.transform(&x.to_dense().map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?,
            )),
            Estimator::KMeans { centroids } => {
                let mut d = distances(x, centroids);
                d.data.iter_mut().for_each(|v| *v = v.sqrt());
                Ok(d)
            }
            _ => Err("only pca and kmeans transform data".into()),
        }
    }

    /// Coefficients of linear models (feature order), for `info`.
    pub fn coefficients(&self) -> Option<(Vec<f64>, f64)> {
        match self {
            Estimator::Linear { coef, intercept } => Some((coef.clone(), *intercept)),
            _ => None,
        }
    }
}

/// A linear model from smartcore's coefficient vector and intercept.
fn linear(coefficients: &X, intercept: f64) -> Estimator {
    Estimator::Linear {
        coef: flat(coefficients),
        intercept,
    }
}

fn check_classes(y: &[i32], n_classes: usize, min: usize) -> Result<(), String> {
    let mut seen = vec![false; n_classes];
    for &c in y {
        if let Some(s) = seen.get_mut(c as usize) {
            *s = true;
        }
    }
    let k = seen.iter().filter(|s| **s).count();
    if k < min {
        return Err(format!(
            "the label has {k} distinct value(s) in the training rows; a classifier needs at least {min}"
        ));
    }
    Ok(())
}

fn fit_svc(params: &Params, x: &Matrix, y: &[i32], n_classes: usize) -> Result<Estimator, String> {
    check_classes(y, n_classes, 2)?;
    let gamma = match params.f64("gamma") {
        g if g > 0.0 => g,
        _ => 1.0 / x.cols.max(1) as f64,
    };
    let kernel = match params.str("kernel") {
        "rbf" => SvmKernel::Rbf { gamma },
        "polynomial" => SvmKernel::Polynomial {
            degree: params.f64("degree"),
            gamma,
            coef0: params.f64("coef0"),
        },
        "sigmoid" => SvmKernel::Sigmoid {
            gamma,
            coef0: params.f64("coef0"),
        },
        _ => SvmKernel::Linear,
    };
    let sc_params: SVCParameters<f64, i32, X, Vec<i32>> = SVCParameters::default()
        .with_c(params.f64("c"))
        .with_tol(params.f64("tol"))
        .with_epoch(params.usize("epoch"))
        .with_seed(seed(params))
        .with_kernel(kernel.smartcore());
    let mut machines = Vec::new();
    for a in 0..n_classes as i32 {
        for b in a + 1..n_classes as i32 {
            let idx: Vec<usize> = (0..y.len()).filter(|&i| y[i] == a || y[i] == b).collect();
            if idx.is_empty() || !idx.iter().any(|&i| y[i] == a) || !idx.iter().any(|&i| y[i] == b)
            {
                continue;
            }
            let sub = x.take_rows(&idx).to_dense().map_err(|e| e.to_string())?;
            let sy: Vec<i32> = idx
                .iter()
                .map(|&i| if y[i] == a { -1 } else { 1 })
                .collect();
            let svc = SVC::fit(&sub, &sy, &sc_params).map_err(|e| e.to_string())?;
            let p: SvcParts = parts(&svc)?;
            let (neg, pos) = p.classes.ok_or("SVC learned no classes")?;
            let map = |c: i32| if c < 0 { a } else { b };
            machines.push(BinarySvc {
                negative: map(neg),
                positive: map(pos),
                support: p.instances.unwrap_or_default(),
                w: p.w.unwrap_or_default(),
                b: p.b.unwrap_or_default(),
            });
        }
    }
    Ok(Estimator::Svc {
        machines,
        kernel,
        n_classes,
    })
}

/// Forests are fitted as [`FOREST_CHUNKS`] sub-forests on parallel threads
/// (seeds `seed`, `seed + 1`, …): a fixed split, so the same seed gives the
/// same model on any machine.
pub const FOREST_CHUNKS: usize = 4;

fn forest_chunks<T: Send>(
    params: &Params,
    fit: impl Fn(u64, usize) -> Result<T, String> + Sync,
) -> Result<Vec<T>, String> {
    let total = params.usize("n_trees").max(1);
    let chunks = FOREST_CHUNKS.min(total);
    let seed = params.usize("seed") as u64;
    let sizes: Vec<usize> = (0..chunks)
        .map(|c| total / chunks + usize::from(c < total % chunks))
        .collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(c, &n)| {
                let fit = &fit;
                scope.spawn(move || fit(seed + c as u64, n))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| "a forest thread panicked".to_string())?
            })
            .collect()
    })
}

/// Squared distances from every row to every centroid (rows × k).
fn distances(x: &Matrix, centroids: &[Vec<f64>]) -> Matrix {
    let mut out = Matrix::zeros(x.rows, centroids.len());
    for (c, centre) in centroids.iter().enumerate() {
        let col = &mut out.data[c * x.rows..(c + 1) * x.rows];
        for (j, m) in centre.iter().enumerate().take(x.cols) {
            for (o, v) in col.iter_mut().zip(x.column(j)) {
                *o += (v - m) * (v - m);
            }
        }
    }
    out
}

/// The largest variance of any column (for naive Bayes smoothing).
fn max_variance(x: &Matrix) -> f64 {
    (0..x.cols)
        .map(|j| {
            let c = x.column(j);
            let n = c.len().max(1) as f64;
            let mean = c.iter().sum::<f64>() / n;
            c.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n
        })
        .fold(0.0, f64::max)
}

fn first_max(v: &[u32]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

fn argmax_rows(m: &Matrix) -> Vec<i32> {
    (0..m.rows)
        .map(|i| {
            let mut best = 0;
            for c in 1..m.cols {
                if m.get(i, c) > m.get(i, best) {
                    best = c;
                }
            }
            best as i32
        })
        .collect()
}

fn argmin_rows(m: &Matrix) -> Vec<i32> {
    (0..m.rows)
        .map(|i| {
            let mut best = 0;
            for c in 1..m.cols {
                if m.get(i, c) < m.get(i, best) {
                    best = c;
                }
            }
            best as i32
        })
        .collect()
}

fn softmax_rows(m: &mut Matrix) {
    for i in 0..m.rows {
        let max = (0..m.cols).map(|c| m.get(i, c)).fold(f64::MIN, f64::max);
        let mut sum = 0.0;
        for c in 0..m.cols {
            let e = (m.data[c * m.rows + i] - max).exp();
            m.data[c * m.rows + i] = e;
            sum += e;
        }
        for c in 0..m.cols {
            m.data[c * m.rows + i] /= sum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_the_estimator_is_an_error() {
        let r: Result<(), String> = guarded("predict", || panic!("index out of bounds"));
        let e = r.unwrap_err();
        assert!(
            e.contains("predict failed") && e.contains("index out of bounds"),
            "{e}"
        );
        assert!(!in_guarded_call());
    }
}

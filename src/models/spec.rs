//! What a model is before it is fitted: an algorithm, its hyperparameters
//! (validated against the algorithm's own list) and how features are prepared.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::error::{ModelError, Result};

/// The kind prefix of every model: `smartcore.<algorithm>`.
pub const KIND_PREFIX: &str = "smartcore.";

/// What a model learns to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Regression,
    Classification,
    Clustering,
    Decomposition,
}

impl Task {
    /// Whether fitting needs a label column.
    pub fn supervised(self) -> bool {
        matches!(self, Task::Regression | Task::Classification)
    }
}

/// The algorithms omegastore fits with smartcore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    LinearRegression,
    RidgeRegression,
    Lasso,
    ElasticNet,
    LogisticRegression,
    DecisionTreeClassifier,
    DecisionTreeRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
    KnnClassifier,
    KnnRegressor,
    GaussianNb,
    Svc,
    KMeans,
    Pca,
}

/// The type a hyperparameter takes.
#[derive(Debug, Clone, Copy)]
pub enum ParamType {
    /// A float at least `min`.
    Float {
        min: f64,
    },
    /// An integer at least `min`.
    Int {
        min: i64,
    },
    /// An integer at least `min`, or null for "no limit"/"chosen for you".
    OptInt {
        min: i64,
    },
    Bool,
    /// One of the given strings.
    Choice(&'static [&'static str]),
    /// null, or a list of floats (class priors).
    OptFloats,
}

/// One hyperparameter of an algorithm.
#[derive(Debug, Clone, Copy)]
pub struct ParamDef {
    pub name: &'static str,
    pub ty: ParamType,
    /// The default, as JSON text.
    pub default: &'static str,
    pub doc: &'static str,
}

const fn p(
    name: &'static str,
    ty: ParamType,
    default: &'static str,
    doc: &'static str,
) -> ParamDef {
    ParamDef {
        name,
        ty,
        default,
        doc,
    }
}

const SEED: ParamDef = p(
    "seed",
    ParamType::OptInt { min: 0 },
    "null",
    "random seed; the same seed gives the same model",
);
const MAX_DEPTH: ParamDef = p(
    "max_depth",
    ParamType::OptInt { min: 1 },
    "null",
    "maximum tree depth (null: unlimited)",
);
const MIN_LEAF: ParamDef = p(
    "min_samples_leaf",
    ParamType::Int { min: 1 },
    "1",
    "minimum rows in a leaf",
);
const MIN_SPLIT: ParamDef = p(
    "min_samples_split",
    ParamType::Int { min: 2 },
    "2",
    "minimum rows to split a node",
);
const CRITERION: ParamDef = p(
    "criterion",
    ParamType::Choice(&["gini", "entropy", "classification_error"]),
    "\"gini\"",
    "split criterion",
);
const N_TREES: ParamDef = p(
    "n_trees",
    ParamType::Int { min: 1 },
    "100",
    "number of trees",
);
const M: ParamDef = p(
    "m",
    ParamType::OptInt { min: 1 },
    "null",
    "features tried per split (null: sqrt for classifiers, a third for regressors)",
);
const FOREST_SEED: ParamDef = p(
    "seed",
    ParamType::Int { min: 0 },
    "0",
    "random seed; the same seed gives the same forest",
);
const ALPHA: ParamDef = p(
    "alpha",
    ParamType::Float { min: 0.0 },
    "1.0",
    "regularization strength",
);
const NORMALIZE: ParamDef = p(
    "normalize",
    ParamType::Bool,
    "true",
    "standardize features before fitting",
);
const TOL: ParamDef = p(
    "tol",
    ParamType::Float { min: 0.0 },
    "0.0001",
    "convergence tolerance",
);
const MAX_ITER: ParamDef = p(
    "max_iter",
    ParamType::Int { min: 1 },
    "1000",
    "maximum iterations",
);
const K_NEIGHBOURS: ParamDef = p("k", ParamType::Int { min: 1 }, "3", "number of neighbours");
const WEIGHT: ParamDef = p(
    "weight",
    ParamType::Choice(&["uniform", "distance"]),
    "\"uniform\"",
    "how neighbours are weighted",
);
const KNN_ALGO: ParamDef = p(
    "algorithm",
    ParamType::Choice(&["cover_tree", "linear_search"]),
    "\"cover_tree\"",
    "neighbour search",
);

impl Algorithm {
    pub const ALL: [Algorithm; 15] = [
        Algorithm::LinearRegression,
        Algorithm::RidgeRegression,
        Algorithm::Lasso,
        Algorithm::ElasticNet,
        Algorithm::LogisticRegression,
        Algorithm::DecisionTreeClassifier,
        Algorithm::DecisionTreeRegressor,
        Algorithm::RandomForestClassifier,
        Algorithm::RandomForestRegressor,
        Algorithm::KnnClassifier,
        Algorithm::KnnRegressor,
        Algorithm::GaussianNb,
        Algorithm::Svc,
        Algorithm::KMeans,
        Algorithm::Pca,
    ];

    /// The snake_case name used in specs, kinds and SQL.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::LinearRegression => "linear_regression",
            Algorithm::RidgeRegression => "ridge_regression",
            Algorithm::Lasso => "lasso",
            Algorithm::ElasticNet => "elastic_net",
            Algorithm::LogisticRegression => "logistic_regression",
            Algorithm::DecisionTreeClassifier => "decision_tree_classifier",
            Algorithm::DecisionTreeRegressor => "decision_tree_regressor",
            Algorithm::RandomForestClassifier => "random_forest_classifier",
            Algorithm::RandomForestRegressor => "random_forest_regressor",
            Algorithm::KnnClassifier => "knn_classifier",
            Algorithm::KnnRegressor => "knn_regressor",
            Algorithm::GaussianNb => "gaussian_nb",
            Algorithm::Svc => "svc",
            Algorithm::KMeans => "kmeans",
            Algorithm::Pca => "pca",
        }
    }

    /// Parses a name; a few common aliases are accepted (`ridge`, `lasso_regression`,
    /// `k_means`, `kneighbors_classifier`, `gaussian_naive_bayes`, `svm`).
    pub fn parse(name: &str) -> Result<Self> {
        let n = name.trim().to_ascii_lowercase().replace('-', "_");
        let n = n.strip_prefix(KIND_PREFIX).unwrap_or(&n);
        let alias = match n {
            "ridge" => "ridge_regression",
            "lasso_regression" => "lasso",
            "elasticnet" => "elastic_net",
            "k_means" => "kmeans",
            "kneighbors_classifier" | "k_nearest_neighbors_classifier" => "knn_classifier",
            "kneighbors_regressor" | "k_nearest_neighbors_regressor" => "knn_regressor",
            "gaussian_naive_bayes" | "naive_bayes" => "gaussian_nb",
            "svm" | "support_vector_classifier" => "svc",
            other => other,
        };
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == alias)
            .ok_or_else(|| ModelError::UnknownAlgorithm {
                given: name.to_string(),
                known: Algorithm::ALL
                    .iter()
                    .map(|a| a.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The store kind of models of this algorithm.
    pub fn kind(self) -> String {
        format!("{KIND_PREFIX}{}", self.name())
    }

    pub fn task(self) -> Task {
        use Algorithm::*;
        match self {
            LinearRegression
            | RidgeRegression
            | Lasso
            | ElasticNet
            | DecisionTreeRegressor
            | RandomForestRegressor
            | KnnRegressor => Task::Regression,
            LogisticRegression
            | DecisionTreeClassifier
            | RandomForestClassifier
            | KnnClassifier
            | GaussianNb
            | Svc => Task::Classification,
            KMeans => Task::Clustering,
            Pca => Task::Decomposition,
        }
    }

    /// Whether `predict_proba` gives class probabilities.
    pub fn has_proba(self) -> bool {
        use Algorithm::*;
        matches!(
            self,
            LogisticRegression
                | DecisionTreeClassifier
                | RandomForestClassifier
                | KnnClassifier
                | GaussianNb
        )
    }

    /// The hyperparameters this algorithm takes, named as smartcore's fields.
    pub fn params(self) -> &'static [ParamDef] {
        use Algorithm::*;
        match self {
            LinearRegression => {
                const {
                    &[p(
                        "solver",
                        ParamType::Choice(&["svd", "qr", "cholesky"]),
                        "\"svd\"",
                        "least squares: smartcore's svd or qr, or omegastore's cholesky (normal equations; fastest)",
                    )]
                }
            }
            RidgeRegression => {
                const {
                    &[
                        ALPHA,
                        NORMALIZE,
                        p(
                            "solver",
                            ParamType::Choice(&["cholesky", "svd"]),
                            "\"cholesky\"",
                            "solver",
                        ),
                    ]
                }
            }
            Lasso => const { &[ALPHA, NORMALIZE, TOL, MAX_ITER] },
            ElasticNet => {
                const {
                    &[
                        ALPHA,
                        p(
                            "l1_ratio",
                            ParamType::Float { min: 0.0 },
                            "0.5",
                            "mix of L1 (1.0) and L2 (0.0) penalties",
                        ),
                        NORMALIZE,
                        TOL,
                        MAX_ITER,
                    ]
                }
            }
            LogisticRegression => {
                const {
                    &[
                        p(
                            "alpha",
                            ParamType::Float { min: 0.0 },
                            "0.0",
                            "L2 regularization strength",
                        ),
                        p(
                            "solver",
                            ParamType::Choice(&["lbfgs", "newton"]),
                            "\"lbfgs\"",
                            "smartcore's lbfgs, or omegastore's newton (two classes; fastest)",
                        ),
                    ]
                }
            }
            DecisionTreeClassifier => const { &[CRITERION, MAX_DEPTH, MIN_LEAF, MIN_SPLIT, SEED] },
            DecisionTreeRegressor => const { &[MAX_DEPTH, MIN_LEAF, MIN_SPLIT, SEED] },
            RandomForestClassifier => {
                const {
                    &[
                        CRITERION,
                        N_TREES,
                        MAX_DEPTH,
                        MIN_LEAF,
                        MIN_SPLIT,
                        M,
                        FOREST_SEED,
                    ]
                }
            }
            RandomForestRegressor => {
                const { &[N_TREES, MAX_DEPTH, MIN_LEAF, MIN_SPLIT, M, FOREST_SEED] }
            }
            KnnClassifier | KnnRegressor => const { &[K_NEIGHBOURS, WEIGHT, KNN_ALGO] },
            GaussianNb => {
                const {
                    &[p(
                        "priors",
                        ParamType::OptFloats,
                        "null",
                        "class prior probabilities, in class order (null: from the data)",
                    )]
                }
            }
            Svc => {
                const {
                    &[
                        p(
                            "c",
                            ParamType::Float { min: 0.0 },
                            "1.0",
                            "regularization (C)",
                        ),
                        p(
                            "kernel",
                            ParamType::Choice(&["linear", "rbf", "polynomial", "sigmoid"]),
                            "\"linear\"",
                            "kernel function",
                        ),
                        p(
                            "gamma",
                            ParamType::Float { min: 0.0 },
                            "0.0",
                            "kernel coefficient for rbf/polynomial/sigmoid (0: 1 / number of features)",
                        ),
                        p(
                            "degree",
                            ParamType::Float { min: 1.0 },
                            "3.0",
                            "polynomial degree",
                        ),
                        p(
                            "coef0",
                            ParamType::Float { min: f64::MIN },
                            "0.0",
                            "independent term of polynomial/sigmoid",
                        ),
                        p(
                            "epoch",
                            ParamType::Int { min: 1 },
                            "2",
                            "passes over the data",
                        ),
                        p(
                            "tol",
                            ParamType::Float { min: 0.0 },
                            "0.001",
                            "convergence tolerance",
                        ),
                        SEED,
                    ]
                }
            }
            KMeans => {
                const {
                    &[
                        p("k", ParamType::Int { min: 2 }, "2", "number of clusters"),
                        p(
                            "max_iter",
                            ParamType::Int { min: 1 },
                            "100",
                            "maximum iterations",
                        ),
                        SEED,
                    ]
                }
            }
            Pca => {
                const {
                    &[
                        p(
                            "n_components",
                            ParamType::Int { min: 1 },
                            "2",
                            "components to keep",
                        ),
                        p(
                            "use_correlation_matrix",
                            ParamType::Bool,
                            "false",
                            "use the correlation instead of the covariance matrix",
                        ),
                    ]
                }
            }
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How string and dictionary columns become numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CategoricalEncoding {
    /// One 0/1 column per category seen at fit; an unseen category is all zeros.
    #[default]
    OneHot,
    /// One column: the category's index in sorted order; an unseen category is -1.
    Ordinal,
}

/// What to do with nulls in feature columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NullStrategy {
    /// Refuse data with nulls, naming the column.
    #[default]
    Error,
    /// Numeric nulls become the column's mean at fit; categorical nulls are
    /// treated as an unseen category.
    Mean,
    /// As `mean`, with the median.
    Median,
    /// Numeric nulls become 0.
    Zero,
}

/// How features are prepared; stored with the model so predict prepares alike.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    #[serde(default)]
    pub categorical: CategoricalEncoding,
    #[serde(default)]
    pub nulls: NullStrategy,
}

/// A model before fitting: `{"algorithm": "random_forest_classifier",
/// "params": {"n_trees": 50}, "preprocessing": {"categorical": "one_hot"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub algorithm: String,
    /// Hyperparameters given by the user (defaults are filled in at fit).
    #[serde(default)]
    pub params: Map<String, Value>,
    #[serde(default)]
    pub preprocessing: Preprocessing,
}

impl ModelSpec {
    /// A validated spec.
    pub fn new(algorithm: &str, params: Map<String, Value>) -> Result<Self> {
        let algo = Algorithm::parse(algorithm)?;
        let spec = ModelSpec {
            algorithm: algo.name().to_string(),
            params,
            preprocessing: Preprocessing::default(),
        };
        spec.resolved()?;
        Ok(spec)
    }

    pub fn with_preprocessing(mut self, pre: Preprocessing) -> Self {
        self.preprocessing = pre;
        self
    }

    pub fn algorithm(&self) -> Result<Algorithm> {
        Algorithm::parse(&self.algorithm)
    }

    /// Every hyperparameter, with defaults filled in; unknown names and
    /// wrong types are errors naming the parameter and what it takes.
    pub fn resolved(&self) -> Result<Params> {
        let algo = self.algorithm()?;
        resolve(algo, &self.params)
    }
}

/// Checks `given` against the algorithm's parameters and fills in defaults.
pub fn resolve(algo: Algorithm, given: &Map<String, Value>) -> Result<Params> {
    let defs = algo.params();
    for key in given.keys() {
        if !defs.iter().any(|d| d.name == key) {
            return Err(ModelError::UnknownParameter {
                algorithm: algo.name().into(),
                param: key.clone(),
                known: known_params(algo),
            });
        }
    }
    let mut values = BTreeMap::new();
    for def in defs {
        let v = match given.get(def.name) {
            Some(v) => check_value(algo, def, v)?,
            None => serde_json::from_str(def.default).expect("static default is JSON"),
        };
        values.insert(def.name.to_string(), v);
    }
    Ok(Params {
        algorithm: algo,
        values,
    })
}

fn known_params(algo: Algorithm) -> String {
    let names: Vec<_> = algo.params().iter().map(|d| d.name).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn check_value(algo: Algorithm, def: &ParamDef, v: &Value) -> Result<Value> {
    let bad = |expected: String| ModelError::InvalidParameter {
        algorithm: algo.name().into(),
        param: def.name.into(),
        reason: format!("expected {expected}, got {v}"),
    };
    match def.ty {
        ParamType::Float { min } => match v.as_f64() {
            Some(f) if f.is_finite() && f >= min => Ok(json!(f)),
            _ if min == f64::MIN => Err(bad("a number".into())),
            _ => Err(bad(format!("a number >= {min}"))),
        },
        ParamType::Int { min } => match int_of(v) {
            Some(i) if i >= min && i <= u16::MAX as i64 * 1024 => Ok(json!(i)),
            _ => Err(bad(format!("an integer >= {min}"))),
        },
        ParamType::OptInt { min } => match v {
            Value::Null => Ok(Value::Null),
            _ => match int_of(v) {
                Some(i) if i >= min => Ok(json!(i)),
                _ => Err(bad(format!("null or an integer >= {min}"))),
            },
        },
        ParamType::Bool => match v {
            Value::Bool(_) => Ok(v.clone()),
            Value::String(s) if s == "true" || s == "false" => Ok(json!(s == "true")),
            _ => Err(bad("true or false".into())),
        },
        ParamType::Choice(options) => match v.as_str() {
            Some(s) if options.contains(&s.to_ascii_lowercase().as_str()) => {
                Ok(json!(s.to_ascii_lowercase()))
            }
            _ => Err(bad(format!("one of {}", options.join(", ")))),
        },
        ParamType::OptFloats => match v {
            Value::Null => Ok(Value::Null),
            Value::Array(items) if items.iter().all(|i| i.as_f64().is_some_and(|f| f >= 0.0)) => {
                Ok(v.clone())
            }
            _ => Err(bad("null or a list of probabilities".into())),
        },
    }
}

/// Integers also arrive as whole floats (`3.0`) or digit strings from SQL/CLI.
fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Resolved hyperparameters: every parameter of the algorithm, typed access.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub algorithm: Algorithm,
    pub values: BTreeMap<String, Value>,
}

impl Params {
    pub fn f64(&self, name: &str) -> f64 {
        self.values.get(name).and_then(Value::as_f64).unwrap_or(0.0)
    }
    pub fn usize(&self, name: &str) -> usize {
        self.values.get(name).and_then(int_of).unwrap_or(0).max(0) as usize
    }
    pub fn opt_usize(&self, name: &str) -> Option<usize> {
        self.values
            .get(name)
            .and_then(int_of)
            .map(|i| i.max(0) as usize)
    }
    pub fn bool(&self, name: &str) -> bool {
        self.values
            .get(name)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
    pub fn str(&self, name: &str) -> &str {
        self.values.get(name).and_then(Value::as_str).unwrap_or("")
    }
    pub fn floats(&self, name: &str) -> Option<Vec<f64>> {
        self.values
            .get(name)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
    }
    /// The values as a JSON object (for metadata and result tables).
    pub fn to_json(&self) -> Map<String, Value> {
        self.values
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_parses_by_name_and_kind() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::parse(a.name()).unwrap(), a);
            assert_eq!(Algorithm::parse(&a.kind()).unwrap(), a);
            // defaults validate
            resolve(a, &Map::new()).unwrap();
        }
        assert_eq!(
            Algorithm::parse("Ridge").unwrap(),
            Algorithm::RidgeRegression
        );
    }

    #[test]
    fn unknown_algorithm_and_parameters_are_named() {
        let e = Algorithm::parse("gradient_boosting")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("gradient_boosting") && e.contains("random_forest_classifier"),
            "{e}"
        );
        let params = json!({"n_tree": 5}).as_object().cloned().unwrap();
        let e = ModelSpec::new("random_forest_classifier", params)
            .unwrap_err()
            .to_string();
        assert!(e.contains("n_tree") && e.contains("n_trees"), "{e}");
        let params = json!({"max_depth": "deep"}).as_object().cloned().unwrap();
        let e = ModelSpec::new("decision_tree_classifier", params)
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_depth") && e.contains("integer"), "{e}");
        let params = json!({"kernel": "cubic"}).as_object().cloned().unwrap();
        let e = ModelSpec::new("svc", params).unwrap_err().to_string();
        assert!(e.contains("rbf"), "{e}");
    }

    #[test]
    fn defaults_are_filled_and_given_values_kept() {
        let params = json!({"n_trees": 7}).as_object().cloned().unwrap();
        let r = ModelSpec::new("random_forest_regressor", params)
            .unwrap()
            .resolved()
            .unwrap();
        assert_eq!(r.usize("n_trees"), 7);
        assert_eq!(r.opt_usize("max_depth"), None);
        assert_eq!(r.usize("min_samples_split"), 2);
    }
}

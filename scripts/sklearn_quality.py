"""scikit-learn's side of `cargo run --example model_quality`.

Reads DIR/cases.json and the DIR/<dataset>_{train,test}.csv files the Rust
example wrote, fits the scikit-learn estimator matching each omegastore
algorithm (same hyperparameters where both have them), and prints a JSON
list of {value, fit_seconds, sklearn_version} in case order.

Matching choices: smartcore's ridge/lasso/elastic net standardize features
(normalize = true), so scikit-learn's get a StandardScaler; string columns
are one-hot encoded over sorted categories and booleans become 0/1, as
omegastore does; logistic regression is unpenalized (alpha = 0).
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor


def estimator(algorithm, p):
    scaled = lambda est: make_pipeline(StandardScaler(), est)
    return {
        "linear_regression": lambda: LinearRegression(),
        "ridge_regression": lambda: scaled(Ridge(alpha=p.get("alpha", 1.0))),
        "lasso": lambda: scaled(Lasso(alpha=p.get("alpha", 1.0))),
        "elastic_net": lambda: scaled(ElasticNet(alpha=p.get("alpha", 1.0), l1_ratio=p.get("l1_ratio", 0.5))),
        "logistic_regression": lambda: LogisticRegression(penalty=None, max_iter=1000),
        "decision_tree_classifier": lambda: DecisionTreeClassifier(max_depth=p.get("max_depth"), random_state=p.get("seed")),
        "decision_tree_regressor": lambda: DecisionTreeRegressor(max_depth=p.get("max_depth"), random_state=p.get("seed")),
        "random_forest_classifier": lambda: RandomForestClassifier(n_estimators=p.get("n_trees", 100), random_state=p.get("seed"), n_jobs=1),
        "random_forest_regressor": lambda: RandomForestRegressor(n_estimators=p.get("n_trees", 100), random_state=p.get("seed"), max_features=1 / 3, n_jobs=1),
        "knn_classifier": lambda: KNeighborsClassifier(n_neighbors=p.get("k", 3)),
        "knn_regressor": lambda: KNeighborsRegressor(n_neighbors=p.get("k", 3)),
        "gaussian_nb": lambda: GaussianNB(),
        "svc": lambda: SVC(kernel=p.get("kernel", "linear"), C=p.get("c", 1.0)),
        "kmeans": lambda: KMeans(n_clusters=p.get("k", 2), random_state=p.get("seed"), n_init=1),
        "pca": lambda: PCA(n_components=p.get("n_components", 2)),
    }[algorithm]()


def features(df, cols):
    x = df[cols].copy()
    for c in cols:
        if pd.api.types.is_bool_dtype(x[c]):
            x[c] = x[c].astype(float)
    strings = [c for c in cols if not pd.api.types.is_numeric_dtype(x[c])]
    return pd.get_dummies(x, columns=strings, dtype=float) if strings else x.astype(float)


def main(d):
    d = Path(d)
    out = []
    for case in json.loads((d / "cases.json").read_text()):
        train = pd.read_csv(d / f"{case['dataset']}_train.csv")
        test = pd.read_csv(d / f"{case['dataset']}_test.csv")
        xtr, xte = features(train, case["features"]), features(test, case["features"])
        xte = xte.reindex(columns=xtr.columns, fill_value=0.0)
        est = estimator(case["algorithm"], case["params"])
        label = case["label"]
        start = time.perf_counter()
        if label:
            est.fit(xtr.values, train[label].values)
        else:
            est.fit(xtr.values)
        fit = time.perf_counter() - start
        metric = case["metric"]
        if metric == "r2":
            value = r2_score(test[label].values, est.predict(xte.values))
        elif metric == "accuracy":
            value = accuracy_score(test[label].values, est.predict(xte.values))
        elif metric == "inertia":
            value = -est.score(xte.values)
        else:  # explained variance of the test rows
            t = est.transform(xte.values)
            value = float(t.var(axis=0).sum() / xte.values.var(axis=0).sum())
        out.append({"value": float(value), "fit_seconds": fit, "sklearn_version": sklearn.__version__})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])

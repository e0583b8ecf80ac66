//! Scores of predictions against known labels: R², MAE, MSE, RMSE for
//! regressors; accuracy, precision, recall, F1 (binary: of the second class;
//! more classes: macro-averaged) and log loss for classifiers; inertia for
//! k-means. The first metric of each list is what a search maximises.

use super::features::Matrix;

/// Named scores, in a stable order.
pub type Metrics = Vec<(String, f64)>;

pub fn regression(y: &[f64], pred: &[f64]) -> Metrics {
    let n = y.len().max(1) as f64;
    let mean = y.iter().sum::<f64>() / n;
    let ss_tot: f64 = y.iter().map(|v| (v - mean) * (v - mean)).sum();
    let ss_res: f64 = y.iter().zip(pred).map(|(a, b)| (a - b) * (a - b)).sum();
    let mae = y.iter().zip(pred).map(|(a, b)| (a - b).abs()).sum::<f64>() / n;
    let mse = ss_res / n;
    let r2 = if ss_tot > 0.0 {
        1.0 - ss_res / ss_tot
    } else if ss_res == 0.0 {
        1.0
    } else {
        0.0
    };
    vec![
        ("r2".into(), r2),
        ("mae".into(), mae),
        ("mse".into(), mse),
        ("rmse".into(), mse.sqrt()),
    ]
}

/// `y` and `pred` are class indices; `proba` (rows × classes) adds log loss.
pub fn classification(
    y: &[i32],
    pred: &[i32],
    n_classes: usize,
    proba: Option<&Matrix>,
) -> Metrics {
    let n = y.len();
    let correct = y.iter().zip(pred).filter(|(a, b)| a == b).count();
    let accuracy = if n == 0 {
        0.0
    } else {
        correct as f64 / n as f64
    };
    let k = n_classes.max(2);
    let (mut tp, mut fp, mut fn_) = (vec![0usize; k], vec![0usize; k], vec![0usize; k]);
    for (&a, &b) in y.iter().zip(pred) {
        if a == b {
            if let Some(t) = tp.get_mut(a as usize) {
                *t += 1;
            }
        } else {
            if let Some(f) = fp.get_mut(b as usize) {
                *f += 1;
            }
            if let Some(f) = fn_.get_mut(a as usize) {
                *f += 1;
            }
        }
    }
    let ratio = |a: usize, b: usize| {
        if a + b == 0 {
            0.0
        } else {
            a as f64 / (a + b) as f64
        }
    };
    let per_class: Vec<(f64, f64)> = (0..k)
        .map(|c| (ratio(tp[c], fp[c]), ratio(tp[c], fn_[c])))
        .collect();
    let f1 = |(p, r): (f64, f64)| {
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    };
    let (precision, recall, f1_score) = if n_classes == 2 {
        let pr = per_class[1];
        (pr.0, pr.1, f1(pr))
    } else {
        let kf = k as f64;
        (
            per_class.iter().map(|x| x.0).sum::<f64>() / kf,
            per_class.iter().map(|x| x.1).sum::<f64>() / kf,
            per_class.iter().map(|&x| f1(x)).sum::<f64>() / kf,
        )
    };
    let mut out = vec![
        ("accuracy".into(), accuracy),
        ("precision".into(), precision),
        ("recall".into(), recall),
        ("f1".into(), f1_score),
    ];
    if let Some(p) = proba {
        let eps = 1e-15;
        let mut loss = 0.0;
        for (i, &c) in y.iter().enumerate() {
            let pc = if c >= 0 && (c as usize) < p.cols {
                p.get(i, c as usize)
            } else {
                0.0
            };
            loss -= pc.clamp(eps, 1.0 - eps).ln();
        }
        out.push((
            "log_loss".into(),
            if n == 0 { 0.0 } else { loss / n as f64 },
        ));
    }
    out
}

/// Sum of squared distances of rows to their assigned centroid.
pub fn inertia(distances_sq: &Matrix, assigned: &[i32]) -> Metrics {
    let total: f64 = assigned
        .iter()
        .enumerate()
        .map(|(i, &c)| distances_sq.get(i, c as usize))
        .sum();
    vec![("inertia".into(), total)]
}

/// The metric a search maximises, as a value where higher is better.
pub fn primary(metrics: &Metrics) -> f64 {
    match metrics.first() {
        Some((name, v)) if name == "inertia" => -v,
        Some((_, v)) => *v,
        None => f64::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(m: &Metrics, k: &str) -> f64 {
        m.iter().find(|(n, _)| n == k).unwrap().1
    }

    #[test]
    fn regression_metrics_match_hand_computation() {
        let m = regression(&[1.0, 2.0, 3.0], &[1.0, 2.0, 4.0]);
        assert!((get(&m, "mae") - 1.0 / 3.0).abs() < 1e-12);
        assert!((get(&m, "mse") - 1.0 / 3.0).abs() < 1e-12);
        assert!((get(&m, "r2") - 0.5).abs() < 1e-12);
    }

    #[test]
    fn binary_classification_metrics() {
        // tp=1 (idx 0), fn=1 (idx 1), fp=1 (idx 2), tn=1 (idx 3)
        let m = classification(&[1, 1, 0, 0], &[1, 0, 1, 0], 2, None);
        assert_eq!(get(&m, "accuracy"), 0.5);
        assert_eq!(get(&m, "precision"), 0.5);
        assert_eq!(get(&m, "recall"), 0.5);
        assert_eq!(get(&m, "f1"), 0.5);
        let mut p = Matrix::zeros(2, 2);
        p.data = vec![0.5, 0.5, 0.5, 0.5]; // column-major, 2 rows
        let m = classification(&[0, 1], &[0, 1], 2, Some(&p));
        assert!((get(&m, "log_loss") - 2f64.ln()).abs() < 1e-12);
    }
}

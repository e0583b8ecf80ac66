//! omegastore's own solvers for the two estimators whose smartcore fits are
//! slow on many rows (see BENCHMARKS.md): they compute the same estimates —
//! least squares, and the (L2-penalised) maximum-likelihood logistic model
//! smartcore's objective defines — in a few vectorized passes over the
//! column-major feature matrix. Chosen with `solver = "cholesky"` (linear)
//! and `solver = "newton"` (binary logistic); smartcore's solvers stay the
//! defaults.

use super::features::Matrix;

/// Solves `a x = b` for a symmetric positive definite `a` (n×n, row-major)
/// by Cholesky; `None` when `a` is singular (collinear features).
fn cholesky_solve(mut a: Vec<f64>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    let scale = (0..n)
        .map(|i| a[i * n + i].abs())
        .fold(0.0, f64::max)
        .max(1e-300);
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        if d <= 1e-12 * scale {
            return None;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
    }
    // L y = b, then Lᵀ x = y
    for i in 0..n {
        for k in 0..i {
            b[i] -= a[i * n + k] * b[k];
        }
        b[i] /= a[i * n + i];
    }
    for i in (0..n).rev() {
        for k in i + 1..n {
            b[i] -= a[k * n + i] * b[k];
        }
        b[i] /= a[i * n + i];
    }
    Some(b)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Ordinary least squares on centered columns (normal equations, Cholesky):
/// `(coefficients, intercept)`, or `None` when the features are collinear.
pub fn least_squares(x: &Matrix, y: &[f64]) -> Option<(Vec<f64>, f64)> {
    let (n, p) = (x.rows, x.cols);
    if n == 0 {
        return None;
    }
    let mean = |c: &[f64]| c.iter().sum::<f64>() / n as f64;
    let my = mean(y);
    let means: Vec<f64> = (0..p).map(|j| mean(x.column(j))).collect();
    let centered: Vec<Vec<f64>> = (0..p)
        .map(|j| x.column(j).iter().map(|v| v - means[j]).collect())
        .collect();
    let yc: Vec<f64> = y.iter().map(|v| v - my).collect();
    let mut a = vec![0.0; p * p];
    for j in 0..p {
        for k in j..p {
            let v = dot(&centered[j], &centered[k]);
            a[j * p + k] = v;
            a[k * p + j] = v;
        }
    }
    let b: Vec<f64> = (0..p).map(|j| dot(&centered[j], &yc)).collect();
    let coef = cholesky_solve(a, b)?;
    let intercept = my - dot(&coef, &means);
    Some((coef, intercept))
}

/// Binary logistic regression by Newton's method (IRLS) with smartcore's
/// objective: log-loss + ½·alpha·‖w‖² (intercept not penalised). `y` holds
/// class indices 0/1. Returns `(w, b)` of the log-odds of class 1, or
/// `None` when the Hessian is singular.
pub fn logistic_newton(x: &Matrix, y: &[i32], alpha: f64) -> Option<(Vec<f64>, f64)> {
    let (n, p) = (x.rows, x.cols);
    let m = p + 1; // the intercept is the last parameter
    let mut w = vec![0.0; m];
    let yf: Vec<f64> = y.iter().map(|&c| if c == 1 { 1.0 } else { 0.0 }).collect();
    let mut z = vec![0.0; n];
    let loss = |w: &[f64], z: &mut Vec<f64>| -> f64 {
        z.iter_mut().for_each(|v| *v = w[p]);
        for (j, wj) in w[..p].iter().enumerate() {
            for (zi, xi) in z.iter_mut().zip(x.column(j)) {
                *zi += wj * xi;
            }
        }
        // log(1 + e^z) − y z, computed stably
        let l: f64 = z
            .iter()
            .zip(&yf)
            .map(|(&zi, &yi)| {
                let softplus = if zi > 0.0 {
                    zi + (-zi).exp().ln_1p()
                } else {
                    zi.exp().ln_1p()
                };
                softplus - yi * zi
            })
            .sum();
        l + 0.5 * alpha * w[..p].iter().map(|v| v * v).sum::<f64>()
    };
    let mut current = loss(&w, &mut z);
    let mut s = vec![0.0; n];
    let mut r = vec![0.0; n];
    for _ in 0..100 {
        for i in 0..n {
            let pi = 1.0 / (1.0 + (-z[i]).exp());
            r[i] = pi - yf[i];
            s[i] = pi * (1.0 - pi);
        }
        let mut g = vec![0.0; m];
        let mut h = vec![0.0; m * m];
        let ones = |v: &[f64]| v.iter().sum::<f64>();
        for j in 0..p {
            let cj = x.column(j);
            g[j] = dot(&r, cj) + alpha * w[j];
            let sx: Vec<f64> = s.iter().zip(cj).map(|(a, b)| a * b).collect();
            for k in j..p {
                let v = dot(&sx, x.column(k)) + if j == k { alpha } else { 0.0 };
                h[j * m + k] = v;
                h[k * m + j] = v;
            }
            let v = ones(&sx);
            h[j * m + p] = v;
            h[p * m + j] = v;
        }
        g[p] = ones(&r);
        // a tiny ridge keeps separable data from a singular Hessian
        let total = ones(&s);
        h[p * m + p] = total;
        for j in 0..m {
            h[j * m + j] += 1e-10 * (1.0 + total);
        }
        let step = cholesky_solve(h, g.clone())?;
        // backtracking: take the largest step (1, ½, ¼, …) that lowers the loss
        let mut t = 1.0;
        let mut accepted = false;
        for _ in 0..30 {
            let trial: Vec<f64> = w.iter().zip(&step).map(|(a, d)| a - t * d).collect();
            let l = loss(&trial, &mut z);
            if l <= current {
                let moved = step.iter().map(|d| (t * d).abs()).fold(0.0, f64::max);
                w = trial;
                let improved = current - l;
                current = l;
                accepted = true;
                if moved < 1e-9 || improved <= 1e-12 * current.abs().max(1.0) {
                    let b = w[p];
                    w.truncate(p);
                    return Some((w, b));
                }
                break;
            }
            t *= 0.5;
        }
        if !accepted {
            break;
        }
    }
    // z holds the last trial's values; recompute for the accepted w is not needed
    let b = w[p];
    w.truncate(p);
    Some((w, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(cols: &[Vec<f64>]) -> Matrix {
        Matrix {
            rows: cols[0].len(),
            cols: cols.len(),
            data: cols.concat(),
        }
    }

    #[test]
    fn least_squares_recovers_exact_coefficients() {
        let x1: Vec<f64> = (0..50).map(|i| i as f64).collect();
        let x2: Vec<f64> = (0..50).map(|i| ((i * 7) % 11) as f64).collect();
        let y: Vec<f64> = (0..50).map(|i| 2.0 + 3.0 * x1[i] - 0.5 * x2[i]).collect();
        let (c, b) = least_squares(&matrix(&[x1.clone(), x2]), &y).unwrap();
        assert!((c[0] - 3.0).abs() < 1e-9 && (c[1] + 0.5).abs() < 1e-9 && (b - 2.0).abs() < 1e-9);
        // collinear columns are refused (the caller falls back to SVD)
        assert!(least_squares(&matrix(&[x1.clone(), x1]), &y).is_none());
    }

    #[test]
    fn newton_finds_the_maximum_likelihood_fit() {
        // overlapping classes along x: P(y=1) rises with x
        let xs: Vec<f64> = (0..200).map(|i| (i as f64 - 100.0) / 20.0).collect();
        let y: Vec<i32> = xs
            .iter()
            .enumerate()
            .map(|(i, &x)| ((x + (i % 7) as f64 - 3.0) > 0.0) as i32)
            .collect();
        let (w, b) = logistic_newton(&matrix(std::slice::from_ref(&xs)), &y, 0.0).unwrap();
        assert!(w[0] > 0.5, "{w:?}");
        // at the optimum the gradient vanishes: Σ (p − y) = 0 and Σ (p − y) x = 0
        let (mut g0, mut g1) = (0.0, 0.0);
        for (x, yi) in xs.iter().zip(&y) {
            let p = 1.0 / (1.0 + (-(b + w[0] * x)).exp());
            g0 += p - *yi as f64;
            g1 += (p - *yi as f64) * x;
        }
        assert!(g0.abs() < 1e-6 && g1.abs() < 1e-6, "{g0} {g1}");
    }
}

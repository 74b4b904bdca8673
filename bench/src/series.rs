//! Thinning of time series for the JSON result and the plots: at most
//! [`MAX_POINTS`] evenly spaced points, always the first and the last.

/// Most points kept per series (the plots need no more).
pub const MAX_POINTS: usize = 400;

/// Keeps at most [`MAX_POINTS`] evenly spaced `[t, v]` points, always the last.
pub fn thin(points: &[[f64; 2]]) -> Vec<[f64; 2]> {
    thin_rows(points)
}

/// The same for rows of several columns (`t` first).
pub fn thin_columns(rows: &[Vec<f64>]) -> Vec<Vec<f64>> {
    thin_rows(rows)
}

fn thin_rows<T: Clone + PartialEq>(points: &[T]) -> Vec<T> {
    if points.len() <= MAX_POINTS {
        return points.to_vec();
    }
    let step = points.len().div_ceil(MAX_POINTS);
    let mut out: Vec<T> = points.iter().step_by(step).cloned().collect();
    if let Some(last) = points.last() {
        if out.last() != Some(last) {
            out.push(last.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_first_last_and_bounds_the_count() {
        let pts: Vec<[f64; 2]> = (0..1001)
            .map(|i| [f64::from(i), f64::from(i * 2)])
            .collect();
        let t = thin(&pts);
        assert!(t.len() <= MAX_POINTS + 1);
        assert_eq!(t.first(), Some(&[0.0, 0.0]));
        assert_eq!(t.last(), Some(&[1000.0, 2000.0]));
        assert_eq!(thin(&pts[..10]).len(), 10);
        let rows: Vec<Vec<f64>> = (0..900).map(|i| vec![f64::from(i), 1.0, 2.0]).collect();
        let r = thin_columns(&rows);
        assert!(r.len() <= MAX_POINTS + 1);
        assert_eq!(r.last(), rows.last());
    }
}

//! Formats a report over measurements, using `mathlib`.

/// One line summarising `xs`.
pub fn report(xs: &[f64]) -> String {
    match (mathlib::mean(xs), mathlib::max(xs)) {
        (Some(mean), Some(max)) => format!("n={} mean={mean:.2} max={max:.2}", xs.len()),
        _ => "no data".to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn report_summarises() {
        assert_eq!(super::report(&[2.0, 4.0]), "n=2 mean=3.00 max=4.00");
        assert_eq!(super::report(&[]), "no data");
    }
}

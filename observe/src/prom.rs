//! A small parser for the Prometheus/OpenMetrics text format and the histogram maths the
//! metrics window needs (bucket deltas → percentiles).
//!
//! Only what the target emits is supported: samples with labels, `# HELP`/`# TYPE`/
//! `# EOF` comments (skipped), optional timestamps. Malformed lines are skipped, never an
//! error: one odd line must not hide every other figure.

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PromSample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl PromSample {
    pub(crate) fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parse exposition text; malformed lines are skipped.
pub(crate) fn parse(text: &str) -> Vec<PromSample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<PromSample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if rest.starts_with('{') {
        let (parsed, after) = parse_labels(&rest[1..])?;
        labels = parsed;
        rest = after;
    }
    let mut parts = rest.split_whitespace();
    let value = parse_value(parts.next()?)?;
    Some(PromSample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"}`; returns the labels and the text after `}`.
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut chars = s.char_indices().peekable();
    loop {
        // Skip separators and whitespace.
        while let Some(&(_, c)) = chars.peek() {
            if c == ',' || c.is_whitespace() {
                chars.next();
            } else {
                break;
            }
        }
        let (start, c) = chars.next()?;
        if c == '}' {
            return Some((labels, &s[start + 1..]));
        }
        if c == '=' {
            return None;
        }
        let mut key_end = start;
        let mut found_eq = false;
        for (i, ch) in chars.by_ref() {
            if ch == '=' {
                key_end = i;
                found_eq = true;
                break;
            }
        }
        if !found_eq {
            return None;
        }
        let key = s[start..key_end].trim().to_string();
        match chars.next() {
            Some((_, '"')) => {}
            _ => return None,
        }
        let mut value = String::new();
        let mut closed = false;
        while let Some((_, ch)) = chars.next() {
            match ch {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => {
                    closed = true;
                    break;
                }
                other => value.push(other),
            }
        }
        if !closed {
            return None;
        }
        labels.push((key, value));
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// The `q` quantile (0..=1) of a cumulative histogram given as `(upper bound, cumulative
/// count)` sorted by bound, the last bound usually `+Inf`. Linear interpolation inside the
/// bucket that holds the rank, as Prometheus' `histogram_quantile` does; a rank that
/// falls in the `+Inf` bucket yields the highest finite bound (we cannot know more).
/// `None` when the histogram is empty.
pub(crate) fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let mut prev_bound = 0.0;
    let mut prev_count = 0.0;
    for &(bound, count) in buckets {
        if count >= rank && count > prev_count {
            if bound.is_infinite() {
                return Some(prev_bound);
            }
            let fraction = (rank - prev_count) / (count - prev_count);
            return Some(prev_bound + (bound - prev_bound) * fraction.clamp(0.0, 1.0));
        }
        if bound.is_finite() {
            prev_bound = bound;
        }
        prev_count = count;
    }
    Some(prev_bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_target_exposition() {
        let text = r#"# HELP http_requests HTTP requests.
# TYPE http_requests counter
http_requests_total{route="/api/v1/products/{id}",method="GET",status="200"} 142
http_request_duration_seconds_bucket{le="0.001",route="/x"} 82
http_request_duration_seconds_bucket{le="+Inf",route="/x"} 142
db_pool_max_connections 10
process_cpu_seconds_total 0.48 1700000000
weird{a="q\"uote\\d",b="x"} 1e3
broken{a="x" 1
also broken
# EOF
"#;
        let s = parse(text);
        assert_eq!(s.len(), 6);
        assert_eq!(s[0].name, "http_requests_total");
        assert_eq!(s[0].label("route"), Some("/api/v1/products/{id}"));
        assert_eq!(s[0].label("status"), Some("200"));
        assert_eq!(s[0].value, 142.0);
        assert_eq!(s[2].label("le"), Some("+Inf"));
        assert_eq!(s[3].labels.len(), 0);
        assert_eq!(s[4].value, 0.48);
        assert_eq!(s[5].label("a"), Some("q\"uote\\d"));
        assert_eq!(s[5].value, 1000.0);
    }

    #[test]
    fn never_panics_on_garbage() {
        for line in [
            "{",
            "x{",
            "x{a",
            "x{a=",
            "x{a=\"",
            "x{a=\"\\",
            "x{=\"v\"} 1",
            "x 1 2 3",
            "é{} 1",
        ] {
            let _ = parse(line);
        }
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        // 100 observations: 50 ≤ 0.1, 40 in (0.1, 0.2], 10 in (0.2, 0.4].
        let b = [
            (0.1, 50.0),
            (0.2, 90.0),
            (0.4, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert!((quantile(&b, 0.5).unwrap() - 0.1).abs() < 1e-9);
        assert!((quantile(&b, 0.7).unwrap() - 0.15).abs() < 1e-9);
        assert!((quantile(&b, 0.95).unwrap() - 0.3).abs() < 1e-9);
        assert!((quantile(&b, 0.25).unwrap() - 0.05).abs() < 1e-9);
        assert_eq!(quantile(&[(0.1, 0.0), (f64::INFINITY, 0.0)], 0.5), None);
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn quantile_in_inf_bucket_is_highest_bound() {
        let b = [(1.0, 1.0), (2.0, 1.0), (f64::INFINITY, 10.0)];
        assert_eq!(quantile(&b, 0.99), Some(2.0));
    }
}

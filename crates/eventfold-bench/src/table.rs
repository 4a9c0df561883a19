//! Plain-text table and number formatting.

use std::fmt::Write as _;

/// A table of strings: the first column left-aligned, `text_cols` left-aligned, the rest right.
#[derive(Debug)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    left_aligned: Vec<usize>,
}

impl Table {
    pub fn new(header: Vec<&'static str>, left_aligned: Vec<usize>) -> Table {
        Table {
            header,
            rows: Vec::new(),
            left_aligned,
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &[String]| {
            let mut s = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = cells.get(i).map(String::as_str).unwrap_or("");
                let pad = w.saturating_sub(cell.chars().count());
                if i > 0 {
                    s.push_str("  ");
                }
                if self.left_aligned.contains(&i) {
                    s.push_str(cell);
                    s.push_str(&" ".repeat(pad));
                } else {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(cell);
                }
            }
            let _ = writeln!(out, "{}", s.trim_end());
        };
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        line(&mut out, &header);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(&mut out, &rule);
        for row in &self.rows {
            line(&mut out, row);
        }
        out
    }
}

/// `1234567` → `1,234,567`.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate rounded to a whole number, with separators.
pub fn rate(r: f64) -> String {
    count(r.round().max(0.0) as u64)
}

/// A duration in nanoseconds, in the unit that reads best.
pub fn nanos(ns: u64) -> String {
    let f = ns as f64;
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.0} µs", f / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2} ms", f / 1e6)
    } else {
        format!("{:.2} s", f / 1e9)
    }
}

/// A ratio such as `0.53×`.
pub fn ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}×")
    } else if r >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(nanos(850), "850 ns");
        assert_eq!(nanos(123_400), "123 µs");
        assert_eq!(nanos(1_234_000), "1.23 ms");
        assert_eq!(ratio(0.531), "0.53×");
        assert_eq!(ratio(12.34), "12.3×");
    }

    #[test]
    fn aligns() {
        let mut t = Table::new(vec!["row", "n"], vec![0]);
        t.push(vec!["a".into(), "1,000".into()]);
        assert_eq!(t.render(), "row      n\n---  -----\na    1,000\n");
    }
}

//! Result tables: the same rows as aligned plain text for the terminal and as a Markdown table
//! to paste into docs. Any type that implements [`Row`] can be printed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub header: &'static str,
    pub align: Align,
}

impl Column {
    pub const fn left(header: &'static str) -> Self {
        Self {
            header,
            align: Align::Left,
        }
    }

    pub const fn right(header: &'static str) -> Self {
        Self {
            header,
            align: Align::Right,
        }
    }
}

/// One line of a result table.
pub trait Row {
    /// The table's columns, the same for every row of the type.
    const COLUMNS: &'static [Column];

    /// One formatted cell per column.
    fn cells(&self) -> Vec<String>;
}

fn cells_of<R: Row>(rows: &[R]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|row| {
            let cells = row.cells();
            assert_eq!(
                cells.len(),
                R::COLUMNS.len(),
                "a row must have one cell per column"
            );
            cells
        })
        .collect()
}

fn width(text: &str) -> usize {
    text.chars().count()
}

fn pad(text: &str, width_to: usize, align: Align) -> String {
    let fill = " ".repeat(width_to.saturating_sub(width(text)));
    match align {
        Align::Left => format!("{text}{fill}"),
        Align::Right => format!("{fill}{text}"),
    }
}

/// Aligned plain text: a header line, a rule, one line per row.
pub fn text<R: Row>(rows: &[R]) -> String {
    let cells = cells_of(rows);
    let widths: Vec<usize> = R::COLUMNS
        .iter()
        .enumerate()
        .map(|(i, column)| {
            cells
                .iter()
                .map(|row| width(&row[i]))
                .chain([width(column.header)])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |texts: Vec<String>| -> String {
        let padded: Vec<String> = texts
            .iter()
            .zip(R::COLUMNS)
            .zip(&widths)
            .map(|((text, column), &w)| pad(text, w, column.align))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        line(R::COLUMNS.iter().map(|c| c.header.to_owned()).collect())
    );
    let _ = writeln!(
        out,
        "{}",
        line(widths.iter().map(|&w| "-".repeat(w)).collect())
    );
    for row in cells {
        let _ = writeln!(out, "{}", line(row));
    }
    out
}

/// A GitHub-flavoured Markdown table, numbers right-aligned.
pub fn markdown<R: Row>(rows: &[R]) -> String {
    let escape = |cell: &str| cell.replace('|', "\\|");
    let mut out = String::new();
    let headers: Vec<String> = R::COLUMNS.iter().map(|c| escape(c.header)).collect();
    let _ = writeln!(out, "| {} |", headers.join(" | "));
    let rules: Vec<&str> = R::COLUMNS
        .iter()
        .map(|c| match c.align {
            Align::Left => "---",
            Align::Right => "---:",
        })
        .collect();
    let _ = writeln!(out, "|{}|", rules.join("|"));
    for row in cells_of(rows) {
        let row: Vec<String> = row.iter().map(|cell| escape(cell)).collect();
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

/// Prints the title, the notes (one per line), the text table and the Markdown table on stdout.
pub fn print<R: Row>(title: &str, notes: &[String], rows: &[R]) {
    println!("\n{title}");
    println!("{}", "=".repeat(width(title)));
    for note in notes {
        println!("{note}");
    }
    println!("\n{}", text(rows));
    println!("Markdown:\n\n{}", markdown(rows));
}

/// `1234567.8` as `1,234,568`.
pub fn count(value: f64) -> String {
    if !value.is_finite() {
        return "n/a".to_owned();
    }
    let digits = format!("{:.0}", value.abs());
    let mut grouped = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if value < 0.0 && digits != "0" {
        grouped.insert(0, '-');
    }
    grouped
}

/// `value / baseline` with two decimals, or `n/a` when the baseline is zero.
pub fn ratio(value: f64, baseline: f64) -> String {
    if baseline == 0.0 || !value.is_finite() || !baseline.is_finite() {
        "n/a".to_owned()
    } else {
        format!("{:.2}", value / baseline)
    }
}

/// The unit of a latency or success row, and how its values are written.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Millis,
    Percent,
}

impl Unit {
    pub fn label(self) -> &'static str {
        match self {
            Self::Millis => "ms",
            Self::Percent => "%",
        }
    }

    pub fn format(self, value: f64) -> String {
        match self {
            Self::Millis => format!("{value:.2}"),
            Self::Percent => format!("{value:.1}"),
        }
    }
}

/// `part` of `total` in percent; 0 when there is nothing.
pub fn percent(part: usize, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        part as f64 * 100.0 / total as f64
    }
}

/// What a batch of requests answered (`201`, `503`, `transport error`, …) and how often:
/// `1 × 201, 2,000 × 503`.
pub fn outcomes(outcomes: &BTreeMap<String, usize>) -> String {
    outcomes
        .iter()
        .map(|(outcome, n)| format!("{} × {outcome}", count(*n as f64)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_listed_by_status() {
        let listed = BTreeMap::from([("201".to_owned(), 1), ("503".to_owned(), 2_000)]);
        assert_eq!(outcomes(&listed), "1 × 201, 2,000 × 503");
        assert!((percent(1, 3) - 100.0 / 3.0).abs() < 1e-9);
        assert!(percent(0, 0).abs() < f64::EPSILON);
    }

    struct Sample(&'static str, f64);

    impl Row for Sample {
        const COLUMNS: &'static [Column] = &[Column::left("name"), Column::right("value")];

        fn cells(&self) -> Vec<String> {
            vec![self.0.to_owned(), count(self.1)]
        }
    }

    #[test]
    fn text_aligns_columns() {
        let table = text(&[Sample("a", 1_234_567.0), Sample("longer | name", 5.0)]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines,
            [
                "name               value",
                "-------------  ---------",
                "a              1,234,567",
                "longer | name          5",
            ]
        );
    }

    #[test]
    fn markdown_escapes_pipes_and_right_aligns_numbers() {
        let table = markdown(&[Sample("a|b", 12.0)]);
        assert_eq!(table, "| name | value |\n|---|---:|\n| a\\|b | 12 |\n");
    }

    #[test]
    fn numbers_are_grouped_and_ratios_guarded() {
        assert_eq!(count(0.4), "0");
        assert_eq!(count(999.0), "999");
        assert_eq!(count(1_000.0), "1,000");
        assert_eq!(count(-12_345.6), "-12,346");
        assert_eq!(count(f64::NAN), "n/a");
        assert_eq!(ratio(1.0, 4.0), "0.25");
        assert_eq!(ratio(1.0, 0.0), "n/a");
    }
}

//! Result tables: the same rows as aligned plain text for the terminal and as a Markdown table
//! to paste into docs. Any type that implements [`Row`] can be printed; [`Comparison`] is the row
//! every scenario that measures asyncron against a baseline uses.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::marker::PhantomData;

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
    fn columns() -> Vec<Column>;

    /// One formatted cell per column.
    fn cells(&self) -> Vec<String>;
}

fn cells_of<R: Row>(rows: &[R], columns: usize) -> Vec<Vec<String>> {
    rows.iter()
        .map(|row| {
            let cells = row.cells();
            assert_eq!(cells.len(), columns, "a row must have one cell per column");
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
    let columns = R::columns();
    let cells = cells_of(rows, columns.len());
    let widths: Vec<usize> = columns
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
            .zip(&columns)
            .zip(&widths)
            .map(|((text, column), &w)| pad(text, w, column.align))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        line(columns.iter().map(|c| c.header.to_owned()).collect())
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
    let columns = R::columns();
    let mut out = String::new();
    let headers: Vec<String> = columns.iter().map(|c| escape(c.header)).collect();
    let _ = writeln!(out, "| {} |", headers.join(" | "));
    let rules: Vec<&str> = columns
        .iter()
        .map(|c| match c.align {
            Align::Left => "---",
            Align::Right => "---:",
        })
        .collect();
    let _ = writeln!(out, "|{}|", rules.join("|"));
    for row in cells_of(rows, columns.len()) {
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

/// What a measurement is counted in, and how its values are written.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Millis,
    Seconds,
    Percent,
    /// A rate; the label names what is counted (`msg/s`, `tasks/s`).
    PerSecond(&'static str),
}

impl Unit {
    pub fn label(self) -> &'static str {
        match self {
            Self::Millis => "ms",
            Self::Seconds => "s",
            Self::Percent => "%",
            Self::PerSecond(label) => label,
        }
    }

    pub fn format(self, value: f64) -> String {
        match self {
            Self::Millis | Self::Seconds => format!("{value:.2}"),
            Self::Percent => format!("{value:.1}"),
            Self::PerSecond(_) => count(value),
        }
    }
}

/// The columns of one scenario's comparison table: asyncron's side or sides, then the baseline.
pub trait Sides {
    /// The headers of asyncron's values, one column each.
    const OURS: &'static [&'static str];
    /// The header of the baseline's value.
    const BASELINE: &'static str;
    /// The headers of the ratios, one per entry of [`Sides::OURS`]: ours / baseline.
    const RATIOS: &'static [&'static str];
}

/// Which direction of a measurement is an improvement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// One row of a comparison table: a measurement, asyncron's value(s), the baseline's value when
/// it has the measurement (`-` and no ratio when not), the ratios, and which direction is better.
#[derive(Debug)]
pub struct Comparison<S> {
    measurement: String,
    unit: Unit,
    ours: Vec<f64>,
    baseline: Option<f64>,
    better: Better,
    sides: PhantomData<S>,
}

impl<S: Sides> Comparison<S> {
    /// `ours` holds one value per entry of [`Sides::OURS`].
    pub fn new(
        measurement: impl Into<String>,
        unit: Unit,
        better: Better,
        ours: impl Into<Vec<f64>>,
        baseline: Option<f64>,
    ) -> Self {
        let ours = ours.into();
        assert_eq!(ours.len(), S::OURS.len(), "one value per side of ours");
        Self {
            measurement: measurement.into(),
            unit,
            ours,
            baseline,
            better,
            sides: PhantomData,
        }
    }

    pub fn higher(
        measurement: impl Into<String>,
        unit: Unit,
        ours: impl Into<Vec<f64>>,
        baseline: Option<f64>,
    ) -> Self {
        Self::new(measurement, unit, Better::Higher, ours, baseline)
    }

    pub fn lower(
        measurement: impl Into<String>,
        unit: Unit,
        ours: impl Into<Vec<f64>>,
        baseline: Option<f64>,
    ) -> Self {
        Self::new(measurement, unit, Better::Lower, ours, baseline)
    }
}

impl<S: Sides> Row for Comparison<S> {
    fn columns() -> Vec<Column> {
        let mut columns = vec![Column::left("measurement"), Column::left("unit")];
        columns.extend(S::OURS.iter().map(|&header| Column::right(header)));
        columns.push(Column::right(S::BASELINE));
        columns.extend(S::RATIOS.iter().map(|&header| Column::right(header)));
        columns.push(Column::left("better"));
        columns
    }

    fn cells(&self) -> Vec<String> {
        let mut cells = vec![self.measurement.clone(), self.unit.label().to_owned()];
        cells.extend(self.ours.iter().map(|&value| self.unit.format(value)));
        match self.baseline {
            Some(baseline) => {
                cells.push(self.unit.format(baseline));
                cells.extend(self.ours.iter().map(|&value| ratio(value, baseline)));
            }
            None => cells.extend(std::iter::repeat_n("-".to_owned(), 1 + self.ours.len())),
        }
        cells.push(
            match self.better {
                Better::Higher => "higher",
                Better::Lower => "lower",
            }
            .to_owned(),
        );
        cells
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
        fn columns() -> Vec<Column> {
            vec![Column::left("name"), Column::right("value")]
        }

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

    struct TwoSides;

    impl Sides for TwoSides {
        const OURS: &'static [&'static str] = &["batched", "unbatched"];
        const BASELINE: &'static str = "apalis";
        const RATIOS: &'static [&'static str] = &["ratio, batched", "ratio, unbatched"];
    }

    #[test]
    fn comparisons_have_a_ratio_per_side_or_none_without_a_baseline() {
        let row = Comparison::<TwoSides>::higher(
            "end to end",
            Unit::PerSecond("tasks/s"),
            [12_345.6, 3_000.0],
            Some(6_000.0),
        );
        assert_eq!(
            row.cells(),
            [
                "end to end",
                "tasks/s",
                "12,346",
                "3,000",
                "6,000",
                "2.06",
                "0.50",
                "higher"
            ]
        );
        let row = Comparison::<TwoSides>::lower("delay p99", Unit::Millis, [12.345, 1.0], None);
        assert_eq!(
            row.cells(),
            ["delay p99", "ms", "12.35", "1.00", "-", "-", "-", "lower"]
        );
        assert_eq!(
            markdown(&[row]).lines().next(),
            Some(
                "| measurement | unit | batched | unbatched | apalis | ratio, batched | \
                 ratio, unbatched | better |"
            )
        );
        let row =
            Comparison::<TwoSides>::higher("success", Unit::Percent, [100.0, 50.0], Some(0.0));
        assert_eq!(row.cells()[5..7], ["n/a", "n/a"]);
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

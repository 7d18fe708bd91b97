//! The outcome of a catalogue run, shared by every device class: one row per case
//! (name, pass/fail, evidence), printed as a table.

use std::fmt;

/// One row of a [`Report`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// The case.
    pub name: &'static str,
    /// Whether the driver did what the case expects.
    pub pass: bool,
    /// What was seen.
    pub evidence: String,
}

/// The outcome of a catalogue run; prints as a table (case, pass/fail, evidence).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// One row per case, in catalogue order.
    pub rows: Vec<Row>,
}

impl Report {
    /// Cases passed.
    pub fn passed(&self) -> usize {
        self.rows.iter().filter(|r| r.pass).count()
    }

    /// Whether every case passed.
    pub fn all_passed(&self) -> bool {
        self.rows.iter().all(|r| r.pass)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self
            .rows
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(f, "{:<w$}  result  evidence", "case")?;
        for r in &self.rows {
            let res = if r.pass { "pass" } else { "FAIL" };
            writeln!(f, "{:<w$}  {res:<6}  {}", r.name, r.evidence)?;
        }
        write!(f, "{} of {} passed", self.passed(), self.rows.len())
    }
}

impl Row {
    /// The row of case `name` from its outcome: `Ok(evidence)` passed,
    /// `Err(evidence)` failed.
    pub fn from_outcome(name: &'static str, outcome: Result<String, String>) -> Row {
        let pass = outcome.is_ok();
        let evidence = outcome.unwrap_or_else(|e| e);
        Row {
            name,
            pass,
            evidence,
        }
    }
}

/// Runs one case; a panic in it (the driver's, the peer's or the harness's) is a
/// failure with the panic message as evidence.
pub(crate) fn caught(case: impl FnOnce() -> Result<String, String>) -> Result<String, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(case)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(format!("panicked: {msg}"))
    })
}

impl Report {
    /// Appends the rows of `other` (to print one table for several catalogues).
    pub fn extend(&mut self, other: Report) {
        self.rows.extend(other.rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_failures_and_counts() {
        let mut r = Report::default();
        r.rows.push(Row {
            name: "a.case",
            pass: true,
            evidence: "ok".into(),
        });
        let mut other = Report::default();
        other.rows.push(Row {
            name: "b.longer-case",
            pass: false,
            evidence: "why".into(),
        });
        r.extend(other);
        assert_eq!(r.passed(), 1);
        assert!(!r.all_passed());
        let text = r.to_string();
        assert!(text.contains("b.longer-case  FAIL    why"), "{text}");
        assert!(text.ends_with("1 of 2 passed"), "{text}");
    }
}

//! A query's result as text: an aligned table for people, CSV or JSON lines for programs.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::common::Result;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Table,
    Csv,
    /// One JSON object per row, per line.
    Json,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            _ => Err(format!("unknown format `{s}` (table, csv or json)")),
        }
    }
}

/// The batches in `format`; binary columns are shown as hex in a table and CSV.
pub fn render(batches: &[RecordBatch], format: Format) -> Result<String> {
    Ok(match format {
        Format::Table => format!("{}\n", pretty_format_batches(batches)?),
        Format::Csv => {
            let mut out = Vec::new();
            {
                let mut w = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                for b in batches {
                    w.write(b)?;
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        }
        Format::Json => {
            let mut out = Vec::new();
            {
                let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut out);
                for b in batches {
                    w.write(b)?;
                }
                w.finish()?;
            }
            String::from_utf8_lossy(&out).into_owned()
        }
    })
}

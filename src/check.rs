//! `wsedge check`: validate a config file and print a summary, or every error. STUB (config helper).
use std::io::Write;
use std::path::Path;

/// Prints a summary of listeners, routes and backends (and warnings) to `out` and returns true,
/// or prints every error as `FILE:LINE:COLUMN: field.path: what is wrong` to `err` and returns
/// false.
pub fn run(_path: &Path, _out: &mut dyn Write, _err: &mut dyn Write) -> bool {
    todo!("config helper")
}

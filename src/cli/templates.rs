//! `templates export DIR`: the built-in templates written out as a starting point for
//! overrides.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use super::CliError;
use crate::notify::export_built_in;

/// Writes the built-in set under `dir` and says what to do next.
pub(super) fn export(dir: &Path, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let written = export_built_in(dir).map_err(|e| CliError::Input(e.to_string()))?;
    let shown = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    writeln!(
        out,
        "wrote {} template files into {}; set templates.dir to that folder and keep only the \
         files you change (the others fall back to the built-in ones)",
        written.len(),
        shown.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

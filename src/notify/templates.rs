//! The template files: the shipped set compiled into the binary, so an installed binary needs
//! no folder beside it, and an optional override folder (`templates.dir`) whose files replace
//! the built-in file of the same relative path, one by one. A folder holding only
//! `renewal_reminder/body.html.hbs` restyles that one part and keeps the rest.
//!
//! The whole `templates/` folder is embedded, so a new kind's folder needs no code here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use include_dir::{Dir, include_dir};

use super::TemplateError;

static BUILT_IN: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/templates");

/// How a built-in file is named in messages: it has no path on disk.
const BUILT_IN_PREFIX: &str = "(built-in)";

/// Where each template file comes from: the override folder when it has the file, else the
/// built-in set.
#[derive(Debug, Clone)]
pub struct TemplateFiles {
    overrides: Option<PathBuf>,
}

/// One template file's text and the name messages give it (a path on disk, or
/// `(built-in)/kind/part`).
#[derive(Debug, Clone)]
pub struct TemplateFile {
    pub shown: PathBuf,
    pub source: String,
}

impl TemplateFiles {
    /// The built-in set, overridden by the files under `dir` when it is not empty. A folder
    /// named but missing is an error: an operator who points at one means it.
    pub fn new(dir: &Path) -> Result<Self, TemplateError> {
        if dir.as_os_str().is_empty() {
            return Ok(Self { overrides: None });
        }
        if !dir.is_dir() {
            return Err(TemplateError::Folder {
                path: dir.to_owned(),
                reason: "not a folder (set templates.dir to a folder of overrides, or leave it \
                         empty for the built-in templates)"
                    .into(),
            });
        }
        Ok(Self {
            overrides: Some(dir.to_owned()),
        })
    }

    /// The override folder, if any.
    pub fn overrides(&self) -> Option<&Path> {
        self.overrides.as_deref()
    }

    /// The file at `rel` (such as `ready/subject.hbs`): the override if there is one, else the
    /// built-in one.
    pub fn read(&self, rel: &str) -> Result<TemplateFile, TemplateError> {
        if let Some(dir) = &self.overrides {
            let path = dir.join(rel);
            match std::fs::read_to_string(&path) {
                Ok(source) => {
                    return Ok(TemplateFile {
                        shown: path,
                        source,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(TemplateError::Folder {
                        path,
                        reason: e.to_string(),
                    });
                }
            }
        }
        let shown = Path::new(BUILT_IN_PREFIX).join(rel);
        match BUILT_IN.get_file(rel) {
            Some(file) => Ok(TemplateFile {
                source: file
                    .contents_utf8()
                    .ok_or_else(|| TemplateError::Folder {
                        path: shown.clone(),
                        reason: "not UTF-8".into(),
                    })?
                    .to_owned(),
                shown,
            }),
            None => Err(TemplateError::Missing {
                path: match &self.overrides {
                    Some(dir) => dir.join(rel),
                    None => shown,
                },
            }),
        }
    }

    /// The files of the `partials/` folder by file name, built-in ones and overrides (which
    /// may add partials of their own), in name order.
    pub fn partials(&self) -> Result<Vec<(String, TemplateFile)>, TemplateError> {
        let mut names = BTreeMap::new();
        if let Some(dir) = BUILT_IN.get_dir("partials") {
            for f in dir.files() {
                if let Some(name) = f.path().file_name().and_then(|n| n.to_str()) {
                    names.insert(name.to_owned(), ());
                }
            }
        }
        if let Some(dir) = &self.overrides {
            let partials = dir.join("partials");
            if partials.is_dir() {
                let entries = std::fs::read_dir(&partials).map_err(|e| TemplateError::Folder {
                    path: partials.clone(),
                    reason: e.to_string(),
                })?;
                for entry in entries.flatten() {
                    if let Some(name) = entry.file_name().to_str() {
                        names.insert(name.to_owned(), ());
                    }
                }
            }
        }
        names
            .into_keys()
            .map(|name| {
                let file = self.read(&format!("partials/{name}"))?;
                Ok((name, file))
            })
            .collect()
    }
}

/// Writes the built-in set under `dir` (created if missing), as a starting point for
/// overrides. Refuses, before writing anything, when a file it would write exists: an
/// operator's edited copy is never overwritten. Returns the files written.
pub fn export_built_in(dir: &Path) -> Result<Vec<PathBuf>, TemplateError> {
    let mut files = Vec::new();
    collect(&BUILT_IN, &mut files);
    files.sort_by(|a, b| a.path().cmp(b.path()));
    if let Some(existing) = files
        .iter()
        .map(|f| dir.join(f.path()))
        .find(|p| p.exists())
    {
        return Err(TemplateError::Folder {
            path: existing,
            reason: "exists already; export into an empty or new folder".into(),
        });
    }
    let mut written = Vec::with_capacity(files.len());
    for f in files {
        let path = dir.join(f.path());
        let io = |e: std::io::Error| TemplateError::Folder {
            path: path.clone(),
            reason: e.to_string(),
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&path, f.contents()).map_err(io)?;
        written.push(path);
    }
    Ok(written)
}

fn collect<'a>(dir: &'a Dir<'a>, out: &mut Vec<&'a include_dir::File<'a>>) {
    out.extend(dir.files());
    for d in dir.dirs() {
        collect(d, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_override_replaces_one_file_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("ready")).unwrap();
        std::fs::write(dir.path().join("ready/subject.hbs"), "Mine").unwrap();
        let files = TemplateFiles::new(dir.path()).unwrap();
        let own = files.read("ready/subject.hbs").unwrap();
        assert_eq!(own.source, "Mine");
        assert_eq!(own.shown, dir.path().join("ready/subject.hbs"));
        let kept = files.read("ready/body.txt.hbs").unwrap();
        assert_eq!(
            kept.source,
            include_str!("../../templates/ready/body.txt.hbs")
        );
        assert!(kept.shown.starts_with(BUILT_IN_PREFIX), "{:?}", kept.shown);
    }

    #[test]
    fn export_writes_the_built_in_set_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let written = export_built_in(dir.path()).unwrap();
        assert!(written.contains(&dir.path().join("partials/layout.html.hbs")));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("activated/subject.hbs")).unwrap(),
            include_str!("../../templates/activated/subject.hbs")
        );
        std::fs::write(dir.path().join("activated/subject.hbs"), "edited").unwrap();
        let err = export_built_in(dir.path()).unwrap_err().to_string();
        assert!(err.contains("exists already"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("activated/subject.hbs")).unwrap(),
            "edited"
        );
    }

    #[test]
    fn a_named_folder_must_exist() {
        let err = TemplateFiles::new(Path::new("/nonexistent/tpl"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/tpl"), "{err}");
        assert!(
            TemplateFiles::new(Path::new(""))
                .unwrap()
                .overrides()
                .is_none()
        );
    }
}

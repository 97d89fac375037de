//! Where each setting came from (the built-in defaults, the `--config` file, an environment
//! variable), and what follows from it: errors that name the file or the variable, relative
//! paths resolved against the folder of the file that wrote them, and list settings that an
//! environment variable can set as comma-separated text.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};

use super::{ConfigError, ENV_PREFIX, SECRET_KEYS, Settings};

/// The environment provider, with the settings that are lists in the defaults accepted as
/// comma-separated text (`RENEWAL_WORKER__RENEWAL__REMINDER_OFFSETS=30d,10bd,1bd`): a
/// variable holds a string, and a list written as TOML in a variable is easy to get wrong.
pub(super) struct EnvLists {
    env: Env,
    lists: Vec<Vec<String>>,
}

impl EnvLists {
    pub(super) fn new(env: Env, defaults: &str) -> Self {
        let mut lists = Vec::new();
        if let Ok(data) = Toml::string(defaults).data()
            && let Some(dict) = data.get(&Profile::Default)
        {
            walk(dict, &mut Vec::new(), &mut |path, value| {
                if matches!(value, Value::Array(..)) {
                    lists.push(path.to_vec());
                }
            });
        }
        Self { env, lists }
    }
}

impl Provider for EnvLists {
    fn metadata(&self) -> Metadata {
        self.env.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut data = self.env.data()?;
        // figment reads a variable as TOML-ish data: `123456` becomes a number, `"pw"` loses
        // its quotes, `true` is a boolean. A secret is taken as the exact text given.
        let secrets: Vec<(String, String)> = self
            .env
            .clone()
            .only(SECRET_KEYS)
            .iter()
            .map(|(key, text)| (key.as_str().to_owned(), text))
            .collect();
        for dict in data.values_mut() {
            for path in &self.lists {
                split_list(dict, path);
            }
            for (key, text) in &secrets {
                let path: Vec<String> = key.split('.').map(str::to_owned).collect();
                set_text(dict, &path, text);
            }
        }
        Ok(data)
    }
}

/// Replaces the value at `path` (which the environment set) by `text`.
fn set_text(dict: &mut Dict, path: &[String], text: &str) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut dict = dict;
    for key in parents {
        match dict.get_mut(key) {
            Some(Value::Dict(_, inner)) => dict = inner,
            _ => return,
        }
    }
    if dict.contains_key(last) {
        dict.insert(last.clone(), Value::from(text.to_owned()));
    }
}

/// Turns the string at `path` (if it is one) into the list of its comma-separated items.
fn split_list(dict: &mut Dict, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut dict = dict;
    for key in parents {
        match dict.get_mut(key) {
            Some(Value::Dict(_, inner)) => dict = inner,
            _ => return,
        }
    }
    if let Some(Value::String(_, text)) = dict.get(last) {
        let items: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        dict.insert(last.clone(), Value::from(items));
    }
}

/// Calls `f` with every leaf of `dict` and its path.
fn walk(dict: &Dict, path: &mut Vec<String>, f: &mut dyn FnMut(&[String], &Value)) {
    for (key, value) in dict {
        path.push(key.clone());
        match value {
            Value::Dict(_, inner) => walk(inner, path, f),
            leaf => f(path, leaf),
        }
        path.pop();
    }
}

/// Where a value was set, as the user would look for it.
enum Origin {
    File(PathBuf),
    Env(String),
    Default,
}

fn origin_of(md: Option<&Metadata>, path: &[String]) -> Origin {
    match md {
        Some(Metadata {
            source: Some(Source::File(p)),
            ..
        }) => Origin::File(p.clone()),
        Some(md) if md.name.contains("environment") => Origin::Env(env_var(path)),
        _ => Origin::Default,
    }
}

/// The variable that sets the setting at `path`.
fn env_var(path: &[String]) -> String {
    // An item of a list is set by the list's variable.
    format!(
        "{ENV_PREFIX}{}",
        path.iter()
            .filter(|k| !k.chars().all(|c| c.is_ascii_digit()))
            .map(|k| k.to_ascii_uppercase())
            .collect::<Vec<_>>()
            .join("__")
    )
}

/// One figment error as a sentence: where (file or variable), the key as written, what is
/// wrong.
pub(super) fn describe_error(e: &figment::Error) -> String {
    let key = e.path.join(".");
    let place = match origin_of(e.metadata.as_ref(), &e.path) {
        Origin::File(p) => format!("in {}: ", p.display()),
        Origin::Env(var) => format!("in environment variable {var}: "),
        Origin::Default => String::new(),
    };
    let what = match &e.kind {
        figment::error::Kind::UnknownField(_, known) => {
            format!("unknown setting; known here: {}", known.join(", "))
        }
        // figment's message quotes the value (``found unsigned int `123456` ``).
        figment::error::Kind::InvalidType(..) | figment::error::Kind::InvalidValue(..)
            if SECRET_KEYS.contains(&key.as_str()) =>
        {
            "expected a string (the value is not shown: it is a secret)".to_owned()
        }
        _ if SECRET_KEYS.contains(&key.as_str()) => {
            "not usable (the value is not shown: it is a secret)".to_owned()
        }
        kind => kind.to_string(),
    };
    if key.is_empty() {
        format!("{place}{what}")
    } else {
        format!("{place}`{key}`: {what}")
    }
}

/// Where the value of `key` (dotted) was set, when not by the defaults: `in FILE` or
/// `by VARIABLE`.
pub(super) fn origin(figment: &Figment, key: &str) -> Option<String> {
    let path: Vec<String> = key.split('.').map(str::to_owned).collect();
    match origin_of(figment.find_metadata(key), &path) {
        Origin::File(p) => Some(format!("in {}", p.display())),
        Origin::Env(var) => Some(format!("by {var}")),
        Origin::Default => None,
    }
}

/// One setting and where its value came from: `default`, `file` or `env` (with the file's
/// path or the variable's name). Values are not carried: some are secrets.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ValueSource {
    pub key: String,
    pub source: &'static str,
    pub origin: String,
}

/// Every setting with its source, in key order.
pub fn value_sources(figment: &Figment) -> Vec<ValueSource> {
    let mut out = Vec::new();
    let Ok(data) = figment.data() else {
        return out;
    };
    let Some(dict) = data.get(&Profile::Default) else {
        return out;
    };
    walk(dict, &mut Vec::new(), &mut |path, _| {
        let key = path.join(".");
        let (source, origin) = match origin_of(figment.find_metadata(&key), path) {
            Origin::File(p) => ("file", p.display().to_string()),
            Origin::Env(var) => ("env", var),
            Origin::Default => ("default", String::new()),
        };
        out.push(ValueSource {
            key,
            source,
            origin,
        });
    });
    out
}

/// Makes every relative path absolute: against the folder of the config file when the file
/// set it, else against the working directory. What the daemon logs and what every command
/// opens is then the same place wherever it is started from.
pub(super) fn resolve_paths(settings: &mut Settings, figment: &Figment) -> Result<(), ConfigError> {
    let cwd = std::env::current_dir().map_err(|e| ConfigError::Invalid {
        key: "database.url",
        value: String::new(),
        reason: format!("the working directory is unreadable: {e}"),
    })?;
    let base = |key: &str| -> PathBuf {
        match figment.find_metadata(key) {
            Some(Metadata {
                source: Some(Source::File(p)),
                ..
            }) => p
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| cwd.clone()),
            _ => cwd.clone(),
        }
    };
    settings.database.url = absolute_sqlite_url(&settings.database.url, &base("database.url"));
    let file_dir = &mut settings.mail.file_dir;
    *file_dir = join(&base("mail.file_dir"), file_dir);
    let templates = &mut settings.templates.dir;
    if !templates.as_os_str().is_empty() {
        *templates = join(&base("templates.dir"), templates);
    }
    for (name, spec) in settings.calendar.custom.iter_mut() {
        if let Some(ics) = &mut spec.ics {
            *ics = join(&base(&format!("calendar.custom.{name}.ics")), ics);
        }
    }
    Ok(())
}

fn join(base: &Path, path: &Path) -> PathBuf {
    normalize(&base.join(path))
}

/// `path` with `.` and `..` taken out, as written (links are not followed): what logs and
/// messages show.
pub(super) fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// A SQLite URL with its file made absolute against `base`; any other URL, an in-memory
/// database or an absolute file as it is.
pub fn absolute_sqlite_url(url: &str, base: &Path) -> String {
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return url.to_owned();
    };
    let (file, query) = match rest.split_once('?') {
        Some((f, q)) => (f, Some(q)),
        None => (rest, None),
    };
    if file.is_empty() || file.starts_with(':') || Path::new(file).is_absolute() {
        return url.to_owned();
    }
    let mut out = format!("sqlite://{}", normalize(&base.join(file)).display());
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_files_are_made_absolute() {
        let base = Path::new("/etc/rw");
        assert_eq!(
            absolute_sqlite_url("sqlite://data/x.db", base),
            "sqlite:///etc/rw/data/x.db"
        );
        assert_eq!(
            absolute_sqlite_url("sqlite://../db/./x.db", base),
            "sqlite:///etc/db/x.db"
        );
        assert_eq!(
            absolute_sqlite_url("sqlite:x.db?mode=rwc", base),
            "sqlite:///etc/rw/x.db?mode=rwc"
        );
        for same in [
            "sqlite:///var/x.db",
            "sqlite::memory:",
            "sqlite://:memory:",
            "postgres://u@h/db",
        ] {
            assert_eq!(absolute_sqlite_url(same, base), same);
        }
    }

    #[test]
    fn a_list_is_split_from_text() {
        let mut dict = Dict::new();
        let mut inner = Dict::new();
        inner.insert("offsets".into(), Value::from("30d, 10bd,1bd"));
        dict.insert("renewal".into(), Value::from(inner));
        split_list(&mut dict, &["renewal".into(), "offsets".into()]);
        let Some(Value::Dict(_, inner)) = dict.get("renewal") else {
            panic!("a dict")
        };
        let Some(Value::Array(_, items)) = inner.get("offsets") else {
            panic!("a list: {inner:?}")
        };
        let items: Vec<_> = items.iter().filter_map(|v| v.as_str()).collect();
        assert_eq!(items, ["30d", "10bd", "1bd"]);
    }
}

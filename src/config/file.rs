//! The `--config` file: TOML whose keys are the flag names without `--`
//! (`max-conns = 100`, `idle-timeout = "5s"`), read into the text each
//! value would have on the command line, so that a file value goes through
//! the flag's own parser and bounds.

use std::collections::BTreeMap;
use std::path::Path;

use toml::Spanned;

use super::error::ConfigError;

/// One key of the file, in file order.
#[derive(Debug)]
pub struct Entry {
    /// The flag it sets, without `--` (`upstreams = [...]` sets `upstream`).
    pub key: String,
    /// Its value(s) as command-line text.
    pub values: Vec<String>,
    /// `path line N`, for errors.
    pub at: String,
}

/// The flags that repeat, and the file key that takes their list:
/// `upstreams = [...]` sets `--upstream` once per item.
const LISTS: [(&str, &str); 4] = [
    ("upstream", "upstreams"),
    ("upstream-replica", "upstream-replicas"),
    ("user", "users"),
    ("upstream-credential", "upstream-credentials"),
];

/// The keys of `path`, each one of `keys` (the flags without `--`); a flag
/// that repeats is written as a list under its plural ([`LISTS`]).
pub fn read(path: &Path, keys: &[&str]) -> Result<Vec<Entry>, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|error| file_error(format!("cannot read {origin}: {error}")))?;
    let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> =
        toml::from_str(&text).map_err(|error| file_error(toml_error(&error, &text, &origin)))?;
    let mut entries: Vec<_> = table.into_iter().collect();
    // In file order, so the first error reported is the first line's.
    entries.sort_by_key(|(key, _)| key.span().start);
    let names: Vec<&str> = keys.iter().map(|&key| file_key(key)).collect();
    entries
        .into_iter()
        .map(|(key, value)| {
            let at = format!("{origin} line {}", line_of(&text, key.span().start));
            let key = key.into_inner();
            if !names.contains(&key.as_str()) {
                return Err(file_error(format!("{at}: {}", unknown_key(&key, &names))));
            }
            let values = values(&key, value.get_ref())
                .map_err(|message| file_error(format!("{at}: {key}: {message}")))?;
            let key = match LISTS.iter().find(|(_, list)| *list == key) {
                Some((flag, _)) => flag.to_string(),
                None => key,
            };
            Ok(Entry { key, values, at })
        })
        .collect()
}

/// The file's name of a flag: a flag that repeats takes a list.
pub fn file_key(key: &str) -> &str {
    LISTS
        .iter()
        .find(|(flag, _)| *flag == key)
        .map_or(key, |(_, list)| list)
}

/// TOML values become the text a flag would carry.
fn values(key: &str, value: &toml::Value) -> Result<Vec<String>, String> {
    if !LISTS.iter().any(|(_, list)| *list == key) {
        return text(value).map(|text| vec![text]);
    }
    let list = value.as_array().ok_or("expected a list of strings")?;
    list.iter()
        .map(|item| {
            item.as_str()
                .map(str::to_string)
                .ok_or_else(|| "expected a list of strings".to_string())
        })
        .collect()
}

fn text(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(text) => Ok(text.clone()),
        toml::Value::Integer(number) => Ok(number.to_string()),
        toml::Value::Float(number) => Ok(number.to_string()),
        toml::Value::Boolean(flag) => Ok(flag.to_string()),
        other => Err(format!(
            "expected a string, a number or a boolean, got a {}",
            other.type_str()
        )),
    }
}

/// An error in the file: it names `--config`, the path and the line.
pub fn file_error(message: String) -> ConfigError {
    ConfigError::new("--config", message)
}

/// toml's `Display` draws the offending line over several lines; the
/// contract is one line, so keep its message and say the line number.
fn toml_error(error: &toml::de::Error, text: &str, origin: &str) -> String {
    let message = error.message().trim().replace('\n', " ");
    match error.span() {
        Some(span) => format!("{origin} line {}: {message}", line_of(text, span.start)),
        None => format!("{origin}: {message}"),
    }
}

fn unknown_key(key: &str, keys: &[&str]) -> String {
    let closest = keys
        .iter()
        .map(|known| (edit_distance(key, known), known))
        .min()
        .filter(|&(distance, _)| distance <= 2);
    match closest {
        Some((_, known)) => format!("unknown key `{key}`; did you mean `{known}`?"),
        None => format!("unknown key `{key}`; the keys are {}", keys.join(", ")),
    }
}

/// Levenshtein distance, for "did you mean" on a mistyped key.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let before = &text.as_bytes()[..offset.min(text.len())];
    before.iter().filter(|&&byte| byte == b'\n').count() + 1
}

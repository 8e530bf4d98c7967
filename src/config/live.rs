//! Which settings a reload may change while the server runs, written in
//! each one's declaration (`#[arg(..., live = true)]`, shown in `--help`
//! as `[live]`), and what a new set of settings changes ([`diff`]).
//!
//! A setting that is not live is fixed for the life of the process: a
//! reload that changes it is refused whole.

use clap::Arg;

use super::file::file_key;
use super::load::{Mode, args};
use super::settings::Config;

/// The marker that says "live" in an argument's help text, and finds it
/// there again ([`is_live`]).
const LIVE: &str = " [live]";

/// The `live = true` attribute of a setting's declaration.
pub trait WithLive {
    /// `on`: a reload may change this setting while the server runs.
    fn live(self, on: bool) -> Self;
}

impl WithLive for Arg {
    fn live(self, on: bool) -> Arg {
        if !on {
            return self;
        }
        let help = self.get_help().map(ToString::to_string).unwrap_or_default();
        self.help(format!("{help}{LIVE}"))
    }
}

/// Whether `arg` was declared live.
pub fn is_live(arg: &Arg) -> bool {
    arg.get_help()
        .is_some_and(|help| help.to_string().ends_with(LIVE))
}

/// The file keys (flag names without `--`) of the settings `mode` may
/// change on a reload.
pub fn live_keys(mode: Mode) -> Vec<String> {
    let live = args(mode).into_iter().filter(is_live);
    live.filter_map(|arg| arg.get_long().map(|long| file_key(long).to_string()))
        .collect()
}

/// What a reload from `old` to `new` changes, by file key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Live settings with a new value, as `key old -> new`.
    pub live: Vec<String>,
    /// Fixed settings with a new value: the reload is refused.
    pub fixed: Vec<String>,
}

impl Diff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.fixed.is_empty()
    }
}

/// The settings of `mode` whose values differ between `old` and `new`
/// (both as loaded and validated, before the server resolves its
/// machine-dependent zeros), split into live and fixed. Values are
/// compared as their parsed values print (`1m` and `60s` are the same).
pub fn diff(mode: Mode, old: &Config, new: &Config) -> Diff {
    let (old, new) = (fields(old), fields(new));
    let mut diff = Diff::default();
    for arg in args(mode) {
        let id = arg.get_id().as_str();
        let value = |fields: &[(String, String)]| {
            let found = fields.iter().find(|(name, _)| name == id);
            found.map(|(_, value)| value.clone())
        };
        let (was, now) = (value(&old), value(&new));
        if was == now {
            continue;
        }
        let Some(key) = arg.get_long().map(file_key) else {
            continue;
        };
        match is_live(&arg) {
            true if SECRETS.contains(&id) => diff.live.push(format!("{key} (secret)")),
            true => {
                // `["a","b",]` (pretty lines joined) shows as `["a", "b"]`.
                let show = |value: Option<String>| {
                    let value = value.unwrap_or_default();
                    let value = value.trim_end_matches(',');
                    let value = value.replace(",]", "]").replace(",}", "}");
                    value.replace("\",\"", "\", \"")
                };
                diff.live
                    .push(format!("{key} {} -> {}", show(was), show(now)));
            }
            false => diff.fixed.push(key.to_string()),
        }
    }
    diff
}

/// Live settings whose values hold secrets: a reload says that they
/// changed, never what to.
const SECRETS: [&str; 1] = ["upstream_credentials"];

/// Every field of `config` by name, with its value as `{:#?}` prints it
/// (all its lines), then the fields of its flattened groups (the breaker's,
/// the backoff's) the same way. The field names are the arguments' ids.
fn fields(config: &Config) -> Vec<(String, String)> {
    let text = format!("{config:#?}");
    let mut top: Vec<(String, String)> = Vec::new();
    let mut nested: Vec<(String, String)> = Vec::new();
    let mut in_nested = false;
    for line in text.lines().skip(1) {
        let depth = line.len() - line.trim_start().len();
        let field = line.trim_start().split_once(": ");
        let field = field.filter(|(name, _)| is_ident(name));
        match (depth, field) {
            (4, Some((name, value))) => {
                top.push((name.to_string(), value.to_string()));
                in_nested = false;
                continue;
            }
            (8, Some((name, value))) => {
                nested.push((name.to_string(), value.to_string()));
                in_nested = true;
            }
            (..=8, _) => in_nested = false,
            _ if in_nested => {
                let last = nested.last_mut().expect("in a nested field");
                last.1.push_str(line.trim());
            }
            _ => {}
        }
        if let Some((_, value)) = top.last_mut() {
            value.push_str(line.trim());
        }
    }
    top.extend(nested);
    top
}

fn is_ident(name: &str) -> bool {
    let ident = |b: u8| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit();
    !name.is_empty() && name.bytes().all(ident)
}

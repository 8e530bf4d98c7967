//! The layers: defaults, then the `--config` file, then the flags given.
//! Each layer replaces the default values of the clap arguments it names,
//! and the settings are then read from a parse with no arguments at all, so
//! every value, whichever layer gave it, went through its declared parser
//! and bounds.

use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};

use super::error::ConfigError;
use super::file::{self, file_error};
use super::settings::{AUTH, BREAKER, Config, STORE, UPSTREAMS};

/// Which command's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `holdfast serve`: the engine's and the key-value store's settings.
    Serve,
    /// `holdfast proxy`: the engine's and the upstreams' settings, and
    /// `--protocol` defaults to `resp`.
    Proxy,
}

impl Mode {
    /// Whether this command takes the setting `arg` (by its help heading).
    fn takes(self, arg: &Arg) -> bool {
        let heading = arg.get_help_heading();
        match self {
            Mode::Serve => !matches!(heading, Some(UPSTREAMS | BREAKER | AUTH)),
            Mode::Proxy => heading != Some(STORE),
        }
    }
}

/// Every setting as a clap argument, with its declared default.
fn all(mode: Mode) -> Command {
    let command = Config::augment_args(Command::new("holdfast").no_binary_name(true));
    match mode {
        Mode::Serve => command,
        Mode::Proxy => command.mut_arg("protocol", |arg| arg.default_value("resp")),
    }
}

/// The settings `mode` takes, as clap arguments: for its command line and
/// its `--help`.
pub fn args(mode: Mode) -> Vec<Arg> {
    let command = all(mode);
    let takes = |arg: &&Arg| mode.takes(arg);
    command.get_arguments().filter(takes).cloned().collect()
}

/// The settings: the defaults of `mode`, then the file at `file`, then the
/// flags given in `flags` (matches of a command built with [`args`]).
/// The caller validates.
pub fn load(mode: Mode, file: Option<&Path>, flags: &ArgMatches) -> Result<Config, ConfigError> {
    let mut command = all(mode);
    if let Some(path) = file {
        command = apply_file(command, mode, path)?;
    }
    for arg in args(mode) {
        let id = arg.get_id().as_str();
        if flags.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        let given: Vec<OsString> = flags
            .get_raw(id)
            .into_iter()
            .flatten()
            .map(Into::into)
            .collect();
        command = command.mut_arg(id, |arg| arg.default_values(given));
    }
    settings(command)
}

/// The file's values become the defaults of their arguments, each parsed
/// alone first so that an error names the file's line.
fn apply_file(mut command: Command, mode: Mode, path: &Path) -> Result<Command, ConfigError> {
    let keys: Vec<String> = args(mode).iter().filter_map(long).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    for entry in file::read(path, &keys)? {
        let values = entry.values.clone();
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(&entry.key));
        let arg = arg.expect("a key of an argument").clone();
        let id = arg.get_id().clone();
        let alone = Command::new("holdfast").no_binary_name(true);
        let alone = alone.arg(arg.default_values(values.clone()));
        if let Err(error) = alone.try_get_matches_from(Vec::<&str>::new()) {
            let (at, key) = (&entry.at, file::file_key(&entry.key));
            let message = value_error(&error);
            return Err(file_error(format!("{at}: {key}: {message}")));
        }
        command = command.mut_arg(id, |arg| arg.default_values(values));
    }
    Ok(command)
}

fn long(arg: &Arg) -> Option<String> {
    arg.get_long().map(str::to_string)
}

/// The message of a declared parser's error, without clap's framing.
pub fn value_error(error: &clap::Error) -> String {
    use std::error::Error;
    match error.source() {
        Some(source) => source.to_string(),
        None => error.kind().to_string(),
    }
}

/// A declared parser's complaint about a flag's value as the settings' own
/// errors read: `--buffer: must be ...`; `None` for clap's other errors.
pub fn flag_error(error: &clap::Error) -> Option<ConfigError> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if error.kind() != ErrorKind::ValueValidation {
        return None;
    }
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let flag = arg.split(' ').next().unwrap_or(arg);
    Some(ConfigError::new(flag, value_error(error)))
}

/// Every argument's value, from its (layered) defaults.
fn settings<T: FromArgMatches>(command: Command) -> Result<T, ConfigError> {
    let matches = command
        .try_get_matches_from(Vec::<String>::new())
        .map_err(|error| ConfigError::new("--config", value_error(&error)))?;
    T::from_arg_matches(&matches).map_err(|error| ConfigError::new("--config", error.to_string()))
}

/// The declared defaults of a group of settings.
pub(crate) fn defaults<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(Command::new("holdfast").no_binary_name(true));
    settings(command).expect("the declared defaults parse")
}

//! The command line: `holdfast serve [options]`, turned into a [`Config`].

use crate::config::{Config, ConfigError};

/// What the command line asked for.
pub enum Command {
    /// `holdfast serve`: run the server with this validated config.
    Serve(Config),
}

/// Parses `args` (including the program name). `Err` carries the exit code
/// and the text to print: help and version go to stdout with code 0;
/// errors are ONE line for stderr with code 2, naming the flag.
pub fn parse<I, T>(args: I) -> Result<Command, (i32, String)>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let _ = args.into_iter();
    let _: Option<ConfigError> = None;
    todo!()
}

//! The one error type of the settings.

/// A setting that is out of range or contradicts another. Its `Display` is
/// the one stderr line: it names the flag and says how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The flag at fault, as typed on the command line (`--max-frame`), or
    /// `--config` for problems in the file itself.
    pub flag: String,
    /// What is wrong and the fix.
    pub message: String,
}

impl ConfigError {
    /// An error about `flag` (written with its `--`).
    pub fn new(flag: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            flag: flag.to_string(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.flag, self.message)
    }
}

impl std::error::Error for ConfigError {}

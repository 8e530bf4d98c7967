//! A setting's bounds, written in its declaration
//! (`#[arg(bounds = size(64, 64 << 20).power_of_two())]`): checked as
//! the value is parsed, whether it comes from a flag or from the file, and
//! shown in `--help` as `[range: 64 to 64MiB, a power of two]`.

use std::marker::PhantomData;
use std::time::Duration;

use clap::Arg;

use super::units::{format_duration, format_size, parse_count, parse_duration, parse_size};

/// How a bounded value is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    /// A whole number: `100`.
    Count,
    /// Bytes: `64KiB`.
    Size,
    /// Milliseconds, written as a duration: `10s`.
    Millis,
}

/// The inclusive bounds of a count, a size or a duration, and the type the
/// setting holds (`usize`, `u32`, `u64` milliseconds or `Duration`).
#[derive(Debug)]
pub struct Range<T> {
    min: u64,
    max: u64,
    unit: Unit,
    power_of_two: bool,
    note: &'static str,
    value: PhantomData<fn() -> T>,
}

impl<T> Clone for Range<T> {
    fn clone(&self) -> Range<T> {
        *self
    }
}

impl<T> Copy for Range<T> {}

impl<T> Range<T> {
    const fn new(min: u64, max: u64, unit: Unit) -> Range<T> {
        Range {
            min,
            max,
            unit,
            power_of_two: false,
            note: "",
            value: PhantomData,
        }
    }

    /// A whole number in `0..=max`; `note` names where `max` comes from.
    pub const fn at_most(max: u64, note: &'static str) -> Range<T> {
        Range::new(0, max, Unit::Count).note(note)
    }

    /// Only powers of two (rings and buffer tables index by masking).
    pub const fn power_of_two(mut self) -> Range<T> {
        self.power_of_two = true;
        self
    }

    /// What a special value means, said after the bounds in errors:
    /// `" (0 means one per CPU)"`.
    pub const fn note(mut self, note: &'static str) -> Range<T> {
        self.note = note;
        self
    }

    fn show(&self, n: u64) -> String {
        match self.unit {
            Unit::Count => n.to_string(),
            Unit::Size => format_size(n as usize),
            Unit::Millis => format_duration(Duration::from_millis(n)),
        }
    }

    fn read(&self, text: &str) -> Result<u64, String> {
        match self.unit {
            Unit::Count => parse_count(text),
            Unit::Size => parse_size(text).map(|n| n as u64),
            Unit::Millis => parse_duration(text).map(|d| d.as_millis().min(u64::MAX.into()) as u64),
        }
    }

    /// `64 to 64MiB, a power of two`, as `--help` and the README show it.
    pub fn describe(&self) -> String {
        let (min, max) = (self.show(self.min), self.show(self.max));
        let two = if self.power_of_two {
            ", a power of two"
        } else {
            ""
        };
        format!("{min} to {max}{two}")
    }

    /// The complaint about `n`, as every bound words it, or `None` when it
    /// is within `min..=max` (the bounds of a relation between settings
    /// are checked with it too).
    pub fn complaint(&self, n: u64) -> Option<String> {
        let (max, value, note) = (self.show(self.max), self.show(n), self.note);
        if !(self.min..=self.max).contains(&n) {
            return Some(if self.min == 0 {
                format!("must be at most {max}{note}, got {value}")
            } else {
                let min = self.show(self.min);
                format!("must be between {min} and {max}{note}, got {value}")
            });
        }
        if self.power_of_two && !n.is_power_of_two() {
            let next = n.next_power_of_two().min(self.max);
            return Some(format!(
                "must be a power of two, got {value} (try {})",
                self.show(next)
            ));
        }
        None
    }
}

/// A whole number in `min..=max`.
pub const fn count(min: u64, max: u64) -> Range<usize> {
    Range::new(min, max, Unit::Count)
}

/// A whole number in `min..=max`, held in a `u32`.
pub const fn count32(min: u32, max: u32) -> Range<u32> {
    Range::new(min as u64, max as u64, Unit::Count)
}

/// A size in bytes in `min..=max`.
pub const fn size(min: u64, max: u64) -> Range<usize> {
    Range::new(min, max, Unit::Size)
}

/// A duration in `min..=max`.
pub const fn timeout(min: Duration, max: Duration) -> Range<Duration> {
    Range::new(min.as_millis() as u64, max.as_millis() as u64, Unit::Millis)
}

/// A duration in `min..=max`, held in milliseconds.
pub const fn millis(min: Duration, max: Duration) -> Range<u64> {
    Range::new(min.as_millis() as u64, max.as_millis() as u64, Unit::Millis)
}

/// The types a [`Range`] yields; every bound fits them.
pub trait Bounded: Clone + Send + Sync + 'static {
    /// `n` (milliseconds for a duration).
    fn from_u64(n: u64) -> Self;
}

impl Bounded for usize {
    fn from_u64(n: u64) -> usize {
        n as usize
    }
}

impl Bounded for u32 {
    fn from_u64(n: u64) -> u32 {
        n as u32
    }
}

impl Bounded for u64 {
    fn from_u64(n: u64) -> u64 {
        n
    }
}

impl Bounded for Duration {
    fn from_u64(n: u64) -> Duration {
        Duration::from_millis(n)
    }
}

/// A bound a setting's value is parsed with.
pub trait Bound: Clone + Send + Sync + 'static {
    /// What the setting holds.
    type Value: Clone + Send + Sync + 'static;
    /// Reads `text` and checks it against the bound.
    fn parse(&self, text: &str) -> Result<Self::Value, String>;
    /// The bound as `--help` and the README show it.
    fn describe(&self) -> String;
}

impl<T: Bounded> Bound for Range<T> {
    type Value = T;

    fn parse(&self, text: &str) -> Result<T, String> {
        let n = self.read(text.trim())?;
        match self.complaint(n) {
            Some(message) => Err(message),
            None => Ok(T::from_u64(n)),
        }
    }

    fn describe(&self) -> String {
        Range::describe(self)
    }
}

/// A share in `(0, 1]`: `--breaker-failure-ratio`.
#[derive(Clone, Copy, Debug)]
pub struct Ratio;

impl Bound for Ratio {
    type Value = f64;

    fn parse(&self, text: &str) -> Result<f64, String> {
        match text.trim().parse::<f64>() {
            Ok(ratio) if ratio > 0.0 && ratio <= 1.0 => Ok(ratio),
            Ok(ratio) if ratio.is_finite() => Err(format!(
                "must be above 0 and at most 1, such as 0.5, got {ratio}"
            )),
            _ => Err(format!("expected a ratio such as 0.5, got `{text}`")),
        }
    }

    fn describe(&self) -> String {
        "above 0 to 1".into()
    }
}

/// The `bounds = ...` attribute of a setting's declaration: the value is
/// parsed with the bound, and the help says it.
pub trait WithBounds {
    /// Parse with `bound`, and say it in the help.
    fn bounds<B: Bound>(self, bound: B) -> Self;
}

/// The marker that puts a range in an argument's help text, and finds it
/// there again ([`range_of`]).
const RANGE: &str = " [range: ";

impl WithBounds for Arg {
    fn bounds<B: Bound>(self, bound: B) -> Arg {
        let help = self.get_help().map(ToString::to_string).unwrap_or_default();
        let help = format!("{help}{RANGE}{}]", bound.describe());
        self.help(help)
            .value_parser(move |text: &str| bound.parse(text))
    }
}

/// The range an argument was declared with, as `--help` shows it.
pub fn range_of(arg: &Arg) -> Option<String> {
    let help = arg.get_help()?.to_string();
    let (_, range) = help.split_once(RANGE)?;
    range.split(']').next().map(str::to_string)
}

//! Client versions as the agents report them: one to four numeric parts.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A client version of one to four numeric parts; missing parts compare as 0.
///
/// Hand-written rather than `semver`: client builds such as `3.9.0.221` have four
/// parts and `1.2` has two, neither of which semver's grammar accepts.
#[derive(Clone, Copy, Debug)]
pub struct ClientVersion {
    parts: [u32; 4],
    len: u8,
}

/// Why a string is not a client version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// The string was empty.
    #[error(
        "client version is empty; expected one to four numbers separated by dots, e.g. 3.9.0.221"
    )]
    Empty,
    /// More than four dot-separated parts.
    #[error("client version {0:?} has more than four parts; expected e.g. 3.9.0.221")]
    TooManyParts(String),
    /// A part that is not a plain decimal number.
    #[error("client version {0:?} is not one to four numbers separated by dots, e.g. 3.9.0.221")]
    NotNumeric(String),
}

impl ClientVersion {
    /// Builds a version from its parts at compile time (for the services table).
    pub const fn new(parts: [u32; 4], len: u8) -> Self {
        Self { parts, len }
    }

    /// Parses `1`, `1.2`, `1.2.3` or `1.2.3.4`; surrounding whitespace is ignored.
    pub fn parse(input: &str) -> Result<Self, VersionError> {
        let text = input.trim();
        if text.is_empty() {
            return Err(VersionError::Empty);
        }
        let mut parts = [0u32; 4];
        let mut len = 0usize;
        for piece in text.split('.') {
            if len == 4 {
                return Err(VersionError::TooManyParts(input.to_owned()));
            }
            let valid = !piece.is_empty() && piece.bytes().all(|b| b.is_ascii_digit());
            let Some(number) = valid.then(|| piece.parse::<u32>().ok()).flatten() else {
                return Err(VersionError::NotNumeric(input.to_owned()));
            };
            parts[len] = number;
            len += 1;
        }
        Ok(Self {
            parts,
            len: len as u8,
        })
    }

    /// The four parts, missing ones as 0.
    pub fn parts(&self) -> [u32; 4] {
        self.parts
    }
}

impl FromStr for ClientVersion {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl PartialEq for ClientVersion {
    fn eq(&self, other: &Self) -> bool {
        self.parts == other.parts
    }
}
impl Eq for ClientVersion {}

impl PartialOrd for ClientVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ClientVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts.cmp(&other.parts)
    }
}

impl fmt::Display for ClientVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = usize::from(self.len.clamp(1, 4));
        for (index, part) in self.parts[..shown].iter().enumerate() {
            if index > 0 {
                f.write_str(".")?;
            }
            write!(f, "{part}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(input: &str, expected: Result<[u32; 4], ()>) {
        let parsed = ClientVersion::parse(input)
            .map(|v| v.parts())
            .map_err(|_| ());
        assert_eq!(parsed, expected, "parsing {input:?}");
    }

    #[test]
    fn parses_one_to_four_parts_with_missing_parts_zero() {
        check("1", Ok([1, 0, 0, 0]));
        check("1.2", Ok([1, 2, 0, 0]));
        check("3.9.0.221", Ok([3, 9, 0, 221]));
        check(" 2.2.1 ", Ok([2, 2, 1, 0]));
        check("01.002", Ok([1, 2, 0, 0]));
    }

    #[test]
    fn rejects_anything_else() {
        for bad in [
            "",
            " ",
            "1.2.3.4.5",
            "1..2",
            ".1",
            "1.",
            "v1.2",
            "1.2-beta",
            "-1",
            "+1",
            "1.2a",
            "99999999999",
            "１.２",
            "1,2",
        ] {
            check(bad, Err(()));
        }
    }

    #[test]
    fn missing_parts_compare_as_zero() {
        let v = |s: &str| ClientVersion::parse(s).expect("valid version");
        assert_eq!(v("1.2"), v("1.2.0.0"));
        assert!(v("1.2.3") < v("1.2.4"));
        assert!(v("3.8.9") < v("3.9"));
        assert!(v("3.9") <= v("3.9.0.0"));
        assert!(v("10.0") > v("9.99.99.99"));
    }

    #[test]
    fn displays_as_written_without_padding() {
        let shown = ClientVersion::parse("3.9.0.221").map(|v| v.to_string());
        assert_eq!(shown.as_deref(), Ok("3.9.0.221"));
        let shown = ClientVersion::parse("1.2").map(|v| v.to_string());
        assert_eq!(shown.as_deref(), Ok("1.2"));
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_input(input in ".{0,40}") {
            let _ = ClientVersion::parse(&input);
        }

        #[test]
        fn display_round_trips(parts in proptest::collection::vec(0u32..100_000, 1..=4)) {
            let text = parts.iter().map(u32::to_string).collect::<Vec<_>>().join(".");
            let parsed = ClientVersion::parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parsed.to_string(), text);
        }
    }
}

//! Semantic Versioning 2.0.0: parsing and precedence (semver.org §9–§11).
//!
//! Versions are immutable once published, so two versions with equal precedence (they differ only
//! in build metadata) count as the same version.

use std::cmp::Ordering;
use std::fmt;

/// Longest accepted version string.
pub const MAX_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    pub pre: Vec<Identifier>,
    pub build: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identifier {
    Numeric(u64),
    Alpha(String),
}

impl Version {
    pub fn new(major: u64, minor: u64, patch: u64) -> Version {
        Version {
            major,
            minor,
            patch,
            pre: Vec::new(),
            build: String::new(),
        }
    }

    pub fn is_prerelease(&self) -> bool {
        !self.pre.is_empty()
    }

    /// Parses a version such as `1.2.3`, `1.0.0-rc.1` or `2.0.0+build.5`; the message says what
    /// is wrong.
    pub fn parse(s: &str) -> Result<Version, String> {
        if s.is_empty() {
            return Err("is empty; expected a semantic version such as 1.0.0".into());
        }
        if s.len() > MAX_LEN {
            return Err(format!("is longer than {MAX_LEN} characters"));
        }
        let (rest, build) = match s.split_once('+') {
            Some((r, b)) => (r, Some(b)),
            None => (s, None),
        };
        let (core, pre) = match rest.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (rest, None),
        };
        let parts: Vec<&str> = core.split('.').collect();
        if parts.len() != 3 {
            return Err(format!(
                "`{s}` is not MAJOR.MINOR.PATCH (e.g. 1.0.0, 1.2.0-beta.1)"
            ));
        }
        let num = |p: &str, what: &str| -> Result<u64, String> {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{what} `{p}` of `{s}` is not a number"));
            }
            if p.len() > 1 && p.starts_with('0') {
                return Err(format!("{what} `{p}` of `{s}` has a leading zero"));
            }
            p.parse()
                .map_err(|_| format!("{what} `{p}` of `{s}` is too large"))
        };
        let mut v = Version::new(
            num(parts[0], "major")?,
            num(parts[1], "minor")?,
            num(parts[2], "patch")?,
        );
        if let Some(pre) = pre {
            for id in pre.split('.') {
                check_ident(id, s, "pre-release")?;
                if id.bytes().all(|b| b.is_ascii_digit()) {
                    if id.len() > 1 && id.starts_with('0') {
                        return Err(format!(
                            "pre-release identifier `{id}` of `{s}` has a leading zero"
                        ));
                    }
                    let n = id
                        .parse()
                        .map_err(|_| format!("pre-release identifier `{id}` is too large"))?;
                    v.pre.push(Identifier::Numeric(n));
                } else {
                    v.pre.push(Identifier::Alpha(id.to_string()));
                }
            }
        }
        if let Some(build) = build {
            for id in build.split('.') {
                check_ident(id, s, "build")?;
            }
            v.build = build.to_string();
        }
        Ok(v)
    }

    /// Precedence only (build metadata ignored), per semver.org §11.
    pub fn precedence(&self, other: &Version) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (a, b) in self.pre.iter().zip(&other.pre) {
                        let o = match (a, b) {
                            (Identifier::Numeric(x), Identifier::Numeric(y)) => x.cmp(y),
                            (Identifier::Numeric(_), Identifier::Alpha(_)) => Ordering::Less,
                            (Identifier::Alpha(_), Identifier::Numeric(_)) => Ordering::Greater,
                            (Identifier::Alpha(x), Identifier::Alpha(y)) => x.cmp(y),
                        };
                        if o != Ordering::Equal {
                            return o;
                        }
                    }
                    self.pre.len().cmp(&other.pre.len())
                }
            })
    }
}

fn check_ident(id: &str, s: &str, what: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("`{s}` has an empty {what} identifier"));
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(format!(
            "{what} identifier `{id}` of `{s}` may only contain [0-9A-Za-z-]"
        ));
    }
    Ok(())
}

/// Total order: precedence, then build metadata (only to make sorting deterministic).
impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.precedence(other)
            .then_with(|| self.build.cmp(&other.build))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        for (i, id) in self.pre.iter().enumerate() {
            f.write_str(if i == 0 { "-" } else { "." })?;
            match id {
                Identifier::Numeric(n) => write!(f, "{n}")?,
                Identifier::Alpha(a) => f.write_str(a)?,
            }
        }
        if !self.build.is_empty() {
            write!(f, "+{}", self.build)?;
        }
        Ok(())
    }
}

/// The version a client gets when it names none: the highest non-yanked stable version, else the
/// highest non-yanked pre-release; `None` when every version is yanked (as crates.io resolves).
pub fn default_version<'a, I>(versions: I) -> Option<&'a Version>
where
    I: IntoIterator<Item = (&'a Version, bool)>,
{
    let mut best_stable: Option<&Version> = None;
    let mut best_pre: Option<&Version> = None;
    for (v, yanked) in versions {
        if yanked {
            continue;
        }
        let slot = if v.is_prerelease() {
            &mut best_pre
        } else {
            &mut best_stable
        };
        if slot.is_none_or(|b| v > b) {
            *slot = Some(v);
        }
    }
    best_stable.or(best_pre)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn parses_and_displays() {
        for s in [
            "0.0.0",
            "1.2.3",
            "1.0.0-alpha.1",
            "1.0.0-x-y.0.a",
            "1.0.0+20130313144700",
            "1.0.0-beta+exp.sha.5114f85",
        ] {
            assert_eq!(v(s).to_string(), s);
        }
    }

    #[test]
    fn rejects_invalid() {
        for s in [
            "",
            "1",
            "1.2",
            "1.2.3.4",
            "v1.2.3",
            "01.2.3",
            "1.02.3",
            "1.2.3-",
            "1.2.3-01",
            "1.2.3-a..b",
            "1.2.3+",
            "1.2.3-a_b",
            "a.b.c",
            " 1.2.3",
            "99999999999999999999.0.0",
        ] {
            assert!(Version::parse(s).is_err(), "{s:?} should be rejected");
        }
        assert!(Version::parse(&"1".repeat(65)).is_err());
    }

    #[test]
    fn precedence_follows_the_spec_example() {
        // semver.org §11: 1.0.0-alpha < 1.0.0-alpha.1 < 1.0.0-alpha.beta < 1.0.0-beta <
        // 1.0.0-beta.2 < 1.0.0-beta.11 < 1.0.0-rc.1 < 1.0.0.
        let chain = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.1.0",
            "2.0.0",
            "10.0.0",
        ];
        for w in chain.windows(2) {
            assert!(v(w[0]) < v(w[1]), "{} < {}", w[0], w[1]);
        }
        assert_eq!(v("1.0.0+a").precedence(&v("1.0.0+b")), Ordering::Equal);
    }

    #[test]
    fn default_version_prefers_unyanked_stable() {
        let vs = [v("1.0.0"), v("1.1.0"), v("2.0.0-rc.1"), v("1.2.0")];
        let pick = |yanked: &[bool]| {
            default_version(vs.iter().zip(yanked.iter().copied())).map(|v| v.to_string())
        };
        assert_eq!(
            pick(&[false, false, false, false]).as_deref(),
            Some("1.2.0")
        );
        assert_eq!(pick(&[false, false, false, true]).as_deref(), Some("1.1.0"));
        assert_eq!(
            pick(&[true, true, false, true]).as_deref(),
            Some("2.0.0-rc.1")
        );
        assert_eq!(pick(&[true, true, true, true]), None);
    }
}

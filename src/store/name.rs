//! Object names: validation, name modifiers (`name@3`, `name@tag`) and the
//! reversible encoding of a name into one safe path segment.
//!
//! A user's name never reaches a path raw. [`ObjectName::encoded`] turns it
//! into a single segment made only of `[A-Za-z0-9_.=-]`, with every other byte
//! (including `/`) written as `=XX`; a leading `.` is escaped too, so an
//! encoded name can never be `.`/`..`, hidden, or contain a separator: it
//! cannot escape the store's prefix.

use std::fmt;

use super::error::{Result, StoreError};

/// Longest name accepted, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 255;

/// A validated object name, such as `sales/2024/q1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectName(String);

impl ObjectName {
    /// Validates `name`; see [`validate_name`] for the rules.
    pub fn new(name: &str) -> Result<Self> {
        validate_name(name)?;
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as one path segment (reversible, see [`decode_segment`]).
    pub fn encoded(&self) -> String {
        encode_segment(&self.0)
    }

    /// Restores a name from its encoded segment; `None` if the segment is not
    /// one this module wrote (such entries are skipped when listing).
    pub fn from_encoded(segment: &str) -> Option<Self> {
        let name = decode_segment(segment)?;
        validate_name(&name).ok()?;
        Some(Self(name))
    }

    /// Names whose last segment starts with `.` or `_` are hidden from
    /// listings unless asked for.
    pub fn is_hidden(&self) -> bool {
        self.0
            .rsplit('/')
            .next()
            .is_some_and(|s| s.starts_with('.') || s.starts_with('_'))
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a user's name. Rejected: empty, over [`MAX_NAME_BYTES`], a leading
/// or trailing `/`, `//`, `.` or `..` segments, control characters, `@`
/// (reserved for name modifiers), and `#` followed by digits at the end of a
/// segment (hidden by object_store's local file system).
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(StoreError::InvalidName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("a name cannot be empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return bad(&format!(
            "a name is at most {MAX_NAME_BYTES} bytes, this one has {}",
            name.len()
        ));
    }
    if name.starts_with('/') || name.ends_with('/') {
        return bad("a name cannot start or end with '/'");
    }
    if name.contains("//") {
        return bad("a name cannot contain an empty segment ('//')");
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return bad(&format!(
            "a name cannot contain control characters (found U+{:04X})",
            c as u32
        ));
    }
    if name.contains('@') {
        return bad("'@' is reserved for name modifiers (name@version, name@tag)");
    }
    for segment in name.split('/') {
        if segment == "." || segment == ".." {
            return bad("'.' and '..' are not allowed as name segments");
        }
        if let Some((_, suffix)) = segment.rsplit_once('#')
            && !suffix.is_empty()
            && suffix.bytes().all(|b| b.is_ascii_digit())
        {
            return bad(
                "a segment cannot end in '#' followed by digits (reserved by the object store)",
            );
        }
    }
    Ok(())
}

/// Encodes a string into one path segment of `[A-Za-z0-9_.=-]` (see module docs).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// Reverses [`encode_segment`]; `None` for anything it could not have written.
pub fn decode_segment(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What a name modifier selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSpec {
    Latest,
    Version(u64),
    Tag(String),
}

impl fmt::Display for VersionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionSpec::Latest => f.write_str("latest"),
            VersionSpec::Version(v) => write!(f, "version {v}"),
            VersionSpec::Tag(t) => write!(f, "tag '{t}'"),
        }
    }
}

/// A name with an optional modifier: `sales`, `sales@3`, `sales@prod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRef {
    pub name: ObjectName,
    pub spec: VersionSpec,
}

impl NameRef {
    pub fn parse(s: &str) -> Result<Self> {
        match s.rsplit_once('@') {
            None => Ok(Self {
                name: ObjectName::new(s)?,
                spec: VersionSpec::Latest,
            }),
            Some((name, modifier)) => {
                let name = ObjectName::new(name)?;
                let spec = if !modifier.is_empty() && modifier.bytes().all(|b| b.is_ascii_digit()) {
                    let v = modifier
                        .parse::<u64>()
                        .map_err(|_| StoreError::InvalidName {
                            name: s.to_string(),
                            reason: format!("version '{modifier}' is too large"),
                        })?;
                    VersionSpec::Version(v)
                } else {
                    validate_tag(modifier).map_err(|reason| StoreError::InvalidName {
                        name: s.to_string(),
                        reason,
                    })?;
                    VersionSpec::Tag(modifier.to_string())
                };
                Ok(Self { name, spec })
            }
        }
    }
}

/// Tags are short labels (`prod`, `v1.2`, `staging-eu`): 1-64 characters of
/// `[A-Za-z0-9_.-]`, not all digits (that would read as a version).
pub fn validate_tag(tag: &str) -> std::result::Result<(), String> {
    if tag.is_empty() || tag.len() > 64 {
        return Err("a tag has 1 to 64 characters".into());
    }
    if tag.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "tag '{tag}' is all digits and would read as a version"
        ));
    }
    if tag.starts_with('.')
        || !tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Err(format!(
            "tag '{tag}' may only use letters, digits, '_', '-' and '.' (not first)"
        ));
    }
    Ok(())
}

/// Matches `name` against a glob `pattern`: `*` matches within a segment,
/// `**` across segments, `?` one character.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn rec(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') if p.get(1) == Some(&'*') => {
                let rest = &p[2..];
                (0..=n.len()).any(|i| rec(rest, &n[i..]))
            }
            Some('*') => {
                let rest = &p[1..];
                for i in 0..=n.len() {
                    if rec(rest, &n[i..]) {
                        return true;
                    }
                    if i < n.len() && n[i] == '/' {
                        break;
                    }
                }
                false
            }
            Some('?') => !n.is_empty() && n[0] != '/' && rec(&p[1..], &n[1..]),
            Some(c) => n.first() == Some(c) && rec(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    rec(&p, &n)
}

/// True when the string contains glob metacharacters.
pub fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_stays_one_safe_segment() {
        for name in [
            "sales",
            "sales/2024/q1",
            ".hidden",
            "ünïcødé/日本語",
            "a b=c%d",
            "x..y",
        ] {
            let n = ObjectName::new(name).unwrap();
            let enc = n.encoded();
            assert!(!enc.contains('/') && !enc.starts_with('.'), "{enc}");
            assert!(
                enc.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.=-".contains(&b))
            );
            assert_eq!(ObjectName::from_encoded(&enc).unwrap(), n);
        }
    }

    #[test]
    fn modifiers_parse() {
        let r = NameRef::parse("sales/q1@3").unwrap();
        assert_eq!(r.name.as_str(), "sales/q1");
        assert_eq!(r.spec, VersionSpec::Version(3));
        let r = NameRef::parse("m@prod").unwrap();
        assert_eq!(r.spec, VersionSpec::Tag("prod".into()));
        assert!(NameRef::parse("m@").is_err());
        assert!(NameRef::parse("m@a/b").is_err());
    }

    #[test]
    fn globs() {
        assert!(glob_match("sales/*", "sales/2024"));
        assert!(!glob_match("sales/*", "sales/2024/q1"));
        assert!(glob_match("sales/**", "sales/2024/q1"));
        assert!(glob_match("s?les", "sales"));
        assert!(glob_match("*", "sales"));
        assert!(!glob_match("*", "a/b"));
    }
}

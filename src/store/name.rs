//! Object names: validation, name modifiers (`name@3`, `name@tag`) and the
//! reversible encoding of a name into one safe path segment.
//!
//! A user's name never reaches a path raw. [`ObjectName::encoded`] turns it
//! into a single segment made only of `[A-Za-z0-9_.=-]`, with every other byte
//! (including `/`) written as `=XX`; a leading `.` is escaped too, so an
//! encoded name can never be `.`/`..`, hidden, or contain a separator: it
//! cannot escape the store's prefix.
//!
//! An encoding longer than [`MAX_SEGMENT`] characters (a name of many
//! non-ASCII characters triples in length) is split into several segments,
//! each but the last ending in `+` (a character the encoding never writes),
//! so every file name stays within the 255 bytes file systems allow and the
//! name still round-trips through a listing.

use std::fmt;

use super::error::{Result, StoreError};

/// Longest name accepted, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 255;

/// Longest path segment an encoded name takes (file systems allow 255 bytes
/// per file name; records add `.json`-style suffixes beside it).
pub const MAX_SEGMENT: usize = 200;

/// Ends every segment of a split encoding but the last.
const CONTINUED: char = '+';

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

    /// The name as path segments (one unless the encoding is longer than
    /// [`MAX_SEGMENT`]; reversible, see [`ObjectName::from_encoded_parts`]).
    pub fn encoded_parts(&self) -> Vec<String> {
        let encoded = encode_segment(&self.0);
        if encoded.len() <= MAX_SEGMENT {
            return vec![encoded];
        }
        let mut parts = Vec::new();
        let mut current = String::new();
        let mut rest = encoded.as_str();
        while !rest.is_empty() {
            // one character, or one `=XX` escape (never split)
            let take = if rest.starts_with('=') { 3 } else { 1 };
            if current.len() + take > MAX_SEGMENT - 1 {
                current.push(CONTINUED);
                parts.push(std::mem::take(&mut current));
            }
            current.push_str(&rest[..take]);
            rest = &rest[take..];
        }
        parts.push(current);
        parts
    }

    /// Restores a name from the segments [`ObjectName::encoded_parts`]
    /// wrote; `None` for anything else (such entries are skipped when
    /// listing).
    pub fn from_encoded_parts(parts: &[&str]) -> Option<Self> {
        let (last, chunks) = parts.split_last()?;
        let mut joined = String::new();
        for c in chunks {
            joined.push_str(c.strip_suffix(CONTINUED)?);
        }
        joined.push_str(last);
        let name = decode_segment(&joined)?;
        validate_name(&name).ok()?;
        let n = Self(name);
        // only the canonical split names this object
        let canonical = n.encoded_parts();
        (canonical.len() == parts.len() && canonical.iter().zip(parts).all(|(a, b)| a == b))
            .then_some(n)
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
    enum Tok {
        /// `*`: any run of characters within one segment
        Star,
        /// `**`: any run of characters, across segments
        Stars,
        /// `?`: one character other than `/`
        One,
        Lit(char),
    }
    let mut toks = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        toks.push(match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                Tok::Stars
            }
            '*' => Tok::Star,
            '?' => Tok::One,
            c => Tok::Lit(c),
        });
    }
    let n: Vec<char> = name.chars().collect();
    // Dynamic programming over (token, position), one row per token from
    // the end: O(pattern × name) time, no backtracking blow-up.
    // `next[j]`: the tokens after this one match `n[j..]`.
    let mut next: Vec<bool> = (0..=n.len()).map(|j| j == n.len()).collect();
    for tok in toks.iter().rev() {
        let mut row = vec![false; n.len() + 1];
        for j in (0..=n.len()).rev() {
            row[j] = match tok {
                Tok::Star => next[j] || (j < n.len() && n[j] != '/' && row[j + 1]),
                Tok::Stars => next[j] || (j < n.len() && row[j + 1]),
                Tok::One => j < n.len() && n[j] != '/' && next[j + 1],
                Tok::Lit(c) => j < n.len() && n[j] == *c && next[j + 1],
            };
        }
        next = row;
    }
    next[0]
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
            let parts = n.encoded_parts();
            assert_eq!(parts.len(), 1, "short names take one segment");
            let enc = &parts[0];
            assert!(!enc.contains('/') && !enc.starts_with('.'), "{enc}");
            assert!(
                enc.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.=-".contains(&b))
            );
            assert_eq!(ObjectName::from_encoded_parts(&[enc]).unwrap(), n);
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
        assert!(glob_match("**/q1", "sales/2024/q1"));
        assert!(glob_match("a**b", "a/x/b"));
        assert!(!glob_match("a*b", "a/x/b"));
        assert!(!glob_match("s?les", "s/les"));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
    }

    #[test]
    fn long_encodings_split_into_segments_that_round_trip() {
        for name in [
            "短".repeat(30),
            "長い名前".repeat(21),
            format!("a/{}", "é".repeat(126)),
            "x".repeat(255),
            format!("{}/{}", "=".repeat(100), "-".repeat(100)),
        ] {
            let n = ObjectName::new(&name).unwrap();
            let parts = n.encoded_parts();
            for (i, p) in parts.iter().enumerate() {
                assert!(p.len() <= MAX_SEGMENT, "{p}");
                assert_eq!(p.ends_with(CONTINUED), i + 1 < parts.len());
                assert!(!p.contains('/'));
            }
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            assert_eq!(ObjectName::from_encoded_parts(&refs), Some(n));
        }
        // a non-canonical split is not a name
        let n = ObjectName::new(&"短".repeat(30)).unwrap();
        let joined = n.encoded_parts().concat().replace('+', "");
        let (a, b) = joined.split_at(30);
        assert_eq!(ObjectName::from_encoded_parts(&[&format!("{a}+"), b]), None);
        assert_eq!(ObjectName::from_encoded_parts(&["abc+"]), None);
    }

    #[test]
    fn glob_does_not_backtrack_exponentially() {
        // `*a*a*a…b` against a long run of `a`s takes 2^n steps with a
        // backtracking matcher; this one is O(pattern × name)
        let pattern = format!("{}b", "*a".repeat(60));
        let name = "a".repeat(250);
        assert!(!glob_match(&pattern, &name));
        let pattern = format!("{}b", "**a".repeat(60));
        assert!(!glob_match(&pattern, &name));
        assert!(glob_match(&format!("{}a", "*a".repeat(60)), &name));
    }
}

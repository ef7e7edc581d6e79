//! Names, symbolic link targets and paths.

use crate::ProtocolError;

/// Longest name of a directory entry, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Longest path (and symbolic link target), in bytes.
pub const MAX_PATH_LEN: usize = 4096;

/// One directory entry name: 1..=255 bytes, no `/`, no NUL, not `.` or `..`. Need not be UTF-8.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Vec<u8>);

fn check_name(b: &[u8]) -> Result<(), ProtocolError> {
    if b.is_empty() {
        return Err(ProtocolError::invalid("name", "empty name"));
    }
    if b.len() > MAX_NAME_LEN {
        return Err(ProtocolError::invalid(
            "name",
            format!("name of {} bytes is longer than {MAX_NAME_LEN}", b.len()),
        ));
    }
    if let Some(pos) = b.iter().position(|c| *c == b'/' || *c == 0) {
        let what = if b[pos] == 0 { "NUL" } else { "'/'" };
        return Err(ProtocolError::invalid(
            "name",
            format!("name contains {what} at byte {pos}"),
        ));
    }
    if b == b"." || b == b".." {
        return Err(ProtocolError::invalid("name", "'.' and '..' are not names of entries"));
    }
    Ok(())
}

impl Name {
    /// The bytes of the name.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes of the name, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// Converts a wire name field, naming `field` in the error.
    pub fn from_field(b: Vec<u8>, field: &'static str) -> Result<Self, ProtocolError> {
        Name::try_from(b).map_err(|e| e.at(field))
    }
}

impl TryFrom<Vec<u8>> for Name {
    type Error = ProtocolError;

    fn try_from(b: Vec<u8>) -> Result<Self, ProtocolError> {
        check_name(&b)?;
        Ok(Name(b))
    }
}

impl TryFrom<&[u8]> for Name {
    type Error = ProtocolError;

    fn try_from(b: &[u8]) -> Result<Self, ProtocolError> {
        check_name(b)?;
        Ok(Name(b.to_vec()))
    }
}

impl TryFrom<&str> for Name {
    type Error = ProtocolError;

    fn try_from(s: &str) -> Result<Self, ProtocolError> {
        Name::try_from(s.as_bytes())
    }
}

impl From<Name> for Vec<u8> {
    fn from(n: Name) -> Self {
        n.0
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", String::from_utf8_lossy(&self.0))
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Name({:?})", String::from_utf8_lossy(&self.0))
    }
}

/// Target of a symbolic link: 1..4096 bytes without NUL (any other bytes, including `/`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SymlinkTarget(Vec<u8>);

impl SymlinkTarget {
    /// The bytes of the target.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Converts a wire target field, naming `field` in the error.
    pub fn from_field(b: Vec<u8>, field: &'static str) -> Result<Self, ProtocolError> {
        SymlinkTarget::try_from(b).map_err(|e| e.at(field))
    }
}

impl TryFrom<Vec<u8>> for SymlinkTarget {
    type Error = ProtocolError;

    fn try_from(b: Vec<u8>) -> Result<Self, ProtocolError> {
        if b.is_empty() {
            return Err(ProtocolError::invalid("target", "empty symbolic link target"));
        }
        if b.len() >= MAX_PATH_LEN {
            return Err(ProtocolError::invalid(
                "target",
                format!("target of {} bytes is not shorter than {MAX_PATH_LEN}", b.len()),
            ));
        }
        if let Some(pos) = b.iter().position(|c| *c == 0) {
            return Err(ProtocolError::invalid(
                "target",
                format!("target contains NUL at byte {pos}"),
            ));
        }
        Ok(SymlinkTarget(b))
    }
}

impl From<SymlinkTarget> for Vec<u8> {
    fn from(t: SymlinkTarget) -> Self {
        t.0
    }
}

impl std::fmt::Debug for SymlinkTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SymlinkTarget({:?})", String::from_utf8_lossy(&self.0))
    }
}

/// A path resolved component by component from the root (or a start directory): at most 4096
/// bytes, every component a valid [`Name`]. Repeated `/` and `.` components are dropped; `..` is
/// refused because resolution never walks back up.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WirePath {
    absolute: bool,
    components: Vec<Name>,
}

impl WirePath {
    /// Parses and validates a path.
    pub fn parse(b: &[u8]) -> Result<Self, ProtocolError> {
        if b.len() > MAX_PATH_LEN {
            return Err(ProtocolError::invalid(
                "path",
                format!("path of {} bytes is longer than {MAX_PATH_LEN}", b.len()),
            ));
        }
        if b.is_empty() {
            return Err(ProtocolError::invalid("path", "empty path"));
        }
        let mut components = Vec::new();
        for (i, c) in b.split(|c| *c == b'/').enumerate() {
            if c.is_empty() || c == b"." {
                continue;
            }
            if c == b".." {
                return Err(ProtocolError::invalid("path", "'..' components are not resolved"));
            }
            let name = Name::try_from(c).map_err(|e| match e {
                ProtocolError::Invalid { reason, .. } => {
                    ProtocolError::invalid("path", format!("component {i}: {reason}"))
                }
                other => other,
            })?;
            components.push(name);
        }
        Ok(WirePath {
            absolute: b[0] == b'/',
            components,
        })
    }

    /// True if the path starts at the root.
    pub fn is_absolute(&self) -> bool {
        self.absolute
    }

    /// The components in order (empty for `/`).
    pub fn components(&self) -> &[Name] {
        &self.components
    }

    /// The parent's components and the last name, or `None` for the root itself.
    pub fn split_last(&self) -> Option<(&[Name], &Name)> {
        self.components.split_last().map(|(last, rest)| (rest, last))
    }
}

impl TryFrom<&str> for WirePath {
    type Error = ProtocolError;

    fn try_from(s: &str) -> Result<Self, ProtocolError> {
        WirePath::parse(s.as_bytes())
    }
}

impl TryFrom<&[u8]> for WirePath {
    type Error = ProtocolError;

    fn try_from(b: &[u8]) -> Result<Self, ProtocolError> {
        WirePath::parse(b)
    }
}

impl std::fmt::Display for WirePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.absolute {
            f.write_str("/")?;
        }
        for (i, c) in self.components.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for WirePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WirePath({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(Name::try_from("file.txt").is_ok());
        assert!(Name::try_from(&[0xff_u8, 0xfe][..]).is_ok());
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(Name::try_from(bad).is_err(), "{bad:?}");
        }
        assert!(Name::try_from("x".repeat(255).as_str()).is_ok());
        let e = Name::from_field(vec![b'x'; 256], "create.name").unwrap_err();
        assert_eq!(e.field(), Some("create.name"));
        assert!(e.to_string().contains("256 bytes"), "{e}");
    }

    #[test]
    fn symlink_targets_are_checked() {
        assert!(SymlinkTarget::try_from(b"../a/b".to_vec()).is_ok());
        assert!(SymlinkTarget::try_from(Vec::new()).is_err());
        assert!(SymlinkTarget::try_from(b"a\0".to_vec()).is_err());
        assert!(SymlinkTarget::try_from(vec![b'a'; MAX_PATH_LEN]).is_err());
        assert!(SymlinkTarget::try_from(vec![b'a'; MAX_PATH_LEN - 1]).is_ok());
    }

    #[test]
    fn paths_are_split_and_checked() {
        let p = WirePath::try_from("//a/./b/").unwrap();
        assert!(p.is_absolute());
        assert_eq!(p.to_string(), "/a/b");
        let (dir, last) = p.split_last().unwrap();
        assert_eq!((dir.len(), last.as_bytes()), (1, &b"b"[..]));
        assert!(WirePath::try_from("/").unwrap().split_last().is_none());
        assert!(!WirePath::try_from("a").unwrap().is_absolute());
        assert!(WirePath::try_from("/a/../b").is_err());
        assert!(WirePath::try_from("").is_err());
        let e = WirePath::try_from("/a/b\0c").unwrap_err();
        assert!(e.to_string().contains("component 2"), "{e}");
        assert!(WirePath::parse(&vec![b'a'; MAX_PATH_LEN + 1]).is_err());
        let long = format!("/{}", "x".repeat(256));
        assert!(WirePath::try_from(long.as_str()).is_err());
    }
}

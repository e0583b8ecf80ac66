//! The `om` command line.
pub fn placeholder() {}

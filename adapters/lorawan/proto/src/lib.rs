//! Being written (issue #5); see Cargo.toml for what this crate will hold.

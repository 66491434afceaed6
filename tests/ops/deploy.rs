//! The Pake configs shipped in `docker/` load and validate with Pake's own config code.

//! The process-wide cookie table. Written in the core work.

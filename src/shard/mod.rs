//! Thread-per-core io_uring shards. Written in the core work.

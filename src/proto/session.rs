//! The session state machine (one viewer ↔ one camera). Written in the core work.

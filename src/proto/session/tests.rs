//! Session state machine tests: whole dialogues fed as bytes, outputs checked.

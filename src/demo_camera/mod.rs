//! The built-in synthetic camera. Written in the demo-camera work.

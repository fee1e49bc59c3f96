//! Structured logs through `tracing`: text for people and journald, or JSON for collectors.
//! `RUST_LOG` overrides the configured level (at start and on reload). The configured level
//! (`[log] level`) is a reloadable filter: a reload that changes it applies at once, so an
//! operator can turn on `debug` for a while without a restart. The format applies at start only.

use std::sync::{Mutex, OnceLock};

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Replaces the installed subscriber's filter.
type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// Set once, by the [`init`] that installed the subscriber.
static SET_FILTER: OnceLock<SetFilter> = OnceLock::new();
/// The level in force, so a reload that keeps it says nothing.
static LEVEL: Mutex<String> = Mutex::new(String::new());

/// Installs the subscriber with its filter reloadable (the same builder, typed per format).
macro_rules! install {
    ($builder:expr) => {{
        let builder = $builder.with_filter_reloading();
        let handle = builder.reload_handle();
        if builder.try_init().is_ok() {
            let _ = SET_FILTER.set(Box::new(move |f| handle.reload(f).map_err(|e| e.to_string())));
        }
    }};
}

pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // journald stamps every line itself; under it (JOURNAL_STREAM set) ours would be noise.
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    // A second init (tests start several relays in one process) keeps the first subscriber.
    match (format, under_journald) {
        (LogFormat::Json, _) => install!(builder.json().flatten_event(true)),
        (LogFormat::Text, true) => install!(builder.without_time()),
        (LogFormat::Text, false) => install!(builder),
    }
    *LEVEL.lock().unwrap_or_else(|e| e.into_inner()) = level.to_owned();
}

/// The configured level after a reload: applied at once unless `RUST_LOG` overrides it.
pub fn set_level(level: &str) {
    let mut current = LEVEL.lock().unwrap_or_else(|e| e.into_inner());
    if *current == level {
        return;
    }
    if std::env::var_os(EnvFilter::DEFAULT_ENV).is_some() {
        tracing::info!(level, "[log] level changed, but RUST_LOG is set and overrides it");
        *current = level.to_owned();
        return;
    }
    let Some(set) = SET_FILTER.get() else { return };
    let filter = match EnvFilter::try_new(level) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(level, error = %e, "[log] level not understood: the level in force stays");
            return;
        }
    };
    match set(filter) {
        Ok(()) => {
            tracing::info!(from = %current, to = level, "log level changed by reload");
            *current = level.to_owned();
        }
        Err(e) => tracing::warn!(level, error = %e, "log level not changed"),
    }
}

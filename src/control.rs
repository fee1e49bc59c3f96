//! The relay's control plane: which routes run (the file's and the control API's), changing
//! them one at a time, reloading the file, and what the last reload did.
//!
//! Every change builds a whole new [`Settings`] — the file's settings with the API's routes
//! beside its own — and hands it to the shards exactly as a SIGHUP reload does; only the
//! changed route differs, so only its viewers notice (a removed or changed route's viewers end
//! cleanly, a shared route whose camera changed carries them over). API routes are validated by
//! the same code as the file's, cached validated (a change does not resolve every camera
//! again), and kept in `[api] state_dir/routes.toml`, written atomically before the change
//! takes effect and read at start.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::config::{ConfigError, Route, RouteConfig, Settings, check_route_users};
use crate::metrics::MetricsHub;
use crate::shard::ShardHandle;

/// The file API routes are kept in, inside `[api] state_dir`.
pub const STATE_FILE: &str = "routes.toml";

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no route {0:?}")]
    NotFound(String),
    #[error("route {0:?} comes from the configuration file: change it there")]
    FromFile(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot save the API's routes: {0}")]
    Persist(String),
}

/// Where a route comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    File,
    Api,
}

/// What the last reload (SIGHUP or `POST /v1/reload`) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadRecord {
    pub at_unix: u64,
    pub ok: bool,
    pub error: Option<String>,
}

struct ApiRoute {
    config: RouteConfig,
    route: Route,
}

struct State {
    /// The file's settings alone (its routes only).
    file: Arc<Settings>,
    /// The API's routes by path.
    api: BTreeMap<String, ApiRoute>,
    running: Arc<Settings>,
    last_reload: Option<ReloadRecord>,
}

pub struct Control {
    state: Mutex<State>,
    shards: OnceLock<ShardHandle>,
    /// Where the routes in force and each reload's result are exported (once it runs).
    hub: OnceLock<Arc<MetricsHub>>,
    config_path: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    started: Instant,
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The file's settings with `api` beside its routes, the API routes' users checked against the
/// file's viewers.
fn merge(file: &Settings, api: &BTreeMap<String, ApiRoute>) -> Result<Settings, ConfigError> {
    let users = file.routes.users();
    let mut extra: Vec<Route> = Vec::with_capacity(api.len());
    for r in api.values() {
        // The file's [auth] decides who guards an API route that names no users.
        let mut route = r.route.clone();
        check_route_users(&r.config, &mut route, users, &file.auth)?;
        extra.push(route);
    }
    file.with_extra_routes(file.routes.routes(), &extra)
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct StateFile {
    #[serde(default)]
    route: Vec<RouteConfig>,
}

/// The API routes kept in `dir`, validated (none when the file does not exist yet).
fn load_state(dir: &Path) -> Result<BTreeMap<String, ApiRoute>, ConfigError> {
    let path = dir.join(STATE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => return Err(ConfigError::Read { path: path.display().to_string(), source }),
    };
    let file: StateFile =
        toml::from_str(&text).map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
    let mut api = BTreeMap::new();
    for config in file.route {
        let route = config.validate().map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
        api.insert(route.path.clone(), ApiRoute { config, route });
    }
    Ok(api)
}

/// Writes the API routes to `dir` atomically: a temporary file, flushed to disk, renamed over
/// the old one, the directory flushed too. Owner-only: it holds camera passwords.
fn save_state(dir: &Path, api: &BTreeMap<String, ApiRoute>) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = StateFile { route: api.values().map(|r| r.config.clone()).collect() };
    let text = toml::to_string(&file).map_err(std::io::Error::other)?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(b"# Routes created through the control API; the relay rewrites this file.\n")?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(STATE_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// One route as the API lists it.
pub struct RouteEntry {
    pub route: Arc<Route>,
    pub source: Source,
}

impl Control {
    /// The file's settings plus the API routes kept in `[api] state_dir`: what the relay
    /// starts with. A kept route that no longer validates, or whose path the file now uses
    /// too, stops the start with a message naming it.
    pub fn new(file: Settings, config_path: Option<PathBuf>) -> Result<Control, ConfigError> {
        let state_dir = file.api.as_ref().and_then(|a| a.state_dir.clone());
        let api = match &state_dir {
            Some(dir) => load_state(dir)?,
            None => BTreeMap::new(),
        };
        let running = Arc::new(merge(&file, &api)?);
        Ok(Control {
            state: Mutex::new(State { file: Arc::new(file), api, running, last_reload: None }),
            shards: OnceLock::new(),
            hub: OnceLock::new(),
            config_path,
            state_dir,
            started: Instant::now(),
        })
    }

    /// The shards changes go to (once they run).
    pub fn attach(&self, shards: ShardHandle) {
        let _ = self.shards.set(shards);
    }

    /// The metrics that follow every change: the routes' series and each reload's result.
    pub fn attach_metrics(&self, hub: Arc<MetricsHub>) {
        let _ = self.hub.set(hub);
    }

    /// The shards run `next`, and the metrics list its routes.
    fn run(&self, next: &Arc<Settings>) {
        if let Some(shards) = self.shards.get() {
            shards.reload(next.clone());
        }
        if let Some(hub) = self.hub.get() {
            export_routes(hub, next);
        }
    }

    pub fn shards(&self) -> Option<&ShardHandle> {
        self.shards.get()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The settings in force.
    pub fn running(&self) -> Arc<Settings> {
        self.lock().running.clone()
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    pub fn last_reload(&self) -> Option<ReloadRecord> {
        self.lock().last_reload.clone()
    }

    /// The configuration file's checksum (hex SHA-256).
    pub fn checksum(&self) -> String {
        self.lock().file.checksum.clone()
    }

    pub fn api_route_count(&self) -> usize {
        self.lock().api.len()
    }

    /// Every route in force, with where it comes from, by path.
    pub fn routes(&self) -> Vec<RouteEntry> {
        let state = self.lock();
        let mut out: Vec<RouteEntry> = state
            .running
            .routes
            .routes()
            .iter()
            .map(|r| RouteEntry {
                route: r.clone(),
                source: if state.api.contains_key(&r.path) { Source::Api } else { Source::File },
            })
            .collect();
        out.sort_by(|a, b| a.route.path.cmp(&b.route.path));
        out
    }

    /// The stored body of an API route (for PATCH).
    pub fn api_route_config(&self, path: &str) -> Result<RouteConfig, ControlError> {
        let state = self.lock();
        match state.api.get(path) {
            Some(r) => Ok(r.config.clone()),
            None if state.file.routes.routes().iter().any(|r| r.path == path) => {
                Err(ControlError::FromFile(path.to_owned()))
            }
            None => Err(ControlError::NotFound(path.to_owned())),
        }
    }

    /// Creates or replaces the API route at `config.path`; true when it was created.
    pub fn put_route(&self, config: RouteConfig) -> Result<bool, ControlError> {
        let route = config.validate().map_err(|e| ControlError::Invalid(e.to_string()))?;
        let path = route.path.clone();
        self.change(&path, |api| Ok(api.insert(path.clone(), ApiRoute { config, route }).is_none()))
    }

    /// Deletes the API route at `path`.
    pub fn delete_route(&self, path: &str) -> Result<(), ControlError> {
        self.change(path, |api| api.remove(path).map(|_| ()).ok_or_else(|| ControlError::NotFound(path.to_owned())))
    }

    /// Applies `edit` to a copy of the API routes; if the result validates and is saved, the
    /// shards run it.
    fn change<T>(
        &self,
        path: &str,
        edit: impl FnOnce(&mut BTreeMap<String, ApiRoute>) -> Result<T, ControlError>,
    ) -> Result<T, ControlError> {
        let Some(dir) = self.state_dir.clone() else {
            return Err(ControlError::Conflict(
                "[api] state_dir is not set: routes made through the API would not survive a restart".into(),
            ));
        };
        let mut state = self.lock();
        if state.file.routes.routes().iter().any(|r| r.path == path) {
            return Err(ControlError::FromFile(path.to_owned()));
        }
        let mut api: BTreeMap<String, ApiRoute> = state
            .api
            .iter()
            .map(|(k, v)| (k.clone(), ApiRoute { config: v.config.clone(), route: v.route.clone() }))
            .collect();
        let out = edit(&mut api)?;
        let next = merge(&state.file, &api).map_err(|e| ControlError::Invalid(e.to_string()))?;
        save_state(&dir, &api).map_err(|e| ControlError::Persist(format!("{}: {e}", dir.display())))?;
        let next = Arc::new(next);
        self.run(&next);
        state.api = api;
        state.running = next;
        Ok(out)
    }

    /// Reads and validates the configuration file again and, if it is good, runs it with the
    /// API's routes (SIGHUP, `POST /v1/reload`). A bad file, or one that now defines a path an
    /// API route has, changes nothing.
    pub fn reload_file(&self) -> Result<Arc<Settings>, ConfigError> {
        let Some(path) = self.config_path.clone() else {
            return Err(ConfigError::Invalid("the demo has no configuration file to reload".into()));
        };
        self.reload_from(&path)
    }

    /// [`Control::reload_file`] from `path`.
    pub fn reload_from(&self, path: &Path) -> Result<Arc<Settings>, ConfigError> {
        let result = self.try_reload_file(path);
        if let Some(hub) = self.hub.get() {
            hub.reload_done(result.is_ok());
        }
        if let Ok(next) = &result {
            crate::logging::set_level(&next.log.level);
        }
        let mut state = self.lock();
        state.last_reload = Some(ReloadRecord {
            at_unix: now_unix(),
            ok: result.is_ok(),
            error: result.as_ref().err().map(|e| e.to_string()),
        });
        result
    }

    fn try_reload_file(&self, path: &Path) -> Result<Arc<Settings>, ConfigError> {
        let file = Settings::load(path)?;
        let mut state = self.lock();
        let next = Arc::new(merge(&file, &state.api)?);
        self.run(&next);
        state.file = Arc::new(file);
        state.running = next.clone();
        Ok(next)
    }
}

/// With `[metrics] per_route`, every configured route has its series from now on (idle until
/// its camera moves); without it, none.
pub fn export_routes(hub: &MetricsHub, settings: &Settings) {
    let routes = settings.routes.routes().iter().map(|r| r.path.clone());
    if settings.metrics_port.per_route { hub.set_routes(routes) } else { hub.set_routes([]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rtr-control-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn settings(state: &Path, routes: &str) -> Settings {
        Settings::from_toml(&format!(
            "[listen]\ntunnel=[\"127.0.0.1:0\"]\n[api]\nlisten=\"127.0.0.1:0\"\nstate_dir={state:?}\n\
             [[api.token]]\nname=\"ops\"\nsha256=\"{}\"\nscope=\"admin\"\n{routes}",
            crate::proto::api_token::sha256_hex(b"x")
        ))
        .unwrap()
    }

    fn route(path: &str) -> RouteConfig {
        toml::from_str(&format!("path=\"{path}\"\nupstream=\"rtsp://u:secret@127.0.0.1:9/x\"\n")).unwrap()
    }

    const FILE_ROUTE: &str = "[[route]]\npath=\"/file\"\nupstream=\"rtsp://127.0.0.1:9/f\"\n";

    /// A route body's `fallback` is the file's key, validated by the same code, and kept.
    #[test]
    fn api_routes_take_a_fallback() {
        let d = dir("fallback");
        let c = Control::new(settings(&d, FILE_ROUTE), None).unwrap();
        let mut r = route("/site1/cam8");
        r.fallback = Some("rtsp://127.0.0.1:9/sub".into());
        assert!(c.put_route(r.clone()).unwrap());
        let again = Control::new(settings(&d, FILE_ROUTE), None).unwrap();
        let kept = again.routes().into_iter().find(|e| e.route.path == "/site1/cam8").unwrap();
        assert_eq!(kept.route.fallback.as_ref().map(|f| f.url.as_str()), Some("rtsp://127.0.0.1:9/sub"));
        r.fallback = Some("ftp://127.0.0.1/x".into());
        assert!(c.put_route(r).is_err(), "checked as the upstream is");
    }

    #[test]
    fn api_routes_persist_beside_the_files_and_never_replace_them() {
        let d = dir("persist");
        let c = Control::new(settings(&d, FILE_ROUTE), None).unwrap();
        assert!(c.put_route(route("/site1/cam7")).unwrap(), "created");
        assert!(!c.put_route(route("/site1/cam7/")).unwrap(), "the same path, replaced");
        assert!(matches!(c.put_route(route("/file")), Err(ControlError::FromFile(_))));
        assert!(matches!(c.delete_route("/file"), Err(ControlError::FromFile(_))));
        assert!(matches!(c.delete_route("/nope"), Err(ControlError::NotFound(_))));
        let paths = |c: &Control| c.routes().iter().map(|e| (e.route.path.clone(), e.source)).collect::<Vec<_>>();
        assert_eq!(paths(&c), [("/file".into(), Source::File), ("/site1/cam7".into(), Source::Api)]);
        // A new start reads them back; no temporary file is left behind.
        let again = Control::new(settings(&d, FILE_ROUTE), None).unwrap();
        assert_eq!(paths(&again), paths(&c));
        assert!(!d.join(format!("{STATE_FILE}.tmp")).exists());
        // A file that now has the API's path is refused, naming it.
        let clash = format!("{FILE_ROUTE}[[route]]\npath=\"/site1/cam7\"\nupstream=\"rtsp://127.0.0.1:9/g\"\n");
        let err = Control::new(settings(&d, &clash), None).err().unwrap().to_string();
        assert!(err.contains("/site1/cam7") && err.contains("control API"), "{err}");
        again.delete_route("/site1/cam7").unwrap();
        assert_eq!(paths(&Control::new(settings(&d, FILE_ROUTE), None).unwrap()).len(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_bad_route_changes_nothing() {
        let d = dir("bad");
        let c = Control::new(settings(&d, ""), None).unwrap();
        let mut bad = route("/a");
        bad.upstream = "http://127.0.0.1/x".into();
        assert!(matches!(c.put_route(bad), Err(ControlError::Invalid(m)) if m.contains("rtsp://")));
        assert!(c.routes().is_empty() && !d.join(STATE_FILE).exists());
    }

    /// A linger the shard cannot add to its clock (`Instant + Duration::from_secs(u64::MAX)`
    /// panics when the last viewer leaves) is refused, not applied.
    #[test]
    fn a_linger_past_the_clock_is_refused() {
        let d = dir("linger");
        let c = Control::new(settings(&d, ""), None).unwrap();
        let mut long = route("/a");
        long.linger_secs = u64::MAX;
        assert!(matches!(c.put_route(long), Err(ControlError::Invalid(m)) if m.contains("linger_secs")));
        assert!(c.routes().is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }
}

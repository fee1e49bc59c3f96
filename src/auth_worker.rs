//! The external authorizer: one small thread with its own current-thread tokio runtime that
//! answers sessions' [`AuthQuery`]s, by an HTTP callback (`[auth] method = "http"`) or by
//! checking a JWT against a JWKS (`"jwt"`). Shards never wait on it: a session waiting for a
//! verdict is a state of the protocol core, and the verdict comes back through the shard's
//! mailbox. A slow or dead auth service delays only the viewers it is deciding on.
//!
//! Secrets (passwords, tokens) are never logged.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};

use crate::config::{AuthConfig, AuthMethodName};
use crate::proto::external_auth::{AuthQuery, Protocol, Verdict};
use crate::proto::permissions::{Action, Permission, permits};

/// Where a verdict goes: the session's shard's mailbox, through this.
pub type Reply = Box<dyn FnOnce(Verdict) + Send + Sync>;

/// One question, with what the callback is told besides the credentials.
pub struct AuthJob {
    pub query: AuthQuery,
    pub protocol: Protocol,
    /// The session's id as logged (`shard-id`).
    pub session: String,
    pub reply: Reply,
}

/// Admissions remembered for `[auth.http] cache_secs`; bounded.
const MAX_CACHED: usize = 10_000;

/// The handle shards submit jobs through.
pub struct AuthWorker {
    tx: tokio::sync::mpsc::UnboundedSender<AuthJob>,
    ctx: Arc<RwLock<Arc<Ctx>>>,
}

/// One configuration's way of deciding.
struct Ctx {
    method: AuthMethodName,
    client: reqwest::Client,
    http: crate::config::HttpAuthConfig,
    jwt: crate::config::JwtAuthConfig,
    /// Admitted credentials (hashed) → when their admission expires.
    cache: Mutex<HashMap<u64, (Instant, String)>>,
    hasher: std::collections::hash_map::RandomState,
    keys: tokio::sync::Mutex<Keys>,
}

/// The JWKS as last fetched.
#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, (DecodingKey, Vec<Algorithm>)>,
    /// When a fetch was last tried (successful or not): the rate limit.
    tried_at: Option<Instant>,
}

impl AuthWorker {
    /// Starts the worker thread for `cfg` (it idles while the method is `internal`).
    pub fn start(cfg: &AuthConfig) -> std::io::Result<Arc<AuthWorker>> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<AuthJob>();
        let ctx = Arc::new(RwLock::new(Arc::new(Ctx::new(cfg))));
        let shared = ctx.clone();
        std::thread::Builder::new().name("auth".into()).spawn(move || {
            rt.block_on(async move {
                // Periodic key refresh: the current configuration's, each period.
                let refresher = shared.clone();
                tokio::spawn(async move {
                    loop {
                        let ctx = current(&refresher);
                        if ctx.method == AuthMethodName::Jwt {
                            ctx.refresh_keys(false).await;
                        }
                        let period = Duration::from_secs(ctx.jwt.jwks_refresh_secs.max(1));
                        drop(ctx);
                        tokio::time::sleep(period).await;
                    }
                });
                while let Some(job) = rx.recv().await {
                    let ctx = current(&shared);
                    tokio::spawn(async move {
                        let verdict = ctx.decide(&job).await;
                        (job.reply)(verdict);
                    });
                }
            });
        })?;
        Ok(Arc::new(AuthWorker { tx, ctx }))
    }

    /// A reloaded configuration decides from now on (questions in flight finish as they began).
    pub fn reload(&self, cfg: &AuthConfig) {
        let mut ctx = self.ctx.write().unwrap_or_else(|e| e.into_inner());
        *ctx = Arc::new(Ctx::new(cfg));
    }

    /// The control API's question: the API grants of a JWT presented as its `Authorization:
    /// Bearer`, checked by the same configuration and key cache as viewers' tokens. It runs on
    /// the caller's runtime (the API's own thread), never on a shard. `Refused` unless the
    /// method is `jwt` and the token verifies.
    pub async fn api_grants(&self, token: &str) -> Result<Vec<Permission>, Verdict> {
        let ctx = current(&self.ctx);
        if ctx.method != AuthMethodName::Jwt {
            return Err(Verdict::Refused);
        }
        let deadline = Duration::from_millis(ctx.jwt.timeout_ms.max(1));
        match tokio::time::timeout(deadline, ctx.verify(token)).await {
            Ok(Ok((perms, _))) => Ok(perms),
            Ok(Err(v)) => Err(v),
            Err(_) => Err(Verdict::Timeout),
        }
    }

    /// Queues a question; false when the worker has stopped (the caller refuses: `error`).
    pub fn submit(&self, job: AuthJob) -> bool {
        self.tx.send(job).is_ok()
    }
}

fn current(ctx: &RwLock<Arc<Ctx>>) -> Arc<Ctx> {
    ctx.read().unwrap_or_else(|e| e.into_inner()).clone()
}

impl Ctx {
    fn new(cfg: &AuthConfig) -> Ctx {
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &cfg.http.headers {
            if let (Ok(k), Ok(v)) =
                (reqwest::header::HeaderName::from_bytes(k.as_bytes()), reqwest::header::HeaderValue::from_str(v))
            {
                headers.insert(k, v);
            }
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_millis(cfg.http.timeout_ms.max(cfg.jwt.timeout_ms)))
            .build()
            .unwrap_or_default();
        Ctx {
            method: cfg.method,
            client,
            http: cfg.http.clone(),
            jwt: cfg.jwt.clone(),
            cache: Mutex::new(HashMap::new()),
            hasher: Default::default(),
            keys: tokio::sync::Mutex::new(Keys::default()),
        }
    }

    async fn decide(&self, job: &AuthJob) -> Verdict {
        match self.method {
            AuthMethodName::Http => self.ask_callback(job).await,
            AuthMethodName::Jwt => self.check_token(&job.query).await,
            // Reloaded to internal while this question was queued.
            AuthMethodName::Internal => Verdict::Error,
        }
    }

    async fn ask_callback(&self, job: &AuthJob) -> Verdict {
        let q = &job.query;
        let key = self.hasher.hash_one((&q.user, &q.password, &q.token, q.ip, &q.route));
        let now = Instant::now();
        if self.http.cache_secs > 0 {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((until, user)) = cache.get(&key).filter(|(until, _)| *until > now) {
                let _ = until;
                return Verdict::Allow { user: user.clone() };
            }
        }
        let body = serde_json::json!({
            "user": q.user,
            "password": q.password,
            "token": q.token,
            "ip": q.ip.to_string(),
            "route": q.route,
            "protocol": job.protocol.as_str(),
            "tls": q.tls,
            "action": q.action.as_str(),
            "session": job.session,
        });
        let send = self
            .client
            .post(&self.http.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send();
        let verdict = match tokio::time::timeout(Duration::from_millis(self.http.timeout_ms), send).await {
            Err(_) => Verdict::Timeout,
            Ok(Err(e)) if e.is_timeout() => Verdict::Timeout,
            Ok(Err(e)) => {
                tracing::warn!(error = %e.without_url(), "auth callback failed");
                Verdict::Error
            }
            Ok(Ok(resp)) if resp.status().is_success() => Verdict::Allow { user: q.user.clone() },
            Ok(Ok(_)) => Verdict::Refused,
        };
        if let (Verdict::Allow { user }, true) = (&verdict, self.http.cache_secs > 0) {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= MAX_CACHED {
                cache.retain(|_, (until, _)| *until > now);
            }
            if cache.len() < MAX_CACHED {
                cache.insert(key, (now + Duration::from_secs(self.http.cache_secs), user.clone()));
            }
        }
        verdict
    }

    /// The token is the bearer token if one came, else the password (`rtsp://x:TOKEN@…`).
    async fn check_token(&self, q: &AuthQuery) -> Verdict {
        let token = if q.token.is_empty() { q.password.as_str() } else { q.token.as_str() };
        let (perms, sub) = match self.verify(token).await {
            Ok(v) => v,
            Err(v) => return v,
        };
        if !permits(&perms, q.action, &q.route) {
            return Verdict::Refused;
        }
        Verdict::Allow { user: sub.unwrap_or_else(|| q.user.clone()) }
    }

    /// A JWT's grants and `sub`, if it verifies (signature by a JWKS key, iss, aud, exp, nbf).
    async fn verify(&self, token: &str) -> Result<(Vec<Permission>, Option<String>), Verdict> {
        let Ok(header) = jsonwebtoken::decode_header(token) else { return Err(Verdict::Refused) };
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA) {
            return Err(Verdict::Refused);
        }
        let Some(kid) = header.kid else { return Err(Verdict::Refused) };
        let key = match self.key(&kid).await {
            Ok(Some(k)) => k,
            Ok(None) => return Err(Verdict::Refused),
            Err(()) => return Err(Verdict::Error),
        };
        if !key.1.contains(&header.alg) {
            return Err(Verdict::Refused);
        }
        let mut v = Validation::new(header.alg);
        v.leeway = self.jwt.leeway_secs;
        v.validate_nbf = true;
        if self.jwt.issuer.is_empty() {
            v.iss = None;
        } else {
            v.set_issuer(&[&self.jwt.issuer]);
        }
        if self.jwt.audience.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&[&self.jwt.audience]);
        }
        let Ok(data) = jsonwebtoken::decode::<serde_json::Value>(token, &key.0, &v) else {
            return Err(Verdict::Refused);
        };
        let perms = permissions_of(data.claims.get(&self.jwt.claim));
        let sub = data.claims.get("sub").and_then(|s| s.as_str()).map(str::to_owned);
        Ok((perms, sub))
    }

    /// The key for `kid`; an unknown one fetches the set again unless it was fetched within
    /// `jwks_min_refresh_secs`. `Err`: no key set could be had at all.
    async fn key(&self, kid: &str) -> Result<Option<(DecodingKey, Vec<Algorithm>)>, ()> {
        {
            let keys = self.keys.lock().await;
            if let Some(k) = keys.by_kid.get(kid) {
                return Ok(Some(k.clone()));
            }
        }
        let fetched = self.refresh_keys(true).await;
        let keys = self.keys.lock().await;
        match keys.by_kid.get(kid) {
            Some(k) => Ok(Some(k.clone())),
            None if !fetched && keys.by_kid.is_empty() => Err(()),
            None => Ok(None),
        }
    }

    /// Fetches the key set (rate-limited when `on_demand`). Whether a set is now held.
    async fn refresh_keys(&self, on_demand: bool) -> bool {
        let mut keys = self.keys.lock().await;
        let min = Duration::from_secs(self.jwt.jwks_min_refresh_secs);
        if on_demand && keys.tried_at.is_some_and(|t| t.elapsed() < min) {
            return !keys.by_kid.is_empty();
        }
        keys.tried_at = Some(Instant::now());
        let text = if !self.jwt.jwks_file.is_empty() {
            std::fs::read_to_string(&self.jwt.jwks_file).map_err(|e| e.to_string())
        } else {
            let get = self.client.get(&self.jwt.jwks_url).send();
            match tokio::time::timeout(Duration::from_millis(self.jwt.timeout_ms), get).await {
                Err(_) => Err("timed out".to_owned()),
                Ok(Err(e)) => Err(e.without_url().to_string()),
                Ok(Ok(r)) if !r.status().is_success() => Err(format!("status {}", r.status())),
                Ok(Ok(r)) => r.text().await.map_err(|e| e.without_url().to_string()),
            }
        };
        let set = text.and_then(|t| serde_json::from_str::<JwkSet>(&t).map_err(|e| e.to_string()));
        match set {
            Ok(set) => {
                keys.by_kid = set
                    .keys
                    .iter()
                    .filter_map(|jwk| {
                        let kid = jwk.common.key_id.clone()?;
                        let key = DecodingKey::from_jwk(jwk).ok()?;
                        Some((kid, (key, algorithms_of(jwk))))
                    })
                    .collect();
                tracing::debug!(keys = keys.by_kid.len(), "JWKS fetched");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS not fetched; the keys held are kept");
                !keys.by_kid.is_empty()
            }
        }
    }
}

/// The algorithms a JWK may verify: its own `alg` if it says, else those of its key type.
fn algorithms_of(jwk: &jsonwebtoken::jwk::Jwk) -> Vec<Algorithm> {
    use jsonwebtoken::jwk::{AlgorithmParameters, KeyAlgorithm};
    match jwk.common.key_algorithm {
        Some(KeyAlgorithm::RS256) => vec![Algorithm::RS256],
        Some(KeyAlgorithm::ES256) => vec![Algorithm::ES256],
        Some(KeyAlgorithm::EdDSA) => vec![Algorithm::EdDSA],
        Some(_) => Vec::new(),
        None => match jwk.algorithm {
            AlgorithmParameters::RSA(_) => vec![Algorithm::RS256],
            AlgorithmParameters::EllipticCurve(_) => vec![Algorithm::ES256],
            AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
            AlgorithmParameters::OctetKey(_) => Vec::new(),
        },
    }
}

/// The permission claim: a list of `{action, routes: [globs]}`; anything else grants nothing.
fn permissions_of(claim: Option<&serde_json::Value>) -> Vec<Permission> {
    let Some(list) = claim.and_then(|c| c.as_array()) else { return Vec::new() };
    list.iter()
        .filter_map(|p| {
            let action = Action::parse(p.get("action")?.as_str()?)?;
            let routes = p.get("routes")?.as_array()?.iter().filter_map(|r| r.as_str().map(str::to_owned)).collect();
            Some(Permission { action, routes })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claim_grants_only_what_it_lists() {
        let claim = serde_json::json!([
            {"action": "read", "routes": ["/lobby/*", "/door"]},
            {"action": "publish", "routes": ["*"]},
            {"action": "read"},
            "junk"
        ]);
        let perms = permissions_of(Some(&claim));
        assert_eq!(perms.len(), 1);
        assert!(permits(&perms, Action::Read, "/lobby/2"));
        assert!(!permits(&perms, Action::Read, "/vault"));
        assert!(permissions_of(Some(&serde_json::json!({"action": "read"}))).is_empty());
        assert!(permissions_of(None).is_empty());
    }
}

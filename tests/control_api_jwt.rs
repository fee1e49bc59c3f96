//! The control API with `[auth] method = "jwt"`: a JWT signed by PyJWT (keys and tokens from
//! `tests/peers/auth_service.py`, the public set in `[auth.jwt] jwks_file`) as `Authorization:
//! Bearer`; its `api` / `api_admin` grants limit the routes it sees and changes; an expired one
//! is refused; static `[[api.token]]` tokens keep seeing everything. Driven with curl against
//! the release binary.

mod support;

use std::path::Path;
use std::process::Command;

use support::RelayProcess;

const SERVICE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/auth_service.py");
const ADMIN: &str = "adm-jwt-4d1e9b";

fn python_jwt_available() -> bool {
    Command::new("/usr/bin/python3").args(["-c", "import jwt, cryptography"]).status().is_ok_and(|s| s.success())
}

fn service(keys: &Path, args: &[&str]) -> String {
    let out = Command::new("/usr/bin/python3").arg(SERVICE).args(args).arg("--keys").arg(keys).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A token with `grants` (JSON), expiring `exp_in` seconds from now.
fn token(keys: &Path, grants: &str, exp_in: i64) -> String {
    service(
        keys,
        &[
            "token",
            "--kid",
            "k1",
            "--iss",
            "test-issuer",
            "--aud",
            "relay",
            "--grants",
            grants,
            &format!("--exp-in={exp_in}"),
        ],
    )
}

/// One control API call with `token`: (status, body).
fn curl(port: u16, method: &str, path: &str, token: &str, body: Option<&str>) -> (u16, String) {
    support::api_curl(port, method, path, Some(token), body)
}

/// The route paths `GET /v1/routes` lists for `token`.
fn listed(port: u16, token: &str) -> Vec<String> {
    let (code, body) = curl(port, "GET", "/v1/routes", token, None);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut paths: Vec<String> =
        v.as_array().unwrap().iter().filter_map(|r| r["path"].as_str().map(str::to_owned)).collect();
    paths.sort();
    paths
}

#[test]
fn a_jwt_s_api_grants_limit_the_routes_it_sees_and_changes() {
    skip_when_quick!();
    if !python_jwt_available() || !Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: python3-jwt / python3-cryptography or curl missing");
        return;
    }
    let dir = support::temp_dir("api-jwt");
    let keys = dir.join("keys");
    service(&keys, &["keygen", "--kid", "k1", "--alg", "ES256"]);
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, service(&keys, &["jwks"])).unwrap();
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let port = support::free_port();
    let up = "rtsp://127.0.0.1:9/x";
    let mut config = format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\nstate_dir = {state:?}\n\
         [[api.token]]\nname = \"ops\"\nsha256 = \"{}\"\nscope = \"admin\"\n\
         [auth]\nmethod = \"jwt\"\n\
         [auth.jwt]\njwks_file = {jwks:?}\nissuer = \"test-issuer\"\naudience = \"relay\"\n",
        rtsp_tunnel_relay::proto::api_token::sha256_hex(ADMIN.as_bytes()),
    );
    for path in ["/site1/cam1", "/site1/cam2", "/site2/cam1"] {
        config.push_str(&format!("[[route]]\npath = \"{path}\"\nupstream = \"{up}\"\n"));
    }
    let relay = RelayProcess::start("api-jwt", &config);
    let body = format!(r#"{{"upstream":"{up}"}}"#);

    let site1 = token(&keys, r#"[{"action":"api_admin","routes":["/site1/*"]}]"#, 600);
    assert_eq!(listed(port, &site1), ["/site1/cam1", "/site1/cam2"]);
    let (code, cams) = curl(port, "GET", "/v1/cameras", &site1, None);
    assert_eq!(code, 200);
    assert!(cams.contains("/site1/cam1") && !cams.contains("/site2/"), "{cams}");
    assert_eq!(curl(port, "GET", "/v1/routes/site2/cam1", &site1, None).0, 404);
    assert_eq!(curl(port, "PUT", "/v1/routes/site2/new", &site1, Some(&body)).0, 403);
    assert_eq!(curl(port, "DELETE", "/v1/routes/site2/cam1", &site1, None).0, 403);
    assert_eq!(curl(port, "POST", "/v1/reload", &site1, None).0, 403);
    let (code, text) = curl(port, "PUT", "/v1/routes/site1/new", &site1, Some(&body));
    assert_eq!(code, 201, "{text}");
    assert_eq!(curl(port, "DELETE", "/v1/routes/site1/new", &site1, None).0, 204);

    // Read only: sees every route, changes none.
    let reader = token(&keys, r#"[{"action":"api","routes":["*"]}]"#, 600);
    assert_eq!(listed(port, &reader), ["/site1/cam1", "/site1/cam2", "/site2/cam1"]);
    assert_eq!(curl(port, "PUT", "/v1/routes/site1/other", &reader, Some(&body)).0, 403);

    // Expired (beyond the leeway), or granting viewing only: not an API caller at all.
    let expired = token(&keys, r#"[{"action":"api_admin","routes":["*"]}]"#, -3600);
    assert_eq!(curl(port, "GET", "/v1/routes", &expired, None).0, 401);
    let viewer = token(&keys, r#"[{"action":"read","routes":["*"]}]"#, 600);
    assert_eq!(curl(port, "GET", "/v1/routes", &viewer, None).0, 401);

    // The static token still sees everything.
    assert_eq!(listed(port, ADMIN), ["/site1/cam1", "/site1/cam2", "/site2/cam1"]);
    let log = relay.log_text();
    for secret in [&site1, &reader, &expired, &viewer] {
        assert!(!log.contains(secret.as_str()), "a token was logged:\n{log}");
    }
}

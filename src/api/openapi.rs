//! The OpenAPI 3 document, generated from the handlers' annotations (so it cannot drift from
//! them); `docs/openapi.json` is a copy a test keeps equal to it.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{info, live, routes};

#[derive(OpenApi)]
#[openapi(
    info(title = "rtsp-tunnel-relay control API", description = "Routes, cameras, sessions and reloads of one relay. Every request needs `Authorization: Bearer <secret>` of an `[[api.token]]`; changes need scope `admin`."),
    paths(routes::list, routes::get_one, routes::put, routes::patch, routes::delete,
        live::cameras, live::sessions, live::end_session, info::info, info::reload),
    components(schemas(routes::RouteView, crate::config::RouteConfig, crate::config::RouteMode,
        live::CameraView, live::CamerasReply, live::SessionsReply,
        crate::shard::snapshot::SessionSnapshot, info::Info, info::LastReload)),
    modifiers(&Bearer)
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        }
    }
}

/// The document as served and as kept in `docs/openapi.json`.
pub fn document() -> String {
    let mut doc = ApiDoc::openapi();
    // The crate's version would make the copy in docs/ change at every release.
    doc.info.version = "1".into();
    doc.to_pretty_json().unwrap_or_default() + "\n"
}

/// The OpenAPI 3 description of this API.
pub async fn serve() -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], document())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_copy_in_docs_is_the_generated_document() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        let generated = super::document();
        if std::env::var_os("RTR_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let copy = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            copy == generated,
            "docs/openapi.json differs from the handlers' document: RTR_WRITE_OPENAPI=1 cargo test --lib openapi"
        );
        for p in ["/v1/routes/{path}", "/v1/cameras", "/v1/sessions/{id}", "/v1/reload", "/v1/info"] {
            assert!(generated.contains(&format!("\"{p}\"")), "{p}");
        }
    }
}

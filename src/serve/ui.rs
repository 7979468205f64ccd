//! The web page: hand-written HTML, CSS and JavaScript embedded in the binary, so the
//! daemon needs no files beside it and the page loads nothing from elsewhere.

use actix_web::{web, HttpRequest, HttpResponse};

use super::api::ApiState;

const INDEX: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const STYLE_CSS: &str = include_str!("ui/style.css");
const FAVICON: &str = include_str!("ui/favicon.svg");

/// Registers the page and its files.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/index.html", web::get().to(index))
        .route(
            "/app.js",
            web::get().to(|| file(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/style.css",
            web::get().to(|| file(STYLE_CSS, "text/css; charset=utf-8")),
        )
        .route(
            "/favicon.svg",
            web::get().to(|| file(FAVICON, "image/svg+xml")),
        );
}

/// The page, with this run's token for state-changing requests filled in when the
/// request is authenticated (always, without a key). A visitor who has not logged in
/// gets the page without it; after logging in, the page reads it from `/api/token`
/// (`security::needs_token` says why login itself needs no token).
async fn index(state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    let token = if state.guard.is_authenticated(&req) {
        state.guard.token.as_str()
    } else {
        ""
    };
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(INDEX.replace("{{TOKEN}}", token))
}

async fn file(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok().content_type(content_type).body(body)
}

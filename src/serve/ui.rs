//! The web page: hand-written HTML, CSS and JavaScript embedded in the binary, so the
//! daemon needs no files beside it and the page loads nothing from elsewhere.

use actix_web::{web, HttpResponse};

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

/// The page, with this run's token for state-changing requests filled in.
async fn index(state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(INDEX.replace("{{TOKEN}}", &state.guard.token))
}

async fn file(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok().content_type(content_type).body(body)
}

//! The approval console: a web page on the admin listener where an approver
//! signs in with their token, sees each pending approval with everything
//! the gate knew, approves or denies it, follows recent decisions and ends
//! tasks. Served wherever this process keeps the approvals (`tollgate
//! decision`, and `tollgate run` deciding in-process) and approvers are
//! configured.
//!
//! Everything it shows is behind a session ([`session`]); the page itself
//! is static files compiled into the binary, its data fetched as JSON and
//! written with `textContent`, under a Content-Security-Policy that allows
//! nothing but this origin's own script and style.

mod api;
mod events;
mod pages;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::body::{full, ProxyBody};
use crate::config::ApproverConfig;
use crate::core::recent::RecentDecisions;
use crate::decision::state::TaskStore;

use session::{Sessions, SignedIn, SESSION_TTL};

/// Every console answer carries these: no script, style, frame or form
/// target but this origin's own, nothing cached, no referrer leaving.
const SECURITY_HEADERS: [(&str, &str); 6] = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
];

/// The largest body the console reads: a token, or a reason.
const MAX_BODY: usize = 16 * 1024;

pub struct Console {
    tasks: Arc<TaskStore>,
    approvers: Vec<ApproverConfig>,
    recent: Arc<RecentDecisions>,
    sessions: Sessions,
}

impl Console {
    /// `None` without approvers: nobody could sign in.
    pub fn new(
        tasks: Arc<TaskStore>,
        approvers: Vec<ApproverConfig>,
        recent: Arc<RecentDecisions>,
    ) -> Option<Arc<Console>> {
        if approvers.is_empty() {
            return None;
        }
        Some(Arc::new(Console {
            tasks,
            approvers,
            recent,
            sessions: Sessions::new(SESSION_TTL),
        }))
    }

    pub fn serves(path: &str) -> bool {
        path == "/console" || path.starts_with("/console/")
    }

    pub async fn answer(
        self: &Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let mut response = self.route(request, peer).await;
        let headers = response.headers_mut();
        for (name, value) in SECURITY_HEADERS {
            headers.insert(name, HeaderValue::from_static(value));
        }
        response
    }

    async fn route(
        self: &Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let path = request.uri().path().to_string();
        let method = request.method().clone();
        let signed = self.sessions.find(request.headers());
        match (&method, path.as_str()) {
            (&Method::GET, "/console" | "/console/") => match signed {
                Some(_) => pages::app(),
                None => see_other("/console/login", None),
            },
            (&Method::GET, "/console/login") => match signed {
                Some(_) => see_other("/console", None),
                None => pages::login(StatusCode::OK, ""),
            },
            (&Method::POST, "/console/login") => self.login(request, peer).await,
            (&Method::POST, "/console/logout") => match signed {
                Some(signed) => self.logout(&request, &signed),
                None => api::error(StatusCode::UNAUTHORIZED, "not signed in"),
            },
            (&Method::GET, asset) if asset.starts_with("/console/assets/") => pages::asset(asset),
            (_, api) if api.starts_with("/console/api/") => match signed {
                Some(signed) => api::answer(self, request, signed).await,
                None => api::error(StatusCode::UNAUTHORIZED, "not signed in"),
            },
            (_, "/console" | "/console/" | "/console/login" | "/console/logout") => {
                api::error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => api::error(StatusCode::NOT_FOUND, "not found"),
        }
    }

    /// The login form's POST. Guarded by the same origin check as every
    /// change (a login forced on someone by another site would sign them
    /// in as the attacker); no session exists yet to hold a CSRF token.
    async fn login(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        if let Err(why) = session::same_origin(request.headers()) {
            tracing::warn!(peer = %peer, why, "console login refused");
            return pages::login(StatusCode::FORBIDDEN, why);
        }
        let Some(body) = read_body(request.into_body()).await else {
            return pages::login(StatusCode::PAYLOAD_TOO_LARGE, "the form was too large");
        };
        let token = zeroize::Zeroizing::new(
            url::form_urlencoded::parse(&body)
                .find(|(name, _)| name == "token")
                .map(|(_, value)| value.trim().to_string())
                .unwrap_or_default(),
        );
        let approver = match crate::decision::approvers::approver_of(&self.approvers, &token) {
            Ok(Some(approver)) => approver,
            Ok(None) => {
                tracing::warn!(peer = %peer, "console login refused: not an approver's token");
                return pages::login(StatusCode::UNAUTHORIZED, "That is not an approver's token.");
            }
            Err(e) => {
                tracing::warn!(peer = %peer, error = %e, "console login refused");
                return pages::login(StatusCode::UNAUTHORIZED, &e.to_string());
            }
        };
        let Some((id, _)) = self.sessions.open(&approver) else {
            return pages::login(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no randomness for a session",
            );
        };
        tracing::info!(approver = %approver, peer = %peer, "console login");
        see_other("/console", Some(session::set_cookie(&id, SESSION_TTL)))
    }

    fn logout(&self, request: &Request<Incoming>, signed: &SignedIn) -> Response<ProxyBody> {
        if let Err(refused) = api::may_change(request, signed) {
            return *refused;
        }
        self.sessions.close(signed);
        tracing::info!(approver = %signed.approver, "console logout");
        let mut response = api::json(StatusCode::OK, &serde_json::json!({"signed_out": true}));
        set_header(&mut response, header::SET_COOKIE, &session::clear_cookie());
        response
    }
}

/// The body, if it fits in [`MAX_BODY`].
async fn read_body(body: Incoming) -> Option<Bytes> {
    Limited::new(body, MAX_BODY)
        .collect()
        .await
        .ok()
        .map(|b| b.to_bytes())
}

fn see_other(location: &'static str, cookie: Option<String>) -> Response<ProxyBody> {
    let mut response = Response::new(full(""));
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(location));
    if let Some(cookie) = cookie {
        set_header(&mut response, header::SET_COOKIE, &cookie);
    }
    response
}

fn set_header(response: &mut Response<ProxyBody>, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

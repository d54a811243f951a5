//! The console's files, compiled in so it works with no network and no
//! files beside the binary. Only the login page is filled in on the server
//! (with an escaped message); the rest is served as it is.

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{full, ProxyBody};
use crate::error::escape_markup;

const APP: &str = include_str!("assets/console.html");
const LOGIN: &str = include_str!("assets/login.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");
const ICON: &str = include_str!("assets/favicon.svg");

const HTML: &str = "text/html; charset=utf-8";

pub fn app() -> Response<ProxyBody> {
    file(StatusCode::OK, HTML, APP)
}

/// The sign-in form, with `message` (plain text) above it when not empty.
pub fn login(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let shown = match message {
        "" => String::new(),
        text => format!(
            "<p class=\"error\" role=\"alert\">{}</p>",
            escape_markup(text)
        ),
    };
    file(status, HTML, LOGIN.replace("{{message}}", &shown))
}

pub fn asset(path: &str) -> Response<ProxyBody> {
    let (content_type, text) = match path.trim_start_matches("/console/assets/") {
        "console.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "console.css" => ("text/css; charset=utf-8", STYLE),
        "favicon.svg" => ("image/svg+xml", ICON),
        _ => ("text/plain", "not found\n"),
    };
    let status = if content_type == "text/plain" {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    file(status, content_type, text)
}

fn file(
    status: StatusCode,
    content_type: &'static str,
    text: impl Into<bytes::Bytes>,
) -> Response<ProxyBody> {
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_a_message_is_text() {
        assert_eq!(
            escape_markup(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn pages_load_nothing_inline_or_from_elsewhere() {
        for page in [APP, LOGIN] {
            assert!(!page.contains("<script>"), "inline script");
            assert!(!page.contains("style="), "inline style");
            assert!(!page.contains("<style"), "inline style");
            assert!(!page.contains("http://") && !page.contains("https://"));
        }
        assert!(!SCRIPT.contains("innerHTML"), "data is written as text");
    }
}

//! The service's one secret: the bearer token. It is kept only as a SHA-256 and compared
//! in constant time; the dashboard's cookie carries a value derived from it, never the
//! token itself.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, Shared};
use crate::error::Error;

/// The dashboard's cookie.
pub const COOKIE: &str = "tenantctl_session";

/// The shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// The token, as its hash.
pub struct Token {
    hash: [u8; 32],
}

impl Token {
    /// The token from `TENANTCTL_API_TOKEN`, else from `token_file`; exit 3 without one,
    /// or with one shorter than [`MIN_TOKEN_LEN`].
    pub fn load(env: Option<String>, token_file: Option<&std::path::Path>) -> Result<Token, Error> {
        let raw = match (env.filter(|t| !t.trim().is_empty()), token_file) {
            (Some(t), _) => t,
            (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
                Error::setup(format!(
                    "cannot read serve.token_file {}: {e}",
                    path.display()
                ))
            })?,
            (None, None) => {
                return Err(Error::setup(
                    "tenantctl serve needs a token: set TENANTCTL_API_TOKEN, or serve.token_file in tenants.toml (a file holding it)",
                ))
            }
        };
        let token = raw.trim();
        if token.len() < MIN_TOKEN_LEN || token.chars().any(|c| c.is_control() || c == ' ') {
            return Err(Error::setup(format!(
                "the API token must be at least {MIN_TOKEN_LEN} characters, without spaces or control characters"
            )));
        }
        Ok(Token {
            hash: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// Whether `presented` is the token (constant time).
    pub fn accepts(&self, presented: &str) -> bool {
        let h: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        h.ct_eq(&self.hash).into()
    }

    /// The cookie value that stands for the token.
    pub fn session(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"tenantctl dashboard session\0");
        h.update(self.hash);
        hex::encode(h.finalize())
    }

    fn accepts_session(&self, value: &str) -> bool {
        value.as_bytes().ct_eq(self.session().as_bytes()).into()
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    // The scheme is case-insensitive (RFC 7235).
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

fn query_token(req: &Request) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "token").then(|| percent_decode(v))
    })
}

fn percent_decode(v: &str) -> String {
    // A form's `+` is a space; `%2B` stays a plus.
    percent_encoding::percent_decode_str(&v.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// How long a browser keeps the dashboard's cookie (12 hours); then `?token=` again.
pub const SESSION_MAX_AGE: u64 = 12 * 3600;

/// The query string without its `token` parameters, for the redirect after signing in.
fn without_token(query: Option<&str>) -> String {
    let kept: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty() && kv.split_once('=').map_or(*kv, |(k, _)| k) != "token")
        .collect();
    if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    }
}

/// Lets a request through with the token: the bearer header, or for GET and HEAD the
/// dashboard's cookie; `GET PAGE?token=TOKEN` on any dashboard page (not under `/api/`)
/// sets the cookie and redirects to the same page without the token. Anything else is
/// 401.
pub async fn require(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let token = &state.token;
    // `?token=` signs a browser in on the dashboard's pages only; on the API it is
    // ignored (the API takes the bearer header).
    let page = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    ) && !req.uri().path().starts_with("/api/");
    let signing_in = if page { query_token(&req) } else { None };
    if let Some(presented) = signing_in {
        if token.accepts(&presented) {
            let secure = if state.ctx.settings.serve_cookie_secure {
                "; Secure"
            } else {
                ""
            };
            let cookie = format!(
                "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_MAX_AGE}{secure}",
                token.session()
            );
            // The path as routed (one leading slash: never a protocol-relative URL
            // that would send the browser to another site).
            let path = format!("/{}", req.uri().path().trim_start_matches('/'));
            let location = format!("{path}{}", without_token(req.uri().query()));
            return (
                StatusCode::SEE_OTHER,
                [(header::SET_COOKIE, cookie), (header::LOCATION, location)],
            )
                .into_response();
        }
        return ApiError::new(StatusCode::UNAUTHORIZED, "invalid token").into_response();
    }
    // The cookie opens pages and reads only: a request that changes something needs the
    // bearer header, which another site's page cannot make a browser send.
    let reads = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let ok = match bearer(req.headers()) {
        Some(b) => token.accepts(b),
        None => reads && cookie(req.headers()).is_some_and(|c| token.accepts_session(&c)),
    };
    if !ok {
        let mut r = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or invalid token: send Authorization: Bearer TOKEN",
        )
        .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            "Bearer".parse().expect("static header"),
        );
        return r;
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_checked_and_never_kept() {
        let t = Token::load(Some("s3cret-token-0123456789".into()), None).unwrap();
        assert!(t.accepts("s3cret-token-0123456789"));
        assert!(!t.accepts("s3cret-token-012345678"));
        assert!(!t.accepts(""));
        assert!(!t.session().contains("s3cret"));
        assert!(t.accepts_session(&t.session()));
        assert!(!t.accepts_session("s3cret-token-0123456789"));
        assert!(Token::load(Some("short".into()), None).is_err());
        assert!(Token::load(None, None).is_err());
        assert!(Token::load(Some("with space in the token!".into()), None).is_err());
    }

    #[test]
    fn the_redirect_keeps_the_query_but_the_token() {
        assert_eq!(without_token(None), "");
        assert_eq!(without_token(Some("token=x")), "");
        assert_eq!(
            without_token(Some("page=2&token=x&q=a%20b")),
            "?page=2&q=a%20b"
        );
        assert_eq!(without_token(Some("token=x&token=y&tokens=1")), "?tokens=1");
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decode("a%2Bb+c%zz%"), "a+b c%zz%");
    }
}

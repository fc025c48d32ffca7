//! Who is calling: bearer API tokens (stored only as their SHA-256), browser sessions (an
//! HttpOnly, SameSite=Strict cookie signed with the token it was opened with), CSRF tokens for
//! the browser's writes, and a brake on repeated failed logins from one address.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use wflo_core::db::Executor;
use wflo_core::types::Role;

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "wflo_session";
/// The header a browser's API write carries its CSRF token in.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// The prefix every API token starts with (so a leaked one is recognisable in a scan).
pub const TOKEN_PREFIX: &str = "wflo_";

/// A new API token's secret: `wflo_` and 64 hex digits (256 random bits). Show it once; store
/// only [`hash_token`] of it.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// The SHA-256 (hex) an API token is stored and looked up by. The secrets are 256 random bits,
/// so a fast hash is enough: there is nothing to guess.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

fn mac(token: &str, what: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("any key length");
    m.update(what.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// The CSRF token of a session opened with `token`: only a page served to that session knows
/// it (another site cannot read it), and every instance computes the same.
pub(crate) fn csrf_of(token: &str) -> String {
    mac(token, "csrf")[..32].to_string()
}

/// A session cookie's value: the token, when the session ends, and a signature over both.
pub(crate) fn session_value(token: &str, expires_unix: i64) -> String {
    let sig = &mac(token, &format!("session:{expires_unix}"))[..32];
    format!("{token}.{expires_unix}.{sig}")
}

/// The token of a session cookie that is well-formed, signed and not expired.
fn session_token(value: &str, now_unix: i64) -> Option<String> {
    let mut parts = value.rsplitn(3, '.');
    let sig = parts.next()?;
    let expires: i64 = parts.next()?.parse().ok()?;
    let token = parts.next()?;
    if expires <= now_unix {
        return None;
    }
    let want = &mac(token, &format!("session:{expires}"))[..32];
    use subtle::ConstantTimeEq;
    if want.as_bytes().ct_eq(sig.as_bytes()).into() {
        Some(token.to_string())
    } else {
        None
    }
}

/// The value of cookie `name` in a request's headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// An authenticated caller: the token's name (the actor recorded for what it does) and role.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) name: String,
    pub(crate) role: Role,
    /// The secret it authenticated with (the CSRF token derives from it).
    secret: String,
    /// Whether it came with a session cookie (a browser) rather than a bearer header.
    pub(crate) via_cookie: bool,
}

impl Caller {
    /// Refuses a caller whose role does not include `needed` (403).
    pub(crate) fn require(&self, needed: Role) -> Result<(), ApiError> {
        if self.role.allows(needed) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "token `{}` has the {} role; this needs {} (ask an admin for a token with that role)",
                self.name,
                self.role.label(),
                needed.label()
            )))
        }
    }

    /// The CSRF token a page served to this caller carries in its forms.
    pub(crate) fn csrf(&self) -> String {
        csrf_of(&self.secret)
    }

    /// Checks a browser write's CSRF token (bearer callers need none: no browser sends their
    /// header by itself).
    pub(crate) fn check_csrf(&self, given: Option<&str>) -> Result<(), ApiError> {
        if !self.via_cookie {
            return Ok(());
        }
        use subtle::ConstantTimeEq;
        let want = self.csrf();
        match given {
            Some(g) if bool::from(want.as_bytes().ct_eq(g.as_bytes())) => Ok(()),
            _ => Err(ApiError::forbidden(
                "missing or wrong CSRF token; reload the page and try again",
            )),
        }
    }
}

/// The address a request came from.
pub(crate) fn client_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ip = client_ip(parts);
        state.throttle.check(ip)?;
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(|t| t.trim().to_string());
        let (secret, via_cookie) = match bearer {
            Some(t) => (t, false),
            None => match cookie(&parts.headers, SESSION_COOKIE) {
                Some(c) => match session_token(&c, chrono::Utc::now().timestamp()) {
                    Some(t) => (t, true),
                    None => {
                        return Err(ApiError::unauthenticated(
                            "the session expired or is not valid; log in again",
                        ));
                    }
                },
                None => {
                    return Err(ApiError::unauthenticated(
                        "this needs an API token: send `Authorization: Bearer <token>` \
                         (create one with `wflo tokens create --name NAME --role ROLE`)",
                    ));
                }
            },
        };
        let caller = authenticate(state, &secret).await?;
        let Some(mut caller) = caller else {
            state.throttle.failed(ip);
            return Err(ApiError::unauthenticated(
                "the API token is not valid or was revoked; ask an admin for a new one",
            ));
        };
        caller.via_cookie = via_cookie;
        // A browser's writes must carry the page's CSRF token (the web forms check their own
        // field; the JSON API takes the header).
        if via_cookie
            && parts.method != Method::GET
            && parts.method != Method::HEAD
            && parts
                .extensions
                .get::<axum::extract::OriginalUri>()
                .map_or(parts.uri.path(), |u| u.0.path())
                .starts_with("/api/")
        {
            let given = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            caller.check_csrf(given)?;
        }
        Ok(caller)
    }
}

/// The caller a token secret names, when it is a valid, unrevoked token.
pub(crate) async fn authenticate(
    state: &AppState,
    secret: &str,
) -> Result<Option<Caller>, ApiError> {
    if !secret.starts_with(TOKEN_PREFIX) || secret.len() > 200 {
        return Ok(None);
    }
    let token = state
        .wflo
        .db()
        .api_tokens()
        .authenticate(&hash_token(secret))
        .await?;
    Ok(token.map(|t| Caller {
        name: t.name,
        role: t.role,
        secret: secret.to_string(),
        via_cookie: false,
    }))
}

/// Failed logins per address: after [`Throttle::FREE`] failures, each attempt waits a delay
/// that doubles with every further failure (up to five minutes), answered 429 with
/// `Retry-After` until then. A success clears the address; a quiet quarter hour forgets it.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Throttle {
    const FREE: u32 = 5;
    const FORGET: Duration = Duration::from_secs(15 * 60);

    fn delay(count: u32) -> Duration {
        if count < Self::FREE {
            return Duration::ZERO;
        }
        Duration::from_secs((1u64 << (count - Self::FREE).min(9)).min(300))
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (u32, Instant)>> {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Refuses an address that must still wait.
    pub(crate) fn check(&self, ip: IpAddr) -> Result<(), ApiError> {
        let map = self.map();
        let Some((count, last)) = map.get(&ip) else {
            return Ok(());
        };
        let wait = Self::delay(*count);
        let elapsed = last.elapsed();
        if elapsed < wait && elapsed < Self::FORGET {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "too many failed logins from this address; wait and try again with a valid token",
            );
            e.retry_after = Some((wait - elapsed).as_secs().max(1));
            return Err(e);
        }
        Ok(())
    }

    /// Counts a failure.
    pub(crate) fn failed(&self, ip: IpAddr) {
        let mut map = self.map();
        let entry = map.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() > Self::FORGET {
            entry.0 = 0;
        }
        entry.0 += 1;
        entry.1 = Instant::now();
        if map.len() > 100_000 {
            map.retain(|_, (_, t)| t.elapsed() < Self::FORGET);
        }
    }

    /// Clears an address after a success.
    pub(crate) fn succeeded(&self, ip: IpAddr) {
        self.map().remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
        assert_eq!(hash_token(&a).len(), 64);
        assert_ne!(hash_token(&a), hash_token(&b));
    }

    #[test]
    fn a_session_cookie_must_be_signed_and_current() {
        let t = new_token();
        let v = session_value(&t, 2_000);
        assert_eq!(session_token(&v, 1_000).as_deref(), Some(t.as_str()));
        assert_eq!(session_token(&v, 2_000), None, "expired");
        let forged_expiry = v.replace(".2000.", ".9000.");
        assert_eq!(session_token(&forged_expiry, 1_000), None, "expiry changed");
        let other = session_value(&new_token(), 2_000);
        let (tok, rest) = other.split_once('.').unwrap();
        let _ = tok;
        assert_eq!(
            session_token(&format!("{t}.{rest}"), 1_000),
            None,
            "signature of another token"
        );
        assert_eq!(session_token("garbage", 1_000), None);
    }

    #[test]
    fn failed_logins_are_slowed_down() {
        let t = Throttle::default();
        let ip = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..Throttle::FREE - 1 {
            t.failed(ip);
            assert!(t.check(ip).is_ok());
        }
        t.failed(ip);
        let e = t.check(ip).unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(
            t.check(IpAddr::from([10, 0, 0, 2])).is_ok(),
            "other addresses are not slowed"
        );
        t.succeeded(ip);
        assert!(t.check(ip).is_ok());
    }
}

//! Passwords out of URLs before they reach a message or a log.

/// `url` with its password replaced by `***`: `scheme://user:***@host...`. A URL without a
/// password comes back unchanged. When the text cannot be read as `scheme://authority...` (or
/// an `@` stands after the authority, as when a password holds a `/`), everything before its
/// last `@` becomes `***`, so no part of a password survives.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && is_scheme(scheme)
    {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                return match userinfo.split_once(':') {
                    Some((user, password)) if !password.is_empty() => {
                        format!("{}://{user}:***@{host}{tail}", scheme.to_ascii_lowercase())
                    }
                    _ => url.to_string(),
                };
            }
            None if !tail.contains('@') => return url.to_string(),
            None => {}
        }
    }
    match url.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => url.to_string(),
    }
}

/// `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )` (RFC 3986).
fn is_scheme(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_replaced_and_the_rest_kept() {
        for (url, shown) in [
            (
                "postgres://wflo:hunter2@db.example:5432/wflo?sslmode=require",
                "postgres://wflo:***@db.example:5432/wflo?sslmode=require",
            ),
            (
                "rediss://user:secret@cache.example:6380",
                "rediss://user:***@cache.example:6380",
            ),
            (
                "redis://:secret@127.0.0.1:6379/2",
                "redis://:***@127.0.0.1:6379/2",
            ),
            // The last `@` of the authority ends the user information.
            ("redis://u:p@ss@host:6379", "redis://u:***@host:6379"),
            ("REDIS://u:p@h", "redis://u:***@h"),
            ("redis://u:p%2Fq@h#frag", "redis://u:***@h#frag"),
            // A malformed host or port does not matter: only the password is hidden.
            ("redis://u:hunter2@[::1:6379", "redis://u:***@[::1:6379"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn a_url_without_a_password_is_unchanged() {
        for url in [
            "sqlite://wflo.db?mode=rwc",
            "sqlite::memory:",
            "sqlite:wflo.db",
            "postgres://wflo@localhost/wflo",
            "postgres://wflo:@localhost/wflo",
            "redis://127.0.0.1:6379",
            "redis://[::1]:6379/0",
            "",
            "not a url",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn what_cannot_be_read_keeps_nothing_before_the_last_at() {
        for (url, shown) in [
            ("u:hunter2@[::1:6379", "***@[::1:6379"),
            ("redis://u:pa/ss@host:6379", "***@host:6379"),
            ("//u:hunter2@host", "***@host"),
            ("1redis://u:hunter2@host", "***@host"),
        ] {
            let got = redact_url(url);
            assert_eq!(got, shown, "{url}");
            assert!(!got.contains("hunter2") && !got.contains("pa/ss"), "{got}");
        }
    }
}

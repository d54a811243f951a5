//! The one reader of `Authorization`-style header values (`Authorization`,
//! `Proxy-Authorization`, an admin call's metadata): the scheme and the
//! credential it carries. Task tokens, the admin token and, later, workload
//! tokens are all read here, so a client's spelling (`bearer`, extra
//! spaces, `Basic` with the token as the password) means the same
//! everywhere.

use base64::Engine as _;
use zeroize::Zeroizing;

/// A credential as presented in one header value.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented<'a> {
    /// `Bearer <token>`.
    Bearer(&'a str),
    /// `Basic base64(user:password)`: what a proxy URL with user info
    /// (`http://agent:<token>@proxy:3128`) makes every client send.
    Basic { password: Zeroizing<String> },
}

impl Presented<'_> {
    /// The secret part: the bearer token, or Basic's password.
    pub fn secret(&self) -> &str {
        match self {
            Presented::Bearer(token) => token,
            Presented::Basic { password } => password,
        }
    }
}

/// Read `value` as `<scheme> <credentials>`; `None` for any other scheme or
/// a value that does not decode.
pub fn parse(value: &str) -> Option<Presented<'_>> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return (!rest.is_empty()).then_some(Presented::Bearer(rest));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?,
        );
        let text = std::str::from_utf8(&decoded).ok()?;
        let (_, password) = text.split_once(':')?;
        return Some(Presented::Basic {
            password: Zeroizing::new(password.to_string()),
        });
    }
    None
}

/// The bearer token in `value`, if that is what it holds.
pub fn bearer(value: &str) -> Option<&str> {
    match parse(value)? {
        Presented::Bearer(token) => Some(token),
        Presented::Basic { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_are_read_however_spelled() {
        assert_eq!(parse("Bearer abc"), Some(Presented::Bearer("abc")));
        assert_eq!(parse("  bEaReR   abc  "), Some(Presented::Bearer("abc")));
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        // `agent:tgt_x`
        let basic = parse("Basic YWdlbnQ6dGd0X3g=").unwrap();
        assert_eq!(basic.secret(), "tgt_x");
        assert_eq!(bearer("Basic YWdlbnQ6dGd0X3g="), None);
        // A password may hold colons; only the first one splits.
        assert_eq!(parse("basic dTphOmI=").unwrap().secret(), "a:b");
        for refused in [
            "",
            "Bearer",
            "Bearer ",
            "abc",
            "Digest abc",
            "Basic !!!",
            "Basic bm9jb2xvbg==",
        ] {
            assert_eq!(parse(refused), None, "{refused:?}");
        }
    }
}

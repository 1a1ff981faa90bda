//! Credentials in URLs, hidden before a URL is shown.
//!
//! A forward URL may carry credentials: `user:password@host`, or a token
//! in its query (`?access_token=…`, as DingTalk and WeCom bot URLs do).
//! [`redact`] is the one function that hides them, wherever a URL can be
//! shown: log lines, the errors recorded for attempts and deliveries,
//! `deliveries list|show`, the web console and `check-config`. It takes any text and
//! redacts every URL in it, so that it also serves error messages that
//! quote a URL, and rows recorded before it existed.

use std::borrow::Cow;

/// What a credential is replaced with.
pub const REDACTED: &str = "<redacted>";

/// `text` with the credentials of every URL in it (`scheme://…`) replaced
/// by [`REDACTED`]: the userinfo (`user:password@`, user included), and
/// the values of query and fragment parameters whose name suggests a
/// secret (`access_token`, `token`, `key`, `secret`, `sign`, `signature`,
/// `password`, …, in any case). The rest of the text is kept as it is.
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut out = String::new();
    // Up to where `text` has been copied to `out`.
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find("://") {
        let separator = search + found;
        let scheme_start = text[..separator]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let rest = separator + 3;
        let end = url_end(text, rest);
        search = end.max(rest);
        if scheme_start == separator || scheme_start < copied {
            continue;
        }
        let url = &text[scheme_start..end];
        if let Cow::Owned(redacted) = redact_url(url, separator - scheme_start + 3) {
            out.push_str(&text[copied..scheme_start]);
            out.push_str(&redacted);
            copied = end;
        }
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// Where the URL whose authority starts at `from` ends: at whitespace, a
/// quote or an angle bracket, less trailing punctuation of the sentence
/// around it.
fn url_end(text: &str, from: usize) -> usize {
    let mut end = text[from..]
        .find(|c: char| {
            c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '<' | '>' | '`')
        })
        .map_or(text.len(), |i| from + i);
    loop {
        let url = &text[from..end];
        let trim = match url.chars().last() {
            Some('.' | ',' | ';' | ':' | '!') => true,
            Some(')') => url.matches('(').count() < url.matches(')').count(),
            Some(']') => url.matches('[').count() < url.matches(']').count(),
            _ => false,
        };
        if !trim {
            return end;
        }
        end -= 1;
    }
}

/// One URL; its authority starts at `authority`.
fn redact_url(url: &str, authority: usize) -> Cow<'_, str> {
    let authority_end = url[authority..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority + i);
    let mut out = String::with_capacity(url.len());
    let mut changed = false;
    match url[authority..authority_end].rfind('@') {
        Some(at) if at > 0 => {
            out.push_str(&url[..authority]);
            out.push_str(REDACTED);
            out.push_str(&url[authority + at..authority_end]);
            changed = true;
        }
        _ => out.push_str(&url[..authority_end]),
    }
    // Path, then query and fragment parameters.
    let rest = &url[authority_end..];
    let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
    out.push_str(&rest[..path_end]);
    let mut parameters = &rest[path_end..];
    while let Some(lead) = parameters.chars().next() {
        // `lead` is `?` or `#`: the query, then the fragment.
        out.push(lead);
        let part = &parameters[1..];
        let part_end = if lead == '?' {
            part.find('#').unwrap_or(part.len())
        } else {
            part.len()
        };
        for (index, pair) in part[..part_end].split('&').enumerate() {
            if index > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, value)) if !value.is_empty() && secret_name(name) => {
                    out.push_str(name);
                    out.push('=');
                    out.push_str(REDACTED);
                    changed = true;
                }
                _ => out.push_str(pair),
            }
        }
        parameters = &part[part_end..];
    }
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(url)
    }
}

/// Does a parameter of this name carry a secret? Generous: hiding a
/// harmless value costs less than showing a token.
fn secret_name(name: &str) -> bool {
    const PARTS: [&str; 12] = [
        "token",
        "secret",
        "pass",
        "pwd",
        "sig",
        "key",
        "auth",
        "credential",
        "session",
        "ticket",
        "jwt",
        "cookie",
    ];
    let name = name.to_ascii_lowercase();
    PARTS.iter().any(|part| name.contains(part)) || matches!(name.as_str(), "ak" | "sk" | "code")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_hidden_user_and_password() {
        assert_eq!(
            redact("https://bot:s3cret@example.com:8443/hook"),
            "https://<redacted>@example.com:8443/hook"
        );
        assert_eq!(
            redact("http://only-user@example.com"),
            "http://<redacted>@example.com"
        );
        // An `@` in the path is not userinfo.
        assert_eq!(
            redact("https://example.com/users/@me"),
            "https://example.com/users/@me"
        );
    }

    #[test]
    fn token_like_query_values_are_hidden() {
        assert_eq!(
            redact("https://oapi.dingtalk.com/robot/send?access_token=abc123&timestamp=1&sign=xyz"),
            "https://oapi.dingtalk.com/robot/send?access_token=<redacted>&timestamp=1&sign=<redacted>"
        );
        assert_eq!(
            redact("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?KEY=693a91f6"),
            "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?KEY=<redacted>"
        );
        for name in [
            "token",
            "Token",
            "api_key",
            "apiKey",
            "secret",
            "client_secret",
            "Signature",
            "X-Amz-Signature",
            "password",
            "passwd",
            "auth",
        ] {
            assert_eq!(
                redact(&format!("http://h/p?id=7&{name}=v#top")),
                format!("http://h/p?id=7&{name}=<redacted>#top"),
                "{name}"
            );
        }
        assert_eq!(
            redact("http://h/cb#access_token=t0k&state=1"),
            "http://h/cb#access_token=<redacted>&state=1"
        );
    }

    #[test]
    fn harmless_urls_and_text_are_unchanged() {
        for text in [
            "",
            "answered 500 Internal Server Error",
            "https://example.com/vod-events?id=1&page=2",
            "http://127.0.0.1:8080/",
            "://nothing@here?token=x",
            "https://h/?token=",
        ] {
            assert!(matches!(redact(text), Cow::Borrowed(_)), "{text}");
        }
    }

    #[test]
    fn urls_inside_a_text_are_found() {
        assert_eq!(
            redact("cannot connect to https://u:p@h/x?token=t (twice), then http://h/?key=k."),
            "cannot connect to https://<redacted>@h/x?token=<redacted> (twice), then http://h/?key=<redacted>."
        );
        assert_eq!(
            redact("redirect to \"http://a:b@internal/?secret=s\" not followed"),
            "redirect to \"http://<redacted>@internal/?secret=<redacted>\" not followed"
        );
        assert_eq!(
            redact("(see https://h/?token=abc)"),
            "(see https://h/?token=<redacted>)"
        );
    }

    #[test]
    fn redacting_twice_changes_nothing_more() {
        let once = redact("https://u:p@h/?access_token=t&x=1").into_owned();
        assert_eq!(redact(&once), once);
    }
}

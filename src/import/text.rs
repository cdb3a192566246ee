//! The reading the five parsers share: comment-free lines, words and `key = value`, hosts
//! and ports, pins and CA files, the mailname, root's alias, and shell words (nullmailer).

use super::{SYSTEM_CA, Sourced, Sources};

/// Non-blank lines that are not `#` comments, trimmed, with their 1-based numbers.
pub(super) fn conf_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// The first word and the rest (trimmed).
pub(super) fn split_word(line: &str) -> (&str, &str) {
    match line.find(char::is_whitespace) {
        Some(i) => (&line[..i], line[i..].trim()),
        None => (line, ""),
    }
}

/// `key = value` / `key=value` (the value may be empty).
pub(super) fn split_eq(line: &str) -> Option<(&str, &str)> {
    line.split_once('=').map(|(k, v)| (k.trim(), v.trim()))
}

pub(super) fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(s)
}

pub(super) fn yes(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "on" | "yes" | "true" | "1" | ""
    )
}

pub(super) fn no(v: &str) -> bool {
    !yes(v)
}

/// The first non-blank line of a small file.
pub(super) fn first_line(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
}

pub(super) fn port_of(s: &str) -> std::result::Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("bad port {:?}", s.trim())),
    }
}

/// `[host]:port`, `[host]`, `host:port`, `host`, or a bare IPv6 address.
pub(super) fn host_port(s: &str) -> std::result::Result<(String, Option<u16>), String> {
    let s = s.trim();
    if let Some(r) = s.strip_prefix('[') {
        let (h, after) = r
            .split_once(']')
            .ok_or_else(|| format!("unclosed '[' in {s:?}"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(port_of(p)?),
            None if after.is_empty() => None,
            None => return Err(format!("junk after ']' in {s:?}")),
        };
        return Ok((h.to_string(), port));
    }
    match s.split_once(':') {
        Some((h, p)) if !p.contains(':') => Ok((h.to_string(), Some(port_of(p)?))),
        _ => Ok((s.to_string(), None)),
    }
}

/// A SHA-256 fingerprint (hex, colons allowed) as relayq's pin_sha256, if it is one.
pub(super) fn sha256_pin(s: &str) -> Option<String> {
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// A CA file, unless it is the system bundle (which relayq trusts anyway).
pub(super) fn ca_file(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty() && !SYSTEM_CA.contains(&s)).then(|| s.to_string())
}

/// The last value set for `key` (later lines win, as in the tools).
pub(super) fn last(kv: &[(String, String)], key: &str) -> Option<String> {
    kv.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

pub(super) fn set(slot: &mut Sourced, value: &str, from: &str) {
    let v = value.trim();
    if !v.is_empty() {
        *slot = Some((v.to_string(), from.to_string()));
    }
}

/// The mailname (first line of /etc/mailname) as a domain, when it has a dot.
pub(super) fn mailname(src: &Sources, path: &str) -> Option<String> {
    (src.read)(path)
        .as_deref()
        .and_then(first_line)
        .filter(|m| m.contains('.'))
}

/// The external address root's mail goes to in an aliases(5) file, if any.
pub(super) fn root_alias(text: &str) -> Option<String> {
    let mut logical = String::new();
    let mut found = None;
    for line in text.lines().chain(std::iter::once("")) {
        if line.starts_with([' ', '\t']) && !logical.is_empty() {
            logical.push_str(line);
            continue;
        }
        if let Some((name, targets)) = logical.split_once(':')
            && name.trim().eq_ignore_ascii_case("root")
        {
            found = targets
                .split(',')
                .map(|t| unquote(t.trim()))
                .find(|t| t.contains('@') && crate::address::is_valid_mailbox(t))
                .map(str::to_string);
        }
        logical = if line.trim_start().starts_with('#') {
            String::new()
        } else {
            line.to_string()
        };
    }
    found
}

/// Split a line by POSIX shell rules (quotes and backslashes), as nullmailer reads remotes.
pub(super) fn shell_words(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err("unterminated ' quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x @ ('"' | '\\' | '$' | '`')) => cur.push(x),
                            Some(x) => {
                                cur.push('\\');
                                cur.push(x);
                            }
                            None => return Err("unterminated \" quote".into()),
                        },
                        Some(x) => cur.push(x),
                        None => return Err("unterminated \" quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(x) = chars.next() {
                    cur.push(x);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(host_port("[a.b]:587").unwrap(), ("a.b".into(), Some(587)));
        assert_eq!(host_port("a.b").unwrap(), ("a.b".into(), None));
        assert_eq!(host_port("fe80::1").unwrap(), ("fe80::1".into(), None));
        assert!(host_port("a.b:x").is_err());
        assert!(host_port("[a.b").is_err());
        assert_eq!(
            shell_words(r#"h smtp pass='a b' user="c\"d" x\ y"#).unwrap(),
            ["h", "smtp", "pass=a b", "user=c\"d", "x y"]
        );
        assert!(shell_words("a 'b").is_err());
        assert_eq!(sha256_pin(&"AB:".repeat(32)), Some("ab".repeat(32)));
        assert_eq!(sha256_pin("abcd"), None);
        assert_eq!(
            root_alias("# x\nroot: admin, ops@example.com\n").as_deref(),
            Some("ops@example.com")
        );
        assert_eq!(root_alias("root: admin\n"), None);
    }
}

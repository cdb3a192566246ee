//! Who local mail is for and from, found the same way for every importer (after the tool's
//! own settings, which win): the admin from the aliases file's `root:` entry (the tool's
//! aliases file, else /etc/aliases), the domain from the sender's address (msmtp's `from`,
//! nullmailer's `allmailfrom`, dma's `MASQUERADE`, ssmtp's revaliases), else /etc/mailname.

use super::text::{mailname, root_alias, set};
use super::{Imported, Sources};

/// Fill in what the tool's own settings left open.
pub(super) fn complete(src: &Sources, imp: &mut Imported) {
    if imp.admin.is_none() {
        let file = imp
            .aliases
            .as_ref()
            .map_or("/etc/aliases".to_string(), |(p, _)| p.clone());
        if let Some(a) = (src.read)(&file).as_deref().and_then(root_alias) {
            set(&mut imp.admin, &a, &format!("{file} root"));
        }
    }
    if imp.domain.is_none()
        && let Some((s, from)) = &imp.sender
        && let Some((_, d)) = s.rsplit_once('@')
        && crate::address::is_valid_domain(d)
    {
        let why = format!("{from}, its domain");
        set(&mut imp.domain, d, &why);
    }
    if imp.domain.is_none()
        && let Some(m) = mailname(src, "/etc/mailname")
    {
        set(&mut imp.domain, &m, "/etc/mailname");
    }
}

#[cfg(test)]
mod tests {
    use super::super::Tool;
    use super::*;

    fn run(tool: Tool, main: &str, files: &[(&str, &str)]) -> Imported {
        let read = |n: &str| {
            files
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        };
        tool.parse(&Sources { main, read: &read }).unwrap()
    }

    /// Every importer finds the admin in /etc/aliases and derives the domain from the
    /// sender the same way.
    #[test]
    fn same_for_every_tool() {
        let aliases = ("/etc/aliases", "postmaster: root\nroot: ops@example.com\n");
        for (tool, main) in [
            (
                Tool::Msmtp,
                "account default\nhost h.example.com\nfrom app@example.org\n",
            ),
            (Tool::Nullmailer, "h.example.com\n"),
            (Tool::Ssmtp, "mailhub=h.example.com\n"),
            (
                Tool::Dma,
                "SMARTHOST h.example.com\nMASQUERADE app@example.org\n",
            ),
            (Tool::Postfix, "relayhost = [h.example.com]:587\n"),
        ] {
            let files = [
                aliases,
                ("allmailfrom", "app@example.org\n"),
                ("revaliases", "root:app@example.org:h.example.com\n"),
            ];
            let imp = run(tool, main, &files);
            assert_eq!(
                imp.admin.as_ref().map(|a| a.0.as_str()),
                Some("ops@example.com"),
                "{tool:?}"
            );
            if tool != Tool::Postfix {
                assert_eq!(
                    imp.domain.as_ref().map(|a| a.0.as_str()),
                    Some("example.org"),
                    "{tool:?}"
                );
            }
        }
        // The tool's own admin wins; /etc/mailname is the last resort for the domain.
        let imp = run(
            Tool::Ssmtp,
            "mailhub=h.example.com\nroot=me@example.net\n",
            &[aliases, ("/etc/mailname", "host.example.com\n")],
        );
        assert_eq!(
            imp.admin.as_ref().map(|a| a.0.as_str()),
            Some("me@example.net")
        );
        assert_eq!(
            imp.domain.as_ref().map(|a| a.0.as_str()),
            Some("host.example.com")
        );
    }
}

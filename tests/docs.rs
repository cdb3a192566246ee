//! The documentation that ships: the man pages render without a single groff/man warning
//! (`man --warnings -l`, as the package installs them), and relayq(8) has a section for
//! every command `relayq --help` lists.

mod support;
use std::process::Command;
use support::*;

const PAGES: &[&str] = &["sendmail.8", "relayq.8", "relayq.toml.5"];

#[test]
fn man_pages_render_without_warnings() {
    for page in PAGES {
        let path = repo().join("docs/man").join(page);
        let o = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&path)
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .expect("man (man-db: scripts/deps.sh installs it)");
        assert!(o.status.success(), "{page}: {}", stderr(&o));
        assert_eq!(stderr(&o), "", "{page} has warnings");
        assert!(o.stdout.len() > 1000, "{page} rendered almost nothing");
    }
}

#[test]
fn relayq_8_documents_every_command() {
    let o = Command::new(BIN).arg("--help").output().unwrap();
    let usage = String::from_utf8_lossy(&o.stdout).into_owned();
    let page = std::fs::read_to_string(repo().join("docs/man/relayq.8")).unwrap();
    let commands: Vec<&str> = usage
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(commands.len() >= 10, "{usage}");
    for c in commands {
        let documented = page.lines().any(|l| {
            (l.starts_with(".B ") || l.starts_with(".BR "))
                && l.split_whitespace()
                    .nth(1)
                    .is_some_and(|w| w.trim_matches('"') == c)
        });
        assert!(documented, "relayq(8) has no section for `{c}`");
    }
}

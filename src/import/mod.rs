//! `relayq import --from nullmailer|msmtp|ssmtp|dma|postfix`: read the configuration of the
//! tool relayq replaces and write relayq's equivalent (config + secrets file, through
//! [`crate::conffile`]), saying what was carried over and what could not be, and why.
//!
//! Layers: the five parsers turn source text into an `Imported` (no I/O: other files they
//! need come through a `Sources::read` callback, so tests feed them from memory);
//! `render` turns that into relayq TOML, the secret and the notes; `run` is the thin
//! command that reads the files, prints and writes. Nothing printed ever holds a secret.
//!
//! Then the old tool's queue: the mail it still holds is moved into relayq's spool
//! (`queue`, with Postfix's queue file format in `pfqueue`).
//!
//! Files: one per tool (`nullmailer`, `msmtp`, `ssmtp`, `dma`, `postfix`), `text` for the
//! reading they share, `identity` for the admin, sender and domain every importer finds the
//! same way, `render` for relayq's TOML, `queue` and `pfqueue` for the old queue. Here: what
//! they share and the command.

mod dma;
mod identity;
mod msmtp;
mod nullmailer;
mod pfqueue;
mod postfix;
mod queue;
mod render;
mod ssmtp;
mod text;

pub(crate) use queue::old_queues;

use crate::error::{Class, Error, Result};
use render::render;
use std::path::{Path, PathBuf};

/// The tools relayq can import from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Nullmailer,
    Msmtp,
    Ssmtp,
    Dma,
    Postfix,
}

impl Tool {
    const ALL: [Tool; 5] = [
        Tool::Nullmailer,
        Tool::Msmtp,
        Tool::Ssmtp,
        Tool::Dma,
        Tool::Postfix,
    ];

    fn from_name(s: &str) -> Option<Tool> {
        Tool::ALL.into_iter().find(|t| t.name() == s)
    }

    fn name(self) -> &'static str {
        match self {
            Tool::Nullmailer => "nullmailer",
            Tool::Msmtp => "msmtp",
            Tool::Ssmtp => "ssmtp",
            Tool::Dma => "dma",
            Tool::Postfix => "postfix",
        }
    }

    /// Where the tool keeps its configuration: a directory, or msmtp's file.
    fn default_path(self) -> &'static str {
        match self {
            Tool::Nullmailer => "/etc/nullmailer",
            Tool::Msmtp => "/etc/msmtprc",
            Tool::Ssmtp => "/etc/ssmtp",
            Tool::Dma => "/etc/dma",
            Tool::Postfix => "/etc/postfix",
        }
    }

    /// The main file inside the configuration directory.
    fn main_file(self) -> &'static str {
        match self {
            Tool::Nullmailer => "remotes",
            Tool::Msmtp => "msmtprc",
            Tool::Ssmtp => "ssmtp.conf",
            Tool::Dma => "dma.conf",
            Tool::Postfix => "main.cf",
        }
    }

    /// Parse the tool's configuration, then find what it left open the way every importer
    /// does ([`identity`]).
    fn parse(self, src: &Sources) -> std::result::Result<Imported, String> {
        let mut imp = match self {
            Tool::Nullmailer => nullmailer::nullmailer(src),
            Tool::Msmtp => msmtp::msmtp(src),
            Tool::Ssmtp => ssmtp::ssmtp(src),
            Tool::Dma => dma::dma(src),
            Tool::Postfix => postfix::postfix(src),
        }?;
        identity::complete(src, &mut imp);
        Ok(imp)
    }
}

/// The source texts: the main file, and a reader for the files it refers to (a bare name is
/// looked up beside the main file; an absolute path is read as is, see [`run`]).
struct Sources<'a> {
    main: &'a str,
    read: &'a dyn Fn(&str) -> Option<String>,
}

/// How the old tool talked to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    /// TLS from the first byte (port 465, "ssl", "tls", wrapper mode).
    Implicit,
    /// STARTTLS, required.
    StartTls,
    /// STARTTLS when offered, else plaintext.
    Opportunistic,
    /// No TLS.
    Plain,
}

/// One relay as the old tool described it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RelaySpec {
    /// Where it came from, for messages ("remotes line 2").
    origin: String,
    host: String,
    port: Option<u16>,
    wire: Wire,
    username: Option<String>,
    password: Option<String>,
    password_command: Option<String>,
    /// relayq's auth value (plain, login, xoauth2, none), when the tool forced one.
    auth: Option<&'static str>,
    ca_file: Option<String>,
    pin_sha256: Option<String>,
    ehlo_name: Option<String>,
}

impl RelaySpec {
    fn new(origin: impl Into<String>, host: &str, port: Option<u16>) -> RelaySpec {
        RelaySpec {
            origin: origin.into(),
            host: host.to_string(),
            port,
            wire: Wire::Plain,
            username: None,
            password: None,
            password_command: None,
            auth: None,
            ca_file: None,
            pin_sha256: None,
            ehlo_name: None,
        }
    }
}

/// A value carried over with where it came from.
type Sourced = Option<(String, String)>;

/// What a parser found: relays in order of preference, addresses, and the settings it could
/// not carry over (each "what: why").
#[derive(Debug, Default)]
struct Imported {
    relays: Vec<RelaySpec>,
    /// Relays chosen by sender (`[[sender_relay]]`): the senders, the relay.
    sender_relays: Vec<SenderSpec>,
    admin: Sourced,
    sender: Sourced,
    domain: Sourced,
    aliases: Sourced,
    /// `[queue]` settings as relayq durations ("4h"): when to warn, when to give up.
    warn_after: Sourced,
    lifetime: Sourced,
    notes: Vec<String>,
}

/// A relay for some senders (Postfix's sender_dependent_relayhost_maps, msmtp's accounts).
#[derive(Debug)]
struct SenderSpec {
    /// relayq's patterns: `user@domain` or `*@domain`.
    senders: Vec<String>,
    relay: RelaySpec,
}

impl Imported {
    fn skip(&mut self, what: impl std::fmt::Display, why: &str) {
        self.notes.push(format!("{what}: {why}"));
    }
}

// Reasons shared by the parsers.
const WHY_CERTCHECK: &str = "not carried over: relayq always verifies the relay's certificate; if it is self-signed or from a private CA, set ca_file (its CA) or pin_sha256";
const WHY_CLIENT_CERT: &str = "TLS client certificates are not supported by relayq";
const WHY_AUTH: &str = "relayq authenticates with PLAIN or LOGIN (auto) or XOAUTH2; using auto";
const WHY_FROM: &str = "relayq always rewrites the envelope and From of local senders to address.sender and keeps other senders as given";
const WHY_NONE: &str = "no relayq equivalent";
const SYSTEM_CA: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ssl/certs",
    "system",
];

// ---------- the command ----------

struct Args {
    tool: Tool,
    path: Option<PathBuf>,
    /// The old tool's queue directory (default: where the tool keeps it).
    queue: Option<PathBuf>,
    /// Take the old queue over with the existing relayq config; import no config.
    queue_only: bool,
    dry_run: bool,
    force: bool,
}

/// The options, from the argument table (`crate::args`: flags, `--help`, the man page).
fn parse_args(p: &crate::args::Parsed) -> Result<Args> {
    let usage = |m: &str| Error::usage(format!("import: {m} (see relayq import --help)"));
    let v = p.value("from").ok_or_else(|| usage("--from is required"))?;
    let names: Vec<&str> = Tool::ALL.iter().map(|t| t.name()).collect();
    let tool = Tool::from_name(v).ok_or_else(|| {
        usage(&match crate::args::nearest(v, names.iter().copied()) {
            Some(n) => format!("unknown tool {v:?}; did you mean {n}?"),
            None => format!("unknown tool {v:?}: use one of {}", names.join(", ")),
        })
    })?;
    Ok(Args {
        tool,
        path: p.path("path"),
        dry_run: p.switch("dry-run"),
        force: p.switch("force"),
        queue: p.path("queue"),
        queue_only: p.switch("queue-only"),
    })
}

/// `relayq [-C out.toml] import ...`: exit 0 ok, 64 usage (or the config exists and no
/// --force), 65 the source cannot be parsed or has no usable relay, 66 the source config is
/// missing, 77 it cannot be read (permission), 75 writing failed or mail was left in the old
/// queue (the report says which and why).
pub(crate) fn run(p: &crate::args::Parsed) -> Result<i32> {
    let a = parse_args(p)?;
    let config_flag = p.config.as_deref();
    let given = a.path.is_some();
    let path = a
        .path
        .clone()
        .unwrap_or_else(|| PathBuf::from(a.tool.default_path()));
    let main_path = if path.is_dir() {
        path.join(a.tool.main_file())
    } else {
        path.clone()
    };
    let out = crate::config::choose_path(config_flag);
    if a.queue_only {
        let main = std::fs::read_to_string(&main_path).ok();
        return queue::run(&a, main.as_deref(), &out);
    }
    let dir = main_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let main = std::fs::read_to_string(&main_path).map_err(|e| {
        let class = match e.kind() {
            std::io::ErrorKind::PermissionDenied => Class::NoPerm,
            _ => Class::NoInput,
        };
        Error::new(
            class,
            format!(
                "no {} configuration to import: {}: {e}",
                a.tool.name(),
                main_path.display()
            ),
        )
    })?;
    // Files the config refers to: bare names beside the main file; with --path, absolute
    // paths are looked up by their name in that directory first.
    let read = |name: &str| -> Option<String> {
        let p = Path::new(name);
        let local = if p.is_absolute() {
            given.then(|| p.file_name().map(|f| dir.join(f))).flatten()
        } else {
            Some(dir.join(p))
        };
        local
            .and_then(|l| std::fs::read_to_string(l).ok())
            .or_else(|| {
                p.is_absolute()
                    .then(|| std::fs::read_to_string(p).ok())
                    .flatten()
            })
    };
    let src = Sources {
        main: &main,
        read: &read,
    };
    let source = if a.tool == Tool::Msmtp {
        main_path.display().to_string()
    } else {
        dir.display().to_string()
    };
    let bad = |e: String| Error::data(format!("{} {source}: {e}", a.tool.name()));
    let imp = a.tool.parse(&src).map_err(bad)?;
    let secret_path = crate::conffile::secret_path_for(&out);
    let r = render(&imp, a.tool, &source, &secret_path).map_err(bad)?;
    crate::config::Config::parse(&r.toml, &out)
        .map_err(|e| bad(format!("the imported config does not validate: {}", e.msg)))?;
    // The example config the package installs (and its empty password file) is nobody's
    // work: replaced without --force, as `relayq setup` does. Anything else is refused
    // here, before the report, so a refusal never follows a "carried over" list.
    let example = !a.force && crate::conffile::untouched_install(&out);
    let force = a.force || example;
    if !a.dry_run {
        crate::conffile::check_absent(&out, force)?;
        if r.secret.is_some() {
            crate::conffile::check_absent(&secret_path, force)?;
        }
        for (p, _) in &r.extra_secrets {
            crate::conffile::check_absent(p, force)?;
        }
    }
    println!("relayq import: from {} ({source})", a.tool.name());
    println!("carried over:");
    for c in &r.carried {
        println!("  {c}");
    }
    if r.notes.is_empty() {
        println!("not carried over: nothing");
    } else {
        println!("not carried over:");
        for n in &r.notes {
            println!("  - {n}");
        }
    }
    if a.dry_run {
        println!("\n--dry-run: would write {}:\n", out.display());
        print!("{}", r.toml);
        let extra = r.extra_secrets.iter().map(|(p, _)| p.as_path());
        for p in r
            .secret
            .as_ref()
            .map(|_| secret_path.as_path())
            .into_iter()
            .chain(extra)
        {
            println!(
                "\n--dry-run: would write {} (mode 0600, or 0640 root:relayq): <the password, not shown>",
                p.display()
            );
        }
        println!();
        let code = queue::run(&a, Some(&main), &out)?;
        println!("\nnothing written");
        return Ok(code);
    }
    let secret = r
        .secret
        .as_deref()
        .map(|s| (secret_path.as_path(), s.as_bytes()));
    // The [[sender_relay]]s' secrets first: the config is written last and names them.
    for (p, pw) in &r.extra_secrets {
        crate::conffile::write_secret(p, pw.as_bytes())?;
        println!("wrote {} (the password of a relay by sender)", p.display());
    }
    let w = crate::conffile::write(&out, &r.toml, secret, force)?;
    if example {
        println!(
            "wrote {} (it held the example config the package installs: replaced)",
            w.config.display()
        );
    } else {
        println!("wrote {}", w.config.display());
    }
    if let Some(s) = &w.secret {
        use std::os::unix::fs::MetadataExt;
        let mode = std::fs::metadata(s).map(|m| m.mode() & 0o777).unwrap_or(0);
        println!("wrote {} (mode {mode:04o}, the password)", s.display());
    }
    let code = queue::run(&a, Some(&main), &out)?;
    println!(
        "next: relayq -C {} test, then switch /usr/sbin/sendmail over (docs/migration.md)",
        out.display()
    );
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::render::Rendered;
    use super::*;
    use proptest::prelude::*;

    fn parse_with(tool: Tool, main: &str, files: &[(&str, &str)]) -> Result<Rendered, String> {
        let read = |n: &str| {
            files
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        };
        let imp = tool.parse(&Sources { main, read: &read })?;
        render(&imp, tool, "/src", Path::new("/etc/relayq/password"))
    }

    fn ok(tool: Tool, main: &str, files: &[(&str, &str)]) -> Rendered {
        let r = parse_with(tool, main, files).unwrap();
        crate::config::Config::parse(&r.toml, Path::new("/t.toml")).unwrap();
        r
    }

    #[test]
    fn tls_mapping_and_presets() {
        let r = ok(
            Tool::Nullmailer,
            "smtp.gmail.com smtp --port=465 --user=u --pass=p\n",
            &[],
        );
        assert!(r.toml.contains("provider = \"gmail\""), "{}", r.toml);
        let r = ok(Tool::Nullmailer, "127.0.0.1\n", &[]);
        assert!(r.toml.contains("allow_plaintext = true"), "{}", r.toml);
        let r = ok(
            Tool::Nullmailer,
            "email-smtp.eu-west-1.amazonaws.com smtp --tls --user=AKIA --pass=x\n",
            &[],
        );
        assert!(
            r.toml.contains("provider = \"ses:eu-west-1\""),
            "{}",
            r.toml
        );
        assert_eq!(r.secret.as_deref(), Some("x"));
        assert!(!r.toml.contains("\"x\""));
        let r = ok(
            Tool::Nullmailer,
            "mx.example.com smtp --starttls --port=2525\n",
            &[],
        );
        assert!(r.toml.contains("url = \"smtp://mx.example.com:2525\""));
        assert!(
            r.notes.iter().all(|n| !n.contains("no TLS")),
            "{:?}",
            r.notes
        );
        let r = ok(Tool::Nullmailer, "fe80::1 smtp --tls\n", &[]);
        assert!(r.toml.contains("smtps://[fe80::1]:465"), "{}", r.toml);
        let r = ok(
            Tool::Nullmailer,
            "q.example.com qmqp\nm.example.com smtp --ssl\n",
            &[],
        );
        assert!(r.notes.iter().any(|n| n.contains("qmqp")));
        assert!(r.toml.contains("smtps://m.example.com:465"));
    }

    #[test]
    fn dma_and_postfix_details() {
        let conf = "SMARTHOST mx.example.com\nPORT 587\nSECURETRANSFER\nSTARTTLS\nOPPORTUNISTIC_TLS\nFINGERPRINT ";
        let r = ok(
            Tool::Dma,
            &format!("{conf}{}\nMASQUERADE example.org\n", "A".repeat(64)),
            &[],
        );
        assert!(r.toml.contains("smtp://mx.example.com:587"));
        assert!(
            r.toml
                .contains(&format!("pin_sha256 = \"{}\"", "a".repeat(64)))
        );
        assert!(r.toml.contains("domain = \"example.org\""));
        assert!(r.notes.iter().any(|n| n.contains("never falls back")));
        let main = "relayhost = [mx.example.com]:465, backup.example.com:587\nsmtp_tls_security_level = verify\nsmtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = texthash:/etc/postfix/sasl_passwd\n";
        let r = ok(
            Tool::Postfix,
            main,
            &[(
                "/etc/postfix/sasl_passwd",
                "[mx.example.com]:465 u:pw\nbackup.example.com u:pw\n",
            )],
        );
        assert!(r.toml.contains("smtps://mx.example.com:465"));
        assert!(
            r.toml
                .contains("[[fallback_relay]]\nurl = \"smtp://backup.example.com:587\"")
        );
        assert_eq!(r.toml.matches("password_file").count(), 2, "{}", r.toml);
        assert!(parse_with(Tool::Postfix, "relayhost =\n", &[]).is_err());
        // Queue times: a bare number is hours for delay_warning_time, days for the lifetime.
        for (conf, want, note) in [
            (
                "delay_warning_time = 4\nmaximal_queue_lifetime = 3\n",
                ["warn_after = \"4h\"", "lifetime = \"3d\""],
                None,
            ),
            (
                "delay_warning_time = 90m\nmaximal_queue_lifetime = 1w\n",
                ["warn_after = \"90m\"", "lifetime = \"7d\""],
                None,
            ),
            (
                "delay_warning_time = 0h\nmaximal_queue_lifetime = 0\n",
                ["", ""],
                Some("maximal_queue_lifetime = 0"),
            ),
            (
                "delay_warning_time = soon\n",
                ["", ""],
                Some("delay_warning_time = soon"),
            ),
        ] {
            let r = ok(
                Tool::Postfix,
                &format!("relayhost = [mx.example.com]:587\n{conf}"),
                &[],
            );
            for w in want.iter().filter(|w| !w.is_empty()) {
                assert!(
                    r.toml.contains("[queue]\n") && r.toml.contains(w),
                    "{conf}: {}",
                    r.toml
                );
            }
            if want[0].is_empty() {
                assert!(!r.toml.contains("warn_after"), "{conf}: {}", r.toml);
            }
            if let Some(n) = note {
                assert!(
                    r.notes.iter().any(|x| x.starts_with(n)),
                    "{conf}: {:?}",
                    r.notes
                );
            }
        }
    }

    #[test]
    fn msmtp_accounts() {
        let rc = "account a\nhost a.example.com\nport 587\ntls on\nauth xoauth2\npasswordeval \"oauth2 token\"\naccount b\nhost b.example.com\n";
        let r = ok(Tool::Msmtp, &format!("{rc}account default : a\n"), &[]);
        assert!(r.toml.contains("smtp://a.example.com:587"));
        assert!(r.toml.contains("auth = \"xoauth2\""));
        assert!(r.toml.contains("password_command = \"oauth2 token\""));
        assert!(r.notes.iter().any(|n| n.starts_with("account b:")));
        assert!(
            parse_with(Tool::Msmtp, rc, &[]).is_err(),
            "two accounts, none default"
        );
        assert!(parse_with(Tool::Msmtp, "account x : nope\n", &[]).is_err());
    }

    #[test]
    fn bad_values_are_notes_not_errors() {
        let r = ok(
            Tool::Ssmtp,
            "mailhub=smtp.example.com:465\nroot=not an@address@x\nrewriteDomain=bad domain\n",
            &[],
        );
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains("not a valid address.domain")),
            "{:?}",
            r.notes
        );
        assert!(parse_with(Tool::Ssmtp, "mailhub=bad host!\n", &[]).is_err());
        assert!(
            parse_with(Tool::Ssmtp, "mailhub=m.example.com\nno equals sign\n", &[])
                .unwrap_err()
                .contains("line 2")
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        // Random input (and random lines of each tool's keywords) never panics, and whatever
        // renders is a valid relayq config.
        #[test]
        fn never_panics(
            lines in proptest::collection::vec(
                prop_oneof![
                    any::<String>(),
                    "(host|port|tls|account|defaults|SMARTHOST|PORT|mailhub=|relayhost =|AuthPass=|SECURETRANSFER)[ =:\\[\\]a-z0-9.@%$'\"]{0,30}",
                ],
                0..12,
            ),
            aux in any::<String>(),
        ) {
            let main = lines.join("\n");
            for tool in Tool::ALL {
                if let Ok(r) = parse_with(tool, &main, &[("/etc/aliases", &aux), ("/etc/mailname", &aux), ("adminaddr", &aux)]) {
                    prop_assert!(crate::config::Config::parse(&r.toml, Path::new("/t.toml")).is_ok(), "{}", r.toml);
                }
            }
        }
    }
}

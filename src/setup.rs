//! `relayq setup`: the first ten minutes. Asks (or takes as flags, for Ansible and
//! Dockerfiles) the provider, the credentials, the admin and sender addresses; writes the
//! config and the secrets file with the right owner and modes (through `conffile`); makes
//! the spool; then proves it with `relayq test`. The secret is read without echo (or from
//! stdin with `--password-stdin`), never taken from argv and never printed.

use crate::conffile::{self, toml_str};
use crate::config::{self, Config};
use crate::error::{Class, Error, Result};
use crate::provider::{self, PRESETS};
use crate::spool::Layout;
use std::io::BufRead;
use std::path::{Path, PathBuf};

const USAGE: &str = "\
usage: relayq [-C config] setup [options]

Asks what it needs on a terminal; with flags (or no terminal) it asks nothing.
  --provider NAME        smtp2go, ses:REGION, sendgrid, mailgun, postmark, gmail,
                         office365, fastmail
  --url URL              any other relay: smtps://host:465 or smtp://host:587
  --username USER        the SMTP user (SendGrid: apikey)
  --password-stdin       read the password or API key from stdin (first line)
  --password-command CMD a command printing the password or an OAuth2 token
  --password-file FILE   use an existing secrets file as it is
  --auth KIND            auto, plain, login, xoauth2
  --admin ADDR           where mail for root and other local accounts goes
  --sender ADDR          the sender address the relay accepts (verified with it)
  --domain DOMAIN        qualifies bare names (default: the sender's domain)
  --ca-file FILE         extra trust anchor (PEM) for a private relay
  --spool-dir DIR        spool directory (default /var/spool/relayq)
  --to ADDR              send the test message here (default: the admin address)
  --no-test              do not run `relayq test` afterwards
  --no-send              run `relayq test` without sending a message
  --force                replace an existing config and secrets file";

#[derive(Debug, Default)]
enum Secret {
    #[default]
    None,
    Value(String),
    Command(String),
    File(PathBuf),
}

/// Everything setup needs to know; flags fill it, prompts fill the rest.
#[derive(Debug, Default)]
struct Answers {
    provider: Option<String>,
    url: Option<String>,
    username: Option<String>,
    secret: Secret,
    password_stdin: bool,
    auth: Option<String>,
    admin: Option<String>,
    sender: Option<String>,
    domain: Option<String>,
    ca_file: Option<PathBuf>,
    spool_dir: Option<PathBuf>,
    to: Option<String>,
    no_test: bool,
    no_send: bool,
    force: bool,
}

fn parse_args(args: Vec<std::ffi::OsString>) -> Result<Answers> {
    use lexopt::prelude::*;
    let mut a = Answers::default();
    let mut p = lexopt::Parser::from_args(args);
    let usage = |e: String| Error::usage(format!("{e}\n{USAGE}"));
    while let Some(arg) = p.next().map_err(|e| usage(e.to_string()))? {
        match arg {
            Long("provider") => a.provider = Some(value(&mut p)?),
            Long("url") => a.url = Some(value(&mut p)?),
            Long("username") | Long("user") => a.username = Some(value(&mut p)?),
            Long("password-stdin") => a.password_stdin = true,
            Long("password-command") => a.secret = Secret::Command(value(&mut p)?),
            Long("password-file") => a.secret = Secret::File(value(&mut p)?.into()),
            Long("password") => {
                return Err(Error::usage(
                    "--password would show the secret in ps and shell history: use --password-stdin, --password-file or --password-command",
                ));
            }
            Long("auth") => a.auth = Some(value(&mut p)?),
            Long("admin") => a.admin = Some(value(&mut p)?),
            Long("sender") | Long("from") => a.sender = Some(value(&mut p)?),
            Long("domain") => a.domain = Some(value(&mut p)?),
            Long("ca-file") => a.ca_file = Some(value(&mut p)?.into()),
            Long("spool-dir") => a.spool_dir = Some(value(&mut p)?.into()),
            Long("to") => a.to = Some(value(&mut p)?),
            Long("no-test") => a.no_test = true,
            Long("no-send") => a.no_send = true,
            Long("force") | Short('f') => a.force = true,
            Short('h') | Long("help") => {
                return Err(Error::new(Class::Usage, String::new()));
            }
            other => return Err(usage(other.unexpected().to_string())),
        }
    }
    Ok(a)
}

fn value(p: &mut lexopt::Parser) -> Result<String> {
    p.value()
        .map_err(|e| Error::usage(format!("{e}\n{USAGE}")))?
        .into_string()
        .map_err(|_| Error::usage("option values must be UTF-8"))
}

/// The username a provider wants when it is fixed, and a hint otherwise.
fn username_hint(provider: &str) -> (Option<&'static str>, &'static str) {
    match provider {
        "sendgrid" => (Some("apikey"), "SendGrid's SMTP user is literally 'apikey'"),
        "postmark" => (None, "Postmark: the server API token"),
        "mailgun" => (None, "Mailgun: postmaster@your-sending-domain"),
        p if p.starts_with("ses:") => (
            None,
            "SES: the SMTP user name from the SES console's SMTP credentials (its password is the SMTP password, not an IAM secret key)",
        ),
        "gmail" | "office365" | "fastmail" => (None, "the full mailbox address"),
        _ => (None, "the SMTP user name"),
    }
}

/// Line prompts on stdin/stdout; the secret through rpassword (no echo, on the tty).
struct Prompter<'a> {
    input: Box<dyn BufRead + 'a>,
}

impl Prompter<'_> {
    fn line(&mut self, q: &str, default: Option<&str>) -> Result<String> {
        for _ in 0..5 {
            match default {
                Some(d) if !d.is_empty() => print!("{q} [{d}]: "),
                _ => print!("{q}: "),
            }
            let _ = std::io::Write::flush(&mut std::io::stdout());
            let mut s = String::new();
            let n = std::io::Read::take(&mut *self.input, 4096)
                .read_line(&mut s)
                .map_err(|e| Error::temp(format!("reading the answer: {e}")))?;
            if n == 0 {
                return Err(Error::usage(
                    "setup: input ended before all questions were answered",
                ));
            }
            let s = s.trim().to_string();
            match (s.is_empty(), default) {
                (false, _) => return Ok(s),
                (true, Some(d)) => return Ok(d.to_string()),
                (true, None) => println!("  (an answer is needed)"),
            }
        }
        Err(Error::usage(format!("setup: no answer to {q:?}")))
    }

    fn secret(&mut self, q: &str) -> Result<String> {
        for _ in 0..3 {
            let s = rpassword::prompt_password(format!("{q}: "))
                .map_err(|e| Error::temp(format!("reading the password from the terminal: {e}")))?;
            if !s.trim().is_empty() {
                return Ok(s.trim().to_string());
            }
            println!("  (empty: try again)");
        }
        Err(Error::usage("setup: no password given"))
    }
}

fn check_addr(key: &str, a: &str) -> Result<()> {
    if crate::address::is_valid_mailbox(a) {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "--{key} {a:?} is not an address like user@example.com"
        )))
    }
}

/// Fill the answers that flags did not give: on a terminal by asking, else it is an error
/// for the ones that have no sensible default.
fn complete(a: &mut Answers, p: Option<&mut Prompter>) -> Result<()> {
    let Some(p) = p else {
        if a.provider.is_none() && a.url.is_none() {
            return Err(Error::usage(format!(
                "setup: give --provider or --url (no terminal to ask on)\n{USAGE}"
            )));
        }
        if a.username.is_some() && matches!(a.secret, Secret::None) {
            return Err(Error::usage(
                "setup: --username needs --password-stdin, --password-command or --password-file",
            ));
        }
        return Ok(());
    };
    println!("relayq setup: every message this host sends goes through one relay (smarthost).");
    if a.provider.is_none() && a.url.is_none() {
        let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
        println!(
            "Known providers: {}, ses:REGION (Amazon SES), or a URL (smtps://host:465, smtp://host:587)",
            names.join(", ")
        );
        let v = p.line("Provider or URL", Some("smtp2go"))?;
        if v.contains("://") {
            a.url = Some(v);
        } else {
            a.provider = Some(v);
        }
    }
    let pname = a.provider.clone().unwrap_or_default();
    if let Some(pr) = PRESETS.iter().find(|x| x.name == pname) {
        println!("  {}: {}", pr.name, pr.note);
    }
    if a.username.is_none() {
        let (fixed, hint) = username_hint(&pname);
        println!("  user name: {hint} (- for a relay without AUTH)");
        let v = p.line("SMTP user name", Some(fixed.unwrap_or("")))?;
        a.username = (!v.is_empty() && v != "-").then_some(v);
    }
    if a.username.is_some() && matches!(a.secret, Secret::None) {
        let s = p.secret("Password or API key, or !command that prints it (not shown)")?;
        a.secret = match s.strip_prefix('!') {
            Some(cmd) => Secret::Command(cmd.trim().to_string()),
            None => Secret::Value(s),
        };
    }
    if a.admin.is_none() {
        println!("  mail for root, cron and other local accounts goes to the admin address");
        a.admin = Some(p.line("Admin address", None)?);
    }
    if a.sender.is_none() {
        println!("  the sender must be an address or domain your provider has verified");
        let d = a.username.as_deref().filter(|u| u.contains('@'));
        a.sender = Some(p.line("Sender address", d)?);
    }
    Ok(())
}

/// `--password-stdin`: the first line of stdin, without its line end.
fn read_stdin_secret() -> Result<String> {
    let mut s = String::new();
    std::io::Read::take(std::io::stdin().lock(), 64 * 1024)
        .read_line(&mut s)
        .map_err(|e| Error::temp(format!("reading the password from stdin: {e}")))?;
    let s = s.trim_end_matches(['\r', '\n']).to_string();
    if s.is_empty() {
        return Err(Error::usage("--password-stdin: stdin gave an empty line"));
    }
    Ok(s)
}

/// The config text for these answers (pure; the secret itself is not in it).
fn render(a: &Answers, secret_path: &Path) -> String {
    let mut s = String::from("# Written by `relayq setup`. Every key: relayq.toml(5).\n");
    if let Some(d) = &a.spool_dir {
        s += &format!("spool_dir = {}\n", toml_str(&d.to_string_lossy()));
    }
    s += "\n[relay]\n";
    if let Some(u) = &a.url {
        s += &format!("url = {}\n", toml_str(u));
    } else if let Some(p) = &a.provider {
        s += &format!("provider = {}\n", toml_str(p));
    }
    if let Some(u) = &a.username {
        s += &format!("username = {}\n", toml_str(u));
    }
    match &a.secret {
        Secret::Value(_) => {
            s += &format!(
                "password_file = {}\n",
                toml_str(&secret_path.to_string_lossy())
            )
        }
        Secret::File(f) => s += &format!("password_file = {}\n", toml_str(&f.to_string_lossy())),
        Secret::Command(c) => s += &format!("password_command = {}\n", toml_str(c)),
        Secret::None => {}
    }
    if let Some(k) = &a.auth {
        s += &format!("auth = {}\n", toml_str(k));
    }
    if let Some(c) = &a.ca_file {
        s += &format!("ca_file = {}\n", toml_str(&c.to_string_lossy()));
    }
    s += "\n[address]\n";
    for (k, v) in [("admin", &a.admin), ("sender", &a.sender)] {
        if let Some(v) = v {
            s += &format!("{k} = {}\n", toml_str(v));
        }
    }
    let domain = a.domain.clone().or_else(|| {
        a.sender
            .as_deref()
            .and_then(|x| x.rsplit_once('@'))
            .map(|(_, d)| d.to_ascii_lowercase())
    });
    if let Some(d) = domain {
        s += &format!("domain = {}\n", toml_str(&d));
    }
    s
}

/// Create the spool (idempotent), owned by `user`, else by `relayq` when that user exists,
/// else by the caller.
pub(crate) fn init_spool(cfg: &Config, user: Option<&str>) -> Result<()> {
    let (uid, gid) = match user {
        Some(name) => match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => (u.uid.as_raw(), u.gid.as_raw()),
            _ => {
                return Err(Error::new(
                    crate::error::Class::NoUser,
                    format!("no such user {name:?}"),
                ));
            }
        },
        None => match nix::unistd::User::from_name("relayq") {
            Ok(Some(u)) if nix::unistd::geteuid().is_root() => (u.uid.as_raw(), u.gid.as_raw()),
            _ => (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            ),
        },
    };
    // Postdrop's own group (as installed), when the owner is the installed `relayq`:
    // else one group for both (tests, a spool of one's own).
    let drop_gid = match nix::unistd::Group::from_name(crate::spool::DROP_GROUP) {
        Ok(Some(g))
            if nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .is_some_and(|u| u.name == "relayq") =>
        {
            g.gid.as_raw()
        }
        _ => gid,
    };
    Layout::new(&cfg.spool_dir).init_with_drop_group(uid, gid, drop_gid)?;
    crate::spool::Spool::open(&Layout::new(&cfg.spool_dir))?
        .write_limits(cfg.max_message_size)
        .map_err(|e| Error::spool_io("cannot write run/limits", &e))?;
    println!(
        "relayq: spool {} ready (owner uid {uid}, group gid {gid}, tmp/ and new/ gid {drop_gid})",
        cfg.spool_dir.display()
    );
    Ok(())
}

pub(crate) fn run(cfg_flag: Option<&Path>, args: Vec<std::ffi::OsString>) -> Result<i32> {
    let mut a = match parse_args(args) {
        Err(e) if e.msg.is_empty() => {
            println!("{USAGE}");
            return Ok(0);
        }
        r => r?,
    };
    let path = config::choose_path(cfg_flag);
    // What `make install` and the package put there (the example config, an empty password
    // file) is not somebody's work: setup may replace it without --force.
    if !a.force && conffile::untouched_install(&path) {
        a.force = true;
    }
    // Refuse early, before asking anything.
    conffile::check_absent(&path, a.force)?;
    if a.password_stdin {
        a.secret = Secret::Value(read_stdin_secret()?);
    }
    let tty = nix::unistd::isatty(std::io::stdin()).unwrap_or(false) && !a.password_stdin;
    let stdin = std::io::stdin();
    let mut prompter = Prompter {
        input: Box::new(stdin.lock()),
    };
    complete(&mut a, tty.then_some(&mut prompter))?;
    drop(prompter);
    if let Some(p) = &a.provider {
        provider::preset_url(p).ok_or_else(|| {
            Error::usage(format!(
                "unknown provider {p:?}: use one of {}, ses:REGION, or --url",
                PRESETS
                    .iter()
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    }
    if let Some(u) = &a.url {
        provider::parse_url(u, false).map_err(Error::usage)?;
    }
    for (k, v) in [("admin", &a.admin), ("sender", &a.sender)] {
        if let Some(v) = v {
            check_addr(k, v)?;
        }
    }
    let secret_path = conffile::secret_path_for(&path);
    let text = render(&a, &secret_path);
    let secret = match &a.secret {
        Secret::Value(v) => Some((secret_path.as_path(), v.as_bytes())),
        _ => None,
    };
    let w = conffile::write(&path, &text, secret, a.force).map_err(|e| match e.class {
        Class::Software => Error::usage(e.msg),
        _ => e,
    })?;
    println!("wrote {}", w.config.display());
    if let Some(s) = &w.secret {
        println!(
            "wrote {} (the password; readable only by root and the daemon)",
            s.display()
        );
    }
    let cfg = Config::load(Some(&path))?;
    init_spool(&cfg, None)?;
    // A daemon already running keeps its old config until told (as `systemctl reload`).
    if let (true, Some(pid)) =
        crate::admin::daemon_state(&crate::spool::Layout::new(&cfg.spool_dir))
    {
        let hup = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGHUP,
        );
        match hup {
            Ok(()) => println!("told the running daemon (pid {pid}) to reload the config"),
            Err(e) => println!(
                "the daemon (pid {pid}) still has the old config ({e}): {}",
                crate::initsys::hint(crate::initsys::Action::Reload, Some(pid))
            ),
        }
    }
    if a.no_test {
        println!(
            "next: `relayq test` checks the relay; `{}` starts the daemon",
            crate::initsys::hint(crate::initsys::Action::Enable, None)
        );
        return Ok(0);
    }
    println!(
        "\nrelayq test{}:",
        if a.no_send { " --no-send" } else { "" }
    );
    let mut targs: Vec<String> = Vec::new();
    if a.no_send {
        targs.push("--no-send".into());
    }
    if let Some(t) = &a.to {
        targs.extend(["--to".into(), t.clone()]);
    }
    match crate::diag::run(&cfg, &targs) {
        Ok(c) => {
            println!(
                "next: `{}` starts the daemon (or run `relayq flush` from cron)",
                crate::initsys::hint(crate::initsys::Action::Enable, None)
            );
            Ok(c)
        }
        Err(e) => Err(Error::new(
            e.class,
            format!(
                "the config is written but the test failed: fix it (rerun `relayq setup --force` or edit {}), then `relayq test`",
                path.display()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(args: &[&str]) -> Answers {
        parse_args(args.iter().map(|s| s.into()).collect()).unwrap()
    }

    #[test]
    fn renders_a_valid_config_without_the_secret() {
        let mut a = answers(&[
            "--provider",
            "sendgrid",
            "--username",
            "apikey",
            "--admin",
            "ops@example.com",
            "--sender",
            "Server1@Example.COM",
        ]);
        a.secret = Secret::Value("SG.topsecret".into());
        let t = render(&a, Path::new("/etc/relayq/password"));
        assert!(!t.contains("topsecret"));
        let c = Config::parse(&t, Path::new("/x.toml")).unwrap();
        let r = c.relay.unwrap();
        assert_eq!(r.provider.as_deref(), Some("sendgrid"));
        assert_eq!(
            r.password_file.unwrap(),
            PathBuf::from("/etc/relayq/password")
        );
        assert_eq!(c.address.domain.as_deref(), Some("example.com"));
    }

    #[test]
    fn refuses_password_in_argv_and_odd_flags() {
        assert!(parse_args(vec!["--password".into(), "x".into()]).is_err());
        assert!(parse_args(vec!["--bogus".into()]).is_err());
        let a = answers(&["--url", "smtp://h:587", "--password-command", "pass show x"]);
        let t = render(&a, Path::new("/p"));
        assert!(t.contains("password_command = \"pass show x\""), "{t}");
    }

    #[test]
    fn non_interactive_needs_a_relay_and_a_secret() {
        let mut a = answers(&["--admin", "a@b.example"]);
        assert!(complete(&mut a, None).is_err());
        let mut a = answers(&["--provider", "gmail", "--username", "u@gmail.com"]);
        assert!(
            complete(&mut a, None)
                .unwrap_err()
                .msg
                .contains("--password")
        );
    }
}

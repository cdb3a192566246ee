//! `relayq setup`: the first ten minutes. Asks (or takes as flags, for Ansible and
//! Dockerfiles) the provider, the credentials, the admin and sender addresses; writes the
//! config and the secrets file with the right owner and modes (through `conffile`); makes
//! the spool; then proves it with `relayq test`. The secret is read without echo (or from
//! stdin with `--password-stdin`), never taken from argv and never printed. On a terminal
//! each answer is checked as it is given and asked again, in the question's words; the
//! terminal's echo comes back whatever happens (`crate::tty`). The flags are in the
//! argument table (`crate::args`).

use crate::conffile::{self, toml_str};
use crate::config::{self, Config};
use crate::error::{Class, Error, Result};
use crate::provider::{self, PRESETS};
use crate::spool::Layout;
use std::io::BufRead;
use std::path::{Path, PathBuf};

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

/// The answers the flags give.
fn parse_args(p: &crate::args::Parsed) -> Answers {
    let s = |k: &str| p.value(k).map(str::to_string);
    let mut secret = Secret::None;
    if let Some(c) = s("password-command") {
        secret = Secret::Command(c);
    }
    if let Some(f) = p.path("password-file") {
        secret = Secret::File(f);
    }
    Answers {
        provider: s("provider"),
        url: s("url"),
        username: s("username"),
        secret,
        password_stdin: p.switch("password-stdin"),
        auth: s("auth"),
        admin: s("admin"),
        sender: s("sender"),
        domain: s("domain"),
        ca_file: p.path("ca-file"),
        spool_dir: p.path("spool-dir"),
        to: s("to"),
        no_test: p.switch("no-test"),
        no_send: p.switch("no-send"),
        force: p.switch("force"),
    }
}

/// A provider name: None when it is one, else why not (with the nearest name).
fn check_provider(p: &str) -> std::result::Result<(), String> {
    if provider::preset_url(p).is_some() {
        return Ok(());
    }
    let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
    Err(
        match crate::args::nearest(p, names.iter().copied().chain(["ses:REGION"])) {
            Some(n) => format!("unknown provider {p:?}; did you mean {n}?"),
            None if p.starts_with("ses:") => {
                format!("{p:?}: SES wants its region, e.g. ses:eu-west-1")
            }
            None => format!(
                "unknown provider {p:?}: use one of {}, ses:REGION, or a URL",
                names.join(", ")
            ),
        },
    )
}

fn check_addr(a: &str) -> std::result::Result<(), String> {
    if crate::address::is_valid_mailbox(a) {
        Ok(())
    } else if a.is_empty() {
        Err("an answer is needed: an address like user@example.com".into())
    } else {
        Err(format!("{a:?} is not an address like user@example.com"))
    }
}

/// The answers flags gave, checked before anything is asked; errors name the flag.
fn check_flags(a: &Answers) -> Result<()> {
    if let Some(p) = &a.provider {
        check_provider(p).map_err(|e| Error::usage(format!("setup: --provider: {e}")))?;
    }
    if let Some(u) = &a.url {
        provider::parse_url(u, false)
            .map_err(|e| Error::usage(format!("setup: --url {u:?}: {e}")))?;
    }
    for (k, v) in [("admin", &a.admin), ("sender", &a.sender), ("to", &a.to)] {
        if let Some(v) = v {
            check_addr(v).map_err(|e| Error::usage(format!("setup: --{k}: {e}")))?;
        }
    }
    Ok(())
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

/// Line prompts on stdin/stdout; the secret with the terminal's echo off.
struct Prompter<'a> {
    input: Box<dyn BufRead + 'a>,
}

/// How many times a question is asked before setup gives up.
const TRIES: usize = 5;

impl Prompter<'_> {
    fn read(&mut self) -> Result<String> {
        let mut s = String::new();
        let n = std::io::Read::take(&mut *self.input, 4096)
            .read_line(&mut s)
            .map_err(|e| Error::temp(format!("reading the answer: {e}")))?;
        if n == 0 {
            return Err(Error::usage(
                "setup: input ended before all questions were answered",
            ));
        }
        Ok(s.trim().to_string())
    }

    /// Ask `q` until `check` takes the answer (an empty answer is `default` when there is
    /// one); each refusal is said in the question's words, and the question asked again.
    fn ask<T>(
        &mut self,
        q: &str,
        default: Option<&str>,
        check: impl Fn(&str) -> std::result::Result<T, String>,
    ) -> Result<T> {
        for _ in 0..TRIES {
            match default {
                Some(d) => print!("{q} [{d}]: "),
                None => print!("{q}: "),
            }
            let _ = std::io::Write::flush(&mut std::io::stdout());
            let s = self.read()?;
            let s = match (s.is_empty(), default) {
                (true, Some(d)) => d.to_string(),
                _ => s,
            };
            match check(&s) {
                Ok(v) => return Ok(v),
                Err(why) => println!("  {q}: {why}"),
            }
        }
        Err(Error::usage(format!(
            "setup: no usable answer to {q:?} after {TRIES} tries"
        )))
    }

    /// The secret, with echo off on the terminal (put back on every way out).
    fn secret(&mut self, q: &str) -> Result<String> {
        for _ in 0..TRIES {
            print!("{q}: ");
            let _ = std::io::Write::flush(&mut std::io::stdout());
            let s = {
                let _echo = crate::tty::EchoOff::new(&std::io::stdin()).map_err(|e| {
                    Error::temp(format!("cannot turn the terminal's echo off: {e}"))
                })?;
                self.read()
            };
            println!();
            let s = s?;
            if !s.is_empty() {
                return Ok(s);
            }
            println!("  {q}: an answer is needed");
        }
        Err(Error::usage("setup: no password given"))
    }
}

/// Fill the answers that flags did not give: on a terminal by asking, else it is an error
/// for the ones that have no sensible default.
fn complete(a: &mut Answers, p: Option<&mut Prompter>) -> Result<()> {
    let Some(p) = p else {
        if a.provider.is_none() && a.url.is_none() {
            return Err(Error::usage(
                "setup: give --provider or --url (no terminal to ask on; see relayq setup --help)",
            ));
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
        let v = p.ask("Provider or URL", Some("smtp2go"), |v| {
            if v.contains("://") {
                provider::parse_url(v, false).map(|_| v.to_string())
            } else {
                check_provider(v).map(|()| v.to_string())
            }
        })?;
        if v.contains("://") {
            a.url = Some(v);
        } else {
            a.provider = Some(v);
        }
    }
    let pname = a.provider.clone().unwrap_or_default();
    if let Some(pr) = provider::preset(&pname) {
        println!("  {}: {}", pr.name, pr.note);
    }
    if a.username.is_none() {
        let (fixed, hint) = username_hint(&pname);
        println!("  user name: {hint} (- for a relay without AUTH)");
        // "-" says "no AUTH"; an empty answer is asked again (it is too easy to give by
        // mistake to mean anything).
        let v = p.ask("SMTP user name", fixed, |v| match v {
            "" => Err("an answer is needed: the user name, or - for a relay without AUTH".into()),
            v if v.chars().any(char::is_control) => {
                Err("control characters are not allowed".into())
            }
            v => Ok(v.to_string()),
        })?;
        a.username = (v != "-").then_some(v);
    }
    if a.username.is_some() && matches!(a.secret, Secret::None) {
        let s = p.secret("Password or API key, or !command that prints it (not shown)")?;
        a.secret = match s.strip_prefix('!') {
            Some(cmd) => Secret::Command(cmd.trim().to_string()),
            None => Secret::Value(s),
        };
    }
    let addr = |v: &str| check_addr(v).map(|()| v.to_string());
    if a.admin.is_none() {
        println!("  mail for root, cron and other local accounts goes to the admin address");
        a.admin = Some(p.ask("Admin address", None, addr)?);
    }
    if a.sender.is_none() {
        println!("  the sender must be an address or domain your provider has verified");
        let d = a
            .username
            .as_deref()
            .filter(|u| crate::address::is_valid_mailbox(u));
        a.sender = Some(p.ask("Sender address", d, addr)?);
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

pub(crate) fn run(p: &crate::args::Parsed) -> Result<i32> {
    let mut a = parse_args(p);
    let path = config::choose_path(p.config.as_deref());
    // What `make install` and the package put there (the example config, an empty password
    // file) is not somebody's work: setup may replace it without --force.
    if !a.force && conffile::untouched_install(&path) {
        a.force = true;
    }
    // Refuse early, before asking anything.
    conffile::check_absent(&path, a.force)?;
    check_flags(&a)?;
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
    match crate::diag::run(&cfg, a.to.as_deref(), None, a.no_send) {
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

    fn flags(args: &[&str]) -> Result<crate::args::Parsed> {
        crate::args::parse_flags("setup", args.iter().map(|s| s.into()).collect())
    }

    fn answers(args: &[&str]) -> Answers {
        parse_args(&flags(args).unwrap())
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
        assert!(flags(&["--password", "x"]).is_err());
        assert!(flags(&["--bogus"]).is_err());
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

    #[test]
    fn answers_are_checked_in_words() {
        assert!(check_provider("smtp2go").is_ok() && check_provider("ses:eu-west-1").is_ok());
        assert!(
            check_provider("smtp2gop")
                .unwrap_err()
                .contains("did you mean smtp2go?")
        );
        assert!(check_addr("ops").unwrap_err().contains("not an address"));
        let e = check_flags(&answers(&["--admin", "ops"])).unwrap_err();
        assert!(e.msg.contains("--admin"), "{}", e.msg);
    }

    #[test]
    fn prompts_ask_again_until_an_answer_fits() {
        let input: &[u8] = b"smtp2gop\nsmtp2go\n";
        let mut p = Prompter {
            input: Box::new(input),
        };
        assert_eq!(
            p.ask("Provider or URL", None, |v| check_provider(v)
                .map(|()| v.to_string()))
                .unwrap(),
            "smtp2go"
        );
        let input: &[u8] = b"\n\n\n\n\n";
        let mut p = Prompter {
            input: Box::new(input),
        };
        let e = p
            .ask("Admin address", None, |v| {
                check_addr(v).map(|()| v.to_string())
            })
            .unwrap_err();
        assert!(e.msg.contains("Admin address"), "{}", e.msg);
    }
}

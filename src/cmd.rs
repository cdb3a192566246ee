//! Command dispatch: argv[0] personality (sendmail, mailq, newaliases) and the `relayq`
//! subcommands. Each command returns an exit code or an [`Error`]; `main` prints and exits.

use crate::cli::{self, Mode, Personality};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::spool::Layout;
use crate::submit::{Context, Params};
use std::ffi::OsString;
use std::path::PathBuf;

pub const RELAYQ_USAGE: &str = "\
usage: relayq [-C config] <command> [options]

Commands:
  setup [--provider P ...]
                         write the config and secrets for a provider, then test it
  init [--user NAME]     create the spool with its owners and modes (idempotent)
  daemon [--foreground]  relay the queue continuously (wakes on new mail)
  flush [ID...]          one delivery pass now, ignoring backoff, then exit
  queue [--json]         list the queue (also: mailq, sendmail -bp)
  show ID [--body]       envelope, recipients' states, header (and body)
  hold ID...|--all       keep messages from being sent
  release ID...|--all    let held messages go again
  delete ID...|--all     remove messages from the queue
                         (show/hold/release/delete: root and the spool's owner
                         on any message; other users on their own, via the daemon)
  status [--json] [--stuck-after 1h] [--metrics FILE]
                         daemon, queue counts, oldest message; exit 1 when mail is stuck
  test [--to ADDR] [--no-send]
                         check DNS, TCP, TLS, AUTH, the sender, and send a test message
  import --from nullmailer|msmtp|ssmtp|dma|postfix [--path P] [--dry-run] [--force]
                         write relayq's config from the replaced tool's configuration
  doctor [--json] [--dns HOST:PORT]
                         check config, permissions, daemon, queue, and the sender
                         domain's SPF, DKIM and DMARC; exit 1 when a check fails
  version                print the version

As sendmail, mailq or newaliases (by program name), relayq behaves like them;
see sendmail(8), relayq(8), relayq.toml(5).";

pub fn main(args: Vec<OsString>) -> std::result::Result<i32, (&'static str, Error)> {
    let argv0 = args
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rest: Vec<OsString> = args.into_iter().skip(1).collect();
    match cli::personality(&argv0) {
        Personality::Sendmail => sendmail(rest).map_err(|e| ("sendmail", e)),
        Personality::Mailq => {
            let mut a = vec![OsString::from("-bp")];
            a.extend(rest);
            sendmail(a).map_err(|e| ("mailq", e))
        }
        Personality::Newaliases => Ok(0),
        Personality::Relayq => relayq(rest).map_err(|e| ("relayq", e)),
    }
}

fn sendmail(args: Vec<OsString>) -> Result<i32> {
    let req = cli::parse_sendmail(args)?;
    match req.mode {
        Mode::Aliases | Mode::Nothing => return Ok(0),
        _ => {}
    }
    let cfg = Config::load(req.config.as_deref())?;
    match &req.mode {
        Mode::Print => return queue_list(&cfg, false),
        Mode::Flush(f) => return crate::daemon::flush(cfg, req.config.clone(), f),
        _ => {}
    }
    let ctx = Context::new(cfg, !req.no_aliases);
    let params = Params {
        sender: req.sender.clone(),
        full_name: req.full_name.clone(),
        extract: req.extract,
        recipients: req.recipients.clone(),
        body: req.body.clone(),
        notify: req.notify.clone(),
        ret: req.ret.clone(),
        envid: req.envid.clone(),
    };
    match req.mode {
        Mode::Verify => {
            if req.recipients.is_empty() {
                return Err(Error::usage("-bv: no addresses given"));
            }
            let sender = ctx
                .sender_for(req.sender.as_deref())
                .map_err(|e| Error::data(e.0))?;
            println!(
                "sender <{}> -> <{sender}>",
                req.sender.as_deref().unwrap_or(ctx.me.user())
            );
            for r in &req.recipients {
                for m in crate::address::parse_list(r) {
                    let to = ctx.resolve(std::slice::from_ref(&m.addr))?;
                    println!(
                        "{} -> {}",
                        m.addr,
                        to.iter()
                            .map(|a| format!("<{a}>"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
            Ok(0)
        }
        Mode::Smtp => {
            let stdin = std::io::stdin();
            let mut input = std::io::BufReader::with_capacity(64 * 1024, stdin.lock());
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            crate::smtpd::serve(&ctx, &mut input, &mut out)?;
            Ok(0)
        }
        _ => {
            let id = crate::submit::submit_stdin(&ctx, &params, req.ignore_dots)?;
            if req.verbose {
                eprintln!("sendmail: queued as {id}");
            }
            Ok(0)
        }
    }
}

fn relayq(args: Vec<OsString>) -> Result<i32> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut config: Option<PathBuf> = None;
    let cmd = loop {
        match p
            .next()
            .map_err(|e| Error::usage(format!("{e}\n{RELAYQ_USAGE}")))?
        {
            Some(Short('C') | Long("config")) => {
                config = Some(p.value().map_err(|e| Error::usage(e.to_string()))?.into())
            }
            Some(Short('h') | Long("help")) => {
                println!("{RELAYQ_USAGE}");
                return Ok(0);
            }
            Some(Long("version") | Short('V')) => break "version".to_string(),
            Some(Value(v)) => break v.to_string_lossy().into_owned(),
            Some(a) => return Err(Error::usage(format!("{}\n{RELAYQ_USAGE}", a.unexpected()))),
            None => return Err(Error::usage(RELAYQ_USAGE)),
        }
    };
    let rest: Vec<OsString> = p.raw_args().map(|r| r.collect()).unwrap_or_default();
    let load = || Config::load(config.as_deref());
    match cmd.as_str() {
        "version" => {
            println!("relayq {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        "help" => {
            println!("{RELAYQ_USAGE}");
            Ok(0)
        }
        "init" => init(&load()?, rest),
        "setup" => crate::setup::run(config.as_deref(), rest),
        "queue" | "mailq" => {
            let json = rest.iter().any(|a| a == "--json");
            queue_list(&load()?, json)
        }
        "flush" => {
            let ids: Vec<String> = rest
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            let filter = crate::cli::QueueFilter {
                ids,
                ..Default::default()
            };
            crate::daemon::flush(load()?, config.clone(), &filter)
        }
        "daemon" => {
            let fg = rest.iter().any(|a| a == "--foreground" || a == "-f")
                || nix::unistd::isatty(std::io::stderr()).unwrap_or(false);
            crate::daemon::daemon(load()?, config.clone(), fg)
        }
        "show" | "hold" | "release" | "delete" => {
            let a: Vec<String> = rest
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            crate::admin::manage(&Layout::new(&load()?.spool_dir), &cmd, &a)
        }
        "test" => {
            let a: Vec<String> = rest
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            crate::diag::run(&load()?, &a)
        }
        "doctor" => {
            let a: Vec<String> = rest.iter().map(|a| a.to_string_lossy().into()).collect();
            crate::doctor::run(config.as_deref(), &a)
        }
        "status" => {
            let a: Vec<String> = rest
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            crate::admin::status(&Layout::new(&load()?.spool_dir), &a)
        }
        "import" => crate::import::run(config.as_deref(), rest),
        "sendmail" => {
            let mut args: Vec<OsString> = Vec::new();
            if let Some(c) = &config {
                args.extend([OsString::from("-C"), c.clone().into_os_string()]);
            }
            args.extend(rest);
            sendmail(args)
        }
        other => Err(Error::usage(format!(
            "unknown command {other:?}\n{RELAYQ_USAGE}"
        ))),
    }
}

fn init(cfg: &Config, args: Vec<OsString>) -> Result<i32> {
    let mut user: Option<String> = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--user") => user = it.next().map(|v| v.to_string_lossy().into_owned()),
            _ => return Err(Error::usage("usage: relayq init [--user NAME]")),
        }
    }
    init_spool(cfg, user.as_deref())?;
    Ok(0)
}

/// Create the spool (idempotent), owned by `user`, else by `relayq` when that user exists,
/// else by the caller.
pub fn init_spool(cfg: &Config, user: Option<&str>) -> Result<()> {
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
    Layout::new(&cfg.spool_dir).init(uid, gid)?;
    println!(
        "relayq: spool {} ready (owner uid {uid}, group gid {gid})",
        cfg.spool_dir.display()
    );
    Ok(())
}

fn queue_list(cfg: &Config, json: bool) -> Result<i32> {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    crate::queue::list(&Layout::new(&cfg.spool_dir), json, &mut out)?;
    Ok(0)
}

//! Command dispatch: argv[0] personality (sendmail, mailq, newaliases) and the `relayq`
//! subcommands. Each command returns an exit code or an [`Error`]; `main` prints and exits.

use crate::cli::{self, Mode, Personality};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::setup::init_spool;
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
                         daemon, relay, queue counts, oldest message, last delivery;
                         exit 1 when mail (or the relay) is stuck
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

/// One `relayq` command's `--help` (fits a screen) and the options it takes, so every
/// command answers `--help` and refuses an unknown option the same way.
struct Spec {
    name: &'static str,
    help: &'static str,
    /// Options without a value.
    flags: &'static [&'static str],
    /// Options that take a value.
    valued: &'static [&'static str],
    /// Positional arguments (IDs) allowed.
    positional: bool,
}

const SPECS: &[Spec] = &[
    Spec {
        name: "init",
        help: "usage: relayq init [--user NAME]\n\nCreate the spool with its owners and modes (idempotent). The owner is NAME, else\nthe user relayq if it exists, else the caller.",
        flags: &[],
        valued: &["--user"],
        positional: false,
    },
    Spec {
        name: "daemon",
        help: "usage: relayq daemon [--foreground]\n\nRelay the queue until stopped (SIGTERM); new mail is noticed at once (inotify).\nSIGHUP rereads the config (a bad one is refused, the old one kept); SIGUSR1 retries\nthe whole queue now. --foreground (or a terminal) also logs to stderr.\nUsually started by the init system: systemctl enable --now relayq (systemd),\nservice relayq start (the package's /etc/init.d/relayq), rc-service relayq start (OpenRC).\nIt writes its pid to run/relayq.pid in the spool.",
        flags: &["--foreground", "-f"],
        valued: &[],
        positional: false,
    },
    Spec {
        name: "flush",
        help: "usage: relayq flush [ID...]\n\nOne delivery pass now, ignoring backoff, then exit (also sendmail -q, -qI<id>,\n-qR<domain>, -qS<sender>). With a daemon running, the daemon flushes instead (only the\nselected messages; the others keep their backoff).\nOn a terminal: progress (count, rate, ETA) and a summary. From cron: silent unless\nsomething fails.",
        flags: &[],
        valued: &[],
        positional: true,
    },
    Spec {
        name: "queue",
        help: "usage: relayq queue [--json]\n\nList the queue (also mailq, sendmail -bp): each message's ID, size, arrival,\nsender, and every pending recipient with the relay's last reply and the next\nattempt; ! marks a held message. --json: one object per line, like postqueue -j.\nRoot sees every message; other users see their own (through the daemon).",
        flags: &["--json"],
        valued: &[],
        positional: false,
    },
    Spec {
        name: "show",
        help: "usage: relayq show ID [--body] [--raw]\n\nOne message: envelope, submitter, each recipient's state with the relay's reply,\nthe next attempt, and the header (--body: the whole message). Control characters\nare shown escaped (^[ for ESC), so a message cannot drive the terminal; --raw: as is.\nRoot, or the user who sent it.",
        flags: &["--body", "--raw"],
        valued: &[],
        positional: true,
    },
    Spec {
        name: "hold",
        help: "usage: relayq hold ID...|--all\n\nKeep messages from being sent until released. Root, or the user who sent them\n(--all: all of your own).",
        flags: &["--all"],
        valued: &[],
        positional: true,
    },
    Spec {
        name: "release",
        help: "usage: relayq release ID...|--all\n\nLet held messages go again (the daemon takes them at once). Root, or the user who\nsent them.",
        flags: &["--all"],
        valued: &[],
        positional: true,
    },
    Spec {
        name: "delete",
        help: "usage: relayq delete ID...|--all\n\nRemove messages from the queue, without a bounce. Root, or the user who sent them.",
        flags: &["--all"],
        valued: &[],
        positional: true,
    },
    Spec {
        name: "status",
        help: "usage: relayq status [--json] [--stuck-after 1h] [--metrics FILE]\n\nDaemon running or not, queue counts by state, oldest message, last delivery, last\nerror. Exits 1 when a message has waited longer than --stuck-after (default 1h),\nfor monitoring. --metrics FILE also writes Prometheus text (node_exporter's\ntextfile collector).",
        flags: &["--json"],
        valued: &["--stuck-after", "--metrics"],
        positional: false,
    },
    Spec {
        name: "test",
        help: "usage: relayq test [--to ADDR] [--no-send]\n\nCheck each relay step by step: DNS, TCP, TLS and its certificate, EHLO, AUTH,\nwhether the relay accepts the sender, and a test message to ADDR (default: the\nadmin address). Each failure comes with a hint. Exits 69 when a step fails.",
        flags: &["--no-send"],
        valued: &["--to"],
        positional: false,
    },
    Spec {
        name: "doctor",
        help: "usage: relayq doctor [--json] [--dns HOST:PORT]\n\nCheck the set-up without sending: config, owners and modes of the spool and the\nsecrets, the daemon, the queue, and the sender domain's DNS (SPF includes the\nprovider, DKIM under its selectors, the DMARC policy). One line per check: pass,\nwarn or FAIL, with the fix. --dns asks that server instead of /etc/resolv.conf's.\nExits 1 when a check fails.",
        flags: &["--json"],
        valued: &["--dns"],
        positional: false,
    },
];

/// `--help` for a command (Ok(Some(text))), or a usage error for an option it does not take.
fn check_args(cmd: &str, rest: &[OsString]) -> Result<Option<&'static str>> {
    let Some(spec) = SPECS.iter().find(|s| s.name == cmd) else {
        return Ok(None);
    };
    let mut it = rest.iter().map(|a| a.to_string_lossy());
    while let Some(a) = it.next() {
        if a == "-h" || a == "--help" {
            return Ok(Some(spec.help));
        }
        let bad = |why: String| Error::usage(format!("{cmd}: {why} (see relayq {cmd} --help)"));
        if spec.valued.contains(&a.as_ref()) {
            if it.next().is_none() {
                return Err(bad(format!("{a} needs a value")));
            }
        } else if a.starts_with('-') && a.len() > 1 {
            if !spec.flags.contains(&a.as_ref()) {
                return Err(bad(format!("unknown option {a}")));
            }
        } else if !spec.positional {
            return Err(bad(format!("unexpected argument {a:?}")));
        }
    }
    Ok(None)
}

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
        Mode::Print => {
            default_sigpipe();
            return queue_list(&cfg, false);
        }
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
            default_sigpipe();
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
    default_sigpipe();
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
    // Commands that only print end quietly when their reader goes away (`relayq status |
    // head`), like any Unix tool. The daemon and flush keep SIGPIPE ignored: they write to
    // sockets and pipes whose loss must be an error they handle, not death.
    if matches!(cmd.as_str(), "daemon" | "flush" | "sendmail") {
        // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
    }
    if let Some(help) = check_args(&cmd, &rest)? {
        println!("{help}");
        return Ok(0);
    }
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
        "doctor" => exec_beside("relayq-doctor", config.as_deref(), &rest),
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

/// SIGPIPE back to its default (main ignores it for the submission paths).
fn default_sigpipe() {
    // SAFETY: setting a signal disposition to SIG_DFL has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Run a companion program installed beside this one (`relayq doctor` is relayq-doctor), with
/// `-C config` first when given. Only returns on failure.
fn exec_beside(prog: &str, config: Option<&std::path::Path>, args: &[OsString]) -> Result<i32> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| {
        Error::new(
            crate::error::Class::OsErr,
            format!("cannot find myself: {e}"),
        )
    })?;
    let path = exe.with_file_name(prog);
    let mut c = std::process::Command::new(&path);
    if let Some(cfg) = config {
        c.arg("-C").arg(cfg);
    }
    let e = c.args(args).exec();
    Err(Error::new(
        crate::error::Class::Unavailable,
        format!(
            "cannot run {}: {e} (it is installed beside relayq; reinstall relayq)",
            path.display()
        ),
    ))
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

fn queue_list(cfg: &Config, json: bool) -> Result<i32> {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    crate::queue::list(&Layout::new(&cfg.spool_dir), json, &mut out)?;
    Ok(0)
}

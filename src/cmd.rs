//! Command dispatch: argv[0] personality (sendmail, mailq, newaliases) and the `relayq`
//! subcommands. Each command returns an exit code or an [`Error`]; `main` prints and exits.

use crate::args::{self, Top};
use crate::cli::{self, Mode, Personality};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::setup::init_spool;
use crate::spool::Layout;
use crate::submit::{Context, Params};
use std::ffi::OsString;

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
    if matches!(req.mode, Mode::Aliases | Mode::Nothing) {
        return Ok(0);
    }
    let cfg = Config::load(req.config.as_deref())?;
    match &req.mode {
        Mode::Print => queue_list(&cfg, false),
        Mode::Flush(f) => crate::daemon::flush(cfg, req.config.clone(), f),
        _ => submission(req, cfg),
    }
}

/// `sendmail` as the submission front end (`relayq-sendmail`) runs it: the same parsing and
/// submission as `relayq`'s, without the queue listing and flush, which need the daemon's
/// code. Those modes (`-bp`, `-q`) run `relayq` installed beside it, with the same argv, so
/// the front end links only what a submission needs and starts fast.
pub fn front_end(args: Vec<OsString>) -> std::result::Result<i32, (&'static str, Error)> {
    let argv0 = args.first().cloned().unwrap_or_default();
    let rest: Vec<OsString> = args.into_iter().skip(1).collect();
    let run = || -> Result<i32> {
        // Linked as mailq or newaliases by hand: those are relayq's.
        if matches!(
            cli::personality(&argv0.to_string_lossy()),
            Personality::Mailq | Personality::Newaliases
        ) {
            return exec_full(&argv0, &rest);
        }
        let req = cli::parse_sendmail(rest.clone())?;
        match req.mode {
            Mode::Aliases | Mode::Nothing => Ok(0),
            // As `sendmail`, whatever this was called (send-mail, relayq-sendmail).
            Mode::Print | Mode::Flush(_) => exec_full(&OsString::from("sendmail"), &rest),
            _ => {
                let cfg = Config::load(req.config.as_deref())?;
                submission(req, cfg)
            }
        }
    };
    run().map_err(|e| ("sendmail", e))
}

/// A submission (`-bm`, `-bs`, `-bv`) with its config loaded.
fn submission(req: cli::Request, cfg: Config) -> Result<i32> {
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
    let p = match args::parse(args)? {
        Top::Overview => {
            println!("{}", args::overview());
            return Ok(0);
        }
        Top::Man => {
            print!("{}", args::man());
            return Ok(0);
        }
        Top::Help(c) => {
            println!("{}", args::help(c));
            return Ok(0);
        }
        Top::Sendmail(config, rest) => {
            ignore_sigpipe();
            let mut args: Vec<OsString> = Vec::new();
            if let Some(c) = config {
                args.extend([OsString::from("-C"), c.into_os_string()]);
            }
            args.extend(rest);
            return sendmail(args);
        }
        Top::Run(p) => p,
    };
    let config = p.config.clone();
    let load = || Config::load(config.as_deref());
    // Commands that only print end quietly when their reader goes away (`relayq status |
    // head`), like any Unix tool. The daemon and flush keep SIGPIPE ignored: they write to
    // sockets and pipes whose loss must be an error they handle, not death.
    if matches!(p.cmd.name, "daemon" | "flush") {
        ignore_sigpipe();
    }
    match p.cmd.name {
        "version" => {
            println!("relayq {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        "init" => {
            init_spool(&load()?, p.value("user"))?;
            Ok(0)
        }
        "setup" => crate::setup::run(&p),
        "queue" => queue_list(&load()?, p.switch("json")),
        "flush" => {
            let filter = crate::cli::QueueFilter {
                ids: p.operands.clone(),
                ..Default::default()
            };
            crate::daemon::flush(load()?, config.clone(), &filter)
        }
        "daemon" => {
            let fg =
                p.switch("foreground") || nix::unistd::isatty(std::io::stderr()).unwrap_or(false);
            crate::daemon::daemon(load()?, config.clone(), fg)
        }
        "show" | "hold" | "release" | "delete" => {
            // The admin commands (and the daemon's socket, for users) take the flags in their
            // long form and the IDs.
            let mut a: Vec<String> = ["all", "body", "raw"]
                .into_iter()
                .filter(|f| args::flags_of(p.cmd.name).any(|x| x.long == *f) && p.switch(f))
                .map(|f| format!("--{f}"))
                .collect();
            a.extend(p.operands.iter().cloned());
            crate::admin::manage(&Layout::new(&load()?.spool_dir), p.cmd.name, &a)
        }
        "test" => crate::diag::run(
            &load()?,
            p.value("to"),
            p.value("from"),
            p.switch("no-send"),
        ),
        "doctor" => {
            // Checked here (usage errors, --help); relayq-doctor parses the same table.
            let mut rest: Vec<OsString> = Vec::new();
            if p.switch("json") {
                rest.push("--json".into());
            }
            if let Some(d) = p.value("dns") {
                rest.push(format!("--dns={d}").into());
            }
            exec_beside("relayq-doctor", config.as_deref(), &rest)
        }
        "status" => {
            let stuck_after = match p.value("stuck-after") {
                Some(v) => crate::config::parse_duration(v).ok_or_else(|| {
                    Error::usage(format!("status: --stuck-after {v}: use e.g. 30m, 1h"))
                })?,
                None => std::time::Duration::from_secs(3600),
            };
            crate::admin::status(
                &Layout::new(&load()?.spool_dir),
                p.switch("json"),
                stuck_after,
                p.path("metrics").as_deref(),
            )
        }
        "import" => crate::import::run(&p),
        other => Err(Error::usage(format!("unknown command {other:?}"))),
    }
}

fn ignore_sigpipe() {
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
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
    let mut all: Vec<OsString> = Vec::new();
    if let Some(cfg) = config {
        all.extend([OsString::from("-C"), cfg.as_os_str().to_os_string()]);
    }
    all.extend_from_slice(args);
    exec_as(prog, OsString::from(prog), &all)
}

/// The front end's hand-over: `relayq` beside it runs this argv, as `argv0` (so its
/// messages and personality are sendmail's or mailq's). Only returns on failure.
fn exec_full(argv0: &OsString, args: &[OsString]) -> Result<i32> {
    exec_as("relayq", argv0.clone(), args)
}

/// Exec `prog` from this program's directory with `argv0` and `args`; the error if it
/// cannot run.
fn exec_as(prog: &str, argv0: OsString, args: &[OsString]) -> Result<i32> {
    use std::os::unix::process::CommandExt;
    let path = beside(prog)?;
    let e = std::process::Command::new(&path)
        .arg0(argv0)
        .args(args)
        .exec();
    Err(Error::new(
        crate::error::Class::Unavailable,
        format!(
            "cannot run {}: {e} (relayq installs it beside this program; reinstall relayq)",
            path.display()
        ),
    ))
}

/// A program installed in the same directory as this one.
fn beside(prog: &str) -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe().map_err(|e| {
        Error::new(
            crate::error::Class::OsErr,
            format!("cannot find myself: {e}"),
        )
    })?;
    Ok(exe.with_file_name(prog))
}

fn queue_list(cfg: &Config, json: bool) -> Result<i32> {
    // `mailq | head -1`: a closed pipe ends the listing with exit 0, quietly (not SIGPIPE's
    // 141, which `set -o pipefail` would report as a failure).
    ignore_sigpipe();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    crate::queue::list(&Layout::new(&cfg.spool_dir), json, &mut out)?;
    Ok(0)
}

//! `relayq doctor [--json] [--dns HOST:PORT]`: the config, the owners and modes the daemon
//! insists on (the same checks, from [`crate::perms`]), the daemon, the queue, and the sender
//! domain's SPF, DKIM and DMARC records. One line per check — pass, warn or FAIL — and for
//! warn/FAIL the fix on the next line. Exit 1 when something failed, else 0.
//!
//! A DNS server that cannot be asked (timeout, SERVFAIL, nothing reachable) is one `warn
//! dns` line, never a finding about the domain; NXDOMAIN or no record is a finding.
//!
//! Files: `dns` (the resolver, behind the `dns::Lookup` trait), `domain` (the sender domain's
//! SPF, DKIM and DMARC checks), `dkim` (`[dkim]`: the key file against the key published),
//! `oldqueue` (mail the replaced tool left in its queue). Here:
//! the report, the command, and the local checks.

mod dkim;
mod dns;
mod domain;
mod oldqueue;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::perms;
use crate::provider;
use crate::spool::Layout;
use domain::check_dns;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

#[derive(serde::Serialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum Level {
    Pass,
    Warn,
    Fail,
}

#[derive(serde::Serialize, Debug)]
struct Finding {
    status: Level,
    check: &'static str,
    found: String,
    fix: Option<String>,
}

/// The findings so far; printed as they come unless the output is JSON.
struct Report {
    json: bool,
    findings: Vec<Finding>,
    dns_warned: bool,
}

impl Report {
    fn push(&mut self, status: Level, check: &'static str, found: String, fix: Option<String>) {
        if !self.json {
            let word = match status {
                Level::Pass => "pass",
                Level::Warn => "warn",
                Level::Fail => "FAIL",
            };
            println!("{word}  {check:<11} {found}");
            if let Some(f) = &fix {
                println!("      {:<11} fix: {f}", "");
            }
        }
        self.findings.push(Finding {
            status,
            check,
            found,
            fix,
        });
    }
    fn pass(&mut self, check: &'static str, found: impl Into<String>) {
        self.push(Level::Pass, check, found.into(), None);
    }
    fn warn(&mut self, check: &'static str, found: impl Into<String>, fix: impl Into<String>) {
        self.push(Level::Warn, check, found.into(), Some(fix.into()));
    }
    fn fail(&mut self, check: &'static str, found: impl Into<String>, fix: impl Into<String>) {
        self.push(Level::Fail, check, found.into(), Some(fix.into()));
    }
    fn problem(&mut self, check: &'static str, p: perms::Problem) {
        self.fail(check, p.what, p.fix);
    }
    /// The DNS server could not be asked: said once, and not as a finding about the domain.
    fn dns_down(&mut self, why: &str) {
        if !self.dns_warned {
            self.dns_warned = true;
            self.warn(
                "dns",
                format!("could not ask DNS ({why}); the records it could not get were not checked"),
                "check /etc/resolv.conf and that a DNS server answers (or give --dns HOST:PORT); this is not a problem of your domain",
            );
        }
    }
    fn count(&self, l: Level) -> usize {
        self.findings.iter().filter(|f| f.status == l).count()
    }
}

struct Opts {
    json: bool,
    dns: Option<SocketAddr>,
}

/// The options, from the argument table (`crate::args`).
fn parse_args(p: &crate::args::Parsed) -> Result<Opts> {
    let dns = match p.value("dns") {
        Some(v) => Some(
            v.to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| {
                    Error::usage(format!(
                        "doctor: --dns {v}: want HOST:PORT, e.g. 127.0.0.1:53"
                    ))
                })?,
        ),
        None => None,
    };
    Ok(Opts {
        json: p.switch("json"),
        dns,
    })
}

pub fn run(p: &crate::args::Parsed) -> Result<i32> {
    let opts = parse_args(p)?;
    let config_flag = p.config.as_deref();
    let mut r = Report {
        json: opts.json,
        findings: Vec::new(),
        dns_warned: false,
    };
    match Config::load(config_flag) {
        Ok(cfg) => check_all(&mut r, &cfg, opts.dns),
        Err(e) => {
            r.fail(
                "config",
                e.msg,
                "correct the line named above (every key is in relayq.toml(5))",
            );
            if let Err(p) = perms::config_file(&crate::config::choose_path(config_flag)) {
                r.problem("permissions", p);
            }
        }
    }
    let (failed, warned) = (r.count(Level::Fail), r.count(Level::Warn));
    if r.json {
        let v = serde_json::json!({"checks": r.findings, "failed": failed, "warnings": warned});
        println!("{v}");
    } else {
        println!("{failed} failed, {warned} warning(s)");
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

fn check_all(r: &mut Report, cfg: &Config, dns: Option<SocketAddr>) {
    let path = cfg.path.display();
    if cfg.path.exists() {
        r.pass("config", format!("{path} loads and validates"));
    } else {
        r.pass("config", format!("{path} not found: built-in defaults"));
    }
    check_address(r, cfg);
    check_permissions(r, cfg);
    let layout = Layout::new(&cfg.spool_dir);
    check_daemon(r, &layout);
    check_logs(r, cfg, &layout);
    check_queue(r, &layout);
    oldqueue::check_old_queue(r);
    check_dns(r, cfg, dns);
}

fn check_address(r: &mut Report, cfg: &Config) {
    match &cfg.relay {
        Some(relay) => match provider::endpoint(relay) {
            Ok(ep) => r.pass(
                "relay",
                match &relay.provider {
                    Some(p) => format!("{ep} (provider {p})"),
                    None => ep.to_string(),
                },
            ),
            Err(e) => r.fail("relay", e, "see relayq.toml(5) for [relay] url and provider"),
        },
        None => r.fail(
            "relay",
            "no [relay] configured: mail stays in the queue",
            "set [relay] provider = \"smtp2go\" (or another preset) or url = \"smtps://host:465\", with username and password_file",
        ),
    }
    let a = &cfg.address;
    match &a.admin {
        Some(x) => r.pass("admin", format!("mail for root and other local accounts goes to {x}")),
        None => r.warn(
            "admin",
            "address.admin is not set",
            "set [address] admin = \"you@example.com\": mail for root (cron, smartd, unattended-upgrades) goes there instead of to a local name the relay cannot deliver",
        ),
    }
    match &a.sender {
        Some(x) => r.pass("sender", format!("local mail is sent as {x}")),
        None => r.warn(
            "sender",
            "address.sender is not set",
            "set [address] sender to an address your provider has verified: relays refuse mail from senders they do not know",
        ),
    }
}

fn check_permissions(r: &mut Report, cfg: &Config) {
    match perms::config_file(&cfg.path) {
        Ok(()) => r.pass(
            "permissions",
            format!("config {} is not writable by others", cfg.path.display()),
        ),
        Err(p) => r.problem("permissions", p),
    }
    let layout = Layout::new(&cfg.spool_dir);
    match perms::spool(&layout) {
        Ok(()) => r.pass(
            "permissions",
            format!(
                "spool {}: owners and modes as `relayq init` makes them",
                layout.root.display()
            ),
        ),
        Err(p) => r.problem("permissions", p),
    }
    let owner = perms::spool_owner(&layout).ok();
    for pw in cfg
        .routes()
        .into_iter()
        .flatten()
        .filter_map(|x| x.password_file.as_ref())
    {
        match perms::password_file(pw, owner) {
            Ok(()) => r.pass(
                "permissions",
                format!(
                    "password_file {}: not readable by others, owned by root or the daemon's user",
                    pw.display()
                ),
            ),
            Err(p) => r.problem("permissions", p),
        }
    }
}

/// A systemd flush timer or a cron job that runs `relayq flush` / `sendmail -q`.
fn flush_timer() -> Option<String> {
    let unit = "/etc/systemd/system/timers.target.wants/relayq-flush.timer";
    if Path::new(unit).exists() {
        return Some("relayq-flush.timer".into());
    }
    let mut files = vec![std::path::PathBuf::from("/etc/crontab")];
    if let Ok(d) = std::fs::read_dir("/etc/cron.d") {
        files.extend(d.filter_map(|e| e.ok()).map(|e| e.path()).take(200));
    }
    files.into_iter().find_map(|f| {
        let t = std::fs::read_to_string(&f).ok()?;
        (t.contains("relayq flush") || t.contains("sendmail -q")).then(|| f.display().to_string())
    })
}

fn check_daemon(r: &mut Report, layout: &Layout) {
    match crate::admin::daemon_state(layout) {
        (true, Some(pid)) => r.pass("daemon", format!("running (pid {pid})")),
        (true, None) => r.pass("daemon", "running"),
        (false, _) => match flush_timer() {
            Some(t) => r.pass(
                "daemon",
                format!("not running; the queue is flushed by {t}"),
            ),
            None => r.warn(
                "daemon",
                "not running, and no flush timer or cron job found",
                format!(
                    "{} ({}run `relayq flush` from cron): otherwise mail waits in the queue",
                    crate::initsys::hint(crate::initsys::Action::Enable, None),
                    if crate::initsys::detect() == crate::initsys::Init::Systemd {
                        "or enable relayq-flush.timer, or "
                    } else {
                        "or "
                    }
                ),
            ),
        },
    }
}

/// Where the daemon's log lines go: syslog when it listens, else the daemon's stderr,
/// which must lead somewhere (a running daemon's is looked at, as root).
fn check_logs(r: &mut Report, cfg: &Config, layout: &Layout) {
    let socket = crate::log::syslog_socket_present();
    if cfg.log.syslog && socket {
        let file = ["/var/log/mail.log", "/var/log/maillog", "/var/log/messages"]
            .into_iter()
            .find(|f| Path::new(f).exists());
        let seen = match (crate::initsys::detect(), file) {
            (crate::initsys::Init::Systemd, _) => "journalctl -t relayq".to_string(),
            (_, Some(f)) => f.to_string(),
            (_, None) => "your syslog daemon's mail log".to_string(),
        };
        r.pass(
            "logs",
            format!(
                "syslog ({}), facility mail: {seen}",
                crate::log::SYSLOG_SOCKET
            ),
        );
        return;
    }
    let why = if cfg.log.syslog {
        format!(
            "no syslog socket ({}): the daemon logs to its stderr",
            crate::log::SYSLOG_SOCKET
        )
    } else {
        "[log] syslog = false: the daemon logs to its stderr".to_string()
    };
    let stderr = match crate::admin::daemon_state(layout) {
        (true, Some(pid)) => std::fs::read_link(format!("/proc/{pid}/fd/2")).ok(),
        _ => None,
    };
    match stderr.as_deref().and_then(Path::to_str) {
        Some("/dev/null") => r.fail(
            "logs",
            format!("{why}, which is /dev/null: nothing is kept"),
            "install and start a syslog daemon (apt install rsyslog), or start the daemon with its stderr kept: `relayq daemon --foreground` under docker or a supervisor, or the init script (/var/log/relayq.log)",
        ),
        Some(p) => r.pass("logs", format!("{why}: {p}")),
        None if cfg.log.syslog => r.warn(
            "logs",
            why,
            "keep the daemon's stderr (`relayq daemon --foreground` under docker or a supervisor; the init script writes /var/log/relayq.log), or install a syslog daemon (apt install rsyslog)",
        ),
        None => r.pass("logs", why),
    }
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

fn check_queue(r: &mut Report, layout: &Layout) {
    let s = match crate::admin::collect(layout, Duration::from_secs(3600)) {
        Ok(s) => s,
        Err(e) => {
            r.warn(
                "queue",
                format!("cannot read the queue: {}", e.msg),
                "run relayq doctor as root",
            );
            return;
        }
    };
    let mut found = format!(
        "{} queued ({} deferred), {} incoming, {} held",
        s.queued, s.deferred, s.incoming, s.held
    );
    if let Some(a) = s.oldest_age_seconds {
        found.push_str(&format!("; oldest {}", age(a)));
    }
    if let Some(e) = &s.last_error {
        found.push_str(&format!("; last error: {e}"));
    }
    if s.stuck {
        r.warn(
            "queue",
            found,
            "mail has waited over an hour: `relayq queue` shows why, `relayq test` checks the relay",
        );
    } else if s.corrupt > 0 {
        r.warn(
            "queue",
            format!("{found}; {} unreadable file(s) set aside", s.corrupt),
            format!(
                "look at {} and delete what you do not need",
                layout.display_dir("corrupt")
            ),
        );
    } else {
        r.pass("queue", found);
    }
}

//! `relayq`'s argument table: one definition per flag (its long name, short name, value name,
//! help line and the commands that take it) drives the parsing of every `relayq` command,
//! each command's `--help`, the overview (`relayq --help`) and the OPTIONS section of
//! relayq(8) (`relayq --help-man`, checked against the page by tests/cli.rs). After the
//! layout of ripgrep's `crates/core/flags/defs.rs`, as a table rather than a trait per flag:
//! the commands read typed values out of the [`Parsed`] result themselves.
//!
//! Rules, the same for every command: `--opt=value` and `--opt value`; a value that looks
//! like a flag is not taken as one (`--to --no-send` is "--to needs a value"; write
//! `--to=-x` for a value starting with '-'); unknown flags are usage errors naming the
//! nearest flag; `--` ends the flags. sendmail's own argv (`sendmail`, `mailq`, `newaliases`)
//! is not parsed here but by `cli`, whose grammar is sendmail's.
//! Pure: no I/O; errors are usage errors (exit 64).

use crate::error::{Error, Result};
use std::ffi::OsString;
use std::path::PathBuf;

/// What a flag takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takes {
    /// Nothing: a switch.
    Nothing,
    /// A value, named so in help (`--to ADDR`).
    Value(&'static str),
    /// Refused whatever its value, with this reason (`setup --password`). Not in help.
    Refused(&'static str),
}

/// One flag.
#[derive(Debug)]
pub struct Flag {
    pub long: &'static str,
    pub short: Option<char>,
    pub takes: Takes,
    /// Other long names that mean the same (`--user` for `--username`). Not in help.
    pub aliases: &'static [&'static str],
    pub help: &'static str,
    /// The commands that take it; [`EVERY`] for all of them.
    pub cmds: &'static [&'static str],
}

/// `cmds` of the flags every command takes (-C, --help).
pub const EVERY: &[&str] = &["*"];

/// One `relayq` command.
#[derive(Debug)]
pub struct Command {
    pub name: &'static str,
    /// Other names (`mailq` for `queue`).
    pub aliases: &'static [&'static str],
    /// Operands after the flags (`ID...`), or "" for none.
    pub operands: &'static str,
    /// Flags that must be given (shown without brackets).
    pub required: &'static [&'static str],
    /// One line for the overview.
    pub summary: &'static str,
    /// The paragraph of `relayq CMD --help` under the usage line.
    pub about: &'static str,
}

const fn sw(long: &'static str, help: &'static str, cmds: &'static [&'static str]) -> Flag {
    Flag {
        long,
        short: None,
        takes: Takes::Nothing,
        aliases: &[],
        help,
        cmds,
    }
}

const fn val(
    long: &'static str,
    value: &'static str,
    help: &'static str,
    cmds: &'static [&'static str],
) -> Flag {
    Flag {
        long,
        short: None,
        takes: Takes::Value(value),
        aliases: &[],
        help,
        cmds,
    }
}

const fn short(c: char, f: Flag) -> Flag {
    Flag {
        short: Some(c),
        ..f
    }
}

const fn alias(a: &'static [&'static str], f: Flag) -> Flag {
    Flag { aliases: a, ..f }
}

pub const FLAGS: &[Flag] = &[
    short(
        'C',
        val(
            "config",
            "FILE",
            "the config file (default /etc/relayq/relayq.toml)",
            EVERY,
        ),
    ),
    short('h', sw("help", "this help", EVERY)),
    // setup
    val(
        "provider",
        "NAME",
        "smtp2go, ses:REGION, sendgrid, mailgun, postmark, gmail, office365, fastmail",
        &["setup"],
    ),
    val(
        "url",
        "URL",
        "any other relay: smtps://host:465 or smtp://host:587",
        &["setup"],
    ),
    alias(
        &["user"],
        val(
            "username",
            "USER",
            "the SMTP user (SendGrid: apikey)",
            &["setup"],
        ),
    ),
    sw(
        "password-stdin",
        "read the password or API key from stdin (first line)",
        &["setup"],
    ),
    val(
        "password-command",
        "CMD",
        "a command printing the password or an OAuth2 token",
        &["setup"],
    ),
    val(
        "password-file",
        "FILE",
        "use an existing secrets file as it is",
        &["setup"],
    ),
    Flag {
        long: "password",
        short: None,
        takes: Takes::Refused(
            "--password would show the secret in ps and shell history: use --password-stdin, --password-file or --password-command",
        ),
        aliases: &[],
        help: "",
        cmds: &["setup"],
    },
    val("auth", "KIND", "auto, plain, login, xoauth2", &["setup"]),
    val(
        "admin",
        "ADDR",
        "where mail for root and other local accounts goes",
        &["setup"],
    ),
    alias(
        &["from"],
        val(
            "sender",
            "ADDR",
            "the sender address the relay accepts (verified with it)",
            &["setup"],
        ),
    ),
    val(
        "domain",
        "DOMAIN",
        "qualifies bare names (default: the sender's domain)",
        &["setup"],
    ),
    val(
        "ca-file",
        "FILE",
        "extra trust anchor (PEM) for a private relay",
        &["setup"],
    ),
    val(
        "spool-dir",
        "DIR",
        "spool directory (default /var/spool/relayq)",
        &["setup"],
    ),
    val(
        "to",
        "ADDR",
        "send the test message here (default: the admin address)",
        &["setup", "test"],
    ),
    sw("no-test", "do not run `relayq test` afterwards", &["setup"]),
    sw(
        "no-send",
        "check every step but send no test message",
        &["setup", "test"],
    ),
    val(
        "from",
        "ADDR",
        "test the relay mail from this sender goes through ([[sender_relay]]), as this sender",
        &["test"],
    ),
    // init
    val(
        "user",
        "NAME",
        "the spool's owner (default: relayq if it exists, else the caller)",
        &["init"],
    ),
    // daemon
    short(
        'f',
        sw(
            "foreground",
            "also log to stderr (as on a terminal)",
            &["daemon"],
        ),
    ),
    // queue, status, doctor
    sw(
        "json",
        "one JSON object per line",
        &["queue", "status", "doctor"],
    ),
    // show
    sw("body", "the whole message, not only the header", &["show"]),
    sw(
        "raw",
        "control characters as they are (default: escaped, ^[ for ESC)",
        &["show"],
    ),
    // hold, release, delete
    sw(
        "all",
        "every message (of your own, unless root or the spool's owner)",
        &["hold", "release", "delete"],
    ),
    // status
    val(
        "stuck-after",
        "DURATION",
        "exit 1 when mail (or the relay) has waited this long (default 1h)",
        &["status"],
    ),
    val(
        "metrics",
        "FILE",
        "also write Prometheus text here (node_exporter's textfile collector)",
        &["status"],
    ),
    // import
    val(
        "from",
        "TOOL",
        "the tool replaced: nullmailer, msmtp, ssmtp, dma or postfix",
        &["import"],
    ),
    val(
        "path",
        "FILE_OR_DIR",
        "its configuration (default: the tool's usual place, e.g. /etc/postfix)",
        &["import"],
    ),
    val(
        "queue",
        "DIR",
        "where the old tool's queue is (default: from its configuration)",
        &["import"],
    ),
    sw(
        "queue-only",
        "take the old queue over with the existing config; import no config",
        &["import"],
    ),
    short(
        'n',
        sw(
            "dry-run",
            "print what would be written, write nothing",
            &["import"],
        ),
    ),
    short(
        'f',
        sw(
            "force",
            "replace an existing config and secrets file",
            &["setup", "import"],
        ),
    ),
    // doctor
    val(
        "dns",
        "HOST:PORT",
        "ask this DNS server instead of /etc/resolv.conf's",
        &["doctor"],
    ),
];

pub const COMMANDS: &[Command] = &[
    Command {
        name: "setup",
        aliases: &[],
        operands: "",
        required: &[],
        summary: "write the config and secrets for a provider, then test it",
        about: "Asks on a terminal (each answer checked as given), or takes flags; writes the config\nand the password beside it, makes the spool, then runs `relayq test`.",
    },
    Command {
        name: "init",
        aliases: &[],
        operands: "",
        required: &[],
        summary: "create the spool with its owners and modes (idempotent)",
        about: "Create the spool with its owners and modes (idempotent). The owner is NAME, else\nthe user relayq if it exists, else the caller.",
    },
    Command {
        name: "daemon",
        aliases: &[],
        operands: "",
        required: &[],
        summary: "relay the queue continuously (wakes on new mail)",
        about: "Relay the queue until stopped (SIGTERM); new mail is noticed at once (inotify).\nSIGHUP rereads the config (a bad one is refused, the old one kept); SIGUSR1 retries\nthe whole queue now. --foreground (or a terminal) also logs to stderr.\nUsually started by the init system: systemctl enable --now relayq (systemd),\nservice relayq start (the package's /etc/init.d/relayq), rc-service relayq start (OpenRC).\nIt writes its pid to run/relayq.pid in the spool.",
    },
    Command {
        name: "flush",
        aliases: &[],
        operands: "[ID...]",
        required: &[],
        summary: "one delivery pass now, ignoring backoff, then exit",
        about: "One delivery pass now, ignoring backoff, then exit (also sendmail -q, -qI<id>,\n-qR<domain>, -qS<sender>). With a daemon running, the daemon flushes instead (only the\nselected messages; the others keep their backoff).\nOn a terminal: progress (count, rate, ETA) and a summary. From cron: silent unless\nsomething fails.",
    },
    Command {
        name: "queue",
        aliases: &["mailq"],
        operands: "",
        required: &[],
        summary: "list the queue (also: mailq, sendmail -bp)",
        about: "List the queue (also mailq, sendmail -bp): each message's ID, size, arrival,\nsender, and every pending recipient with the relay's last reply and the next\nattempt; ! marks a held message. --json: one object per line, like postqueue -j.\nRoot sees every message; other users see their own (through the daemon).",
    },
    Command {
        name: "show",
        aliases: &[],
        operands: "ID",
        required: &[],
        summary: "envelope, recipients' states, header (and body)",
        about: "One message: envelope, submitter, each recipient's state with the relay's reply,\nthe next attempt, and the header (--body: the whole message). Control characters\nare shown escaped (^[ for ESC), so a message cannot drive the terminal; --raw: as is.\nRoot, or the user who sent it.",
    },
    Command {
        name: "hold",
        aliases: &[],
        operands: "ID...",
        required: &[],
        summary: "keep messages from being sent",
        about: "Keep messages from being sent until released. Root, or the user who sent them\n(--all: all of your own).",
    },
    Command {
        name: "release",
        aliases: &[],
        operands: "ID...",
        required: &[],
        summary: "let held messages go again",
        about: "Let held messages go again (the daemon takes them at once). Root, or the user who\nsent them.",
    },
    Command {
        name: "delete",
        aliases: &[],
        operands: "ID...",
        required: &[],
        summary: "remove messages from the queue",
        about: "Remove messages from the queue, without a bounce. Root, or the user who sent them.",
    },
    Command {
        name: "status",
        aliases: &[],
        operands: "",
        required: &[],
        summary: "daemon, relay, queue counts, oldest message, last delivery;\nexit 1 when mail (or the relay) is stuck",
        about: "Daemon running or not, queue counts by state, oldest message, last delivery, last\nerror. Exits 1 when a message has waited longer than --stuck-after (default 1h),\nfor monitoring. --metrics FILE also writes Prometheus text (node_exporter's\ntextfile collector).",
    },
    Command {
        name: "test",
        aliases: &[],
        operands: "",
        required: &[],
        summary: "check DNS, TCP, TLS, AUTH, the sender, and send a test message",
        about: "Check each relay step by step: DNS, TCP, TLS and its certificate, EHLO, AUTH,\nwhether the relay accepts the sender, and a test message to ADDR (default: the\nadmin address). Each failure comes with a hint. Exits 69 when a step fails.",
    },
    Command {
        name: "import",
        aliases: &[],
        operands: "",
        required: &["from"],
        summary: "write relayq's config from the replaced tool's configuration",
        about: "Read the configuration of the tool relayq replaces and write relayq's equivalent\n(the -C file, else /etc/relayq/relayq.toml, and the password beside it), saying\nwhat was carried over and what was not, and why. An existing config is replaced\nonly with --force. Exits 65 when the source cannot be parsed or names no relay,\n66 when it does not exist, 77 when it cannot be read.",
    },
    Command {
        name: "doctor",
        aliases: &[],
        operands: "",
        required: &[],
        summary: "check config, permissions, daemon, queue, and the sender\ndomain's SPF, DKIM and DMARC; exit 1 when a check fails",
        about: "Check the set-up without sending: config, owners and modes of the spool and the\nsecrets, the daemon, the queue, and the sender domain's DNS (SPF includes the\nprovider, DKIM under its selectors, the DMARC policy). One line per check: pass,\nwarn or FAIL, with the fix. Exits 1 when a check fails.",
    },
    Command {
        name: "version",
        aliases: &[],
        operands: "",
        required: &[],
        summary: "print the version",
        about: "Print the version.",
    },
    Command {
        name: "help",
        aliases: &[],
        operands: "[COMMAND]",
        required: &[],
        summary: "this overview, or a command's help",
        about: "This overview, or the help of COMMAND (as relayq COMMAND --help).",
    },
];

impl Flag {
    /// `--to ADDR` / `-f, --force`, as help shows it.
    fn shown(&self) -> String {
        let mut s = match self.short {
            Some(c) => format!("-{c}, --{}", self.long),
            None => format!("--{}", self.long),
        };
        if let Takes::Value(v) = self.takes {
            s += &format!(" {v}");
        }
        s
    }
}

/// The command named `name` (or one of its aliases).
pub fn command(name: &str) -> Option<&'static Command> {
    COMMANDS
        .iter()
        .find(|c| c.name == name || c.aliases.contains(&name))
}

/// The flags `cmd` takes, in table order (the command's own first, then -C and --help).
pub fn flags_of(cmd: &str) -> impl Iterator<Item = &'static Flag> + '_ {
    let own = FLAGS
        .iter()
        .filter(move |f| f.cmds != EVERY && f.cmds.contains(&cmd));
    own.chain(FLAGS.iter().filter(|f| f.cmds == EVERY))
}

/// What a command line said: the command, and the flags and operands given to it.
#[derive(Debug)]
pub struct Parsed {
    pub cmd: &'static Command,
    /// -C / --config.
    pub config: Option<PathBuf>,
    given: Vec<(&'static str, Option<String>)>,
    /// The operands (IDs), in order.
    pub operands: Vec<String>,
}

impl Parsed {
    fn check(&self, long: &str) {
        debug_assert!(
            flags_of(self.cmd.name).any(|f| f.long == long),
            "{} does not take --{long}",
            self.cmd.name
        );
    }

    /// Whether the switch `long` was given.
    pub fn switch(&self, long: &str) -> bool {
        self.check(long);
        self.given.iter().any(|(l, _)| *l == long)
    }

    /// The value of `long` (the last one given).
    pub fn value(&self, long: &str) -> Option<&str> {
        self.check(long);
        self.given
            .iter()
            .rev()
            .find(|(l, _)| *l == long)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The value of `long` as a path.
    pub fn path(&self, long: &str) -> Option<PathBuf> {
        self.value(long).map(PathBuf::from)
    }
}

fn usage_err(cmd: &str, what: impl std::fmt::Display) -> Error {
    if cmd.is_empty() {
        Error::usage(format!("{what} (relayq --help lists them)"))
    } else {
        Error::usage(format!("{cmd}: {what} (see relayq {cmd} --help)"))
    }
}

/// Edit distance with transpositions counted as one edit (optimal string alignment), for
/// "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// The candidate nearest to `word`, when near enough to be a typo of it.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let w = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (distance(&w, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= (c.chars().count() / 3).max(1) || c.starts_with(&w) && w.len() >= 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn utf8(cmd: &str, what: &str, v: OsString) -> Result<String> {
    v.into_string()
        .map_err(|_| usage_err(cmd, format!("{what}: the value is not valid UTF-8")))
}

/// Parse `relayq`'s argv (without argv[0]). `Ok(Top::…)` for what happens before a command.
pub enum Top {
    /// `relayq --help`, `relayq help`.
    Overview,
    /// `relayq --help-man`: relayq(8)'s OPTIONS section.
    Man,
    /// `relayq sendmail ARGS`: sendmail's own grammar, not parsed here.
    Sendmail(Option<PathBuf>, Vec<OsString>),
    /// `relayq CMD --help`, `relayq help CMD`.
    Help(&'static Command),
    Run(Parsed),
}

pub fn parse(args: Vec<OsString>) -> Result<Top> {
    let mut it = args.into_iter().peekable();
    let mut config = None;
    // Flags before the command: -C, --help, --version, --help-man.
    let name = loop {
        let Some(a) = it.next() else {
            return Err(Error::usage(overview()));
        };
        let s = a.to_string_lossy().into_owned();
        match s.as_str() {
            "-h" | "--help" => return Ok(Top::Overview),
            "--help-man" => return Ok(Top::Man),
            "-V" | "--version" => break "version".to_string(),
            _ if s.starts_with('-') && s.len() > 1 => {
                let mut one = vec![a];
                // A valued flag's separate value.
                if matches!(s.as_str(), "-C" | "--config") {
                    one.extend(it.next());
                }
                let p = parse_flags("", one)?;
                config = p.config.or(config);
            }
            _ => break s,
        }
    };
    if name == "sendmail" {
        return Ok(Top::Sendmail(config, it.collect()));
    }
    let Some(cmd) = command(&name) else {
        let near = nearest(&name, COMMANDS.iter().map(|c| c.name));
        return Err(usage_err(
            "",
            match near {
                Some(n) => format!("unknown command {name:?}; did you mean {n}?"),
                None => format!("unknown command {name:?}"),
            },
        ));
    };
    let rest: Vec<OsString> = it.collect();
    if cmd.name == "help" {
        return match rest.first().map(|a| a.to_string_lossy()) {
            None => Ok(Top::Overview),
            Some(h) if h == "-h" || h == "--help" => Ok(Top::Help(cmd)),
            Some(n) => command(&n)
                .map(Top::Help)
                .ok_or_else(|| usage_err("", format!("help: unknown command {n:?}"))),
        };
    }
    if rest.iter().any(|a| a == "-h" || a == "--help") && !rest.iter().any(|a| a == "--") {
        return Ok(Top::Help(cmd));
    }
    let mut p = parse_flags(cmd.name, rest)?;
    p.config = p.config.or(config);
    Ok(Top::Run(p))
}

/// Parse the arguments of command `cmd` ("" for the flags before a command) by the table.
pub fn parse_flags(cmd: &str, args: Vec<OsString>) -> Result<Parsed> {
    let command = command(cmd).unwrap_or(&COMMANDS[0]);
    let table_cmd = if cmd.is_empty() { "" } else { command.name };
    let mut p = Parsed {
        cmd: command,
        config: None,
        given: Vec::new(),
        operands: Vec::new(),
    };
    let mut it = args.into_iter().peekable();
    let mut only_operands = false;
    while let Some(a) = it.next() {
        let s = utf8(table_cmd, "argument", a)?;
        if only_operands || s == "-" || !s.starts_with('-') {
            if command.operands.is_empty() || cmd.is_empty() {
                return Err(usage_err(table_cmd, format!("unexpected argument {s:?}")));
            }
            p.operands.push(s);
            continue;
        }
        if s == "--" {
            only_operands = true;
            continue;
        }
        // --name[=value], -x, -xVALUE (a valued short flag), -ab (switches).
        let (flag, inline): (&'static Flag, Option<String>) =
            if let Some(body) = s.strip_prefix("--") {
                let (name, inline) = match body.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (body, None),
                };
                (lookup_long(table_cmd, name)?, inline)
            } else {
                let mut chars = s[1..].chars();
                let c = chars.next().unwrap_or('-');
                let f = lookup_short(table_cmd, c)?;
                let tail: String = chars.collect();
                if tail.is_empty() {
                    (f, None)
                } else if matches!(f.takes, Takes::Value(_)) {
                    (f, Some(tail))
                } else {
                    // Bundled switches: -nf.
                    for c2 in tail.chars() {
                        let g = lookup_short(table_cmd, c2)?;
                        if g.takes != Takes::Nothing {
                            return Err(usage_err(
                                table_cmd,
                                format!("-{c2} needs a value: give it on its own"),
                            ));
                        }
                        p.given.push((g.long, None));
                    }
                    (f, None)
                }
            };
        match flag.takes {
            Takes::Refused(why) => return Err(usage_err(table_cmd, why)),
            Takes::Nothing => {
                if inline.is_some() {
                    return Err(usage_err(
                        table_cmd,
                        format!("--{} takes no value", flag.long),
                    ));
                }
                p.given.push((flag.long, None));
            }
            Takes::Value(name) => {
                let v = match inline {
                    Some(v) => v,
                    None => {
                        let next = it.peek().map(|n| n.to_string_lossy().into_owned());
                        match next {
                            Some(n) if !(n.starts_with('-') && n.len() > 1) => {
                                let n = it.next().unwrap_or_default();
                                utf8(table_cmd, &format!("--{}", flag.long), n)?
                            }
                            Some(n) => {
                                return Err(usage_err(
                                    table_cmd,
                                    format!(
                                        "--{} needs a value ({name}), not the flag {n} (for a value starting with '-': --{}=VALUE)",
                                        flag.long, flag.long
                                    ),
                                ));
                            }
                            None => {
                                return Err(usage_err(
                                    table_cmd,
                                    format!("--{} needs a value ({name})", flag.long),
                                ));
                            }
                        }
                    }
                };
                if flag.long == "config" {
                    p.config = Some(PathBuf::from(&v));
                }
                p.given.push((flag.long, Some(v)));
            }
        }
    }
    if !cmd.is_empty() {
        for r in command.required {
            if !p.given.iter().any(|(l, _)| l == r) {
                return Err(usage_err(table_cmd, format!("--{r} is required")));
            }
        }
    }
    Ok(p)
}

/// The flags the flags before a command may be (-C and --help).
fn candidates(cmd: &str) -> Vec<&'static Flag> {
    if cmd.is_empty() {
        FLAGS.iter().filter(|f| f.cmds == EVERY).collect()
    } else {
        flags_of(cmd).collect()
    }
}

fn lookup_long(cmd: &str, name: &str) -> Result<&'static Flag> {
    let cands = candidates(cmd);
    if let Some(f) = cands
        .iter()
        .find(|f| f.long == name || f.aliases.contains(&name))
    {
        return Ok(f);
    }
    let shown = cands
        .iter()
        .filter(|f| !matches!(f.takes, Takes::Refused(_)))
        .map(|f| f.long);
    let why = if let Some(n) = nearest(name, shown) {
        format!("unknown flag --{name}; did you mean --{n}?")
    } else if let Some(other) = FLAGS.iter().find(|f| f.long == name && f.cmds != EVERY) {
        format!(
            "unknown flag --{name}; it is a flag of {}",
            other.cmds.join(", ")
        )
    } else {
        format!("unknown flag --{name}")
    };
    Err(usage_err(cmd, why))
}

fn lookup_short(cmd: &str, c: char) -> Result<&'static Flag> {
    candidates(cmd)
        .into_iter()
        .find(|f| f.short == Some(c))
        .ok_or_else(|| usage_err(cmd, format!("unknown flag -{c}")))
}

// ---------- help ----------

/// `relayq CMD ...` as the overview and the usage line show it.
fn synopsis(c: &Command) -> String {
    let own: Vec<&Flag> = flags_of(c.name)
        .filter(|f| f.cmds != EVERY && !matches!(f.takes, Takes::Refused(_)))
        .collect();
    let mut s = c.name.to_string();
    if own.len() > 4 {
        s += " [options]";
    } else {
        for f in own {
            let one = match f.takes {
                Takes::Value(v) => format!("--{} {v}", f.long),
                _ => format!("--{}", f.long),
            };
            if c.required.contains(&f.long) {
                s += &format!(" {one}");
            } else {
                s += &format!(" [{one}]");
            }
        }
    }
    if !c.operands.is_empty() {
        s += &format!(" {}", c.operands);
    }
    s
}

fn option_lines(c: &Command) -> String {
    let mut out = String::new();
    for f in flags_of(c.name).filter(|f| f.cmds != EVERY && !matches!(f.takes, Takes::Refused(_))) {
        let shown = f.shown();
        if shown.len() <= 22 {
            out += &format!("  {shown:<22} {}\n", f.help);
        } else {
            out += &format!("  {shown}\n  {:<22} {}\n", "", f.help);
        }
    }
    // The flags of every command, on one line (a command's help fits a screen).
    let every: Vec<String> = FLAGS
        .iter()
        .filter(|f| f.cmds == EVERY)
        .map(|f| format!("{}: {}", f.shown(), f.help))
        .collect();
    out += &format!("  {}\n", every.join("; "));
    out
}

/// `relayq CMD --help`.
pub fn help(c: &Command) -> String {
    format!(
        "usage: relayq [-C FILE] {}\n\n{}\n\nOptions:\n{}",
        synopsis(c),
        c.about,
        option_lines(c).trim_end()
    )
}

/// `relayq --help`.
pub fn overview() -> String {
    let mut s = String::from("usage: relayq [-C FILE] <command> [options]\n\nCommands:\n");
    for c in COMMANDS {
        let syn = synopsis(c);
        let mut summary = c.summary.lines();
        let first = summary.next().unwrap_or_default();
        if syn.len() <= 21 {
            s += &format!("  {syn:<21}  {first}\n");
        } else {
            s += &format!("  {syn}\n  {:<21}  {first}\n", "");
        }
        for more in summary {
            s += &format!("  {:<21}  {more}\n", "");
        }
    }
    s += "\nrelayq COMMAND --help shows a command's options. Root and the spool's owner may\n\
show, hold, release or delete any message; other users their own (via the daemon).\n\
As sendmail, mailq or newaliases (by program name), relayq behaves like them;\n\
see sendmail(8), relayq(8), relayq.toml(5).";
    s
}

fn roff(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// relayq(8)'s OPTIONS section, from the table (`relayq --help-man`).
pub fn man() -> String {
    let mut s = String::from(
        ".\\\" BEGIN GENERATED OPTIONS: the output of `relayq --help-man` (src/args.rs); tests/cli.rs checks it.\n.SH OPTIONS\n",
    );
    s += "Every command takes\n";
    for f in FLAGS.iter().filter(|f| f.cmds == EVERY) {
        s += &format!(".TP\n{}\n{}.\n", man_flag(f), roff(f.help));
    }
    s += ".PP\nEach value is given as \\fB\\-\\-opt\\fR \\fIvalue\\fR or \\fB\\-\\-opt=\\fIvalue\\fR (for a value that starts with\n\\fB\\-\\fR, only the latter); an unknown flag is an error (exit 64) that names the nearest one.\n";
    for c in COMMANDS {
        let own: Vec<&Flag> = flags_of(c.name)
            .filter(|f| f.cmds != EVERY && !matches!(f.takes, Takes::Refused(_)))
            .collect();
        if own.is_empty() {
            continue;
        }
        s += &format!(".SS {}\n", c.name);
        for f in own {
            s += &format!(".TP\n{}\n{}.\n", man_flag(f), roff(f.help));
        }
    }
    s += ".\\\" END GENERATED OPTIONS\n";
    s
}

fn man_flag(f: &Flag) -> String {
    let mut s = String::new();
    if let Some(c) = f.short {
        s += &format!("\\fB\\-{c}\\fR, ");
    }
    s += &format!("\\fB\\-\\-{}\\fR", roff(f.long).trim_start_matches("\\&"));
    if let Takes::Value(v) = f.takes {
        s += &format!(" \\fI{}\\fR", roff(v));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Parsed> {
        match parse(args.iter().map(OsString::from).collect())? {
            Top::Run(p) => Ok(p),
            _ => panic!("not a command run"),
        }
    }

    fn err(args: &[&str]) -> String {
        match parse(args.iter().map(OsString::from).collect()) {
            Err(e) => {
                assert_eq!(e.code(), 64);
                e.msg
            }
            Ok(_) => panic!("{args:?} parsed"),
        }
    }

    #[test]
    fn table_is_consistent() {
        for c in COMMANDS {
            let mut seen: Vec<&str> = Vec::new();
            let mut shorts: Vec<char> = Vec::new();
            for f in flags_of(c.name) {
                for n in std::iter::once(f.long).chain(f.aliases.iter().copied()) {
                    assert!(!seen.contains(&n), "{}: --{n} twice", c.name);
                    seen.push(n);
                }
                if let Some(s) = f.short {
                    assert!(!shorts.contains(&s), "{}: -{s} twice", c.name);
                    shorts.push(s);
                }
            }
            for r in c.required {
                assert!(seen.contains(r), "{} requires unknown --{r}", c.name);
            }
        }
        for f in FLAGS {
            for c in f.cmds.iter().filter(|c| **c != "*") {
                assert!(command(c).is_some(), "--{} names no command {c}", f.long);
            }
        }
    }

    #[test]
    fn both_value_forms_and_missing_values() {
        let p = run(&["test", "--to=a@b.example", "--no-send"]).unwrap();
        assert_eq!(p.value("to"), Some("a@b.example"));
        assert!(p.switch("no-send"));
        let p = run(&["test", "--to", "a@b.example"]).unwrap();
        assert_eq!(p.value("to"), Some("a@b.example"));
        assert!(!p.switch("no-send"));
        assert!(err(&["test", "--to", "--no-send"]).contains("--to needs a value"));
        assert!(err(&["test", "--to"]).contains("--to needs a value"));
        let p = run(&["test", "--to=-odd@x"]).unwrap();
        assert_eq!(p.value("to"), Some("-odd@x"));
        assert!(err(&["status", "--metrics", "--json"]).contains("--metrics needs a value"));
        assert!(err(&["status", "--json=yes"]).contains("takes no value"));
    }

    #[test]
    fn unknown_flags_name_the_nearest() {
        assert!(
            err(&["status", "--jsn"]).contains("unknown flag --jsn; did you mean --json?"),
            "{}",
            err(&["status", "--jsn"])
        );
        assert!(err(&["status", "--body"]).contains("it is a flag of show"));
        assert!(err(&["stauts"]).contains("did you mean status?"));
        assert!(err(&["queue", "x"]).contains("unexpected argument"));
        assert!(err(&["setup", "--password", "x"]).contains("ps and shell history"));
        assert!(err(&["import"]).contains("--from is required"));
    }

    #[test]
    fn shorts_aliases_config_and_operands() {
        let p = run(&["-C", "/x.toml", "import", "--from", "msmtp", "-nf"]).unwrap();
        assert_eq!(p.config, Some(PathBuf::from("/x.toml")));
        assert!(p.switch("dry-run") && p.switch("force"));
        let p = run(&["setup", "--user", "u", "--from=s@x.example"]).unwrap();
        assert_eq!(p.value("username"), Some("u"));
        assert_eq!(p.value("sender"), Some("s@x.example"));
        let p = run(&["hold", "ABC", "--all", "--", "-x"]).unwrap();
        assert_eq!(p.operands, ["ABC", "-x"]);
        let p = run(&["status", "-C/y.toml"]).unwrap();
        assert_eq!(p.config, Some(PathBuf::from("/y.toml")));
        assert!(matches!(
            parse(vec!["import".into(), "--help".into()]),
            Ok(Top::Help(c)) if c.name == "import"
        ));
    }

    #[test]
    fn help_lists_each_flag_of_the_command() {
        let h = help(command("import").unwrap());
        for f in [
            "--from TOOL",
            "--path FILE_OR_DIR",
            "-n, --dry-run",
            "-f, --force",
        ] {
            assert!(h.contains(f), "{h}");
        }
        assert!(!help(command("setup").unwrap()).contains("--password "));
        assert!(overview().contains("  status [--json]"));
    }
}

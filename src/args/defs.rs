//! The table itself: every `relayq` flag and command, one definition each (see the module
//! above for how it drives parsing, help and relayq(8)). Adding a flag is one entry here.

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

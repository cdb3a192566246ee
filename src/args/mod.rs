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

mod defs;
mod help;
pub use defs::*;
pub use help::{help, man, overview};

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

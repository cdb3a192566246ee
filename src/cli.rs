//! sendmail's command line: argv (and argv[0]) → a [`Request`]. Hand-rolled on lexopt because
//! sendmail's grammar (`-oi`, `-odq`, `-FName`, `-qI<id>`, `-B 8BITMIME`) is not getopt_long's.
//! Pure: no I/O; errors are usage errors (exit 64).

use crate::error::{Error, Result};
use lexopt::prelude::*;
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// -bm (default): read a message from stdin and queue it.
    Deliver,
    /// -bs: SMTP on stdin/stdout.
    Smtp,
    /// -bp, mailq: list the queue.
    Print,
    /// -bi, -I, newaliases: nothing to rebuild; exit 0.
    Aliases,
    /// -bv: show what recipients become after rewriting; send nothing.
    Verify,
    /// -bh, -bH, -q<interval>: accepted, nothing to do.
    Nothing,
    /// -q, -qI<id>, -qR<domain>, -qS<sender>: run the queue now.
    Flush(QueueFilter),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueFilter {
    pub ids: Vec<String>,
    pub domain: Option<String>,
    pub sender: Option<String>,
}

impl QueueFilter {
    /// The selection in words, for messages: `ID 06B0E9 and a recipient at example.org`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match self.ids.len() {
            0 => {}
            1..=5 => parts.push(format!("ID {}", self.ids.join(" or "))),
            n => parts.push(format!("one of {n} IDs")),
        }
        if let Some(d) = &self.domain {
            parts.push(format!("a recipient at {d}"));
        }
        if let Some(s) = &self.sender {
            parts.push(format!("a sender containing {s}"));
        }
        if parts.is_empty() {
            "everything".into()
        } else {
            parts.join(" and ")
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub mode: Mode,
    /// -t: recipients from To/Cc/Bcc as well.
    pub extract: bool,
    /// -i / -oi: a lone "." does not end the message.
    pub ignore_dots: bool,
    /// -f / -r: envelope sender ("" = null sender).
    pub sender: Option<String>,
    /// -F: full name for a From we add.
    pub full_name: Option<String>,
    pub verbose: bool,
    /// -B: 7BIT or 8BITMIME.
    pub body: Option<String>,
    /// -N, -R, -V: DSN parameters.
    pub notify: Option<String>,
    pub ret: Option<String>,
    pub envid: Option<String>,
    /// -n: do not apply aliases.
    pub no_aliases: bool,
    /// -C: config file.
    pub config: Option<PathBuf>,
    pub recipients: Vec<String>,
}

pub const USAGE: &str = "usage: sendmail [-t] [-i] [-f sender] [-F name] [-bm|-bs|-bp|-bv|-bi] [-q] [-oXX] [-B 7BIT|8BITMIME] [-N dsn] [-R ret] [-V envid] [-C config] [--] [recipient ...]";

fn usage(what: impl std::fmt::Display) -> Error {
    Error::usage(format!("{what}\n{USAGE}"))
}

fn text(v: OsString, opt: char) -> Result<String> {
    let s = v
        .into_string()
        .map_err(|_| usage(format!("-{opt}: argument is not valid UTF-8")))?;
    if s.contains(['\r', '\n', '\0']) {
        return Err(Error::usage(format!(
            "-{opt}: argument contains a line break or NUL"
        )));
    }
    Ok(s)
}

/// Which program argv[0] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Personality {
    Sendmail,
    Mailq,
    Newaliases,
    Relayq,
}

pub fn personality(argv0: &str) -> Personality {
    let base = argv0.rsplit('/').next().unwrap_or(argv0);
    match base {
        "mailq" => Personality::Mailq,
        "newaliases" => Personality::Newaliases,
        "relayq" => Personality::Relayq,
        _ if base.starts_with("relayq") => Personality::Relayq,
        _ => Personality::Sendmail,
    }
}

/// Parse sendmail's arguments (argv without argv[0]).
pub fn parse_sendmail(args: Vec<OsString>) -> Result<Request> {
    let mut req = Request {
        mode: Mode::Deliver,
        extract: false,
        ignore_dots: false,
        sender: None,
        full_name: None,
        verbose: false,
        body: None,
        notify: None,
        ret: None,
        envid: None,
        no_aliases: false,
        config: None,
        recipients: Vec::new(),
    };
    let mut p = lexopt::Parser::from_args(args);
    loop {
        let arg = match p.next() {
            Ok(Some(a)) => a,
            Ok(None) => break,
            Err(e) => return Err(usage(e)),
        };
        match arg {
            Short('t') => req.extract = true,
            Short('i') => req.ignore_dots = true,
            Short('v') => req.verbose = true,
            Short('n') => req.no_aliases = true,
            Short('m' | 'x' | 'U' | 'G' | 'c' | 's' | 'w' | 'H') => {}
            Short('I') => req.mode = Mode::Aliases,
            Short(c @ ('f' | 'r')) => {
                let v = text(p.value().map_err(usage)?, c)?;
                let v = v.trim();
                req.sender = Some(if v == "<>" {
                    String::new()
                } else {
                    v.to_string()
                });
            }
            Short('F') => req.full_name = Some(text(p.value().map_err(usage)?, 'F')?),
            Short('C') => req.config = Some(PathBuf::from(p.value().map_err(usage)?)),
            Short('B') => {
                let v = text(p.value().map_err(usage)?, 'B')?.to_ascii_uppercase();
                if v != "7BIT" && v != "8BITMIME" {
                    return Err(usage(format!("-B {v}: must be 7BIT or 8BITMIME")));
                }
                req.body = Some(v);
            }
            Short('N') => {
                let v = text(p.value().map_err(usage)?, 'N')?.to_ascii_uppercase();
                let ok = v == "NEVER"
                    || (!v.is_empty()
                        && v.split(',')
                            .all(|x| matches!(x, "SUCCESS" | "FAILURE" | "DELAY")));
                if !ok {
                    return Err(usage(format!(
                        "-N {v}: must be never or a list of success, failure, delay"
                    )));
                }
                req.notify = Some(v);
            }
            Short('R') => {
                let v = text(p.value().map_err(usage)?, 'R')?.to_ascii_uppercase();
                if v != "FULL" && v != "HDRS" {
                    return Err(usage(format!("-R {v}: must be full or hdrs")));
                }
                req.ret = Some(v);
            }
            Short('V') => {
                let v = text(p.value().map_err(usage)?, 'V')?;
                if v.is_empty()
                    || v.len() > 100
                    || !v
                        .bytes()
                        .all(|b| (0x21..0x7f).contains(&b) && b != b'+' && b != b'=')
                {
                    return Err(usage(format!(
                        "-V {v}: envid must be printable ASCII without '+' or '='"
                    )));
                }
                req.envid = Some(v);
            }
            // Options with a value that mean nothing here: -o (sendmail options: -oi is the
            // one that matters), -O, -L, -h, -X, -e, -p, -A, -d, busybox -S/-a.
            Short('o') => {
                let v = text(p.value().map_err(usage)?, 'o')?;
                if v == "i" || v == "i=true" {
                    req.ignore_dots = true;
                }
            }
            Short('O') => {
                let v = text(p.value().map_err(usage)?, 'O')?;
                if v.eq_ignore_ascii_case("IgnoreDots") || v.eq_ignore_ascii_case("IgnoreDots=true")
                {
                    req.ignore_dots = true;
                }
            }
            Short('h') => {
                let v = text(p.value().map_err(usage)?, 'h')?;
                if v.parse::<u32>().is_err() {
                    return Err(usage(format!("-h {v}: hop count must be a number")));
                }
            }
            Short(c @ ('L' | 'X' | 'e' | 'p' | 'A' | 'd' | 'S' | 'a')) => {
                text(p.value().map_err(usage)?, c)?;
            }
            Short('b') => {
                let v = text(p.value().map_err(usage)?, 'b')?;
                req.mode = match v.as_str() {
                    "m" => Mode::Deliver,
                    "s" => Mode::Smtp,
                    "p" => Mode::Print,
                    "i" => Mode::Aliases,
                    "v" => Mode::Verify,
                    "h" | "H" => Mode::Nothing,
                    "d" | "D" => {
                        return Err(usage(
                            "-bd: relayq does not listen for SMTP; run `relayq daemon` to relay the queue",
                        ));
                    }
                    other => return Err(usage(format!("-b{other}: unknown mode"))),
                };
            }
            Short('q') => {
                let v = match p.optional_value() {
                    Some(v) => text(v, 'q')?,
                    None => String::new(),
                };
                req.mode = parse_q(&v, req.mode.clone())?;
            }
            Long("help") => return Err(Error::new(crate::error::Class::Usage, USAGE)),
            Short(c) => return Err(usage(format!("unknown option -{c}"))),
            Long(l) => return Err(usage(format!("unknown option --{l}"))),
            Value(v) => {
                let s = v
                    .into_string()
                    .map_err(|_| usage("recipient is not valid UTF-8"))?;
                if s.contains(['\r', '\n', '\0']) {
                    return Err(Error::usage(format!(
                        "recipient {s:?} contains a line break or NUL"
                    )));
                }
                req.recipients.push(s);
                // Everything after the first recipient is a recipient too (as with `--`),
                // except that sendmail also allowed options later; lexopt keeps parsing them.
            }
        }
    }
    Ok(req)
}

fn parse_q(v: &str, prev: Mode) -> Result<Mode> {
    let mut f = match prev {
        Mode::Flush(f) => f,
        _ => QueueFilter::default(),
    };
    if v.is_empty() {
        return Ok(Mode::Flush(f));
    }
    let (kind, arg) = v.split_at(1);
    let arg = arg.trim_start_matches('!');
    match kind {
        "I" if !arg.is_empty() => f.ids.push(arg.to_string()),
        "R" if !arg.is_empty() => f.domain = Some(arg.to_ascii_lowercase()),
        "S" if !arg.is_empty() => f.sender = Some(arg.to_ascii_lowercase()),
        _ if v.chars().next().is_some_and(|c| c.is_ascii_digit()) => return Ok(Mode::Nothing),
        _ => {
            return Err(usage(format!(
                "-q{v}: use -q, -qI<id>, -qR<domain> or -qS<sender>"
            )));
        }
    }
    Ok(Mode::Flush(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Request> {
        parse_sendmail(args.iter().map(OsString::from).collect())
    }

    #[test]
    fn callers() {
        let r = p(&["-t", "-i", "-fbounce@x"]).unwrap();
        assert!(r.extract && r.ignore_dots);
        assert_eq!(r.sender.as_deref(), Some("bounce@x"));
        let r = p(&["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"]).unwrap();
        assert_eq!(r.full_name.as_deref(), Some("CronDaemon"));
        assert_eq!(r.body.as_deref(), Some("8BITMIME"));
        assert_eq!(r.recipients, vec!["root"]);
        let r = p(&[
            "-FCronDaemon",
            "-i",
            "-odi",
            "-oem",
            "-oi",
            "-t",
            "-f",
            "root",
        ])
        .unwrap();
        assert!(r.extract && r.ignore_dots);
        assert_eq!(r.sender.as_deref(), Some("root"));
        let r = p(&["-i", "-B", "8BITMIME", "a@x"]).unwrap();
        assert_eq!(r.body.as_deref(), Some("8BITMIME"));
        let r = p(&["-ti"]).unwrap();
        assert!(r.extract && r.ignore_dots);
        let r = p(&[
            "-oem",
            "-oi",
            "-B8BITMIME",
            "-f",
            "me@x",
            "-N",
            "failure,delay",
            "-R",
            "hdrs",
            "--",
            "a@x",
            "-b@y",
        ])
        .unwrap();
        assert_eq!(r.recipients, vec!["a@x", "-b@y"]);
        assert_eq!(r.notify.as_deref(), Some("FAILURE,DELAY"));
        assert_eq!(r.ret.as_deref(), Some("HDRS"));
        let r = p(&["-bs", "-i"]).unwrap();
        assert_eq!(r.mode, Mode::Smtp);
        let r = p(&["-bm", "-oi"]).unwrap();
        assert_eq!(r.mode, Mode::Deliver);
        assert!(r.ignore_dots);
        let r = p(&["-f", "<>", "a@x"]).unwrap();
        assert_eq!(r.sender.as_deref(), Some(""));
        let r = p(&["-i", "-f", "a@x", "--", "b@y"]).unwrap();
        assert_eq!(r.recipients, vec!["b@y"]);
        assert!(p(&["-i", "-m", "-v", "--", "x@y"]).unwrap().verbose);
    }

    #[test]
    fn queue_and_modes() {
        assert_eq!(
            p(&["-q"]).unwrap().mode,
            Mode::Flush(QueueFilter::default())
        );
        let m = p(&["-qIABC", "-qRexample.com"]).unwrap().mode;
        assert_eq!(
            m,
            Mode::Flush(QueueFilter {
                ids: vec!["ABC".into()],
                domain: Some("example.com".into()),
                sender: None
            })
        );
        assert_eq!(
            QueueFilter {
                ids: vec!["ABC".into()],
                domain: Some("example.com".into()),
                sender: Some("bob".into())
            }
            .describe(),
            "ID ABC and a recipient at example.com and a sender containing bob"
        );
        assert_eq!(QueueFilter::default().describe(), "everything");
        let many = QueueFilter {
            ids: (0..6).map(|i| i.to_string()).collect(),
            ..Default::default()
        };
        assert_eq!(many.describe(), "one of 6 IDs");
        assert_eq!(p(&["-q30m"]).unwrap().mode, Mode::Nothing);
        assert_eq!(p(&["-bp"]).unwrap().mode, Mode::Print);
        assert_eq!(p(&["-bi"]).unwrap().mode, Mode::Aliases);
        assert_eq!(p(&["-bv", "root"]).unwrap().mode, Mode::Verify);
        assert_eq!(p(&["-bh"]).unwrap().mode, Mode::Nothing);
    }

    #[test]
    fn ignored_options() {
        for a in [
            &["-oee"][..],
            &["-odq"],
            &["-OFoo=bar"],
            &["-L", "tag"],
            &["-h", "5"],
            &["-U"],
            &["-G"],
            &["-x"],
            &["-Am"],
            &["-X", "/dev/null"],
            &["-oA/etc/aliases"],
            &["-n"],
        ] {
            let r = p(a).unwrap_or_else(|e| panic!("{a:?}: {e}"));
            assert_eq!(r.mode, Mode::Deliver, "{a:?}");
        }
    }

    #[test]
    fn nonsense() {
        for a in [
            &["-B", "9BIT"][..],
            &["-bz"],
            &["-bd"],
            &["-N", "sometimes"],
            &["-R", "all"],
            &["-Z"],
            &["--frobnicate"],
            &["-qX"],
            &["-f"],
            &["-h", "x"],
        ] {
            assert_eq!(p(a).unwrap_err().code(), 64, "{a:?}");
        }
        assert_eq!(p(&["-f", "a@x\r\nBcc: evil@x"]).unwrap_err().code(), 64);
        assert_eq!(p(&["-F", "Name\nBcc: x"]).unwrap_err().code(), 64);
        assert_eq!(p(&["a@x\nb@y"]).unwrap_err().code(), 64);
    }

    #[test]
    fn names() {
        assert_eq!(personality("/usr/bin/mailq"), Personality::Mailq);
        assert_eq!(personality("newaliases"), Personality::Newaliases);
        assert_eq!(personality("/usr/sbin/sendmail"), Personality::Sendmail);
        assert_eq!(personality("send-mail"), Personality::Sendmail);
        assert_eq!(personality("target/release/relayq"), Personality::Relayq);
    }
}

//! Help from the table: `relayq --help`, `relayq CMD --help`, and relayq(8)'s OPTIONS
//! section (`relayq --help-man`).

use super::*;

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

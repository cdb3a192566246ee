//! The doc-test parser: fenced blocks of README.md and docs/*.md, the commands in them and the
//! output each shows, and the comparison of shown output with real output (the varying parts
//! normalised as the docs' header comment says).
//!
//! Block languages: `console` (commands after a `# ` (root) or `$ ` (user) prompt, each
//! followed by its output), `sh` (commands only, no output), and `text`, `toml`, `crontab`,
//! `json` (no commands). A fence without a language is an error: a command must not hide in
//! an unlabelled block. A `<!-- doctest: NAME -->` line just before a fence names the
//! scenario the harness runs the block in.

use regex::Regex;
use std::sync::OnceLock;

pub const LANGS: &[&str] = &["console", "sh", "text", "toml", "crontab", "json"];

#[derive(Debug, Clone)]
pub struct Step {
    /// `#` (root) or `$` (a user); `sh` blocks have no prompt and count as root.
    pub prompt: char,
    /// The command as the shell gets it (continuations and here-documents included), without
    /// its trailing `# comment`.
    pub cmd: String,
    pub output: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Block {
    pub file: String,
    pub line: usize,
    pub lang: String,
    pub scenario: Option<String>,
    pub steps: Vec<Step>,
}

impl Block {
    pub fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// Every fenced block of `text` (a markdown file called `file`).
pub fn blocks(file: &str, text: &str) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = vec![];
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        let t = l.trim_start();
        if let Some(lang) = t.strip_prefix("```") {
            let indent = l.len() - t.len();
            let lang = lang.trim().to_string();
            if !LANGS.contains(&lang.as_str()) {
                return Err(format!(
                    "{file}:{}: fence language {lang:?}: use one of {LANGS:?}",
                    i + 1
                ));
            }
            let scenario = lines[..i]
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .and_then(|l| l.trim().strip_prefix("<!-- doctest: "))
                .and_then(|l| l.strip_suffix(" -->"))
                .map(str::to_string);
            let start = i + 1;
            let mut body = vec![];
            i += 1;
            while i < lines.len() && !lines[i].trim_start().starts_with("```") {
                let b = lines[i];
                body.push(if b.len() >= indent && b[..indent].trim().is_empty() {
                    &b[indent..]
                } else {
                    b.trim_start()
                });
                i += 1;
            }
            if lang == "text" && body.iter().any(|l| prompt(l).is_some()) {
                return Err(format!(
                    "{file}:{start}: a prompt in a text block: a command goes in a console block"
                ));
            }
            let steps = match lang.as_str() {
                "console" => console_steps(&body).map_err(|e| format!("{file}:{start}: {e}"))?,
                "sh" => sh_steps(&body),
                _ => vec![],
            };
            out.push(Block {
                file: file.to_string(),
                line: start,
                lang,
                scenario,
                steps,
            });
        }
        i += 1;
    }
    Ok(out)
}

/// A prompt line: `# cmd` or `$ cmd` where cmd starts like a command (lower case, a path,
/// a variable), so that `# HELP ...` in Prometheus output or `# Written by` in a config is
/// output.
fn prompt(line: &str) -> Option<(char, &str)> {
    let (p, rest) = if let Some(r) = line.strip_prefix("# ") {
        ('#', r)
    } else if let Some(r) = line.strip_prefix("$ ") {
        ('$', r)
    } else {
        return None;
    };
    let c = rest.chars().next()?;
    (c.is_ascii_lowercase() || c == '/' || c == '.').then_some((p, rest))
}

/// Takes a command starting at `lines[0]` (without its prompt): `\` continuations and
/// here-documents; returns the command and how many lines it used.
fn command(first: &str, lines: &[&str]) -> (String, usize) {
    let mut cmd = strip_comment(first).to_string();
    let mut used = 1;
    while cmd.ends_with('\\') && used < lines.len() {
        cmd.push('\n');
        cmd.push_str(strip_comment(lines[used]));
        used += 1;
    }
    if let Some(pos) = cmd.find("<<") {
        let tag = cmd[pos + 2..]
            .trim_start_matches('-')
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_matches(|c| c == '\'' || c == '"')
            .to_string();
        while used < lines.len() {
            cmd.push('\n');
            cmd.push_str(lines[used]);
            used += 1;
            if lines[used - 1] == tag {
                break;
            }
        }
    }
    (cmd, used)
}

/// `cmd   # comment` -> `cmd` (two spaces or more before the `#`).
pub fn strip_comment(l: &str) -> &str {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"\s{2,}#\s.*$").unwrap());
    match re.find(l) {
        Some(m) => l[..m.start()].trim_end(),
        None => l.trim_end(),
    }
}

fn console_steps(body: &[&str]) -> Result<Vec<Step>, String> {
    let mut steps: Vec<Step> = vec![];
    let mut i = 0;
    while i < body.len() {
        if let Some((p, rest)) = prompt(body[i]) {
            let mut lines = vec![rest];
            lines.extend_from_slice(&body[i + 1..]);
            let (cmd, used) = command(rest, &lines);
            steps.push(Step {
                prompt: p,
                cmd,
                output: vec![],
            });
            i += used;
        } else {
            match steps.last_mut() {
                Some(s) => s.output.push(body[i].to_string()),
                None => return Err("a console block must start with a prompt".into()),
            }
            i += 1;
        }
    }
    Ok(steps)
}

fn sh_steps(body: &[&str]) -> Vec<Step> {
    let mut steps = vec![];
    let mut i = 0;
    while i < body.len() {
        let t = body[i].trim();
        if t.is_empty() || t.starts_with('#') {
            i += 1;
            continue;
        }
        let (cmd, used) = command(t, &body[i..]);
        steps.push(Step {
            prompt: '#',
            cmd,
            output: vec![],
        });
        i += used;
    }
    steps
}

/// The parts of output that vary from run to run, replaced by a placeholder in both the
/// doc's and the real output (the list the docs' header comment gives).
pub fn normalise(line: &str) -> String {
    static RES: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    let res = RES.get_or_init(|| {
        let day = "(Mon|Tue|Wed|Thu|Fri|Sat|Sun)";
        let mon = "(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)";
        [
            // a terminal's clear-to-end-of-line after a progress line
            (r"\x1b\[[0-9;]*[A-Za-z]".to_string(), ""),
            // the daemon's start and reload commands name the init system present
            (
                r"`(systemctl enable --now relayq|systemctl start relayq|service relayq start|rc-service relayq start|rc-update add relayq default && rc-service relayq start|relayq daemon)`".to_string(),
                "`<START>`",
            ),
            (
                r"\((systemctl start relayq|service relayq start|rc-service relayq start|relayq daemon)\)".to_string(),
                "(<START>)",
            ),
            (
                r"fix: (systemctl enable --now relayq|service relayq start|rc-update add relayq default && rc-service relayq start|relayq daemon) \(or enable relayq-flush.timer, or".to_string(),
                "fix: <START> (or",
            ),
            (r"fix: relayq daemon \(or".to_string(), "fix: <START> (or"),
            (
                r"`(systemctl reload relayq|service relayq reload|rc-service relayq reload|kill -HUP \d+)`".to_string(),
                "`<RELOAD>`",
            ),
            // queue IDs and Message-ID local parts
            (r"\b[0-9A-F]{22}\b".to_string(), "<ID>"),
            // Tue, 1 Dec 2026 09:18:55 +0000 / Tue Dec  1 09:18:55 / Dec  1 09:15 / 2026-12-01
            (
                format!(r"{day}, \d{{1,2}} {mon} \d{{4}} \d\d:\d\d:\d\d [+-]\d{{4}}"),
                "<DATE>",
            ),
            (format!(r"{day} {mon} [ \d]\d \d\d:\d\d:\d\d"), "<DATE>"),
            (format!(r"{mon} [ \d]\d \d\d:\d\d"), "<DATE>"),
            (r"\b\d{4}-\d\d-\d\d\b".to_string(), "<DATE>"),
            // unix times
            (r"\b1[0-9]{9}\b".to_string(), "<TIME>"),
            // ages and durations: 22s, 3.5s, 0m 14s, 3m 12s ago, (3649 days), 0.0 days
            (r"\b\d+m <DUR>".to_string(), "<DUR>"),
            (r"\b\d+(\.\d+)?(ms|s)\b".to_string(), "<DUR>"),
            (r"\b\d+(\.\d+)? days\b".to_string(), "<DUR>"),
            (r"\b(delay|delays)=[\d.]+".to_string(), "$1=<DUR>"),
            (r"\b\d+ msg/s".to_string(), "<RATE>"),
            (r#""oldest_age_seconds":\d+"#.to_string(), r#""oldest_age_seconds":<DUR>"#),
            (r"relayq_oldest_message_age_seconds \d+".to_string(), "relayq_oldest_message_age_seconds <DUR>"),
            // process ids, the relay's own queue numbers, message sizes
            (r"\bpid \d+".to_string(), "pid <PID>"),
            (r#""daemon_pid":\d+"#.to_string(), r#""daemon_pid":<PID>"#),
            (r"queued as \d+".to_string(), "queued as <N>"),
            (r"\bsize=\d+".to_string(), "size=<SIZE>"),
            (r"Size: +\d+ bytes".to_string(), "Size: <SIZE> bytes"),
            (r#""message_size":\d+"#.to_string(), r#""message_size":<SIZE>"#),
            (r"(<ID>!?) +\d+ ".to_string(), "$1 <SIZE> "),
            (r"\b\d+ Kbytes".to_string(), "<SIZE> Kbytes"),
            (r"(root root|relayq relayq|root relayq) +\d+ ".to_string(), "$1 <SIZE> "),
        ]
        .into_iter()
        .map(|(r, s)| (Regex::new(&r).unwrap(), s))
        .collect()
    });
    let mut s = line.trim_end().to_string();
    for (re, rep) in res {
        s = re.replace_all(&s, *rep).into_owned();
    }
    // Column alignment follows the varying widths above: compare words, not spaces.
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `real` (lines) matches `doc` (lines): each normalised; a doc line `…` matches any
/// number of lines, a `…` inside a doc line any text. Returns the first mismatch.
pub fn matches(doc: &[String], real: &[String]) -> Result<(), String> {
    let norm = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|l| normalise(l))
            .filter(|l| !l.is_empty())
            .collect()
    };
    let (d, r) = (norm(doc), norm(real));
    if lines_match(&d, &r) {
        Ok(())
    } else {
        Err(format!(
            "doc (normalised):\n  {}\nreal:\n{}",
            d.join("\n  "),
            real.join("\n")
        ))
    }
}

fn lines_match(doc: &[String], real: &[String]) -> bool {
    match doc.split_first() {
        None => real.is_empty(),
        Some((d, rest)) if d == "…" => (0..=real.len()).any(|k| lines_match(rest, &real[k..])),
        Some((d, rest)) => {
            !real.is_empty() && line_matches(d, &real[0]) && lines_match(rest, &real[1..])
        }
    }
}

fn line_matches(doc: &str, real: &str) -> bool {
    if !doc.contains('…') {
        return doc == real;
    }
    let pat = doc
        .split('…')
        .map(regex::escape)
        .collect::<Vec<_>>()
        .join(".*");
    Regex::new(&format!("^{pat}$")).is_ok_and(|r| r.is_match(real))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prompts_output_heredocs_and_comments() {
        let md = "x\n<!-- doctest: s1 -->\n```console\n# sendmail -t <<'EOF'   # c\nTo: a\nEOF\nsendmail: queued as X\n# HELP not a command\n$ echo $?  # the code\n0\n```\n```sh\nmake a && \\\n  make b   # both\n```\n";
        let b = blocks("f.md", md).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].scenario.as_deref(), Some("s1"));
        assert_eq!(b[0].steps.len(), 2);
        assert_eq!(b[0].steps[0].cmd, "sendmail -t <<'EOF'\nTo: a\nEOF");
        assert_eq!(
            b[0].steps[0].output,
            vec!["sendmail: queued as X", "# HELP not a command"]
        );
        assert_eq!(b[0].steps[1].cmd, "echo $?");
        assert_eq!(b[1].steps[0].cmd, "make a && \\\n  make b");
        assert!(blocks("f.md", "```\nx\n```\n").is_err());
    }

    #[test]
    fn varying_parts_and_ellipses() {
        let d = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(
            matches(
                &d(&[
                    "06B0E9107E8F74289BFA43  236 Tue Dec  1 09:19:03  a",
                    "…",
                    "x … z"
                ]),
                &d(&[
                    "06B0E9107E8F74289BFA44 1236 Wed Dec 12 10:19:03  a",
                    "q",
                    "r",
                    "x y z"
                ]),
            )
            .is_ok()
        );
        assert!(matches(&d(&["pid 1 up"]), &d(&["pid 2 down"])).is_err());
    }
}

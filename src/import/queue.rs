//! Taking the old tool's queue over: find the mail Postfix (maildrop/, incoming/, active/,
//! deferred/, hold/), nullmailer (queue/), dma (its spool's Q/M pairs) or msmtpq (its
//! `.mail` + `.msmtp` pairs) still holds, and move each message into relayq's spool through
//! the submission path `sendmail` uses ([`crate::submit::submit`]: a queue ID, fsynced,
//! visible to `mailq`), with its envelope sender and the recipients not yet delivered.
//! The old file is removed only once relayq's copy is committed; anything that cannot be
//! taken over stays where it is, and the report says why. Also what `doctor` asks: how much
//! mail an old queue holds ([`old_queues`]).

use super::Tool;
use crate::error::{Error, Result};
use crate::message::{Framing, Lines};
use crate::submit::{Context, Params};
use std::path::{Path, PathBuf};

/// Most files looked at in one queue directory tree (a bound on a hostile or huge tree).
const MAX_FILES: usize = 100_000;
/// Largest old queue file read (relayq's own limit applies after).
const MAX_FILE: u64 = 1 << 30;

/// What an old queue file says about one message.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Found {
    /// Envelope sender ("" = null sender); None: the tool did not record one.
    pub sender: Option<String>,
    pub full_name: Option<String>,
    /// Recipients still to deliver.
    pub rcpts: Vec<String>,
    /// msmtpq `-t`: the recipients are in the header.
    pub extract: bool,
    /// Recipients the old tool had already delivered (not sent again).
    pub done: usize,
    /// The message, lines ending in LF.
    pub content: Vec<u8>,
    pub time: Option<u64>,
    pub envid: Option<String>,
    pub ret: Option<String>,
    pub notify: Option<String>,
}

/// One message in an old queue: how it is named in the report, its files, and what they say
/// (or why they cannot be read).
pub(super) struct Item {
    pub label: String,
    pub files: Vec<PathBuf>,
    pub found: std::result::Result<Found, String>,
}

/// Where the tool keeps its queue when nothing says otherwise. `conf`: the tool's main
/// config text, when read (Postfix's `queue_directory`, dma's `SPOOLDIR`).
pub(super) fn default_dir(tool: Tool, conf: Option<&str>) -> Option<PathBuf> {
    let setting = |key: &str, sep: char| {
        conf?.lines().rev().find_map(|l| {
            let (k, v) = l.trim().split_once(sep)?;
            (k.trim().eq_ignore_ascii_case(key) && v.trim().starts_with('/'))
                .then(|| PathBuf::from(v.trim()))
        })
    };
    match tool {
        Tool::Postfix => {
            Some(setting("queue_directory", '=').unwrap_or_else(|| "/var/spool/postfix".into()))
        }
        Tool::Nullmailer => Some("/var/spool/nullmailer".into()),
        Tool::Dma => Some(setting("SPOOLDIR", ' ').unwrap_or_else(|| "/var/spool/dma".into())),
        Tool::Msmtp => Some(match std::env::var_os("MSMTPQ_Q") {
            Some(q) if !q.is_empty() => PathBuf::from(q),
            _ => {
                let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
                Path::new(&home).join(".msmtp.queue")
            }
        }),
        Tool::Ssmtp => None,
    }
}

/// Regular files under `dir` (to `depth` levels, Postfix's hashed subdirectories), sorted.
fn files_under(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)?.filter_map(|e| e.ok()).collect();
    names.sort_by_key(|e| e.file_name());
    for e in names {
        if out.len() >= MAX_FILES {
            break;
        }
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_file() {
            out.push(e.path());
        } else if ft.is_dir() && depth > 0 {
            let _ = files_under(&e.path(), depth - 1, out);
        }
    }
    Ok(())
}

fn read(p: &Path) -> std::result::Result<Vec<u8>, String> {
    let m = std::fs::symlink_metadata(p).map_err(|e| e.to_string())?;
    if !m.is_file() {
        return Err("not a regular file".into());
    }
    if m.len() > MAX_FILE {
        return Err(format!("larger than {MAX_FILE} bytes"));
    }
    std::fs::read(p).map_err(|e| e.to_string())
}

/// Postfix marks a finished queue file with the owner's execute bit (MAIL_QUEUE_STAT_READY).
fn committed(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p).is_ok_and(|m| m.permissions().mode() & 0o100 != 0)
}

/// Postfix's queues that hold mail, in the order Postfix would send it.
pub(super) const POSTFIX_QUEUES: [&str; 5] = ["maildrop", "incoming", "active", "deferred", "hold"];

/// The messages in an old queue. An error: the queue directory cannot be read at all.
pub(super) fn scan(tool: Tool, dir: &Path) -> std::io::Result<Vec<Item>> {
    let mut items = Vec::new();
    match tool {
        Tool::Postfix => {
            std::fs::read_dir(dir)?;
            for q in POSTFIX_QUEUES {
                let mut files = Vec::new();
                if files_under(&dir.join(q), 2, &mut files).is_err() {
                    continue;
                }
                for f in files {
                    let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
                    let found = if committed(&f) {
                        read(&f).and_then(|b| super::pfqueue::parse(&b))
                    } else {
                        Err("not committed by postfix (still being written, or its sender was told it failed)".into())
                    };
                    items.push(Item {
                        label: format!("{q}/{}", name.unwrap_or_default()),
                        files: vec![f],
                        found,
                    });
                }
            }
        }
        Tool::Nullmailer => {
            let mut files = Vec::new();
            files_under(&dir.join("queue"), 0, &mut files)?;
            for f in files {
                let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
                let found = read(&f).and_then(|b| nullmailer_file(&b));
                items.push(Item {
                    label: format!("queue/{}", name.unwrap_or_default()),
                    files: vec![f],
                    found,
                });
            }
        }
        Tool::Dma => items = dma_spool(dir)?,
        Tool::Msmtp => items = msmtpq(dir)?,
        Tool::Ssmtp => {}
    }
    Ok(items)
}

/// nullmailer's queue file: the sender on the first line, one recipient a line, an empty
/// line, then the message.
pub(super) fn nullmailer_file(b: &[u8]) -> std::result::Result<Found, String> {
    let mut f = Found::default();
    let mut rest = b;
    let mut first = true;
    loop {
        let Some(i) = rest.iter().position(|&c| c == b'\n') else {
            return Err("no empty line after the envelope: incomplete".into());
        };
        let line = String::from_utf8_lossy(&rest[..i])
            .trim_end_matches('\r')
            .to_string();
        rest = &rest[i + 1..];
        if first {
            f.sender = Some(line);
            first = false;
        } else if line.is_empty() {
            break;
        } else {
            f.rcpts.push(line);
        }
    }
    f.content = rest.to_vec();
    Ok(f)
}

/// dma's spool: one `Q<id>` file per recipient (`ID:`, `Sender:`, `Recipient:` lines) and
/// its `M<id>` message, hard links of one file for the recipients of one message.
fn dma_spool(dir: &Path) -> std::io::Result<Vec<Item>> {
    use std::os::unix::fs::MetadataExt;
    let mut files = Vec::new();
    files_under(dir, 0, &mut files)?;
    // (message inode, sender) → item index
    let mut by_msg: Vec<((u64, u64, String), usize)> = Vec::new();
    let mut items: Vec<Item> = Vec::new();
    for q in files {
        let Some(name) = q.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        let Some(id) = name.strip_prefix('Q') else {
            continue;
        };
        let m = dir.join(format!("M{id}"));
        let parsed = read(&q).and_then(|b| {
            let t = String::from_utf8_lossy(&b).into_owned();
            let field = |k: &str| {
                t.lines().find_map(|l| {
                    let (a, v) = l.split_once(':')?;
                    (a == k).then(|| v.trim().to_string())
                })
            };
            match (field("Sender"), field("Recipient")) {
                (Some(s), Some(r)) if !r.is_empty() => Ok((s, r)),
                _ => Err("no Sender or Recipient line".to_string()),
            }
        });
        let meta = std::fs::metadata(&m);
        let (sender, rcpt, meta) = match (parsed, meta) {
            (Ok((s, r)), Ok(meta)) => (s, r, meta),
            (Err(e), _) => {
                items.push(Item {
                    label: name.clone(),
                    files: vec![q],
                    found: Err(e),
                });
                continue;
            }
            (_, Err(e)) => {
                items.push(Item {
                    label: name.clone(),
                    files: vec![q],
                    found: Err(format!("its message M{id}: {e}")),
                });
                continue;
            }
        };
        let key = (meta.dev(), meta.ino(), sender.clone());
        if let Some((_, i)) = by_msg.iter().find(|(k, _)| *k == key) {
            let it = &mut items[*i];
            it.files.extend([q, m]);
            if let Ok(f) = &mut it.found {
                f.rcpts.push(rcpt);
            }
            continue;
        }
        let found = read(&m).map(|content| Found {
            sender: Some(sender),
            rcpts: vec![rcpt],
            content,
            ..Found::default()
        });
        by_msg.push((key, items.len()));
        items.push(Item {
            label: name,
            files: vec![q, m],
            found,
        });
    }
    Ok(items)
}

/// msmtpq's queue: `ID.mail` (the message) and `ID.msmtp` (msmtp's arguments, one line).
fn msmtpq(dir: &Path) -> std::io::Result<Vec<Item>> {
    let mut files = Vec::new();
    files_under(dir, 0, &mut files)?;
    let mut items = Vec::new();
    for mail in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "mail"))
    {
        let args = mail.with_extension("msmtp");
        let label = mail
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let found = read(&args)
            .map_err(|e| format!("{}: {e}", args.display()))
            .and_then(|a| msmtp_args(&String::from_utf8_lossy(&a)))
            .and_then(|mut f| {
                f.content = read(mail)?;
                Ok(f)
            });
        items.push(Item {
            label,
            files: vec![mail.clone(), args],
            found,
        });
    }
    Ok(items)
}

/// msmtp's command line as msmtpq saved it (`echo "$@"`): the sender (`-f`), `-t`, the
/// recipients; options that take a value skip it.
pub(super) fn msmtp_args(line: &str) -> std::result::Result<Found, String> {
    let mut f = Found::default();
    let mut words = line.split_whitespace();
    let mut opts = true;
    while let Some(w) = words.next() {
        if !opts || !w.starts_with('-') {
            f.rcpts.push(w.to_string());
            continue;
        }
        match w {
            "--" => opts = false,
            "-t" | "--read-recipients" => f.extract = true,
            "-f" => f.sender = words.next().map(str::to_string),
            "-F" => f.full_name = words.next().map(str::to_string),
            "-a" | "-C" | "-N" | "-R" | "-V" | "-X" | "-L" | "-B" | "-h" | "-o" => {
                words.next();
            }
            w => {
                if let Some(v) = w.strip_prefix("--from=") {
                    f.sender = Some(v.to_string());
                } else if let Some(v) = w.strip_prefix("-f").filter(|v| !v.is_empty()) {
                    f.sender = Some(v.to_string());
                }
                // -oi, -i, --read-envelope-from, --account=..., -a<name>: nothing to carry.
            }
        }
    }
    if f.rcpts.is_empty() && !f.extract {
        return Err("no recipients in the saved msmtp arguments".into());
    }
    Ok(f)
}

/// Whether the old tool is still running on this queue, and how it is known.
pub(super) fn still_running(tool: Tool, dir: &Path, is_default: bool) -> Option<String> {
    match tool {
        Tool::Postfix => {
            let pid = std::fs::read_to_string(dir.join("pid/master.pid")).ok()?;
            let pid: u32 = pid.trim().parse().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (comm.trim() == "master").then(|| format!("postfix's master runs (pid {pid})"))
        }
        Tool::Nullmailer if is_default => running_named("nullmailer-send"),
        _ => None,
    }
}

/// A process whose name is `name`, from /proc (bounded).
fn running_named(name: &str) -> Option<String> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok())
        .take(100_000)
        .find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            (comm.trim() == name).then(|| format!("{name} runs (pid {pid})"))
        })
}

/// What became of the old queue.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub moved: usize,
    pub left: usize,
}

/// Move each message into relayq's spool through `sendmail`'s submission path, remove its
/// old files once relayq's copy is committed, and say what happened to each.
pub(super) fn take_over(tool: Tool, ctx: &Context, items: Vec<Item>) -> Outcome {
    let mut out = Outcome::default();
    for it in items {
        let f = match it.found {
            Ok(f) => f,
            Err(why) => {
                println!("  {}: left in place: {why}", it.label);
                out.left += 1;
                continue;
            }
        };
        if f.rcpts.is_empty() && !f.extract {
            println!(
                "  {}: left in place: no recipient left to deliver ({} delivered by {})",
                it.label,
                f.done,
                tool.name()
            );
            out.left += 1;
            continue;
        }
        match submit_one(ctx, &f) {
            Ok(id) => {
                let removed: Vec<String> = it
                    .files
                    .iter()
                    .filter_map(|p| {
                        std::fs::remove_file(p)
                            .err()
                            .map(|e| format!("{}: {e}", p.display()))
                    })
                    .collect();
                println!("  {}: queued as {id} ({})", it.label, describe(&f, tool));
                if !removed.is_empty() {
                    println!(
                        "    warning: could not remove the old file ({}); delete it before the old tool runs again, or the mail goes out twice",
                        removed.join("; ")
                    );
                }
                out.moved += 1;
            }
            Err(e) => {
                println!("  {}: left in place: {}", it.label, e.msg);
                out.left += 1;
            }
        }
    }
    out
}

/// One line about a message: sender, recipients, and the ones not sent again.
pub(super) fn describe(f: &Found, tool: Tool) -> String {
    let sender = match f.sender.as_deref() {
        Some("") => "<>".to_string(),
        Some(s) => s.to_string(),
        None => "the configured sender".to_string(),
    };
    let mut rcpts = f.rcpts.join(", ");
    if f.extract {
        if !rcpts.is_empty() {
            rcpts.push_str(", ");
        }
        rcpts.push_str("the header's To/Cc/Bcc");
    }
    let mut s = format!("from {sender} to {rcpts}");
    if f.done > 0 {
        s.push_str(&format!(
            "; {} recipient(s) {} had delivered not sent again",
            f.done,
            tool.name()
        ));
    }
    s
}

fn submit_one(ctx: &Context, f: &Found) -> Result<String> {
    let p = Params {
        sender: f.sender.clone(),
        full_name: f.full_name.clone(),
        extract: f.extract,
        recipients: f.rcpts.clone(),
        body: None,
        notify: f.notify.clone(),
        ret: f.ret.clone(),
        envid: f.envid.clone(),
    };
    let mut lines = Lines::new(
        std::io::Cursor::new(&f.content[..]),
        Framing::Stdin { dot_ends: false },
    );
    crate::submit::submit(ctx, &p, &mut lines)
        .map_err(|e| Error::new(e.class, format!("relayq refused it: {}", e.msg)))
}

/// The queue part of `relayq import`: find the old queue, and (unless `--dry-run`) move its
/// mail into relayq's spool with the config at `out`. Ok(75) when mail was left behind.
pub(super) fn run(a: &super::Args, main: Option<&str>, out: &Path) -> Result<i32> {
    let tool = a.tool;
    let Some(dir) = a.queue.clone().or_else(|| default_dir(tool, main)) else {
        println!(
            "old queue: {} keeps none (it sends at once or not at all)",
            tool.name()
        );
        return Ok(0);
    };
    let shown = dir.display();
    let items = match scan(tool, &dir) {
        Ok(v) => v,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("old queue: none at {shown}");
            return Ok(0);
        }
        Err(e) => {
            println!(
                "old queue: cannot read {shown}: {e}: any mail there is left in place (run as root)"
            );
            return Ok(75);
        }
    };
    if items.is_empty() {
        println!("old queue: {shown} holds no mail");
        return Ok(0);
    }
    let n = items.len();
    if let Some(why) = still_running(tool, &dir, a.queue.is_none()) {
        println!(
            "old queue: {n} message(s) in {shown} left to {}: {why}; let it deliver them, or stop it and run `relayq import --from {} --queue-only`",
            tool.name(),
            tool.name()
        );
        return Ok(75);
    }
    if a.dry_run {
        println!("old queue: {n} message(s) in {shown} would move into relayq's queue:");
        for it in &items {
            match &it.found {
                Ok(f) => println!("  {}: {}", it.label, describe(f, tool)),
                Err(why) => println!("  {}: would be left in place: {why}", it.label),
            }
        }
        return Ok(0);
    }
    let cfg = crate::config::Config::load(Some(out))?;
    let layout = crate::spool::Layout::new(&cfg.spool_dir);
    if let Err(e) = crate::spool::Spool::open(&layout) {
        println!(
            "old queue: {n} message(s) left in {shown}: relayq's spool cannot take them ({}); run `relayq init`, then `relayq import --from {} --queue-only`",
            e.msg,
            tool.name()
        );
        return Ok(75);
    }
    println!("old queue: {n} message(s) in {shown}:");
    let ctx = Context::new(cfg, true);
    let o = take_over(tool, &ctx, items);
    println!(
        "old queue: {} moved into relayq's queue (see mailq), {} left in {shown}",
        o.moved, o.left
    );
    Ok(if o.left > 0 { 75 } else { 0 })
}

/// An old tool's queue that still holds mail: the tool, the directory, the message count.
pub(crate) struct OldQueue {
    pub tool: &'static str,
    pub dir: PathBuf,
    pub messages: usize,
}

/// Old queues at their default places that still hold mail (`doctor`).
pub(crate) fn old_queues() -> Vec<OldQueue> {
    let conf = |p: &str| std::fs::read_to_string(p).ok();
    let mut out = Vec::new();
    for (tool, main) in [
        (Tool::Postfix, Some("/etc/postfix/main.cf")),
        (Tool::Nullmailer, None),
        (Tool::Dma, Some("/etc/dma/dma.conf")),
        (Tool::Msmtp, None),
    ] {
        let text = main.and_then(conf);
        let Some(dir) = default_dir(tool, text.as_deref()) else {
            continue;
        };
        let n = scan(tool, &dir).map(|v| v.len()).unwrap_or(0);
        if n > 0 {
            out.push(OldQueue {
                tool: tool.name(),
                dir,
                messages: n,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nullmailer_and_msmtpq_envelopes() {
        let f = nullmailer_file(
            b"app@example.org\na@example.net\nb@example.net\n\nSubject: x\n\nbody\n",
        )
        .unwrap();
        assert_eq!(f.sender.as_deref(), Some("app@example.org"));
        assert_eq!(f.rcpts, ["a@example.net", "b@example.net"]);
        assert_eq!(f.content, b"Subject: x\n\nbody\n");
        assert!(nullmailer_file(b"app@example.org\na@example.net\n").is_err());
        let f =
            msmtp_args("-oi -f app@example.org -a work -- a@example.net b@example.net").unwrap();
        assert_eq!(f.sender.as_deref(), Some("app@example.org"));
        assert_eq!(f.rcpts, ["a@example.net", "b@example.net"]);
        let f = msmtp_args("-oi -t --read-envelope-from").unwrap();
        assert!(f.extract && f.sender.is_none() && f.rcpts.is_empty());
        assert!(msmtp_args("-oi -f x@example.org").is_err());
    }

    #[test]
    fn default_dirs_follow_the_config() {
        assert_eq!(
            default_dir(Tool::Postfix, Some("queue_directory = /srv/pfq\n")),
            Some(PathBuf::from("/srv/pfq"))
        );
        assert_eq!(
            default_dir(Tool::Postfix, None),
            Some(PathBuf::from("/var/spool/postfix"))
        );
        assert_eq!(
            default_dir(Tool::Dma, Some("SPOOLDIR /var/spool/dma2\n")),
            Some(PathBuf::from("/var/spool/dma2"))
        );
        assert_eq!(default_dir(Tool::Ssmtp, None), None);
    }
}

//! Queue listing (`mailq`, `sendmail -bp`, `relayq queue [--json]`): one entry per message
//! with its recipients' states, in Postfix's familiar layout or as JSON lines like
//! `postqueue -j`. Root and the spool owner read the spool; other users ask the daemon,
//! which shows them only their own messages.

use crate::daemon::read_envelope;
use crate::error::{Error, Result};
use crate::spool::Layout;
use crate::state::{self, RcptState, State};
use serde::Serialize;
use std::fs;
use std::os::unix::fs::MetadataExt;

#[derive(Debug, Serialize)]
pub struct RcptInfo {
    pub address: String,
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Entry {
    pub queue_name: &'static str,
    pub queue_id: String,
    pub arrival_time: u64,
    pub message_size: u64,
    pub sender: String,
    pub uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<u64>,
    pub recipients: Vec<RcptInfo>,
}

/// Read every queued message (new/, queue/, hold/), oldest first. `only_uid`: filter.
pub fn scan(layout: &Layout, only_uid: Option<u32>) -> Vec<Entry> {
    let owner = fs::metadata(layout.dir("queue"))
        .map(|m| m.uid())
        .unwrap_or(0);
    let mut out = Vec::new();
    for (dir, qname) in [("new", "incoming"), ("queue", "active"), ("hold", "hold")] {
        let Ok(rd) = fs::read_dir(layout.dir(dir)) else {
            continue;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if !crate::spool::is_id(&name) {
                continue;
            }
            let path = e.path();
            let Ok((env, off, meta)) = read_envelope(&path) else {
                continue;
            };
            let uid = env.submitter(meta.uid(), owner);
            if only_uid.is_some_and(|u| u != uid) {
                continue;
            }
            let st = State::load(&state::path_for(&path), env.rcpts.len());
            let queue_name = if qname == "active" && st.attempts > 0 {
                "deferred"
            } else {
                qname
            };
            let recipients = env
                .rcpts
                .iter()
                .zip(st.rcpts.iter())
                .filter(|(_, s)| !matches!(s, RcptState::Delivered(..)))
                .map(|(r, s)| {
                    let (state, reason) = match s {
                        RcptState::Pending => {
                            (if qname == "hold" { "held" } else { "queued" }, None)
                        }
                        RcptState::Deferred(_, why) => ("deferred", Some(why.clone())),
                        RcptState::Failed(_, why) => ("failed", Some(why.clone())),
                        RcptState::Delivered(..) => ("sent", None),
                    };
                    RcptInfo {
                        address: r.addr.clone(),
                        state,
                        delay_reason: reason,
                    }
                })
                .collect();
            out.push(Entry {
                queue_name,
                queue_id: name,
                arrival_time: env.time,
                message_size: meta.len().saturating_sub(off),
                sender: env.sender.clone(),
                uid,
                next_attempt: (st.next > 0).then_some(st.next),
                recipients,
            });
        }
    }
    out.sort_by(|a, b| (a.arrival_time, &a.queue_id).cmp(&(b.arrival_time, &b.queue_id)));
    out
}

fn ctime(t: u64) -> String {
    let d = crate::message::rfc5322_date(t as i64);
    // "Tue, 24 Nov 2026 02:54:11 +0000" → "Tue Nov 24 02:54:11"
    let p: Vec<&str> = d.split_whitespace().collect();
    if p.len() >= 5 {
        format!(
            "{} {} {:>2} {}",
            p[0].trim_end_matches(','),
            p[2],
            p[1],
            p[4]
        )
    } else {
        d
    }
}

/// The Postfix `mailq` layout.
pub fn render(entries: &[Entry]) -> String {
    if entries.is_empty() {
        return "Mail queue is empty\n".into();
    }
    let mut s = String::from(
        "-Queue ID-            --Size-- ----Arrival Time---- -Sender/Recipient-------\n",
    );
    let mut total = 0u64;
    for e in entries {
        total += e.message_size;
        let mark = if e.queue_name == "hold" { "!" } else { "" };
        let sender = if e.sender.is_empty() {
            "MAILER-DAEMON"
        } else {
            &e.sender
        };
        s.push_str(&format!(
            "{:<21} {:>8} {:<20} {sender}\n",
            format!("{}{mark}", e.queue_id),
            e.message_size,
            ctime(e.arrival_time)
        ));
        let mut last_reason: Option<&str> = None;
        for r in &e.recipients {
            if let Some(why) = r.delay_reason.as_deref()
                && last_reason != Some(why)
            {
                s.push_str(&format!("{:52}({why})\n", ""));
                last_reason = Some(why);
            }
            s.push_str(&format!("{:52}{}\n", "", r.address));
        }
        if let Some(n) = e.next_attempt {
            s.push_str(&format!("{:52}(next attempt {})\n", "", ctime(n)));
        }
        s.push('\n');
    }
    let n = entries.len();
    s.push_str(&format!(
        "-- {} Kbytes in {n} Request{}.\n",
        total.div_ceil(1024),
        if n == 1 { "" } else { "s" }
    ));
    s
}

pub fn json(entries: &[Entry]) -> String {
    let mut s = String::new();
    for e in entries {
        s.push_str(&serde_json::to_string(e).unwrap_or_default());
        s.push('\n');
    }
    s
}

/// List the queue for the calling user.
pub fn list(layout: &Layout, as_json: bool) -> Result<String> {
    let me = nix::unistd::geteuid().as_raw();
    let owner = fs::metadata(layout.dir("queue"))
        .map(|m| m.uid())
        .map_err(|e| {
            Error::temp(format!(
                "spool {}: {e}: run `relayq init`",
                layout.root.display()
            ))
        })?;
    if me == 0 || me == owner {
        let e = scan(layout, None);
        return Ok(if as_json { json(&e) } else { render(&e) });
    }
    // Ordinary users: the daemon lists their own messages (it knows the peer's uid).
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(layout.socket()).map_err(|e| {
        Error::temp(format!(
            "only root can read the queue directly, and the relayq daemon is not reachable ({e})"
        ))
    })?;
    s.write_all(if as_json { b"LSTJ" } else { b"LIST" })
        .map_err(|e| Error::temp(e.to_string()))?;
    let mut out = String::new();
    s.take(256 << 20)
        .read_to_string(&mut out)
        .map_err(|e| Error::temp(e.to_string()))?;
    match out.split_once('\n') {
        Some(("OK", rest)) => Ok(rest.to_string()),
        Some((err, _)) => Err(Error::temp(err.trim_start_matches("ERR ").to_string())),
        None => Err(Error::temp("the relayq daemon sent no answer")),
    }
}

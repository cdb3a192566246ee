//! The doctor's check for mail the replaced tool left behind: a non-empty Postfix queue
//! (maildrop/, incoming/, active/, deferred/, hold/), nullmailer's queue/, dma's spool or
//! msmtpq's queue, found where those tools keep them ([`crate::import::old_queues`]).

use super::Report;

/// Warn about each old queue that still holds mail; pass when none does.
pub(super) fn check_old_queue(r: &mut Report) {
    let found = crate::import::old_queues();
    if found.is_empty() {
        r.pass(
            "old queue",
            "no mail left in a Postfix, nullmailer, dma or msmtpq queue",
        );
        return;
    }
    for q in found {
        r.warn(
            "old queue",
            format!(
                "{} message(s) left in {}'s queue {}: nothing delivers them now",
                q.messages,
                q.tool,
                q.dir.display()
            ),
            format!(
                "relayq import --from {} --queue-only moves them into relayq's queue (docs/migration.md)",
                q.tool
            ),
        );
    }
}

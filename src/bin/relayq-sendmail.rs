//! relayq-sendmail: `sendmail` as callers run it, once per message. The submission front
//! end: the same code as `relayq`'s sendmail personality (argv, config, rewriting, the
//! spool), without the daemon, the SMTP client, TLS and DKIM, so it maps a fraction of the
//! pages and relocations at each start. `-bp` and `-q` run `relayq` installed beside it.
//! Installed as /usr/sbin/relayq-sendmail, with /usr/sbin/sendmail and /usr/lib/sendmail
//! linked to it.
#![no_main]

#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    relayq::start(relayq::cmd::front_end)
}

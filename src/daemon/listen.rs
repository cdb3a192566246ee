//! The loopback SMTP listener (`[listen]`): the daemon accepts SMTP on 127.0.0.1/::1 for
//! programs that speak SMTP rather than run `sendmail` (Django, SMTPHandler, Java, Node,
//! containers). This file owns the sockets — bound before the daemon drops root (ports below
//! 1024), or passed in by systemd (`relayq.socket`, LISTEN_FDS) — the accept loops, the cap on
//! connections and the per-connection timeout. The dialogue itself is `crate::smtpd`'s, the
//! one `sendmail -bs` runs: the same queue, rewriting, limits and durability (250 only after
//! the queue file and new/ are fsynced). Every recipient goes to the configured relays; no
//! client can choose another.

use crate::config::{Config, is_loopback};
use crate::error::{Error, Result};
use crate::smtpd::{self, Client};
use crate::submit::Context;
use log::{info, warn};
use std::io::{BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The first file descriptor systemd passes (SD_LISTEN_FDS_START).
const LISTEN_FDS_START: i32 = 3;

/// The listening sockets, bound (or received) but not yet served.
pub(super) struct Listener {
    socks: Vec<(TcpListener, SocketAddr)>,
}

/// What the accept loops share: the configuration in force (a reload replaces it) and the
/// number of connections being served.
struct Shared {
    cfg: RwLock<Arc<Config>>,
    open: AtomicUsize,
}

/// The running listener: `reconfigure` after a reload.
pub(super) struct Handle(Option<Arc<Shared>>);

impl Listener {
    /// The sockets systemd passed (socket activation), else `[listen] addresses` bound now,
    /// before the daemon drops root. Neither: an empty listener (the feature is off).
    pub(super) fn bind(cfg: &Config) -> Result<Listener> {
        let passed = systemd_sockets()?;
        if !passed.is_empty() {
            if !cfg.listen.addresses.is_empty() {
                info!("listen: using the sockets systemd passed; [listen] addresses are not bound");
            }
            return Ok(Listener { socks: passed });
        }
        let mut socks = Vec::new();
        for addr in cfg.listen.socket_addrs() {
            match TcpListener::bind(addr) {
                Ok(l) => socks.push((l, addr)),
                // "[::1]:25" on a host (or container) without IPv6: the other addresses do.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EADDRNOTAVAIL | libc::EAFNOSUPPORT)
                    ) && cfg.listen.addresses.len() > 1 =>
                {
                    warn!("listen: cannot bind {addr} ({e}); not listening there");
                }
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(Error::config(format!(
                        "listen: cannot bind {addr}: {e}: a port below 1024 needs the daemon started as root (it binds, then drops to the spool's owner), CAP_NET_BIND_SERVICE, or relayq.socket"
                    )));
                }
                Err(e) => {
                    return Err(Error::temp(format!("listen: cannot bind {addr}: {e}")));
                }
            }
        }
        if socks.is_empty() && !cfg.listen.addresses.is_empty() {
            return Err(Error::temp(format!(
                "listen: none of {} could be bound",
                cfg.listen.addresses.join(", ")
            )));
        }
        Ok(Listener { socks })
    }

    /// Serve the sockets, a thread for each, and a thread for each connection. Called from
    /// the daemon's main loop after it blocked its signals, which these threads inherit.
    pub(super) fn start(self, cfg: &Config) -> Handle {
        if self.socks.is_empty() {
            return Handle(None);
        }
        let shared = Arc::new(Shared {
            cfg: RwLock::new(Arc::new(cfg.clone())),
            open: AtomicUsize::new(0),
        });
        for (l, addr) in self.socks {
            let s = shared.clone();
            info!(
                "listen: SMTP on {addr}, at most {} connections",
                cfg.listen.max_connections
            );
            std::thread::spawn(move || accept_loop(l, addr, s));
        }
        Handle(Some(shared))
    }
}

impl Handle {
    /// A reload: new connections use `cfg` (rewriting, limits, timeout). The addresses
    /// are bound once; changing them needs a restart.
    pub(super) fn reconfigure(&self, cfg: &Config) {
        if let Some(s) = &self.0 {
            *s.cfg.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(cfg.clone());
        }
    }
}

/// One connection being served: counted while it lives.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accept_loop(l: TcpListener, addr: SocketAddr, shared: Arc<Shared>) {
    // A write to a client that went away is EPIPE here, never a signal to the process.
    let mut pipe = nix::sys::signal::SigSet::empty();
    pipe.add(nix::sys::signal::Signal::SIGPIPE);
    let _ = pipe.thread_block();
    loop {
        let (stream, peer) = match l.accept() {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                warn!("listen: accept on {addr}: {e}");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        let cfg = shared.cfg.read().unwrap_or_else(|e| e.into_inner()).clone();
        let max = cfg.listen.max_connections;
        if shared.open.fetch_add(1, Ordering::SeqCst) >= max {
            shared.open.fetch_sub(1, Ordering::SeqCst);
            warn!("listen: too many connections ({max}): refused {peer}");
            refuse(&stream, "421 4.3.2 too many connections, try again later");
            continue;
        }
        let slot = Slot(shared.clone());
        let client = Client {
            addr: peer,
            local: addr,
        };
        let spawned = std::thread::Builder::new()
            .name("smtp".into())
            .spawn(move || {
                let _slot = slot;
                serve(stream, client, &cfg);
            });
        if let Err(e) = spawned {
            warn!("listen: cannot start a thread for {peer}: {e}");
        }
    }
}

/// Tell a client we will not serve it why, without waiting for it.
fn refuse(s: &TcpStream, why: &str) {
    let _ = s.set_nonblocking(true);
    let _ = (&*s).write_all(format!("{why}\r\n").as_bytes());
    let _ = s.shutdown(std::net::Shutdown::Both);
}

/// One SMTP session, with the configuration in force when it was accepted.
fn serve(stream: TcpStream, client: Client, cfg: &Config) {
    let timeout = Some(cfg.listen.timeout);
    if stream.set_read_timeout(timeout).is_err() || stream.set_write_timeout(timeout).is_err() {
        return;
    }
    // Replies are batched by the dialogue itself, and flushed when it would wait.
    let _ = stream.set_nodelay(true);
    let ctx = Context::new(cfg.clone(), true);
    let mut input = BufReader::with_capacity(64 * 1024, &stream);
    let mut out = BufWriter::with_capacity(16 * 1024, &stream);
    if let Err(e) = smtpd::serve_client(&ctx, &client, &mut input, &mut out) {
        info!("listen: {} ({}): {}", client.addr, client.local, e.msg);
    }
    drop(out);
    linger(&stream);
}

/// Close so that the last reply (221, 421) reaches the client: closing a TCP socket with
/// input unread sends a reset, which may destroy what the client has not read yet. So the
/// write side is shut first and the client's leftovers read and dropped, bounded.
fn linger(s: &TcpStream) {
    let _ = s.shutdown(std::net::Shutdown::Write);
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 4096];
    for _ in 0..16 {
        if !matches!(std::io::Read::read(&mut &*s, &mut buf), Ok(n) if n > 0) {
            break;
        }
    }
}

/// The sockets systemd passed to this process (sd_listen_fds(3): LISTEN_PID is ours,
/// LISTEN_FDS of them from fd 3), each checked: a listening TCP socket on a loopback address.
/// Marked close-on-exec, so a `password_command` does not inherit them.
fn systemd_sockets() -> Result<Vec<(TcpListener, SocketAddr)>> {
    let var = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    if var("LISTEN_PID") != Some(i64::from(std::process::id())) {
        return Ok(Vec::new());
    }
    let n = var("LISTEN_FDS").unwrap_or(0).clamp(0, 64) as i32;
    let bad = |fd: i32, why: &str| {
        Error::config(format!(
            "listen: the socket systemd passed as fd {fd} (relayq.socket) {why}"
        ))
    };
    let mut socks = Vec::new();
    for fd in LISTEN_FDS_START..LISTEN_FDS_START + n {
        use nix::sys::socket::{SockType, getsockopt, sockopt};
        // SAFETY: systemd hands these descriptors to this process (LISTEN_PID is ours); no
        // other code in relayq takes them, and this runs once, at start.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let _ = nix::fcntl::fcntl(
            &owned,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        let stream = getsockopt(&owned, sockopt::SockType).is_ok_and(|t| t == SockType::Stream);
        let listening = getsockopt(&owned, sockopt::AcceptConn).unwrap_or(false);
        if !stream || !listening {
            return Err(bad(fd, "is not a listening stream socket (ListenStream=)"));
        }
        let l = TcpListener::from(owned);
        // An AF_UNIX socket has no IP address: local_addr fails.
        let addr = l.local_addr().map_err(|_| bad(fd, "is not a TCP socket"))?;
        if !is_loopback(&addr) {
            return Err(bad(
                fd,
                &format!(
                    "is bound to {addr}, not a loopback address: the listener serves only 127.0.0.0/8 and ::1 (AUTH and TLS for other addresses are not offered yet)"
                ),
            ));
        }
        socks.push((l, addr));
    }
    Ok(socks)
}

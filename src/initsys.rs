//! Which init system runs this host, and the commands to name in hints for the daemon:
//! systemd when `/run/systemd/system` exists (as sd_booted(3) decides), OpenRC when
//! `/run/openrc` exists, the package's LSB init script (`/etc/init.d/relayq`) on other
//! hosts that have it, and otherwise the daemon started by hand with its pidfile.

use std::path::Path;

/// The service manager that would run the daemon here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    Systemd,
    OpenRc,
    /// sysvinit (or any host with the LSB script): `service relayq ...`.
    Lsb,
    /// None known: `relayq daemon` by hand, signals by pid.
    Manual,
}

/// What a hint asks the admin to do with the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start it now and at every boot.
    Enable,
    /// Start it now.
    Start,
    /// Make it re-read its config (SIGHUP).
    Reload,
}

/// This host's init system.
pub fn detect() -> Init {
    detect_in(Path::new("/"))
}

/// The init system of the root at `root` (tests use a directory).
pub fn detect_in(root: &Path) -> Init {
    if root.join("run/systemd/system").is_dir() {
        Init::Systemd
    } else if root.join("run/openrc").is_dir() {
        Init::OpenRc
    } else if root.join("etc/init.d/relayq").is_file() {
        Init::Lsb
    } else {
        Init::Manual
    }
}

/// The command for `action` on this host; `pid` is the running daemon's, when known.
pub fn hint(action: Action, pid: Option<u32>) -> String {
    command(detect(), action, pid)
}

/// The command for `action` under `init`.
pub fn command(init: Init, action: Action, pid: Option<u32>) -> String {
    let pid = pid.map_or("$(cat /var/spool/relayq/run/relayq.pid)".to_string(), |p| {
        p.to_string()
    });
    match (init, action) {
        (Init::Systemd, Action::Enable) => "systemctl enable --now relayq".into(),
        (Init::Systemd, Action::Start) => "systemctl start relayq".into(),
        (Init::Systemd, Action::Reload) => "systemctl reload relayq".into(),
        (Init::OpenRc, Action::Enable) => {
            "rc-update add relayq default && rc-service relayq start".into()
        }
        (Init::OpenRc, Action::Start) => "rc-service relayq start".into(),
        (Init::OpenRc, Action::Reload) => "rc-service relayq reload".into(),
        // The package's postinst has already linked the script into the runlevels.
        (Init::Lsb, Action::Enable | Action::Start) => "service relayq start".into(),
        (Init::Lsb, Action::Reload) => "service relayq reload".into(),
        // Callers quote the hint as a command: no prose in it.
        (Init::Manual, Action::Enable | Action::Start) => "relayq daemon".into(),
        (Init::Manual, Action::Reload) => format!("kill -HUP {pid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_init_system_from_its_traces() {
        let d = tempfile::tempdir().expect("tempdir");
        let r = d.path();
        assert_eq!(detect_in(r), Init::Manual);
        std::fs::create_dir_all(r.join("etc/init.d")).expect("mkdir");
        std::fs::write(r.join("etc/init.d/relayq"), "#!/bin/sh\n").expect("write");
        assert_eq!(detect_in(r), Init::Lsb);
        std::fs::create_dir_all(r.join("run/openrc")).expect("mkdir");
        assert_eq!(detect_in(r), Init::OpenRc);
        std::fs::create_dir_all(r.join("run/systemd/system")).expect("mkdir");
        assert_eq!(detect_in(r), Init::Systemd);
    }

    #[test]
    fn hints_name_the_init_system() {
        assert_eq!(
            command(Init::Systemd, Action::Reload, None),
            "systemctl reload relayq"
        );
        assert_eq!(
            command(Init::Lsb, Action::Start, None),
            "service relayq start"
        );
        assert_eq!(
            command(Init::OpenRc, Action::Reload, Some(1)),
            "rc-service relayq reload"
        );
        assert_eq!(
            command(Init::Manual, Action::Reload, Some(42)),
            "kill -HUP 42"
        );
        // A command the callers can put between backticks, not a sentence.
        assert_eq!(command(Init::Manual, Action::Start, None), "relayq daemon");
        for a in [Action::Enable, Action::Start, Action::Reload] {
            for i in [Init::OpenRc, Init::Lsb, Init::Manual] {
                assert!(!command(i, a, None).contains("systemctl"), "{i:?} {a:?}");
            }
        }
    }
}

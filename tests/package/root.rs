//! A throwaway root for the package tests: an overlayfs over the machine's own `/` (lower
//! `/`, upper and work in a temp dir), with its own /proc, a /dev of a few bound device
//! nodes on a tmpfs (so a syslog daemon's /dev/log is the root's, not the machine's), and
//! a fresh /run without systemd. Commands run in it through chroot(8) under timeout(1).
//! Dropping it kills whatever still runs inside, then unmounts everything (lazily if
//! busy) on every exit path, a failed assertion included: the machine's /etc, /var and
//! package database are never touched.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct Root {
    /// The mounted root, as the machine sees it.
    pub path: PathBuf,
    /// Mounted, innermost last (unmounted in reverse).
    mounts: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

fn sh(cmd: &str, args: &[&str]) -> Result<(), String> {
    let o = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

impl Root {
    /// Mount a new root; Err (why) when this machine cannot (not root, no overlayfs).
    pub fn new() -> Result<Root, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("needs root (mount, chroot)".into());
        }
        // Not in /tmp: the root sees the machine's /tmp (the test relay's files, its CA).
        let dir = tempfile::Builder::new()
            .prefix("relayq-root-")
            .tempdir_in("/var/tmp")
            .map_err(|e| format!("tempdir: {e}"))?;
        let (upper, work, path) = (
            dir.path().join("upper"),
            dir.path().join("work"),
            dir.path().join("root"),
        );
        for d in [&upper, &work, &path] {
            std::fs::create_dir(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let mut root = Root {
            path: path.clone(),
            mounts: Vec::new(),
            _dir: dir,
        };
        let opts = format!(
            "lowerdir=/,upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        root.mount(&["-t", "overlay", "overlay", "-o", &opts], &path)?;
        root.mount(&["-t", "proc", "proc"], &path.join("proc"))?;
        root.mount(
            &["-t", "tmpfs", "-o", "mode=0755", "tmpfs"],
            &path.join("run"),
        )?;
        std::fs::create_dir_all(path.join("run/lock")).map_err(|e| e.to_string())?;
        let dev = path.join("dev");
        root.mount(&["-t", "tmpfs", "-o", "mode=0755", "tmpfs"], &dev)?;
        for node in ["null", "zero", "full", "random", "urandom", "tty"] {
            let p = dev.join(node);
            std::fs::write(&p, "").map_err(|e| format!("{}: {e}", p.display()))?;
            root.mount(&["--bind", &format!("/dev/{node}")], &p)?;
        }
        for (link, to) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            std::os::unix::fs::symlink(to, dev.join(link)).map_err(|e| e.to_string())?;
        }
        std::fs::create_dir_all(dev.join("pts")).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(dev.join("shm")).map_err(|e| e.to_string())?;
        Ok(root)
    }

    fn mount(&mut self, args: &[&str], at: &Path) -> Result<(), String> {
        let at_s = at.to_str().ok_or("non-UTF-8 path")?;
        let mut a = args.to_vec();
        a.push(at_s);
        sh("mount", &a)?;
        self.mounts.push(at.to_path_buf());
        Ok(())
    }

    /// The machine's path of `p` (absolute, inside the root).
    pub fn p(&self, p: &str) -> PathBuf {
        self.path.join(p.trim_start_matches('/'))
    }

    /// `cmd args` inside the root under timeout(1), with `env` added to a clean environment
    /// (PATH, LANG=C, DEBIAN_FRONTEND), stdin from `input`.
    pub fn run_env(
        &self,
        env: &[(&str, &str)],
        cmd: &str,
        args: &[&str],
        secs: u64,
        input: Option<&[u8]>,
    ) -> Output {
        let mut c = Command::new("timeout");
        c.args(["--kill-after=5", &secs.to_string(), "chroot"])
            .arg(&self.path)
            .arg(cmd)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .envs(env.iter().copied())
            .current_dir("/")
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .unwrap_or_else(|e| panic!("spawn chroot {cmd}: {e}"));
        if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(data).expect("write stdin");
        }
        child.wait_with_output().expect("wait")
    }

    pub fn run(&self, cmd: &str, args: &[&str], secs: u64) -> Output {
        self.run_env(&[], cmd, args, secs, None)
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, cmd: &str, args: &[&str], secs: u64) -> String {
        let o = self.run(cmd, args, secs);
        assert!(
            o.status.success(),
            "(root) {cmd} {args:?}: {:?}\n{}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Processes whose root is this root (daemons started inside).
    pub fn processes(&self) -> Vec<i32> {
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/root")).is_ok_and(|r| r == self.path)
            })
            .collect()
    }

    /// Whether a process named `comm` runs inside the root.
    pub fn running(&self, comm: &str) -> Vec<i32> {
        self.processes()
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
            })
            .collect()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        // Whatever the test started inside (the daemon, a syslog daemon), by pid.
        for _ in 0..20 {
            let left = self.processes();
            if left.is_empty() {
                break;
            }
            for pid in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        for m in self.mounts.iter().rev() {
            let Some(m) = m.to_str() else { continue };
            if sh("umount", &[m]).is_err() {
                let _ = sh("umount", &["-l", m]);
            }
        }
    }
}

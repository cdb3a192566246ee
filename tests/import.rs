//! `relayq import --from TOOL` through the real binary: Debian 12's default configs and
//! edited variants (tests/fixtures/import), the files written, the secret's mode and that it
//! is never printed, the notes, --dry-run, --force, the exit codes, and an imported msmtp
//! config used against the real test relay.

mod support;
use relayq::config::Config;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::*;

fn fixture(rel: &str) -> PathBuf {
    repo().join("tests/fixtures/import").join(rel)
}

fn import(cfg: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("-C")
        .arg(cfg)
        .arg("import")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `import --from TOOL --path PATH EXTRA...`.
fn import_from(cfg: &Path, tool: &str, path: &Path, extra: &[&str]) -> Output {
    let path = path.to_string_lossy();
    let mut args = vec!["--from", tool, "--path", path.as_ref()];
    args.extend_from_slice(extra);
    import(cfg, &args)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

struct Case {
    out: String,
    cfg: Config,
    _dir: tempfile::TempDir,
}

/// Import `tool` from a fixture dir (or file); assert exit 0, that `secret` (if any) is in
/// the secrets file with mode 0600/0640 and never printed; return the parsed config.
fn run_ok(tool: &str, path: &Path, secret: Option<&str>) -> Case {
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("etc/relayq.toml");
    let o = import(
        &cfg_path,
        &["--from", tool, "--path", path.to_str().unwrap()],
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let cfg = Config::parse(&std::fs::read_to_string(&cfg_path).unwrap(), &cfg_path).unwrap();
    let sec_path = dir.path().join("etc/password");
    let got = std::fs::read_to_string(&sec_path).ok();
    if let Some(s) = secret {
        assert!(!out.contains(s), "secret printed: {out}");
        assert_eq!(got.as_deref(), Some(format!("{s}\n").as_str()));
        let mode = std::fs::metadata(&sec_path).unwrap().permissions().mode() & 0o777;
        assert!(mode == 0o600 || mode == 0o640, "{mode:o}");
        let r = cfg.relay.as_ref().unwrap();
        assert_eq!(r.password_file.as_deref(), Some(sec_path.as_path()));
    } else {
        assert!(got.is_none(), "unexpected secrets file");
    }
    Case {
        out,
        cfg,
        _dir: dir,
    }
}

fn relay(c: &Case) -> &relayq::config::Relay {
    c.cfg.relay.as_ref().expect("[relay]")
}

fn has(c: &Case, needle: &str) {
    assert!(c.out.contains(needle), "missing {needle:?} in:\n{}", c.out);
}

#[test]
fn nullmailer_default_and_edited() {
    let c = run_ok("nullmailer", &fixture("nullmailer/default"), None);
    assert_eq!(relay(&c).url.as_deref(), Some("smtp://smtp.example.com:25"));
    assert_eq!(c.cfg.address.admin.as_deref(), Some("ops@example.com"));
    assert_eq!(c.cfg.address.domain.as_deref(), Some("server1.example.com"));
    has(&c, "no TLS: relayq requires TLS");

    let c = run_ok(
        "nullmailer",
        &fixture("nullmailer/edited"),
        Some("SG.nullmailer-Secret-1"),
    );
    let r = relay(&c);
    assert_eq!(r.provider.as_deref(), Some("sendgrid"));
    assert_eq!(r.url, None);
    assert_eq!(r.username.as_deref(), Some("apikey"));
    assert_eq!(c.cfg.fallback_relay.len(), 1);
    let f = &c.cfg.fallback_relay[0];
    assert_eq!(f.url.as_deref(), Some("smtp://backup.example.net:587"));
    assert_eq!(f.username.as_deref(), Some("server1"));
    assert_eq!(f.password_file, None);
    assert!(!c.out.contains("backup Secret 2"), "{}", c.out);
    assert_eq!(c.cfg.address.sender.as_deref(), Some("server1@example.com"));
    assert_eq!(c.cfg.address.admin.as_deref(), Some("ops@example.com"));
    has(&c, "--insecure: not carried over: relayq always verifies");
    has(&c, "its password differs");
    has(&c, "adminaddr: oncall@example.com");
}

#[test]
fn msmtp_default_and_edited() {
    let c = run_ok("msmtp", &fixture("msmtp/default/msmtprc"), None);
    assert_eq!(
        relay(&c).url.as_deref(),
        Some("smtps://mail.oursite.example:465")
    );
    assert_eq!(c.cfg.address.domain.as_deref(), Some("oursite.example"));
    has(&c, "set_from_header: relayq always rewrites");
    has(&c, "no admin address found");

    let c = run_ok(
        "msmtp",
        &fixture("msmtp/edited/msmtprc"),
        Some("msmtp-Secret-5"),
    );
    let r = relay(&c);
    assert_eq!(r.provider.as_deref(), Some("mailgun"));
    assert_eq!(r.username.as_deref(), Some("postmaster@mg.example.com"));
    assert_eq!(r.ehlo_name.as_deref(), Some("server1.example.com"));
    assert_eq!(r.ca_file, None, "the system bundle is not a ca_file");
    assert_eq!(c.cfg.address.sender.as_deref(), Some("server1@example.com"));
    assert_eq!(c.cfg.address.aliases, PathBuf::from("/etc/aliases"));
    // The other account, with a `from` of its own: a relay for that sender.
    let s = &c.cfg.sender_relay;
    assert_eq!(s.len(), 1, "{}", c.out);
    assert_eq!(s[0].senders, ["team@example.com"]);
    assert_eq!(s[0].relay.provider.as_deref(), Some("office365"));
    assert_eq!(
        s[0].relay.password_command.as_deref(),
        Some("cat /root/.office-pass")
    );
    has(&c, "tls_certcheck off: not carried over");
}

#[test]
fn ssmtp_default_and_edited() {
    let c = run_ok("ssmtp", &fixture("ssmtp/default"), None);
    assert_eq!(relay(&c).url.as_deref(), Some("smtp://mail:25"));
    assert_eq!(c.cfg.address.admin, None);
    has(&c, "root=postmaster: a local account");
    has(&c, "mailhub: no TLS: relayq requires TLS");

    let c = run_ok("ssmtp", &fixture("ssmtp/edited"), Some("ssmtp-Secret-3"));
    let r = relay(&c);
    assert_eq!(r.url.as_deref(), Some("smtp://smtp.gmail.com:587"));
    assert_eq!(r.username.as_deref(), Some("server1@example.com"));
    assert_eq!(c.cfg.address.admin.as_deref(), Some("ops@example.com"));
    assert_eq!(c.cfg.address.sender.as_deref(), Some("server1@example.com"));
    assert_eq!(c.cfg.address.domain.as_deref(), Some("example.com"));
    has(
        &c,
        "AuthMethod=cram-md5: relayq authenticates with PLAIN or LOGIN",
    );
    has(&c, "fromlineoverride=YES: relayq always rewrites");
    has(&c, "revaliases line 8 (www-data)");
}

#[test]
fn dma_default_and_edited() {
    let c = run_ok("dma", &fixture("dma/default"), None);
    assert_eq!(relay(&c).url.as_deref(), Some("smtp://smtp.example.com:25"));
    assert_eq!(c.cfg.address.domain.as_deref(), Some("server1.example.com"));
    has(&c, "SMARTHOST: no TLS");

    let c = run_ok("dma", &fixture("dma/edited"), Some("dma-Secret-4"));
    let r = relay(&c);
    assert_eq!(r.provider.as_deref(), Some("smtp2go"));
    assert_eq!(r.username.as_deref(), Some("server1"));
    assert_eq!(c.cfg.address.sender.as_deref(), Some("server1@example.com"));
    has(&c, "DEFER: to hold mail");
    has(&c, "(host old-relay.example.net): not for the SMARTHOST");
    assert!(!c.out.contains("not-this-one"), "{}", c.out);
}

#[test]
fn postfix_default_and_edited() {
    let c = run_ok("postfix", &fixture("postfix/default"), None);
    assert_eq!(relay(&c).url.as_deref(), Some("smtp://smtp.example.com:25"));
    has(&c, "opportunistic TLS: relayq requires STARTTLS");
    assert_eq!(c.cfg.address.domain.as_deref(), Some("server1.example.com"));

    let c = run_ok(
        "postfix",
        &fixture("postfix/edited"),
        Some("postfix-Secret-6"),
    );
    let r = relay(&c);
    assert_eq!(r.url.as_deref(), Some("smtp://smtp.mailgun.org:587"));
    assert_eq!(r.username.as_deref(), Some("postmaster@mg.example.com"));
    assert_eq!(c.cfg.address.admin.as_deref(), Some("ops@example.com"));
    has(
        &c,
        "smtp_tls_security_level = encrypt: postfix did not check",
    );
    has(&c, "sender_canonical_maps");
    // The "delayed mail" warnings the Debian main.cf suggests uncommenting carry over.
    assert_eq!(
        c.cfg.queue.warn_after,
        Some(std::time::Duration::from_secs(4 * 3600))
    );
}

#[test]
fn dry_run_force_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("relayq.toml");
    let nm = fixture("nullmailer/edited");
    let nm = nm.to_str().unwrap();
    // --dry-run: prints the config and a placeholder, writes nothing.
    let o = import(&cfg, &["--from", "nullmailer", "--path", nm, "--dry-run"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("provider = \"sendgrid\"") && out.contains("not shown"),
        "{out}"
    );
    assert!(!out.contains("Secret"), "{out}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    // Written once; a second import without --force is refused and changes nothing.
    assert_eq!(
        import(&cfg, &["--from", "nullmailer", "--path", nm])
            .status
            .code(),
        Some(0)
    );
    std::fs::write(&cfg, "# mine\n").unwrap();
    let o = import_from(&cfg, "msmtp", &fixture("msmtp/edited/msmtprc"), &[]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert!(text(&o).contains("--force"));
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), "# mine\n");
    let o = import_from(
        &cfg,
        "msmtp",
        &fixture("msmtp/edited/msmtprc"),
        &["--force"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("password")).unwrap(),
        "msmtp-Secret-5\n"
    );
    // Missing source: 66. Unparseable: 65. Usage: 64.
    let none = dir.path().join("nothing-here");
    let o = import(&cfg, &["--from", "dma", "--path", none.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(66), "{}", text(&o));
    let bad = dir.path().join("msmtprc");
    std::fs::write(&bad, "host x\nport many\n").unwrap();
    let o = import_from(&cfg, "msmtp", &bad, &["--force"]);
    assert_eq!(o.status.code(), Some(65), "{}", text(&o));
    let nosmarthost = fixture("dma/default/auth.conf");
    let o = import_from(&cfg, "dma", &nosmarthost, &["--force"]);
    assert_eq!(o.status.code(), Some(65), "{}", text(&o));
    assert!(text(&o).contains("SMARTHOST"), "{}", text(&o));
    assert_eq!(import(&cfg, &["--from", "exim"]).status.code(), Some(64));
    assert_eq!(import(&cfg, &["--path", nm]).status.code(), Some(64));
}

#[test]
fn imported_msmtp_config_works_with_the_real_relay() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(
        tmp.path(),
        RelayOpts {
            auth: Some("user:e2e-Secret-7"),
            ..Default::default()
        },
    );
    let rc = tmp.path().join("msmtprc");
    std::fs::write(
        &rc,
        format!(
            "defaults\ntls on\ntls_trust_file {ca}\nlogfile ~/.msmtp.log\n\naccount relay\nhost localhost\nport {port}\nauth on\nuser user\npassword e2e-Secret-7\nfrom server@example.com\n\naccount default : relay\n",
            ca = ca_dir().join("ca.pem").display(),
            port = relay.port
        ),
    )
    .unwrap();
    let cfg = tmp.path().join("etc/relayq.toml");
    let o = import(&cfg, &["--from", "msmtp", "--path", rc.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!text(&o).contains("e2e-Secret-7"), "{}", text(&o));
    let c = Config::parse(&std::fs::read_to_string(&cfg).unwrap(), &cfg).unwrap();
    let r = c.relay.as_ref().unwrap();
    assert_eq!(
        r.url.as_deref(),
        Some(format!("smtp://localhost:{}", relay.port).as_str())
    );
    assert!(r.ca_only);
    let test = |args: &[&str]| {
        Command::new(BIN)
            .arg("-C")
            .arg(&cfg)
            .arg("test")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = test(&["--no-send"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("ok    auth"), "{}", text(&o));
    assert!(!text(&o).contains("e2e-Secret-7"), "{}", text(&o));
    assert_eq!(relay.arrived().len(), 0);
    let o = test(&["--to", "check@example.org"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let got = relay.wait_for(1, std::time::Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    assert_eq!(rcpts_of(&got[0]), ["check@example.org"]);
}

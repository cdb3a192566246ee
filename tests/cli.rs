//! `relayq`'s command line through the real binary: one argument table for every command
//! (src/args.rs). `--opt=value` and `--opt value` both; a missing value and an unknown flag
//! are usage errors (64) that say which flag and the nearest one; a flag is never taken as
//! another's value; every command answers `--help` with each of its flags; relayq(8)'s
//! OPTIONS section is exactly the table's (`relayq --help-man`).

mod support;
use std::process::{Command, Output, Stdio};
use support::*;

fn relayq_in(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_missing_value_is_an_error_not_the_next_flag() {
    let dir = tempfile::tempdir().unwrap();
    let o = relayq_in(dir.path(), &["test", "--to", "--no-send"]);
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(stderr(&o).contains("--to needs a value"), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    let o = relayq_in(dir.path(), &["test", "--to"]);
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(stderr(&o).contains("--to needs a value"), "{}", stderr(&o));
    let o = relayq_in(dir.path(), &["status", "--metrics", "--json"]);
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--metrics needs a value"),
        "{}",
        stderr(&o)
    );
    assert!(
        !dir.path().join("--json").exists(),
        "status wrote its metrics to a file named --json"
    );
    let o = relayq_in(dir.path(), &["status", "--json=yes"]);
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--json takes no value"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn unknown_flags_and_commands_name_the_nearest() {
    let dir = tempfile::tempdir().unwrap();
    for (args, want) in [
        (
            &["status", "--jsn"][..],
            "unknown flag --jsn; did you mean --json?",
        ),
        (
            &["queue", "--jsno"],
            "unknown flag --jsno; did you mean --json?",
        ),
        (
            &["import", "--from", "postfix", "--dryrun"],
            "did you mean --dry-run?",
        ),
        (&["test", "--nosend"], "did you mean --no-send?"),
        (&["status", "--body"], "it is a flag of show"),
        (&["flush", "--bogus"], "unknown flag --bogus"),
        (
            &["stauts"],
            "unknown command \"stauts\"; did you mean status?",
        ),
        (&["import", "--from", "postfx"], "did you mean postfix?"),
        (&["queue", "extra"], "unexpected argument \"extra\""),
        (&["--jsn"], "unknown flag --jsn"),
    ] {
        let o = relayq_in(dir.path(), args);
        assert_eq!(o.status.code(), Some(64), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn both_value_forms_reach_the_command() {
    let rdir = tempfile::tempdir().unwrap();
    let relay = Relay::start(rdir.path(), RelayOpts::default());
    let env = Env::new(&relay_toml("smtp", relay.port), "");
    let o = env.relayq(&["test", "--to=one@example.org"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), stderr(&o));
    let o = env.relayq(&["test", "--to", "two@example.org"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), stderr(&o));
    let got = relay.wait_for(2, std::time::Duration::from_secs(10));
    let rcpts: Vec<Vec<String>> = got.iter().map(rcpts_of).collect();
    assert_eq!(
        rcpts,
        [
            vec!["one@example.org".to_string()],
            vec!["two@example.org".to_string()]
        ]
    );
    // The metrics file is the value, whichever way given; -C after the command works too.
    let m = env.path().join("metrics.prom");
    let cfg = env.cfg.display().to_string();
    let o = relayq_in(
        env.path(),
        &[
            "status",
            "-C",
            &cfg,
            &format!("--metrics={}", m.display()),
            "--json",
        ],
    );
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", stderr(&o));
    assert!(out(&o).trim_start().starts_with('{'), "{}", out(&o));
    assert!(std::fs::read_to_string(&m).unwrap().contains("relayq_"));
    assert!(!env.path().join("--json").exists());
}

#[test]
fn every_command_has_a_full_help_with_each_of_its_flags() {
    let dir = tempfile::tempdir().unwrap();
    for c in relayq::args::COMMANDS {
        for how in [
            vec![c.name, "--help"],
            vec!["help", c.name],
            vec![c.name, "-h"],
        ] {
            let o = relayq_in(dir.path(), &how);
            assert_eq!(o.status.code(), Some(0), "{how:?}: {}", stderr(&o));
            let h = out(&o);
            assert!(h.starts_with("usage: relayq"), "{how:?}: {h}");
            assert!(h.contains(c.about.lines().next().unwrap()), "{how:?}: {h}");
            for f in relayq::args::flags_of(c.name) {
                if matches!(f.takes, relayq::args::Takes::Refused(_)) {
                    assert!(!h.contains(&format!("--{} ", f.long)), "{h}");
                    continue;
                }
                assert!(
                    h.contains(&format!("--{}", f.long)),
                    "{how:?}: --{}: {h}",
                    f.long
                );
                assert!(h.contains(f.help), "{how:?}: {h}");
            }
        }
    }
    let o = relayq_in(dir.path(), &["import", "--help"]);
    let h = out(&o);
    for want in [
        "--from TOOL",
        "--path FILE_OR_DIR",
        "--dry-run",
        "--force",
        "carried over",
    ] {
        assert!(h.contains(want), "{h}");
    }
    assert!(h.lines().count() > 10, "import --help is one line: {h}");
}

#[test]
fn relayq_8_options_are_the_table() {
    let o = Command::new(BIN).arg("--help-man").output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let generated = out(&o);
    let page = std::fs::read_to_string(repo().join("docs/man/relayq.8")).unwrap();
    let start = page
        .find(".\\\" BEGIN GENERATED OPTIONS")
        .expect("relayq.8 has the generated OPTIONS section");
    let end = page[start..]
        .find(".\\\" END GENERATED OPTIONS\n")
        .map(|e| start + e + ".\\\" END GENERATED OPTIONS\n".len())
        .expect("its end marker");
    assert_eq!(
        &page[start..end],
        generated,
        "docs/man/relayq.8's OPTIONS differ from the table: replace them with `relayq --help-man`"
    );
    // And every flag of the table is in it, under its command.
    for c in relayq::args::COMMANDS {
        for f in relayq::args::flags_of(c.name) {
            if !matches!(f.takes, relayq::args::Takes::Refused(_)) {
                let roff = format!("\\fB\\-\\-{}\\fR", f.long.replace('-', "\\-"));
                assert!(generated.contains(&roff), "--{} not in {generated}", f.long);
            }
        }
    }
}

#[test]
fn sendmail_keeps_its_own_grammar() {
    // `relayq sendmail` and the sendmail personality are not parsed by the table: -bv and
    // -oi are sendmail's, and an unknown option is refused with sendmail's usage.
    let env = Env::new(&relay_toml("smtp", 1), "");
    let o = env.relayq(&["sendmail", "-oi", "-bv", "someone@example.org"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(out(&o).contains("someone@example.org"), "{}", out(&o));
    let o = env.relayq(&["sendmail", "-bz"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("usage: sendmail"), "{}", stderr(&o));
}

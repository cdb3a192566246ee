//! relayq-doctor: `relayq doctor`, in a program of its own. The DNS checks need an async
//! resolver (hickory on tokio), which is a large part of the code; kept out of the `relayq`
//! binary, it costs nothing to `sendmail`, which is exec'd once per message and whose
//! start-up faults in pages of its own executable. `relayq doctor` execs this program
//! (found beside itself).
//!
//! Usage (by `relayq doctor`): relayq-doctor [-C config] [--json] [--dns HOST:PORT], parsed by
//! the same argument table as `relayq doctor` (`relayq::args`).

fn main() {
    relayq::sanitize_fds();
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let run = || -> relayq::error::Result<i32> {
        if args.iter().any(|a| a == "-h" || a == "--help") {
            let doctor = relayq::args::command("doctor")
                .ok_or_else(|| relayq::error::Error::usage("doctor: not in the argument table"))?;
            println!("{}", relayq::args::help(doctor));
            return Ok(0);
        }
        relayq::doctor::run(&relayq::args::parse_flags("doctor", args.clone())?)
    };
    let code = match run() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("relayq: {}", e.msg);
            e.code()
        }
    };
    std::process::exit(code);
}

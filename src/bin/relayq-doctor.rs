//! relayq-doctor: `relayq doctor`, in a program of its own. The DNS checks need an async
//! resolver (hickory on tokio), which is a large part of the code; kept out of the `relayq`
//! binary, it costs nothing to `sendmail`, which is exec'd once per message and whose
//! start-up faults in pages of its own executable. `relayq doctor` execs this program
//! (found beside itself).
//!
//! Usage (by `relayq doctor`): relayq-doctor [-C config] [--json] [--dns HOST:PORT]

fn main() {
    relayq::sanitize_fds();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut config: Option<std::path::PathBuf> = None;
    if args.first().map(String::as_str) == Some("-C") {
        if args.len() < 2 {
            eprintln!("relayq doctor: -C needs a file");
            std::process::exit(64);
        }
        config = Some(args.remove(1).into());
        args.remove(0);
    }
    let code = match relayq::doctor::run(config.as_deref(), &args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("relayq: {}", e.msg);
            e.code()
        }
    };
    std::process::exit(code);
}

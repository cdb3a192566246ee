//! The `relayq` executable: `sendmail`, `mailq` and `newaliases` by argv[0], `relayq
//! <command>` otherwise. All work happens in the library; this maps errors to exit codes.

fn main() {
    relayq::sanitize_fds();
    let code = match relayq::cmd::main(std::env::args_os().collect()) {
        Ok(code) => code,
        Err((prog, e)) => {
            eprintln!("{prog}: {}", e.msg);
            e.code()
        }
    };
    std::process::exit(code);
}

//! `danmu-load`: see `danmu-load --help` and `docs/performance.md`.

fn main() -> std::process::ExitCode {
    match danmu_loadtest::cli::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("danmu-load: FAILED: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

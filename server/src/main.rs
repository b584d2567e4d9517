//! The `subzero` binary: a thin clap front over the library.

fn main() -> std::process::ExitCode {
    subzero::cli::main()
}

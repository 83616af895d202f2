//! The `retina-agent` binary: everything is in the library, behind one entry point.

fn main() -> std::process::ExitCode {
    retina_agent::main()
}

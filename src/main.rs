fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(dbsync::main_entry())
}

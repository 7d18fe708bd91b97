//! The `shim-hv` command: an xl-like toolstack over shim-hv's daemon
//! (see `shim_hv::toolstack`).

fn main() {
    std::process::exit(shim_hv::toolstack::cli::main());
}

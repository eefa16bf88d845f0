//! `cargo xtask`: the commands that build, test and show nodemesh.
//!
//! Each subcommand lives in its own module; this file only parses the
//! command line and dispatches.

mod bench;
mod build_ebpf;
mod cmd;
mod demo;
mod test;
mod toolchain;
mod vm_test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "nodemesh developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure the mesh against direct pod-to-pod traffic and print the report.
    Bench(bench::Options),
    /// Build the kernel programs (installs the pinned nightly and bpf-linker if missing).
    BuildEbpf(build_ebpf::Options),
    /// Run the whole test suite: fmt, clippy, unit tests, then the privileged end-to-end tests.
    Test(test::Options),
    /// Run the Bookinfo sample app on a two-node mesh on this machine and show what the mesh does.
    Demo(demo::Options),
    /// Run the end-to-end tests in qemu guests on several kernels and report PASS/FAIL per kernel.
    VmTest(vm_test::Options),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bench(opts) => bench::run(&opts),
        Command::BuildEbpf(opts) => build_ebpf::run(&opts).map(|_| ()),
        Command::Test(opts) => test::run(&opts),
        Command::Demo(opts) => demo::run(&opts),
        Command::VmTest(opts) => vm_test::run(&opts),
    }
}

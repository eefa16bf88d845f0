//! `nodemesh`: the node agent and the operator CLI.

fn main() {}

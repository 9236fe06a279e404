//! `silver-node`: the command-line node. A placeholder until the runtime adapters exist; it
//! prints how to try the core today.
#![forbid(unsafe_code)]

fn main() {
    println!(
        "silver-node is not wired to sockets yet; try `cargo run -p silver-p2p-core --example in_memory_pair`"
    );
}

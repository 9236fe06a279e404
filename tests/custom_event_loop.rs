//! The README's "write your own adapter" example, run as a test so it cannot rot.

#[path = "../examples/custom_event_loop.rs"]
mod example;

#[test]
fn the_hand_written_mio_loop_delivers_a_broadcast() {
    example::run_pair().unwrap();
}

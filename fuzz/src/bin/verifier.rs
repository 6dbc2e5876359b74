//! Fuzz target `verifier`: see `scotd::fuzzing::verifier`.
fn main() {
    afl::fuzz!(|data: &[u8]| scotd::fuzzing::verifier(data));
}

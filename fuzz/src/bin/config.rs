//! Fuzz target `config`: see `scotd::fuzzing::config`.
fn main() {
    afl::fuzz!(|data: &[u8]| scotd::fuzzing::config(data));
}

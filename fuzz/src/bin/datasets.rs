//! Fuzz target `datasets`: see `scotd::fuzzing::datasets`.
fn main() {
    afl::fuzz!(|data: &[u8]| scotd::fuzzing::datasets(data));
}

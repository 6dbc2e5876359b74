//! Fuzz target `safetensors`: see `scotd::fuzzing::safetensors`.
fn main() {
    afl::fuzz!(|data: &[u8]| scotd::fuzzing::safetensors(data));
}

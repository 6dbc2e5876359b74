//! Fuzz target `chat_template`: see `scotd::fuzzing::chat_template`.
fn main() {
    afl::fuzz!(|data: &[u8]| scotd::fuzzing::chat_template(data));
}

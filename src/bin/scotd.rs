fn main() {
    println!("scotd {}", env!("CARGO_PKG_VERSION"));
}

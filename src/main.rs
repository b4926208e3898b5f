fn main() {
    println!("stateful-ci {}", env!("CARGO_PKG_VERSION"));
}

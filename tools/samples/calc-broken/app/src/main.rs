fn main() {
    println!("{}", app::report(&[1.5, 2.5, 9.0]));
}

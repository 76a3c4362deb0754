//! `bucketgate-authz`: see the crate docs.

fn main() {
    eprintln!("bucketgate-authz: not wired yet");
    std::process::exit(2);
}

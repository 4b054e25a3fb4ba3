//! `sqlx::migrate!` embeds `migrations/` at compile time, but Cargo only knows to rebuild when a
//! tracked file changes. Watching the directory makes a newly added migration trigger a rebuild
//! instead of being silently left out of the binary.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}

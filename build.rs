// The migrations are embedded at compile time (`sqlx::migrate!`): a new or edited migration
// must rebuild the crate, which cargo does not know of by itself.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}

// The migrations (`sqlx::migrate!`) and the templates (`include_dir!`) are embedded at compile
// time: a new or edited file must rebuild the crate, which cargo does not know of by itself.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=templates");
}

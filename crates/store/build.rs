// `sqlx::migrate!` embeds the migration files at compile time, but cargo does not know about them:
// without this, a new migration file leaves a stale build that silently lacks it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}

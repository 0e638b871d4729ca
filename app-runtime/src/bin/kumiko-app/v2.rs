//! `kumiko-app-v2`: the status page's second release, for the demo's upgrade (`kumiko-app:v2`).
//! The same program as `kumiko-app`, with one more migration (`0003_incidents_by_component`), so
//! upgrading to it runs a migrate Job that changes the schema before the pods roll. The migration
//! is additive: pods of the first release keep serving while and after it runs.

mod api;
mod app;
mod statuspage;

fn main() {
    app::app(app::Release::Second).main()
}

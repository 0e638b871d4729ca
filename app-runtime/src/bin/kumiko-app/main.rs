//! `kumiko-app`, the reference app on the Kumiko runtime: a public status page (components,
//! incidents, an uptime roll-up), built on the runtime's public API only, exactly as any other
//! app would be.
//!
//! Commands (DESIGN §4, provided by the runtime): `serve` (the API), `worker` (background jobs),
//! `migrate apply` (the pre-deploy step) and `migrate status`. Configuration comes from the
//! environment only.
//!
//! Settings of the app (boot validation rejects an undeclared `KUMIKO_*`):
//! `KUMIKO_ADMIN_TOKEN` (bearer token for writes; unset = write API off, 403),
//! `KUMIKO_EVENTS_INTERVAL` (SSE heartbeat, default 15s), `KUMIKO_TEST_ROUTES=1` (enables
//! `/api/slow?ms=N`, used by the shutdown tests and the benchmark),
//! `KUMIKO_UPTIME_ROLLUP_INTERVAL` (default 60s), `KUMIKO_UPTIME_WINDOW` (default 720h).

mod api;
mod app;
mod statuspage;

fn main() {
    app::app(app::Release::First).main()
}

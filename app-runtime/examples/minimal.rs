//! A minimal app on the Kumiko runtime: one route, one migration, one cron job, one queued job.
//!
//! `cargo run -p kumiko-runtime --example minimal -- serve` (then `worker`, `migrate status`).
//! With no environment it runs on an embedded SQLite file under `./data`.

use axum::{Router, extract::State, http::StatusCode, routing::post};
use kumiko_runtime::app::App;
use kumiko_runtime::db::Pool;
use kumiko_runtime::jobs::{JobRegistry, enqueue};
use kumiko_runtime::migrations::AppMigrations;
use kumiko_runtime::{Error, on_pool};
use sqlx::migrate::Migrator;

static POSTGRES: Migrator = sqlx::migrate!("./examples/minimal/postgres");
static SQLITE: Migrator = sqlx::migrate!("./examples/minimal/sqlite");

fn main() {
    App::new("minimal")
        .migrations(AppMigrations {
            postgres: &POSTGRES,
            sqlite: &SQLITE,
        })
        .routes(|context| {
            Router::new()
                .route("/greet/{name}", post(greet))
                .with_state(context.pool.clone())
        })
        .jobs(|_context| {
            JobRegistry::new()
                // Every five minutes, on the leader only, once per scheduled time across workers.
                .cron_at("count-greetings", "*/5 * * * *", "UTC", |tick| async move {
                    let count: i64 = on_pool!(&tick.pool, |pool| {
                        sqlx::query_scalar("SELECT COUNT(*) FROM greetings")
                            .fetch_one(pool)
                            .await
                    })
                    .map_err(Error::Query)?;
                    tracing::info!(count, "greetings so far");
                    Ok(())
                })
                .queued("greet", |job| async move {
                    let name = job.payload["name"].as_str().unwrap_or("nobody").to_owned();
                    on_pool!(&job.pool, |pool| {
                        sqlx::query("INSERT INTO greetings (name, written_by) VALUES ($1, $2)")
                            .bind(&name)
                            .bind(&job.instance_id)
                            .execute(pool)
                            .await
                            .map(drop)
                    })
                    .map_err(Error::Query)
                })
        })
        .main()
}

/// `POST /greet/{name}`: queues a greeting for the worker.
async fn greet(
    State(pool): State<Pool>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> StatusCode {
    match enqueue(&pool, "greet", &serde_json::json!({ "name": name }), 3).await {
        Ok(_) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
